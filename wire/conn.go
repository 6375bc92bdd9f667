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
)

const handshakeTimeout = 10 * time.Second

// Client is one pipelined connection to a server. Do may be called from
// many goroutines; requests go out in order and replies are matched by id.
type Client struct {
	conn net.Conn
	Peer Peer

	out  chan *call
	mu   sync.Mutex
	wait map[uint64]*call
	err  error
	next atomic.Uint64
	done chan struct{}
}

type call struct {
	req  *Request
	resp *Response
	done chan struct{}
	err  error
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
	c := &Client{conn: conn, Peer: peer, out: make(chan *call, 256), wait: map[uint64]*call{}, done: make(chan struct{})}
	go c.writeLoop()
	go c.readLoop()
	return c, nil
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

func (c *Client) shut(err error) {
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return
	}
	c.err = err
	waiting := c.wait
	c.wait = map[uint64]*call{}
	close(c.done)
	c.mu.Unlock()
	c.conn.Close()
	for _, cl := range waiting {
		cl.err = err
		cl.done <- struct{}{}
	}
}

// Do sends req and waits for its response, decoded into resp (resp.Data's
// buffer is reused when large enough). A non-OK status is returned as a
// *StatusError.
func (c *Client) Do(ctx context.Context, req *Request, resp *Response) error {
	cl := callPool.Get().(*call)
	cl.req, cl.resp, cl.err = req, resp, nil
	req.ID = c.next.Add(1)
	c.mu.Lock()
	if c.err != nil {
		err := c.err
		c.mu.Unlock()
		callPool.Put(cl)
		return err
	}
	c.wait[req.ID] = cl
	c.mu.Unlock()
	select {
	case c.out <- cl:
	case <-c.done:
	}
	select {
	case <-cl.done:
	case <-ctx.Done():
		// The reply may still come; the connection cannot tell. Drop it.
		c.shut(fmt.Errorf("%w: %s cancelled: %v", ErrClosed, req.Op, ctx.Err()))
		<-cl.done
		callPool.Put(cl)
		return ctx.Err()
	}
	err := cl.err
	callPool.Put(cl)
	if err != nil {
		return err
	}
	return resp.Err()
}

func (c *Client) writeLoop() {
	bw := bufio.NewWriterSize(c.conn, 256<<10)
	var buf []byte
	for {
		var cl *call
		select {
		case cl = <-c.out:
		case <-c.done:
			return
		}
		buf = EncodeRequest(buf[:0], cl.req)
		if _, err := bw.Write(buf); err != nil {
			c.shut(fmt.Errorf("%w: %v", ErrClosed, err))
			return
		}
		// Flush only when no other request is queued, after letting the
		// goroutines that are about to queue one do so: pipelined requests
		// share system calls.
		if len(c.out) == 0 {
			runtime.Gosched()
		}
		if len(c.out) == 0 {
			if err := bw.Flush(); err != nil {
				c.shut(fmt.Errorf("%w: %v", ErrClosed, err))
				return
			}
		}
	}
}

func (c *Client) readLoop() {
	br := bufio.NewReaderSize(c.conn, 256<<10)
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
			cl.done <- struct{}{}
			c.shut(cl.err)
			return
		}
		cl.done <- struct{}{}
	}
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
	// Concurrency bounds the requests of one connection served at once
	// (default 64).
	Concurrency int
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

	replies := make(chan *exchange, cfg.Concurrency)
	sem := make(chan struct{}, cfg.Concurrency)
	var inflight sync.WaitGroup
	writerDone := make(chan struct{})
	go func() {
		defer close(writerDone)
		bw := bufio.NewWriterSize(conn, 256<<10)
		var buf []byte
		failed := false
		for ex := range replies {
			if !failed {
				buf = EncodeResponse(buf[:0], &ex.resp)
				_, err := bw.Write(buf)
				if err == nil && len(replies) == 0 {
					runtime.Gosched() // as in Client.writeLoop
				}
				if err == nil && len(replies) == 0 {
					err = bw.Flush()
				}
				if err != nil {
					failed = true
					conn.Close() // the reader stops too
				}
			}
			exchangePool.Put(ex)
			<-sem
		}
	}()
	// A fixed set of workers rather than a goroutine per request: their
	// stacks, once grown by the disk path, stay grown (stack growth was a
	// sixth of the CPU time of a 4 KiB read).
	work := make(chan *exchange, cfg.Concurrency)
	for range cfg.Concurrency {
		inflight.Add(1)
		go func() {
			defer inflight.Done()
			for ex := range work {
				ex.resp = Response{ID: ex.req.ID, Data: ex.resp.Data[:0]}
				cfg.Handler.ServeWire(peer, &ex.req, &ex.resp)
				replies <- ex
			}
		}()
	}
	br := bufio.NewReaderSize(conn, 256<<10)
	for {
		sem <- struct{}{}
		ex := exchangePool.Get().(*exchange)
		if err := ReadRequest(br, &ex.req); err != nil {
			if errors.Is(err, ErrFrame) {
				cfg.Log.Warn("closing data-protocol connection", "peer", peer.String(), "err", err)
			}
			exchangePool.Put(ex)
			<-sem
			break
		}
		work <- ex
	}
	close(work)
	inflight.Wait()
	close(replies)
	<-writerDone
}
