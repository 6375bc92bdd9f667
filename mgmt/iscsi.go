package mgmt

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"keel/mgmt/apiclient"
)

// The iSCSI configuration: GET iSCSIConfig, POST iSCSIConfig (the
// python bindings' iSCSIConfigChange) with a list of commands applied in
// one transaction, iSCSISessionsInfo and iSCSInterfacesInfo from what the
// controllers report (POST iSCSIReport, a keel extension).
//
// A target is one volume's. Exporting it picks the controller that serves
// it (the lowest controller with a portal in the portal group, unless the
// target has one already) and attaches the volume read-write to client
// apiclient.ISCSIClientBase+controller, raising its fencing token like any
// read-write attach; deleting its last export detaches it.

var (
	iscsiNameRE = regexp.MustCompile(`^[a-z0-9\-.:]+$`)
	iscsiPGRE   = regexp.MustCompile(`^[A-Za-z0-9_\-.:]+$`)
)

const (
	maxISCSIID       = 0x0fff
	defaultISCSIPort = 3260
)

// ISCSIConfigChange is the body of POST iSCSIConfig.
type ISCSIConfigChange struct {
	Commands []ISCSIConfigCommand `json:"commands"`
}

// ISCSIConfigCommand holds exactly one command.
type ISCSIConfigCommand struct {
	SetBaseName           *ISCSINameArg      `json:"setBaseName,omitempty"`
	CreatePortalGroup     *ISCSINameArg      `json:"createPortalGroup,omitempty"`
	DeletePortalGroup     *ISCSINameArg      `json:"deletePortalGroup,omitempty"`
	PortalGroupAddNetwork *ISCSIPGNetArg     `json:"portalGroupAddNetwork,omitempty"`
	CreatePortal          *ISCSIPortalArg    `json:"createPortal,omitempty"`
	DeletePortal          *ISCSIPortalArg    `json:"deletePortal,omitempty"`
	CreateTarget          *ISCSIVolumeArg    `json:"createTarget,omitempty"`
	DeleteTarget          *ISCSIVolumeArg    `json:"deleteTarget,omitempty"`
	CreateInitiator       *ISCSIInitiatorArg `json:"createInitiator,omitempty"`
	DeleteInitiator       *ISCSINameArg      `json:"deleteInitiator,omitempty"`
	InitiatorAddNetwork   *ISCSIInitNetArg   `json:"initiatorAddNetwork,omitempty"`
	Export                *ISCSIExportArg    `json:"export,omitempty"`
	ExportDelete          *ISCSIExportArg    `json:"exportDelete,omitempty"`
}

// ISCSINameArg names a base name, portal group or initiator.
type ISCSINameArg struct {
	Name string `json:"name"`
}

// ISCSIPGNetArg is portalGroupAddNetwork.
type ISCSIPGNetArg struct {
	PortalGroup string `json:"portalGroup"`
	Net         string `json:"net"`
}

// ISCSIPortalArg is createPortal and deletePortal.
type ISCSIPortalArg struct {
	PortalGroup string `json:"portalGroup,omitempty"`
	Controller  int    `json:"controller,omitempty"`
	IP          string `json:"ip"`
	Port        *int   `json:"port,omitempty"`
}

// ISCSIVolumeArg is createTarget and deleteTarget.
type ISCSIVolumeArg struct {
	VolumeName string `json:"volumeName"`
}

// ISCSIInitiatorArg is createInitiator.
type ISCSIInitiatorArg struct {
	Name     string `json:"name"`
	Username string `json:"username"`
	Secret   string `json:"secret"`
}

// ISCSIInitNetArg is initiatorAddNetwork.
type ISCSIInitNetArg struct {
	Initiator string `json:"initiator"`
	Net       string `json:"net"`
}

// ISCSIExportArg is export and exportDelete.
type ISCSIExportArg struct {
	Initiator   string `json:"initiator"`
	PortalGroup string `json:"portalGroup"`
	VolumeName  string `json:"volumeName"`
}

