package systemdtest

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The booted system is isolated: systemd is PID 1 of its own PID
// namespace, in other mount and network namespaces, with its own /run and
// /tmp and the test's unit directory; the machine's view does not change;
// and the whole system is gone when the test ends.
func TestBootIsolatedAndCleanedUp(t *testing.T) {
	var pid int
	var cgroup string
	hostUnits, _ := os.ReadDir("/etc/systemd/system")
	t.Run("boot", func(t *testing.T) {
		s := Boot(t, Options{
			Units: map[string]string{"probe.service": "[Unit]\nDefaultDependencies=no\n[Service]\nExecStartPre=/bin/sh -c 'echo inside > /tmp/probe'\nExecStart=/bin/sleep infinity\n"},
			Wants: []string{"probe.service"},
		})
		pid, cgroup = s.PID, s.cgroup
		if b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid)); !strings.Contains(string(b), "/"+filepath.Base(cgroup)+"/init.scope") {
			t.Errorf("systemd is not in its own cgroup %s: %s", cgroup, b)
		}
		if _, err := os.Stat(filepath.Join(cgroup, "system.slice", "probe.service")); err != nil {
			t.Errorf("the unit's cgroup is not below the system's own: %v", err)
		}
		for i := 0; s.Show("probe.service", "ActiveState") != "active"; i++ {
			if i > 100 {
				t.Fatalf("probe.service is %s", s.Show("probe.service", "ActiveState"))
			}
			time.Sleep(50 * time.Millisecond)
		}
		out, err := s.Command("/bin/sh", "-c", "cat /proc/1/comm /tmp/probe; test -x "+Keel+" && echo keel-visible").Output()
		if err != nil || string(out) != "systemd\ninside\nkeel-visible\n" {
			t.Fatalf("inside view: %q %v", out, err)
		}
		if _, err := os.Stat("/tmp/probe"); err == nil {
			t.Error("the unit's /tmp file leaked to the machine's /tmp")
		}
		if _, err := os.Stat(Dir); err == nil {
			t.Errorf("%s is visible outside", Dir)
		}
		for _, ns := range []string{"mnt", "net", "pid", "uts", "ipc", "cgroup"} {
			in, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/%s", pid, ns))
			out, _ := os.Readlink("/proc/self/ns/" + ns)
			if in == "" || in == out {
				t.Errorf("%s namespace of systemd %q is the test's %q", ns, in, out)
			}
		}
		if _, err := os.Lstat(filepath.Join(s.UnitDir, "systemd-sysctl.service")); err != nil {
			t.Errorf("packaged units are not masked: %v", err)
		}
	})
	if pid == 0 {
		return
	}
	if err := syscall.Kill(pid, 0); err == nil {
		if b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid)); strings.TrimSpace(string(b)) == "systemd" {
			t.Errorf("systemd (PID %d) still runs after the test ended", pid)
		}
	}
	if _, err := os.Stat(cgroup); err == nil {
		t.Errorf("the system's cgroup %s is left behind", cgroup)
	}
	after, _ := os.ReadDir("/etc/systemd/system")
	if len(after) != len(hostUnits) {
		t.Errorf("the machine's /etc/systemd/system changed: %d entries, was %d", len(after), len(hostUnits))
	}
}
