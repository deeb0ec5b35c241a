package natsjs_test

import (
	"context"
	"os"
	"runtime"
	"runtime/metrics"
	"strconv"
	"testing"
	"time"

	"github.com/anchorage-pin/anchorage/adapters/natsjs"
	"github.com/anchorage-pin/anchorage/events"
	"github.com/stretchr/testify/require"
)

// BenchmarkLastPerSubject measures what a node worker's start reads: the last event of each of the node's
// placement subjects, on a log holding, per pin, a request, a placement on the node and its pinned observation.
// It reports the time of one read and how much the live heap (server's and client's: the server is in-process)
// grew at most during it.
//
//	go test ./adapters/natsjs -run '^$' -bench BenchmarkLastPerSubject -benchtime 1x
//
// ANCHORAGE_BENCH_PINS sets the number of pins (default 200,000).
func BenchmarkLastPerSubject(b *testing.B) {
	pins := 200_000
	if v, err := strconv.Atoi(os.Getenv("ANCHORAGE_BENCH_PINS")); err == nil && v > 0 {
		pins = v
	}
	ctx := context.Background()
	s, err := natsjs.StartServer(natsjs.ServerConfig{StoreDir: b.TempDir(), Sync: natsjs.SyncInterval, SyncInterval: time.Minute})
	require.NoError(b, err)
	b.Cleanup(func() { s.Shutdown(ctx) })
	l, err := natsjs.OpenLog(ctx, s, natsjs.LogConfig{})
	require.NoError(b, err)
	defer l.Close()
	appendPinHistories(b, l, pins, "n1", func(_ int, id string) events.PinRequested {
		return events.PinRequested{OrgID: org, RequestID: id, CID: benchCID, Created: time.Now()}
	})
	for b.Loop() {
		peak := trackPeakHeap()
		start := time.Now()
		n := 0
		_, err := l.LastPerSubject(ctx, events.NodePlacements("n1"), func(events.Record) error { n++; return nil })
		elapsed := time.Since(start)
		grew := peak()
		require.NoError(b, err)
		require.Equal(b, pins, n)
		b.ReportMetric(elapsed.Seconds(), "s/read")
		b.ReportMetric(float64(pins)/elapsed.Seconds(), "subjects/s")
		b.ReportMetric(float64(grew)/(1<<20), "peak-live-heap-growth-MiB")
	}
}

// trackPeakHeap samples the live heap (as marked by the latest GC) every millisecond until the returned
// function is called, which reports its largest growth over the live heap at the start. Garbage not yet
// collected does not count.
func trackPeakHeap() func() int64 {
	runtime.GC()
	sample := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	metrics.Read(sample)
	base := int64(sample[0].Value.Uint64())
	stop, done := make(chan struct{}), make(chan int64)
	go func() {
		peak := int64(0)
		t := time.NewTicker(time.Millisecond)
		defer t.Stop()
		s := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
		for {
			select {
			case <-stop:
				done <- peak
				return
			case <-t.C:
				metrics.Read(s)
				peak = max(peak, int64(s[0].Value.Uint64())-base)
			}
		}
	}()
	return func() int64 { close(stop); return <-done }
}
