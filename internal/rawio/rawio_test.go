package rawio

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// pair returns both ends of a loopback TCP connection, the first wrapped.
func pair(t *testing.T) (*Conn, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	peer := <-accepted
	if peer == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { c.Close(); peer.Close() })
	rc, ok := New(c).(*Conn)
	if !ok {
		t.Fatal("a TCP connection was not wrapped")
	}
	return rc, peer
}

// TestLargeTransfersBothWays sends more than the socket buffers hold, so
// that writes meet EAGAIN and wait for the poller, and reads come in
// pieces; the bytes must arrive intact and in order.
func TestLargeTransfersBothWays(t *testing.T) {
	c, peer := pair(t)
	data := make([]byte, 16<<20)
	for i := range data {
		data[i] = byte(rand.Uint32())
	}
	var wg sync.WaitGroup
	wg.Add(2)
	var got, back []byte
	var errOut, errBack error
	go func() { // peer echoes what it reads, then closes its write side
		defer wg.Done()
		got, errOut = io.ReadAll(io.LimitReader(peer, int64(len(data))))
		_, errBack = peer.Write(got)
		peer.(*net.TCPConn).CloseWrite()
	}()
	go func() {
		defer wg.Done()
		if _, err := c.Write(data[:1<<20]); err != nil {
			t.Error(err)
			return
		}
		// The rest as many buffers of odd sizes, some empty.
		var bufs [][]byte
		rest := data[1<<20:]
		for len(rest) > 0 {
			k := min(len(rest), 1+rand.IntN(70000))
			bufs = append(bufs, rest[:k], nil)
			rest = rest[k:]
		}
		n, err := c.WriteBuffers(bufs)
		if err != nil || n != int64(len(data)-1<<20) {
			t.Errorf("WriteBuffers = %d, %v; want %d", n, err, len(data)-1<<20)
		}
	}()
	var err error
	back, err = io.ReadAll(c)
	wg.Wait()
	if err != nil || errOut != nil || errBack != nil {
		t.Fatal(err, errOut, errBack)
	}
	if !bytes.Equal(got, data) || !bytes.Equal(back, data) {
		t.Fatalf("data differ: sent %d, peer got %d, came back %d", len(data), len(got), len(back))
	}
	// At the end of the stream Read says io.EOF, again and again.
	var b [1]byte
	if n, err := c.Read(b[:]); n != 0 || err != io.EOF {
		t.Fatalf("Read after the end = %d, %v; want 0, EOF", n, err)
	}
}

func TestDeadlineAndClose(t *testing.T) {
	c, _ := pair(t)
	c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	var b [8]byte
	if _, err := c.Read(b[:]); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Read past the deadline: %v; want a deadline error", err)
	}
	c.SetReadDeadline(time.Time{})
	done := make(chan error, 1)
	go func() {
		_, err := c.Read(b[:])
		done <- err
	}()
	time.Sleep(20 * time.Millisecond)
	c.Close()
	select {
	case err := <-done:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("Read during Close: %v; want net.ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not end a blocked Read")
	}
	if _, err := c.Write(b[:]); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Write after Close: %v; want net.ErrClosed", err)
	}
	if _, err := c.WriteBuffers([][]byte{b[:]}); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("WriteBuffers after Close: %v; want net.ErrClosed", err)
	}
}

func TestWriteToPeerThatLeft(t *testing.T) {
	c, peer := pair(t)
	peer.Close()
	big := make([]byte, 1<<20)
	var err error
	for range 50 { // the first writes may still land in the buffers
		if _, err = c.Write(big); err != nil {
			break
		}
	}
	if err == nil {
		t.Fatal("writes to a closed peer kept succeeding")
	}
	var op *net.OpError
	if !errors.As(err, &op) || op.Op != "write" {
		t.Fatalf("error %v is not a write *net.OpError", err)
	}
}

func TestHalfClose(t *testing.T) {
	c, peer := pair(t)
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if b, err := io.ReadAll(peer); err != nil || len(b) != 0 {
		t.Fatalf("peer read %d bytes, %v after CloseWrite; want EOF", len(b), err)
	}
	if err := c.CloseRead(); err != nil {
		t.Fatal(err)
	}
}

