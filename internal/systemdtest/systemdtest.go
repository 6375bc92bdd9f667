// Package systemdtest boots a real systemd for tests, as PID 1 of its own
// PID, mount, network, UTS, IPC and cgroup namespaces, with tmpfs over
// /tmp, /run, /var/tmp (and /var/log/journal), the test's own unit
// directory over /etc/systemd/system, every packaged unit masked, and a
// cgroup of its own (created for it, removed after it) as the root of the
// cgroups it manages. Nothing it does is visible to the machine's own
// systemd or to another test system, and it never starts systemd in the
// machine's namespaces.
//
// The test's directory is visible inside as /run/keeltest (Dir); the keel
// binary under test is bound at /run/keeltest/keel (Keel).
package systemdtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"keel/internal/testbin"
)

// Paths inside the booted system.
const (
	// Dir is where the test's directory appears inside.
	Dir = "/run/keeltest"
	// Keel is the keel binary under test, inside.
	Keel = Dir + "/keel"
	// Target is the unit systemd boots into.
	Target = "keeltest.target"

	systemdBin = "/lib/systemd/systemd"
)

// Options describe the system to boot.
type Options struct {
	// Units are unit files (name -> text) of the test.
	Units map[string]string
	// Wants are the units the boot target starts.
	Wants []string
	// Journald runs systemd-journald inside (its files on a tmpfs), so that
	// units have a journal.
	Journald bool
}

// System is a booted systemd.
type System struct {
	t *testing.T
	// PID is systemd's process id as seen from the test.
	PID int
	// HostDir is the test's directory (Dir inside).
	HostDir string
	// UnitDir is the directory bound over /etc/systemd/system inside.
	UnitDir string

	unshare *exec.Cmd
	exited  chan struct{}
	log     *bytes.Buffer
	cgroup  string // the system's cgroup (v2), removed after it ends
}

// neededUnits are the packaged units a test system may use: journald (when
// asked for) and what `systemctl poweroff` runs. Every other packaged unit
// is masked.
var neededUnits = []string{
	"systemd-journald.service", "systemd-journald.socket", "systemd-journald-dev-log.socket",
	"systemd-poweroff.service", "systemd-halt.service", "systemd-exit.service",
}

// maskedKinds are the unit types that can start something; targets,
// slices and mount units of the machine stay as they are (the mounts are
// already private to the namespace).
var maskedKinds = []string{".service", ".socket", ".timer", ".path", ".automount", ".swap"}

