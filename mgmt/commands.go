package mgmt

import (
	"database/sql"
	"errors"
	"fmt"
	"maps"
	"sort"
	"strconv"
)

// commands maps a command's Op to its handler. A handler runs inside the
// command's transaction and must depend only on the database and the
// command (never the clock, randomness or node-local settings).
var commands = map[string]func(*txn) (any, error){
	"ClusterInit":          cmdClusterInit,
	"iSCSIConfig":          cmdISCSIConfig,
	"iSCSIReport":          cmdISCSIReport,
	"MgmtJoin":             cmdMgmtJoin,
	"ServiceUpdate":        cmdServiceUpdate,
	"ServiceDown":          cmdServiceDown,
	"DiskRegister":         cmdDiskRegister,
	"DiskMarkDown":         cmdDiskMarkDown,
	"DiskRecoveryProgress": cmdDiskRecoveryProgress,
	"DiskRecoveryDone":     cmdDiskRecoveryDone,
	"DiskEject":            cmdDiskEject,
	"DiskForget":           cmdDiskForget,
	"DiskSetDescription":   cmdDiskSetDescription,
	"DiskScrubStart":       cmdDiskScrubStart,
	"DiskScrubPause":       cmdDiskScrubPause,
	"DiskScrubContinue":    cmdDiskScrubContinue,
	"DiskScrubReport":      cmdDiskScrubReport,
	"PlacementGroupUpdate": cmdPlacementGroupUpdate,
	"PlacementGroupDelete": cmdPlacementGroupDelete,
	"FaultSetUpdate":       cmdFaultSetUpdate,
	"VolumeTemplateCreate": cmdTemplateCreate,
	"VolumeTemplateUpdate": cmdTemplateUpdate,
	"VolumeTemplateDelete": cmdTemplateDelete,
	"VolumeCreate":         cmdVolumeCreate,
	"VolumeUpdate":         cmdVolumeUpdate,
	"VolumeDelete":         cmdVolumeDelete,
	"VolumeSnapshot":       cmdVolumeSnapshot,
	"SnapshotUpdate":       cmdSnapshotUpdate,
	"SnapshotDelete":       cmdSnapshotDelete,
	"SnapshotDeleteById":   cmdSnapshotDeleteByID,
	"VolumeRevert":         cmdVolumeRevert,
	"ClientTokensRenew":    cmdClientTokensRenew,
	"VolumesReassign":      cmdVolumesReassign,
	"VolumesReassignWait":  cmdVolumesReassignWait,
	"KVSet":                cmdKVSet,
	"KVDelete":             cmdKVDelete,
	"LayersDeleted":        cmdLayersDeleted,
}

func decodeAs[T any](t *txn) (T, error) {
	var zero T
	r, err := DecodeRequest(t.cmd.Op, t.cmd.Body)
	if err != nil {
		return zero, err
	}
	v, ok := r.(T)
	if !ok {
		return zero, fmt.Errorf("%s: decoded %T", t.cmd.Op, r)
	}
	return v, nil
}

func cmdClusterInit(t *txn) (any, error) {
	r, err := decodeAs[*ClusterInitDesc](t)
	if err != nil {
		return nil, err
	}
	if cur := metaString(t.tx, "location_id"); cur != "" {
		if cur == r.LocationID && metaString(t.tx, "sub_cluster_id") == r.SubClusterID {
			return r, nil
		}
		return nil, apiErr(ErrExists, "cluster already initialised as %s.%s", cur, metaString(t.tx, "sub_cluster_id"))
	}
	for k, v := range map[string]string{"name": r.Name, "location": r.Location, "location_id": r.LocationID, "sub_cluster_id": r.SubClusterID} {
		if err := t.setMeta(k, v); err != nil {
			return nil, err
		}
	}
	return r, nil
}

func cmdMgmtJoin(t *txn) (any, error) {
	r, err := decodeAs[*MgmtJoinDesc](t)
	if err != nil {
		return nil, err
	}
	_, err = t.tx.Exec(`INSERT OR REPLACE INTO members (id, raft_addr, api_addr) VALUES (?, ?, ?)`, r.ID, r.RaftAddr, r.APIAddr)
	return r, err
}

func cmdServiceUpdate(t *txn) (any, error) {
	r, err := decodeAs[*HeartbeatDesc](t)
	if err != nil {
		return nil, err
	}
	_, err = t.tx.Exec(`INSERT OR REPLACE INTO services (type, id, node_id, version, start_time, addr, status) VALUES (?, ?, ?, ?, ?, ?, 'running')`,
		r.Type, r.ID, r.NodeID, r.Version, r.StartTime, r.Addr)
	return map[string]any{"generation": t.gen}, err
}

// ServiceDownDesc is the body of the ServiceDown command the leader's
// monitor proposes when a service stops sending heartbeats.
type ServiceDownDesc struct {
	Type string `json:"type"`
	ID   int    `json:"id"`
}

func cmdServiceDown(t *txn) (any, error) {
	var r ServiceDownDesc
	if err := decodeStrict(t.cmd.Body, &r); err != nil {
		return nil, err
	}
	res, err := t.tx.Exec(`UPDATE services SET status = 'down' WHERE type = ? AND id = ? AND status != 'down'`, r.Type, r.ID)
	if err != nil {
		return nil, err
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return nil, apiErr(ErrNotAllowed, "%s %d is not running", r.Type, r.ID)
	}
	if r.Type == "server" {
		if _, err := t.tx.Exec(`DELETE FROM tasks WHERE kind = 'recovery' AND disk_id IN
			(SELECT id FROM disks WHERE server_id = ? AND state = 'recovering')`, r.ID); err != nil {
			return nil, err
		}
		if _, err := t.tx.Exec(`UPDATE disks SET state = 'down',
			generation_left = CASE WHEN state = 'up' THEN ? ELSE generation_left END
			WHERE server_id = ? AND state IN ('up', 'recovering')`, t.gen, r.ID); err != nil {
			return nil, err
		}
	}
	return nil, nil
}

