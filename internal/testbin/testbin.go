// Package testbin gives integration tests the built keel binary and the
// external tools they drive. Tests use the binary of `make build` when
// KEEL_BINARY names it, else build one (static, like the release) once per
// test process.
package testbin

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
)

var (
	buildOnce sync.Once
	buildPath string
	buildErr  error
)

// Keel returns the path of the keel binary under test.
func Keel(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("KEEL_BINARY"); p != "" {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("KEEL_BINARY: %v", err)
		}
		return p
	}
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "keel-testbin-")
		if err != nil {
			buildErr = err
			return
		}
		buildPath = filepath.Join(dir, "keel")
		cmd := exec.Command("go", "build", "-trimpath", "-o", buildPath, ".")
		cmd.Dir = ModuleRoot()
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = &buildError{out: string(out), err: err}
		}
	})
	if buildErr != nil {
		t.Fatalf("build keel: %v", buildErr)
	}
	return buildPath
}

// Main runs a package's tests (call it from TestMain) and then removes
// the binary Keel built for them, if any, so that test runs without
// KEEL_BINARY leave nothing in the temporary directory.
func Main(m *testing.M) int {
	code := m.Run()
	if buildPath != "" {
		os.RemoveAll(filepath.Dir(buildPath))
	}
	return code
}

type buildError struct {
	out string
	err error
}

func (e *buildError) Error() string { return e.err.Error() + "\n" + e.out }

// ModuleRoot is the directory holding go.mod.
func ModuleRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// NeedTool returns the path of an external tool (a command name, or the
// path of a file such as a plugin module). A missing tool fails the test
// when CI=true (CI installs every tool, so missing is a defect there) and
// skips it elsewhere.
func NeedTool(t testing.TB, name string) string {
	t.Helper()
	var p string
	var err error
	if strings.Contains(name, "/") {
		p = name
		_, err = os.Stat(name)
	} else {
		p, err = exec.LookPath(name)
	}
	if err == nil {
		return p
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s is required under CI=true but not installed: %v (scripts/test-deps.sh installs it)", name, err)
	}
	t.Skipf("%s not installed: %v", name, err)
	return ""
}

// NeedRoot fails under CI (which runs as root) and skips elsewhere when the
// test is not running as root.
func NeedRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("this test needs root, and CI runs as root")
	}
	t.Skip("needs root")
}
