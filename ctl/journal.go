package ctl

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// journaldSocket exists while journald runs; without it there is no journal
// to read.
const journaldSocket = "/run/systemd/journal/socket"

// JournalTail returns the last lines of unit's journal. journalctl is the
// one reader of journal files keel can rely on (their format has no Go
// reader without cgo), so it is run here, read-only, with a deadline.
func JournalTail(ctx context.Context, unit string, lines int) ([]string, error) {
	if _, err := os.Stat(journaldSocket); err != nil {
		return nil, fmt.Errorf("%w (no %s), so no journal lines for %s", ErrNoJournald, journaldSocket, unit)
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "journalctl", "--unit", unit, "--lines", strconv.Itoa(lines),
		"--no-pager", "--quiet", "--output", "short-iso")
	out, err := cmd.Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) && len(ee.Stderr) > 0 {
			err = fmt.Errorf("%w: %s", err, strings.TrimSpace(string(ee.Stderr)))
		}
		return nil, fmt.Errorf("read journal of %s: %w", unit, err)
	}
	text := strings.TrimRight(string(out), "\n")
	if text == "" {
		return nil, nil
	}
	return strings.Split(text, "\n"), nil
}
