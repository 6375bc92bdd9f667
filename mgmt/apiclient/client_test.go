package apiclient

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"

	"keel/internal/freeport"
)

// deadURL is an address where nothing listens (connection refused): a
// port that neither the kernel nor freeport hands out again soon.
func deadURL(t *testing.T) string {
	t.Helper()
	addr, err := freeport.Addr()
	if err != nil {
		t.Fatal(err)
	}
	return "http://" + addr
}

func TestFailoverToAnotherNode(t *testing.T) {
	var hits atomic.Int32
	live := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		if r.Header.Get("Authorization") != "Storpool v1:tok" {
			w.WriteHeader(401)
			w.Write([]byte(`{"error":{"name":"authError","descr":"bad token"}}`))
			return
		}
		w.Write([]byte(`{"generation":3,"data":{"x":1}}`))
	}))
	defer live.Close()
	dead := deadURL(t)
	c := New(dead+", "+live.URL+"/", "tok")
	if c.BaseURL != dead || len(c.Others) != 1 || c.Others[0] != live.URL {
		t.Fatalf("New parsed %q %v", c.BaseURL, c.Others)
	}
	var out struct{ X int }
	if _, err := c.Get(context.Background(), "Thing", nil, &out); err != nil || out.X != 1 {
		t.Fatalf("read did not fail over: %v %+v", err, out)
	}
	if c.BaseURL != live.URL {
		t.Fatalf("the node that answered is not preferred now: %s", c.BaseURL)
	}
	// A write fails over when the first node refuses the connection.
	c = New(dead+","+live.URL, "tok")
	if _, err := c.Post(context.Background(), "Thing", map[string]int{"a": 1}, nil); err != nil {
		t.Fatalf("write did not fail over from a refused connection: %v", err)
	}
	// An API error is an answer: no failover, the error is returned.
	c = New(live.URL+","+dead, "wrong")
	var ae *APIError
	if _, err := c.Get(context.Background(), "Thing", nil, nil); !errors.As(err, &ae) || ae.Status != 401 {
		t.Fatalf("API error: %v", err)
	}
}

// A write whose connection broke after it was sent may have been applied:
// it is not repeated on another node.
func TestWriteNotRepeatedAfterBrokenConnection(t *testing.T) {
	var second atomic.Int32
	hangup := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, _, err := w.(http.Hijacker).Hijack()
		if err == nil {
			conn.Close()
		}
	}))
	defer hangup.Close()
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		second.Add(1)
		w.Write([]byte(`{"generation":1,"data":{"ok":true}}`))
	}))
	defer other.Close()
	c := New(hangup.URL+","+other.URL, "tok")
	if _, err := c.Post(context.Background(), "VolumeCreate", map[string]string{"name": "v"}, nil); !errors.Is(err, ErrUnreachable) {
		t.Fatalf("err = %v, want ErrUnreachable", err)
	}
	if second.Load() != 0 {
		t.Fatal("a write that may have been applied was sent to another node")
	}
	// A read is safe to repeat.
	if _, err := c.Get(context.Background(), "VolumesList", nil, nil); err != nil || second.Load() != 1 {
		t.Fatalf("read after a broken connection: %v (second node hits %d)", err, second.Load())
	}
}

// Concurrent calls, as a storage server makes for each of its disks every
// heartbeat, reuse their connections instead of opening new ones each
// round.
func TestConcurrentCallsReuseConnections(t *testing.T) {
	var opened atomic.Int32
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(`{"generation":1,"data":{}}`))
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			opened.Add(1)
		}
	}
	srv.Start()
	defer srv.Close()
	c := New(srv.URL, "tok")
	// A connection goes back to the idle pool a moment after its reply was
	// read, so a round may now and then dial one more than it needed:
	// the bound leaves room for that. Keeping only two idle connections
	// opened four new ones every round.
	const parallel, rounds = 6, 10
	for range rounds {
		var wg sync.WaitGroup
		errs := make(chan error, parallel)
		for range parallel {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if _, err := c.Get(context.Background(), "DiskDescribe", nil, nil); err != nil {
					errs <- err
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
	}
	if n := opened.Load(); n > 2*parallel {
		t.Fatalf("%d rounds of %d concurrent calls opened %d connections; %d would do", rounds, parallel, n, parallel)
	}
}
