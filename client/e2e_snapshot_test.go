package client_test

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"keel/demo"
	"keel/mgmt/apiclient"
)

// The snapshot test works on a set of 4 KiB blocks spread over several
// objects; a model holds each volume's expected content of those blocks
// (absent: zeroes).
const modelBlocks = 48

func modelOff(i int) int64 { return int64(i) * ((2 << 20) + 4096) }

type model map[int][]byte

func (m model) clone() model {
	c := model{}
	for k, v := range m {
		c[k] = v
	}
	return c
}

// readAll reads every model block through c.
func readAll(t *testing.T, c *nbdConn) [][]byte {
	t.Helper()
	out := make([][]byte, modelBlocks)
	for i := range out {
		out[i] = make([]byte, 4096)
		if err := c.ReadAt(out[i], modelOff(i)); err != nil {
			t.Fatalf("read block %d: %v", i, err)
		}
	}
	return out
}

// diff describes where got differs from m ("" when equal).
func (m model) diff(got [][]byte) string {
	var d []string
	zero := make([]byte, 4096)
	for i, g := range got {
		want := m[i]
		if want == nil {
			want = zero
		}
		if !bytes.Equal(g, want) {
			d = append(d, "block "+string(bytes.TrimRight(want[:40], "\x00\n"))+" got "+string(bytes.TrimRight(g[:40], "\x00\n")))
		}
	}
	return strings.Join(d, "; ")
}

// e2eVol drives one volume (or snapshot) of the demo through NBD.
type e2eHarness struct {
	t       *testing.T
	ctx     context.Context
	cl      *demo.Cluster
	nbdAddr string
	rng     *rand.Rand
	seq     int
}