func diskID(t *txn) (int, error) {
	id, err := strconv.Atoi(t.cmd.Arg)
	if err != nil || id < 0 || id > maxDiskID {
		return 0, invalidParam("diskId", "%q is not a disk id (0..%d)", t.cmd.Arg, maxDiskID)
	}
	return id, nil
}

func diskState(t *txn, id int) (state string, server int, err error) {
	err = t.tx.QueryRow(`SELECT state, server_id FROM disks WHERE id = ?`, id).Scan(&state, &server)
	if errors.Is(err, sql.ErrNoRows) {
		return "", 0, notFound("disk %d does not exist", id)
	}
	return state, server, err
}

func cmdDiskRegister(t *txn) (any, error) {
	r, err := decodeAs[*DiskRegisterDesc](t)
	if err != nil {
		return nil, err
	}
	state, server, err := diskState(t, r.ID)
	var nf *Error
	switch {
	case errors.As(err, &nf):
		state = "up"
		_, err = t.tx.Exec(`INSERT INTO disks (id, server_id, size, ssd, model, serial, device, state, disk_generation,
			objects_count, objects_allocated, objects_free, free_bytes) VALUES (?,?,?,?,?,?,?,'up',1,?,?,?,?)`,
			r.ID, r.ServerID, r.Size, r.SSD, r.Model, r.Serial, r.Device, r.ObjectsCount, r.ObjectsAllocated, r.ObjectsFree, r.FreeBytes)
		if err != nil {
			return nil, err
		}
	case err != nil:
		return nil, err
	default:
		if server != r.ServerID && state == "up" {
			return nil, apiErr(ErrInUse, "disk %d is up on server %d; stop it there before registering it on server %d", r.ID, server, r.ServerID)
		}
		if state == "down" || (state == "recovering" && server != r.ServerID) {
			if _, err := t.tx.Exec(`UPDATE disks SET disk_generation = disk_generation + 1 WHERE id = ?`, r.ID); err != nil {
				return nil, err
			}
			// A disk that was down may have missed acknowledged writes:
			// it must not serve reads (or count as a replica) until
			// recovery has brought its objects up to date (recovery.go).
			state = "recovering"
			if err := t.startRecovery(r.ID); err != nil {
				return nil, err
			}
		}
		_, err = t.tx.Exec(`UPDATE disks SET server_id=?, size=?, ssd=?, model=?, serial=?, device=?, state=?,
			generation_left = CASE WHEN ? = 'up' THEN -1 ELSE generation_left END,
			objects_count=?, objects_allocated=?, objects_free=?, free_bytes=? WHERE id = ?`,
			r.ServerID, r.Size, r.SSD, r.Model, r.Serial, r.Device, state, state,
			r.ObjectsCount, r.ObjectsAllocated, r.ObjectsFree, r.FreeBytes, r.ID)
		if err != nil {
			return nil, err
		}
	}
	var dg int64
	if err := t.tx.QueryRow(`SELECT disk_generation FROM disks WHERE id = ?`, r.ID).Scan(&dg); err != nil {
		return nil, err
	}
	return map[string]any{"generation": t.gen, "diskGeneration": dg, "state": state}, nil
}

func cmdDiskMarkDown(t *txn) (any, error) {
	id, err := diskID(t)
	if err != nil {
		return nil, err
	}
	if _, err := decodeAs[*DiskMarkDownDesc](t); err != nil {
		return nil, err
	}
	state, _, err := diskState(t, id)
	if err != nil {
		return nil, err
	}
	switch state {
	case "up":
		if _, err := t.tx.Exec(`UPDATE disks SET state = 'down', generation_left = ? WHERE id = ?`, t.gen, id); err != nil {
			return nil, err
		}
	case "recovering":
		// It missed writes since it left the up state; its recovery
		// starts over when it registers again.
		if _, err := t.tx.Exec(`UPDATE disks SET state = 'down' WHERE id = ?`, id); err != nil {
			return nil, err
		}
		if err := t.endRecovery(id); err != nil {
			return nil, err
		}
	}
	return map[string]any{"generation": t.gen}, nil
}

func cmdDiskEject(t *txn) (any, error) {
	id, err := diskID(t)
	if err != nil {
		return nil, err
	}
	state, _, err := diskState(t, id)
	if err != nil {
		return nil, err
	}
	gl := "generation_left"
	if state == "up" {
		gl = strconv.FormatInt(t.gen, 10)
	}
	if _, err = t.tx.Exec(`UPDATE disks SET state = 'ejected', generation_left = `+gl+` WHERE id = ?`, id); err != nil {
		return nil, err
	}
	return nil, t.endRecovery(id)
}

func cmdDiskForget(t *txn) (any, error) {
	id, err := diskID(t)
	if err != nil {
		return nil, err
	}
	state, _, err := diskState(t, id)
	if err != nil {
		return nil, err
	}
	if state == "up" {
		return nil, apiErr(ErrInUse, "disk %d is up; eject it (keel disk eject %d) before forgetting it", id, id)
	}
	if _, err := t.tx.Exec(`DELETE FROM pg_disks WHERE disk_id = ?`, id); err != nil {
		return nil, err
	}
	if err := t.endRecovery(id); err != nil {
		return nil, err
	}
	_, err = t.tx.Exec(`DELETE FROM disks WHERE id = ?`, id)
	return nil, err
}

func cmdDiskSetDescription(t *txn) (any, error) {
	id, err := diskID(t)
	if err != nil {
		return nil, err
	}
	r, err := decodeAs[*DiskDescUpdate](t)
	if err != nil {
		return nil, err
	}
	if _, _, err := diskState(t, id); err != nil {
		return nil, err
	}
	_, err = t.tx.Exec(`UPDATE disks SET description = ? WHERE id = ?`, r.Description, id)
	return nil, err
}

