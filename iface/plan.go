package iface

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"keel/node"
)

// DetectStyle tells which network configuration system the OS under root
// uses, from the files it keeps:
//   - netplan when /etc/netplan holds a *.yaml file (Ubuntu's own files);
//   - ifcfg when /etc/sysconfig/network-scripts exists (RHEL and kin);
//   - ifupdown when /etc/network/interfaces exists (Debian);
//   - netplan when /etc/netplan exists but is empty.
func DetectStyle(root string) (Style, error) {
	if m, _ := filepath.Glob(filepath.Join(root, "etc/netplan/*.yaml")); len(m) > 0 {
		return StyleNetplan, nil
	}
	if isDir(filepath.Join(root, "etc/sysconfig/network-scripts")) {
		return StyleIfcfg, nil
	}
	if _, err := os.Stat(filepath.Join(root, "etc/network/interfaces")); err == nil {
		return StyleIfupdown, nil
	}
	if isDir(filepath.Join(root, "etc/netplan")) {
		return StyleNetplan, nil
	}
	return "", fmt.Errorf("detect style under %s: %w: none of etc/netplan/*.yaml, etc/sysconfig/network-scripts/, etc/network/interfaces exists; give --style ifupdown, ifcfg or netplan", root, ErrStyle)
}

func isDir(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.IsDir()
}

// Action is what applying a plan does to one file.
type Action string

// The actions.
const (
	ActionCreate    Action = "create"    // missing: written
	ActionUnchanged Action = "unchanged" // present with the same content
	ActionReplace   Action = "replace"   // present with other content, --overwrite given
	ActionKeep      Action = "differs"   // present with other content, left alone
)

// PlannedFile is a File and what applying the plan does to it.
type PlannedFile struct {
	File
	Action Action `json:"action"`
}

// Plan compares the files with what is under root.
func Plan(root string, files []File, overwrite bool) ([]PlannedFile, error) {
	var out []PlannedFile
	for _, f := range files {
		p := filepath.Join(root, f.Path)
		cur, err := os.ReadFile(p)
		act := ActionCreate
		switch {
		case errors.Is(err, fs.ErrNotExist):
		case err != nil:
			return nil, fmt.Errorf("plan: %w", err)
		case bytes.Equal(cur, []byte(f.Content)):
			act = ActionUnchanged
		case overwrite:
			act = ActionReplace
		default:
			act = ActionKeep
		}
		out = append(out, PlannedFile{File: f, Action: act})
	}
	return out, nil
}

// Apply writes the files a plan creates or replaces, each atomically. It
// writes nothing when some file differs and is not to be replaced: the
// configuration is applied whole or not at all.
func Apply(root string, plan []PlannedFile) error {
	var kept []string
	for _, f := range plan {
		if f.Action == ActionKeep {
			kept = append(kept, filepath.Join(root, f.Path))
		}
	}
	if len(kept) > 0 {
		return fmt.Errorf("%w: %s; nothing was written; compare them with --noop and rerun with --overwrite to replace them", ErrExists, strings.Join(kept, ", "))
	}
	for _, f := range plan {
		if f.Action != ActionCreate && f.Action != ActionReplace {
			continue
		}
		p := filepath.Join(root, f.Path)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return fmt.Errorf("apply: %w", err)
		}
		if err := node.WriteFileAtomic(p, []byte(f.Content), f.Mode); err != nil {
			return fmt.Errorf("apply: %w", err)
		}
	}
	return nil
}
