package iscsi

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"keel/internal/testbin"
	"keel/scsi"
)

const testIQN = "iqn.2024-01.io.keel.test:lun"

var updateExpected = flag.Bool("update", false, "rewrite testdata/iscsi-test-cu.expected from this run")

// startTarget serves a fresh sparse file of size bytes on a free
// loopback port and returns the portal address.
func startTarget(t *testing.T, size int64, cfg Config) string {
	t.Helper()
	addr, _ := startTargetServer(t, size, cfg)
	return addr
}

func startTargetServer(t *testing.T, size int64, cfg Config) (string, *Server) {
	t.Helper()
	dir := t.TempDir()
	img := filepath.Join(dir, "lun.img")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, size); err != nil {
		t.Fatal(err)
	}
	be, err := scsi.OpenFileBackend(img, 512)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { be.Close() })
	lu, err := scsi.NewLU(be, scsi.LUOptions{Name: testIQN, Store: scsi.FilePRStore(filepath.Join(dir, "pr.json"))})
	if err != nil {
		t.Fatal(err)
	}
	cfg.Targets = []*Target{{Name: testIQN, LUs: map[uint64]*scsi.LU{0: lu}}}
	srv := NewServer(cfg)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return l.Addr().String(), srv
}

func run(t *testing.T, timeout time.Duration, name string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	return string(out), err
}

var (
	cuTestLine = regexp.MustCompile(`^\s*Test: (\S+) \.\.\.`)
	cuResult   = regexp.MustCompile(`(passed|FAILED)\s*$`)
)

// parseCU reads iscsi-test-cu -v output into test name -> passed,
// FAILED or skipped.
func parseCU(suite, out string) map[string]string {
	res := map[string]string{}
	var cur string
	skipped := false
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		line := sc.Text()
		if m := cuTestLine.FindStringSubmatch(line); m != nil {
			cur, skipped = suite+"."+m[1], false
			line = line[len(m[0]):]
		}
		if cur == "" {
			continue
		}
		if strings.Contains(line, "[SKIPPED]") {
			skipped = true
		}
		if m := cuResult.FindStringSubmatch(line); m != nil {
			r := m[1]
			if r == "passed" && skipped {
				r = "skipped"
			}
			res[cur] = r
			cur = ""
		}
	}
	return res
}

// TestConformance runs libiscsi's iscsi-test-cu, one process per suite,
// against a target served by this process and compares every test's
// result with testdata/iscsi-test-cu.expected: a test expected to pass
// that fails or disappears is a regression.
func TestConformance(t *testing.T) {
	addr := startTarget(t, 64<<20, Config{})
	url := fmt.Sprintf("iscsi://%s/%s/0", addr, testIQN)
	checkConformance(t, runConformance(t, url), filepath.Join("testdata", "iscsi-test-cu.expected"), "TestConformance")
}

// runConformance runs every suite of iscsi-test-cu against url (as both
// of its initiators) and returns each test's result.
func runConformance(t *testing.T, url string) map[string]string {
	cu := testbin.NeedTool(t, "iscsi-test-cu")
	list, err := run(t, 30*time.Second, cu, "-l")
	if err != nil {
		t.Fatalf("iscsi-test-cu -l: %v\n%s", err, list)
	}
	var suites []string
	for _, l := range strings.Fields(list) {
		if strings.Count(l, ".") == 1 && strings.HasPrefix(l, "ALL.") {
			suites = append(suites, l)
		}
	}
	got := map[string]string{}
	for _, s := range suites {
		// The exit status reflects failed tests, which the expectation
		// file judges; a suite that reports no test at all is an error.
		out, err := run(t, 180*time.Second, cu, "-d", "-v", "--test="+s, url, url)
		res := parseCU(s, out)
		if len(res) == 0 {
			t.Errorf("suite %s reported no tests: %v\n%s", s, err, out)
		}
		for k, v := range res {
			got[k] = v
		}
	}
	counts := map[string]int{}
	for _, v := range got {
		counts[v]++
	}
	t.Logf("iscsi-test-cu: %d tests: %d passed, %d failed, %d skipped",
		len(got), counts["passed"], counts["FAILED"], counts["skipped"])
	return got
}

// checkConformance compares results with an expectation file (rewritten
// with -update): a test expected to pass that fails or disappears is a
// regression.
func checkConformance(t *testing.T, got map[string]string, path, testName string) {
	if *updateExpected {
		var b bytes.Buffer
		fmt.Fprintf(&b, "# iscsi-test-cu results expected from keel's target (go test ./iscsi -run %s -update)\n", testName)
		var names []string
		for k := range got {
			names = append(names, k)
		}
		sort.Strings(names)
		for _, k := range names {
			fmt.Fprintf(&b, "%s %s\n", k, got[k])
		}
		if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(want), "\n") {
		f := strings.Fields(line)
		if len(f) != 2 || strings.HasPrefix(line, "#") {
			continue
		}
		name, exp := f[0], f[1]
		switch g := got[name]; {
		case g == exp:
		case exp == "passed":
			t.Errorf("regression: %s %s, expected passed", name, orMissing(g))
		case g == "passed":
			t.Logf("improvement: %s now passes (expected %s); run with -update", name, exp)
		case exp == "skipped" && g != "skipped":
			t.Errorf("regression: %s %s, expected skipped", name, orMissing(g))
		}
	}
}

