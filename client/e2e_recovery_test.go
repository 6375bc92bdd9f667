package client_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"keel/demo"
	"keel/internal/testbin"
	"keel/mgmt/apiclient"
	"keel/wire"
)

// TestE2ERecoveryCopiesWhatChanged: a quarter of the volume is written,
// one server is stopped, 1 % of the volume's blocks are written while it
// is down (and a snapshot taken, and 0.25 % more written after it), and it
// is started again (its recovery rate limited, so that
// the task is seen making progress). Its disks come back up; keel task
// list --wait follows the tasks to the end; the bytes recovery copied are
// close to the bytes that changed, not the volume size; and every object
// read from the recovered disks alone, over the wire protocol, holds what
// was written.
func TestE2ERecoveryCopiesWhatChanged(t *testing.T) {
	cl := startDemo(t)
	env := cl.Env()
	api := cl.API()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	nbd, err := dialNBD("unix:"+env["KEEL_NBD_SOCKET"], env["KEEL_VOLUME"])
	if err != nil {
		t.Fatal(err)
	}
	defer nbd.Close()
	model := make([]byte, e2eVolumeSize)
	r := rand.New(rand.NewPCG(11, 12))
	const prefill = e2eVolumeSize / 4
	for off := 0; off < prefill; off += 1 << 20 {
		fillRandom(r, model[off:off+1<<20])
		if err := nbd.WriteAt(model[off:off+1<<20], int64(off), false); err != nil {
			t.Fatal(err)
		}
	}
	if err := nbd.Flush(); err != nil {
		t.Fatal(err)
	}

	const victim = 2
	if err := cl.Kill("server", victim); err != nil {
		t.Fatal(err)
	}
	waitDisks(t, ctx, cl, 60*time.Second, func(s map[int]string) bool { return s[victim*10+1] == "down" && s[victim*10+2] == "down" })

	// 1 % of the volume's blocks, anywhere in it.
	blocks := e2eVolumeSize / 4096
	changed := map[int]bool{}
	for len(changed) < blocks/100 {
		b := r.IntN(blocks)
		changed[b] = true
		fillRandom(r, model[b*4096:(b+1)*4096])
		if err := nbd.WriteAt(model[b*4096:(b+1)*4096], int64(b)*4096, false); err != nil {
			t.Fatalf("write with server %d down: %v", victim, err)
		}
	}
	if err := nbd.Flush(); err != nil {
		t.Fatal(err)
	}
	// A snapshot while the server is down, then more writes: the volume
	// continues in a fresh layer whose objects have the snapshot's as
	// parents; recovery must create them over their parents.
	// The snapshot reads as model did here: keep the old content of the
	// blocks overwritten from now on rather than a second copy of model.
	snapOld := map[int][]byte{}
	if _, err := api.Post(ctx, "VolumeSnapshot/"+env["KEEL_VOLUME"], map[string]any{"name": "recovery-snap"}, nil); err != nil {
		t.Fatal(err)
	}
	after := 0
	for after < blocks/400 {
		b := r.IntN(blocks)
		if !changed[b] {
			after++
		}
		changed[b] = true
		if _, ok := snapOld[b]; !ok {
			snapOld[b] = bytes.Clone(model[b*4096 : (b+1)*4096])
		}
		fillRandom(r, model[b*4096:(b+1)*4096])
		if err := nbd.WriteAt(model[b*4096:(b+1)*4096], int64(b)*4096, false); err != nil {
			t.Fatalf("write after the snapshot with server %d down: %v", victim, err)
		}
	}
	if err := nbd.Flush(); err != nil {
		t.Fatal(err)
	}
	changedBytes := len(changed) * 4096

	// Slow the recovery down so that its progress shows (a drop-in beside
	// the node's configuration), and start the server again.
	dropIn := filepath.Join(env["KEEL_DEMO_DIR"], fmt.Sprintf("node%d", victim), "keel.d")
	os.MkdirAll(dropIn, 0o755)
	if err := os.WriteFile(filepath.Join(dropIn, "50-recovery-test.toml"), []byte("[server]\nrecovery_rate_mb = 2\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := cl.Restart("server", victim); err != nil {
		t.Fatal(err)
	}
	waitDisks(t, ctx, cl, 30*time.Second, func(s map[int]string) bool {
		return s[victim*10+1] == "recovering" || s[victim*10+2] == "recovering" || (s[victim*10+1] == "up" && s[victim*10+2] == "up")
	})
	cmd := exec.CommandContext(ctx, testbin.Keel(t), "task", "list", "--wait", "--interval", "200ms")
	cmd.Env = append(os.Environ(), "KEEL_CONFIG="+env["KEEL_CONFIG"])
	out, err := cmd.CombinedOutput()
	t.Logf("keel task list --wait:\n%s", out)
	if err != nil {
		t.Fatalf("keel task list --wait: %v", err)
	}
	if !progressShown(string(out)) {
		t.Errorf("keel task list --wait never showed a task part done (n/m objects with 0 < n < m)")
	}
	if !strings.HasSuffix(strings.TrimSpace(string(out)), "no tasks") {
		t.Errorf("keel task list --wait did not end with no tasks")
	}
	states := disks(t, ctx, cl)
	for id, s := range states {
		if s != "up" {
			t.Errorf("disk %d is %q after the recovery, want up", id, s)
		}
	}

	// What recovery copied, as reported to mgmt.
	var copied uint64
	for d := 1; d <= 2; d++ {
		st := recoveryReport(t, ctx, api, victim*10+d)
		t.Logf("disk %d recovery: %v", victim*10+d, st)
		copied += uint64(st["data_bytes"].(float64))
	}
	ratio := float64(copied) / float64(changedBytes)
	t.Logf("recovery copied %d bytes for %d changed (%d blocks): ratio %.3f; volume %d bytes, written %d", copied, changedBytes, len(changed), ratio, e2eVolumeSize, prefill+changedBytes)
	if copied < uint64(changedBytes) || ratio >= 3 {
		t.Errorf("recovery copied %d bytes for %d changed bytes (ratio %.2f), want at least every changed byte and less than 3x", copied, changedBytes, ratio)
	}

	// Every object of the volume and of the snapshot, read from the
	// recovered disks alone (the server reads through the parent chain).
	layout := volumeLayout(t, ctx, api, env)
	if len(layout.Layers) != 2 {
		t.Fatalf("volume layers %v, want its own and the snapshot's", layout.Layers)
	}
	conns := map[uint32]*wire.Client{}
	buf := make([]byte, 1<<20)
	want := make([]byte, len(buf))
	// expected returns what the range at pos reads as, in the volume
	// (model) or in the snapshot (model with the old blocks back).
	expected := func(snapshot bool, pos int64) []byte {
		copy(want, model[pos:pos+int64(len(want))])
		if snapshot {
			for b := range len(want) / 4096 {
				if old, ok := snapOld[int(pos/4096)+b]; ok {
					copy(want[b*4096:], old)
				}
			}
		}
		return want
	}
	for _, c := range []struct {
		what     string
		layers   []uint64
		snapshot bool
	}{{"volume", layout.Layers, false}, {"snapshot", layout.Layers[1:], true}} {
		for i := 0; i < e2eVolumeSize/int(layout.ObjectSize); i++ {
			set := layout.DiskSets[i%len(layout.DiskSets)]
			var d uint32
			for _, x := range set {
				if int(x)/10 == victim {
					d = x
				}
			}
			if d == 0 {
				t.Fatalf("object %d: set %v has no disk of server %d", i, set, victim)
			}
			if conns[d] == nil {
				conns[d] = dialDisk(t, ctx, env, layout.Disks, d)
			}
			for off := int64(0); off < layout.ObjectSize; off += int64(len(buf)) {
				got, err := readLayers(ctx, conns[d], d, c.layers, uint32(i), uint64(off), buf)
				if err != nil {
					t.Fatalf("%s object %d at %d from recovered disk %d: %v", c.what, i, off, d, err)
				}
				pos := int64(i)*layout.ObjectSize + off
				if !bytes.Equal(got, expected(c.snapshot, pos)) {
					t.Fatalf("%s object %d at %d on recovered disk %d differs from what was written", c.what, i, off, d)
				}
			}
		}
	}
}

// readLayers reads len(buf) bytes of object index at off from disk d over
// the wire: from the first layer that has the object (zeroes if none).
func readLayers(ctx context.Context, c *wire.Client, d uint32, layers []uint64, index uint32, off uint64, buf []byte) ([]byte, error) {
	for _, l := range layers {
		resp := wire.Response{Data: buf[:0]}
		err := c.Do(ctx, &wire.Request{Op: wire.OpRead, Disk: d, Volume: l, Index: index, Offset: off, Length: uint32(len(buf))}, &resp)
		if se := (*wire.StatusError)(nil); errors.As(err, &se) && se.Status == wire.StatusNotFound {
			continue
		}
		return resp.Data, err
	}
	clear(buf)
	return buf, nil
}

// fillRandom fills p from r.
func fillRandom(r *rand.Rand, p []byte) {
	for i := 0; i+8 <= len(p); i += 8 {
		v := r.Uint64()
		for k := range 8 {
			p[i+k] = byte(v >> (8 * k))
		}
	}
}

// waitDisks polls DisksList until cond holds.
func waitDisks(t *testing.T, ctx context.Context, cl *demo.Cluster, limit time.Duration, cond func(map[int]string) bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		s := disks(t, ctx, cl)
		if cond(s) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("disk states after %s: %v", limit, s)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// progressShown reports whether a line of keel task list --wait shows a
// task part done.
// allUp is a waitDisks condition: every disk is up (redundancy is back).
func allUp(s map[int]string) bool {
	for _, st := range s {
		if st != "up" {
			return false
		}
	}
	return true
}

func progressShown(out string) bool {
	for _, l := range strings.Split(out, "\n") {
		var d, done, all int
		if _, err := fmt.Sscanf(l, "disk %d: recovery %d/%d objects", &d, &done, &all); err == nil && done > 0 && done < all {
			return true
		}
	}
	return false
}

// recoveryReport returns the stats a disk's last recovery reported to mgmt
// (DiskRecoveryDone, kept in the KV store).
func recoveryReport(t *testing.T, ctx context.Context, api *apiclient.Client, disk int) map[string]any {
	t.Helper()
	var kv struct {
		Value string `json:"value"`
	}
	if _, err := api.Get(ctx, fmt.Sprintf("KVGet/keel.recovery.disk.%d", disk), nil, &kv); err != nil {
		t.Fatalf("disk %d: no recovery report in mgmt: %v", disk, err)
	}
	var rep struct {
		Stats map[string]any `json:"stats"`
	}
	if err := json.Unmarshal([]byte(kv.Value), &rep); err != nil || rep.Stats == nil {
		t.Fatalf("disk %d: recovery report %q: %v", disk, kv.Value, err)
	}
	return rep.Stats
}

// TestE2ERecoveryWhileWriting: fio writes two regions while a server is
// down; the server comes back and recovers (slowly) while fio rewrites the
// first region. Afterwards every disk is up, and with the two other
// servers killed fio verifies both regions from the recovered disks
// alone: the rewritten region holds the writes made during the recovery
// (a copy never undid them), the other one the writes it missed.
func TestE2ERecoveryWhileWriting(t *testing.T) {
	fio := testbin.NeedTool(t, "fio")
	cl := startDemo(t)
	env := cl.Env()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	region := func(off string, seed int, extra ...string) []string {
		return fioArgs(env["KEEL_NBD_URI"], append([]string{"--offset=" + off, "--size=32m", fmt.Sprintf("--randseed=%d", seed)}, extra...)...)
	}
	fioRun := func(what string, args []string) {
		t.Helper()
		b, err := exec.CommandContext(ctx, fio, args...).CombinedOutput()
		if err != nil || strings.Contains(string(b), "verify: bad") {
			t.Fatalf("fio %s: %v\n%s", what, err, b)
		}
		if r := parseFio(t, string(b)); r.Jobs[0].Error != 0 || r.Jobs[0].Read.TotalIOs < (32<<20)/4096 {
			t.Fatalf("fio %s did not verify the whole region: %+v", what, r.Jobs[0])
		}
	}
	const victim = 2
	if err := cl.Kill("server", victim); err != nil {
		t.Fatal(err)
	}
	waitDisks(t, ctx, cl, 60*time.Second, func(s map[int]string) bool { return s[victim*10+1] == "down" && s[victim*10+2] == "down" })
	fioRun("region A while down", region("0", 1))
	fioRun("region B while down", region("32m", 2))

	dropIn := filepath.Join(env["KEEL_DEMO_DIR"], fmt.Sprintf("node%d", victim), "keel.d")
	os.MkdirAll(dropIn, 0o755)
	if err := os.WriteFile(filepath.Join(dropIn, "50-recovery-test.toml"), []byte("[server]\nrecovery_rate_mb = 4\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := cl.Restart("server", victim); err != nil {
		t.Fatal(err)
	}
	// Rewrite region A (paced, so that it overlaps the recovery).
	fioRun("region A during the recovery", region("0", 3, "--rate=4m"))
	waitDisks(t, ctx, cl, 120*time.Second, allUp)
	for d := 1; d <= 2; d++ {
		t.Logf("disk %d recovery: %v", victim*10+d, recoveryReport(t, ctx, cl.API(), victim*10+d))
	}
	for _, n := range []int{1, 3} {
		if err := cl.Kill("server", n); err != nil {
			t.Fatal(err)
		}
	}
	fioRun("verify of region A from the recovered disks", region("0", 3, "--verify_only"))
	fioRun("verify of region B from the recovered disks", region("32m", 2, "--verify_only"))
}

// TestE2ERecoveryAfterEveryServerStopped: every server is killed, mgmt
// marks all disks down, and they are started again. No disk is up to
// recover from: the disks that left the up state last take their data as
// the newest and come up first, the others recover from them, and the
// volume reads back what was written before.
func TestE2ERecoveryAfterEveryServerStopped(t *testing.T) {
	cl := startDemo(t)
	env := cl.Env()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	nbd, err := dialNBD("unix:"+env["KEEL_NBD_SOCKET"], env["KEEL_VOLUME"])
	if err != nil {
		t.Fatal(err)
	}
	defer nbd.Close()
	data := make([]byte, 8<<20)
	fillRandom(rand.New(rand.NewPCG(21, 22)), data)
	for off := 0; off < len(data); off += 1 << 20 {
		if err := nbd.WriteAt(data[off:off+1<<20], int64(96<<20+off), true); err != nil {
			t.Fatal(err)
		}
	}
	for n := 1; n <= 3; n++ {
		if err := cl.Kill("server", n); err != nil {
			t.Fatal(err)
		}
	}
	waitDisks(t, ctx, cl, 60*time.Second, func(s map[int]string) bool {
		for _, st := range s {
			if st != "down" {
				return false
			}
		}
		return true
	})
	for n := 1; n <= 3; n++ {
		if _, err := cl.Restart("server", n); err != nil {
			t.Fatal(err)
		}
	}
	waitDisks(t, ctx, cl, 120*time.Second, allUp)
	got := make([]byte, len(data))
	// The client learns that the disks are up at its next poll of mgmt;
	// until then it has no replica to read from.
	for deadline := time.Now().Add(10 * time.Second); ; {
		err := nbd.ReadAt(got[:1<<20], 96<<20)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no read succeeded within 10s of every disk being up: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	for off := 0; off < len(data); off += 1 << 20 {
		if err := nbd.ReadAt(got[off:off+1<<20], int64(96<<20+off)); err != nil {
			t.Fatal(err)
		}
	}
	if !bytes.Equal(got, data) {
		t.Fatal("after every server was stopped and recovered, the volume reads other data than was written")
	}
	kept := 0
	for n := 1; n <= 3; n++ {
		b, _ := os.ReadFile(filepath.Join(env["KEEL_DEMO_DIR"], fmt.Sprintf("node%d", n), "log", "server.log"))
		kept += strings.Count(string(b), "its data is kept as the newest")
	}
	if kept == 0 {
		t.Error("no server logged that its disk, having left last, kept its data as the newest")
	}
}
