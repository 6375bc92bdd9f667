// Package freeport hands out loopback TCP ports for processes that bind them
// later: the demo's services and the child processes of tests.
//
// Choosing a port by listening on port 0 and closing the listener is racy:
// the kernel hands the same port to the next outgoing connection or port-0
// listener of any process, and the service that binds it seconds later
// fails with "address already in use". Ports taken here come from below the
// kernel's ephemeral range, which the kernel never hands out by itself, and
// in turn from a counter that every process of the machine shares through a
// locked file, so no two callers get the same port until the counter has
// gone round the whole range. Each port is checked free by a bind before it
// is handed out, which skips the ones a service holds.
package freeport

import (
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// lowest is the first port handed out: below it sit many well-known
// services' ports.
const lowest = 10000

// counterName is the shared counter's file, in os.TempDir.
const counterName = "keel-freeport"

// Take returns n distinct loopback ports that were free when checked and
// that no other caller of Take on this machine got recently.
func Take(n int) ([]int, error) {
	return takeCounted(filepath.Join(os.TempDir(), counterName), n)
}

// Addr is one port from Take, as a loopback address: "127.0.0.1:PORT".
func Addr() (string, error) {
	ports, err := Take(1)
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("127.0.0.1:%d", ports[0]), nil
}

// takeCounted is Take with the counter in the given file.
func takeCounted(counter string, n int) ([]int, error) {
	lo, hi := portRange()
	f, err := os.OpenFile(counter, os.O_RDWR|os.O_CREATE, 0o666)
	if err != nil {
		// Another user's counter, or no writable temporary directory:
		// a random start below the ephemeral range still avoids the
		// kernel's own choices.
		return take(n, lo, hi, lo+rand.IntN(hi-lo+1))
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		return nil, fmt.Errorf("freeport: lock %s: %w", f.Name(), err)
	}
	b, err := io.ReadAll(f)
	if err != nil {
		return nil, fmt.Errorf("freeport: %w", err)
	}
	next, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || next < lo || next > hi {
		next = lo + rand.IntN(hi-lo+1)
	}
	out, err := take(n, lo, hi, next)
	if err != nil {
		return nil, err
	}
	after := out[len(out)-1] + 1
	if after > hi {
		after = lo
	}
	if _, err := f.WriteAt([]byte(fmt.Sprintf("%-6d\n", after)), 0); err != nil {
		return nil, fmt.Errorf("freeport: %w", err)
	}
	return out, nil
}

// take checks ports from next on, wrapping from hi to lo, and returns the
// first n free ones.
func take(n, lo, hi, next int) ([]int, error) {
	var out []int
	for tried := 0; len(out) < n; tried++ {
		if tried > hi-lo {
			return nil, fmt.Errorf("freeport: fewer than %d free ports in %d-%d", n, lo, hi)
		}
		p := next
		if next++; next > hi {
			next = lo
		}
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
		if err != nil {
			continue
		}
		l.Close()
		out = append(out, p)
	}
	return out, nil
}

// portRange is the range Take hands out: below the kernel's ephemeral
// ports, or above them when too few lie below.
func portRange() (lo, hi int) {
	ephLo, ephHi, err := ephemeral()
	if err != nil {
		ephLo, ephHi = 32768, 60999 // Linux's default
	}
	if ephLo-lowest >= 1000 {
		return lowest, ephLo - 1
	}
	if 65535-ephHi >= 1000 {
		return ephHi + 1, 65535
	}
	return lowest, 65535 // nothing better: the bind check must do
}

// ephemeral is the kernel's ephemeral port range, from which it picks the
// local ports of outgoing connections and of listeners on port 0.
func ephemeral() (lo, hi int, err error) {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 0, 0, err
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return 0, 0, errors.New("freeport: unexpected ip_local_port_range")
	}
	if lo, err = strconv.Atoi(f[0]); err != nil {
		return 0, 0, err
	}
	hi, err = strconv.Atoi(f[1])
	return lo, hi, err
}
