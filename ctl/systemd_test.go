package ctl_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"keel/ctl"
	"keel/internal/systemdtest"
)

// TestCtlVerbs runs the real keel applets of the binary under test
// (keel_mgmt, keel_server, keel_client, Type=notify, on the test system's
// own loopback); the promotion and stop-check tests, which need no real
// service behind the units, run /bin/sleep. The failing service runs the
// keel binary with a missing file, so its journal holds keel's own error.
// Each records its stop in Dir/stopped: systemd forgets the timestamps of
// a stopped unit once it unloads it.
func longRunning(desc string) string {
	return withStopRecord(unitText(desc, "simple", "/bin/sleep infinity"))
}

func withStopRecord(unit string) string {
	return unit + "\n[Service]\nExecStopPost=/bin/sh -c 'echo %n >> " + systemdtest.Dir + "/stopped'\n"
}

// applet is a unit running a keel applet with the node's real
// configuration (nodeConfig) and a state directory of its own.
func applet(desc, role string) string {
	return withStopRecord(unitText(desc, "notify", fmt.Sprintf("%s %s --config %s/node.toml --state-dir %s/state-%s",
		systemdtest.Keel, role, systemdtest.Dir, systemdtest.Dir, role)))
}

// nodeConfig is the configuration of the applets: a one-voter mgmt, a
// server without disks and a client, all on the test system's loopback.
// keel_ctl itself reads keel.toml (configText), whose mgmt address may
// differ, to test the stop check.
func nodeConfig() string {
	d := systemdtest.Dir
	return fmt.Sprintf(`[node]
id = 3
roles = ["mgmt", "server", "client"]
run_dir = "%[1]s/run"

[mgmt]
api_url = "http://127.0.0.1:8081"
listen = "127.0.0.1:8081"
raft_addr = "127.0.0.1:8082"
token_file = "%[1]s/api-token"
cluster_secret_file = "%[1]s/cluster-secret"

[server]
listen = "127.0.0.1:3749"
socket = ""

[client]
dev_dir = "%[1]s/dev"
`, d)
}

func unitText(desc, typ, exec string) string {
	return fmt.Sprintf("[Unit]\nDescription=%s\nDefaultDependencies=no\n\n[Service]\nType=%s\nExecStart=%s\n\n[Install]\nWantedBy=multi-user.target\n", desc, typ, exec)
}

// nothingListens is a management API address inside the test system's
// network namespace where nothing listens.
const nothingListens = "http://127.0.0.1:9"

func configText(roles, apiURL string) string {
	return fmt.Sprintf("[node]\nid = 3\nroles = [%s]\n\n[mgmt]\napi_url = %q\ntoken_file = %q\n\n[services]\ntimeout = \"20s\"\n",
		roles, apiURL, systemdtest.Dir+"/api-token")
}

type ctlResult struct {
	code           int
	stdout, stderr string
}

// keelCtl runs keel_ctl inside the test system with its configuration.
func keelCtl(t *testing.T, s *systemdtest.System, args ...string) ctlResult {
	t.Helper()
	cmd := s.Command(systemdtest.Dir+"/keel_ctl", append(args, "--config", systemdtest.Dir+"/keel.toml")...)
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	r := ctlResult{stdout: out.String(), stderr: errb.String()}
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	case err != nil:
		t.Fatalf("keel_ctl %v: %v", args, err)
	}
	t.Logf("keel_ctl %s -> %d\n%s%s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
	return r
}

func wantCode(t *testing.T, r ctlResult, code int) {
	t.Helper()
	if r.code != code {
		t.Fatalf("exit status %d, want %d\nstdout:\n%s\nstderr:\n%s", r.code, code, r.stdout, r.stderr)
	}
}

func wantActive(t *testing.T, s *systemdtest.System, want string, units ...string) {
	t.Helper()
	for _, u := range units {
		if got := s.Show(u, "ActiveState"); got != want {
			t.Errorf("%s is %s, want %s", u, got, want)
		}
	}
}

