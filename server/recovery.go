package server

import (
	"context"
	"errors"
	"fmt"

	"keel/wire"
)

// RecoveryStats says what a recovery compared and copied.
type RecoveryStats struct {
	Objects        int    `json:"objects"`         // objects on the up replica
	ObjectsChanged int    `json:"objects_changed"` // whose version differed
	Created        int    `json:"created"`
	Deleted        int    `json:"deleted"`
	BlocksCopied   uint64 `json:"blocks_copied"` // data blocks fetched
	BlocksCleared  uint64 `json:"blocks_cleared"`
	DataBytes      uint64 `json:"data_bytes"` // data fetched
	MetaBytes      uint64 `json:"meta_bytes"` // block states and versions fetched
}

// Recover brings local, a disk that was down, up to date from an up
// replica (peerDisk, through peer) of the objects scope selects (nil: all
// objects; a disk's objects are usually spread over several peers by the
// volumes' disk sets, so the caller scopes each peer to the objects it
// shares with local). Within the scope, objects deleted meanwhile are
// deleted, new ones created (parents first), and of every object whose
// version differs only the blocks whose state or version differ are
// copied. Objects with equal versions cost nothing; the others cost 9
// bytes of metadata per block plus the changed data. It is idempotent:
// after a crash, run it again. progress, if not nil, is called after each
// object.
func Recover(ctx context.Context, local *Store, peer *wire.Client, peerDisk uint32, scope func(ObjectID) bool, progress func(done, total int)) (RecoveryStats, error) {
	if scope == nil {
		scope = func(ObjectID) bool { return true }
	}
	var st RecoveryStats
	var resp wire.Response
	if err := peer.Do(ctx, &wire.Request{Op: wire.OpVersions, Disk: peerDisk}, &resp); err != nil {
		return st, fmt.Errorf("recover disk %d from %s disk %d: versions: %w", local.sb.DiskID, peer.Peer, peerDisk, err)
	}
	remote, err := wire.DecodeVersions(resp.Data)
	if err != nil {
		return st, err
	}
	want := map[ObjectID]wire.VersionEntry{}
	for _, e := range remote {
		if id := (ObjectID{e.Volume, e.Index}); scope(id) {
			want[id] = e
		}
	}
	st.Objects = len(want)
	have := map[ObjectID]ObjectVersion{}
	for _, v := range local.Versions() {
		if scope(v.Object) {
			have[v.Object] = v
		}
	}
	// Objects gone on the up replica, or re-created with another parent.
	for id, v := range have {
		e, ok := want[id]
		if ok && parentOf(e) == parentKey(v.Parent) {
			continue
		}
		if err := local.DeleteObject(id); err != nil {
			return st, fmt.Errorf("recover: %w", err)
		}
		delete(have, id)
		st.Deleted++
	}
	// Create the missing ones, a parent before its children.
	for pending := true; pending; {
		pending = false
		progressed := false
		for id, e := range want {
			if _, ok := have[id]; ok {
				continue
			}
			var parent *ObjectID
			if e.HasParent {
				p := ObjectID{e.ParentVolume, e.ParentIndex}
				_, ok := have[p]
				if !ok && !scope(p) {
					ok = local.hasObject(p)
				}
				if !ok {
					if _, coming := want[p]; coming {
						pending = true
						continue
					}
					return st, fmt.Errorf("recover: object %s: its parent %s is not on this disk; recover the parent first", id, p)
				}
				parent = &p
			}
			if err := local.CreateObject(id, parent); err != nil {
				return st, fmt.Errorf("recover: %w", err)
			}
			have[id] = ObjectVersion{Object: id, Parent: parent}
			st.Created++
			progressed = true
		}
		if pending && !progressed {
			return st, errors.New("recover: parent chain loop in the replica's objects")
		}
	}
	done := 0
	for id, e := range want {
		if have[id].Version != e.Version {
			st.ObjectsChanged++
			if err := recoverObject(ctx, local, peer, peerDisk, id, &st); err != nil {
				return st, err
			}
			if err := local.setVersion(id, e.Version); err != nil {
				return st, err
			}
		}
		done++
		if progress != nil {
			progress(done, len(want))
		}
	}
	return st, local.Flush()
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

// recoverObject compares one object AU by AU and copies what differs.
func recoverObject(ctx context.Context, local *Store, peer *wire.Client, peerDisk uint32, id ObjectID, st *RecoveryStats) error {
	var resp wire.Response
	for off := uint64(0); off < uint64(local.sb.ObjectSize); off += AUSize {
		req := wire.Request{Op: wire.OpReadMeta, Disk: peerDisk, Volume: id.Volume, Index: id.Index, Offset: off, Length: AUSize}
		if err := peer.Do(ctx, &req, &resp); err != nil {
			return fmt.Errorf("recover object %s: %w", id, err)
		}
		st.MetaBytes += uint64(len(resp.Data))
		rstates, rvers, err := wire.DecodeBlockMeta(resp.Data, BlocksPerAU)
		if err != nil {
			return err
		}
		rstates = append([]uint8(nil), rstates...) // resp.Data is reused below
		lstates, lvers, err := local.BlockMeta(id, off, AUSize)
		if err != nil {
			return err
		}
		blk := int(off / BlockSize)
		for i := 0; i < BlocksPerAU; {
			if sameBlock(rstates[i], rvers[i], lstates[i], lvers[i]) {
				i++
				continue
			}
			j := i + 1
			for j < BlocksPerAU && !sameBlock(rstates[j], rvers[j], lstates[j], lvers[j]) {
				j++
			}
			var data []byte
			if hasData(rstates[i:j]) {
				// READ_OWN: states then own data of the run.
				req := wire.Request{Op: wire.OpReadOwn, Disk: peerDisk, Volume: id.Volume, Index: id.Index,
					Offset: uint64(blk+i) * BlockSize, Length: uint32(j-i) * BlockSize}
				if err := peer.Do(ctx, &req, &resp); err != nil {
					return fmt.Errorf("recover object %s: %w", id, err)
				}
				if len(resp.Data) != (j-i)*(BlockSize+1) {
					return fmt.Errorf("recover object %s: %w: short READ_OWN reply", id, wire.ErrFrame)
				}
				data = resp.Data[j-i:]
				for k, s := range resp.Data[:j-i] {
					if s != rstates[i+k] {
						return fmt.Errorf("recover object %s: the replica changed during recovery; run it again", id)
					}
				}
			}
			for _, s := range rstates[i:j] {
				if s == BlockData {
					st.BlocksCopied++
					st.DataBytes += BlockSize
				} else {
					st.BlocksCleared++
				}
			}
			if err := local.applyBlocks(id, blk+i, rstates[i:j], rvers[i:j], data); err != nil {
				return err
			}
			i = j
		}
	}
	return nil
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