func orMissing(s string) string {
	if s == "" {
		return "missing"
	}
	return s
}

func TestDiscoveryAndInquiry(t *testing.T) {
	ls := testbin.NeedTool(t, "iscsi-ls")
	inq := testbin.NeedTool(t, "iscsi-inq")
	addr := startTarget(t, 16<<20, Config{})
	out, err := run(t, 30*time.Second, ls, "-s", "iscsi://"+addr)
	if err != nil || !strings.Contains(out, "Target:"+testIQN+" Portal:"+addr+",1") || !strings.Contains(out, "Lun:0") {
		t.Fatalf("iscsi-ls: %v\n%s", err, out)
	}
	out, err = run(t, 30*time.Second, inq, fmt.Sprintf("iscsi://%s/%s/0", addr, testIQN))
	if err != nil || !strings.Contains(out, "Vendor:KEEL") {
		t.Fatalf("iscsi-inq: %v\n%s", err, out)
	}
	out, err = run(t, 30*time.Second, inq, "-e", "1", fmt.Sprintf("iscsi://%s/%s/0", addr, testIQN))
	for _, page := range []string{"0x80", "0x83", "0xb0", "0xb1", "0xb2"} {
		if err != nil || !strings.Contains(out, "Page:"+page) {
			t.Fatalf("iscsi-inq -e 1: page %s missing: %v\n%s", page, err, out)
		}
	}
}

func TestQemuImgRoundTrip(t *testing.T) {
	qi := testbin.NeedTool(t, "qemu-img")
	// qemu-img's iscsi driver is a module of qemu-block-extra
	// (scripts/test-deps.sh installs it by the module's path).
	if out, _ := run(t, 10*time.Second, qi, "--help"); !strings.Contains(out, " iscsi ") {
		testbin.NeedTool(t, "/usr/lib/x86_64-linux-gnu/qemu/block-iscsi.so")
	}
	const size = 32 << 20
	addr := startTarget(t, size, Config{})
	url := fmt.Sprintf("iscsi://%s/%s/0", addr, testIQN)
	dir := t.TempDir()
	src := filepath.Join(dir, "src.img")
	f, err := os.Create(src)
	if err != nil {
		t.Fatal(err)
	}
	f.Truncate(size)
	for _, off := range []int64{0, 1 << 20, 5<<20 + 4096, size - 1<<20} {
		buf := make([]byte, 700<<10)
		rand.Read(buf)
		f.WriteAt(buf[:min(int64(len(buf)), size-off)], off)
	}
	f.Close()
	if out, err := run(t, 60*time.Second, qi, "convert", "-n", "-f", "raw", "-O", "raw", src, url); err != nil {
		t.Fatalf("qemu-img convert to iscsi: %v\n%s", err, out)
	}
	back := filepath.Join(dir, "back.img")
	if out, err := run(t, 60*time.Second, qi, "convert", "-f", "raw", "-O", "raw", url, back); err != nil {
		t.Fatalf("qemu-img convert from iscsi: %v\n%s", err, out)
	}
	if out, err := run(t, 60*time.Second, qi, "compare", "-f", "raw", "-F", "raw", src, back); err != nil {
		t.Fatalf("qemu-img compare: %v\n%s", err, out)
	}
	if out, err := run(t, 60*time.Second, qi, "compare", "-f", "raw", "-F", "raw", src, url); err != nil {
		t.Fatalf("qemu-img compare with the target: %v\n%s", err, out)
	}
}

func TestCHAP(t *testing.T) {
	inq := testbin.NeedTool(t, "iscsi-inq")
	addr := startTarget(t, 16<<20, Config{CHAP: func(initiator, target string) (CHAPSecret, bool) {
		if strings.HasSuffix(initiator, ":mutual") {
			return CHAPSecret{User: "alice", Secret: "alicesecret12", MutualUser: "tgt", MutualSecret: "targetsecret1"}, true
		}
		return CHAPSecret{User: "alice", Secret: "alicesecret12"}, true
	}})
	base := fmt.Sprintf("%s/%s/0", addr, testIQN)
	cases := []struct {
		name, url, initiator string
		ok                   bool
	}{
		{"right secret", "iscsi://alice%alicesecret12@" + base, "iqn.2024-01.test:one", true},
		{"wrong secret", "iscsi://alice%wrongsecret1@" + base, "iqn.2024-01.test:one", false},
		{"wrong user", "iscsi://bob%alicesecret12@" + base, "iqn.2024-01.test:one", false},
		{"no credentials", "iscsi://" + base, "iqn.2024-01.test:one", false},
		{"mutual", "iscsi://alice%alicesecret12@" + base + "?target_user=tgt&target_password=targetsecret1", "iqn.2024-01.test:mutual", true},
		{"mutual wrong target secret", "iscsi://alice%alicesecret12@" + base + "?target_user=tgt&target_password=badsecret123", "iqn.2024-01.test:mutual", false},
		{"mutual not asked", "iscsi://alice%alicesecret12@" + base, "iqn.2024-01.test:mutual", false},
	}
	for _, c := range cases {
		out, err := run(t, 30*time.Second, inq, "-i", c.initiator, c.url)
		ok := err == nil && strings.Contains(out, "Vendor:KEEL")
		if ok != c.ok {
			t.Errorf("%s: login ok=%v, want %v\n%s", c.name, ok, c.ok, out)
		}
	}
}

