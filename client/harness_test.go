package client

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"keel/internal/freeport"
	"keel/server"
	"keel/wire"
)

var testSecret = []byte("0123456789abcdef0123456789abcdef")

// testServer is one storage server: a real store on a disk file, served
// over the real wire protocol on a loopback port.
type testServer struct {
	disk   uint32
	path   string
	addr   string
	cancel context.CancelFunc
	done   chan struct{}
	store  *server.Store
}

// testCluster stands in for mgmt's view of the disks: addresses, up/down,
// and the commit of a disk going down (refusable, to test that a write is
// never acknowledged without a replica mgmt did not take out).
type testCluster struct {
	t          *testing.T
	mu         sync.Mutex
	servers    map[uint32]*testServer
	down       map[uint32]bool
	recovering map[uint32]bool // write-only disks
	refuseDown bool
	downCalls  []uint32
	// lease, when set, holds the write lease (a real DiskView's); nil:
	// always held.
	lease *DiskView
}

const testObjectSize = 2 << 20

func mustNewTestCluster(t *testing.T, disks int) *testCluster {
	t.Helper()
	c := &testCluster{t: t, servers: map[uint32]*testServer{}, down: map[uint32]bool{}, recovering: map[uint32]bool{}}
	dir := t.TempDir()
	for i := 1; i <= disks; i++ {
		p := filepath.Join(dir, fmt.Sprintf("disk%d", i))
		f, err := os.Create(p)
		if err != nil {
			t.Fatal(err)
		}
		f.Truncate(96 << 20)
		f.Close()
		if _, err := server.InitDisk(p, server.FormatParams{ClusterID: "t.c", DiskID: uint32(i), NodeID: uint32(i), ObjectSize: testObjectSize}, false); err != nil {
			t.Fatal(err)
		}
		s := &testServer{disk: uint32(i), path: p}
		c.servers[s.disk] = s
		c.start(s)
	}
	t.Cleanup(func() {
		for _, s := range c.servers {
			c.stop(s)
		}
	})
	return c
}

func (c *testCluster) start(s *testServer) {
	t := c.t
	// Buffered, with large writes direct: the demo's disks, and the mode
	// in which both paths meet on one file.
	dev, _, err := server.OpenDevice(s.path, server.DirectIO{WritesFrom: 256 << 10})
	if err != nil {
		t.Fatal(err)
	}
	st, err := server.Open(dev)
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
	srv, err := server.NewServer(log, nil, map[string]*server.Store{s.path: st})
	if err != nil {
		t.Fatal(err)
	}
	// A restarted server listens where it did before; the first start
	// takes a port the kernel does not hand to other sockets meanwhile.
	if s.addr == "" {
		if s.addr, err = freeport.Addr(); err != nil {
			t.Fatal(err)
		}
	}
	ln, err := net.Listen("tcp", s.addr)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.addr, s.cancel, s.done, s.store = ln.Addr().String(), cancel, make(chan struct{}), st
	go func() {
		defer close(s.done)
		wire.Serve(ctx, ln, wire.ServerConfig{Secret: testSecret, Self: wire.Peer{NodeID: s.disk, Role: "server", Name: "s"}, Handler: srv, Quick: srv.ServeQuick, Log: log})
	}()
}

// stop takes the server off the network (listener and connections) and
// closes its store, as a crashed process would vanish.
func (c *testCluster) stop(s *testServer) {
	if s.cancel == nil {
		return
	}
	s.cancel()
	<-s.done
	s.store.Close()
	s.cancel = nil
}

func (c *testCluster) DiskAddr(ctx context.Context, disk uint32) (string, bool, error) {
	addr, a, err := c.DiskAccess(ctx, disk)
	return addr, a == DiskUp, err
}

func (c *testCluster) DiskAccess(ctx context.Context, disk uint32) (string, DiskAccess, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	s, ok := c.servers[disk]
	if !ok {
		return "", DiskDown, fmt.Errorf("disk %d unknown", disk)
	}
	switch {
	case c.down[disk]:
		return s.addr, DiskDown, nil
	case c.recovering[disk]:
		return s.addr, DiskWriteOnly, nil
	}
	return s.addr, DiskUp, nil
}

func (c *testCluster) WriteLease(ctx context.Context) error {
	if c.lease == nil {
		return nil
	}
	return c.lease.WriteLease(ctx)
}

var errRefused = errors.New("mgmt refused")

func (c *testCluster) MarkDiskDown(ctx context.Context, disk uint32, reason string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.downCalls = append(c.downCalls, disk)
	if c.refuseDown {
		return errRefused
	}
	c.down[disk] = true
	return nil
}

// layout is a replication-3 volume over disks 1..3 (tail is disk 3).
func (c *testCluster) layout(name string, layers []uint64, size int64) Layout {
	return Layout{Name: name, Fence: layers[len(layers)-1], Layers: layers, Size: size, ObjectSize: testObjectSize,
		DiskSets: [][]uint32{{1, 2, 3}, {2, 3, 1}, {3, 1, 2}}, Token: 1}
}

func (c *testCluster) open(t *testing.T, l Layout) *Volume {
	t.Helper()
	pool := NewPool(testSecret, wire.Peer{NodeID: 9, Role: "client", Name: "test"}, 2)
	t.Cleanup(pool.Close)
	v, err := Open(l, Options{Log: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError})), Cluster: c, Pool: pool})
	if err != nil {
		t.Fatal(err)
	}
	return v
}
