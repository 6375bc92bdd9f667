package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sort"
	"testing"
	"time"

	"keel/mgmt"
	"keel/mgmt/apiclient"
)

// flipBytes damages block blk of object id in the disk file at path, as
// bit rot would, behind the store's back.
func flipBytes(t *testing.T, s *Store, path string, id ObjectID, blk int) {
	t.Helper()
	s.mu.Lock()
	au := s.objects[id].aus[blk/BlocksPerAU]
	s.mu.Unlock()
	off := s.dataOff(au, blk%BlocksPerAU) + int64(blk*7%BlockSize)
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
		b[i] ^= 0x5a
	}
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

// writeObjects creates objects and writes blocks into them (spread over
// several AUs, with gaps), the same on every store, with version v.
func writeObjects(t *testing.T, ids []ObjectID, stores ...*Store) (blocks int) {
	t.Helper()
	const nblk = testObjectSize / BlockSize
	for _, s := range stores {
		blocks = 0
		for n, id := range ids {
			if err := s.CreateObject(id, nil); err != nil {
				t.Fatal(err)
			}
			for b := n; b < nblk; b += 3 + n {
				if err := s.Write(id, uint64(b)*BlockSize, block(uint64(n)<<32|uint64(b)), uint64(10+b)); err != nil {
					t.Fatal(err)
				}
				blocks++
			}
		}
		if err := s.Flush(); err != nil {
			t.Fatal(err)
		}
	}
	return blocks
}

func sortBad(b []BadBlock) {
	sort.Slice(b, func(i, j int) bool {
		x, y := b[i], b[j]
		if x.Object != y.Object {
			return x.Object.Volume < y.Object.Volume || x.Object.Volume == y.Object.Volume && x.Object.Index < y.Object.Index
		}
		return x.Block < y.Block
	})
}

// The scrub walk finds exactly the flipped blocks, reads every data block
// once, and continued from a saved position (as after a pause or a
// restart) reads nothing twice.
func TestScrubFindsExactlyTheFlippedBlocks(t *testing.T) {
	s, path := mustNewFileStore(t, 16)
	ids := []ObjectID{{7, 0}, {7, 1}, {8, 3}}
	blocks := writeObjects(t, ids, s)
	want := []BadBlock{{Object: ids[0], Block: 0}, {Object: ids[0], Block: 3 * BlocksPerAU}, {Object: ids[1], Block: 5}, {Object: ids[2], Block: 2*BlocksPerAU + 10}}
	for _, b := range want {
		flipBytes(t, s, path, b.Object, b.Block)
	}
	for _, stopAfter := range []int{-1, 0, 1, 5} {
		var got []BadBlock
		var verified uint64
		pos := ScrubPosition{}
		buf := make([]byte, AUSize)
		for steps := 0; ; steps++ {
			if steps == stopAfter {
				// A new walk from the saved position, as a resumed job.
				buf = make([]byte, AUSize)
			}
			st, err := s.ScrubNext(pos, buf)
			if err != nil {
				t.Fatal(err)
			}
			verified += st.Blocks
			got = append(got, st.Bad...)
			if st.Done {
				break
			}
			if st.Next == pos {
				t.Fatalf("scrub did not advance from %s", pos)
			}
			pos = st.Next
		}
		sortBad(got)
		if verified != uint64(blocks) {
			t.Errorf("stop after %d: verified %d data blocks, want %d", stopAfter, verified, blocks)
		}
		if len(got) != len(want) {
			t.Fatalf("stop after %d: scrub found %v, want %v", stopAfter, got, want)
		}
		for i := range want {
			if got[i] != want[i] {
				t.Fatalf("stop after %d: scrub found %v, want %v", stopAfter, got, want)
			}
		}
	}
}

type staticFinder []Replica

func (f staticFinder) Replicas(context.Context, uint32, ObjectID) ([]Replica, error) { return f, nil }

