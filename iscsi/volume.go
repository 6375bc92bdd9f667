package iscsi

import (
	"context"

	"keel/client"
	"keel/nbd"
	"keel/wire"
)

// VolumeBackend serves a keel volume through the volume I/O engine as a
// SCSI block device of 4 KiB logical blocks (the engine's unit: servers
// checksum 4 KiB blocks). Writes reach every up replica before they
// complete; Flush (SYNCHRONIZE CACHE) makes every completed write durable
// on every up replica.
type VolumeBackend struct {
	vol *client.Volume
	ctx context.Context
}

// NewVolumeBackend returns the backend of vol; ctx bounds every request
// (cancel it when the volume stops being served).
func NewVolumeBackend(ctx context.Context, vol *client.Volume) *VolumeBackend {
	return &VolumeBackend{vol: vol, ctx: ctx}
}

const volumeBlockSize = 4096

func (b *VolumeBackend) BlockSize() uint32 { return volumeBlockSize }

// Blocks follows the volume's current layout, so a resize shows at once.
func (b *VolumeBackend) Blocks() uint64 { return uint64(b.vol.Layout().Size) / volumeBlockSize }

func (b *VolumeBackend) Thin() bool { return true }

// ReadAt splits p into requests the engine accepts (at most wire.MaxIO).
func (b *VolumeBackend) ReadAt(p []byte, off int64) error {
	for len(p) > 0 {
		n := min(len(p), wire.MaxIO)
		if err := b.vol.ReadAt(b.ctx, p[:n], off); err != nil {
			return err
		}
		p, off = p[n:], off+int64(n)
	}
	return nil
}

func (b *VolumeBackend) WriteAt(p []byte, off int64, fua bool) error {
	for len(p) > 0 {
		n := min(len(p), wire.MaxIO)
		if err := b.vol.WriteAt(b.ctx, p[:n], off, fua); err != nil {
			return err
		}
		p, off = p[n:], off+int64(n)
	}
	return nil
}

func (b *VolumeBackend) Flush() error { return b.vol.Flush(b.ctx) }

func (b *VolumeBackend) Unmap(off, length int64) error {
	return b.vol.Trim(b.ctx, off, length, false)
}

func (b *VolumeBackend) WriteZeroes(off, length int64, unmap bool) error {
	return b.vol.WriteZeroes(b.ctx, off, length, nbd.ZeroFlags{NoHole: !unmap})
}

// Mapped reports the engine's block status: per object, an object any
// layer holds is mapped.
func (b *VolumeBackend) Mapped(off, limit int64) (bool, int64, error) {
	ext, err := b.vol.BlockStatus(b.ctx, off, limit)
	if err != nil {
		return false, 0, err
	}
	if len(ext) == 0 {
		return true, limit, nil
	}
	return !ext[0].Hole, min(ext[0].Length, limit), nil
}
