package server

import (
	"bytes"
	"encoding/binary"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"keel/wire"
)

// A buffered device reads from the page cache by raw system call and
// reads what is not cached, here pages evicted on purpose, with an
// ordinary read; either way the bytes are the file's, and a read over
// the end of the file says so.
func TestBufferedDeviceReadsCachedAndEvicted(t *testing.T) {
	path := filepath.Join(t.TempDir(), "disk")
	want := make([]byte, 1<<20)
	for i := range want {
		want[i] = byte(i*31 + i>>12)
	}
	if err := os.WriteFile(path, want, 0o600); err != nil {
		t.Fatal(err)
	}
	dev, _, err := OpenDevice(path, DirectIO{})
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	d := dev.(*fileDevice)
	if d.raw == nil {
		t.Fatal("the buffered descriptor has no raw access")
	}
	got := make([]byte, len(want))
	check := func(what string) {
		t.Helper()
		clear(got)
		if n, err := d.ReadAt(got, 0); n != len(got) || err != nil {
			t.Fatalf("%s: ReadAt = %d, %v", what, n, err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("%s: read back differs", what)
		}
	}
	check("cached")
	if d.noCached.Load() {
		t.Fatal("cached reads were refused on this file system")
	}
	if err := d.Sync(); err != nil {
		t.Fatal(err)
	}
	// Evict the second half only: the read is part raw, part ordinary.
	if err := unix.Fadvise(int(d.Fd()), int64(len(want)/2), 0, unix.FADV_DONTNEED); err != nil {
		t.Fatal(err)
	}
	check("half evicted")
	if err := unix.Fadvise(int(d.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
		t.Fatal(err)
	}
	check("evicted")
	n, err := d.ReadAt(got[:8192], int64(len(want)-4096))
	if n != 4096 || err != io.EOF {
		t.Fatalf("ReadAt over the end = %d, %v; want 4096, EOF", n, err)
	}
	d.Close()
	if _, err := d.ReadAt(got[:4096], 0); err == nil {
		t.Fatal("ReadAt after Close succeeded")
	}
}

// The reader of a connection serves a read itself (ServeQuick) only when
// the page cache holds all of it, through the parent chain; otherwise a
// worker serves it, and the response is left as it was. Direct I/O disks
// never serve quick.
func TestServeQuickOnlyFromTheCache(t *testing.T) {
	st, _ := newFileStore(t, 4, false)
	srv, err := NewServer(slog.New(slog.DiscardHandler), nil, map[string]*Store{"d": st})
	if err != nil {
		t.Fatal(err)
	}
	disk := st.Superblock().DiskID
	parent, child := ObjectID{Volume: 1}, ObjectID{Volume: 2}
	if err := st.CreateObject(parent, nil); err != nil {
		t.Fatal(err)
	}
	if err := st.CreateObject(child, &parent); err != nil {
		t.Fatal(err)
	}
	want := make([]byte, 2*BlockSize)
	pattern(7, want[:BlockSize])
	pattern(8, want[BlockSize:])
	// Block 0 from the parent, block 1 the child's own.
	if err := st.Write(parent, 0, want[:BlockSize], 0); err != nil {
		t.Fatal(err)
	}
	if err := st.Write(child, BlockSize, want[BlockSize:], 0); err != nil {
		t.Fatal(err)
	}
	read := func() (*wire.Response, bool) {
		req := &wire.Request{Op: wire.OpRead, Disk: disk, Volume: child.Volume, Length: uint32(len(want))}
		resp := &wire.Response{}
		return resp, srv.ServeQuick(wire.Peer{}, req, resp, true)
	}
	if resp, ok := read(); !ok || resp.Status != wire.StatusOK || !bytes.Equal(resp.Data, want) {
		t.Fatalf("cached read: served %v, status %d, data equal %v", ok, resp.Status, bytes.Equal(resp.Data, want))
	}
	if err := st.Flush(); err != nil {
		t.Fatal(err)
	}
	f := st.dev.(*timedDevice).Device.(*fileDevice)
	if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
		t.Fatal(err)
	}
	if resp, ok := read(); ok || resp.Status != wire.StatusOK || len(resp.Data) != 0 {
		t.Fatalf("read of evicted data: served %v, status %d, %d bytes; want a worker to serve it", ok, resp.Status, len(resp.Data))
	}
	got := make([]byte, len(want))
	if err := st.Read(child, 0, got); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("Read: %v, data equal %v", err, bytes.Equal(got, want))
	}
	if resp, ok := read(); !ok || !bytes.Equal(resp.Data, want) {
		t.Fatalf("read once cached again: served %v", ok)
	}
	// A write holding the stripe of the child's block 1 (or a metadata
	// change holding the gate) sends the read to a worker too.
	st.mu.Lock()
	inc := st.objects[child].inc
	st.mu.Unlock()
	stripe := st.stripeOf(inc, 0)
	stripe.Lock()
	_, ok := read()
	stripe.Unlock()
	if ok {
		t.Fatal("a read was served quick while a write held its stripe")
	}
	st.gate.Lock()
	_, ok = read()
	st.gate.Unlock()
	if ok {
		t.Fatal("a read was served quick while the gate was held")
	}
	// A small buffered write is served quick, with requests behind it or
	// not, until one is slow (here: it waits for a flush's gate): then,
	// for a while, only a write with nothing behind it is.
	wreq := &wire.Request{Op: wire.OpWrite, Disk: disk, Volume: child.Volume, Offset: BlockSize, Length: BlockSize, Data: want[BlockSize:]}
	if resp := (&wire.Response{}); !srv.ServeQuick(wire.Peer{}, wreq, resp, false) || resp.Status != wire.StatusOK {
		t.Fatalf("a write with requests behind it: not served quick, or status %d", resp.Status)
	}
	st.gate.Lock()
	go func() {
		time.Sleep(3 * slowQuickWrite)
		st.gate.Unlock()
	}()
	if resp := (&wire.Response{}); !srv.ServeQuick(wire.Peer{}, wreq, resp, false) || resp.Status != wire.StatusOK {
		t.Fatalf("a write waiting for the gate: not served, or status %d", resp.Status)
	}
	if srv.ServeQuick(wire.Peer{}, wreq, &wire.Response{}, false) {
		t.Fatal("a write with requests behind it was served quick right after a slow one")
	}
	if resp := (&wire.Response{}); !srv.ServeQuick(wire.Peer{}, wreq, resp, true) || resp.Status != wire.StatusOK {
		t.Fatalf("a write alone after a slow one: not served quick, or status %d", resp.Status)
	}
	// FUA writes wait for the device: never quick.
	fua := &wire.Request{Op: wire.OpWrite, Flags: wire.FlagFUA, Disk: disk, Volume: child.Volume, Length: BlockSize, Data: want[:BlockSize]}
	if srv.ServeQuick(wire.Peer{}, fua, &wire.Response{}, true) {
		t.Fatal("a FUA write was served quick")
	}

	direct, _ := newFileStore(t, 4, true)
	if direct.cached {
		t.Skip("no O_DIRECT on this file system")
	}
	dsrv, err := NewServer(slog.New(slog.DiscardHandler), nil, map[string]*Store{"d": direct})
	if err != nil {
		t.Fatal(err)
	}
	if err := direct.CreateObject(parent, nil); err != nil {
		t.Fatal(err)
	}
	req := &wire.Request{Op: wire.OpRead, Disk: direct.Superblock().DiskID, Volume: parent.Volume, Length: BlockSize}
	if dsrv.ServeQuick(wire.Peer{}, req, &wire.Response{}, true) {
		t.Fatal("a direct I/O disk served a read quick")
	}
}