func pgID(q rowQueryer, name string) (int64, error) {
	var id int64
	err := q.QueryRow(`SELECT id FROM placement_groups WHERE name = ?`, name).Scan(&id)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, notFound("placement group %s does not exist", name)
	}
	return id, err
}

func cmdPlacementGroupUpdate(t *txn) (any, error) {
	if err := checkGroupName("name", t.cmd.Arg); err != nil {
		return nil, err
	}
	r, err := decodeAs[*PlacementGroupUpdateDesc](t)
	if err != nil {
		return nil, err
	}
	id, err := pgID(t.tx, t.cmd.Arg)
	var nf *Error
	if errors.As(err, &nf) {
		res, err := t.tx.Exec(`INSERT INTO placement_groups (name) VALUES (?)`, t.cmd.Arg)
		if err != nil {
			return nil, err
		}
		id, _ = res.LastInsertId()
	} else if err != nil {
		return nil, err
	}
	for _, d := range r.AddDisks {
		if _, _, err := diskState(t, d); err != nil {
			return nil, err
		}
		if _, err := t.tx.Exec(`INSERT OR IGNORE INTO pg_disks (pg_id, disk_id) VALUES (?, ?)`, id, d); err != nil {
			return nil, err
		}
	}
	for _, d := range r.RmDisks {
		if _, err := t.tx.Exec(`DELETE FROM pg_disks WHERE pg_id = ? AND disk_id = ?`, id, d); err != nil {
			return nil, err
		}
	}
	if r.Rename != nil && *r.Rename != t.cmd.Arg {
		if _, err := pgID(t.tx, *r.Rename); err == nil {
			return nil, apiErr(ErrExists, "placement group %s already exists", *r.Rename)
		}
		for _, q := range []string{
			`UPDATE placement_groups SET name = ?1 WHERE id = ?3`,
			`UPDATE templates SET place_all = ?1 WHERE place_all = ?2`, `UPDATE templates SET place_tail = ?1 WHERE place_tail = ?2`,
			`UPDATE templates SET place_head = ?1 WHERE place_head = ?2`, `UPDATE volumes SET place_all = ?1 WHERE place_all = ?2`,
			`UPDATE volumes SET place_tail = ?1 WHERE place_tail = ?2`, `UPDATE volumes SET place_head = ?1 WHERE place_head = ?2`,
		} {
			if _, err := t.tx.Exec(q, *r.Rename, t.cmd.Arg, id); err != nil {
				return nil, err
			}
		}
	}
	return nil, nil
}

func cmdPlacementGroupDelete(t *txn) (any, error) {
	id, err := pgID(t.tx, t.cmd.Arg)
	if err != nil {
		return nil, err
	}
	var n int
	if err := t.tx.QueryRow(`SELECT (SELECT COUNT(*) FROM templates WHERE ?1 IN (place_all, place_tail, place_head)) +
		(SELECT COUNT(*) FROM volumes WHERE ?1 IN (place_all, place_tail, place_head))`, t.cmd.Arg).Scan(&n); err != nil {
		return nil, err
	}
	if n > 0 {
		return nil, apiErr(ErrInUse, "placement group %s is used by %d templates, volumes or snapshots", t.cmd.Arg, n)
	}
	_, err = t.tx.Exec(`DELETE FROM placement_groups WHERE id = ?`, id)
	return nil, err
}

func cmdFaultSetUpdate(t *txn) (any, error) {
	if err := checkGroupName("name", t.cmd.Arg); err != nil {
		return nil, err
	}
	r, err := decodeAs[*FaultSet](t)
	if err != nil {
		return nil, err
	}
	if _, err := t.tx.Exec(`DELETE FROM fault_sets WHERE name = ?`, t.cmd.Arg); err != nil {
		return nil, err
	}
	for _, s := range r.Servers {
		if _, err := t.tx.Exec(`INSERT OR REPLACE INTO fault_sets (name, server_id) VALUES (?, ?)`, t.cmd.Arg, s); err != nil {
			return nil, err
		}
	}
	return nil, nil
}

// checkPlacement makes sure the named placement groups exist.
func checkPlacement(q rowQueryer, names ...string) error {
	for _, n := range names {
		if n == "" {
			continue
		}
		if _, err := pgID(q, n); err != nil {
			return err
		}
	}
	return nil
}

func cmdTemplateCreate(t *txn) (any, error) {
	r, err := decodeAs[*TemplateCreateDesc](t)
	if err != nil {
		return nil, err
	}
	if _, err := lookupTemplate(t.tx, r.Name); err == nil {
		return nil, apiErr(ErrExists, "template %s already exists", r.Name)
	}
	tpl := templateRow{Name: r.Name, Parent: r.Parent}
	tpl.applyPolicy(&r.VolumePolicy)
	if r.Size != nil {
		tpl.Size = *r.Size
	}
	if err := checkPlacement(t.tx, tpl.PlaceAll, tpl.PlaceTail, tpl.PlaceHead); err != nil {
		return nil, err
	}
	_, err = t.tx.Exec(`INSERT INTO templates (name, parent, place_all, place_tail, place_head, size, replication, reuse_server, iops, bw)
		VALUES (?,?,?,?,?,?,?,?,?,?)`, tpl.Name, tpl.Parent, tpl.PlaceAll, tpl.PlaceTail, tpl.PlaceHead, tpl.Size, tpl.Repl, tpl.Reuse, tpl.Iops, tpl.Bw)
	return nil, err
}

