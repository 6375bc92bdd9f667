package iscsi

import (
	"encoding/binary"
	"fmt"
	"sync"

	"keel/scsi"
)

// task is one SCSI command in flight on a connection.
type task struct {
	c      *conn
	itt    uint32
	lun    uint64
	cdb    []byte
	edtl   uint32
	read   bool
	write  bool
	final  bool // F bit of the command: no unsolicited Data-Out follows
	cmdPDU *PDU

	mu       sync.Mutex
	cond     *sync.Cond
	buf      []byte
	received uint32
	unsolSN  uint32 // next DataSN of the unsolicited sequence
	unsolEnd bool
	r2ts     map[uint32]*r2tState // by target transfer tag
	aborted  bool
	// responding: the status is on its way; the task can no longer be
	// aborted. aborted and responding exclude each other (both under mu).
	responding bool
	r2tSN      uint32
}

type r2tState struct {
	nextSN uint32
	done   bool
}

func (c *conn) scsiCommand(p *PDU) error {
	flags := p.Flags()
	t := &task{c: c, itt: p.ITT(), lun: scsi.DecodeLUN(p.LUN()), edtl: p.u32(20),
		read: flags&0x40 != 0, write: flags&0x20 != 0, final: flags&0x80 != 0, cmdPDU: p, r2ts: map[uint32]*r2tState{}}
	t.cond = sync.NewCond(&t.mu)
	t.cdb = append([]byte(nil), p.BHS[32:48]...)
	if len(p.AHS) >= 4 && p.AHS[2] == 1 { // extended CDB AHS
		n := int(binary.BigEndian.Uint16(p.AHS)) - 1
		if n > 0 && 4+n <= len(p.AHS) {
			t.cdb = append(t.cdb, p.AHS[4:4+n]...)
		}
	}
	if t.write {
		if t.edtl > 1<<26 {
			return fmt.Errorf("scsi command: expected data transfer length %d: %w", t.edtl, ErrProtocol)
		}
		t.buf = make([]byte, t.edtl)
		n := copy(t.buf, p.Data)
		t.received = uint32(n)
	}
	c.mu.Lock()
	if _, dup := c.tasks[t.itt]; dup || c.closed {
		c.mu.Unlock()
		c.reject(p, 0x09) // invalid PDU field: ITT in use
		return nil
	}
	c.tasks[t.itt] = t
	c.mu.Unlock()
	if !c.ss.order(p.u32(24), p.Immediate(), func() { go t.run() }) {
		c.mu.Lock()
		delete(c.tasks, t.itt)
		c.mu.Unlock()
	}
	return nil
}

// dataOut files one Data-Out PDU into its task.
func (c *conn) dataOut(p *PDU) error {
	c.mu.Lock()
	t := c.tasks[p.ITT()]
	c.mu.Unlock()
	if t == nil || !t.write {
		return nil // the task was aborted; its data is dropped
	}
	ttt, sn, off := p.u32(20), p.u32(36), p.u32(40)
	t.mu.Lock()
	defer t.mu.Unlock()
	if uint64(off)+uint64(len(p.Data)) > uint64(len(t.buf)) {
		return fmt.Errorf("data-out: offset %d+%d past the %d bytes expected: %w", off, len(p.Data), len(t.buf), ErrProtocol)
	}
	var seq *uint32
	if ttt == reservedTag {
		seq = &t.unsolSN
	} else if r := t.r2ts[ttt]; r != nil {
		seq = &r.nextSN
	} else {
		return fmt.Errorf("data-out: unknown target transfer tag 0x%x: %w", ttt, ErrProtocol)
	}
	if sn != *seq {
		return fmt.Errorf("data-out: DataSN %d, expected %d: %w", sn, *seq, ErrProtocol)
	}
	*seq++
	copy(t.buf[off:], p.Data)
	t.received += uint32(len(p.Data))
	if p.Final() {
		if ttt == reservedTag {
			t.unsolEnd = true
		} else {
			t.r2ts[ttt].done = true
		}
	}
	t.cond.Broadcast()
	return nil
}

// abort stops the task unless its response is already on its way, and
// reports whether it did: ABORT TASK answers "task does not exist" for a
// task that completed, so an initiator never sees both a status and a
// completed abort for one command.
func (t *task) abort() bool {
	t.mu.Lock()
	if t.responding {
		t.mu.Unlock()
		return false
	}
	t.aborted = true
	t.cond.Broadcast()
	t.mu.Unlock()
	t.c.mu.Lock()
	if t.c.tasks[t.itt] == t {
		delete(t.c.tasks, t.itt)
	}
	t.c.mu.Unlock()
	return true
}

