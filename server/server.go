package server

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"time"

	"keel/mgmt/apiclient"
	"keel/wire"
)

// Options configure a running storage server.
type Options struct {
	Disks       []string // paths of the disks to open
	Listen      string   // TCP address, "" for none
	Socket      string   // unix socket path, "" for none
	Secret      []byte   // cluster secret: key of the wire handshake
	NodeID      uint32
	Name        string
	Concurrency int
	DirectIO    bool // O_DIRECT for data I/O where the file system allows it
	// DirectWritesFrom: without DirectIO, data writes of at least this
	// many bytes use O_DIRECT; 0: none.
	DirectWritesFrom int
	DiskTimeout      time.Duration // an I/O in flight longer fails (ejects) the disk; 0: never
	// CheckpointInterval bounds what a crash of the server process loses,
	// FlushInterval what a crash of the host costs recovery (see
	// Store.Persist); 0: never (clients' FLUSH and FUA still flush).
	CheckpointInterval time.Duration
	FlushInterval      time.Duration
	State              *sql.DB // node state: fencing tokens survive restarts; may be nil
	Log                *slog.Logger
	// Mgmt, when set, receives ServiceHeartbeat and DiskRegister calls
	// every HeartbeatInterval.
	Mgmt              *apiclient.Client
	HeartbeatInterval time.Duration
	Version           string
	// RecoveryRate bounds the data a recovery fetches, in bytes per
	// second (0: unlimited); RecoverySettle is RecoverOptions.Settle
	// (0: DefaultRecoverySettle).
	RecoveryRate   uint64
	RecoverySettle time.Duration
	// ScrubRate bounds a scrub's reads, in bytes per second (0:
	// DefaultScrubRate).
	ScrubRate uint64
	// Ready is called once every listener accepts connections.
	Ready func(addrs []net.Addr)
}

// Server answers the wire protocol for the disks of one node.
type Server struct {
	log   *slog.Logger
	disks map[uint32]*Store
	paths map[uint32]string
	db    *sql.DB

	fenceMu sync.Mutex
	fence   map[uint64]uint64 // volume -> newest fencing token seen

	deletedMu sync.RWMutex
	deleted   map[uint64]bool // layers reclaimed: no object is created in them again
}

// NewServer serves already opened stores.
func NewServer(log *slog.Logger, db *sql.DB, stores map[string]*Store) (*Server, error) {
	s := &Server{log: log, disks: map[uint32]*Store{}, paths: map[uint32]string{}, db: db, fence: map[uint64]uint64{}, deleted: map[uint64]bool{}}
	for path, st := range stores {
		id := st.Superblock().DiskID
		if other, dup := s.paths[id]; dup {
			return nil, fmt.Errorf("disks %s and %s both carry disk id %d; re-initialise one with another id", other, path, id)
		}
		s.disks[id], s.paths[id] = st, path
	}
	if db != nil {
		if err := queryInts(db, "SELECT volume, token FROM server_fencing", func(r []int64) { s.fence[uint64(r[0])] = uint64(r[1]) }); err != nil {
			return nil, fmt.Errorf("load fencing tokens: %w", err)
		}
		if err := queryInts(db, "SELECT layer FROM server_deleted_layers", func(r []int64) { s.deleted[uint64(r[0])] = true }); err != nil {
			return nil, fmt.Errorf("load deleted layers: %w", err)
		}
	}
	return s, nil
}

// queryInts runs query, whose columns are integers, and calls row with
// each row's values.
func queryInts(db *sql.DB, query string, row func([]int64)) error {
	rows, err := db.Query(query)
	if err != nil {
		return err
	}
	defer rows.Close()
	cols, err := rows.Columns()
	if err != nil {
		return err
	}
	vals := make([]int64, len(cols))
	ptrs := make([]any, len(cols))
	for i := range vals {
		ptrs[i] = &vals[i]
	}
	for rows.Next() {
		if err := rows.Scan(ptrs...); err != nil {
			return err
		}
		row(vals)
	}
	return rows.Err()
}