func checkISCSIName(field, s string) error {
	if len(s) == 0 || len(s) > 223 || !iscsiNameRE.MatchString(s) {
		return invalidParam(field, "%q is not an iSCSI name (1..223 of a-z 0-9 - . :)", s)
	}
	return nil
}

func checkPGName(field, s string) error {
	if len(s) == 0 || len(s) > 128 || !iscsiPGRE.MatchString(s) {
		return invalidParam(field, "%q is not a portal group name (1..128 of %s)", s, nameCharsetDesc)
	}
	return nil
}

func checkNet(field, s string) error {
	if _, err := netip.ParsePrefix(s); err != nil {
		return invalidParam(field, "%q is not a CIDR network (x.x.x.x/n)", s)
	}
	return nil
}

// decodeISCSIChange validates the body of POST iSCSIConfig.
func decodeISCSIChange(body []byte) (any, error) {
	var r ISCSIConfigChange
	if err := decodeStrict(body, &r); err != nil {
		return nil, err
	}
	if len(r.Commands) == 0 {
		return nil, invalidParam("commands", "is empty")
	}
	for i, c := range r.Commands {
		f := fmt.Sprintf("commands[%d]", i)
		n := 0
		var err error
		if a := c.SetBaseName; a != nil {
			n, err = n+1, checkISCSIName(f+".setBaseName.name", a.Name)
		}
		if a := c.CreatePortalGroup; a != nil {
			n, err = n+1, checkPGName(f+".createPortalGroup.name", a.Name)
		}
		if a := c.DeletePortalGroup; a != nil {
			n, err = n+1, checkPGName(f+".deletePortalGroup.name", a.Name)
		}
		if a := c.PortalGroupAddNetwork; a != nil {
			n, err = n+1, errors.Join(checkPGName(f+".portalGroupAddNetwork.portalGroup", a.PortalGroup), checkNet(f+".portalGroupAddNetwork.net", a.Net))
		}
		if a := c.CreatePortal; a != nil {
			n, err = n+1, errors.Join(checkPGName(f+".createPortal.portalGroup", a.PortalGroup), checkPortal(f+".createPortal", a))
			if err == nil && (a.Controller < 1 || a.Controller > maxISCSIID) {
				err = invalidParam(f+".createPortal.controller", "%d is out of range 1..%d", a.Controller, maxISCSIID)
			}
		}
		if a := c.DeletePortal; a != nil {
			n, err = n+1, checkPortal(f+".deletePortal", a)
		}
		if a := c.CreateTarget; a != nil {
			n, err = n+1, checkVolumeName(f+".createTarget.volumeName", a.VolumeName, false)
		}
		if a := c.DeleteTarget; a != nil {
			n, err = n+1, checkVolumeName(f+".deleteTarget.volumeName", a.VolumeName, false)
		}
		if a := c.CreateInitiator; a != nil {
			n, err = n+1, checkISCSIName(f+".createInitiator.name", a.Name)
			if err == nil && (a.Username == "") != (a.Secret == "") {
				err = invalidParam(f+".createInitiator", "give both username and secret (CHAP) or neither")
			}
		}
		if a := c.DeleteInitiator; a != nil {
			n, err = n+1, checkISCSIName(f+".deleteInitiator.name", a.Name)
		}
		if a := c.InitiatorAddNetwork; a != nil {
			n, err = n+1, errors.Join(checkISCSIName(f+".initiatorAddNetwork.initiator", a.Initiator), checkNet(f+".initiatorAddNetwork.net", a.Net))
		}
		for _, a := range []*ISCSIExportArg{c.Export, c.ExportDelete} {
			if a != nil {
				n, err = n+1, errors.Join(checkISCSIName(f+".initiator", a.Initiator), checkPGName(f+".portalGroup", a.PortalGroup),
					checkVolumeName(f+".volumeName", a.VolumeName, false))
			}
		}
		if err != nil {
			return nil, err
		}
		if n != 1 {
			return nil, invalidParam(f, "must hold exactly one command, has %d", n)
		}
	}
	return &r, nil
}

