package nbd

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Wire constants of the NBD protocol (NetworkBlockDevice/nbd doc/proto.md).
// Every number on the wire is big-endian.
const (
	magicInit        = 0x4e42444d41474943 // "NBDMAGIC"
	magicOpt         = 0x49484156454f5054 // "IHAVEOPT"
	magicOptReply    = 0x0003e889045565a9
	magicRequest     = 0x25609513
	magicSimpleReply = 0x67446698
	magicStructReply = 0x668e33ef

	// Handshake flags (server) and client flags.
	flagFixedNewstyle = 1 << 0
	flagNoZeroes      = 1 << 1

	// Transmission flags.
	flagHasFlags        = 1 << 0
	flagReadOnly        = 1 << 1
	flagSendFlush       = 1 << 2
	flagSendFUA         = 1 << 3
	flagSendTrim        = 1 << 5
	flagSendWriteZeroes = 1 << 6
	flagSendDF          = 1 << 7
	flagCanMultiConn    = 1 << 8
	flagSendCache       = 1 << 10
	flagSendFastZero    = 1 << 11

	// Options.
	optExportName      = 1
	optAbort           = 2
	optList            = 3
	optStartTLS        = 5
	optInfo            = 6
	optGo              = 7
	optStructuredReply = 8
	optListMetaContext = 9
	optSetMetaContext  = 10

	// Option replies.
	repAck             = 1
	repServer          = 2
	repInfo            = 3
	repMetaContext     = 4
	repErrUnsup        = 1<<31 + 1
	repErrPolicy       = 1<<31 + 2
	repErrInvalid      = 1<<31 + 3
	repErrUnknown      = 1<<31 + 6
	repErrShutdown     = 1<<31 + 7
	repErrTooBig       = 1<<31 + 9
	infoExport         = 0
	infoName           = 1
	infoDescription    = 2
	infoBlockSize      = 3
	metaBaseAllocation = "base:allocation"
	// metaBaseAllocationID is the context id this server gives
	// base:allocation; any nonzero number would do.
	metaBaseAllocationID = 1

	// Commands and command flags.
	cmdRead        = 0
	cmdWrite       = 1
	cmdDisc        = 2
	cmdFlush       = 3
	cmdTrim        = 4
	cmdCache       = 5
	cmdWriteZeroes = 6
	cmdBlockStatus = 7

	cmdFlagFUA      = 1 << 0
	cmdFlagNoHole   = 1 << 1
	cmdFlagDF       = 1 << 2
	cmdFlagReqOne   = 1 << 3
	cmdFlagFastZero = 1 << 4

	// Structured reply flags and types.
	replyFlagDone        = 1 << 0
	replyTypeNone        = 0
	replyTypeOffsetData  = 1
	replyTypeOffsetHole  = 2
	replyTypeBlockStatus = 5
	replyTypeError       = 1<<15 + 1

	// base:allocation extent flags.
	stateHole = 1 << 0
	stateZero = 1 << 1

	// Errno values of the protocol (Linux numbering, fixed by the spec).
	errPerm     = 1
	errIO       = 5
	errInval    = 22
	errNoSpc    = 28
	errOverflow = 75
	errNotSup   = 95
	errShutdown = 108
)

// Sizes of fixed wire structures.
const (
	optHeaderLen     = 16 // magic, option, length
	requestLen       = 28 // magic, flags, type, handle, offset, length
	maxOptionPayload = 64 << 10
	maxStringLen     = 4096
)

// option is one option request of the handshake phase.
type option struct {
	code uint32
	data []byte
}

// parseOptionHeader decodes the 16-byte header of an option request and
// returns the option code and the length of its payload.
func parseOptionHeader(b []byte) (code, length uint32, err error) {
	if len(b) < optHeaderLen {
		return 0, 0, fmt.Errorf("option header: %w: %d bytes", ErrProtocol, len(b))
	}
	if m := binary.BigEndian.Uint64(b); m != magicOpt {
		return 0, 0, fmt.Errorf("option header: %w: magic %#x", ErrProtocol, m)
	}
	return binary.BigEndian.Uint32(b[8:]), binary.BigEndian.Uint32(b[12:]), nil
}

// infoRequest is the payload of NBD_OPT_INFO and NBD_OPT_GO: an export name
// and the information items the client asks for.
type infoRequest struct {
	name  string
	items []uint16
}

// parseInfoRequest decodes the payload of NBD_OPT_INFO / NBD_OPT_GO.
func parseInfoRequest(b []byte) (infoRequest, error) {
	var r infoRequest
	name, rest, err := parseString32(b)
	if err != nil {
		return r, fmt.Errorf("export name: %w", err)
	}
	r.name = name
	if len(rest) < 2 {
		return r, fmt.Errorf("info request count: %w", ErrProtocol)
	}
	n := int(binary.BigEndian.Uint16(rest))
	rest = rest[2:]
	if len(rest) != 2*n {
		return r, fmt.Errorf("info request list: %w: %d items in %d bytes", ErrProtocol, n, len(rest))
	}
	r.items = make([]uint16, n)
	for i := range n {
		r.items[i] = binary.BigEndian.Uint16(rest[2*i:])
	}
	return r, nil
}

