package client

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"keel/internal/later"
	"keel/nbd"
	"keel/wire"
)

// errNothingToZero: a zeroing request on an object that exists in no
// layer; the range already reads as zeroes.
var errNothingToZero = errors.New("nothing to zero")

// Info describes the volume as an NBD export. Requests are 4 KiB aligned
// (the servers checksum 4 KiB blocks) and at most one wire payload long.
func (v *Volume) Info() nbd.Info {
	l := v.Layout()
	return nbd.Info{
		Size:           l.Size,
		MinBlock:       blockSize,
		PreferredBlock: blockSize,
		MaxBlock:       wire.MaxIO,
		ReadOnly:       l.ReadOnly,
		MultiConn:      true, // one engine (and one dirty set) behind every connection
		FastZero:       true, // zeroing is a metadata change on the servers
		Description:    "keel volume " + l.Name,
	}
}

// parallel runs f for every extent concurrently and returns the first error.
func parallel(exts []extent, f func(extent) error) error {
	if len(exts) == 1 {
		return f(exts[0])
	}
	errs := make([]error, len(exts))
	var wg sync.WaitGroup
	for i, e := range exts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = f(e)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// ReadAt reads p at off: each object from its placeTail replica first,
// from the next up replica when one fails or returns a bad checksum.
func (v *Volume) ReadAt(ctx context.Context, p []byte, off int64) error {
	v.gate.RLock()
	defer v.gate.RUnlock()
	if err := v.admit(ctx, false, len(p), &v.stats.ReadOps, &v.stats.ReadBytes); err != nil {
		return err
	}
	return parallel(v.split(off, len(p)), func(e extent) error {
		return v.readExtent(ctx, e, p[e.pos:e.pos+e.length])
	})
}

// asyncRead is the state of one read StartRead started. They are pooled,
// each with its reply function made once: a closure per read would be
// allocated.
type asyncRead struct {
	req  wire.Request
	resp wire.Response

	v      *Volume
	ctx    context.Context
	p      []byte
	e      extent
	disk   uint32 // the replica asked
	single bool   // the volume has one layer
	done   func(error, *later.Queue)
	fn     func(error, *later.Queue) // finish, bound
}

var asyncReads = sync.Pool{New: func() any { return new(asyncRead) }}

func (a *asyncRead) put() {
	a.v, a.ctx, a.p, a.done = nil, nil, nil, nil
	a.resp.Data = nil
	asyncReads.Put(a)
}

// StartRead implements nbd.AsyncReader: the common read, of one object
// from the volume's own layer on a live connection to its first up
// replica, with no limit to wait for, is sent without a goroutine waiting
// for its reply. Whatever that read cannot settle (another layer to look
// in, a failed replica, a bad reply) goes on, as ReadAt would, on a
// goroutine of its own. It reports false, having done nothing, for any
// read it would have to wait to start.
func (v *Volume) StartRead(ctx context.Context, p []byte, off int64, q *later.Queue, done func(error, *later.Queue)) bool {
	if !v.gate.TryRLock() {
		return false
	}
	l := &v.layout
	idx, in := off/l.ObjectSize, off%l.ObjectSize
	if v.limit != nil || in+int64(len(p)) > l.ObjectSize || v.checkLost() != nil {
		v.gate.RUnlock()
		return false
	}
	e := extent{index: uint32(idx), offset: uint64(in), length: len(p)}
	r, err := v.firstUp(ctx, e.index)
	if err != nil {
		v.gate.RUnlock()
		return false
	}
	c := v.pool.live(r.addr, q)
	if c == nil {
		v.gate.RUnlock()
		return false
	}
	a := asyncReads.Get().(*asyncRead)
	if a.fn == nil {
		a.fn = a.finish
	}
	a.req = wire.Request{Op: wire.OpRead, Disk: r.disk, Volume: l.Layers[0], Index: e.index, Offset: e.offset, Length: uint32(len(p))}
	a.resp = wire.Response{Data: p[:0:len(p)]}
	a.v, a.ctx, a.p, a.e, a.disk, a.single, a.done = v, ctx, p, e, r.disk, len(l.Layers) == 1, done
	if err := c.StartFunc(v.timeout, &a.req, &a.resp, q, a.fn); err != nil {
		a.put()
		v.gate.RUnlock()
		return false
	}
	v.stats.ReadOps.Add(1)
	v.stats.ReadBytes.Add(int64(len(p)))
	return true
}

// finish settles a read StartRead started, given the replica's answer.
func (a *asyncRead) finish(err error, q *later.Queue) {
	v, ctx, p, e, disk, done := a.v, a.ctx, a.p, a.e, a.disk, a.done
	n := len(a.resp.Data)
	same := n > 0 && &a.resp.Data[0] == &p[0]
	single := a.single
	a.put()
	if err == nil && n == len(p) && same {
		v.gate.RUnlock()
		done(nil, q)
		return
	}
	notFound := err != nil && statusOf(err) == wire.StatusNotFound
	switch {
	case notFound && single:
		clear(p)
		v.gate.RUnlock()
		done(nil, q)
		return
	case err == nil:
		err = fmt.Errorf("read returned %d bytes, want %d", n, len(p))
	}
	// Another layer to look in, or other replicas to try: the ordinary
	// path settles it on a goroutine of its own.
	go v.finishRead(ctx, e, p, disk, notFound, err, done)
}

// finishRead settles a started read the replica did not: notFound (look
// in the other layers) or failed with err.
func (v *Volume) finishRead(ctx context.Context, e extent, p []byte, disk uint32, notFound bool, err error, done func(error, *later.Queue)) {
	if notFound || retryable(ctx, err) {
		// (a broken connection: the ordinary path redials)
		err = v.readExtent(ctx, e, p)
	} else {
		err = v.readExtentAfter(ctx, e, p, disk, err)
	}
	v.gate.RUnlock()
	done(err, nil)
}

// asyncWrite is the state of one write StartWrite started. They are
// pooled, each with its replicas' reply functions made once: closures per
// write would be allocated. One goes back to the pool when the write is
// settled; by then no call holds its requests or responses.
type asyncWrite struct {
	reps  [maxAsyncReplicas]replica
	errs  [maxAsyncReplicas]error
	reqs  [maxAsyncReplicas]wire.Request
	resps [maxAsyncReplicas]wire.Response
	left  atomic.Int32

	v       *Volume
	ctx     context.Context
	p       []byte
	e       extent
	n       int // replicas
	version uint64
	done    func(error, *later.Queue)
	fns     [maxAsyncReplicas]func(error, *later.Queue) // replicaDone(i), bound
}

var asyncWrites = sync.Pool{New: func() any { return new(asyncWrite) }}

func getAsyncWrite() *asyncWrite {
	a := asyncWrites.Get().(*asyncWrite)
	if a.fns[0] == nil {
		for i := range a.fns {
			a.fns[i] = func(err error, q *later.Queue) { a.replicaDone(i, err, q) }
		}
	}
	return a
}

func (a *asyncWrite) put() {
	a.v, a.ctx, a.p, a.done = nil, nil, nil, nil
	clear(a.errs[:])
	for i := range a.reqs {
		a.reqs[i] = wire.Request{}
		a.resps[i].Data = a.resps[i].Data[:0]
	}
	asyncWrites.Put(a)
}

// replicaDone takes replica i's answer; the last one settles the write.
func (a *asyncWrite) replicaDone(i int, err error, q *later.Queue) {
	a.errs[i] = err
	if a.left.Add(-1) == 0 {
		a.finish(q)
	}
}

// finish completes the write once every replica answered: at once when
// all acknowledged, else on a goroutine through the ordinary path.
func (a *asyncWrite) finish(q *later.Queue) {
	v, reps := a.v, a.reps[:a.n]
	for _, err := range a.errs[:a.n] {
		if err != nil {
			go a.settle()
			return
		}
	}
	v.mu.Lock()
	for _, r := range reps {
		v.dirty[r.disk] = struct{}{}
	}
	v.mu.Unlock()
	done := a.done
	a.put()
	v.gate.RUnlock()
	done(nil, q)
}

// settle hands a write some replica did not acknowledge to the ordinary
// path: resend where that can help, mark a silent replica down.
func (a *asyncWrite) settle() {
	v, ctx, e, reps, errs := a.v, a.ctx, a.e, a.reps[:a.n], a.errs[:a.n]
	v.remutate(ctx, reps, errs, wire.OpWrite, e, a.p, false, a.version)
	err := v.settle(ctx, wire.OpWrite, e, reps, errs)
	done := a.done
	a.put()
	v.gate.RUnlock()
	done(err, nil)
}

// maxAsyncReplicas bounds the replicas of a write StartWrite takes.
const maxAsyncReplicas = 4

// leaseNow is an ended context: WriteLease with it returns at once.
var leaseNow = func() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}()

