package wire

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"keel/internal/later"
)

// StartFunc with the caller's later.Queue holds the requests until the
// queue runs, then writes them together; each fn gets its own reply, on
// the connection's reader, with that reader's queue, which runs before
// the reader waits again.
func TestStartFuncQueuedUntilRun(t *testing.T) {
	h := &memHandler{objects: map[uint64][]byte{}}
	addr := startServer(t, "unix", secret, h)
	c, err := Dial(context.Background(), "unix", addr, secret, Peer{Role: "client"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	const n = 16
	type result struct {
		i   int
		err error
	}
	results := make(chan result, n)
	var q later.Queue
	reqs := make([]Request, n)
	resps := make([]Response, n)
	for i := range n {
		reqs[i] = Request{Op: OpWrite, Volume: 7, Offset: uint64(i) * 4096, Length: 4096, Data: bytes.Repeat([]byte{byte(i + 1)}, 4096), Version: uint64(i + 1)}
		err := c.StartFunc(time.Second, &reqs[i], &resps[i], &q, func(err error, rq *later.Queue) {
			if rq == nil {
				err = errors.New("completed without the reader's queue")
			} else if resps[i].Version != uint64(i+1) {
				err = errors.New("got the reply of another request")
			}
			// Work put off on the reader's queue runs too.
			rq.Add(func() { results <- result{i, err} })
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(100 * time.Millisecond)
	if got := h.calls.Load(); got != 0 {
		t.Fatalf("the server saw %d requests before the queue ran", got)
	}
	q.Run()
	for range n {
		select {
		case r := <-results:
			if r.err != nil {
				t.Fatalf("write %d: %v", r.i, r.err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("no reply 5 s after the queue ran")
		}
	}
	// Without a queue the request goes out at once; the data arrives in
	// the caller's buffer.
	buf := make([]byte, 4096)
	resp := Response{Data: buf[:0]}
	done := make(chan error, 1)
	if err := c.StartFunc(0, &Request{Op: OpRead, Volume: 7, Offset: 3 * 4096, Length: 4096}, &resp, nil, func(err error, _ *later.Queue) { done <- err }); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil || !bytes.Equal(buf, bytes.Repeat([]byte{4}, 4096)) {
		t.Fatalf("read: %v, data %x..., want block 4", err, buf[:4])
	}
}

// A started call whose connection closes gets ErrClosed in its fn, once;
// StartFunc on a closed connection fails and never calls fn.
func TestStartFuncConnectionClosed(t *testing.T) {
	h := blockingHandler{release: make(chan struct{})}
	addr := startServer(t, "unix", secret, h)
	defer close(h.release)
	c, err := Dial(context.Background(), "unix", addr, secret, Peer{Role: "client"})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 2)
	var resp Response
	if err := c.StartFunc(0, &Request{Op: OpRead, Volume: 1, Length: 4096}, &resp, nil, func(err error, _ *later.Queue) { done <- err }); err != nil {
		t.Fatal(err)
	}
	c.Close()
	if err := <-done; !errors.Is(err, ErrClosed) {
		t.Fatalf("call on a closed connection: %v, want ErrClosed", err)
	}
	err = c.StartFunc(0, &Request{Op: OpRead, Volume: 1, Length: 4096}, &resp, nil, func(err error, _ *later.Queue) { done <- err })
	if !errors.Is(err, ErrClosed) {
		t.Fatalf("StartFunc after Close: %v, want ErrClosed", err)
	}
	select {
	case err := <-done:
		t.Fatalf("fn called again (%v)", err)
	case <-time.After(100 * time.Millisecond):
	}
}