// Boot starts systemd with the options' units and waits until its target
// is active. The system is powered off (and killed by PID if it hangs) when
// the test ends.
func Boot(t *testing.T, o Options) *System {
	t.Helper()
	testbin.NeedRoot(t)
	testbin.NeedTool(t, "unshare")
	testbin.NeedTool(t, "nsenter")
	if _, err := os.Stat(systemdBin); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s is required under CI=true: %v", systemdBin, err)
		}
		t.Skipf("no systemd: %v", err)
	}
	keel := testbin.Keel(t)
	host := t.TempDir()
	s := &System{t: t, HostDir: host, UnitDir: filepath.Join(host, "units"), exited: make(chan struct{}), log: &bytes.Buffer{}}
	must(t, os.MkdirAll(s.UnitDir, 0o755))
	must(t, maskPackaged(s.UnitDir, o.Journald))
	wants := slices.Clone(o.Wants)
	if o.Journald {
		wants = append(wants, "systemd-journald.socket", "systemd-journald-dev-log.socket", "systemd-journald.service")
	}
	target := fmt.Sprintf("[Unit]\nDescription=keel test system\nDefaultDependencies=no\nWants=%s\n", strings.Join(wants, " "))
	must(t, os.WriteFile(filepath.Join(s.UnitDir, Target), []byte(target), 0o644))
	for name, text := range o.Units {
		s.WriteUnit(name, text)
	}
	must(t, os.WriteFile(filepath.Join(host, "keel"), nil, 0o755)) // mount point of the binary
	must(t, os.Symlink("keel", filepath.Join(host, "keel_ctl")))

	cg, err := newCgroup()
	if err != nil {
		t.Fatalf("systemdtest: %v", err)
	}
	s.cgroup = cg

	// Stage 1, PID 1 of the new PID namespace: make every mount private
	// before changing any, so nothing propagates to the machine; move into
	// the test's own cgroup and make it the root of a new cgroup namespace,
	// so that this systemd manages only cgroups below it (two test systems
	// with a unit of the same name never touch each other's processes).
	stage1 := strings.Join([]string{
		"set -e",
		"mount --make-rprivate /",
		"echo $$ > " + shq(filepath.Join(cg, "cgroup.procs")),
		"exec unshare --cgroup /bin/sh " + shq(filepath.Join(host, "boot2.sh")),
	}, "\n") + "\n"
	// Stage 2: a cgroup2 mount rooted at that cgroup; the test's
	// directories bound while /tmp still shows them; then /tmp, /run and
	// /var/tmp (and the journal directory) hidden under tmpfs.
	stage2 := strings.Join([]string{
		"set -e",
		"mount -t cgroup2 cgroup2 /sys/fs/cgroup",
		"mount --bind " + shq(s.UnitDir) + " /etc/systemd/system",
		"mount -t tmpfs tmpfs /run",
		"mkdir -p " + Dir,
		"mount --bind " + shq(host) + " " + Dir,
		"mount --bind " + shq(keel) + " " + Keel,
		"mount -t tmpfs tmpfs /tmp",
		"mount -t tmpfs tmpfs /var/tmp",
		"if [ -d /var/log/journal ]; then mount -t tmpfs tmpfs /var/log/journal; fi",
		"exec " + systemdBin + " --system --unit=" + Target,
	}, "\n") + "\n"
	scriptPath := filepath.Join(host, "boot.sh")
	must(t, os.WriteFile(scriptPath, []byte(stage1), 0o755))
	must(t, os.WriteFile(filepath.Join(host, "boot2.sh"), []byte(stage2), 0o755))

	cmd := exec.Command("unshare", "--pid", "--fork", "--kill-child", "--mount", "--net", "--uts", "--ipc", "--mount-proc", "/bin/sh", scriptPath)
	cmd.Stdout, cmd.Stderr = s.log, s.log
	// Its own process group, so that a signal to the test's group never
	// reaches systemd, and systemd dies with the test if the test dies.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	must(t, cmd.Start())
	s.unshare = cmd
	go func() { cmd.Wait(); close(s.exited) }()
	t.Cleanup(s.shutdown)

	deadline := time.Now().Add(30 * time.Second)
	for s.PID == 0 {
		if pid := childOf(cmd.Process.Pid); pid > 0 && comm(pid) == "systemd" {
			s.PID = pid
			break
		}
		s.waitOrFail(deadline, "systemd to start")
	}
	for {
		if _, err := os.Stat(fmt.Sprintf("/proc/%d/root/run/systemd/private", s.PID)); err == nil {
			if out, err := s.Command("systemctl", "is-active", Target).Output(); err == nil && strings.TrimSpace(string(out)) == "active" {
				break
			}
		}
		s.waitOrFail(deadline, Target+" to become active")
	}
	return s
}

func (s *System) waitOrFail(deadline time.Time, what string) {
	s.t.Helper()
	select {
	case <-s.exited:
		s.t.Fatalf("systemd exited while waiting for %s:\n%s", what, s.log)
	case <-time.After(50 * time.Millisecond):
	}
	if time.Now().After(deadline) {
		s.t.Fatalf("timed out waiting for %s:\n%s", what, s.log)
	}
}

// WriteUnit writes (or replaces) a unit file of the test system; systemd
// sees it after a daemon reload or on first use.
func (s *System) WriteUnit(name, text string) {
	s.t.Helper()
	must(s.t, os.WriteFile(filepath.Join(s.UnitDir, name), []byte(text), 0o644))
}

// WriteFile writes a file into the test's directory (Dir/name inside) and
// returns its path inside.
func (s *System) WriteFile(name, text string) string {
	s.t.Helper()
	p := filepath.Join(s.HostDir, name)
	must(s.t, os.MkdirAll(filepath.Dir(p), 0o755))
	must(s.t, os.WriteFile(p, []byte(text), 0o644))
	return filepath.Join(Dir, name)
}

// Command runs a program inside the system's namespaces.
func (s *System) Command(name string, args ...string) *exec.Cmd {
	return s.CommandContext(context.Background(), name, args...)
}

// CommandContext is Command with a context.
func (s *System) CommandContext(ctx context.Context, name string, args ...string) *exec.Cmd {
	a := append([]string{"-t", strconv.Itoa(s.PID), "-m", "-p", "-n", "-u", "-i", "--", name}, args...)
	return exec.CommandContext(ctx, "nsenter", a...)
}

