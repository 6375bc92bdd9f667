package client

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"keel/mgmt/apiclient"
)

// DiskView is a frontend's view of the cluster's disks, taken from its
// last ClientVolumes reply: the Cluster its volumes' engines ask. Every
// frontend that serves attachments (the client applet, keel_iscsi) keeps
// one, so that all of them follow the same rules:
//
//   - writes go to up and recovering disks, reads to up ones only;
//   - a disk the engine had mgmt mark down stays out until a reply of a
//     later generation than the one that committed it down;
//   - writes wait while the view has not been confirmed by mgmt for the
//     lease: a frontend cut off from mgmt stops writing before mgmt takes
//     it to have stopped (mgmt.client_write_grace), so a recovery or a
//     snapshot that goes on without it cannot miss its writes.
type DiskView struct {
	api   *apiclient.Client
	log   *slog.Logger
	lease time.Duration

	mu    sync.Mutex
	disks map[uint32]apiclient.DiskLocation
	// downAt: the generation in which mgmt committed a disk down at our
	// request. A ClientVolumes reply older than that still shows the
	// disk as it was; the disk stays out until a newer reply.
	downAt map[uint32]int64
	gen    int64
	// leaseEnd: writes are admitted until then; renewed by Confirmed.
	leaseEnd time.Time
	renewed  chan struct{} // closed (and replaced) when the lease is renewed
}

// NewDiskView returns an empty view (no disk known, no lease) of the
// cluster that api reaches.
func NewDiskView(api *apiclient.Client, log *slog.Logger, lease time.Duration) *DiskView {
	return &DiskView{api: api, log: log, lease: lease, disks: map[uint32]apiclient.DiskLocation{},
		downAt: map[uint32]int64{}, renewed: make(chan struct{})}
}

// DiskAccess implements Cluster.
func (d *DiskView) DiskAccess(_ context.Context, disk uint32) (string, DiskAccess, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	loc, ok := d.disks[disk]
	if !ok {
		return "", DiskDown, fmt.Errorf("disk %d: not in the cluster's disk list", disk)
	}
	return loc.Addr, accessOf(loc), nil
}

// accessOf is what mgmt's view of a disk lets the engine do with it.
func accessOf(loc apiclient.DiskLocation) DiskAccess {
	switch {
	case loc.Up:
		return DiskUp
	case loc.Recovering:
		return DiskWriteOnly
	}
	return DiskDown
}

// markDownPatience is how long MarkDiskDown keeps asking while mgmt
// cannot commit (no leader during an election, no node reachable).
const markDownPatience = 30 * time.Second

// MarkDiskDown implements Cluster: mgmt commits the disk down, then the
// view drops it. Transient failures are retried for up to
// markDownPatience, so a disk that fails while mgmt elects a leader delays
// the writes that need it instead of failing them (marking a disk down
// twice is harmless).
func (d *DiskView) MarkDiskDown(ctx context.Context, disk uint32, reason string) error {
	d.mu.Lock()
	gen := d.gen
	d.mu.Unlock()
	d.log.Warn("asking mgmt to mark a silent disk down", "disk", disk, "reason", reason)
	var info struct {
		Generation int64 `json:"generation"`
	}
	deadline := time.Now().Add(markDownPatience)
	for {
		_, err := d.api.Post(ctx, "DiskMarkDown/"+strconv.FormatUint(uint64(disk), 10), map[string]any{"generation": gen}, &info)
		if err == nil {
			break
		}
		var ae *apiclient.APIError
		transient := errors.Is(err, apiclient.ErrUnreachable) || errors.As(err, &ae) && ae.Transient
		if !transient || time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(200 * time.Millisecond):
		}
	}
	d.mu.Lock()
	loc := d.disks[disk]
	loc.Up, loc.Recovering = false, false
	d.disks[disk] = loc
	d.downAt[disk] = max(d.downAt[disk], info.Generation)
	d.mu.Unlock()
	return nil
}

// WriteLease implements Cluster: it returns at once while the lease
// holds, else waits until the frontend's next confirmed sync with mgmt
// (or ctx ends).
func (d *DiskView) WriteLease(ctx context.Context) error {
	for {
		d.mu.Lock()
		end, renewed := d.leaseEnd, d.renewed
		d.mu.Unlock()
		if time.Now().Before(end) {
			return nil
		}
		select {
		case <-renewed:
		case <-ctx.Done():
			return fmt.Errorf("no confirmed view of the cluster from mgmt for %s: %w", d.lease, ctx.Err())
		}
	}
}

// Update takes a ClientVolumes reply as the view. It returns the disks
// that became writable (volumes that marked one down may use it again)
// and whether any disk's write eligibility changed: then the frontend
// drains its volumes' requests in flight, issued with the old disk set,
// before it reports the generation (recovery of a returning disk waits
// for that report, so every write it does not see reaches the disk).
func (d *DiskView) Update(cv apiclient.ClientVolumes) (readmit []uint32, changed bool, err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	disks := make(map[uint32]apiclient.DiskLocation, len(cv.Disks))
	for k, loc := range cv.Disks {
		id, err := strconv.ParseUint(k, 10, 32)
		if err != nil {
			return nil, false, fmt.Errorf("ClientVolumes: disk id %q: %w", k, err)
		}
		if cv.Generation < d.downAt[uint32(id)] {
			loc.Up, loc.Recovering = false, false // the reply predates our DiskMarkDown
		}
		disks[uint32(id)] = loc
	}
	for id, loc := range disks {
		if now, was := accessOf(loc).Writable(), accessOf(d.disks[id]).Writable(); now != was {
			changed = true
			if now {
				readmit = append(readmit, id)
			}
		}
	}
	for id := range d.disks {
		if _, ok := disks[id]; !ok && accessOf(d.disks[id]).Writable() {
			changed = true
		}
	}
	d.disks = disks
	return readmit, changed, nil
}

// Confirmed records that mgmt accepted the frontend's report of serving
// generation gen, sent at sent: the view holds, and writes are admitted,
// until sent + the lease. Time is taken from before the report, so the
// lease never outlasts what mgmt heard.
func (d *DiskView) Confirmed(gen int64, sent time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.gen = gen
	if end := sent.Add(d.lease); end.After(d.leaseEnd) {
		d.leaseEnd = end
		close(d.renewed)
		d.renewed = make(chan struct{})
	}
}
