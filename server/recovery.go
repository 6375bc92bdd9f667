package server

import (
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"time"

	"keel/wire"
)

// RecoveryStats says what a recovery compared and copied.
type RecoveryStats struct {
	Objects        int    `json:"objects"`         // objects on the up replica
	ObjectsChanged int    `json:"objects_changed"` // whose object version differed
	Created        int    `json:"created"`
	Deleted        int    `json:"deleted"`
	BlocksCopied   uint64 `json:"blocks_copied"` // data blocks fetched
	BlocksCleared  uint64 `json:"blocks_cleared"`
	// BlocksKept: blocks that differed but were left as they are here,
	// because a client write changed them after the comparison (it wins).
	BlocksKept uint64 `json:"blocks_kept"`
	// BlocksStale: blocks newer here than on the replica and unchanged for
	// the settle time: un-acknowledged writes from before the disk went
	// down, replaced with the replica's.
	BlocksStale uint64 `json:"blocks_stale"`
	DataBytes   uint64 `json:"data_bytes"` // data fetched
	MetaBytes   uint64 `json:"meta_bytes"` // block states and versions fetched
}

// Add sums two stats (a disk recovered from several peers).
func (a *RecoveryStats) Add(b RecoveryStats) {
	a.Objects += b.Objects
	a.ObjectsChanged += b.ObjectsChanged
	a.Created += b.Created
	a.Deleted += b.Deleted
	a.BlocksCopied += b.BlocksCopied
	a.BlocksCleared += b.BlocksCleared
	a.BlocksKept += b.BlocksKept
	a.BlocksStale += b.BlocksStale
	a.DataBytes += b.DataBytes
	a.MetaBytes += b.MetaBytes
}

// RecoverOptions tune RecoverWith.
type RecoverOptions struct {
	// Scope selects the local objects this peer is the source of (nil:
	// all).
	Scope func(ObjectID) bool
	// Progress, if not nil, is called after each object.
	Progress func(done, total int)
	// Settle is how long a block or object that looks newer here than on
	// the replica (or missing there) is left alone before it is taken as
	// stale and replaced: a client write in flight when it was compared
	// has reached every replica (or the client marked one down) by then.
	// It must exceed the clients' replica timeout; 0 when nothing writes
	// (tests).
	Settle time.Duration
	// Limit, if not nil, is called before each data fetch with its size;
	// it rate-limits recovery so that client I/O keeps flowing.
	Limit func(ctx context.Context, bytes int) error
	// Create, if not nil, creates a missing object instead of
	// Store.CreateObject; the server's refuses, with ErrLayerDeleted, a
	// layer reclaimed after the replica's objects were listed, and the
	// object is left out.
	Create func(id ObjectID, parent *ObjectID, parentHidden bool) error
}

// Recover is RecoverWith without concurrent writers: scope and progress
// as in RecoverOptions.
func Recover(ctx context.Context, local *Store, peer *wire.Client, peerDisk uint32, scope func(ObjectID) bool, progress func(done, total int)) (RecoveryStats, error) {
	return RecoverWith(ctx, local, peer, peerDisk, RecoverOptions{Scope: scope, Progress: progress})
}

