// Package demotest starts demo clusters (package demo) for end-to-end
// tests: in the test's temporary directory, from the built binary, with
// their progress in the test log; stopped when the test ends, and the tail
// of every process log shown when it failed.
package demotest

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"keel/demo"
	"keel/internal/testbin"
)

// LogWriter writes each line it gets to the test log.
type LogWriter struct{ T testing.TB }

func (w LogWriter) Write(p []byte) (int, error) {
	w.T.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// Start starts a demo cluster with o; Dir, Binary and Out are filled in
// when empty. End-to-end tests are skipped with -short.
func Start(t *testing.T, o demo.Options) *demo.Cluster {
	t.Helper()
	if testing.Short() {
		t.Skip("end-to-end test (real processes); skipped with -short")
	}
	if o.Binary == "" {
		o.Binary = testbin.Keel(t)
	}
	if o.Dir == "" {
		o.Dir = t.TempDir()
	}
	if o.Out == nil {
		o.Out = LogWriter{t}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cl, err := demo.Start(ctx, o)
	if err != nil {
		ShowLogs(t, o.Dir)
		t.Fatalf("demo.Start: %v", err)
	}
	t.Cleanup(func() {
		if err := cl.Stop(); err != nil {
			t.Logf("demo stop: %v", err)
		}
		if t.Failed() {
			ShowLogs(t, o.Dir)
		}
	})
	return cl
}

// ShowLogs logs the tail of every process log of the demo in dir.
func ShowLogs(t testing.TB, dir string) {
	logs, _ := filepath.Glob(filepath.Join(dir, "node*", "log", "*.log"))
	for _, l := range logs {
		b, _ := os.ReadFile(l)
		if len(b) > 6000 {
			b = b[len(b)-6000:]
		}
		t.Logf("---- %s (tail) ----\n%s", l, b)
	}
}
