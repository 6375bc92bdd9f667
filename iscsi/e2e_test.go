package iscsi

// End-to-end tests of keel_iscsi: the real keel binary runs a demo cluster
// (mgmt, three servers, a replication-3 volume exported by keel_iscsi on a
// loopback portal), and libiscsi's tools, qemu-img and raw logins use it.

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"keel/demo"
	"keel/internal/demotest"
	"keel/internal/testbin"
	"keel/mgmt/apiclient"
)

// e2eVolumeSize is 64 MiB: iscsi-test-cu writes the whole LUN in one command
// in some tests, and the target accepts at most 64 MiB of data per command.
const e2eVolumeSize = 64 << 20

func startDemo(t *testing.T) *demo.Cluster {
	return demotest.Start(t, demo.Options{VolumeSize: e2eVolumeSize})
}

// configure applies iSCSIConfig commands and waits until the controller
// polled them (it polls every second).
func configure(t *testing.T, cl *demo.Cluster, cmds ...map[string]any) {
	t.Helper()
	if _, err := cl.API().Post(context.Background(), "iSCSIConfig", map[string]any{"commands": cmds}, nil); err != nil {
		t.Fatalf("iSCSIConfig %v: %v", cmds, err)
	}
	time.Sleep(2500 * time.Millisecond)
}

func cmd(name string, arg map[string]any) map[string]any { return map[string]any{name: arg} }

// rawLogin logs in to target from local (an address of this host) as
// initiator with raw PDUs and returns the connection and the login
// status (class<<8 | detail; 0 is success).
func rawLogin(t *testing.T, local, portal, initiator, target string) (net.Conn, uint16) {
	t.Helper()
	nc, status, err := tryLogin(local, portal, initiator, target)
	if err != nil {
		t.Fatal(err)
	}
	return nc, status
}

func tryLogin(local, portal, initiator, target string) (net.Conn, uint16, error) {
	d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}}
	nc, err := d.Dial("tcp", portal)
	if err != nil {
		return nil, 0, fmt.Errorf("dial %s from %s: %w", portal, local, err)
	}
	login := newPDU(opLoginReq|flagImmediate, 0x80|stageOperational<<2|stageFull, 1)
	login.BHS[8] = 0x80 // ISID type random
	rand.Read(login.BHS[9:14])
	login.Data = appendText(appendText(nil, "InitiatorName", initiator), "TargetName", target)
	if _, err := nc.Write(login.appendTo(nil, false, false)); err != nil {
		nc.Close()
		return nil, 0, err
	}
	nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := ReadPDU(nc, false, false, 1<<20)
	if err != nil {
		nc.Close()
		return nil, 0, fmt.Errorf("login response: %w", err)
	}
	nc.SetReadDeadline(time.Time{})
	return nc, binary.BigEndian.Uint16(resp.BHS[36:]), nil
}

// scsiCommand sends a read-direction command (cdb, expecting up to n
// bytes) with CmdSN cmdSN on a logged-in connection and returns the
// status, the Data-In bytes and the sense data.
func scsiCommand(nc net.Conn, cmdSN uint32, cdb []byte, n int) (status byte, data, sense []byte, err error) {
	flags := byte(0x80)
	if n > 0 {
		flags |= 0x40
	}
	c := newPDU(opSCSICmd, flags, cmdSN+100)
	c.setU32(20, uint32(n))
	c.setU32(24, cmdSN)
	copy(c.BHS[32:48], cdb)
	if _, err := nc.Write(c.appendTo(nil, false, false)); err != nil {
		return 0, nil, nil, err
	}
	nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	defer nc.SetReadDeadline(time.Time{})
	for {
		r, err := ReadPDU(nc, false, false, 1<<20)
		if err != nil {
			return 0, nil, nil, err
		}
		switch r.Opcode() {
		case opDataIn:
			data = append(data, r.Data...)
			if r.BHS[1]&0x01 != 0 { // status carried with the data
				return r.BHS[3], data, nil, nil
			}
		case opSCSIResp:
			if len(r.Data) >= 2 {
				l := int(binary.BigEndian.Uint16(r.Data))
				sense = r.Data[2:min(2+l, len(r.Data))]
			}
			return r.BHS[3], data, sense, nil
		}
	}
}

