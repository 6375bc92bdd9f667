package server

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
)

var errPowerLost = errors.New("power lost")

// crashDevice is an in-memory device that simulates power loss: writes
// since the last Sync are pending, and a crash keeps a random subset of
// their 512-byte sectors (all, none, or a torn mix). After the crash point
// every operation fails, as on a dead disk.
type crashDevice struct {
	mu      sync.Mutex
	durable []byte
	cur     []byte
	pending []pendingWrite
	ops     int // operations left before the crash; <0: never
	crashed bool
}

type pendingWrite struct {
	off  int64
	data []byte
}

// newCrashDevice starts from a power-on image; it takes ownership of img.
func newCrashDevice(img []byte) *crashDevice {
	return &crashDevice{durable: img, cur: append([]byte(nil), img...), ops: -1}
}

func (d *crashDevice) tick() error {
	if d.crashed {
		return errPowerLost
	}
	if d.ops == 0 {
		d.crashed = true
		return errPowerLost
	}
	if d.ops > 0 {
		d.ops--
	}
	return nil
}

func (d *crashDevice) ReadAt(b []byte, off int64) (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.crashed {
		return 0, errPowerLost
	}
	return copy(b, d.cur[off:]), nil
}

func (d *crashDevice) WriteAt(b []byte, off int64) (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.tick(); err != nil {
		return 0, err
	}
	copy(d.cur[off:], b)
	d.pending = append(d.pending, pendingWrite{off, append([]byte(nil), b...)})
	return len(b), nil
}

func (d *crashDevice) Sync() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.tick(); err != nil {
		return err
	}
	for _, w := range d.pending {
		copy(d.durable[w.off:], w.data)
	}
	d.pending = d.pending[:0]
	return nil
}

func (d *crashDevice) Close() error { return nil }

// powerLoss returns the image a restart would find: the durable bytes plus,
// for each pending write in order, each 512-byte sector kept with
// probability keep.
func (d *crashDevice) powerLoss(rng *rand.Rand, keep float64) []byte {
	d.mu.Lock()
	defer d.mu.Unlock()
	img := append([]byte(nil), d.durable...)
	for _, w := range d.pending {
		for s := 0; s < len(w.data); s += 512 {
			if rng.Float64() < keep {
				copy(img[w.off+int64(s):], w.data[s:min(s+512, len(w.data))])
			}
		}
	}
	return img
}

// keepWrites returns the image a restart would find if, of the pending
// writes, exactly those whose bit is set in mask had reached the disk.
func (d *crashDevice) keepWrites(mask uint) []byte {
	d.mu.Lock()
	defer d.mu.Unlock()
	img := append([]byte(nil), d.durable...)
	for i, w := range d.pending {
		if mask&(1<<i) != 0 {
			copy(img[w.off:], w.data)
		}
	}
	return img
}

// pattern is the content of write id at one block: every 8-byte word
// derived from (id, word), so a torn or misplaced block never passes as a
// valid one. id 0 is zeros.
func pattern(id uint64, b []byte) {
	if id == 0 {
		clear(b)
		return
	}
	for i := 0; i < len(b); i += 8 {
		x := id*0x9e3779b97f4a7c15 + uint64(i)
		x ^= x >> 31
		x *= 0xbf58476d1ce4e5b9
		binary.LittleEndian.PutUint64(b[i:], x^x>>29)
	}
	binary.LittleEndian.PutUint64(b, id)
}

func contentID(b []byte) (uint64, bool) {
	id := binary.LittleEndian.Uint64(b)
	want := make([]byte, len(b))
	pattern(id, want)
	return id, string(want) == string(b)
}

// Boots of the host a test opens its stores in: testRebooted is the one
// after a power loss.
var testBoot, testRebooted = [16]byte{1}, [16]byte{2}

const (
	testObjectSize  = 4 << 20 // 4 AUs: small disks, many AU crossings
	crashObjectSize = 2 << 20 // smaller still: images are copied per crash
)

