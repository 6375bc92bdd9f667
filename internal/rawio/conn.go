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
	"sync"
	"syscall"
)

// Conn is a net.Conn whose Read, Write and WriteBuffers are raw system
// calls.
//
// The function each call hands the poller is made once, in New, and works
// on the Conn's own state for its direction: a closure made per call would
// escape to the heap (the poller is behind an interface), with every
// variable it shares, several allocations per system call on the data
// path. A mutex per direction keeps concurrent callers apart, as the
// poller's own lock would.
type Conn struct {
	net.Conn
	rc syscall.RawConn

	rmu sync.Mutex
	r   readOp

	wmu sync.Mutex
	w   writeOp
}

// readOp is the state of the Read in progress.
type readOp struct {
	p     []byte
	n     int
	errno syscall.Errno
	do    func(fd uintptr) bool
}

// writeOp is the state of the Write or WriteBuffers in progress: one of
// p and bufs is set.
type writeOp struct {
	p     []byte
	bufs  [][]byte
	iov   []syscall.Iovec // kept between calls
	done  int64
	errno syscall.Errno
	do    func(fd uintptr) bool
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
	k := &Conn{Conn: c, rc: rc}
	k.r.do = k.r.read
	k.w.do = k.w.write
	return k
}

// Read reads up to len(p) bytes; io.EOF at the end of the stream.
func (c *Conn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	c.rmu.Lock()
	c.r.p, c.r.n, c.r.errno = p, 0, 0
	err := c.rc.Read(c.r.do)
	n, errno := c.r.n, c.r.errno
	c.r.p = nil
	c.rmu.Unlock()
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

// read is the poller's function for Read: false asks it to wait for data.
func (r *readOp) read(fd uintptr) bool {
	for {
		r.n, r.errno = read(fd, r.p)
		if r.errno != syscall.EINTR {
			return r.errno != syscall.EAGAIN
		}
	}
}

// Write writes all of p, waiting for room in the socket as needed.
func (c *Conn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	c.w.p = p
	n, err := c.runWrite("write")
	c.w.p = nil
	c.wmu.Unlock()
	return int(n), err
}

// maxIovecs is the most buffers one writev takes (the kernel's IOV_MAX).
const maxIovecs = 1024

// WriteBuffers writes every buffer of bufs in order, in as few writev
// calls as the socket allows. It consumes bufs: its slices are advanced
// past what was written.
func (c *Conn) WriteBuffers(bufs [][]byte) (int64, error) {
	c.wmu.Lock()
	c.w.bufs = bufs
	n, err := c.runWrite("writev")
	c.w.bufs = nil
	clear(c.w.iov) // lets go of the buffers
	c.wmu.Unlock()
	return n, err
}

// runWrite runs the write set up in c.w; called with wmu held.
func (c *Conn) runWrite(op string) (int64, error) {
	c.w.done, c.w.errno = 0, 0
	err := c.rc.Write(c.w.do)
	if err == nil && c.w.errno != 0 {
		err = os.NewSyscallError(op, c.w.errno)
	}
	if err != nil {
		return c.w.done, c.opError(op, err)
	}
	return c.w.done, nil
}

// write is the poller's function for Write and WriteBuffers: it writes
// until everything is written (true) or the socket is full (false: the
// poller waits for room and calls again).
func (w *writeOp) write(fd uintptr) bool {
	for {
		var n int
		var e syscall.Errno
		if w.bufs == nil {
			if int(w.done) == len(w.p) {
				return true
			}
			n, e = write(fd, w.p[w.done:])
		} else {
			w.iov = w.iov[:0]
			for _, b := range w.bufs {
				if len(b) == 0 {
					continue
				}
				v := syscall.Iovec{Base: &b[0]}
				v.SetLen(len(b))
				w.iov = append(w.iov, v)
				if len(w.iov) == maxIovecs {
					break
				}
			}
			if len(w.iov) == 0 {
				return true
			}
			n, e = writev(fd, w.iov)
		}
		switch e {
		case 0:
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return false
		default:
			w.errno = e
			return true
		}
		w.done += int64(n)
		if w.bufs != nil {
			w.advance(n)
		}
	}
}

// advance moves bufs past n written bytes and the empty buffers after.
func (w *writeOp) advance(n int) {
	for n > 0 || (len(w.bufs) > 0 && len(w.bufs[0]) == 0) {
		k := min(n, len(w.bufs[0]))
		w.bufs[0] = w.bufs[0][k:]
		n -= k
		if len(w.bufs[0]) == 0 {
			w.bufs = w.bufs[1:]
		}
	}
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
