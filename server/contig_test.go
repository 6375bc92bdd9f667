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
// them back. Where the kernel gives no huge pages the process's pool is
// empty.
func TestContigBufs(t *testing.T) {
	if thpLimit() == 0 {
		if contig.get() != nil {
			t.Fatal("without transparent huge pages the pool hands out buffers")
		}
		return
	}
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
	// Kernels before 5.x have no THPeligible line; then there is nothing
	// to check.
	if ok, found := thpEligible(t, uintptr(unsafe.Pointer(&got[0][0]))); found && !ok {
		t.Fatal("the buffers' mapping is not eligible for transparent huge pages")
	}
}

// thpEligible reports the THPeligible flag of the mapping holding addr,
// and whether /proc/self/smaps has one.
func thpEligible(t *testing.T, addr uintptr) (eligible, found bool) {
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
			return strings.TrimSpace(strings.TrimPrefix(line, "THPeligible:")) == "1", true
		}
	}
	return false, false
}

// Large direct reads and writes, from aligned and unaligned buffers,
// through a contiguous buffer or, with the pool exhausted, without one,
// all put the same bytes on the file, exactly in their range, and report
// their length; a read that ends at the end of the file returns the file's
// bytes only.
func TestDirectDeviceLargeIO(t *testing.T) {
	const size = 16 << 20
	f, path := directFile(t, size)
	fill := alignedBuf(size)
	for i := range fill {
		fill[i] = byte(i/BlockSize) | 0x80
	}
	if _, err := f.WriteAt(fill, 0); err != nil {
		t.Fatal(err)
	}
	dev, _, err := OpenDevice(path, DirectIO{All: true})
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	d := dev.(*fileDevice)
	if d.contig != contig {
		t.Fatal("a direct device does not use the process's contiguous buffers")
	}
	d.setDataOffset(directAlign)
	huge := thpLimit() > 0
	pool := &contigBufs{limit: 2}
	small := &contigBufs{limit: 2}
	exhausted := &contigBufs{limit: 0}
	// on reads the file at off through the direct descriptor.
	on := func(off int64, n int) []byte {
		b := alignedBuf(n)
		if _, err := d.direct.ReadAt(b, off); err != nil {
			t.Fatal(err)
		}
		return b
	}
	for i, c := range []struct {
		pool      *contigBufs
		n         int
		unaligned bool
	}{
		{pool, contigSize, false},
		{pool, contigSize, true},
		{pool, contigFrom, true},
		{small, contigFrom - directAlign, false},
		{exhausted, contigSize, false},
		{exhausted, contigSize, true},
	} {
		d.contig = c.pool
		off := int64(2<<20)*int64(i) + BlockSize // apart, each with a neighbour on both sides
		want := make([]byte, c.n+1)
		if c.unaligned {
			want = want[1:]
		} else {
			want = alignedBuf(c.n)
		}
		for j := range want {
			want[j] = byte(rand.Uint32())
		}
		if n, err := d.WriteAt(want, off); err != nil || n != c.n {
			t.Fatalf("case %d: write: %d bytes, %v; want %d", i, n, err, c.n)
		}
		got := alignedBuf(c.n + directAlign)[:c.n]
		if c.unaligned {
			got = got[1 : c.n+1]
		}
		if n, err := d.ReadAt(got, off); err != nil || n != c.n {
			t.Fatalf("case %d: read: %d bytes, %v; want %d", i, n, err, c.n)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("case %d: read back differs", i)
		}
		if !bytes.Equal(on(off, c.n), want) {
			t.Fatalf("case %d: the file holds other bytes", i)
		}
		end := off + int64(c.n)
		if !bytes.Equal(on(off-BlockSize, BlockSize), fill[off-BlockSize:off]) || !bytes.Equal(on(end, BlockSize), fill[end:end+BlockSize]) {
			t.Fatalf("case %d: the write changed bytes beside its range", i)
		}
		if len(c.pool.free) != c.pool.made {
			t.Fatalf("case %d: %d of %d buffers back in the pool", i, len(c.pool.free), c.pool.made)
		}
	}
	if small.made != 0 {
		t.Fatalf("an I/O of %d bytes, below %d, took a contiguous buffer", contigFrom-directAlign, contigFrom)
	}
	if used := pool.made > 0; used != huge {
		t.Fatalf("large I/O through a contiguous buffer: %v; transparent huge pages: %v", used, huge)
	}

	// A read past the end of the file: the pool's buffer holds another
	// I/O's bytes, which must not reach the caller.
	d.contig = pool
	tail := 128 << 10
	got := bytes.Repeat([]byte{0xee}, 2*tail)
	n, err := d.ReadAt(got, size-int64(tail))
	if err == nil || n != tail {
		t.Fatalf("read across the end of the file: %d bytes, %v; want %d and an error", n, err, tail)
	}
	if !bytes.Equal(got[:tail], fill[size-tail:]) || bytes.Count(got[tail:], []byte{0xee}) != tail {
		t.Fatal("a read across the end of the file returned bytes beyond what it read")
	}
}
