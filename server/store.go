// Package server is keel's storage server: the on-disk object store of each
// data disk (Store), disk initialisation and discovery, and the handler that
// answers the wire protocol. See DESIGN.md for the format and the crash
// story.
package server

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"math"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
)

var (
	// ErrChecksum means a block's data does not match its CRC32C: bit rot,
	// a torn write, or a write lost in a power failure. Repair from a replica.
	ErrChecksum = errors.New("checksum mismatch")
	// ErrNoSpace means no free allocation unit is left on the disk.
	ErrNoSpace = errors.New("disk full")
	// ErrNotFound means the object does not exist on this disk.
	ErrNotFound = errors.New("no such object")
	// ErrExists means an object of that id already exists.
	ErrExists = errors.New("object exists")
	// ErrFailed means an earlier I/O error stopped the store; the disk must
	// be ejected and reopened.
	ErrFailed = errors.New("disk failed")
	// ErrRange means an offset or length outside the object or not 4 KiB
	// aligned.
	ErrRange = errors.New("bad range")
	// ErrParentLost means an object's parent is missing from the disk.
	ErrParentLost = errors.New("parent object lost")
	// ErrNoSuperblock means the device holds no keel superblock.
	ErrNoSuperblock = errors.New("no keel superblock")
	// ErrBadSuperblock means a keel superblock that cannot be used.
	ErrBadSuperblock = errors.New("bad keel superblock")
	// ErrTooSmall means the device is too small for a keel disk.
	ErrTooSmall = errors.New("device too small")
)

// ObjectID names an object: the volume (or snapshot) and the object's
// index in it.
type ObjectID struct {
	Volume uint64
	Index  uint32
}

func (id ObjectID) String() string { return fmt.Sprintf("%d/%d", id.Volume, id.Index) }

// Block states, one byte per 4 KiB block of an owned AU.
const (
	BlockUnwritten = 0 // read through the parent chain, zeros at its end
	BlockData      = 1 // data on disk, CRC valid
	BlockZero      = 2 // TRIM / WRITE_ZEROES: zeros even over a parent
)

type auMeta struct {
	owner  uint64 // incarnation of the owning object, 0 when free
	index  uint32 // AU index inside the object
	states [BlocksPerAU]uint8
	crcs   [BlocksPerAU]uint32
	vers   [BlocksPerAU]uint64 // object version of each block's last change
}

// AU page slot layout: header, states, CRCs, versions, CRC of the slot.
const (
	auStatesOff = 32
	auCRCsOff   = auStatesOff + BlocksPerAU
	auVersOff   = auCRCsOff + 4*BlocksPerAU
)

type object struct {
	id       ObjectID
	inc      uint64
	parent   *object
	parentIn uint64 // parent's incarnation, as recorded
	version  uint64
	hidden   bool // deleted, kept for its children
	lost     bool // parent missing at open
	children int
	aus      []int32 // per AU index: the AU, or -1
	slot     int     // object table slot
}

// Stats is the exact space accounting of a store.
type Stats struct {
	CapacityBytes uint64 `json:"capacity_bytes"`
	AUsTotal      uint64 `json:"aus_total"`
	AUsUsed       uint64 `json:"aus_used"`
	AUsFree       uint64 `json:"aus_free"`
	Objects       int    `json:"objects"`
	HiddenObjects int    `json:"hidden_objects"`
	DataBlocks    uint64 `json:"data_blocks"`
	ZeroBlocks    uint64 `json:"zero_blocks"`
}

// ObjectVersion is one object replica's version, and its parent.
type ObjectVersion struct {
	Object  ObjectID
	Version uint64
	Parent  *ObjectID
	Hidden  bool // deleted, kept for its children (AllVersions only)
}

const stripes = 256

// Store is one disk's object store. All methods are safe for concurrent use.
type Store struct {
	dev    Device
	timed  *timedDevice // dev, seen by the watchdog
	sb     Superblock
	cached bool // data I/O through the page cache (or memory): no device wait
	// slowWrites is when (unix nanoseconds) the last quick write that
	// took longer than slowQuickWrite ended (see Server.ServeQuick).
	slowWrites atomic.Int64

	flushMu sync.Mutex   // serialises flushes
	gate    sync.RWMutex // data ops hold R; flush encode, create and delete hold W
	stripe  [stripes]sync.RWMutex

	mu       sync.Mutex // everything below
	failed   error
	failedCh chan struct{} // closed when failed is set
	aus      []auMeta
	auCur    []int8 // slot (0/1) of the newest valid page on disk, -1 none
	objCur   []int8
	freeAUs  []int32
	objects  map[ObjectID]*object // visible objects
	slots    []*object            // object table, nil = free
	freeSlot []int
	byInc    map[uint64]*object
	nextInc  uint64
	epoch    uint64
	// dirtyAU and dirtyObj are the records changed since the last flush,
	// ckptAU and ckptObj those changed since the last flush or checkpoint.
	dirtyAU  map[int32]struct{}
	dirtyObj map[int]struct{}
	ckptAU   map[int32]struct{}
	ckptObj  map[int]struct{}
	pending  []*object // hidden childless objects to free after the next flush
	objAUs   int

	// boot identifies this boot of the host (zero: unknown); the flush
	// mark records it beside the durable epoch (see DESIGN.md "Process
	// crashes"). trustTo is the highest epoch load accepted a record of.
	boot    [16]byte
	marks   bool // the disk's format has the flush mark
	markCur int8 // slot of the newest valid mark, -1 none
	markDue bool // the next flush writes the mark even if nothing else
	// markLast: the next flush makes its object records durable before it
	// writes the mark, because some rewrite records load rejected: a
	// mark that reached the disk without them would trust the rejected
	// slots they were to overwrite.
	markLast bool
	trustTo  uint64
}

// Format writes a new superblock on dev. The metadata tables need no
// clearing: records of an earlier format fail their checksum (FormatID).
func Format(dev Device, sb Superblock) error {
	if _, err := dev.WriteAt(sb.Encode(), 0); err != nil {
		return fmt.Errorf("format disk %d: %w", sb.DiskID, err)
	}
	if err := dev.Sync(); err != nil {
		return fmt.Errorf("format disk %d: %w", sb.DiskID, err)
	}
	return nil
}

