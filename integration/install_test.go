package integration

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"keel/internal/testbin"
)

// make install with DESTDIR puts the binary, its links, the default
// configuration and the units under DESTDIR and nowhere else; a second run
// keeps an operator's edited configuration.
func TestMakeInstallDestdir(t *testing.T) {
	testbin.NeedTool(t, "make")
	dest := t.TempDir()
	install := func() {
		cmd := exec.Command("make", "-s", "-o", "build", "install", "BIN="+testbin.Keel(t), "DESTDIR="+dest)
		cmd.Dir = testbin.ModuleRoot()
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("make install: %v\n%s", err, out)
		}
	}
	install()
	sbin := filepath.Join(dest, "usr/sbin")
	if fi, err := os.Stat(filepath.Join(sbin, "keel")); err != nil || fi.Mode().Perm() != 0o755 {
		t.Fatalf("binary not installed: %v", err)
	}
	ents, _ := os.ReadDir(sbin)
	for _, e := range ents {
		if e.Name() == "keel" {
			continue
		}
		if target, err := os.Readlink(filepath.Join(sbin, e.Name())); err != nil || target != "keel" {
			t.Errorf("%s -> %q %v, want a relative link to keel", e.Name(), target, err)
		}
	}
	cfg := filepath.Join(dest, "etc/keel/keel.toml")
	if err := exec.Command(testbin.Keel(t), "config", "check", cfg).Run(); err != nil {
		t.Fatalf("installed default configuration does not check: %v", err)
	}
	if fi, err := os.Stat(filepath.Join(dest, "etc/keel/keel.d")); err != nil || !fi.IsDir() {
		t.Fatalf("keel.d not created: %v", err)
	}
	edited := []byte("[node]\nid = 9\n")
	os.WriteFile(cfg, edited, 0o644)
	install()
	if b, _ := os.ReadFile(cfg); string(b) != string(edited) {
		t.Fatal("a second make install replaced the operator's keel.toml")
	}
	units, _ := filepath.Glob(filepath.Join(testbin.ModuleRoot(), "dist/systemd/*.service"))
	for _, u := range units {
		if _, err := os.Stat(filepath.Join(dest, "lib/systemd/system", filepath.Base(u))); err != nil {
			t.Errorf("unit %s not installed: %v", filepath.Base(u), err)
		}
	}
}
