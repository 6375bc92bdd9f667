package scsi

import "errors"

// Status codes (SAM-5).
const (
	StatusGood                = 0x00
	StatusCheckCondition      = 0x02
	StatusConditionMet        = 0x04
	StatusBusy                = 0x08
	StatusReservationConflict = 0x18
	StatusTaskSetFull         = 0x28
	StatusTaskAborted         = 0x40
)

// Sense keys (SPC-4 table 48).
const (
	KeyNoSense        = 0x0
	KeyNotReady       = 0x2
	KeyMediumError    = 0x3
	KeyHardwareError  = 0x4
	KeyIllegalRequest = 0x5
	KeyUnitAttention  = 0x6
	KeyDataProtect    = 0x7
	KeyAbortedCommand = 0xb
	KeyMiscompare     = 0xe
)

// ASC/ASCQ pairs used by the target, as asc<<8|ascq.
const (
	ascNone                   = 0x0000
	ascWriteError             = 0x0c00
	ascUnrecoveredReadError   = 0x1100
	ascParamListLength        = 0x1a00
	ascMiscompareVerify       = 0x1d00
	ascInvalidOpcode          = 0x2000
	ascLBAOutOfRange          = 0x2100
	ascInvalidFieldCDB        = 0x2400
	ascLUNotSupported         = 0x2500
	ascInvalidFieldParam      = 0x2600
	ascWriteProtected         = 0x2700
	ascPowerOnReset           = 0x2900
	ascBusDeviceReset         = 0x2903
	ascModeParamsChanged      = 0x2a01
	ascReservationsPreempted  = 0x2a03
	ascReservationsReleased   = 0x2a04
	ascRegistrationsPreempted = 0x2a05
	ascCapacityChanged        = 0x2a09
	ascSavingParamsNotSupp    = 0x3900
	ascInsufficientRegRes     = 0x5504
	ascLogicalUnitFailure     = 0x3e01
)

var (
	// ErrBlockSize: the backend block size is not 512 or 4096.
	ErrBlockSize = errors.New("block size must be 512 or 4096")
	// ErrNotRegular: a file backend must be a regular file.
	ErrNotRegular = errors.New("not a regular file")
	// ErrTooSmall: the backing file holds no whole block.
	ErrTooSmall = errors.New("smaller than one block")
	// ErrShortCDB: the CDB is shorter than its operation code requires.
	ErrShortCDB = errors.New("cdb too short for its operation code")
	// ErrUnknownOpcode: the CDB's operation code is not one the parser knows.
	ErrUnknownOpcode = errors.New("unknown operation code")
)

// senseError is a CHECK CONDITION the command ends with.
type senseError struct {
	key  byte
	asc  uint16
	info uint64 // INFORMATION field, valid when hasInfo
	// fieldPtr is the sense-key-specific field pointer (byte index in the
	// CDB or parameter list) when ptrValid.
	hasInfo  bool
	ptrValid bool
	inCDB    bool
	fieldPtr uint16
}

func (e *senseError) Error() string { return "check condition" }

func checkCondition(key byte, asc uint16) *senseError { return &senseError{key: key, asc: asc} }

func invalidCDB(field int) *senseError {
	return &senseError{key: KeyIllegalRequest, asc: ascInvalidFieldCDB, ptrValid: true, inCDB: true, fieldPtr: uint16(field)}
}

func invalidParam(field int) *senseError {
	return &senseError{key: KeyIllegalRequest, asc: ascInvalidFieldParam, ptrValid: true, fieldPtr: uint16(field)}
}

var (
	errInvalidOpcode = checkCondition(KeyIllegalRequest, ascInvalidOpcode)
	errLBARange      = checkCondition(KeyIllegalRequest, ascLBAOutOfRange)
	errParamLength   = checkCondition(KeyIllegalRequest, ascParamListLength)
	errWriteProtect  = checkCondition(KeyDataProtect, ascWriteProtected)
)

// bytes encodes the sense data in fixed (0x70) or descriptor (0x72) format.
func (e *senseError) bytes(descriptor bool) []byte {
	if descriptor {
		b := []byte{0x72, e.key & 0xf, byte(e.asc >> 8), byte(e.asc), 0, 0, 0, 0}
		if e.hasInfo {
			d := make([]byte, 12)
			d[0], d[1], d[2] = 0x00, 0x0a, 0x80
			put64(d[4:], e.info)
			b = append(b, d...)
		}
		if e.ptrValid {
			d := []byte{0x02, 0x06, 0, 0, 0, 0, 0, 0}
			d[4] = 0x80
			if e.inCDB {
				d[4] |= 0x40
			}
			put16(d[5:], e.fieldPtr)
			b = append(b, d...)
		}
		b[7] = byte(len(b) - 8)
		return b
	}
	b := make([]byte, 18)
	b[0] = 0x70
	b[2] = e.key & 0xf
	if e.hasInfo {
		b[0] |= 0x80
		put32(b[3:], uint32(e.info))
	}
	b[7] = 10
	b[12], b[13] = byte(e.asc>>8), byte(e.asc)
	if e.ptrValid {
		b[15] = 0x80
		if e.inCDB {
			b[15] |= 0x40
		}
		put16(b[16:], e.fieldPtr)
	}
	return b
}

func put16(b []byte, v uint16) { b[0], b[1] = byte(v>>8), byte(v) }
func put32(b []byte, v uint32) {
	b[0], b[1], b[2], b[3] = byte(v>>24), byte(v>>16), byte(v>>8), byte(v)
}
func put64(b []byte, v uint64) { put32(b, uint32(v>>32)); put32(b[4:], uint32(v)) }
func get16(b []byte) uint16    { return uint16(b[0])<<8 | uint16(b[1]) }
func get24(b []byte) uint32    { return uint32(b[0])<<16 | uint32(b[1])<<8 | uint32(b[2]) }
func get32(b []byte) uint32 {
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}
func get64(b []byte) uint64 { return uint64(get32(b))<<32 | uint64(get32(b[4:])) }