// ReadSuperblock reads and checks the superblock of dev.
func ReadSuperblock(dev Device) (Superblock, error) {
	b := make([]byte, superblockSize)
	if _, err := dev.ReadAt(b, 0); err != nil {
		return Superblock{}, fmt.Errorf("read superblock: %w", err)
	}
	return ParseSuperblock(b)
}

// Open reads the superblock and every metadata record of dev and rebuilds
// the store. Records left inconsistent by a crash are repaired and flushed
// before Open returns.
func Open(dev Device) (*Store, error) {
	return open(dev, hostBoot())
}

// open is Open on a host whose boot is boot; tests pass another boot to
// see what a restart of the host finds.
func open(dev Device, boot [16]byte) (*Store, error) {
	sb, err := ReadSuperblock(dev)
	if err != nil {
		return nil, err
	}
	timed := newTimedDevice(dev)
	s := &Store{dev: timed, timed: timed, sb: sb, objects: map[ObjectID]*object{}, byInc: map[uint64]*object{}, failedCh: make(chan struct{}),
		dirtyAU: map[int32]struct{}{}, dirtyObj: map[int]struct{}{}, ckptAU: map[int32]struct{}{}, ckptObj: map[int]struct{}{},
		objAUs: int(sb.ObjectSize / AUSize), boot: boot}
	timed.setDataOffset(int64(sb.DataOff))
	s.cached = true
	if c, ok := dev.(interface{ cached() bool }); ok {
		s.cached = c.cached()
	}
	if err := s.load(); err != nil {
		return nil, fmt.Errorf("open disk %d: %w", sb.DiskID, err)
	}
	if err := s.Flush(); err != nil {
		return nil, err
	}
	return s, nil
}

// Superblock returns the disk's identity and layout.
func (s *Store) Superblock() Superblock { return s.sb }

// Close flushes and closes the device.
func (s *Store) Close() error {
	err := s.Flush()
	if cerr := s.dev.Close(); err == nil {
		err = cerr
	}
	return err
}

func (s *Store) recordCRC(b []byte) uint32 {
	c := crc32.Update(0, castagnoli, s.sb.FormatID[:])
	return crc32.Update(c, castagnoli, b)
}

// Object record slot: magic, flags, epoch, inc, volume, index, parent inc,
// version ... crc at the end.
const (
	objMagic  = 0x4a424f4b // "KOBJ"
	auMagic   = 0x3155414b // "KAU1"
	objUsed   = 1
	objHidden = 2
)

func (s *Store) encodeObj(slot int, epoch uint64) []byte {
	b := make([]byte, objSlotSize)
	le := binary.LittleEndian
	le.PutUint32(b[0:], objMagic)
	le.PutUint64(b[8:], epoch)
	if o := s.slots[slot]; o != nil {
		flags := uint32(objUsed)
		if o.hidden {
			flags |= objHidden
		}
		le.PutUint32(b[4:], flags)
		le.PutUint64(b[16:], o.inc)
		le.PutUint64(b[24:], o.id.Volume)
		le.PutUint32(b[32:], o.id.Index)
		le.PutUint64(b[40:], o.parentIn)
		le.PutUint64(b[48:], o.version)
	}
	le.PutUint32(b[objSlotSize-4:], s.recordCRC(b[:objSlotSize-4]))
	return b
}

func (s *Store) encodeAU(au int32, epoch uint64) []byte {
	b := make([]byte, auSlotSize)
	le := binary.LittleEndian
	m := &s.aus[au]
	le.PutUint32(b[0:], auMagic)
	le.PutUint64(b[8:], epoch)
	le.PutUint64(b[16:], m.owner)
	le.PutUint32(b[24:], m.index)
	if m.owner != 0 {
		copy(b[auStatesOff:auCRCsOff], m.states[:])
		for i, c := range m.crcs {
			le.PutUint32(b[auCRCsOff+4*i:], c)
		}
		for i, v := range m.vers {
			le.PutUint64(b[auVersOff+8*i:], v)
		}
	}
	le.PutUint32(b[auSlotSize-4:], s.recordCRC(b[:auSlotSize-4]))
	return b
}

// newestSlot picks the valid slot with the higher epoch of a two-slot
// record, or -1. A slot of an epoch above trustTo was written after the
// last flush the mark records as durable, in an earlier boot of the host:
// it is passed over, and rejected reports that the record must be
// written again so that it cannot count later.
func (s *Store) newestSlot(rec []byte, slotSize int, magic uint32) (best int8, bestEpoch uint64, rejected bool) {
	le := binary.LittleEndian
	best = -1
	for i := 0; i < 2; i++ {
		b := rec[i*slotSize : (i+1)*slotSize]
		if le.Uint32(b) != magic || le.Uint32(b[slotSize-4:]) != s.recordCRC(b[:slotSize-4]) {
			continue
		}
		// Epochs and incarnations must stay above those of every valid
		// slot, the older and the rejected ones included: the older may
		// become the newest if the newer one is ever lost, and a record
		// written again must outrank a rejected one.
		e := le.Uint64(b[8:])
		s.epoch = max(s.epoch, e)
		s.nextInc = max(s.nextInc, le.Uint64(b[16:]))
		if e > s.trustTo {
			rejected = true
			continue
		}
		if best < 0 || e > bestEpoch {
			best, bestEpoch = int8(i), e
		}
	}
	return best, bestEpoch, rejected
}

// The flush mark (two slots at markOff): magic, the epoch of the last
// flush that completed (every record of that epoch or lower is durable),
// zeros at 16 (newestSlot reads an incarnation there, as in the other
// records), the boot of the host that wrote it ... crc at the end.
const (
	markMagic  = 0x4b524d4b // "KMRK"
	markBootAt = 24
)

func (s *Store) encodeMark(epoch uint64) []byte {
	b := make([]byte, markSlotSize)
	le := binary.LittleEndian
	le.PutUint32(b[0:], markMagic)
	le.PutUint64(b[8:], epoch)
	copy(b[markBootAt:markBootAt+16], s.boot[:])
	le.PutUint32(b[markSlotSize-4:], s.recordCRC(b[:markSlotSize-4]))
	return b
}

