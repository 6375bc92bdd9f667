package server

import (
	"fmt"
	"io"
	"os"
	"syscall"
)

// Device is what a store lives on: a block device or a file, or in tests a
// wrapper that simulates power loss. Sync makes every completed WriteAt
// durable.
type Device interface {
	io.ReaderAt
	io.WriterAt
	Sync() error
	Close() error
}

// fileDevice is a block device or regular file; Sync is fdatasync.
type fileDevice struct{ *os.File }

func (d fileDevice) Sync() error {
	for {
		err := syscall.Fdatasync(int(d.Fd()))
		if err != syscall.EINTR {
			return err
		}
	}
}

// OpenDevice opens a disk path for the store.
func OpenDevice(path string) (Device, uint64, error) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, 0, err
	}
	size, err := deviceSize(f)
	if err != nil {
		f.Close()
		return nil, 0, err
	}
	return fileDevice{f}, size, nil
}

// deviceSize is the size of a regular file or block device.
func deviceSize(f *os.File) (uint64, error) {
	st, err := f.Stat()
	if err != nil {
		return 0, err
	}
	if st.Mode().IsRegular() {
		return uint64(st.Size()), nil
	}
	if st.Mode()&os.ModeDevice == 0 {
		return 0, fmt.Errorf("%s is neither a regular file nor a block device", f.Name())
	}
	end, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return 0, err
	}
	return uint64(end), nil
}