func checkPortal(f string, a *ISCSIPortalArg) error {
	if _, err := netip.ParseAddr(a.IP); err != nil {
		return invalidParam(f+".ip", "%q is not an IP address", a.IP)
	}
	if a.Port != nil && (*a.Port < 1 || *a.Port > 65535) {
		return invalidParam(f+".port", "%d is out of range 1..65535", *a.Port)
	}
	return nil
}

func decodeISCSIReport(body []byte) (any, error) {
	var r apiclient.ISCSIControllerReport
	if err := decodeStrict(body, &r); err != nil {
		return nil, err
	}
	if r.ControllerID < 1 || r.ControllerID > maxISCSIID {
		return nil, invalidParam("controllerId", "%d is out of range 1..%d", r.ControllerID, maxISCSIID)
	}
	return &r, nil
}

func cmdISCSIConfig(t *txn) (any, error) {
	r, err := decodeAs[*ISCSIConfigChange](t)
	if err != nil {
		return nil, err
	}
	for i, c := range r.Commands {
		if err := t.iscsiCommand(c); err != nil {
			var e *Error
			if errors.As(err, &e) {
				e.Descr = fmt.Sprintf("commands[%d]: %s", i, e.Descr)
			}
			return nil, err
		}
	}
	return map[string]any{"generation": t.gen}, nil
}

