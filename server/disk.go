package server

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"
)

var (
	// ErrHasSuperblock means the device already holds a keel disk.
	ErrHasSuperblock = errors.New("already a keel disk")
	// ErrMounted means the device (or a partition of it) is mounted or
	// otherwise in use.
	ErrMounted = errors.New("device in use")
)

// InitDisk writes a new superblock on path (a block device or a file)
// after the checks an operator needs: the path exists, is not mounted or in
// use, holds no keel superblock unless force, and is large enough.
func InitDisk(path string, p FormatParams, force bool) (Superblock, error) {
	st, err := os.Stat(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return Superblock{}, fmt.Errorf("init %s: no such file or device; for a file-backed disk create it first, e.g. truncate -s 100G %s", path, path)
		}
		return Superblock{}, fmt.Errorf("init %s: %w", path, err)
	}
	flags := os.O_RDWR
	switch {
	case st.Mode()&os.ModeDevice != 0 && st.Mode()&os.ModeCharDevice == 0:
		if m, ok := mountedAt(path); ok {
			return Superblock{}, fmt.Errorf("init %s: %w: %s is mounted on %s; unmount it first", path, ErrMounted, m.dev, m.dir)
		}
		flags |= syscall.O_EXCL // a block device in use (mounted, RAID, LVM) refuses
	case !st.Mode().IsRegular():
		return Superblock{}, fmt.Errorf("init %s: not a block device or a regular file", path)
	}
	f, err := os.OpenFile(path, flags, 0)
	if err != nil {
		if errors.Is(err, syscall.EBUSY) {
			return Superblock{}, fmt.Errorf("init %s: %w: the kernel holds it (mounted, swap, RAID or LVM member)", path, ErrMounted)
		}
		return Superblock{}, fmt.Errorf("init %s: %w", path, err)
	}
	dev := &fileDevice{File: f}
	defer dev.Close()
	size, err := deviceSize(f)
	if err != nil {
		return Superblock{}, fmt.Errorf("init %s: %w", path, err)
	}
	head := make([]byte, superblockSize)
	if _, err := f.ReadAt(head, 0); err != nil && !errors.Is(err, io.EOF) {
		return Superblock{}, fmt.Errorf("init %s: %w", path, err)
	}
	if HasMagic(head) && !force {
		old, perr := ParseSuperblock(head)
		what := "a damaged keel superblock"
		if perr == nil {
			what = fmt.Sprintf("keel disk %d of cluster %s", old.DiskID, old.ClusterID)
		}
		return Superblock{}, fmt.Errorf("init %s: %w: it holds %s; use --force to overwrite it and lose its data", path, ErrHasSuperblock, what)
	}
	sb, err := PlanSuperblock(size, p)
	if err != nil {
		return Superblock{}, fmt.Errorf("init %s: %w", path, err)
	}
	if err := Format(dev, sb); err != nil {
		return Superblock{}, fmt.Errorf("init %s: %w", path, err)
	}
	return sb, nil
}

type mount struct{ dev, dir string }

// mountedAt reports a mount of path or of a partition of it.
func mountedAt(path string) (mount, bool) {
	real, err := filepath.EvalSymlinks(path)
	if err != nil {
		real = path
	}
	f, err := os.Open("/proc/self/mounts")
	if err != nil {
		return mount{}, false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) < 2 || !strings.HasPrefix(fs[0], "/dev/") {
			continue
		}
		src := fs[0]
		if r, err := filepath.EvalSymlinks(src); err == nil {
			src = r
		}
		rest, ok := strings.CutPrefix(src, real)
		if ok && (rest == "" || strings.TrimLeft(strings.TrimPrefix(rest, "p"), "0123456789") == "") {
			return mount{dev: src, dir: fs[1]}, true
		}
	}
	return mount{}, false
}

// LocalDisk is one keel disk (or candidate) this node can see.
type LocalDisk struct {
	Path      string    `json:"path"`
	State     string    `json:"state"` // ok, missing, no superblock, bad superblock, error
	Error     string    `json:"error,omitempty"`
	DiskID    uint32    `json:"diskId,omitempty"`
	ClusterID string    `json:"clusterId,omitempty"`
	NodeID    uint32    `json:"nodeId,omitempty"`
	SSD       bool      `json:"ssd"`
	SizeBytes uint64    `json:"sizeBytes,omitempty"`
	Created   time.Time `json:"created,omitzero"`
}

// ProbeDisk reads the superblock of path without changing anything.
func ProbeDisk(path string) LocalDisk {
	d := LocalDisk{Path: path}
	f, err := os.Open(path)
	if err != nil {
		d.State, d.Error = "missing", err.Error()
		if !errors.Is(err, os.ErrNotExist) {
			d.State = "error"
		}
		return d
	}
	defer f.Close()
	head := make([]byte, superblockSize)
	if _, err := f.ReadAt(head, 0); err != nil && !errors.Is(err, io.EOF) {
		d.State, d.Error = "error", err.Error()
		return d
	}
	sb, err := ParseSuperblock(head)
	switch {
	case errors.Is(err, ErrNoSuperblock):
		d.State = "no superblock"
		return d
	case err != nil:
		d.State, d.Error = "bad superblock", err.Error()
		return d
	}
	d.State, d.DiskID, d.ClusterID, d.NodeID, d.SSD, d.SizeBytes, d.Created = "ok", sb.DiskID, sb.ClusterID, sb.NodeID, sb.SSD, sb.Size, sb.Created
	return d
}

// ListLocalDisks probes the given paths (configured and remembered disks)
// and every whole block device under /dev, and returns the named paths and
// any device holding a keel superblock, sorted by path.
func ListLocalDisks(paths []string) []LocalDisk {
	seen := map[string]bool{}
	var out []LocalDisk
	for _, p := range paths {
		if seen[p] {
			continue
		}
		seen[p] = true
		out = append(out, ProbeDisk(p))
	}
	devs, _ := filepath.Glob("/sys/block/*")
	for _, d := range devs {
		p := "/dev/" + filepath.Base(d)
		if seen[p] {
			continue
		}
		if ld := ProbeDisk(p); ld.State == "ok" || ld.State == "bad superblock" {
			seen[p] = true
			out = append(out, ld)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out
}