// loadMark reads the flush mark and sets which records load may trust.
// Written in this boot of the host, every record is in the page cache as
// the server left it, so all are trusted (a crash of the process loses
// nothing checkpointed). Written in another boot, a record newer than the
// last completed flush may be a checkpoint the host never made durable,
// describing data that did not reach the disk: only records up to that
// flush count. A disk without a mark (formatted, or from before marks)
// holds no checkpoint.
func (s *Store) loadMark() error {
	s.trustTo = math.MaxUint64
	s.markCur = -1
	s.marks = s.sb.FormatVersion != formatNoMark
	if !s.marks {
		return nil
	}
	b := make([]byte, 2*markSlotSize)
	if _, err := s.dev.ReadAt(b, markOff); err != nil {
		return fmt.Errorf("read flush mark: %w", err)
	}
	cur, e, _ := s.newestSlot(b, markSlotSize, markMagic)
	s.markCur = cur
	s.markDue = true // the open's flush records this boot
	if cur >= 0 && !s.sameBoot(b[int(cur)*markSlotSize+markBootAt:][:16]) {
		s.trustTo = e
		s.markLast = true
	}
	return nil
}

func (s *Store) sameBoot(boot []byte) bool {
	return s.boot != [16]byte{} && bytes.Equal(boot, s.boot[:])
}

var hostBoot = sync.OnceValue(func() [16]byte {
	var id [16]byte
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return id // unknown: every checkpoint is a flush
	}
	h, err := hex.DecodeString(strings.ReplaceAll(strings.TrimSpace(string(b)), "-", ""))
	if err != nil || len(h) != len(id) {
		return id
	}
	copy(id[:], h)
	return id
})

// load rebuilds the in-memory metadata from the tables.
func (s *Store) load() error {
	if err := s.loadMark(); err != nil {
		return err
	}
	le := binary.LittleEndian
	n := int(s.sb.NumObjects)
	s.slots = make([]*object, n)
	s.objCur = make([]int8, n)
	objEpoch := make([]uint64, n)
	const chunk = 1024
	buf := make([]byte, chunk*auPageSize)
	for first := 0; first < n; first += chunk {
		cnt := min(chunk, n-first)
		b := buf[:cnt*objRecordSize]
		if _, err := s.dev.ReadAt(b, int64(objTableOff+first*objRecordSize)); err != nil {
			return fmt.Errorf("read object table: %w", err)
		}
		for i := 0; i < cnt; i++ {
			rec := b[i*objRecordSize : (i+1)*objRecordSize]
			cur, e, rejected := s.newestSlot(rec, objSlotSize, objMagic)
			slot := first + i
			s.objCur[slot] = cur
			if rejected {
				s.markObj(slot)
			}
			if cur < 0 {
				continue
			}
			r := rec[int(cur)*objSlotSize:]
			if le.Uint32(r[4:])&objUsed == 0 {
				continue
			}
			o := &object{inc: le.Uint64(r[16:]), id: ObjectID{le.Uint64(r[24:]), le.Uint32(r[32:])},
				parentIn: le.Uint64(r[40:]), version: le.Uint64(r[48:]), hidden: le.Uint32(r[4:])&objHidden != 0, slot: slot}
			if old := s.byInc[o.inc]; old != nil {
				// Should not happen; keep the newer record.
				if objEpoch[old.slot] > e {
					s.markObj(slot)
					continue
				}
				s.slots[old.slot] = nil
				s.markObj(old.slot)
			}
			o.aus = make([]int32, s.objAUs)
			for k := range o.aus {
				o.aus[k] = -1
			}
			s.slots[slot] = o
			objEpoch[slot] = e
			s.byInc[o.inc] = o
		}
	}
	// Two visible records of one id: a crash between creating one and
	// freeing the other. The newer wins; the other is freed.
	for slot, o := range s.slots {
		if o == nil || o.hidden {
			continue
		}
		if old := s.objects[o.id]; old != nil {
			loser := o
			if objEpoch[slot] > objEpoch[old.slot] {
				loser = old
				s.objects[o.id] = o
			}
			s.slots[loser.slot] = nil
			delete(s.byInc, loser.inc)
			s.markObj(loser.slot)
			continue
		}
		s.objects[o.id] = o
	}
	for _, o := range s.slots {
		if o == nil || o.parentIn == 0 {
			continue
		}
		if p := s.byInc[o.parentIn]; p != nil {
			o.parent = p
			p.children++
		} else {
			o.lost = true
		}
	}

	// AU table.
	na := int(s.sb.NumAUs)
	s.aus = make([]auMeta, na)
	s.auCur = make([]int8, na)
	auEpoch := make([]uint64, na)
	for first := 0; first < na; first += chunk {
		cnt := min(chunk, na-first)
		b := buf[:cnt*auPageSize]
		if _, err := s.dev.ReadAt(b, int64(s.sb.AUTableOff)+int64(first)*auPageSize); err != nil {
			return fmt.Errorf("read AU table: %w", err)
		}
		for i := 0; i < cnt; i++ {
			rec := b[i*auPageSize : (i+1)*auPageSize]
			cur, e, rejected := s.newestSlot(rec, auSlotSize, auMagic)
			au := int32(first + i)
			s.auCur[au] = cur
			if rejected {
				s.markAU(au)
			}
			if cur < 0 {
				continue
			}
			r := rec[int(cur)*auSlotSize:]
			owner := le.Uint64(r[16:])
			o := s.byInc[owner]
			idx := le.Uint32(r[24:])
			if o == nil || int(idx) >= s.objAUs {
				continue // free, or owned by a dead incarnation
			}
			if prev := o.aus[idx]; prev >= 0 {
				// Two AUs claim one place: the newer page wins, the
				// other is freed on disk too so it cannot come back.
				if auEpoch[prev] > e {
					s.markAU(au)
					continue
				}
				s.aus[prev] = auMeta{}
				s.markAU(prev)
			}
			m := &s.aus[au]
			m.owner, m.index = owner, idx
			copy(m.states[:], r[auStatesOff:auCRCsOff])
			for k := range m.crcs {
				m.crcs[k] = le.Uint32(r[auCRCsOff+4*k:])
				m.vers[k] = le.Uint64(r[auVersOff+8*k:])
			}
			auEpoch[au] = e
			o.aus[idx] = au
		}
	}
	for au := na - 1; au >= 0; au-- {
		if s.aus[au].owner == 0 {
			s.freeAUs = append(s.freeAUs, int32(au))
		}
	}
	for slot := n - 1; slot >= 0; slot-- {
		if s.slots[slot] == nil {
			s.freeSlot = append(s.freeSlot, slot)
		}
	}
	s.nextInc++
	// Hidden objects whose last child went away before the crash.
	for _, o := range s.slots {
		if o != nil && o.hidden && o.children == 0 {
			s.pending = append(s.pending, o)
		}
	}
	return nil
}

