package client_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"keel/demo"
	"keel/mgmt/apiclient"
)

// slotWriter writes 64 KiB blocks round-robin over slots spread across the
// volume (every object), each naming its sequence number, and remembers
// the last sequence written to each slot.
type slotWriter struct {
	conn    *nbdConn
	slots   int
	stride  int64
	done    atomic.Int64 // writes acknowledged
	mu      sync.Mutex
	last    []int // per slot: the sequence of its last acknowledged write, -1: none
	stop    chan struct{}
	stopped chan error
}

const slotBlock = 64 << 10

func slotData(slot, seq int) []byte {
	b := bytes.Repeat([]byte{byte(seq)}, slotBlock)
	copy(b, fmt.Sprintf("slot %d seq %d\n", slot, seq))
	return b
}

func (w *slotWriter) run() {
	for seq := 0; ; seq++ {
		select {
		case <-w.stop:
			w.stopped <- w.conn.Flush()
			return
		default:
		}
		slot := seq % w.slots
		if err := w.conn.WriteAt(slotData(slot, seq), int64(slot)*w.stride, false); err != nil {
			w.stopped <- fmt.Errorf("write %d (slot %d): %w", seq, slot, err)
			return
		}
		w.mu.Lock()
		w.last[slot] = seq
		w.mu.Unlock()
		w.done.Add(1)
	}
}

// startSlotWriter connects to the demo volume over NBD and starts writing
// slots spread over it.
func startSlotWriter(t *testing.T, env map[string]string, slots int) *slotWriter {
	t.Helper()
	u, err := url.Parse(env["KEEL_NBD_URI"])
	if err != nil {
		t.Fatal(err)
	}
	conn, err := dialNBD(u.Host, env["KEEL_VOLUME"])
	if err != nil {
		t.Fatal(err)
	}
	w := &slotWriter{conn: conn, slots: slots, stride: e2eVolumeSize / int64(slots), last: make([]int, slots),
		stop: make(chan struct{}), stopped: make(chan error, 1)}
	for i := range w.last {
		w.last[i] = -1
	}
	go w.run()
	return w
}

