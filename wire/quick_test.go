package wire

import (
	"context"
	"log/slog"
	"net"
	"path/filepath"
	"testing"
	"time"
)

type slowHandler struct{ release chan struct{} }

func (h *slowHandler) ServeWire(p Peer, req *Request, resp *Response) {
	if req.Op == OpFlush {
		<-h.release
	}
}

// A quick reply queued while the next request's header is buffered is
// sent even when the reader then waits for a busy worker to take that
// request (found by review: it waited for the worker).
func TestQuickReplySentWhileWorkersAreBusy(t *testing.T) {
	h := &slowHandler{release: make(chan struct{})}
	defer close(h.release)
	addr := filepath.Join(t.TempDir(), "s")
	ln, err := net.Listen("unix", addr)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go Serve(ctx, ln, ServerConfig{Secret: secret, Self: Peer{NodeID: 1, Role: "server"}, Handler: h, Concurrency: 1,
		Log:   slog.New(slog.DiscardHandler),
		Quick: func(p Peer, r *Request, resp *Response) bool { return r.Op == OpRead }})
	c, err := Dial(context.Background(), "unix", addr, secret, Peer{Role: "client"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var r0, r1, r2 Response
	a, _ := c.Start(0, &Request{Op: OpFlush}, &r0) // occupies the only worker
	_ = a
	time.Sleep(50 * time.Millisecond)
	// Q (quick) and B (slow) in one socket write.
	c.out.mu.Lock()
	c.out.writing = true
	c.out.mu.Unlock()
	q, _ := c.Start(0, &Request{Op: OpRead, Length: 4096}, &r1)
	c.Start(0, &Request{Op: OpFlush}, &r2)
	c.out.mu.Lock()
	c.out.write(0)
	done := make(chan error, 1)
	go func() { done <- q.Wait(context.Background()) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("quick READ reply not sent after 2s: queued while the reader blocks on work <- ex")
	}
}