func cmdTemplateUpdate(t *txn) (any, error) {
	r, err := decodeAs[*TemplateUpdateDesc](t)
	if err != nil {
		return nil, err
	}
	tpl, err := lookupTemplate(t.tx, t.cmd.Arg)
	if err != nil {
		return nil, err
	}
	tpl.applyPolicy(&r.VolumePolicy)
	if r.Size != nil {
		tpl.Size = *r.Size
	}
	tpl.Parent = strOr(r.Parent, tpl.Parent)
	if r.Rename != nil && *r.Rename != tpl.Name {
		if _, err := lookupTemplate(t.tx, *r.Rename); err == nil {
			return nil, apiErr(ErrExists, "template %s already exists", *r.Rename)
		}
		tpl.Name = *r.Rename
	}
	if err := checkPlacement(t.tx, tpl.PlaceAll, tpl.PlaceTail, tpl.PlaceHead); err != nil {
		return nil, err
	}
	_, err = t.tx.Exec(`UPDATE templates SET name=?, parent=?, place_all=?, place_tail=?, place_head=?, size=?, replication=?,
		reuse_server=?, iops=?, bw=? WHERE id = ?`, tpl.Name, tpl.Parent, tpl.PlaceAll, tpl.PlaceTail, tpl.PlaceHead,
		tpl.Size, tpl.Repl, tpl.Reuse, tpl.Iops, tpl.Bw, tpl.ID)
	if err != nil {
		return nil, err
	}
	if r.Propagate {
		// Limits and reuseServer follow at once; placement changes take
		// effect for new allocations (relocation is a task of its own).
		_, err = t.tx.Exec(`UPDATE volumes SET iops = ?, bw = ?, reuse_server = ? WHERE template_id = ?`, tpl.Iops, tpl.Bw, tpl.Reuse, tpl.ID)
	}
	return nil, err
}

func cmdTemplateDelete(t *txn) (any, error) {
	tpl, err := lookupTemplate(t.tx, t.cmd.Arg)
	if err != nil {
		return nil, err
	}
	var n int
	if err := t.tx.QueryRow(`SELECT COUNT(*) FROM volumes WHERE template_id = ?`, tpl.ID).Scan(&n); err != nil {
		return nil, err
	}
	if n > 0 {
		return nil, apiErr(ErrInUse, "template %s is used by %d volumes or snapshots", tpl.Name, n)
	}
	_, err = t.tx.Exec(`DELETE FROM templates WHERE id = ?`, tpl.ID)
	return nil, err
}

type templateRow struct {
	ID                             int64
	Name, Parent                   string
	PlaceAll, PlaceTail, PlaceHead string
	Size                           int64
	Repl                           int
	Reuse                          bool
	Iops, Bw                       int64
}

func (tpl *templateRow) applyPolicy(p *VolumePolicy) {
	tpl.PlaceAll = strOr(p.PlaceAll, tpl.PlaceAll)
	tpl.PlaceTail = strOr(p.PlaceTail, tpl.PlaceTail)
	tpl.PlaceHead = strOr(p.PlaceHead, tpl.PlaceHead)
	if p.Replication != nil {
		tpl.Repl = *p.Replication
	}
	if p.ReuseServer != nil {
		tpl.Reuse = *p.ReuseServer
	}
	tpl.Iops = limitOr(p.Iops, tpl.Iops)
	tpl.Bw = limitOr(p.Bw, tpl.Bw)
}

const templateCols = `id, name, parent, place_all, place_tail, place_head, size, replication, reuse_server, iops, bw`

func scanTemplate(sc scanner) (*templateRow, error) {
	var r templateRow
	err := sc.Scan(&r.ID, &r.Name, &r.Parent, &r.PlaceAll, &r.PlaceTail, &r.PlaceHead, &r.Size, &r.Repl, &r.Reuse, &r.Iops, &r.Bw)
	return &r, err
}

func lookupTemplate(q rowQueryer, name string) (*templateRow, error) {
	r, err := scanTemplate(q.QueryRow(`SELECT `+templateCols+` FROM templates WHERE name = ?`, name))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, notFound("template %s does not exist", name)
	}
	return r, err
}

func templateName(q rowQueryer, id int64) string {
	var n string
	q.QueryRow(`SELECT name FROM templates WHERE id = ?`, id).Scan(&n)
	return n
}

// nextObject draws the next object id and its globalId.
func (t *txn) nextObject() (int64, string, error) {
	loc, sub := metaString(t.tx, "location_id"), metaString(t.tx, "sub_cluster_id")
	if loc == "" {
		return 0, "", apiErr(ErrNotReady, "%v", ErrNotInitialised)
	}
	id, err := metaInt(t.tx, "next_object_id")
	if err != nil {
		return 0, "", err
	}
	if err := t.setMeta("next_object_id", id+1); err != nil {
		return 0, "", err
	}
	return id, loc + "." + sub + "." + base36(id), nil
}

// allocate draws a disk-set table for v and charges it to the disks.
func (t *txn) allocate(v *volRow, n int) error {
	rule := PlacementRule{Replication: v.Repl, ReuseServer: v.Reuse || t.cmd.ReuseImplicit, Name: "volume " + v.displayName()}
	if tn := templateName(t.tx, v.TemplateID); tn != "" {
		rule.Name = "template " + tn
	}
	var err error
	if rule.All, err = t.groupDisks(v.PlaceAll); err != nil {
		return err
	}
	if rule.Tail, err = t.groupDisks(v.PlaceTail); err != nil {
		return err
	}
	if v.PlaceHead != "" {
		if rule.Head, err = t.groupDisks(v.PlaceHead); err != nil {
			return err
		}
	}
	rows, err := t.tx.Query(`SELECT d.id, d.server_id, COALESCE(f.name, ''), d.free_bytes, d.slots FROM disks d
		LEFT JOIN fault_sets f ON f.server_id = d.server_id WHERE d.state = 'up' ORDER BY d.id`)
	if err != nil {
		return err
	}
	var cands []Candidate
	for rows.Next() {
		var c Candidate
		if err := rows.Scan(&c.ID, &c.ServerID, &c.FaultSet, &c.Weight, &c.Slots); err != nil {
			rows.Close()
			return err
		}
		cands = append(cands, c)
	}
	rows.Close()
	before := map[int]int64{}
	for _, c := range cands {
		before[c.ID] = c.Slots
	}
	a, err := Allocate(cands, rule, n, t.cmd.Seed^v.ID)
	if err != nil {
		return err
	}
	for _, c := range cands {
		if c.Slots != before[c.ID] {
			if _, err := t.tx.Exec(`UPDATE disks SET slots = ? WHERE id = ?`, c.Slots, c.ID); err != nil {
				return err
			}
		}
	}
	v.Sets, v.Violation, v.Owns = a.Sets, a.Violation, true
	return nil
}

