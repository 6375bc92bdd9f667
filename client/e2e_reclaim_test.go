package client_test

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"testing"
	"time"

	"keel/demo"
	"keel/mgmt/apiclient"
)

// diskFree returns DisksList's size and free bytes of every disk.
func diskFree(t *testing.T, ctx context.Context, cl *demo.Cluster) (size, free map[int]int64) {
	t.Helper()
	var list map[string]struct {
		ID        int   `json:"id"`
		Size      int64 `json:"size"`
		FreeBytes int64 `json:"freeBytes"`
	}
	if _, err := cl.API().Get(ctx, "DisksList", nil, &list); err != nil {
		t.Fatalf("DisksList: %v", err)
	}
	size, free = map[int]int64{}, map[int]int64{}
	for _, d := range list {
		size[d.ID], free[d.ID] = d.Size, d.FreeBytes
	}
	return size, free
}

// TestE2ESpaceReclaim: a volume writes 256 MiB, is snapshotted, writes
// 256 MiB more; DisksList shows the space used on the disks. A revert to
// the snapshot frees what the volume wrote after it; deleting the snapshot
// frees nothing while the volume (its child) needs it; deleting the
// volume then frees everything: every disk is back to its free space
// before the writes (within the 1% DisksList may lag by).
func TestE2ESpaceReclaim(t *testing.T) {
	cl := startDemoWith(t, demo.Options{DiskSize: 2 << 30})
	env := cl.Env()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	api := cl.API()
	post := func(call string, body any) {
		t.Helper()
		if _, err := api.Post(ctx, call, body, nil); err != nil {
			t.Fatalf("%s: %v", call, err)
		}
	}
	reassign := func(desc map[string]any) {
		t.Helper()
		for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(200 * time.Millisecond) {
			_, err := api.Post(ctx, "VolumesReassignWait", map[string]any{"reassign": []map[string]any{desc}, "attachTimeout": 20}, nil)
			var ae *apiclient.APIError
			if err == nil {
				return
			}
			if !errors.As(err, &ae) || ae.Name != "objectInUse" || time.Now().After(deadline) {
				t.Fatalf("VolumesReassignWait %v: %v", desc, err)
			}
		}
	}
	size, before := diskFree(t, ctx, cl)
	// used is the space taken since the start, over all disks; slack is
	// how far DisksList may lag behind the servers (1% per disk).
	var slack int64
	for _, s := range size {
		slack += s / 100
	}
	used := func() int64 {
		_, free := diskFree(t, ctx, cl)
		var n int64
		for id, f := range free {
			n += before[id] - f
		}
		return n
	}
	waitUsed := func(what string, lo, hi int64) int64 {
		t.Helper()
		deadline := time.Now().Add(60 * time.Second)
		for {
			u := used()
			if u >= lo && u <= hi {
				t.Logf("%s: %d MiB used on the disks", what, u>>20)
				return u
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: %d MiB used on the disks, want %d..%d MiB", what, u>>20, lo>>20, hi>>20)
			}
			time.Sleep(300 * time.Millisecond)
		}
	}

	post("VolumeCreate", map[string]any{"name": "gc-vol", "size": e2eVolumeSize, "template": "demo-r3"})
	reassign(map[string]any{"volume": "gc-vol", "rw": []int{1}})
	u, err := url.Parse(env["KEEL_NBD_URI"])
	if err != nil {
		t.Fatal(err)
	}
	var conn *nbdConn
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if conn, err = dialNBD(u.Host, "gc-vol"); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("open export gc-vol: %v", err)
		}
	}
	const region = 256 << 20
	write := func(off int64) {
		t.Helper()
		b := make([]byte, 4<<20)
		for i := range b {
			b[i] = byte(i%253) + 1
		}
		for o := off; o < off+region; o += int64(len(b)) {
			if err := conn.WriteAt(b, o, false); err != nil {
				t.Fatalf("write at %d: %v", o, err)
			}
		}
		if err := conn.Flush(); err != nil {
			t.Fatal(err)
		}
	}
	const copies = 3 * region // replication 3
	write(0)
	post("VolumeSnapshot/gc-vol", map[string]any{"name": "gc-snap"})
	write(512 << 20)
	conn.Close()
	reassign(map[string]any{"volume": "gc-vol", "detach": []int{1}})
	waitUsed("after writing 2 x 256 MiB", 2*copies-slack, 2*copies+slack)

	post("VolumeRevert/gc-vol", map[string]any{"toSnapshot": "gc-snap"})
	waitUsed("after the revert to the snapshot", copies-slack, copies+slack)

	post("SnapshotDelete/gc-snap", nil)
	time.Sleep(3 * time.Second) // a few server rounds: nothing may go
	waitUsed("after deleting the snapshot, which the volume still reads through", copies-slack, copies+slack)

	post("VolumeDelete/gc-vol", nil)
	waitUsed("after deleting the volume", -slack, slack)
	_, free := diskFree(t, ctx, cl)
	for id, f := range free {
		if f < before[id]-size[id]/100 {
			t.Errorf("disk %d: %d MiB free, %d MiB before the writes", id, f>>20, before[id]>>20)
		}
	}
	if t.Failed() {
		return
	}
	var snaps []struct {
		Name string `json:"name"`
	}
	if _, err := api.Get(ctx, "SnapshotsList", nil, &snaps); err != nil || fmt.Sprint(snaps) != "[]" {
		t.Errorf("SnapshotsList after deleting the volume: %v %v, want none", snaps, err)
	}
}