// A buffered device leaves no large folios in the page cache: writes go
// to the kernel in pieces of cachedPiece, and reads bring in single pages
// (no read-ahead). A small write into a large folio walks all its buffer
// heads, which made random writes a quarter slower on a volume written
// sequentially before. Beside the device, a plain descriptor shows what
// the kernel does otherwise: where it makes large folios, the check has
// something to tell apart.
func TestBufferedDeviceKeepsFoliosSmall(t *testing.T) {
	const mib = 1 << 20
	dev, path := openSparse(t, 16*mib, DirectIO{})
	plain, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	data := bytes.Repeat([]byte{0x5a}, mib)
	limit := cachedPiece / os.Getpagesize()

	// Writes: the plain descriptor at 0, the device at 1 MiB.
	if _, err := plain.WriteAt(data, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := dev.WriteAt(data, mib); err != nil {
		t.Fatal(err)
	}
	control := largestFolio(t, path, 0, mib)
	t.Logf("largest folio of a plain 1 MiB write: %d pages", control)
	if control <= limit {
		t.Skipf("this kernel makes no large folios for writes to this file system (%d pages at most): nothing to tell apart", control)
	}
	if got := largestFolio(t, path, mib, mib); got > limit {
		t.Errorf("a 1 MiB device write left a folio of %d pages, want at most %d", got, limit)
	}

	// Sequential reads of evicted data: the device from 8 MiB, then the
	// plain descriptor from 12 (whose read-ahead grows its folios as it
	// goes, and would reach into the device's range were it first).
	if _, err := plain.WriteAt(bytes.Repeat(data, 8), 8*mib); err != nil {
		t.Fatal(err)
	}
	if err := dev.Sync(); err != nil {
		t.Fatal(err)
	}
	if err := unix.Fadvise(int(plain.Fd()), 8*mib, 8*mib, unix.FADV_DONTNEED); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, mib)
	for i := int64(0); i < 4; i++ {
		if _, err := dev.ReadAt(buf, (8+i)*mib); err != nil {
			t.Fatal(err)
		}
	}
	for i := int64(0); i < 4; i++ {
		if _, err := plain.ReadAt(buf, (12+i)*mib); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("largest folio of plain sequential reads: %d pages", largestFolio(t, path, 12*mib, 4*mib))
	if got := largestFolio(t, path, 8*mib, 4*mib); got > 1 {
		t.Errorf("sequential device reads brought in a folio of %d pages, want single pages", got)
	}
}

// sparseFile creates a sparse file of size bytes in the test's temporary
// directory and returns its path.
func sparseFile(t *testing.T, size int64) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "disk")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(path, size); err != nil {
		t.Fatal(err)
	}
	return path
}

