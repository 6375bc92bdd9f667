package server

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"keel/mgmt/apiclient"
	"keel/wire"
)

// An I/O error stops the disk: requests answer StatusDiskFailed, the disk
// is no longer registered, and mgmt is asked to eject it.
func TestFailedDiskIsEjected(t *testing.T) {
	dev := newCrashDevice(mustFormat(t, crashObjectSize, 0))
	st, err := Open(dev)
	if err != nil {
		t.Fatal(err)
	}
	id := ObjectID{1, 0}
	if err := st.CreateObject(id, nil); err != nil {
		t.Fatal(err)
	}
	calls := make(chan string, 4)
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls <- r.Method + " " + r.URL.Path
		w.Write([]byte(`{"generation":1,"data":{"ok":true}}`))
	}))
	defer api.Close()
	srv, err := NewServer(slog.New(slog.DiscardHandler), nil, map[string]*Store{"mem": st})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go srv.watchFailure(ctx, apiclient.New(api.URL, "tok"), 1, st)

	dev.mu.Lock()
	dev.ops = 0 // the next write or sync fails
	dev.mu.Unlock()
	var resp wire.Response
	srv.ServeWire(wire.Peer{}, &wire.Request{Op: wire.OpWrite, Disk: 1, Volume: 1, Length: BlockSize, Data: make([]byte, BlockSize), Flags: wire.FlagFUA}, &resp)
	if resp.Status != wire.StatusDiskFailed {
		t.Fatalf("write on a failing disk: status %d %s", resp.Status, resp.Data)
	}
	resp = wire.Response{}
	srv.ServeWire(wire.Peer{}, &wire.Request{Op: wire.OpRead, Disk: 1, Volume: 1, Length: BlockSize}, &resp)
	if resp.Status != wire.StatusDiskFailed {
		t.Fatalf("read on a failed disk: status %d", resp.Status)
	}
	select {
	case c := <-calls:
		if c != "POST /ctrl/1.0/DiskEject/1" {
			t.Fatalf("mgmt got %q, want POST DiskEject/1", c)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("mgmt was not asked to eject the disk")
	}
	if err := srv.registerOnce(ctx, Options{Mgmt: apiclient.New(api.URL, "tok"), NodeID: 3}, "", 0); err != nil {
		t.Fatal(err)
	}
	if c := <-calls; c != "POST /ctrl/1.0/ServiceHeartbeat" {
		t.Fatalf("heartbeat went to %q", c)
	}
	select {
	case c := <-calls:
		t.Fatalf("a failed disk was registered again: %s", c)
	default:
	}
}

// stuckDevice blocks reads until released, like a hung drive.
type stuckDevice struct {
	*crashDevice
	stuck   chan struct{}
	release chan struct{}
}

func (d *stuckDevice) ReadAt(b []byte, off int64) (int, error) {
	select {
	case <-d.stuck:
		<-d.release
	default:
	}
	return d.crashDevice.ReadAt(b, off)
}

// An I/O that does not complete within the timeout fails the store (and so
// ejects the disk) while the I/O is still hanging.
func TestHungDiskFailsAfterTimeout(t *testing.T) {
	dev := &stuckDevice{crashDevice: newCrashDevice(mustFormat(t, crashObjectSize, 0)), stuck: make(chan struct{}), release: make(chan struct{})}
	st, err := Open(dev)
	if err != nil {
		t.Fatal(err)
	}
	id := ObjectID{1, 0}
	if err := st.CreateObject(id, nil); err != nil {
		t.Fatal(err)
	}
	if err := st.Write(id, 0, make([]byte, BlockSize), 0); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go st.Watch(ctx, 200*time.Millisecond)
	close(dev.stuck)
	done := make(chan error, 1)
	go func() { done <- st.Read(id, 0, make([]byte, BlockSize)) }()
	select {
	case <-st.Failed():
	case <-time.After(10 * time.Second):
		t.Fatal("a hung read did not fail the store")
	}
	if err := st.Write(id, BlockSize, make([]byte, BlockSize), 0); !errors.Is(err, ErrFailed) {
		t.Fatalf("write after the timeout: %v, want ErrFailed", err)
	}
	close(dev.release)
	<-done
}

// The background flush makes writes durable without a client FLUSH.
func TestBackgroundFlush(t *testing.T) {
	dev := newCrashDevice(mustFormat(t, crashObjectSize, 0))
	st, err := Open(dev)
	if err != nil {
		t.Fatal(err)
	}
	id := ObjectID{1, 0}
	if err := st.CreateObject(id, nil); err != nil {
		t.Fatal(err)
	}
	data := make([]byte, BlockSize)
	pattern(42, data)
	if err := st.Write(id, 0, data, 0); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go st.Persist(ctx, 0, 20*time.Millisecond, func(err error) { t.Error(err) })
	deadline := time.Now().Add(20 * time.Second)
	for {
		st.flushMu.Lock() // no flush half done while we look
		dev.mu.Lock()
		pending := len(dev.pending)
		dev.mu.Unlock()
		st.mu.Lock()
		dirty := len(st.dirtyAU) + len(st.dirtyObj)
		st.mu.Unlock()
		if pending == 0 && dirty == 0 {
			cancel()
			st.flushMu.Unlock()
			break
		}
		st.flushMu.Unlock()
		if time.Now().After(deadline) {
			t.Fatal("the background flush did not run")
		}
		time.Sleep(10 * time.Millisecond)
	}
	s2, err := Open(newCrashDevice(dev.powerLoss(rand.New(rand.NewPCG(1, 1)), 0)))
	if err != nil {
		t.Fatal(err)
	}
	got := make([]byte, BlockSize)
	if err := s2.Read(id, 0, got); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("after power loss: %v", err)
	}
}

// The background checkpoint keeps writes across a crash of the process,
// without flushing them.
func TestBackgroundCheckpoint(t *testing.T) {
	dev := newCrashDevice(mustFormat(t, crashObjectSize, 0))
	st, id := mustOpenWithObject(t, dev)
	if err := st.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := st.Write(id, 0, block(42), 0); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go st.Persist(ctx, 20*time.Millisecond, 0, func(err error) { t.Error(err) })
	deadline := time.Now().Add(20 * time.Second)
	for {
		st.flushMu.Lock() // no checkpoint half done while we look
		st.mu.Lock()
		done := len(st.ckptAU)+len(st.ckptObj) == 0
		st.mu.Unlock()
		st.flushMu.Unlock()
		if done {
			cancel()
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the background checkpoint did not run")
		}
		time.Sleep(10 * time.Millisecond)
	}
	rng := rand.New(rand.NewPCG(1, 1))
	s2, err := open(newCrashDevice(dev.powerLoss(rng, 1)), testBoot)
	if err != nil {
		t.Fatal(err)
	}
	if got, ok := contentID(mustRead(t, s2, id, 0)); !ok || got != 42 {
		t.Fatalf("after a crash of the process: block reads %d, want 42", got)
	}
	// Nothing was flushed: after a power loss the block is as it was.
	s3, err := open(newCrashDevice(dev.powerLoss(rng, 0)), testRebooted)
	if err != nil {
		t.Fatal(err)
	}
	if got := mustRead(t, s3, id, 0); !bytes.Equal(got, make([]byte, BlockSize)) {
		t.Fatal("after a power loss: the checkpointed block was flushed")
	}
}