func mustFormat(t testing.TB, objectSize uint32, aus int) []byte {
	t.Helper()
	size := uint64(MinDiskSize(objectSize)) + uint64(aus)*(AUSize+objRecordSize+auPageSize)
	sb, err := PlanSuperblock(size, FormatParams{ClusterID: "test", DiskID: 1, NodeID: 1, ObjectSize: objectSize})
	if err != nil {
		t.Fatal(err)
	}
	d := newCrashDevice(make([]byte, size))
	if err := Format(d, sb); err != nil {
		t.Fatal(err)
	}
	return d.durable
}

// blockModel is what a block may read after a crash: its content at the
// last acknowledged flush, or anything written since.
type blockModel struct {
	durable uint64
	since   []uint64
}

type objectModel struct {
	blocks  []blockModel
	version uint64 // at the last acknowledged flush
}

func (m *objectModel) flushed(version uint64) {
	for i := range m.blocks {
		b := &m.blocks[i]
		if len(b.since) > 0 {
			b.durable = b.since[len(b.since)-1]
			b.since = nil
		}
	}
	m.version = version
}

func TestCrashConsistency(t *testing.T) {
	// Three objects and a parent of 2 AUs each fill 8 of the 9 AUs.
	template := mustFormat(t, crashObjectSize, 5)
	const blocks = crashObjectSize / BlockSize
	iterations := 80
	if raceEnabled || testing.Short() {
		iterations = 15 // the race detector slows it ~10x; plain runs do 80
	}
	for it := 0; it < iterations; it++ {
		seed := uint64(it)
		rng := rand.New(rand.NewPCG(seed, 42))
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			dev := newCrashDevice(append([]byte(nil), template...))
			s, err := open(dev, testBoot)
			if err != nil {
				t.Fatal(err)
			}
			// A frozen, flushed parent and three objects, one its child.
			ids := []ObjectID{{1, 0}, {1, 1}, {2, 0}}
			parent := ObjectID{9, 0}
			models := map[ObjectID]*objectModel{}
			if err := s.CreateObject(parent, nil); err != nil {
				t.Fatal(err)
			}
			parentContent := make([]uint64, blocks)
			buf := make([]byte, 16*BlockSize)
			nextID := uint64(1000)
			for b := 0; b < blocks; b += 16 {
				if rng.IntN(3) == 0 {
					continue
				}
				for i := 0; i < 16; i++ {
					parentContent[b+i] = nextID
					pattern(nextID, buf[i*BlockSize:(i+1)*BlockSize])
					nextID++
				}
				if err := s.Write(parent, uint64(b)*BlockSize, buf, 0); err != nil {
					t.Fatal(err)
				}
			}
			for i, id := range ids {
				var p *ObjectID
				m := &objectModel{blocks: make([]blockModel, blocks)}
				if i == 2 {
					p = &parent
					for b := range m.blocks {
						m.blocks[b].durable = parentContent[b]
					}
				}
				if err := s.CreateObject(id, p); err != nil {
					t.Fatal(err)
				}
				models[id] = m
			}
			// Arm the crash, then run random operations until it hits.
			dev.mu.Lock()
			dev.ops = 1 + rng.IntN(120)
			dev.mu.Unlock()
			versions := map[ObjectID]uint64{}
			// attempted: the versions when the last flush began; a
			// crash in its middle may leave them on disk, but nothing
			// newer (a checkpoint's records are not trusted after a
			// restart of the host).
			attempted := map[ObjectID]uint64{}
			flush := func() error {
				for id, v := range versions {
					attempted[id] = v
				}
				err := s.Flush()
				if err == nil {
					for id, mm := range models {
						mm.flushed(versions[id])
					}
				}
				return err
			}
			for step := 0; step < 400; step++ {
				id := ids[rng.IntN(len(ids))]
				m := models[id]
				off := rng.IntN(blocks)
				n := 1 + rng.IntN(min(12, blocks-off))
				var err error
				switch op := rng.IntN(10); {
				case op < 6:
					for i := 0; i < n; i++ {
						pattern(nextID+uint64(i), buf[i*BlockSize:(i+1)*BlockSize])
						m.blocks[off+i].since = append(m.blocks[off+i].since, nextID+uint64(i))
					}
					nextID += uint64(n)
					versions[id]++
					err = s.Write(id, uint64(off)*BlockSize, buf[:n*BlockSize], versions[id])
					if err == nil && op == 5 { // FUA
						err = flush()
					}
				case op < 8:
					if rng.IntN(4) == 0 { // a whole AU: frees it
						off, n = off/BlocksPerAU*BlocksPerAU, BlocksPerAU
					}
					for i := 0; i < n; i++ {
						m.blocks[off+i].since = append(m.blocks[off+i].since, 0)
					}
					versions[id]++
					err = s.WriteZeroes(id, uint64(off)*BlockSize, n*BlockSize, versions[id])
				case op == 8:
					err = s.Checkpoint()
				default:
					err = flush()
				}
				if err != nil {
					if !errors.Is(err, ErrFailed) {
						t.Fatalf("step %d: %v", step, err)
					}
					break
				}
			}
			// A power loss, or (one time in four) a crash of the process
			// alone: the host keeps every write and the boot.
			keep, boot := []float64{0, 0.5, 1}[rng.IntN(3)], testRebooted
			process := rng.IntN(4) == 0
			if process {
				keep, boot = 1, testBoot
			}
			img := dev.powerLoss(rng, keep)
			s2, err := open(newCrashDevice(img), boot)
			if err != nil {
				t.Fatalf("reopen after power loss: %v", err)
			}
			checkInvariants(t, s2)
			for _, v := range s2.Versions() {
				if m := models[v.Object]; m != nil && v.Version < m.version {
					t.Fatalf("object %s: version %d after power loss, %d was flushed", v.Object, v.Version, m.version)
				}
				if !process && models[v.Object] != nil && v.Version > attempted[v.Object] {
					t.Fatalf("object %s: version %d after power loss, no flush began after %d", v.Object, v.Version, attempted[v.Object])
				}
			}
			one := make([]byte, BlockSize)
			for _, id := range ids {
				m := models[id]
				for b := range m.blocks {
					bm := m.blocks[b]
					err := s2.Read(id, uint64(b)*BlockSize, one)
					if err != nil {
						if !errors.Is(err, ErrChecksum) || len(bm.since) == 0 {
							t.Fatalf("object %s block %d (flushed %d, since %v): %v", id, b, bm.durable, bm.since, err)
						}
						continue
					}
					got, ok := contentID(one)
					if !ok {
						t.Fatalf("object %s block %d: garbage returned as data", id, b)
					}
					if got == bm.durable {
						continue
					}
					found := false
					for _, c := range bm.since {
						found = found || c == got
					}
					if !found {
						t.Fatalf("object %s block %d: read content %d, want flushed %d or one of %v", id, b, got, bm.durable, bm.since)
					}
				}
			}
			// The reopened store works: write, flush, reopen, read back.
			pattern(7, one)
			if err := s2.Write(ids[0], 0, one, 0); err != nil {
				t.Fatal(err)
			}
			if err := s2.Flush(); err != nil {
				t.Fatal(err)
			}
			s3, err := Open(newCrashDevice(s2.timed.Device.(*crashDevice).durable))
			if err != nil {
				t.Fatal(err)
			}
			checkInvariants(t, s3)
			if err := s3.Read(ids[0], 0, one); err != nil {
				t.Fatal(err)
			}
			if got, ok := contentID(one); !ok || got != 7 {
				t.Fatalf("after reopen: read %d, want 7", got)
			}
		})
	}
}