// claimResponse marks the task as responding unless it was aborted.
func (t *task) claimResponse() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.aborted {
		return false
	}
	t.responding = true
	return true
}

func (t *task) done() {
	t.c.mu.Lock()
	if t.c.tasks[t.itt] == t {
		delete(t.c.tasks, t.itt)
	}
	t.c.mu.Unlock()
}

// collect gathers the write data: the unsolicited part, then R2T
// sequences of at most MaxBurstLength each. It returns false when the
// task was aborted.
func (t *task) collect() bool {
	c := t.c
	p := c.ss.p
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.final && !p.initialR2T {
		for !t.unsolEnd && !t.aborted {
			t.cond.Wait()
		}
	}
	off := t.received
	for off < t.edtl && !t.aborted {
		var batch []*PDU
		var tags []uint32
		for i := 0; i < max(1, p.maxOutstandingR2) && off < t.edtl; i++ {
			n := min(uint32(p.maxBurst), t.edtl-off)
			c.mu.Lock()
			c.nextTTT++
			if c.nextTTT == reservedTag {
				c.nextTTT = 1
			}
			ttt := c.nextTTT
			c.mu.Unlock()
			t.r2ts[ttt] = &r2tState{}
			r := newPDU(opR2T, 0x80, t.itt)
			copy(r.BHS[8:16], t.cmdPDU.BHS[8:16])
			r.setU32(20, ttt)
			r.setU32(36, t.r2tSN)
			r.setU32(40, off)
			r.setU32(44, n)
			t.r2tSN++
			batch = append(batch, r)
			tags = append(tags, ttt)
			off += n
		}
		t.mu.Unlock()
		err := c.send(batch...)
		t.mu.Lock()
		if err != nil {
			return false
		}
		for _, ttt := range tags {
			for !t.r2ts[ttt].done && !t.aborted {
				t.cond.Wait()
			}
		}
	}
	return !t.aborted
}

func (t *task) run() {
	defer t.done()
	c := t.c
	if t.write && !t.collect() {
		return
	}
	cmd := &scsi.Command{Nexus: c.ss.nexus, CDB: t.cdb, DataOut: t.buf}
	var resp scsi.Response
	if c.ss.target == nil {
		resp = scsi.Response{Status: scsi.StatusCheckCondition}
	} else {
		resp = scsi.ExecuteOn(c.ss.target.LUs, t.lun, cmd)
	}
	if !t.claimResponse() {
		return
	}
	t.respond(resp)
}

// respond sends the data-in and the status with residual counts.
func (t *task) respond(resp scsi.Response) {
	c := t.c
	var flags byte
	var residual uint32
	data := resp.Data
	if t.write || resp.DataOutLen > 0 {
		want := uint32(resp.DataOutLen)
		switch {
		case want < t.edtl:
			flags, residual = 0x02, t.edtl-want
		case want > t.edtl:
			flags, residual = 0x04, want-t.edtl
		}
	} else {
		have := uint32(len(data))
		switch {
		case have < t.edtl:
			flags, residual = 0x02, t.edtl-have
		case have > t.edtl:
			flags, residual = 0x04, have-t.edtl
			data = data[:t.edtl]
		}
	}
	if !t.read {
		data = nil
	}
	var pdus []*PDU
	var dataSN uint32
	withStatus := resp.Status == scsi.StatusGood && len(resp.Sense) == 0
	maxSeg := c.p.maxSendData
	for off := 0; off < len(data); off += maxSeg {
		end := min(off+maxSeg, len(data))
		d := newPDU(opDataIn, 0, t.itt)
		copy(d.BHS[8:16], t.cmdPDU.BHS[8:16])
		d.setU32(20, reservedTag)
		d.setU32(36, dataSN)
		d.setU32(40, uint32(off))
		d.Data = data[off:end]
		dataSN++
		if end == len(data) {
			d.BHS[1] |= 0x80
			if withStatus {
				d.BHS[1] |= 0x01 | flags
				d.BHS[3] = resp.Status
				d.setU32(44, residual)
			}
		}
		pdus = append(pdus, d)
	}
	if len(pdus) == 0 || !withStatus {
		r := newPDU(opSCSIResp, 0x80|flags, t.itt)
		r.BHS[3] = resp.Status
		r.setU32(36, max(dataSN, t.r2tSN))
		r.setU32(44, residual)
		if len(resp.Sense) > 0 {
			r.Data = make([]byte, 2+len(resp.Sense))
			binary.BigEndian.PutUint16(r.Data, uint16(len(resp.Sense)))
			copy(r.Data[2:], resp.Sense)
		}
		pdus = append(pdus, r)
	}
	c.send(pdus...)
}
