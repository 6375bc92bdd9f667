package server

import (
	"fmt"
	"os"
	"strings"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"
)

// contigBufs hands out buffers for large direct I/O that are each
// physically contiguous: the halves of 2 MiB transparent huge pages.
//
// A buffer from the Go heap is a run of 4 KiB pages that are rarely
// adjacent in physical memory, so a 1 MiB direct write is up to 256
// segments. That is over a virtio disk's segment limit (254 on the
// machines measured), so the kernel splits it into two requests, and the
// hypervisor walks every segment of both. Through a contiguous buffer the
// same write is one request of one segment; see DESIGN.md "Device I/O"
// for what that gained.
//
// The buffers are mapped, not allocated, so that the mapping can be 2 MiB
// aligned and advised as huge; they are never returned to the system, so
// their number is bounded (contigMax). Where the kernel gives no huge
// pages (transparent huge pages off, or the advice refused) there is no
// pool at all and I/O uses the caller's buffer: a copy into scattered
// pages would only cost.
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
	// contigMax bounds the buffers of a process (64 MiB), shared by all
	// its disks and clients: twice the requests one client keeps in
	// flight at queue depth 32. An I/O that finds none free uses its own
	// buffer.
	contigMax  = 64
	hugePage   = 2 << 20
	perMapping = hugePage / contigSize
)

// A buffer must fit a huge page a whole number of times.
const _ = uint(perMapping - 1)
const _ = uint(0 - hugePage%contigSize)

// contig is the process's pool, empty where the kernel gives no huge
// pages.
var contig = &contigBufs{limit: thpLimit()}

// thpLimit is contigMax where anonymous memory may be advised into 2 MiB
// transparent huge pages, else 0.
func thpLimit() int {
	const dir = "/sys/kernel/mm/transparent_hugepage/"
	mode := thpSetting(dir + "hugepages-2048kB/enabled") // Linux 6.8 and later
	if mode == "" || mode == "inherit" {
		mode = thpSetting(dir + "enabled")
	}
	if mode != "always" && mode != "madvise" {
		return 0
	}
	return contigMax
}

// thpSetting is the chosen value ("[madvise]") of a THP sysfs file, ""
// when there is none.
func thpSetting(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	s := string(b)
	i, j := strings.IndexByte(s, '['), strings.IndexByte(s, ']')
	if i < 0 || j < i {
		return ""
	}
	return s[i+1 : j]
}

// get returns a free buffer of contigSize, or nil when all of the limit
// are in use. The first refused mapping ends the pool's growth for good
// (limit = made), so that I/O does not ask again on every request. The
// system calls of a new mapping run under mu; they happen at most
// contigMax/perMapping times in a process.
func (p *contigBufs) get() []byte {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.free) == 0 && p.made+perMapping <= p.limit {
		bufs, err := mapContig()
		if err != nil {
			p.limit = p.made
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

// mapContig maps one 2 MiB aligned huge page, faults it in and cuts it
// into buffers. It reserves twice the size and unmaps the unaligned ends,
// since mmap aligns only to pages; MmapPtr keeps the reservation out of
// unix.Mmap's table of whole mappings.
func mapContig() ([][]byte, error) {
	const prot, flags = unix.PROT_READ | unix.PROT_WRITE, unix.MAP_PRIVATE | unix.MAP_ANONYMOUS
	m, err := unix.MmapPtr(-1, 0, nil, 2*hugePage, prot, flags)
	if err != nil {
		return nil, err
	}
	skip := (hugePage - uintptr(m)%hugePage) % hugePage
	if skip > 0 {
		_ = unix.MunmapPtr(m, skip)
	}
	if tail := 2*hugePage - skip - hugePage; tail > 0 {
		_ = unix.MunmapPtr(unsafe.Add(m, skip+hugePage), tail)
	}
	page := unsafe.Slice((*byte)(unsafe.Add(m, skip)), hugePage)
	if err := unix.Madvise(page, unix.MADV_HUGEPAGE); err != nil {
		_ = unix.MunmapPtr(unsafe.Pointer(&page[0]), hugePage)
		return nil, fmt.Errorf("madvise huge page: %w", err)
	}
	// Fault the page in now, while no I/O waits: otherwise the first
	// copy into a buffer, or the pinning in io_submit, takes the fault
	// and may wait for the kernel to compact memory for the huge page.
	// Advice (Linux 5.14 and later); the first use faults it otherwise.
	_ = unix.Madvise(page, unix.MADV_POPULATE_WRITE)
	bufs := make([][]byte, 0, perMapping)
	for off := 0; off < hugePage; off += contigSize {
		bufs = append(bufs, page[off:off+contigSize:off+contigSize])
	}
	return bufs, nil
}
