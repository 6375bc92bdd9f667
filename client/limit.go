package client

import (
	"context"
	"sync"
	"time"
)

// limiter enforces a volume's iops and bandwidth limits as two token
// buckets with a one-second burst. A request waits until both allow it.
type limiter struct {
	mu         sync.Mutex
	iops, bw   float64 // per second; 0 = unlimited
	ops, bytes float64 // tokens available
	last       time.Time
}

func newLimiter(iops, bw int64) *limiter {
	if iops <= 0 && bw <= 0 {
		return nil
	}
	return &limiter{iops: float64(iops), bw: float64(bw), ops: float64(iops), bytes: float64(bw), last: time.Now()}
}

// wait takes one operation and n bytes, sleeping as long as the buckets
// need to refill. A nil limiter never waits.
func (l *limiter) wait(ctx context.Context, n int) error {
	if l == nil {
		return nil
	}
	l.mu.Lock()
	now := time.Now()
	el := now.Sub(l.last).Seconds()
	l.last = now
	if l.iops > 0 {
		l.ops = min(l.iops, l.ops+el*l.iops) - 1
	}
	if l.bw > 0 {
		l.bytes = min(l.bw, l.bytes+el*l.bw) - float64(n)
	}
	var d time.Duration
	if l.iops > 0 && l.ops < 0 {
		d = max(d, time.Duration(-l.ops/l.iops*float64(time.Second)))
	}
	if l.bw > 0 && l.bytes < 0 {
		d = max(d, time.Duration(-l.bytes/l.bw*float64(time.Second)))
	}
	l.mu.Unlock()
	if d == 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
