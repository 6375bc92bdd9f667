// Package iscsi is keel's iSCSI target (RFC 7143): login with CHAP and
// operational parameter negotiation, SendTargets discovery and the full
// feature phase, handing SCSI commands to the logical units of package
// scsi. See DESIGN.md.
package iscsi

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"keel/scsi"
)

var (
	// ErrProtocol marks a PDU or key the target cannot accept; the
	// connection is closed.
	ErrProtocol = errors.New("iscsi protocol error")
	// ErrHeaderDigest: a header digest did not match.
	ErrHeaderDigest = errors.New("header digest mismatch")
	// ErrDataDigest: a data digest did not match.
	ErrDataDigest = errors.New("data digest mismatch")
	// ErrForbidden is what an access check returns to refuse a login.
	ErrForbidden = errors.New("initiator not allowed")
)

// Target is one iSCSI target: a name and its logical units.
type Target struct {
	Name string
	LUs  map[uint64]*scsi.LU
}

// Config configures a Server.
type Config struct {
	// Targets are served by name; AddTarget and RemoveTarget change
	// them while the server runs.
	Targets []*Target
	// PortalGroupTag is reported in logins and SendTargets.
	PortalGroupTag uint16
	// Allow is the access check: it is called for every login with the
	// initiator's name, its source address and the target (empty for a
	// discovery session); a non-nil error refuses the login. Nil allows
	// every initiator.
	Allow func(initiator string, from netip.Addr, target string) error
	// CHAP returns the CHAP credentials an initiator must present for a
	// target; ok false means no authentication is required.
	CHAP func(initiator, target string) (sec CHAPSecret, ok bool)
	// LoggedIn, when set, is called once a normal or discovery session's
	// connection reached the full feature phase (after Allow and CHAP).
	LoggedIn func(SessionInfo)
	Log      *slog.Logger
}

// Server serves iSCSI on listeners.
type Server struct {
	cfg     Config
	targets map[string]*Target
	log     *slog.Logger

	mu        sync.Mutex
	sessions  map[string]*session // by initiator name + ISID
	nextTSIH  uint16
	listeners map[net.Listener]bool
	conns     map[*conn]bool
	closed    bool
	wg        sync.WaitGroup
}

// NewServer creates a server for cfg.
func NewServer(cfg Config) *Server {
	s := &Server{cfg: cfg, targets: map[string]*Target{}, sessions: map[string]*session{},
		listeners: map[net.Listener]bool{}, conns: map[*conn]bool{}, log: cfg.Log}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.cfg.PortalGroupTag == 0 {
		s.cfg.PortalGroupTag = 1
	}
	for _, t := range cfg.Targets {
		s.targets[t.Name] = t
	}
	return s
}

// Serve accepts connections on l until Close.
func (s *Server) Serve(l net.Listener) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return net.ErrClosed
	}
	s.listeners[l] = true
	s.mu.Unlock()
	for {
		nc, err := l.Accept()
		if err != nil {
			s.mu.Lock()
			closed := s.closed
			s.mu.Unlock()
			if closed {
				return nil
			}
			return fmt.Errorf("iscsi accept: %w", err)
		}
		c := newConn(s, nc)
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			nc.Close()
			return nil
		}
		s.conns[c] = true
		s.wg.Add(1)
		s.mu.Unlock()
		go func() {
			defer s.wg.Done()
			c.serve()
		}()
	}
}

// Close stops the listeners, drops every connection and waits for their
// tasks to end.
func (s *Server) Close() error {
	s.mu.Lock()
	s.closed = true
	for l := range s.listeners {
		l.Close()
	}
	for c := range s.conns {
		c.nc.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
	return nil
}

// Shutdown is Close bounded by ctx.
func (s *Server) Shutdown(ctx context.Context) error {
	done := make(chan struct{})
	go func() { s.Close(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (s *Server) dropConn(c *conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
}

// SessionInfo describes a live session for listings.
type SessionInfo struct {
	Initiator string
	ISID      string
	Target    string // "" for a discovery session
	TSIH      uint16
	Created   time.Time
	Conns     []ConnInfo
}

// ConnInfo is one connection of a session.
type ConnInfo struct {
	CID    uint16
	Remote string // the initiator's address
	Local  string // the portal's address
}

// target returns the target served under name, or nil.
func (s *Server) target(name string) *Target {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.targets[name]
}

// Targets lists the served targets by name.
func (s *Server) Targets() []*Target {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]*Target, 0, len(s.targets))
	for _, t := range s.targets {
		out = append(out, t)
	}
	slices.SortFunc(out, func(a, b *Target) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// AddTarget serves t (replacing a target of the same name, whose sessions
// are closed). Sessions of other targets are not disturbed.
func (s *Server) AddTarget(t *Target) {
	s.mu.Lock()
	old := s.targets[t.Name]
	s.targets[t.Name] = t
	s.mu.Unlock()
	if old != nil && old != t {
		s.closeSessions(old)
	}
}

// RemoveTarget stops serving a target: new logins to it fail and its
// sessions are closed (their tasks aborted). Other sessions go on.
func (s *Server) RemoveTarget(name string) {
	s.mu.Lock()
	t := s.targets[name]
	delete(s.targets, name)
	s.mu.Unlock()
	if t != nil {
		s.closeSessions(t)
	}
}

// CloseSessions drops the sessions of initiator (every one when
// initiator is "") to target (every target when ""), e.g. when its access
// was revoked. It returns how many it closed.
func (s *Server) CloseSessions(initiator, target string) int {
	s.mu.Lock()
	var victims []*session
	for _, ss := range s.sessions {
		if (initiator == "" || ss.initiator == initiator) && (target == "" || ss.target != nil && ss.target.Name == target) {
			victims = append(victims, ss)
		}
	}
	s.mu.Unlock()
	for _, ss := range victims {
		for _, c := range ss.allConns() {
			c.nc.Close()
		}
	}
	return len(victims)
}

func (s *Server) closeSessions(t *Target) {
	for _, ss := range s.sessionsOf(t) {
		for _, c := range ss.allConns() {
			c.nc.Close()
		}
	}
}

// Sessions lists the live sessions.
func (s *Server) Sessions() []SessionInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []SessionInfo
	for _, ss := range s.sessions {
		out = append(out, ss.info())
	}
	return out
}

// forEachSession calls f on every normal session of target t.
func (s *Server) sessionsOf(t *Target) []*session {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*session
	for _, ss := range s.sessions {
		if ss.target == t {
			out = append(out, ss)
		}
	}
	return out
}

func base64Decode(s string) ([]byte, error) { return base64.StdEncoding.DecodeString(s) }
