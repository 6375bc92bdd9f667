package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"keel/mgmt/apiclient"
	"keel/wire"
)

// errWaitPeer: a set has no up peer, and another of its disks holds newer
// data than this one; recovery waits for that disk to come up.
var errWaitPeer = errors.New("waiting for a peer with newer data")

// DefaultRecoverySettle is RecoverOptions.Settle when Options has none
// (server.recovery_settle): well above the clients' io_timeout (10 s).
const DefaultRecoverySettle = 30 * time.Second

// followRecovery brings disk id up to date whenever mgmt has it
// recovering: it polls the disk's state every heartbeat interval and,
// while it is recovering, DiskReplicas; it waits until
// every rw client writes to the disk (clientsReady), recovers each set's
// objects from one up peer, reports progress, and tells mgmt it is done
// (which marks the disk up). A failed run is retried with backoff.
func (s *Server) followRecovery(ctx context.Context, o Options, id uint32, st *Store) {
	poll := o.HeartbeatInterval
	if poll <= 0 {
		poll = 2 * time.Second
	}
	log := s.log.With("disk", id)
	var lastWait string
	backoff := time.Duration(0)
	for {
		select {
		case <-ctx.Done():
			return
		case <-st.Failed():
			return
		case <-time.After(poll + backoff):
		}
		// DiskDescribe is one row; DiskReplicas walks every volume, so it
		// is asked only while the disk is recovering.
		var desc struct {
			State string `json:"state"`
		}
		if _, err := o.Mgmt.Get(ctx, fmt.Sprintf("DiskDescribe/%d", id), nil, &desc); err == nil && desc.State != "recovering" {
			backoff, lastWait = 0, ""
			continue
		}
		var dr apiclient.DiskReplicas
		if _, err := o.Mgmt.Get(ctx, fmt.Sprintf("DiskReplicas/%d", id), nil, &dr); err != nil {
			if msg := err.Error(); msg != lastWait {
				log.Warn("recovery: cannot ask mgmt whether the disk is recovering; retrying", "err", err)
				lastWait = msg
			}
			continue
		}
		if dr.State != "recovering" {
			backoff, lastWait = 0, ""
			continue
		}
		if !dr.ClientsReady {
			if msg := fmt.Sprint(dr.WaitingClients); msg != lastWait {
				log.Info("recovery: waiting for clients to write to the disk before copying", "clients", dr.WaitingClients, "generation", dr.RecoveryFrom)
				lastWait = msg
			}
			continue
		}
		err := s.recoverDisk(ctx, o, st, &dr, log)
		if errors.Is(err, errWaitPeer) {
			// Not a failure: poll again without backing off.
			if msg := err.Error(); msg != lastWait {
				log.Info("recovery waits: no disk of a set is up, and another one of it left the up state after this one", "detail", msg)
				lastWait = msg
			}
			continue
		}
		lastWait = ""
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			backoff = min(max(2*backoff, poll), time.Minute)
			log.Warn("recovery failed; retrying", "err", err, "in", poll+backoff)
			continue
		}
		backoff = 0
	}
}

