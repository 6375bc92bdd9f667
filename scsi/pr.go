package scsi

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"sort"

	"keel/node"
)

// Persistent reservation types (SPC-4 table 191).
const (
	prWriteExclusive       = 1
	prExclusiveAccess      = 3
	prWriteExclusiveRO     = 5
	prExclusiveAccessRO    = 6
	prWriteExclusiveAllReg = 7
	prExclusiveAccessAll   = 8
)

// PERSISTENT RESERVE OUT service actions.
const (
	proRegister       = 0
	proReserve        = 1
	proRelease        = 2
	proClear          = 3
	proPreempt        = 4
	proPreemptAbort   = 5
	proRegisterIgnore = 6
)

// prRegistration is one registered I_T nexus.
type prRegistration struct {
	Key           uint64 `json:"key"`
	InitiatorPort string `json:"initiator_port"`
	TargetPort    string `json:"target_port"`
	RelTargetPort uint16 `json:"rel_target_port"`
}

// prState is the persistent reservation state of a logical unit. It is
// saved after every change, so registrations and the reservation survive
// a target restart (keel behaves as if APTPL were always set: a
// restarted target is not a power loss of a replicated volume).
type prState struct {
	Generation uint32                     `json:"generation"`
	Regs       map[string]*prRegistration `json:"registrations"`
	Holder     string                     `json:"holder"` // nexus id, "" when not reserved
	Type       byte                       `json:"type"`
	APTPL      bool                       `json:"aptpl"`
}

// PRStore keeps a logical unit's persistent reservations.
type PRStore interface {
	Load() ([]byte, error) // nil, nil when nothing was saved
	Save([]byte) error
}

// FilePRStore keeps persistent reservations in a JSON file written
// atomically.
type FilePRStore string

func (f FilePRStore) Load() ([]byte, error) {
	b, err := os.ReadFile(string(f))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	return b, err
}

func (f FilePRStore) Save(b []byte) error { return node.WriteFileAtomic(string(f), b, 0o600) }

func loadPR(s PRStore) (*prState, error) {
	pr := &prState{Regs: map[string]*prRegistration{}}
	if s == nil {
		return pr, nil
	}
	b, err := s.Load()
	if err != nil || b == nil {
		return pr, err
	}
	if err := json.Unmarshal(b, pr); err != nil {
		return nil, err
	}
	if pr.Regs == nil {
		pr.Regs = map[string]*prRegistration{}
	}
	return pr, nil
}

// savePR persists the state; caller holds mu.
func (lu *LU) savePR() error {
	if lu.store == nil {
		return nil
	}
	b, err := json.Marshal(lu.pr)
	if err != nil {
		return err
	}
	return lu.store.Save(b)
}

func allRegistrants(t byte) bool { return t == prWriteExclusiveAllReg || t == prExclusiveAccessAll }

// isHolder reports whether nexus id holds the persistent reservation.
func (pr *prState) isHolder(id string) bool {
	if pr.Holder == "" {
		return false
	}
	if allRegistrants(pr.Type) {
		return pr.Regs[id] != nil
	}
	return pr.Holder == id
}

// conflicts applies RESERVE(6) and persistent reservation access rules
// (SPC-4 5.12.1, table 186). Caller holds mu.
func (lu *LU) conflicts(c CDB, id string) bool {
	switch c.Opcode {
	case opInquiry, opReportLUNs, opRequestSense, opPRIn, opMaintenanceIn:
		return false
	}
	if lu.reserve6 != "" && lu.reserve6 != id {
		switch c.Opcode {
		case opRelease6, opPROut:
			return false
		}
		return true
	}
	if c.Opcode == opReserve6 || c.Opcode == opRelease6 {
		return len(lu.pr.Regs) > 0 || lu.pr.Holder != ""
	}
	pr := lu.pr
	if pr.Holder == "" || pr.isHolder(id) || c.Opcode == opPROut {
		return false
	}
	registered := pr.Regs[id] != nil
	exclusive := pr.Type == prExclusiveAccess || pr.Type == prExclusiveAccessRO || pr.Type == prExclusiveAccessAll
	if registered && pr.Type != prWriteExclusive && pr.Type != prExclusiveAccess {
		return false
	}
	switch c.Opcode {
	case opTestUnitReady, opReadCapacity10, opServiceActionIn16, opModeSense6, opModeSense10, opStartStopUnit:
		return false
	case opRead6, opRead10, opRead12, opRead16, opVerify10, opVerify12, opVerify16, opPrefetch10, opPrefetch16:
		return exclusive
	}
	return true
}

