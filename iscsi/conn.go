package iscsi

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"keel/scsi"
)

// conn is one TCP connection of a session.
type conn struct {
	srv *Server
	nc  net.Conn
	r   *bufio.Reader
	cid uint16
	ss  *session
	p   params

	wmu    sync.Mutex
	statSN uint32
	wbuf   []byte

	mu      sync.Mutex
	tasks   map[uint32]*task
	nextTTT uint32
	closed  bool
}

func newConn(s *Server, nc net.Conn) *conn {
	return &conn{srv: s, nc: nc, r: bufio.NewReaderSize(nc, 64<<10), tasks: map[uint32]*task{}, p: defaultParams()}
}

func (c *conn) serve() {
	defer c.srv.dropConn(c)
	defer c.nc.Close()
	if err := c.login(); err != nil {
		if !errors.Is(err, io.EOF) {
			c.srv.log.Info("iscsi login failed", "remote", c.nc.RemoteAddr().String(), "err", err)
		}
		return
	}
	err := c.fullFeature()
	c.shutdown()
	if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
		c.srv.log.Info("iscsi connection closed", "remote", c.nc.RemoteAddr().String(), "err", err)
	}
}

// shutdown aborts the connection's tasks (a dropped connection frees its
// tasks) and detaches it from the session.
func (c *conn) shutdown() {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	c.abortTasks(func(*task) bool { return true })
	c.ss.removeConn(c)
}

// send writes PDUs in order. withStatus PDUs take the next StatSN; every
// PDU carries the session's current ExpCmdSN/MaxCmdSN.
func (c *conn) send(pdus ...*PDU) error {
	exp, max := c.ss.window()
	c.wmu.Lock()
	defer c.wmu.Unlock()
	b := c.wbuf[:0]
	for _, p := range pdus {
		switch p.Opcode() {
		case opR2T:
			p.setU32(24, c.statSN)
		case opDataIn:
			if p.BHS[1]&0x01 != 0 {
				p.setU32(24, c.statSN)
				c.statSN++
			}
		default:
			p.setU32(24, c.statSN)
			c.statSN++
		}
		p.setU32(28, exp)
		p.setU32(32, max)
		b = p.appendTo(b, c.p.headerDigest, c.p.dataDigest)
	}
	c.wbuf = b
	if cap(c.wbuf) > 4<<20 {
		c.wbuf = nil
	}
	_, err := c.nc.Write(b)
	return err
}

func (c *conn) readPDU() (*PDU, error) {
	return ReadPDU(c.r, c.p.headerDigest, c.p.dataDigest, targetMaxRecvData)
}

