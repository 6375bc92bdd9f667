package mgmt_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"keel/internal/freeport"
	"keel/internal/testbin"
	"keel/mgmt"
	"keel/mgmt/apiclient"
)

// mgmtProc is one keel_mgmt process of the built binary on loopback ports.
type mgmtProc struct {
	id      int
	dir     string
	cfgPath string
	api     string
	raft    string
	cmd     *exec.Cmd
	logPath string
	done    chan struct{}
}

// freeAddr is a loopback address for a child process to listen on.
func freeAddr(t *testing.T) string {
	t.Helper()
	addr, err := freeport.Addr()
	if err != nil {
		t.Fatal(err)
	}
	return addr
}

func newProc(t *testing.T, root string, id int) *mgmtProc {
	t.Helper()
	p := &mgmtProc{id: id, dir: filepath.Join(root, fmt.Sprint("n", id))}
	if err := os.MkdirAll(p.dir, 0o700); err != nil {
		t.Fatal(err)
	}
	listen := freeAddr(t)
	p.raft = freeAddr(t)
	p.api = "http://" + listen
	p.cfgPath = filepath.Join(p.dir, "keel.toml")
	p.logPath = filepath.Join(p.dir, "mgmt.log")
	cfg := fmt.Sprintf(`[node]
id = %d
[mgmt]
api_url = %q
listen = %q
raft_addr = %q
token_file = %q
cluster_secret_file = %q
snapshot_threshold = 64
trailing_logs = 16
snapshot_interval = "1s"
service_timeout = "3s"
`, id, p.api, listen, p.raft, filepath.Join(p.dir, "token"), filepath.Join(p.dir, "secret"))
	if err := os.WriteFile(p.cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func keelCmd(p *mgmtProc, args ...string) *exec.Cmd {
	cmd := exec.Command(os.Getenv("KEEL_TEST_BIN"), append(args, "-c", p.cfgPath, "--state-dir", filepath.Join(p.dir, "state"))...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "KEEL_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	return cmd
}

func (p *mgmtProc) run(t *testing.T, args ...string) string {
	t.Helper()
	out, err := keelCmd(p, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("keel %v: %v\n%s", args, err, out)
	}
	return string(out)
}

func (p *mgmtProc) start(t *testing.T) {
	t.Helper()
	logf, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	p.cmd = keelCmd(p, "mgmt")
	p.cmd.Stdout, p.cmd.Stderr = logf, logf
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p.done = make(chan struct{})
	cmd, done := p.cmd, p.done
	go func() { cmd.Wait(); logf.Close(); close(done) }()
	t.Cleanup(func() {
		p.kill()
		if t.Failed() {
			t.Logf("mgmt %d log:\n%s", p.id, p.logText())
		}
	})
}

func (p *mgmtProc) kill() {
	if p.cmd == nil || p.cmd.Process == nil {
		return
	}
	p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
	p.cmd = nil
}

func (p *mgmtProc) stop(t *testing.T) {
	t.Helper()
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(15 * time.Second):
		t.Fatalf("mgmt %d did not stop on SIGTERM", p.id)
	}
	p.cmd = nil
}

func (p *mgmtProc) client(t *testing.T, token string) *apiclient.Client {
	c := apiclient.New(p.api, token)
	c.HTTP.Timeout = 15 * time.Second
	return c
}

func (p *mgmtProc) logText() string {
	b, _ := os.ReadFile(p.logPath)
	return string(b)
}

func clusterStatus(ctx context.Context, c *apiclient.Client) (mgmt.ClusterStatusReply, error) {
	var st mgmt.ClusterStatusReply
	_, err := c.Get(ctx, "ClusterStatus", nil, &st)
	return st, err
}

// waitFor polls f until it returns nil or the timeout passes.
func waitFor(t *testing.T, what string, timeout time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: still failing after %s: %v", what, timeout, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func volumeNames(ctx context.Context, c *apiclient.Client) (map[string]int, error) {
	var list []mgmt.VolumeSummary
	if _, err := c.Get(ctx, "VolumesList", nil, &list); err != nil {
		return nil, err
	}
	out := map[string]int{}
	for _, v := range list {
		out[v.Name]++
	}
	return out, nil
}

// startCluster inits node 1, starts it, and joins nodes 2 and 3.
func startCluster(t *testing.T) ([]*mgmtProc, string) {
	t.Helper()
	os.Setenv("KEEL_TEST_BIN", testbin.Keel(t))
	root := t.TempDir()
	procs := []*mgmtProc{newProc(t, root, 1), newProc(t, root, 2), newProc(t, root, 3)}
	procs[0].run(t, "cluster", "init", "--name", "lab", "--location", "test", "--sub-cluster", "a")
	procs[0].start(t)
	b, err := os.ReadFile(filepath.Join(procs[0].dir, "token"))
	if err != nil {
		t.Fatal(err)
	}
	token := strings.TrimSpace(string(b))
	ctx := context.Background()
	c1 := procs[0].client(t, token)
	waitFor(t, "node 1 leads", 20*time.Second, func() error {
		st, err := clusterStatus(ctx, c1)
		if err == nil && (st.Leader != "1" || st.ClusterID == "") {
			err = fmt.Errorf("leader %q, cluster id %q", st.Leader, st.ClusterID)
		}
		return err
	})
	for _, p := range procs[1:] {
		p.start(t)
		p.run(t, "cluster", "join", procs[0].api, "--token", token)
	}
	waitFor(t, "three voters, each with the leader's state", 30*time.Second, func() error {
		st, err := clusterStatus(ctx, c1)
		if err != nil {
			return err
		}
		if len(st.Voters) != 3 {
			return fmt.Errorf("%d voters", len(st.Voters))
		}
		for _, p := range procs[1:] {
			ps, err := clusterStatus(ctx, p.client(t, token))
			if err != nil {
				return err
			}
			if ps.ClusterID != st.ClusterID || ps.Leader != "1" {
				return fmt.Errorf("node %d: cluster %q leader %q", p.id, ps.ClusterID, ps.Leader)
			}
		}
		return nil
	})
	return procs, token
}

// TestClusterFailover runs three keel_mgmt processes: the leader is
// SIGKILLed during a stream of VolumeCreate calls; every call that returned
// ok is present afterwards and none is applied twice; the killed node,
// which missed more entries than the leader keeps in its log, catches up
// from a snapshot; then all three restart with their state intact.
func TestClusterFailover(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three mgmt processes")
	}
	procs, token := startCluster(t)
	ctx := context.Background()
	c1 := procs[0].client(t, token)
	for d := 1; d <= 4; d++ {
		if _, err := c1.Post(ctx, "DiskRegister", map[string]any{"id": d, "serverId": d, "size": 1 << 40, "freeBytes": 1 << 39}, nil); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c1.Post(ctx, "VolumeTemplateCreate", map[string]any{"name": "r2", "replication": 2}, nil); err != nil {
		t.Fatal(err)
	}

	// The stream: one writer, rotating to the next node on a failure and
	// retrying the same name there.
	const total = 300
	var mu sync.Mutex
	acked := map[string]bool{}    // returned ok
	existed := map[string]bool{}  // a retry found it committed already
	killedAt := make(chan int, 1) // how many were acked when the leader died
	var failoverGap time.Duration
	streamDone := make(chan error, 1)
	go func() {
		node := 1 // start on a follower: forwarding is part of the path
		var lastOK time.Time
		for i := 0; i < total; i++ {
			name := fmt.Sprintf("vol%04d", i)
			var err error
			for attempt := 0; attempt < 200; attempt++ {
				c := procs[node].client(t, token)
				c.HTTP.Timeout = 3 * time.Second
				_, err = c.Post(ctx, "VolumeCreate", map[string]any{"name": name, "size": 1 << 30, "template": "r2"}, nil)
				var ae *apiclient.APIError
				if err == nil {
					mu.Lock()
					acked[name] = true
					mu.Unlock()
					break
				}
				if errors.As(err, &ae) && ae.Name == mgmt.ErrExists && attempt > 0 {
					mu.Lock()
					existed[name] = true
					mu.Unlock()
					err = nil
					break
				}
				if errors.As(err, &ae) && !ae.Transient {
					break
				}
				node = (node + 1) % len(procs)
				time.Sleep(50 * time.Millisecond)
			}
			if err != nil {
				streamDone <- fmt.Errorf("create %s: %w", name, err)
				return
			}
			if gap := time.Since(lastOK); !lastOK.IsZero() && gap > failoverGap {
				failoverGap = gap
			}
			lastOK = time.Now()
		}
		streamDone <- nil
	}()
	waitFor(t, "50 creates acknowledged", 60*time.Second, func() error {
		mu.Lock()
		defer mu.Unlock()
		if len(acked) < 50 {
			return fmt.Errorf("%d acked", len(acked))
		}
		return nil
	})
	procs[0].kill() // SIGKILL the leader mid-stream
	mu.Lock()
	killedAt <- len(acked)
	mu.Unlock()
	var killIndex uint64
	waitFor(t, "a new leader", 15*time.Second, func() error {
		st, err := clusterStatus(ctx, procs[1].client(t, token))
		if err == nil && st.Leader == "" {
			err = errors.New("no leader")
		}
		killIndex = st.AppliedIndex
		return err
	})
	if err := <-streamDone; err != nil {
		t.Fatal(err)
	}
	t.Logf("leader killed after %d acks; longest gap between acks %s; %d retries found their create committed", <-killedAt, failoverGap, len(existed))
	if failoverGap > 15*time.Second {
		t.Errorf("no new leader answered for %s", failoverGap)
	}

	check := func(p *mgmtProc) error {
		names, err := volumeNames(ctx, p.client(t, token))
		if err != nil {
			return err
		}
		for n := range acked {
			if names[n] != 1 {
				return fmt.Errorf("node %d: acknowledged volume %s present %d times", p.id, n, names[n])
			}
		}
		for n, k := range names {
			if k != 1 {
				return fmt.Errorf("node %d: volume %s present %d times", p.id, n, k)
			}
		}
		if len(names) != total {
			return fmt.Errorf("node %d: %d volumes, want %d (each name once)", p.id, len(names), total)
		}
		return nil
	}
	for _, p := range procs[1:] {
		waitFor(t, fmt.Sprintf("node %d has every volume once", p.id), 10*time.Second, func() error { return check(p) })
	}

	mgmtStatus := func(via *mgmtProc, id string) error {
		var st struct {
			Mgmt map[string]map[string]any `json:"mgmt"`
		}
		if _, err := via.client(t, token).Get(ctx, "ServicesList", nil, &st); err != nil {
			return err
		}
		if got := fmt.Sprint(st.Mgmt[id]["status"]); got != "down" {
			return fmt.Errorf("mgmt %s is %s", id, got)
		}
		return nil
	}
	waitFor(t, "ServicesList shows the killed mgmt down", 20*time.Second, func() error { return mgmtStatus(procs[2], "1") })

	// The old leader missed ~250 entries while the leader keeps only 16
	// behind each 64-entry snapshot: it must catch up from a snapshot. Wait
	// until both survivors compacted their logs past what node 1 has.
	waitFor(t, "the survivors snapshot past node 1's log", 30*time.Second, func() error {
		for _, p := range procs[1:] {
			if idx := newestSnapshot(p); idx < killIndex+64 {
				return fmt.Errorf("node %d: newest snapshot at index %d, want > %d", p.id, idx, killIndex+64)
			}
		}
		return nil
	})
	procs[0].start(t)
	waitFor(t, "restarted node 1 caught up", 30*time.Second, func() error { return check(procs[0]) })
	waitFor(t, "ServicesList shows the restarted mgmt running", 20*time.Second, func() error {
		if err := mgmtStatus(procs[1], "1"); err == nil {
			return errors.New("mgmt 1 still down")
		} else if !strings.Contains(err.Error(), "is running") {
			return err
		}
		return nil
	})
	fromSnapshot := false
	for _, m := range regexp.MustCompile(`store restored from a snapshot","applied_index":(\d+)`).FindAllStringSubmatch(procs[0].logText(), -1) {
		idx, _ := strconv.ParseUint(m[1], 10, 64)
		fromSnapshot = fromSnapshot || idx > killIndex+32
	}
	if !fromSnapshot {
		t.Errorf("node 1 caught up without installing a snapshot newer than index %d:\n%s", killIndex, procs[0].logText())
	}

	// All three stopped and restarted: state intact.
	c2 := procs[1].client(t, token)
	before, err := clusterStatus(ctx, c2)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range procs {
		p.stop(t)
	}
	for _, p := range procs {
		p.start(t)
	}
	for _, p := range procs {
		waitFor(t, fmt.Sprintf("node %d back with its state", p.id), 30*time.Second, func() error {
			st, err := clusterStatus(ctx, p.client(t, token))
			if err != nil {
				return err
			}
			if st.Leader == "" || st.Generation < before.Generation {
				return fmt.Errorf("leader %q generation %d (was %d)", st.Leader, st.Generation, before.Generation)
			}
			return check(p)
		})
	}
	// Writes work again after the restart, and a write through a follower
	// is visible in the next read from that follower.
	st, err := clusterStatus(ctx, c2)
	if err != nil {
		t.Fatal(err)
	}
	for i, p := range procs {
		if fmt.Sprint(p.id) == st.Leader {
			continue
		}
		fc := p.client(t, token)
		name := fmt.Sprint("after-restart-", i)
		if _, err := fc.Post(ctx, "VolumeCreate", map[string]any{"name": name, "size": 1 << 30, "template": "r2"}, nil); err != nil {
			t.Fatal(err)
		}
		names, err := volumeNames(ctx, fc)
		if err != nil || names[name] != 1 {
			t.Fatalf("read after write through follower %d: %v %v", p.id, names[name], err)
		}
	}
}

// newestSnapshot is the Raft index of the newest snapshot in a node's
// snapshot store (directories named TERM-INDEX-MILLIS).
func newestSnapshot(p *mgmtProc) uint64 {
	dirs, _ := filepath.Glob(filepath.Join(p.dir, "state", "mgmt", "snapshots", "*-*-*"))
	var best uint64
	for _, d := range dirs {
		parts := strings.Split(filepath.Base(d), "-")
		if idx, err := strconv.ParseUint(parts[1], 10, 64); err == nil && idx > best && !strings.HasSuffix(d, ".tmp") {
			best = idx
		}
	}
	return best
}