// RecoverWith brings local, a recovering disk, up to date from an up
// replica (peerDisk, through peer) of the objects o.Scope selects (a
// disk's objects are usually spread over several peers by the volumes'
// disk sets, so the caller scopes each peer to the objects it is the
// source of). Clients may write to local meanwhile: the caller starts it
// only once every client sends its writes to local too (server/DESIGN.md,
// "Recovery while clients write").
//
// Within the scope, objects the replica lacks are deleted, missing ones
// created (parents first), and of every object whose version differs the
// per-block (state, version) lists are compared (READ_META, 9 bytes a
// block): a block whose replica version is newer is fetched (READ_OWN)
// and applied with a compare-and-set, only if the local block still has
// the state and version it was compared with, so that a client write
// landing meanwhile wins. A block (or object) newer here than on the
// replica may be a client write still on its way to the replica, or an
// un-acknowledged write from before the disk went down: it is compared
// again after o.Settle and replaced only if neither side changed. Every
// object in scope costs its block metadata (9 bytes per 4 KiB block, 0.2 %
// of its size), equal object versions or not. It is idempotent: after a
// crash, run it again.
func RecoverWith(ctx context.Context, local *Store, peer *wire.Client, peerDisk uint32, o RecoverOptions) (RecoveryStats, error) {
	if o.Scope == nil {
		o.Scope = func(ObjectID) bool { return true }
	}
	r := &recovery{local: local, peer: peer, peerDisk: peerDisk, o: o}
	want, hidden, err := r.remoteVersions(ctx)
	if err != nil {
		return r.st, err
	}
	need := hiddenAncestors(want, hidden)
	r.st.Objects = len(want) + len(need)
	have := map[ObjectID]ObjectVersion{}
	for _, v := range local.Versions() {
		if o.Scope(v.Object) {
			have[v.Object] = v
		}
	}
	// Objects the replica lacks (or has with another parent): deferred.
	staleObjs := map[ObjectID]uint64{}
	for id, v := range have {
		if _, parent := need[id]; parent {
			continue // hidden on the replica; this disk's reclaim hides it
		}
		if e, ok := want[id]; !ok || parentOf(e) != parentKey(v.Parent) {
			staleObjs[id] = v.Version
		}
	}
	targets, err := r.createMissing(want, have, staleObjs, need)
	if err != nil {
		return r.st, err
	}
	done := 0
	if err := r.recoverHidden(ctx, need, targets, &done); err != nil {
		return r.st, err
	}
	deferred := map[ObjectID]map[int]blockMeta{}
	for id, e := range want {
		// Every object is compared block by block, equal versions or not:
		// an object's version is the highest write it got, which does not
		// say it got every earlier one (a write lost on its way here
		// before the client had the disk marked down, or missed while
		// down and followed by a write during the recovery).
		if _, stale := staleObjs[id]; !stale {
			if have[id].Version != e.Version {
				r.st.ObjectsChanged++
			}
			later, err := r.recoverObject(ctx, target{id: id}, nil)
			if err != nil {
				return r.st, err
			}
			if len(later) > 0 {
				deferred[id] = later
			} else if err := local.setVersion(id, false, e.Version); err != nil {
				return r.st, err
			}
		}
		done++
		if o.Progress != nil {
			o.Progress(done, r.st.Objects)
		}
	}
	if len(deferred) > 0 || len(staleObjs) > 0 {
		if err := r.settle(ctx, deferred, staleObjs); err != nil {
			return r.st, err
		}
	}
	return r.st, local.Flush()
}

// blockMeta is a block's state and version as compared.
type blockMeta struct {
	state   uint8
	version uint64
}

type recovery struct {
	local    *Store
	peer     *wire.Client
	peerDisk uint32
	o        RecoverOptions
	st       RecoveryStats
	resp     wire.Response
}

// target is an object recovery compares: on the replica and here, the
// visible object of the id or its hidden one.
type target struct {
	id                        ObjectID
	remoteHidden, localHidden bool
}

// remoteVersions lists the replica's visible objects in scope (want) and
// all its hidden ones.
func (r *recovery) remoteVersions(ctx context.Context) (want, hidden map[ObjectID]wire.VersionEntry, err error) {
	if err := r.peer.Do(ctx, &wire.Request{Op: wire.OpVersions, Disk: r.peerDisk}, &r.resp); err != nil {
		return nil, nil, fmt.Errorf("recover disk %d from %s disk %d: versions: %w", r.local.sb.DiskID, r.peer.Peer, r.peerDisk, err)
	}
	remote, err := wire.DecodeVersions(r.resp.Data)
	if err != nil {
		return nil, nil, err
	}
	want, hidden = map[ObjectID]wire.VersionEntry{}, map[ObjectID]wire.VersionEntry{}
	for _, e := range remote {
		id := ObjectID{e.Volume, e.Index}
		switch {
		case e.Hidden:
			hidden[id] = e
		case r.o.Scope(id):
			want[id] = e
		}
	}
	return want, hidden, nil
}

// hiddenAncestors returns the hidden objects of the replica that objects
// of want read through (their layer reclaimed before their children's):
// this disk needs them as parents, whatever the scope says of their layer.
func hiddenAncestors(want, hidden map[ObjectID]wire.VersionEntry) map[ObjectID]wire.VersionEntry {
	need := map[ObjectID]wire.VersionEntry{}
	for _, e := range want {
		for e.HasParent {
			p := ObjectID{e.ParentVolume, e.ParentIndex}
			if _, visible := want[p]; visible {
				break
			}
			h, ok := hidden[p]
			if _, seen := need[p]; !ok || seen {
				break
			}
			need[p] = h
			e = h
		}
	}
	return need
}

