package node

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestParseLogLevel(t *testing.T) {
	for in, want := range map[string]slog.Level{"debug": slog.LevelDebug, "info": slog.LevelInfo, "warn": slog.LevelWarn, "error": slog.LevelError} {
		if got, err := ParseLogLevel(in); err != nil || got != want {
			t.Errorf("%s: %v %v", in, got, err)
		}
	}
	if _, err := ParseLogLevel("loud"); err == nil || !strings.Contains(err.Error(), "loud") {
		t.Errorf("bad level: %v", err)
	}
}

// To a plain file the logger writes JSON lines and honours the level; under
// the journal (JOURNAL_STREAM naming the stream) it writes text without a
// timestamp.
func TestNewLogger(t *testing.T) {
	p := filepath.Join(t.TempDir(), "log")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	t.Setenv("JOURNAL_STREAM", "")
	log := NewLogger(f, slog.LevelInfo, false)
	log.Debug("hidden")
	log.Info("hello", "disk", 3)
	b, _ := os.ReadFile(p)
	var rec map[string]any
	if err := json.Unmarshal(b, &rec); err != nil || rec["msg"] != "hello" || rec["disk"] != float64(3) {
		t.Fatalf("not one JSON record: %q %v", b, err)
	}

	j := filepath.Join(t.TempDir(), "journal")
	jf, _ := os.Create(j)
	defer jf.Close()
	var st syscall.Stat_t
	if err := syscall.Fstat(int(jf.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	t.Setenv("JOURNAL_STREAM", fmt.Sprintf("%d:%d", st.Dev, st.Ino))
	NewLogger(jf, slog.LevelInfo, false).Info("to journal")
	b, _ = os.ReadFile(j)
	if s := string(b); !strings.HasPrefix(s, "level=INFO msg=\"to journal\"") {
		t.Fatalf("journal line %q", s)
	}
}

func TestNotifyReady(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	t.Setenv("NOTIFY_SOCKET", sock)
	NotifyReady(slog.New(slog.NewTextHandler(os.Stderr, nil)))
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 256)
	n, err := conn.Read(buf)
	if err != nil || string(buf[:n]) != "READY=1" {
		t.Fatalf("got %q %v, want READY=1", buf[:n], err)
	}
}
