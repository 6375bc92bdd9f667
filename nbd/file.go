package nbd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// File is a backend on a regular file: pread/pwrite, fdatasync for FLUSH
// and FUA, FALLOC_FL_PUNCH_HOLE for TRIM and zeroing, FALLOC_FL_ZERO_RANGE
// for zeroing that must stay allocated, SEEK_DATA/SEEK_HOLE for block
// status. It is safe for several connections (one page cache).
type File struct {
	f    *os.File
	fd   int
	info Info
}

// OpenFile opens the regular file at path as a backend of its current size.
func OpenFile(path string, readOnly bool) (*File, error) {
	flag := os.O_RDWR
	if readOnly {
		flag = os.O_RDONLY
	}
	f, err := os.OpenFile(path, flag, 0)
	if err != nil {
		return nil, fmt.Errorf("open nbd file backend: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("open nbd file backend: %w", err)
	}
	if !st.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("open nbd file backend %s: %w: not a regular file", path, ErrInvalid)
	}
	return &File{
		f:  f,
		fd: int(f.Fd()),
		info: Info{
			Size:      st.Size(),
			ReadOnly:  readOnly,
			MultiConn: true,
			FastZero:  true,
		},
	}, nil
}

// Close closes the file.
func (b *File) Close() error { return b.f.Close() }

// Info implements Backend.
func (b *File) Info() Info { return b.info }

// ReadAt implements Backend.
func (b *File) ReadAt(_ context.Context, p []byte, off int64) error {
	if _, err := b.f.ReadAt(p, off); err != nil {
		if errors.Is(err, io.EOF) {
			// The file shrank under the export.
			return fmt.Errorf("read %s at %d: %w", b.f.Name(), off, err)
		}
		return err
	}
	return nil
}

// WriteAt implements Backend.
func (b *File) WriteAt(_ context.Context, p []byte, off int64, fua bool) error {
	if _, err := b.f.WriteAt(p, off); err != nil {
		return mapErrno(err)
	}
	if fua {
		return b.sync()
	}
	return nil
}

// Flush implements Backend.
func (b *File) Flush(context.Context) error { return b.sync() }

func (b *File) sync() error {
	if err := unix.Fdatasync(b.fd); err != nil {
		return fmt.Errorf("fdatasync %s: %w", b.f.Name(), mapErrno(err))
	}
	return nil
}

// Trim implements Backend by punching a hole; it reads back as zeroes.
func (b *File) Trim(ctx context.Context, off, length int64, fua bool) error {
	return b.WriteZeroes(ctx, off, length, ZeroFlags{FUA: fua})
}

// WriteZeroes implements Backend. Punching a hole (or, with NoHole,
// FALLOC_FL_ZERO_RANGE) is the fast path; where the file system lacks it,
// zeroes are written unless Fast asks to fail instead.
func (b *File) WriteZeroes(ctx context.Context, off, length int64, f ZeroFlags) error {
	mode := uint32(unix.FALLOC_FL_PUNCH_HOLE | unix.FALLOC_FL_KEEP_SIZE)
	if f.NoHole {
		mode = unix.FALLOC_FL_ZERO_RANGE | unix.FALLOC_FL_KEEP_SIZE
	}
	err := unix.Fallocate(b.fd, mode, off, length)
	if errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOSYS) {
		if f.Fast {
			return ErrNotFast
		}
		err = b.writeZeroes(ctx, off, length)
	}
	if err != nil {
		return fmt.Errorf("zero %s %d+%d: %w", b.f.Name(), off, length, mapErrno(err))
	}
	if f.FUA {
		return b.sync()
	}
	return nil
}

func (b *File) writeZeroes(ctx context.Context, off, length int64) error {
	z := make([]byte, min(length, 1<<20))
	for length > 0 {
		if err := ctx.Err(); err != nil {
			return err
		}
		n := min(length, int64(len(z)))
		if _, err := b.f.WriteAt(z[:n], off); err != nil {
			return err
		}
		off, length = off+n, length-n
	}
	return nil
}

// maxFileExtents bounds the extents one BlockStatus call looks up.
const maxFileExtents = 256

// BlockStatus implements Backend with SEEK_DATA and SEEK_HOLE: holes read
// as zeroes, data is reported as allocated with unknown contents.
func (b *File) BlockStatus(_ context.Context, off, length int64) ([]Extent, error) {
	end := off + length
	var exts []Extent
	for off < end && len(exts) < maxFileExtents {
		data, err := unix.Seek(b.fd, off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			data = end // no data after off
		} else if err != nil {
			return nil, fmt.Errorf("seek data %s at %d: %w", b.f.Name(), off, err)
		}
		if data > off {
			n := min(data, end) - off
			exts = append(exts, Extent{Length: n, Hole: true, Zero: true})
			off += n
			continue
		}
		hole, err := unix.Seek(b.fd, off, unix.SEEK_HOLE)
		if err != nil {
			return nil, fmt.Errorf("seek hole %s at %d: %w", b.f.Name(), off, err)
		}
		n := min(hole, end) - off
		if n <= 0 {
			// The file changed size under us; report the rest as data.
			n = end - off
		}
		exts = append(exts, Extent{Length: n})
		off += n
	}
	return exts, nil
}

// Cache implements Backend with readahead into the page cache.
func (b *File) Cache(_ context.Context, off, length int64) error {
	if err := unix.Fadvise(b.fd, off, length, unix.FADV_WILLNEED); err != nil {
		return fmt.Errorf("fadvise %s: %w", b.f.Name(), err)
	}
	return nil
}

// mapErrno turns the errnos NBD has codes for into the package's errors.
func mapErrno(err error) error {
	switch {
	case errors.Is(err, unix.ENOSPC), errors.Is(err, unix.EDQUOT):
		return fmt.Errorf("%w: %w", ErrNoSpace, err)
	case errors.Is(err, unix.EROFS), errors.Is(err, unix.EPERM), errors.Is(err, unix.EBADF):
		return fmt.Errorf("%w: %w", ErrReadOnly, err)
	}
	return err
}
