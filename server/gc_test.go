package server

import (
	"context"
	"log/slog"
	"testing"

	"keel/node"
	"keel/wire"
)

// A reclaimed layer stays reclaimed: once DeleteLayers ran through the
// server, creating or writing an object in the layer is refused as fenced
// (other layers are not), also by a server started again on the same node
// state; recovery leaves the layer out.
func TestDeletedLayersStayDeleted(t *testing.T) {
	ctx := context.Background()
	state, err := node.OpenState(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer state.Close()
	st, _ := mustNewFileStore(t, 16)
	disk := st.Superblock().DiskID
	gone, kept := ObjectID{Volume: 40, Index: 0}, ObjectID{Volume: 41, Index: 0}
	for _, id := range []ObjectID{gone, kept} {
		if err := st.CreateObject(id, nil); err != nil {
			t.Fatal(err)
		}
	}
	log := slog.New(slog.DiscardHandler)
	srv, err := NewServer(log, state.DB, map[string]*Store{"d": st})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.markLayersDeleted([]uint64{gone.Volume}); err != nil {
		t.Fatal(err)
	}
	if n, err := st.DeleteLayers([]uint64{gone.Volume}); err != nil || n != 1 {
		t.Fatalf("DeleteLayers: %d objects, %v; want 1", n, err)
	}
	check := func(srv *Server, when string) {
		t.Helper()
		for _, req := range []wire.Request{
			{Op: wire.OpCreate, Volume: gone.Volume, Index: 5},
			{Op: wire.OpWrite, Volume: gone.Volume, Length: 4096, Data: make([]byte, 4096), Token: 1},
			{Op: wire.OpTrim, Volume: gone.Volume, Length: 4096, Token: 1},
		} {
			req.Disk = disk
			var resp wire.Response
			srv.ServeWire(wire.Peer{}, &req, &resp)
			if resp.Status != wire.StatusFenced {
				t.Errorf("%s: %s in deleted layer %d: status %d (%s), want fenced", when, req.Op, gone.Volume, resp.Status, resp.Data)
			}
		}
		req := wire.Request{Op: wire.OpWrite, Disk: disk, Volume: kept.Volume, Length: 4096, Data: make([]byte, 4096), Token: 1}
		var resp wire.Response
		srv.ServeWire(wire.Peer{}, &req, &resp)
		if err := resp.Err(); err != nil {
			t.Errorf("%s: write to a live layer: %v", when, err)
		}
	}
	check(srv, "after the reclaim")
	again, err := NewServer(log, state.DB, map[string]*Store{"d": st})
	if err != nil {
		t.Fatal(err)
	}
	check(again, "after a restart")
	if !again.layerDeleted(gone.Volume) || again.layerDeleted(kept.Volume) {
		t.Fatal("deleted set after a restart is wrong")
	}
}
