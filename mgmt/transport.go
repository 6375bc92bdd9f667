package mgmt

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// handshakeTimeout bounds the secret handshake of one Raft connection.
const handshakeTimeout = 5 * time.Second

// authStream is a raft.StreamLayer whose connections start with a mutual
// HMAC-SHA256 challenge over the cluster secret: the acceptor sends a
// nonce, the dialer answers with its own nonce and a MAC over both, the
// acceptor answers with its MAC. A peer without the secret never gets a
// connection handed to Raft, so it can neither join nor inject entries.
type authStream struct {
	ln     net.Listener
	secret []byte
	adv    net.Addr
	log    *slog.Logger

	accepted chan net.Conn
	done     chan struct{}
	once     sync.Once
}

func newAuthStream(bind string, secret []byte, log *slog.Logger) (*authStream, error) {
	ln, err := net.Listen("tcp", bind)
	if err != nil {
		return nil, fmt.Errorf("raft transport: listen %s: %w", bind, err)
	}
	s := &authStream{ln: ln, secret: secret, adv: ln.Addr(), log: log,
		accepted: make(chan net.Conn), done: make(chan struct{})}
	go s.acceptLoop()
	return s, nil
}

func (s *authStream) acceptLoop() {
	for {
		c, err := s.ln.Accept()
		if err != nil {
			s.Close()
			return
		}
		go func() {
			if err := s.serverHandshake(c); err != nil {
				s.log.Warn("raft connection refused", "peer", c.RemoteAddr().String(), "err", err)
				c.Close()
				return
			}
			select {
			case s.accepted <- c:
			case <-s.done:
				c.Close()
			}
		}()
	}
}

func (s *authStream) mac(label string, a, b []byte) []byte {
	m := hmac.New(sha256.New, s.secret)
	m.Write([]byte(label))
	m.Write(a)
	m.Write(b)
	return m.Sum(nil)
}

func (s *authStream) serverHandshake(c net.Conn) error {
	c.SetDeadline(time.Now().Add(handshakeTimeout))
	defer c.SetDeadline(time.Time{})
	na := make([]byte, 32)
	rand.Read(na)
	if _, err := c.Write(na); err != nil {
		return err
	}
	buf := make([]byte, 64)
	if _, err := io.ReadFull(c, buf); err != nil {
		return err
	}
	nb, got := buf[:32], buf[32:]
	if !hmac.Equal(got, s.mac("keel-raft-dial", na, nb)) {
		return ErrBadSecret
	}
	_, err := c.Write(s.mac("keel-raft-accept", na, nb))
	return err
}

func clientHandshake(c net.Conn, s *authStream) error {
	c.SetDeadline(time.Now().Add(handshakeTimeout))
	defer c.SetDeadline(time.Time{})
	na := make([]byte, 32)
	if _, err := io.ReadFull(c, na); err != nil {
		return err
	}
	nb := make([]byte, 32)
	rand.Read(nb)
	if _, err := c.Write(append(nb, s.mac("keel-raft-dial", na, nb)...)); err != nil {
		return err
	}
	got := make([]byte, 32)
	if _, err := io.ReadFull(c, got); err != nil {
		return err
	}
	if !hmac.Equal(got, s.mac("keel-raft-accept", na, nb)) {
		return ErrBadSecret
	}
	return nil
}

// Accept returns the next authenticated connection.
func (s *authStream) Accept() (net.Conn, error) {
	select {
	case c := <-s.accepted:
		return c, nil
	case <-s.done:
		return nil, errors.New("raft transport closed")
	}
}

// Close stops listening.
func (s *authStream) Close() error {
	s.once.Do(func() { close(s.done); s.ln.Close() })
	return nil
}

// Addr is the advertised address.
func (s *authStream) Addr() net.Addr { return s.adv }

// Dial connects to a peer and proves the secret.
func (s *authStream) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	c, err := net.DialTimeout("tcp", string(addr), timeout)
	if err != nil {
		return nil, err
	}
	if err := clientHandshake(c, s); err != nil {
		c.Close()
		return nil, fmt.Errorf("raft transport: handshake with %s: %w", addr, err)
	}
	return c, nil
}

func randRead(b []byte) { rand.Read(b) }
