package client_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"keel/demo"
	"keel/internal/testbin"
)

// disks returns DisksList's state of every disk, by disk id.
func disks(t *testing.T, ctx context.Context, cl *demo.Cluster) map[int]string {
	t.Helper()
	var list map[string]struct {
		ID    int    `json:"id"`
		State string `json:"state"`
	}
	if _, err := cl.API().Get(ctx, "DisksList", nil, &list); err != nil {
		t.Fatalf("DisksList: %v", err)
	}
	out := map[int]string{}
	for _, d := range list {
		out[d.ID] = d.State
	}
	return out
}

// TestE2EServerKilledDuringFio: SIGKILL one of three servers while fio
// writes and verifies; fio sees no error and no verify failure (the
// client has mgmt mark the silent disks down and goes on with two
// replicas). Restarted, the server's disks recover and come back up, and
// with the two other servers killed fio verifies the region again from
// the recovered disks alone.
func TestE2EServerKilledDuringFio(t *testing.T) {
	fio := testbin.NeedTool(t, "fio")
	cl := startDemo(t)
	env := cl.Env()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	// Writes at most 6,000 a second: at least four seconds of them, so
	// that the kill lands among them however fast this machine is.
	cmd := exec.CommandContext(ctx, fio, fioArgs(env["KEEL_NBD_URI"], "--size=96m", "--rate_iops=,6000")...)
	cmd.WaitDelay = 5 * time.Second
	out := make(chan []byte, 1)
	errc := make(chan error, 1)
	go func() {
		b, err := cmd.CombinedOutput()
		out <- b
		errc <- err
	}()
	time.Sleep(1500 * time.Millisecond)
	const victim = 2
	if err := cl.Kill("server", victim); err != nil {
		t.Fatal(err)
	}
	t.Logf("SIGKILLed keel_server of node %d during the fio run", victim)
	b, err := <-out, <-errc
	if err != nil {
		t.Fatalf("fio failed after a server was killed: %v\n%s", err, b)
	}
	r := parseFio(t, string(b))
	if r.Jobs[0].Error != 0 || regexp.MustCompile(`verify: bad|verify failed`).Match(b) {
		t.Fatalf("fio reported errors:\n%s", b)
	}
	if r.Jobs[0].Write.TotalIOs < (96<<20)/4096 || r.Jobs[0].Read.TotalIOs < (96<<20)/4096 {
		t.Fatalf("fio did not write and verify the whole region: %+v", r.Jobs[0])
	}
	t.Logf("fio with a server killed: write %.0f IOPS, verify read %.0f IOPS", r.Jobs[0].Write.IOPS, r.Jobs[0].Read.IOPS)

	// The kill must have landed during the I/O: the client asked mgmt to
	// take the silent disks out (mgmt's own liveness check is slower).
	clog, _ := os.ReadFile(filepath.Join(env["KEEL_DEMO_DIR"], "node1", "log", "client.log"))
	if !strings.Contains(string(clog), "asking mgmt to mark a silent disk down") {
		t.Errorf("the client never asked mgmt to mark a disk down; did the kill happen during fio's I/O?")
	}
	states := disks(t, ctx, cl)
	for d := 1; d <= 2; d++ {
		if s := states[victim*10+d]; s == "up" {
			t.Errorf("disk %d of the killed server is %q after the client wrote without it", victim*10+d, s)
		}
	}

	if _, err := cl.Restart("server", victim); err != nil {
		t.Fatal(err)
	}
	// Redundancy is back: the restarted server's disks come back
	// recovering, copy what they missed from their peers, and are up.
	waitDisks(t, ctx, cl, 90*time.Second, allUp)
	for d := 1; d <= 2; d++ {
		t.Logf("disk %d recovery: %v", victim*10+d, recoveryReport(t, ctx, cl.API(), victim*10+d))
	}
	// Its disks alone hold what fio wrote: with the other servers gone,
	// every read is served by them, and fio verifies the region again.
	for _, n := range []int{1, 3} {
		if err := cl.Kill("server", n); err != nil {
			t.Fatal(err)
		}
	}
	b, err = exec.CommandContext(ctx, fio, fioArgs(env["KEEL_NBD_URI"], "--size=96m", "--verify_only")...).CombinedOutput()
	if err != nil || regexp.MustCompile(`verify: bad|verify failed`).Match(b) {
		t.Fatalf("fio verify from the recovered disks alone: %v\n%s", err, b)
	}
	if r := parseFio(t, string(b)); r.Jobs[0].Error != 0 || r.Jobs[0].Read.TotalIOs < (96<<20)/4096 {
		t.Fatalf("fio verify from the recovered disks alone did not read the whole region: %+v", r.Jobs[0])
	}
	t.Logf("fio verified the region from the recovered disks of server %d alone", victim)
}
