package client

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"keel/nbd"
	"keel/wire"
)

const blockSize = 4096

// Volume is one attached volume served by the engine. It is safe for
// concurrent use; it implements nbd.Backend.
type Volume struct {
	log     *slog.Logger
	layout  Layout
	cluster Cluster
	pool    *Pool
	timeout time.Duration
	limit   *limiter

	// gate is held shared by every request and exclusively by SetLayout,
	// which therefore waits for the requests in flight (a snapshot drains
	// them) and holds new ones until the switch is done.
	gate sync.RWMutex

	stats Stats
	seq   atomic.Uint64 // write sequence within this attachment

	mu    sync.Mutex
	down  map[uint32]bool     // disks committed down by mgmt while attached
	dirty map[uint32]struct{} // disks written since the last flush
	lost  error               // set once a server refused our fencing token
}

// Options of Open.
type Options struct {
	Log     *slog.Logger
	Cluster Cluster
	Pool    *Pool
	// Timeout bounds one request to one replica; past it the replica is
	// reported to mgmt as down. Default 10 s.
	Timeout time.Duration
}

// Open returns the engine for one attachment of a volume.
func Open(l Layout, o Options) (*Volume, error) {
	if err := l.validate(); err != nil {
		return nil, err
	}
	if o.Timeout <= 0 {
		o.Timeout = 10 * time.Second
	}
	return &Volume{log: o.Log.With("volume", l.Name), layout: l, cluster: o.Cluster, pool: o.Pool,
		timeout: o.Timeout, limit: newLimiter(l.IOPS, l.BW),
		down: map[uint32]bool{}, dirty: map[uint32]struct{}{}}, nil
}

// Layout returns the volume's current layout.
func (v *Volume) Layout() Layout {
	v.gate.RLock()
	defer v.gate.RUnlock()
	return v.layout
}

// SetLayout switches the volume to a new layout (a snapshot gave it a new
// own layer, or the attachment a new token) once the requests in flight
// are done; requests arriving meanwhile wait and then use the new layout.
// Writes completed before the switch are flushed first, so that the
// frozen layer is durable as the snapshot.
func (v *Volume) SetLayout(ctx context.Context, l Layout) error {
	if err := l.validate(); err != nil {
		return err
	}
	v.gate.Lock()
	defer v.gate.Unlock()
	if err := v.flushLocked(ctx); err != nil {
		return err
	}
	v.layout = l
	v.limit = newLimiter(l.IOPS, l.BW)
	return nil
}

// Stats counts the requests a volume served since it was opened.
type Stats struct {
	ReadOps    atomic.Int64 `json:"-"`
	WriteOps   atomic.Int64 `json:"-"`
	ReadBytes  atomic.Int64 `json:"-"`
	WriteBytes atomic.Int64 `json:"-"`
}

// StatsSnapshot is Stats at one moment, for reports.
type StatsSnapshot struct {
	ReadOps    int64 `json:"readOps"`
	WriteOps   int64 `json:"writeOps"`
	ReadBytes  int64 `json:"readBytes"`
	WriteBytes int64 `json:"writeBytes"`
}

// Stats returns the volume's counters.
func (v *Volume) Stats() StatsSnapshot {
	return StatsSnapshot{ReadOps: v.stats.ReadOps.Load(), WriteOps: v.stats.WriteOps.Load(),
		ReadBytes: v.stats.ReadBytes.Load(), WriteBytes: v.stats.WriteBytes.Load()}
}

// nextVersion returns the version of the next write: the same on every
// replica, so that recovery can tell which blocks a returning replica
// missed. It grows across attachments too, because every attachment has
// a higher fencing token than the last.
func (v *Volume) nextVersion() uint64 {
	return v.layout.Token<<40 | v.seq.Add(1)&(1<<40-1)
}

// Lost returns the error that made the volume unusable (fenced), or nil.
func (v *Volume) Lost() error {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.lost
}

// extent is the part of a request that falls in one object.
type extent struct {
	index  uint32
	offset uint64 // inside the object
	pos    int    // inside the request buffer
	length int
}

// split cuts [off, off+n) at object boundaries.
func (v *Volume) split(off int64, n int) []extent {
	var out []extent
	pos := 0
	for n > 0 {
		idx := off / v.layout.ObjectSize
		in := off % v.layout.ObjectSize
		l := int(min(int64(n), v.layout.ObjectSize-in))
		out = append(out, extent{index: uint32(idx), offset: uint64(in), pos: pos, length: l})
		off += int64(l)
		pos += l
		n -= l
	}
	return out
}