func (t *txn) iscsiCommand(c ISCSIConfigCommand) error {
	switch {
	case c.SetBaseName != nil:
		var n int
		t.tx.QueryRow(`SELECT COUNT(*) FROM iscsi_targets`).Scan(&n)
		if cur := metaString(t.tx, "iscsi_base_name"); n > 0 && cur != c.SetBaseName.Name {
			return apiErr(ErrInUse, "base name %s is in use by %d target(s); delete them before changing it", cur, n)
		}
		return t.setMeta("iscsi_base_name", c.SetBaseName.Name)
	case c.CreatePortalGroup != nil:
		_, err := t.tx.Exec(`INSERT INTO iscsi_portal_groups (name) VALUES (?)`, c.CreatePortalGroup.Name)
		return uniqueErr(err, "portal group %s already exists", c.CreatePortalGroup.Name)
	case c.DeletePortalGroup != nil:
		pg, err := t.iscsiPG(c.DeletePortalGroup.Name)
		if err != nil {
			return err
		}
		if n := t.count(`SELECT COUNT(*) FROM iscsi_exports WHERE pg_id = ?`, pg); n > 0 {
			return apiErr(ErrInUse, "portal group %s has %d export(s); delete them first", c.DeletePortalGroup.Name, n)
		}
		_, err = t.tx.Exec(`DELETE FROM iscsi_portal_groups WHERE id = ?`, pg)
		return err
	case c.PortalGroupAddNetwork != nil:
		a := c.PortalGroupAddNetwork
		pg, err := t.iscsiPG(a.PortalGroup)
		if err != nil {
			return err
		}
		p := netip.MustParsePrefix(a.Net).Masked()
		_, err = t.tx.Exec(`INSERT OR IGNORE INTO iscsi_pg_networks (pg_id, address, prefix) VALUES (?, ?, ?)`, pg, p.Addr().String(), p.Bits())
		return err
	case c.CreatePortal != nil:
		a := c.CreatePortal
		pg, err := t.iscsiPG(a.PortalGroup)
		if err != nil {
			return err
		}
		_, err = t.tx.Exec(`INSERT INTO iscsi_portals (ip, port, pg_id, controller) VALUES (?, ?, ?, ?)`,
			netip.MustParseAddr(a.IP).String(), portOr(a.Port), pg, a.Controller)
		return uniqueErr(err, "portal %s already exists", netip.AddrPortFrom(netip.MustParseAddr(a.IP), uint16(portOr(a.Port))))
	case c.DeletePortal != nil:
		return t.iscsiDeletePortal(c.DeletePortal)
	case c.CreateTarget != nil:
		base := metaString(t.tx, "iscsi_base_name")
		if base == "" {
			return apiErr(ErrNotAllowed, "no iSCSI base name is set; set one (setBaseName) before creating targets")
		}
		v, err := lookupVol(t.tx, c.CreateTarget.VolumeName, false)
		if err != nil {
			return err
		}
		suffix := v.Name
		if suffix == "" {
			suffix = v.GID // a volume addressed by globalId only
		}
		suffix = targetSuffix(suffix)
		_, err = t.tx.Exec(`INSERT INTO iscsi_targets (volume_id, name) VALUES (?, ?)`, v.ID, base+":"+suffix)
		return uniqueErr(err, "volume %s already has a target (or its name %s:%s is taken)", v.displayName(), base, suffix)
	case c.DeleteTarget != nil:
		tg, _, err := t.iscsiTarget(c.DeleteTarget.VolumeName)
		if err != nil {
			return err
		}
		if n := t.count(`SELECT COUNT(*) FROM iscsi_exports WHERE target_id = ?`, tg); n > 0 {
			return apiErr(ErrInUse, "the target of volume %s has %d export(s); delete them first (exportDelete)", c.DeleteTarget.VolumeName, n)
		}
		_, err = t.tx.Exec(`DELETE FROM iscsi_targets WHERE id = ?`, tg)
		return err
	case c.CreateInitiator != nil:
		a := c.CreateInitiator
		_, err := t.tx.Exec(`INSERT INTO iscsi_initiators (name, username, secret) VALUES (?, ?, ?)`, a.Name, a.Username, a.Secret)
		return uniqueErr(err, "initiator %s already exists", a.Name)
	case c.DeleteInitiator != nil:
		id, err := t.iscsiInitiator(c.DeleteInitiator.Name)
		if err != nil {
			return err
		}
		if n := t.count(`SELECT COUNT(*) FROM iscsi_exports WHERE initiator_id = ?`, id); n > 0 {
			return apiErr(ErrInUse, "initiator %s has %d export(s); delete them first (exportDelete)", c.DeleteInitiator.Name, n)
		}
		_, err = t.tx.Exec(`DELETE FROM iscsi_initiators WHERE id = ?`, id)
		return err
	case c.InitiatorAddNetwork != nil:
		id, err := t.iscsiInitiator(c.InitiatorAddNetwork.Initiator)
		if err != nil {
			return err
		}
		_, err = t.tx.Exec(`INSERT OR IGNORE INTO iscsi_initiator_nets (initiator_id, net) VALUES (?, ?)`,
			id, netip.MustParsePrefix(c.InitiatorAddNetwork.Net).Masked().String())
		return err
	case c.Export != nil:
		return t.iscsiExport(c.Export)
	case c.ExportDelete != nil:
		return t.iscsiExportDelete(c.ExportDelete)
	}
	return invalidParam("commands", "empty command")
}

func portOr(p *int) int {
	if p == nil {
		return defaultISCSIPort
	}
	return *p
}

// targetSuffix makes a volume name fit an iSCSI name: lowercase, and any
// character outside a-z 0-9 - . : becomes '-'.
func targetSuffix(volume string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'A' && r <= 'Z':
			return r + 'a' - 'A'
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '-', r == '.', r == ':':
			return r
		}
		return '-'
	}, volume)
}

func uniqueErr(err error, format string, args ...any) error {
	if err != nil && strings.Contains(err.Error(), "UNIQUE constraint") {
		return apiErr(ErrExists, format, args...)
	}
	return err
}

func (t *txn) count(q string, args ...any) int {
	var n int
	t.tx.QueryRow(q, args...).Scan(&n)
	return n
}

func (t *txn) iscsiPG(name string) (int64, error) {
	var id int64
	err := t.tx.QueryRow(`SELECT id FROM iscsi_portal_groups WHERE name = ?`, name).Scan(&id)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, notFound("portal group %s does not exist", name)
	}
	return id, err
}

