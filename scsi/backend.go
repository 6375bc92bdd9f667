package scsi

import (
	"fmt"
	"io"
	"os"
	"syscall"
)

// Backend is the block device a logical unit serves. iscsi.VolumeBackend
// implements it for keel volumes over the volume I/O engine; FileBackend
// implements it on a plain file. Offsets and lengths are in bytes and always multiples of
// BlockSize; the logical unit checks ranges before calling.
type Backend interface {
	// BlockSize is the logical block size in bytes (512 or 4096).
	BlockSize() uint32
	// Blocks is the capacity in logical blocks.
	Blocks() uint64
	ReadAt(p []byte, off int64) error
	// WriteAt writes p; with fua the data is durable when it returns.
	WriteAt(p []byte, off int64, fua bool) error
	// Flush makes every completed write durable.
	Flush() error
	// Unmap deallocates the range; unmapped blocks read as zeroes.
	Unmap(off, length int64) error
	// WriteZeroes makes the range read as zeroes, deallocating it when
	// unmap is true and the backend is thin.
	WriteZeroes(off, length int64, unmap bool) error
	// Mapped reports whether the block at off is allocated and how many
	// bytes from off (up to limit) share that state.
	Mapped(off, limit int64) (mapped bool, run int64, err error)
	// Thin reports whether Unmap deallocates (thin provisioning).
	Thin() bool
}

// FileBackend serves a regular file (sparse files give thin provisioning
// through hole punching). It is the test backend of the target.
type FileBackend struct {
	f         *os.File
	blockSize uint32
	blocks    uint64
	thin      bool
}

// Linux fallocate(2) modes and lseek(2) whences not exported by syscall.
const (
	fallocKeepSize  = 0x01
	fallocPunchHole = 0x02
	fallocZeroRange = 0x10
	seekData        = 3
	seekHole        = 4
)

// OpenFileBackend opens path read-write as a device of its current size
// rounded down to whole blocks.
func OpenFileBackend(path string, blockSize uint32) (*FileBackend, error) {
	if blockSize != 512 && blockSize != 4096 {
		return nil, fmt.Errorf("open backing file %s: block size %d: %w", path, blockSize, ErrBlockSize)
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("open backing file: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("open backing file: %w", err)
	}
	if !st.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("open backing file %s: %w", path, ErrNotRegular)
	}
	b := &FileBackend{f: f, blockSize: blockSize, blocks: uint64(st.Size()) / uint64(blockSize)}
	if b.blocks == 0 {
		f.Close()
		return nil, fmt.Errorf("open backing file %s: %w", path, ErrTooSmall)
	}
	// Probe hole punching on the zero-length range past the end: a
	// filesystem without it answers EOPNOTSUPP.
	b.thin = syscall.Fallocate(int(f.Fd()), fallocPunchHole|fallocKeepSize, st.Size(), int64(blockSize)) == nil
	return b, nil
}

// Close closes the file.
func (b *FileBackend) Close() error { return b.f.Close() }

func (b *FileBackend) BlockSize() uint32 { return b.blockSize }
func (b *FileBackend) Blocks() uint64    { return b.blocks }
func (b *FileBackend) Thin() bool        { return b.thin }

func (b *FileBackend) ReadAt(p []byte, off int64) error {
	n, err := b.f.ReadAt(p, off)
	if err == io.EOF && n == len(p) {
		err = nil
	}
	return err
}

func (b *FileBackend) WriteAt(p []byte, off int64, fua bool) error {
	if _, err := b.f.WriteAt(p, off); err != nil {
		return err
	}
	if fua {
		return syscall.Fdatasync(int(b.f.Fd()))
	}
	return nil
}

func (b *FileBackend) Flush() error { return syscall.Fdatasync(int(b.f.Fd())) }

func (b *FileBackend) Unmap(off, length int64) error {
	if !b.thin {
		return nil // deallocation is a hint; a thick device keeps the data
	}
	return syscall.Fallocate(int(b.f.Fd()), fallocPunchHole|fallocKeepSize, off, length)
}

func (b *FileBackend) WriteZeroes(off, length int64, unmap bool) error {
	fd := int(b.f.Fd())
	if unmap && b.thin {
		return syscall.Fallocate(fd, fallocPunchHole|fallocKeepSize, off, length)
	}
	if syscall.Fallocate(fd, fallocZeroRange|fallocKeepSize, off, length) == nil {
		return nil
	}
	zero := make([]byte, min(length, 1<<20))
	for length > 0 {
		n := min(length, int64(len(zero)))
		if _, err := b.f.WriteAt(zero[:n], off); err != nil {
			return err
		}
		off += n
		length -= n
	}
	return nil
}

func (b *FileBackend) Mapped(off, limit int64) (bool, int64, error) {
	fd := int(b.f.Fd())
	end := off + limit
	data, err := syscall.Seek(fd, off, seekData)
	if err == syscall.ENXIO { // no data after off: a hole to the end
		return false, limit, nil
	}
	if err != nil {
		return true, limit, nil // no SEEK_DATA: report everything mapped
	}
	if data > off {
		return false, min(data, end) - off, nil
	}
	hole, err := syscall.Seek(fd, off, seekHole)
	if err != nil {
		return true, limit, nil
	}
	return true, min(hole, end) - off, nil
}
