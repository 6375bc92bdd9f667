package server

import (
	"bytes"
	"testing"
)

// A block keeps the newest version it was given: an older write or
// zeroing that arrives late (reordered on the network, or delayed past a
// recovery copy) changes nothing, so replicas that got the same requests in
// different orders hold the same bytes.
func TestOlderWritesDoNotReplaceNewerBlocks(t *testing.T) {
	s, _ := mustNewFileStore(t, 8)
	id := ObjectID{Volume: 1, Index: 0}
	if err := s.CreateObject(id, nil); err != nil {
		t.Fatal(err)
	}
	blk := func(b byte) []byte { return bytes.Repeat([]byte{b}, 2*BlockSize) }
	read := func() []byte {
		buf := make([]byte, 3*BlockSize)
		if err := s.Read(id, 0, buf); err != nil {
			t.Fatal(err)
		}
		return buf
	}
	// Version 5 over blocks 0-1, then version 3 over blocks 1-2: block 1
	// keeps version 5's bytes, block 2 takes version 3's.
	must(t, s.Write(id, 0, blk(5), 5))
	must(t, s.Write(id, BlockSize, blk(3), 3))
	want := append(bytes.Repeat([]byte{5}, 2*BlockSize), bytes.Repeat([]byte{3}, BlockSize)...)
	if got := read(); !bytes.Equal(got, want) {
		t.Fatalf("after a late older write: blocks are %v %v %v, want 5 5 3", got[0], got[BlockSize], got[2*BlockSize])
	}
	// A late zeroing older than the data leaves it; a newer one clears it.
	must(t, s.WriteZeroes(id, 0, BlockSize, 4))
	if got := read(); got[0] != 5 {
		t.Fatalf("an older zeroing cleared newer data: block 0 is %v", got[0])
	}
	must(t, s.WriteZeroes(id, 0, BlockSize, 6))
	if got := read(); got[0] != 0 || got[BlockSize] != 5 {
		t.Fatalf("a newer zeroing: blocks are %v %v, want 0 5", got[0], got[BlockSize])
	}
	// And data newer than the zeroing replaces it again.
	must(t, s.Write(id, 0, blk(7)[:BlockSize], 7))
	if got := read(); got[0] != 7 {
		t.Fatalf("newer data after a zeroing: block 0 is %v", got[0])
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
