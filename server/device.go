package server

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"

	"keel/internal/rawio"
)

// Device is what a store lives on: a block device or a file, or in tests a
// wrapper that simulates power loss. Sync makes every completed WriteAt
// durable.
type Device interface {
	io.ReaderAt
	io.WriterAt
	Sync() error
	Close() error
}

// DirectIO chooses the data I/O that bypasses the page cache (O_DIRECT),
// where the file system allows it.
type DirectIO struct {
	// All: every read and write of data, as a storage server should do:
	// the clients cache, and a second copy in this host's cache only
	// evicts other data.
	All bool
	// WritesFrom: without All, writes of at least this many bytes (0:
	// none). Copying a large write into the page cache costs more CPU
	// than the device takes to write it, and the copy evicts other data.
	WritesFrom int
}

// fileDevice is a block device or regular file; Sync is fdatasync. With a
// direct descriptor, I/O in the data region (from directFrom) that
// DirectIO chooses bypasses the page cache (O_DIRECT). Metadata stays
// buffered: its 512-byte records are below a 4Kn device's direct I/O unit,
// and the regions never overlap. fdatasync on either descriptor flushes
// the file and the device cache.
//
// With only large writes direct, data pages are also cached: the kernel
// writes back and drops the cached pages of a direct write's range around
// it, and the store never has a page in flight both ways, since every
// block's reads and writes are ordered by its AU's stripe lock and the
// folios this descriptor makes never span AUs (AUs are 1 MiB aligned,
// folios at most cachedPiece). Read ahead of a cache miss (readAround)
// adds clean pages only, which the kernel drops around a direct write too.
// A folio that spans two AUs can still come from elsewhere (another
// process reading the file, or the cache of an earlier run without
// FADV_RANDOM), and a buffered write into one of its AUs during a direct
// write into the other may keep the kernel from dropping it; then a
// stale page is served, its block's CRC does not match, and the read
// fails over to another replica.
type fileDevice struct {
	*os.File
	direct     *os.File // nil: all I/O buffered
	directAll  bool     // all data I/O direct; else writes from directWritesFrom
	directFrom int64
	// directWritesFrom: without directAll, the smallest write that goes
	// direct; 0: none.
	directWritesFrom int
	aio              *aioRing    // direct I/O through native AIO; nil: pread/pwrite
	aioErr           error       // why direct I/O has no AIO ring
	contig           *contigBufs // for large direct I/O; nil: none
	// raw reaches the buffered descriptor for reads from the page cache
	// by raw system call (rawio.ReadCached); noCached is set once the
	// file system refused them.
	raw      syscall.RawConn
	noCached atomic.Bool
	// noRawWrite is set where the kernel has no pwritev2 (small buffered
	// writes by raw system call, rawio.WriteAt).
	noRawWrite atomic.Bool
}

// rawWriteMax is the largest buffered write made by raw system call: a
// few pages, over before the scheduler would notice.
const rawWriteMax = 64 << 10

// cachedPiece is the most of a buffered write handed to the kernel in one
// call. The page cache sizes the folio it adds for a write by the length
// of the write (ext4 since Linux 6.16), and every later write into that
// folio walks all of its buffer heads: a 4 KiB write into a folio of a
// former 1 MiB write cost a server about 10 us, and random writes on a
// volume filled sequentially ran at three quarters of the rate they reach
// with 64 KiB pieces. A piece of this size costs one more system call per
// 64 KiB, next to the 35 us its copy takes.
const cachedPiece = 64 << 10

