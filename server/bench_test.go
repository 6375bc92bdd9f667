package server_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"keel/wire"
)

// TestLoadBench is the benchmark of scripts/bench.d/server.sh, not a unit
// test: it runs only with KEEL_BENCH=1. 4 KiB random reads and writes at
// queue depth 32 over the wire protocol against one keel_server with one
// file-backed disk, then plain pread/pwrite on a file of the same size, in
// the same run; it prints both, the ratio, and CPU time per operation.
func TestLoadBench(t *testing.T) {
	if os.Getenv("KEEL_BENCH") == "" {
		t.Skip("benchmark: run scripts/bench.d/server.sh (KEEL_BENCH=1)")
	}
	dur := 5 * time.Second
	if d, err := time.ParseDuration(os.Getenv("KEEL_BENCH_TIME")); err == nil {
		dur = d
	}
	// Buffered: the server and the plain file both go through the page
	// cache (the comparison the goals are set for). Direct: both use
	// O_DIRECT, so the device is read and written, as a storage server
	// does on real disks.
	for _, direct := range []bool{false, true} {
		t.Run(fmt.Sprint("direct=", direct), func(t *testing.T) { benchRound(t, direct, dur) })
	}
}

func benchRound(t *testing.T, direct bool, dur time.Duration) {
	const (
		qd      = 32
		objects = 16
		objSize = 32 << 20
	)
	n := newNode(t)
	n.env = append(n.env, fmt.Sprint("KEEL_SERVER_DIRECT_IO=", direct))
	size := int64(objects+4) * (objSize + 1<<20)
	disk := n.file("disk1", size)
	if code, _, errs := n.keel("disk", "init", disk, "--id", "1", "--cluster-id", "bench"); code != 0 {
		t.Fatalf("disk init: %s", errs)
	}
	n.startServer()
	pid := n.pid
	ctx := context.Background()
	c, err := wire.Dial(ctx, "unix", filepath.Join(n.dir, "server.sock"), n.secret, wire.Peer{Role: "client", Name: "bench"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	chunk := make([]byte, 1<<20)
	for i := range chunk {
		chunk[i] = byte(i * 7)
	}
	var resp wire.Response
	for o := uint32(0); o < objects; o++ {
		if err := c.Do(ctx, &wire.Request{Op: wire.OpCreate, Disk: 1, Volume: 1, Index: o}, &resp); err != nil {
			t.Fatal(err)
		}
		for off := 0; off < objSize; off += len(chunk) {
			if err := c.Do(ctx, &wire.Request{Op: wire.OpWrite, Disk: 1, Volume: 1, Index: o, Offset: uint64(off), Length: uint32(len(chunk)), Data: chunk}, &resp); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := c.Do(ctx, &wire.Request{Op: wire.OpFlush, Disk: 1}, &resp); err != nil {
		t.Fatal(err)
	}
	keelOp := func(write bool) func(rng *rand.Rand, buf []byte, r *wire.Response) error {
		return func(rng *rand.Rand, buf []byte, r *wire.Response) error {
			req := wire.Request{Op: wire.OpRead, Disk: 1, Volume: 1, Index: uint32(rng.IntN(objects)), Offset: uint64(rng.IntN(objSize/4096)) * 4096, Length: 4096}
			if write {
				req.Op, req.Data = wire.OpWrite, buf
			}
			return c.Do(ctx, &req, r)
		}
	}

	plainPath := filepath.Join(n.dir, "plain")
	f, err := os.OpenFile(plainPath, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	data := int64(objects) * objSize
	for off := int64(0); off < data; off += int64(len(chunk)) {
		if _, err := f.WriteAt(chunk, off); err != nil {
			t.Fatal(err)
		}
	}
	f.Sync()
	pf := f
	mode := "page cache"
	if direct {
		mode = "O_DIRECT"
		if pf, err = os.OpenFile(plainPath, os.O_RDWR|syscall.O_DIRECT, 0); err != nil {
			t.Fatal(err)
		}
		defer pf.Close()
	}
	plainOp := func(write bool) func(rng *rand.Rand, buf []byte, r *wire.Response) error {
		return func(rng *rand.Rand, buf []byte, _ *wire.Response) error {
			off := int64(rng.IntN(int(data/4096))) * 4096
			var err error
			if write {
				_, err = pf.WriteAt(buf, off)
			} else {
				_, err = pf.ReadAt(buf, off)
			}
			return err
		}
	}

	for _, kind := range []struct {
		name  string
		write bool
		goal  float64
	}{{"read", false, 0.7}, {"write", true, 0.5}} {
		ko, kcpu := runLoad(t, qd, dur, keelOp(kind.write), pid)
		po, pcpu := runLoad(t, qd, dur, plainOp(kind.write), 0)
		fmt.Printf("4k random %-5s QD%d %-10s keel: %8.0f IOPS (%5.1f us CPU/op, server+client)  plain file: %8.0f IOPS (%5.1f us CPU/op)  ratio %.2f (goal %.1f)\n",
			kind.name, qd, mode, ko, kcpu, po, pcpu, ko/po, kind.goal)
	}
}

// runLoad runs op from qd goroutines for d and returns operations per
// second and CPU microseconds per operation (this process plus pid's).
func runLoad(t *testing.T, qd int, d time.Duration, op func(*rand.Rand, []byte, *wire.Response) error, pid int) (float64, float64) {
	var ops atomic.Int64
	var wg sync.WaitGroup
	stop := make(chan struct{})
	cpu0 := selfCPU() + procCPU(pid)
	start := time.Now()
	errc := make(chan error, qd)
	for g := 0; g < qd; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(g), 1))
			buf := make([]byte, 4096) // a 4 KiB allocation is 4 KiB aligned, as O_DIRECT needs
			var r wire.Response
			for {
				select {
				case <-stop:
					return
				default:
				}
				if err := op(rng, buf, &r); err != nil {
					errc <- err
					return
				}
				ops.Add(1)
			}
		}()
	}
	time.Sleep(d)
	close(stop)
	wg.Wait()
	elapsed := time.Since(start)
	cpu := selfCPU() + procCPU(pid) - cpu0
	select {
	case err := <-errc:
		t.Fatal(err)
	default:
	}
	n := float64(ops.Load())
	return n / elapsed.Seconds(), cpu.Seconds() * 1e6 / n
}

func selfCPU() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// procCPU is the user+system time of a process from /proc/PID/stat.
func procCPU(pid int) time.Duration {
	if pid == 0 {
		return 0
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(b)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	ut, _ := strconv.ParseInt(fields[11], 10, 64)
	st, _ := strconv.ParseInt(fields[12], 10, 64)
	return time.Duration(ut+st) * time.Second / 100 // USER_HZ
}
