package server

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"sync"
	"syscall"
	"testing"
)

// directFile opens a new file of size bytes with O_DIRECT in the test's
// temporary directory, which must allow it (tmpfs does not).
func directFile(t *testing.T, size int64) (*os.File, string) {
	t.Helper()
	path := sparseFile(t, size)
	f, err := os.OpenFile(path, os.O_RDWR|syscall.O_DIRECT, 0)
	if errors.Is(err, syscall.EINVAL) {
		if os.Getenv("CI") != "" {
			t.Fatalf("%s does not allow O_DIRECT: the test cannot reach native AIO", path)
		}
		t.Skipf("%s does not allow O_DIRECT", path)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f, path
}

// Many writers and readers at once through one ring, each in its own
// region: every read returns what its region's last write put there, and
// the file read without the ring agrees at the end.
func TestAIOMatchesTheFile(t *testing.T) {
	const (
		workers = 16
		region  = 4 << 20
		rounds  = 200
	)
	f, path := directFile(t, workers*region)
	ring, err := newAIORing()
	if err != nil {
		t.Fatal(err)
	}
	defer ring.close()
	model := make([]byte, workers*region)
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 7))
			mine := model[w*region : (w+1)*region]
			for range rounds {
				n := (1 + rng.IntN(64)) * directAlign
				off := rng.IntN((region-n)/directAlign+1) * directAlign
				if rng.IntN(2) == 0 {
					b := alignedBuf(n)
					for i := 0; i < n; i += 8 {
						binary.LittleEndian.PutUint64(b[i:], rng.Uint64())
					}
					if _, err := ring.do(int(f.Fd()), true, b, int64(w*region+off)); err != nil {
						errs <- err
						return
					}
					copy(mine[off:], b)
					continue
				}
				b := alignedBuf(n)
				if _, err := ring.do(int(f.Fd()), false, b, int64(w*region+off)); err != nil {
					errs <- err
					return
				}
				if !bytes.Equal(b, mine[off:off+n]) {
					errs <- errors.New("a read through the ring differs from the last write")
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, model) {
		t.Fatal("the file differs from what was written through the ring")
	}
}

// The kernel's refusals reach the caller, and the ring goes on working.
func TestAIOErrors(t *testing.T) {
	f, _ := directFile(t, 1<<20)
	ring, err := newAIORing()
	if err != nil {
		t.Fatal(err)
	}
	defer ring.close()
	b := alignedBuf(2 * directAlign)
	if n, err := ring.do(int(f.Fd()), false, b, 1<<20-directAlign); !errors.Is(err, io.ErrUnexpectedEOF) || n != directAlign {
		t.Fatalf("read across the end: got %d, %v; want %d, ErrUnexpectedEOF", n, err, directAlign)
	}
	if _, err := ring.do(-1, false, b, 0); !errors.Is(err, syscall.EBADF) {
		t.Fatalf("bad descriptor: got %v, want EBADF", err)
	}
	if _, err := ring.do(int(f.Fd()), true, b, 0); err != nil {
		t.Fatalf("a write after the refusals: %v", err)
	}
	ring.close()
	if _, err := ring.do(int(f.Fd()), false, b, 0); !errors.Is(err, os.ErrClosed) {
		t.Fatalf("a read after close: got %v, want os.ErrClosed", err)
	}
}

// OpenDevice uses the ring for direct I/O where the file system allows it.
func TestDirectDeviceUsesAIO(t *testing.T) {
	_, path := directFile(t, 1<<20)
	dev, _, err := OpenDevice(path, DirectIO{All: true})
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	d := dev.(*fileDevice)
	if d.aio == nil {
		t.Fatal("direct I/O does not go through native AIO")
	}
	d.setDataOffset(directAlign)
	want := bytes.Repeat([]byte{0xa5}, 3*directAlign)
	if _, err := d.WriteAt(want, directAlign); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(want)+1)[1:] // unaligned: through the bounce buffer
	if _, err := d.ReadAt(got, directAlign); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("read back differs")
	}
}
