package server_test

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"keel/internal/testbin"
	"keel/server"
)

type node struct {
	t      *testing.T
	bin    string
	dir    string
	env    []string
	secret []byte
	pid    int    // of the last keel_server started
	kill   func() // SIGKILLs it
}

func newNode(t *testing.T) *node {
	dir := t.TempDir()
	secret := []byte("e2e-secret-0123456789abcdef")
	if err := os.WriteFile(filepath.Join(dir, "secret"), []byte(hex.EncodeToString(secret)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := fmt.Sprintf(`[node]
id = 3
name = "n3"
run_dir = %[1]q
[mgmt]
api_url = "http://127.0.0.1:1"
token_file = %[2]q
cluster_secret_file = %[3]q
[server]
listen = "127.0.0.1:0"
socket = %[4]q
`, dir, filepath.Join(dir, "no-token"), filepath.Join(dir, "secret"), filepath.Join(dir, "server.sock"))
	if err := os.WriteFile(filepath.Join(dir, "keel.toml"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	return &node{t: t, bin: testbin.Keel(t), dir: dir, secret: secret,
		env: append(os.Environ(), "KEEL_CONFIG="+filepath.Join(dir, "keel.toml"), "KEEL_STATE_DIR="+filepath.Join(dir, "state"), "KEEL_LOG_LEVEL=info")}
}

// keel runs the CLI and returns its exit code, stdout and stderr.
func (n *node) keel(args ...string) (int, string, string) {
	cmd := exec.Command(n.bin, args...)
	cmd.Env = n.env
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		n.t.Fatal(err)
	}
	return code, out.String(), errb.String()
}

func (n *node) file(name string, size int64) string {
	p := filepath.Join(n.dir, name)
	if err := os.WriteFile(p, nil, 0o600); err != nil {
		n.t.Fatal(err)
	}
	if err := os.Truncate(p, size); err != nil {
		n.t.Fatal(err)
	}
	return p
}

func TestDiskInitAndListLocal(t *testing.T) {
	n := newNode(t)
	disk := n.file("disk1", 256<<20)
	code, out, errs := n.keel("disk", "init", disk, "--id", "5", "--cluster-id", "loc.sub")
	if code != 0 {
		t.Fatalf("disk init: exit %d: %s", code, errs)
	}
	if !strings.Contains(out, "disk 5 initialised") {
		t.Fatalf("disk init said %q", out)
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{disk, "--id", "6", "--cluster-id", "loc.sub"}, "holds keel disk 5 of cluster loc.sub; use --force"},
		{[]string{n.file("small", 40<<20), "--id", "7", "--cluster-id", "loc.sub"}, "device too small"},
		{[]string{filepath.Join(n.dir, "nope"), "--id", "8", "--cluster-id", "loc.sub"}, "no such file or device"},
		{[]string{n.file("disk2", 256<<20), "--id", "9"}, "pass --cluster-id"},
		{[]string{n.file("disk3", 256<<20), "--id", "5", "--cluster-id", "loc.sub"}, "disk id 5 is already"},
	} {
		code, _, errs := n.keel(append([]string{"disk", "init"}, c.args...)...)
		if code != 1 || !strings.Contains(errs, c.want) {
			t.Errorf("disk init %v: exit %d, stderr %q; want exit 1 and %q", c.args, code, errs, c.want)
		}
	}
	if code, _, errs := n.keel("disk", "init", disk, "--id", "6", "--cluster-id", "loc.sub", "--force"); code != 0 {
		t.Fatalf("disk init --force: exit %d: %s", code, errs)
	}
	code, out, errs = n.keel("disk", "list-local", "--json")
	if code != 0 {
		t.Fatalf("list-local: exit %d: %s", code, errs)
	}
	var disks []server.LocalDisk
	if err := json.Unmarshal([]byte(out), &disks); err != nil {
		t.Fatalf("list-local --json: %v: %s", err, out)
	}
	found := false
	for _, d := range disks {
		if d.Path == disk {
			found = d.State == "ok" && d.DiskID == 6 && d.ClusterID == "loc.sub" && d.NodeID == 3 && d.SizeBytes == 256<<20
		}
	}
	if !found {
		t.Fatalf("list-local does not show disk 6 on %s: %+v", disk, disks)
	}
	if code, out, _ := n.keel("disk", "list-local"); code != 0 || !strings.Contains(out, "loc.sub") {
		t.Fatalf("list-local table: exit %d: %s", code, out)
	}
}

// A block device that is mounted is refused with a message naming the
// mount point; unmounted, the same device is initialised.
func TestDiskInitRefusesMountedDevice(t *testing.T) {
	testbin.NeedRoot(t)
	for _, tool := range []string{"losetup", "mkfs.ext4", "unshare", "mount"} {
		testbin.NeedTool(t, tool)
	}
	n := newNode(t)
	img := n.file("blockdev", 96<<20)
	out, err := exec.Command("losetup", "--find", "--show", img).Output()
	if err != nil {
		t.Skipf("no loop device: %v", err) // containers without /dev/loop*
	}
	dev := strings.TrimSpace(string(out))
	t.Cleanup(func() { exec.Command("losetup", "-d", dev).Run() })
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", dev).CombinedOutput(); err != nil {
		t.Fatalf("mkfs: %v: %s", err, out)
	}
	mnt := filepath.Join(n.dir, "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	// The mount lives in a private mount namespace that ends with the
	// shell: nothing is left mounted on the host.
	script := fmt.Sprintf(`mount --make-rprivate / && mount %[1]s %[2]s && %[3]s disk init %[1]s --id 4 --cluster-id c; echo "exit=$?"`, dev, mnt, n.bin)
	cmd := exec.Command("unshare", "--mount", "sh", "-c", script)
	cmd.Env = n.env
	got, _ := cmd.CombinedOutput()
	if !strings.Contains(string(got), "exit=1") || !strings.Contains(string(got), "is mounted on "+mnt) {
		t.Fatalf("disk init of a mounted device: %s", got)
	}
	// Without a mount it is a block device like any other.
	if code, out, errs := n.keel("disk", "init", dev, "--id", "4", "--cluster-id", "c"); code != 0 || !strings.Contains(out, "disk 4 initialised") {
		t.Fatalf("disk init %s: exit %d: %s%s", dev, code, out, errs)
	}
}
