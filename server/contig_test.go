package server

import (
	"bufio"
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"testing"
	"unsafe"
)

// The pool hands out distinct AU-sized buffers, each inside one 2 MiB
// aligned mapping advised as huge, never more than its limit, and takes
// them back.
func TestContigBufs(t *testing.T) {
	p := &contigBufs{limit: 4}
	var got [][]byte
	for range 4 {
		b := p.get()
		if b == nil {
			t.Fatalf("get %d of a limit of 4 returned nil", len(got)+1)
		}
		if len(b) != contigSize || cap(b) != contigSize {
			t.Fatalf("buffer of len %d cap %d, want %d", len(b), cap(b), contigSize)
		}
		if a := uintptr(unsafe.Pointer(&b[0])); a%contigSize != 0 {
			t.Fatalf("buffer at %#x is not %d aligned: it would span two huge pages", a, contigSize)
		}
		for i := range b {
			b[i] = byte(len(got))
		}
		got = append(got, b)
	}
	for i, b := range got {
		if bytes.Count(b, []byte{byte(i)}) != len(b) {
			t.Fatalf("buffer %d overlaps another", i)
		}
	}
	if b := p.get(); b != nil {
		t.Fatal("get beyond the limit returned a buffer")
	}
	p.put(got[2][:10])
	if b := p.get(); len(b) != contigSize || &b[0] != &got[2][0] {
		t.Fatal("a buffer put back is not handed out again whole")
	}
	if p.made != 4 {
		t.Fatalf("mapped %d buffers, want 4", p.made)
	}
	if thpMode(t) != "never" {
		if !thpEligible(t, uintptr(unsafe.Pointer(&got[0][0]))) {
			t.Fatal("the buffers' mapping is not eligible for transparent huge pages")
		}
	}
}

// thpMode is the system's transparent huge page mode: always, madvise or
// never.
func thpMode(t *testing.T) string {
	b, err := os.ReadFile("/sys/kernel/mm/transparent_hugepage/enabled")
	if err != nil {
		return "never"
	}
	s := string(b)
	i, j := strings.IndexByte(s, '['), strings.IndexByte(s, ']')
	if i < 0 || j < i {
		t.Fatalf("transparent_hugepage/enabled: %q", s)
	}
	return s[i+1 : j]
}

// thpEligible reports the THPeligible flag of the mapping holding addr.
func thpEligible(t *testing.T, addr uintptr) bool {
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	in := false
	for sc.Scan() {
		line := sc.Text()
		var lo, hi uintptr
		if n, _ := fmt.Sscanf(line, "%x-%x ", &lo, &hi); n == 2 {
			in = lo <= addr && addr < hi
			continue
		}
		if in && strings.HasPrefix(line, "THPeligible:") {
			return strings.TrimSpace(strings.TrimPrefix(line, "THPeligible:")) == "1"
		}
	}
	t.Fatalf("no THPeligible line for the mapping at %#x in /proc/self/smaps", addr)
	return false
}

// Large direct reads and writes, from aligned and unaligned buffers,
// through a contiguous buffer or, with the pool exhausted, without one,
// all put the same bytes on the file.
func TestDirectDeviceLargeIO(t *testing.T) {
	_, path := directFile(t, 8<<20)
	dev, _, err := OpenDevice(path, DirectIO{All: true})
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	d := dev.(*fileDevice)
	if d.contig == nil {
		t.Fatal("a direct device has no contiguous buffers")
	}
	d.setDataOffset(directAlign)
	pool := &contigBufs{limit: 2}
	exhausted := &contigBufs{limit: 0}
	for i, c := range []struct {
		pool      *contigBufs
		n         int
		unaligned bool
	}{
		{pool, contigSize, false},
		{pool, contigSize, true},
		{pool, contigFrom, true},
		{pool, contigFrom - directAlign, false},
		{exhausted, contigSize, false},
		{exhausted, contigSize, true},
	} {
		d.contig = c.pool
		off := int64(1<<20) * int64(1+i)
		want := make([]byte, c.n+1)
		if c.unaligned {
			want = want[1:]
		} else {
			want = alignedBuf(c.n)
		}
		for j := range want {
			want[j] = byte(rand.Uint32())
		}
		if _, err := d.WriteAt(want, off); err != nil {
			t.Fatalf("case %d: write: %v", i, err)
		}
		got := alignedBuf(c.n + directAlign)[:c.n]
		if c.unaligned {
			got = got[1 : c.n+1]
		}
		if _, err := d.ReadAt(got, off); err != nil {
			t.Fatalf("case %d: read: %v", i, err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("case %d: read back differs", i)
		}
		plain := make([]byte, c.n)
		if _, err := d.File.ReadAt(plain, off); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(plain, want) {
			t.Fatalf("case %d: the file holds other bytes", i)
		}
		if len(c.pool.free) != c.pool.made {
			t.Fatalf("case %d: %d of %d buffers back in the pool", i, len(c.pool.free), c.pool.made)
		}
	}
	if pool.made == 0 {
		t.Fatal("no large I/O went through a contiguous buffer")
	}
}
