package server

import (
	"bytes"
	"context"
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
	kept, err := down.applyBlocks(obj, 1, []uint8{BlockData}, []uint64{21}, []uint8{BlockData}, []uint64{11}, make([]byte, BlockSize))
	if err != nil || kept != 1 {
		t.Fatalf("applyBlocks over a block changed since the comparison: kept %d, %v; want it left alone", kept, err)
	}
	want := map[int]uint64{0: 20, 1: 40, 2: 12, 3: 30}
	_, vers, err := down.BlockMeta(obj, 0, 4*BlockSize)
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
