// Command wakecost measures what the data path's costs depend on, on the
// machine it runs on, for reading the benchmark figures beside: a system
// call, waking a thread that sleeps on a socket (a round trip between two
// threads over a unix socket, wall time and CPU), and a 4 KiB buffered
// overwrite into a file filled with 1 MiB writes and with 4 KiB writes
// (large page-cache folios make the former expensive on recent kernels).
// scripts/bench.d/machine.sh runs it.
package main

import (
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"syscall"
	"time"
)

func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(syscall.TimevalToNsec(ru.Utime) + syscall.TimevalToNsec(ru.Stime))
}

func main() {
	dir := flag.String("dir", os.TempDir(), "directory for the 1 GiB scratch file")
	flag.Parse()
	if err := run(*dir); err != nil {
		fmt.Fprintln(os.Stderr, "wakecost:", err)
		os.Exit(1)
	}
}

func run(dir string) error {
	const calls = 200000
	start := time.Now()
	for range calls {
		syscall.Getppid()
	}
	fmt.Printf("system call (getppid):                 %6.2f us\n", us(time.Since(start), calls))

	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM, 0)
	if err != nil {
		return err
	}
	defer syscall.Close(fds[0])
	defer syscall.Close(fds[1])
	go func() {
		runtime.LockOSThread()
		b := make([]byte, 64)
		for {
			n, err := syscall.Read(fds[1], b)
			if err != nil || n == 0 {
				return
			}
			syscall.Write(fds[1], b[:n])
		}
	}()
	runtime.LockOSThread()
	const trips = 20000
	b := make([]byte, 64)
	c0, t0 := cpuTime(), time.Now()
	for range trips {
		if _, err := syscall.Write(fds[0], b[:8]); err != nil {
			return err
		}
		if _, err := syscall.Read(fds[0], b); err != nil {
			return err
		}
	}
	fmt.Printf("thread ping-pong over a unix socket:   %6.2f us round trip, %6.2f us CPU\n", us(time.Since(t0), trips), us(cpuTime()-c0, trips))
	runtime.UnlockOSThread()

	for _, fill := range []int{1 << 20, 4 << 10} {
		d, err := overwrite(dir, fill)
		if err != nil {
			return err
		}
		fmt.Printf("4 KiB overwrite, file filled by %4d KiB: %6.2f us CPU\n", fill>>10, d)
	}
	return nil
}

// overwrite fills a 1 GiB file with writes of fill bytes, then returns the
// CPU microseconds of one random 4 KiB overwrite.
func overwrite(dir string, fill int) (float64, error) {
	const size = 1 << 30
	path := filepath.Join(dir, fmt.Sprintf("wakecost-%d", os.Getpid()))
	f, err := os.Create(path)
	if err != nil {
		return 0, err
	}
	defer os.Remove(path)
	defer f.Close()
	chunk := make([]byte, fill)
	for off := int64(0); off < size; off += int64(fill) {
		if _, err := f.WriteAt(chunk, off); err != nil {
			return 0, err
		}
	}
	const n = 50000
	blk := make([]byte, 4096)
	c0 := cpuTime()
	for range n {
		if _, err := f.WriteAt(blk, rand.Int64N(size/4096)*4096); err != nil {
			return 0, err
		}
	}
	return us(cpuTime()-c0, n), nil
}

func us(d time.Duration, n int) float64 { return float64(d) / float64(n) / 1e3 }
