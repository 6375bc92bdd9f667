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