func (t *txn) iscsiInitiator(name string) (int64, error) {
	var id int64
	err := t.tx.QueryRow(`SELECT id FROM iscsi_initiators WHERE name = ?`, name).Scan(&id)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, notFound("initiator %s does not exist", name)
	}
	return id, err
}

// iscsiTarget returns the target of a volume and the volume.
func (t *txn) iscsiTarget(volume string) (int64, *volRow, error) {
	v, err := lookupVol(t.tx, volume, false)
	if err != nil {
		return 0, nil, err
	}
	var id int64
	err = t.tx.QueryRow(`SELECT id FROM iscsi_targets WHERE volume_id = ?`, v.ID).Scan(&id)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil, notFound("volume %s has no iSCSI target; create one (createTarget)", volume)
	}
	return id, v, err
}

func (t *txn) iscsiDeletePortal(a *ISCSIPortalArg) error {
	ip, port := netip.MustParseAddr(a.IP).String(), portOr(a.Port)
	var pg int64
	var ctl int
	err := t.tx.QueryRow(`SELECT pg_id, controller FROM iscsi_portals WHERE ip = ? AND port = ?`, ip, port).Scan(&pg, &ctl)
	if errors.Is(err, sql.ErrNoRows) {
		return notFound("portal %s:%d does not exist", ip, port)
	}
	if err != nil {
		return err
	}
	others := t.count(`SELECT COUNT(*) FROM iscsi_portals WHERE pg_id = ? AND controller = ? AND NOT (ip = ? AND port = ?)`, pg, ctl, ip, port)
	served := t.count(`SELECT COUNT(*) FROM iscsi_exports e JOIN iscsi_targets g ON g.id = e.target_id WHERE e.pg_id = ? AND g.controller = ?`, pg, ctl)
	if others == 0 && served > 0 {
		return apiErr(ErrInUse, "portal %s:%d is controller %d's last in its portal group, which exports %d target(s) through it; delete those exports first", ip, port, ctl, served)
	}
	_, err = t.tx.Exec(`DELETE FROM iscsi_portals WHERE ip = ? AND port = ?`, ip, port)
	return err
}

// iscsiExportRefs resolves an export's initiator, portal group and
// target (with its volume).
func (t *txn) iscsiExportRefs(a *ISCSIExportArg) (ini, pg, tg int64, v *volRow, err error) {
	if ini, err = t.iscsiInitiator(a.Initiator); err != nil {
		return
	}
	if pg, err = t.iscsiPG(a.PortalGroup); err != nil {
		return
	}
	tg, v, err = t.iscsiTarget(a.VolumeName)
	return
}

func (t *txn) iscsiExport(a *ISCSIExportArg) error {
	ini, pg, tg, v, err := t.iscsiExportRefs(a)
	if err != nil {
		return err
	}
	var ctl int
	if err := t.tx.QueryRow(`SELECT controller FROM iscsi_targets WHERE id = ?`, tg).Scan(&ctl); err != nil {
		return err
	}
	if ctl != 0 {
		if t.count(`SELECT COUNT(*) FROM iscsi_portals WHERE pg_id = ? AND controller = ?`, pg, ctl) == 0 {
			return apiErr(ErrNotAllowed, "the target of volume %s is served by controller %d, which has no portal in portal group %s; add one (createPortal) first", v.displayName(), ctl, a.PortalGroup)
		}
		// The attachment was taken away (a forced attach elsewhere):
		// exporting again brings it back, on the same terms.
		if t.count(`SELECT COUNT(*) FROM attachments WHERE volume_id = ? AND client_id = ? AND rights = 'rw'`, v.ID, apiclient.ISCSIClientBase+ctl) == 0 {
			if err := t.iscsiAttach(v, ctl); err != nil {
				return err
			}
		}
	} else {
		err := t.tx.QueryRow(`SELECT MIN(controller) FROM iscsi_portals WHERE pg_id = ?`, pg).Scan(&ctl)
		if err != nil || ctl == 0 {
			return apiErr(ErrNotAllowed, "portal group %s has no portal; add one (createPortal) before exporting through it", a.PortalGroup)
		}
		if err := t.iscsiAttach(v, ctl); err != nil {
			return err
		}
		if _, err := t.tx.Exec(`UPDATE iscsi_targets SET controller = ? WHERE id = ?`, ctl, tg); err != nil {
			return err
		}
	}
	_, err = t.tx.Exec(`INSERT OR IGNORE INTO iscsi_exports (initiator_id, target_id, pg_id) VALUES (?, ?, ?)`, ini, tg, pg)
	return err
}

