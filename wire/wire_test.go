package wire

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"keel/internal/later"
)

// memHandler is a tiny in-memory disk: one byte slice per object.
type memHandler struct {
	mu      sync.Mutex
	objects map[uint64][]byte
	calls   atomic.Int64
	peers   sync.Map
}

func (h *memHandler) ServeWire(peer Peer, req *Request, resp *Response) {
	h.calls.Add(1)
	h.peers.Store(peer, true)
	h.mu.Lock()
	defer h.mu.Unlock()
	obj := h.objects[req.Volume]
	if obj == nil {
		obj = make([]byte, 1<<20)
		h.objects[req.Volume] = obj
	}
	if req.Offset+uint64(req.Length) > uint64(len(obj)) {
		resp.Status = StatusRange
		resp.Data = append(resp.Data, "out of range"...)
		return
	}
	switch req.Op {
	case OpWrite:
		copy(obj[req.Offset:], req.Data)
		resp.Version = req.Version
	case OpRead:
		copy(resp.Grow(int(req.Length)), obj[req.Offset:])
	}
}

// startServer serves h; quick, when given, is ServerConfig.Quick.
func startServer(t *testing.T, network string, secret []byte, h Handler, quick ...func(Peer, *Request, *Response, bool) bool) string {
	t.Helper()
	addr := "127.0.0.1:0"
	if network == "unix" {
		addr = filepath.Join(t.TempDir(), "s.sock")
	}
	ln, err := net.Listen(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		cfg := ServerConfig{Secret: secret, Self: Peer{NodeID: 1, Role: "server", Name: "s1"}, Handler: h, Log: slog.New(slog.DiscardHandler)}
		if len(quick) > 0 {
			cfg.Quick = quick[0]
		}
		done <- Serve(ctx, ln, cfg)
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	return ln.Addr().String()
}

var secret = []byte("0123456789abcdef0123456789abcdef")

func TestPipelinedReadWrite(t *testing.T) {
	for _, network := range []string{"tcp", "unix", "unix-quick"} {
		t.Run(network, func(t *testing.T) {
			h := &memHandler{objects: map[uint64][]byte{}}
			var addr string
			if network == "unix-quick" {
				// The reader serves half the reads itself, the workers
				// the rest: replies of both kinds interleave.
				quick := func(p Peer, req *Request, resp *Response, alone bool) bool {
					if req.Op != OpRead || req.Offset%8192 != 0 {
						return false
					}
					h.ServeWire(p, req, resp)
					return true
				}
				network = "unix"
				addr = startServer(t, network, secret, h, quick)
			} else {
				addr = startServer(t, network, secret, h)
			}
			c, err := Dial(context.Background(), network, addr, secret, Peer{NodeID: 7, Role: "client", Name: "c7"})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if c.Peer != (Peer{NodeID: 1, Role: "server", Name: "s1"}) {
				t.Fatalf("server peer %+v", c.Peer)
			}
			var wg sync.WaitGroup
			errs := make(chan error, 64)
			for g := 0; g < 32; g++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					data := bytes.Repeat([]byte{byte(g)}, 4096)
					var resp Response
					for i := 0; i < 20; i++ {
						off := uint64(g*4096*8 + i%8*4096)
						if err := c.Do(context.Background(), &Request{Op: OpWrite, Volume: 1, Offset: off, Length: 4096, Data: data, Version: uint64(i)}, &resp); err != nil {
							errs <- err
							return
						}
						if err := c.Do(context.Background(), &Request{Op: OpRead, Volume: 1, Offset: off, Length: 4096}, &resp); err != nil {
							errs <- err
							return
						}
						if !bytes.Equal(resp.Data, data) {
							errs <- fmt.Errorf("goroutine %d: read back other data", g)
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
			var resp Response
			err = c.Do(context.Background(), &Request{Op: OpRead, Volume: 1, Offset: 1 << 20, Length: 4096}, &resp)
			var se *StatusError
			if !errors.As(err, &se) || se.Status != StatusRange || se.Msg != "out of range" {
				t.Fatalf("out of range read: %v", err)
			}
			if _, ok := h.peers.Load(Peer{NodeID: 7, Role: "client", Name: "c7"}); !ok {
				t.Fatal("handler did not see the client's name")
			}
		})
	}
}

// A peer without the secret is refused before any request reaches the
// handler, whichever side lacks it.
func TestHandshakeRefusesWrongSecret(t *testing.T) {
	h := &memHandler{objects: map[uint64][]byte{}}
	addr := startServer(t, "tcp", secret, h)
	wrong := []byte("fedcba9876543210fedcba9876543210")
	if _, err := Dial(context.Background(), "tcp", addr, wrong, Peer{Role: "client"}); !errors.Is(err, ErrHandshake) {
		t.Fatalf("dial with the wrong secret: %v, want ErrHandshake", err)
	}
	// A raw peer that skips the handshake and sends a request frame.
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	frame := EncodeRequest(nil, &Request{Op: OpWrite, Volume: 1, Length: 4096, Data: make([]byte, 4096)})
	conn.Write(frame)
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, _ := bufio.NewReader(conn).Read(make([]byte, 1)); n != 0 {
		t.Fatal("server answered a peer that did not hand-shake")
	}
	conn.Close()
	// And a client refuses a server without the secret.
	other := startServer(t, "tcp", wrong, h)
	if _, err := Dial(context.Background(), "tcp", other, secret, Peer{Role: "client"}); !errors.Is(err, ErrHandshake) {
		t.Fatalf("dial to a server with another secret: %v, want ErrHandshake", err)
	}
	if n := h.calls.Load(); n != 0 {
		t.Fatalf("handler called %d times without a handshake", n)
	}
}

func TestRequestRoundTrip(t *testing.T) {
	reqs := []Request{
		{Op: OpWrite, Flags: FlagFUA, ID: 9, Disk: 3, Volume: 44, Index: 5, Offset: 8192, Length: 4, Token: 77, Version: 12, Data: []byte("abcd")},
		{Op: OpCreate, Flags: FlagParent, ID: 1, Disk: 1, Volume: 2, Index: 3, ParentVolume: 4, ParentIndex: 5, Data: []byte{}},
		{Op: OpFlush, ID: 2, Data: []byte{}},
	}
	var all []byte
	for i := range reqs {
		all = EncodeRequest(all, &reqs[i])
	}
	br := bufio.NewReader(bytes.NewReader(all))
	var got Request
	for i, want := range reqs {
		if err := ReadRequest(br, &got); err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("request %d: got %+v, want %+v", i, got, want)
		}
	}
}

func FuzzDecodeRequest(f *testing.F) {
	f.Add(EncodeRequest(nil, &Request{Op: OpWrite, Length: 4, Data: []byte("abcd")}))
	f.Add(EncodeRequest(nil, &Request{Op: OpRead, Length: 4096}))
	f.Fuzz(func(t *testing.T, b []byte) {
		var r Request
		if err := ReadRequest(bufio.NewReader(bytes.NewReader(b)), &r); err != nil {
			return
		}
		again := EncodeRequest(nil, &r)
		if !bytes.Equal(again, b[:len(again)]) {
			t.Fatalf("re-encoding differs:\n%x\n%x", again, b[:len(again)])
		}
	})
}

func FuzzDecodeResponse(f *testing.F) {
	f.Add(EncodeResponse(nil, &Response{ID: 1, Data: []byte("data")}))
	f.Add(EncodeResponse(nil, &Response{Status: StatusChecksum, Data: []byte("bad")}))
	f.Fuzz(func(t *testing.T, b []byte) {
		var r Response
		if err := ReadResponse(bufio.NewReader(bytes.NewReader(b)), &r); err != nil {
			return
		}
		again := EncodeResponse(nil, &r)
		if !bytes.Equal(again, b[:len(again)]) {
			t.Fatalf("re-encoding differs")
		}
		if r.Status == StatusOK && r.Err() != nil || r.Status != StatusOK && r.Err() == nil {
			t.Fatal("Err disagrees with Status")
		}
	})
}

func FuzzDecodeVersions(f *testing.F) {
	f.Add(EncodeVersions(nil, []VersionEntry{{Volume: 1, Index: 2, Version: 3}, {Volume: 4, HasParent: true, ParentVolume: 5, ParentIndex: 6}, {Volume: 7, Hidden: true}}))
	f.Fuzz(func(t *testing.T, b []byte) {
		vs, err := DecodeVersions(b)
		if err == nil && !bytes.Equal(EncodeVersions(nil, vs), b) {
			t.Fatal("re-encoding differs")
		}
	})
}

// rw feeds a fixed input to a handshake and discards what it writes.
type rw struct{ in *bytes.Reader }

func (r rw) Read(b []byte) (int, error)  { return r.in.Read(b) }
func (r rw) Write(b []byte) (int, error) { return len(b), nil }

// Whatever a peer sends, the server side of the handshake never accepts
// it without the MAC of the secret, and never panics.
func FuzzServerHandshake(f *testing.F) {
	hello, _ := newHello(Peer{NodeID: 1, Role: "client", Name: "c"})
	f.Add(append(hello, make([]byte, macSize)...))
	f.Add([]byte("KEELWIR1"))
	f.Fuzz(func(t *testing.T, b []byte) {
		if _, err := serverHandshake(rw{bytes.NewReader(b)}, secret, Peer{Role: "server"}); err == nil {
			t.Fatal("handshake accepted without the secret")
		}
	})
}

// blockingHandler answers nothing until release is closed.
type blockingHandler struct{ release chan struct{} }

func (h blockingHandler) ServeWire(peer Peer, req *Request, resp *Response) { <-h.release }

// A call past its timeout fails with context.DeadlineExceeded, soon after
// the timeout, and takes the connection (and the other calls on it) down:
// a late reply could not be told apart.
func TestDoTimeout(t *testing.T) {
	h := blockingHandler{release: make(chan struct{})}
	addr := startServer(t, "unix", secret, h)
	defer close(h.release) // before the server's cleanup waits for its workers
	c, err := Dial(context.Background(), "unix", addr, secret, Peer{Role: "client"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var other Response
	pending, err := c.Start(0, &Request{Op: OpRead, Volume: 1, Length: 4096}, &other)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	var resp Response
	err = c.DoTimeout(context.Background(), 200*time.Millisecond, &Request{Op: OpRead, Volume: 2, Length: 4096}, &resp)
	took := time.Since(start)
	if !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, ErrClosed) {
		t.Fatalf("timed-out call: %v, want DeadlineExceeded and ErrClosed", err)
	}
	if took < 200*time.Millisecond || took > 200*time.Millisecond+3*sweepEvery {
		t.Fatalf("timed out after %v, want 200ms (+ at most %v)", took, 3*sweepEvery)
	}
	if err := pending.Wait(context.Background()); !errors.Is(err, ErrClosed) || errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("other call on the connection: %v, want ErrClosed", err)
	}
	if !c.Closed() {
		t.Fatal("connection still open after a timeout")
	}
}

// Requests sent with Start to one connection complete independently and
// each Wait gets its own reply.
func TestStartWait(t *testing.T) {
	h := &memHandler{objects: map[uint64][]byte{}}
	addr := startServer(t, "unix", secret, h, func(p Peer, r *Request, resp *Response, alone bool) bool {
		if r.Op != OpRead {
			return false
		}
		h.ServeWire(p, r, resp)
		return true
	})
	c, err := Dial(context.Background(), "unix", addr, secret, Peer{Role: "client"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	const n = 40
	reqs := make([]Request, n)
	resps := make([]Response, n)
	calls := make([]Call, n)
	for i := range n {
		reqs[i] = Request{Op: OpWrite, Volume: 3, Offset: uint64(i) * 4096, Length: 4096, Data: bytes.Repeat([]byte{byte(i + 1)}, 4096), Version: uint64(i + 1)}
		if calls[i], err = c.Start(time.Second, &reqs[i], &resps[i]); err != nil {
			t.Fatal(err)
		}
	}
	for i := range n {
		if err := calls[i].Wait(context.Background()); err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
		if resps[i].Version != uint64(i+1) {
			t.Fatalf("write %d got the reply of another request (version %d)", i, resps[i].Version)
		}
	}
	for i := range n {
		reqs[i] = Request{Op: OpRead, Volume: 3, Offset: uint64(i) * 4096, Length: 4096}
		if calls[i], err = c.Start(0, &reqs[i], &resps[i]); err != nil {
			t.Fatal(err)
		}
	}
	for i := n - 1; i >= 0; i-- {
		if err := calls[i].Wait(context.Background()); err != nil {
			t.Fatalf("read %d: %v", i, err)
		}
		if !bytes.Equal(resps[i].Data, bytes.Repeat([]byte{byte(i + 1)}, 4096)) {
			t.Fatalf("read %d returned other data", i)
		}
	}
}

// Many senders of large frames at once, mixed with small ones: the batch
// writers on both sides make senders wait while a megabyte is queued,
// large payloads go out from the senders' buffers and small ones copied,
// and every frame still arrives whole and in its own reply.
func TestLargeFramesFromManySenders(t *testing.T) {
	h := &memHandler{objects: map[uint64][]byte{}}
	addr := startServer(t, "unix", secret, h, func(p Peer, r *Request, resp *Response, alone bool) bool {
		h.ServeWire(p, r, resp)
		return true
	})
	c, err := Dial(context.Background(), "unix", addr, secret, Peer{Role: "client"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	const size = 512 << 10
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for g := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			vol := uint64(100 + g)
			data := bytes.Repeat([]byte{byte(g + 1)}, size)
			sizes := []int{size, 4 << 10, zeroCopyMin, zeroCopyMin - 1, 100 << 10}
			var resp Response
			for i := range 8 {
				n := sizes[(g+i)%len(sizes)]
				data[i] = byte(i)
				if err := c.Do(context.Background(), &Request{Op: OpWrite, Volume: vol, Length: uint32(n), Data: data[:n]}, &resp); err != nil {
					errs <- err
					return
				}
				if err := c.Do(context.Background(), &Request{Op: OpRead, Volume: vol, Length: uint32(n)}, &resp); err != nil {
					errs <- err
					return
				}
				if !bytes.Equal(resp.Data, data[:n]) {
					errs <- fmt.Errorf("sender %d round %d: read back other data", g, i)
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
}

// lingeringConn is a connection whose Write, when the connection was
// closed meanwhile, returns only after a while: a writev descheduled in
// the middle of copying the senders' buffers.
type lingeringConn struct {
	net.Conn
	closed atomic.Bool
}

func (c *lingeringConn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	if c.closed.Load() {
		time.Sleep(50 * time.Millisecond)
	}
	return n, err
}

func (c *lingeringConn) Close() error {
	c.closed.Store(true)
	return c.Conn.Close()
}

// A call that fails (here: times out while the server reads nothing) is
// told so only when its frame is no longer being written, so that its
// caller may reuse the payload's buffer at once: a large payload goes out
// from that buffer, and a write still gathering it would send a torn
// frame.
func TestFailedCallLetsGoOfItsPayload(t *testing.T) {
	h := blockingHandler{release: make(chan struct{})}
	// The server's reader stops at the first request: the socket fills
	// and the client's writer waits for room.
	addr := startServer(t, "tcp", secret, h, func(Peer, *Request, *Response, bool) bool {
		<-h.release
		return false
	})
	defer close(h.release)
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	peer, err := clientHandshake(nc, secret, Peer{Role: "client"})
	if err != nil {
		t.Fatal(err)
	}
	c := newClient(&lingeringConn{Conn: nc}, peer)
	defer c.Close()
	const n = 8
	errs := make(chan error, n)
	for range n {
		go startLargeWrite(c, errs)
	}
	for range n {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}

// startLargeWrite sends a large write and reports to errs: nil when it
// failed (or was not sent) and its frame was no longer being written.
func startLargeWrite(c *Client, errs chan<- error) {
	data := make([]byte, MaxIO)
	var resp Response
	err := c.StartFunc(200*time.Millisecond, &Request{Op: OpWrite, Volume: 1, Length: MaxIO, Data: data}, &resp, nil, func(err error, _ *later.Queue) {
		// Told the result, the caller could reuse data at once.
		c.out.mu.Lock()
		writing := c.out.writing
		c.out.mu.Unlock()
		switch {
		case !errors.Is(err, ErrClosed):
			errs <- fmt.Errorf("write to a stalled server: %v, want ErrClosed", err)
		case writing:
			errs <- errors.New("a call failed while its connection was still being written")
		default:
			errs <- nil
		}
	})
	switch {
	case err == nil: // fn reports
	case errors.Is(err, ErrClosed): // not sent: the connection had failed
		errs <- nil
	default:
		errs <- err
	}
}

// TestReadingFramesDoesNotAllocate: the readers of requests (server) and
// responses (client) decode headers without allocating, once the payload
// buffers are big enough.
func TestReadingFramesDoesNotAllocate(t *testing.T) {
	var b []byte
	b = EncodeRequest(b, &Request{Op: OpRead, ID: 1, Length: 4096})
	b = EncodeRequest(b, &Request{Op: OpWrite, ID: 2, Length: 4, Data: []byte("abcd")})
	b = EncodeResponse(b, &Response{ID: 1, Data: make([]byte, 4096)})
	src := bytes.NewReader(b)
	br := bufio.NewReaderSize(src, 64<<10)
	req := Request{Data: make([]byte, 0, 4096)}
	resp := Response{Data: make([]byte, 0, 4096)}
	allocs := testing.AllocsPerRun(100, func() {
		src.Reset(b)
		br.Reset(src)
		for range 2 {
			if err := ReadRequest(br, &req); err != nil {
				t.Fatal(err)
			}
		}
		n, err := readResponseHeader(br, &resp)
		if err != nil || n != 4096 {
			t.Fatal(n, err)
		}
		if _, err := io.ReadFull(br, resp.Data[:n]); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per round, want 0", allocs)
	}
}