// fail stops the store after an I/O error.
func (s *Store) fail(err error) error {
	s.mu.Lock()
	if s.failed == nil {
		s.failed = err
		close(s.failedCh)
	}
	s.mu.Unlock()
	return fmt.Errorf("disk %d: %w: %v", s.sb.DiskID, ErrFailed, err)
}

// Failed is closed when an I/O error has stopped the store.
func (s *Store) Failed() <-chan struct{} { return s.failedCh }

func (s *Store) lookup(id ObjectID) (*object, error) {
	if s.failed != nil {
		return nil, fmt.Errorf("disk %d: %w: %v", s.sb.DiskID, ErrFailed, s.failed)
	}
	o := s.objects[id]
	if o == nil {
		return nil, fmt.Errorf("disk %d: object %s: %w", s.sb.DiskID, id, ErrNotFound)
	}
	return o, nil
}

// find returns the visible object id, or with hidden its hidden one
// (deleted, kept for its children; the newest if there were several).
// Caller holds mu.
func (s *Store) find(id ObjectID, hidden bool) (*object, error) {
	if !hidden {
		return s.lookup(id)
	}
	if s.failed != nil {
		return nil, fmt.Errorf("disk %d: %w: %v", s.sb.DiskID, ErrFailed, s.failed)
	}
	var found *object
	for _, o := range s.slots {
		if o != nil && o.hidden && o.id == id && (found == nil || o.inc > found.inc) {
			found = o
		}
	}
	if found == nil {
		return nil, fmt.Errorf("disk %d: hidden object %s: %w", s.sb.DiskID, id, ErrNotFound)
	}
	return found, nil
}

func (s *Store) checkRange(id ObjectID, off uint64, n int) error {
	if off%BlockSize != 0 || n%BlockSize != 0 || off+uint64(n) > uint64(s.sb.ObjectSize) {
		return fmt.Errorf("disk %d: object %s: offset %d length %d: %w (4 KiB aligned, inside %d bytes)", s.sb.DiskID, id, off, n, ErrRange, s.sb.ObjectSize)
	}
	return nil
}

func (s *Store) stripeOf(inc uint64, idx int) *sync.RWMutex {
	return &s.stripe[(inc*31+uint64(idx))%stripes]
}

func (s *Store) dataOff(au int32, blk int) int64 {
	return int64(s.sb.DataOff) + int64(au)*AUSize + int64(blk)*BlockSize
}

// allocAU gives object o an AU for index idx. Caller holds mu.
func (s *Store) allocAU(o *object, idx int) (int32, error) {
	if len(s.freeAUs) == 0 {
		return -1, fmt.Errorf("disk %d: object %s: %w", s.sb.DiskID, o.id, ErrNoSpace)
	}
	au := s.freeAUs[len(s.freeAUs)-1]
	s.freeAUs = s.freeAUs[:len(s.freeAUs)-1]
	s.aus[au] = auMeta{owner: o.inc, index: uint32(idx)}
	o.aus[idx] = au
	s.markAU(au)
	return au, nil
}

// markAU and markObj note a changed record for the next flush and
// checkpoint. Caller holds mu.
func (s *Store) markAU(au int32) {
	s.dirtyAU[au] = struct{}{}
	s.ckptAU[au] = struct{}{}
}

func (s *Store) markObj(slot int) {
	s.dirtyObj[slot] = struct{}{}
	s.ckptObj[slot] = struct{}{}
}

// freeAU returns an AU to the free list. Caller holds mu.
func (s *Store) freeAU(o *object, idx int) {
	au := o.aus[idx]
	o.aus[idx] = -1
	s.aus[au] = auMeta{}
	s.freeAUs = append(s.freeAUs, au)
	s.markAU(au)
}

// Write stores data (4 KiB aligned) at off in the object. version is the
// writer's object version; 0 means one more than the current one. The
// write is durable after the next Flush.
func (s *Store) Write(id ObjectID, off uint64, data []byte, version uint64) error {
	if err := s.checkRange(id, off, len(data)); err != nil {
		return err
	}
	crcs := make([]uint32, len(data)/BlockSize)
	for i := range crcs {
		crcs[i] = crc32.Checksum(data[i*BlockSize:(i+1)*BlockSize], castagnoli)
	}
	s.gate.RLock()
	defer s.gate.RUnlock()
	s.mu.Lock()
	o, err := s.lookup(id)
	if err == nil && version == 0 {
		version = o.version + 1
	}
	s.mu.Unlock()
	if err != nil {
		return err
	}
	blk := int(off / BlockSize)
	for done := 0; done < len(crcs); {
		idx, b0 := (blk+done)/BlocksPerAU, (blk+done)%BlocksPerAU
		n := min(len(crcs)-done, BlocksPerAU-b0)
		if err := s.writeChunk(o, idx, b0, data[done*BlockSize:(done+n)*BlockSize], crcs[done:done+n], version); err != nil {
			return err
		}
		done += n
	}
	s.mu.Lock()
	s.raiseVersion(o, version)
	s.mu.Unlock()
	return nil
}

// raiseVersion keeps the object's version the highest it was given.
// Caller holds mu.
func (s *Store) raiseVersion(o *object, version uint64) {
	if version > o.version {
		o.version = version
		s.markObj(o.slot)
	}
}

func (s *Store) writeChunk(o *object, idx, b0 int, data []byte, crcs []uint32, version uint64) error {
	st := s.stripeOf(o.inc, idx)
	st.Lock()
	defer st.Unlock()
	s.mu.Lock()
	au := o.aus[idx]
	var err error
	if au < 0 {
		au, err = s.allocAU(o, idx)
	}
	s.mu.Unlock()
	if err != nil {
		return err
	}
	// A block that already holds a newer version keeps it: replicas that
	// got two overlapping writes in different orders end up alike, and a
	// write delayed past a recovery copy cannot undo it. The stripe lock
	// keeps other writes of this AU out; zeroing takes only mu, so the
	// versions are checked again when the metadata is recorded.
	for i := 0; i < len(crcs); {
		if !s.older(au, b0+i, version) {
			i++
			continue
		}
		j := i + 1
		for j < len(crcs) && s.older(au, b0+j, version) {
			j++
		}
		if _, err := s.dev.WriteAt(data[i*BlockSize:j*BlockSize], s.dataOff(au, b0+i)); err != nil {
			return s.fail(err)
		}
		s.mu.Lock()
		m := &s.aus[au]
		for k := i; k < j; k++ {
			if m.vers[b0+k] > version {
				continue // zeroed meanwhile by a newer request
			}
			m.states[b0+k] = BlockData
			m.crcs[b0+k] = crcs[k]
			m.vers[b0+k] = version
		}
		s.markAU(au)
		s.mu.Unlock()
		i = j
	}
	return nil
}