// iscsiAttach attaches v read-write to controller ctl's client id, the
// only attachment it may have, and raises its fencing token.
func (t *txn) iscsiAttach(v *volRow, ctl int) error {
	client := apiclient.ISCSIClientBase + ctl
	rows, err := t.tx.Query(`SELECT client_id, rights FROM attachments WHERE volume_id = ? AND client_id != ?`, v.ID, client)
	if err != nil {
		return err
	}
	var others []string
	for rows.Next() {
		var c int
		var rights string
		rows.Scan(&c, &rights)
		others = append(others, fmt.Sprintf("client %d (%s)", c, rights))
	}
	rows.Close()
	if len(others) > 0 {
		return apiErr(ErrInUse, "volume %s is attached to %v; detach it before exporting it over iSCSI (one read-write attachment per volume)", v.displayName(), others)
	}
	if err := t.attach(v, client, "rw"); err != nil {
		return err
	}
	v.Fencing++
	_, err = t.tx.Exec(`UPDATE volumes SET fencing_token = ? WHERE id = ?`, v.Fencing, v.ID)
	return err
}

func (t *txn) iscsiExportDelete(a *ISCSIExportArg) error {
	ini, pg, tg, v, err := t.iscsiExportRefs(a)
	if err != nil {
		return err
	}
	res, err := t.tx.Exec(`DELETE FROM iscsi_exports WHERE initiator_id = ? AND target_id = ? AND pg_id = ?`, ini, tg, pg)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return notFound("volume %s is not exported to %s in portal group %s", a.VolumeName, a.Initiator, a.PortalGroup)
	}
	if t.count(`SELECT COUNT(*) FROM iscsi_exports WHERE target_id = ?`, tg) > 0 {
		return nil
	}
	var ctl int
	t.tx.QueryRow(`SELECT controller FROM iscsi_targets WHERE id = ?`, tg).Scan(&ctl)
	if _, err := t.tx.Exec(`DELETE FROM attachments WHERE volume_id = ? AND client_id = ?`, v.ID, apiclient.ISCSIClientBase+ctl); err != nil {
		return err
	}
	_, err = t.tx.Exec(`UPDATE iscsi_targets SET controller = 0 WHERE id = ?`, tg)
	return err
}

func cmdISCSIReport(t *txn) (any, error) {
	r, err := decodeAs[*apiclient.ISCSIControllerReport](t)
	if err != nil {
		return nil, err
	}
	s, _ := json.Marshal(r.Sessions)
	i, _ := json.Marshal(r.Interfaces)
	_, err = t.tx.Exec(`INSERT OR REPLACE INTO iscsi_reports (controller, sessions, interfaces) VALUES (?, ?, ?)`, r.ControllerID, s, i)
	return nil, err
}

// reportUnchanged tells whether a controller report repeats the stored
// one (the API then answers without a Raft round).
func reportUnchanged(db *sql.DB, body []byte) bool {
	var r apiclient.ISCSIControllerReport
	if json.Unmarshal(body, &r) != nil {
		return false
	}
	s, _ := json.Marshal(r.Sessions)
	i, _ := json.Marshal(r.Interfaces)
	var cs, ci string
	err := db.QueryRow(`SELECT sessions, interfaces FROM iscsi_reports WHERE controller = ?`, r.ControllerID).Scan(&cs, &ci)
	return err == nil && cs == string(s) && ci == string(i)
}

