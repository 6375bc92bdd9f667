package server_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"syscall"
	"testing"
	"time"

	"keel/server"
	"keel/wire"
)

// startServer starts keel_server and returns its TCP address and a stop
// function that sends SIGTERM and checks the exit status.
func (n *node) startServer() (string, func()) {
	cmd := exec.Command(n.bin, "server")
	cmd.Env = n.env
	stderr, err := cmd.StderrPipe()
	if err != nil {
		n.t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		n.t.Fatal(err)
	}
	n.pid = cmd.Process.Pid
	exited := make(chan error, 1)
	addrc := make(chan string, 1)
	var logs bytes.Buffer
	go func() {
		re := regexp.MustCompile(`serving the data protocol.*?(127\.0\.0\.1:\d+)`)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			logs.WriteString(sc.Text() + "\n")
			if m := re.FindStringSubmatch(sc.Text()); m != nil {
				addrc <- m[1]
			}
		}
		exited <- cmd.Wait()
	}()
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-exited:
			if err != nil {
				n.t.Errorf("keel_server exited with %v after SIGTERM; log:\n%s", err, logs.String())
			}
		case <-time.After(20 * time.Second):
			cmd.Process.Kill()
			n.t.Errorf("keel_server did not stop on SIGTERM")
		}
	}
	n.t.Cleanup(stop)
	n.kill = func() {
		stopped = true
		cmd.Process.Kill()
		<-exited
	}
	select {
	case a := <-addrc:
		return a, stop
	case err := <-exited:
		n.t.Fatalf("keel_server exited: %v; log:\n%s", err, logs.String())
	case <-time.After(30 * time.Second):
		n.t.Fatalf("keel_server did not start listening; log:\n%s", logs.String())
	}
	return "", nil
}

