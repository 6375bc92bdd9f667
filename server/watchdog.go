package server

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// timedDevice records when each device operation in flight started, so a
// watchdog can tell a disk that stopped answering from a slow one.
type timedDevice struct {
	Device
	mu       sync.Mutex
	next     uint64
	inflight map[uint64]time.Time
}

func newTimedDevice(d Device) *timedDevice {
	return &timedDevice{Device: d, inflight: map[uint64]time.Time{}}
}

func (d *timedDevice) begin() uint64 {
	d.mu.Lock()
	d.next++
	id := d.next
	d.inflight[id] = time.Now()
	d.mu.Unlock()
	return id
}

func (d *timedDevice) end(id uint64) {
	d.mu.Lock()
	delete(d.inflight, id)
	d.mu.Unlock()
}

// oldest is the start of the longest-running operation, zero when idle.
func (d *timedDevice) oldest() time.Time {
	d.mu.Lock()
	defer d.mu.Unlock()
	var o time.Time
	for _, t := range d.inflight {
		if o.IsZero() || t.Before(o) {
			o = t
		}
	}
	return o
}

func (d *timedDevice) ReadAt(b []byte, off int64) (int, error) {
	id := d.begin()
	defer d.end(id)
	return d.Device.ReadAt(b, off)
}

// ReadCachedAt reads what the page cache holds of b's range, from its
// start, without waiting for the device; 0 where the device cannot. It
// needs no watchdog entry: it cannot hang.
func (d *timedDevice) ReadCachedAt(b []byte, off int64) int {
	if c, ok := d.Device.(interface{ ReadCachedAt([]byte, int64) int }); ok {
		return c.ReadCachedAt(b, off)
	}
	return 0
}

func (d *timedDevice) WriteAt(b []byte, off int64) (int, error) {
	id := d.begin()
	defer d.end(id)
	return d.Device.WriteAt(b, off)
}

func (d *timedDevice) Sync() error {
	id := d.begin()
	defer d.end(id)
	return d.Device.Sync()
}

func (d *timedDevice) setDataOffset(off int64) {
	if s, ok := d.Device.(interface{ setDataOffset(int64) }); ok {
		s.setDataOffset(off)
	}
}

// Watch fails the store when one device operation has been in flight for
// longer than timeout (a hung drive or controller), so that the server
// ejects the disk instead of holding every client of it. It returns when
// ctx ends or the store has failed.
func (s *Store) Watch(ctx context.Context, timeout time.Duration) {
	tick := time.NewTicker(max(timeout/4, 10*time.Millisecond))
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.failedCh:
			return
		case <-tick.C:
		}
		if o := s.timed.oldest(); !o.IsZero() && time.Since(o) > timeout {
			s.fail(fmt.Errorf("an I/O has not completed for %s (timeout %s)", time.Since(o).Round(time.Millisecond), timeout))
			return
		}
	}
}

// FlushEvery flushes the store every interval while it has changes, until
// ctx ends. It bounds what a crash of the server process (not of the host)
// loses to the last interval: blocks written since the last flush read as
// checksum errors until rewritten or recovered from a replica.
func (s *Store) FlushEvery(ctx context.Context, interval time.Duration, log func(error)) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.failedCh:
			return
		case <-t.C:
		}
		s.mu.Lock()
		dirty := len(s.dirtyAU)+len(s.dirtyObj)+len(s.pending) > 0
		s.mu.Unlock()
		if dirty {
			if err := s.Flush(); err != nil {
				log(err)
				return
			}
		}
	}
}
