package scsi

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
)

// Nexus names the I_T nexus a command arrived on (SAM-5 4.6): the
// initiator port (iSCSI name plus ISID) and the target port.
type Nexus struct {
	// InitiatorName is the initiator's iSCSI name.
	InitiatorName string
	// InitiatorPort is "<iqn>,i,0x<isid>".
	InitiatorPort string
	// TargetPort is "<target iqn>,t,0x<tpgt>".
	TargetPort string
	// RelTargetPort is the relative target port identifier.
	RelTargetPort uint16
}

// ID is the key of the nexus in reservation and unit attention tables.
func (n Nexus) ID() string { return n.InitiatorPort + "|" + n.TargetPort }

// Command is one SCSI command with all of its data-out buffer gathered.
type Command struct {
	Nexus   Nexus
	CDB     []byte
	DataOut []byte
}

// Response is the outcome of a command.
type Response struct {
	Status byte
	Sense  []byte
	// Data is the data-in buffer.
	Data []byte
	// DataOutLen is how many data-out bytes the CDB called for; the
	// transport computes write residuals from it.
	DataOutLen int
}

// Limits advertised in the Block Limits VPD page.
const (
	maxTransferBlocks = 1 << 16 // 32 MiB at 512 bytes
	maxUnmapBlocks    = 1 << 20
	maxUnmapDescs     = 256
	maxCompareBlocks  = 255
)

// LU is a logical unit: the SBC-3 direct access block device over a
// Backend, with reservations, mode pages and unit attentions. It is safe
// for concurrent use by many nexuses.
type LU struct {
	be       Backend
	serial   string
	naa      [16]byte
	readOnly bool

	mu       sync.Mutex
	ua       map[string][]uint16 // pending unit attentions per nexus id
	wce      bool                // caching page WCE
	dsense   bool                // control page D_SENSE
	swp      bool                // control page SWP
	reserve6 string              // nexus id holding a RESERVE(6), "" none
	pr       *prState
	store    PRStore

	caw sync.Mutex // serialises COMPARE AND WRITE with itself
}

// LUOptions configures a logical unit.
type LUOptions struct {
	// Name derives the serial number and NAA identifier; it must be
	// stable across restarts (a volume's globalId).
	Name     string
	ReadOnly bool
	// Store keeps persistent reservations; nil keeps them in memory.
	Store PRStore
}

// NewLU creates a logical unit over be, loading persistent reservations
// from opts.Store.
func NewLU(be Backend, opts LUOptions) (*LU, error) {
	sum := sha256.Sum256([]byte(opts.Name))
	lu := &LU{be: be, readOnly: opts.ReadOnly, ua: map[string][]uint16{}, wce: true, store: opts.Store}
	lu.serial = fmt.Sprintf("%x", sum[:8])
	// NAA 6 (IEEE registered extended) with a locally administered id.
	lu.naa[0] = 0x60
	copy(lu.naa[1:], sum[8:23])
	pr, err := loadPR(opts.Store)
	if err != nil {
		return nil, fmt.Errorf("load persistent reservations of %s: %w", opts.Name, err)
	}
	lu.pr = pr
	return lu, nil
}

// Serial is the unit serial number reported in VPD page 0x80.
func (lu *LU) Serial() string { return lu.serial }

// Reset performs a LOGICAL UNIT RESET: RESERVE(6) reservations go,
// mode pages return to defaults, and every nexus gets a unit attention.
// Persistent reservations survive (SPC-4 5.12.2).
func (lu *LU) Reset(asc uint16) {
	lu.mu.Lock()
	defer lu.mu.Unlock()
	lu.reserve6 = ""
	lu.swp = false
	lu.dsense = false
	lu.wce = true
	for id := range lu.ua {
		lu.ua[id] = []uint16{asc}
	}
}

// CapacityChanged queues CAPACITY DATA HAS CHANGED for every nexus: the
// backend's Blocks changed (the volume was resized).
func (lu *LU) CapacityChanged() {
	lu.mu.Lock()
	defer lu.mu.Unlock()
	lu.addUA(ascCapacityChanged, "")
}

// NexusGone drops what a nexus held when its session ended: a RESERVE(6)
// is released (persistent reservations are kept).
func (lu *LU) NexusGone(n Nexus) {
	lu.mu.Lock()
	defer lu.mu.Unlock()
	if lu.reserve6 == n.ID() {
		lu.reserve6 = ""
	}
	delete(lu.ua, n.ID())
}

