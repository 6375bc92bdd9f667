package wire

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"keel/internal/later"
	"keel/internal/rawio"
)

const handshakeTimeout = 10 * time.Second

// Client is one pipelined connection to a server. Do may be called from
// many goroutines; requests go out in order and replies are matched by id.
type Client struct {
	conn net.Conn
	Peer Peer

	out batchWriter

	mu   sync.Mutex
	wait map[uint64]*call
	err  error
	next atomic.Uint64
	done chan struct{}
	// pending counts the calls waiting for their replies.
	pending atomic.Int32
	// flushLater is set while a reader's later.Queue holds a flush of
	// requests queued by StartFunc; flushFn is flushQueued, bound once
	// (a method value made per call would be allocated).
	flushLater atomic.Bool
	flushFn    func()
}

type call struct {
	resp     *Response
	done     chan struct{}
	err      error
	op       Op
	deadline int64 // monotonic nanoseconds (see now); 0: none
	// fn, if set, is told the result instead of done (StartFunc).
	fn func(err error, q *later.Queue)
}

// complete reports a call's result: to its fn (with q, the queue of the
// goroutine calling, nil for none) or to the goroutine in Wait.
func (cl *call) complete(q *later.Queue) {
	fn := cl.fn
	if fn == nil {
		cl.done <- struct{}{}
		return
	}
	cl.fn = nil // before result hands cl back to the pool
	fn(cl.result(), q)
}

// result is what the call returns (see Do), once it is over; the call
// goes back to the pool.
func (cl *call) result() error {
	err := cl.err
	if err == nil {
		err = cl.resp.Err()
	}
	cl.resp = nil
	callPool.Put(cl)
	return err
}

var callPool = sync.Pool{New: func() any { return &call{done: make(chan struct{}, 1)} }}

// Dial connects to a server at network/addr ("tcp" or "unix") and proves
// cluster membership with secret.
func Dial(ctx context.Context, network, addr string, secret []byte, self Peer) (*Client, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, network, addr)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		tc.SetNoDelay(true)
	}
	conn.SetDeadline(time.Now().Add(handshakeTimeout))
	peer, err := clientHandshake(conn, secret, self)
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	conn.SetDeadline(time.Time{})
	return newClient(rawio.New(conn), peer), nil
}

// newClient runs the client side of a connection past its handshake.
func newClient(conn net.Conn, peer Peer) *Client {
	c := &Client{conn: conn, Peer: peer, wait: map[uint64]*call{}, done: make(chan struct{})}
	c.out.conn = conn
	c.out.failed = func(err error) { c.shut(fmt.Errorf("%w: %v", ErrClosed, err)) }
	c.out.busy = func() bool { return c.pending.Load() > 1 }
	c.flushFn = c.flushQueued
	go c.readLoop()
	sweeper.add(c)
	return c
}

// Close closes the connection; pending calls fail with ErrClosed.
func (c *Client) Close() error {
	c.shut(ErrClosed)
	return nil
}

// Closed reports whether the connection is gone (closed or failed), so a
// pool can replace it before using it.
func (c *Client) Closed() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// shut fails the connection with err and its pending calls; it returns
// once no frame is being written, also when the connection had failed
// already (see batchWriter).
func (c *Client) shut(err error) {
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		c.out.abandon(err)
		return
	}
	c.err = err
	waiting := c.wait
	c.wait = map[uint64]*call{}
	close(c.done)
	c.mu.Unlock()
	sweeper.remove(c)
	c.conn.Close()
	// A call may fail only once its frame is no longer being written:
	// its caller may then reuse the payload's buffer (see batchWriter).
	c.out.abandon(err)
	for _, cl := range waiting {
		if cl.err == nil {
			cl.err = err
		}
		cl.complete(nil)
	}
}

// Do sends req and waits for its response, decoded into resp (resp.Data's
// buffer is reused when large enough). A non-OK status is returned as a
// *StatusError.
func (c *Client) Do(ctx context.Context, req *Request, resp *Response) error {
	return c.DoTimeout(ctx, 0, req, resp)
}

// DoTimeout is Do bounded by timeout as well as by ctx (0: ctx only).
// The bound is kept by a sweep of the connection's pending calls rather
// than a timer per call, so it fires up to sweepEvery late. A call that
// times out, like a cancelled one, closes the connection: its reply could
// no longer be told apart; the error wraps context.DeadlineExceeded.
func (c *Client) DoTimeout(ctx context.Context, timeout time.Duration, req *Request, resp *Response) error {
	cl, err := c.Start(timeout, req, resp)
	if err != nil {
		return err
	}
	return cl.Wait(ctx)
}