// StartWrite implements nbd.AsyncWriter, as StartRead does
// nbd.AsyncReader: a write of one object, without FUA, on live
// connections to all its replicas, under a valid lease and no limit, is
// sent to every replica without a goroutine waiting for the answers. When
// every replica acknowledged, the last answer completes it; otherwise
// the ordinary path (mutate) takes the answers over on a goroutine: it
// creates a missing object, retries on a fresh connection, or marks a
// silent replica down before it acknowledges without it.
func (v *Volume) StartWrite(ctx context.Context, p []byte, off int64, fua bool, q *later.Queue, done func(error, *later.Queue)) bool {
	if fua || v.cluster.WriteLease(leaseNow) != nil || !v.gate.TryRLock() {
		return false
	}
	l := &v.layout
	idx, in := off/l.ObjectSize, off%l.ObjectSize
	if l.ReadOnly || v.limit != nil || in+int64(len(p)) > l.ObjectSize || v.checkLost() != nil {
		v.gate.RUnlock()
		return false
	}
	e := extent{index: uint32(idx), offset: uint64(in), length: len(p)}
	a := getAsyncWrite()
	reps, err := v.appendReplicas(ctx, a.reps[:0], e.index, true, 0)
	if err != nil || len(reps) > maxAsyncReplicas {
		a.put()
		v.gate.RUnlock()
		return false
	}
	var conns [maxAsyncReplicas]*wire.Client
	for i, r := range reps {
		if conns[i] = v.pool.live(r.addr, q); conns[i] == nil {
			a.put()
			v.gate.RUnlock()
			return false
		}
	}
	v.stats.WriteOps.Add(1)
	v.stats.WriteBytes.Add(int64(len(p)))
	a.v, a.ctx, a.p, a.e, a.n, a.version, a.done = v, ctx, p, e, len(reps), v.nextVersion(), done
	a.left.Store(int32(a.n))
	for i := range a.n {
		a.reqs[i] = v.mutation(a.reps[i], wire.OpWrite, e, p, false, a.version)
		if err := conns[i].StartFunc(v.timeout, &a.reqs[i], &a.resps[i], q, a.fns[i]); err != nil {
			// Not sent (the connection just failed): the ordinary path
			// retries it on a fresh one.
			a.replicaDone(i, fmt.Errorf("%w: %v", wire.ErrClosed, err), nil)
		}
	}
	return true
}

