package client

import (
	"context"
	"testing"

	"keel/internal/later"
	"keel/wire"
)

// The requests one reader starts (one later.Queue) all take one
// connection to a server, so that a batch goes out in one write; readers
// spread over the connections, and other callers take them in turn.
func TestPoolLiveKeepsAReaderOnOneConnection(t *testing.T) {
	c := mustNewTestCluster(t, 1)
	addr := c.servers[1].addr
	const conns = 4
	pool := NewPool(testSecret, wire.Peer{NodeID: 9, Role: "client", Name: "test"}, conns)
	t.Cleanup(pool.Close)
	dialled := map[*wire.Client]bool{}
	for range conns {
		k, err := pool.get(context.Background(), addr, 0)
		if err != nil {
			t.Fatal(err)
		}
		dialled[k] = true
	}
	if len(dialled) != conns {
		t.Fatalf("%d connections dialled, want %d", len(dialled), conns)
	}
	readers := map[*wire.Client]bool{}
	queues := make([]later.Queue, 64) // (distinct addresses, as readers' are)
	for i := range queues {
		q := &queues[i]
		first := pool.live(addr, q)
		if first == nil || !dialled[first] {
			t.Fatal("live returned no pooled connection")
		}
		for range 10 {
			if pool.live(addr, q) != first {
				t.Fatal("one reader's requests took different connections")
			}
		}
		readers[first] = true
	}
	if len(readers) < 2 {
		t.Fatalf("64 readers shared %d connection(s)", len(readers))
	}
	others := map[*wire.Client]bool{}
	for range conns {
		others[pool.live(addr, nil)] = true
	}
	if len(others) != conns {
		t.Fatalf("callers without a queue took %d of %d connections in turn", len(others), conns)
	}
}
