package nbd

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
)

// negotiate runs the fixed newstyle handshake. It returns the export the
// client entered the transmission phase with, or (nil, nil) when the client
// aborted or left during option haggling.
func (c *conn) negotiate() (*Export, error) {
	timeout := c.srv.HandshakeTimeout
	if timeout == 0 {
		timeout = DefaultHandshakeTimeout
	}
	if err := c.nc.SetDeadline(time.Now().Add(timeout)); err != nil {
		return nil, fmt.Errorf("handshake: %w", err)
	}
	hello := binary.BigEndian.AppendUint64(nil, magicInit)
	hello = binary.BigEndian.AppendUint64(hello, magicOpt)
	hello = binary.BigEndian.AppendUint16(hello, flagFixedNewstyle|flagNoZeroes)
	if _, err := c.nc.Write(hello); err != nil {
		return nil, fmt.Errorf("handshake: %w", err)
	}
	var cf [4]byte
	if _, err := io.ReadFull(c.br, cf[:]); err != nil {
		return nil, quietEOF(fmt.Errorf("handshake: client flags: %w", err))
	}
	flags := binary.BigEndian.Uint32(cf[:])
	if flags&^(flagFixedNewstyle|flagNoZeroes) != 0 {
		return nil, fmt.Errorf("handshake: %w: unknown client flags %#x", ErrProtocol, flags)
	}
	c.noZeroes = flags&flagNoZeroes != 0

	var hdr [optHeaderLen]byte
	for {
		if _, err := io.ReadFull(c.br, hdr[:]); err != nil {
			return nil, quietEOF(fmt.Errorf("handshake: option: %w", err))
		}
		code, length, err := parseOptionHeader(hdr[:])
		if err != nil {
			return nil, fmt.Errorf("handshake: %w", err)
		}
		if length > maxOptionPayload {
			if code == optExportName {
				return nil, fmt.Errorf("handshake: %w: export name of %d bytes", ErrProtocol, length)
			}
			if _, err := io.CopyN(io.Discard, c.br, int64(length)); err != nil {
				return nil, quietEOF(fmt.Errorf("handshake: option: %w", err))
			}
			if err := c.optReply(code, repErrTooBig, []byte("option payload too large")); err != nil {
				return nil, err
			}
			continue
		}
		data := make([]byte, length)
		if _, err := io.ReadFull(c.br, data); err != nil {
			return nil, quietEOF(fmt.Errorf("handshake: option: %w", err))
		}
		e, done, err := c.handleOption(option{code: code, data: data})
		if err != nil || done {
			return e, err
		}
		if e != nil {
			if err := c.nc.SetDeadline(time.Time{}); err != nil {
				return nil, fmt.Errorf("handshake: %w", err)
			}
			return e, nil
		}
	}
}

// handleOption answers one option. It returns the export when the option
// ends haggling with the transmission phase, done when the session ends.
func (c *conn) handleOption(o option) (e *Export, done bool, err error) {
	switch o.code {
	case optExportName:
		e, ok := c.srv.resolve(string(o.data))
		if !ok || e.Err() != nil {
			// The protocol gives EXPORT_NAME no way to fail but
			// dropping the connection.
			return nil, true, fmt.Errorf("handshake: export %q: %w", o.data, ErrNoExport)
		}
		if c.metaExport != e {
			c.metaAlloc = false
		}
		b := binary.BigEndian.AppendUint64(nil, uint64(e.info.Size))
		b = binary.BigEndian.AppendUint16(b, c.transmissionFlags(e))
		if !c.noZeroes {
			b = append(b, make([]byte, 124)...)
		}
		if _, err := c.nc.Write(b); err != nil {
			return nil, true, fmt.Errorf("handshake: %w", err)
		}
		return e, false, nil

	case optAbort:
		// The client may already be gone; the reply is a courtesy.
		_ = c.optReply(o.code, repAck, nil)
		return nil, true, nil

	case optList:
		if len(o.data) != 0 {
			return nil, false, c.optReply(o.code, repErrInvalid, []byte("LIST takes no data"))
		}
		for _, name := range c.srv.Exports() {
			p := binary.BigEndian.AppendUint32(nil, uint32(len(name)))
			if err := c.optReply(o.code, repServer, append(p, name...)); err != nil {
				return nil, true, err
			}
		}
		return nil, false, c.optReply(o.code, repAck, nil)

	case optStartTLS:
		return nil, false, c.optReply(o.code, repErrPolicy, []byte("TLS is not offered; keel serves NBD on unix sockets and loopback only"))

	case optInfo, optGo:
		return c.handleInfo(o)

	case optStructuredReply:
		if len(o.data) != 0 {
			return nil, false, c.optReply(o.code, repErrInvalid, []byte("STRUCTURED_REPLY takes no data"))
		}
		c.structured = true
		return nil, false, c.optReply(o.code, repAck, nil)

	case optListMetaContext, optSetMetaContext:
		return nil, false, c.handleMeta(o)

	default:
		return nil, false, c.optReply(o.code, repErrUnsup, fmt.Appendf(nil, "option %d is not supported", o.code))
	}
}