// admit lets one request in (the caller holds the gate): refused for a
// write to a read-only volume and for a lost volume, delayed by the
// volume's limits, then counted (bytes may be nil).
func (v *Volume) admit(ctx context.Context, write bool, n int, ops, bytes *atomic.Int64) error {
	if write && v.layout.ReadOnly {
		return nbd.ErrReadOnly
	}
	if err := v.checkLost(); err != nil {
		return err
	}
	if err := v.limit.wait(ctx, n); err != nil {
		return err
	}
	ops.Add(1)
	if bytes != nil {
		bytes.Add(int64(n))
	}
	return nil
}

func (v *Volume) readExtent(ctx context.Context, e extent, buf []byte) error {
	return v.readExtentAfter(ctx, e, buf, 0, nil)
}

// readExtentAfter is readExtent once a read from disk failed with failed
// (nil: none was tried): the other replicas are tried.
func (v *Volume) readExtentAfter(ctx context.Context, e extent, buf []byte, disk uint32, failed error) error {
	reps, err := v.upReplicas(ctx, e.index)
	if err != nil {
		return err
	}
	var errs []error
	if failed != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		v.log.Warn("read failed on a replica, trying the next", "object", e.index, "disk", disk, "err", failed)
		errs = append(errs, fmt.Errorf("disk %d: %w", disk, failed))
	}
	for _, r := range reps {
		if failed != nil && r.disk == disk {
			continue
		}
		err := v.readReplica(ctx, r, e, buf)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		v.log.Warn("read failed on a replica, trying the next", "object", e.index, "disk", r.disk, "err", err)
		errs = append(errs, fmt.Errorf("disk %d: %w", r.disk, err))
	}
	return fmt.Errorf("volume %s object %d: %w: %w", v.layout.Name, e.index, ErrNoReplica, errors.Join(errs...))
}

