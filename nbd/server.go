package nbd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sort"
	"sync"
	"time"
)

// DefaultHandshakeTimeout bounds option haggling: a client that connects
// and then says nothing is dropped after it.
const DefaultHandshakeTimeout = 30 * time.Second

// Server serves named exports to NBD clients on any number of listeners
// (unix sockets, loopback TCP). The zero value is not usable; call
// NewServer.
type Server struct {
	log *slog.Logger
	// HandshakeTimeout bounds option haggling; zero means
	// DefaultHandshakeTimeout. Set it before Serve.
	HandshakeTimeout time.Duration

	mu        sync.Mutex
	exports   map[string]*Export
	listeners map[net.Listener]struct{}
	conns     map[*conn]struct{} // every open connection, any phase
	closed    bool
	wg        sync.WaitGroup // Serve loops and connection goroutines
}

// NewServer returns a server with no exports.
func NewServer(log *slog.Logger) *Server {
	return &Server{
		log:       log,
		exports:   map[string]*Export{},
		listeners: map[net.Listener]struct{}{},
		conns:     map[*conn]struct{}{},
	}
}

// Export is one named export: a backend and the connections using it.
type Export struct {
	name    string
	backend Backend
	info    Info

	// ctx is the parent of every connection's context; Fail cancels it
	// so that backend calls in flight give up.
	ctx    context.Context
	cancel context.CancelFunc

	mu     sync.Mutex
	conns  map[*conn]struct{} // connections in the transmission phase
	failed error              // sticky; set by Fail
	connWG sync.WaitGroup     // one per bound connection
}

// Name is the export's name as clients ask for it.
func (e *Export) Name() string { return e.name }

// Info is the export's properties, with block size defaults filled in.
func (e *Export) Info() Info { return e.info }

// Conns counts the connections in the transmission phase: clients that
// have the export open. A detach must refuse while it is nonzero unless
// forced.
func (e *Export) Conns() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.conns)
}

// Err returns the cause the export was closed with, or nil while it serves.
func (e *Export) Err() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.failed
}

// Fail closes the export to its users: every request from now on, and
// every request in flight whose backend call fails, is answered with the
// error code of cause, and backend calls in flight see their context
// cancelled. New clients cannot open it. With ErrVolumeLost (the fencing
// case, and the default for a nil cause) clients get EIO and keep their
// connections until they drop them, so a kernel device fails its I/O
// instead of hanging; with ErrShutdown they get ESHUTDOWN and the server
// closes each connection once its requests in flight are answered. Fail
// is idempotent; the first cause wins.
func (e *Export) Fail(cause error) {
	if cause == nil {
		cause = ErrVolumeLost
	}
	e.mu.Lock()
	if e.failed != nil {
		e.mu.Unlock()
		return
	}
	e.failed = cause
	e.mu.Unlock()
	e.cancel()
	if errors.Is(cause, ErrShutdown) {
		e.disconnect()
	}
}

// disconnect makes every connection of a failed export stop taking
// requests and close once those in flight are answered.
func (e *Export) disconnect() {
	e.mu.Lock()
	conns := make([]*conn, 0, len(e.conns))
	for c := range e.conns {
		conns = append(conns, c)
	}
	e.mu.Unlock()
	for _, c := range conns {
		c.stopReading()
	}
}

// bind attaches a connection that finished its handshake. It fails when
// the export was closed in the meantime.
func (e *Export) bind(c *conn) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.failed != nil {
		return fmt.Errorf("export %q: %w", e.name, e.failed)
	}
	e.conns[c] = struct{}{}
	e.connWG.Add(1)
	return nil
}

func (e *Export) unbind(c *conn) {
	e.mu.Lock()
	_, ok := e.conns[c]
	delete(e.conns, c)
	e.mu.Unlock()
	if ok {
		e.connWG.Done()
	}
}

