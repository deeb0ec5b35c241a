package projections

import (
	"context"
	"sync"
)

// Watermarks track, per projection, the last stream sequence applied to the read model, and let a request
// wait until its own write is visible: the API's read-your-writes guarantee.
type Watermarks struct {
	mu    sync.Mutex
	marks map[string]*mark
}

type mark struct {
	seq uint64
	ch  chan struct{} // closed (and replaced) whenever seq advances
}

// NewWatermarks returns empty watermarks.
func NewWatermarks() *Watermarks { return &Watermarks{marks: map[string]*mark{}} }

func (w *Watermarks) get(name string) *mark {
	m := w.marks[name]
	if m == nil {
		m = &mark{ch: make(chan struct{})}
		w.marks[name] = m
	}
	return m
}

// Advance records that name has applied everything up to seq. Going backwards is ignored.
func (w *Watermarks) Advance(name string, seq uint64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	m := w.get(name)
	if seq <= m.seq {
		return
	}
	m.seq = seq
	close(m.ch)
	m.ch = make(chan struct{})
}

// Applied returns the last sequence name applied.
func (w *Watermarks) Applied(name string) uint64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.get(name).seq
}

// Wait blocks until name has applied seq, or ctx ends.
func (w *Watermarks) Wait(ctx context.Context, name string, seq uint64) error {
	for {
		w.mu.Lock()
		m := w.get(name)
		if m.seq >= seq {
			w.mu.Unlock()
			return nil
		}
		ch := m.ch
		w.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Horizons remember, per org, the stream sequence of the last write this node made for it. A read for the org
// first waits until the projection has applied that sequence: the API's read-your-writes guarantee, paid only
// by the reads that need it, instead of by every write waiting for its projection.
type Horizons struct {
	mu    sync.Mutex
	m     map[string]uint64
	floor uint64
}

// SetFloor makes every org's horizon at least seq. A node sets it to the log's head when it starts, so writes
// acknowledged before a restart (or a crash) are as visible to reads as the ones it makes itself.
func (h *Horizons) SetFloor(seq uint64) {
	h.mu.Lock()
	h.floor = max(h.floor, seq)
	h.mu.Unlock()
}

// NewHorizons returns empty horizons.
func NewHorizons() *Horizons { return &Horizons{m: map[string]uint64{}} }

// Record notes that org's state includes seq.
func (h *Horizons) Record(org string, seq uint64) {
	h.mu.Lock()
	if seq > h.m[org] {
		h.m[org] = seq
	}
	h.mu.Unlock()
}

// Get returns the last sequence written for org, or the floor if that is later (0: none).
func (h *Horizons) Get(org string) uint64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return max(h.m[org], h.floor)
}

// Changed returns a channel closed the next time name advances.
func (w *Watermarks) Changed(name string) <-chan struct{} {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.get(name).ch
}