func (v *Volume) diskSet(index uint32) []uint32 {
	return v.layout.DiskSets[int(index)%len(v.layout.DiskSets)]
}

// replica is one disk of a set with the address of its server.
type replica struct {
	disk uint32
	addr string
}

// upReplicas returns the disks of object index's set that serve reads
// (up, not recovering), tail first (reads prefer it).
func (v *Volume) upReplicas(ctx context.Context, index uint32) ([]replica, error) {
	return v.replicas(ctx, index, false)
}

// firstUp returns the first of upReplicas, without building the list:
// the common read asks one replica only.
func (v *Volume) firstUp(ctx context.Context, index uint32) (replica, error) {
	var buf [1]replica
	reps, err := v.appendReplicas(ctx, buf[:0], index, false, 1)
	if err != nil {
		return replica{}, err
	}
	return reps[0], nil
}

// writeReplicas returns the disks of object index's set that writes must
// reach: the up ones and the recovering ones.
func (v *Volume) writeReplicas(ctx context.Context, index uint32) ([]replica, error) {
	return v.replicas(ctx, index, true)
}

func (v *Volume) replicas(ctx context.Context, index uint32, write bool) ([]replica, error) {
	return v.appendReplicas(ctx, make([]replica, 0, len(v.diskSet(index))), index, write, 0)
}

// appendReplicas appends what replicas returns to out, at most the first
// most of them (0: all).
func (v *Volume) appendReplicas(ctx context.Context, out []replica, index uint32, write bool, most int) ([]replica, error) {
	set := v.diskSet(index)
	n := len(out)
	for i := len(set) - 1; i >= 0 && (most == 0 || len(out)-n < most); i-- {
		d := set[i]
		v.mu.Lock()
		down := v.down[d]
		v.mu.Unlock()
		if down {
			continue
		}
		addr, access, err := v.cluster.DiskAccess(ctx, d)
		if err != nil {
			return nil, err
		}
		if access == DiskUp || (write && access.Writable()) {
			out = append(out, replica{disk: d, addr: addr})
		}
	}
	if len(out) == n {
		return nil, fmt.Errorf("volume %s object %d: %w: no disk of set %v is up", v.layout.Name, index, ErrNoReplica, set)
	}
	return out, nil
}

// Readmit lets the engine use disk again after it marked it down: mgmt
// reports it up or recovering in a generation after the one that
// committed it down. Writes issued from now on include it.
func (v *Volume) Readmit(disk uint32) {
	v.mu.Lock()
	delete(v.down, disk)
	v.mu.Unlock()
}

// Drain waits until the requests in flight are done. A client calls it
// after a disk's write eligibility changed, before it reports the new
// generation: every write issued after the report uses the new disk set.
func (v *Volume) Drain() {
	v.gate.Lock()
	//lint:ignore SA2001 the empty critical section is the barrier
	v.gate.Unlock()
}

func (v *Volume) checkLost() error {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.lost != nil {
		return fmt.Errorf("%w: %v", nbd.ErrVolumeLost, v.lost)
	}
	return nil
}

// fenced records that a server refused our token: from now on every
// request fails, and the client applet closes the export.
func (v *Volume) fenced(err error) error {
	v.mu.Lock()
	if v.lost == nil {
		v.lost = err
		v.log.Error("volume lost: another attachment took it over", "err", err)
	}
	v.mu.Unlock()
	return fmt.Errorf("%w: %v", nbd.ErrVolumeLost, err)
}

func statusOf(err error) wire.Status {
	var se *wire.StatusError
	if errors.As(err, &se) {
		return se.Status
	}
	return wire.StatusOK
}

// transportFailure reports whether err means the replica did not answer
// (connection, timeout, failed disk), as opposed to a definite answer.
func transportFailure(err error) bool {
	switch statusOf(err) {
	case wire.StatusOK:
		return err != nil // no status: the request never got an answer
	case wire.StatusDiskFailed, wire.StatusNoDisk:
		return true
	}
	return false
}

// call sends one request to one replica within the replica timeout.
func (v *Volume) call(ctx context.Context, r replica, req *wire.Request, resp *wire.Response) error {
	req.Disk = r.disk
	return v.pool.do(ctx, r.addr, v.timeout, req, resp)
}