// wantOrder checks that a monotonic timestamp property of the units
// increases in the order given.
func wantOrder(t *testing.T, s *systemdtest.System, prop string, units ...string) {
	t.Helper()
	var last uint64
	for _, u := range units {
		v, err := strconv.ParseUint(s.Show(u, prop), 10, 64)
		if err != nil || v == 0 {
			t.Fatalf("%s of %s: %q %v", prop, u, s.Show(u, prop), err)
		}
		if v <= last {
			t.Errorf("%s: %s is %d, not after the previous unit's %d", prop, u, v, last)
		}
		last = v
	}
}

const (
	mgmtUnit   = "keel_mgmt.service"
	serverUnit = "keel_server.service"
	clientUnit = "keel_client.service"
	bridgeUnit = "keel_bridge.service"
)

func bootNode(t *testing.T) *systemdtest.System {
	s := systemdtest.Boot(t, systemdtest.Options{
		Units: map[string]string{
			mgmtUnit:   applet("keel management", "mgmt"),
			serverUnit: applet("keel storage server", "server"),
			clientUnit: applet("keel block client", "client"),
			// Type=notify: the start job fails when the process exits
			// before it is ready.
			bridgeUnit: unitText("keel bridge (test, fails)", "notify", systemdtest.Keel+" config check "+systemdtest.Dir+"/no-such.toml"),
		},
		Journald: true,
	})
	s.WriteFile("keel.toml", configText(`"mgmt", "server", "client"`, nothingListens))
	s.WriteFile("node.toml", nodeConfig())
	// The cluster's identity, secret and API token, as on a first mgmt node.
	init := s.Command(systemdtest.Keel, "cluster", "init", "--name", "ctltest", "--location", "lab",
		"--config", systemdtest.Dir+"/node.toml", "--state-dir", systemdtest.Dir+"/state-mgmt")
	if out, err := init.CombinedOutput(); err != nil {
		t.Fatalf("keel cluster init: %v\n%s", err, out)
	}
	return s
}

