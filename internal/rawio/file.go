package rawio

import (
	"syscall"
	"unsafe"
)

// Linux preadv2 and its flag that refuses to wait for the device.
const (
	sysPreadv2 = 327 // x86-64
	rwfNowait  = 0x8
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
		r, _, e := syscall.RawSyscall6(sysPreadv2, fd, uintptr(unsafe.Pointer(&iov)), 1, uintptr(off), 0, rwfNowait)
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