// addUA queues a unit attention for every known nexus except skip.
// Caller holds mu.
func (lu *LU) addUA(asc uint16, skip string) {
	for id, q := range lu.ua {
		if id != skip && len(q) < 8 {
			lu.ua[id] = append(q, asc)
		}
	}
}

// Execute runs one command. It never returns an error: failures are
// CHECK CONDITION responses with sense data.
func (lu *LU) Execute(cmd *Command) Response {
	var resp Response
	c, err := ParseCDB(cmd.CDB)
	if err != nil {
		return lu.fail(&resp, errInvalidOpcode)
	}
	id := cmd.Nexus.ID()
	lu.mu.Lock()
	if _, ok := lu.ua[id]; !ok {
		lu.ua[id] = nil
	}
	if q := lu.ua[id]; len(q) > 0 && c.Opcode != opInquiry && c.Opcode != opReportLUNs && c.Opcode != opRequestSense {
		lu.ua[id] = q[1:]
		lu.mu.Unlock()
		return lu.fail(&resp, checkCondition(KeyUnitAttention, q[0]))
	}
	conflict := lu.conflicts(c, id)
	lu.mu.Unlock()
	if conflict {
		resp.Status = StatusReservationConflict
		resp.DataOutLen = dataOutLen(c, lu.be.BlockSize(), cmd.CDB)
		return resp
	}
	if err := lu.dispatch(c, cmd, &resp); err != nil {
		return lu.fail(&resp, err)
	}
	return resp
}

func dataOutLen(c CDB, bs uint32, cdb []byte) int {
	switch c.Opcode {
	case opWrite6, opWrite10, opWrite12, opWrite16, opWriteVerify10, opWriteVerify12, opWriteVerify16:
		return int(c.Blocks) * int(bs)
	case opCompareAndWrite:
		return 2 * int(c.Blocks) * int(bs)
	case opWriteSame10, opWriteSame16:
		if c.Opcode == opWriteSame16 && c.Flags&0x01 != 0 {
			return 0
		}
		return int(bs)
	case opVerify10, opVerify12, opVerify16:
		switch (c.Flags >> 1) & 3 {
		case 1:
			return int(c.Blocks) * int(bs)
		case 3:
			return int(bs)
		}
		return 0
	case opUnmap, opModeSelect6, opModeSelect10, opPROut:
		return int(c.Length)
	}
	return 0
}

func (lu *LU) fail(resp *Response, err error) Response {
	if errors.Is(err, errConflict) {
		resp.Status = StatusReservationConflict
		resp.Data = nil
		return *resp
	}
	var se *senseError
	if !errors.As(err, &se) {
		se = checkCondition(KeyMediumError, ascUnrecoveredReadError)
	}
	lu.mu.Lock()
	ds := lu.dsense
	lu.mu.Unlock()
	resp.Status = StatusCheckCondition
	resp.Sense = se.bytes(ds)
	resp.Data = nil
	return *resp
}

func (lu *LU) dispatch(c CDB, cmd *Command, resp *Response) error {
	bs := lu.be.BlockSize()
	resp.DataOutLen = dataOutLen(c, bs, cmd.CDB)
	cdb := cmd.CDB
	switch c.Opcode {
	case opTestUnitReady, opStartStopUnit, opPreventAllow:
		return nil
	case opRequestSense:
		return lu.requestSense(cmd, c, resp)
	case opInquiry:
		return lu.inquiry(cmd, cdb, resp)
	case opReadCapacity10:
		if cdb[8]&1 == 0 && c.LBA != 0 {
			return invalidCDB(2)
		}
		d := make([]byte, 8)
		last := lu.be.Blocks() - 1
		put32(d, uint32(min(last, 0xffffffff)))
		put32(d[4:], bs)
		resp.Data = d
		return nil
	case opServiceActionIn16:
		switch c.ServiceAction {
		case saReadCapacity16:
			return lu.readCapacity16(c, resp)
		case saGetLBAStatus:
			return lu.getLBAStatus(c, resp)
		}
		return invalidCDB(1)
	case opRead6, opRead10, opRead12, opRead16:
		return lu.read(c, resp)
	case opWrite6, opWrite10, opWrite12, opWrite16, opWriteVerify10, opWriteVerify12, opWriteVerify16:
		return lu.write(c, cmd.DataOut)
	case opVerify10, opVerify12, opVerify16:
		return lu.verify(c, cmd.DataOut)
	case opPrefetch10, opPrefetch16:
		return lu.checkRange(c.LBA, uint64(c.Blocks))
	case opSyncCache10, opSyncCache16:
		if err := lu.checkRange(c.LBA, uint64(c.Blocks)); err != nil {
			return err
		}
		if err := lu.be.Flush(); err != nil {
			return checkCondition(KeyMediumError, ascWriteError)
		}
		return nil
	case opWriteSame10, opWriteSame16:
		return lu.writeSame(c, cmd.DataOut)
	case opUnmap:
		return lu.unmap(c, cdb, cmd.DataOut)
	case opCompareAndWrite:
		return lu.compareAndWrite(c, cmd.DataOut)
	case opModeSense6, opModeSense10:
		return lu.modeSense(cmd, cdb, resp)
	case opModeSelect6, opModeSelect10:
		return lu.modeSelect(cmd, cdb, cmd.DataOut)
	case opReportLUNs:
		// A LU answers for the target's LUN 0 only; multi-LUN targets
		// answer REPORT LUNS themselves (see ReportLUNs).
		return ReportLUNs([]uint64{0}, cdb, resp)
	case opMaintenanceIn:
		if c.ServiceAction == saReportSupportedOps {
			return reportSupportedOps(cdb, resp)
		}
		return invalidCDB(1)
	case opReserve6:
		return lu.reserve(cmd.Nexus)
	case opRelease6:
		lu.mu.Lock()
		if lu.reserve6 == cmd.Nexus.ID() {
			lu.reserve6 = ""
		}
		lu.mu.Unlock()
		return nil
	case opPRIn:
		return lu.prIn(cdb, c, resp)
	case opPROut:
		return lu.prOut(cmd.Nexus, cdb, c, cmd.DataOut)
	}
	return errInvalidOpcode
}

