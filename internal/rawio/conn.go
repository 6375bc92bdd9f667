// Package rawio does a socket's reads and writes, and a file's cached reads, as raw system calls
// through the runtime's poller.
//
// A Go system call tells the scheduler that the thread may block: the
// scheduler's monitor thread then wakes every 20 microseconds while the
// process is busy, and takes the processor away from a call that lasts
// longer than that, waking another thread to run it. A read or write on a
// non-blocking socket never blocks (it returns EAGAIN, and the poller waits
// for readiness instead), so that bookkeeping buys nothing; on a busy
// machine, where a thread is often descheduled in the middle of a system
// call, it costs a thread hand-off per request. Profiles of the data path
// showed the monitor thread alone at a seventh of a process's CPU time.
//
// Conn keeps everything else of the net.Conn it wraps: deadlines, Close,
// and the poller's wake-up on readiness.
package rawio

import (
	"io"
	"net"
	"os"
	"syscall"
)

// Conn is a net.Conn whose Read, Write and WriteBuffers are raw system
// calls.
type Conn struct {
	net.Conn
	rc syscall.RawConn
}

// New wraps c; a connection without a file descriptor is returned as it is.
func New(c net.Conn) net.Conn {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return c
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return c
	}
	return &Conn{Conn: c, rc: rc}
}

// Read reads up to len(p) bytes; io.EOF at the end of the stream.
func (c *Conn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	var n int
	var errno syscall.Errno
	err := c.rc.Read(func(fd uintptr) bool {
		for {
			n, errno = read(fd, p)
			if errno != syscall.EINTR {
				return errno != syscall.EAGAIN
			}
		}
	})
	switch {
	case err != nil:
		return 0, c.opError("read", err)
	case errno != 0:
		return 0, c.opError("read", os.NewSyscallError("read", errno))
	case n == 0:
		return 0, io.EOF
	}
	return n, nil
}

// Write writes all of p, waiting for room in the socket as needed.
func (c *Conn) Write(p []byte) (int, error) {
	done := 0
	var errno syscall.Errno
	err := c.rc.Write(func(fd uintptr) bool {
		for done < len(p) {
			n, e := write(fd, p[done:])
			switch e {
			case 0:
				done += n
			case syscall.EINTR:
			case syscall.EAGAIN:
				return false
			default:
				errno = e
				return true
			}
		}
		return true
	})
	if err == nil && errno != 0 {
		err = os.NewSyscallError("write", errno)
	}
	if err != nil {
		return done, c.opError("write", err)
	}
	return done, nil
}

// maxIovecs is the most buffers one writev takes (the kernel's IOV_MAX).
const maxIovecs = 1024

// WriteBuffers writes every buffer of bufs in order, in as few writev
// calls as the socket allows. It consumes bufs: its slices are advanced
// past what was written.
func (c *Conn) WriteBuffers(bufs [][]byte) (int64, error) {
	var total int64
	iov := make([]syscall.Iovec, 0, min(len(bufs), maxIovecs))
	var errno syscall.Errno
	err := c.rc.Write(func(fd uintptr) bool {
		for len(bufs) > 0 {
			iov = iov[:0]
			for _, b := range bufs {
				if len(b) == 0 {
					continue
				}
				v := syscall.Iovec{Base: &b[0]}
				v.SetLen(len(b))
				iov = append(iov, v)
				if len(iov) == maxIovecs {
					break
				}
			}
			if len(iov) == 0 {
				bufs = nil
				break
			}
			n, e := writev(fd, iov)
			switch e {
			case 0:
			case syscall.EINTR:
				continue
			case syscall.EAGAIN:
				return false
			default:
				errno = e
				return true
			}
			total += int64(n)
			for n > 0 || (len(bufs) > 0 && len(bufs[0]) == 0) {
				k := min(n, len(bufs[0]))
				bufs[0] = bufs[0][k:]
				n -= k
				if len(bufs[0]) == 0 {
					bufs = bufs[1:]
				}
			}
		}
		return true
	})
	if err == nil && errno != 0 {
		err = os.NewSyscallError("writev", errno)
	}
	if err != nil {
		return total, c.opError("writev", err)
	}
	return total, nil
}

// CloseRead shuts down the reading side, where the connection has one.
func (c *Conn) CloseRead() error {
	if cr, ok := c.Conn.(interface{ CloseRead() error }); ok {
		return cr.CloseRead()
	}
	return &net.OpError{Op: "close", Net: c.LocalAddr().Network(), Err: syscall.ENOTSUP}
}

// CloseWrite shuts down the writing side, where the connection has one.
func (c *Conn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return &net.OpError{Op: "close", Net: c.LocalAddr().Network(), Err: syscall.ENOTSUP}
}

// opError wraps err the way the net package does, so that errors.Is
// finds net.ErrClosed and os.ErrDeadlineExceeded through it. The poller's
// own errors arrive already wrapped.
func (c *Conn) opError(op string, err error) error {
	if _, ok := err.(*net.OpError); ok {
		return err
	}
	return &net.OpError{Op: op, Net: c.LocalAddr().Network(), Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: err}
}

// WriteBuffers writes bufs to w: in one writev where w is a Conn, else
// through net.Buffers.
func WriteBuffers(w io.Writer, bufs [][]byte) (int64, error) {
	if c, ok := w.(*Conn); ok {
		return c.WriteBuffers(bufs)
	}
	b := net.Buffers(bufs)
	return b.WriteTo(w)
}
