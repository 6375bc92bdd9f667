package node

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// configDir writes files (name -> content) into a fresh /etc/keel-like
// directory and returns the path of keel.toml in it.
func configDir(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, content := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return filepath.Join(dir, "keel.toml")
}

func mustLoad(t *testing.T, src ConfigSources) *Config {
	t.Helper()
	c, err := LoadConfig(src)
	if err != nil {
		t.Fatalf("LoadConfig: %v", err)
	}
	return c
}

func TestConfigDefaultsOnly(t *testing.T) {
	c := mustLoad(t, ConfigSources{Path: filepath.Join(t.TempDir(), "keel.toml"), Hostname: "h"})
	if c.Node.RunDir != "/run/keel" || c.Node.ID != 0 {
		t.Fatalf("defaults not applied: %+v", c.Node)
	}
	if o, _ := c.OriginOf("node.run_dir"); o.String() != "default" {
		t.Fatalf("origin of node.run_dir = %q, want default", o)
	}
}

// Every key of the schema must have a built-in default: `keel config show`
// then explains every value, and a forgotten default shows up here.
func TestConfigEveryKeyHasDefault(t *testing.T) {
	c := mustLoad(t, ConfigSources{Path: filepath.Join(t.TempDir(), "keel.toml"), Hostname: "h"})
	for _, e := range c.Entries() {
		if e.Origin != "default" {
			t.Errorf("key %s has no default in node/defaults/*.toml (origin %q)", e.Key, e.Origin)
		}
		if e.Help == "" {
			t.Errorf("key %s has no help tag", e.Key)
		}
	}
}

func TestConfigOverlayOrder(t *testing.T) {
	path := configDir(t, map[string]string{
		"keel.toml": `
[node]
id = 1
name = "main"
roles = ["mgmt"]

[host."n7".node]
id = 7
`,
		"keel.d/10-a.toml":    "[node]\nname = \"dropin-a\"\nroles = [\"server\"]\n",
		"keel.d/20-b.toml":    "[node]\nname = \"dropin-b\"\n\n[host.n7.node]\nroles = [\"client\", \"server\"]\n",
		"keel.d/ignored.conf": "this is not toml and not *.toml",
	})
	dir := filepath.Dir(path)
	tests := []struct {
		name    string
		host    string
		env     []string
		wantID  int
		wantNm  string
		roles   []string
		origins map[string]string
	}{
		{"files in order", "other", nil, 1, "dropin-b", []string{"server"}, map[string]string{
			"node.id":    path + ":3",
			"node.name":  filepath.Join(dir, "keel.d/20-b.toml") + ":2",
			"node.roles": filepath.Join(dir, "keel.d/10-a.toml") + ":3",
		}},
		{"host sections after all files", "n7", nil, 7, "dropin-b", []string{"client", "server"}, map[string]string{
			"node.id":    path + ":8",
			"node.roles": filepath.Join(dir, "keel.d/20-b.toml") + ":5",
		}},
		{"env last", "n7", []string{"KEEL_NODE_ID=9", "KEEL_NODE_ROLES=mgmt, client", "KEEL_CONFIG=/x", "PATH=/bin"}, 9, "dropin-b", []string{"mgmt", "client"}, map[string]string{
			"node.id":    "env KEEL_NODE_ID",
			"node.roles": "env KEEL_NODE_ROLES",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := mustLoad(t, ConfigSources{Path: path, Hostname: tt.host, Environ: tt.env})
			if c.Node.ID != tt.wantID || c.Node.Name != tt.wantNm || !reflect.DeepEqual(c.Node.Roles, tt.roles) {
				t.Fatalf("got %+v, want id %d name %q roles %v", c.Node, tt.wantID, tt.wantNm, tt.roles)
			}
			for k, want := range tt.origins {
				if o, _ := c.OriginOf(k); o.String() != want {
					t.Errorf("origin of %s = %q, want %q", k, o, want)
				}
			}
		})
	}
}