// older reports whether block b of au holds a version below version, so
// that a write of version may replace it.
func (s *Store) older(au int32, b int, version uint64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.aus[au].vers[b] < version
}

// WriteZeroes makes the range read as zeros, also over a parent, and frees
// the space it held (TRIM and WRITE_ZEROES are the same here).
func (s *Store) WriteZeroes(id ObjectID, off uint64, n int, version uint64) error {
	return s.clearRange(id, off, n, version, false)
}

// clearRange zeroes a range, or with unwrite makes it read through the
// parent again (recovery uses it to match a replica).
func (s *Store) clearRange(id ObjectID, off uint64, n int, version uint64, unwrite bool) error {
	if err := s.checkRange(id, off, n); err != nil {
		return err
	}
	s.gate.RLock()
	defer s.gate.RUnlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	o, err := s.lookup(id)
	if err != nil {
		return err
	}
	if version == 0 {
		version = o.version + 1
	}
	state := uint8(BlockUnwritten) // without a parent unwritten reads zeros
	if (o.parent != nil || o.lost) && !unwrite {
		state = BlockZero
	}
	blk, cnt := int(off/BlockSize), n/BlockSize
	for done := 0; done < cnt; {
		idx, b0 := (blk+done)/BlocksPerAU, (blk+done)%BlocksPerAU
		k := min(cnt-done, BlocksPerAU-b0)
		done += k
		// Stripe before mu, as in writeChunk: drop mu while waiting.
		st := s.stripeOf(o.inc, idx)
		s.mu.Unlock()
		st.Lock()
		s.mu.Lock()
		err := s.zeroChunk(o, idx, b0, k, state, version, !unwrite)
		st.Unlock()
		if err != nil {
			return err
		}
	}
	s.raiseVersion(o, version)
	return nil
}

// zeroChunk sets blocks [b0, b0+k) of AU index idx to state (zero or
// unwritten); with keepNewer, blocks holding a newer version than this
// request keep it, as in writeChunk. An AU left without data or zero
// blocks is freed; its blocks' versions go with it (a replica compares
// them as 0). Caller holds the stripe and mu.
func (s *Store) zeroChunk(o *object, idx, b0, k int, state uint8, version uint64, keepNewer bool) error {
	au := o.aus[idx]
	if au < 0 {
		if state == BlockUnwritten {
			return nil
		}
		var err error
		if au, err = s.allocAU(o, idx); err != nil {
			return err
		}
	}
	m := &s.aus[au]
	for i := b0; i < b0+k; i++ {
		if keepNewer && m.vers[i] > version {
			continue
		}
		m.states[i] = state
		m.crcs[i] = 0
		m.vers[i] = version
	}
	s.markAU(au)
	keep := false
	for _, st := range m.states {
		if st == BlockData || st == BlockZero {
			keep = true
			break
		}
	}
	if !keep {
		s.freeAU(o, idx)
	}
	return nil
}

// Read fills buf (4 KiB aligned) from off in the object, through its
// parent chain. A block failing its checksum fails the read with
// ErrChecksum; no data of it is returned.
func (s *Store) Read(id ObjectID, off uint64, buf []byte) error {
	return s.read(id, off, buf, false)
}

// ErrWouldBlock is ReadCached's answer when some block of the range is not
// in the page cache (or the device has no cache), or a lock it needs is
// held.
var ErrWouldBlock = errors.New("data not in the page cache, or locked")

// ReadCached is Read for data the page cache holds: it never waits for the
// device or for a lock a write or a metadata change holds, failing with
// ErrWouldBlock instead, so that a connection's reader can serve it itself
// (Server.ServeQuick).
func (s *Store) ReadCached(id ObjectID, off uint64, buf []byte) error {
	return s.read(id, off, buf, true)
}

func (s *Store) read(id ObjectID, off uint64, buf []byte, cachedOnly bool) error {
	if err := s.checkRange(id, off, len(buf)); err != nil {
		return err
	}
	if !cachedOnly {
		s.gate.RLock()
	} else if !s.gate.TryRLock() {
		return ErrWouldBlock
	}
	defer s.gate.RUnlock()
	s.mu.Lock()
	o, err := s.lookup(id)
	s.mu.Unlock()
	if err != nil {
		return err
	}
	return s.readObject(o, int(off/BlockSize), buf, cachedOnly)
}

func (s *Store) readObject(o *object, blk int, buf []byte, cachedOnly bool) error {
	cnt := len(buf) / BlockSize
	for done := 0; done < cnt; {
		idx, b0 := (blk+done)/BlocksPerAU, (blk+done)%BlocksPerAU
		k := min(cnt-done, BlocksPerAU-b0)
		if err := s.readChunk(o, idx, b0, buf[done*BlockSize:(done+k)*BlockSize], cachedOnly); err != nil {
			return err
		}
		done += k
	}
	return nil
}

