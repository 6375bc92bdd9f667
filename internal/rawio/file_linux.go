package rawio

import (
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ReadCached reads into p from offset off of file descriptor fd what the
// page cache already holds, by a raw preadv2 with RWF_NOWAIT: no thread
// hand-off, and never a wait for the device. It returns how many bytes it
// read, from the start of p: fewer than len(p), maybe none, where the rest
// is not cached, at the end of the file, or on any error; the caller reads
// the rest with an ordinary read. unsupported is true when the kernel or
// file system refuses RWF_NOWAIT reads altogether.
func ReadCached(fd uintptr, p []byte, off int64) (n int, unsupported bool) {
	if len(p) == 0 || off < 0 {
		return 0, false
	}
	iov := syscall.Iovec{Base: &p[0]}
	iov.SetLen(len(p))
	for {
		// The offset as low and high halves (the high one is 0 on 64-bit
		// platforms, where the low one holds all of it).
		hi := uintptr(uint64(off) >> (4 * unsafe.Sizeof(uintptr(0))) >> (4 * unsafe.Sizeof(uintptr(0))))
		r, _, e := syscall.RawSyscall6(unix.SYS_PREADV2, fd, uintptr(unsafe.Pointer(&iov)), 1, uintptr(off), hi, unix.RWF_NOWAIT)
		switch e {
		case 0:
			raceWrite(p[:r])
			return int(r), false
		case syscall.EINTR:
			continue
		case syscall.EOPNOTSUPP, syscall.EINVAL, syscall.ENOSYS:
			return 0, true
		}
		return 0, false
	}
}

// WriteAt writes p at offset off of file descriptor fd by a raw pwritev2,
// for small writes through the page cache: the Go scheduler then neither
// hands the caller's processor off nor keeps its monitor polling every
// 20 us for a call that is over in a few. The call still blocks its
// thread for as long as the kernel takes (a page cache write may wait in
// dirty page throttling), so it is only for writes that are not expected
// to. It returns how many bytes it wrote and the error; unsupported is
// true, with nothing written, where the kernel has no pwritev2.
func WriteAt(fd uintptr, p []byte, off int64) (n int, err error, unsupported bool) {
	if len(p) == 0 {
		return 0, nil, false
	}
	raceRead(p)
	iov := syscall.Iovec{Base: &p[0]}
	iov.SetLen(len(p))
	for {
		hi := uintptr(uint64(off) >> (4 * unsafe.Sizeof(uintptr(0))) >> (4 * unsafe.Sizeof(uintptr(0))))
		r, _, e := syscall.RawSyscall6(unix.SYS_PWRITEV2, fd, uintptr(unsafe.Pointer(&iov)), 1, uintptr(off), hi, 0)
		switch e {
		case 0:
			return int(r), nil, false
		case syscall.EINTR:
			continue
		case syscall.ENOSYS:
			return 0, nil, true
		}
		return 0, e, false
	}
}