// create creates an object unless its layer was reclaimed. It holds the
// deleted set's read lock throughout, so that once markLayersDeleted
// returns no create in a reclaimed layer is in flight: the reclaim that
// follows sees every object such a create made. Only recovery creates
// under a hidden parent (parentHidden).
func (s *Server) create(st *Store, id ObjectID, parent *ObjectID, parentHidden bool) error {
	s.deletedMu.RLock()
	defer s.deletedMu.RUnlock()
	if s.deleted[id.Volume] {
		return fmt.Errorf("layer %d: %w", id.Volume, ErrLayerDeleted)
	}
	return st.createChild(id, parent, parentHidden)
}

// layerDeleted reports whether the server reclaimed layer.
func (s *Server) layerDeleted(layer uint64) bool {
	s.deletedMu.RLock()
	defer s.deletedMu.RUnlock()
	return s.deleted[layer]
}

// markLayersDeleted records layers as reclaimed (in the node state first,
// so a restart keeps refusing them) before their objects are deleted.
func (s *Server) markLayersDeleted(layers []uint64) error {
	s.deletedMu.Lock()
	defer s.deletedMu.Unlock()
	if s.db != nil {
		tx, err := s.db.Begin()
		if err != nil {
			return fmt.Errorf("record deleted layers: %w", err)
		}
		defer tx.Rollback()
		for _, l := range layers {
			if !s.deleted[l] {
				if _, err := tx.Exec("INSERT OR IGNORE INTO server_deleted_layers(layer) VALUES(?)", int64(l)); err != nil {
					return fmt.Errorf("record deleted layer %d: %w", l, err)
				}
			}
		}
		if err := tx.Commit(); err != nil {
			return fmt.Errorf("record deleted layers: %w", err)
		}
	}
	for _, l := range layers {
		s.deleted[l] = true
	}
	return nil
}

// Run opens the disks, serves until ctx ends, then flushes and closes
// every disk.
func Run(ctx context.Context, o Options) error {
	stores := map[string]*Store{}
	defer func() {
		for path, st := range stores {
			if err := st.Close(); err != nil {
				o.Log.Error("closing disk", "path", path, "err", err)
			}
		}
	}()
	for _, p := range o.Disks {
		dev, _, err := OpenDevice(p, DirectIO{All: o.DirectIO, WritesFrom: o.DirectWritesFrom})
		if err != nil {
			return fmt.Errorf("open disk %s: %w", p, err)
		}
		if fd, ok := dev.(*fileDevice); ok && fd.aioErr != nil {
			o.Log.Warn("disk without native AIO: direct I/O uses one blocking call per request (raise fs.aio-max-nr?)", "path", p, "err", fd.aioErr)
		}
		st, err := Open(dev)
		if err != nil {
			dev.Close()
			return fmt.Errorf("open disk %s: %w", p, err)
		}
		stores[p] = st
		sb := st.Superblock()
		stat := st.Stats()
		o.Log.Info("disk opened", "path", p, "disk", sb.DiskID, "objects", stat.Objects, "free_bytes", stat.AUsFree*AUSize)
	}
	srv, err := NewServer(o.Log, o.State, stores)
	if err != nil {
		return err
	}
	cfg := wire.ServerConfig{Secret: o.Secret, Self: wire.Peer{NodeID: o.NodeID, Role: "server", Name: o.Name},
		Handler: srv, Log: o.Log, Concurrency: o.Concurrency, Quick: srv.ServeQuick}
	var lns []net.Listener
	if o.Listen != "" {
		ln, err := net.Listen("tcp", o.Listen)
		if err != nil {
			return fmt.Errorf("listen %s: %w", o.Listen, err)
		}
		lns = append(lns, ln)
	}
	if o.Socket != "" {
		os.Remove(o.Socket) // a stale socket of an earlier run
		ln, err := net.Listen("unix", o.Socket)
		if err != nil {
			return fmt.Errorf("listen %s: %w", o.Socket, err)
		}
		lns = append(lns, ln)
	}
	if len(lns) == 0 {
		return errors.New("serve: neither server.listen nor server.socket is set")
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, len(lns)+1)
	var addrs []net.Addr
	for _, ln := range lns {
		addrs = append(addrs, ln.Addr())
		o.Log.Info("serving the data protocol", "addr", ln.Addr().String())
		go func() { errc <- wire.Serve(ctx, ln, cfg) }()
	}
	for id, st := range srv.disks {
		go srv.watchFailure(ctx, o.Mgmt, id, st)
		if o.DiskTimeout > 0 {
			go st.Watch(ctx, o.DiskTimeout)
		}
		go st.Persist(ctx, o.CheckpointInterval, o.FlushInterval, func(err error) { o.Log.Error("background checkpoint or flush failed", "disk", id, "err", err) })
		if o.Mgmt != nil {
			go srv.followScrub(ctx, o, id, st)
			go srv.followRecovery(ctx, o, id, st)
		}
	}
	if o.Mgmt != nil {
		go srv.register(ctx, o, addrs)
		go srv.reclaim(ctx, o.Mgmt, o.NodeID, o.HeartbeatInterval)
	}
	if o.Ready != nil {
		o.Ready(addrs)
	}
	var first error
	for range lns {
		if err := <-errc; err != nil && first == nil {
			first = err
			cancel()
		}
	}
	return first
}

