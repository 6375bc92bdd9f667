package iscsi

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"keel/client"
	"keel/mgmt/apiclient"
	"keel/scsi"
	"keel/wire"
)

// ControllerOptions configure keel_iscsi on one node.
type ControllerOptions struct {
	// ID is the controller id (the node id): portals name it, and the
	// volumes it serves are attached to client apiclient.ISCSIClientBase+ID.
	ID      int
	Name    string
	Version string
	API     *apiclient.Client
	Secret  []byte
	Poll    time.Duration
	// Timeout bounds one request to one replica (client.Options.Timeout).
	Timeout time.Duration
	// Lease: writes wait while mgmt has not confirmed the controller's view
	// of the disks for this long (client.mgmt_lease). Default 8 s.
	Lease time.Duration
	Conns int
	// State is the node state database (migrations 0300): initiator
	// tracking and persistent reservations. Nil keeps neither.
	State *sql.DB
	Log   *slog.Logger
	// Ready is called after the first complete sync with mgmt.
	Ready func()
}

// Controller serves the portals of the portal groups that name it and the
// targets mgmt assigned to it, each over the volume I/O engine.
type Controller struct {
	o      ControllerOptions
	log    *slog.Logger
	pool   *client.Pool
	cfg    atomic.Pointer[apiclient.ISCSIConfigData]
	start  int64
	ctx    context.Context
	report []byte // last report sent
	// renewed: client.RenewTokens done for this process.
	renewed bool

	view   *client.DiskView        // what the volumes' engines ask of the cluster
	groups map[string]*portalGroup // by portal group id
	vols   map[string]*servedVolume
}

type portalGroup struct {
	id, name  string
	srv       *Server
	listeners map[string]net.Listener // by ip:port
}

type servedVolume struct {
	gid    string
	vol    *client.Volume
	lu     *scsi.LU
	target *Target
	cancel context.CancelFunc
	size   int64
}