// checkInvariants verifies the rebuilt metadata: each owned AU belongs to
// exactly one place of a live object, the free list holds exactly the
// unowned AUs, and the accounting adds up.
func checkInvariants(t *testing.T, s *Store) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	owned := map[int32]bool{}
	for _, o := range s.slots {
		if o == nil {
			continue
		}
		if s.byInc[o.inc] != o {
			t.Fatalf("object %s: incarnation %d not indexed", o.id, o.inc)
		}
		for idx, au := range o.aus {
			if au < 0 {
				continue
			}
			if owned[au] {
				t.Fatalf("AU %d owned twice", au)
			}
			owned[au] = true
			if m := s.aus[au]; m.owner != o.inc || int(m.index) != idx {
				t.Fatalf("AU %d: owner %d/%d, object %s has it at %d/%d", au, m.owner, m.index, o.id, o.inc, idx)
			}
		}
	}
	free := map[int32]bool{}
	for _, au := range s.freeAUs {
		if owned[au] || free[au] || s.aus[au].owner != 0 {
			t.Fatalf("AU %d on the free list but owned or listed twice", au)
		}
		free[au] = true
	}
	if len(owned)+len(free) != len(s.aus) {
		t.Fatalf("%d owned + %d free AUs != %d", len(owned), len(free), len(s.aus))
	}
}

