package server

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// mustNewFileStore formats a sparse file of aus extra AUs and opens it
// with direct I/O.
func mustNewFileStore(t testing.TB, aus int) (*Store, string) {
	t.Helper()
	return newFileStore(t, aus, true)
}

// newFileStore is mustNewFileStore, buffered unless direct.
func newFileStore(t testing.TB, aus int, direct bool) (*Store, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "disk")
	size := MinDiskSize(testObjectSize) + uint64(aus)*(AUSize+objRecordSize+auPageSize)
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(path, int64(size)); err != nil {
		t.Fatal(err)
	}
	dev, got, err := OpenDevice(path, DirectIO{All: direct})
	if err != nil {
		t.Fatal(err)
	}
	sb, err := PlanSuperblock(got, FormatParams{ClusterID: "c1", DiskID: 3, NodeID: 2, ObjectSize: testObjectSize})
	if err != nil {
		t.Fatal(err)
	}
	if err := Format(dev, sb); err != nil {
		t.Fatal(err)
	}
	s, err := Open(dev)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, path
}

func reopen(t *testing.T, s *Store, path string) *Store {
	t.Helper()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	dev, _, err := OpenDevice(path, DirectIO{All: true})
	if err != nil {
		t.Fatal(err)
	}
	s2, err := Open(dev)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s2.Close() })
	return s2
}

func block(id uint64) []byte {
	b := make([]byte, BlockSize)
	pattern(id, b)
	return b
}

func mustRead(t *testing.T, s *Store, id ObjectID, blk int) []byte {
	t.Helper()
	b := make([]byte, BlockSize)
	if err := s.Read(id, uint64(blk)*BlockSize, b); err != nil {
		t.Fatalf("read %s block %d: %v", id, blk, err)
	}
	return b
}

