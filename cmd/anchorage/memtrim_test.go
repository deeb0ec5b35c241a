package main

import (
	"context"
	"io"
	"log/slog"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestTrimAfterStartFreesPooledBuffers: buffers parked in a sync.Pool (as the event store parks its message-block
// buffers) stay on the heap until collections empty the pool; trimAfterStart runs them. Not parallel: the heap
// it measures is the whole process's.
func TestTrimAfterStartFreesPooledBuffers(t *testing.T) {
	var pool sync.Pool
	bufs := make([]*[]byte, 8)
	for i := range bufs {
		b := make([]byte, 8<<20)
		bufs[i] = &b
	}
	for _, b := range bufs { // no allocation from here to the first reading: no collection in between
		pool.Put(b)
	}
	clear(bufs)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	trimAfterStart(t.Context(), slog.New(slog.NewTextHandler(io.Discard, nil)), 0)
	runtime.ReadMemStats(&after)
	require.Less(t, after.HeapInuse+48<<20, before.HeapInuse, "64 MB of pooled buffers freed (heap in use %d -> %d)", before.HeapInuse, after.HeapInuse)
	runtime.KeepAlive(&pool)
}

// TestTrimAfterStartStopsWithTheNode: a node that stops before the delay is over does not wait for it.
func TestTrimAfterStartStopsWithTheNode(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { trimAfterStart(ctx, slog.New(slog.NewTextHandler(io.Discard, nil)), time.Hour); close(done) }()
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("trimAfterStart still waiting after its context ended")
	}
}
