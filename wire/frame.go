// Package wire is keel's data protocol between clients and storage servers:
// binary, length-prefixed frames over TCP or a unix socket, pipelined by
// request id, after a handshake that proves both sides hold the cluster
// secret. See DESIGN.md.
package wire

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Op is a request's operation.
type Op uint8

// Operations.
const (
	OpRead        Op = 1  // Length bytes at Offset, through the parent chain
	OpWrite       Op = 2  // Data at Offset; FlagFUA makes it durable first
	OpWriteZeroes Op = 3  // Length bytes at Offset read as zeros
	OpTrim        Op = 4  // same effect as OpWriteZeroes, frees space
	OpFlush       Op = 5  // every write acknowledged before is durable
	OpCreate      Op = 6  // create the object; FlagParent: child of Parent*
	OpDelete      Op = 7  // delete the object
	OpReadOwn     Op = 8  // recovery read: block states, then own data
	OpVersions    Op = 9  // versions of every object on the disk
	OpStat        Op = 10 // the disk's space accounting, JSON
	OpReadMeta    Op = 11 // recovery: state byte and version u64 per own block
	maxOp         Op = OpReadMeta
)

var opNames = [...]string{"?", "READ", "WRITE", "WRITE_ZEROES", "TRIM", "FLUSH", "CREATE", "DELETE", "READ_OWN", "VERSIONS", "STAT", "READ_META"}

func (o Op) String() string {
	if o == 0 || o > maxOp {
		return fmt.Sprintf("op(%d)", uint8(o))
	}
	return opNames[o]
}

// Request flags.
const (
	FlagFUA    = 1 << 0
	FlagParent = 1 << 1
	// FlagHidden makes READ_META and READ_OWN address the hidden object
	// of the id (deleted, kept for its copy-on-write children), which
	// recovery and scrub copy like any other.
	FlagHidden = 1 << 2
)

// Status of a response.
type Status uint8

// Statuses; every non-OK status carries a message.
const (
	StatusOK         Status = 0
	StatusChecksum   Status = 1 // read it from another replica
	StatusNotFound   Status = 2
	StatusExists     Status = 3
	StatusNoSpace    Status = 4
	StatusRange      Status = 5
	StatusFenced     Status = 6 // the write's fencing token is stale
	StatusDiskFailed Status = 7
	StatusNoDisk     Status = 8
	StatusBadRequest Status = 9
	StatusInternal   Status = 10
)

// Limits.
const (
	MaxIO          = 4 << 20 // largest READ or WRITE payload
	maxPayload     = MaxIO + MaxIO/4096
	requestHeader  = 80
	responseHeader = 24
)

var (
	// ErrFrame means a malformed frame: the connection is closed.
	ErrFrame = errors.New("malformed frame")
	// ErrClosed means the connection is gone.
	ErrClosed = errors.New("connection closed")
	// ErrHandshake means the peer did not prove cluster membership.
	ErrHandshake = errors.New("handshake refused")
)

// Request is one request frame. Data is the WRITE payload; its buffer is
// reused across requests.
type Request struct {
	Op     Op
	Flags  uint8
	ID     uint64
	Disk   uint32
	Volume uint64
	Index  uint32
	Offset uint64
	Length uint32
	Token  uint64 // fencing token of the writer's attachment
	// Fence is the scope of Token: the volume's stable id. Volume names
	// an object namespace, which a snapshot changes; the fence must not
	// change with it, or a fenced-out writer could still write into the
	// namespace the snapshot froze. 0 means Volume.
	Fence   uint64
	Version uint64 // object version the write brings, 0: one more
	// Parent of OpCreate with FlagParent.
	ParentVolume uint64
	ParentIndex  uint32
	Data         []byte
}

// Response is one response frame. Data is the payload of READ, READ_OWN,
// VERSIONS, STAT, or the error message of a non-OK status.
type Response struct {
	Status  Status
	ID      uint64
	Version uint64
	Data    []byte
}

// Grow sets r.Data to n bytes, reusing its buffer when large enough. The
// content is not cleared.
func (r *Response) Grow(n int) []byte {
	if cap(r.Data) < n {
		r.Data = make([]byte, n)
	}
	r.Data = r.Data[:n]
	return r.Data
}

// Err turns a non-OK response into an error wrapping a sentinel of its
// status where there is one.
func (r *Response) Err() error {
	if r.Status == StatusOK {
		return nil
	}
	return &StatusError{Status: r.Status, Msg: string(r.Data)}
}

// StatusError is a non-OK response.
type StatusError struct {
	Status Status
	Msg    string
}

func (e *StatusError) Error() string { return e.Msg }