func TestCopyOnWriteChain(t *testing.T) {
	s, path := mustNewFileStore(t, 4)
	base, snap, child := ObjectID{1, 0}, ObjectID{2, 0}, ObjectID{3, 0}
	if err := s.CreateObject(base, nil); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 4; i++ {
		if err := s.Write(base, uint64(i)*BlockSize, block(uint64(100+i)), 0); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.CreateObject(snap, &base); err != nil {
		t.Fatal(err)
	}
	if err := s.Write(snap, BlockSize, block(201), 0); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateObject(child, &snap); err != nil {
		t.Fatal(err)
	}
	if err := s.Write(child, 2*BlockSize, block(302), 0); err != nil {
		t.Fatal(err)
	}
	if err := s.WriteZeroes(child, 3*BlockSize, BlockSize, 0); err != nil {
		t.Fatal(err)
	}
	before := s.Stats()
	s = reopen(t, s, path)
	if got := s.Stats(); got != before {
		t.Fatalf("stats changed across reopen: %+v, was %+v", got, before)
	}
	want := [][]byte{block(100), block(201), block(302), make([]byte, BlockSize), make([]byte, BlockSize)}
	for i, w := range want {
		if got := mustRead(t, s, child, i); !bytes.Equal(got, w) {
			id, _ := contentID(got)
			t.Errorf("child block %d: got content %d", i, id)
		}
	}
	// The parent is untouched by the child's writes and trim.
	if got := mustRead(t, s, base, 3); !bytes.Equal(got, block(103)) {
		t.Error("base block 3 changed")
	}
	// Each object with data holds exactly one AU; blocks are exact.
	st := s.Stats()
	if st.AUsUsed != 3 || st.DataBlocks != 6 || st.ZeroBlocks != 1 || st.Objects != 3 {
		t.Fatalf("stats %+v, want 3 AUs used, 6 data blocks, 1 zero block, 3 objects", st)
	}
	// ReadOwn sees only the child's own blocks.
	buf := make([]byte, 4*BlockSize)
	states := make([]uint8, 4)
	v, err := s.ReadOwn(child, false, 0, buf, states)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(states, []uint8{BlockUnwritten, BlockUnwritten, BlockData, BlockZero}) || v != 2 {
		t.Fatalf("own states %v version %d", states, v)
	}
}

func TestDeleteParentKeepsDataForChildren(t *testing.T) {
	s, path := mustNewFileStore(t, 4)
	p, c := ObjectID{1, 0}, ObjectID{2, 0}
	if err := s.CreateObject(p, nil); err != nil {
		t.Fatal(err)
	}
	if err := s.Write(p, 0, block(5), 0); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateObject(c, &p); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteObject(p); err != nil {
		t.Fatal(err)
	}
	if err := s.Read(p, 0, make([]byte, BlockSize)); !errors.Is(err, ErrNotFound) {
		t.Fatalf("read of deleted parent: %v, want ErrNotFound", err)
	}
	s = reopen(t, s, path)
	if got := mustRead(t, s, c, 0); !bytes.Equal(got, block(5)) {
		t.Fatal("child lost its parent's data")
	}
	if st := s.Stats(); st.HiddenObjects != 1 || st.AUsUsed != 1 {
		t.Fatalf("stats %+v, want the hidden parent holding 1 AU", st)
	}
	if err := s.DeleteObject(c); err != nil {
		t.Fatal(err)
	}
	s = reopen(t, s, path)
	if st := s.Stats(); st.HiddenObjects != 0 || st.AUsUsed != 0 || st.Objects != 0 || st.AUsFree != st.AUsTotal {
		t.Fatalf("stats %+v, want an empty disk", st)
	}
}

func TestTrimFreesSpace(t *testing.T) {
	s, _ := mustNewFileStore(t, 0)
	id := ObjectID{1, 0}
	if err := s.CreateObject(id, nil); err != nil {
		t.Fatal(err)
	}
	data := make([]byte, testObjectSize)
	for i := 0; i < len(data); i += BlockSize {
		pattern(uint64(i+1), data[i:i+BlockSize])
	}
	if err := s.Write(id, 0, data, 0); err != nil {
		t.Fatal(err)
	}
	if st := s.Stats(); st.AUsUsed != testObjectSize/AUSize || st.DataBlocks != testObjectSize/BlockSize {
		t.Fatalf("after full write: %+v", st)
	}
	if err := s.WriteZeroes(id, 0, testObjectSize, 0); err != nil {
		t.Fatal(err)
	}
	if st := s.Stats(); st.AUsUsed != 0 || st.DataBlocks != 0 {
		t.Fatalf("after trim: %+v", st)
	}
	if got := mustRead(t, s, id, 7); !bytes.Equal(got, make([]byte, BlockSize)) {
		t.Fatal("trimmed block not zero")
	}
	// Fill the disk: two objects fit, the third write finds no space.
	for i := uint32(1); i <= 2; i++ {
		o := ObjectID{1, i}
		if err := s.CreateObject(o, nil); err != nil {
			t.Fatal(err)
		}
		if err := s.Write(o, 0, data, 0); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Write(id, 0, data[:BlockSize], 0); !errors.Is(err, ErrNoSpace) {
		t.Fatalf("write on a full disk: %v, want ErrNoSpace", err)
	}
	if err := s.Write(id, 1, data[:BlockSize], 0); !errors.Is(err, ErrRange) {
		t.Fatalf("unaligned write: %v, want ErrRange", err)
	}
}

// Flipped bytes in a block on the disk file are a checksum error, never
// data; the other blocks still read.
func TestBitRotIsDetected(t *testing.T) {
	s, path := mustNewFileStore(t, 2)
	id := ObjectID{4, 2}
	if err := s.CreateObject(id, nil); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 8; i++ {
		if err := s.Write(id, uint64(i)*BlockSize, block(uint64(i+1)), 0); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	au := s.objects[id].aus[0]
	off := s.dataOff(au, 5) + 1234
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 2)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0x01
	b[1] ^= 0xff
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
	f.Close()
	check := func(s *Store) {
		buf := make([]byte, 8*BlockSize)
		err := s.Read(id, 0, buf)
		if !errors.Is(err, ErrChecksum) {
			t.Fatalf("read over the rotten block: %v, want ErrChecksum", err)
		}
		if !bytes.Equal(buf, make([]byte, len(buf))) {
			t.Fatal("a failed read returned data")
		}
		if err := s.Read(id, 5*BlockSize, buf[:BlockSize]); !errors.Is(err, ErrChecksum) {
			t.Fatalf("read of the rotten block: %v, want ErrChecksum", err)
		}
		if got := mustRead(t, s, id, 4); !bytes.Equal(got, block(5)) {
			t.Fatal("neighbouring block damaged")
		}
	}
	check(s)
	s = reopen(t, s, path)
	check(s)
}

func TestSuperblockRoundTrip(t *testing.T) {
	sb, err := PlanSuperblock(1<<30, FormatParams{ClusterID: "abc.def", DiskID: 101, NodeID: 7, SSD: true})
	if err != nil {
		t.Fatal(err)
	}
	got, err := ParseSuperblock(sb.Encode())
	if err != nil {
		t.Fatal(err)
	}
	if got != sb {
		t.Fatalf("round trip: %+v, want %+v", got, sb)
	}
	b := sb.Encode()
	b[100] ^= 1
	if _, err := ParseSuperblock(b); !errors.Is(err, ErrBadSuperblock) {
		t.Fatalf("corrupt superblock: %v", err)
	}
	if _, err := ParseSuperblock(make([]byte, 4096)); !errors.Is(err, ErrNoSuperblock) {
		t.Fatalf("zeros: %v", err)
	}
	if _, err := PlanSuperblock(40<<20, FormatParams{ClusterID: "c", DiskID: 1}); !errors.Is(err, ErrTooSmall) {
		t.Fatalf("40 MiB disk: %v, want ErrTooSmall", err)
	}
}

func FuzzParseSuperblock(f *testing.F) {
	sb, _ := PlanSuperblock(1<<30, FormatParams{ClusterID: "fuzz", DiskID: 1})
	f.Add(sb.Encode())
	f.Add(make([]byte, 4096))
	f.Fuzz(func(t *testing.T, b []byte) {
		got, err := ParseSuperblock(b)
		if err != nil {
			return
		}
		// What parses re-encodes to the same bytes.
		if again, err := ParseSuperblock(got.Encode()); err != nil || again != got {
			t.Fatalf("re-encode: %v %+v %+v", err, again, got)
		}
		if got.DataOff+got.NumAUs*AUSize > got.Size {
			t.Fatal("layout past the end")
		}
	})
}
