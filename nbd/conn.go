package nbd

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"unsafe"

	"golang.org/x/sync/semaphore"

	"keel/internal/later"
	"keel/internal/rawio"
)

// A connection's requests in flight are bounded by weight: each costs
// requestWeight plus its payload (the READ or WRITE buffer), and the reader
// stops taking requests off the socket while inFlightBudget is used up.
// That caps both the goroutines and the buffer memory of one client.
const (
	inFlightBudget = 64 << 20
	requestWeight  = 256 << 10
)

// conn is one client connection.
type conn struct {
	srv *Server
	nc  net.Conn
	br  *bufio.Reader
	log *slog.Logger

	// Negotiated during the handshake.
	noZeroes   bool
	structured bool
	metaExport *Export // export the meta contexts were set for
	metaAlloc  bool    // base:allocation selected

	export *Export
	ctx    context.Context
	cancel context.CancelFunc

	// Replies are queued whole and written by one goroutine at a time
	// (the sender that found no writer busy), which batches whatever
	// queued up meanwhile into one writev. Replies therefore never
	// interleave on the socket, and at high queue depth many replies
	// share one system call.
	wmu     sync.Mutex
	queue   []outReply
	spare   []outReply
	bufs    [][]byte // the writer's; kept between writes
	writing bool
	werr    error // first write error; later replies are dropped
	// flushLater is set while a reader's later.Queue holds a write of
	// the queued replies (sendTo); flushFn is flushReplies, bound once
	// (a method value made per call would be allocated).
	flushLater bool
	flushFn    func()

	// later is the reader's put-off work (an AsyncReader's requests to
	// its servers), run before each read of the socket.
	later later.Queue

	inflight sync.WaitGroup
	budget   *semaphore.Weighted
}

func newConn(s *Server, nc net.Conn) *conn {
	nc = rawio.New(nc)
	c := &conn{
		srv:    s,
		nc:     nc,
		log:    s.log.With("remote", nc.RemoteAddr().String()),
		budget: semaphore.NewWeighted(inFlightBudget),
	}
	c.br = bufio.NewReaderSize(later.Reader{R: nc, Before: c.later.Run}, 64<<10)
	c.flushFn = c.flushReplies
	return c
}

// stopReading makes the connection take no more requests: the reader sees
// end of stream, waits for the requests in flight to be answered and closes
// the connection.
func (c *conn) stopReading() {
	if cr, ok := c.nc.(interface{ CloseRead() error }); ok && cr.CloseRead() == nil {
		return
	}
	c.nc.Close()
}

// serve runs the connection to its end.
func (c *conn) serve() {
	defer c.nc.Close()
	e, err := c.negotiate()
	if err != nil {
		c.logEnd("handshake ended", err)
		return
	}
	if e == nil {
		return
	}
	c.run(e)
}

// run serves the transmission phase on export e.
func (c *conn) run(e *Export) {
	if err := e.bind(c); err != nil {
		c.log.Info("nbd: export closed during handshake", "export", e.name, "err", err)
		return
	}
	defer e.unbind(c)
	c.export = e
	c.ctx, c.cancel = context.WithCancel(e.ctx)
	defer c.cancel()
	c.log = c.log.With("export", e.name)
	c.log.Debug("nbd: client connected", "structured", c.structured, "base_allocation", c.metaAlloc)
	err := c.transmit()
	c.inflight.Wait()
	c.logEnd("client disconnected", err)
}

func (c *conn) logEnd(msg string, err error) {
	switch {
	case err == nil, errors.Is(err, errClientGone), errors.Is(err, net.ErrClosed):
		c.log.Debug("nbd: "+msg, "err", err)
	default:
		c.log.Warn("nbd: "+msg, "err", err)
	}
}