// TestCtlVerbs drives every verb of keel_ctl against a real systemd: the
// order of starts and stops, a unit that fails to start, a missing unit,
// the stop safety check refusing when mgmt cannot be asked, and --force.
func TestCtlVerbs(t *testing.T) {
	s := bootNode(t)
	all := []string{mgmtUnit, serverUnit, clientUnit}

	t.Run("status of stopped services", func(t *testing.T) {
		r := keelCtl(t, s, "status")
		wantCode(t, r, 1)
		for _, u := range append(all, bridgeUnit) {
			if !strings.Contains(r.stdout, u) {
				t.Errorf("status does not list %s", u)
			}
		}
		if !strings.Contains(r.stdout, "inactive/dead") {
			t.Error("status does not show inactive/dead")
		}
	})

	t.Run("usage errors", func(t *testing.T) {
		wantCode(t, keelCtl(t, s, "start", "no such"), 2)
		wantCode(t, keelCtl(t, s, "frobnicate"), 2)
		wantCode(t, keelCtl(t, s, "start", "--timeout", "soon"), 2)
	})

	t.Run("start named services in dependency order", func(t *testing.T) {
		r := keelCtl(t, s, "start", "client", "keel_server.service", "storpool_mgmt")
		wantCode(t, r, 0)
		wantActive(t, s, "active", all...)
		wantOrder(t, s, "ActiveEnterTimestampMonotonic", all...)
		if n := strings.Count(r.stdout, ": started (active/running"); n != 3 {
			t.Errorf("%d lines say started, want 3", n)
		}
	})

	t.Run("status json", func(t *testing.T) {
		r := keelCtl(t, s, "status", "--json", "mgmt", "server", "client")
		wantCode(t, r, 0)
		var outs []ctl.Outcome
		if err := json.Unmarshal([]byte(r.stdout), &outs); err != nil {
			t.Fatalf("status --json: %v", err)
		}
		if len(outs) != 3 {
			t.Fatalf("%d services, want 3", len(outs))
		}
		for i, o := range outs {
			if o.Unit != all[i] || !o.OK || o.Status.Active != "active" || o.Status.Sub != "running" || o.Status.Enabled != "disabled" {
				t.Errorf("service %d: %+v", i, o)
			}
			if want := s.Show(o.Unit, "MainPID"); strconv.Itoa(int(o.Status.MainPID)) != want {
				t.Errorf("%s: main PID %d, systemd says %s", o.Unit, o.Status.MainPID, want)
			}
			if o.Status.Since.IsZero() || o.Status.UptimeS < 0 {
				t.Errorf("%s: since %v uptime %d", o.Unit, o.Status.Since, o.Status.UptimeS)
			}
		}
	})

	t.Run("start all with one failing unit", func(t *testing.T) {
		r := keelCtl(t, s, "start")
		wantCode(t, r, 1)
		wantActive(t, s, "active", all...)
		wantActive(t, s, "failed", bridgeUnit)
		if !strings.Contains(r.stderr, bridgeUnit+": start: job failed") {
			t.Errorf("the failure is not named:\n%s", r.stderr)
		}
		if !strings.Contains(r.stderr, "last exit: exited 2") {
			t.Errorf("the exit status is not shown:\n%s", r.stderr)
		}
		// keel's own complaint about the missing file, from the journal.
		if !strings.Contains(r.stderr, "no-such.toml") || !strings.Contains(r.stderr, "journal lines") {
			t.Errorf("the journal lines of the failed unit are not shown:\n%s", r.stderr)
		}
		if strings.Contains(r.stderr, mgmtUnit) {
			t.Errorf("a running service is reported as a failure:\n%s", r.stderr)
		}
	})

	t.Run("status shows the failure", func(t *testing.T) {
		r := keelCtl(t, s, "status")
		wantCode(t, r, 1)
		if !strings.Contains(r.stdout, "failed/failed") || !strings.Contains(r.stdout, "exited 2") {
			t.Errorf("status does not show the failed unit and its exit:\n%s", r.stdout)
		}
		r = keelCtl(t, s, "status", "--batch")
		wantCode(t, r, 1)
		if r.stdout != "" || strings.Count(r.stderr, "\n") != 1 || !strings.Contains(r.stderr, bridgeUnit) {
			t.Errorf("status --batch must print only the one failure:\n%q\n%q", r.stdout, r.stderr)
		}
	})

	t.Run("missing unit", func(t *testing.T) {
		r := keelCtl(t, s, "start", "nvmed")
		wantCode(t, r, 1)
		if !strings.Contains(r.stderr, "keel_nvmed.service: unit not installed") {
			t.Errorf("missing unit not reported:\n%s", r.stderr)
		}
		wantCode(t, keelCtl(t, s, "status", "nvmed"), 1)
		// Stopping what is not installed leaves it as stopped as it gets.
		wantCode(t, keelCtl(t, s, "stop", "nvmed"), 0)
	})

	t.Run("batch prints nothing on success", func(t *testing.T) {
		r := keelCtl(t, s, "start", "--batch", "mgmt", "client")
		wantCode(t, r, 0)
		if r.stdout != "" || r.stderr != "" {
			t.Errorf("--batch printed %q %q", r.stdout, r.stderr)
		}
	})

	t.Run("restart without the server needs no check", func(t *testing.T) {
		before := s.Show(clientUnit, "MainPID")
		wantCode(t, keelCtl(t, s, "restart", "client"), 0)
		if after := s.Show(clientUnit, "MainPID"); after == before || after == "0" {
			t.Errorf("client main PID %s -> %s: not restarted", before, after)
		}
	})

	t.Run("stop refused when mgmt cannot be asked", func(t *testing.T) {
		for _, args := range [][]string{{"stop"}, {"stop", "server"}, {"restart", "server"}} {
			pid := s.Show(serverUnit, "MainPID")
			r := keelCtl(t, s, args...)
			wantCode(t, r, 1)
			if strings.Count(r.stderr, "\n") != 1 || !strings.Contains(r.stderr, "refusing to stop the server "+serverUnit+": cannot ask mgmt") {
				t.Errorf("%v: want one line saying why it refused:\n%s", args, r.stderr)
			}
			wantActive(t, s, "active", all...)
			if s.Show(serverUnit, "MainPID") != pid {
				t.Errorf("%v: the server was restarted although refused", args)
			}
		}
	})

	t.Run("stop --force in reverse order", func(t *testing.T) {
		r := keelCtl(t, s, "stop", "--force")
		wantCode(t, r, 0)
		wantActive(t, s, "inactive", all...)
		b, err := os.ReadFile(filepath.Join(s.HostDir, "stopped"))
		if err != nil {
			t.Fatal(err)
		}
		// The earlier restart of the client stopped it once before.
		want := strings.Join([]string{clientUnit, clientUnit, serverUnit, mgmtUnit}, "\n") + "\n"
		if string(b) != want {
			t.Errorf("stopped in the order\n%s\nwant\n%s", b, want)
		}
	})

	t.Run("stopping a stopped server needs no check", func(t *testing.T) {
		wantCode(t, keelCtl(t, s, "stop", "server"), 0)
	})

	t.Run("enable and disable", func(t *testing.T) {
		r := keelCtl(t, s, "enable", "mgmt", "server", "client", "bridge")
		wantCode(t, r, 0)
		for _, u := range append(all, bridgeUnit) {
			if got := s.Show(u, "UnitFileState"); got != "enabled" {
				t.Errorf("%s is %s after enable", u, got)
			}
			if _, err := os.Lstat(filepath.Join(s.UnitDir, "multi-user.target.wants", u)); err != nil {
				t.Errorf("enable did not link %s: %v", u, err)
			}
		}
		wantCode(t, keelCtl(t, s, "disable", "bridge"), 0)
		if got := s.Show(bridgeUnit, "UnitFileState"); got != "disabled" {
			t.Errorf("bridge is %s after disable", got)
		}
		r = keelCtl(t, s, "status", "--json", "mgmt")
		var outs []ctl.Outcome
		if err := json.Unmarshal([]byte(r.stdout), &outs); err != nil || len(outs) != 1 || outs[0].Status.Enabled != "enabled" {
			t.Errorf("status after enable: %v %+v", err, outs)
		}
	})

	t.Run("start timeout", func(t *testing.T) {
		// Never signals readiness: the start job outlives --timeout.
		s.WriteUnit("keel_stat.service", unitText("keel stat (test, never ready)", "notify", "/bin/sleep 600"))
		r := keelCtl(t, s, "start", "stat", "--timeout", "1s")
		wantCode(t, r, 1)
		if !strings.Contains(r.stderr, "did not finish within 1s") {
			t.Errorf("timeout not reported:\n%s", r.stderr)
		}
		wantCode(t, keelCtl(t, s, "stop", "stat"), 0)
		wantActive(t, s, "inactive", "keel_stat.service")
	})
}

