package client_test

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"testing"
	"time"

	"keel/demo"
	"keel/mgmt/apiclient"
	"keel/wire"
)

// staleWritesRefused: after its layer was reclaimed everywhere, a writer
// still holding l (its token is the newest the servers saw) can neither
// create an object in l's own layer nor write to one: every server of
// the first disk set answers "fenced", so the space stays reclaimed.
func (h *reclaimHarness) staleWritesRefused(l clientLayout) {
	h.t.Helper()
	env := h.cl.Env()
	layer := l.Layers[0]
	h.t.Logf("stale writes to reclaimed layer %d on disks %v", layer, l.DiskSets[0])
	for _, d := range l.DiskSets[0] {
		c := dialDisk(h.t, h.ctx, env, l.Disks, d)
		var resp wire.Response
		err := c.Do(h.ctx, &wire.Request{Op: wire.OpCreate, Disk: d, Volume: layer, Index: 0}, &resp)
		if se := (*wire.StatusError)(nil); !errors.As(err, &se) || se.Status != wire.StatusFenced {
			h.t.Errorf("disk %d: create in reclaimed layer %d: %v, want refused as fenced", d, layer, err)
		}
		req := wire.Request{Op: wire.OpWrite, Disk: d, Volume: layer, Index: 0, Length: 4096, Data: make([]byte, 4096),
			Token: l.Token, Fence: l.Fence}
		err = c.Do(h.ctx, &req, &resp)
		if se := (*wire.StatusError)(nil); !errors.As(err, &se) || se.Status != wire.StatusFenced {
			h.t.Errorf("disk %d: write to reclaimed layer %d: %v, want refused as fenced", d, layer, err)
		}
	}
}

// reclaimHarness watches the disks' free space (DisksList) against what
// it was when the harness was made.
type reclaimHarness struct {
	t      *testing.T
	start  time.Time
	ctx    context.Context
	cl     *demo.Cluster
	size   map[int]int64
	before map[int]int64
}

func newReclaimHarness(t *testing.T, ctx context.Context, cl *demo.Cluster) *reclaimHarness {
	h := &reclaimHarness{t: t, ctx: ctx, cl: cl, start: time.Now()}
	h.size, h.before = h.diskFree()
	return h
}

// diskFree returns DisksList's size and free bytes of every disk.
func (h *reclaimHarness) diskFree() (size, free map[int]int64) {
	h.t.Helper()
	var list map[string]struct {
		ID        int   `json:"id"`
		Size      int64 `json:"size"`
		FreeBytes int64 `json:"freeBytes"`
	}
	if _, err := h.cl.API().Get(h.ctx, "DisksList", nil, &list); err != nil {
		h.t.Fatalf("DisksList: %v", err)
	}
	size, free = map[int]int64{}, map[int]int64{}
	for _, d := range list {
		size[d.ID], free[d.ID] = d.Size, d.FreeBytes
	}
	return size, free
}

// waitOpt refines waitUsed.
type waitOpt int

// perDisk makes waitUsed also wait until no selected disk has less free
// space than before the test (within its 1%), not only their sum.
const perDisk waitOpt = 1

// waitUsed waits until the space taken since the start on the disks
// selected by which (all when nil) is within [lo-slack, hi+slack], slack
// being how far DisksList may lag behind the servers (1% per disk).
func (h *reclaimHarness) waitUsed(what string, which func(disk int) bool, lo, hi int64, opts ...waitOpt) {
	h.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		_, free := h.diskFree()
		var used, slack int64
		eachFree := true
		for id, f := range free {
			if which == nil || which(id) {
				used += h.before[id] - f
				slack += h.size[id] / 100
				if f < h.before[id]-h.size[id]/100 {
					eachFree = false
				}
			}
		}
		each := slices.Contains(opts, perDisk)
		if used >= lo-slack && used <= hi+slack && (!each || eachFree) {
			h.t.Logf("%s: %d MiB used on the disks (at %v)", what, used>>20, time.Since(h.start).Round(time.Millisecond))
			return
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("%s: %d MiB used on the disks, want %d..%d MiB (± %d MiB); free per disk %v, before %v", what, used>>20, lo>>20, hi>>20, slack>>20, free, h.before)
		}
		time.Sleep(300 * time.Millisecond)
	}
}

