package server

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"keel/mgmt/apiclient"
)

// reclaim deletes, until ctx ends, the objects of layers mgmt no longer
// needs on this server's disks (deleted volumes and snapshots, layers a
// revert replaced): every interval it asks LayersToDelete, deletes the
// objects, and confirms with LayersDeleted. Failures are logged once per
// change and retried; deleting is idempotent, so a crash between the
// deletion and the confirmation only repeats work. The layers are recorded
// as deleted first: from then on the server refuses to create or write
// objects in them (a stale writer would re-create space nobody reclaims),
// and recovery does not copy them.
func (s *Server) reclaim(ctx context.Context, api *apiclient.Client, nodeID uint32, interval time.Duration) {
	if interval <= 0 {
		interval = 2 * time.Second
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	var lastErr string
	for {
		n, err := s.reclaimOnce(ctx, api, nodeID)
		if msg := fmt.Sprint(err); msg != lastErr && ctx.Err() == nil {
			if err != nil {
				s.log.Warn("space reclaim failed; retrying", "err", err)
			}
			lastErr = msg
		}
		if n > 0 {
			s.log.Info("space reclaimed", "objects", n)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// reclaimOnce runs one round and returns how many objects it deleted.
func (s *Server) reclaimOnce(ctx context.Context, api *apiclient.Client, nodeID uint32) (int, error) {
	var todo apiclient.LayersToDelete
	if _, err := api.Get(ctx, fmt.Sprintf("LayersToDelete/%d", nodeID), nil, &todo); err != nil {
		return 0, fmt.Errorf("ask mgmt for layers to delete: %w", err)
	}
	deleted := 0
	var errs []error
	for key, layers := range todo.Disks {
		id, err := strconv.ParseUint(key, 10, 32)
		st := s.disks[uint32(id)]
		if err != nil || st == nil || len(layers) == 0 {
			continue // not ours (any more): mgmt drops it when the disk is forgotten
		}
		select {
		case <-st.Failed():
			continue // ejected; it deletes them once it is back
		default:
		}
		if err := s.markLayersDeleted(layers); err != nil {
			errs = append(errs, fmt.Errorf("disk %d: %w", id, err))
			continue
		}
		n, err := st.DeleteLayers(layers)
		deleted += n
		if err != nil {
			errs = append(errs, fmt.Errorf("disk %d: %w", id, err))
			continue
		}
		body := apiclient.LayersDeleted{Disk: int(id), Layers: layers}
		if _, err := api.Post(ctx, "LayersDeleted", body, nil); err != nil {
			errs = append(errs, fmt.Errorf("disk %d: confirm %d deleted layers to mgmt: %w", id, len(layers), err))
		}
	}
	return deleted, errors.Join(errs...)
}

// DeleteLayers deletes every object whose volume is one of layers and
// returns how many it deleted. An object with children elsewhere is only
// hidden (DeleteObject); its space returns with its last child.
func (s *Store) DeleteLayers(layers []uint64) (int, error) {
	drop := make(map[uint64]bool, len(layers))
	for _, l := range layers {
		drop[l] = true
	}
	n := 0
	for _, v := range s.Versions() {
		if !drop[v.Object.Volume] {
			continue
		}
		err := s.DeleteObject(v.Object)
		if errors.Is(err, ErrNotFound) {
			continue // deleted meanwhile (recovery, a concurrent round)
		}
		if err != nil {
			return n, fmt.Errorf("delete object %s: %w", v.Object, err)
		}
		n++
	}
	return n, nil
}
