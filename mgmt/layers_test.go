package mgmt

import (
	"context"
	"slices"
	"strconv"
	"testing"
	"time"

	"keel/mgmt/apiclient"
)

func clientVolumes(t *testing.T, c *apiclient.Client, client int) apiclient.ClientVolumes {
	t.Helper()
	var cv apiclient.ClientVolumes
	if _, err := c.Get(context.Background(), "ClientVolumes/"+strconv.Itoa(client), nil, &cv); err != nil {
		t.Fatalf("ClientVolumes: %v", err)
	}
	return cv
}

// runClient stands in for client id's sync loop until the test ends: it
// fetches its attachments and heartbeats the generation it got, as a
// client that applied it does.
func runClient(t *testing.T, c *apiclient.Client, id int) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	t.Cleanup(func() { cancel(); <-done })
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			var cv apiclient.ClientVolumes
			if _, err := c.Get(ctx, "ClientVolumes/"+strconv.Itoa(id), nil, &cv); err == nil {
				c.Post(ctx, "ServiceHeartbeat", map[string]any{"type": "client", "id": id, "nodeId": id, "generation": cv.Generation}, nil)
			}
			select {
			case <-ctx.Done():
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
}

// A snapshot takes over the volume's layer and the volume continues in a
// fresh one over it; a revert gives the volume a fresh layer again; the
// client sees the chain, its token and where the disks are.
func TestLayersAndClientVolumes(t *testing.T) {
	_, c := mustNewService(t)
	addDisks(t, c, 1, 2, 3)
	mustPost(t, c, "VolumeTemplateCreate", map[string]any{"name": "r3", "replication": 3}, nil)
	mustPost(t, c, "VolumeCreate", map[string]any{"name": "v", "size": 1 << 30, "template": "r3"}, nil)
	mustPost(t, c, "VolumesReassign", []map[string]any{{"volume": "v", "rw": []int{7}}}, nil)
	// Client 7 runs (a snapshot of its volume waits until it switched).
	runClient(t, c, 7)
	cv := clientVolumes(t, c, 7)
	if len(cv.Volumes) != 1 {
		t.Fatalf("ClientVolumes: %+v", cv)
	}
	v0 := cv.Volumes[0]
	if len(v0.Layers) != 1 || v0.Layers[0] != v0.Fence || v0.Token != 1 || v0.ReadOnly || v0.ObjectSize != ObjectSize || len(v0.DiskSets) == 0 {
		t.Fatalf("fresh volume layout: %+v", v0)
	}
	for _, set := range v0.DiskSets {
		if len(set) != 3 {
			t.Fatalf("disk set %v, want 3 replicas", set)
		}
		for _, d := range set {
			if _, ok := cv.Disks[strconv.Itoa(int(d))]; !ok {
				t.Fatalf("disk %d of the sets is not in Disks %v", d, cv.Disks)
			}
		}
	}

	mustPost(t, c, "VolumeSnapshot/v", map[string]any{"name": "s1"}, nil)
	v1 := clientVolumes(t, c, 7).Volumes[0]
	if len(v1.Layers) != 2 || v1.Layers[1] != v0.Layers[0] || v1.Layers[0] == v0.Layers[0] || v1.Fence != v0.Fence {
		t.Fatalf("after snapshot: layers %v (before %v), fence %d", v1.Layers, v0.Layers, v1.Fence)
	}
	// The snapshot, attached read-only elsewhere, reads the frozen layer.
	mustPost(t, c, "VolumesReassign", []map[string]any{{"snapshot": "s1", "ro": []int{8}}}, nil)
	s := clientVolumes(t, c, 8).Volumes[0]
	if !s.ReadOnly || !slices.Equal(s.Layers, v0.Layers) {
		t.Fatalf("snapshot layout: %+v", s)
	}
	// A clone of the snapshot starts a layer of its own over it.
	mustPost(t, c, "VolumeCreate", map[string]any{"name": "c", "parent": "s1"}, nil)
	mustPost(t, c, "VolumesReassign", []map[string]any{{"volume": "c", "rw": []int{9}}}, nil)
	cl := clientVolumes(t, c, 9).Volumes[0]
	if len(cl.Layers) != 2 || cl.Layers[1] != v0.Layers[0] || cl.Layers[0] == v1.Layers[0] {
		t.Fatalf("clone layers %v", cl.Layers)
	}
	// Revert (detached) drops the volume's own layer.
	mustPost(t, c, "VolumesReassign", []map[string]any{{"volume": "v", "detach": []int{7}}}, nil)
	mustPost(t, c, "VolumeRevert/v", map[string]any{"toSnapshot": "s1"}, nil)
	mustPost(t, c, "VolumesReassign", []map[string]any{{"volume": "v", "rw": []int{7}}}, nil)
	v2 := clientVolumes(t, c, 7).Volumes[0]
	if len(v2.Layers) != 2 || v2.Layers[1] != v0.Layers[0] || v2.Layers[0] == v1.Layers[0] || v2.Token <= v1.Token {
		t.Fatalf("after revert: layers %v token %d (before %v, %d)", v2.Layers, v2.Token, v1.Layers, v1.Token)
	}
}

// A disk that was down comes back "recovering", not "up": it may have
// missed writes, so clients must not read from it.
func TestDiskReturnsRecovering(t *testing.T) {
	_, c := mustNewService(t)
	addDisks(t, c, 1, 2, 3)
	mustPost(t, c, "VolumeTemplateCreate", map[string]any{"name": "r3", "replication": 3}, nil)
	mustPost(t, c, "VolumeCreate", map[string]any{"name": "v", "size": 1 << 30, "template": "r3"}, nil)
	mustPost(t, c, "VolumesReassign", []map[string]any{{"volume": "v", "rw": []int{7}}}, nil)
	if loc := clientVolumes(t, c, 7).Disks["101"]; loc.Server != 2 {
		t.Fatalf("disk 101 location %+v", loc)
	}
	mustPost(t, c, "DiskMarkDown/101", map[string]any{"generation": 0}, nil)
	mustPost(t, c, "DiskRegister", map[string]any{"id": 101, "serverId": 2, "size": 1 << 40, "freeBytes": 1 << 39}, nil)
	var disks map[string]struct {
		State string `json:"state"`
	}
	if _, err := c.Get(context.Background(), "DisksList", nil, &disks); err != nil {
		t.Fatal(err)
	}
	if st := disks["101"].State; st != "recovering" {
		t.Fatalf("returned disk is %q, want recovering", st)
	}
	if loc := clientVolumes(t, c, 7).Disks["101"]; loc.Up {
		t.Fatalf("recovering disk offered to clients as up: %+v", loc)
	}
}