// release gives a row's disk-set slots back to the disks when it owns them.
func (t *txn) release(v *volRow) error {
	if !v.Owns {
		return nil
	}
	for _, set := range v.Sets {
		for _, d := range set {
			if _, err := t.tx.Exec(`UPDATE disks SET slots = MAX(slots - 1, 0) WHERE id = ?`, d); err != nil {
				return err
			}
		}
	}
	v.Owns = false
	return nil
}

func (t *txn) groupDisks(name string) (map[int]bool, error) {
	if name == "" {
		return nil, nil
	}
	id, err := pgID(t.tx, name)
	if err != nil {
		return nil, err
	}
	rows, err := t.tx.Query(`SELECT disk_id FROM pg_disks WHERE pg_id = ?`, id)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[int]bool{}
	for rows.Next() {
		var d int
		if err := rows.Scan(&d); err != nil {
			return nil, err
		}
		out[d] = true
	}
	return out, rows.Err()
}

func cmdVolumeCreate(t *txn) (any, error) {
	r, err := decodeAs[*VolumeCreateDesc](t)
	if err != nil {
		return nil, err
	}
	if r.Name != "" {
		if _, err := lookupVol(t.tx, r.Name, false); err == nil {
			return nil, apiErr(ErrExists, "volume %s already exists", r.Name)
		}
	}
	v := &volRow{Name: r.Name, Created: t.cmd.Time, Tags: map[string]string{}}
	tpl := &templateRow{}
	if r.Template != "" {
		if tpl, err = lookupTemplate(t.tx, r.Template); err != nil {
			return nil, err
		}
		v.TemplateID = tpl.ID
	}
	parentRef := r.Parent
	if parentRef == "" && tpl.Parent != "" {
		parentRef = tpl.Parent
	}
	var parent *volRow
	if r.BaseOn != "" {
		base, err := lookupVol(t.tx, r.BaseOn, false)
		if err != nil {
			return nil, err
		}
		if parent, err = t.snapshot(base, &VolumeSnapshotDesc{Bind: true}, true); err != nil {
			return nil, err
		}
	} else if parentRef != "" {
		if parent, err = lookupVol(t.tx, parentRef, true); err != nil {
			return nil, err
		}
	}
	// Defaults: the parent's, then the template's, then the request's.
	if parent != nil {
		v.ParentID, v.OrigParent, v.Size, v.Repl = parent.ID, parent.ID, parent.Size, parent.Repl
		v.PlaceAll, v.PlaceTail, v.PlaceHead, v.Iops, v.Bw, v.Reuse = parent.PlaceAll, parent.PlaceTail, parent.PlaceHead, parent.Iops, parent.Bw, parent.Reuse
		if v.TemplateID == 0 {
			v.TemplateID = parent.TemplateID
		}
		maps.Copy(v.Tags, parent.Tags)
	}
	if r.Template != "" {
		if tpl.Size != 0 && parent == nil {
			v.Size = tpl.Size
		}
		if tpl.Repl != 0 {
			v.Repl = tpl.Repl
		}
		v.PlaceAll, v.PlaceTail, v.PlaceHead, v.Iops, v.Bw, v.Reuse = tpl.PlaceAll, tpl.PlaceTail, tpl.PlaceHead, tpl.Iops, tpl.Bw, tpl.Reuse
	}
	p := &r.VolumePolicy
	v.PlaceAll, v.PlaceTail, v.PlaceHead = strOr(p.PlaceAll, v.PlaceAll), strOr(p.PlaceTail, v.PlaceTail), strOr(p.PlaceHead, v.PlaceHead)
	v.Iops, v.Bw = limitOr(p.Iops, v.Iops), limitOr(p.Bw, v.Bw)
	if p.Replication != nil {
		v.Repl = *p.Replication
	}
	if p.ReuseServer != nil {
		v.Reuse = *p.ReuseServer
	}
	maps.Copy(v.Tags, p.Tags)
	if r.Size != nil {
		v.Size = *r.Size
	}
	switch {
	case v.Size == 0:
		return nil, invalidParam("size", "is required (no parent or template gives one)")
	case parent != nil && v.Size < parent.Size:
		return nil, invalidParam("size", "%d is smaller than the parent snapshot's %d", v.Size, parent.Size)
	case v.Repl == 0:
		return nil, invalidParam("replication", "is required (no template or parent gives one)")
	}
	if err := checkPlacement(t.tx, v.PlaceAll, v.PlaceTail, v.PlaceHead); err != nil {
		return nil, err
	}
	if v.ID, v.GID, err = t.nextObject(); err != nil {
		return nil, err
	}
	policyChanged := p.PlaceAll != nil || p.PlaceTail != nil || p.PlaceHead != nil || p.Replication != nil || r.DiskSets != 0 ||
		(parent != nil && (v.Repl != parent.Repl || v.PlaceAll != parent.PlaceAll || v.PlaceTail != parent.PlaceTail || v.PlaceHead != parent.PlaceHead))
	if parent != nil && !policyChanged {
		v.Sets, v.Violation = parent.Sets, parent.Violation // a clone inherits its parent's disk sets
	} else {
		n := r.DiskSets
		if n == 0 {
			n = defaultDiskSets(v.Size)
		}
		if err := t.allocate(v, n); err != nil {
			return nil, err
		}
	}
	if err := t.insertVol(v); err != nil {
		return nil, err
	}
	return map[string]any{"name": v.displayName(), "globalId": v.GID, "id": v.ID}, nil
}