// EncodeRequest appends the frame of r to b.
func EncodeRequest(b []byte, r *Request) []byte {
	return append(appendRequestHeader(b, r), r.payload()...)
}

// payload is the part of r's frame after its header.
func (r *Request) payload() []byte {
	if r.Op == OpWrite {
		return r.Data
	}
	return nil
}

// appendRequestHeader appends the header of r's frame to b.
func appendRequestHeader(b []byte, r *Request) []byte {
	var h [requestHeader]byte
	le := binary.LittleEndian
	payload := len(r.payload())
	le.PutUint32(h[0:], uint32(requestHeader-4+payload))
	h[4] = byte(r.Op)
	h[5] = r.Flags
	le.PutUint64(h[8:], r.ID)
	le.PutUint32(h[16:], r.Disk)
	le.PutUint64(h[20:], r.Volume)
	le.PutUint32(h[28:], r.Index)
	le.PutUint64(h[32:], r.Offset)
	le.PutUint32(h[40:], r.Length)
	le.PutUint64(h[44:], r.Token)
	le.PutUint64(h[52:], r.Version)
	le.PutUint64(h[60:], r.ParentVolume)
	le.PutUint32(h[68:], r.ParentIndex)
	le.PutUint64(h[72:], r.Fence)
	return append(b, h[:]...)
}

// ReadRequest decodes one request frame from rd into r, reusing r.Data.
// Any inconsistency is ErrFrame.
func ReadRequest(rd *bufio.Reader, r *Request) error {
	// The header is decoded where it lies in rd's buffer: a buffer of
	// our own would escape to the heap through the io.Reader it is read
	// with, an allocation per request.
	h, err := peek(rd, requestHeader)
	if err != nil {
		return err
	}
	err = decodeRequest(h, r)
	rd.Discard(requestHeader)
	if err != nil || len(r.Data) == 0 {
		return err
	}
	_, err = io.ReadFull(rd, r.Data)
	return err
}

// peek returns rd's next n bytes without consuming them, failing as
// io.ReadFull would: io.EOF when the stream ended before them, else
// io.ErrUnexpectedEOF when it ended inside them.
func peek(rd *bufio.Reader, n int) ([]byte, error) {
	h, err := rd.Peek(n)
	if err == io.EOF && len(h) > 0 {
		err = io.ErrUnexpectedEOF
	}
	return h, err
}

// decodeRequest decodes the header h into r and sizes r.Data for the
// payload that follows it.
func decodeRequest(h []byte, r *Request) error {
	le := binary.LittleEndian
	n := le.Uint32(h[0:])
	*r = Request{Data: r.Data[:0],
		Op: Op(h[4]), Flags: h[5], ID: le.Uint64(h[8:]), Disk: le.Uint32(h[16:]),
		Volume: le.Uint64(h[20:]), Index: le.Uint32(h[28:]), Offset: le.Uint64(h[32:]),
		Length: le.Uint32(h[40:]), Token: le.Uint64(h[44:]), Version: le.Uint64(h[52:]),
		ParentVolume: le.Uint64(h[60:]), ParentIndex: le.Uint32(h[68:]), Fence: le.Uint64(h[72:])}
	if r.Op == 0 || r.Op > maxOp || h[6] != 0 || h[7] != 0 {
		return fmt.Errorf("%w: op %d", ErrFrame, h[4])
	}
	if r.Length > MaxIO {
		return fmt.Errorf("%w: length %d over %d", ErrFrame, r.Length, MaxIO)
	}
	payload := int64(n) - (requestHeader - 4)
	want := int64(0)
	if r.Op == OpWrite {
		want = int64(r.Length)
	}
	if payload != want {
		return fmt.Errorf("%w: %s with %d payload bytes, want %d", ErrFrame, r.Op, payload, want)
	}
	if want > 0 {
		if cap(r.Data) < int(want) {
			r.Data = make([]byte, want, max(want, 64<<10))
		}
		r.Data = r.Data[:want]
	}
	return nil
}

// EncodeResponse appends the frame of r to b.
func EncodeResponse(b []byte, r *Response) []byte {
	var h [responseHeader]byte
	le := binary.LittleEndian
	le.PutUint32(h[0:], uint32(responseHeader-4+len(r.Data)))
	h[4] = byte(r.Status)
	le.PutUint64(h[8:], r.ID)
	le.PutUint64(h[16:], r.Version)
	return append(append(b, h[:]...), r.Data...)
}

