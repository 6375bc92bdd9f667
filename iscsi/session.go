package iscsi

import (
	"fmt"
	"slices"
	"sync"
	"time"

	"keel/scsi"
)

// cmdWindow is how many commands past ExpCmdSN the target accepts.
const cmdWindow = 64

// session is one iSCSI session: its connections share the CmdSN window
// and the I_T nexus.
type session struct {
	srv       *Server
	key       string
	initiator string
	isid      string
	tsih      uint16
	target    *Target // nil for discovery sessions
	created   time.Time
	p         params
	nexus     scsi.Nexus

	mu       sync.Mutex
	expCmdSN uint32
	pending  map[uint32]func() // commands waiting for their CmdSN turn
	conns    map[*conn]bool
	gone     bool
}

func (ss *session) window() (exp, max uint32) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return ss.expCmdSN, ss.expCmdSN + cmdWindow - 1
}

// order delivers run in CmdSN order. Immediate commands run at once. A
// CmdSN outside the window is dropped silently (RFC 7143 3.2.2.1); the
// return value says whether the command was accepted.
func (ss *session) order(cmdSN uint32, immediate bool, run func()) bool {
	ss.mu.Lock()
	if immediate {
		ss.mu.Unlock()
		run()
		return true
	}
	if d := cmdSN - ss.expCmdSN; d >= cmdWindow {
		ss.mu.Unlock()
		return false
	}
	if cmdSN != ss.expCmdSN {
		if _, dup := ss.pending[cmdSN]; dup {
			ss.mu.Unlock()
			return false
		}
		ss.pending[cmdSN] = run
		ss.mu.Unlock()
		return true
	}
	var ready []func()
	ready = append(ready, run)
	ss.expCmdSN++
	for {
		next, ok := ss.pending[ss.expCmdSN]
		if !ok {
			break
		}
		delete(ss.pending, ss.expCmdSN)
		ready = append(ready, next)
		ss.expCmdSN++
	}
	ss.mu.Unlock()
	for _, f := range ready {
		f()
	}
	return true
}

func (ss *session) info() SessionInfo {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	si := SessionInfo{Initiator: ss.initiator, ISID: ss.isid, TSIH: ss.tsih, Created: ss.created}
	if ss.target != nil {
		si.Target = ss.target.Name
	}
	for c := range ss.conns {
		si.Conns = append(si.Conns, ConnInfo{CID: c.cid, Remote: c.nc.RemoteAddr().String(), Local: c.nc.LocalAddr().String()})
	}
	slices.SortFunc(si.Conns, func(a, b ConnInfo) int { return int(a.CID) - int(b.CID) })
	return si
}

// allConns returns the session's connections.
func (ss *session) allConns() []*conn {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	out := make([]*conn, 0, len(ss.conns))
	for c := range ss.conns {
		out = append(out, c)
	}
	return out
}

// removeConn detaches c; the last connection to go ends the session,
// which frees what the nexus held (RESERVE(6)).
func (ss *session) removeConn(c *conn) {
	ss.mu.Lock()
	delete(ss.conns, c)
	last := len(ss.conns) == 0 && !ss.gone
	if last {
		ss.gone = true
	}
	ss.mu.Unlock()
	if !last {
		return
	}
	s := ss.srv
	s.mu.Lock()
	if s.sessions[ss.key] == ss {
		delete(s.sessions, ss.key)
	}
	s.mu.Unlock()
	if ss.target != nil {
		for _, lu := range ss.target.LUs {
			lu.NexusGone(ss.nexus)
		}
	}
	s.log.Info("iscsi session ended", "initiator", ss.initiator, "isid", ss.isid, "tsih", ss.tsih)
}

// abortTasks aborts the session's tasks that match.
func (ss *session) abortTasks(match func(*task) bool) {
	for _, c := range ss.allConns() {
		c.abortTasks(match)
	}
}

func (ss *session) findTask(itt uint32) *task {
	for _, c := range ss.allConns() {
		c.mu.Lock()
		t := c.tasks[itt]
		c.mu.Unlock()
		if t != nil {
			return t
		}
	}
	return nil
}

func sessionKey(initiator, isid string) string { return fmt.Sprintf("%s,i,0x%s", initiator, isid) }