// readChunk reads blocks of one AU index; unwritten runs are read from the
// parent after the stripe is released (lock order never nests stripes).
// With cachedOnly, data the page cache does not hold fails the read with
// ErrWouldBlock.
func (s *Store) readChunk(o *object, idx, b0 int, buf []byte, cachedOnly bool) error {
	k := len(buf) / BlockSize
	var states [BlocksPerAU]uint8
	var crcs [BlocksPerAU]uint32
	st := s.stripeOf(o.inc, idx)
	if !cachedOnly {
		st.RLock()
	} else if !st.TryRLock() {
		return ErrWouldBlock // a write holds it
	}
	s.mu.Lock()
	au := o.aus[idx]
	if au >= 0 {
		copy(states[:k], s.aus[au].states[b0:b0+k])
		copy(crcs[:k], s.aus[au].crcs[b0:b0+k])
	}
	s.mu.Unlock()
	for i := 0; i < k; {
		j := i + 1
		for j < k && states[j] == states[i] {
			j++
		}
		part := buf[i*BlockSize : j*BlockSize]
		switch states[i] {
		case BlockData:
			if cachedOnly {
				if s.timed.ReadCachedAt(part, s.dataOff(au, b0+i)) < len(part) {
					st.RUnlock()
					return ErrWouldBlock
				}
			} else if _, err := s.dev.ReadAt(part, s.dataOff(au, b0+i)); err != nil {
				st.RUnlock()
				return s.fail(err)
			}
			for b := i; b < j; b++ {
				if crc32.Checksum(buf[b*BlockSize:(b+1)*BlockSize], castagnoli) != crcs[b] {
					st.RUnlock()
					clear(buf)
					return fmt.Errorf("disk %d: object %s block %d: %w; read it from another replica", s.sb.DiskID, o.id, idx*BlocksPerAU+b0+b, ErrChecksum)
				}
			}
		case BlockZero:
			clear(part)
		}
		i = j
	}
	st.RUnlock()
	for i := 0; i < k; {
		if states[i] != BlockUnwritten {
			i++
			continue
		}
		j := i + 1
		for j < k && states[j] == BlockUnwritten {
			j++
		}
		part := buf[i*BlockSize : j*BlockSize]
		switch {
		case o.lost:
			return fmt.Errorf("disk %d: object %s: %w", s.sb.DiskID, o.id, ErrParentLost)
		case o.parent != nil:
			if err := s.readObject(o.parent, idx*BlocksPerAU+b0+i, part, cachedOnly); err != nil {
				return err
			}
		default:
			clear(part)
		}
		i = j
	}
	return nil
}

// ReadOwn reads the object's own blocks, not its parent's, for recovery:
// states gets one Block* value per block and buf the data of BlockData
// blocks (zeros elsewhere). It also returns the object's version.
// With hidden it reads the hidden object of the id.
func (s *Store) ReadOwn(id ObjectID, hidden bool, off uint64, buf []byte, states []uint8) (uint64, error) {
	if err := s.checkRange(id, off, len(buf)); err != nil {
		return 0, err
	}
	if len(states) != len(buf)/BlockSize {
		return 0, fmt.Errorf("read own: %w: %d states for %d blocks", ErrRange, len(states), len(buf)/BlockSize)
	}
	s.gate.RLock()
	defer s.gate.RUnlock()
	s.mu.Lock()
	o, err := s.find(id, hidden)
	var version uint64
	if o != nil {
		version = o.version
	}
	s.mu.Unlock()
	if err != nil {
		return 0, err
	}
	// Read it as an orphan: unwritten blocks come back as zeros.
	own := *o
	own.parent, own.lost = nil, false
	blk := int(off / BlockSize)
	for i := range states {
		b := blk + i
		s.mu.Lock()
		au := o.aus[b/BlocksPerAU]
		states[i] = BlockUnwritten
		if au >= 0 {
			states[i] = s.aus[au].states[b%BlocksPerAU]
		}
		s.mu.Unlock()
	}
	return version, s.readObject(&own, blk, buf, false)
}

// CreateObject creates an empty object, a copy-on-write child of parent
// when parent is not nil. It is durable when CreateObject returns.
func (s *Store) CreateObject(id ObjectID, parent *ObjectID) error {
	return s.createObject(id, parent, false, false)
}

// createChild is CreateObject for recovery, whose parent may be the
// hidden object of its id (parentHidden): a client never creates under a
// deleted parent.
func (s *Store) createChild(id ObjectID, parent *ObjectID, parentHidden bool) error {
	return s.createObject(id, parent, false, parentHidden)
}

// createHidden creates the hidden object of an id, which recovery fills
// and then creates its children under. Until it has children it is freed
// by a restart like any childless hidden object.
func (s *Store) createHidden(id ObjectID, parent *ObjectID, parentHidden bool) error {
	return s.createObject(id, parent, true, parentHidden)
}

func (s *Store) createObject(id ObjectID, parent *ObjectID, hidden, parentHidden bool) error {
	s.gate.Lock()
	s.mu.Lock()
	err := s.createLocked(id, parent, hidden, parentHidden)
	s.mu.Unlock()
	s.gate.Unlock()
	if err != nil {
		return err
	}
	return s.Flush()
}

func (s *Store) createLocked(id ObjectID, parent *ObjectID, hidden, parentHidden bool) error {
	if s.failed != nil {
		return fmt.Errorf("disk %d: %w: %v", s.sb.DiskID, ErrFailed, s.failed)
	}
	if hidden {
		if _, err := s.find(id, true); err == nil {
			return fmt.Errorf("disk %d: hidden object %s: %w", s.sb.DiskID, id, ErrExists)
		}
	} else if s.objects[id] != nil {
		return fmt.Errorf("disk %d: object %s: %w", s.sb.DiskID, id, ErrExists)
	}
	var p *object
	if parent != nil {
		var err error
		if p, err = s.find(*parent, parentHidden); err != nil {
			return fmt.Errorf("create object %s: parent: %w", id, err)
		}
	}
	if len(s.freeSlot) == 0 {
		return fmt.Errorf("disk %d: object %s: %w (object table full)", s.sb.DiskID, id, ErrNoSpace)
	}
	slot := s.freeSlot[len(s.freeSlot)-1]
	s.freeSlot = s.freeSlot[:len(s.freeSlot)-1]
	o := &object{id: id, inc: s.nextInc, slot: slot, aus: make([]int32, s.objAUs)}
	s.nextInc++
	for i := range o.aus {
		o.aus[i] = -1
	}
	if p != nil {
		o.parent, o.parentIn = p, p.inc
		p.children++
	}
	s.slots[slot] = o
	if hidden {
		o.hidden = true
	} else {
		s.objects[id] = o
	}
	s.byInc[o.inc] = o
	s.markObj(slot)
	return nil
}

// DeleteObject deletes an object. One with children is hidden and keeps
// its data until its last child is deleted. Durable when it returns.
func (s *Store) DeleteObject(id ObjectID) error {
	return s.deleteObject(id, nil)
}

// deleteObject is DeleteObject; with version set, only if the object's
// version is still *version (errChanged otherwise).
func (s *Store) deleteObject(id ObjectID, version *uint64) error {
	s.gate.Lock()
	s.mu.Lock()
	o, err := s.lookup(id)
	if err == nil && version != nil && o.version != *version {
		err = fmt.Errorf("object %s: %w", id, errChanged)
	}
	if err == nil {
		delete(s.objects, id)
		if o.children > 0 {
			o.hidden = true
			s.markObj(o.slot)
		} else {
			s.freeObject(o)
		}
	}
	s.mu.Unlock()
	s.gate.Unlock()
	if err != nil {
		return err
	}
	return s.Flush()
}

