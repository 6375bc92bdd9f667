package server

import (
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"time"
	"unicode/utf8"
)

// On-disk format constants. See DESIGN.md.
const (
	// FormatVersion is what keel disk init writes: 3 adds the flush mark
	// (checkpoints) to 2 (per-block versions). A disk of format 2 is
	// served without checkpoints; a keel that knows only format 2 refuses
	// a disk of format 3, whose mark it would not keep up to date.
	FormatVersion = 3
	formatNoMark  = 2
	BlockSize     = 4096    // unit of checksums and of I/O alignment
	AUSize        = 1 << 20 // allocation unit
	BlocksPerAU   = AUSize / BlockSize

	superblockSize  = 4096
	superblockMagic = "KEELDSK1"
	markOff         = 4096 // the flush mark (format 3): two 512-byte slots after the superblock
	markSlotSize    = 512
	objTableOff     = 8192 // superblock, then the flush mark's 4 KiB
	objRecordSize   = 1024 // two 512-byte slots
	objSlotSize     = 512
	auPageSize      = 8192 // two 4 KiB slots
	auSlotSize      = 4096
	maxClusterIDLen = 64
	// DefaultObjectSize is the object size of a volume unless configured.
	DefaultObjectSize = 32 << 20
	maxObjectSize     = 1 << 30
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Superblock identifies a keel disk and describes its layout. It is written
// once by `keel disk init` and never rewritten.
type Superblock struct {
	FormatVersion uint32
	SSD           bool
	ClusterID     string
	DiskID        uint32
	NodeID        uint32
	Size          uint64 // bytes of the device the layout was made for
	ObjectSize    uint32
	NumAUs        uint64
	NumObjects    uint64 // capacity of the object table
	AUTableOff    uint64
	DataOff       uint64
	Created       time.Time
	// FormatID is random per init; every metadata record's checksum covers
	// it, so records left by an earlier format of the same device are never
	// mistaken for current ones (init need not zero the tables).
	FormatID [16]byte
}

// FormatParams are what `keel disk init` chooses.
type FormatParams struct {
	ClusterID  string
	DiskID     uint32
	NodeID     uint32
	SSD        bool
	ObjectSize uint32 // 0: DefaultObjectSize
}

// PlanSuperblock lays out a device of size bytes. The device must hold at
// least two objects' worth of allocation units.
func PlanSuperblock(size uint64, p FormatParams) (Superblock, error) {
	if p.ObjectSize == 0 {
		p.ObjectSize = DefaultObjectSize
	}
	if p.ObjectSize%AUSize != 0 || p.ObjectSize > maxObjectSize {
		return Superblock{}, fmt.Errorf("plan disk: object size %d is not a multiple of %d up to %d", p.ObjectSize, AUSize, maxObjectSize)
	}
	if len(p.ClusterID) == 0 || len(p.ClusterID) > maxClusterIDLen || !utf8.ValidString(p.ClusterID) {
		return Superblock{}, fmt.Errorf("plan disk: cluster id %q must be 1..%d bytes of UTF-8", p.ClusterID, maxClusterIDLen)
	}
	if p.DiskID == 0 {
		return Superblock{}, fmt.Errorf("plan disk: disk id must be positive")
	}
	sb := Superblock{FormatVersion: FormatVersion, SSD: p.SSD, ClusterID: p.ClusterID, DiskID: p.DiskID,
		NodeID: p.NodeID, Size: size, ObjectSize: p.ObjectSize, Created: time.Now().UTC().Truncate(time.Second)}
	if size > objTableOff+AUSize {
		n := (size - objTableOff - AUSize) / (AUSize + objRecordSize + auPageSize)
		for ; n > 0; n-- {
			sb.NumAUs, sb.NumObjects = n, n
			sb.layout()
			if sb.DataOff+n*AUSize <= size {
				break
			}
		}
	}
	need := 2 * uint64(p.ObjectSize/AUSize)
	if sb.NumAUs < need {
		return Superblock{}, fmt.Errorf("plan disk: %w: %d bytes hold %d allocation units, keel needs at least %d (about %d MiB) for two %d MiB objects",
			ErrTooSmall, size, sb.NumAUs, need, MinDiskSize(p.ObjectSize)>>20, p.ObjectSize>>20)
	}
	if _, err := rand.Read(sb.FormatID[:]); err != nil {
		return Superblock{}, fmt.Errorf("plan disk: %w", err)
	}
	return sb, nil
}

// MinDiskSize is the smallest device that holds two objects of objectSize.
func MinDiskSize(objectSize uint32) uint64 {
	n := 2 * uint64(objectSize/AUSize)
	return objTableOff + n*(objRecordSize+auPageSize) + 2*AUSize + n*AUSize
}

func (sb *Superblock) layout() {
	sb.AUTableOff = objTableOff + sb.NumObjects*objRecordSize
	end := sb.AUTableOff + sb.NumAUs*auPageSize
	sb.DataOff = (end + AUSize - 1) / AUSize * AUSize
}

// Encode returns the 4 KiB superblock with its checksum.
func (sb *Superblock) Encode() []byte {
	b := make([]byte, superblockSize)
	le := binary.LittleEndian
	copy(b[0:8], superblockMagic)
	le.PutUint32(b[8:], sb.FormatVersion)
	var flags uint32
	if sb.SSD {
		flags |= 1
	}
	le.PutUint32(b[12:], flags)
	le.PutUint32(b[16:], sb.DiskID)
	le.PutUint32(b[20:], sb.NodeID)
	le.PutUint64(b[24:], sb.Size)
	le.PutUint32(b[32:], AUSize)
	le.PutUint32(b[36:], sb.ObjectSize)
	le.PutUint64(b[40:], sb.NumAUs)
	le.PutUint64(b[48:], sb.NumObjects)
	le.PutUint64(b[56:], objTableOff)
	le.PutUint64(b[64:], sb.AUTableOff)
	le.PutUint64(b[72:], sb.DataOff)
	le.PutUint64(b[80:], uint64(sb.Created.Unix()))
	b[88] = byte(len(sb.ClusterID))
	copy(b[89:89+maxClusterIDLen], sb.ClusterID)
	copy(b[160:176], sb.FormatID[:])
	le.PutUint32(b[superblockSize-4:], crc32.Checksum(b[:superblockSize-4], castagnoli))
	return b
}

// HasMagic reports whether b starts like a keel superblock, valid or not.
func HasMagic(b []byte) bool {
	return len(b) >= 8 && string(b[:8]) == superblockMagic
}

// ParseSuperblock decodes and checks a superblock read from a device. It
// accepts any input without panicking (it is fuzzed).
func ParseSuperblock(b []byte) (Superblock, error) {
	var sb Superblock
	if len(b) < superblockSize || !HasMagic(b) {
		return sb, ErrNoSuperblock
	}
	b = b[:superblockSize]
	le := binary.LittleEndian
	if got, want := crc32.Checksum(b[:superblockSize-4], castagnoli), le.Uint32(b[superblockSize-4:]); got != want {
		return sb, fmt.Errorf("%w: checksum %08x, stored %08x", ErrBadSuperblock, got, want)
	}
	sb.FormatVersion = le.Uint32(b[8:])
	if sb.FormatVersion != FormatVersion && sb.FormatVersion != formatNoMark {
		return sb, fmt.Errorf("%w: format version %d, this keel reads %d and %d", ErrBadSuperblock, sb.FormatVersion, formatNoMark, FormatVersion)
	}
	sb.SSD = le.Uint32(b[12:])&1 != 0
	sb.DiskID = le.Uint32(b[16:])
	sb.NodeID = le.Uint32(b[20:])
	sb.Size = le.Uint64(b[24:])
	au := le.Uint32(b[32:])
	sb.ObjectSize = le.Uint32(b[36:])
	sb.NumAUs = le.Uint64(b[40:])
	sb.NumObjects = le.Uint64(b[48:])
	ot := le.Uint64(b[56:])
	sb.AUTableOff = le.Uint64(b[64:])
	sb.DataOff = le.Uint64(b[72:])
	sb.Created = time.Unix(int64(le.Uint64(b[80:])), 0).UTC()
	n := int(b[88])
	if n == 0 || n > maxClusterIDLen || !utf8.Valid(b[89:89+n]) {
		return sb, fmt.Errorf("%w: bad cluster id", ErrBadSuperblock)
	}
	sb.ClusterID = string(b[89 : 89+n])
	copy(sb.FormatID[:], b[160:176])
	if au != AUSize || ot != objTableOff || sb.ObjectSize == 0 || sb.ObjectSize%AUSize != 0 || sb.ObjectSize > maxObjectSize || sb.DiskID == 0 {
		return sb, fmt.Errorf("%w: unsupported geometry (AU %d, object size %d)", ErrBadSuperblock, au, sb.ObjectSize)
	}
	// The layout must be the one PlanSuperblock derives, inside the device.
	const maxAUs = 1 << 40 / AUSize * 1024 // 1 PiB
	if sb.NumAUs == 0 || sb.NumAUs > maxAUs || sb.NumObjects != sb.NumAUs {
		return sb, fmt.Errorf("%w: bad table sizes", ErrBadSuperblock)
	}
	want := sb
	want.layout()
	if want.AUTableOff != sb.AUTableOff || want.DataOff != sb.DataOff || sb.DataOff+sb.NumAUs*AUSize > sb.Size {
		return sb, fmt.Errorf("%w: inconsistent layout", ErrBadSuperblock)
	}
	return sb, nil
}