// login runs the login phase until the full feature phase or failure.
func (c *conn) login() error {
	ls := &loginState{p: defaultParams(), offered: map[string]bool{}}
	first := true
	var chapSec *CHAPSecret
	var sess *session
	for {
		c.nc.SetReadDeadline(time.Now().Add(30 * time.Second))
		req, err := ReadPDU(c.r, false, false, targetMaxRecvData)
		if err != nil {
			return err
		}
		if req.Opcode() != opLoginReq {
			return fmt.Errorf("login: opcode 0x%02x before login: %w", req.Opcode(), ErrProtocol)
		}
		transit := req.Flags()&0x80 != 0
		csg, nsg := (req.Flags()>>2)&3, req.Flags()&3
		kvList, err := parseText(req.Data)
		if err != nil {
			return c.loginReject(req, loginInitError, err)
		}
		kv := map[string]string{}
		for _, e := range kvList {
			kv[e[0]] = e[1]
		}
		var out []byte
		if first {
			first = false
			c.statSN = req.u32(28)
			ls.initiator = kv["InitiatorName"]
			ls.discovery = kv["SessionType"] == "Discovery"
			ls.targetName = kv["TargetName"]
			c.cid = binary.BigEndian.Uint16(req.BHS[20:])
			if ls.initiator == "" || (!ls.discovery && ls.targetName == "") {
				return c.loginReject(req, loginMissingParam, errors.New("InitiatorName or TargetName missing"))
			}
			var tgt *Target
			if !ls.discovery {
				tgt = c.srv.target(ls.targetName)
				if tgt == nil {
					return c.loginReject(req, loginNotFound, fmt.Errorf("target %s not served here", ls.targetName))
				}
			}
			if c.srv.cfg.Allow != nil {
				from := netip.Addr{}
				if ta, ok := c.nc.RemoteAddr().(*net.TCPAddr); ok {
					from, _ = netip.AddrFromSlice(ta.IP)
					from = from.Unmap()
				}
				if err := c.srv.cfg.Allow(ls.initiator, from, ls.targetName); err != nil {
					return c.loginReject(req, loginForbidden, err)
				}
			}
			if c.srv.cfg.CHAP != nil {
				if sec, ok := c.srv.cfg.CHAP(ls.initiator, ls.targetName); ok {
					chapSec = &sec
				}
			}
			sess, err = c.bindSession(req, ls, tgt)
			if err != nil {
				return c.loginReject(req, loginSessionMissing, err)
			}
			if !ls.discovery {
				out = appendText(out, "TargetPortalGroupTag", strconv.Itoa(int(c.srv.cfg.PortalGroupTag)))
			}
		}
		status := uint16(loginSuccess)
		if csg == stageSecurity {
			if am, ok := kv["AuthMethod"]; ok && !ls.offered["AuthMethod"] {
				ls.offered["AuthMethod"] = true
				switch {
				case chapSec != nil && containsToken(am, "CHAP"):
					out = appendText(out, "AuthMethod", "CHAP")
				case chapSec == nil && containsToken(am, "None"):
					out = appendText(out, "AuthMethod", "None")
					ls.authDone = true
				default:
					out = appendText(out, "AuthMethod", "Reject")
					status = loginAuthFailed
				}
			}
			if chapSec != nil && status == loginSuccess && !ls.authDone {
				var done bool
				out, done, status = ls.chap(kv, chapSec, out)
				ls.authDone = done
			}
		} else if chapSec != nil && !ls.authDone {
			status = loginAuthFailed // skipping the security stage is not allowed
		} else {
			ls.authDone = true
		}
		if status != loginSuccess {
			return c.loginReject(req, status, errors.New("authentication failed"))
		}
		if out, err = ls.negotiate(kvList, out); err != nil {
			return c.loginReject(req, loginInitError, err)
		}
		if transit && !ls.authDone && nsg != stageSecurity {
			if chapSec != nil && !ls.chapAsked {
				transit = false // the CHAP exchange has not started yet
			} else if chapSec != nil {
				return c.loginReject(req, loginAuthFailed, errors.New("authentication incomplete"))
			} else {
				ls.authDone = true
			}
		}
		resp := newPDU(opLoginResp, 0, req.ITT())
		copy(resp.BHS[8:14], req.BHS[8:14])
		if transit {
			resp.BHS[1] = 0x80 | csg<<2 | nsg
		} else {
			resp.BHS[1] = csg<<2 | csg
		}
		resp.Data = out
		if transit && nsg == stageFull {
			binary.BigEndian.PutUint16(resp.BHS[14:], sess.tsih)
			c.p = ls.p
			c.p.headerDigest, c.p.dataDigest = false, false
			sess.mu.Lock()
			if len(sess.conns) == 0 {
				sess.p = ls.p
			}
			sess.conns[c] = true
			sess.mu.Unlock()
			c.ss = sess
			if err := c.send(resp); err != nil {
				c.ss.removeConn(c)
				return err
			}
			c.p.headerDigest, c.p.dataDigest = ls.p.headerDigest, ls.p.dataDigest
			c.nc.SetReadDeadline(time.Time{})
			c.srv.log.Info("iscsi login", "initiator", ls.initiator, "target", ls.targetName,
				"remote", c.nc.RemoteAddr().String(), "tsih", sess.tsih, "cid", c.cid)
			if c.srv.cfg.LoggedIn != nil {
				c.srv.cfg.LoggedIn(sess.info())
			}
			return nil
		}
		if err := c.sendLogin(resp, sess); err != nil {
			return err
		}
	}
}

func (c *conn) sendLogin(resp *PDU, sess *session) error {
	exp, max := sess.window()
	resp.setU32(24, c.statSN)
	resp.setU32(28, exp)
	resp.setU32(32, max)
	_, err := c.nc.Write(resp.appendTo(nil, false, false))
	return err
}