// Call is a request sent by Start whose reply Wait collects.
type Call struct {
	c  *Client
	cl *call
}

// Start sends req without waiting for its reply, bounded by timeout as
// in DoTimeout; the caller must Wait for it, and must not touch req's Data
// or resp until then. Sending one request to each of several servers with
// Start and then waiting for all costs no goroutine per request.
func (c *Client) Start(timeout time.Duration, req *Request, resp *Response) (Call, error) {
	cl, err := c.register(timeout, req, resp, nil)
	if err != nil {
		return Call{}, err
	}
	c.out.send(req) // a write error shuts the connection (out.failed)
	return Call{c: c, cl: cl}, nil
}

// register gives req its id and records its call, for the reply to find;
// it fails when the connection is gone.
func (c *Client) register(timeout time.Duration, req *Request, resp *Response, fn func(error, *later.Queue)) (*call, error) {
	cl := callPool.Get().(*call)
	cl.resp, cl.err, cl.op, cl.deadline, cl.fn = resp, nil, req.Op, 0, fn
	if timeout > 0 {
		cl.deadline = now() + int64(timeout)
	}
	req.ID = c.next.Add(1)
	c.mu.Lock()
	if c.err != nil {
		err := c.err
		c.mu.Unlock()
		cl.fn, cl.resp = nil, nil
		callPool.Put(cl)
		return nil, err
	}
	c.wait[req.ID] = cl
	c.mu.Unlock()
	c.pending.Add(1)
	return cl, nil
}

// StartFunc sends req like Start, but fn is told the result (as Do
// returns it) instead of a caller in Wait. fn runs once, on the goroutine
// that learnt the result: the connection's reader, with q being the
// reader's later.Queue, or, when the connection fails or the call times
// out, another with q nil. It must not block (hand slow work to a
// goroutine) and may use resp until it returns.
//
// With q set (the caller is itself a reader with a later.Queue) the
// request is only queued, and written when q runs, together with what
// else the caller queued meanwhile. An error means req was not sent and
// fn will not run.
func (c *Client) StartFunc(timeout time.Duration, req *Request, resp *Response, q *later.Queue, fn func(err error, q *later.Queue)) error {
	if _, err := c.register(timeout, req, resp, fn); err != nil {
		return err
	}
	if q == nil {
		c.out.send(req)
		return nil
	}
	c.out.queue(req)
	if !c.flushLater.Swap(true) {
		q.Add(c.flushFn)
	}
	return nil
}

// flushQueued writes the requests StartFunc queued.
func (c *Client) flushQueued() {
	c.flushLater.Store(false)
	c.out.flush()
}

// Wait waits for the reply of a started call (see Do for the result).
// When ctx ends first the connection is closed, as in Do.
func (k Call) Wait(ctx context.Context) error {
	c, cl := k.c, k.cl
	select {
	case <-cl.done:
	case <-ctx.Done():
		// The reply may still come; the connection cannot tell. Drop it.
		c.shut(fmt.Errorf("%w: %s cancelled: %v", ErrClosed, cl.op, ctx.Err()))
		<-cl.done
		callPool.Put(cl)
		return ctx.Err()
	}
	return cl.result()
}

// expire fails the connection when a call is past its deadline.
func (c *Client) expire(t int64) {
	c.mu.Lock()
	var late *call
	for id, cl := range c.wait {
		if cl.deadline != 0 && cl.deadline < t {
			late = cl
			delete(c.wait, id) // its reply, should it come now, is refused
			break
		}
	}
	c.mu.Unlock()
	if late == nil {
		return
	}
	c.shut(fmt.Errorf("%w: a %s request got no reply in time", ErrClosed, late.op))
	late.err = fmt.Errorf("%w: %s got no reply in time: %w", ErrClosed, late.op, context.DeadlineExceeded)
	late.complete(nil)
}