// readResponseHeader reads a response header (decoded in rd's buffer, as
// ReadRequest does); the payload length follows.
func readResponseHeader(rd *bufio.Reader, r *Response) (int, error) {
	h, err := peek(rd, responseHeader)
	if err != nil {
		return 0, err
	}
	n, err := decodeResponseHeader(h, r)
	rd.Discard(responseHeader)
	return n, err
}

// decodeResponseHeader decodes the header h into r and returns the length
// of the payload that follows it.
func decodeResponseHeader(h []byte, r *Response) (int, error) {
	le := binary.LittleEndian
	n := int64(le.Uint32(h[0:])) - (responseHeader - 4)
	r.Status, r.ID, r.Version = Status(h[4]), le.Uint64(h[8:]), le.Uint64(h[16:])
	if n < 0 || n > maxPayload || r.Status > StatusInternal || h[5] != 0 || h[6] != 0 || h[7] != 0 {
		return 0, fmt.Errorf("%w: response status %d, payload %d", ErrFrame, h[4], n)
	}
	return int(n), nil
}

// ReadResponse decodes one response frame from rd into r, reusing r.Data.
func ReadResponse(rd *bufio.Reader, r *Response) error {
	n, err := readResponseHeader(rd, r)
	if err != nil {
		return err
	}
	if cap(r.Data) < n {
		r.Data = make([]byte, n)
	}
	r.Data = r.Data[:n]
	_, err = io.ReadFull(rd, r.Data)
	return err
}

// VersionEntry is one element of a VERSIONS reply: an object, its
// version, and its copy-on-write parent when HasParent. Hidden objects
// (deleted, kept for their children) are listed with Hidden.
type VersionEntry struct {
	Volume       uint64
	Index        uint32
	Version      uint64
	HasParent    bool
	Hidden       bool
	ParentVolume uint64
	ParentIndex  uint32
}

// Bits of a VERSIONS entry's flag byte.
const (
	versionHasParent = 1 << 0
	versionHidden    = 1 << 1
)

const versionEntrySize = 33

// EncodeVersions appends a VERSIONS payload.
func EncodeVersions(b []byte, vs []VersionEntry) []byte {
	le := binary.LittleEndian
	for _, v := range vs {
		b = le.AppendUint64(b, v.Volume)
		b = le.AppendUint32(b, v.Index)
		b = le.AppendUint64(b, v.Version)
		var p byte
		if v.HasParent {
			p |= versionHasParent
		}
		if v.Hidden {
			p |= versionHidden
		}
		b = append(b, p)
		b = le.AppendUint64(b, v.ParentVolume)
		b = le.AppendUint32(b, v.ParentIndex)
	}
	return b
}

// DecodeVersions parses a VERSIONS payload.
func DecodeVersions(b []byte) ([]VersionEntry, error) {
	if len(b)%versionEntrySize != 0 {
		return nil, fmt.Errorf("%w: versions payload of %d bytes", ErrFrame, len(b))
	}
	le := binary.LittleEndian
	out := make([]VersionEntry, 0, len(b)/versionEntrySize)
	for ; len(b) > 0; b = b[versionEntrySize:] {
		fl := b[20]
		if fl&^(versionHasParent|versionHidden) != 0 {
			return nil, fmt.Errorf("%w: unknown flags %#x in versions entry", ErrFrame, fl)
		}
		if fl&versionHasParent == 0 && (le.Uint64(b[21:]) != 0 || le.Uint32(b[29:]) != 0) {
			return nil, fmt.Errorf("%w: bad parent in versions entry", ErrFrame)
		}
		out = append(out, VersionEntry{Volume: le.Uint64(b), Index: le.Uint32(b[8:]), Version: le.Uint64(b[12:]),
			HasParent: fl&versionHasParent != 0, Hidden: fl&versionHidden != 0, ParentVolume: le.Uint64(b[21:]), ParentIndex: le.Uint32(b[29:])})
	}
	return out, nil
}

// EncodeBlockMeta appends a READ_META payload: one state byte per block,
// then one version per block.
func EncodeBlockMeta(b []byte, states []uint8, vers []uint64) []byte {
	b = append(b, states...)
	for _, v := range vers {
		b = binary.LittleEndian.AppendUint64(b, v)
	}
	return b
}

// DecodeBlockMeta parses a READ_META payload of n blocks.
func DecodeBlockMeta(b []byte, n int) ([]uint8, []uint64, error) {
	if len(b) != 9*n {
		return nil, nil, fmt.Errorf("%w: block meta of %d bytes for %d blocks", ErrFrame, len(b), n)
	}
	vers := make([]uint64, n)
	for i := range vers {
		vers[i] = binary.LittleEndian.Uint64(b[n+8*i:])
	}
	return b[:n:n], vers, nil
}