// AddExport serves backend under name. Names are at most 4096 bytes of
// UTF-8 (the protocol's string limit).
func (s *Server) AddExport(name string, backend Backend) (*Export, error) {
	if len(name) > maxStringLen {
		return nil, fmt.Errorf("add export: name of %d bytes: %w", len(name), ErrInvalid)
	}
	info := backend.Info().withDefaults()
	if info.Size < 0 || info.MinBlock > info.PreferredBlock || info.PreferredBlock > info.MaxBlock ||
		info.MinBlock&(info.MinBlock-1) != 0 || info.PreferredBlock&(info.PreferredBlock-1) != 0 {
		return nil, fmt.Errorf("add export %q: block sizes min %d preferred %d max %d: %w (min and preferred must be powers of two, min <= preferred <= max)",
			name, info.MinBlock, info.PreferredBlock, info.MaxBlock, ErrInvalid)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, fmt.Errorf("add export %q: %w", name, ErrServerClosed)
	}
	if _, ok := s.exports[name]; ok {
		return nil, fmt.Errorf("add export %q: %w", name, ErrExportExists)
	}
	ctx, cancel := context.WithCancel(context.Background())
	e := &Export{name: name, backend: backend, info: info, ctx: ctx, cancel: cancel, conns: map[*conn]struct{}{}}
	s.exports[name] = e
	return e, nil
}

// Export returns the export of that name.
func (s *Server) Export(name string) (*Export, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.exports[name]
	return e, ok
}

// Exports lists the export names in order.
func (s *Server) Exports() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	names := make([]string, 0, len(s.exports))
	for n := range s.exports {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// RemoveExport stops serving an export. While clients have it open it
// refuses with ErrExportBusy unless force is set; forced, it closes the
// export with ErrShutdown and waits (until ctx ends) for its connections
// to finish their requests in flight and close.
func (s *Server) RemoveExport(ctx context.Context, name string, force bool) error {
	s.mu.Lock()
	e, ok := s.exports[name]
	if !ok {
		s.mu.Unlock()
		return fmt.Errorf("remove export %q: %w", name, ErrNoExport)
	}
	if n := e.Conns(); n > 0 && !force {
		s.mu.Unlock()
		return fmt.Errorf("remove export %q: %w by %d connection(s); close the clients or force", name, ErrExportBusy, n)
	}
	delete(s.exports, name)
	s.mu.Unlock()
	// An export fenced earlier keeps its first cause; its clients are
	// disconnected all the same.
	e.Fail(ErrShutdown)
	e.disconnect()
	return waitGroupCtx(ctx, &e.connWG)
}

// resolve finds the export a client names. The empty name is the default
// export: the export named "" if there is one, else the only export.
func (s *Server) resolve(name string) (*Export, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e, ok := s.exports[name]; ok {
		return e, true
	}
	if name == "" && len(s.exports) == 1 {
		for _, e := range s.exports {
			return e, true
		}
	}
	return nil, false
}

// Serve accepts connections on l until l fails or the server is closed.
// It returns nil after Close.
func (s *Server) Serve(l net.Listener) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrServerClosed
	}
	s.listeners[l] = struct{}{}
	s.wg.Add(1)
	s.mu.Unlock()
	defer s.wg.Done()
	for {
		nc, err := l.Accept()
		if err != nil {
			s.mu.Lock()
			closed := s.closed
			delete(s.listeners, l)
			s.mu.Unlock()
			if closed {
				return nil
			}
			return fmt.Errorf("nbd serve %s: %w", l.Addr(), err)
		}
		c := newConn(s, nc)
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			nc.Close()
			return nil
		}
		s.conns[c] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go func() {
			defer s.wg.Done()
			c.serve()
			s.mu.Lock()
			delete(s.conns, c)
			s.mu.Unlock()
		}()
	}
}

// Close stops the listeners, closes every export with ErrShutdown, drops
// connections still haggling and waits (until ctx ends) for the rest to
// answer what they have in flight and close.
func (s *Server) Close(ctx context.Context) error {
	s.mu.Lock()
	s.closed = true
	for l := range s.listeners {
		l.Close()
	}
	exports := make([]*Export, 0, len(s.exports))
	for _, e := range s.exports {
		exports = append(exports, e)
	}
	conns := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for _, e := range exports {
		e.Fail(ErrShutdown)
		e.disconnect()
	}
	for _, c := range conns {
		c.stopReading()
	}
	err := waitGroupCtx(ctx, &s.wg)
	if err != nil {
		// Out of patience: drop what is left.
		s.mu.Lock()
		for c := range s.conns {
			c.nc.Close()
		}
		s.mu.Unlock()
	}
	return err
}

// waitGroupCtx waits for wg or ctx, whichever comes first.
func waitGroupCtx(ctx context.Context, wg *sync.WaitGroup) error {
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
