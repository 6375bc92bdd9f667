package scsi

import "fmt"

// Operation codes the logical unit implements.
const (
	opTestUnitReady      = 0x00
	opRequestSense       = 0x03
	opRead6              = 0x08
	opWrite6             = 0x0a
	opInquiry            = 0x12
	opModeSelect6        = 0x15
	opReserve6           = 0x16
	opRelease6           = 0x17
	opModeSense6         = 0x1a
	opStartStopUnit      = 0x1b
	opPreventAllow       = 0x1e
	opReadCapacity10     = 0x25
	opRead10             = 0x28
	opWrite10            = 0x2a
	opWriteVerify10      = 0x2e
	opVerify10           = 0x2f
	opPrefetch10         = 0x34
	opSyncCache10        = 0x35
	opWriteSame10        = 0x41
	opUnmap              = 0x42
	opModeSelect10       = 0x55
	opModeSense10        = 0x5a
	opPRIn               = 0x5e
	opPROut              = 0x5f
	opRead16             = 0x88
	opCompareAndWrite    = 0x89
	opWrite16            = 0x8a
	opWriteVerify16      = 0x8e
	opVerify16           = 0x8f
	opPrefetch16         = 0x90
	opSyncCache16        = 0x91
	opWriteSame16        = 0x93
	opServiceActionIn16  = 0x9e
	opReportLUNs         = 0xa0
	opMaintenanceIn      = 0xa3
	opRead12             = 0xa8
	opWrite12            = 0xaa
	opWriteVerify12      = 0xae
	opVerify12           = 0xaf
	saReadCapacity16     = 0x10
	saGetLBAStatus       = 0x12
	saReportSupportedOps = 0x0c
)

// CDB is the decoded addressing part of a command descriptor block.
type CDB struct {
	Opcode byte
	// ServiceAction is set for the opcodes that carry one.
	ServiceAction byte
	LBA           uint64
	// Blocks is the transfer length in logical blocks for the block
	// commands (READ, WRITE, VERIFY, WRITE SAME, SYNCHRONIZE CACHE, ...).
	Blocks uint32
	// Flags is byte 1 of the CDB: protection field (bits 7-5), DPO (4),
	// FUA (3), BYTCHK/UNMAP and friends depending on the opcode.
	Flags byte
	// Length is the allocation or parameter list length for the
	// commands that have one.
	Length uint32
	// Size is the CDB length implied by the operation code group.
	Size int
}

// FUA reports the force-unit-access bit of a 10/12/16-byte command.
func (c CDB) FUA() bool { return c.Size > 6 && c.Flags&0x08 != 0 }

// Protect is the RDPROTECT/WRPROTECT/VRPROTECT field.
func (c CDB) Protect() byte { return c.Flags >> 5 }

// cdbSize is the CDB length of an operation code's group (SPC-4 4.2.5.1).
func cdbSize(op byte) int {
	switch op >> 5 {
	case 0:
		return 6
	case 1, 2:
		return 10
	case 4:
		return 16
	case 5:
		return 12
	}
	return 0
}

// ParseCDB decodes a CDB. It fails only when the CDB is shorter than its
// operation code's group or the group is unknown; whether the command is
// implemented is the logical unit's business.
func ParseCDB(b []byte) (CDB, error) {
	if len(b) == 0 {
		return CDB{}, ErrShortCDB
	}
	c := CDB{Opcode: b[0], Size: cdbSize(b[0])}
	if c.Size == 0 {
		return c, fmt.Errorf("parse cdb: opcode 0x%02x: %w", b[0], ErrUnknownOpcode)
	}
	if len(b) < c.Size {
		return c, fmt.Errorf("parse cdb: opcode 0x%02x needs %d bytes, have %d: %w", b[0], c.Size, len(b), ErrShortCDB)
	}
	c.Flags = b[1]
	switch c.Opcode {
	case opRead6, opWrite6:
		c.Flags = 0
		c.LBA = uint64(get24(b[1:]) & 0x1fffff)
		c.Blocks = uint32(b[4])
		if c.Blocks == 0 {
			c.Blocks = 256
		}
	case opRequestSense, opInquiry, opModeSense6, opModeSelect6:
		c.Length = uint32(b[4])
		if c.Opcode == opInquiry {
			c.Length = uint32(get16(b[3:]))
		}
	case opRead10, opWrite10, opWriteVerify10, opVerify10, opPrefetch10, opSyncCache10, opWriteSame10:
		c.LBA = uint64(get32(b[2:]))
		c.Blocks = uint32(get16(b[7:]))
	case opRead12, opWrite12, opWriteVerify12, opVerify12:
		c.LBA = uint64(get32(b[2:]))
		c.Blocks = get32(b[6:])
	case opRead16, opWrite16, opWriteVerify16, opVerify16, opPrefetch16, opSyncCache16, opWriteSame16:
		c.LBA = get64(b[2:])
		c.Blocks = get32(b[10:])
	case opCompareAndWrite:
		c.LBA = get64(b[2:])
		c.Blocks = uint32(b[13])
	case opServiceActionIn16:
		c.ServiceAction = b[1] & 0x1f
		c.LBA = get64(b[2:])
		c.Length = get32(b[10:])
	case opMaintenanceIn:
		c.ServiceAction = b[1] & 0x1f
		c.Length = get32(b[6:])
	case opPRIn, opPROut, opModeSense10, opModeSelect10, opUnmap:
		c.ServiceAction = b[1] & 0x1f
		c.Length = uint32(get16(b[7:]))
		if c.Opcode == opPROut {
			c.Length = get32(b[5:])
		}
	case opReportLUNs:
		c.Length = get32(b[6:])
	case opReadCapacity10:
		c.LBA = uint64(get32(b[2:]))
	}
	return c, nil
}
