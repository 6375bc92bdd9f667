package demo_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"keel/demo"
	"keel/internal/demotest"
	"keel/internal/freeport"
	"keel/internal/testbin"
)

// start runs the demo in dir and checks it has want mgmt voters, each in
// demo.env, with a leader.
func start(t *testing.T, dir string, mgmt, want int) *demo.Cluster {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cl, err := demo.Start(ctx, demo.Options{Dir: dir, Binary: testbin.Keel(t), VolumeSize: 1 << 30, DiskSize: 1 << 30, Mgmt: mgmt, Out: demotest.LogWriter{T: t}})
	if err != nil {
		t.Fatalf("demo.Start (--mgmt %d): %v", mgmt, err)
	}
	env := cl.Env()
	if urls := strings.Split(env["KEEL_API_URL"], ","); len(urls) != want {
		t.Errorf("KEEL_API_URL %q: %d URLs, want %d", env["KEEL_API_URL"], len(urls), want)
	}
	if pids := strings.Fields(env["KEEL_MGMT_PIDS"]); len(pids) != want {
		t.Errorf("KEEL_MGMT_PIDS %q, want %d PIDs", env["KEEL_MGMT_PIDS"], want)
	}
	// Each process schedules on its share of the CPUs (one of four: three
	// servers and the client), unless the caller set GOMAXPROCS.
	wantProcs := "GOMAXPROCS=" + strconv.Itoa(max(1, runtime.NumCPU()/4))
	if v, ok := os.LookupEnv("GOMAXPROCS"); ok {
		wantProcs = "GOMAXPROCS=" + v
	}
	for _, pid := range strings.Fields(env["KEEL_SERVER_PIDS"] + " " + env["KEEL_CLIENT_PIDS"]) {
		environ, err := os.ReadFile("/proc/" + pid + "/environ")
		if err != nil || !slices.Contains(strings.Split(string(environ), "\x00"), wantProcs) {
			t.Errorf("process %s: environment lacks %s (%v)", pid, wantProcs, err)
		}
	}
	var st struct {
		Leader string `json:"leader"`
		Voters []any  `json:"voters"`
	}
	if _, err := cl.API().Get(ctx, "ClusterStatus", nil, &st); err != nil || st.Leader == "" || len(st.Voters) != want {
		t.Errorf("ClusterStatus: leader %q, %d voters (%v); want %d voters", st.Leader, len(st.Voters), err, want)
	}
	return cl
}

// TestDemoMgmtVoters: a demo started with one mgmt voter grows to three
// when run with --mgmt 3, and keeps three when run again without the
// flag; every run stops cleanly.
func TestDemoMgmtVoters(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a demo cluster (real processes)")
	}
	dir := t.TempDir()
	for _, run := range []struct{ mgmt, want int }{{1, 1}, {3, 3}, {0, 3}} {
		cl := start(t, dir, run.mgmt, run.want)
		if err := cl.Stop(); err != nil {
			t.Errorf("stop (--mgmt %d): %v", run.mgmt, err)
		}
		if t.Failed() {
			return
		}
	}
}

// TestDemoInstructionsRun runs every ready-to-paste command the demo
// prints (fio for 2 s instead of 20), in a shell, with keel on the PATH:
// each must succeed.
func TestDemoInstructionsRun(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a demo cluster (real processes)")
	}
	for _, tool := range []string{"qemu-img", "nbdinfo", "nbdcopy", "fio", "iscsi-ls", "iscsi-inq"} {
		testbin.NeedTool(t, tool)
	}
	cl := start(t, t.TempDir(), 1, 1)
	defer func() {
		if err := cl.Stop(); err != nil {
			t.Errorf("stop: %v", err)
		}
	}()
	// The commands are the indented lines that start with a tool's name
	// or KEEL_CONFIG=.
	tools := map[string]bool{"qemu-img": true, "nbdinfo": true, "head": true, "nbdcopy": true, "fio": true, "iscsi-ls": true, "iscsi-inq": true}
	var cmds []string
	for _, line := range strings.Split(cl.Instructions(), "\n") {
		f := strings.Fields(line)
		if strings.HasPrefix(line, "  ") && len(f) > 0 && (tools[f[0]] || strings.HasPrefix(f[0], "KEEL_CONFIG=")) {
			cmds = append(cmds, strings.TrimSpace(line))
		}
	}
	if len(cmds) != 9 {
		t.Fatalf("found %d commands in the instructions, want 9:\n%s", len(cmds), strings.Join(cmds, "\n"))
	}
	binDir := filepath.Dir(testbin.Keel(t))
	work := t.TempDir()
	for _, c := range cmds {
		if strings.HasPrefix(c, "fio ") {
			c += " --runtime=2"
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		cmd := exec.CommandContext(ctx, "sh", "-c", c)
		cmd.Dir = work
		cmd.Env = append(os.Environ(), "PATH="+binDir+":"+os.Getenv("PATH"))
		out, err := cmd.CombinedOutput()
		cancel()
		if err != nil {
			t.Errorf("%s: %v\n%s", c, err, out)
		}
	}
}

// TestDemoNamesAServerThatCannotStart: when a keel_server exits during the
// start (here: its port is taken), demo.Start says which process, quotes
// why and stops the rest, instead of waiting for its disks until it times
// out.
func TestDemoNamesAServerThatCannotStart(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a demo cluster (real processes)")
	}
	free, err := freeport.Take(6)
	if err != nil {
		t.Fatal(err)
	}
	busy, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", free[3]))
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	dir := t.TempDir()
	ports := fmt.Sprintf(`{"api": %d, "raft": %d, "nbd": %d, "servers": [%d, %d, %d]}`, free[0], free[1], free[2], free[3], free[4], free[5])
	if err := os.WriteFile(filepath.Join(dir, "ports.json"), []byte(ports), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cl, err := demo.Start(ctx, demo.Options{Dir: dir, Binary: testbin.Keel(t), VolumeSize: 1 << 30, DiskSize: 1 << 30, Out: demotest.LogWriter{T: t}})
	if err == nil {
		cl.Stop()
		t.Fatal("demo.Start succeeded with node 1's server port taken")
	}
	t.Log(err)
	for _, want := range []string{"keel_server of node 1 exited", "address already in use", filepath.Join(dir, "node1", "log", "server.log")} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not contain %q", err, want)
		}
	}
}