func (h *reclaimHarness) post(call string, body any) {
	h.t.Helper()
	if _, err := h.cl.API().Post(h.ctx, call, body, nil); err != nil {
		h.t.Fatalf("%s: %v", call, err)
	}
}

// reassign runs VolumesReassignWait, retrying while the client still
// reports a just-closed export open.
func (h *reclaimHarness) reassign(desc map[string]any) {
	h.t.Helper()
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		_, err := h.cl.API().Post(h.ctx, "VolumesReassignWait", map[string]any{"reassign": []map[string]any{desc}, "attachTimeout": 20}, nil)
		var ae *apiclient.APIError
		if err == nil {
			return
		}
		if !errors.As(err, &ae) || ae.Name != "objectInUse" || time.Now().After(deadline) {
			h.t.Fatalf("VolumesReassignWait %v: %v", desc, err)
		}
	}
}

// open attaches volume name read-write to client 1 and opens its export.
func (h *reclaimHarness) open(name string) *nbdConn {
	h.t.Helper()
	h.reassign(map[string]any{"volume": name, "rw": []int{1}})
	return h.dial(name)
}

// dial opens the export of volume name, attached to client 1.
func (h *reclaimHarness) dial(name string) *nbdConn {
	h.t.Helper()
	u, err := url.Parse(h.cl.Env()["KEEL_NBD_URI"])
	if err != nil {
		h.t.Fatal(err)
	}
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		conn, err := dialNBD(u.Host, name)
		if err == nil {
			return conn
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("open export %s: %v", name, err)
		}
	}
}

const reclaimRegion = 256 << 20

// write fills n bytes at off and flushes.
func (h *reclaimHarness) write(conn *nbdConn, off, n int64) {
	h.t.Helper()
	b := make([]byte, 4<<20)
	for i := range b {
		b[i] = byte(i%253) + 1
	}
	for o := off; o < off+n; o += int64(len(b)) {
		if err := conn.WriteAt(b, o, false); err != nil {
			h.t.Fatalf("write at %d: %v", o, err)
		}
	}
	if err := conn.Flush(); err != nil {
		h.t.Fatal(err)
	}
}

// TestE2ESpaceReclaim: a volume writes 256 MiB, is snapshotted, writes
// 256 MiB more; DisksList shows the space used on the disks. A revert to
// the snapshot frees what the volume wrote after it; deleting the snapshot
// frees nothing while the volume (its child) needs it; deleting the
// volume then frees everything: every disk is back to its free space
// before the writes (within the 1% DisksList may lag by).
func TestE2ESpaceReclaim(t *testing.T) {
	cl := startDemoWith(t, demo.Options{DiskSize: 2 << 30})
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	h := newReclaimHarness(t, ctx, cl)

	h.post("VolumeCreate", map[string]any{"name": "gc-vol", "size": e2eVolumeSize, "template": "demo-r3"})
	conn := h.open("gc-vol")
	const copies = 3 * reclaimRegion // replication 3
	h.write(conn, 0, reclaimRegion)
	h.post("VolumeSnapshot/gc-vol", map[string]any{"name": "gc-snap"})
	h.write(conn, 512<<20, reclaimRegion)
	replaced := attachedLayout(t, ctx, cl.API(), "1", "gc-vol") // its first layer is the one the revert replaces
	conn.Close()
	h.reassign(map[string]any{"volume": "gc-vol", "detach": []int{1}})
	h.waitUsed("after writing 2 x 256 MiB", nil, 2*copies, 2*copies)

	h.post("VolumeRevert/gc-vol", map[string]any{"toSnapshot": "gc-snap"})
	h.waitUsed("after the revert to the snapshot", nil, copies, copies)
	h.staleWritesRefused(replaced)

	h.post("SnapshotDelete/gc-snap", nil)
	time.Sleep(3 * time.Second) // a few server rounds: nothing may go
	h.waitUsed("after deleting the snapshot, which the volume still reads through", nil, copies, copies)

	h.post("VolumeDelete/gc-vol", nil)
	h.waitUsed("after deleting the volume", nil, 0, 0)
	// Every disk, not only their sum: each reports its space on its own
	// server's next registration, so wait for the last one.
	h.waitUsed("after deleting the volume, on each disk", nil, 0, 0, perDisk)
	var snaps []struct {
		Name string `json:"name"`
	}
	if _, err := cl.API().Get(ctx, "SnapshotsList", nil, &snaps); err != nil || fmt.Sprint(snaps) != "[]" {
		t.Errorf("SnapshotsList after deleting the volume: %v %v, want none", snaps, err)
	}
}

