package node

import (
	"fmt"
	"log/slog"
	"os"
	"strings"
	"syscall"

	"github.com/coreos/go-systemd/v22/daemon"
)

// ParseLogLevel maps debug|info|warn|error to a slog level.
func ParseLogLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return 0, fmt.Errorf("log level %q: want debug, info, warn or error", s)
	}
	return l, nil
}

// NewLogger returns the logger an applet passes down. To a terminal it
// writes text; to journald (stderr is the stream JOURNAL_STREAM names) text
// without timestamps, since the journal adds its own; anywhere else, or
// when forceJSON is set, one JSON object per line.
func NewLogger(w *os.File, level slog.Level, forceJSON bool) *slog.Logger {
	opts := &slog.HandlerOptions{Level: level}
	switch {
	case forceJSON:
		return slog.New(slog.NewJSONHandler(w, opts))
	case IsTerminal(w):
		return slog.New(slog.NewTextHandler(w, opts))
	case underJournal(w):
		opts.ReplaceAttr = func(groups []string, a slog.Attr) slog.Attr {
			if len(groups) == 0 && a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return a
		}
		return slog.New(slog.NewTextHandler(w, opts))
	default:
		return slog.New(slog.NewJSONHandler(w, opts))
	}
}

// IsTerminal reports whether f is a character device (a terminal).
func IsTerminal(f *os.File) bool {
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// underJournal reports whether w is the stream systemd connected to the
// journal, as JOURNAL_STREAM=<dev>:<inode> says.
func underJournal(w *os.File) bool {
	js := os.Getenv("JOURNAL_STREAM")
	if js == "" {
		return false
	}
	var st syscall.Stat_t
	if err := syscall.Fstat(int(w.Fd()), &st); err != nil {
		return false
	}
	return strings.TrimSpace(js) == fmt.Sprintf("%d:%d", st.Dev, st.Ino)
}

// NotifyReady tells systemd (Type=notify units) that the service is ready.
// Outside systemd it does nothing.
func NotifyReady(log *slog.Logger) {
	if _, err := daemon.SdNotify(false, daemon.SdNotifyReady); err != nil {
		log.Warn("sd_notify READY failed", "err", err)
	}
}

// NotifyStopping tells systemd the service is shutting down.
func NotifyStopping() {
	_, _ = daemon.SdNotify(false, daemon.SdNotifyStopping)
}

// NotifyStatus sets the one-line status systemctl status shows.
func NotifyStatus(status string) {
	_, _ = daemon.SdNotify(false, "STATUS="+status)
}
