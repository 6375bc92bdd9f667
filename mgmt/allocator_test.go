package mgmt

import (
	"errors"
	"fmt"
	"math"
	"reflect"
	"testing"
)

// testPool is 8 servers of 3 disks, weights 1..4 units, two servers per
// fault set.
func testPool() []Candidate {
	var out []Candidate
	for s := 1; s <= 8; s++ {
		for d := 0; d < 3; d++ {
			id := s*10 + d
			out = append(out, Candidate{ID: id, ServerID: s, FaultSet: fmt.Sprint("fs", (s+1)/2), Weight: int64(1+(id%4)) << 40})
		}
	}
	return out
}

func TestAllocatorProperties(t *testing.T) {
	pool := testPool()
	server, fault, weight := map[int]int{}, map[int]string{}, map[int]int64{}
	var total int64
	for _, c := range pool {
		server[c.ID], fault[c.ID], weight[c.ID] = c.ServerID, c.FaultSet, c.Weight
		total += c.Weight
	}
	rule := PlacementRule{Replication: 3, Name: "template t3"}
	slots := map[int]int{}
	all := 0
	for v := 0; v < 10000; v++ {
		a, err := Allocate(pool, rule, 8, int64(v))
		if err != nil {
			t.Fatal(err)
		}
		if a.Violation {
			t.Fatalf("volume %d flagged without reuseServer", v)
		}
		for _, set := range a.Sets {
			seenS, seenF := map[int]bool{}, map[string]bool{}
			for _, d := range set {
				if seenS[server[d]] || seenF[fault[d]] {
					t.Fatalf("volume %d set %v: two disks of one server or fault set", v, set)
				}
				seenS[server[d]], seenF[fault[d]] = true, true
				slots[d]++
				all++
			}
		}
	}
	for id, w := range weight {
		want := float64(w) / float64(total)
		got := float64(slots[id]) / float64(all)
		if math.Abs(got-want)/want > 0.03 {
			t.Errorf("disk %d: %.4f of the replicas, its free-space share is %.4f (more than 3%% off)", id, got, want)
		}
	}
}

func TestAllocatorPlacementGroups(t *testing.T) {
	pool := testPool()
	ssd := map[int]bool{}
	hdd := map[int]bool{}
	for _, c := range pool {
		if c.ID%10 == 0 {
			ssd[c.ID] = true
		} else {
			hdd[c.ID] = true
		}
	}
	a, err := Allocate(pool, PlacementRule{Replication: 3, All: hdd, Tail: ssd, Name: "t"}, 1024, 1)
	if err != nil {
		t.Fatal(err)
	}
	for _, set := range a.Sets {
		if !ssd[set[2]] || !hdd[set[0]] || !hdd[set[1]] {
			t.Fatalf("set %v: tail must be on ssd, the rest on hdd", set)
		}
	}
	head := map[int]bool{11: true, 21: true}
	a, err = Allocate(pool, PlacementRule{Replication: 2, Head: head, Tail: ssd, Name: "t"}, 64, 2)
	if err != nil {
		t.Fatal(err)
	}
	for _, set := range a.Sets {
		if !head[set[0]] || !ssd[set[1]] {
			t.Fatalf("set %v: head must be in placeHead", set)
		}
	}
}

func TestAllocatorReuseServer(t *testing.T) {
	two := []Candidate{{ID: 1, ServerID: 1, Weight: 10}, {ID: 2, ServerID: 1, Weight: 10}, {ID: 3, ServerID: 2, Weight: 10}}
	_, err := Allocate(append([]Candidate(nil), two...), PlacementRule{Replication: 3, Name: "template t3"}, 4, 1)
	var ae *Error
	if !errors.As(err, &ae) || ae.Name != ErrInsufficient || ae.Descr == "" {
		t.Fatalf("3 replicas on 2 servers without reuseServer: %v", err)
	}
	a, err := Allocate(append([]Candidate(nil), two...), PlacementRule{Replication: 3, ReuseServer: true, Name: "t"}, 4, 1)
	if err != nil || !a.Violation {
		t.Fatalf("with reuseServer: %v %+v", err, a)
	}
	for _, set := range a.Sets {
		if set[0] == set[1] || set[1] == set[2] || set[0] == set[2] {
			t.Errorf("set %v reuses a disk", set)
		}
	}
}

func TestAllocatorDeterministic(t *testing.T) {
	a, _ := Allocate(testPool(), PlacementRule{Replication: 3, Name: "t"}, 128, 42)
	b, _ := Allocate(testPool(), PlacementRule{Replication: 3, Name: "t"}, 128, 42)
	if !reflect.DeepEqual(a, b) {
		t.Fatal("same pool and seed gave different tables")
	}
}

func TestDefaultDiskSets(t *testing.T) {
	for _, tc := range []struct {
		size int64
		want int
	}{{512, 1}, {32 << 20, 1}, {33 << 20, 2}, {1 << 30, 32}, {1 << 40, maxDefaultSets}} {
		if got := defaultDiskSets(tc.size); got != tc.want {
			t.Errorf("defaultDiskSets(%d) = %d, want %d", tc.size, got, tc.want)
		}
	}
}
