// Package later lets a connection's reader put work off until it has
// consumed everything it read: requests or replies produced while it
// works through a batch are written once, together, just before it waits
// for more bytes, instead of one system call each.
package later

import "io"

// Queue is the work one reader goroutine put off. Only that goroutine
// uses it: Add from code it calls, Run before it reads its socket again.
type Queue struct {
	fns []func()
}

// Add puts f off until the next Run. A nil queue runs f at once (the
// caller is not on a reader that would run it).
func (q *Queue) Add(f func()) {
	if q == nil {
		f()
		return
	}
	q.fns = append(q.fns, f)
}

// Run runs the work put off, including what it adds meanwhile, in order.
func (q *Queue) Run() {
	for i := 0; i < len(q.fns); i++ {
		q.fns[i]()
		q.fns[i] = nil
	}
	q.fns = q.fns[:0]
}

// Reader calls Before (a Queue's Run, say) before every Read of R, which
// may wait for bytes.
type Reader struct {
	R      io.Reader
	Before func()
}

func (r Reader) Read(p []byte) (int, error) {
	r.Before()
	return r.R.Read(p)
}