// readLoop reads replies and completes their calls. Work the completions
// of StartFunc calls put off runs before each read of the socket.
func (c *Client) readLoop() {
	var q later.Queue
	br := bufio.NewReaderSize(later.Reader{R: c.conn, Before: q.Run}, 256<<10)
	defer q.Run()
	var hdr Response
	for {
		n, err := readResponseHeader(br, &hdr)
		if err != nil {
			c.shut(fmt.Errorf("%w: %v", ErrClosed, err))
			return
		}
		c.mu.Lock()
		cl := c.wait[hdr.ID]
		delete(c.wait, hdr.ID)
		c.mu.Unlock()
		c.pending.Add(-1)
		if cl == nil {
			c.shut(fmt.Errorf("%w: reply to unknown request %d", ErrFrame, hdr.ID))
			return
		}
		r := cl.resp
		r.Status, r.ID, r.Version = hdr.Status, hdr.ID, hdr.Version
		if cap(r.Data) < n {
			r.Data = make([]byte, n)
		}
		r.Data = r.Data[:n]
		if _, err := io.ReadFull(br, r.Data); err != nil {
			cl.err = fmt.Errorf("%w: %v", ErrClosed, err)
			err := cl.err
			cl.complete(&q)
			c.shut(err)
			return
		}
		cl.complete(&q)
	}
}

// monotonic clock for call deadlines
var epoch = time.Now()

func now() int64 { return int64(time.Since(epoch)) }

// sweepEvery is how often pending calls are checked against their
// deadlines.
const sweepEvery = 100 * time.Millisecond

// sweeper checks the deadlines of every live client's calls.
var sweeper = &clientSweeper{clients: map[*Client]struct{}{}}

type clientSweeper struct {
	mu      sync.Mutex
	clients map[*Client]struct{}
	running bool
}

func (s *clientSweeper) add(c *Client) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.clients[c] = struct{}{}
	if !s.running {
		s.running = true
		go s.run()
	}
}

func (s *clientSweeper) remove(c *Client) {
	s.mu.Lock()
	delete(s.clients, c)
	s.mu.Unlock()
}

// run sweeps while there are clients; the next add starts it again.
func (s *clientSweeper) run() {
	t := time.NewTicker(sweepEvery)
	defer t.Stop()
	var cs []*Client
	for range t.C {
		s.mu.Lock()
		if len(s.clients) == 0 {
			s.running = false
			s.mu.Unlock()
			return
		}
		cs = cs[:0]
		for c := range s.clients {
			cs = append(cs, c)
		}
		s.mu.Unlock()
		t := now()
		for _, c := range cs {
			c.expire(t)
		}
	}
}

// batchWriter writes frames to a connection from many goroutines without
// a writer goroutine: a sender appends its frame and, when no other sender
// is writing, writes everything queued, including what others appended
// meanwhile, in one system call. Pipelined frames share system calls
// without a hand-off between goroutines.
// A sender finding maxBatch bytes queued waits until the writer took
// them, so a burst of large frames holds at most about maxBatch plus one
// frame per connection.
//
// A request's payload of at least zeroCopyMin bytes is not copied: the
// queue refers to the sender's buffer and the write gathers it (writev).
// The sender must then leave the buffer alone until the writer is done
// with it: until the reply came (the server has read it all), or, when
// the connection failed, until abandon returned, which is what Client.shut
// waits for before it fails the calls.
type batchWriter struct {
	conn    net.Conn
	mu      sync.Mutex
	drained sync.Cond // signalled (with mu) when the writer took the queue
	waiters int
	buf     []byte
	spare   []byte
	// segs, when not empty, is the queue as segments in order: pieces of
	// buf and the payloads referred to; buf[mark:] comes after them.
	// referred counts the payload bytes among them.
	segs      [][]byte
	spareSegs [][]byte
	mark      int
	referred  int
	writing   bool
	err       error
	// failed is called once, outside mu, with the first write error
	// (whichever goroutine was writing): the connection is done.
	failed func(error)
	// busy, if set, reports whether more frames are likely to follow at
	// once (other requests are in flight on the connection); the sender
	// then yields once before writing so that they share its system call.
	busy func() bool
}

const (
	// maxBatch is the most bytes queued before senders wait.
	maxBatch = 1 << 20
	// zeroCopyMin is the smallest request payload sent from the sender's
	// buffer rather than copied into the queue: copying a 1 MiB write
	// into the queues of its three replicas was a fifth of the client's
	// CPU time per request. Smaller frames are cheaper copied, in one
	// contiguous write.
	zeroCopyMin = 32 << 10
	// maxKeptBuffer bounds the buffer a batchWriter keeps between writes.
	maxKeptBuffer = maxBatch + MaxIO + requestHeader
)

// frame is a request or a response to send.
type frame interface{ appendTo([]byte) []byte }

func (r *Request) appendTo(b []byte) []byte  { return EncodeRequest(b, r) }
func (r *Response) appendTo(b []byte) []byte { return EncodeResponse(b, r) }

// queued is how many bytes are waiting to be written.
func (w *batchWriter) queued() int { return len(w.buf) + w.referred }