// writePieces writes b at off in pieces of at most cachedPiece.
func writePieces(w io.WriterAt, b []byte, off int64) (int, error) {
	n := 0
	for n < len(b) {
		m, err := w.WriteAt(b[n:min(len(b), n+cachedPiece)], off+int64(n))
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

func (d *fileDevice) Sync() error {
	for {
		err := syscall.Fdatasync(int(d.Fd()))
		if err != syscall.EINTR {
			return err
		}
	}
}

func (d *fileDevice) Close() error {
	if d.aio != nil {
		d.aio.close()
	}
	if d.direct != nil {
		d.direct.Close()
	}
	return d.File.Close()
}

// setDataOffset is called by Open once the superblock says where data
// starts.
func (d *fileDevice) setDataOffset(off int64) { d.directFrom = off }

// cached reports whether data reads and small writes go through the page
// cache.
func (d *fileDevice) cached() bool { return !d.directAll }

const directAlign = 4096

// bouncePool holds *[]byte (a pointer, so Put does not allocate).
var bouncePool = sync.Pool{New: func() any { b := alignedBuf(MaxDirectIO); return &b }}

// MaxDirectIO is the largest direct I/O done through a bounce buffer.
const MaxDirectIO = 4 << 20

func alignedBuf(n int) []byte {
	b := make([]byte, n+directAlign)
	skip := (directAlign - int(uintptr(unsafe.Pointer(&b[0]))%directAlign)) % directAlign
	return b[skip : skip+n : skip+n]
}

func aligned(b []byte) bool {
	return len(b) > 0 && uintptr(unsafe.Pointer(&b[0]))%directAlign == 0 && len(b)%directAlign == 0
}

// directable reports whether b at off may be direct I/O: data, aligned,
// and no larger than a bounce buffer.
func (d *fileDevice) directable(b []byte, off int64) bool {
	return d.direct != nil && d.directFrom > 0 && off >= d.directFrom && off%directAlign == 0 && len(b)%directAlign == 0 && len(b) <= MaxDirectIO
}

func (d *fileDevice) readDirect(b []byte, off int64) bool {
	return d.directAll && d.directable(b, off)
}

func (d *fileDevice) writeDirect(b []byte, off int64) bool {
	return (d.directAll || d.directWritesFrom > 0 && len(b) >= d.directWritesFrom) && d.directable(b, off)
}

// readAround is the aligned span of data a buffered read that misses the
// cache asks the kernel to read, without waiting for more than its own
// part: with large writes direct, data read back soon after would
// otherwise come from the device 4 KiB at a time. It is the default
// direct_write_min, so a span mostly lies within one direct write. Random
// reads after a sequential fill of the demo's volume went from 42-45k to
// 48-49k IOPS against 64 KiB; the cost is the device reading more than
// asked on a cold, truly random workload. The kernel reads around a page
// fault likewise (128 KiB), but the descriptor has no read-ahead (see
// OpenDevice).
const readAround = 256 << 10

func (d *fileDevice) ReadAt(b []byte, off int64) (int, error) {
	if !d.readDirect(b, off) {
		n := d.readCached(b, off)
		if n == len(b) {
			return n, nil
		}
		if rest := int64(len(b) - n); d.raw != nil && d.directFrom > 0 && off >= d.directFrom && rest < readAround {
			d.readAround((off+int64(n))&^(readAround-1), (off+int64(len(b))+readAround-1)&^(readAround-1))
		}
		m, err := d.File.ReadAt(b[n:], off+int64(n))
		return n + m, err
	}
	if cb := d.contigFor(b); cb != nil {
		defer d.contig.put(cb)
		n, err := d.directIO(false, cb[:len(b)], off)
		copy(b, cb[:n])
		return n, err
	}
	if aligned(b) {
		return d.directIO(false, b, off)
	}
	bp := bouncePool.Get().(*[]byte)
	defer bouncePool.Put(bp)
	bb := *bp
	n, err := d.directIO(false, bb[:len(b)], off)
	copy(b, bb[:n])
	return n, err
}

func (d *fileDevice) WriteAt(b []byte, off int64) (int, error) {
	if !d.writeDirect(b, off) {
		if d.raw != nil && len(b) <= rawWriteMax && !d.noRawWrite.Load() {
			r := rawCalls.Get().(*rawCall)
			r.b, r.off = b, off
			cerr := d.raw.Control(r.write)
			n, err, unsupported := r.n, r.err, r.unsupported
			r.put()
			if cerr != nil {
				return 0, cerr
			}
			if unsupported {
				d.noRawWrite.Store(true)
			} else if err != nil || n == len(b) {
				return n, err
			}
			// A short write: the ordinary call writes the rest or says why not.
			m, err := d.File.WriteAt(b[n:], off+int64(n))
			return n + m, err
		}
		return writePieces(d.File, b, off)
	}
	if cb := d.contigFor(b); cb != nil {
		defer d.contig.put(cb)
		return d.directIO(true, cb[:copy(cb, b)], off)
	}
	if aligned(b) {
		return d.directIO(true, b, off)
	}
	bp := bouncePool.Get().(*[]byte)
	defer bouncePool.Put(bp)
	bb := *bp
	copy(bb, b)
	return d.directIO(true, bb[:len(b)], off)
}

// ReadCachedAt reads what the page cache holds of b's range, from its
// start, without waiting for the device: 0 for direct I/O.
func (d *fileDevice) ReadCachedAt(b []byte, off int64) int {
	if d.readDirect(b, off) {
		return 0
	}
	return d.readCached(b, off)
}

// readCached reads what the page cache holds of b's range from its start
// without a blocking system call, which would cost the scheduler a thread
// hand-off on a busy machine; see rawio. The descriptor stays open while
// it is used (Control holds a reference to it).
func (d *fileDevice) readCached(b []byte, off int64) int {
	if d.raw == nil || d.noCached.Load() {
		return 0
	}
	r := rawCalls.Get().(*rawCall)
	r.b, r.off = b, off
	err := d.raw.Control(r.read)
	n, unsupported := r.n, r.unsupported
	r.put()
	if err != nil {
		return 0
	}
	if unsupported {
		d.noCached.Store(true)
	}
	return n
}

// rawCall is the state of one raw read (readCached) or write (WriteAt)
// on the buffered descriptor. They are pooled with their functions for
// Control bound once: a closure per call would be allocated, with the
// variables it sets.
type rawCall struct {
	b           []byte
	off         int64
	n           int
	err         error
	unsupported bool

	read, write func(fd uintptr)
}

var rawCalls = sync.Pool{New: func() any {
	r := new(rawCall)
	r.read = func(fd uintptr) { r.n, r.unsupported = rawio.ReadCached(fd, r.b, r.off) }
	r.write = func(fd uintptr) { r.n, r.err, r.unsupported = rawio.WriteAt(fd, r.b, r.off) }
	return r
}}

func (r *rawCall) put() {
	r.b, r.err = nil, nil
	rawCalls.Put(r)
}

// contigFor returns a contiguous buffer (see contigBufs) for a direct
// transfer of b, or nil where b is too small or too large for one or none
// is free.
func (d *fileDevice) contigFor(b []byte) []byte {
	if d.contig == nil || len(b) < contigFrom || len(b) > contigSize {
		return nil
	}
	return d.contig.get()
}

// directIO does one aligned transfer on the direct descriptor.
func (d *fileDevice) directIO(write bool, b []byte, off int64) (int, error) {
	if d.aio != nil {
		return d.aio.do(int(d.direct.Fd()), write, b, off)
	}
	if write {
		return d.direct.WriteAt(b, off)
	}
	return d.direct.ReadAt(b, off)
}

// readAround asks the kernel to read [from, to) into the cache, in
// pieces of readAroundPiece: it reads at most the device's read-ahead
// (128 KiB by default) or largest request per call. This is advice; a
// refusal costs only speed.
func (d *fileDevice) readAround(from, to int64) {
	d.raw.Control(func(fd uintptr) {
		for off := from; off < to; off += readAroundPiece {
			_ = unix.Fadvise(int(fd), off, min(readAroundPiece, to-off), unix.FADV_WILLNEED)
		}
	})
}

const readAroundPiece = 128 << 10

// OpenDevice opens a disk path for the store. The data I/O that dio
// chooses uses O_DIRECT when the file system supports it (tmpfs does not:
// then all I/O is buffered).
func OpenDevice(path string, dio DirectIO) (Device, uint64, error) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, 0, err
	}
	size, err := deviceSize(f)
	if err != nil {
		f.Close()
		return nil, 0, err
	}
	d := &fileDevice{File: f}
	d.raw, _ = f.SyscallConn()
	// No read-ahead: it fills the cache with large folios too (see
	// cachedPiece), and the store reads what it needs in one call, a
	// whole AU where it needs that much (a scrub). This is advice; a
	// kernel that refuses it loses only speed.
	_ = unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_RANDOM)
	if dio.All || dio.WritesFrom > 0 {
		df, err := os.OpenFile(path, os.O_RDWR|syscall.O_DIRECT, 0)
		switch {
		case err == nil:
			d.direct = df
			d.contig = contig
			d.directAll = dio.All
			if dio.WritesFrom > 0 {
				// A write the connection's reader serves itself
				// (rawWriteMax) must not wait for the device.
				d.directWritesFrom = max(dio.WritesFrom, rawWriteMax+1)
			}
			if d.aio, d.aioErr = newAIORing(); d.aioErr != nil {
				d.aio = nil // pread/pwrite still work
			}
		case errors.Is(err, syscall.EINVAL):
		default:
			f.Close()
			return nil, 0, err
		}
	}
	return d, size, nil
}

// deviceSize is the size of a regular file or block device.
func deviceSize(f *os.File) (uint64, error) {
	st, err := f.Stat()
	if err != nil {
		return 0, err
	}
	if st.Mode().IsRegular() {
		return uint64(st.Size()), nil
	}
	if st.Mode()&os.ModeDevice == 0 {
		return 0, fmt.Errorf("%s is neither a regular file nor a block device", f.Name())
	}
	end, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return 0, err
	}
	return uint64(end), nil
}
