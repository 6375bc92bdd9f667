package client_test

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"syscall"
	"time"
)

// nbdConn is a minimal synchronous NBD client (fixed newstyle, NBD_OPT_GO,
// simple replies) for tests that need exact bytes at exact offsets and to
// see the server's error codes. It is independent of keel's nbd package,
// so it checks the server against the protocol document, not against
// itself.
type nbdConn struct {
	c      net.Conn
	size   int64
	flags  uint16
	handle uint64
}

const (
	nbdOptGo       = 7
	nbdRepAck      = 1
	nbdRepInfo     = 3
	nbdCmdRead     = 0
	nbdCmdWrite    = 1
	nbdCmdDisc     = 2
	nbdCmdFlush    = 3
	nbdCmdFlagFUA  = 1
	nbdFlagReadOnl = 1 << 1
)

// dialNBD connects to addr ("unix:/path" or "host:port") and opens export.
func dialNBD(addr, export string) (*nbdConn, error) {
	network := "tcp"
	if p, ok := strings.CutPrefix(addr, "unix:"); ok {
		network, addr = "unix", p
	}
	c, err := net.DialTimeout(network, addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	n := &nbdConn{c: c}
	if err := n.handshake(export); err != nil {
		c.Close()
		return nil, fmt.Errorf("nbd handshake with %s export %q: %w", addr, export, err)
	}
	return n, nil
}

func (n *nbdConn) handshake(export string) error {
	n.c.SetDeadline(time.Now().Add(10 * time.Second))
	defer n.c.SetDeadline(time.Time{})
	var hdr [18]byte
	if _, err := io.ReadFull(n.c, hdr[:]); err != nil {
		return err
	}
	if string(hdr[:8]) != "NBDMAGIC" || string(hdr[8:16]) != "IHAVEOPT" {
		return fmt.Errorf("bad greeting %q", hdr[:16])
	}
	if err := binary.Write(n.c, binary.BigEndian, uint32(1|2)); err != nil { // fixed newstyle, no zeroes
		return err
	}
	data := binary.BigEndian.AppendUint32(nil, uint32(len(export)))
	data = append(data, export...)
	data = binary.BigEndian.AppendUint16(data, 0)
	opt := append([]byte("IHAVEOPT"), make([]byte, 8)...)
	binary.BigEndian.PutUint32(opt[8:], nbdOptGo)
	binary.BigEndian.PutUint32(opt[12:], uint32(len(data)))
	if _, err := n.c.Write(append(opt, data...)); err != nil {
		return err
	}
	for {
		var rh [20]byte
		if _, err := io.ReadFull(n.c, rh[:]); err != nil {
			return err
		}
		typ := binary.BigEndian.Uint32(rh[12:])
		pl := make([]byte, binary.BigEndian.Uint32(rh[16:]))
		if _, err := io.ReadFull(n.c, pl); err != nil {
			return err
		}
		switch {
		case typ == nbdRepAck:
			if n.size == 0 {
				return errors.New("no export info before the ACK")
			}
			return nil
		case typ == nbdRepInfo && len(pl) >= 12 && binary.BigEndian.Uint16(pl) == 0:
			n.size = int64(binary.BigEndian.Uint64(pl[2:]))
			n.flags = binary.BigEndian.Uint16(pl[10:])
		case typ&(1<<31) != 0:
			return fmt.Errorf("option refused (reply %#x): %s", typ, pl)
		}
	}
}

// nbdError is an error reply; Errno is the NBD error code (Linux errno
// values: EIO 5, EPERM 1, ENOSPC 28, ...).
type nbdError struct{ Errno syscall.Errno }

func (e *nbdError) Error() string { return fmt.Sprintf("nbd error reply: %v", e.Errno) }

func (n *nbdConn) do(cmd, flags uint16, off int64, length uint32, payload, into []byte) error {
	n.handle++
	req := make([]byte, 28, 28+len(payload))
	binary.BigEndian.PutUint32(req, 0x25609513)
	binary.BigEndian.PutUint16(req[4:], flags)
	binary.BigEndian.PutUint16(req[6:], cmd)
	binary.BigEndian.PutUint64(req[8:], n.handle)
	binary.BigEndian.PutUint64(req[16:], uint64(off))
	binary.BigEndian.PutUint32(req[24:], length)
	n.c.SetDeadline(time.Now().Add(60 * time.Second))
	defer n.c.SetDeadline(time.Time{})
	if _, err := n.c.Write(append(req, payload...)); err != nil {
		return err
	}
	var rep [16]byte
	if _, err := io.ReadFull(n.c, rep[:]); err != nil {
		return err
	}
	if m := binary.BigEndian.Uint32(rep[:]); m != 0x67446698 {
		return fmt.Errorf("unexpected reply magic %#x (structured replies were not asked for)", m)
	}
	if h := binary.BigEndian.Uint64(rep[8:]); h != n.handle {
		return fmt.Errorf("reply handle %d, want %d", h, n.handle)
	}
	if e := binary.BigEndian.Uint32(rep[4:]); e != 0 {
		return &nbdError{Errno: syscall.Errno(e)}
	}
	if into != nil {
		_, err := io.ReadFull(n.c, into)
		return err
	}
	return nil
}

func (n *nbdConn) WriteAt(p []byte, off int64, fua bool) error {
	var fl uint16
	if fua {
		fl = nbdCmdFlagFUA
	}
	return n.do(nbdCmdWrite, fl, off, uint32(len(p)), p, nil)
}

func (n *nbdConn) ReadAt(p []byte, off int64) error {
	return n.do(nbdCmdRead, 0, off, uint32(len(p)), nil, p)
}

func (n *nbdConn) Flush() error { return n.do(nbdCmdFlush, 0, 0, 0, nil, nil) }

func (n *nbdConn) ReadOnly() bool { return n.flags&nbdFlagReadOnl != 0 }

// Close sends NBD_CMD_DISC and closes the connection.
func (n *nbdConn) Close() error {
	n.handle++
	req := make([]byte, 28)
	binary.BigEndian.PutUint32(req, 0x25609513)
	binary.BigEndian.PutUint16(req[6:], nbdCmdDisc)
	binary.BigEndian.PutUint64(req[8:], n.handle)
	n.c.SetDeadline(time.Now().Add(time.Second))
	n.c.Write(req)
	return n.c.Close()
}
