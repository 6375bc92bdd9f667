package nbd

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"testing"
	"time"

	"keel/internal/testbin"
)

// TestKernelDevice connects an export to /dev/nbdX over netlink, writes
// through the device and reads the data back from the backend. Kernels
// without the nbd driver skip it.
func TestKernelDevice(t *testing.T) {
	k, err := OpenKernel()
	if errors.Is(err, ErrNoKernelNBD) {
		t.Skipf("kernel has no nbd driver: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer k.Close()
	testbin.NeedRoot(t)
	mem := NewMemory(Info{Size: 16 << 20})
	ts := mustServe(t, false, map[string]Backend{"disk": mem})
	e, _ := ts.Export("disk")
	idx, err := k.Connect(ts.Server, e, -1, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	dev := fmt.Sprintf("/dev/nbd%d", idx)
	defer func() {
		if err := k.Disconnect(idx); err != nil {
			t.Error(err)
		}
		waitFor(t, "kernel connection to end", func() bool { return e.Conns() == 0 })
	}()
	if e.Conns() != 1 {
		t.Fatalf("connections %d, want 1", e.Conns())
	}
	want := bytes.Repeat([]byte("kernel!!"), 8192)
	f, err := os.OpenFile(dev, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(want, 1<<20); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	got := make([]byte, len(want))
	if err := mem.ReadAt(context.Background(), got, 1<<20); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("data written through %s did not reach the backend (%v)", dev, err)
	}
}

// TestKernelProbeHere documents what this machine has: the probe either
// finds the driver or says it is missing, never anything else.
func TestKernelProbeHere(t *testing.T) {
	k, err := OpenKernel()
	if err == nil {
		k.Close()
		return
	}
	if !errors.Is(err, ErrNoKernelNBD) {
		t.Fatalf("probe of the kernel nbd driver: %v", err)
	}
}
