package mgmt

import (
	"fmt"
	"math/rand"
	"sort"
)

// Candidate is a disk the allocator may place a replica on.
type Candidate struct {
	ID       int
	ServerID int
	FaultSet string // "" when the server is in no fault set
	Weight   int64  // free bytes; the share of replicas the disk should get
	Slots    int64  // replica slots already placed on the disk
}

// PlacementRule says where the replicas of one disk set may go. Groups are
// sets of disk ids; a nil group means every candidate.
type PlacementRule struct {
	Replication int
	Head        map[int]bool // first replica (with Replication >= 2)
	All         map[int]bool // the replicas between head and tail
	Tail        map[int]bool // last replica, the one reads are served from
	ReuseServer bool         // two replicas may share a server if needed
	// Name says which template or volume the rule is for, in errors.
	Name string
}

// Allocation is a disk-set table.
type Allocation struct {
	Sets [][]int
	// Violation is set when some set holds two disks of one server or
	// fault set (allowed by ReuseServer).
	Violation bool
}

// Allocate draws n disk sets of rule.Replication disks each. Every pick
// goes to the eligible disk with the smallest (slots+1)/weight, ties broken
// by rng, so over many volumes each disk's share of replicas follows its
// share of free space while no set holds two disks of one server or one
// fault set. The candidates' Slots are updated in place. Deterministic for
// a given candidate list and seed, which the Raft applier relies on.
func Allocate(cands []Candidate, rule PlacementRule, n int, seed int64) (Allocation, error) {
	rng := rand.New(rand.NewSource(seed))
	sorted := append([]Candidate(nil), cands...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].ID < sorted[j].ID })
	byID := map[int]*Candidate{}
	for i := range cands {
		byID[cands[i].ID] = &cands[i]
	}
	var out Allocation
	order := rule.positions(len(cands))
	usedDisk := map[int]bool{}
	usedServer := map[int]bool{}
	usedFault := map[string]bool{}
	for s := 0; s < n; s++ {
		set := make([]int, rule.Replication)
		clear(usedDisk)
		clear(usedServer)
		clear(usedFault)
		for _, pos := range order {
			group := rule.groupFor(pos)
			pick := -1
			for pass := 0; pass < 2 && pick < 0; pass++ {
				if pass == 1 && !rule.ReuseServer {
					break
				}
				var best []int
				var bestScore float64
				for i := range sorted {
					c := byID[sorted[i].ID]
					if c.Weight <= 0 || usedDisk[c.ID] || (group != nil && !group[c.ID]) {
						continue
					}
					if pass == 0 && (usedServer[c.ServerID] || (c.FaultSet != "" && usedFault[c.FaultSet])) {
						continue
					}
					score := float64(c.Slots+1) / float64(c.Weight)
					switch {
					case best == nil || score < bestScore:
						best, bestScore = []int{c.ID}, score
					case score == bestScore:
						best = append(best, c.ID)
					}
				}
				if best != nil {
					pick = best[rng.Intn(len(best))]
					if pass == 1 {
						out.Violation = true
					}
				}
			}
			if pick < 0 {
				return Allocation{}, rule.insufficient(cands, pos)
			}
			c := byID[pick]
			c.Slots++
			usedDisk[pick], usedServer[c.ServerID] = true, true
			if c.FaultSet != "" {
				usedFault[c.FaultSet] = true
			}
			set[pos] = pick
		}
		out.Sets = append(out.Sets, set)
	}
	return out, nil
}

// positions orders the replica positions for picking: the position with
// the fewest eligible disks first (a small placeHead or SSD tail group), so
// that a wide group does not take the only server or fault set a narrow
// one could use. Ties keep tail, head, middle order.
func (r PlacementRule) positions(all int) []int {
	out := []int{r.Replication - 1}
	for p := 0; p < r.Replication-1; p++ {
		out = append(out, p)
	}
	size := func(pos int) int {
		if g := r.groupFor(pos); g != nil {
			return len(g)
		}
		return all
	}
	sort.SliceStable(out, func(i, j int) bool { return size(out[i]) < size(out[j]) })
	return out
}

func (r PlacementRule) groupFor(pos int) map[int]bool {
	switch {
	case pos == r.Replication-1:
		return r.Tail
	case pos == 0 && r.Head != nil:
		return r.Head
	default:
		return r.All
	}
}

func (r PlacementRule) insufficient(cands []Candidate, pos int) error {
	servers := map[int]bool{}
	for _, c := range cands {
		g := r.groupFor(pos)
		if c.Weight > 0 && (g == nil || g[c.ID]) {
			servers[c.ServerID] = true
		}
	}
	return apiErr(ErrInsufficient,
		"%s: replication %d needs up disks with free space on %d distinct servers (and fault sets) for every replica; replica %d can use disks on only %d server(s); add disks or servers, or allow reuseServer",
		r.Name, r.Replication, r.Replication, pos+1, len(servers))
}

// defaultDiskSets chooses the disk-set table size from the volume size:
// one set per object, rounded up to a power of two, at most
// maxDefaultSets.
func defaultDiskSets(size int64) int {
	objects := (size + defaultObjSize - 1) / defaultObjSize
	n := 1
	for int64(n) < objects && n < maxDefaultSets {
		n *= 2
	}
	return n
}

func (a Allocation) String() string { return fmt.Sprint(a.Sets) }