// ReportLUNs answers REPORT LUNS with the given LUN list.
func ReportLUNs(luns []uint64, cdb []byte, resp *Response) error {
	if len(cdb) < 12 {
		return errInvalidOpcode
	}
	if alloc := get32(cdb[6:]); alloc < 16 {
		return invalidCDB(6)
	}
	if sel := cdb[2]; sel > 2 && sel != 0x10 && sel != 0x11 && sel != 0x12 {
		return invalidCDB(2)
	}
	d := make([]byte, 8+8*len(luns))
	put32(d, uint32(8*len(luns)))
	for i, l := range luns {
		put16(d[8+8*i:], encodeLUN(l))
	}
	resp.Data = truncate(d, get32(cdb[6:]))
	return nil
}

// encodeLUN gives the first two bytes of a LUN in peripheral (< 256) or
// flat (< 16384) addressing.
func encodeLUN(l uint64) uint16 {
	if l < 256 {
		return uint16(l)
	}
	return 0x4000 | uint16(l&0x3fff)
}

// DecodeLUN decodes the LUN field of a transport header.
func DecodeLUN(b [8]byte) uint64 {
	switch b[0] >> 6 {
	case 0:
		return uint64(b[1])
	case 1:
		return uint64(b[0]&0x3f)<<8 | uint64(b[1])
	}
	return binary.BigEndian.Uint64(b[:])
}

func truncate(d []byte, alloc uint32) []byte {
	if uint32(len(d)) > alloc {
		return d[:alloc]
	}
	return d
}

func (lu *LU) checkRange(lba, n uint64) error {
	nb := lu.be.Blocks()
	if lba > nb || n > nb-lba {
		return &senseError{key: KeyIllegalRequest, asc: ascLBAOutOfRange}
	}
	return nil
}

func (lu *LU) writeProtected() bool {
	lu.mu.Lock()
	defer lu.mu.Unlock()
	return lu.readOnly || lu.swp
}

func (lu *LU) requestSense(cmd *Command, c CDB, resp *Response) error {
	if cmd.CDB[1]&1 != 0 {
		return invalidCDB(1)
	}
	id := cmd.Nexus.ID()
	lu.mu.Lock()
	se := &senseError{key: KeyNoSense}
	if q := lu.ua[id]; len(q) > 0 {
		se = checkCondition(KeyUnitAttention, q[0])
		lu.ua[id] = q[1:]
	}
	lu.mu.Unlock()
	resp.Data = truncate(se.bytes(cmd.CDB[1]&1 != 0), c.Length)
	return nil
}

func (lu *LU) readCapacity16(c CDB, resp *Response) error {
	d := make([]byte, 32)
	put64(d, lu.be.Blocks()-1)
	put32(d[8:], lu.be.BlockSize())
	if lu.be.Thin() {
		d[14] = 0xc0 // LBPME, LBPRZ
	}
	resp.Data = truncate(d, c.Length)
	return nil
}

