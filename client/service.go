package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	"keel/mgmt/apiclient"
	"keel/nbd"
	"keel/wire"
)

// ServiceOptions configure the block client of one node.
type ServiceOptions struct {
	ClientID uint32
	Name     string
	Version  string
	API      *apiclient.Client
	Secret   []byte
	// RunDir holds the NBD sockets (RunDir/nbd/<globalId>.sock).
	RunDir string
	// DevDir holds the keel/<name> and keel-byid/<globalId> links.
	DevDir string
	// TCPListen, when set, also serves every export by volume name on this
	// (loopback) address.
	TCPListen string
	Poll      time.Duration
	Timeout   time.Duration
	// Lease: writes wait while mgmt has not confirmed this client's view
	// of the disks for this long (client.mgmt_lease). Default 8 s.
	Lease time.Duration
	Conns int
	Log   *slog.Logger
	// Ready is called once the listeners are up and the first sync with
	// mgmt is done.
	Ready func()
}

// Service serves every attachment of its node as an NBD export.
type Service struct {
	o    ServiceOptions
	log  *slog.Logger
	pool *Pool
	tcp  *nbd.Server

	view *DiskView // what the volumes' engines ask of the cluster

	vols    map[string]*attachment // by globalId
	start   int64
	renewed bool // RenewTokens done for this process
}

type attachment struct {
	vol    *Volume
	srv    *nbd.Server
	export *nbd.Export
	tcpExp *nbd.Export
	sock   string
	links  []string
	name   string
	failed bool
}

// NewService prepares the client; Run serves.
func NewService(o ServiceOptions) *Service {
	if o.Poll <= 0 {
		o.Poll = 250 * time.Millisecond
	}
	if o.Lease <= 0 {
		o.Lease = 8 * time.Second
	}
	return &Service{o: o, log: o.Log, vols: map[string]*attachment{}, view: NewDiskView(o.API, o.Log, o.Lease),
		pool:  NewPool(o.Secret, wire.Peer{NodeID: o.ClientID, Role: "client", Name: o.Name}, o.Conns),
		start: time.Now().Unix()}
}