// transmit reads requests until the client disconnects, dispatching each
// to its own goroutine, or, for a READ an AsyncReader backend can start at
// once, to the backend without one. WRITE payloads are read here, in
// order, since they follow their header on the stream.
func (c *conn) transmit() error {
	defer c.later.Run()
	ar, _ := c.export.backend.(AsyncReader)
	aw, _ := c.export.backend.(AsyncWriter)
	var hdr [requestLen]byte
	for {
		if _, err := io.ReadFull(c.br, hdr[:]); err != nil {
			return quietEOF(fmt.Errorf("read request: %w", err))
		}
		req, err := parseRequest(hdr[:])
		if err != nil {
			return err
		}
		if req.typ == cmdDisc {
			return nil
		}
		weight := int64(requestWeight)
		if req.typ == cmdRead || req.typ == cmdWrite {
			weight = min(weight+int64(req.length), inFlightBudget)
		}
		if !c.budget.TryAcquire(weight) {
			// The requests put off may be what the budget waits for.
			c.later.Run()
			// Cannot fail: the context is never cancelled.
			_ = c.budget.Acquire(context.Background(), weight)
		}
		if req.typ == cmdRead && ar != nil && c.startRead(ar, req, weight) {
			continue
		}
		var payload []byte
		if req.typ == cmdWrite {
			if req.length > c.export.info.MaxBlock {
				// Too large to accept: skip the payload, refuse.
				if _, err := io.CopyN(io.Discard, c.br, int64(req.length)); err != nil {
					return quietEOF(fmt.Errorf("read write payload: %w", err))
				}
				c.replyError(req, fmt.Errorf("write of %d bytes exceeds the maximum block size %d: %w", req.length, c.export.info.MaxBlock, ErrInvalid))
				c.budget.Release(weight)
				continue
			}
			payload = getBuf(int(req.length))
			if _, err := io.ReadFull(c.br, payload); err != nil {
				putBuf(payload)
				c.budget.Release(weight)
				return quietEOF(fmt.Errorf("read write payload: %w", err))
			}
		}
		if payload != nil && aw != nil && c.startWrite(aw, req, payload, weight) {
			continue
		}
		c.inflight.Add(1)
		go func() {
			defer func() {
				c.budget.Release(weight)
				c.inflight.Done()
			}()
			c.handle(req, payload)
			if payload != nil {
				putBuf(payload)
			}
		}()
	}
}

// handle executes one request and sends its reply.
func (c *conn) handle(req request, payload []byte) {
	if err := c.check(req); err != nil {
		c.replyError(req, err)
		return
	}
	e := c.export
	b := e.backend
	off, n := int64(req.offset), int64(req.length)
	fua := req.flags&cmdFlagFUA != 0
	var err error
	switch req.typ {
	case cmdRead:
		c.read(req)
		return
	case cmdWrite:
		err = b.WriteAt(c.ctx, payload, off, fua)
	case cmdFlush:
		err = b.Flush(c.ctx)
	case cmdTrim:
		err = b.Trim(c.ctx, off, n, fua)
	case cmdWriteZeroes:
		err = b.WriteZeroes(c.ctx, off, n, ZeroFlags{
			FUA:    fua,
			NoHole: req.flags&cmdFlagNoHole != 0,
			Fast:   req.flags&cmdFlagFastZero != 0,
		})
	case cmdCache:
		err = b.Cache(c.ctx, off, n)
	case cmdBlockStatus:
		c.blockStatus(req)
		return
	}
	c.replyDone(nil, req, err)
}

// replyDone answers a command that returns no data, whose backend call
// ended with err; the reply goes out as sendTo(q) does.
func (c *conn) replyDone(q *later.Queue, req request, err error) {
	if err != nil {
		c.replyErrorTo(q, req, c.cause(err))
		return
	}
	var h [maxHead]byte
	c.sendTo(q, nil, appendSimpleReply(h[:0], 0, req.handle), nil)
}

// cause is the error to report for a failed backend call: the export's
// failure when it was closed meanwhile (the backend then mostly sees a
// cancelled context), else the backend's own error.
func (c *conn) cause(err error) error {
	if ferr := c.export.Err(); ferr != nil {
		return ferr
	}
	return err
}

// flagsAllowed lists the command flags each command accepts. FUA is
// accepted on every command, as the protocol asks.
var flagsAllowed = map[uint16]uint16{
	cmdRead:        cmdFlagFUA | cmdFlagDF,
	cmdWrite:       cmdFlagFUA,
	cmdFlush:       cmdFlagFUA,
	cmdTrim:        cmdFlagFUA,
	cmdCache:       cmdFlagFUA,
	cmdWriteZeroes: cmdFlagFUA | cmdFlagNoHole | cmdFlagFastZero,
	cmdBlockStatus: cmdFlagFUA | cmdFlagReqOne,
}

