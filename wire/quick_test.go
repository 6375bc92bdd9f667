package wire

import (
	"bufio"
	"bytes"
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
		Quick: func(p Peer, r *Request, resp *Response, alone bool) bool { return r.Op == OpRead }})
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

// A quick reply is sent when the reader goes on to wait for the rest of a
// write's payload (found by review: it stayed queued until the whole
// write had arrived, and a sender waiting for the reply before sending the
// rest would wait for ever).
func TestQuickReplySentWhileAPayloadArrives(t *testing.T) {
	h := &memHandler{objects: map[uint64][]byte{}}
	addr := startServer(t, "unix", secret, h, func(p Peer, r *Request, resp *Response, alone bool) bool {
		if r.Op != OpRead {
			return false
		}
		h.ServeWire(p, r, resp)
		return true
	})
	conn, err := net.Dial("unix", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := clientHandshake(conn, secret, Peer{Role: "client"}); err != nil {
		t.Fatal(err)
	}
	frames := EncodeRequest(nil, &Request{Op: OpRead, ID: 1, Length: 4096})
	write := &Request{Op: OpWrite, ID: 2, Length: 64 << 10, Data: bytes.Repeat([]byte{7}, 64<<10), Version: 1}
	frames = EncodeRequest(frames, write)
	half := len(frames) - len(write.Data)/2
	if _, err := conn.Write(frames[:half]); err != nil {
		t.Fatal(err)
	}
	conn.SetReadDeadline(time.Now().Add(2 * time.Second))
	var resp Response
	br := bufio.NewReader(conn)
	if err := ReadResponse(br, &resp); err != nil {
		t.Fatalf("reply of the READ, sent before the rest of the WRITE: %v", err)
	}
	if resp.ID != 1 || resp.Status != StatusOK || len(resp.Data) != 4096 {
		t.Fatalf("reply %d status %d with %d bytes, want 1, OK, 4096", resp.ID, resp.Status, len(resp.Data))
	}
	if _, err := conn.Write(frames[half:]); err != nil {
		t.Fatal(err)
	}
	if err := ReadResponse(br, &resp); err != nil || resp.ID != 2 || resp.Status != StatusOK {
		t.Fatalf("reply of the WRITE: %v, id %d, status %d", err, resp.ID, resp.Status)
	}
}