// mustOpenWithObject opens dev in testBoot and creates object 1/0 in it.
func mustOpenWithObject(t *testing.T, dev *crashDevice) (*Store, ObjectID) {
	t.Helper()
	s, err := open(dev, testBoot)
	if err != nil {
		t.Fatal(err)
	}
	id := ObjectID{Volume: 1}
	if err := s.CreateObject(id, nil); err != nil {
		t.Fatal(err)
	}
	return s, id
}

// A checkpoint survives a crash of the server process, whose writes the
// page cache keeps, and counts for nothing once the host restarts: not at
// that open, nor at any later one.
func TestCheckpointAcrossCrashes(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	dev := newCrashDevice(mustFormat(t, crashObjectSize, 5))
	s, id := mustOpenWithObject(t, dev)
	buf := make([]byte, BlockSize)
	version := uint64(0)
	write := func(block int, content uint64) {
		t.Helper()
		version++
		pattern(content, buf)
		if err := s.Write(id, uint64(block)*BlockSize, buf, version); err != nil {
			t.Fatal(err)
		}
	}
	for b := range 8 {
		write(b, uint64(1+b))
	}
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	flushed := version
	for b := range 4 {
		write(b, uint64(11+b))
	}
	write(8, 21)
	write(9, 22)
	if err := s.Checkpoint(); err != nil {
		t.Fatal(err)
	}
	checkpointed := version
	write(10, 31)

	// expect reads every block of id from st: a content id, 0 for zeros,
	// or -1 for a checksum error.
	expect := func(st *Store, what string, want []int64) {
		t.Helper()
		one := make([]byte, BlockSize)
		for b, w := range want {
			err := st.Read(id, uint64(b)*BlockSize, one)
			switch {
			case w < 0 && errors.Is(err, ErrChecksum):
			case err != nil:
				t.Fatalf("%s: block %d: %v (want %d)", what, b, err, w)
			default:
				if got, ok := contentID(one); !ok || int64(got) != w {
					t.Fatalf("%s: block %d reads %d (valid %v), want %d", what, b, got, ok, w)
				}
			}
		}
	}
	versionOf := func(st *Store) uint64 {
		for _, v := range st.Versions() {
			if v.Object == id {
				return v.Version
			}
		}
		t.Fatal("object lost")
		return 0
	}

	// The process dies; the host keeps every write it made.
	afterProcess := dev.powerLoss(rng, 1)
	p, err := open(newCrashDevice(append([]byte(nil), afterProcess...)), testBoot)
	if err != nil {
		t.Fatal(err)
	}
	expect(p, "after a crash of the process", []int64{11, 12, 13, 14, 5, 6, 7, 8, 21, 22, 0})
	if v := versionOf(p); v != checkpointed {
		t.Fatalf("after a crash of the process: version %d, want the checkpoint's %d", v, checkpointed)
	}

	// The host restarts instead, after writing every page back: the
	// checkpoint's records are on the disk but must not count.
	hostDev := newCrashDevice(append([]byte(nil), afterProcess...))
	h, err := open(hostDev, testRebooted)
	if err != nil {
		t.Fatal(err)
	}
	want := []int64{-1, -1, -1, -1, 5, 6, 7, 8, 0, 0, 0}
	expect(h, "after a restart of the host", want)
	if v := versionOf(h); v != flushed {
		t.Fatalf("after a restart of the host: version %d, want the flushed %d", v, flushed)
	}
	// The host loses power again at any point of that open's flush: the
	// rejected records do not come back at the boot after (the mark that
	// would trust their epochs is written only after their rewrite is
	// durable).
	for ops := 0; ; ops++ {
		d := newCrashDevice(append([]byte(nil), afterProcess...))
		d.ops = ops
		if _, err := open(d, testRebooted); err == nil {
			break
		} else if !errors.Is(err, errPowerLost) && !errors.Is(err, ErrFailed) {
			t.Fatal(err)
		}
		if len(d.pending) > 10 {
			t.Fatalf("%d writes pending: too many subsets to try", len(d.pending))
		}
		for mask := range uint(1) << len(d.pending) {
			third, err := open(newCrashDevice(d.keepWrites(mask)), [16]byte{3})
			if err != nil {
				t.Fatal(err)
			}
			what := fmt.Sprintf("after a power loss at device operation %d of the open after a restart (pending writes kept: %b)", ops, mask)
			expect(third, what, want)
			if v := versionOf(third); v != flushed {
				t.Fatalf("%s: version %d, want the flushed %d", what, v, flushed)
			}
		}
	}
	// Its server process dies in turn: the rejected records were written
	// over, so the checkpoint does not come back either.
	again, err := open(newCrashDevice(hostDev.powerLoss(rng, 1)), testRebooted)
	if err != nil {
		t.Fatal(err)
	}
	expect(again, "after a restart of the host and a crash of the process", want)
	if v := versionOf(again); v != flushed {
		t.Fatalf("after a restart of the host and a crash of the process: version %d, want %d", v, flushed)
	}
}

