package mgmt_test

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"keel/internal/testbin"
	"keel/mgmt"
)

// TestCLI drives the keel CLI against one real keel_mgmt process.
func TestCLI(t *testing.T) {
	os.Setenv("KEEL_TEST_BIN", testbin.Keel(t))
	p := newProc(t, t.TempDir(), 1)
	p.run(t, "cluster", "init", "--name", "cli", "--location", "here")
	p.start(t)
	b, _ := os.ReadFile(filepath.Join(p.dir, "token"))
	c := p.client(t, strings.TrimSpace(string(b)))
	ctx := context.Background()
	waitFor(t, "leader", 20*time.Second, func() error {
		st, err := clusterStatus(ctx, c)
		if err == nil && (st.Leader == "" || st.ClusterID == "") {
			err = errors.New("not ready")
		}
		return err
	})
	for d := 1; d <= 3; d++ {
		if _, err := c.Post(ctx, "DiskRegister", map[string]any{"id": 10 + d, "serverId": d, "size": 1 << 40, "freeBytes": 1 << 40}, nil); err != nil {
			t.Fatal(err)
		}
	}
	run := func(wantCode int, args ...string) string {
		t.Helper()
		out, err := keelCmd(p, args...).CombinedOutput()
		code := 0
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		if code != wantCode {
			t.Fatalf("keel %v: exit %d, want %d:\n%s", args, code, wantCode, out)
		}
		return string(out)
	}
	if out := run(0, "cluster", "status"); !strings.Contains(out, "leader") || !strings.Contains(out, "cluster cli") {
		t.Errorf("cluster status:\n%s", out)
	}
	run(0, "placement-group", "update", "all3", "--add", "11,12,13")
	run(0, "template", "create", "r3", "--replication", "3", "--place-all", "all3", "--place-tail", "all3")
	if out := run(0, "volume", "create", "vm1", "--size", "10G", "-t", "r3", "--tag", "app=db"); !strings.Contains(out, "volume vm1 created") {
		t.Errorf("volume create:\n%s", out)
	}
	if out := run(0, "volume", "list"); !strings.Contains(out, "vm1") || !strings.Contains(out, "10 GiB") {
		t.Errorf("volume list:\n%s", out)
	}
	var list []mgmt.VolumeSummary
	if err := json.Unmarshal([]byte(run(0, "volume", "list", "--json")), &list); err != nil || len(list) != 1 || list[0].Size != 10<<30 || list[0].Tags["app"] != "db" {
		t.Errorf("volume list --json: %+v %v", list, err)
	}
	run(0, "snapshot", "create", "vm1", "vm1@a")
	if out := run(0, "snapshot", "list"); !strings.Contains(out, "vm1@a") {
		t.Errorf("snapshot list:\n%s", out)
	}
	run(0, "attach", "volume", "vm1", "--client", "5")
	if out := run(0, "volume", "describe", "vm1"); !strings.Contains(out, "fencing token") || !strings.Contains(out, "1") {
		t.Errorf("describe:\n%s", out)
	}
	run(1, "volume", "delete", "vm1", "--confirm", "vm1") // attached
	run(0, "detach", "volume", "vm1", "--all")
	run(2, "volume", "delete", "vm1", "--confirm", "vm2")
	run(0, "volume", "delete", "vm1", "--confirm", "vm1")
	if out := run(0, "disk", "list"); !strings.Contains(out, "11") || !strings.Contains(out, "up") {
		t.Errorf("disk list:\n%s", out)
	}
	run(0, "disk", "set-description", "11", "bay 1")
	run(1, "disk", "forget", "11") // up: refused
	run(0, "disk", "eject", "11")
	run(0, "disk", "forget", "11")
	run(0, "kv", "set", "k", "v")
	if out := run(0, "kv", "get", "k"); strings.TrimSpace(out) != "v" {
		t.Errorf("kv get: %q", out)
	}
	run(1, "kv", "get", "nokey")
	run(0, "task", "list")
	if out := run(0, "-M", "template", "list"); !strings.Contains(out, "r3") {
		t.Errorf("-M template list:\n%s", out)
	}
	if out := run(0, "cluster", "cmd", "cli", "volume", "list"); !strings.Contains(out, "NAME") {
		t.Errorf("cluster cmd:\n%s", out)
	}
	run(1, "cluster", "cmd", "other", "volume", "list")
}
