package nbd

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"keel/internal/later"
)

// asyncMemory is a Memory that also implements AsyncReader and
// AsyncWriter, answering in turn in every way the interfaces allow:
// declining (the server then calls ReadAt/WriteAt), done before StartRead
// returns, done from the reader's later.Queue (so the server must run
// its queue before it waits for more requests), and done from another
// goroutine after a while.
type asyncMemory struct {
	*Memory
	n        atomic.Uint64
	declined atomic.Int64
	queued   atomic.Int64
}

func newAsyncMemory(info Info) *asyncMemory { return &asyncMemory{Memory: NewMemory(info)} }

func (m *asyncMemory) start(q *later.Queue, op func() error, done func(error, *later.Queue)) bool {
	switch m.n.Add(1) % 4 {
	case 0:
		m.declined.Add(1)
		return false
	case 1:
		done(op(), nil)
	case 2:
		m.queued.Add(1)
		q.Add(func() { done(op(), nil) })
	default:
		go func() {
			time.Sleep(time.Millisecond)
			var q later.Queue
			done(op(), &q)
			q.Run()
		}()
	}
	return true
}

func (m *asyncMemory) StartRead(ctx context.Context, p []byte, off int64, q *later.Queue, done func(error, *later.Queue)) bool {
	return m.start(q, func() error { return m.ReadAt(ctx, p, off) }, done)
}

func (m *asyncMemory) StartWrite(ctx context.Context, p []byte, off int64, fua bool, q *later.Queue, done func(error, *later.Queue)) bool {
	return m.start(q, func() error { return m.WriteAt(ctx, p, off, fua) }, done)
}

// failingAsync fails every read it starts.
type failingAsync struct{ *Memory }

var errInjected = errors.New("injected read failure")

func (failingAsync) StartRead(_ context.Context, _ []byte, _ int64, q *later.Queue, done func(error, *later.Queue)) bool {
	q.Add(func() { done(errInjected, nil) })
	return true
}

// A read an AsyncReader fails is answered with an error that carries the
// backend's message, and the connection goes on.
func TestAsyncReadError(t *testing.T) {
	ts := mustServe(t, false, map[string]Backend{"disk": failingAsync{NewMemory(Info{Size: 1 << 20})}})
	c := dialRaw(t, ts.sock, "disk", true)
	for i := range 3 {
		c.send(cmdRead, 0, uint64(i), 0, 4096, nil)
		r := c.recv(0)
		if r.handle != uint64(i) || r.errno == 0 || r.typ != replyTypeError {
			t.Fatalf("read %d: reply %+v, want an error", i, r)
		}
	}
	c.send(cmdDisc, 0, 0, 0, 0, nil)
}

// fio's verify run through an AsyncReader/AsyncWriter backend, at queue
// depth 32, checks that every way of answering keeps data and replies
// straight.
func TestAsyncBackendFioVerify(t *testing.T) {
	m := newAsyncMemory(Info{Size: 64 << 20})
	ts := mustServe(t, false, map[string]Backend{"disk": m})
	run(t, "fio", "--name=v", "--ioengine=nbd", "--uri="+ts.uri("disk"), "--rw=randwrite", "--bs=4k",
		"--iodepth=32", "--size=16m", "--verify=crc32c", "--verify_fatal=1", "--do_verify=1")
	if m.declined.Load() == 0 || m.queued.Load() == 0 {
		t.Fatalf("the backend was offered too little: %d declined, %d put off", m.declined.Load(), m.queued.Load())
	}
}