func readISCSIConfig(db *sql.DB, _ string) (any, error) {
	out := apiclient.ISCSIConfigData{BaseName: metaString(db, "iscsi_base_name"), Initiators: map[string]apiclient.ISCSIInitiator{},
		PortalGroups: map[string]apiclient.ISCSIPortalGroup{}, Targets: map[string]apiclient.ISCSITarget{}}
	pgNames := map[int64]string{}
	err := eachRow(db, `SELECT id, name FROM iscsi_portal_groups`, func(sc scanner) error {
		var id int64
		var pg apiclient.ISCSIPortalGroup
		if err := sc.Scan(&id, &pg.Name); err != nil {
			return err
		}
		pg.Networks, pg.Portals = []apiclient.ISCSIPGNetwork{}, []apiclient.ISCSIPortal{}
		pgNames[id] = pg.Name
		out.PortalGroups[strconv.FormatInt(id, 10)] = pg
		return nil
	})
	if err == nil {
		err = eachRow(db, `SELECT pg_id, address, prefix FROM iscsi_pg_networks ORDER BY pg_id, address, prefix`, func(sc scanner) error {
			var id int64
			var n apiclient.ISCSIPGNetwork
			if err := sc.Scan(&id, &n.Address, &n.Prefix); err != nil {
				return err
			}
			k := strconv.FormatInt(id, 10)
			pg := out.PortalGroups[k]
			pg.Networks = append(pg.Networks, n)
			out.PortalGroups[k] = pg
			return nil
		})
	}
	if err == nil {
		err = eachRow(db, `SELECT pg_id, controller, ip, port FROM iscsi_portals ORDER BY pg_id, controller, ip, port`, func(sc scanner) error {
			var id int64
			var p apiclient.ISCSIPortal
			if err := sc.Scan(&id, &p.Controller, &p.IP, &p.Port); err != nil {
				return err
			}
			k := strconv.FormatInt(id, 10)
			pg := out.PortalGroups[k]
			pg.Portals = append(pg.Portals, p)
			out.PortalGroups[k] = pg
			return nil
		})
	}
	targetNames := map[int64]string{}
	if err == nil {
		err = eachRow(db, `SELECT g.id, g.name, g.controller, v.name, v.global_id FROM iscsi_targets g JOIN volumes v ON v.id = g.volume_id`, func(sc scanner) error {
			var id int64
			var tg apiclient.ISCSITarget
			if err := sc.Scan(&id, &tg.Name, &tg.CurrentControllerID, &tg.Volume, &tg.GlobalID); err != nil {
				return err
			}
			targetNames[id] = tg.Name
			out.Targets[strconv.FormatInt(id, 10)] = tg
			return nil
		})
	}
	if err == nil {
		err = eachRow(db, `SELECT id, name, username, secret FROM iscsi_initiators`, func(sc scanner) error {
			var id int64
			var in apiclient.ISCSIInitiator
			if err := sc.Scan(&id, &in.Name, &in.Username, &in.Secret); err != nil {
				return err
			}
			in.Nets, in.Exports = []string{}, []apiclient.ISCSIExport{}
			out.Initiators[strconv.FormatInt(id, 10)] = in
			return nil
		})
	}
	if err == nil {
		err = eachRow(db, `SELECT initiator_id, net FROM iscsi_initiator_nets ORDER BY initiator_id, net`, func(sc scanner) error {
			var id int64
			var n string
			if err := sc.Scan(&id, &n); err != nil {
				return err
			}
			k := strconv.FormatInt(id, 10)
			in := out.Initiators[k]
			in.Nets = append(in.Nets, n)
			out.Initiators[k] = in
			return nil
		})
	}
	if err == nil {
		err = eachRow(db, `SELECT initiator_id, target_id, pg_id FROM iscsi_exports ORDER BY initiator_id, pg_id, target_id`, func(sc scanner) error {
			var id, tg, pg int64
			if err := sc.Scan(&id, &tg, &pg); err != nil {
				return err
			}
			k := strconv.FormatInt(id, 10)
			in := out.Initiators[k]
			in.Exports = append(in.Exports, apiclient.ISCSIExport{PortalGroup: pgNames[pg], Target: targetNames[tg]})
			out.Initiators[k] = in
			return nil
		})
	}
	if err != nil {
		return nil, err
	}
	return apiclient.ISCSIConfig{ISCSI: out}, nil
}

