// Package nbd is keel's NBD server: the fixed newstyle handshake, the
// transmission phase with structured replies and base:allocation block
// status, and the exports it serves. What an export stores is a Backend:
// the volume I/O engine in production, the memory and file backends of
// this package in tests and tools. See DESIGN.md.
package nbd

import (
	"context"
	"errors"

	"keel/internal/later"
)

// Errors of the package. Backends return (or wrap) the first group so that
// the server answers with the right NBD error code.
var (
	// ErrReadOnly: a write reached a read-only export or backend (EPERM).
	ErrReadOnly = errors.New("export is read-only")
	// ErrNoSpace: the backend is out of space, or a write went past the
	// end of the export (ENOSPC).
	ErrNoSpace = errors.New("no space left")
	// ErrInvalid: a request the export cannot accept, e.g. past its end
	// or not aligned to its minimum block size (EINVAL).
	ErrInvalid = errors.New("invalid request")
	// ErrNotFast: WriteZeroes with Fast set would not be faster than
	// writing zeroes (ENOTSUP, as NBD_CMD_FLAG_FAST_ZERO asks).
	ErrNotFast = errors.New("zeroing would not be fast")
	// ErrUnsupported: the backend does not do this operation (ENOTSUP).
	ErrUnsupported = errors.New("operation not supported")
	// ErrOverflow: a read too large to send unfragmented (EOVERFLOW).
	ErrOverflow = errors.New("request too large")
	// ErrShutdown: the export is going away; clients must disconnect
	// (ESHUTDOWN).
	ErrShutdown = errors.New("export is shutting down")
	// ErrVolumeLost: the export was closed because its volume is lost to
	// this node (fenced); every request fails with EIO.
	ErrVolumeLost = errors.New("volume lost")

	// ErrProtocol: the peer broke the NBD protocol.
	ErrProtocol = errors.New("nbd protocol violation")
	// ErrExportExists: an export of that name is already served.
	ErrExportExists = errors.New("export already exists")
	// ErrNoExport: no export of that name.
	ErrNoExport = errors.New("no such export")
	// ErrExportBusy: the export still has open connections.
	ErrExportBusy = errors.New("export is open")
	// ErrNoKernelNBD: the kernel has no nbd driver (module not loaded).
	ErrNoKernelNBD = errors.New("kernel has no nbd driver")
	// ErrServerClosed: Serve called on a closed server.
	ErrServerClosed = errors.New("nbd server closed")

	// errClientGone marks a client that hung up; it is logged quietly.
	errClientGone = errors.New("client disconnected")
)

// Info describes an export's fixed properties. The server advertises them
// in the handshake and enforces them on every request.
type Info struct {
	// Size of the export in bytes.
	Size int64
	// Block size constraints (NBD_INFO_BLOCK_SIZE). MinBlock is the
	// smallest addressable unit: requests not aligned to it are refused
	// with EINVAL. PreferredBlock is the size below which I/O costs a
	// read-modify-write. MaxBlock bounds READ and WRITE payloads. Zero
	// values mean 1, 4096 and 32 MiB.
	MinBlock, PreferredBlock, MaxBlock uint32
	// ReadOnly exports refuse writes with EPERM.
	ReadOnly bool
	// MultiConn says that the backend shares one cache across all
	// connections, so that FLUSH and FUA on one connection cover writes
	// completed on any (NBD_FLAG_CAN_MULTI_CONN).
	MultiConn bool
	// FastZero says WriteZeroes with Fast set is implemented (it may
	// still return ErrNotFast for a given range).
	FastZero bool
	// Description is shown to clients that ask (NBD_INFO_DESCRIPTION).
	Description string
}

// Default block size constraints.
const (
	DefaultMinBlock       = 1
	DefaultPreferredBlock = 4096
	DefaultMaxBlock       = 32 << 20
)

// withDefaults fills zero block sizes.
func (i Info) withDefaults() Info {
	if i.MinBlock == 0 {
		i.MinBlock = DefaultMinBlock
	}
	if i.PreferredBlock == 0 {
		i.PreferredBlock = max(DefaultPreferredBlock, i.MinBlock)
	}
	if i.MaxBlock == 0 {
		i.MaxBlock = DefaultMaxBlock
	}
	return i
}

// ZeroFlags modify WriteZeroes.
type ZeroFlags struct {
	// FUA: the zeroes are durable before WriteZeroes returns.
	FUA bool
	// NoHole: the range must stay allocated (write zeroes, do not punch).
	NoHole bool
	// Fast: return ErrNotFast at once, without changing anything, unless
	// zeroing the range is faster than writing zeroes.
	Fast bool
}

// Extent is one run of the base:allocation map.
type Extent struct {
	Length int64
	// Hole: not allocated in the backend (NBD_STATE_HOLE).
	Hole bool
	// Zero: reads as zeroes (NBD_STATE_ZERO).
	Zero bool
}

// Backend stores an export's bytes. The server calls it concurrently from
// many goroutines (one per in-flight request, across every connection);
// requests never reach it past Size, unaligned to MinBlock, or (for
// ReadAt and WriteAt) longer than MaxBlock. The context is cancelled when
// the export is closed or the connection ends, so a backend blocked on the
// network can give up.
type Backend interface {
	// Info returns the export's properties; it is called when a client
	// negotiates and must not change while the export is served.
	Info() Info
	// ReadAt fills p from offset off.
	ReadAt(ctx context.Context, p []byte, off int64) error
	// WriteAt writes p at off; with fua it is durable on return.
	WriteAt(ctx context.Context, p []byte, off int64, fua bool) error
	// Flush makes every write completed before it durable.
	Flush(ctx context.Context) error
	// Trim tells the backend the range is no longer needed; it may read
	// back as anything afterwards (keel's backends return zeroes).
	Trim(ctx context.Context, off, length int64, fua bool) error
	// WriteZeroes makes the range read as zeroes.
	WriteZeroes(ctx context.Context, off, length int64, f ZeroFlags) error
	// BlockStatus describes the range from off in consecutive extents.
	// It may cover less than length (at least one byte) but not more.
	BlockStatus(ctx context.Context, off, length int64) ([]Extent, error)
	// Cache prefetches the range; a backend without a cache returns nil.
	Cache(ctx context.Context, off, length int64) error
}

// AsyncReader is a Backend that can also start a read without a goroutine
// of its own waiting for it. The server offers every READ to StartRead
// first, from the connection's reader, and falls back to ReadAt (on a
// goroutine of the request's own) when it returns false.
type AsyncReader interface {
	// StartRead starts filling p from offset off and reports true, or
	// reports false, having done nothing, when it cannot start the read
	// at once (it would have to wait). It must not block. On true, done
	// runs exactly once with the result, possibly before StartRead
	// returns, on a goroutine that must not block either; q is that
	// goroutine's queue of put-off work, if it has one, where done may
	// put off sending the reply. q in StartRead is the calling reader's
	// own queue, run before it next reads its socket: the backend may put
	// off sending its requests there.
	StartRead(ctx context.Context, p []byte, off int64, q *later.Queue, done func(err error, q *later.Queue)) bool
}

// AsyncWriter is to WRITE what AsyncReader is to READ: StartWrite starts
// writing p at off (with fua, durable when done runs) or reports false,
// having done nothing. p stays untouched until done has run.
type AsyncWriter interface {
	StartWrite(ctx context.Context, p []byte, off int64, fua bool, q *later.Queue, done func(err error, q *later.Queue)) bool
}
