package integration

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"keel/internal/testbin"
)

type result struct {
	stdout, stderr string
	code           int
}

// run executes the binary (or a link to it) with a clean KEEL_* environment.
func run(t *testing.T, bin string, env []string, args ...string) result {
	t.Helper()
	cmd := exec.Command(bin, args...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "KEEL_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("run %s: %v", bin, err)
	}
	return result{out.String(), errb.String(), code}
}

// linkAs makes a symlink named name to the binary in a fresh directory.
func linkAs(t *testing.T, name string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.Symlink(testbin.Keel(t), p); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestDispatchUnknownNames(t *testing.T) {
	keel := testbin.Keel(t)
	for _, tc := range []struct {
		bin  string
		args []string
	}{
		{keel, []string{"nosuch"}},
		{linkAs(t, "keel_nosuch"), nil},
		{linkAs(t, "storpool_nosuch"), []string{"status"}},
		{linkAs(t, "whatever"), nil},
	} {
		r := run(t, tc.bin, nil, tc.args...)
		if r.code != 2 {
			t.Errorf("%s %v: exit %d, want 2", filepath.Base(tc.bin), tc.args, r.code)
		}
		if !strings.Contains(r.stderr, "applets (run as NAME") || !strings.Contains(r.stderr, "cli (keel)") {
			t.Errorf("%s %v: the applets are not listed:\n%s", filepath.Base(tc.bin), tc.args, r.stderr)
		}
		if r.stdout != "" {
			t.Errorf("%s %v: wrote to stdout: %q", filepath.Base(tc.bin), tc.args, r.stdout)
		}
	}
}

// Every installed link name reaches its applet: --help exits 0 and names
// the applet's own program.
func TestInstallLinksReachEveryApplet(t *testing.T) {
	keel := testbin.Keel(t)
	dir := filepath.Join(t.TempDir(), "sbin")
	r := run(t, keel, nil, "install-links", dir, "--json")
	if r.code != 0 {
		t.Fatalf("install-links: exit %d: %s", r.code, r.stderr)
	}
	var rep struct{ Created int }
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		t.Fatalf("install-links --json: %v %q", err, r.stdout)
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != rep.Created {
		t.Fatalf("%d entries, %d reported created", len(ents), rep.Created)
	}
	for _, e := range ents {
		link := filepath.Join(dir, e.Name())
		if target, err := os.Readlink(link); err != nil || target != keel {
			t.Errorf("%s -> %q (%v), want %s", e.Name(), target, err, keel)
		}
		r := run(t, link, nil, "--help")
		if r.code != 0 || !strings.Contains(r.stdout, "Usage:") {
			t.Errorf("%s --help: exit %d\n%s%s", e.Name(), r.code, r.stdout, r.stderr)
		}
	}
	// The fallback applet answers to its prefixed names too.
	for _, name := range []string{"keel_cli", "storpool_cli"} {
		if r := run(t, linkAs(t, name), nil, "--help"); r.code != 0 || !strings.Contains(r.stdout, "Usage: keel") {
			t.Errorf("%s --help: exit %d %q", name, r.code, r.stderr)
		}
	}
	if len(ents) == 0 {
		return // only the CLI is registered: nothing more to link
	}
	// A second run changes nothing; a foreign file is not replaced.
	if r := run(t, keel, nil, "install-links", dir); r.code != 0 || !strings.Contains(r.stdout, "0 links created") {
		t.Errorf("second install-links: exit %d %q %q", r.code, r.stdout, r.stderr)
	}
	victim := filepath.Join(dir, ents[0].Name())
	os.Remove(victim)
	os.WriteFile(victim, []byte("operator's file"), 0o644)
	if r := run(t, keel, nil, "install-links", dir); r.code != 1 || !strings.Contains(r.stderr, "--force") {
		t.Errorf("install-links over a file: exit %d %q", r.code, r.stderr)
	}
	if b, _ := os.ReadFile(victim); string(b) != "operator's file" {
		t.Error("a file that was not ours was replaced without --force")
	}
}

func TestUsageErrorsExit2(t *testing.T) {
	keel := testbin.Keel(t)
	for _, args := range [][]string{
		{"config", "show", "--bogus"},
		{"config"},
		{"--log-level", "loud", "version"},
		{"install-links"},
		{"config", "check", "/nonexistent/keel.toml"},
	} {
		r := run(t, keel, nil, args...)
		if r.code != 2 {
			t.Errorf("keel %v: exit %d, want 2 (%s)", args, r.code, r.stderr)
		}
		if lines := strings.Count(strings.TrimSpace(r.stderr), "\n"); lines > 1 || r.stderr == "" {
			t.Errorf("keel %v: want a one-line error and a hint, got %q", args, r.stderr)
		}
	}
}

func TestVersion(t *testing.T) {
	r := run(t, testbin.Keel(t), nil, "version", "--json")
	var v map[string]string
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &v) != nil || v["version"] == "" || v["commit"] == "" {
		t.Fatalf("version --json: exit %d %q", r.code, r.stdout)
	}
}
