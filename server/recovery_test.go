package server

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"path/filepath"
	"testing"
	"time"

	"keel/wire"
)

// serveStore serves st over a unix socket and returns a connected client.
func serveStore(t *testing.T, st *Store) *wire.Client {
	t.Helper()
	srv, err := NewServer(slog.New(slog.DiscardHandler), nil, map[string]*Store{"up": st})
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(t.TempDir(), "s.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	secret := []byte("recovery-test-secret")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- wire.Serve(ctx, ln, wire.ServerConfig{Secret: secret, Self: wire.Peer{Role: "server"}, Handler: srv, Log: slog.New(slog.DiscardHandler)})
	}()
	c, err := wire.Dial(ctx, "unix", sock, secret, wire.Peer{Role: "server", Name: "recovering"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c.Close()
		cancel()
		<-done
	})
	return c
}

// A disk that missed 1 % of a volume's writes, a TRIM, a delete, a new
// object and a write to a snapshot's child copies exactly the blocks that
// changed, and then reads like the up replica.
func TestRecoveryCopiesOnlyWhatChanged(t *testing.T) {
	up, _ := mustNewFileStore(t, 16)
	down, _ := mustNewFileStore(t, 16)
	both := []*Store{up, down}
	const objects = 4
	const blocks = testObjectSize / BlockSize
	version := uint64(100)
	buf := make([]byte, 16*BlockSize)
	for _, s := range both {
		for i := uint32(0); i < objects; i++ {
			if err := s.CreateObject(ObjectID{1, i}, nil); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.CreateObject(ObjectID{2, 0}, &ObjectID{1, 0}); err != nil {
			t.Fatal(err)
		}
	}
	// The volume is written in full on both replicas, same versions.
	for i := uint32(0); i < objects; i++ {
		for b := 0; b < blocks; b += 16 {
			version++
			for k := 0; k < 16; k++ {
				pattern(version<<16|uint64(k), buf[k*BlockSize:(k+1)*BlockSize])
			}
			for _, s := range both {
				if err := s.Write(ObjectID{1, i}, uint64(b)*BlockSize, buf, version); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	// The down disk misses these.
	rng := rand.New(rand.NewPCG(7, 7))
	changed := map[[2]uint64]bool{}
	one := make([]byte, BlockSize)
	for n := 0; n < objects*blocks/100; n++ {
		id, b := ObjectID{1, uint32(rng.IntN(objects))}, rng.IntN(blocks)
		version++
		pattern(version, one)
		if err := up.Write(id, uint64(b)*BlockSize, one, version); err != nil {
			t.Fatal(err)
		}
		if id.Index != 3 || b >= BlocksPerAU { // the first AU of 1/3 is trimmed below
			changed[[2]uint64{uint64(id.Index), uint64(b)}] = true
		}
	}
	version++
	if err := up.WriteZeroes(ObjectID{1, 3}, 0, AUSize, version); err != nil {
		t.Fatal(err)
	}
	version++
	pattern(version, one)
	if err := up.Write(ObjectID{2, 0}, 5*BlockSize, one, version); err != nil {
		t.Fatal(err)
	}
	if err := up.DeleteObject(ObjectID{1, 2}); err != nil {
		t.Fatal(err)
	}
	if err := up.CreateObject(ObjectID{3, 0}, nil); err != nil {
		t.Fatal(err)
	}
	version++
	if err := up.Write(ObjectID{3, 0}, 0, buf, version); err != nil {
		t.Fatal(err)
	}
	for k := range changed {
		if k[0] == 2 {
			delete(changed, k) // object 1/2 is deleted anyway
		}
	}
	wantCopied := uint64(len(changed) + 1 + 16) // + the child's block + the new object

	c := serveStore(t, up)
	st, err := Recover(context.Background(), down, c, up.sb.DiskID, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	volume := uint64(objects * testObjectSize)
	t.Logf("recovery: %+v; copied %d of %d bytes (%.2f%%), %d changed blocks", st, st.DataBytes, volume, 100*float64(st.DataBytes)/float64(volume), wantCopied)
	if st.BlocksCopied != wantCopied || st.Created != 1 || st.Deleted != 1 || st.BlocksCleared != BlocksPerAU {
		t.Fatalf("copied %d blocks, want exactly the %d that changed; created %d, deleted %d, cleared %d",
			st.BlocksCopied, wantCopied, st.Created, st.Deleted, st.BlocksCleared)
	}
	// Now the replicas agree, block by block.
	if a, b := up.Versions(), down.Versions(); len(a) != len(b) {
		t.Fatalf("versions differ: %+v vs %+v", a, b)
	}
	for _, v := range up.Versions() {
		a, b := make([]byte, testObjectSize), make([]byte, testObjectSize)
		if err := up.Read(v.Object, 0, a); err != nil {
			t.Fatal(err)
		}
		if err := down.Read(v.Object, 0, b); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(a, b) {
			t.Fatalf("object %s differs after recovery", v.Object)
		}
	}
	if got, want := down.Stats(), up.Stats(); got != want {
		t.Fatalf("space accounting differs: %+v vs %+v", got, want)
	}
	// A second run finds nothing to do, and a run scoped to some volumes
	// leaves the objects outside its scope alone.
	if err := down.CreateObject(ObjectID{5, 0}, nil); err != nil {
		t.Fatal(err)
	}
	st, err = Recover(context.Background(), down, c, up.sb.DiskID, func(id ObjectID) bool { return id.Volume != 5 }, nil)
	if err != nil {
		t.Fatal(err)
	}
	if st.ObjectsChanged != 0 || st.BlocksCopied != 0 || st.Deleted != 0 || !down.hasObject(ObjectID{5, 0}) {
		t.Fatalf("second recovery did work: %+v", st)
	}
	if st, err = Recover(context.Background(), down, c, up.sb.DiskID, nil, nil); err != nil || st.Deleted != 1 || down.hasObject(ObjectID{5, 0}) {
		t.Fatalf("unscoped recovery kept an object the replica lacks: %+v %v", st, err)
	}
}

// The compare-and-set rule while clients write (server/DESIGN.md): a block
// is copied only when the replica's version is newer than the local one
// and the local block is still as compared; a client write landing after
// the comparison wins. A block (or object) newer here than on the replica
// and unchanged over the settle time is stale and replaced; changed by a
// client meanwhile, it stays.
func TestRecoveryCompareAndSet(t *testing.T) {
	up, _ := mustNewFileStore(t, 8)
	down, _ := mustNewFileStore(t, 8)
	obj, gone := ObjectID{1, 0}, ObjectID{1, 1}
	for _, s := range []*Store{up, down} {
		if err := s.CreateObject(obj, nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := down.CreateObject(gone, nil); err != nil { // deleted on the replica while down
		t.Fatal(err)
	}
	blk := func(s *Store, b int, v uint64) {
		t.Helper()
		buf := make([]byte, BlockSize)
		pattern(v, buf)
		if err := s.Write(obj, uint64(b)*BlockSize, buf, v); err != nil {
			t.Fatal(err)
		}
	}
	// Block 0: the replica is newer (missed write). Block 1: the replica is
	// newer, but a client write lands here after the comparison. Block 2:
	// newer here, un-acknowledged from before the crash: stale. Block 3:
	// newer here, and a client writes it again during the settle time.
	blk(up, 0, 20)
	blk(down, 0, 10)
	blk(up, 1, 21)
	blk(down, 1, 11)
	blk(up, 2, 12)
	blk(down, 2, 22)
	blk(up, 3, 13)
	blk(down, 3, 23)
	if err := down.Write(gone, 0, make([]byte, BlockSize), 5); err != nil {
		t.Fatal(err)
	}
	c := serveStore(t, up)
	// Progress runs after the comparison of each object, before the
	// settle: what a client does there lands "meanwhile".
	st, err := RecoverWith(context.Background(), down, c, up.sb.DiskID, RecoverOptions{
		Settle: time.Millisecond,
		Progress: func(done, total int) {
			blk(down, 3, 30) // a client's write, still on its way to up
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("stats %+v", st)
	// Block 1's client write came before the copy: emulate the ordering
	// with applyBlocks directly, whose expectation no longer holds.
	blk(down, 1, 40)
	kept, err := down.applyBlocks(obj, false, 1, []uint8{BlockData}, []uint64{21}, []uint8{BlockData}, []uint64{11}, make([]byte, BlockSize))
	if err != nil || kept != 1 {
		t.Fatalf("applyBlocks over a block changed since the comparison: kept %d, %v; want it left alone", kept, err)
	}
	want := map[int]uint64{0: 20, 1: 40, 2: 12, 3: 30}
	_, vers, err := down.BlockMeta(obj, false, 0, 4*BlockSize)
	if err != nil {
		t.Fatal(err)
	}
	for b, v := range want {
		got := make([]byte, BlockSize)
		exp := make([]byte, BlockSize)
		pattern(v, exp)
		if err := down.Read(obj, uint64(b)*BlockSize, got); err != nil || !bytes.Equal(got, exp) || vers[b] != v {
			t.Errorf("block %d: version %d (err %v, data equal %v), want version %d", b, vers[b], err, bytes.Equal(got, exp), v)
		}
	}
	if st.BlocksStale != 1 || st.BlocksKept != 1 || down.hasObject(gone) || st.Deleted != 1 {
		t.Errorf("stale blocks replaced %d (want 1), kept %d (want 1); stale object still here %v, deleted %d", st.BlocksStale, st.BlocksKept, down.hasObject(gone), st.Deleted)
	}
}

// Equal object versions do not mean equal objects: a disk that missed a
// write and then got a later one has the replica's object version, and
// recovery still finds and copies the missed block.
func TestRecoveryEqualVersionsStillCompared(t *testing.T) {
	up, _ := mustNewFileStore(t, 4)
	down, _ := mustNewFileStore(t, 4)
	id := ObjectID{3, 0}
	for _, s := range []*Store{up, down} {
		if err := s.CreateObject(id, nil); err != nil {
			t.Fatal(err)
		}
	}
	missed, later := make([]byte, BlockSize), make([]byte, BlockSize)
	pattern(5, missed)
	pattern(6, later)
	if err := up.Write(id, 0, missed, 5); err != nil { // lost on its way to down
		t.Fatal(err)
	}
	for _, s := range []*Store{up, down} {
		if err := s.Write(id, BlockSize, later, 6); err != nil {
			t.Fatal(err)
		}
	}
	st, err := Recover(context.Background(), down, serveStore(t, up), up.sb.DiskID, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	got := make([]byte, BlockSize)
	if err := down.Read(id, 0, got); err != nil || !bytes.Equal(got, missed) || st.BlocksCopied != 1 {
		t.Fatalf("missed block after recovery: equal %v, err %v, stats %+v", bytes.Equal(got, missed), err, st)
	}
}

// A layer reclaimed before the layers that read through it is hidden on
// the replica, and recovery's scope leaves reclaimed layers out: a disk
// that lacks such a parent (fresh, or down since before its data was
// written) still gets it, and one that holds a stale copy has it brought
// up to date, so the children read alike on both disks, also after a
// restart.
func TestRecoveryHiddenParents(t *testing.T) {
	up, _ := mustNewFileStore(t, 32)
	fresh, freshPath := mustNewFileStore(t, 32)
	stale, _ := mustNewFileStore(t, 32)
	version := uint64(10)
	buf := make([]byte, 8*BlockSize)
	write := func(stores []*Store, id ObjectID, blk int) {
		t.Helper()
		version++
		pattern(version, buf)
		for _, s := range stores {
			if err := s.Write(id, uint64(blk)*BlockSize, buf, version); err != nil {
				t.Fatal(err)
			}
		}
	}
	// Layer 1 is a snapshot of layer 2, which is one of layer 3; layer 3
	// is the live volume. The stale disk has layer 1 as it was before
	// its last writes.
	for i := uint32(0); i < 2; i++ {
		for _, s := range []*Store{up, stale} {
			if err := s.CreateObject(ObjectID{1, i}, nil); err != nil {
				t.Fatal(err)
			}
		}
		for b := 0; b < testObjectSize/BlockSize; b += 64 {
			write([]*Store{up, stale}, ObjectID{1, i}, b)
		}
		write([]*Store{up}, ObjectID{1, i}, 8)
		if err := up.CreateObject(ObjectID{2, i}, &ObjectID{1, i}); err != nil {
			t.Fatal(err)
		}
		write([]*Store{up}, ObjectID{2, i}, 64)
		if err := up.CreateObject(ObjectID{3, i}, &ObjectID{2, i}); err != nil {
			t.Fatal(err)
		}
		write([]*Store{up}, ObjectID{3, i}, 128)
	}
	if n, err := up.DeleteLayers([]uint64{1, 2}); err != nil || n != 4 {
		t.Fatalf("delete layers 1 and 2: %d objects, %v", n, err)
	}
	if st := up.Stats(); st.HiddenObjects != 4 {
		t.Fatalf("replica holds %d hidden objects, want 4", st.HiddenObjects)
	}
	c := serveStore(t, up)
	live := func(id ObjectID) bool { return id.Volume == 3 } // what the runner's scope leaves
	same := func(s *Store) {
		t.Helper()
		for i := uint32(0); i < 2; i++ {
			a, b := make([]byte, testObjectSize), make([]byte, testObjectSize)
			if err := up.Read(ObjectID{3, i}, 0, a); err != nil {
				t.Fatal(err)
			}
			if err := s.Read(ObjectID{3, i}, 0, b); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(a, b) {
				t.Fatalf("object 3/%d reads differently from the replica after recovery", i)
			}
		}
	}
	for _, tc := range []struct {
		name string
		s    *Store
	}{{"fresh", fresh}, {"stale", stale}} {
		st, err := Recover(context.Background(), tc.s, c, up.sb.DiskID, live, nil)
		if err != nil {
			t.Fatalf("%s disk: %v", tc.name, err)
		}
		t.Logf("%s disk: %+v", tc.name, st)
		same(tc.s)
		st, err = Recover(context.Background(), tc.s, c, up.sb.DiskID, live, nil)
		if err != nil || st.BlocksCopied != 0 || st.BlocksStale != 0 || st.Created != 0 {
			t.Fatalf("%s disk: a second recovery did work: %+v %v", tc.name, st, err)
		}
	}
	if got, want := fresh.Stats(), up.Stats(); got != want {
		t.Fatalf("fresh disk's space accounting differs from the replica's: %+v vs %+v", got, want)
	}
	// Its hidden parents have children: a restart keeps them.
	fresh = reopen(t, fresh, freshPath)
	same(fresh)
	// The stale disk still shows layer 1 (its own reclaim hides it); its
	// content is the replica's now.
	for i := uint32(0); i < 2; i++ {
		a, b := make([]byte, testObjectSize), make([]byte, testObjectSize)
		states := make([]uint8, testObjectSize/BlockSize)
		if _, err := up.ReadOwn(ObjectID{1, i}, true, 0, a, states); err != nil {
			t.Fatal(err)
		}
		if err := stale.Read(ObjectID{1, i}, 0, b); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(a, b) {
			t.Fatalf("stale disk's object 1/%d was not brought up to date", i)
		}
	}
}

// A layer reclaimed after the replica's objects were listed: the server's
// create refuses it (ErrLayerDeleted) and recovery leaves its objects out
// instead of re-creating space nobody would reclaim.
func TestRecoveryLeavesLayersReclaimedMeanwhile(t *testing.T) {
	up, _ := mustNewFileStore(t, 8)
	down, _ := mustNewFileStore(t, 8)
	buf := make([]byte, 4*BlockSize)
	for _, id := range []ObjectID{{1, 0}, {4, 0}} {
		if err := up.CreateObject(id, nil); err != nil {
			t.Fatal(err)
		}
		pattern(id.Volume, buf)
		if err := up.Write(id, 0, buf, 5); err != nil {
			t.Fatal(err)
		}
	}
	create := func(id ObjectID, parent *ObjectID, parentHidden bool) error {
		if id.Volume == 4 {
			return fmt.Errorf("layer 4: %w", ErrLayerDeleted)
		}
		return down.createChild(id, parent, parentHidden)
	}
	st, err := RecoverWith(context.Background(), down, serveStore(t, up), up.sb.DiskID, RecoverOptions{Create: create})
	if err != nil {
		t.Fatal(err)
	}
	if down.hasObject(ObjectID{4, 0}) || !down.hasObject(ObjectID{1, 0}) || st.Created != 1 || st.BlocksCopied != 4 {
		t.Fatalf("recovery created or copied the reclaimed layer: %+v", st)
	}
}

// A hidden parent whose own parent is live (a middle layer of a chain
// reclaimed first): on a fresh disk the live grandparent is created
// before the hidden parent, and that before the child.
func TestRecoveryHiddenParentOfLiveGrandparent(t *testing.T) {
	up, _ := mustNewFileStore(t, 16)
	fresh, _ := mustNewFileStore(t, 16)
	buf := make([]byte, 4*BlockSize)
	chain := []ObjectID{{1, 0}, {2, 0}, {3, 0}}
	for i, id := range chain {
		var parent *ObjectID
		if i > 0 {
			parent = &chain[i-1]
		}
		if err := up.CreateObject(id, parent); err != nil {
			t.Fatal(err)
		}
		pattern(uint64(i+1), buf)
		if err := up.Write(id, uint64(i)*4*BlockSize, buf, uint64(i+1)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := up.DeleteLayers([]uint64{2}); err != nil {
		t.Fatal(err)
	}
	live := func(id ObjectID) bool { return id.Volume != 2 }
	if _, err := Recover(context.Background(), fresh, serveStore(t, up), up.sb.DiskID, live, nil); err != nil {
		t.Fatal(err)
	}
	for _, id := range []ObjectID{chain[0], chain[2]} {
		a, b := make([]byte, testObjectSize), make([]byte, testObjectSize)
		if err := up.Read(id, 0, a); err != nil {
			t.Fatal(err)
		}
		if err := fresh.Read(id, 0, b); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(a, b) {
			t.Fatalf("object %s reads differently on the recovered disk", id)
		}
	}
	if got, want := fresh.Stats(), up.Stats(); got != want {
		t.Fatalf("space accounting differs: %+v vs %+v", got, want)
	}
}

// A hidden parent's block newer here than on the replica is kept: the
// replica's copy may be the stale one.
func TestRecoveryHiddenParentKeepsNewerBlocks(t *testing.T) {
	up, _ := mustNewFileStore(t, 8)
	down, _ := mustNewFileStore(t, 8)
	parent, child := ObjectID{1, 0}, ObjectID{2, 0}
	old, newer := make([]byte, BlockSize), make([]byte, BlockSize)
	pattern(5, old)
	pattern(7, newer)
	for _, c := range []struct {
		s       *Store
		data    []byte
		version uint64
	}{{up, old, 5}, {down, newer, 7}} {
		if err := c.s.CreateObject(parent, nil); err != nil {
			t.Fatal(err)
		}
		if err := c.s.Write(parent, 0, c.data, c.version); err != nil {
			t.Fatal(err)
		}
	}
	if err := up.CreateObject(child, &parent); err != nil {
		t.Fatal(err)
	}
	if _, err := up.DeleteLayers([]uint64{1}); err != nil {
		t.Fatal(err)
	}
	// A client's create never takes a deleted parent; recovery's does.
	if err := up.CreateObject(ObjectID{3, 0}, &parent); !errors.Is(err, ErrNotFound) {
		t.Fatalf("a create under a hidden parent: got %v, want ErrNotFound", err)
	}
	live := func(id ObjectID) bool { return id.Volume == 2 }
	st, err := Recover(context.Background(), down, serveStore(t, up), up.sb.DiskID, live, nil)
	if err != nil {
		t.Fatal(err)
	}
	got := make([]byte, BlockSize)
	if err := down.Read(child, 0, got); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, newer) || st.BlocksKept != 1 {
		t.Fatalf("the newer local block of the hidden parent was replaced by the replica's older one (%+v)", st)
	}
}