// recoverHidden brings each hidden parent of need, held here as targets
// says, up to what the replica has: a block newer there, or of the same
// version in another state, takes the replica's content; nothing writes
// to hidden objects, so there is nothing to wait for.
func (r *recovery) recoverHidden(ctx context.Context, need map[ObjectID]wire.VersionEntry, targets map[ObjectID]target, done *int) error {
	for id, t := range targets {
		if _, err := r.recoverObject(ctx, t, nil); err != nil {
			return err
		}
		if err := r.local.setVersion(id, t.localHidden, need[id].Version); err != nil {
			return err
		}
		*done++
		if r.o.Progress != nil {
			r.o.Progress(*done, r.st.Objects)
		}
	}
	return nil
}

// createMissing creates the objects of want that have does not hold and
// the hidden parents of need this disk lacks (hidden), a parent before
// its children; stale ones are left for settle. It returns how each
// hidden parent is held here: an object of that id that is still visible
// (this disk has not reclaimed its layer yet), a hidden one, or the one
// it created.
func (r *recovery) createMissing(want map[ObjectID]wire.VersionEntry, have map[ObjectID]ObjectVersion, stale map[ObjectID]uint64, need map[ObjectID]wire.VersionEntry) (map[ObjectID]target, error) {
	targets := map[ObjectID]target{}
	for id := range need {
		switch {
		case r.local.hasObject(id):
			targets[id] = target{id: id, remoteHidden: true}
		case r.local.hasHidden(id):
			targets[id] = target{id: id, remoteHidden: true, localHidden: true}
		}
	}
	// parentHere returns an entry's parent once it is here, and whether
	// it is the hidden object of its id here; ready false: it comes later
	// in this loop.
	parentHere := func(id ObjectID, e wire.VersionEntry) (parent *ObjectID, hidden, ready bool, err error) {
		if !e.HasParent {
			return nil, false, true, nil
		}
		p := ObjectID{e.ParentVolume, e.ParentIndex}
		if _, hiddenParent := need[p]; hiddenParent {
			t, ok := targets[p]
			return &p, t.localHidden, ok, nil
		}
		_, ok := have[p]
		if _, bad := stale[p]; bad {
			ok = false
		}
		if !ok && !r.o.Scope(p) {
			ok = r.local.hasObject(p)
		}
		if ok {
			return &p, false, true, nil
		}
		if _, coming := want[p]; coming {
			return nil, false, false, nil
		}
		return nil, false, false, fmt.Errorf("recover: object %s: its parent %s is not on this disk yet; it comes with the recovery of the parent's set, retry after it", id, p)
	}
	create := r.o.Create
	if create == nil {
		create = r.local.createChild
	}
	// createOne creates one object whose parent is here: hidden ones (need)
	// hidden, the others as a client would, through create.
	createOne := func(id ObjectID, hidden bool, parent *ObjectID, parentHidden bool) error {
		if hidden {
			if err := r.local.createHidden(id, parent, parentHidden); err != nil {
				return fmt.Errorf("recover: %w", err)
			}
			targets[id] = target{id: id, remoteHidden: true, localHidden: true}
			r.st.Created++
			return nil
		}
		// A client may create it meanwhile (its first write): fine.
		err := create(id, parent, parentHidden)
		if errors.Is(err, ErrLayerDeleted) {
			delete(want, id) // reclaimed meanwhile: nothing to copy
			return nil
		}
		if err != nil && !errors.Is(err, ErrExists) {
			return fmt.Errorf("recover: %w", err)
		}
		have[id] = ObjectVersion{Object: id, Parent: parent}
		r.st.Created++
		return nil
	}
	for pending := true; pending; {
		pending = false
		progressed := false
		for _, kind := range []struct {
			entries map[ObjectID]wire.VersionEntry
			hidden  bool
		}{{need, true}, {want, false}} {
			for id, e := range kind.entries {
				if _, ok := targets[id]; ok && kind.hidden {
					continue
				}
				if _, ok := have[id]; ok && !kind.hidden {
					continue
				}
				parent, parentHidden, ready, err := parentHere(id, e)
				if err != nil {
					return nil, err
				}
				if !ready {
					pending = true
					continue
				}
				if err := createOne(id, kind.hidden, parent, parentHidden); err != nil {
					return nil, err
				}
				progressed = true
			}
		}
		if pending && !progressed {
			return nil, errors.New("recover: parent chain loop in the replica's objects")
		}
	}
	return targets, nil
}