func (lu *LU) prIn(cdb []byte, c CDB, resp *Response) error {
	lu.mu.Lock()
	defer lu.mu.Unlock()
	pr := lu.pr
	alloc := c.Length
	var d []byte
	switch c.ServiceAction {
	case 0: // READ KEYS
		d = make([]byte, 8)
		put32(d, pr.Generation)
		for _, id := range pr.sortedIDs() {
			k := make([]byte, 8)
			put64(k, pr.Regs[id].Key)
			d = append(d, k...)
		}
		put32(d[4:], uint32(len(d)-8))
	case 1: // READ RESERVATION
		d = make([]byte, 8)
		put32(d, pr.Generation)
		if pr.Holder != "" {
			r := make([]byte, 16)
			if !allRegistrants(pr.Type) {
				if reg := pr.Regs[pr.Holder]; reg != nil {
					put64(r, reg.Key)
				}
			}
			r[13] = pr.Type & 0x0f
			d = append(d, r...)
		}
		put32(d[4:], uint32(len(d)-8))
	case 2: // REPORT CAPABILITIES
		d = make([]byte, 8)
		put16(d, 8)
		d[2] = 0x01 // PTPL_C
		d[3] = 0x80 // TMV
		if pr.APTPL {
			d[3] |= 0x01
		}
		d[4] = 0x80 | 0x40 | 0x20 | 0x08 | 0x02 // WR_EX_AR, EX_AC_RO, WR_EX_RO, EX_AC, WR_EX
		d[5] = 0x01                             // EX_AC_AR
	case 3: // READ FULL STATUS
		d = make([]byte, 8)
		put32(d, pr.Generation)
		for _, id := range pr.sortedIDs() {
			reg := pr.Regs[id]
			tid := transportID(reg.InitiatorPort)
			e := make([]byte, 24, 24+len(tid))
			put64(e, reg.Key)
			if pr.isHolder(id) {
				e[12] = 0x01
				e[13] = pr.Type & 0x0f
			}
			put16(e[18:], reg.RelTargetPort)
			put32(e[20:], uint32(len(tid)))
			d = append(append(d, e...), tid...)
		}
		put32(d[4:], uint32(len(d)-8))
	default:
		return invalidCDB(1)
	}
	resp.Data = truncate(d, alloc)
	return nil
}

// transportID is an iSCSI TransportID with ISID (SPC-4 7.6.4.6,
// format 01b) for an initiator port "<name>,i,0x<isid>".
func transportID(port string) []byte {
	name := append([]byte(port), 0)
	for len(name)%4 != 0 {
		name = append(name, 0)
	}
	t := []byte{0x45, 0, 0, 0}
	put16(t[2:], uint16(len(name)))
	return append(t, name...)
}