// waitWrites waits until n writes were acknowledged; the writer failing
// or stalling for 90 s fails the test.
func (w *slotWriter) waitWrites(t *testing.T, n int64, what string) {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for w.done.Load() < n {
		select {
		case err := <-w.stopped:
			t.Fatalf("writer failed %s: %v", what, err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("writer stalled %s: %d writes, want %d", what, w.done.Load(), n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// verify reads every slot back and compares it with its last write.
func (w *slotWriter) verify(t *testing.T) {
	t.Helper()
	got := make([]byte, slotBlock)
	for slot, seq := range w.last {
		want := make([]byte, slotBlock)
		if seq >= 0 {
			want = slotData(slot, seq)
		}
		if err := w.conn.ReadAt(got, int64(slot)*w.stride); err != nil {
			t.Fatalf("read slot %d: %v", slot, err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("slot %d holds %q..., want its last write (seq %d)", slot, got[:24], seq)
		}
	}
}

// TestE2EMgmtLeaderKilled: three mgmt voters; a writer keeps writing
// through the client while the mgmt leader is SIGKILLed. Writes go on
// without an error (the data path needs mgmt only when a disk fails);
// metadata calls fail while there is no leader and succeed after the
// election (the time is logged); the killed voter, restarted, rejoins and
// catches up; every block reads back its last write.
func TestE2EMgmtLeaderKilled(t *testing.T) {
	cl := startDemoWith(t, demo.Options{Mgmt: 3})
	env := cl.Env()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()

	urls := strings.Split(env["KEEL_API_URL"], ",")
	if len(urls) != 3 || len(strings.Fields(env["KEEL_MGMT_PIDS"])) != 3 {
		t.Fatalf("demo.env with --mgmt 3: KEEL_API_URL %q, KEEL_MGMT_PIDS %q; want three of each", env["KEEL_API_URL"], env["KEEL_MGMT_PIDS"])
	}
	leader, err := cl.Leader(ctx)
	if err != nil || leader < 1 || leader > 3 {
		t.Fatalf("mgmt leader: %d, %v", leader, err)
	}
	if line := cl.Status(ctx); !strings.Contains(line, fmt.Sprintf("mgmt leader: node %d", leader)) {
		t.Errorf("status line %q does not show the leader (node %d)", line, leader)
	}

	const slots = 256
	w := startSlotWriter(t, env, slots)
	defer w.conn.Close()
	w.waitWrites(t, 2*slots, "before the kill") // every object written at least once

	// A metadata client with short timeouts over every mgmt node.
	tok, err := apiclient.ReadToken(env["KEEL_API_TOKEN_FILE"])
	if err != nil {
		t.Fatal(err)
	}
	api := apiclient.New(env["KEEL_API_URL"], tok)
	api.HTTP.Timeout = 3 * time.Second

	if err := cl.Kill("mgmt", leader); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	atKill := w.done.Load()
	t.Logf("SIGKILLed the mgmt leader (node %d) after %d writes", leader, atKill)

	// Metadata: retried until the new leader answers; each call that
	// returned ok is applied once (a retried create is refused by name).
	var failures int
	var lastErr error
	created := false
	for !created {
		_, err := api.Post(ctx, "VolumeCreate", map[string]any{"name": "after-failover", "size": 1 << 30, "template": "demo-r3"}, nil)
		var ae *apiclient.APIError
		switch {
		case err == nil:
			created = true
		case errors.As(err, &ae) && ae.Name == "objectExists" && failures > 0:
			created = true // an earlier attempt was committed after all
		case errors.As(err, &ae) && !ae.Transient:
			t.Fatalf("VolumeCreate during the election: a non-transient error: %v", err)
		default:
			failures++
			lastErr = err
			if time.Since(killed) > 60*time.Second {
				t.Fatalf("metadata calls still fail 60s after the leader was killed: %v", err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	recovered := time.Since(killed)
	var list []struct {
		Name string `json:"name"`
	}
	if _, err := api.Get(ctx, "VolumesList", nil, &list); err != nil {
		t.Fatalf("VolumesList after the election: %v", err)
	}
	if !strings.Contains(fmt.Sprint(list), "after-failover") {
		t.Fatalf("VolumesList after the election lacks the volume created: %v", list)
	}
	newLeader, err := cl.Leader(ctx)
	if err != nil || newLeader == leader || newLeader == 0 {
		t.Fatalf("leader after the election: %d (%v), killed %d", newLeader, err, leader)
	}
	during := w.done.Load() - atKill
	t.Logf("metadata calls recovered %v after the kill (%d failed attempts, last: %v); new leader node %d; %d writes completed meanwhile",
		recovered.Round(time.Millisecond), failures, lastErr, newLeader, during)
	if during == 0 {
		t.Errorf("no write completed while mgmt elected a new leader: the data path waited for mgmt")
	}

	// The killed voter comes back and catches up: its own API shows the
	// leader and the volume created while it was down.
	if _, err := cl.Restart("mgmt", leader); err != nil {
		t.Fatal(err)
	}
	own := apiclient.New(urls[leader-1], tok)
	own.HTTP.Timeout = 3 * time.Second
	deadline := time.Now().Add(60 * time.Second)
	for {
		var st struct {
			Leader string `json:"leader"`
			Voters []any  `json:"voters"`
		}
		_, err := own.Get(ctx, "ClusterStatus", nil, &st)
		if err == nil && st.Leader != "" && len(st.Voters) == 3 {
			if _, err = own.Get(ctx, "Volume/after-failover", nil, nil); err == nil {
				t.Logf("node %d rejoined and caught up %v after it was killed (leader %s)", leader, time.Since(killed).Round(time.Millisecond), st.Leader)
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("restarted mgmt node %d did not rejoin and catch up: %v", leader, err)
		}
		time.Sleep(200 * time.Millisecond)
	}

	w.waitWrites(t, w.done.Load()+slots, "after the rejoin")
	close(w.stop)
	if err := <-w.stopped; err != nil {
		t.Fatalf("writer: %v", err)
	}
	t.Logf("%d writes in all, none failed", w.done.Load())
	w.verify(t)
}

// TestE2EMgmtLeaderAndServerKilled: the mgmt leader and a storage server
// are SIGKILLed together under a writer. The client must have mgmt mark
// the server's disks down before it acknowledges writes without them, and
// mgmt has no leader for a moment: the writes wait for the election
// rather than fail, and every block reads back its last write.
func TestE2EMgmtLeaderAndServerKilled(t *testing.T) {
	cl := startDemoWith(t, demo.Options{Mgmt: 3})
	env := cl.Env()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	leader, err := cl.Leader(ctx)
	if err != nil || leader < 1 || leader > 3 {
		t.Fatalf("mgmt leader: %d, %v", leader, err)
	}
	const slots = 256
	w := startSlotWriter(t, env, slots)
	defer w.conn.Close()
	w.waitWrites(t, slots, "before the kills")
	victim := leader%3 + 1 // a server on another node than the mgmt leader
	if err := cl.Kill("mgmt", leader); err != nil {
		t.Fatal(err)
	}
	if err := cl.Kill("server", victim); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	t.Logf("SIGKILLed the mgmt leader (node %d) and the server of node %d after %d writes", leader, victim, w.done.Load())
	w.waitWrites(t, w.done.Load()+2*slots, "after the kills")
	t.Logf("%d more writes over every object within %v of the kills", 2*slots, time.Since(killed).Round(time.Millisecond))
	close(w.stop)
	if err := <-w.stopped; err != nil {
		t.Fatalf("writer: %v", err)
	}
	w.verify(t)
}