func (lu *LU) getLBAStatus(c CDB, resp *Response) error {
	if c.Length < 24 {
		if c.Length == 0 {
			return nil
		}
		return invalidCDB(10)
	}
	nb := lu.be.Blocks()
	if c.LBA >= nb {
		return errLBARange
	}
	bs := int64(lu.be.BlockSize())
	maxDesc := int((c.Length - 8) / 16)
	d := make([]byte, 8, 8+16*min(maxDesc, 64))
	lba := c.LBA
	for n := 0; n < maxDesc && n < 64 && lba < nb; n++ {
		mapped, run, err := lu.be.Mapped(int64(lba)*bs, int64(nb-lba)*bs)
		if err != nil {
			return checkCondition(KeyMediumError, ascUnrecoveredReadError)
		}
		blocks := uint64(run+bs-1) / uint64(bs)
		blocks = max(1, min(blocks, nb-lba, 0xffffffff))
		desc := make([]byte, 16)
		put64(desc, lba)
		put32(desc[8:], uint32(blocks))
		if !mapped {
			desc[12] = 1
		}
		d = append(d, desc...)
		lba += blocks
	}
	put32(d, uint32(len(d)-4))
	resp.Data = d
	return nil
}

func (lu *LU) read(c CDB, resp *Response) error {
	if c.Protect() != 0 {
		return invalidCDB(1)
	}
	if err := lu.checkRange(c.LBA, uint64(c.Blocks)); err != nil {
		return err
	}
	if c.Blocks > maxTransferBlocks {
		return invalidCDB(7)
	}
	bs := int64(lu.be.BlockSize())
	d := make([]byte, int64(c.Blocks)*bs)
	if err := lu.be.ReadAt(d, int64(c.LBA)*bs); err != nil {
		return checkCondition(KeyMediumError, ascUnrecoveredReadError)
	}
	resp.Data = d
	return nil
}

func (lu *LU) write(c CDB, data []byte) error {
	if c.Protect() != 0 {
		return invalidCDB(1)
	}
	if err := lu.checkRange(c.LBA, uint64(c.Blocks)); err != nil {
		return err
	}
	if lu.writeProtected() {
		return errWriteProtect
	}
	bs := int64(lu.be.BlockSize())
	n := min(int64(len(data))/bs, int64(c.Blocks)) * bs
	if n == 0 {
		return nil
	}
	fua := c.FUA() || c.Opcode == opWriteVerify10 || c.Opcode == opWriteVerify12 || c.Opcode == opWriteVerify16
	if err := lu.be.WriteAt(data[:n], int64(c.LBA)*bs, fua || !lu.cacheEnabled()); err != nil {
		return checkCondition(KeyMediumError, ascWriteError)
	}
	return nil
}

func (lu *LU) cacheEnabled() bool {
	lu.mu.Lock()
	defer lu.mu.Unlock()
	return lu.wce
}

func (lu *LU) verify(c CDB, data []byte) error {
	if c.Protect() != 0 {
		return invalidCDB(1)
	}
	if err := lu.checkRange(c.LBA, uint64(c.Blocks)); err != nil {
		return err
	}
	bytchk := (c.Flags >> 1) & 3
	if bytchk == 2 {
		return invalidCDB(1)
	}
	if c.Blocks == 0 {
		return nil
	}
	bs := int64(lu.be.BlockSize())
	d := make([]byte, int64(c.Blocks)*bs)
	if err := lu.be.ReadAt(d, int64(c.LBA)*bs); err != nil {
		return checkCondition(KeyMediumError, ascUnrecoveredReadError)
	}
	if bytchk == 0 {
		return nil
	}
	want := data
	if bytchk == 3 && int64(len(data)) >= bs {
		want = bytes.Repeat(data[:bs], int(c.Blocks))
	}
	if len(want) < len(d) {
		return errParamLength
	}
	if i := firstDiff(d, want); i >= 0 {
		return &senseError{key: KeyMiscompare, asc: ascMiscompareVerify, hasInfo: true, info: uint64(i)}
	}
	return nil
}

func firstDiff(a, b []byte) int {
	for i := range a {
		if a[i] != b[i] {
			return i
		}
	}
	return -1
}