// readReplica reads the extent from one disk: from the volume's own
// object, else through the layers of its ancestors; zeroes where none of
// them has the object.
func (v *Volume) readReplica(ctx context.Context, r replica, e extent, buf []byte) error {
	for _, layer := range v.layout.Layers {
		req := wire.Request{Op: wire.OpRead, Volume: layer, Index: e.index, Offset: e.offset, Length: uint32(len(buf))}
		resp := wire.Response{Data: buf[:0:len(buf)]}
		err := v.call(ctx, r, &req, &resp)
		if statusOf(err) == wire.StatusNotFound {
			continue
		}
		if err != nil {
			return err
		}
		if len(resp.Data) != len(buf) {
			return fmt.Errorf("read returned %d bytes, want %d", len(resp.Data), len(buf))
		}
		if &resp.Data[0] != &buf[0] {
			copy(buf, resp.Data)
		}
		return nil
	}
	clear(buf)
	return nil
}

// WriteAt writes p at off to every up replica of each object.
func (v *Volume) WriteAt(ctx context.Context, p []byte, off int64, fua bool) error {
	// Outside the gate: the lease is renewed by the frontend's sync, which
	// may have to take the gate (a layout switch, a drain) first.
	if err := v.cluster.WriteLease(ctx); err != nil {
		return err
	}
	v.gate.RLock()
	defer v.gate.RUnlock()
	if err := v.admit(ctx, true, len(p), &v.stats.WriteOps, &v.stats.WriteBytes); err != nil {
		return err
	}
	return parallel(v.split(off, len(p)), func(e extent) error {
		return v.mutate(ctx, wire.OpWrite, e, p[e.pos:e.pos+e.length], fua)
	})
}

// Trim and WriteZeroes both make the range read as zeroes (over a parent
// too); the servers free what they can.
func (v *Volume) Trim(ctx context.Context, off, length int64, fua bool) error {
	return v.zero(ctx, wire.OpTrim, off, length, fua)
}

// WriteZeroes makes the range read as zeroes. It is always fast: the
// servers change metadata only.
func (v *Volume) WriteZeroes(ctx context.Context, off, length int64, f nbd.ZeroFlags) error {
	return v.zero(ctx, wire.OpWriteZeroes, off, length, f.FUA)
}

func (v *Volume) zero(ctx context.Context, op wire.Op, off, length int64, fua bool) error {
	if err := v.cluster.WriteLease(ctx); err != nil { // outside the gate, as in WriteAt
		return err
	}
	v.gate.RLock()
	defer v.gate.RUnlock()
	if err := v.admit(ctx, true, 0, &v.stats.WriteOps, nil); err != nil {
		return err
	}
	var exts []extent
	for length > 0 {
		n := min(length, wire.MaxIO)
		exts = append(exts, v.split(off, int(n))...)
		off += n
		length -= n
	}
	return parallel(exts, func(e extent) error { return v.mutate(ctx, op, e, nil, fua) })
}