// scsiWrite sends WRITE(10) of data (whole 4 KiB blocks) at lba as
// immediate data and returns the status and sense.
func scsiWrite(nc net.Conn, cmdSN uint32, lba uint32, data []byte) (byte, []byte, error) {
	cdb := make([]byte, 10)
	cdb[0] = 0x2a
	binary.BigEndian.PutUint32(cdb[2:], lba)
	binary.BigEndian.PutUint16(cdb[7:], uint16(len(data)/4096))
	return scsiOut(nc, cmdSN, cdb, data)
}

// scsiOut sends a write-direction command with its data as immediate data
// and returns the status and sense.
func scsiOut(nc net.Conn, cmdSN uint32, cdb, data []byte) (byte, []byte, error) {
	c := newPDU(opSCSICmd, 0x80|0x20, cmdSN+100)
	c.setU32(20, uint32(len(data)))
	c.setU32(24, cmdSN)
	copy(c.BHS[32:48], cdb)
	c.Data = data
	if _, err := nc.Write(c.appendTo(nil, false, false)); err != nil {
		return 0, nil, err
	}
	nc.SetReadDeadline(time.Now().Add(30 * time.Second))
	defer nc.SetReadDeadline(time.Time{})
	for {
		r, err := ReadPDU(nc, false, false, 1<<20)
		if err != nil {
			return 0, nil, err
		}
		if r.Opcode() == opSCSIResp {
			var sense []byte
			if len(r.Data) >= 2 {
				sense = r.Data[2:min(2+int(binary.BigEndian.Uint16(r.Data)), len(r.Data))]
			}
			return r.BHS[3], sense, nil
		}
	}
}

// testUnitReady sends TEST UNIT READY (CmdSN cmdSN) on a logged-in
// connection and returns the SCSI status.
func testUnitReady(nc net.Conn, cmdSN uint32) (byte, error) {
	c := newPDU(opSCSICmd, 0x80, cmdSN+100)
	c.setU32(24, cmdSN)
	if _, err := nc.Write(c.appendTo(nil, false, false)); err != nil {
		return 0, err
	}
	nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	defer nc.SetReadDeadline(time.Time{})
	for {
		r, err := ReadPDU(nc, false, false, 1<<20)
		if err != nil {
			return 0, err
		}
		if r.Opcode() == opSCSIResp {
			return r.BHS[3], nil
		}
	}
}