// snapshot freezes volume v as a new snapshot: the snapshot takes the
// volume's place in the chain and the volume's parent becomes it.
func (t *txn) snapshot(v *volRow, r *VolumeSnapshotDesc, transient bool) (*volRow, error) {
	if r.Name != "" {
		if _, err := lookupVol(t.tx, r.Name, true); err == nil {
			return nil, apiErr(ErrExists, "snapshot %s already exists", r.Name)
		}
	}
	s := *v
	s.Snapshot, s.Name, s.Owns, s.Fencing = true, r.Name, false, 0
	s.AutoName, s.Bound, s.Transient = r.Name == "", r.Bind, transient
	s.Tags = maps.Clone(orEmpty(v.Tags))
	maps.Copy(s.Tags, r.Tags)
	s.Created = t.cmd.Time
	s.TargetDelete = r.TargetDeleteDate
	if r.DeleteAfter > 0 {
		s.TargetDelete = t.cmd.Time + r.DeleteAfter
	}
	var err error
	if s.ID, s.GID, err = t.nextObject(); err != nil {
		return nil, err
	}
	if err := t.insertVol(&s); err != nil {
		return nil, err
	}
	// The snapshot keeps the objects written so far (the volume's layer);
	// the volume continues in a fresh layer over it.
	layer, err := layerOf(t.tx, v.ID)
	if err != nil {
		return nil, err
	}
	if err := t.setLayer(s.ID, layer); err != nil {
		return nil, err
	}
	if err := t.freshLayer(v); err != nil {
		return nil, err
	}
	v.ParentID = s.ID
	if err := t.updateVol(v); err != nil {
		return nil, err
	}
	return &s, nil
}

func cmdVolumeSnapshot(t *txn) (any, error) {
	r, err := decodeAs[*VolumeSnapshotDesc](t)
	if err != nil {
		return nil, err
	}
	v, err := lookupVol(t.tx, t.cmd.Arg, false)
	if err != nil {
		return nil, err
	}
	s, err := t.snapshot(v, r, false)
	if err != nil {
		return nil, err
	}
	return map[string]any{"snapshotName": s.displayName(), "snapshotGlobalId": s.GID, "autoName": s.AutoName}, nil
}

func cmdVolumeUpdate(t *txn) (any, error) {
	r, err := decodeAs[*VolumeUpdateDesc](t)
	if err != nil {
		return nil, err
	}
	v, err := lookupVol(t.tx, t.cmd.Arg, false)
	if err != nil {
		return nil, err
	}
	return nil, t.updatePolicy(v, &r.VolumePolicy, r.Rename, r.Template, func() error {
		size := v.Size
		if r.Size != nil {
			size = *r.Size
		}
		if r.SizeAdd != nil {
			size += *r.SizeAdd
		}
		if size < v.Size && !r.ShrinkOk {
			return invalidParam("size", "%d would shrink volume %s from %d; set shrinkOk to allow it", size, v.displayName(), v.Size)
		}
		v.Size = size
		return nil
	})
}

// updatePolicy applies rename, template, policy and tag changes shared by
// VolumeUpdate and SnapshotUpdate, reallocating the disk sets when the
// placement or replication changed.
func (t *txn) updatePolicy(v *volRow, p *VolumePolicy, rename, template *string, more func() error) error {
	if rename != nil && *rename != v.Name {
		if _, err := lookupVol(t.tx, *rename, v.Snapshot); err == nil {
			return apiErr(ErrExists, "%s already exists", *rename)
		}
		v.Name, v.AutoName = *rename, false
	}
	old := *v
	if template != nil {
		tpl, err := lookupTemplate(t.tx, *template)
		if err != nil {
			return err
		}
		v.TemplateID = tpl.ID
		if tpl.Repl != 0 {
			v.Repl = tpl.Repl
		}
		v.PlaceAll, v.PlaceTail, v.PlaceHead, v.Iops, v.Bw, v.Reuse = tpl.PlaceAll, tpl.PlaceTail, tpl.PlaceHead, tpl.Iops, tpl.Bw, tpl.Reuse
	}
	v.PlaceAll, v.PlaceTail, v.PlaceHead = strOr(p.PlaceAll, v.PlaceAll), strOr(p.PlaceTail, v.PlaceTail), strOr(p.PlaceHead, v.PlaceHead)
	v.Iops, v.Bw = limitOr(p.Iops, v.Iops), limitOr(p.Bw, v.Bw)
	if p.Replication != nil {
		v.Repl = *p.Replication
	}
	if p.ReuseServer != nil {
		v.Reuse = *p.ReuseServer
	}
	for k, val := range p.Tags {
		if val == "" {
			delete(v.Tags, k)
		} else {
			v.Tags[k] = val
		}
	}
	if more != nil {
		if err := more(); err != nil {
			return err
		}
	}
	if err := checkPlacement(t.tx, v.PlaceAll, v.PlaceTail, v.PlaceHead); err != nil {
		return err
	}
	if v.Repl != old.Repl || v.PlaceAll != old.PlaceAll || v.PlaceTail != old.PlaceTail || v.PlaceHead != old.PlaceHead {
		n := len(v.Sets)
		if err := t.release(v); err != nil {
			return err
		}
		if err := t.allocate(v, max(n, 1)); err != nil {
			return err
		}
	}
	return t.updateVol(v)
}