func runScrub(t *testing.T, s *Store, find ReplicaFinder) ScrubStatus {
	t.Helper()
	sc := NewScrubber(s, find, 0, slog.New(slog.DiscardHandler))
	sc.Start(context.Background(), ScrubStatus{Job: 1}, false)
	t.Cleanup(sc.Stop)
	deadline := time.Now().Add(30 * time.Second)
	for {
		st := sc.Status()
		if st.State != ScrubRunning {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("scrub still running after 30s: %+v", st)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// A scrub repairs bad blocks from a replica over the wire; the repaired
// disk reads like the replica, also after a reopen (the repair is
// durable).
func TestScrubRepairsFromReplica(t *testing.T) {
	local, path := mustNewFileStore(t, 16)
	peer, _ := mustNewFileStore(t, 16)
	ids := []ObjectID{{7, 0}, {7, 1}}
	blocks := writeObjects(t, ids, local, peer)
	bad := []BadBlock{{Object: ids[0], Block: 3}, {Object: ids[0], Block: 3 + 4*3}, {Object: ids[1], Block: BlocksPerAU + 1}}
	for _, b := range bad {
		flipBytes(t, local, path, b.Object, b.Block)
	}
	st := runScrub(t, local, staticFinder{{Disk: 3, Conn: serveStore(t, peer)}})
	if st.State != ScrubDone || st.Errors != 3 || st.Repaired != 3 || st.Unrepairable != 0 || st.Blocks != uint64(blocks) {
		t.Fatalf("scrub status %+v, want done, 3 errors, 3 repaired of %d blocks", st, blocks)
	}
	check := func(s *Store) {
		a, b := make([]byte, testObjectSize), make([]byte, testObjectSize)
		for _, id := range ids {
			if err := s.Read(id, 0, a); err != nil {
				t.Fatalf("read %s after the repair: %v", id, err)
			}
			if err := peer.Read(id, 0, b); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(a, b) {
				t.Fatalf("object %s differs from the replica after the repair", id)
			}
		}
		for _, bb := range bad {
			ls, lv, _ := s.BlockMeta(bb.Object, false, uint64(bb.Block)*BlockSize, BlockSize)
			ps, pv, _ := peer.BlockMeta(bb.Object, false, uint64(bb.Block)*BlockSize, BlockSize)
			if ls[0] != ps[0] || lv[0] != pv[0] {
				t.Fatalf("block %v: state/version %d/%d, replica %d/%d", bb, ls[0], lv[0], ps[0], pv[0])
			}
		}
	}
	check(local)
	check(reopen(t, local, path))
}

// Without a good copy the block is counted unrepairable and stays an
// error: the replica's copy is bad too, older than the local block, or
// there is no replica.
func TestScrubUnrepairable(t *testing.T) {
	for _, tc := range []string{"replica rotten too", "replica older", "no replica"} {
		t.Run(tc, func(t *testing.T) {
			local, path := mustNewFileStore(t, 16)
			peer, ppath := mustNewFileStore(t, 16)
			id := ObjectID{9, 0}
			writeObjects(t, []ObjectID{id}, local, peer)
			var find ReplicaFinder = staticFinder{{Disk: 3, Conn: serveStore(t, peer)}}
			switch tc {
			case "replica rotten too":
				flipBytes(t, peer, ppath, id, 6)
			case "replica older":
				// The local disk got a newer write the replica has not.
				if err := local.Write(id, 6*BlockSize, block(99), 1000); err != nil {
					t.Fatal(err)
				}
				if err := local.Flush(); err != nil {
					t.Fatal(err)
				}
			case "no replica":
				find = staticFinder{}
			}
			flipBytes(t, local, path, id, 6)
			st := runScrub(t, local, find)
			if st.State != ScrubDone || st.Errors != 1 || st.Repaired != 0 || st.Unrepairable != 1 {
				t.Fatalf("scrub status %+v, want done with 1 error, unrepairable", st)
			}
			if err := local.Read(id, 6*BlockSize, make([]byte, BlockSize)); !errors.Is(err, ErrChecksum) {
				t.Fatalf("read of the unrepaired block: %v, want ErrChecksum", err)
			}
		})
	}
}

// A repair writes the replica's version: a late older write still loses
// to it, a newer one wins, and a block rewritten since the scrub found it
// bad is left alone.
func TestScrubRepairKeepsVersionRules(t *testing.T) {
	s, path := mustNewFileStore(t, 16)
	id := ObjectID{5, 0}
	if err := s.CreateObject(id, nil); err != nil {
		t.Fatal(err)
	}
	if err := s.Write(id, 0, block(1), 50); err != nil {
		t.Fatal(err)
	}
	flipBytes(t, s, path, id, 0)
	if _, err := s.repairBlock(id, false, 0, BlockCopy{State: BlockData, Version: 49, Data: block(0)}); !errors.Is(err, ErrStaleCopy) {
		t.Fatalf("repair from an older copy: %v, want ErrStaleCopy", err)
	}
	if out, err := s.repairBlock(id, false, 0, BlockCopy{State: BlockData, Version: 50, Data: block(1)}); err != nil || out != repaired {
		t.Fatalf("repair: %v %v", out, err)
	}
	if got := mustRead(t, s, id, 0); !bytes.Equal(got, block(1)) {
		t.Fatal("repaired block reads wrong data")
	}
	if err := s.Write(id, 0, block(2), 49); err != nil {
		t.Fatal(err)
	}
	if got := mustRead(t, s, id, 0); !bytes.Equal(got, block(1)) {
		t.Fatal("a late older write replaced the repaired block")
	}
	if err := s.Write(id, 0, block(3), 51); err != nil {
		t.Fatal(err)
	}
	if got := mustRead(t, s, id, 0); !bytes.Equal(got, block(3)) {
		t.Fatal("a newer write did not replace the repaired block")
	}
	// Found bad, then rewritten before the repair came: left alone.
	flipBytes(t, s, path, id, 0)
	if err := s.Write(id, 0, block(4), 52); err != nil {
		t.Fatal(err)
	}
	if out, err := s.repairBlock(id, false, 0, BlockCopy{State: BlockData, Version: 51, Data: block(3)}); err != nil || out != superseded {
		t.Fatalf("repair of a rewritten block: %v %v, want superseded", out, err)
	}
	if got := mustRead(t, s, id, 0); !bytes.Equal(got, block(4)) {
		t.Fatal("a repair replaced a newer write")
	}
	// A replica whose block was trimmed after the local write: the TRIM
	// (newer) is applied.
	if err := s.Write(id, BlockSize, block(5), 60); err != nil {
		t.Fatal(err)
	}
	flipBytes(t, s, path, id, 1)
	if out, err := s.repairBlock(id, false, 1, BlockCopy{State: BlockUnwritten, Version: 61}); err != nil || out != repaired {
		t.Fatalf("repair from a trimmed copy: %v %v", out, err)
	}
	if got := mustRead(t, s, id, 1); !bytes.Equal(got, make([]byte, BlockSize)) {
		t.Fatal("block repaired from a trimmed copy does not read zeros")
	}
}

// A paused job makes no progress until continued; the rate limit bounds
// its speed.
func TestScrubPauseAndRate(t *testing.T) {
	s, _ := mustNewFileStore(t, 16)
	writeObjects(t, []ObjectID{{1, 0}, {1, 1}}, s)
	aus := s.Stats().AUsUsed
	const rate = 40 * AUSize // bytes per second
	sc := NewScrubber(s, nil, rate, slog.New(slog.DiscardHandler))
	sc.Start(context.Background(), ScrubStatus{Job: 4}, true)
	defer sc.Stop()
	time.Sleep(100 * time.Millisecond)
	if st := sc.Status(); st.State != ScrubPaused || st.ScrubbedBytes != 0 || st.Position != (ScrubPosition{}) {
		t.Fatalf("paused job: %+v, want paused at the start", st)
	}
	t0 := time.Now()
	sc.SetPaused(false)
	for sc.Status().State == ScrubRunning {
		time.Sleep(5 * time.Millisecond)
	}
	el := time.Since(t0)
	st := sc.Status()
	if st.State != ScrubDone || st.ScrubbedBytes != aus*AUSize || st.Job != 4 {
		t.Fatalf("job after continue: %+v, want done after %d bytes", st, aus*AUSize)
	}
	if min := time.Duration(float64(aus-1) / 40 * float64(time.Second)); el < min {
		t.Fatalf("scrubbed %d AUs in %v at %d AUs/s: the rate limit did not hold (want >= %v)", aus, el, 40, min)
	}
}

// mustStartMgmt runs a one-voter mgmt in-process on loopback and returns
// an API client for it.
func mustStartMgmt(t *testing.T) *apiclient.Client {
	t.Helper()
	dir := t.TempDir()
	init, _ := json.Marshal(mgmt.ClusterInitDesc{Name: "t", Location: "here", LocationID: "t1", SubClusterID: "a"})
	if err := os.WriteFile(filepath.Join(dir, mgmt.InitFile), init, 0o600); err != nil {
		t.Fatal(err)
	}
	const token = "scrub-test-token"
	svc, err := mgmt.StartService(context.Background(), mgmt.ServiceConfig{NodeID: 1, Dir: dir, RaftAddr: "127.0.0.1:0", Listen: "127.0.0.1:0",
		Secret: bytes.Repeat([]byte("s"), 64), Token: token, SnapshotThreshold: 1024, TrailingLogs: 128, ServiceTimeout: time.Hour,
		Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { svc.Close() })
	hs := httptest.NewServer(svc)
	t.Cleanup(hs.Close)
	c := apiclient.New(hs.URL, token)
	deadline := time.Now().Add(15 * time.Second)
	for {
		_, err := c.Post(context.Background(), "DiskRegister", map[string]any{"id": 3, "serverId": 2, "size": 1 << 30, "freeBytes": 1 << 29}, nil)
		if err == nil {
			return c
		}
		if time.Now().After(deadline) {
			t.Fatalf("mgmt not ready: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// The server follows mgmt's scrub state: a job started while paused
// waits at its start and says so; a server restarted mid-job continues
// from the position it last reported, with the counts so far, and
// reports the job done.
func TestScrubFollowsMgmt(t *testing.T) {
	api := mustStartMgmt(t)
	ctx := context.Background()
	s, _ := mustNewFileStore(t, 16)
	a, b := ObjectID{1, 0}, ObjectID{1, 1} // object table slots 0 and 1
	writeObjects(t, []ObjectID{a, b}, s)
	srv := &Server{log: slog.New(slog.DiscardHandler)}
	describe := func() apiclient.DiskScrub {
		t.Helper()
		var d apiclient.DiskScrub
		if _, err := api.Get(ctx, "DiskDescribe/3", nil, &d); err != nil {
			t.Fatal(err)
		}
		return d
	}
	follow := func(sc *Scrubber, rep *scrubReported) {
		t.Helper()
		if err := srv.followScrubOnce(ctx, api, 3, sc, rep); err != nil {
			t.Fatal(err)
		}
	}
	for _, call := range []string{"DiskScrubPause/3", "DiskScrubStart/3"} {
		if _, err := api.Post(ctx, call, nil, nil); err != nil {
			t.Fatal(err)
		}
	}
	sc := NewScrubber(s, nil, 0, slog.New(slog.DiscardHandler))
	var rep scrubReported
	follow(sc, &rep) // starts the job, paused
	time.Sleep(50 * time.Millisecond)
	follow(sc, &rep)
	if d := describe(); !d.Scrubbing || d.ScrubState != ScrubPaused || d.ScrubbedBytes != 0 || d.ScrubPosition != (apiclient.ScrubPosition{}) {
		t.Fatalf("job started paused: %+v", d)
	}
	sc.Stop() // the server dies

	// What it had reported before dying: object a scrubbed.
	aus := func(id ObjectID) (n int64) {
		for _, au := range s.objects[id].aus {
			if au >= 0 {
				n++
			}
		}
		return n
	}
	blocksOf := func(id ObjectID) (n int64) {
		states, _, _ := s.BlockMeta(id, false, 0, testObjectSize)
		for _, st := range states {
			if st == BlockData {
				n++
			}
		}
		return n
	}
	prev := apiclient.DiskScrubReport{Job: 1, State: "running", Position: apiclient.ScrubPosition{Slot: 1}, ScrubbedBytes: aus(a) * AUSize,
		TotalBytes: (aus(a) + aus(b)) * AUSize, Blocks: blocksOf(a), Errors: 2, Repaired: 2}
	if _, err := api.Post(ctx, "DiskScrubReport/3", prev, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := api.Post(ctx, "DiskScrubContinue/3", nil, nil); err != nil {
		t.Fatal(err)
	}
	sc = NewScrubber(s, nil, 0, slog.New(slog.DiscardHandler))
	defer sc.Stop()
	rep = scrubReported{}
	deadline := time.Now().Add(20 * time.Second)
	for describe().Scrubbing {
		if time.Now().After(deadline) {
			t.Fatalf("job not done: %+v", describe())
		}
		follow(sc, &rep)
		time.Sleep(20 * time.Millisecond)
	}
	d := describe()
	if d.ScrubState != ScrubDone || d.ScrubJob != 1 || d.ScrubBlocks != blocksOf(a)+blocksOf(b) || d.ScrubbedBytes != (aus(a)+aus(b))*AUSize ||
		d.ScrubErrors != 2 || d.ScrubRepaired != 2 || d.LastScrubCompleted == 0 {
		t.Fatalf("resumed job: %+v, want done with a's counts plus b's (%d blocks)", d, blocksOf(a)+blocksOf(b))
	}
}

// A disk that fails (and is being ejected) ends its unfinished job in
// mgmt: it no longer shows as scrubbing.
func TestScrubEndsWhenTheDiskFails(t *testing.T) {
	api := mustStartMgmt(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s, _ := mustNewFileStore(t, 16)
	writeObjects(t, []ObjectID{{1, 0}}, s)
	for _, call := range []string{"DiskScrubPause/3", "DiskScrubStart/3"} {
		if _, err := api.Post(ctx, call, nil, nil); err != nil {
			t.Fatal(err)
		}
	}
	srv := &Server{log: slog.New(slog.DiscardHandler)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.followScrub(ctx, Options{Mgmt: api, HeartbeatInterval: 20 * time.Millisecond}, 3, s)
	}()
	wait := func(what string, ok func(apiclient.DiskScrub) bool) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for {
			var d apiclient.DiskScrub
			if _, err := api.Get(ctx, "DiskDescribe/3", nil, &d); err != nil {
				t.Fatal(err)
			}
			if ok(d) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: %+v", what, d)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	wait("job reported paused", func(d apiclient.DiskScrub) bool { return d.Scrubbing && d.ScrubState == ScrubPaused })
	s.fail(errors.New("injected I/O error"))
	wait("job ended as failed", func(d apiclient.DiskScrub) bool {
		return !d.Scrubbing && d.ScrubState == ScrubFailed && d.ScrubError != ""
	})
	<-done
}

// onlyFor is a ReplicaFinder that knows the placement of one object only,
// as mgmt does not place a deleted layer.
type onlyFor struct {
	id   ObjectID
	reps []Replica
}

func (f onlyFor) Replicas(_ context.Context, _ uint32, id ObjectID) ([]Replica, error) {
	if id != f.id {
		return nil, fmt.Errorf("mgmt places object %s on no disk set of this disk", id)
	}
	return f.reps, nil
}

// A bad block of a hidden parent (its layer reclaimed while children read
// through it) is repaired from a replica that holds it hidden, or still
// visible, found through the placement of a child that reads through it.
func TestScrubRepairsHiddenParent(t *testing.T) {
	parent, child := ObjectID{7, 0}, ObjectID{8, 0}
	for _, peerHides := range []bool{true, false} {
		local, path := mustNewFileStore(t, 16)
		peer, _ := mustNewFileStore(t, 16)
		blocks := writeObjects(t, []ObjectID{parent}, local, peer)
		for _, s := range []*Store{local, peer} {
			if err := s.CreateObject(child, &parent); err != nil {
				t.Fatal(err)
			}
		}
		flipBytes(t, local, path, parent, 3)
		hide := []*Store{local}
		if peerHides {
			hide = append(hide, peer)
		}
		for _, s := range hide {
			if err := s.DeleteObject(parent); err != nil {
				t.Fatal(err)
			}
		}
		st := runScrub(t, local, onlyFor{child, []Replica{{Disk: 3, Conn: serveStore(t, peer)}}})
		if st.State != ScrubDone || st.Errors != 1 || st.Repaired != 1 || st.Unrepairable != 0 || st.Blocks != uint64(blocks) {
			t.Fatalf("peer hides the parent %v: scrub status %+v, want done, 1 error repaired of %d blocks", peerHides, st, blocks)
		}
		a, b := make([]byte, testObjectSize), make([]byte, testObjectSize)
		if err := local.Read(child, 0, a); err != nil {
			t.Fatalf("peer hides the parent %v: the child reads through the repaired parent: %v", peerHides, err)
		}
		if err := peer.Read(child, 0, b); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(a, b) {
			t.Fatalf("peer hides the parent %v: the child reads differently from the replica after the repair", peerHides)
		}
	}
}
