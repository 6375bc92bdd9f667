//go:build !linux

package rawio

// ReadCached reads nothing where there is no preadv2: the caller reads
// everything with an ordinary read.
func ReadCached(fd uintptr, p []byte, off int64) (n int, unsupported bool) { return 0, true }

// WriteAt writes nothing where there is no pwritev2: the caller writes
// with an ordinary write.
func WriteAt(fd uintptr, p []byte, off int64) (n int, err error, unsupported bool) {
	return 0, nil, true
}