// settle waits o.Settle, then deals with what looked newer here than on
// the replica: a block or object nobody changed since is stale and takes
// the replica's state; one a client changed keeps the client's write.
func (r *recovery) settle(ctx context.Context, deferred map[ObjectID]map[int]blockMeta, staleObjs map[ObjectID]uint64) error {
	if r.o.Settle > 0 {
		t := time.NewTimer(r.o.Settle)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
	want, _, err := r.remoteVersions(ctx)
	if err != nil {
		return err
	}
	have := map[ObjectID]ObjectVersion{}
	for _, v := range r.local.Versions() {
		if r.o.Scope(v.Object) {
			have[v.Object] = v
		}
	}
	recreate := map[ObjectID]uint64{}
	for id, ver := range staleObjs {
		e, there := want[id]
		v, here := have[id]
		switch {
		case !here:
			continue // gone meanwhile
		case there && parentOf(e) == parentKey(v.Parent):
			// The replica has it now (a create in flight): compare.
			deferred[id] = nil
			continue
		case v.Version != ver:
			r.st.BlocksKept++ // a client wrote to it since: it is live
			continue
		}
		if err := r.local.deleteObjectIf(id, ver); err != nil {
			if errors.Is(err, errChanged) {
				continue
			}
			return fmt.Errorf("recover: %w", err)
		}
		delete(have, id)
		r.st.Deleted++
		if there {
			recreate[id] = e.Version
		}
	}
	if len(recreate) > 0 {
		sub := map[ObjectID]wire.VersionEntry{}
		for id := range recreate {
			sub[id] = want[id]
		}
		if _, err := r.createMissing(sub, have, nil, nil); err != nil {
			return err
		}
		for id := range recreate {
			deferred[id] = nil
		}
	}
	for id, blocks := range deferred {
		e, ok := want[id]
		if !ok {
			continue
		}
		if blocks == nil {
			blocks = map[int]blockMeta{} // compare in full, nothing known stale
		}
		later, err := r.recoverObject(ctx, target{id: id}, blocks)
		if err != nil {
			return err
		}
		if len(later) == 0 {
			if err := r.local.setVersion(id, false, e.Version); err != nil {
				return err
			}
		}
	}
	return nil
}

// recoverObject compares one object AU by AU and copies the blocks whose
// replica version is newer. First pass (stale == nil): blocks that differ
// the other way are returned, to be compared again after the settle time.
// Second pass: a returned block that still has the state and version it
// had then is stale and takes the replica's state whatever its version.
func (r *recovery) recoverObject(ctx context.Context, t target, stale map[int]blockMeta) (map[int]blockMeta, error) {
	local, id := r.local, t.id
	var later map[int]blockMeta
	for off := uint64(0); off < uint64(local.sb.ObjectSize); off += AUSize {
		blk := int(off / BlockSize)
		if len(stale) > 0 && !anyIn(stale, blk, BlocksPerAU) {
			continue
		}
		req := wire.Request{Op: wire.OpReadMeta, Flags: hiddenFlag(t.remoteHidden), Disk: r.peerDisk, Volume: id.Volume, Index: id.Index, Offset: off, Length: AUSize}
		if err := r.peer.Do(ctx, &req, &r.resp); err != nil {
			return nil, fmt.Errorf("recover object %s: %w", id, err)
		}
		r.st.MetaBytes += uint64(len(r.resp.Data))
		rstates, rvers, err := wire.DecodeBlockMeta(r.resp.Data, BlocksPerAU)
		if err != nil {
			return nil, err
		}
		rstates = append([]uint8(nil), rstates...) // resp.Data is reused below
		rvers = append([]uint64(nil), rvers...)
		lstates, lvers, err := local.BlockMeta(id, t.localHidden, off, AUSize)
		if err != nil {
			return nil, err
		}
		copyBlock := make([]bool, BlocksPerAU)
		for i := range BlocksPerAU {
			if sameBlock(rstates[i], rvers[i], lstates[i], lvers[i]) {
				continue
			}
			if rvers[i] > lvers[i] {
				copyBlock[i] = true
				continue
			}
			if t.remoteHidden {
				// Nothing writes to a hidden object, so nothing settles:
				// an equal version in another state takes the replica's,
				// a newer local block is kept (the replica's copy may be
				// the stale one).
				if rvers[i] == lvers[i] {
					copyBlock[i] = true
					r.st.BlocksStale++
				} else {
					r.st.BlocksKept++
				}
				continue
			}
			if stale == nil {
				if later == nil {
					later = map[int]blockMeta{}
				}
				later[blk+i] = blockMeta{lstates[i], lvers[i]}
				continue
			}
			if was, ok := stale[blk+i]; ok && was == (blockMeta{lstates[i], lvers[i]}) {
				copyBlock[i] = true
				r.st.BlocksStale++
			} else {
				r.st.BlocksKept++ // a client wrote it since: it wins
			}
		}
		for i := 0; i < BlocksPerAU; {
			if !copyBlock[i] {
				i++
				continue
			}
			j := i + 1
			for j < BlocksPerAU && copyBlock[j] {
				j++
			}
			if err := r.copyRun(ctx, t, blk, i, j, rstates, rvers, lstates, lvers); err != nil {
				return nil, err
			}
			i = j
		}
	}
	return later, nil
}

// copyRun fetches blocks [i, j) of the AU starting at block blk from the
// replica and applies them where the local block is still as compared.
func (r *recovery) copyRun(ctx context.Context, t target, blk, i, j int, rstates []uint8, rvers []uint64, lstates []uint8, lvers []uint64) error {
	id := t.id
	var data []byte
	states := rstates[i:j]
	if hasData(states) {
		n := (j - i) * BlockSize
		if r.o.Limit != nil {
			if err := r.o.Limit(ctx, n); err != nil {
				return err
			}
		}
		// READ_OWN: states then own data of the run.
		req := wire.Request{Op: wire.OpReadOwn, Flags: hiddenFlag(t.remoteHidden), Disk: r.peerDisk, Volume: id.Volume, Index: id.Index,
			Offset: uint64(blk+i) * BlockSize, Length: uint32(n)}
		if err := r.peer.Do(ctx, &req, &r.resp); err != nil {
			return fmt.Errorf("recover object %s: %w", id, err)
		}
		if len(r.resp.Data) != (j-i)*(BlockSize+1) {
			return fmt.Errorf("recover object %s: %w: short READ_OWN reply", id, wire.ErrFrame)
		}
		data = r.resp.Data[j-i:]
		// A block whose state changed on the replica since READ_META got
		// a client write there, which reaches this disk too: skip it.
		states = append([]uint8(nil), states...)
		for k, s := range r.resp.Data[:j-i] {
			if s != states[k] {
				states[k] = skipBlock
			}
		}
	}
	for _, s := range states {
		switch s {
		case BlockData:
			r.st.BlocksCopied++
			r.st.DataBytes += BlockSize
		case skipBlock:
			r.st.BlocksKept++
		default:
			r.st.BlocksCleared++
		}
	}
	kept, err := r.local.applyBlocks(id, t.localHidden, blk+i, states, rvers[i:j], lstates[i:j], lvers[i:j], data)
	r.st.BlocksKept += uint64(kept)
	return err
}

// hiddenFlag is the request flag that addresses a hidden object.
func hiddenFlag(hidden bool) uint8 {
	if hidden {
		return wire.FlagHidden
	}
	return 0
}

// skipBlock marks a block applyBlocks leaves alone.
const skipBlock = 0xff

var errChanged = errors.New("changed since it was compared")

func anyIn(m map[int]blockMeta, from, n int) bool {
	for b := range m {
		if b >= from && b < from+n {
			return true
		}
	}
	return false
}

func parentOf(e wire.VersionEntry) string {
	if !e.HasParent {
		return ""
	}
	return ObjectID{e.ParentVolume, e.ParentIndex}.String()
}

func parentKey(p *ObjectID) string {
	if p == nil {
		return ""
	}
	return p.String()
}

// sameBlock: equal state and version, or both read through the parent.
func sameBlock(rs uint8, rv uint64, ls uint8, lv uint64) bool {
	return rs == ls && (rv == lv || rs == BlockUnwritten)
}

func hasData(states []uint8) bool {
	for _, s := range states {
		if s == BlockData {
			return true
		}
	}
	return false
}

// applyBlocks makes blocks [blk, blk+len(states)) of the object what a
// replica has (each block's state and version exactly, data for BlockData
// blocks from data), but only the blocks that still hold the state and
// version they were compared with (expState, expVer): a client write that
// landed since wins. Blocks marked skipBlock are left alone. It holds
// each AU's stripe lock from the check to the metadata update, so no
// write or zeroing of that AU comes between. It returns how many blocks
// it left alone because they had changed. Recovery only.
func (s *Store) applyBlocks(id ObjectID, hidden bool, blk int, states []uint8, vers []uint64, expState []uint8, expVer []uint64, data []byte) (int, error) {
	s.gate.RLock()
	defer s.gate.RUnlock()
	s.mu.Lock()
	o, err := s.find(id, hidden)
	s.mu.Unlock()
	if err != nil {
		return 0, err
	}
	kept := 0
	for i := 0; i < len(states); {
		idx := (blk + i) / BlocksPerAU
		j := i + 1
		for j < len(states) && (blk+j)/BlocksPerAU == idx {
			j++
		}
		k, err := s.casChunk(o, idx, (blk+i)%BlocksPerAU, states[i:j], vers[i:j], expState[i:j], expVer[i:j], data, i)
		kept += k
		if err != nil {
			return kept, err
		}
		i = j
	}
	return kept, nil
}

// casChunk is applyBlocks within AU index idx, from block b0; data
// holds the whole run's blocks, this chunk's from block pos. The stripe
// lock, held throughout, keeps every write and zeroing of this AU out
// (they take it too), so the blocks checked under mu are still as checked
// when the data is written and the metadata recorded.
func (s *Store) casChunk(o *object, idx, b0 int, states []uint8, vers []uint64, expState []uint8, expVer []uint64, data []byte, pos int) (int, error) {
	st := s.stripeOf(o.inc, idx)
	st.Lock()
	defer st.Unlock()
	s.mu.Lock()
	if s.failed != nil {
		s.mu.Unlock()
		return 0, fmt.Errorf("disk %d: %w: %v", s.sb.DiskID, ErrFailed, s.failed)
	}
	ok := make([]bool, len(states))
	kept := 0
	needAU := false
	for i := range states {
		if states[i] == skipBlock {
			continue
		}
		var cur blockMeta
		if au := o.aus[idx]; au >= 0 {
			cur = blockMeta{s.aus[au].states[b0+i], s.aus[au].vers[b0+i]}
		}
		if cur != (blockMeta{expState[i], expVer[i]}) {
			kept++
			continue
		}
		ok[i] = true
		needAU = needAU || states[i] == BlockData
	}
	if needAU && o.aus[idx] < 0 {
		if _, err := s.allocAU(o, idx); err != nil {
			s.mu.Unlock()
			return kept, err
		}
	}
	au := o.aus[idx]
	s.mu.Unlock()
	// Data first: zeroing may free the AU once it holds no data.
	for _, pass := range []bool{true, false} {
		if err := s.casRuns(o, idx, au, b0, states, vers, ok, data, pos, pass); err != nil {
			return kept, err
		}
	}
	return kept, nil
}

// casRuns applies the checked blocks of casChunk: the data ones (data) or
// the others. Caller holds the stripe.
func (s *Store) casRuns(o *object, idx int, au int32, b0 int, states []uint8, vers []uint64, ok []bool, data []byte, pos int, wantData bool) error {
	for i := 0; i < len(states); {
		if !ok[i] || (states[i] == BlockData) != wantData {
			i++
			continue
		}
		j := i + 1
		for j < len(states) && ok[j] && states[j] == states[i] && (states[i] == BlockData || vers[j] == vers[i]) {
			j++
		}
		if states[i] == BlockData {
			part := data[(pos+i)*BlockSize : (pos+j)*BlockSize]
			if _, err := s.dev.WriteAt(part, s.dataOff(au, b0+i)); err != nil {
				return s.fail(err)
			}
			s.mu.Lock()
			m := &s.aus[au]
			for k := i; k < j; k++ {
				m.states[b0+k] = BlockData
				m.crcs[b0+k] = crc32.Checksum(part[(k-i)*BlockSize:(k-i+1)*BlockSize], castagnoli)
				m.vers[b0+k] = vers[k]
			}
			s.markAU(au)
			s.mu.Unlock()
		} else {
			s.mu.Lock()
			err := s.zeroChunk(o, idx, b0+i, j-i, states[i], vers[i], false)
			s.mu.Unlock()
			if err != nil {
				return err
			}
		}
		i = j
	}
	return nil
}

// deleteObjectIf deletes object id if its version is still version (no
// client wrote to it since recovery saw it); errChanged otherwise.
func (s *Store) deleteObjectIf(id ObjectID, version uint64) error {
	return s.deleteObject(id, &version)
}