// check validates a request against the export before it reaches the
// backend.
func (c *conn) check(req request) error {
	e := c.export
	if err := e.Err(); err != nil {
		return err
	}
	allowed, known := flagsAllowed[req.typ]
	if !known {
		return fmt.Errorf("command %d: %w: unknown command", req.typ, ErrInvalid)
	}
	if req.flags&^allowed != 0 {
		return fmt.Errorf("command %d: %w: flags %#x", req.typ, ErrInvalid, req.flags)
	}
	if req.flags&cmdFlagDF != 0 && !c.structured {
		return fmt.Errorf("read: %w: DF without structured replies", ErrInvalid)
	}
	if req.flags&cmdFlagFastZero != 0 && !e.info.FastZero {
		return fmt.Errorf("write zeroes: %w: fast zero was not offered", ErrInvalid)
	}
	write := req.typ == cmdWrite || req.typ == cmdTrim || req.typ == cmdWriteZeroes
	if write && e.info.ReadOnly {
		return fmt.Errorf("export %q: %w", e.name, ErrReadOnly)
	}
	if req.typ == cmdFlush {
		return nil
	}
	if req.typ == cmdBlockStatus && !c.metaAlloc {
		return fmt.Errorf("block status: %w: no metadata context negotiated", ErrInvalid)
	}
	if req.length == 0 {
		return fmt.Errorf("command %d: %w: zero length", req.typ, ErrInvalid)
	}
	if (req.typ == cmdRead || req.typ == cmdWrite) && req.length > e.info.MaxBlock {
		return fmt.Errorf("command %d: %w: %d bytes exceed the maximum block size %d", req.typ, ErrInvalid, req.length, e.info.MaxBlock)
	}
	end := req.offset + uint64(req.length)
	if end < req.offset || end > uint64(e.info.Size) {
		err := ErrInvalid
		if write {
			err = ErrNoSpace
		}
		return fmt.Errorf("command %d: %w: range %d+%d past the end %d", req.typ, err, req.offset, req.length, e.info.Size)
	}
	if m := uint64(e.info.MinBlock); req.offset%m != 0 || uint64(req.length)%m != 0 {
		return fmt.Errorf("command %d: %w: range %d+%d not aligned to %d", req.typ, ErrInvalid, req.offset, req.length, m)
	}
	return nil
}

// read serves NBD_CMD_READ on the request's goroutine.
func (c *conn) read(req request) {
	buf := getBuf(int(req.length))
	err := c.export.backend.ReadAt(c.ctx, buf, int64(req.offset))
	c.readDone(nil, req, buf, err)
}

// startRead offers a READ to an AsyncReader backend, from the reader; it
// reports false when the backend cannot start it (or the request is to be
// refused), for the caller to serve it the ordinary way.
func (c *conn) startRead(ar AsyncReader, req request, weight int64) bool {
	if c.check(req) != nil {
		return false
	}
	op := getAsyncOp(c, req, getBuf(int(req.length)), weight)
	c.inflight.Add(1)
	if ar.StartRead(c.ctx, op.buf, int64(req.offset), &c.later, op.readFn) {
		return true
	}
	c.inflight.Done()
	putBuf(op.buf)
	op.put()
	return false
}

// asyncOp is a READ or WRITE started on an AsyncReader or AsyncWriter.
// They are pooled, each with its completion functions made once: a
// closure per request would be allocated.
type asyncOp struct {
	c      *conn
	req    request
	buf    []byte // the read's buffer, the write's payload
	weight int64

	readFn, writeFn func(err error, q *later.Queue) // readDone, writeDone, bound
}

var asyncOps = sync.Pool{New: func() any { return new(asyncOp) }}

func getAsyncOp(c *conn, req request, buf []byte, weight int64) *asyncOp {
	op := asyncOps.Get().(*asyncOp)
	if op.readFn == nil {
		op.readFn, op.writeFn = op.readDone, op.writeDone
	}
	op.c, op.req, op.buf, op.weight = c, req, buf, weight
	return op
}

func (op *asyncOp) put() {
	op.c, op.buf = nil, nil
	asyncOps.Put(op)
}

// readDone answers the read; the backend calls it once, through readFn.
func (op *asyncOp) readDone(err error, q *later.Queue) {
	c, req, buf, weight := op.c, op.req, op.buf, op.weight
	op.put()
	c.readDone(q, req, buf, err)
	c.budget.Release(weight)
	c.inflight.Done()
}

// writeDone answers the write; the backend calls it once, through writeFn.
func (op *asyncOp) writeDone(err error, q *later.Queue) {
	c, req, payload, weight := op.c, op.req, op.buf, op.weight
	op.put()
	c.replyDone(q, req, err)
	putBuf(payload)
	c.budget.Release(weight)
	c.inflight.Done()
}