// freeObject releases an object's AUs and table slot. Its parent, if
// hidden and now childless, is freed only after this is durable (queued in
// pending), so a crash never leaves a child without its parent. Caller
// holds mu.
func (s *Store) freeObject(o *object) {
	for idx, au := range o.aus {
		if au >= 0 {
			s.freeAU(o, idx)
		}
	}
	s.slots[o.slot] = nil
	s.freeSlot = append(s.freeSlot, o.slot)
	s.markObj(o.slot)
	delete(s.byInc, o.inc)
	if p := o.parent; p != nil {
		p.children--
		if p.hidden && p.children == 0 {
			s.pending = append(s.pending, p)
		}
	}
}

// Flush makes every write completed before it durable: data first, then
// the metadata records describing it, each into its spare slot.
func (s *Store) Flush() error {
	s.flushMu.Lock()
	defer s.flushMu.Unlock()
	for {
		more, err := s.flushOnce()
		if err != nil || !more {
			return err
		}
	}
}

// encodeChanged encodes the given AU pages and object records at epoch,
// each for the slot that does not hold its durable copy, sorted by
// offset. Caller holds gate and mu.
func (s *Store) encodeChanged(aus map[int32]struct{}, objs map[int]struct{}, epoch uint64) []pageWrite {
	writes := make([]pageWrite, 0, len(aus)+len(objs))
	for au := range aus {
		to := int8(0)
		if s.auCur[au] == 0 {
			to = 1
		}
		writes = append(writes, pageWrite{off: int64(s.sb.AUTableOff) + int64(au)*auPageSize + int64(to)*auSlotSize,
			b: s.encodeAU(au, epoch), au: au, to: to})
	}
	for slot := range objs {
		to := int8(0)
		if s.objCur[slot] == 0 {
			to = 1
		}
		writes = append(writes, pageWrite{off: int64(objTableOff) + int64(slot)*objRecordSize + int64(to)*objSlotSize,
			b: s.encodeObj(slot, epoch), au: -1, slot: slot, to: to})
	}
	sort.Slice(writes, func(i, j int) bool { return writes[i].off < writes[j].off })
	return writes
}

// writePages writes the AU pages (aus) or the object records (!aus) of
// writes.
func (s *Store) writePages(writes []pageWrite, aus bool) error {
	for _, w := range writes {
		if (w.au >= 0) == aus {
			if _, err := s.dev.WriteAt(w.b, w.off); err != nil {
				return s.fail(err)
			}
		}
	}
	return nil
}

// Checkpoint writes the records changed since the last flush or checkpoint
// into their spare slots, as a flush does, but waits for no device: they
// reach the page cache, which outlives a crash of the server process, and
// a restart in the same boot of the host finds them (DESIGN.md "Process
// crashes"). It makes nothing durable; the next flush writes the same
// records again. On a disk of format 2 (no mark), or where the host's
// boot is unknown, it flushes instead.
func (s *Store) Checkpoint() error {
	if !s.marks || s.boot == ([16]byte{}) {
		return s.Flush()
	}
	s.flushMu.Lock()
	defer s.flushMu.Unlock()
	s.gate.Lock()
	s.mu.Lock()
	if s.failed != nil {
		s.mu.Unlock()
		s.gate.Unlock()
		return fmt.Errorf("disk %d: %w: %v", s.sb.DiskID, ErrFailed, s.failed)
	}
	epoch := s.epoch + 1
	writes := s.encodeChanged(s.ckptAU, s.ckptObj, epoch)
	clear(s.ckptAU)
	clear(s.ckptObj)
	s.epoch = epoch
	s.mu.Unlock()
	s.gate.Unlock()
	// AU pages first: a crash in between leaves no version claiming
	// writes whose CRCs were not recorded.
	if err := s.writePages(writes, true); err != nil {
		return err
	}
	return s.writePages(writes, false)
}

type pageWrite struct {
	off  int64
	b    []byte
	au   int32 // or -1
	slot int   // object slot, when au < 0
	to   int8
}

func (s *Store) flushOnce() (bool, error) {
	s.gate.Lock()
	s.mu.Lock()
	if s.failed != nil {
		s.mu.Unlock()
		s.gate.Unlock()
		return false, fmt.Errorf("disk %d: %w: %v", s.sb.DiskID, ErrFailed, s.failed)
	}
	epoch := s.epoch + 1
	writes := s.encodeChanged(s.dirtyAU, s.dirtyObj, epoch)
	clear(s.dirtyAU)
	clear(s.dirtyObj)
	clear(s.ckptAU) // a subset of the dirty ones
	clear(s.ckptObj)
	mark := s.marks && (len(writes) > 0 || s.markDue)
	markLast := s.markLast
	markTo := int8(0)
	if s.markCur == 0 {
		markTo = 1
	}
	s.epoch = epoch
	pending := s.pending
	s.pending = nil
	s.mu.Unlock()
	s.gate.Unlock()

	// AU pages (CRCs, block states) become durable together with the data
	// they describe, and only then the object records, so that a version
	// on disk never claims writes whose blocks are not there. A crash in
	// between leaves records of an unacknowledged flush: old or new each.
	// The mark goes with the object records: once it is durable, so is
	// every record of this epoch and below.
	if err := s.writePages(writes, true); err != nil {
		return false, err
	}
	if err := s.dev.Sync(); err != nil {
		return false, s.fail(err)
	}
	if len(writes) == 0 && len(pending) == 0 && !mark {
		return false, nil
	}
	if err := s.writePages(writes, false); err != nil {
		return false, err
	}
	writeMark := func() error {
		if _, err := s.dev.WriteAt(s.encodeMark(epoch), markOff+int64(markTo)*markSlotSize); err != nil {
			return s.fail(err)
		}
		return nil
	}
	if mark && !markLast {
		if err := writeMark(); err != nil {
			return false, err
		}
	}
	if err := s.dev.Sync(); err != nil {
		return false, s.fail(err)
	}
	if mark && markLast {
		if err := writeMark(); err != nil {
			return false, err
		}
		if err := s.dev.Sync(); err != nil {
			return false, s.fail(err)
		}
	}
	// Freeing hidden parents takes the gate: recovery and scrub address
	// hidden objects too, and each holds the gate's read lock from the
	// lookup to its last device write, so none of them is still using an
	// AU that is freed here and handed to a live object next.
	if len(pending) > 0 {
		s.gate.Lock()
		defer s.gate.Unlock()
	}
	s.mu.Lock()
	for _, w := range writes {
		if w.au >= 0 {
			s.auCur[w.au] = w.to
		} else {
			s.objCur[w.slot] = w.to
		}
	}
	if mark {
		s.markCur, s.markDue, s.markLast = markTo, false, false
	}
	// Children freed in this flush are durable: their hidden parents may go.
	for _, p := range pending {
		if s.byInc[p.inc] == p && p.hidden && p.children == 0 {
			s.freeObject(p)
		}
	}
	more := len(pending) > 0
	s.mu.Unlock()
	return more, nil
}

