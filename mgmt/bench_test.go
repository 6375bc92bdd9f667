package mgmt_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"keel/internal/testbin"
	"keel/mgmt/apiclient"
	"keel/node"
)

// TestMgmtBench is `make bench` for mgmt (scripts/bench.d/mgmt.sh), skipped
// unless KEEL_BENCH=1: VolumeCreate calls per second on 1 and on 3 voters,
// and VolumesList latency with 10,000 volumes and 1,000 snapshots, each
// beside plain SQLite doing the same in this process (one durable
// transaction per insert; one SELECT of the rows encoded as JSON).
func TestMgmtBench(t *testing.T) {
	if os.Getenv("KEEL_BENCH") != "1" {
		t.Skip("benchmark: set KEEL_BENCH=1 (make bench)")
	}
	dur := 5 * time.Second
	if d, err := time.ParseDuration(os.Getenv("KEEL_BENCH_TIME")); err == nil {
		dur = d
	}
	os.Setenv("KEEL_TEST_BIN", testbin.Keel(t))
	peerCreates := sqliteInsertRate(t, dur)

	one, tok1 := startSingle(t)
	c1 := one.client(t, tok1)
	prepare(t, c1)
	rate1 := createRate(t, []*mgmtProc{one}, tok1, "a", dur)
	fmt.Printf("mgmt VolumeCreate, 1 voter: keel %.0f/s, sqlite alone %.0f/s, ratio %.2f (goal > 500/s)\n", rate1, peerCreates, rate1/peerCreates)

	procs, tok3 := startCluster(t)
	prepare(t, procs[0].client(t, tok3))
	rate3 := createRate(t, procs, tok3, "b", dur)
	fmt.Printf("mgmt VolumeCreate, 3 voters: keel %.0f/s, sqlite alone %.0f/s, ratio %.2f\n", rate3, peerCreates, rate3/peerCreates)
	for _, p := range procs {
		p.kill()
	}

	// Fill the one-voter cluster to 10,000 volumes and 1,000 snapshots.
	ctx := context.Background()
	names, err := volumeNames(ctx, c1)
	if err != nil {
		t.Fatal(err)
	}
	fill(t, c1, 0, 10000-len(names), func(i int) (string, any) {
		return "VolumeCreate", map[string]any{"name": fmt.Sprintf("fill%05d", i), "size": 10 << 30, "template": "r3"}
	})
	fill(t, c1, 0, 1000, func(i int) (string, any) {
		return fmt.Sprintf("VolumeSnapshot/fill%05d", i), map[string]any{"name": fmt.Sprintf("fill%05d@s", i)}
	})
	// The latency of the call: from sending the request to the last byte
	// of the reply (the client's own JSON decoding is not mgmt's).
	list := func() {
		req, _ := http.NewRequest(http.MethodGet, one.api+"/ctrl/1.0/VolumesList", nil)
		req.Header.Set("Authorization", "Storpool v1:"+tok1)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != 200 || len(b) < 10000*300 {
			t.Fatalf("VolumesList: HTTP %d, %d bytes, %v", resp.StatusCode, len(b), err)
		}
	}
	var check struct {
		Data []json.RawMessage `json:"data"`
	}
	if _, err := c1.Get(ctx, "VolumesList", nil, &check.Data); err != nil || len(check.Data) < 10000 {
		t.Fatalf("VolumesList: %d volumes, %v", len(check.Data), err)
	}
	// Uncached: a committed write before every list makes mgmt build the
	// reply afresh; only the list is timed.
	var times []time.Duration
	for i := 0; i < 11; i++ {
		mustPostT(t, c1, "KVSet", map[string]string{"key": "bench", "value": fmt.Sprint(i)})
		times = append(times, median(t, 1, list))
	}
	sort.Slice(times, func(i, j int) bool { return times[i] < times[j] })
	fresh := times[len(times)/2]
	cached := median(t, 11, list)
	peerList := sqliteListTime(t, 10000)
	fmt.Printf("mgmt VolumesList (10,000 volumes, 1,000 snapshots): keel %s after a write (%s repeated), sqlite alone %s, ratio %.2f (goal < 200ms)\n",
		fresh.Round(time.Millisecond), cached.Round(time.Millisecond), peerList.Round(time.Millisecond), float64(peerList)/float64(fresh))
}

