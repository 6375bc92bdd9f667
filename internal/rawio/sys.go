package rawio

import (
	"syscall"
	"unsafe"
)

// The raw calls bypass package syscall's wrappers, which tell the race
// detector what memory the kernel read or wrote; raceRead and raceWrite
// (race.go) do that instead in race-enabled builds.

func read(fd uintptr, p []byte) (int, syscall.Errno) {
	n, _, e := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
	if e == 0 {
		raceWrite(p[:n])
	}
	return int(n), e
}

func write(fd uintptr, p []byte) (int, syscall.Errno) {
	raceRead(p)
	n, _, e := syscall.RawSyscall(syscall.SYS_WRITE, fd, uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
	return int(n), e
}

func writev(fd uintptr, iov []syscall.Iovec) (int, syscall.Errno) {
	for _, v := range iov {
		raceRead(unsafe.Slice(v.Base, v.Len))
	}
	n, _, e := syscall.RawSyscall(syscall.SYS_WRITEV, fd, uintptr(unsafe.Pointer(&iov[0])), uintptr(len(iov)))
	return int(n), e
}
