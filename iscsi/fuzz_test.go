package iscsi

import (
	"bytes"
	"testing"
)

func FuzzReadPDU(f *testing.F) {
	p := newPDU(opSCSICmd, 0xa1, 5)
	p.Data = []byte("hello")
	f.Add(p.appendTo(nil, false, false), false, false)
	f.Add(p.appendTo(nil, true, true), true, true)
	f.Fuzz(func(t *testing.T, b []byte, hd, dd bool) {
		q, err := ReadPDU(bytes.NewReader(b), hd, dd, targetMaxRecvData)
		if err != nil {
			return
		}
		// What parses re-encodes to the same bytes (up to padding).
		again, err := ReadPDU(bytes.NewReader(q.appendTo(nil, hd, dd)), hd, dd, targetMaxRecvData)
		if err != nil || again.BHS != q.BHS || !bytes.Equal(again.Data, q.Data) || !bytes.Equal(again.AHS, q.AHS) {
			t.Fatalf("round trip: %v", err)
		}
	})
}

func FuzzParseText(f *testing.F) {
	f.Add([]byte("InitiatorName=iqn.x\x00SessionType=Discovery\x00"))
	f.Add([]byte("a=b\x00=\x00\x00c"))
	f.Fuzz(func(t *testing.T, b []byte) {
		kv, err := parseText(b)
		if err != nil {
			return
		}
		var out []byte
		for _, e := range kv {
			out = appendText(out, e[0], e[1])
		}
		kv2, err := parseText(out)
		if err != nil || len(kv2) != len(kv) {
			t.Fatalf("re-parse: %v %d != %d", err, len(kv2), len(kv))
		}
	})
}
