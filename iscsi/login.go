package iscsi

import (
	"bytes"
	"crypto/md5"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Login stages (CSG/NSG).
const (
	stageSecurity    = 0
	stageOperational = 1
	stageFull        = 3
)

// Login status class and detail (RFC 7143 11.13.5).
const (
	loginSuccess        = 0x0000
	loginAuthFailed     = 0x0201
	loginForbidden      = 0x0202
	loginNotFound       = 0x0203
	loginMissingParam   = 0x0207
	loginSessionMissing = 0x020a
	loginInitError      = 0x0200
	loginTargetError    = 0x0300
)

// params are the negotiated operational parameters of a connection and
// its session.
type params struct {
	headerDigest, dataDigest bool
	// maxSendData is the initiator's MaxRecvDataSegmentLength: the
	// largest data segment the target may send.
	maxSendData      int
	maxBurst         int
	firstBurst       int
	initialR2T       bool
	immediateData    bool
	maxOutstandingR2 int
	dataPDUInOrder   bool
	dataSeqInOrder   bool
	maxConnections   int
}

func defaultParams() params {
	return params{maxSendData: 8192, maxBurst: 262144, firstBurst: 65536, initialR2T: true,
		immediateData: true, maxOutstandingR2: 1, dataPDUInOrder: true, dataSeqInOrder: true, maxConnections: 1}
}

// Target-side limits declared or offered during negotiation.
const (
	targetMaxRecvData = 262144
	targetMaxBurst    = 1 << 20
	targetFirstBurst  = 262144
	targetMaxConns    = 8
)

// loginState is the state of one connection's login phase.
type loginState struct {
	initiator  string
	targetName string
	discovery  bool
	authDone   bool
	chapID     byte
	chapChal   []byte
	chapAsked  bool
	p          params
	offered    map[string]bool // keys answered already
}

// negotiate answers the operational keys of one login request.
func (ls *loginState) negotiate(kv [][2]string, resp []byte) ([]byte, error) {
	for _, e := range kv {
		k, v := e[0], e[1]
		if ls.offered[k] {
			continue
		}
		var ans string
		switch k {
		case "InitiatorName", "SessionType", "TargetName", "InitiatorAlias", "AuthMethod",
			"CHAP_A", "CHAP_N", "CHAP_R", "CHAP_I", "CHAP_C":
			continue // handled by the security stage
		case "HeaderDigest", "DataDigest":
			ans = "None"
			for _, o := range strings.Split(v, ",") {
				if o == "CRC32C" || o == "None" {
					ans = o
					break
				}
			}
			if k == "HeaderDigest" {
				ls.p.headerDigest = ans == "CRC32C"
			} else {
				ls.p.dataDigest = ans == "CRC32C"
			}
		case "MaxRecvDataSegmentLength":
			n, err := numKey(k, v, 512, 1<<24-1)
			if err != nil {
				return nil, err
			}
			ls.p.maxSendData = n
			resp = appendText(resp, k, strconv.Itoa(targetMaxRecvData))
			ls.offered[k] = true
			continue
		case "MaxBurstLength", "FirstBurstLength", "MaxOutstandingR2T", "MaxConnections":
			n, err := numKey(k, v, 1, 1<<24-1)
			if err != nil {
				return nil, err
			}
			switch k {
			case "MaxBurstLength":
				ls.p.maxBurst = min(n, targetMaxBurst)
				n = ls.p.maxBurst
			case "FirstBurstLength":
				ls.p.firstBurst = min(n, targetFirstBurst)
				n = ls.p.firstBurst
			case "MaxOutstandingR2T":
				ls.p.maxOutstandingR2 = min(n, 8)
				n = ls.p.maxOutstandingR2
			case "MaxConnections":
				ls.p.maxConnections = min(n, targetMaxConns)
				n = ls.p.maxConnections
			}
			ans = strconv.Itoa(n)
		case "InitialR2T":
			ls.p.initialR2T = v != "No"
			ans = yesNo(ls.p.initialR2T)
		case "ImmediateData":
			ls.p.immediateData = v == "Yes"
			ans = yesNo(ls.p.immediateData)
		case "DataPDUInOrder":
			ls.p.dataPDUInOrder = true
			ans = "Yes"
		case "DataSequenceInOrder":
			ls.p.dataSeqInOrder = true
			ans = "Yes"
		case "ErrorRecoveryLevel":
			ans = "0"
		case "DefaultTime2Wait", "DefaultTime2Retain":
			ans = "0"
			if k == "DefaultTime2Retain" {
				ans = "0"
			}
		case "IFMarker", "OFMarker":
			ans = "No"
		default:
			ans = "NotUnderstood"
		}
		ls.offered[k] = true
		resp = appendText(resp, k, ans)
	}
	return resp, nil
}

func yesNo(b bool) string {
	if b {
		return "Yes"
	}
	return "No"
}

func numKey(k, v string, lo, hi int) (int, error) {
	n, err := strconv.Atoi(v)
	if err != nil || n < lo {
		return 0, fmt.Errorf("login key %s=%q: %w", k, v, ErrProtocol)
	}
	return min(n, hi), nil
}

// CHAPSecret holds the CHAP credentials of one initiator. Mutual* set
// mean the target also authenticates itself to the initiator.
type CHAPSecret struct {
	User         string
	Secret       string
	MutualUser   string
	MutualSecret string
}

// chap runs the target side of CHAP (RFC 1994, MD5) over the security
// stage's keys. It returns the answer keys, whether authentication has
// completed, and a login status when it failed.
func (ls *loginState) chap(kv map[string]string, sec *CHAPSecret, resp []byte) ([]byte, bool, uint16) {
	if !ls.chapAsked {
		if a, ok := kv["CHAP_A"]; ok {
			if !containsToken(a, "5") {
				return appendText(resp, "CHAP_A", "Reject"), false, loginAuthFailed
			}
			ls.chapID = randomByte()
			ls.chapChal = make([]byte, 16)
			rand.Read(ls.chapChal)
			ls.chapAsked = true
			resp = appendText(resp, "CHAP_A", "5")
			resp = appendText(resp, "CHAP_I", strconv.Itoa(int(ls.chapID)))
			resp = appendText(resp, "CHAP_C", "0x"+hex.EncodeToString(ls.chapChal))
			return resp, false, loginSuccess
		}
		return resp, false, loginSuccess
	}
	name, r := kv["CHAP_N"], kv["CHAP_R"]
	if name == "" || r == "" {
		return resp, false, loginAuthFailed
	}
	got, err := decodeCHAPBinary(r)
	if err != nil || name != sec.User || !bytes.Equal(got, chapResponse(ls.chapID, sec.Secret, ls.chapChal)) {
		return resp, false, loginAuthFailed
	}
	if ci, ok := kv["CHAP_I"]; ok {
		cc := kv["CHAP_C"]
		if sec.MutualSecret == "" {
			return resp, false, loginAuthFailed
		}
		id, err1 := strconv.Atoi(ci)
		chal, err2 := decodeCHAPBinary(cc)
		if err1 != nil || err2 != nil || id < 0 || id > 255 || len(chal) == 0 || bytes.Equal(chal, ls.chapChal) {
			return resp, false, loginAuthFailed
		}
		resp = appendText(resp, "CHAP_N", sec.MutualUser)
		resp = appendText(resp, "CHAP_R", "0x"+hex.EncodeToString(chapResponse(byte(id), sec.MutualSecret, chal)))
	} else if sec.MutualSecret != "" {
		// The target is configured to prove itself; an initiator that
		// does not ask is refused, so a misconfiguration shows at once.
		return resp, false, loginAuthFailed
	}
	return resp, true, loginSuccess
}

func chapResponse(id byte, secret string, chal []byte) []byte {
	h := md5.New()
	h.Write([]byte{id})
	h.Write([]byte(secret))
	h.Write(chal)
	return h.Sum(nil)
}

func decodeCHAPBinary(s string) ([]byte, error) {
	switch {
	case strings.HasPrefix(s, "0x") || strings.HasPrefix(s, "0X"):
		return hex.DecodeString(s[2:])
	case strings.HasPrefix(s, "0b") || strings.HasPrefix(s, "0B"):
		return base64Decode(s[2:])
	}
	return nil, errors.New("chap: not a binary value")
}

func containsToken(list, tok string) bool {
	for _, t := range strings.Split(list, ",") {
		if t == tok {
			return true
		}
	}
	return false
}

func randomByte() byte {
	var b [1]byte
	rand.Read(b[:])
	return b[0]
}

// isid formats the ISID of a login header.
func isidString(bhs *[bhsLen]byte) string {
	return fmt.Sprintf("%012x", binary.BigEndian.Uint64(append([]byte{0, 0}, bhs[8:14]...)))
}