// startWrite offers a WRITE, its payload read, to an AsyncWriter backend
// as startRead does a READ; on true the payload is the backend's until
// it is done.
func (c *conn) startWrite(aw AsyncWriter, req request, payload []byte, weight int64) bool {
	if c.check(req) != nil {
		return false
	}
	op := getAsyncOp(c, req, payload, weight)
	c.inflight.Add(1)
	if aw.StartWrite(c.ctx, payload, int64(req.offset), req.flags&cmdFlagFUA != 0, &c.later, op.writeFn) {
		return true
	}
	c.inflight.Done()
	op.put()
	return false
}

// readDone answers a READ whose backend read ended with err, buf holding
// the data; the reply goes out as sendTo(q) does. With structured
// replies, a range that reads as all zeroes goes back as one OFFSET_HOLE
// chunk instead of its bytes.
func (c *conn) readDone(q *later.Queue, req request, buf []byte, err error) {
	if err != nil {
		putBuf(buf)
		c.replyErrorTo(q, req, c.cause(err))
		return
	}
	var hb [maxHead]byte
	if !c.structured {
		c.sendTo(q, buf, appendSimpleReply(hb[:0], 0, req.handle), buf)
		return
	}
	if allZero(buf) {
		putBuf(buf)
		h := appendStructReply(hb[:0], replyFlagDone, replyTypeOffsetHole, req.handle, 12)
		h = binary.BigEndian.AppendUint64(h, req.offset)
		c.sendTo(q, nil, binary.BigEndian.AppendUint32(h, req.length), nil)
		return
	}
	h := appendStructReply(hb[:0], replyFlagDone, replyTypeOffsetData, req.handle, 8+req.length)
	c.sendTo(q, buf, binary.BigEndian.AppendUint64(h, req.offset), buf)
}

// maxExtents bounds the descriptors of one BLOCK_STATUS reply; the
// protocol lets the server describe less than was asked.
const maxExtents = 1 << 14

// blockStatus serves NBD_CMD_BLOCK_STATUS for base:allocation.
func (c *conn) blockStatus(req request) {
	exts, err := c.export.backend.BlockStatus(c.ctx, int64(req.offset), int64(req.length))
	if err != nil {
		c.replyError(req, c.cause(err))
		return
	}
	p := binary.BigEndian.AppendUint32(nil, metaBaseAllocationID)
	left := int64(req.length)
	for i, x := range exts {
		if left == 0 || i == maxExtents || (i == 1 && req.flags&cmdFlagReqOne != 0) {
			break
		}
		n := min(x.Length, left)
		if n <= 0 {
			break
		}
		var flags uint32
		if x.Hole {
			flags |= stateHole
		}
		if x.Zero {
			flags |= stateZero
		}
		p = binary.BigEndian.AppendUint32(p, uint32(n))
		p = binary.BigEndian.AppendUint32(p, flags)
		left -= n
	}
	if len(p) == 4 {
		c.replyError(req, fmt.Errorf("block status %d+%d: backend described nothing: %w", req.offset, req.length, ErrInvalid))
		return
	}
	var hb [maxHead]byte
	c.sendTo(nil, nil, appendStructReply(hb[:0], replyFlagDone, replyTypeBlockStatus, req.handle, uint32(len(p))), p)
}

// replyError answers req with an error: a structured ERROR chunk carrying
// the message when structured replies were negotiated, else a simple
// reply with the errno.
func (c *conn) replyError(req request, err error) {
	c.replyErrorTo(nil, req, err)
}

// replyErrorTo is replyError with the reply sent as sendTo(q) does.
func (c *conn) replyErrorTo(q *later.Queue, req request, err error) {
	errno := errnoOf(err)
	c.log.Debug("nbd: request failed", "cmd", req.typ, "offset", req.offset, "length", req.length, "errno", errno, "err", err)
	var hb [maxHead]byte
	if !c.structured {
		c.sendTo(q, nil, appendSimpleReply(hb[:0], errno, req.handle), nil)
		return
	}
	msg := err.Error()
	if len(msg) > maxStringLen {
		msg = msg[:maxStringLen]
	}
	h := appendStructReply(hb[:0], replyFlagDone, replyTypeError, req.handle, uint32(6+len(msg)))
	h = binary.BigEndian.AppendUint32(h, errno)
	h = binary.BigEndian.AppendUint16(h, uint16(len(msg)))
	c.sendTo(q, nil, h, []byte(msg))
}

