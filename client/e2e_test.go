package client_test

// End-to-end tests of the block client: the real keel binary runs a demo
// cluster (mgmt, three servers with two file-backed disks each, a client
// serving a replication-3 volume over NBD), and real NBD clients (nbdinfo,
// nbdcopy, qemu-img, fio, and a minimal Go client) use it.

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"keel/demo"
	"keel/internal/demotest"
	"keel/internal/testbin"
)

const e2eVolumeSize = 1 << 30

// startDemo brings up a demo cluster for the test (internal/demotest).
func startDemo(t *testing.T) *demo.Cluster { return startDemoWith(t, demo.Options{}) }

// startDemoWith is startDemo with options (e.g. three mgmt voters); the
// volume is always e2eVolumeSize.
func startDemoWith(t *testing.T, o demo.Options) *demo.Cluster {
	o.VolumeSize = e2eVolumeSize
	return demotest.Start(t, o)
}

// run runs an external tool with a time limit and returns its combined
// output.
func run(t *testing.T, limit time.Duration, name string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %s: %w\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

func mustRun(t *testing.T, limit time.Duration, name string, args ...string) string {
	t.Helper()
	out, err := run(t, limit, name, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// fioResult is the part of fio's JSON output the tests look at.
type fioResult struct {
	Jobs []struct {
		Error int `json:"error"`
		Read  struct {
			IOPS     float64 `json:"iops"`
			TotalIOs int64   `json:"total_ios"`
		} `json:"read"`
		Write struct {
			IOPS     float64 `json:"iops"`
			TotalIOs int64   `json:"total_ios"`
		} `json:"write"`
	} `json:"jobs"`
}

// fioArgs: fio writes a region with crc32c verify headers and reads it back
// checked (fio's nbd engine, queue depth 16). It returns fio's parsed
// result and its text output (verify failures show up as "verify:" lines
// and a non-zero exit).
func fioArgs(uri string, extra ...string) []string {
	return append([]string{"--name=e2e", "--ioengine=nbd", "--uri=" + uri, "--rw=randwrite", "--bs=4k",
		"--iodepth=16", "--size=64m", "--verify=crc32c", "--verify_fatal=1", "--do_verify=1", "--verify_state_save=0",
		"--output-format=json", "--group_reporting"}, extra...)
}

func parseFio(t *testing.T, out string) fioResult {
	t.Helper()
	var r fioResult
	i := strings.Index(out, "{")
	if i < 0 || json.Unmarshal([]byte(out[i:]), &r) != nil || len(r.Jobs) == 0 {
		t.Fatalf("fio output is not its JSON report:\n%s", out)
	}
	return r
}

// TestE2ENBDClients: every NBD feature is advertised, and nbdcopy,
// qemu-img and fio move data through the replicated volume unchanged.
func TestE2ENBDClients(t *testing.T) {
	nbdinfo := testbin.NeedTool(t, "nbdinfo")
	nbdcopy := testbin.NeedTool(t, "nbdcopy")
	qemuImg := testbin.NeedTool(t, "qemu-img")
	fio := testbin.NeedTool(t, "fio")
	cl := startDemo(t)
	env := cl.Env()

	t.Run("nbdinfo", func(t *testing.T) {
		for _, uri := range []string{env["KEEL_NBD_URI"], env["KEEL_NBD_UNIX_URI"]} {
			out := mustRun(t, 30*time.Second, nbdinfo, "--json", uri)
			var info struct {
				Protocol string           `json:"protocol"`
				Exports  []map[string]any `json:"exports"`
			}
			if err := json.Unmarshal([]byte(out), &info); err != nil || len(info.Exports) != 1 {
				t.Fatalf("nbdinfo --json %s: %v\n%s", uri, err, out)
			}
			if info.Protocol != "newstyle-fixed" {
				t.Errorf("%s: protocol %q, want newstyle-fixed", uri, info.Protocol)
			}
			e := info.Exports[0]
			for _, f := range []string{"can_fua", "can_flush", "can_trim", "can_zero", "can_fast_zero", "can_multi_conn"} {
				if e[f] != true {
					t.Errorf("%s: %s = %v, want true", uri, f, e[f])
				}
			}
			for _, f := range []string{"is_read_only"} {
				if e[f] != false {
					t.Errorf("%s: %s = %v, want false", uri, f, e[f])
				}
			}
			if e["export-size"] != float64(e2eVolumeSize) {
				t.Errorf("%s: export-size %v, want %d", uri, e["export-size"], e2eVolumeSize)
			}
			for f, want := range map[string]float64{"block_size_minimum": 4096, "block_size_preferred": 4096, "block_size_maximum": 4 << 20} {
				if e[f] != want {
					t.Errorf("%s: %s = %v, want %v", uri, f, e[f], want)
				}
			}
			ctxs, _ := e["contexts"].([]any)
			if !strings.Contains(fmt.Sprint(ctxs), "base:allocation") {
				t.Errorf("%s: meta contexts %v lack base:allocation", uri, ctxs)
			}
		}
	})

	// A file of the volume's size with random data in a few regions
	// (the rest a hole): nbdcopy in, nbdcopy out, compare.
	dir := t.TempDir()
	src := filepath.Join(dir, "src.img")
	f, err := os.Create(src)
	if err != nil {
		t.Fatal(err)
	}
	f.Truncate(e2eVolumeSize)
	for _, r := range [][2]int64{{0, 3 << 20}, {(256 << 20) + 4096, 1 << 20}, {e2eVolumeSize - (2 << 20), 2 << 20}} {
		b := make([]byte, r[1])
		rand.Read(b)
		if _, err := f.WriteAt(b, r[0]); err != nil {
			t.Fatal(err)
		}
	}
	f.Close()

	t.Run("nbdcopy", func(t *testing.T) {
		mustRun(t, 90*time.Second, nbdcopy, "--flush", src, env["KEEL_NBD_URI"])
		dst := filepath.Join(dir, "nbdcopy-out.img")
		mustRun(t, 90*time.Second, nbdcopy, env["KEEL_NBD_UNIX_URI"], dst)
		sameFiles(t, src, dst)
	})

	t.Run("qemu-img", func(t *testing.T) {
		// Different data than nbdcopy wrote, so a stale volume fails.
		src2 := filepath.Join(dir, "src2.img")
		f, _ := os.Create(src2)
		f.Truncate(e2eVolumeSize)
		b := make([]byte, 5<<20)
		rand.Read(b)
		f.WriteAt(b, 0)
		f.WriteAt(b[:1<<20], 700<<20)
		f.Close()
		mustRun(t, 90*time.Second, qemuImg, "convert", "-n", "-f", "raw", "-O", "raw", src2, env["KEEL_NBD_URI"])
		out := mustRun(t, 90*time.Second, qemuImg, "compare", "-f", "raw", "-F", "raw", src2, env["KEEL_NBD_URI"])
		if !strings.Contains(out, "Images are identical") {
			t.Errorf("qemu-img compare: %s", out)
		}
		// And the comparison does catch a difference.
		if out, err := run(t, 90*time.Second, qemuImg, "compare", "-f", "raw", "-F", "raw", src, env["KEEL_NBD_URI"]); err == nil {
			t.Errorf("qemu-img compare of different images succeeded: %s", out)
		}
		dst := filepath.Join(dir, "qemu-out.img")
		mustRun(t, 90*time.Second, qemuImg, "convert", "-f", "raw", "-O", "raw", env["KEEL_NBD_URI"], dst)
		sameFiles(t, src2, dst)
	})

	t.Run("fio-verify", func(t *testing.T) {
		out, err := run(t, 2*time.Minute, fio, fioArgs(env["KEEL_NBD_URI"], "--offset=128m")...)
		if err != nil {
			t.Fatalf("fio verify run failed: %v", err)
		}
		r := parseFio(t, out)
		if r.Jobs[0].Error != 0 || regexp.MustCompile(`verify: bad|crc32c: verify failed`).MatchString(out) {
			t.Fatalf("fio reported errors:\n%s", out)
		}
		if r.Jobs[0].Write.TotalIOs < (64<<20)/4096 || r.Jobs[0].Read.TotalIOs < (64<<20)/4096 {
			t.Fatalf("fio did not write and verify the whole region: %+v", r.Jobs[0])
		}
		t.Logf("fio randwrite 4k qd16 with crc32c verify: write %.0f IOPS, verify read %.0f IOPS", r.Jobs[0].Write.IOPS, r.Jobs[0].Read.IOPS)
	})
}

// sameFiles fails unless the two files hold the same bytes.
func sameFiles(t *testing.T, a, b string) {
	t.Helper()
	fa, err := os.Open(a)
	if err != nil {
		t.Fatal(err)
	}
	defer fa.Close()
	fb, err := os.Open(b)
	if err != nil {
		t.Fatal(err)
	}
	defer fb.Close()
	ba, bb := make([]byte, 1<<20), make([]byte, 1<<20)
	for off := int64(0); ; off += int64(len(ba)) {
		na, ea := fa.ReadAt(ba, off)
		nb, _ := fb.ReadAt(bb, off)
		if na != nb || !bytes.Equal(ba[:na], bb[:nb]) {
			t.Fatalf("%s and %s differ in the MiB at offset %d (read %d and %d bytes)", a, b, off, na, nb)
		}
		if ea != nil {
			return
		}
	}
}