// ServeQuick serves, from a connection's reader (wire.ServerConfig.Quick),
// the requests that need not wait for a device, on a disk whose data goes
// through the page cache: reads of at most inlineMax whose data the page
// cache holds, and writes of at most inlineMax without FUA. It reports
// false, having answered nothing, for any other request, and for a read of
// which some block is not cached or is locked by a write: a worker serves
// those, in parallel. A FUA write or a FLUSH waits for the device, so does
// any I/O with O_DIRECT, and a large request would keep the ones behind it
// waiting. A buffered write normally takes microseconds, but may wait in
// the kernel's dirty page throttling (a disk that cannot keep up) or for
// a stripe lock; one that took longer than slowQuickWrite makes the
// disk's writes go to the workers, in parallel, for slowQuickPause, unless
// nothing waits behind them (alone).
func (s *Server) ServeQuick(peer wire.Peer, req *wire.Request, resp *wire.Response, alone bool) bool {
	st := s.disks[req.Disk]
	if st == nil || !st.cached || req.Length > inlineMax {
		return false
	}
	switch {
	case req.Op == wire.OpRead:
		return s.serve(peer, req, resp, true)
	case req.Op == wire.OpWrite && req.Flags&wire.FlagFUA == 0:
		start := time.Now()
		if !alone && start.UnixNano()-st.slowWrites.Load() < int64(slowQuickPause) {
			return false
		}
		s.serve(peer, req, resp, true)
		if end := time.Now(); end.Sub(start) > slowQuickWrite {
			st.slowWrites.Store(end.UnixNano())
		}
		return true
	}
	return false
}

// A quick write slower than slowQuickWrite sends the disk's writes with
// others behind them to the workers for slowQuickPause.
const (
	slowQuickWrite = time.Millisecond
	slowQuickPause = time.Second
)

const inlineMax = 64 << 10

// ServeWire answers one request.
func (s *Server) ServeWire(peer wire.Peer, req *wire.Request, resp *wire.Response) {
	s.serve(peer, req, resp, false)
}

