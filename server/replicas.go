package server

import (
	"strconv"

	"keel/mgmt/apiclient"
)

// ReplicaMap answers, for one local disk, where the other replicas of its
// objects are, from mgmt's DiskReplicas reply. Recovery and scrub use it
// to pick the peer disk each object is read from.
type ReplicaMap struct {
	r *apiclient.DiskReplicas
	// layers maps an object namespace to its disk-set table size and the
	// peers of each set index holding the disk.
	layers map[uint64]layerSets
}

type layerSets struct {
	count int
	peers map[int][]uint32
}

// NewReplicaMap indexes a DiskReplicas reply.
func NewReplicaMap(r *apiclient.DiskReplicas) *ReplicaMap {
	m := &ReplicaMap{r: r, layers: map[uint64]layerSets{}}
	for _, l := range r.Layers {
		if l.SetCount <= 0 {
			continue
		}
		ls := layerSets{count: l.SetCount, peers: map[int][]uint32{}}
		for _, s := range l.Sets {
			ls.peers[s.Index] = s.Peers
		}
		m.layers[l.Layer] = ls
	}
	return m
}

// Peers returns the other disks of object id's set, in table order
// (placeTail last), and whether mgmt places the object on this disk.
func (m *ReplicaMap) Peers(id ObjectID) ([]uint32, bool) {
	ls, ok := m.layers[id.Volume]
	if !ok {
		return nil, false
	}
	p, ok := ls.peers[int(id.Index)%ls.count]
	return p, ok
}

// Location returns where peer disk d is served and its state.
func (m *ReplicaMap) Location(d uint32) apiclient.DiskLocation {
	return m.r.Disks[strconv.FormatUint(uint64(d), 10)]
}

// ReplicaSource is one peer disk and the local objects to read from it.
type ReplicaSource struct {
	Disk  uint32
	Addr  string
	Scope func(ObjectID) bool
	Sets  int // (layer, set) pairs it serves
}

// StrandedSet is a (layer, set) of the local disk for which no peer was
// eligible.
type StrandedSet struct {
	Layer uint64
	Index int
	Peers []uint32
}

// Sources assigns each (layer, set) holding the local disk to one eligible
// peer, spreading the set indices over the eligible peers of each set, and
// returns one source per chosen peer plus the sets left without one.
// Objects of a namespace mgmt does not place on the disk are in no scope.
func (m *ReplicaMap) Sources(eligible func(disk uint32, loc apiclient.DiskLocation) bool) ([]ReplicaSource, []StrandedSet) {
	type key struct {
		layer uint64
		set   int
	}
	chosen := map[key]uint32{}
	count := map[uint32]int{}
	var stranded []StrandedSet
	for layer, ls := range m.layers {
		for idx, peers := range ls.peers {
			var ok []uint32
			for _, p := range peers {
				if eligible(p, m.Location(p)) {
					ok = append(ok, p)
				}
			}
			if len(ok) == 0 {
				stranded = append(stranded, StrandedSet{Layer: layer, Index: idx, Peers: peers})
				continue
			}
			// By set index only: a clone's or snapshot child's objects
			// (same table) come from the same peer as their parents, which
			// recovery must create first.
			p := ok[idx%len(ok)]
			chosen[key{layer, idx}] = p
			count[p]++
		}
	}
	var out []ReplicaSource
	for p, n := range count {
		out = append(out, ReplicaSource{Disk: p, Addr: m.Location(p).Addr, Sets: n, Scope: func(id ObjectID) bool {
			ls, ok := m.layers[id.Volume]
			if !ok {
				return false
			}
			d, ok := chosen[key{id.Volume, int(id.Index) % ls.count}]
			return ok && d == p
		}})
	}
	return out, stranded
}

// Placed reports whether mgmt places object id on the local disk.
func (m *ReplicaMap) Placed(id ObjectID) bool {
	_, ok := m.Peers(id)
	return ok
}