func TestAccessCheck(t *testing.T) {
	inq := testbin.NeedTool(t, "iscsi-inq")
	ls := testbin.NeedTool(t, "iscsi-ls")
	allowed := netip.MustParsePrefix("127.0.0.0/8")
	addr := startTarget(t, 16<<20, Config{Allow: func(initiator string, from netip.Addr, target string) error {
		if initiator == "iqn.2024-01.test:refused" {
			return fmt.Errorf("%s: %w", initiator, ErrForbidden)
		}
		if initiator == "iqn.2024-01.test:othernet" && !netip.MustParsePrefix("10.0.0.0/8").Contains(from) {
			return fmt.Errorf("%s from %s: %w", initiator, from, ErrForbidden)
		}
		if !allowed.Contains(from) {
			return ErrForbidden
		}
		return nil
	}})
	url := fmt.Sprintf("iscsi://%s/%s/0", addr, testIQN)
	for _, c := range []struct {
		initiator string
		ok        bool
	}{{"iqn.2024-01.test:allowed", true}, {"iqn.2024-01.test:refused", false}, {"iqn.2024-01.test:othernet", false}} {
		out, err := run(t, 30*time.Second, inq, "-i", c.initiator, url)
		if ok := err == nil && strings.Contains(out, "Vendor:KEEL"); ok != c.ok {
			t.Errorf("%s: login ok=%v, want %v\n%s", c.initiator, ok, c.ok, out)
		}
	}
	out, _ := run(t, 30*time.Second, ls, "-i", "iqn.2024-01.test:refused", "iscsi://"+addr)
	if strings.Contains(out, testIQN) {
		t.Errorf("discovery showed the target to a refused initiator:\n%s", out)
	}
}

// TestDroppedConnectionFreesTasks logs in with raw PDUs, leaves a WRITE
// waiting for its R2T data and drops the connection: the session and its
// task must go.
func TestDroppedConnectionFreesTasks(t *testing.T) {
	addr, srv := startTargetServer(t, 16<<20, Config{})
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	login := newPDU(opLoginReq|flagImmediate, 0x80|stageOperational<<2|stageFull, 1)
	login.BHS[8] = 0x80 // ISID type random
	login.Data = appendText(appendText(nil, "InitiatorName", "iqn.2024-01.test:x"), "TargetName", testIQN)
	login.Data = appendText(appendText(login.Data, "ImmediateData", "No"), "InitialR2T", "Yes")
	if _, err := nc.Write(login.appendTo(nil, false, false)); err != nil {
		t.Fatal(err)
	}
	resp, err := ReadPDU(nc, false, false, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if resp.Opcode() != opLoginResp || resp.BHS[36] != 0 || resp.BHS[1]&0x83 != 0x83 {
		t.Fatalf("login response opcode 0x%x flags 0x%x status %d", resp.Opcode(), resp.BHS[1], resp.BHS[36])
	}
	if n := len(srv.Sessions()); n != 1 {
		t.Fatalf("%d sessions after login, want 1", n)
	}
	cmd := newPDU(opSCSICmd, 0x80|0x20, 7)
	cmd.setU32(20, 4096)
	cmd.setU32(24, 0)  // CmdSN
	cmd.BHS[32] = 0x2a // WRITE(10) of 8 blocks at LBA 0
	cmd.BHS[32+8] = 8
	if _, err := nc.Write(cmd.appendTo(nil, false, false)); err != nil {
		t.Fatal(err)
	}
	r2t, err := ReadPDU(nc, false, false, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if r2t.Opcode() != opR2T || r2t.u32(44) != 4096 {
		t.Fatalf("got opcode 0x%x length %d, want an R2T for 4096 bytes", r2t.Opcode(), r2t.u32(44))
	}
	nc.Close()
	deadline := time.Now().Add(5 * time.Second)
	for len(srv.Sessions()) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("session still there after its connection dropped: %+v", srv.Sessions())
		}
		time.Sleep(10 * time.Millisecond)
	}
}