// loginReject answers a login request with a failure status and ends
// the connection.
func (c *conn) loginReject(req *PDU, status uint16, cause error) error {
	resp := newPDU(opLoginResp, 0, req.ITT())
	copy(resp.BHS[8:14], req.BHS[8:14])
	resp.setU32(24, c.statSN)
	resp.BHS[36], resp.BHS[37] = byte(status>>8), byte(status)
	c.nc.Write(resp.appendTo(nil, false, false))
	return fmt.Errorf("login refused (status 0x%04x): %w", status, cause)
}

// bindSession finds or creates the session a login joins.
func (c *conn) bindSession(req *PDU, ls *loginState, tgt *Target) (*session, error) {
	isid := isidString(&req.BHS)
	tsih := binary.BigEndian.Uint16(req.BHS[14:])
	key := sessionKey(ls.initiator, isid)
	s := c.srv
	s.mu.Lock()
	old := s.sessions[key]
	if tsih != 0 {
		defer s.mu.Unlock()
		if old == nil || old.tsih != tsih || old.target != tgt {
			return nil, fmt.Errorf("no session with TSIH %d for %s", tsih, key)
		}
		return old, nil
	}
	s.nextTSIH++
	if s.nextTSIH == 0 {
		s.nextTSIH = 1
	}
	ss := &session{srv: s, key: key, initiator: ls.initiator, isid: isid, tsih: s.nextTSIH, target: tgt, created: time.Now(),
		expCmdSN: req.u32(24), pending: map[uint32]func(){}, conns: map[*conn]bool{}}
	if tgt != nil {
		ss.nexus = scsi.Nexus{InitiatorName: ls.initiator, InitiatorPort: key,
			TargetPort: fmt.Sprintf("%s,t,0x%04x", tgt.Name, s.cfg.PortalGroupTag), RelTargetPort: s.cfg.PortalGroupTag}
	}
	s.sessions[key] = ss
	s.mu.Unlock()
	if old != nil {
		// Session reinstatement: the initiator restarted this session;
		// the old one's connections and tasks go.
		for _, oc := range old.allConns() {
			oc.nc.Close()
		}
	}
	return ss, nil
}

// fullFeature is the reader loop of the full feature phase.
func (c *conn) fullFeature() error {
	for {
		p, err := c.readPDU()
		if err != nil {
			return err
		}
		switch p.Opcode() {
		case opNOPOut:
			if p.ITT() == reservedTag {
				continue // answer to a NOP-In ping
			}
			c.ss.order(p.u32(24), p.Immediate(), func() {
				r := newPDU(opNOPIn, 0x80, p.ITT())
				copy(r.BHS[8:16], p.BHS[8:16])
				r.setU32(20, reservedTag)
				r.Data = p.Data
				c.send(r)
			})
		case opSCSICmd:
			if err := c.scsiCommand(p); err != nil {
				return err
			}
		case opDataOut:
			if err := c.dataOut(p); err != nil {
				return err
			}
		case opTMFReq:
			c.ss.order(p.u32(24), p.Immediate(), func() { go c.taskManagement(p) })
		case opTextReq:
			c.ss.order(p.u32(24), p.Immediate(), func() { c.text(p) })
		case opLogoutReq:
			done := make(chan struct{})
			if !c.ss.order(p.u32(24), p.Immediate(), func() { c.logout(p); close(done) }) {
				continue
			}
			select {
			case <-done:
				return io.EOF
			case <-time.After(10 * time.Second):
				return fmt.Errorf("logout: commands before it never arrived: %w", ErrProtocol)
			}
		default:
			c.reject(p, 0x05) // command not supported (SNACK needs ERL > 0)
		}
	}
}

// reject sends a Reject PDU carrying the offending header.
func (c *conn) reject(p *PDU, reason byte) {
	r := newPDU(opReject, 0x80, reservedTag)
	r.BHS[2] = reason
	r.Data = append([]byte(nil), p.BHS[:]...)
	c.send(r)
}