// NewController prepares a controller; Run serves.
func NewController(o ControllerOptions) *Controller {
	if o.Poll <= 0 {
		o.Poll = time.Second
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Lease <= 0 {
		o.Lease = 8 * time.Second
	}
	return &Controller{o: o, log: o.Log.With("controller", o.ID),
		pool:  client.NewPool(o.Secret, wire.Peer{NodeID: uint32(apiclient.ISCSIClientBase + o.ID), Role: "client", Name: o.Name}, o.Conns),
		start: time.Now().Unix(), view: client.NewDiskView(o.API, o.Log, o.Lease),
		groups: map[string]*portalGroup{}, vols: map[string]*servedVolume{}}
}

// ClientID is the client id the controller's volumes are attached to.
func (c *Controller) ClientID() int { return apiclient.ISCSIClientBase + c.o.ID }

// Run serves until ctx ends, then closes every portal and flushes every
// volume.
func (c *Controller) Run(ctx context.Context) error {
	c.ctx = ctx
	defer c.shutdown()
	ready := false
	t := time.NewTicker(c.o.Poll)
	defer t.Stop()
	for {
		if err := c.sync(ctx); err != nil && ctx.Err() == nil {
			c.log.Warn("sync with mgmt failed; serving what is configured", "err", err)
		} else if err == nil && !ready {
			ready = true
			if c.o.Ready != nil {
				c.o.Ready()
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

func (c *Controller) sync(ctx context.Context) error {
	if !c.renewed {
		if err := client.RenewTokens(ctx, c.o.API, c.ClientID()); err != nil {
			return err
		}
		c.renewed = true
	}
	sent := time.Now()
	var cfg apiclient.ISCSIConfig
	if _, err := c.o.API.Get(ctx, "iSCSIConfig", nil, &cfg); err != nil {
		return err
	}
	c.cfg.Store(&cfg.ISCSI)
	var cv apiclient.ClientVolumes
	if _, err := c.o.API.Get(ctx, "ClientVolumes/"+strconv.Itoa(c.ClientID()), nil, &cv); err != nil {
		return err
	}
	var errs []error
	if err := c.applyVolumes(ctx, cv); err != nil {
		errs = append(errs, err)
	}
	if err := c.applyPortals(&cfg.ISCSI); err != nil {
		errs = append(errs, err)
	}
	c.revoke()
	c.track()
	if err := c.sendReport(ctx); err != nil {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		return errors.Join(errs...) // do not claim the generation
	}
	if err := c.heartbeat(ctx, cv.Generation); err != nil {
		return err
	}
	c.view.Confirmed(cv.Generation, sent)
	return nil
}

// applyVolumes opens new attachments, follows layout changes (snapshots,
// tokens, resizes) and closes detached volumes.
func (c *Controller) applyVolumes(ctx context.Context, cv apiclient.ClientVolumes) error {
	seen := map[string]bool{}
	for _, vl := range cv.Volumes {
		seen[vl.GlobalID] = true
	}
	for gid, sv := range c.vols {
		if !seen[gid] {
			c.closeVolume(ctx, sv)
		}
	}
	// As in the client applet (client.DiskView.Update): volumes may use
	// readmitted disks again, and a changed write set drains the requests
	// in flight before the generation is reported.
	readmit, changed, err := c.view.Update(cv)
	if err != nil {
		return err
	}
	for _, sv := range c.vols {
		for _, id := range readmit {
			sv.vol.Readmit(id)
		}
	}
	var errs []error
	for _, vl := range cv.Volumes {
		l := layoutOf(vl)
		sv := c.vols[vl.GlobalID]
		if sv == nil {
			if err := c.openVolume(vl, l); err != nil {
				errs = append(errs, err)
			}
			continue
		}
		cur := sv.vol.Layout()
		if cur.Size == l.Size && cur.Token == l.Token && cur.IOPS == l.IOPS && cur.BW == l.BW &&
			slices.Equal(cur.Layers, l.Layers) && slices.EqualFunc(cur.DiskSets, l.DiskSets, slices.Equal) {
			continue
		}
		c.log.Info("switching volume layout", "volume", l.Name, "layers", l.Layers, "token", l.Token, "size", l.Size)
		if err := sv.vol.SetLayout(ctx, l); err != nil {
			errs = append(errs, fmt.Errorf("volume %s: switch layout: %w", l.Name, err))
			continue
		}
		if l.Size != sv.size {
			sv.size = l.Size
			sv.lu.CapacityChanged()
		}
	}
	if changed {
		for _, sv := range c.vols {
			sv.vol.Drain()
		}
	}
	return errors.Join(errs...)
}

func layoutOf(vl apiclient.VolumeLayout) client.Layout {
	name := vl.Name
	if name == "" {
		name = "~" + vl.GlobalID
	}
	return client.Layout{Name: name, Fence: vl.Fence, Layers: vl.Layers, Size: vl.Size, ObjectSize: vl.ObjectSize,
		DiskSets: vl.DiskSets, Token: vl.Token, ReadOnly: vl.ReadOnly, IOPS: vl.IOPS, BW: vl.BW}
}

func (c *Controller) openVolume(vl apiclient.VolumeLayout, l client.Layout) error {
	vol, err := client.Open(l, client.Options{Log: c.log, Cluster: c.view, Pool: c.pool, Timeout: c.o.Timeout})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	var store scsi.PRStore
	if c.o.State != nil {
		store = dbPRStore{db: c.o.State, gid: vl.GlobalID}
	}
	lu, err := scsi.NewLU(NewVolumeBackend(ctx, vol), scsi.LUOptions{Name: vl.GlobalID, ReadOnly: l.ReadOnly, Store: store})
	if err != nil {
		cancel()
		return err
	}
	c.vols[vl.GlobalID] = &servedVolume{gid: vl.GlobalID, vol: vol, lu: lu, cancel: cancel, size: l.Size}
	c.log.Info("volume attached", "volume", l.Name, "globalId", vl.GlobalID, "token", l.Token)
	return nil
}

// closeVolume stops serving a volume mgmt detached: its sessions close,
// then what they wrote is flushed.
func (c *Controller) closeVolume(ctx context.Context, sv *servedVolume) {
	if sv.target != nil {
		for _, g := range c.groups {
			g.srv.RemoveTarget(sv.target.Name)
		}
	}
	fctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	if err := sv.vol.Flush(fctx); err != nil {
		c.log.Warn("flush on detach", "globalId", sv.gid, "err", err)
	}
	cancel()
	sv.cancel()
	delete(c.vols, sv.gid)
	c.log.Info("volume detached", "globalId", sv.gid)
}

// applyPortals makes the listeners and targets of every portal group match
// the configuration; sessions of targets that stay are not disturbed.
func (c *Controller) applyPortals(cfg *apiclient.ISCSIConfigData) error {
	// The targets this controller serves, by name, and the portal groups
	// they are exported in.
	targets := map[string]*servedVolume{}
	for _, t := range cfg.Targets {
		if t.CurrentControllerID != c.o.ID {
			continue
		}
		sv := c.vols[t.GlobalID]
		if sv == nil {
			continue // not attached (yet): mgmt attaches on export
		}
		if sv.target == nil || sv.target.Name != t.Name {
			sv.target = &Target{Name: t.Name, LUs: map[uint64]*scsi.LU{0: sv.lu}}
		}
		targets[t.Name] = sv
	}
	exported := map[string]map[string]bool{} // portal group name -> target names
	for _, in := range cfg.Initiators {
		for _, e := range in.Exports {
			if exported[e.PortalGroup] == nil {
				exported[e.PortalGroup] = map[string]bool{}
			}
			exported[e.PortalGroup][e.Target] = true
		}
	}
	var errs []error
	mine := map[string]bool{}
	for id, pg := range cfg.PortalGroups {
		var portals []string
		for _, p := range pg.Portals {
			if p.Controller == c.o.ID {
				portals = append(portals, net.JoinHostPort(p.IP, strconv.Itoa(p.Port)))
			}
		}
		if len(portals) == 0 {
			continue
		}
		mine[id] = true
		g := c.groups[id]
		if g == nil {
			tag, _ := strconv.Atoi(id)
			g = &portalGroup{id: id, name: pg.Name, listeners: map[string]net.Listener{}}
			g.srv = NewServer(Config{PortalGroupTag: uint16(tag), Log: c.log.With("portalGroup", pg.Name),
				Allow: c.allowFunc(pg.Name), CHAP: c.chap, LoggedIn: c.loggedInFunc(pg.Name)})
			c.groups[id] = g
		}
		g.name = pg.Name
		for addr, l := range g.listeners {
			if !slices.Contains(portals, addr) {
				l.Close()
				delete(g.listeners, addr)
				c.log.Info("portal removed", "portal", addr, "portalGroup", pg.Name)
			}
		}
		for _, addr := range portals {
			if g.listeners[addr] != nil {
				continue
			}
			l, err := net.Listen("tcp", addr)
			if err != nil {
				errs = append(errs, fmt.Errorf("portal %s of portal group %s: %w", addr, pg.Name, err))
				continue
			}
			g.listeners[addr] = l
			go g.srv.Serve(l)
			c.log.Info("serving portal", "portal", addr, "portalGroup", pg.Name)
		}
		want := exported[pg.Name]
		for _, t := range g.srv.Targets() {
			if !want[t.Name] || targets[t.Name] == nil || targets[t.Name].target != t {
				g.srv.RemoveTarget(t.Name)
				c.log.Info("target no longer served in portal group", "target", t.Name, "portalGroup", pg.Name)
			}
		}
		for name := range want {
			if sv := targets[name]; sv != nil && g.srv.target(name) != sv.target {
				g.srv.AddTarget(sv.target)
				c.log.Info("serving target", "target", name, "portalGroup", pg.Name)
			}
		}
	}
	for id, g := range c.groups {
		if !mine[id] {
			g.srv.Close()
			delete(c.groups, id)
			c.log.Info("portal group no longer served here", "portalGroup", g.name)
		}
	}
	return errors.Join(errs...)
}

func (c *Controller) initiator(name string) (apiclient.ISCSIInitiator, bool) {
	cfg := c.cfg.Load()
	if cfg == nil {
		return apiclient.ISCSIInitiator{}, false
	}
	for _, in := range cfg.Initiators {
		// iSCSI names compare case-insensitively (RFC 3722 folds
		// them to lower case); the configuration holds them folded.
		if strings.EqualFold(in.Name, name) {
			return in, true
		}
	}
	return apiclient.ISCSIInitiator{}, false
}

// access decides a login: the initiator must be configured, connect from
// one of its networks (any when it has none), and, for a normal session,
// have an export of the target in this portal group.
func (c *Controller) access(pg, initiator string, from netip.Addr, target string) error {
	in, ok := c.initiator(initiator)
	if !ok {
		return fmt.Errorf("%w: initiator %s is not in the iSCSI configuration", ErrForbidden, initiator)
	}
	if len(in.Nets) > 0 {
		inNet := false
		for _, n := range in.Nets {
			if p, err := netip.ParsePrefix(n); err == nil && p.Contains(from) {
				inNet = true
			}
		}
		if !inNet {
			return fmt.Errorf("%w: initiator %s may not connect from %s (allowed: %v)", ErrForbidden, initiator, from, in.Nets)
		}
	}
	if target == "" {
		return nil
	}
	for _, e := range in.Exports {
		if e.PortalGroup == pg && e.Target == target {
			return nil
		}
	}
	return fmt.Errorf("%w: target %s is not exported to %s in portal group %s", ErrForbidden, target, initiator, pg)
}

func (c *Controller) allowFunc(pg string) func(string, netip.Addr, string) error {
	return func(initiator string, from netip.Addr, target string) error {
		err := c.access(pg, initiator, from, target)
		if err != nil {
			c.log.Warn("iscsi login refused", "initiator", initiator, "from", from, "target", target, "err", err)
		}
		return err
	}
}

func (c *Controller) chap(initiator, _ string) (CHAPSecret, bool) {
	in, ok := c.initiator(initiator)
	if !ok || in.Username == "" {
		return CHAPSecret{}, false
	}
	return CHAPSecret{User: in.Username, Secret: in.Secret}, true
}

// revoke closes the sessions whose access the configuration no longer
// grants (export deleted, initiator deleted, network removed).
func (c *Controller) revoke() {
	for _, g := range c.groups {
		for _, si := range g.srv.Sessions() {
			for _, cn := range si.Conns {
				ap, err := netip.ParseAddrPort(cn.Remote)
				if err != nil {
					continue
				}
				if err := c.access(g.name, si.Initiator, ap.Addr().Unmap(), si.Target); err != nil {
					n := g.srv.CloseSessions(si.Initiator, si.Target)
					c.log.Info("closing sessions whose access was revoked", "initiator", si.Initiator, "target", si.Target, "sessions", n, "reason", err)
					break
				}
			}
		}
	}
}

func (c *Controller) heartbeat(ctx context.Context, gen int64) error {
	var open []string
	for gid, sv := range c.vols {
		if sv.target == nil {
			continue
		}
		for _, g := range c.groups {
			if len(g.srv.sessionsOf(sv.target)) > 0 {
				open = append(open, gid)
				break
			}
		}
	}
	slices.Sort(open)
	node := c.o.ID
	if node > 63 {
		node = 0
	}
	// As a block client (its attachments: mgmt waits for this generation
	// before a snapshot completes), and as the iSCSI controller.
	if _, err := c.o.API.Post(ctx, "ServiceHeartbeat", map[string]any{
		"type": "client", "id": c.ClientID(), "nodeId": node, "version": c.o.Version,
		"startTime": c.start, "generation": gen, "openVolumes": open}, nil); err != nil {
		return err
	}
	_, err := c.o.API.Post(ctx, "ServiceHeartbeat", map[string]any{
		"type": "iscsi", "id": c.o.ID, "nodeId": node, "version": c.o.Version, "startTime": c.start, "generation": gen}, nil)
	return err
}

// Sessions lists the live normal sessions of every portal group, one entry
// per connection, as iSCSISessionsInfo reports them.
func (c *Controller) Sessions() []apiclient.ISCSISessionInfo {
	out := []apiclient.ISCSISessionInfo{}
	for _, g := range c.groups {
		for _, si := range g.srv.Sessions() {
			if si.Target == "" {
				continue
			}
			for _, cn := range si.Conns {
				cid := int(cn.CID)
				e := apiclient.ISCSISessionInfo{Status: "ok", ControllerID: c.o.ID, ConnectionID: &cid, ISID: si.ISID,
					TimeCreated: si.Created.Unix(), Target: si.Target, Initiator: si.Initiator, TCP: &apiclient.ISCSISessionTCP{}}
				if ap, err := netip.ParseAddrPort(cn.Local); err == nil {
					e.TCP.PortalIP, e.TCP.PortalPort = ap.Addr().Unmap().String(), int(ap.Port())
				}
				if ap, err := netip.ParseAddrPort(cn.Remote); err == nil {
					e.TCP.InitiatorIP, e.TCP.InitiatorPort = ap.Addr().Unmap().String(), int(ap.Port())
				}
				out = append(out, e)
			}
		}
	}
	slices.SortFunc(out, func(a, b apiclient.ISCSISessionInfo) int {
		if a.Target != b.Target {
			return cmpStr(a.Target, b.Target)
		}
		return cmpStr(a.Initiator+a.ISID, b.Initiator+b.ISID)
	})
	return out
}

func cmpStr(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// interfaces finds the network interface of every portal this controller
// listens on.
func (c *Controller) interfaces() []apiclient.ISCSIInterfaceInfo {
	out := []apiclient.ISCSIInterfaceInfo{}
	ifs, _ := net.Interfaces()
	for _, g := range c.groups {
		for addr := range g.listeners {
			ap, err := netip.ParseAddrPort(addr)
			if err != nil {
				continue
			}
			for _, ifc := range ifs {
				addrs, _ := ifc.Addrs()
				for _, a := range addrs {
					ipn, ok := a.(*net.IPNet)
					if !ok {
						continue
					}
					if ip, ok := netip.AddrFromSlice(ipn.IP); ok && ip.Unmap() == ap.Addr().Unmap() {
						state := "down"
						if ifc.Flags&net.FlagUp != 0 {
							state = "up"
						}
						out = append(out, apiclient.ISCSIInterfaceInfo{Port: int(ap.Port()), State: state, InterfaceName: ifc.Name,
							MAC: ifc.HardwareAddr.String(), ResolveInterfaceName: ifc.Name})
					}
				}
			}
		}
	}
	slices.SortFunc(out, func(a, b apiclient.ISCSIInterfaceInfo) int {
		if a.InterfaceName != b.InterfaceName {
			return cmpStr(a.InterfaceName, b.InterfaceName)
		}
		return a.Port - b.Port
	})
	return out
}

// sendReport tells mgmt the live sessions and interfaces when they changed.
func (c *Controller) sendReport(ctx context.Context) error {
	r := apiclient.ISCSIControllerReport{ControllerID: c.o.ID, Sessions: c.Sessions(), Interfaces: c.interfaces()}
	b, _ := json.Marshal(r)
	if string(b) == string(c.report) {
		return nil
	}
	if _, err := c.o.API.Post(ctx, "iSCSIReport", json.RawMessage(b), nil); err != nil {
		return fmt.Errorf("report sessions: %w", err)
	}
	c.report = b
	return nil
}

func (c *Controller) shutdown() {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for id, g := range c.groups {
		g.srv.Close()
		delete(c.groups, id)
	}
	for _, sv := range c.vols {
		c.closeVolume(ctx, sv)
	}
	c.pool.Close()
}

// dbPRStore keeps one volume's persistent reservations in the node state.
type dbPRStore struct {
	db  *sql.DB
	gid string
}

func (s dbPRStore) Load() ([]byte, error) {
	var b []byte
	err := s.db.QueryRow(`SELECT data FROM iscsi_reservations WHERE global_id = ?`, s.gid).Scan(&b)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	return b, err
}

func (s dbPRStore) Save(b []byte) error {
	_, err := s.db.Exec(`INSERT OR REPLACE INTO iscsi_reservations (global_id, data) VALUES (?, ?)`, s.gid, b)
	return err
}
