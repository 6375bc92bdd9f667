package client

import (
	"context"
	"errors"
	"fmt"
)

// Layout is what the engine needs to know of one attached volume. mgmt is
// its source; it changes only by a new attachment (new token) or a
// snapshot (new own layer).
type Layout struct {
	Name string
	// Fence is the volume's stable id: the scope of its fencing token.
	Fence uint64
	// Layers are the object namespaces, the volume's own first, then its
	// parent's (a snapshot), that one's parent, and so on. Object i of the
	// volume is object (Layers[0], i); unwritten blocks read through
	// (Layers[1], i) and further, on the same disks (a child inherits its
	// parent's disk sets).
	Layers []uint64
	// Size of the volume in bytes and ObjectSize of its objects.
	Size       int64
	ObjectSize int64
	// DiskSets is the disk-set table: object i lives on DiskSets[i % N].
	// The last disk of a set is the placeTail replica, read first.
	DiskSets [][]uint32
	// Token is the attachment's fencing token, carried by every write.
	Token    uint64
	ReadOnly bool
	// IOPS and BW (bytes/s) limit the volume; 0 means unlimited.
	IOPS, BW int64
}

func (l *Layout) validate() error {
	switch {
	case len(l.Layers) == 0:
		return fmt.Errorf("volume %s: %w: no layers", l.Name, ErrLayout)
	case l.ObjectSize <= 0 || l.ObjectSize%blockSize != 0:
		return fmt.Errorf("volume %s: %w: object size %d", l.Name, ErrLayout, l.ObjectSize)
	case l.Size <= 0 || l.Size%blockSize != 0:
		return fmt.Errorf("volume %s: %w: size %d is not a positive multiple of 4 KiB", l.Name, ErrLayout, l.Size)
	case len(l.DiskSets) == 0:
		return fmt.Errorf("volume %s: %w: empty disk-set table", l.Name, ErrLayout)
	}
	for i, s := range l.DiskSets {
		if len(s) == 0 {
			return fmt.Errorf("volume %s: %w: disk set %d is empty", l.Name, ErrLayout, i)
		}
	}
	return nil
}

// Cluster is what the engine asks of the control plane. Frontends use a
// DiskView, which keeps the rules every writer must follow.
type Cluster interface {
	// DiskAccess returns the data-protocol address ("host:port" or a unix
	// socket path) of the server that serves disk, and what mgmt lets the
	// engine do with the disk: read and write it (up), only write it
	// (recovering), or neither (down).
	DiskAccess(ctx context.Context, disk uint32) (addr string, access DiskAccess, err error)
	// MarkDiskDown asks mgmt to mark disk down and returns only once mgmt
	// committed it (a new cluster generation). Until it returns nil the
	// engine must not acknowledge a write without that replica.
	MarkDiskDown(ctx context.Context, disk uint32, reason string) error
	// WriteLease returns once the frontend's view of the disks is
	// confirmed by mgmt recently enough to write with it (see DiskView).
	WriteLease(ctx context.Context) error
}

// DiskAccess is what the engine may do with a disk.
type DiskAccess uint8

const (
	// DiskDown: neither reads nor writes (down, ejected, server stopped).
	DiskDown DiskAccess = iota
	// DiskWriteOnly: a recovering disk. Every write reaches it, so that
	// recovery only has to copy what it missed while down; it serves no
	// reads until mgmt marks it up.
	DiskWriteOnly
	// DiskUp: reads and writes.
	DiskUp
)

// Writable reports whether writes must reach the disk.
func (a DiskAccess) Writable() bool { return a != DiskDown }

var (
	// ErrLayout means a volume layout the engine cannot serve.
	ErrLayout = errors.New("invalid volume layout")
	// ErrNoReplica means no up replica could serve the request.
	ErrNoReplica = errors.New("no replica available")
)