func TestReadCached(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f")
	data := make([]byte, 3*4096)
	for i := range data {
		data[i] = byte(i*7 + 1)
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 8192)
	n, unsupported := ReadCached(f.Fd(), buf, 4096)
	if unsupported {
		if os.Getenv("CI") != "" {
			t.Fatal("this kernel refuses RWF_NOWAIT reads; the servers fall back to blocking reads")
		}
		t.Skip("RWF_NOWAIT reads unsupported here")
	}
	// Just written, so cached: all of it.
	if n != len(buf) || !bytes.Equal(buf, data[4096:]) {
		t.Fatalf("ReadCached = %d bytes (want %d), equal %v", n, len(buf), bytes.Equal(buf[:n], data[4096:4096+n]))
	}
	// Across the end of the file: what there is.
	if n, _ := ReadCached(f.Fd(), buf, 2*4096); n != 4096 || !bytes.Equal(buf[:n], data[2*4096:]) {
		t.Fatalf("ReadCached over the end = %d, want 4096", n)
	}
	if n, _ := ReadCached(f.Fd(), buf, int64(len(data))); n != 0 {
		t.Fatalf("ReadCached at the end = %d, want 0", n)
	}
	if n, _ := ReadCached(f.Fd(), buf, -1); n != 0 {
		t.Fatalf("ReadCached at offset -1 = %d, want 0", n)
	}
	// A bad descriptor reads nothing and is not "unsupported".
	if n, unsupported := ReadCached(^uintptr(0), buf, 0); n != 0 || unsupported {
		t.Fatalf("ReadCached on a bad descriptor = %d, %v", n, unsupported)
	}
}

// TestReadCachedAfterEviction: pages dropped from the cache are not read
// (the caller reads them with a blocking call instead).
func TestReadCachedAfterEviction(t *testing.T) {
	dir := t.TempDir()
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	if st.Type == unix.TMPFS_MAGIC {
		t.Skip("tmpfs keeps its pages: nothing to evict") // CI's /tmp is a disk
	}
	path := filepath.Join(dir, "f")
	if err := os.WriteFile(path, make([]byte, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1<<20)
	if n, unsupported := ReadCached(f.Fd(), buf, 0); unsupported || n == len(buf) {
		t.Fatalf("ReadCached of evicted pages = %d bytes, unsupported %v; want a short read", n, unsupported)
	}
}

func TestWriteAt(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f")
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	data := bytes.Repeat([]byte{0xa5}, 8192)
	// Past the end of the file (and past 4 GiB): the file grows, the hole
	// before reads as zeroes.
	const off = 5<<30 + 4096
	n, err, unsupported := WriteAt(f.Fd(), data, off)
	if unsupported {
		t.Fatal("no pwritev2 here; the servers fall back to ordinary writes")
	}
	if n != len(data) || err != nil {
		t.Fatalf("WriteAt = %d, %v, want %d", n, err, len(data))
	}
	got := make([]byte, 4096+len(data))
	if _, err := f.ReadAt(got, off-4096); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got[4096:], data) || !bytes.Equal(got[:4096], make([]byte, 4096)) {
		t.Fatal("read back other bytes than WriteAt wrote")
	}
	// Errors come back as errors, not as "unsupported".
	ro, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	if n, err, unsupported := WriteAt(ro.Fd(), data, 0); n != 0 || !errors.Is(err, syscall.EBADF) || unsupported {
		t.Fatalf("WriteAt on a read-only descriptor = %d, %v, %v; want EBADF", n, err, unsupported)
	}
}

// TestNoAllocations: Read, Write and WriteBuffers run on the data path
// for every request; none of them allocates.
func TestNoAllocations(t *testing.T) {
	c, peer := pair(t)
	out := make([]byte, 4096)
	in := make([]byte, 3*len(out))
	bufs := make([][]byte, 2)
	allocs := testing.AllocsPerRun(200, func() {
		if _, err := c.Write(out); err != nil {
			t.Fatal(err)
		}
		bufs[0], bufs[1] = out, out
		if _, err := c.WriteBuffers(bufs); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(peer, in); err != nil {
			t.Fatal(err)
		}
		if _, err := peer.Write(out); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(c, in[:len(out)]); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per round, want 0", allocs)
	}
}