// mutate applies a write or zeroing to every up replica in parallel. It
// succeeds when every replica acknowledged, or when each one that did not
// answer was committed down by mgmt and at least one acknowledged.
func (v *Volume) mutate(ctx context.Context, op wire.Op, e extent, data []byte, fua bool) error {
	reps, err := v.writeReplicas(ctx, e.index)
	if err != nil {
		return err
	}
	version := v.nextVersion()
	errs := v.mutateAll(ctx, reps, op, e, data, fua, version)
	return v.settle(ctx, op, e, reps, errs)
}

// settle is the outcome of a mutation given each replica's answer (see
// mutate): the disks that acknowledged are dirty; one that did not answer
// is marked down.
func (v *Volume) settle(ctx context.Context, op wire.Op, e extent, reps []replica, errs []error) error {
	acked := 0
	var fail []error
	for i, err := range errs {
		r := reps[i]
		switch {
		case err == nil || errors.Is(err, errNothingToZero):
			acked++
			v.mu.Lock()
			v.dirty[r.disk] = struct{}{}
			v.mu.Unlock()
		case statusOf(err) == wire.StatusFenced:
			return v.fenced(err)
		case transportFailure(err) && ctx.Err() == nil:
			if derr := v.markDown(ctx, r.disk, err); derr != nil {
				fail = append(fail, derr)
			}
		default:
			fail = append(fail, fmt.Errorf("disk %d: %w", r.disk, err))
		}
	}
	if len(fail) > 0 {
		return fmt.Errorf("volume %s object %d: %s: %w", v.layout.Name, e.index, op, errors.Join(fail...))
	}
	if acked == 0 {
		return fmt.Errorf("volume %s object %d: %s: %w", v.layout.Name, e.index, op, ErrNoReplica)
	}
	return nil
}

// markDown asks mgmt to commit a silent replica down. Only then may a write
// be acknowledged without it.
func (v *Volume) markDown(ctx context.Context, disk uint32, cause error) error {
	if err := v.cluster.MarkDiskDown(ctx, disk, cause.Error()); err != nil {
		return fmt.Errorf("disk %d did not answer (%v) and mgmt did not mark it down: %w", disk, cause, err)
	}
	v.mu.Lock()
	v.down[disk] = true
	v.mu.Unlock()
	v.log.Warn("replica marked down; continuing without it", "disk", disk, "cause", cause)
	return nil
}

// mutateAll sends the request to every replica at once and then waits
// for every answer, without a goroutine per replica. A replica that does
// not have the object yet, or whose connection was found broken, then
// goes through mutateReplica (those in parallel).
func (v *Volume) mutateAll(ctx context.Context, reps []replica, op wire.Op, e extent, data []byte, fua bool, version uint64) []error {
	errs := make([]error, len(reps))
	sent := make([]struct {
		req  wire.Request
		resp wire.Response
		call wire.Call
	}, len(reps))
	for i, r := range reps {
		x := &sent[i]
		x.req = v.mutation(r, op, e, data, fua, version)
		x.call, errs[i] = v.pool.start(ctx, r.addr, v.timeout, &x.req, &x.resp)
	}
	for i := range reps {
		if errs[i] == nil {
			errs[i] = sent[i].call.Wait(ctx)
		}
	}
	v.remutate(ctx, reps, errs, op, e, data, fua, version)
	return errs
}

// remutate sends the mutation again, in parallel, to each replica whose
// answer in errs calls for it (it lacked the object, or its connection
// broke), replacing that answer.
func (v *Volume) remutate(ctx context.Context, reps []replica, errs []error, op wire.Op, e extent, data []byte, fua bool, version uint64) {
	var wg sync.WaitGroup
	for i := range reps {
		if statusOf(errs[i]) != wire.StatusNotFound && !retryable(ctx, errs[i]) {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = v.mutateReplica(ctx, reps[i], op, e, data, fua, version)
		}()
	}
	wg.Wait()
}

