package iscsi

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"io"
)

// Opcodes (RFC 7143 11.2.1.2).
const (
	opNOPOut     = 0x00
	opSCSICmd    = 0x01
	opTMFReq     = 0x02
	opLoginReq   = 0x03
	opTextReq    = 0x04
	opDataOut    = 0x05
	opLogoutReq  = 0x06
	opSNACK      = 0x10
	opNOPIn      = 0x20
	opSCSIResp   = 0x21
	opTMFResp    = 0x22
	opLoginResp  = 0x23
	opTextResp   = 0x24
	opDataIn     = 0x25
	opLogoutResp = 0x26
	opR2T        = 0x31
	opReject     = 0x3f
)

const (
	bhsLen = 48
	// maxDataSegment bounds what the target accepts in one PDU whatever
	// was negotiated, so a hostile length cannot make it allocate much.
	maxDataSegment = 1 << 24
	flagFinal      = 0x80
	flagImmediate  = 0x40
	reservedTag    = 0xffffffff
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// PDU is one iSCSI protocol data unit: basic header segment, additional
// header segments and data segment (without padding and digests).
type PDU struct {
	BHS  [bhsLen]byte
	AHS  []byte
	Data []byte
}

func (p *PDU) Opcode() byte     { return p.BHS[0] & 0x3f }
func (p *PDU) Immediate() bool  { return p.BHS[0]&flagImmediate != 0 }
func (p *PDU) Flags() byte      { return p.BHS[1] }
func (p *PDU) Final() bool      { return p.BHS[1]&flagFinal != 0 }
func (p *PDU) ITT() uint32      { return binary.BigEndian.Uint32(p.BHS[16:]) }
func (p *PDU) u32(o int) uint32 { return binary.BigEndian.Uint32(p.BHS[o:]) }
func (p *PDU) setU32(o int, v uint32) {
	binary.BigEndian.PutUint32(p.BHS[o:], v)
}
func (p *PDU) LUN() [8]byte {
	var l [8]byte
	copy(l[:], p.BHS[8:16])
	return l
}

func newPDU(op byte, flags byte, itt uint32) *PDU {
	p := &PDU{}
	p.BHS[0] = op
	p.BHS[1] = flags
	p.setU32(16, itt)
	return p
}

// ReadPDU reads one PDU. maxData bounds the data segment (the target's
// MaxRecvDataSegmentLength); digests are checked when enabled.
func ReadPDU(r io.Reader, headerDigest, dataDigest bool, maxData int) (*PDU, error) {
	p := &PDU{}
	if _, err := io.ReadFull(r, p.BHS[:]); err != nil {
		return nil, err
	}
	ahsLen := int(p.BHS[4]) * 4
	dataLen := int(p.BHS[5])<<16 | int(p.BHS[6])<<8 | int(p.BHS[7])
	if dataLen > maxData || dataLen > maxDataSegment {
		return nil, fmt.Errorf("read pdu: data segment of %d bytes exceeds %d: %w", dataLen, maxData, ErrProtocol)
	}
	if ahsLen > 0 {
		p.AHS = make([]byte, ahsLen)
		if _, err := io.ReadFull(r, p.AHS); err != nil {
			return nil, err
		}
	}
	if headerDigest {
		var d [4]byte
		if _, err := io.ReadFull(r, d[:]); err != nil {
			return nil, err
		}
		crc := crc32.Update(crc32.Checksum(p.BHS[:], castagnoli), castagnoli, p.AHS)
		if binary.LittleEndian.Uint32(d[:]) != crc {
			return nil, fmt.Errorf("read pdu: %w", ErrHeaderDigest)
		}
	}
	if dataLen > 0 {
		padded := (dataLen + 3) &^ 3
		buf := make([]byte, padded)
		if _, err := io.ReadFull(r, buf); err != nil {
			return nil, err
		}
		if dataDigest {
			var d [4]byte
			if _, err := io.ReadFull(r, d[:]); err != nil {
				return nil, err
			}
			if binary.LittleEndian.Uint32(d[:]) != crc32.Checksum(buf, castagnoli) {
				return nil, fmt.Errorf("read pdu: %w", ErrDataDigest)
			}
		}
		p.Data = buf[:dataLen]
	}
	return p, nil
}

// appendTo appends the wire form of p to b.
func (p *PDU) appendTo(b []byte, headerDigest, dataDigest bool) []byte {
	p.BHS[4] = byte(len(p.AHS) / 4)
	n := len(p.Data)
	p.BHS[5], p.BHS[6], p.BHS[7] = byte(n>>16), byte(n>>8), byte(n)
	start := len(b)
	b = append(b, p.BHS[:]...)
	b = append(b, p.AHS...)
	if headerDigest {
		b = binary.LittleEndian.AppendUint32(b, crc32.Checksum(b[start:], castagnoli))
	}
	if n > 0 {
		ds := len(b)
		b = append(b, p.Data...)
		for len(b)%4 != 0 {
			b = append(b, 0)
		}
		if dataDigest {
			b = binary.LittleEndian.AppendUint32(b, crc32.Checksum(b[ds:], castagnoli))
		}
	}
	return b
}

// parseText splits a text data segment into key=value pairs in order.
func parseText(data []byte) ([][2]string, error) {
	var kv [][2]string
	for len(data) > 0 {
		i := 0
		for i < len(data) && data[i] != 0 {
			i++
		}
		pair := string(data[:i])
		if i < len(data) {
			i++
		}
		data = data[i:]
		if pair == "" {
			continue
		}
		k, v, ok := cut(pair, '=')
		if !ok || k == "" {
			return nil, fmt.Errorf("text key %q: %w", pair, ErrProtocol)
		}
		kv = append(kv, [2]string{k, v})
	}
	return kv, nil
}

func cut(s string, sep byte) (string, string, bool) {
	for i := 0; i < len(s); i++ {
		if s[i] == sep {
			return s[:i], s[i+1:], true
		}
	}
	return s, "", false
}

func appendText(b []byte, k, v string) []byte {
	b = append(b, k...)
	b = append(b, '=')
	b = append(b, v...)
	return append(b, 0)
}