// Versions lists the version of every visible object.
func (s *Store) Versions() []ObjectVersion {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]ObjectVersion, 0, len(s.objects))
	for id, o := range s.objects {
		v := ObjectVersion{Object: id, Version: o.version}
		if o.parent != nil {
			p := o.parent.id
			v.Parent = &p
		}
		out = append(out, v)
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i].Object, out[j].Object
		return a.Volume < b.Volume || a.Volume == b.Volume && a.Index < b.Index
	})
	return out
}

// AllVersions is Versions with the hidden objects (deleted, kept for
// their children), which recovery copies as parents.
func (s *Store) AllVersions() []ObjectVersion {
	out := s.Versions()
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, o := range s.slots {
		if o == nil || !o.hidden {
			continue
		}
		v := ObjectVersion{Object: o.id, Version: o.version, Hidden: true}
		if o.parent != nil {
			p := o.parent.id
			v.Parent = &p
		}
		out = append(out, v)
	}
	return out
}

// Stats returns the exact space accounting.
func (s *Store) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := Stats{CapacityBytes: s.sb.NumAUs * AUSize, AUsTotal: s.sb.NumAUs, AUsFree: uint64(len(s.freeAUs)), Objects: len(s.objects)}
	st.AUsUsed = st.AUsTotal - st.AUsFree
	for _, o := range s.slots {
		if o != nil && o.hidden {
			st.HiddenObjects++
		}
	}
	for i := range s.aus {
		if s.aus[i].owner == 0 {
			continue
		}
		for _, b := range s.aus[i].states {
			switch b {
			case BlockData:
				st.DataBlocks++
			case BlockZero:
				st.ZeroBlocks++
			}
		}
	}
	return st
}

// BadBlock is a block whose data fails its checksum.
type BadBlock struct {
	Object ObjectID
	Block  int  // block index in the object
	Hidden bool // of the hidden object of the id (a deleted parent)
}

func (s *Store) scrubAU(o *object, idx int, buf []byte) ([]BadBlock, uint64, error) {
	st := s.stripeOf(o.inc, idx)
	st.RLock()
	defer st.RUnlock()
	s.mu.Lock()
	if s.failed != nil {
		s.mu.Unlock()
		return nil, 0, fmt.Errorf("disk %d: %w: %v", s.sb.DiskID, ErrFailed, s.failed)
	}
	au := int32(-1)
	if s.byInc[o.inc] == o {
		au = o.aus[idx]
	}
	var m auMeta
	if au >= 0 {
		m = s.aus[au]
	}
	s.mu.Unlock()
	if au < 0 {
		return nil, 0, nil
	}
	if _, err := s.dev.ReadAt(buf, s.dataOff(au, 0)); err != nil {
		return nil, 0, s.fail(err)
	}
	var bad []BadBlock
	var n uint64
	for b := 0; b < BlocksPerAU; b++ {
		if m.states[b] != BlockData {
			continue
		}
		n++
		if crc32.Checksum(buf[b*BlockSize:(b+1)*BlockSize], castagnoli) != m.crcs[b] {
			bad = append(bad, BadBlock{Object: o.id, Block: idx*BlocksPerAU + b, Hidden: o.hidden})
		}
	}
	if len(bad) > 0 {
		// A hidden parent freed by a flush meanwhile (flushes free them
		// without the stripe) may have had its AU reused: not rot.
		s.mu.Lock()
		gone := s.byInc[o.inc] != o || o.aus[idx] != au
		s.mu.Unlock()
		if gone {
			return nil, 0, nil
		}
	}
	return bad, n, nil
}

// BlockMeta returns the state and version of each of the object's own
// blocks in [off, off+n): what recovery compares between replicas. A
// block of an unallocated AU is unwritten with version 0.
// With hidden it describes the hidden object of the id.
func (s *Store) BlockMeta(id ObjectID, hidden bool, off uint64, n int) ([]uint8, []uint64, error) {
	if err := s.checkRange(id, off, n); err != nil {
		return nil, nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	o, err := s.find(id, hidden)
	if err != nil {
		return nil, nil, err
	}
	cnt, blk := n/BlockSize, int(off/BlockSize)
	states, vers := make([]uint8, cnt), make([]uint64, cnt)
	for i := range states {
		b := blk + i
		if au := o.aus[b/BlocksPerAU]; au >= 0 {
			states[i], vers[i] = s.aus[au].states[b%BlocksPerAU], s.aus[au].vers[b%BlocksPerAU]
		}
	}
	return states, vers, nil
}

// setVersion sets the object's version to a replica's. Recovery only.
func (s *Store) setVersion(id ObjectID, hidden bool, version uint64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	o, err := s.find(id, hidden)
	if err != nil {
		return err
	}
	if o.version != version {
		o.version = version
		s.markObj(o.slot)
	}
	return nil
}

// visibleDescendant returns a visible object that reads through the
// hidden object id: it lives on the same disks, so its placement is the
// hidden object's.
func (s *Store) visibleDescendant(id ObjectID) (ObjectID, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	h, err := s.find(id, true)
	if err != nil {
		return ObjectID{}, false
	}
	for vid, o := range s.objects {
		for p := o.parent; p != nil; p = p.parent {
			if p == h {
				return vid, true
			}
		}
	}
	return ObjectID{}, false
}

// hasHidden reports whether a hidden object id exists.
func (s *Store) hasHidden(id ObjectID) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, err := s.find(id, true)
	return err == nil
}

// hasObject reports whether a visible object id exists.
func (s *Store) hasObject(id ObjectID) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.objects[id] != nil
}