func (t *txn) attachedTo(v *volRow) ([]int, error) {
	rows, err := t.tx.Query(`SELECT client_id FROM attachments WHERE volume_id = ? ORDER BY client_id`, v.ID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []int
	for rows.Next() {
		var c int
		if err := rows.Scan(&c); err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, rows.Err()
}

// remove deletes a volume or snapshot row, then garbage-collects parents
// that were waiting only for it (deleted or bound snapshots left childless).
func (t *txn) remove(v *volRow) error {
	kind := "volume"
	if v.Snapshot {
		kind = "snapshot"
	}
	if cl, err := t.attachedTo(v); err != nil {
		return err
	} else if len(cl) > 0 {
		return apiErr(ErrInUse, "%s %s is attached to client(s) %v; detach it first", kind, v.displayName(), cl)
	}
	if err := t.release(v); err != nil {
		return err
	}
	if err := t.dropLayer(v); err != nil {
		return err
	}
	if _, err := t.tx.Exec(`DELETE FROM volumes WHERE id = ?`, v.ID); err != nil {
		return err
	}
	for pid := v.ParentID; pid != 0; {
		p, err := lookupVolByID(t.tx, pid)
		if errors.Is(err, sql.ErrNoRows) {
			return nil
		} else if err != nil {
			return err
		}
		var children int
		if err := t.tx.QueryRow(`SELECT COUNT(*) FROM volumes WHERE parent_id = ?`, p.ID).Scan(&children); err != nil {
			return err
		}
		if children > 0 || !(p.Deleted || p.Bound) {
			return nil
		}
		if err := t.dropLayer(p); err != nil {
			return err
		}
		if _, err := t.tx.Exec(`DELETE FROM volumes WHERE id = ?`, p.ID); err != nil {
			return err
		}
		pid = p.ParentID
	}
	return nil
}

func cmdVolumeDelete(t *txn) (any, error) {
	v, err := lookupVol(t.tx, t.cmd.Arg, false)
	if err != nil {
		return nil, err
	}
	return nil, t.remove(v)
}

func cmdSnapshotUpdate(t *txn) (any, error) {
	r, err := decodeAs[*SnapshotUpdateDesc](t)
	if err != nil {
		return nil, err
	}
	s, err := lookupVol(t.tx, t.cmd.Arg, true)
	if err != nil {
		return nil, err
	}
	if r.Bind != nil {
		s.Bound = *r.Bind
	}
	return nil, t.updatePolicy(s, &r.VolumePolicy, r.Rename, nil, nil)
}

func deleteSnapshot(t *txn, ref string) (any, error) {
	s, err := lookupVol(t.tx, ref, true)
	if err != nil {
		return nil, err
	}
	var children int
	if err := t.tx.QueryRow(`SELECT COUNT(*) FROM volumes WHERE parent_id = ?`, s.ID).Scan(&children); err != nil {
		return nil, err
	}
	if children > 0 {
		// Its data stays reachable for the children; the row goes when
		// the last child does.
		if cl, err := t.attachedTo(s); err != nil {
			return nil, err
		} else if len(cl) > 0 {
			return nil, apiErr(ErrInUse, "snapshot %s is attached to client(s) %v; detach it first", s.displayName(), cl)
		}
		s.Deleted = true
		return nil, t.updateVol(s)
	}
	return nil, t.remove(s)
}

func cmdSnapshotDelete(t *txn) (any, error) { return deleteSnapshot(t, t.cmd.Arg) }

func cmdSnapshotDeleteByID(t *txn) (any, error) {
	if !globalIDRE.MatchString("~" + t.cmd.Arg) {
		return nil, invalidParam("globalId", "%q is not a globalId", t.cmd.Arg)
	}
	return deleteSnapshot(t, "~"+t.cmd.Arg)
}

func cmdVolumeRevert(t *txn) (any, error) {
	r, err := decodeAs[*VolumeRevertDesc](t)
	if err != nil {
		return nil, err
	}
	v, err := lookupVol(t.tx, t.cmd.Arg, false)
	if err != nil {
		return nil, err
	}
	s, err := lookupVol(t.tx, r.ToSnapshot, true)
	if err != nil {
		return nil, err
	}
	if cl, err := t.attachedTo(v); err != nil {
		return nil, err
	} else if len(cl) > 0 {
		return nil, apiErr(ErrInUse, "volume %s is attached to client(s) %v; detach it before reverting", v.displayName(), cl)
	}
	onChain := false
	for pid := v.ParentID; pid != 0 && !onChain; {
		p, err := lookupVolByID(t.tx, pid)
		if err != nil {
			break
		}
		onChain = p.ID == s.ID
		pid = p.ParentID
	}
	if !onChain {
		return nil, apiErr(ErrNotAllowed, "snapshot %s is not a parent of volume %s", s.displayName(), v.displayName())
	}
	v.ParentID, v.Size = s.ID, s.Size
	// Drop what the volume wrote since: it reads through the snapshot.
	if err := t.dropLayer(v); err != nil {
		return nil, err
	}
	if err := t.freshLayer(v); err != nil {
		return nil, err
	}
	return nil, t.updateVol(v)
}

func cmdVolumesReassign(t *txn) (any, error) {
	r, err := decodeAs[[]ReassignDesc](t)
	if err != nil {
		return nil, err
	}
	return t.reassign(r)
}

func cmdVolumesReassignWait(t *txn) (any, error) {
	r, err := decodeAs[*ReassignWaitDesc](t)
	if err != nil {
		return nil, err
	}
	return t.reassign(r.Reassign)
}

// cmdClientTokensRenew (keel extension ClientTokensRenew/<clientId>)
// raises the fencing token of every read-write attachment of the client.
// A client (or iSCSI controller) process calls it when it starts, before
// it writes: a write's version is token<<40 | a sequence that restarts
// with the process, and servers keep the newest version of a block, so a
// new process must write under a token no earlier process used. It also
// fences any earlier process of the same client that still runs.
func cmdClientTokensRenew(t *txn) (any, error) {
	client, err := strconv.Atoi(t.cmd.Arg)
	if err != nil || client < 1 || client > 0xffff {
		return nil, invalidParam("clientId", "%q is not a client id (1..65535)", t.cmd.Arg)
	}
	rows, err := t.tx.Query(`SELECT volume_id FROM attachments WHERE client_id = ? AND rights = 'rw' ORDER BY volume_id`, client)
	if err != nil {
		return nil, err
	}
	var ids []int64
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return nil, err
		}
		ids = append(ids, id)
	}
	rows.Close()
	tokens := []map[string]any{}
	for _, id := range ids {
		if _, err := t.tx.Exec(`UPDATE volumes SET fencing_token = fencing_token + 1 WHERE id = ?`, id); err != nil {
			return nil, err
		}
		v, err := lookupVolByID(t.tx, id)
		if err != nil {
			return nil, err
		}
		tokens = append(tokens, map[string]any{"volume": v.displayName(), "globalId": v.GID, "fencingToken": v.Fencing})
	}
	return map[string]any{"generation": t.gen, "renewed": tokens}, nil
}