func TestConfigErrors(t *testing.T) {
	tests := []struct {
		name  string
		files map[string]string
		env   []string
		want  string // substring of the error; ":LINE:" included where known
	}{
		{"syntax", map[string]string{"keel.toml": "[node]\nid = = 3\n"}, nil, "keel.toml:2:"},
		{"unknown section", map[string]string{"keel.toml": "\n[nodes]\nid = 1\n"}, nil, "keel.toml:2: nodes: unknown key"},
		{"unknown key", map[string]string{"keel.toml": "[node]\nid = 1\nidd = 2\n"}, nil, "keel.toml:3: node.idd: unknown key"},
		{"wrong type", map[string]string{"keel.toml": "[node]\nid = \"one\"\n"}, nil, "keel.toml:2: node.id: must be an integer, not a string"},
		{"out of range", map[string]string{"keel.toml": "[node]\nid = 64\n"}, nil, "keel.toml:2: node.id: 64 is out of range 0..63"},
		{"negative", map[string]string{"keel.toml": "[node]\nid = -1\n"}, nil, "node.id: -1 is out of range 0..63"},
		{"bad enum element", map[string]string{"keel.toml": "[node]\nroles = [\"mgmt\", \"db\"]\n"}, nil, "keel.toml:2: node.roles: element 1: \"db\" is not one of"},
		{"list of wrong type", map[string]string{"keel.toml": "[node]\nroles = [1]\n"}, nil, "node.roles: element 0 must be a string"},
		{"section not table", map[string]string{"keel.toml": "node = 3\n"}, nil, "keel.toml:1: node: must be a table"},
		{"dotted key", map[string]string{"keel.toml": "node.idx = 3\n"}, nil, "keel.toml:1: node.idx: unknown key"},
		{"dropin bad", map[string]string{"keel.toml": "[node]\nid=1\n", "keel.d/50-x.toml": "[node]\n\nrun_dir = 5\n"}, nil, "50-x.toml:3: node.run_dir: must be a string"},
		{"other host's section checked", map[string]string{"keel.toml": "[host.\"elsewhere\".node]\nid = 100\n"}, nil, "keel.toml:2: host.elsewhere.node.id: 100 is out of range"},
		{"host not table", map[string]string{"keel.toml": "host = 1\n"}, nil, "keel.toml:1: host: must be a table"},
		{"env bad int", nil, []string{"KEEL_NODE_ID=seven"}, "env KEEL_NODE_ID: node.id: must be an integer, not a string"},
		{"env out of range", nil, []string{"KEEL_NODE_ID=99"}, "env KEEL_NODE_ID: node.id: 99 is out of range 0..63"},
		{"env bad enum", nil, []string{"KEEL_NODE_ROLES=mgmt,bogus"}, "env KEEL_NODE_ROLES: node.roles: element 1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			files := tt.files
			if files == nil {
				files = map[string]string{}
			}
			path := configDir(t, files)
			_, err := LoadConfig(ConfigSources{Path: path, Hostname: "here", Environ: tt.env})
			if err == nil {
				t.Fatalf("no error, want %q", tt.want)
			}
			if !errors.Is(err, ErrConfig) {
				t.Errorf("error %v is not ErrConfig", err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not contain %q", err, tt.want)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error is not one line: %q", err)
			}
		})
	}
}

func TestConfigMissingExplicitFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "nope.toml")
	if _, err := LoadConfig(ConfigSources{Path: p, Explicit: true, Hostname: "h"}); err == nil || !strings.Contains(err.Error(), "nope.toml") {
		t.Fatalf("explicit missing file: err = %v", err)
	}
	if _, err := LoadConfig(ConfigSources{Path: p, Hostname: "h"}); err != nil {
		t.Fatalf("implicit missing file must be fine: %v", err)
	}
}

func TestCheckConfigFile(t *testing.T) {
	good := configDir(t, map[string]string{"keel.toml": "[node]\nid = 3\n[host.a.node]\nid = 4\n"})
	if err := CheckConfigFile(good); err != nil {
		t.Fatalf("valid file: %v", err)
	}
	bad := configDir(t, map[string]string{"keel.toml": "[node]\nid = 3\n[host.a.node]\nname = 4\n"})
	if err := CheckConfigFile(bad); err == nil || !strings.Contains(err.Error(), ":4: host.a.node.name: must be a string") {
		t.Fatalf("bad host section: err = %v", err)
	}
}

func TestKeyLines(t *testing.T) {
	text := "# c\n[node]\nid = 1 # x\n\"name\" = \"a=b\"\n[host.\"x y\".node]\nroles = []\n[a.b]\nc.d = 1\n"
	got := keyLines(text)
	want := map[string]int{"node": 2, "node.id": 3, "node.name": 4, `host."x y".node`: 5, `host."x y".node.roles`: 6, "a.b": 7, "a.b.c.d": 8}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("keyLines = %v\nwant %v", got, want)
	}
}

// FuzzConfigFile feeds arbitrary files through the loader: it must return a
// config or an ErrConfig-wrapped error naming the file, never panic.
func FuzzConfigFile(f *testing.F) {
	f.Add("[node]\nid = 3\nroles = [\"mgmt\"]\n")
	f.Add("[host.\"a\".node]\nid = 70\n")
	f.Add("node.id = \"x\"\n[[node]]\n")
	f.Add("[node]\nrun_dir = 1979-05-27T07:32:00Z\n")
	f.Fuzz(func(t *testing.T, content string) {
		path := filepath.Join(t.TempDir(), "keel.toml")
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		_, err := LoadConfig(ConfigSources{Path: path, Hostname: "a"})
		if err != nil && !errors.Is(err, ErrConfig) {
			t.Fatalf("error is not ErrConfig: %v", err)
		}
		if err != nil && !strings.Contains(err.Error(), path) {
			t.Fatalf("error does not name the file: %v", err)
		}
	})
}