// TestE2ESpaceReclaimDiskDown: a volume is deleted while one server is
// down, and another volume is written meanwhile. The other disks free the
// deleted volume's space at once; the down server's disks keep its layers
// pending (LayersToDelete) and free the space once the server is back;
// recovery then brings them up with what they missed of the other volume
// and nothing of the deleted one.
func TestE2ESpaceReclaimDiskDown(t *testing.T) {
	cl := startDemoWith(t, demo.Options{DiskSize: 2 << 30})
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	h := newReclaimHarness(t, ctx, cl)

	h.post("VolumeCreate", map[string]any{"name": "gc-vol", "size": e2eVolumeSize, "template": "demo-r3"})
	conn := h.open("gc-vol")
	h.write(conn, 0, reclaimRegion)
	conn.Close()
	h.reassign(map[string]any{"volume": "gc-vol", "detach": []int{1}})
	// Replication 3 on three servers: each server holds one copy.
	const victim = 2
	onVictim := func(d int) bool { return d/10 == victim }
	others := func(d int) bool { return d/10 != victim }
	h.waitUsed("after writing 256 MiB", onVictim, reclaimRegion, reclaimRegion)

	if err := cl.Kill("server", victim); err != nil {
		t.Fatal(err)
	}
	h.post("VolumeDelete/gc-vol", nil)
	h.waitUsed("other servers' disks after deleting the volume", others, 0, 0)
	// The demo volume (attached to client 1) gets 64 MiB meanwhile: the
	// client has mgmt mark the silent disks down and writes two copies.
	const missed = 64 << 20
	dc := h.dial(h.cl.Env()["KEEL_VOLUME"])
	h.write(dc, 0, missed)
	dc.Close()
	h.waitUsed("other servers' disks after writing the demo volume", others, 2*missed, 2*missed)
	pending := func() int {
		var todo apiclient.LayersToDelete
		if _, err := cl.API().Get(ctx, fmt.Sprintf("LayersToDelete/%d", victim), nil, &todo); err != nil {
			t.Fatalf("LayersToDelete: %v", err)
		}
		n := 0
		for _, ls := range todo.Disks {
			n += len(ls)
		}
		return n
	}
	if n := pending(); n == 0 {
		t.Fatalf("no layers pending for the down server %d", victim)
	}
	h.waitUsed("the down server's disks", onVictim, reclaimRegion, reclaimRegion)

	if _, err := cl.Restart("server", victim); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(30 * time.Second); pending() > 0; time.Sleep(200 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("layers still pending for server %d after it came back", victim)
		}
	}
	// Recovered: up again, holding its copy of what the demo volume got.
	for deadline := time.Now().Add(120 * time.Second); ; time.Sleep(300 * time.Millisecond) {
		st := disks(t, ctx, cl)
		if st[victim*10+1] == "up" && st[victim*10+2] == "up" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("disks of the returned server: %v, want both up after recovery", st)
		}
	}
	h.waitUsed("the returned server's disks after recovery", onVictim, missed, missed)
}
