package ctl_test

import (
	"fmt"
	"os"
	"testing"
	"time"

	"keel/internal/systemdtest"
)

// TestCtlBench (KEEL_BENCH=1, run by scripts/bench.d/ctl.sh) times keel_ctl
// against systemctl doing the same work on the same test system in the
// same run: reading the state of three services, and restarting one.
// It prints the figures; it asserts nothing about them.
func TestCtlBench(t *testing.T) {
	if os.Getenv("KEEL_BENCH") != "1" {
		t.Skip("benchmark; run with KEEL_BENCH=1 (make bench)")
	}
	s := bootNode(t)
	// systemd's start rate limit would stop a unit restarted 60 times.
	s.WriteUnit("keel_stat.service", "[Unit]\nStartLimitIntervalSec=0\n"+longRunning("keel stat (test, restarted often)"))
	wantCode(t, keelCtl(t, s, "start", "mgmt", "server", "client", "stat"), 0)
	units := []string{mgmtUnit, serverUnit, clientUnit}
	const rounds = 30
	timeIt := func(name string, args ...string) time.Duration {
		start := time.Now()
		for i := 0; i < rounds; i++ {
			if out, err := s.Command(name, args...).CombinedOutput(); err != nil {
				t.Fatalf("%s %v: %v\n%s", name, args, err, out)
			}
		}
		return time.Since(start) / rounds
	}
	ctlArgs := func(args ...string) []string {
		return append(args, "--config", systemdtest.Dir+"/keel.toml", "--batch")
	}
	report := func(what string, keel, peer time.Duration) {
		fmt.Printf("%-28s keel_ctl %7.1f ms  systemctl %7.1f ms  ratio %.2f\n", what,
			float64(keel.Microseconds())/1000, float64(peer.Microseconds())/1000, float64(keel)/float64(peer))
	}
	report("status of 3 services",
		timeIt(systemdtest.Dir+"/keel_ctl", ctlArgs("status", "mgmt", "server", "client")...),
		timeIt("systemctl", append([]string{"show", "-p", "ActiveState,SubState,UnitFileState,MainPID,ActiveEnterTimestamp,ExecMainStatus"}, units...)...))
	report("restart of 1 service",
		timeIt(systemdtest.Dir+"/keel_ctl", ctlArgs("restart", "stat")...),
		timeIt("systemctl", "restart", "keel_stat.service"))
}
