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

// Persist keeps the store's metadata on disk until ctx ends: every
// checkpoint interval it writes the records changed since into the page
// cache (Checkpoint), which bounds what a crash of the server process
// loses, and every flush interval it flushes, which bounds what a crash of
// the host costs the replicas' recovery (blocks written since read as
// checksum errors until recovered). Hidden objects waiting to be freed
// make the next tick a flush. Either interval may be 0: never.
func (s *Store) Persist(ctx context.Context, checkpoint, flush time.Duration, log func(error)) {
	ticker := func(d time.Duration) <-chan time.Time {
		if d <= 0 {
			return nil
		}
		t := time.NewTicker(d)
		context.AfterFunc(ctx, t.Stop)
		return t.C
	}
	ckptC, flushC := ticker(checkpoint), ticker(flush)
	for {
		full := false
		select {
		case <-ctx.Done():
			return
		case <-s.failedCh:
			return
		case <-ckptC:
		case <-flushC:
			full = true
		}
		s.mu.Lock()
		full = full && len(s.dirtyAU)+len(s.dirtyObj) > 0 || len(s.pending) > 0
		changed := len(s.ckptAU)+len(s.ckptObj) > 0
		s.mu.Unlock()
		var err error
		switch {
		case full:
			err = s.Flush()
		case changed:
			err = s.Checkpoint()
		}
		if err != nil {
			log(err)
			return
		}
	}
}