// metaRequest is the payload of NBD_OPT_LIST_META_CONTEXT and
// NBD_OPT_SET_META_CONTEXT.
type metaRequest struct {
	name    string
	queries []string
}

// parseMetaRequest decodes a meta context request.
func parseMetaRequest(b []byte) (metaRequest, error) {
	var r metaRequest
	name, rest, err := parseString32(b)
	if err != nil {
		return r, fmt.Errorf("export name: %w", err)
	}
	r.name = name
	if len(rest) < 4 {
		return r, fmt.Errorf("query count: %w", ErrProtocol)
	}
	n := binary.BigEndian.Uint32(rest)
	rest = rest[4:]
	// Every query takes at least its 4-byte length, which bounds n by
	// the payload and keeps a hostile count from allocating.
	if uint64(n)*4 > uint64(len(rest)) {
		return r, fmt.Errorf("query count %d: %w", n, ErrProtocol)
	}
	r.queries = make([]string, 0, n)
	for range n {
		var q string
		q, rest, err = parseString32(rest)
		if err != nil {
			return r, fmt.Errorf("query: %w", err)
		}
		r.queries = append(r.queries, q)
	}
	if len(rest) != 0 {
		return r, fmt.Errorf("meta context request: %w: %d trailing bytes", ErrProtocol, len(rest))
	}
	return r, nil
}

// parseString32 reads a string prefixed by its 32-bit length.
func parseString32(b []byte) (string, []byte, error) {
	if len(b) < 4 {
		return "", nil, fmt.Errorf("%w: string length missing", ErrProtocol)
	}
	n := binary.BigEndian.Uint32(b)
	b = b[4:]
	if n > maxStringLen || int(n) > len(b) {
		return "", nil, fmt.Errorf("%w: string of %d bytes", ErrProtocol, n)
	}
	return string(b[:n]), b[n:], nil
}

// request is one transmission-phase request header.
type request struct {
	flags  uint16
	typ    uint16
	handle uint64
	offset uint64
	length uint32
}

// parseRequest decodes the 28-byte request header.
func parseRequest(b []byte) (request, error) {
	if len(b) < requestLen {
		return request{}, fmt.Errorf("request: %w: %d bytes", ErrProtocol, len(b))
	}
	if m := binary.BigEndian.Uint32(b); m != magicRequest {
		return request{}, fmt.Errorf("request: %w: magic %#x", ErrProtocol, m)
	}
	return request{
		flags:  binary.BigEndian.Uint16(b[4:]),
		typ:    binary.BigEndian.Uint16(b[6:]),
		handle: binary.BigEndian.Uint64(b[8:]),
		offset: binary.BigEndian.Uint64(b[16:]),
		length: binary.BigEndian.Uint32(b[24:]),
	}, nil
}

// appendOptReply appends an option reply header and its payload.
func appendOptReply(b []byte, opt, typ uint32, payload []byte) []byte {
	b = binary.BigEndian.AppendUint64(b, magicOptReply)
	b = binary.BigEndian.AppendUint32(b, opt)
	b = binary.BigEndian.AppendUint32(b, typ)
	b = binary.BigEndian.AppendUint32(b, uint32(len(payload)))
	return append(b, payload...)
}

// appendSimpleReply appends a simple reply header.
func appendSimpleReply(b []byte, errno uint32, handle uint64) []byte {
	b = binary.BigEndian.AppendUint32(b, magicSimpleReply)
	b = binary.BigEndian.AppendUint32(b, errno)
	return binary.BigEndian.AppendUint64(b, handle)
}

// appendStructReply appends a structured reply chunk header.
func appendStructReply(b []byte, flags, typ uint16, handle uint64, length uint32) []byte {
	b = binary.BigEndian.AppendUint32(b, magicStructReply)
	b = binary.BigEndian.AppendUint16(b, flags)
	b = binary.BigEndian.AppendUint16(b, typ)
	b = binary.BigEndian.AppendUint64(b, handle)
	return binary.BigEndian.AppendUint32(b, length)
}

// errnoOf maps a backend or server error to the protocol's errno.
func errnoOf(err error) uint32 {
	switch {
	case errors.Is(err, ErrShutdown):
		return errShutdown
	case errors.Is(err, ErrReadOnly):
		return errPerm
	case errors.Is(err, ErrNoSpace):
		return errNoSpc
	case errors.Is(err, ErrInvalid):
		return errInval
	case errors.Is(err, ErrNotFast), errors.Is(err, ErrUnsupported):
		return errNotSup
	case errors.Is(err, ErrOverflow):
		return errOverflow
	default:
		return errIO
	}
}