// handleInfo answers NBD_OPT_INFO and NBD_OPT_GO.
func (c *conn) handleInfo(o option) (*Export, bool, error) {
	req, err := parseInfoRequest(o.data)
	if err != nil {
		return nil, false, c.optReply(o.code, repErrInvalid, []byte(err.Error()))
	}
	e, ok := c.srv.resolve(req.name)
	if !ok {
		return nil, false, c.optReply(o.code, repErrUnknown, fmt.Appendf(nil, "no export %q", req.name))
	}
	if err := e.Err(); err != nil {
		return nil, false, c.optReply(o.code, repErrShutdown, fmt.Appendf(nil, "export %q is closed: %v", req.name, err))
	}
	// NBD_INFO_EXPORT is always sent; the block size constraints too
	// when the client asked or when they are more than "any byte".
	p := binary.BigEndian.AppendUint16(nil, infoExport)
	p = binary.BigEndian.AppendUint64(p, uint64(e.info.Size))
	p = binary.BigEndian.AppendUint16(p, c.transmissionFlags(e))
	if err := c.optReply(o.code, repInfo, p); err != nil {
		return nil, true, err
	}
	sendBlock := e.info.MinBlock > 1
	for _, item := range req.items {
		var p []byte
		switch item {
		case infoName:
			p = append(binary.BigEndian.AppendUint16(nil, infoName), e.name...)
		case infoDescription:
			if e.info.Description == "" {
				continue
			}
			p = append(binary.BigEndian.AppendUint16(nil, infoDescription), e.info.Description...)
		case infoBlockSize:
			sendBlock = true
			continue
		default:
			continue
		}
		if err := c.optReply(o.code, repInfo, p); err != nil {
			return nil, true, err
		}
	}
	if sendBlock {
		p := binary.BigEndian.AppendUint16(nil, infoBlockSize)
		p = binary.BigEndian.AppendUint32(p, e.info.MinBlock)
		p = binary.BigEndian.AppendUint32(p, e.info.PreferredBlock)
		p = binary.BigEndian.AppendUint32(p, e.info.MaxBlock)
		if err := c.optReply(o.code, repInfo, p); err != nil {
			return nil, true, err
		}
	}
	if o.code == optInfo {
		return nil, false, c.optReply(o.code, repAck, nil)
	}
	if c.metaExport != e {
		// Contexts were negotiated for another export; they do not
		// carry over.
		c.metaAlloc = false
	}
	if err := c.optReply(o.code, repAck, nil); err != nil {
		return nil, true, err
	}
	return e, false, nil
}

// handleMeta answers NBD_OPT_LIST_META_CONTEXT and NBD_OPT_SET_META_CONTEXT.
// The only context is base:allocation; a query matches it when it is its
// exact name or its namespace "base:" (and, for LIST, when there is no
// query at all).
func (c *conn) handleMeta(o option) error {
	if !c.structured {
		return c.optReply(o.code, repErrInvalid, []byte("negotiate structured replies first"))
	}
	req, err := parseMetaRequest(o.data)
	if err != nil {
		return c.optReply(o.code, repErrInvalid, []byte(err.Error()))
	}
	e, ok := c.srv.resolve(req.name)
	if !ok {
		return c.optReply(o.code, repErrUnknown, fmt.Appendf(nil, "no export %q", req.name))
	}
	match := o.code == optListMetaContext && len(req.queries) == 0
	for _, q := range req.queries {
		if q == metaBaseAllocation || q == "base:" {
			match = true
		} else if !strings.Contains(q, ":") {
			return c.optReply(o.code, repErrInvalid, fmt.Appendf(nil, "query %q has no namespace", q))
		}
	}
	if o.code == optSetMetaContext {
		c.metaExport, c.metaAlloc = e, match
	}
	if match {
		id := uint32(0) // LIST replies carry no id
		if o.code == optSetMetaContext {
			id = metaBaseAllocationID
		}
		p := append(binary.BigEndian.AppendUint32(nil, id), metaBaseAllocation...)
		if err := c.optReply(o.code, repMetaContext, p); err != nil {
			return err
		}
	}
	return c.optReply(o.code, repAck, nil)
}

// transmissionFlags are the flags the client gets for export e.
func (c *conn) transmissionFlags(e *Export) uint16 {
	f := uint16(flagHasFlags | flagSendFlush | flagSendCache)
	if e.info.ReadOnly {
		f |= flagReadOnly
	} else {
		f |= flagSendFUA | flagSendTrim | flagSendWriteZeroes
		if e.info.FastZero {
			f |= flagSendFastZero
		}
	}
	if e.info.MultiConn {
		f |= flagCanMultiConn
	}
	if c.structured {
		f |= flagSendDF
	}
	return f
}

// optReply sends one option reply.
func (c *conn) optReply(code, typ uint32, payload []byte) error {
	if _, err := c.nc.Write(appendOptReply(nil, code, typ, payload)); err != nil {
		return fmt.Errorf("handshake: reply to option %d: %w", code, err)
	}
	return nil
}

// quietEOF turns an end of stream into errClientGone.
func quietEOF(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("%w: %w", errClientGone, err)
	}
	return err
}