// add appends f to the queue: copied, or, a large request payload, by
// reference (see batchWriter).
func (w *batchWriter) add(f frame) {
	r, ok := f.(*Request)
	if !ok || len(r.payload()) < zeroCopyMin {
		w.buf = f.appendTo(w.buf)
		return
	}
	w.buf = appendRequestHeader(w.buf, r)
	w.segs = append(w.segs, w.buf[w.mark:len(w.buf):len(w.buf)], r.payload())
	w.mark = len(w.buf)
	w.referred += len(r.payload())
}

// wait waits, with mu held, until the writer took the queue.
func (w *batchWriter) wait() {
	if w.drained.L == nil {
		w.drained.L = &w.mu
	}
	w.waiters++
	w.drained.Wait()
	w.waiters--
}

// send appends one frame. A write error is reported once, to failed; later
// frames are dropped.
func (w *batchWriter) send(f frame) {
	w.mu.Lock()
	for w.writing && w.queued() >= maxBatch && w.err == nil {
		w.wait()
	}
	if w.err != nil {
		w.mu.Unlock()
		return
	}
	w.add(f)
	if w.writing {
		w.mu.Unlock()
		return
	}
	w.writing = true
	if w.busy != nil && w.busy() {
		w.mu.Unlock()
		runtime.Gosched()
		w.mu.Lock()
	}
	w.write(maxRounds)
}

// queue appends one frame without writing it: the caller flushes (or a
// later send writes it). With maxBatch bytes queued it is send.
func (w *batchWriter) queue(f frame) {
	w.mu.Lock()
	if w.queued() >= maxBatch || w.err != nil {
		w.mu.Unlock()
		w.send(f)
		return
	}
	w.add(f)
	w.mu.Unlock()
}

// abandon stops all writing, for good (the connection is closed or being
// closed), and returns once no write is in progress: the writer refers to
// no sender's buffer any more. What is queued is dropped.
func (w *batchWriter) abandon(err error) {
	w.mu.Lock()
	if w.err == nil {
		w.err = err
	}
	for w.writing {
		w.wait()
	}
	clear(w.segs)
	w.buf, w.segs, w.mark, w.referred = w.buf[:0], w.segs[:0], 0, 0
	w.mu.Unlock()
}

// flush writes what is queued unless another sender is writing it.
func (w *batchWriter) flush() {
	w.mu.Lock()
	if w.writing || len(w.buf) == 0 || w.err != nil {
		w.mu.Unlock()
		return
	}
	w.writing = true
	w.write(maxRounds)
}

// maxRounds is how many system calls a sender makes for others before it
// hands the writing to a goroutine of its own: a steady stream of frames
// must not keep a request's goroutine (or a server's reader) from its own
// work.
const maxRounds = 4

// write writes the queue until it is empty, at most rounds times (0: no
// limit), then hands what is left to a new goroutine. Called with mu held
// and writing set; returns with mu released.
func (w *batchWriter) write(rounds int) {
	for n := 0; len(w.buf) > 0 && w.err == nil; n++ {
		if rounds > 0 && n == rounds {
			w.mu.Unlock()
			go func() {
				w.mu.Lock()
				w.write(0)
			}()
			return
		}
		b, segs := w.buf, w.segs
		if len(segs) > 0 && w.mark < len(b) {
			segs = append(segs, b[w.mark:])
		}
		w.buf, w.segs, w.mark, w.referred = w.spare[:0], w.spareSegs[:0], 0, 0
		if w.waiters > 0 {
			w.drained.Broadcast()
		}
		w.mu.Unlock()
		var err error
		if len(segs) == 0 {
			_, err = w.conn.Write(b)
		} else {
			_, err = rawio.WriteBuffers(w.conn, segs)
			clear(segs) // let go of the senders' buffers
		}
		w.mu.Lock()
		if cap(b) <= maxKeptBuffer {
			w.spare = b[:0]
		} else {
			w.spare = nil
		}
		w.spareSegs = segs[:0]
		if err != nil && w.err == nil {
			w.err = err
			if w.failed != nil {
				defer w.failed(err) // runs after the unlock below
			}
		}
	}
	w.writing = false
	if w.waiters > 0 {
		w.drained.Broadcast() // after a write error, too
	}
	w.mu.Unlock()
}

// Handler answers requests. ServeWire fills resp (Status, Version, Data);
// resp.Data arrives empty with a reusable buffer of capacity MaxIO.
// It is called concurrently.
type Handler interface {
	ServeWire(peer Peer, req *Request, resp *Response)
}

