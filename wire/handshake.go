package wire

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"strings"
	"unicode/utf8"
)

// Peer names one end of a connection: what it claims in its hello, proven
// by the handshake MAC.
type Peer struct {
	NodeID uint32
	Role   string // "server", "client", "bridge", ...
	Name   string
}

func (p Peer) String() string { return fmt.Sprintf("%s %q (node %d)", p.Role, p.Name, p.NodeID) }

const (
	helloMagic   = "KEELWIR1"
	helloSize    = 8 + 4 + 32 + 1 + 64 + 1 + 16
	macSize      = sha256.Size
	maxNameLen   = 64
	maxRoleLen   = 16
	acceptedByte = 0x4b
)

// The handshake, both MACs over both hellos with distinct labels (so one
// side's MAC can never be replayed as the other's):
//
//	client -> server  hello(client, nonceC)
//	server -> client  hello(server, nonceS) MAC(secret, "server" hc hs)
//	client -> server  MAC(secret, "client" hc hs)
//	server -> client  one accept byte, or the connection closes
//
// A peer without the secret is refused before any request is read.
func encodeHello(p Peer, nonce []byte) []byte {
	b := make([]byte, helloSize)
	copy(b, helloMagic)
	binary.LittleEndian.PutUint32(b[8:], p.NodeID)
	copy(b[12:44], nonce)
	b[44] = byte(len(p.Name))
	copy(b[45:45+maxNameLen], p.Name)
	b[109] = byte(len(p.Role))
	copy(b[110:110+maxRoleLen], p.Role)
	return b
}

func decodeHello(b []byte) (Peer, error) {
	if string(b[:8]) != helloMagic {
		return Peer{}, fmt.Errorf("%w: not a keel data-protocol peer", ErrHandshake)
	}
	n, r := int(b[44]), int(b[109])
	if n > maxNameLen || r > maxRoleLen || !utf8.Valid(b[45:45+n]) || !utf8.Valid(b[110:110+r]) {
		return Peer{}, fmt.Errorf("%w: malformed hello", ErrHandshake)
	}
	return Peer{NodeID: binary.LittleEndian.Uint32(b[8:]), Name: string(b[45 : 45+n]), Role: string(b[110 : 110+r])}, nil
}

func handshakeMAC(secret []byte, label string, hc, hs []byte) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(label))
	m.Write(hc)
	m.Write(hs)
	return m.Sum(nil)
}

func newHello(self Peer) ([]byte, error) {
	if len(self.Name) > maxNameLen || len(self.Role) > maxRoleLen {
		return nil, fmt.Errorf("handshake: name or role too long")
	}
	nonce := make([]byte, 32)
	if _, err := rand.Read(nonce); err != nil {
		return nil, err
	}
	return encodeHello(self, nonce), nil
}

// clientHandshake runs the client side on rw and returns the server.
func clientHandshake(rw io.ReadWriter, secret []byte, self Peer) (Peer, error) {
	hc, err := newHello(self)
	if err != nil {
		return Peer{}, err
	}
	if _, err := rw.Write(hc); err != nil {
		return Peer{}, fmt.Errorf("handshake: %w", err)
	}
	in := make([]byte, helloSize+macSize)
	if _, err := io.ReadFull(rw, in); err != nil {
		return Peer{}, fmt.Errorf("handshake: %w", err)
	}
	hs := in[:helloSize]
	peer, err := decodeHello(hs)
	if err != nil {
		return Peer{}, err
	}
	if !hmac.Equal(in[helloSize:], handshakeMAC(secret, "keel-wire server", hc, hs)) {
		return Peer{}, fmt.Errorf("%w: %s does not hold this cluster's secret", ErrHandshake, peer)
	}
	if _, err := rw.Write(handshakeMAC(secret, "keel-wire client", hc, hs)); err != nil {
		return Peer{}, fmt.Errorf("handshake: %w", err)
	}
	var ok [1]byte
	if _, err := io.ReadFull(rw, ok[:]); err != nil || ok[0] != acceptedByte {
		return Peer{}, fmt.Errorf("%w: %s refused this node (is the cluster secret the same?)", ErrHandshake, peer)
	}
	return peer, nil
}

// serverHandshake runs the server side on rw and returns the client.
func serverHandshake(rw io.ReadWriter, secret []byte, self Peer) (Peer, error) {
	hc := make([]byte, helloSize)
	if _, err := io.ReadFull(rw, hc); err != nil {
		return Peer{}, fmt.Errorf("handshake: %w", err)
	}
	peer, err := decodeHello(hc)
	if err != nil {
		return Peer{}, err
	}
	hs, err := newHello(self)
	if err != nil {
		return Peer{}, err
	}
	if _, err := rw.Write(append(hs, handshakeMAC(secret, "keel-wire server", hc, hs)...)); err != nil {
		return Peer{}, fmt.Errorf("handshake: %w", err)
	}
	mac := make([]byte, macSize)
	if _, err := io.ReadFull(rw, mac); err != nil {
		return Peer{}, fmt.Errorf("handshake with %s: %w", peer, err)
	}
	if !hmac.Equal(mac, handshakeMAC(secret, "keel-wire client", hc, hs)) {
		return Peer{}, fmt.Errorf("%w: %s does not hold this cluster's secret", ErrHandshake, peer)
	}
	if _, err := rw.Write([]byte{acceptedByte}); err != nil {
		return Peer{}, fmt.Errorf("handshake: %w", err)
	}
	return peer, nil
}

// ReadSecret reads the cluster secret file (hex, written by keel cluster
// init/join).
func ReadSecret(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read cluster secret: %w (keel cluster init or join writes it)", err)
	}
	s, err := hex.DecodeString(strings.TrimSpace(string(b)))
	if err != nil || len(s) < 16 {
		return nil, fmt.Errorf("read cluster secret %s: want at least 16 hex-encoded bytes", path)
	}
	return s, nil
}
