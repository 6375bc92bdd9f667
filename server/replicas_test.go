package server

import (
	"testing"

	"keel/mgmt/apiclient"
)

// Sources gives every (layer, set) holding the disk to exactly one
// eligible peer of that set, scopes each peer to those objects only, and
// reports the sets without an eligible peer.
func TestReplicaMapSources(t *testing.T) {
	r := &apiclient.DiskReplicas{Disk: 11,
		Layers: []apiclient.LayerReplicas{
			{Layer: 7, SetCount: 4, Sets: []apiclient.ReplicaSet{{Index: 0, Peers: []uint32{21, 31}}, {Index: 2, Peers: []uint32{22, 32}}}},
			{Layer: 9, SetCount: 2, Sets: []apiclient.ReplicaSet{{Index: 1, Peers: []uint32{41}}}},
		},
		Disks: map[string]apiclient.DiskLocation{
			"21": {Addr: "a:1", Up: true}, "31": {Addr: "b:1", Up: true},
			"22": {Addr: "a:1", Up: false, State: "down"}, "32": {Addr: "b:1", Up: true},
			"41": {Addr: "c:1", State: "recovering", Recovering: true},
		}}
	m := NewReplicaMap(r)
	src, stranded := m.Sources(func(_ uint32, loc apiclient.DiskLocation) bool { return loc.Up })
	if len(stranded) != 1 || stranded[0].Layer != 9 || stranded[0].Index != 1 {
		t.Fatalf("stranded %+v, want layer 9 set 1 (its only peer is recovering)", stranded)
	}
	objects := []ObjectID{{7, 0}, {7, 4}, {7, 2}, {7, 6}, {7, 1}, {7, 3}, {9, 1}, {9, 0}, {8, 0}}
	owner := map[ObjectID][]uint32{}
	for _, s := range src {
		for _, id := range objects {
			if s.Scope(id) {
				owner[id] = append(owner[id], s.Disk)
			}
		}
	}
	for _, id := range []ObjectID{{7, 0}, {7, 4}} {
		if o := owner[id]; len(o) != 1 || (o[0] != 21 && o[0] != 31) {
			t.Errorf("object %s is served by %v, want one of 21, 31", id, o)
		}
	}
	if owner[ObjectID{7, 0}][0] != owner[ObjectID{7, 4}][0] {
		t.Errorf("objects of one set are split over peers: %v", owner)
	}
	for _, id := range []ObjectID{{7, 2}, {7, 6}} {
		if o := owner[id]; len(o) != 1 || o[0] != 32 {
			t.Errorf("object %s is served by %v, want 32 (22 is down)", id, o)
		}
	}
	for _, id := range []ObjectID{{7, 1}, {7, 3}, {9, 1}, {9, 0}, {8, 0}} {
		if o := owner[id]; len(o) != 0 {
			t.Errorf("object %s (not placed here, or stranded) is served by %v", id, o)
		}
	}
	if p, ok := m.Peers(ObjectID{7, 6}); !ok || len(p) != 2 || p[1] != 32 {
		t.Errorf("Peers(7/6) = %v %v", p, ok)
	}
	if m.Placed(ObjectID{7, 1}) || !m.Placed(ObjectID{9, 3}) {
		t.Error("Placed disagrees with the sets")
	}
}
