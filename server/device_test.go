package server

import (
	"bytes"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

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
