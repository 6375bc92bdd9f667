package iface

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestDetectStyle(t *testing.T) {
	cases := []struct {
		files []string // created under root; a trailing / makes a directory
		want  Style
	}{
		{[]string{"etc/netplan/01-netcfg.yaml", "etc/network/interfaces"}, StyleNetplan},
		{[]string{"etc/sysconfig/network-scripts/", "etc/netplan/"}, StyleIfcfg},
		{[]string{"etc/network/interfaces", "etc/netplan/"}, StyleIfupdown},
		{[]string{"etc/netplan/"}, StyleNetplan},
	}
	for _, tc := range cases {
		root := t.TempDir()
		for _, f := range tc.files {
			p := filepath.Join(root, f)
			if f[len(f)-1] == '/' {
				if err := os.MkdirAll(p, 0o755); err != nil {
					t.Fatal(err)
				}
				continue
			}
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, []byte("x\n"), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		got, err := DetectStyle(root)
		if err != nil || got != tc.want {
			t.Errorf("%v: DetectStyle = %q, %v; want %q", tc.files, got, err, tc.want)
		}
	}
	if s, err := DetectStyle(t.TempDir()); !errors.Is(err, ErrStyle) {
		t.Errorf("empty root: DetectStyle = %q, %v; want ErrStyle", s, err)
	}
}

func planFiles() []File {
	return []File{
		{Path: "etc/netplan/60-keel-eth2.yaml", Mode: 0o600, Iface: "eth2", Content: "a\n"},
		{Path: "etc/netplan/60-keel-eth3.yaml", Mode: 0o600, Iface: "eth3", Content: "b\n"},
	}
}

func actions(p []PlannedFile) []Action {
	var out []Action
	for _, f := range p {
		out = append(out, f.Action)
	}
	return out
}

func mustPlan(t *testing.T, root string, files []File, overwrite bool) []PlannedFile {
	t.Helper()
	p, err := Plan(root, files, overwrite)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// Create what is missing, leave what matches, refuse (writing nothing) what
// differs unless told to overwrite; a second run changes nothing.
func TestPlanApply(t *testing.T) {
	root := t.TempDir()
	files := planFiles()
	p := mustPlan(t, root, files[:1], false)
	if err := Apply(root, p); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(filepath.Join(root, files[0].Path))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("written file: %v, %v; want mode 0600", st, err)
	}

	p = mustPlan(t, root, files, false)
	if got := actions(p); got[0] != ActionUnchanged || got[1] != ActionCreate {
		t.Fatalf("actions %v, want unchanged, create", got)
	}
	if err := Apply(root, p); err != nil {
		t.Fatal(err)
	}
	if got := actions(mustPlan(t, root, files, false)); got[0] != ActionUnchanged || got[1] != ActionUnchanged {
		t.Fatalf("second run: actions %v, want all unchanged", got)
	}

	changed := planFiles()
	changed[0].Content = "a2\n"
	changed = append(changed, File{Path: "etc/netplan/60-keel-eth4.yaml", Mode: 0o600, Iface: "eth4", Content: "c\n"})
	p = mustPlan(t, root, changed, false)
	if got := actions(p); got[0] != ActionKeep || got[2] != ActionCreate {
		t.Fatalf("actions %v, want differs, unchanged, create", got)
	}
	if err := Apply(root, p); !errors.Is(err, ErrExists) {
		t.Fatalf("Apply over a differing file = %v, want ErrExists", err)
	}
	if _, err := os.Stat(filepath.Join(root, changed[2].Path)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a refused apply wrote %s", changed[2].Path)
	}
	if b, _ := os.ReadFile(filepath.Join(root, files[0].Path)); string(b) != "a\n" {
		t.Fatalf("a refused apply replaced %s: %q", files[0].Path, b)
	}

	p = mustPlan(t, root, changed, true)
	if got := actions(p); got[0] != ActionReplace {
		t.Fatalf("with overwrite: actions %v, want replace first", got)
	}
	if err := Apply(root, p); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(root, files[0].Path)); string(b) != "a2\n" {
		t.Fatalf("overwrite left %q", b)
	}
}