// mutation is the request of a write or zeroing to replica r.
func (v *Volume) mutation(r replica, op wire.Op, e extent, data []byte, fua bool, version uint64) wire.Request {
	req := wire.Request{Op: op, Disk: r.disk, Volume: v.layout.Layers[0], Index: e.index, Offset: e.offset,
		Length: uint32(e.length), Token: v.layout.Token, Fence: v.layout.Fence, Version: version, Data: data}
	if fua {
		req.Flags |= wire.FlagFUA
	}
	return req
}

func (v *Volume) mutateReplica(ctx context.Context, r replica, op wire.Op, e extent, data []byte, fua bool, version uint64) error {
	req := v.mutation(r, op, e, data, fua, version)
	var resp wire.Response
	err := v.call(ctx, r, &req, &resp)
	if statusOf(err) != wire.StatusNotFound {
		return err
	}
	// First write to this object since the volume (or its last snapshot)
	// was created: create it over its nearest ancestor, then retry.
	if err := v.create(ctx, r, e.index, op != wire.OpWrite); err != nil {
		return err
	}
	resp = wire.Response{}
	return v.call(ctx, r, &req, &resp)
}

// create makes object (Layers[0], index) on one disk, its parent the
// nearest ancestor layer that has the object there. Without an ancestor a
// zeroing request has nothing to do (errNothingToZero).
func (v *Volume) create(ctx context.Context, r replica, index uint32, zeroing bool) error {
	for _, parent := range v.layout.Layers[1:] {
		req := wire.Request{Op: wire.OpCreate, Flags: wire.FlagParent, Volume: v.layout.Layers[0], Index: index,
			ParentVolume: parent, ParentIndex: index}
		var resp wire.Response
		err := v.call(ctx, r, &req, &resp)
		switch statusOf(err) {
		case wire.StatusNotFound:
			continue // not in this ancestor; look further up
		case wire.StatusExists:
			return nil // a concurrent request created it
		}
		return err
	}
	if zeroing {
		return errNothingToZero
	}
	req := wire.Request{Op: wire.OpCreate, Volume: v.layout.Layers[0], Index: index}
	var resp wire.Response
	err := v.call(ctx, r, &req, &resp)
	if statusOf(err) == wire.StatusExists {
		return nil
	}
	return err
}

// Flush makes every write completed before it durable on every up replica
// it reached: a FLUSH to each disk written since the last flush.
func (v *Volume) Flush(ctx context.Context) error {
	v.gate.RLock()
	defer v.gate.RUnlock()
	return v.flushLocked(ctx)
}