// ServerConfig configures Serve.
type ServerConfig struct {
	Secret  []byte
	Self    Peer
	Handler Handler
	Log     *slog.Logger
	// Concurrency is the number of workers of one connection, which
	// bounds the requests it serves at once (default 64; one more may be
	// served by its reader, see Quick).
	Concurrency int
	// Quick, if set, is offered every request first, by the connection's
	// reader: it serves those it can without waiting for a device or a
	// lock held by a worker (filling resp as Handler would) and reports
	// true; the others go to the workers, resp untouched. That saves a
	// hand-off to a worker per request. alone reports that no byte of a
	// further request has arrived yet: nothing waits behind this one.
	// Replies of requests served so are written when the reader has read
	// all it was sent so far (before it reads the socket again) or must
	// wait for a busy worker, so the replies of requests that arrived
	// together share a system call.
	Quick func(peer Peer, req *Request, resp *Response, alone bool) bool
}

type exchange struct {
	req  Request
	resp Response
}

var exchangePool = sync.Pool{New: func() any {
	return &exchange{}
}}

// Serve accepts connections on ln until ctx ends or ln fails.
func Serve(ctx context.Context, ln net.Listener, cfg ServerConfig) error {
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = 64
	}
	var wg sync.WaitGroup
	conns := map[net.Conn]struct{}{}
	var mu sync.Mutex
	stop := context.AfterFunc(ctx, func() {
		ln.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
	})
	defer stop()
	defer wg.Wait()
	for {
		conn, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("serve %s: %w", ln.Addr(), err)
		}
		mu.Lock()
		conns[conn] = struct{}{}
		mu.Unlock()
		wg.Add(1)
		go func() {
			defer wg.Done()
			serveConn(conn, cfg)
			mu.Lock()
			delete(conns, conn)
			mu.Unlock()
		}()
	}
}

func serveConn(conn net.Conn, cfg ServerConfig) {
	defer conn.Close()
	if tc, ok := conn.(*net.TCPConn); ok {
		tc.SetNoDelay(true)
	}
	conn.SetDeadline(time.Now().Add(handshakeTimeout))
	peer, err := serverHandshake(conn, cfg.Secret, cfg.Self)
	if err != nil {
		cfg.Log.Warn("refused a data-protocol connection", "remote", conn.RemoteAddr().String(), "err", err)
		return
	}
	conn.SetDeadline(time.Time{})
	cfg.Log.Debug("data-protocol peer connected", "peer", peer.String(), "remote", conn.RemoteAddr().String())
	conn = rawio.New(conn)

	var serving atomic.Int32
	out := &batchWriter{conn: conn, failed: func(error) { conn.Close() }} // the reader stops too
	out.busy = func() bool { return serving.Load() > 1 }
	serve := func(ex *exchange) {
		ex.resp = Response{ID: ex.req.ID, Data: ex.resp.Data[:0]}
		cfg.Handler.ServeWire(peer, &ex.req, &ex.resp)
		out.send(&ex.resp) // a write error closes the connection (out.failed)
		serving.Add(-1)
		exchangePool.Put(ex)
	}
	// A fixed set of workers rather than a goroutine per request: their
	// stacks, once grown by the disk path, stay grown (stack growth was a
	// sixth of the CPU time of a 4 KiB read). Their number bounds the
	// requests served at once.
	work := make(chan *exchange)
	var workers sync.WaitGroup
	for range cfg.Concurrency {
		workers.Add(1)
		go func() {
			defer workers.Done()
			for ex := range work {
				serve(ex)
			}
		}()
	}
	// Replies the reader queued are written before it waits for more
	// bytes, also in the middle of a request whose payload is still
	// arriving.
	br := bufio.NewReaderSize(later.Reader{R: conn, Before: out.flush}, 256<<10)
	for {
		ex := exchangePool.Get().(*exchange)
		if err := ReadRequest(br, &ex.req); err != nil {
			if errors.Is(err, ErrFrame) {
				cfg.Log.Warn("closing data-protocol connection", "peer", peer.String(), "err", err)
			}
			exchangePool.Put(ex)
			break
		}
		serving.Add(1)
		ex.resp = Response{ID: ex.req.ID, Data: ex.resp.Data[:0]}
		if cfg.Quick != nil && cfg.Quick(peer, &ex.req, &ex.resp, br.Buffered() == 0) {
			out.queue(&ex.resp)
			serving.Add(-1)
			exchangePool.Put(ex)
		} else {
			select {
			case work <- ex:
			default: // every worker busy: send the queued replies first
				out.flush()
				work <- ex
			}
		}
	}
	out.flush()
	close(work)
	workers.Wait()
}
