//go:build !linux

package rawio

// ReadCached reads nothing where there is no preadv2: the caller reads
// everything with an ordinary read.
func ReadCached(fd uintptr, p []byte, off int64) (n int, unsupported bool) { return 0, true }