func startSingle(t *testing.T) (*mgmtProc, string) {
	t.Helper()
	p := newProc(t, t.TempDir(), 1)
	p.run(t, "cluster", "init", "--name", "bench", "--location", "here")
	p.start(t)
	b, _ := os.ReadFile(filepath.Join(p.dir, "token"))
	tok := strings.TrimSpace(string(b))
	waitFor(t, "leader", 20*time.Second, func() error {
		st, err := clusterStatus(context.Background(), p.client(t, tok))
		if err == nil && st.ClusterID == "" {
			err = errors.New("no identity yet")
		}
		return err
	})
	return p, tok
}

func prepare(t *testing.T, c *apiclient.Client) {
	t.Helper()
	for d := 1; d <= 6; d++ {
		mustPostT(t, c, "DiskRegister", map[string]any{"id": d, "serverId": (d + 1) / 2, "size": 1 << 42, "freeBytes": 1 << 42})
	}
	mustPostT(t, c, "VolumeTemplateCreate", map[string]any{"name": "r3", "replication": 3})
}

func mustPostT(t *testing.T, c *apiclient.Client, call string, body any) {
	t.Helper()
	if _, err := c.Post(context.Background(), call, body, nil); err != nil {
		t.Fatalf("%s: %v", call, err)
	}
}

// createRate runs 32 concurrent VolumeCreate streams against the nodes
// (spread over them, so followers forward) for dur.
func createRate(t *testing.T, procs []*mgmtProc, tok, prefix string, dur time.Duration) float64 {
	t.Helper()
	var n atomic.Int64
	var wg sync.WaitGroup
	deadline := time.Now().Add(dur)
	start := time.Now()
	for w := 0; w < 32; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := procs[w%len(procs)].client(t, tok)
			for i := 0; time.Now().Before(deadline); i++ {
				if _, err := c.Post(context.Background(), "VolumeCreate", map[string]any{"name": fmt.Sprintf("%s%d-%d", prefix, w, i), "size": 10 << 30, "template": "r3"}, nil); err != nil {
					t.Errorf("VolumeCreate: %v", err)
					return
				}
				n.Add(1)
			}
		}()
	}
	wg.Wait()
	return float64(n.Load()) / time.Since(start).Seconds()
}

func fill(t *testing.T, c *apiclient.Client, from, to int, call func(i int) (string, any)) {
	t.Helper()
	var wg sync.WaitGroup
	next := atomic.Int64{}
	next.Store(int64(from))
	for w := 0; w < 32; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := int(next.Add(1) - 1); i < to; i = int(next.Add(1) - 1) {
				name, body := call(i)
				if _, err := c.Post(context.Background(), name, body, nil); err != nil {
					t.Errorf("%s: %v", name, err)
					return
				}
			}
		}()
	}
	wg.Wait()
}

func median(t *testing.T, n int, f func()) time.Duration {
	var d []time.Duration
	for i := 0; i < n; i++ {
		s := time.Now()
		f()
		d = append(d, time.Since(s))
	}
	sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
	return d[n/2]
}

// sqliteInsertRate is the peer: one durable (synchronous=FULL, WAL)
// transaction per inserted row, one writer, for dur.
func sqliteInsertRate(t *testing.T, dur time.Duration) float64 {
	db := sqliteDB(t)
	deadline := time.Now().Add(dur)
	start := time.Now()
	n := 0
	for ; time.Now().Before(deadline); n++ {
		if _, err := db.Exec(`INSERT INTO v (name, body) VALUES (?, ?)`, fmt.Sprint("p", n), strings.Repeat("x", 600)); err != nil {
			t.Fatal(err)
		}
	}
	return float64(n) / time.Since(start).Seconds()
}

// sqliteListTime is the peer of VolumesList: SELECT n rows of a similar
// width and encode them as JSON.
func sqliteListTime(t *testing.T, n int) time.Duration {
	db := sqliteDB(t)
	tx, _ := db.Begin()
	for i := 0; i < n; i++ {
		tx.Exec(`INSERT INTO v (name, body) VALUES (?, ?)`, fmt.Sprint("p", i), strings.Repeat("x", 600))
	}
	tx.Commit()
	return median(t, 11, func() {
		rows, err := db.Query(`SELECT name, body FROM v`)
		if err != nil {
			t.Fatal(err)
		}
		var out []map[string]string
		for rows.Next() {
			var a, b string
			rows.Scan(&a, &b)
			out = append(out, map[string]string{"name": a, "body": b})
		}
		rows.Close()
		json.Marshal(out)
	})
}

func sqliteDB(t *testing.T) *sql.DB {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "0001_v.sql"), []byte(`CREATE TABLE v (id INTEGER PRIMARY KEY, name TEXT UNIQUE, body TEXT);`), 0o600)
	db, err := node.OpenDB(context.Background(), filepath.Join(dir, "peer.db"), os.DirFS(dir))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}