// flushLocked is Flush for a caller holding the gate.
func (v *Volume) flushLocked(ctx context.Context) error {
	if err := v.checkLost(); err != nil {
		return err
	}
	v.mu.Lock()
	disks := v.dirty
	v.dirty = map[uint32]struct{}{}
	v.mu.Unlock()
	var mu sync.Mutex
	var fail []error
	var wg sync.WaitGroup
	for d := range disks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := v.flushDisk(ctx, d)
			if err != nil {
				mu.Lock()
				fail = append(fail, err)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if len(fail) > 0 {
		// Keep the disks dirty so the next FLUSH tries them again.
		v.mu.Lock()
		for d := range disks {
			v.dirty[d] = struct{}{}
		}
		v.mu.Unlock()
		return fmt.Errorf("volume %s: flush: %w", v.layout.Name, errors.Join(fail...))
	}
	return nil
}

func (v *Volume) flushDisk(ctx context.Context, d uint32) error {
	v.mu.Lock()
	down := v.down[d]
	v.mu.Unlock()
	if down {
		return nil
	}
	addr, access, err := v.cluster.DiskAccess(ctx, d)
	if err != nil {
		return err
	}
	if !access.Writable() {
		return nil // mgmt took it out; it is recovered before it serves again
	}
	req := wire.Request{Op: wire.OpFlush}
	var resp wire.Response
	err = v.call(ctx, replica{disk: d, addr: addr}, &req, &resp)
	if err != nil && transportFailure(err) && ctx.Err() == nil {
		return v.markDown(ctx, d, err)
	}
	if err != nil {
		return fmt.Errorf("disk %d: %w", d, err)
	}
	return nil
}

// Block states of OpReadMeta, as the servers keep them (server.BlockData
// and its siblings; TestBlockStateValues holds them equal).
const (
	blockUnwritten = 0 // read through the parent chain
	blockData      = 1
	blockZero      = 2 // trimmed or zeroed: zeroes even over a parent
)

// maxStatusBytes bounds the range one BlockStatus call describes (the
// NBD client asks again for the rest): 8192 blocks, a few READ_META
// requests per layer.
const maxStatusBytes = 32 << 20

// BlockStatus reports each 4 KiB block through the layer chain: data when
// the first layer that has the block written holds data, a hole that
// reads as zeroes when that layer trimmed or zeroed it, or when no layer
// wrote it. It asks one up replica per object (the tail first), layer by
// layer, for the per-block states (READ_META).
func (v *Volume) BlockStatus(ctx context.Context, off, length int64) ([]nbd.Extent, error) {
	v.gate.RLock()
	defer v.gate.RUnlock()
	if err := v.checkLost(); err != nil {
		return nil, err
	}
	start := off &^ (blockSize - 1)
	end := min(off+min(length, maxStatusBytes), v.layout.Size)
	end = min((end+blockSize-1)&^(blockSize-1), v.layout.Size)
	if end <= start {
		return nil, fmt.Errorf("volume %s: block status at %d+%d: %w", v.layout.Name, off, length, nbd.ErrInvalid)
	}
	var out []nbd.Extent
	for _, e := range v.split(start, int(end-start)) {
		data, err := v.blockData(ctx, e)
		if err != nil {
			return nil, err
		}
		for _, d := range data {
			ext := nbd.Extent{Length: blockSize, Hole: !d, Zero: !d}
			if n := len(out); n > 0 && out[n-1].Hole == ext.Hole {
				out[n-1].Length += blockSize
				continue
			}
			out = append(out, ext)
		}
	}
	out[0].Length -= off - start // off inside a block: that block's state
	return out, nil
}

// blockData reports, for each block of extent e, whether it reads as data
// written by some layer, asking the first up replica that answers.
func (v *Volume) blockData(ctx context.Context, e extent) ([]bool, error) {
	reps, err := v.upReplicas(ctx, e.index)
	if err != nil {
		return nil, err
	}
	var errs []error
	for _, r := range reps {
		data, err := v.blockDataOn(ctx, r, e)
		if err == nil {
			return data, nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		errs = append(errs, fmt.Errorf("disk %d: %w", r.disk, err))
	}
	return nil, fmt.Errorf("volume %s object %d: block status: %w: %w", v.layout.Name, e.index, ErrNoReplica, errors.Join(errs...))
}

func (v *Volume) blockDataOn(ctx context.Context, r replica, e extent) ([]bool, error) {
	n := e.length / blockSize
	data := make([]bool, n)
	decided := make([]bool, n)
	left := n
	for _, layer := range v.layout.Layers {
		if left == 0 {
			break
		}
		for first := 0; first < n; first += wire.MaxIO / blockSize {
			cnt := min(n-first, wire.MaxIO/blockSize)
			req := wire.Request{Op: wire.OpReadMeta, Volume: layer, Index: e.index,
				Offset: e.offset + uint64(first*blockSize), Length: uint32(cnt * blockSize)}
			var resp wire.Response
			err := v.call(ctx, r, &req, &resp)
			if statusOf(err) == wire.StatusNotFound {
				break // this layer does not have the object at all
			}
			if err != nil {
				return nil, err
			}
			states, _, err := wire.DecodeBlockMeta(resp.Data, cnt)
			if err != nil {
				return nil, err
			}
			for i, st := range states {
				b := first + i
				if decided[b] || st == blockUnwritten {
					continue
				}
				decided[b], data[b] = true, st == blockData
				left--
			}
		}
	}
	return data, nil
}

// Cache has nothing to prefetch: the engine keeps no cache.
func (v *Volume) Cache(ctx context.Context, off, length int64) error { return nil }