// serve answers one request; with cachedOnly a read that would wait for
// the device answers nothing and returns false.
func (s *Server) serve(peer wire.Peer, req *wire.Request, resp *wire.Response, cachedOnly bool) bool {
	st := s.disks[req.Disk]
	if st == nil {
		resp.Status = wire.StatusNoDisk
		resp.Data = fmt.Appendf(resp.Data, "disk %d is not served by this server", req.Disk)
		return true
	}
	id := ObjectID{Volume: req.Volume, Index: req.Index}
	var err error
	switch req.Op {
	case wire.OpRead:
		if !cachedOnly {
			err = st.Read(id, req.Offset, resp.Grow(int(req.Length)))
		} else if err = st.ReadCached(id, req.Offset, resp.Grow(int(req.Length))); errors.Is(err, ErrWouldBlock) {
			resp.Data = resp.Data[:0]
			return false
		}
	case wire.OpWrite, wire.OpWriteZeroes, wire.OpTrim:
		fence := req.Fence
		if fence == 0 {
			fence = req.Volume
		}
		if err = s.checkFence(fence, req.Token); err != nil {
			break
		}
		if req.Op == wire.OpWrite {
			if len(req.Data) != int(req.Length) {
				err = fmt.Errorf("%w: write of %d bytes with length %d", ErrRange, len(req.Data), req.Length)
				break
			}
			err = st.Write(id, req.Offset, req.Data, req.Version)
		} else {
			err = st.WriteZeroes(id, req.Offset, int(req.Length), req.Version)
		}
		if err == nil && req.Flags&wire.FlagFUA != 0 {
			err = st.Flush()
		}
	case wire.OpFlush:
		err = st.Flush()
	case wire.OpCreate:
		var parent *ObjectID
		if req.Flags&wire.FlagParent != 0 {
			parent = &ObjectID{Volume: req.ParentVolume, Index: req.ParentIndex}
		}
		err = s.create(st, id, parent, false)
	case wire.OpDelete:
		err = st.DeleteObject(id)
	case wire.OpReadOwn:
		n := int(req.Length) / BlockSize
		buf := resp.Grow(n + int(req.Length))
		resp.Version, err = st.ReadOwn(id, req.Flags&wire.FlagHidden != 0, req.Offset, buf[n:], buf[:n])
	case wire.OpVersions:
		vs := st.AllVersions()
		out := make([]wire.VersionEntry, len(vs))
		for i, v := range vs {
			out[i] = wire.VersionEntry{Volume: v.Object.Volume, Index: v.Object.Index, Version: v.Version, Hidden: v.Hidden}
			if v.Parent != nil {
				out[i].HasParent, out[i].ParentVolume, out[i].ParentIndex = true, v.Parent.Volume, v.Parent.Index
			}
		}
		resp.Data = wire.EncodeVersions(resp.Data[:0], out)
	case wire.OpReadMeta:
		var states []uint8
		var vers []uint64
		if states, vers, err = st.BlockMeta(id, req.Flags&wire.FlagHidden != 0, req.Offset, int(req.Length)); err == nil {
			resp.Data = wire.EncodeBlockMeta(resp.Data[:0], states, vers)
		}
	case wire.OpStat:
		var b []byte
		b, err = json.Marshal(st.Stats())
		resp.Data = append(resp.Data[:0], b...)
	default:
		err = fmt.Errorf("%w: op %s", errBadRequest, req.Op)
	}
	if errors.Is(err, ErrNotFound) && (req.Op == wire.OpWrite || req.Op == wire.OpWriteZeroes || req.Op == wire.OpTrim) && s.layerDeleted(req.Volume) {
		// The object is gone because its layer was reclaimed: the writer
		// is stale, and must not create it again.
		err = fmt.Errorf("layer %d: %w", req.Volume, ErrLayerDeleted)
	}
	if err != nil {
		resp.Status = statusOf(err)
		resp.Data = append(resp.Data[:0], err.Error()...)
		if resp.Status == wire.StatusChecksum || resp.Status == wire.StatusDiskFailed {
			s.log.Error("disk error", "disk", req.Disk, "object", id.String(), "op", req.Op.String(), "peer", peer.String(), "err", err)
		}
	}
	return true
}

var errBadRequest = errors.New("bad request")

// ErrFenced means a write carried an older fencing token than the newest
// this server has seen for the volume.
var ErrFenced = errors.New("stale fencing token")

// ErrLayerDeleted means a create or write named a layer whose objects
// were reclaimed: the writer is stale (answered as StatusFenced).
var ErrLayerDeleted = errors.New("the layer was deleted and its space reclaimed; the writer is stale")

func statusOf(err error) wire.Status {
	switch {
	case errors.Is(err, ErrChecksum):
		return wire.StatusChecksum
	case errors.Is(err, ErrNotFound):
		return wire.StatusNotFound
	case errors.Is(err, ErrExists):
		return wire.StatusExists
	case errors.Is(err, ErrNoSpace):
		return wire.StatusNoSpace
	case errors.Is(err, ErrRange):
		return wire.StatusRange
	case errors.Is(err, ErrFenced), errors.Is(err, ErrLayerDeleted):
		return wire.StatusFenced
	case errors.Is(err, ErrFailed):
		return wire.StatusDiskFailed
	case errors.Is(err, errBadRequest):
		return wire.StatusBadRequest
	}
	return wire.StatusInternal
}