// openSparse opens a device on a new sparse file of size bytes; the test
// closes it.
func openSparse(t *testing.T, size int64, dio DirectIO) (Device, string) {
	t.Helper()
	path := sparseFile(t, size)
	dev, _, err := OpenDevice(path, dio)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dev.Close() })
	return dev, path
}

var pageSink byte

// needPageFrames fails the test under CI, which runs as root with every
// capability, and skips it elsewhere: page frame numbers and flags need
// CAP_SYS_ADMIN.
func needPageFrames(t *testing.T, why string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s: CI runs as root with CAP_SYS_ADMIN", why)
	}
	t.Skipf("%s (needs CAP_SYS_ADMIN)", why)
}

// largestFolio maps n bytes of the file at off and returns the most pages
// one folio of its page cache holds there, from the page frame numbers in
// /proc/self/pagemap and the compound page flags in /proc/kpageflags
// (both readable by root only).
func largestFolio(t *testing.T, path string, off, n int64) int {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	m, err := unix.Mmap(int(f.Fd()), off, int(n), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(m)
	// Faults must not read ahead: that would make folios of their own.
	if err := unix.Madvise(m, unix.MADV_RANDOM); err != nil {
		t.Fatal(err)
	}
	pageSize := os.Getpagesize()
	for i := 0; i < len(m); i += pageSize {
		pageSink += m[i] // map every page
	}
	pagemap, err := os.Open("/proc/self/pagemap")
	if err != nil {
		t.Fatal(err)
	}
	defer pagemap.Close()
	kflags, err := os.Open("/proc/kpageflags")
	if err != nil {
		needPageFrames(t, err.Error())
	}
	defer kflags.Close()
	const (
		present      = 1 << 63
		pfnMask      = 1<<55 - 1
		compoundHead = 1 << 15
		compoundTail = 1 << 16
	)
	entry := make([]byte, 8)
	largest, run := 0, 0
	for i := 0; i < len(m); i += pageSize {
		va := uintptr(unsafe.Pointer(&m[i]))
		if _, err := pagemap.ReadAt(entry, int64(va/uintptr(pageSize))*8); err != nil {
			t.Fatal(err)
		}
		e := binary.LittleEndian.Uint64(entry)
		if e&present == 0 {
			t.Fatalf("page %d of the mapping is not present", i/pageSize)
		}
		pfn := e & pfnMask
		if pfn == 0 {
			needPageFrames(t, "/proc/self/pagemap hides page frame numbers")
		}
		if _, err := kflags.ReadAt(entry, int64(pfn)*8); err != nil {
			t.Fatal(err)
		}
		switch flags := binary.LittleEndian.Uint64(entry); {
		case flags&compoundTail != 0 && run > 0:
			run++
		default:
			run = 1
		}
		largest = max(largest, run)
	}
	return largest
}

// With large writes direct and the rest buffered, the two paths meet on
// one file: a direct write drops the cached pages of its range (small
// buffered writes before it included), what is read next is always the
// newest write, and a read that misses the cache brings in its aligned
// readAround span, so data written direct is cached again once read.
func TestLargeWritesDirectOthersCached(t *testing.T) {
	const mib = 1 << 20
	dev, path := openSparse(t, 4*mib, DirectIO{WritesFrom: 256 << 10})
	d := dev.(*fileDevice)
	var fs unix.Statfs_t
	if err := unix.Statfs(path, &fs); err != nil {
		t.Fatal(err)
	}
	if d.direct == nil || fs.Type == unix.TMPFS_MAGIC { // tmpfs takes O_DIRECT from Linux 6.6, into its cache
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s has no O_DIRECT past the page cache: CI's temporary directory must (as for the AIO tests)", path)
		}
		t.Skip("no O_DIRECT past the page cache on this file system")
	}
	if !d.cached() {
		t.Fatal("reads of a device with only large writes direct are not cached")
	}
	d.setDataOffset(mib)
	const at = 2 * mib // an AU of the data region
	fill := func(b byte) []byte {
		p := alignedBuf(mib)
		for i := range p {
			p[i] = b + byte(i>>12)
		}
		return p
	}
	cachedAt := func(off int64, n int) int { return residentBytes(t, path, off, n) }
	check := func(what string, off int64, want []byte) {
		t.Helper()
		got := make([]byte, len(want))
		if _, err := dev.ReadAt(got, off); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("%s: read %x..., want %x...", what, got[:8], want[:8])
		}
	}

	// A small write is cached; a large write over it replaces it on the
	// device and drops it from the cache.
	small := bytes.Repeat([]byte{0xee}, BlockSize)
	if _, err := dev.WriteAt(small, at+8*BlockSize); err != nil {
		t.Fatal(err)
	}
	if n := cachedAt(at+8*BlockSize, BlockSize); n != BlockSize {
		t.Fatalf("a small write is not cached (%d bytes)", n)
	}
	large := fill(1)
	if _, err := dev.WriteAt(large, at); err != nil {
		t.Fatal(err)
	}
	if n := cachedAt(at, mib); n != 0 {
		t.Fatalf("%d bytes of a large write's range are cached after it", n)
	}
	// Read-around: one block brings in its aligned span.
	check("a block of the large write", at+20*BlockSize, large[20*BlockSize:21*BlockSize])
	span := int64(at+20*BlockSize) &^ (readAround - 1)
	deadline := time.Now().Add(10 * time.Second)
	for cachedAt(span, readAround) < readAround {
		if time.Now().After(deadline) {
			t.Fatalf("a read that missed the cache did not bring in its %d KiB span (%d bytes cached)", readAround>>10, cachedAt(span, readAround))
		}
		time.Sleep(10 * time.Millisecond)
	}
	check("the large write", at, large)

	// A small write into a range written direct, then a large one over
	// both: each read returns the newest.
	if _, err := dev.WriteAt(small, at+9*BlockSize); err != nil {
		t.Fatal(err)
	}
	want := append([]byte(nil), large...)
	copy(want[9*BlockSize:], small)
	check("a small write over a large one", at, want)
	again := fill(7)
	if _, err := dev.WriteAt(again, at); err != nil {
		t.Fatal(err)
	}
	check("a large write over a cached small one", at, again)

	// The large writes reached the device itself: a descriptor of its own
	// with O_DIRECT reads them.
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_DIRECT, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	got := alignedBuf(mib)
	if _, err := f.ReadAt(got, at); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, again) {
		t.Fatal("the device does not hold the last large write")
	}
}

// residentBytes counts the bytes of the file's n bytes at off that the
// page cache holds, by mincore on a mapping, which unlike a read with
// RWF_NOWAIT does not start reading what is missing.
func residentBytes(t *testing.T, path string, off int64, n int) int {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	m, err := unix.Mmap(int(f.Fd()), off, n, unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(m)
	pageSize := os.Getpagesize()
	vec := make([]byte, (n+pageSize-1)/pageSize)
	if _, _, errno := syscall.Syscall(syscall.SYS_MINCORE, uintptr(unsafe.Pointer(&m[0])), uintptr(len(m)), uintptr(unsafe.Pointer(&vec[0]))); errno != 0 {
		t.Fatal(errno)
	}
	resident := 0
	for _, v := range vec {
		if v&1 != 0 {
			resident += pageSize
		}
	}
	return resident
}
