package scsi

import (
	"os"
	"path/filepath"
	"testing"
)

func mustNewLU(t testing.TB, dir string) (*LU, *FileBackend) {
	t.Helper()
	img := filepath.Join(dir, "lun.img")
	if _, err := os.Stat(img); err != nil {
		if err := os.WriteFile(img, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(img, 8<<20); err != nil {
			t.Fatal(err)
		}
	}
	be, err := OpenFileBackend(img, 512)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { be.Close() })
	lu, err := NewLU(be, LUOptions{Name: "test", Store: FilePRStore(filepath.Join(dir, "pr.json"))})
	if err != nil {
		t.Fatal(err)
	}
	return lu, be
}

var nexusA = Nexus{InitiatorName: "iqn.a", InitiatorPort: "iqn.a,i,0x1", TargetPort: "iqn.t,t,0x1", RelTargetPort: 1}
var nexusB = Nexus{InitiatorName: "iqn.b", InitiatorPort: "iqn.b,i,0x2", TargetPort: "iqn.t,t,0x1", RelTargetPort: 1}

func prOut(sa, typ byte, key, saKey uint64) []byte {
	cdb := make([]byte, 10)
	cdb[0], cdb[1], cdb[2] = opPROut, sa, typ
	put32(cdb[5:], 24)
	return cdb
}

func prParams(key, saKey uint64) []byte {
	d := make([]byte, 24)
	put64(d, key)
	put64(d[8:], saKey)
	return d
}

// TestPersistentReservationsSurviveRestart registers and reserves, opens
// the logical unit again from the same store, and checks that the
// registration and the reservation are still there and still enforced.
func TestPersistentReservationsSurviveRestart(t *testing.T) {
	dir := t.TempDir()
	lu, be := mustNewLU(t, dir)
	for _, c := range []struct {
		n    Nexus
		cdb  []byte
		data []byte
	}{
		{nexusA, prOut(proRegister, 0, 0, 0xabc), prParams(0, 0xabc)},
		{nexusA, prOut(proReserve, prWriteExclusive, 0xabc, 0), prParams(0xabc, 0)},
	} {
		if r := lu.Execute(&Command{Nexus: c.n, CDB: c.cdb, DataOut: c.data}); r.Status != StatusGood {
			t.Fatalf("PR OUT: status 0x%x sense %x", r.Status, r.Sense)
		}
	}
	be.Close()
	lu2, _ := mustNewLU(t, dir)
	readKeys := []byte{opPRIn, 0, 0, 0, 0, 0, 0, 0, 255, 0}
	r := lu2.Execute(&Command{Nexus: nexusB, CDB: readKeys})
	if r.Status != StatusGood || len(r.Data) != 16 || get64(r.Data[8:]) != 0xabc {
		t.Fatalf("READ KEYS after restart: status 0x%x data %x", r.Status, r.Data)
	}
	write := []byte{opWrite10, 0, 0, 0, 0, 0, 0, 0, 1, 0}
	if r := lu2.Execute(&Command{Nexus: nexusB, CDB: write, DataOut: make([]byte, 512)}); r.Status != StatusReservationConflict {
		t.Fatalf("write by a non-holder after restart: status 0x%x, want RESERVATION CONFLICT", r.Status)
	}
	if r := lu2.Execute(&Command{Nexus: nexusA, CDB: write, DataOut: make([]byte, 512)}); r.Status != StatusGood {
		t.Fatalf("write by the holder after restart: status 0x%x", r.Status)
	}
}

func TestUnknownOpcodeAndRange(t *testing.T) {
	lu, _ := mustNewLU(t, t.TempDir())
	cases := []struct {
		name string
		cdb  []byte
		key  byte
		asc  uint16
	}{
		{"unknown opcode", []byte{0xc5, 0, 0, 0, 0, 0}, KeyIllegalRequest, ascInvalidOpcode},
		{"read past end", []byte{opRead10, 0, 0, 0, 0x40, 0, 0, 0, 1, 0}, KeyIllegalRequest, ascLBAOutOfRange},
		{"bad vpd page", []byte{opInquiry, 1, 0x99, 0, 255, 0}, KeyIllegalRequest, ascInvalidFieldCDB},
	}
	for _, c := range cases {
		r := lu.Execute(&Command{Nexus: nexusA, CDB: c.cdb})
		if r.Status != StatusCheckCondition || len(r.Sense) < 14 || r.Sense[2] != c.key || uint16(r.Sense[12])<<8|uint16(r.Sense[13]) != c.asc {
			t.Errorf("%s: status 0x%x sense %x", c.name, r.Status, r.Sense)
		}
	}
}

func FuzzParseCDB(f *testing.F) {
	f.Add([]byte{opRead10, 0, 0, 0, 0, 1, 0, 0, 8, 0})
	f.Add([]byte{opWrite16, 8, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0})
	f.Add([]byte{opRead6, 0x1f, 0xff, 0xff, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := ParseCDB(b)
		if err != nil {
			return
		}
		if c.Size > len(b) || c.Opcode != b[0] {
			t.Fatalf("parsed %d-byte cdb from %d bytes", c.Size, len(b))
		}
	})
}

// FuzzExecute feeds arbitrary CDBs and data to a logical unit: no
// command may panic, and a CHECK CONDITION always carries sense data.
func FuzzExecute(f *testing.F) {
	f.Add([]byte{opModeSelect6, 0x10, 0, 0, 24, 0}, []byte{0, 0, 0, 0, pageCaching, 18, 4})
	f.Add([]byte{opUnmap, 0, 0, 0, 0, 0, 0, 0, 24, 0}, make([]byte, 24))
	f.Add([]byte{opMaintenanceIn, saReportSupportedOps, 1, opRead10, 0, 0, 0, 0, 1, 0, 0, 0}, []byte(nil))
	lu, _ := mustNewLU(f, f.TempDir())
	f.Fuzz(func(t *testing.T, cdb, data []byte) {
		r := lu.Execute(&Command{Nexus: nexusA, CDB: cdb, DataOut: data})
		if r.Status == StatusCheckCondition && len(r.Sense) == 0 {
			t.Fatal("check condition without sense")
		}
	})
}