// Run serves until ctx ends, then closes every export.
func (s *Service) Run(ctx context.Context) error {
	if err := os.MkdirAll(filepath.Join(s.o.RunDir, "nbd"), 0o755); err != nil {
		return fmt.Errorf("client: %w", err)
	}
	if s.o.TCPListen != "" {
		ln, err := net.Listen("tcp", s.o.TCPListen)
		if err != nil {
			return fmt.Errorf("client: nbd listener: %w", err)
		}
		s.tcp = nbd.NewServer(s.log)
		go s.tcp.Serve(ln)
		s.log.Info("serving NBD exports by volume name", "addr", ln.Addr().String())
	}
	defer s.shutdown()
	ready := false
	t := time.NewTicker(s.o.Poll)
	defer t.Stop()
	for {
		if err := s.sync(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn("sync with mgmt failed; serving what is attached", "err", err)
		} else if err == nil && !ready {
			ready = true
			if s.o.Ready != nil {
				s.o.Ready()
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// sync fetches this client's attachments, opens new ones, switches
// changed layouts, closes removed ones, and reports the generation it now
// serves in a heartbeat (attach --wait waits for it).
func (s *Service) sync(ctx context.Context) error {
	if !s.renewed {
		if err := RenewTokens(ctx, s.o.API, int(s.o.ClientID)); err != nil {
			return err
		}
		s.renewed = true
	}
	sent := time.Now()
	var cv apiclient.ClientVolumes
	if _, err := s.o.API.Get(ctx, "ClientVolumes/"+strconv.FormatUint(uint64(s.o.ClientID), 10), nil, &cv); err != nil {
		return err
	}
	seen := map[string]bool{}
	for _, vl := range cv.Volumes {
		seen[vl.GlobalID] = true
	}
	// Detach first, while the view still has the detached volumes' disks
	// for their last flush.
	for gid, a := range s.vols {
		if !seen[gid] {
			s.detach(ctx, gid, a)
		}
	}
	readmit, changed, err := s.view.Update(cv)
	if err != nil {
		return err
	}
	for _, id := range readmit {
		for _, a := range s.vols {
			a.vol.Readmit(id)
		}
	}
	var errs []error
	for _, vl := range cv.Volumes {
		if err := s.apply(ctx, vl); err != nil {
			errs = append(errs, err)
		}
	}
	for _, a := range s.vols {
		if err := a.vol.Lost(); err != nil && !a.failed {
			a.failed = true
			a.export.Fail(fmt.Errorf("%w: %v", nbd.ErrVolumeLost, err))
			if a.tcpExp != nil {
				a.tcpExp.Fail(fmt.Errorf("%w: %v", nbd.ErrVolumeLost, err))
			}
		}
	}
	if changed {
		for _, a := range s.vols {
			a.vol.Drain()
		}
	}
	if len(errs) > 0 {
		return errors.Join(errs...) // do not claim the generation
	}
	s.writeStats()
	if err := s.heartbeat(ctx, cv.Generation); err != nil {
		return err
	}
	s.view.Confirmed(cv.Generation, sent)
	return nil
}

// RenewTokens gives every read-write attachment of client id a fencing
// token no earlier process used (ClientTokensRenew). A frontend process
// calls it before its first sync, so before it writes: a write's version
// is token<<40 | a sequence that restarts with the process, and servers
// keep the newest version of a block, so writes under an old token would
// lose to what the previous process wrote.
func RenewTokens(ctx context.Context, api *apiclient.Client, id int) error {
	if _, err := api.Post(ctx, "ClientTokensRenew/"+strconv.Itoa(id), map[string]any{}, nil); err != nil {
		return fmt.Errorf("renew the fencing tokens of client %d: %w", id, err)
	}
	return nil
}

// StatsFile is where the client writes its counters (in its run
// directory), for keel demo and monitoring.
const StatsFile = "client-stats.json"

// ClientStats is the content of StatsFile.
type ClientStats struct {
	Time    int64                    `json:"time"`
	Volumes map[string]StatsSnapshot `json:"volumes"` // by globalId
}

func (s *Service) writeStats() {
	st := ClientStats{Time: time.Now().UnixMilli(), Volumes: map[string]StatsSnapshot{}}
	for gid, a := range s.vols {
		st.Volumes[gid] = a.vol.Stats()
	}
	b, _ := json.Marshal(st)
	if err := os.WriteFile(filepath.Join(s.o.RunDir, StatsFile+".tmp"), b, 0o644); err == nil {
		os.Rename(filepath.Join(s.o.RunDir, StatsFile+".tmp"), filepath.Join(s.o.RunDir, StatsFile))
	}
}

func (s *Service) heartbeat(ctx context.Context, gen int64) error {
	var open []string
	for gid, a := range s.vols {
		if a.export.Conns() > 0 || (a.tcpExp != nil && a.tcpExp.Conns() > 0) {
			open = append(open, gid)
		}
	}
	slices.Sort(open)
	_, err := s.o.API.Post(ctx, "ServiceHeartbeat", map[string]any{
		"type": "client", "id": s.o.ClientID, "nodeId": s.o.ClientID, "version": s.o.Version,
		"startTime": s.start, "generation": gen, "openVolumes": open}, nil)
	return err
}

func layoutOf(vl apiclient.VolumeLayout) Layout {
	name := vl.Name
	if name == "" {
		name = "~" + vl.GlobalID
	}
	return Layout{Name: name, Fence: vl.Fence, Layers: vl.Layers, Size: vl.Size, ObjectSize: vl.ObjectSize,
		DiskSets: vl.DiskSets, Token: vl.Token, ReadOnly: vl.ReadOnly, IOPS: vl.IOPS, BW: vl.BW}
}

func (s *Service) apply(ctx context.Context, vl apiclient.VolumeLayout) error {
	l := layoutOf(vl)
	a := s.vols[vl.GlobalID]
	if a == nil {
		return s.attach(vl, l)
	}
	cur := a.vol.Layout()
	if cur.Size != l.Size || cur.ReadOnly != l.ReadOnly {
		// The export's size and mode are fixed for its clients: serve it
		// anew (clients reconnect).
		s.detach(ctx, vl.GlobalID, a)
		return s.attach(vl, l)
	}
	if !slices.Equal(cur.Layers, l.Layers) || cur.Token != l.Token || cur.IOPS != l.IOPS || cur.BW != l.BW ||
		!slices.EqualFunc(cur.DiskSets, l.DiskSets, slices.Equal) {
		s.log.Info("switching volume layout", "volume", l.Name, "layers", l.Layers, "token", l.Token)
		if err := a.vol.SetLayout(ctx, l); err != nil {
			return fmt.Errorf("volume %s: switch layout: %w", l.Name, err)
		}
	}
	return nil
}

func (s *Service) attach(vl apiclient.VolumeLayout, l Layout) error {
	vol, err := Open(l, Options{Log: s.log, Cluster: s.view, Pool: s.pool, Timeout: s.o.Timeout})
	if err != nil {
		return err
	}
	srv := nbd.NewServer(s.log)
	exp, err := srv.AddExport(l.Name, vol)
	if err != nil {
		return err
	}
	sock := filepath.Join(s.o.RunDir, "nbd", vl.GlobalID+".sock")
	os.Remove(sock)
	ln, err := net.Listen("unix", sock)
	if err != nil {
		return fmt.Errorf("volume %s: listen %s: %w", l.Name, sock, err)
	}
	go srv.Serve(ln)
	a := &attachment{vol: vol, srv: srv, export: exp, sock: sock, name: l.Name}
	if s.tcp != nil {
		if a.tcpExp, err = s.tcp.AddExport(l.Name, vol); err != nil {
			s.log.Warn("volume not served over TCP", "volume", l.Name, "err", err)
		}
	}
	if s.o.DevDir != "" {
		if vl.Name != "" {
			a.links = append(a.links, filepath.Join(s.o.DevDir, "keel", vl.Name))
		}
		a.links = append(a.links, filepath.Join(s.o.DevDir, "keel-byid", vl.GlobalID))
		for _, link := range a.links {
			os.MkdirAll(filepath.Dir(link), 0o755)
			os.Remove(link)
			if err := os.Symlink(sock, link); err != nil {
				s.log.Warn("device link", "link", link, "err", err)
			}
		}
	}
	s.vols[vl.GlobalID] = a
	s.log.Info("volume attached", "volume", l.Name, "globalId", vl.GlobalID, "socket", sock, "readOnly", l.ReadOnly, "token", l.Token)
	return nil
}

// detach stops serving a volume mgmt no longer attaches here. mgmt refuses
// to detach an export this client reports open unless forced, so users
// still connected are losing the volume (it was forced away, or taken over
// by another client): they get EIO, as for a fenced volume, not a clean
// shutdown. Their connections are waited for only briefly; a failed export
// answers nothing but errors until they hang up.
func (s *Service) detach(ctx context.Context, gid string, a *attachment) {
	if a.export.Conns() > 0 || (a.tcpExp != nil && a.tcpExp.Conns() > 0) {
		lost := fmt.Errorf("%w: detached from client %d by force", nbd.ErrVolumeLost, s.o.ClientID)
		a.export.Fail(lost)
		if a.tcpExp != nil {
			a.tcpExp.Fail(lost)
		}
		s.log.Warn("volume detached while open: its users get I/O errors", "volume", a.name)
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	// A failed export answers what its users already sent with EIO; a
	// forced removal now would drop the requests still unread in their
	// sockets, and they would see a broken connection instead. Give them
	// the brief wait to read their errors and hang up.
	for a.export.Conns() > 0 || (a.tcpExp != nil && a.tcpExp.Conns() > 0) {
		if ctx.Err() != nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if a.tcpExp != nil {
		s.tcp.RemoveExport(ctx, a.name, true)
	}
	a.srv.RemoveExport(ctx, a.name, true)
	a.srv.Close(ctx)
	if err := a.vol.Flush(ctx); err != nil {
		s.log.Warn("flush on detach", "volume", a.name, "err", err)
	}
	for _, l := range a.links {
		os.Remove(l)
	}
	os.Remove(a.sock)
	delete(s.vols, gid)
	s.log.Info("volume detached", "volume", a.name)
}

func (s *Service) shutdown() {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for gid, a := range s.vols {
		s.detach(ctx, gid, a)
	}
	if s.tcp != nil {
		s.tcp.Close(ctx)
	}
	s.pool.Close()
}