// recoverDisk runs one recovery of the disk in dr.DiskGeneration.
func (s *Server) recoverDisk(ctx context.Context, o Options, st *Store, dr *apiclient.DiskReplicas, log *slog.Logger) error {
	m := NewReplicaMap(dr)
	sources, stranded := m.Sources(func(_ uint32, loc apiclient.DiskLocation) bool { return loc.Up && loc.Addr != "" })
	for _, set := range stranded {
		// No peer of the set is up. The disk that left the up state last
		// holds the newest data: the others wait for it.
		for _, p := range set.Peers {
			loc := m.Location(p)
			if (loc.State == "down" || loc.State == "recovering") && loc.GenerationLeft > dr.GenerationLeft {
				return fmt.Errorf("%w: disk %d (%s), which left the up state after this one (generation %d > %d); no other disk of layer %d set %d is up",
					errWaitPeer, p, loc.State, loc.GenerationLeft, dr.GenerationLeft, set.Layer, set.Index)
			}
		}
	}
	if len(stranded) > 0 {
		log.Warn("recovery: some sets have no up peer; this disk left the up state last among them, so its data is kept as the newest", "sets", len(stranded))
	}
	log.Info("recovery started", "diskGeneration", dr.DiskGeneration, "peers", len(sources), "generation", dr.RecoveryFrom)
	settle := o.RecoverySettle
	if settle == 0 {
		settle = DefaultRecoverySettle
	}
	limit := newByteRate(o.RecoveryRate)
	prog := &recoveryProgress{totals: make([]int, len(sources)), done: make([]int, len(sources))}
	// Until a peer's run lists its objects, count the local ones it serves.
	for _, v := range st.Versions() {
		for i, src := range sources {
			if src.Scope(v.Object) {
				prog.totals[i]++
			}
		}
	}
	report := func(final bool) {
		all, done := prog.sum()
		if !final && time.Since(prog.last) < time.Second {
			return
		}
		prog.last = time.Now()
		body := apiclient.DiskRecoveryProgress{DiskGeneration: dr.DiskGeneration, All: int64(all), Done: int64(done), Dispatched: int64(done)}
		if _, err := o.Mgmt.Post(ctx, fmt.Sprintf("DiskRecoveryProgress/%d", dr.Disk), body, nil); err != nil {
			log.Warn("recovery: progress report refused", "err", err)
		}
	}
	report(true)
	var total RecoveryStats
	var errs []error
	start := time.Now()
	for i, src := range sources {
		c, err := wire.Dial(ctx, "tcp", src.Addr, o.Secret, wire.Peer{NodeID: o.NodeID, Role: "server", Name: o.Name})
		if err != nil {
			errs = append(errs, fmt.Errorf("peer disk %d at %s: %w", src.Disk, src.Addr, err))
			continue
		}
		scope := func(id ObjectID) bool { return src.Scope(id) && !s.layerDeleted(id.Volume) }
		create := func(id ObjectID, parent *ObjectID, parentHidden bool) error {
			return s.create(st, id, parent, parentHidden)
		}
		stats, err := RecoverWith(ctx, st, c, src.Disk, RecoverOptions{Scope: scope, Settle: settle, Limit: limit.wait, Create: create,
			Progress: func(done, all int) {
				prog.set(i, done, all)
				report(false)
			}})
		c.Close()
		total.Add(stats)
		if err != nil {
			errs = append(errs, fmt.Errorf("from peer disk %d: %w", src.Disk, err))
		}
	}
	report(true)
	if err := errors.Join(errs...); err != nil {
		return err
	}
	log.Info("recovery done", "took", time.Since(start).Round(time.Millisecond), "objects", total.Objects, "objects_changed", total.ObjectsChanged,
		"created", total.Created, "deleted", total.Deleted, "blocks_copied", total.BlocksCopied, "blocks_cleared", total.BlocksCleared,
		"blocks_kept", total.BlocksKept, "blocks_stale", total.BlocksStale, "data_bytes", total.DataBytes, "meta_bytes", total.MetaBytes)
	stats := map[string]any{"objects": total.Objects, "objects_changed": total.ObjectsChanged, "created": total.Created, "deleted": total.Deleted,
		"blocks_copied": total.BlocksCopied, "blocks_cleared": total.BlocksCleared, "blocks_kept": total.BlocksKept,
		"blocks_stale": total.BlocksStale, "data_bytes": total.DataBytes, "meta_bytes": total.MetaBytes,
		"seconds": time.Since(start).Seconds()}
	if _, err := o.Mgmt.Post(ctx, fmt.Sprintf("DiskRecoveryDone/%d", dr.Disk), apiclient.DiskRecoveryDone{DiskGeneration: dr.DiskGeneration, Stats: stats}, nil); err != nil {
		return fmt.Errorf("report done: %w", err)
	}
	log.Info("mgmt marked the disk up")
	return nil
}

// recoveryProgress sums the objects done over a disk's peers.
type recoveryProgress struct {
	mu     sync.Mutex
	totals []int
	done   []int
	last   time.Time
}

func (p *recoveryProgress) set(i, done, all int) {
	p.mu.Lock()
	p.done[i], p.totals[i] = done, all
	p.mu.Unlock()
}

func (p *recoveryProgress) sum() (all, done int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i := range p.totals {
		all += p.totals[i]
		done += p.done[i]
	}
	return all, done
}

// byteRate paces a stream of fetches to a rate in bytes per second, with
// a burst of a tenth of a second.
type byteRate struct {
	rate uint64
	mu   sync.Mutex
	next time.Time
}

func newByteRate(rate uint64) *byteRate { return &byteRate{rate: rate} }

func (b *byteRate) wait(ctx context.Context, n int) error {
	if b.rate == 0 {
		return nil
	}
	b.mu.Lock()
	now := time.Now()
	if b.next.Before(now.Add(-100 * time.Millisecond)) {
		b.next = now.Add(-100 * time.Millisecond)
	}
	b.next = b.next.Add(time.Duration(float64(n) / float64(b.rate) * float64(time.Second)))
	d := b.next.Sub(now)
	b.mu.Unlock()
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
