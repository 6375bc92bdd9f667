package mgmt

import (
	"net/http"
	"sync"
)

// listCache keeps the encoded reply of the big listings (VolumesList,
// SnapshotsList) for the applied index it was built at. Integrations poll
// these calls far more often than the volumes change; between two
// committed commands the reply cannot change, so it is served as is.
// A reply labelled with index N may hold a newer state than N (the store
// can advance while it is built), never an older one: a later request at
// a newer index misses and rebuilds.
type listCache struct {
	mu      sync.Mutex
	entries map[string]cachedReply
}

type cachedReply struct {
	index uint64
	body  []byte
}

var cachedCalls = map[string]bool{"VolumesList": true, "SnapshotsList": true}

func (c *listCache) get(call string, index uint64) ([]byte, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[call]
	return e.body, ok && e.index == index
}

func (c *listCache) put(call string, index uint64, body []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.entries == nil {
		c.entries = map[string]cachedReply{}
	}
	c.entries[call] = cachedReply{index: index, body: body}
}

func writeRaw(w http.ResponseWriter, body []byte) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	w.Write(body)
}