// reassign applies attachment changes. Only one read-write attachment
// exists per volume, and not beside read-only ones on other clients; force
// detaches what is in the way. Every read-write attach raises the volume's
// fencing token, so the storage servers refuse the writes of any earlier
// holder.
func (t *txn) reassign(rs []ReassignDesc) (any, error) {
	var tokens []map[string]any
	for _, r := range rs {
		ref, snap := r.Volume, false
		if r.Snapshot != "" {
			ref, snap = r.Snapshot, true
		}
		v, err := lookupVol(t.tx, ref, snap)
		if err != nil {
			return nil, err
		}
		ids, all, _ := parseDetach(r.Detach)
		if all {
			if _, err := t.tx.Exec(`DELETE FROM attachments WHERE volume_id = ?`, v.ID); err != nil {
				return nil, err
			}
		}
		for _, c := range ids {
			if _, err := t.tx.Exec(`DELETE FROM attachments WHERE volume_id = ? AND client_id = ?`, v.ID, c); err != nil {
				return nil, err
			}
		}
		for _, c := range r.RW {
			rows, err := t.tx.Query(`SELECT client_id, rights FROM attachments WHERE volume_id = ? AND client_id != ?`, v.ID, c)
			if err != nil {
				return nil, err
			}
			var others []string
			for rows.Next() {
				var oc int
				var rights string
				rows.Scan(&oc, &rights)
				others = append(others, fmt.Sprintf("client %d (%s)", oc, rights))
			}
			rows.Close()
			if len(others) > 0 && !r.Force {
				return nil, apiErr(ErrInUse, "volume %s is attached to %v; a read-write attachment must be the only one: detach them or use force", v.displayName(), others)
			}
			if _, err := t.tx.Exec(`DELETE FROM attachments WHERE volume_id = ? AND client_id != ?`, v.ID, c); err != nil {
				return nil, err
			}
			if err := t.attach(v, c, "rw"); err != nil {
				return nil, err
			}
			v.Fencing++
			if _, err := t.tx.Exec(`UPDATE volumes SET fencing_token = ? WHERE id = ?`, v.Fencing, v.ID); err != nil {
				return nil, err
			}
			tokens = append(tokens, map[string]any{"volume": v.displayName(), "globalId": v.GID, "client": c, "fencingToken": v.Fencing})
		}
		for _, c := range r.RO {
			var rwClient int
			err := t.tx.QueryRow(`SELECT client_id FROM attachments WHERE volume_id = ? AND rights = 'rw' AND client_id != ?`, v.ID, c).Scan(&rwClient)
			if err == nil {
				if !r.Force {
					return nil, apiErr(ErrInUse, "volume %s is attached read-write to client %d; detach it or use force", v.displayName(), rwClient)
				}
				if _, err := t.tx.Exec(`DELETE FROM attachments WHERE volume_id = ? AND client_id = ?`, v.ID, rwClient); err != nil {
					return nil, err
				}
			}
			if err := t.attach(v, c, "ro"); err != nil {
				return nil, err
			}
		}
	}
	return map[string]any{"generation": t.gen, "attached": tokens}, nil
}

// attach records an attachment, keeping its position when it exists and
// else taking the lowest free position on the client.
func (t *txn) attach(v *volRow, client int, rights string) error {
	var pos int
	err := t.tx.QueryRow(`SELECT pos FROM attachments WHERE volume_id = ? AND client_id = ?`, v.ID, client).Scan(&pos)
	if errors.Is(err, sql.ErrNoRows) {
		rows, err := t.tx.Query(`SELECT pos FROM attachments WHERE client_id = ?`, client)
		if err != nil {
			return err
		}
		var used []int
		for rows.Next() {
			var p int
			rows.Scan(&p)
			used = append(used, p)
		}
		rows.Close()
		sort.Ints(used)
		for _, p := range used {
			if p == pos {
				pos++
			}
		}
	} else if err != nil {
		return err
	}
	_, err = t.tx.Exec(`INSERT OR REPLACE INTO attachments (volume_id, client_id, rights, pos) VALUES (?, ?, ?, ?)`, v.ID, client, rights, pos)
	return err
}

func cmdKVSet(t *txn) (any, error) {
	r, err := decodeAs[*KVPair](t)
	if err != nil {
		return nil, err
	}
	_, err = t.tx.Exec(`INSERT OR REPLACE INTO kv (k, v) VALUES (?, ?)`, r.Key, r.Value)
	return nil, err
}

func cmdKVDelete(t *txn) (any, error) {
	res, err := t.tx.Exec(`DELETE FROM kv WHERE k = ?`, t.cmd.Arg)
	if err != nil {
		return nil, err
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return nil, notFound("key %q does not exist", t.cmd.Arg)
	}
	return nil, nil
}