// checkFence refuses a token older than the newest seen for the volume and
// remembers a newer one (in the node state first, so a restart keeps it).
func (s *Server) checkFence(volume, token uint64) error {
	s.fenceMu.Lock()
	defer s.fenceMu.Unlock()
	cur := s.fence[volume]
	if token < cur {
		return fmt.Errorf("volume %d: %w %d, newest is %d: the attachment was taken over", volume, ErrFenced, token, cur)
	}
	if token == cur {
		return nil
	}
	if s.db != nil {
		if _, err := s.db.Exec("INSERT INTO server_fencing(volume, token) VALUES(?, ?) ON CONFLICT(volume) DO UPDATE SET token = excluded.token",
			int64(volume), int64(token)); err != nil {
			return fmt.Errorf("volume %d: record fencing token: %w", volume, err)
		}
	}
	s.fence[volume] = token
	return nil
}

// register heartbeats the server and registers its disks with mgmt until
// ctx ends; failures are logged (once per change) and retried.
func (s *Server) register(ctx context.Context, o Options, addrs []net.Addr) {
	addr := ""
	for _, a := range addrs {
		if a.Network() == "tcp" {
			addr = a.String()
		}
	}
	start := time.Now().Unix()
	interval := o.HeartbeatInterval
	if interval <= 0 {
		interval = 2 * time.Second
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	var lastErr string
	for {
		err := s.registerOnce(ctx, o, addr, start)
		if msg := fmt.Sprint(err); msg != lastErr {
			if err != nil {
				s.log.Warn("registering with mgmt failed; retrying", "err", err)
			} else {
				s.log.Info("registered with mgmt", "disks", len(s.disks))
			}
			lastErr = msg
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (s *Server) registerOnce(ctx context.Context, o Options, addr string, start int64) error {
	hb := map[string]any{"type": "server", "id": o.NodeID, "nodeId": o.NodeID, "version": o.Version,
		"startTime": start, "addr": addr, "generation": 0}
	if _, err := o.Mgmt.Post(ctx, "ServiceHeartbeat", hb, nil); err != nil {
		return err
	}
	for id, st := range s.disks {
		select {
		case <-st.Failed():
			continue // ejected: registering would mark it up again
		default:
		}
		sb, stat := st.Superblock(), st.Stats()
		objs := stat.AUsTotal / uint64(sb.ObjectSize/AUSize)
		body := map[string]any{"id": id, "serverId": o.NodeID, "size": stat.CapacityBytes, "ssd": sb.SSD,
			"device": s.paths[id], "objectsCount": objs, "objectsAllocated": stat.Objects,
			"objectsFree": objs - min(objs, uint64(stat.Objects)), "freeBytes": stat.AUsFree * AUSize}
		if _, err := o.Mgmt.Post(ctx, "DiskRegister", body, nil); err != nil {
			return fmt.Errorf("disk %d: %w", id, err)
		}
	}
	return nil
}

// watchFailure ejects a disk whose store failed: the server stops serving
// it (every request answers StatusDiskFailed) and asks mgmt to mark it
// ejected, retrying until mgmt answers, so clients read the other replicas.
func (s *Server) watchFailure(ctx context.Context, api *apiclient.Client, id uint32, st *Store) {
	select {
	case <-ctx.Done():
		return
	case <-st.Failed():
	}
	s.log.Error("disk failed: ejecting it; replace or re-test the drive, then keel disk forget and re-init it", "disk", id, "path", s.paths[id])
	for api != nil {
		_, err := api.Post(ctx, fmt.Sprintf("DiskEject/%d", id), nil, nil)
		if err == nil {
			s.log.Info("mgmt marked the disk ejected", "disk", id)
			return
		}
		s.log.Warn("asking mgmt to eject the disk failed; retrying", "disk", id, "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(2 * time.Second):
		}
	}
}