// reassign runs VolumesReassignWait, retrying while the client has not yet
// reported a just-closed export as closed (objectInUse).
func (h *e2eHarness) reassign(descs ...map[string]any) {
	h.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		_, err := h.cl.API().Post(h.ctx, "VolumesReassignWait", map[string]any{"reassign": descs, "attachTimeout": 20}, nil)
		if err == nil {
			return
		}
		var ae *apiclient.APIError
		if !errors.As(err, &ae) || ae.Name != "objectInUse" || time.Now().After(deadline) {
			h.t.Fatalf("VolumesReassignWait %v: %v", descs, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func (h *e2eHarness) post(call string, body any, out any) {
	h.t.Helper()
	if _, err := h.cl.API().Post(h.ctx, call, body, out); err != nil {
		h.t.Fatalf("%s: %v", call, err)
	}
}

func (h *e2eHarness) open(name string) *nbdConn {
	h.t.Helper()
	var c *nbdConn
	var err error
	for deadline := time.Now().Add(20 * time.Second); ; {
		if c, err = dialNBD(h.nbdAddr, name); err == nil {
			return c
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("open export %s: %v", name, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// write writes n random model blocks of m through c.
func (h *e2eHarness) write(c *nbdConn, m model, who string, n int) {
	h.t.Helper()
	for range n {
		i := h.rng.IntN(modelBlocks)
		h.seq++
		b := block(who, i, h.seq)
		if err := c.WriteAt(b, modelOff(i), h.rng.IntN(4) == 0); err != nil {
			h.t.Fatalf("write %s block %d: %v", who, i, err)
		}
		m[i] = b
	}
}

func (h *e2eHarness) check(c *nbdConn, m model, what string) {
	h.t.Helper()
	if d := m.diff(readAll(h.t, c)); d != "" {
		h.t.Fatalf("%s differs from the model: %s", what, d)
	}
}

// TestE2ESnapshotCloneRevert checks snapshots, clones, revert and the
// deletion of a snapshot with children against a model of each volume's
// expected contents, with writes racing the snapshot.
func TestE2ESnapshotCloneRevert(t *testing.T) {
	cl := startDemo(t)
	env := cl.Env()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	u, _ := url.Parse(env["KEEL_NBD_URI"])
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	h := &e2eHarness{t: t, ctx: ctx, cl: cl, nbdAddr: u.Host, rng: rand.New(rand.NewPCG(seed, 1))}
	const client = 1
	vol := env["KEEL_VOLUME"]

	a := h.open(vol)
	mv := model{}
	h.write(a, mv, "vol", 40)
	h.check(a, mv, "volume")

	// A snapshot while a writer keeps writing: the snapshot must equal the
	// model after some prefix k of the writes, with k at least the number
	// acknowledged before the snapshot was asked for and at most the
	// number started before it returned (crash consistency: nothing lost
	// or reordered across it).
	var mu sync.Mutex
	var history []model // history[k]: the model after k racing writes
	history = append(history, mv.clone())
	started := 0
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
			}
			i := h.rng.IntN(modelBlocks)
			mu.Lock()
			started++
			h.seq++
			b := block("race", i, h.seq)
			mu.Unlock()
			if err := a.WriteAt(b, modelOff(i), false); err != nil {
				t.Errorf("write racing the snapshot: %v", err)
				return
			}
			mu.Lock()
			mv[i] = b
			history = append(history, mv.clone())
			mu.Unlock()
		}
	}()
	time.Sleep(300 * time.Millisecond)
	mu.Lock()
	lo := len(history) - 1
	mu.Unlock()
	var snapInfo struct {
		SnapshotName     string `json:"snapshotName"`
		SnapshotGlobalID string `json:"snapshotGlobalId"`
	}
	h.post("VolumeSnapshot/"+vol, map[string]any{"name": "s1"}, &snapInfo)
	mu.Lock()
	hi := started
	mu.Unlock()
	time.Sleep(200 * time.Millisecond)
	close(stop)
	<-done
	if t.Failed() {
		return
	}
	t.Logf("snapshot s1 taken after %d..%d racing writes (%d in all)", lo, hi, len(history)-1)

	// The snapshot, attached read-only on the same client.
	h.reassign(map[string]any{"snapshot": "s1", "ro": []int{client}})
	s := h.open("s1")
	if !s.ReadOnly() {
		t.Errorf("the snapshot's export is not read-only")
	}
	got := readAll(t, s)
	k := -1
	for i := lo; i <= hi && i < len(history); i++ {
		if history[i].diff(got) == "" {
			k = i
			break
		}
	}
	if k < 0 {
		t.Fatalf("snapshot s1 equals no prefix %d..%d of the writes; against prefix %d: %s", lo, hi, lo, history[lo].diff(got))
	}
	ms := history[k].clone()
	t.Logf("snapshot s1 holds the first %d racing writes", k)
	if err := s.WriteAt(block("snap", 0, 0), 0, false); err == nil {
		t.Errorf("a write to the read-only snapshot export succeeded")
	}

	// The volume goes on; the snapshot does not change.
	h.write(a, mv, "vol", 30)
	h.check(a, mv, "volume after the snapshot")
	h.check(s, ms, "snapshot s1 after volume writes")

	// A clone of the snapshot shows it and diverges independently,
	// interleaved with writes to the volume.
	h.post("VolumeCreate", map[string]any{"name": "c1", "parent": "s1"}, nil)
	h.reassign(map[string]any{"volume": "c1", "rw": []int{client}})
	c := h.open("c1")
	mc := ms.clone()
	h.check(c, mc, "clone c1 before writes")
	for range 5 {
		h.write(c, mc, "clone", 6)
		h.write(a, mv, "vol", 6)
	}
	h.check(c, mc, "clone c1")
	h.check(a, mv, "volume beside the clone")
	h.check(s, ms, "snapshot s1 beside the clone")

	// Revert the volume to s1: refused while attached, then it holds s1.
	a.Close()
	if _, err := cl.API().Post(ctx, "VolumeRevert/"+vol, map[string]any{"toSnapshot": "s1"}, nil); err == nil {
		t.Fatalf("VolumeRevert of an attached volume succeeded")
	}
	h.reassign(map[string]any{"volume": vol, "detach": []int{client}})
	h.post("VolumeRevert/"+vol, map[string]any{"toSnapshot": "s1"}, nil)
	h.reassign(map[string]any{"volume": vol, "rw": []int{client}})
	a = h.open(vol)
	mv = ms.clone()
	h.check(a, mv, "volume reverted to s1")
	h.write(a, mv, "vol", 20)
	h.check(a, mv, "reverted volume after writes")
	h.check(c, mc, "clone c1 after the revert")

	// Delete s1 (it has children: the clone and the reverted volume):
	// both stay readable and unchanged.
	s.Close()
	h.reassign(map[string]any{"snapshot": "s1", "detach": []int{client}})
	h.post("SnapshotDelete/s1", nil, nil)
	h.check(c, mc, "clone c1 after its parent snapshot was deleted")
	h.check(a, mv, "volume after its parent snapshot was deleted")
	// And after a fresh attach (the client reads the layout anew).
	c.Close()
	a.Close()
	h.reassign(map[string]any{"volume": "c1", "detach": []int{client}}, map[string]any{"volume": vol, "detach": []int{client}})
	h.reassign(map[string]any{"volume": "c1", "rw": []int{client}}, map[string]any{"volume": vol, "rw": []int{client}})
	c = h.open("c1")
	a = h.open(vol)
	h.check(c, mc, "clone c1 re-attached after the snapshot's deletion")
	h.check(a, mv, "volume re-attached after the snapshot's deletion")
	c.Close()
	a.Close()
}
