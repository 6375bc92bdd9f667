package integration

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"keel/internal/testbin"
)

func writeFiles(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for name, content := range files {
		p := filepath.Join(dir, name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func TestConfigShowOrigins(t *testing.T) {
	dir := t.TempDir()
	host, _ := os.Hostname()
	writeFiles(t, dir, map[string]string{
		"keel.toml":        "[node]\nid = 5\nname = \"n5\"\n",
		"keel.d/10-x.toml": "[host.\"" + host + "\".node]\nname = \"mine\"\n",
	})
	cfg := filepath.Join(dir, "keel.toml")
	r := run(t, testbin.Keel(t), []string{"KEEL_NODE_RUN_DIR=/tmp/run-x"}, "--config", cfg, "config", "show", "--origin")
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	for _, want := range []string{
		"node.id = 5", cfg + ":2",
		`node.name = "mine"`, filepath.Join(dir, "keel.d/10-x.toml") + ":2",
		`node.run_dir = "/tmp/run-x"`, "env KEEL_NODE_RUN_DIR",
		"node.roles = []", "# default",
	} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("config show --origin lacks %q:\n%s", want, r.stdout)
		}
	}
	// Every line carries an origin.
	for _, l := range strings.Split(strings.TrimSpace(r.stdout), "\n") {
		if !strings.Contains(l, "# ") {
			t.Errorf("line without origin: %q", l)
		}
	}
	r = run(t, testbin.Keel(t), nil, "--config", cfg, "--json", "config", "show")
	var entries []struct{ Key, Origin string }
	if err := json.Unmarshal([]byte(r.stdout), &entries); err != nil || len(entries) == 0 {
		t.Fatalf("--json: %v %q", err, r.stdout)
	}
}

func TestConfigBadFiles(t *testing.T) {
	keel := testbin.Keel(t)
	for _, tc := range []struct {
		name, content, want string
	}{
		{"unknown", "[node]\nid = 1\ncolour = 3\n", ":3: node.colour: unknown key"},
		{"type", "[node]\nroles = \"mgmt\"\n", ":2: node.roles: must be a list of strings"},
		{"range", "[node]\n\nid = 64\n", ":3: node.id: 64 is out of range 0..63"},
		{"syntax", "[node\nid = 1\n", ":2: expected '.' or ']'"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			writeFiles(t, dir, map[string]string{"keel.toml": tc.content})
			cfg := filepath.Join(dir, "keel.toml")
			before, _ := os.ReadFile(cfg)
			for _, args := range [][]string{
				{"--config", cfg, "config", "show"},
				{"config", "check", cfg},
			} {
				r := run(t, keel, nil, args...)
				if r.code != 1 {
					t.Errorf("%v: exit %d, want 1", args, r.code)
				}
				if !strings.Contains(r.stderr, cfg+tc.want) || strings.Count(strings.TrimSpace(r.stderr), "\n") != 0 {
					t.Errorf("%v: stderr %q, want one line with %q", args, r.stderr, cfg+tc.want)
				}
			}
			if after, _ := os.ReadFile(cfg); string(after) != string(before) {
				t.Error("the file was changed")
			}
		})
	}
	// A missing file named explicitly is an error; the default path may be absent.
	if r := run(t, keel, nil, "--config", "/nonexistent/keel.toml", "config", "show"); r.code != 1 || !strings.Contains(r.stderr, "/nonexistent/keel.toml") {
		t.Errorf("missing --config: exit %d %q", r.code, r.stderr)
	}
	if r := run(t, keel, []string{"KEEL_NODE_ID=x"}, "config", "show"); r.code != 1 || !strings.Contains(r.stderr, "env KEEL_NODE_ID: node.id") {
		t.Errorf("bad env: exit %d %q", r.code, r.stderr)
	}
}

func TestStateInfo(t *testing.T) {
	keel := testbin.Keel(t)
	dir := filepath.Join(t.TempDir(), "state")
	r := run(t, keel, nil, "--state-dir", dir, "--json", "state", "info")
	var info struct {
		Path          string
		SchemaVersion int `json:"schema_version"`
		Integrity     string
	}
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &info) != nil {
		t.Fatalf("state info: exit %d %q %q", r.code, r.stdout, r.stderr)
	}
	if info.Integrity != "ok" || info.SchemaVersion < 1 || info.Path != filepath.Join(dir, "node.db") {
		t.Fatalf("state info: %+v", info)
	}
	// A state file that is not a database: clear error, exit 1, file kept.
	bad := t.TempDir()
	junk := strings.Repeat("garbage!", 1000)
	os.WriteFile(filepath.Join(bad, "node.db"), []byte(junk), 0o600)
	r = run(t, keel, nil, "--state-dir", bad, "state", "info")
	if r.code != 1 || !strings.Contains(r.stderr, "not a keel state database") {
		t.Fatalf("bad state: exit %d %q", r.code, r.stderr)
	}
	if b, _ := os.ReadFile(filepath.Join(bad, "node.db")); string(b) != junk {
		t.Fatal("bad state file was changed")
	}
}

// Commands that need no state never create it.
func TestStateOpenedLazily(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	for _, args := range [][]string{{"version"}, {"config", "show"}, {"--help"}} {
		run(t, testbin.Keel(t), nil, append([]string{"--state-dir", dir}, args...)...)
		if _, err := os.Stat(dir); err == nil {
			t.Fatalf("keel %v created the state directory", args)
		}
	}
}