// A client-only node becomes converged: its configuration gains the server
// role and the server's unit is installed; `keel_ctl enable && keel_ctl
// start` brings the server up too.
func TestCtlPromoteClientToConverged(t *testing.T) {
	s := systemdtest.Boot(t, systemdtest.Options{Units: map[string]string{clientUnit: longRunning("keel client (test)")}})
	s.WriteFile("keel.toml", configText(`"client"`, nothingListens))
	wantCode(t, keelCtl(t, s, "enable"), 0)
	wantCode(t, keelCtl(t, s, "start"), 0)
	wantActive(t, s, "active", clientUnit)

	// systemd has seen the server's unit missing before it is installed.
	r := keelCtl(t, s, "status", "server")
	wantCode(t, r, 1)
	if !strings.Contains(r.stdout, "not-found") {
		t.Errorf("status of the server before it is installed:\n%s", r.stdout)
	}
	s.WriteUnit(serverUnit, longRunning("keel server (test)"))
	s.WriteFile("keel.toml", configText(`"client", "server"`, nothingListens))
	r = keelCtl(t, s, "status", "server")
	wantCode(t, r, 1)
	if !strings.Contains(r.stdout, "inactive/dead") {
		t.Errorf("status of the server once installed:\n%s", r.stdout)
	}
	r = keelCtl(t, s, "enable")
	wantCode(t, r, 0)
	if !strings.Contains(r.stdout, serverUnit+": enabled") {
		t.Errorf("enable did not report the new server:\n%s", r.stdout)
	}
	wantCode(t, keelCtl(t, s, "start"), 0)
	wantActive(t, s, "active", clientUnit, serverUnit)
	if got := s.Show(serverUnit, "UnitFileState"); got != "enabled" {
		t.Errorf("server is %s", got)
	}
	// The server started after the client was already up; a restart of
	// both puts them back in order.
	r = keelCtl(t, s, "restart", "--force")
	wantCode(t, r, 0)
	wantOrder(t, s, "ActiveEnterTimestampMonotonic", serverUnit, clientUnit)
}

