package client_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"keel/internal/testbin"
	"keel/mgmt"
	"keel/mgmt/apiclient"
	"keel/wire"
)

// TestE2EBitRotRepairedByScrub: bytes of a data block flip in one disk
// file under the running cluster. A read through NBD still returns the
// written data (the client falls back to another replica after the
// checksum error), "keel disk scrub ID start --wait" finds exactly that
// block and rewrites it from a good replica, and a read of that replica
// alone over the wire protocol is good again.
func TestE2EBitRotRepairedByScrub(t *testing.T) {
	cl := startDemo(t)
	env := cl.Env()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	nbd, err := dialNBD("unix:"+env["KEEL_NBD_SOCKET"], env["KEEL_VOLUME"])
	if err != nil {
		t.Fatal(err)
	}
	defer nbd.Close()
	const off, length, victimBlock = 5 << 20, 64 << 10, 7
	data := make([]byte, length)
	rand.Read(data)
	if err := nbd.WriteAt(data, off, true); err != nil {
		t.Fatal(err)
	}
	if err := nbd.Flush(); err != nil {
		t.Fatal(err)
	}
	good := data[victimBlock*4096 : (victimBlock+1)*4096]

	// Where the block lives: the volume's layout, and its copies in the
	// disk files (random bytes: found nowhere else).
	layout := volumeLayout(t, ctx, cl.API(), env)
	index := uint32((off + victimBlock*4096) / layout.ObjectSize)
	set := layout.DiskSets[int(index)%len(layout.DiskSets)]
	tail := set[len(set)-1] // the replica the client reads first
	copies := findBlock(t, env["KEEL_DEMO_DIR"], good)
	if len(copies) != len(set) {
		t.Fatalf("the block has %d copies in the disk files (%v), want one per disk of its set %v", len(copies), copies, set)
	}
	for _, d := range set {
		if _, ok := copies[d]; !ok {
			t.Fatalf("no copy of the block on disk %d of its set %v (copies: %v)", d, set, copies)
		}
	}
	flip(t, copies[tail].path, copies[tail].off+1000)
	t.Logf("flipped 3 bytes of the block on disk %d (%s at %d); its set is %v", tail, copies[tail].path, copies[tail].off, set)

	// The rotten replica answers a checksum error, never the bytes.
	api := cl.API()
	conn := dialDisk(t, ctx, env, layout.Disks, tail)
	objOff := uint64(off+victimBlock*4096) % uint64(layout.ObjectSize)
	read := func() ([]byte, error) {
		var resp wire.Response
		err := conn.Do(ctx, &wire.Request{Op: wire.OpRead, Disk: tail, Volume: layout.Layers[0], Index: index, Offset: objOff, Length: 4096}, &resp)
		return resp.Data, err
	}
	if b, err := read(); err == nil || !strings.Contains(err.Error(), "checksum") {
		t.Fatalf("read of the rotten replica alone: %v (%d bytes), want a checksum error", err, len(b))
	}

	// Through NBD the volume reads the written data.
	got := make([]byte, length)
	if err := nbd.ReadAt(got, off); err != nil {
		t.Fatalf("read through NBD with one rotten replica: %v", err)
	}
	if !bytes.Equal(got, data) {
		t.Fatal("read through NBD returned other data than was written")
	}
	clog, _ := os.ReadFile(filepath.Join(env["KEEL_DEMO_DIR"], "node1", "log", "client.log"))
	if !strings.Contains(string(clog), "read failed on a replica") {
		t.Error("the client log shows no failed replica read: did the read reach the rotten copy?")
	}

	// Scrub the rotten disk with the CLI and wait for the job.
	var before mgmt.DiskSummary
	if _, err := api.Get(ctx, fmt.Sprintf("DiskDescribe/%d", tail), nil, &before); err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(ctx, testbin.Keel(t), "disk", "scrub", fmt.Sprint(tail), "start", "--wait")
	cmd.Env = append(os.Environ(), "KEEL_CONFIG="+env["KEEL_CONFIG"])
	out, err := cmd.CombinedOutput()
	t.Logf("keel disk scrub %d start --wait:\n%s", tail, out)
	if err != nil {
		t.Fatalf("keel disk scrub: %v", err)
	}
	var d mgmt.DiskSummary
	if _, err := api.Get(ctx, fmt.Sprintf("DiskDescribe/%d", tail), nil, &d); err != nil {
		t.Fatal(err)
	}
	s := d.DiskScrub
	if s.Scrubbing || s.ScrubState != "done" || s.ScrubJob != before.ScrubJob+1 || s.ScrubErrors != 1 || s.ScrubRepaired != 1 ||
		s.ScrubUnrepairable != 0 || s.TotalErrorsDetected != before.TotalErrorsDetected+1 || s.ScrubBlocks < length/4096 ||
		s.ScrubbedBytes == 0 || s.LastScrubCompleted == 0 {
		t.Fatalf("disk %d after the scrub: %+v, want a done job with 1 error found and repaired", tail, s)
	}
	lcmd := exec.CommandContext(ctx, testbin.Keel(t), "disk", "list")
	lcmd.Env = cmd.Env
	list, err := lcmd.CombinedOutput()
	if err != nil || !strings.Contains(string(list), "done, 1 err 1 fixed") {
		t.Errorf("keel disk list (%v) does not show the scrub's error repaired:\n%s", err, list)
	}
	t.Logf("keel disk list:\n%s", list)
	dcmd := exec.CommandContext(ctx, testbin.Keel(t), "disk", "describe", fmt.Sprint(tail))
	dcmd.Env = cmd.Env
	desc, err := dcmd.CombinedOutput()
	if err != nil || !strings.Contains(string(desc), "1 found, 1 repaired, 0 unrepairable") {
		t.Errorf("keel disk describe %d (%v) does not show the scrub's counts:\n%s", tail, err, desc)
	}
	t.Logf("keel disk describe %d:\n%s", tail, desc)

	// The repaired replica alone reads the written block again.
	b, err := read()
	if err != nil {
		t.Fatalf("read of the repaired replica alone: %v", err)
	}
	if !bytes.Equal(b, good) {
		t.Fatal("the repaired replica returns other data than was written")
	}
	// The other disks' scrubs find nothing. The first is paused before
	// its job starts: its server holds the job at its start (and says so)
	// until it is continued.
	keel := func(args ...string) string {
		t.Helper()
		c := exec.CommandContext(ctx, testbin.Keel(t), args...)
		c.Env = cmd.Env
		out, err := c.CombinedOutput()
		if err != nil {
			t.Fatalf("keel %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	describe := func(id uint32) apiclient.DiskScrub {
		t.Helper()
		var o mgmt.DiskSummary
		if _, err := api.Get(ctx, fmt.Sprintf("DiskDescribe/%d", id), nil, &o); err != nil {
			t.Fatal(err)
		}
		return o.DiskScrub
	}
	paused := set[0]
	keel("disk", "scrub", fmt.Sprint(paused), "pause")
	keel("disk", "scrub", fmt.Sprint(paused), "start")
	deadline := time.Now().Add(30 * time.Second)
	for describe(paused).ScrubState != "paused" {
		if time.Now().After(deadline) {
			t.Fatalf("disk %d's server never reported its paused job: %+v", paused, describe(paused))
		}
		time.Sleep(200 * time.Millisecond)
	}
	time.Sleep(2 * time.Second) // two heartbeats: still nothing read
	if o := describe(paused); !o.Scrubbing || !o.ScrubbingPaused || o.ScrubbedBytes != 0 || o.ScrubBlocks != 0 {
		t.Fatalf("paused job of disk %d: %+v, want paused at its start", paused, o)
	}
	for _, other := range set[1 : len(set)-1] {
		if _, err := api.Post(ctx, fmt.Sprintf("DiskScrubStart/%d", other), nil, nil); err != nil {
			t.Fatal(err)
		}
	}
	t.Log(keel("disk", "scrub", fmt.Sprint(paused), "continue", "--wait"))
	deadline = time.Now().Add(60 * time.Second)
	for _, other := range set[:len(set)-1] {
		for {
			o := describe(other)
			if !o.Scrubbing {
				if o.ScrubState != "done" || o.ScrubErrors != 0 || o.ScrubBlocks < length/4096 || o.ScrubbingPaused {
					t.Fatalf("scrub of the healthy disk %d: %+v, want done without errors", other, o)
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("scrub of disk %d did not finish: %+v", other, o)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
}

// clientLayout is a volume's layout as a client gets it, with the
// addresses of its disks.
type clientLayout struct {
	apiclient.VolumeLayout
	Disks map[string]apiclient.DiskLocation
}

// volumeLayout is the demo volume's layout as its client gets it.
func volumeLayout(t *testing.T, ctx context.Context, api *apiclient.Client, env map[string]string) clientLayout {
	return attachedLayout(t, ctx, api, env["KEEL_CLIENT_ID"], env["KEEL_VOLUME"])
}

// attachedLayout is the layout of volume, attached to client clientID.
func attachedLayout(t *testing.T, ctx context.Context, api *apiclient.Client, clientID, volume string) clientLayout {
	t.Helper()
	var cv apiclient.ClientVolumes
	if _, err := api.Get(ctx, "ClientVolumes/"+clientID, nil, &cv); err != nil {
		t.Fatal(err)
	}
	for _, v := range cv.Volumes {
		if v.Name == volume {
			return clientLayout{v, cv.Disks}
		}
	}
	t.Fatalf("volume %s is not attached to client %s: %+v", volume, clientID, cv)
	return clientLayout{}
}

// dialDisk connects to the server of disk d with the cluster secret.
func dialDisk(t *testing.T, ctx context.Context, env map[string]string, disks map[string]apiclient.DiskLocation, d uint32) *wire.Client {
	t.Helper()
	secret, err := wire.ReadSecret(filepath.Join(env["KEEL_DEMO_DIR"], "cluster-secret"))
	if err != nil {
		t.Fatal(err)
	}
	c, err := wire.Dial(ctx, "tcp", disks[fmt.Sprint(d)].Addr, secret, wire.Peer{Role: "client", Name: "bitrot-test"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

type blockCopy struct {
	path string
	off  int64
}

// findBlock scans the written extents of every demo disk file (SEEK_DATA
// / SEEK_HOLE) for 4 KiB-aligned copies of block and returns them by disk
// id (node n's disk k is n*10+k).
func findBlock(t *testing.T, dir string, block []byte) map[uint32]blockCopy {
	t.Helper()
	paths, _ := filepath.Glob(filepath.Join(dir, "node*", "disks", "disk*"))
	out := map[uint32]blockCopy{}
	buf := make([]byte, 1<<20)
	for _, p := range paths {
		var n, k int
		if _, err := fmt.Sscanf(strings.TrimPrefix(p, dir), "/node%d/disks/disk%d", &n, &k); err != nil {
			t.Fatalf("disk file %s: %v", p, err)
		}
		f, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		end, _ := f.Seek(0, io.SeekEnd)
		for pos := int64(0); pos < end; {
			data, err := f.Seek(pos, 3) // SEEK_DATA
			if errors.Is(err, syscall.ENXIO) {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			hole, err := f.Seek(data, 4) // SEEK_HOLE
			if err != nil {
				t.Fatal(err)
			}
			for at := data &^ 4095; at < hole; at += int64(len(buf)) {
				m, err := f.ReadAt(buf, at)
				if err != nil && err != io.EOF {
					t.Fatal(err)
				}
				for i := 0; i+4096 <= m; i += 4096 {
					if bytes.Equal(buf[i:i+4096], block) {
						out[uint32(n*10+k)] = blockCopy{path: p, off: at + int64(i)}
					}
				}
			}
			pos = hole
		}
		f.Close()
	}
	return out
}

// flip inverts 3 bytes at off of the file, as bit rot would.
func flip(t *testing.T, path string, off int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 3)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	for i := range b {
		b[i] ^= 0xff
	}
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
}
