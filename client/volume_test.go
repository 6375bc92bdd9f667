package client

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"keel/nbd"
	"keel/server"
	"keel/wire"
)

// model is the expected content of a volume.
type model []byte

func (m model) write(off int64, p []byte) { copy(m[off:], p) }
func (m model) zero(off, n int64)         { clear(m[off : off+n]) }

func randBytes(r *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func mustMatch(t *testing.T, v *Volume, m model) {
	t.Helper()
	ctx := context.Background()
	buf := make([]byte, len(m))
	for off := 0; off < len(m); off += wire.MaxIO {
		n := min(wire.MaxIO, len(m)-off)
		if err := v.ReadAt(ctx, buf[off:off+n], int64(off)); err != nil {
			t.Fatalf("read at %d: %v", off, err)
		}
	}
	if !bytes.Equal(buf, m) {
		for i := range buf {
			if buf[i] != m[i] {
				t.Fatalf("content differs from the model first at byte %d (block %d)", i, i/blockSize)
			}
		}
	}
}

// Random writes, zeroes and trims across object boundaries, with flushes,
// read back equal to a model, from every replica.
func TestVolumeRandomIO(t *testing.T) {
	c := mustNewTestCluster(t, 3)
	const size = 5 * testObjectSize
	v := c.open(t, c.layout("vol", []uint64{100}, size))
	ctx := context.Background()
	m := make(model, size)
	r := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 300; i++ {
		off := int64(r.IntN(size/blockSize)) * blockSize
		n := int64(1+r.IntN(96)) * blockSize
		n = min(n, size-off)
		switch k := r.IntN(10); {
		case k < 7:
			p := randBytes(r, int(n))
			if err := v.WriteAt(ctx, p, off, k == 0); err != nil {
				t.Fatalf("write: %v", err)
			}
			m.write(off, p)
		case k < 8:
			if err := v.WriteZeroes(ctx, off, n, nbd.ZeroFlags{}); err != nil {
				t.Fatalf("zero: %v", err)
			}
			m.zero(off, n)
		case k < 9:
			if err := v.Trim(ctx, off, n, false); err != nil {
				t.Fatalf("trim: %v", err)
			}
			m.zero(off, n)
		default:
			if err := v.Flush(ctx); err != nil {
				t.Fatalf("flush: %v", err)
			}
		}
	}
	mustMatch(t, v, m)
	// Every replica holds the same bytes: read with each disk as the tail.
	for tail := uint32(1); tail <= 3; tail++ {
		l := v.Layout()
		l.DiskSets = [][]uint32{{tail%3 + 1, (tail+1)%3 + 1, tail}}
		l.ReadOnly = true
		mustMatch(t, c.open(t, l), m)
	}
}

// A snapshot is a frozen layer: the volume continues in a fresh layer
// whose objects have the snapshot's as parents; a clone of the snapshot
// diverges independently; trims over a parent read as zeroes.
func TestVolumeLayers(t *testing.T) {
	c := mustNewTestCluster(t, 3)
	const size = 3 * testObjectSize
	ctx := context.Background()
	r := rand.New(rand.NewPCG(3, 4))
	base := c.open(t, c.layout("vol", []uint64{10}, size))
	m := make(model, size)
	p := randBytes(r, testObjectSize)
	if err := base.WriteAt(ctx, p, testObjectSize/2, false); err != nil {
		t.Fatal(err)
	}
	m.write(testObjectSize/2, p)
	snap := append(model(nil), m...)

	// The volume after the snapshot: own layer 11 over 10.
	vol := c.open(t, c.layout("vol", []uint64{11, 10}, size))
	mustMatch(t, vol, m)
	q := randBytes(r, 64<<10)
	vol.WriteAt(ctx, q, testObjectSize-8192, false)
	m.write(testObjectSize-8192, q)
	if err := vol.Trim(ctx, testObjectSize/2, 8192, false); err != nil {
		t.Fatal(err)
	}
	m.zero(testObjectSize/2, 8192)
	mustMatch(t, vol, m)

	// The snapshot, read-only, still shows the old data.
	sl := c.layout("snap", []uint64{10}, size)
	sl.ReadOnly = true
	snapVol := c.open(t, sl)
	mustMatch(t, snapVol, snap)
	if err := snapVol.WriteAt(ctx, q, 0, false); !errors.Is(err, nbd.ErrReadOnly) {
		t.Fatalf("write to read-only: %v", err)
	}

	// A clone of the snapshot diverges independently of the volume.
	clone := c.open(t, c.layout("clone", []uint64{12, 10}, size))
	cm := append(model(nil), snap...)
	w := randBytes(r, 4096)
	clone.WriteAt(ctx, w, testObjectSize/2, false)
	cm.write(testObjectSize/2, w)
	mustMatch(t, clone, cm)
	mustMatch(t, vol, m)
	mustMatch(t, snapVol, snap)

	// Block status, per 4 KiB block through the layers: data where the
	// base wrote [1/2, 3/2) objects; in the volume, the trim over that
	// data is a hole.
	for _, tc := range []struct {
		v    *Volume
		want []nbd.Extent
	}{
		{clone, []nbd.Extent{{Length: testObjectSize / 2, Hole: true, Zero: true}, {Length: testObjectSize},
			{Length: size - 3*testObjectSize/2, Hole: true, Zero: true}}},
		{vol, []nbd.Extent{{Length: testObjectSize/2 + 8192, Hole: true, Zero: true}, {Length: testObjectSize - 8192},
			{Length: size - 3*testObjectSize/2, Hole: true, Zero: true}}},
	} {
		ext, err := tc.v.BlockStatus(ctx, 0, size)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(ext, tc.want) {
			t.Fatalf("block status of %s: %+v, want %+v", tc.v.Layout().Name, ext, tc.want)
		}
	}
}

// A replica that vanishes is reported to mgmt; the write is acknowledged
// without it only after mgmt committed it down, and never when mgmt refuses.
func TestVolumeReplicaDown(t *testing.T) {
	c := mustNewTestCluster(t, 3)
	const size = 2 * testObjectSize
	ctx := context.Background()
	v := c.open(t, c.layout("vol", []uint64{20}, size))
	m := make(model, size)
	r := rand.New(rand.NewPCG(5, 6))
	p := randBytes(r, 65536)
	v.WriteAt(ctx, p, 0, true)
	m.write(0, p)

	c.stop(c.servers[2])
	c.refuseDown = true
	if err := v.WriteAt(ctx, randBytes(r, 4096), 0, false); err == nil {
		t.Fatal("write acknowledged without a replica mgmt did not mark down")
	}
	c.refuseDown = false
	p = randBytes(r, 8192)
	if err := v.WriteAt(ctx, p, 4096, true); err != nil {
		t.Fatalf("write after mgmt marked the disk down: %v", err)
	}
	m.write(4096, p)
	if !c.down[2] {
		t.Fatal("disk 2 was not reported down")
	}
	if err := v.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	// Block 0 was written (refused) on the up replicas only: its content is
	// the old or the new write; the rest must match the model.
	buf := make([]byte, size-4096)
	if err := v.ReadAt(ctx, buf, 4096); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(buf, m[4096:]) {
		t.Fatal("content after a replica went down differs from the model")
	}
}

// A write carrying an older fencing token than the servers have seen is
// refused: the volume is lost to this attachment and stays lost.
func TestVolumeFenced(t *testing.T) {
	c := mustNewTestCluster(t, 3)
	ctx := context.Background()
	l := c.layout("vol", []uint64{30}, testObjectSize)
	old := c.open(t, l)
	if err := old.WriteAt(ctx, make([]byte, 4096), 0, false); err != nil {
		t.Fatal(err)
	}
	l.Token = 2
	newer := c.open(t, l)
	if err := newer.WriteAt(ctx, bytes.Repeat([]byte{7}, 4096), 0, false); err != nil {
		t.Fatal(err)
	}
	err := old.WriteAt(ctx, bytes.Repeat([]byte{1}, 4096), 0, false)
	if !errors.Is(err, nbd.ErrVolumeLost) {
		t.Fatalf("stale writer: err = %v, want ErrVolumeLost", err)
	}
	if err := old.ReadAt(ctx, make([]byte, 4096), 0); !errors.Is(err, nbd.ErrVolumeLost) {
		t.Fatalf("lost volume still reads: %v", err)
	}
	// The fence holds in a new layer too (a snapshot of the volume).
	l.Layers = []uint64{31, 30}
	l.Token = 1
	zombie := c.open(t, l)
	if err := zombie.WriteAt(ctx, make([]byte, 4096), 0, false); !errors.Is(err, nbd.ErrVolumeLost) {
		t.Fatalf("stale writer in a new layer: %v", err)
	}
	buf := make([]byte, 4096)
	newer.ReadAt(ctx, buf, 0)
	if !bytes.Equal(buf, bytes.Repeat([]byte{7}, 4096)) {
		t.Fatal("the fenced writer changed the data")
	}
}

func TestLimiter(t *testing.T) {
	if newLimiter(0, 0) != nil {
		t.Fatal("unlimited volume got a limiter")
	}
	l := newLimiter(10, 0)
	for i := 0; i < 10; i++ {
		l.wait(context.Background(), 0)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := l.wait(ctx, 0); !errors.Is(err, context.Canceled) {
		t.Fatalf("11th op within the second did not wait: %v", err)
	}
}

// A recovering disk gets every write but serves no read: with the other
// replicas stopped a read fails rather than reading it, and once it is up
// it alone returns what was written while it recovered. A disk the volume
// marked down is used again after Readmit.
func TestVolumeRecoveringDisk(t *testing.T) {
	c := mustNewTestCluster(t, 3)
	const size = 2 * testObjectSize
	ctx := context.Background()
	v := c.open(t, c.layout("vol", []uint64{40}, size))
	r := rand.New(rand.NewPCG(7, 8))
	c.mu.Lock()
	c.recovering[1] = true
	c.mu.Unlock()
	p := randBytes(r, size)
	if err := v.WriteAt(ctx, p, 0, true); err != nil {
		t.Fatal(err)
	}
	c.stop(c.servers[2])
	c.stop(c.servers[3])
	c.mu.Lock()
	c.down[2], c.down[3] = true, true
	c.mu.Unlock()
	if err := v.ReadAt(ctx, make([]byte, 4096), 0); !errors.Is(err, ErrNoReplica) {
		t.Fatalf("read with only a recovering disk left: %v, want ErrNoReplica", err)
	}
	c.mu.Lock()
	delete(c.recovering, 1)
	c.mu.Unlock()
	buf := make([]byte, size)
	if err := v.ReadAt(ctx, buf, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(buf, p) {
		t.Fatal("the recovering disk did not get every write")
	}

	// Disk 1 stops answering: the volume marks it down and stops using it;
	// back (recovering, then readmitted) it gets writes again.
	c.start(c.servers[2])
	c.start(c.servers[3])
	c.mu.Lock()
	c.down[2], c.down[3] = false, false
	c.mu.Unlock()
	c.stop(c.servers[1])
	if err := v.WriteAt(ctx, randBytes(r, 4096), 0, true); err != nil {
		t.Fatalf("write with disk 1 silent: %v", err)
	}
	c.start(c.servers[1])
	c.mu.Lock()
	c.down[1], c.recovering[1] = false, true
	c.mu.Unlock()
	p = randBytes(r, 4096)
	if err := v.WriteAt(ctx, p, 8192, true); err != nil {
		t.Fatal(err)
	}
	if got := make([]byte, 4096); c.servers[1].store.Read(server.ObjectID{Volume: 40, Index: 0}, 8192, got) == nil && bytes.Equal(got, p) {
		t.Fatal("a disk the volume marked down got writes before it was readmitted")
	}
	v.Readmit(1)
	if err := v.WriteAt(ctx, p, 8192, true); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 4096)
	if err := c.servers[1].store.Read(server.ObjectID{Volume: 40, Index: 0}, 8192, got); err != nil || !bytes.Equal(got, p) {
		t.Fatalf("after Readmit the recovering disk did not get the write: %v", err)
	}
}

// Writes wait while the frontend's view of the disks is not confirmed by
// mgmt (the lease ran out): a client cut off from mgmt stops writing.
// Reads and flushes go on. A confirmation lets the waiting writes in.
func TestVolumeWriteLease(t *testing.T) {
	c := mustNewTestCluster(t, 3)
	c.lease = NewDiskView(nil, slog.New(slog.DiscardHandler), 2*time.Second)
	ctx := context.Background()
	v := c.open(t, c.layout("vol", []uint64{41}, testObjectSize))
	short := func() (context.Context, context.CancelFunc) { return context.WithTimeout(ctx, 100*time.Millisecond) }

	tctx, cancel := short()
	defer cancel()
	if err := v.WriteAt(tctx, make([]byte, 4096), 0, false); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("write before any confirmation: %v, want it to wait (deadline exceeded)", err)
	}
	c.lease.Confirmed(1, time.Now())
	p := bytes.Repeat([]byte{7}, 4096)
	if err := v.WriteAt(ctx, p, 0, true); err != nil {
		t.Fatalf("write under the lease: %v", err)
	}
	time.Sleep(2100 * time.Millisecond) // the lease runs out
	tctx2, cancel2 := short()
	defer cancel2()
	if err := v.WriteZeroes(tctx2, 0, 4096, nbd.ZeroFlags{}); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("zeroing after the lease ran out: %v, want it to wait", err)
	}
	got := make([]byte, 4096)
	if err := v.ReadAt(ctx, got, 0); err != nil || !bytes.Equal(got, p) {
		t.Fatalf("read without the lease: %v (data equal: %v)", err, bytes.Equal(got, p))
	}
	if err := v.Flush(ctx); err != nil {
		t.Fatalf("flush without the lease: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- v.WriteAt(ctx, make([]byte, 4096), 4096, false) }()
	select {
	case err := <-done:
		t.Fatalf("a write went through without the lease: %v", err)
	case <-time.After(200 * time.Millisecond):
	}
	c.lease.Confirmed(2, time.Now())
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a waiting write did not go through after the lease was renewed")
	}
}
