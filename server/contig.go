package server

import (
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"
)

// contigBufs hands out buffers for large direct I/O that are each
// physically contiguous: the halves of 2 MiB transparent huge pages.
//
// A buffer from the Go heap is a run of 4 KiB pages scattered in physical
// memory, so a 1 MiB direct write is 256 segments. That is over a virtio
// disk's segment limit (254 on the machines measured), so the kernel
// splits it into two requests, and the hypervisor walks every segment of
// both. Through a contiguous buffer the same write is one request of one
// segment. On the demo (three servers, two file-backed disks each, on one
// virtual disk) 1 MiB sequential writes went from 310-335 to 431-453
// MiB/s and the device's time per request from 23-26 to 13.5-15.5 ms,
// for a copy of 1 MiB (about 50 us) into the buffer.
//
// The buffers are mapped, not allocated, so that the mapping can be 2 MiB
// aligned and advised as huge; they are never returned to the system, so
// their number is bounded (contigMax). Where the kernel has no huge page to
// give (transparent huge pages off, or memory too fragmented), the
// buffers are ordinary pages: correct, and no slower than before.
type contigBufs struct {
	mu    sync.Mutex
	free  [][]byte
	made  int // buffers mapped so far
	limit int
}

const (
	// contigSize is the size of each buffer: an AU, the largest I/O the
	// store makes on a device.
	contigSize = AUSize
	// contigFrom is the smallest direct I/O that goes through a
	// contiguous buffer. Below it the copy costs more than the segments.
	contigFrom = 128 << 10
	// contigMax bounds the buffers of a process (64 MiB): twice the
	// requests a client keeps in flight at queue depth 32. An I/O that
	// finds none free uses its own buffer, as before.
	contigMax  = 64
	hugePage   = 2 << 20
	perMapping = hugePage / contigSize
)

var contig = &contigBufs{limit: contigMax}

// get returns a free buffer of contigSize, or nil when all contigMax are
// in use or the system refused a mapping.
func (p *contigBufs) get() []byte {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.free) == 0 && p.made+perMapping <= p.limit {
		bufs, err := mapContig()
		if err != nil {
			p.limit = p.made // no more mappings: don't ask on every I/O
			return nil
		}
		p.free = append(p.free, bufs...)
		p.made += len(bufs)
	}
	if len(p.free) == 0 {
		return nil
	}
	b := p.free[len(p.free)-1]
	p.free = p.free[:len(p.free)-1]
	return b
}

// put returns a buffer from get.
func (p *contigBufs) put(b []byte) {
	p.mu.Lock()
	p.free = append(p.free, b[:contigSize:contigSize])
	p.mu.Unlock()
}

// mapContig maps one 2 MiB aligned huge page and cuts it into buffers.
// It maps twice the size and unmaps the unaligned ends, since mmap
// aligns only to pages.
func mapContig() ([][]byte, error) {
	m, err := unix.Mmap(-1, 0, 2*hugePage, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return nil, err
	}
	base := uintptr(unsafe.Pointer(&m[0]))
	skip := int((hugePage - base%hugePage) % hugePage)
	page := m[skip : skip+hugePage : skip+hugePage]
	if skip > 0 {
		_ = unix.MunmapPtr(unsafe.Pointer(&m[0]), uintptr(skip))
	}
	if tail := len(m) - skip - hugePage; tail > 0 {
		_ = unix.MunmapPtr(unsafe.Pointer(&m[skip+hugePage]), uintptr(tail))
	}
	// Advice: without it (or without a free huge page) the buffers are
	// ordinary pages and merely slower.
	_ = unix.Madvise(page, unix.MADV_HUGEPAGE)
	bufs := make([][]byte, 0, perMapping)
	for off := 0; off < hugePage; off += contigSize {
		bufs = append(bufs, page[off:off+contigSize:off+contigSize])
	}
	return bufs, nil
}
