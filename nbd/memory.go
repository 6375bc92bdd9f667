package nbd

import (
	"context"
	"sync"
)

// memChunk is the allocation unit of Memory: an unwritten or trimmed chunk
// is a hole and costs nothing.
const memChunk = 64 << 10

// Memory is a sparse in-memory backend for tests and tools. Chunks of 64
// KiB are allocated on first write and dropped again when trimmed or
// zeroed whole.
type Memory struct {
	info Info

	mu     sync.RWMutex
	chunks map[int64][]byte // chunk index -> memChunk bytes
}

// NewMemory returns an empty (all holes) memory backend described by info.
// MultiConn and FastZero are set: one map serves every connection and
// zeroing a range drops chunks.
func NewMemory(info Info) *Memory {
	info.MultiConn = true
	info.FastZero = true
	return &Memory{info: info, chunks: map[int64][]byte{}}
}

// Info implements Backend.
func (m *Memory) Info() Info { return m.info }

// ReadAt implements Backend.
func (m *Memory) ReadAt(_ context.Context, p []byte, off int64) error {
	m.mu.RLock()
	defer m.mu.RUnlock()
	for len(p) > 0 {
		idx, in := off/memChunk, off%memChunk
		n := min(int64(len(p)), memChunk-in)
		if c, ok := m.chunks[idx]; ok {
			copy(p[:n], c[in:])
		} else {
			clear(p[:n])
		}
		p, off = p[n:], off+n
	}
	return nil
}

// WriteAt implements Backend; memory is always durable as far as the
// process is concerned, so fua changes nothing.
func (m *Memory) WriteAt(_ context.Context, p []byte, off int64, _ bool) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for len(p) > 0 {
		idx, in := off/memChunk, off%memChunk
		n := min(int64(len(p)), memChunk-in)
		c, ok := m.chunks[idx]
		if !ok {
			c = make([]byte, memChunk)
			m.chunks[idx] = c
		}
		copy(c[in:], p[:n])
		p, off = p[n:], off+n
	}
	return nil
}

// Flush implements Backend.
func (m *Memory) Flush(context.Context) error { return nil }

// Trim implements Backend: whole chunks become holes, partial ones zeroes.
func (m *Memory) Trim(_ context.Context, off, length int64, _ bool) error {
	m.zero(off, length, false)
	return nil
}

// WriteZeroes implements Backend. Without NoHole it trims; with NoHole it
// allocates the chunks and zeroes them. Both are fast.
func (m *Memory) WriteZeroes(_ context.Context, off, length int64, f ZeroFlags) error {
	m.zero(off, length, f.NoHole)
	return nil
}

func (m *Memory) zero(off, length int64, allocate bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for length > 0 {
		idx, in := off/memChunk, off%memChunk
		n := min(length, memChunk-in)
		c, ok := m.chunks[idx]
		switch {
		case n == memChunk && !allocate:
			delete(m.chunks, idx)
		case ok:
			clear(c[in : in+n])
		case allocate:
			m.chunks[idx] = make([]byte, memChunk)
		}
		off, length = off+n, length-n
	}
}

// BlockStatus implements Backend: allocated chunks are data, the others
// holes that read as zeroes.
func (m *Memory) BlockStatus(_ context.Context, off, length int64) ([]Extent, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	var exts []Extent
	for length > 0 {
		idx, in := off/memChunk, off%memChunk
		n := min(length, memChunk-in)
		_, data := m.chunks[idx]
		if k := len(exts) - 1; k >= 0 && exts[k].Hole == !data {
			exts[k].Length += n
		} else {
			exts = append(exts, Extent{Length: n, Hole: !data, Zero: !data})
		}
		off, length = off+n, length-n
	}
	return exts, nil
}

// Cache implements Backend; there is nothing to prefetch.
func (m *Memory) Cache(context.Context, int64, int64) error { return nil }

// Allocated is the number of bytes the backend holds in memory.
func (m *Memory) Allocated() int64 {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return int64(len(m.chunks)) * memChunk
}