func (c *conn) text(p *PDU) {
	kv, _ := parseText(p.Data)
	var out []byte
	for _, e := range kv {
		if e[0] != "SendTargets" {
			out = appendText(out, e[0], "NotUnderstood")
			continue
		}
		for _, t := range c.srv.Targets() {
			if c.ss.target != nil && e[1] != t.Name && (e[1] != "" || c.ss.target != t) {
				continue
			}
			if c.ss.target == nil && e[1] != "All" && e[1] != t.Name {
				continue
			}
			if c.srv.cfg.Allow != nil {
				from := netip.Addr{}
				if ta, ok := c.nc.RemoteAddr().(*net.TCPAddr); ok {
					from, _ = netip.AddrFromSlice(ta.IP)
					from = from.Unmap()
				}
				if c.srv.cfg.Allow(c.ss.initiator, from, t.Name) != nil {
					continue
				}
			}
			out = appendText(out, "TargetName", t.Name)
			out = appendText(out, "TargetAddress", fmt.Sprintf("%s,%d", c.nc.LocalAddr().String(), c.srv.cfg.PortalGroupTag))
		}
	}
	r := newPDU(opTextResp, 0x80, p.ITT())
	r.setU32(20, reservedTag)
	r.Data = out
	c.send(r)
}

func (c *conn) logout(p *PDU) {
	reason := p.Flags() & 0x7f
	r := newPDU(opLogoutResp, 0x80, p.ITT())
	if reason > 2 {
		r.BHS[2] = 2 // connection recovery is not supported
	}
	c.send(r)
	if reason == 0 {
		for _, oc := range c.ss.allConns() {
			if oc != c {
				oc.nc.Close()
			}
		}
	}
}

// TMF functions and responses (RFC 7143 11.5, 11.6).
const (
	tmfAbortTask     = 1
	tmfAbortTaskSet  = 2
	tmfClearACA      = 3
	tmfClearTaskSet  = 4
	tmfLUNReset      = 5
	tmfTargetWarm    = 6
	tmfTargetCold    = 7
	tmfTaskReassign  = 8
	tmfComplete      = 0
	tmfNoTask        = 1
	tmfNoLUN         = 2
	tmfNoReassign    = 4
	tmfNotSupported  = 5
	ascBusDevReset   = 0x2903
	ascTargetResetUA = 0x2902
)

func (c *conn) taskManagement(p *PDU) {
	fn := p.Flags() & 0x7f
	lun := scsi.DecodeLUN(p.LUN())
	resp := byte(tmfComplete)
	tgt := c.ss.target
	switch fn {
	case tmfAbortTask:
		if t := c.ss.findTask(p.u32(20)); t == nil || !t.abort() {
			resp = tmfNoTask // completed (its status is sent or on its way) or never seen
		}
	case tmfAbortTaskSet, tmfClearTaskSet:
		c.ss.abortTasks(func(t *task) bool { return t.lun == lun })
	case tmfLUNReset:
		lu := tgt.LUs[lun]
		if lu == nil {
			resp = tmfNoLUN
			break
		}
		for _, ss := range c.srv.sessionsOf(tgt) {
			ss.abortTasks(func(t *task) bool { return t.lun == lun })
		}
		lu.Reset(ascBusDevReset)
	case tmfTargetWarm, tmfTargetCold:
		for _, ss := range c.srv.sessionsOf(tgt) {
			ss.abortTasks(func(*task) bool { return true })
		}
		for _, lu := range tgt.LUs {
			lu.Reset(ascTargetResetUA)
		}
	case tmfTaskReassign:
		resp = tmfNoReassign
	default:
		resp = tmfNotSupported
	}
	r := newPDU(opTMFResp, 0x80, p.ITT())
	r.BHS[2] = resp
	c.send(r)
	if fn == tmfTargetCold && resp == tmfComplete {
		for _, ss := range c.srv.sessionsOf(tgt) {
			for _, oc := range ss.allConns() {
				oc.nc.Close()
			}
		}
	}
}

func (c *conn) abortTasks(match func(*task) bool) {
	c.mu.Lock()
	var hit []*task
	for _, t := range c.tasks {
		if match(t) {
			hit = append(hit, t)
		}
	}
	c.mu.Unlock()
	for _, t := range hit {
		t.abort()
	}
}