func TestServerServesAndStopsCleanly(t *testing.T) {
	n := newNode(t)
	disk := n.file("disk1", 256<<20)
	if code, _, errs := n.keel("disk", "init", disk, "--id", "11", "--cluster-id", "loc.sub"); code != 0 {
		t.Fatalf("disk init: %s", errs)
	}
	addr, stop := n.startServer()
	ctx := context.Background()
	self := wire.Peer{NodeID: 4, Role: "client", Name: "test"}
	if _, err := wire.Dial(ctx, "tcp", addr, []byte("not the secret at all"), self); !errors.Is(err, wire.ErrHandshake) {
		t.Fatalf("dial with a wrong secret: %v", err)
	}
	c, err := wire.Dial(ctx, "tcp", addr, n.secret, self)
	if err != nil {
		t.Fatal(err)
	}
	if c.Peer.Name != "n3" || c.Peer.NodeID != 3 {
		t.Fatalf("server peer %+v", c.Peer)
	}
	do := func(req wire.Request) (*wire.Response, error) {
		req.Disk = 11
		var resp wire.Response
		err := c.Do(ctx, &req, &resp)
		return &resp, err
	}
	must := func(resp *wire.Response, err error) *wire.Response {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	data := bytes.Repeat([]byte("keel"), 2048)
	must(do(wire.Request{Op: wire.OpCreate, Volume: 77, Index: 1}))
	must(do(wire.Request{Op: wire.OpWrite, Flags: wire.FlagFUA, Volume: 77, Index: 1, Offset: 4096, Length: 8192, Data: data, Token: 5, Version: 40}))
	if r := must(do(wire.Request{Op: wire.OpRead, Volume: 77, Index: 1, Offset: 4096, Length: 8192})); !bytes.Equal(r.Data, data) {
		t.Fatal("read back other data")
	}
	_, err = do(wire.Request{Op: wire.OpWrite, Volume: 77, Index: 1, Length: 4096, Data: data[:4096], Token: 4})
	var se *wire.StatusError
	if !errors.As(err, &se) || se.Status != wire.StatusFenced {
		t.Fatalf("write with a stale fencing token: %v, want StatusFenced", err)
	}
	if _, err := do(wire.Request{Op: wire.OpRead, Disk: 0, Volume: 78, Length: 4096}); !errors.As(err, &se) || se.Status != wire.StatusNotFound {
		t.Fatalf("read of a missing object: %v", err)
	}
	c.Close()
	stop()

	// After a restart the data, the version and the fencing token remain.
	n.startServer()
	c, err = wire.Dial(ctx, "unix", filepath.Join(n.dir, "server.sock"), n.secret, self)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if r := must(do(wire.Request{Op: wire.OpRead, Volume: 77, Index: 1, Offset: 4096, Length: 8192})); !bytes.Equal(r.Data, data) {
		t.Fatal("data lost across restart")
	}
	r := must(do(wire.Request{Op: wire.OpVersions}))
	vs, err := wire.DecodeVersions(r.Data)
	if err != nil || len(vs) != 1 || vs[0] != (wire.VersionEntry{Volume: 77, Index: 1, Version: 40}) {
		t.Fatalf("versions %+v %v", vs, err)
	}
	if _, err := do(wire.Request{Op: wire.OpWriteZeroes, Volume: 77, Index: 1, Length: 4096, Token: 4}); !errors.As(err, &se) || se.Status != wire.StatusFenced {
		t.Fatalf("stale token after restart: %v, want StatusFenced", err)
	}
	// Bit rot under the running server: flip a byte of the block on the
	// disk file; the read is a checksum error, never the rotten data.
	img, err := os.ReadFile(disk)
	if err != nil {
		t.Fatal(err)
	}
	at := bytes.Index(img, data)
	if at < 0 {
		t.Fatal("written data not found in the disk file")
	}
	f, err := os.OpenFile(disk, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte{img[at+5000] ^ 0x40}, int64(at+5000)); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if r, err := do(wire.Request{Op: wire.OpRead, Volume: 77, Index: 1, Offset: 4096, Length: 8192}); !errors.As(err, &se) || se.Status != wire.StatusChecksum || len(r.Data) == 8192 {
		t.Fatalf("read of a rotten block: %v, want StatusChecksum", err)
	}
	if r := must(do(wire.Request{Op: wire.OpRead, Volume: 77, Index: 1, Offset: 4096, Length: 4096})); !bytes.Equal(r.Data, data[:4096]) {
		t.Fatal("the sound block next to the rotten one does not read back")
	}
	r = must(do(wire.Request{Op: wire.OpStat}))
	var st server.Stats
	if err := json.Unmarshal(r.Data, &st); err != nil || st.Objects != 1 || st.DataBlocks != 2 || st.AUsUsed != 1 {
		t.Fatalf("stat %s: %+v %v", r.Data, st, err)
	}
}

// SIGKILL of the server process: everything flushed (by FUA or FLUSH) is
// intact after a restart; a block written after the last flush reads its
// new content, a checksum error or zeros, nothing else.
func TestServerSurvivesSIGKILL(t *testing.T) {
	n := newNode(t)
	disk := n.file("disk1", 256<<20)
	if code, _, errs := n.keel("disk", "init", disk, "--id", "12", "--cluster-id", "loc.sub"); code != 0 {
		t.Fatalf("disk init: %s", errs)
	}
	n.startServer()
	ctx := context.Background()
	sock := filepath.Join(n.dir, "server.sock")
	self := wire.Peer{Role: "client", Name: "test"}
	c, err := wire.Dial(ctx, "unix", sock, n.secret, self)
	if err != nil {
		t.Fatal(err)
	}
	block := func(i int) []byte { return bytes.Repeat([]byte{byte(i), byte(i >> 8), 0xa5, 0x5a}, 1024) }
	do := func(req wire.Request) (*wire.Response, error) {
		req.Disk = 12
		var resp wire.Response
		err := c.Do(ctx, &req, &resp)
		return &resp, err
	}
	if _, err := do(wire.Request{Op: wire.OpCreate, Volume: 5}); err != nil {
		t.Fatal(err)
	}
	write := func(i int, flags uint8) {
		t.Helper()
		if _, err := do(wire.Request{Op: wire.OpWrite, Flags: flags, Volume: 5, Offset: uint64(i) * 4096, Length: 4096, Data: block(i)}); err != nil {
			t.Fatal(err)
		}
	}
	write(0, wire.FlagFUA)
	for i := 1; i < 64; i++ {
		write(i, 0)
	}
	if _, err := do(wire.Request{Op: wire.OpFlush}); err != nil {
		t.Fatal(err)
	}
	for i := 64; i < 128; i++ {
		write(i, 0)
	}
	n.kill()
	c.Close()

	n.startServer()
	c, err = wire.Dial(ctx, "unix", sock, n.secret, self)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	lost := 0
	for i := 0; i < 128; i++ {
		r, err := do(wire.Request{Op: wire.OpRead, Volume: 5, Offset: uint64(i) * 4096, Length: 4096})
		var se *wire.StatusError
		switch {
		case err == nil && bytes.Equal(r.Data, block(i)):
		case i >= 64 && (errors.As(err, &se) && se.Status == wire.StatusChecksum || err == nil && bytes.Equal(r.Data, make([]byte, 4096))):
			lost++
		default:
			t.Fatalf("block %d after SIGKILL: %v", i, err)
		}
	}
	t.Logf("%d of the 64 blocks written after the last flush were lost", lost)
}