// The stop safety check with mgmt answering: a static reply served inside
// the test system's network namespace by python3's http.server stands in
// for keel_mgmt's NodeStopCheck.
func TestCtlStopCheckAnswers(t *testing.T) {
	const python = "/usr/bin/python3"
	if _, err := os.Stat(python); err != nil {
		t.Skipf("no %s to serve the stop check reply: %v", python, err)
	}
	s := systemdtest.Boot(t, systemdtest.Options{
		Units: map[string]string{
			serverUnit: longRunning("keel server (test)"),
			"mgmt-reply.service": unitText("NodeStopCheck replies (test)", "simple",
				python+" -m http.server --bind 127.0.0.1 --directory "+systemdtest.Dir+"/api 18081"),
		},
		Wants: []string{serverUnit, "mgmt-reply.service"},
	})
	s.WriteFile("keel.toml", configText(`"server"`, "http://127.0.0.1:18081"))
	s.WriteFile("api-token", "test-token\n")
	reply := func(v ctl.StopVerdict) {
		b, _ := json.Marshal(map[string]any{"generation": 1, "data": v})
		s.WriteFile("api/ctrl/1.0/NodeStopCheck/3", string(b))
	}
	// Wait for the reply server to listen.
	reply(ctl.StopVerdict{Reason: "disk 301 holds the last up copy of volume vm1"})
	for i := 0; ; i++ {
		if err := s.Command("/bin/bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/18081").Run(); err == nil || i > 100 {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}

	r := keelCtl(t, s, "restart", "server")
	wantCode(t, r, 1)
	if !strings.Contains(r.stderr, "refusing to stop the server "+serverUnit+": disk 301 holds the last up copy of volume vm1; put the node in maintenance first") {
		t.Errorf("unsafe stop not refused with mgmt's reason:\n%s", r.stderr)
	}
	wantActive(t, s, "active", serverUnit)

	reply(ctl.StopVerdict{Reason: "in maintenance", Maintenance: true})
	pid := s.Show(serverUnit, "MainPID")
	wantCode(t, keelCtl(t, s, "restart", "server"), 0)
	if s.Show(serverUnit, "MainPID") == pid {
		t.Error("restart allowed in maintenance did not restart the server")
	}

	reply(ctl.StopVerdict{Safe: true})
	wantCode(t, keelCtl(t, s, "stop", "server"), 0)
	wantActive(t, s, "inactive", serverUnit)
}