func (pr *prState) sortedIDs() []string {
	ids := make([]string, 0, len(pr.Regs))
	for id := range pr.Regs {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids
}

func (lu *LU) prOut(n Nexus, cdb []byte, c CDB, data []byte) error {
	sa := c.ServiceAction
	scope, typ := cdb[2]>>4, cdb[2]&0x0f
	if sa > proRegisterIgnore {
		return invalidCDB(1)
	}
	if c.Length != 24 || len(data) < 24 {
		if c.Length < 24 || data == nil {
			return errParamLength
		}
		return invalidParam(20) // SPEC_I_PT parameter lists are not supported
	}
	key, saKey := get64(data), get64(data[8:])
	flags := data[20]
	if flags&0x08 != 0 { // SPEC_I_PT
		return invalidParam(20)
	}
	if flags&0x04 != 0 { // ALL_TG_PT
		return invalidParam(20)
	}
	aptpl := flags&0x01 != 0
	needType := sa == proReserve || sa == proRelease || sa == proPreempt || sa == proPreemptAbort
	if needType {
		if scope != 0 {
			return invalidCDB(2)
		}
		switch typ {
		case prWriteExclusive, prExclusiveAccess, prWriteExclusiveRO, prExclusiveAccessRO, prWriteExclusiveAllReg, prExclusiveAccessAll:
		default:
			return invalidCDB(2)
		}
	}
	id := n.ID()
	lu.mu.Lock()
	defer lu.mu.Unlock()
	pr := lu.pr
	reg := pr.Regs[id]
	if sa != proRegisterIgnore && sa != proRegister && (reg == nil || reg.Key != key) {
		return errConflict
	}
	changed := true
	switch sa {
	case proRegister, proRegisterIgnore:
		if sa == proRegister && ((reg == nil && key != 0) || (reg != nil && reg.Key != key)) {
			return errConflict
		}
		switch {
		case saKey == 0 && reg == nil:
			changed = false
		case saKey == 0:
			lu.unregister(id)
		case reg == nil:
			pr.Regs[id] = &prRegistration{Key: saKey, InitiatorPort: n.InitiatorPort, TargetPort: n.TargetPort, RelTargetPort: n.RelTargetPort}
		default:
			reg.Key = saKey
		}
		if changed {
			pr.Generation++
			pr.APTPL = aptpl
		}
	case proReserve:
		if pr.Holder != "" {
			if !pr.isHolder(id) {
				return errConflict
			}
			if pr.Type != typ {
				return errConflict
			}
			return nil
		}
		pr.Holder, pr.Type = id, typ
	case proRelease:
		if pr.Holder == "" || !pr.isHolder(id) {
			return nil
		}
		if pr.Type != typ {
			return checkCondition(KeyIllegalRequest, 0x2604) // invalid release of persistent reservation
		}
		t := pr.Type
		pr.Holder, pr.Type = "", 0
		if t != prWriteExclusive && t != prExclusiveAccess {
			lu.uaRegistrants(ascReservationsReleased, id)
		}
	case proClear:
		lu.uaRegistrants(ascReservationsPreempted, id)
		pr.Regs = map[string]*prRegistration{}
		pr.Holder, pr.Type = "", 0
		pr.Generation++
	case proPreempt, proPreemptAbort:
		if err := lu.preempt(id, saKey, typ); err != nil {
			return err
		}
		pr.Generation++
	}
	if changed {
		if err := lu.savePR(); err != nil {
			return checkCondition(KeyHardwareError, ascInsufficientRegRes)
		}
	}
	return nil
}

// unregister removes a registration, releasing the reservation when the
// nexus held it (or was the last registrant of an all-registrants one).
func (lu *LU) unregister(id string) {
	pr := lu.pr
	delete(pr.Regs, id)
	if pr.Holder == "" {
		return
	}
	if allRegistrants(pr.Type) {
		if len(pr.Regs) == 0 {
			pr.Holder, pr.Type = "", 0
		} else if pr.Holder == id {
			for other := range pr.Regs {
				pr.Holder = other
				break
			}
		}
		return
	}
	if pr.Holder == id {
		t := pr.Type
		pr.Holder, pr.Type = "", 0
		if t == prWriteExclusiveRO || t == prExclusiveAccessRO {
			lu.uaRegistrants(ascReservationsReleased, id)
		}
	}
}

func (lu *LU) uaRegistrants(asc uint16, skip string) {
	for other := range lu.pr.Regs {
		if other != skip {
			lu.ua[other] = append(lu.ua[other], asc)
		}
	}
}

func (lu *LU) preempt(id string, saKey uint64, typ byte) error {
	pr := lu.pr
	removeKey := func(k uint64) bool {
		found := false
		for other, r := range pr.Regs {
			if r.Key == k && other != id {
				delete(pr.Regs, other)
				lu.ua[other] = append(lu.ua[other], ascRegistrationsPreempted)
				found = true
			}
		}
		return found
	}
	if pr.Holder != "" && allRegistrants(pr.Type) {
		if saKey == 0 {
			for other := range pr.Regs {
				if other != id {
					delete(pr.Regs, other)
					lu.ua[other] = append(lu.ua[other], ascRegistrationsPreempted)
				}
			}
			pr.Holder, pr.Type = id, typ
			return nil
		}
		if !removeKey(saKey) {
			return errConflict
		}
		return nil
	}
	if pr.Holder == "" || pr.Regs[pr.Holder] == nil || pr.Regs[pr.Holder].Key != saKey {
		if saKey == 0 {
			return invalidParam(8)
		}
		if !removeKey(saKey) {
			return errConflict
		}
		return nil
	}
	removeKey(saKey)
	if pr.Holder != id && pr.Type != typ {
		lu.uaRegistrants(ascReservationsReleased, id)
	}
	pr.Holder, pr.Type = id, typ
	return nil
}

// String describes the reservation state for logs.
func (pr *prState) String() string {
	return fmt.Sprintf("generation %d, %d registrations, holder %q type %d", pr.Generation, len(pr.Regs), pr.Holder, pr.Type)
}