// maxHead is the longest reply header: a structured reply's chunk header
// and the 12 bytes of an OFFSET_HOLE chunk.
const maxHead = 32

// outReply is one queued reply: its header (a copy, so that senders can
// build it on their stack), its data, and a pooled buffer to return once
// they are written.
type outReply struct {
	head    [maxHead]byte
	headLen int
	data    []byte
	release []byte
}

// sendTo queues one whole reply: head (at most maxHead bytes, copied)
// followed by data. Without q it is written at once, unless another
// goroutine is writing (that one writes this reply too, and sendTo returns
// at once). With q set the reply is only queued and written when q runs,
// together with the replies queued meanwhile, unless a writer busy
// meanwhile takes it first. release, if not nil, goes back to the buffer
// pool once written. After a write error the connection is closed, which
// also ends the reader.
func (c *conn) sendTo(q *later.Queue, release, head, data []byte) {
	if len(head) > maxHead {
		panic("nbd: reply header longer than maxHead")
	}
	c.wmu.Lock()
	c.queue = append(c.queue, outReply{data: data, release: release})
	r := &c.queue[len(c.queue)-1]
	r.headLen = copy(r.head[:], head)
	if c.writing {
		c.wmu.Unlock()
		return
	}
	if q != nil {
		if !c.flushLater {
			c.flushLater = true
			q.Add(c.flushFn)
		}
		c.wmu.Unlock()
		return
	}
	c.writing = true
	c.writeQueue()
}

// flushReplies writes the replies sendTo queued, unless a writer is busy
// (it writes them).
func (c *conn) flushReplies() {
	c.wmu.Lock()
	c.flushLater = false
	if c.writing || len(c.queue) == 0 {
		c.wmu.Unlock()
		return
	}
	c.writing = true
	c.writeQueue()
}

// writeQueue writes the queue until it is empty. Called with wmu held
// and writing set; returns with wmu released and writing clear.
func (c *conn) writeQueue() {
	for len(c.queue) > 0 {
		q := c.queue
		c.queue = c.spare[:0]
		c.wmu.Unlock()
		bufs := c.bufs[:0]
		for i := range q {
			r := &q[i]
			bufs = append(bufs, r.head[:r.headLen])
			if len(r.data) > 0 {
				bufs = append(bufs, r.data)
			}
		}
		if c.werr == nil {
			if _, err := rawio.WriteBuffers(c.nc, bufs); err != nil {
				c.werr = err
				c.nc.Close()
			}
		}
		clear(bufs)
		c.bufs = bufs[:0]
		for i := range q {
			if q[i].release != nil {
				putBuf(q[i].release)
			}
			q[i] = outReply{}
		}
		c.wmu.Lock()
		c.spare = q[:0]
	}
	c.writing = false
	c.wmu.Unlock()
}

// allZero reports whether b holds only zero bytes.
func allZero(b []byte) bool {
	for len(b) >= 8 {
		if binary.NativeEndian.Uint64(b) != 0 {
			return false
		}
		b = b[8:]
	}
	for _, x := range b {
		if x != 0 {
			return false
		}
	}
	return true
}

// Buffer pools by power-of-two size class, 4 KiB to 32 MiB.
const (
	minBufShift = 12
	maxBufShift = 25
)

var bufPools [maxBufShift - minBufShift + 1]sync.Pool

func bufClass(n int) int {
	c := 0
	for n > 1<<(minBufShift+c) {
		c++
	}
	return c
}

// getBuf returns a buffer of length n from the pools.
func getBuf(n int) []byte {
	c := bufClass(n)
	if c >= len(bufPools) {
		return make([]byte, n)
	}
	if p, ok := bufPools[c].Get().(*byte); ok {
		return unsafe.Slice(p, 1<<(minBufShift+c))[:n]
	}
	return make([]byte, n, 1<<(minBufShift+c))
}

// putBuf returns a buffer from getBuf. The pools hold a pointer to the
// first byte (a buffer's capacity is its class's size): a pointer goes
// into an interface without an allocation, a slice would not.
func putBuf(b []byte) {
	c := bufClass(cap(b))
	if c >= len(bufPools) || cap(b) != 1<<(minBufShift+c) {
		return
	}
	bufPools[c].Put(unsafe.SliceData(b))
}
