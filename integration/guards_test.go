package integration

import (
	"debug/elf"
	"os/exec"
	"strings"
	"testing"

	"keel/internal/testbin"
)

// The release binary is static: no program interpreter, no dynamic section.
func TestBinaryIsStatic(t *testing.T) {
	f, err := elf.Open(testbin.Keel(t))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP || p.Type == elf.PT_DYNAMIC {
			t.Fatalf("binary has a %v program header: it is dynamically linked", p.Type)
		}
	}
	if s := f.Section(".dynamic"); s != nil {
		t.Fatal("binary has a .dynamic section")
	}
}

type pkgInfo struct {
	path     string
	imports  []string
	standard bool
	cgo      bool
}

// listDeps lists every package the binary is built from, with cgo allowed so
// that a package that would use it shows its cgo files.
func listDeps(t *testing.T) []pkgInfo {
	t.Helper()
	cmd := exec.Command("go", "list", "-deps", "-f", "{{.ImportPath}}|{{join .Imports \",\"}}|{{.Standard}}|{{len .CgoFiles}}", "./...")
	cmd.Dir = testbin.ModuleRoot()
	cmd.Env = append(cmd.Environ(), "CGO_ENABLED=1")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	var pkgs []pkgInfo
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Split(l, "|")
		p := pkgInfo{path: f[0], standard: f[2] == "true", cgo: f[3] != "0"}
		if f[1] != "" {
			p.imports = strings.Split(f[1], ",")
		}
		pkgs = append(pkgs, p)
	}
	return pkgs
}

func TestNoCgoOutsideStd(t *testing.T) {
	for _, p := range listDeps(t) {
		if p.cgo && !p.standard {
			t.Errorf("package %s uses cgo; keel must build without it", p.path)
		}
		for _, imp := range p.imports {
			if imp == "C" && !p.standard {
				t.Errorf("package %s imports C", p.path)
			}
		}
	}
}

// Library packages never import the applets (the applets import them), and
// the data-path protocol packages never import the management API.
func TestImportBoundaries(t *testing.T) {
	dataPath := []string{"keel/wire", "keel/nbd", "keel/scsi", "keel/iscsi", "keel/server", "keel/client"}
	for _, p := range listDeps(t) {
		if !strings.HasPrefix(p.path, "keel/") || p.path == "keel" {
			continue
		}
		lib := !strings.HasPrefix(p.path, "keel/applets") && !strings.HasPrefix(p.path, "keel/integration")
		for _, imp := range p.imports {
			if lib && (imp == "keel/applets" || strings.HasPrefix(imp, "keel/applets/") && imp != "keel/applets/registry") {
				t.Errorf("library package %s imports %s", p.path, imp)
			}
			for _, d := range dataPath {
				if (p.path == d || strings.HasPrefix(p.path, d+"/")) && (imp == "keel/mgmt" || imp == "keel/mgmt/api") {
					t.Errorf("data-path package %s imports the management API %s", p.path, imp)
				}
			}
		}
	}
}