func eachRow(db *sql.DB, q string, f func(scanner) error) error {
	rows, err := db.Query(q)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		if err := f(rows); err != nil {
			return err
		}
	}
	return rows.Err()
}

// iscsiControllers lists the registered iSCSI controllers and whether
// they run.
func iscsiControllers(db *sql.DB) (map[int]bool, error) {
	out := map[int]bool{}
	err := eachRow(db, `SELECT id, status FROM services WHERE type = 'iscsi'`, func(sc scanner) error {
		var id int
		var st string
		if err := sc.Scan(&id, &st); err != nil {
			return err
		}
		out[id] = st == "running"
		return nil
	})
	return out, err
}

// readISCSIReports collects one column of the controllers' reports; a
// controller that is not running gets one entry with status "down".
func readISCSIReports[T any](db *sql.DB, col string, each func(ctl int, running bool, raw string) ([]T, error)) ([]T, error) {
	ctls, err := iscsiControllers(db)
	if err != nil {
		return nil, err
	}
	raw := map[int]string{}
	err = eachRow(db, `SELECT controller, `+col+` FROM iscsi_reports`, func(sc scanner) error {
		var c int
		var s string
		if err := sc.Scan(&c, &s); err != nil {
			return err
		}
		raw[c] = s
		return nil
	})
	if err != nil {
		return nil, err
	}
	ids := make([]int, 0, len(ctls))
	for c := range ctls {
		ids = append(ids, c)
	}
	sort.Ints(ids)
	out := []T{}
	for _, c := range ids {
		items, err := each(c, ctls[c], raw[c])
		if err != nil {
			return nil, err
		}
		out = append(out, items...)
	}
	return out, nil
}

func readISCSISessions(db *sql.DB, _ string) (any, error) {
	list, err := readISCSIReports(db, "sessions", func(c int, running bool, raw string) ([]apiclient.ISCSISessionInfo, error) {
		if !running {
			return []apiclient.ISCSISessionInfo{{Status: "down", ControllerID: c}}, nil
		}
		var ss []apiclient.ISCSISessionInfo
		if raw != "" {
			if err := json.Unmarshal([]byte(raw), &ss); err != nil {
				return nil, err
			}
		}
		return ss, nil
	})
	if err != nil {
		return nil, err
	}
	return map[string]any{"sessions": list}, nil
}

func readISCSIInterfaces(db *sql.DB, _ string) (any, error) {
	type ctlInfo struct {
		Status       string                         `json:"status"`
		ControllerID int                            `json:"controllerId"`
		Interfaces   []apiclient.ISCSIInterfaceInfo `json:"interfaces"`
	}
	list, err := readISCSIReports(db, "interfaces", func(c int, running bool, raw string) ([]ctlInfo, error) {
		e := ctlInfo{Status: "ok", ControllerID: c, Interfaces: []apiclient.ISCSIInterfaceInfo{}}
		if !running {
			e.Status = "down"
		} else if raw != "" {
			if err := json.Unmarshal([]byte(raw), &e.Interfaces); err != nil {
				return nil, err
			}
		}
		return []ctlInfo{e}, nil
	})
	if err != nil {
		return nil, err
	}
	return map[string]any{"controllers": list}, nil
}

// iscsiReport commits a controller's report unless it repeats the stored
// one: controllers send it on every poll.
func (s *Service) iscsiReport(ctx context.Context, body []byte) (Result, error) {
	s.store.mu.RLock()
	same := reportUnchanged(s.store.db, body)
	s.store.mu.RUnlock()
	if same {
		gen := s.store.Generation()
		return Result{Generation: gen, Info: map[string]any{"generation": gen}}, nil
	}
	return s.propose(ctx, Command{Op: "iSCSIReport", Body: body})
}