// A disk of format 2 has no flush mark: open writes none, and a checkpoint
// flushes.
func TestFormat2CheckpointFlushes(t *testing.T) {
	size := MinDiskSize(crashObjectSize) + 4*(AUSize+objRecordSize+auPageSize)
	sb, err := PlanSuperblock(size, FormatParams{ClusterID: "test", DiskID: 1, NodeID: 1, ObjectSize: crashObjectSize})
	if err != nil {
		t.Fatal(err)
	}
	sb.FormatVersion = formatNoMark
	dev := newCrashDevice(make([]byte, size))
	if err := Format(dev, sb); err != nil {
		t.Fatal(err)
	}
	s, id := mustOpenWithObject(t, dev)
	if err := s.Write(id, 0, block(5), 7); err != nil {
		t.Fatal(err)
	}
	if err := s.Checkpoint(); err != nil {
		t.Fatal(err)
	}
	img := dev.powerLoss(rand.New(rand.NewPCG(1, 1)), 0) // only what was synced
	if got := img[markOff : markOff+2*markSlotSize]; string(got) != string(make([]byte, len(got))) {
		t.Fatal("a disk of format 2 got a flush mark")
	}
	s2, err := open(newCrashDevice(img), testRebooted)
	if err != nil {
		t.Fatal(err)
	}
	if got, ok := contentID(mustRead(t, s2, id, 0)); !ok || got != 5 {
		t.Fatalf("after a checkpoint and a power loss: block reads %d, want 5", got)
	}
	if sb := s2.Superblock(); sb.FormatVersion != formatNoMark {
		t.Fatalf("format version %d after open, want %d", sb.FormatVersion, formatNoMark)
	}
}