func (lu *LU) writeSame(c CDB, data []byte) error {
	if c.Protect() != 0 {
		return invalidCDB(1)
	}
	unmap := c.Flags&0x08 != 0
	ndob := c.Opcode == opWriteSame16 && c.Flags&0x01 != 0
	if c.Flags&0x10 != 0 { // ANCHOR: anchored blocks are not supported
		return invalidCDB(1)
	}
	nb := lu.be.Blocks()
	n := uint64(c.Blocks)
	if n == 0 {
		if c.LBA > nb {
			return errLBARange
		}
		n = nb - c.LBA
	}
	if err := lu.checkRange(c.LBA, n); err != nil {
		return err
	}
	if lu.writeProtected() {
		return errWriteProtect
	}
	bs := int64(lu.be.BlockSize())
	if !ndob && int64(len(data)) < bs {
		return errParamLength
	}
	off, length := int64(c.LBA)*bs, int64(n)*bs
	var block []byte
	if !ndob {
		block = data[:bs]
	}
	// With UNMAP set a thin device deallocates whatever the data block
	// holds (unmapped blocks read as zeroes, LBPRZ); otherwise a zero
	// block is written as zeroes without moving data.
	if ndob || (unmap && lu.be.Thin()) || isZero(block) {
		if err := lu.be.WriteZeroes(off, length, unmap); err != nil {
			return checkCondition(KeyMediumError, ascWriteError)
		}
		return nil
	}
	chunk := bytes.Repeat(block, int(min(int64(n), (1<<20)/bs)))
	for length > 0 {
		w := min(length, int64(len(chunk)))
		if err := lu.be.WriteAt(chunk[:w], off, !lu.cacheEnabled()); err != nil {
			return checkCondition(KeyMediumError, ascWriteError)
		}
		off += w
		length -= w
	}
	return nil
}

func isZero(b []byte) bool {
	for _, x := range b {
		if x != 0 {
			return false
		}
	}
	return true
}

func (lu *LU) unmap(c CDB, cdb []byte, data []byte) error {
	if cdb[1]&1 != 0 { // ANCHOR
		return invalidCDB(1)
	}
	if lu.writeProtected() {
		return errWriteProtect
	}
	if c.Length == 0 {
		return nil
	}
	if len(data) < 8 || c.Length < 8 {
		return errParamLength
	}
	descLen := int(get16(data[2:]))
	if descLen%16 != 0 || 8+descLen > len(data) {
		return errParamLength
	}
	if descLen/16 > maxUnmapDescs {
		return invalidParam(2)
	}
	bs := int64(lu.be.BlockSize())
	type extent struct{ lba, n uint64 }
	var ext []extent
	for i := 8; i < 8+descLen; i += 16 {
		lba, n := get64(data[i:]), uint64(get32(data[i+8:]))
		if err := lu.checkRange(lba, n); err != nil {
			return err
		}
		if n > maxUnmapBlocks {
			return invalidParam(i + 8)
		}
		ext = append(ext, extent{lba, n})
	}
	for _, e := range ext {
		if e.n == 0 {
			continue
		}
		if err := lu.be.Unmap(int64(e.lba)*bs, int64(e.n)*bs); err != nil {
			return checkCondition(KeyMediumError, ascWriteError)
		}
	}
	return nil
}

func (lu *LU) compareAndWrite(c CDB, data []byte) error {
	if c.Protect() != 0 {
		return invalidCDB(1)
	}
	if c.Blocks > maxCompareBlocks {
		return invalidCDB(13)
	}
	if err := lu.checkRange(c.LBA, uint64(c.Blocks)); err != nil {
		return err
	}
	if c.Blocks == 0 {
		if len(data) > 0 { // a 0-block CDB with data: NUMBER OF BLOCKS wrapped
			return invalidCDB(13)
		}
		return nil
	}
	if lu.writeProtected() {
		return errWriteProtect
	}
	bs := int64(lu.be.BlockSize())
	n := int64(c.Blocks) * bs
	if int64(len(data)) < 2*n {
		return invalidCDB(13)
	}
	lu.caw.Lock()
	defer lu.caw.Unlock()
	cur := make([]byte, n)
	if err := lu.be.ReadAt(cur, int64(c.LBA)*bs); err != nil {
		return checkCondition(KeyMediumError, ascUnrecoveredReadError)
	}
	if i := firstDiff(cur, data[:n]); i >= 0 {
		return &senseError{key: KeyMiscompare, asc: ascMiscompareVerify, hasInfo: true, info: uint64(i)}
	}
	if err := lu.be.WriteAt(data[n:2*n], int64(c.LBA)*bs, c.FUA() || !lu.cacheEnabled()); err != nil {
		return checkCondition(KeyMediumError, ascWriteError)
	}
	return nil
}

func (lu *LU) reserve(n Nexus) error {
	lu.mu.Lock()
	defer lu.mu.Unlock()
	if lu.reserve6 == "" || lu.reserve6 == n.ID() {
		lu.reserve6 = n.ID()
		return nil
	}
	return errConflict
}

// errConflict ends a command with RESERVATION CONFLICT status.
var errConflict = errors.New("reservation conflict")
