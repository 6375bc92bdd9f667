package server

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
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
	dev, _, err := OpenDevice(path, false)
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
