package freeport

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestTakeAvoidsTheEphemeralRange(t *testing.T) {
	ephLo, ephHi, err := ephemeral()
	if err != nil {
		t.Fatal(err)
	}
	ports, err := takeCounted(filepath.Join(t.TempDir(), "counter"), 50)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[int]bool{}
	for _, p := range ports {
		if p >= ephLo && p <= ephHi {
			t.Errorf("port %d is in the ephemeral range %d-%d", p, ephLo, ephHi)
		}
		if seen[p] {
			t.Errorf("port %d handed out twice", p)
		}
		seen[p] = true
	}
}

func TestTakeSkipsABoundPort(t *testing.T) {
	counter := filepath.Join(t.TempDir(), "counter")
	// Bind a port, then point the counter at it: Take must pass over it.
	first, err := takeCounted(counter, 1)
	if err != nil {
		t.Fatal(err)
	}
	busy := first[0]
	l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", busy))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if err := os.WriteFile(counter, []byte(strconv.Itoa(busy)), 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := takeCounted(counter, 1)
	if err != nil {
		t.Fatal(err)
	}
	if got[0] == busy {
		t.Fatalf("Take handed out port %d, which a listener holds", busy)
	}
}

// TestTakeConcurrentProcesses has several processes take ports through one
// counter at once: no port may go to two of them.
func TestTakeConcurrentProcesses(t *testing.T) {
	const procs, each = 4, 300
	counter := filepath.Join(t.TempDir(), "counter")
	var cmds []*exec.Cmd
	var outs []*strings.Builder
	for i := 0; i < procs; i++ {
		cmd := exec.Command(os.Args[0], "-test.run=^TestTakeHelperProcess$")
		cmd.Env = append(os.Environ(), fmt.Sprintf("KEEL_FREEPORT_HELPER=%s:%d", counter, each))
		out := &strings.Builder{}
		cmd.Stdout, cmd.Stderr = out, out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		cmds, outs = append(cmds, cmd), append(outs, out)
	}
	// Start them together, so that their takes interleave.
	if err := os.WriteFile(counter+".go", nil, 0o644); err != nil {
		t.Fatal(err)
	}
	owner := map[int]int{}
	for i, cmd := range cmds {
		if err := cmd.Wait(); err != nil {
			t.Fatalf("helper %d: %v: %s", i, err, outs[i])
		}
		var n int
		for _, line := range strings.Split(outs[i].String(), "\n") {
			p, ok := strings.CutPrefix(line, "port ")
			if !ok {
				continue
			}
			port, err := strconv.Atoi(p)
			if err != nil {
				t.Fatal(err)
			}
			if o, dup := owner[port]; dup {
				t.Errorf("port %d went to helpers %d and %d", port, o, i)
			}
			owner[port] = i
			n++
		}
		if n != each {
			t.Fatalf("helper %d printed %d ports, not %d: %s", i, n, each, outs[i])
		}
	}
}

func TestTakeHelperProcess(t *testing.T) {
	spec := os.Getenv("KEEL_FREEPORT_HELPER")
	if spec == "" {
		return // run directly: nothing to do
	}
	counter, count, _ := strings.Cut(spec, ":")
	n, _ := strconv.Atoi(count)
	for {
		if _, err := os.Stat(counter + ".go"); err == nil {
			break
		}
		time.Sleep(time.Millisecond)
	}
	for i := 0; i < n; i++ {
		ports, err := takeCounted(counter, 1)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Printf("port %d\n", ports[0])
	}
}

func TestAddrIsALoopbackAddressOutsideTheEphemeralRange(t *testing.T) {
	addr, err := Addr()
	if err != nil {
		t.Fatal(err)
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil || host != "127.0.0.1" {
		t.Fatalf("Addr() = %q (%v), want 127.0.0.1:PORT", addr, err)
	}
	p, _ := strconv.Atoi(port)
	if lo, hi := portRange(); p < lo || p > hi {
		t.Errorf("Addr() = %q: port outside %d-%d", addr, lo, hi)
	}
}
