package mgmt

import (
	"context"
	"fmt"
	"slices"
	"testing"

	"keel/mgmt/apiclient"
)

// pendingLayers returns LayersToDelete of servers 1..3: per disk, the
// layers to delete.
func pendingLayers(t *testing.T, c *apiclient.Client) map[string][]uint64 {
	t.Helper()
	out := map[string][]uint64{}
	for s := 1; s <= 3; s++ {
		var todo apiclient.LayersToDelete
		if _, err := c.Get(context.Background(), fmt.Sprintf("LayersToDelete/%d", s), nil, &todo); err != nil {
			t.Fatalf("LayersToDelete/%d: %v", s, err)
		}
		for d, ls := range todo.Disks {
			slices.Sort(ls)
			out[d] = ls
		}
	}
	return out
}

// wantPending checks every disk (100..102) has exactly layers pending.
func wantPending(t *testing.T, c *apiclient.Client, what string, layers ...uint64) {
	t.Helper()
	slices.Sort(layers)
	got := pendingLayers(t, c)
	for _, d := range []string{"100", "101", "102"} {
		if !slices.Equal(got[d], layers) && !(len(layers) == 0 && len(got[d]) == 0) {
			t.Fatalf("%s: disk %s has layers %v pending, want %v (all: %v)", what, d, got[d], layers, got)
		}
	}
}

// confirm acknowledges every pending layer as the servers would.
func confirm(t *testing.T, c *apiclient.Client) {
	t.Helper()
	for d, ls := range pendingLayers(t, c) {
		var disk int
		fmt.Sscan(d, &disk)
		mustPost(t, c, "LayersDeleted", apiclient.LayersDeleted{Disk: disk, Layers: ls}, nil)
	}
}

// A layer is pending deletion on every disk of its sets exactly when no
// volume or snapshot reads it any more: after a revert (the replaced
// layer), a volume's deletion, and a deleted snapshot's last child going.
func TestLayersToDelete(t *testing.T) {
	svc, c := mustNewService(t)
	addDisks(t, c, 1, 2, 3)
	mustPost(t, c, "VolumeTemplateCreate", map[string]any{"name": "r3", "replication": 3}, nil)
	mustPost(t, c, "VolumeCreate", map[string]any{"name": "v", "size": 1 << 30, "template": "r3"}, nil)
	mustPost(t, c, "VolumeSnapshot/v", map[string]any{"name": "s1"}, nil)
	mustPost(t, c, "VolumeCreate", map[string]any{"name": "c", "parent": "s1"}, nil)
	mustPost(t, c, "VolumesReassign", []map[string]any{{"volume": "v", "rw": []int{7}}, {"volume": "c", "rw": []int{9}}}, nil)
	v1, cl := clientVolumes(t, c, 7).Volumes[0].Layers, clientVolumes(t, c, 9).Volumes[0].Layers
	snapLayer := v1[1]
	wantPending(t, c, "nothing deleted yet")

	mustPost(t, c, "VolumesReassign", []map[string]any{{"volume": "v", "detach": []int{7}}, {"volume": "c", "detach": []int{9}}}, nil)
	mustPost(t, c, "VolumeRevert/v", map[string]any{"toSnapshot": "s1"}, nil)
	wantPending(t, c, "after a revert", v1[0])
	confirm(t, c)
	wantPending(t, c, "after the servers confirmed")
	mustPost(t, c, "LayersDeleted", apiclient.LayersDeleted{Disk: 100, Layers: []uint64{v1[0]}}, nil) // a retry

	mustPost(t, c, "SnapshotDelete/s1", nil, nil)
	wantPending(t, c, "after deleting a snapshot with children")
	mustPost(t, c, "VolumeDelete/c", nil, nil)
	wantPending(t, c, "after deleting one child", cl[0])
	confirm(t, c)
	mustPost(t, c, "VolumesReassign", []map[string]any{{"volume": "v", "rw": []int{7}}}, nil)
	v2 := clientVolumes(t, c, 7).Volumes[0].Layers
	mustPost(t, c, "VolumesReassign", []map[string]any{{"volume": "v", "detach": []int{7}}}, nil)
	mustPost(t, c, "VolumeDelete/v", nil, nil)
	wantPending(t, c, "after deleting the last child", v2[0], snapLayer)

	// An ejected disk's layers wait (its server cannot delete them); a
	// forgotten disk has nothing left to reclaim.
	mustPost(t, c, "DiskEject/101", nil, nil)
	if got := pendingLayers(t, c); len(got["101"]) != 0 || len(got["100"]) != 2 {
		t.Fatalf("after ejecting disk 101: %v", got)
	}
	rows := func(disk int) (n int) {
		t.Helper()
		svc.store.mu.RLock()
		defer svc.store.mu.RUnlock()
		if err := svc.store.db.QueryRow(`SELECT COUNT(*) FROM gc_layers WHERE disk_id = ?`, disk).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	if n := rows(101); n != 2 {
		t.Fatalf("ejected disk 101 has %d layers recorded, want 2 kept", n)
	}
	mustPost(t, c, "DiskForget/101", nil, nil)
	if n := rows(101); n != 0 {
		t.Fatalf("forgotten disk 101 still has %d layers recorded", n)
	}
}