// Systemctl runs systemctl inside (the harness's own view of systemd,
// independent of the code under test) and returns its trimmed output.
func (s *System) Systemctl(args ...string) (string, error) {
	out, err := s.Command("systemctl", args...).CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

// Show returns one property of a unit as systemctl shows it.
func (s *System) Show(unit, prop string) string {
	s.t.Helper()
	out, err := s.Systemctl("show", "--value", "-p", prop, unit)
	if err != nil {
		s.t.Fatalf("systemctl show %s %s: %v: %s", prop, unit, err, out)
	}
	return out
}

// shutdown powers the system off and waits for it; if it does not go
// within 10 s, its PID 1 is killed, which ends every process in it.
func (s *System) shutdown() {
	if s.PID > 0 {
		s.Command("systemctl", "poweroff", "--no-block").Run()
	}
	select {
	case <-s.exited:
	case <-time.After(10 * time.Second):
		if s.PID > 0 {
			syscall.Kill(s.PID, syscall.SIGKILL)
		}
		s.unshare.Process.Kill()
		<-s.exited
	}
	if err := removeCgroup(s.cgroup); err != nil {
		s.t.Errorf("systemdtest: %v", err)
	}
}

// newCgroup creates an empty cgroup for one test system below the test's
// own cgroup in the cgroup2 hierarchy.
func newCgroup() (string, error) {
	mnt, err := cgroup2Mount()
	if err != nil {
		return "", err
	}
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return "", err
	}
	own := ""
	for _, l := range strings.Split(string(b), "\n") {
		if p, ok := strings.CutPrefix(l, "0::"); ok {
			own = p
		}
	}
	return os.MkdirTemp(filepath.Join(mnt, own), "keeltest-")
}

// cgroup2Mount finds where the cgroup2 hierarchy is mounted: /sys/fs/cgroup
// on a unified host, /sys/fs/cgroup/unified on a hybrid one.
func cgroup2Mount() (string, error) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return "", err
	}
	for _, l := range strings.Split(string(b), "\n") {
		// ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTS [OPTIONAL...] - FSTYPE SOURCE SUPEROPTS
		pre, post, ok := strings.Cut(l, " - ")
		f, g := strings.Fields(pre), strings.Fields(post)
		if ok && len(f) >= 5 && len(g) >= 1 && g[0] == "cgroup2" && f[3] == "/" {
			return f[4], nil
		}
	}
	return "", errors.New("no cgroup2 hierarchy mounted; the test system needs one")
}

// removeCgroup removes a test system's cgroup and everything systemd left
// below it, deepest first (a cgroup is removed with rmdir once empty).
func removeCgroup(dir string) error {
	if dir == "" {
		return nil
	}
	var dirs []string
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			dirs = append(dirs, p)
		}
		return nil
	})
	for i := len(dirs) - 1; i >= 0; i-- {
		// The kernel may take a moment to see the last process leave.
		var err error
		for try := 0; try < 50; try++ {
			if err = os.Remove(dirs[i]); err == nil || errors.Is(err, os.ErrNotExist) {
				err = nil
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		if err != nil {
			return fmt.Errorf("remove test cgroup: %w", err)
		}
	}
	return nil
}

// maskPackaged links every packaged unit that could start something to
// /dev/null in dir, except those a test system needs.
func maskPackaged(dir string, journald bool) error {
	for _, d := range []string{"/lib/systemd/system", "/usr/lib/systemd/system", "/etc/systemd/system"} {
		ents, err := os.ReadDir(d)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return err
		}
		for _, e := range ents {
			n := e.Name()
			if e.IsDir() || !slices.ContainsFunc(maskedKinds, func(k string) bool { return strings.HasSuffix(n, k) }) {
				continue
			}
			if slices.Contains(neededUnits, n) && (journald || !strings.HasPrefix(n, "systemd-journald")) {
				continue
			}
			err := os.Symlink("/dev/null", filepath.Join(dir, n))
			if err != nil && !errors.Is(err, os.ErrExist) {
				return err
			}
		}
	}
	return nil
}

// childOf returns the first child of pid (unshare --fork has exactly one).
func childOf(pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0
	}
	n, _ := strconv.Atoi(f[0])
	return n
}

func comm(pid int) string {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	return strings.TrimSpace(string(b))
}

// shq quotes a path for the boot script.
func shq(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