func TestVolumeTarget(t *testing.T) {
	ls := testbin.NeedTool(t, "iscsi-ls")
	inq := testbin.NeedTool(t, "iscsi-inq")
	qi := testbin.NeedTool(t, "qemu-img")
	if out, _ := run(t, 10*time.Second, qi, "--help"); !strings.Contains(out, " iscsi ") {
		testbin.NeedTool(t, "/usr/lib/x86_64-linux-gnu/qemu/block-iscsi.so")
	}
	cl := startDemo(t)
	env := cl.Env()
	url, portal, target := env["KEEL_ISCSI_URL"], env["KEEL_ISCSI_PORTAL"], env["KEEL_ISCSI_TARGET"]
	if url != fmt.Sprintf("iscsi://%s/%s/0", portal, target) || env["KEEL_ISCSI_PIDS"] == "" {
		t.Fatalf("demo.env: KEEL_ISCSI_URL %q, portal %q, target %q, pids %q", url, portal, target, env["KEEL_ISCSI_PIDS"])
	}
	iscsiPID, err := strconv.Atoi(env["KEEL_ISCSI_PIDS"])
	if err != nil {
		t.Fatalf("KEEL_ISCSI_PIDS %q: %v", env["KEEL_ISCSI_PIDS"], err)
	}
	b, err := os.ReadFile(filepath.Join(env["KEEL_DEMO_DIR"], "demo.env"))
	if err != nil || !strings.Contains(string(b), "KEEL_ISCSI_URL=\""+url+"\"") {
		t.Fatalf("demo.env lacks KEEL_ISCSI_URL: %v\n%s", err, b)
	}

	t.Run("discovery and inquiry", func(t *testing.T) {
		out, err := run(t, 30*time.Second, ls, "-s", "iscsi://"+portal)
		if err != nil || !strings.Contains(out, "Target:"+target+" Portal:"+portal) || !strings.Contains(out, "Lun:0") {
			t.Fatalf("iscsi-ls: %v\n%s", err, out)
		}
		out, err = run(t, 30*time.Second, inq, url)
		if err != nil || !strings.Contains(out, "Vendor:KEEL") {
			t.Fatalf("iscsi-inq: %v\n%s", err, out)
		}
		// A configured initiator without an export sees nothing.
		configure(t, cl, cmd("createInitiator", map[string]any{"name": "iqn.2026-01.io.keel.test:noexport", "username": "", "secret": ""}))
		out, _ = run(t, 30*time.Second, ls, "-i", "iqn.2026-01.io.keel.test:noexport", "iscsi://"+portal)
		if strings.Contains(out, target) {
			t.Errorf("discovery showed the target to an initiator without an export:\n%s", out)
		}
		if out, err := run(t, 30*time.Second, inq, "-i", "iqn.2026-01.io.keel.test:noexport", url); err == nil {
			t.Errorf("an initiator without an export logged in:\n%s", out)
		}
	})

	t.Run("qemu-img round trip", func(t *testing.T) {
		const size = 48 << 20
		dir := t.TempDir()
		src := filepath.Join(dir, "src.img")
		f, err := os.Create(src)
		if err != nil {
			t.Fatal(err)
		}
		f.Truncate(size)
		for _, off := range []int64{0, 1 << 20, 5<<20 + 4096, 33<<20 - 8192, size - 1<<20} {
			buf := make([]byte, 700<<10)
			rand.Read(buf)
			f.WriteAt(buf[:min(int64(len(buf)), size-off)], off)
		}
		f.Close()
		if out, err := run(t, 120*time.Second, qi, "convert", "-n", "-f", "raw", "-O", "raw", src, url); err != nil {
			t.Fatalf("qemu-img convert to iscsi: %v\n%s", err, out)
		}
		back := filepath.Join(dir, "back.img")
		if out, err := run(t, 120*time.Second, qi, "convert", "-f", "raw", "-O", "raw", url, back); err != nil {
			t.Fatalf("qemu-img convert from iscsi: %v\n%s", err, out)
		}
		// back is the whole volume: src, then zeroes.
		if out, err := run(t, 120*time.Second, qi, "compare", "-f", "raw", "-F", "raw", src, back); err != nil {
			t.Fatalf("qemu-img compare: %v\n%s", err, out)
		}
		if out, err := run(t, 120*time.Second, qi, "compare", "-f", "raw", "-F", "raw", src, url); err != nil {
			t.Fatalf("qemu-img compare with the target: %v\n%s", err, out)
		}
	})

	t.Run("CHAP", func(t *testing.T) {
		const ini = "iqn.2026-01.io.keel.test:chap"
		configure(t, cl,
			cmd("createInitiator", map[string]any{"name": ini, "username": "alice", "secret": "alicesecret12"}),
			cmd("export", map[string]any{"initiator": ini, "portalGroup": demo.ISCSIPortalGroup, "volumeName": demo.ISCSIVolume}))
		base := portal + "/" + target + "/0"
		for _, c := range []struct {
			name, url string
			ok        bool
		}{
			{"right secret", "iscsi://alice%alicesecret12@" + base, true},
			{"wrong secret", "iscsi://alice%wrongsecret1@" + base, false},
			{"no credentials", "iscsi://" + base, false},
		} {
			out, err := run(t, 30*time.Second, inq, "-i", ini, c.url)
			if ok := err == nil && strings.Contains(out, "Vendor:KEEL"); ok != c.ok {
				t.Errorf("%s: login ok=%v, want %v\n%s", c.name, ok, c.ok, out)
			}
		}
	})

	t.Run("network not allowed", func(t *testing.T) {
		// The demo initiators may connect from 127.0.0.1/32 only.
		ini := demo.ISCSIInitiators[0]
		nc, status := rawLogin(t, "127.0.0.2", portal, ini, target)
		nc.Close()
		if status != loginForbidden {
			t.Errorf("login from 127.0.0.2 (allowed 127.0.0.1/32): status 0x%04x, want 0x%04x (forbidden)", status, loginForbidden)
		}
		nc, status = rawLogin(t, "127.0.0.1", portal, ini, target)
		nc.Close()
		if status != loginSuccess {
			t.Errorf("login from 127.0.0.1: status 0x%04x, want success", status)
		}
	})

	t.Run("sessions, config changes and revocation", func(t *testing.T) {
		const ini = "iqn.2026-01.io.keel.test:held"
		configure(t, cl,
			cmd("createInitiator", map[string]any{"name": ini, "username": "", "secret": ""}),
			cmd("export", map[string]any{"initiator": ini, "portalGroup": demo.ISCSIPortalGroup, "volumeName": demo.ISCSIVolume}))
		held, status := rawLogin(t, "127.0.0.1", portal, ini, target)
		defer held.Close()
		if status != loginSuccess {
			t.Fatalf("login: status 0x%04x", status)
		}
		// iSCSISessionsInfo lists it (the controller reports on its
		// next poll).
		deadline := time.Now().Add(10 * time.Second)
		for {
			var si struct {
				Sessions []apiclient.ISCSISessionInfo `json:"sessions"`
			}
			if _, err := cl.API().Get(context.Background(), "iSCSISessionsInfo", nil, &si); err != nil {
				t.Fatal(err)
			}
			found := false
			for _, s := range si.Sessions {
				found = found || s.Initiator == ini && s.Target == target && s.Status == "ok" && s.TCP != nil && s.TCP.PortalIP == "127.0.0.1"
			}
			if found {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("iSCSISessionsInfo does not list the session of %s: %+v", ini, si.Sessions)
			}
			time.Sleep(200 * time.Millisecond)
		}
		// Other configuration changes leave the session alone.
		configure(t, cl,
			cmd("deleteInitiator", map[string]any{"name": "iqn.2026-01.io.keel.test:noexport"}),
			cmd("createPortalGroup", map[string]any{"name": "other"}))
		if st, err := testUnitReady(held, 0); err != nil || st != 0 {
			t.Fatalf("TEST UNIT READY after an unrelated change: status %d, %v", st, err)
		}
		// Revoking its export closes it.
		configure(t, cl, cmd("exportDelete", map[string]any{"initiator": ini, "portalGroup": demo.ISCSIPortalGroup, "volumeName": demo.ISCSIVolume}))
		if _, err := testUnitReady(held, 1); err == nil {
			t.Fatalf("the session survived the deletion of its export")
		}
	})

	t.Run("CLI", func(t *testing.T) {
		bin := testbin.Keel(t)
		out, err := run(t, 30*time.Second, bin, "--config", env["KEEL_CONFIG"], "iscsi", "show")
		if err != nil || !strings.Contains(out, target) || !strings.Contains(out, "1 "+portal) {
			t.Fatalf("keel iscsi show: %v\n%s", err, out)
		}
		out, err = run(t, 30*time.Second, bin, "--config", env["KEEL_CONFIG"], "iscsi", "sessions")
		if err != nil || !strings.Contains(out, "CONTROLLER") {
			t.Fatalf("keel iscsi sessions: %v\n%s", err, out)
		}
		// The logins above were tracked in node 1's state.
		state := filepath.Join(env["KEEL_DEMO_DIR"], "node1", "state")
		out, err = run(t, 30*time.Second, bin, "--config", env["KEEL_CONFIG"], "--state-dir", state, "iscsi", "seen")
		if err != nil || !strings.Contains(out, demo.ISCSIInitiators[1]) || !strings.Contains(out, "127.0.0.1") {
			t.Fatalf("keel iscsi seen: %v\n%s", err, out)
		}
		if strings.Contains(out, "iqn.2026-01.io.keel.test:held") {
			t.Errorf("keel iscsi seen still lists an initiator whose export was deleted:\n%s", out)
		}
	})

	t.Run("resize raises a unit attention", func(t *testing.T) {
		nc, status := rawLogin(t, "127.0.0.1", portal, demo.ISCSIInitiators[0], target)
		defer nc.Close()
		if status != loginSuccess {
			t.Fatalf("login: status 0x%04x", status)
		}
		readCap := []byte{0x9e, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 32, 0, 0} // READ CAPACITY(16)
		st, data, _, err := scsiCommand(nc, 0, readCap, 32)
		if err != nil || st != 0 || len(data) < 12 {
			t.Fatalf("READ CAPACITY(16): status %d, %d bytes, %v", st, len(data), err)
		}
		blocks := binary.BigEndian.Uint64(data) + 1
		if bs := binary.BigEndian.Uint32(data[8:]); bs != 4096 || blocks*4096 != e2eVolumeSize {
			t.Fatalf("capacity %d blocks of %d bytes, want %d bytes in 4 KiB blocks", blocks, bs, e2eVolumeSize)
		}
		if _, err := cl.API().Post(context.Background(), "VolumeUpdate/"+demo.ISCSIVolume, map[string]any{"sizeAdd": 32 << 20}, nil); err != nil {
			t.Fatal(err)
		}
		time.Sleep(2500 * time.Millisecond)                          // the controller's poll
		st, _, sense, err := scsiCommand(nc, 1, make([]byte, 16), 0) // TEST UNIT READY
		if err != nil || st != 2 || len(sense) < 14 || sense[2]&0x0f != 6 || sense[12] != 0x2a || sense[13] != 0x09 {
			t.Fatalf("TEST UNIT READY after a resize: status %d sense % x (%v), want CHECK CONDITION, UNIT ATTENTION 2A/09", st, sense, err)
		}
		st, data, _, err = scsiCommand(nc, 2, readCap, 32)
		if err != nil || st != 0 || (binary.BigEndian.Uint64(data)+1)*4096 != e2eVolumeSize+32<<20 {
			t.Fatalf("READ CAPACITY(16) after the resize: status %d, % x, %v", st, data, err)
		}
	})

	t.Run("export refused while attached elsewhere", func(t *testing.T) {
		_, err := cl.API().Post(context.Background(), "iSCSIConfig", map[string]any{"commands": []map[string]any{
			cmd("createTarget", map[string]any{"volumeName": "demo"}),
			cmd("export", map[string]any{"initiator": demo.ISCSIInitiators[0], "portalGroup": demo.ISCSIPortalGroup, "volumeName": "demo"})}}, nil)
		if err == nil || !strings.Contains(err.Error(), "objectInUse") {
			t.Fatalf("exporting the NBD-attached demo volume: %v, want objectInUse", err)
		}
	})

	t.Run("persistent reservations survive a controller restart", func(t *testing.T) {
		ini := demo.ISCSIInitiators[0]
		nc, status := rawLogin(t, "127.0.0.1", portal, ini, target)
		if status != loginSuccess {
			t.Fatalf("login: status 0x%04x", status)
		}
		param := make([]byte, 24)
		binary.BigEndian.PutUint64(param[8:], 0x6b65656c)    // service action key
		prOut := []byte{0x5f, 0x00, 0, 0, 0, 0, 0, 0, 24, 0} // PERSISTENT RESERVE OUT, REGISTER
		if st, sense, err := scsiOut(nc, 0, prOut, param); err != nil || st != 0 {
			t.Fatalf("PR OUT REGISTER: status %d sense % x %v", st, sense, err)
		}
		nc.Close()
		if err := cl.Kill("iscsi", 1); err != nil {
			t.Fatal(err)
		}
		pid, err := cl.Restart("iscsi", 1)
		if err != nil {
			t.Fatal(err)
		}
		iscsiPID = pid
		deadline := time.Now().Add(20 * time.Second)
		for {
			nc, status, err = tryLogin("127.0.0.1", portal, ini, target)
			if err == nil && status == loginSuccess {
				break
			}
			if nc != nil {
				nc.Close()
			}
			if time.Now().After(deadline) {
				t.Fatalf("no login after the controller restarted: status 0x%04x %v", status, err)
			}
			time.Sleep(200 * time.Millisecond)
		}
		defer nc.Close()
		prIn := []byte{0x5e, 0x00, 0, 0, 0, 0, 0, 0, 64, 0} // PERSISTENT RESERVE IN, READ KEYS
		st, data, _, err := scsiCommand(nc, 0, prIn, 64)
		if err != nil || st != 0 || len(data) < 16 || binary.BigEndian.Uint32(data[4:]) != 8 || binary.BigEndian.Uint64(data[8:]) != 0x6b65656c {
			t.Fatalf("READ KEYS after the restart: status %d data % x %v, want the key registered before", st, data, err)
		}
		// The new process's writes must win over the old one's (block 0
		// was written before the restart by the qemu-img round trip): it
		// runs under a new fencing token, so its versions rank higher.
		w := bytes.Repeat([]byte{0x5a}, 4096)
		if st, sense, err := scsiWrite(nc, 1, 0, w); err != nil || st != 0 {
			t.Fatalf("WRITE after the restart: status %d sense % x %v", st, sense, err)
		}
		read10 := []byte{0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0}
		if st, data, _, err := scsiCommand(nc, 2, read10, 4096); err != nil || st != 0 || !bytes.Equal(data, w) {
			t.Fatalf("READ after a WRITE after the restart: status %d, %v, the write was lost: %v", st, err, !bytes.Equal(data, w))
		}
	})

	// Last: it takes the volume away from the controller.
	t.Run("fenced by a forced attach elsewhere", func(t *testing.T) {
		qio := testbin.NeedTool(t, "qemu-io")
		ctx := context.Background()
		nc, status := rawLogin(t, "127.0.0.1", portal, demo.ISCSIInitiators[0], target)
		defer nc.Close()
		if status != loginSuccess {
			t.Fatalf("login: status 0x%04x", status)
		}
		a := bytes.Repeat([]byte{0xaa}, 4096)
		if st, sense, err := scsiWrite(nc, 0, 0, a); err != nil || st != 0 {
			t.Fatalf("WRITE before the takeover: status %d sense % x %v", st, sense, err)
		}
		// The controller is frozen (as if partitioned) while the NBD
		// client (node 1) takes the volume by force and writes to the
		// same object, so its servers know the new fencing token.
		pid := iscsiPID
		if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
			t.Fatal(err)
		}
		defer syscall.Kill(pid, syscall.SIGCONT)
		if _, err := cl.API().Post(ctx, "VolumesReassignWait", map[string]any{"reassign": []map[string]any{
			{"volume": demo.ISCSIVolume, "rw": []int{1}, "force": true}}, "attachTimeout": 20}, nil); err != nil {
			t.Fatal(err)
		}
		nbdURI := strings.TrimSuffix(env["KEEL_NBD_URI"], "/"+env["KEEL_VOLUME"]) + "/" + demo.ISCSIVolume
		if out, err := run(t, 30*time.Second, qio, "-f", "raw", "-c", "write -P 0xcc 32k 4k", nbdURI); err != nil {
			t.Fatalf("qemu-io write through the new attachment: %v\n%s", err, out)
		}
		// The old holder's write, sent while it is frozen, must not land:
		// refused by the servers (CHECK CONDITION), or its session closed
		// by the controller's next poll.
		done := make(chan struct{})
		var st byte
		var sense []byte
		go func() {
			defer close(done)
			st, sense, err = scsiWrite(nc, 1, 0, bytes.Repeat([]byte{0xbb}, 4096))
		}()
		time.Sleep(200 * time.Millisecond)
		syscall.Kill(pid, syscall.SIGCONT)
		<-done
		if err == nil && st == 0 {
			t.Errorf("a write through the fenced controller succeeded")
		}
		t.Logf("write through the fenced controller: status %d sense % x err %v", st, sense, err)
		out, err := run(t, 30*time.Second, qio, "-f", "raw", "-c", "read -P 0xaa 0 4k", "-c", "read -P 0xcc 32k 4k", nbdURI)
		if err != nil || strings.Contains(out, "Pattern verification failed") {
			t.Fatalf("the volume after the takeover: %v\n%s", err, out)
		}
	})
}
