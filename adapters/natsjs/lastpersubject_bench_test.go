package natsjs_test

import (
	"context"
	"log/slog"
	"os"
	"runtime"
	"runtime/metrics"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/anchorage-pin/anchorage/adapters/natsjs"
	"github.com/anchorage-pin/anchorage/adapters/natsjs/natstest"
	"github.com/anchorage-pin/anchorage/events"
	"github.com/anchorage-pin/anchorage/projections"
	"github.com/anchorage-pin/anchorage/projections/projectionstest"
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
	ctx := context.Background()
	l, pins := nodePlacementLog(b)
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

// nodePlacementLog is an in-process event log holding, for each of ANCHORAGE_BENCH_PINS pins (default 200,000),
// a request, a placement on node n1 and its pinned observation.
func nodePlacementLog(b *testing.B) (*natsjs.EventLog, int) {
	pins := 200_000
	if v, err := strconv.Atoi(os.Getenv("ANCHORAGE_BENCH_PINS")); err == nil && v > 0 {
		pins = v
	}
	l, err := natsjs.OpenLog(context.Background(), natstest.ServerIn(b, b.TempDir(), natsjs.SyncInterval), natsjs.LogConfig{})
	require.NoError(b, err)
	b.Cleanup(l.Close)
	appendPinHistories(b, l, pins, "n1", func(_ int, id string) events.PinRequested {
		return events.PinRequested{OrgID: org, RequestID: id, CID: benchCID, Created: time.Now()}
	})
	return l, pins
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

// BenchmarkWorkerStart measures a node worker's start on a log holding, per pin, a request, a placement on the
// node and its pinned observation: first without a snapshot (each placement subject's last event read, then the
// snapshot written), then from that snapshot. It reports each start's time (until the worker would consume),
// the snapshot's write time and size, and the live heap's peak growth during the start from the log (mostly the
// embedded server's per-block subject state, sampled as marked by the garbage collector). Both starts leave the
// same pin set in the worker (BenchmarkWorkerStateMemory).
//
//	go test ./adapters/natsjs -run '^$' -bench BenchmarkWorkerStart -benchtime 1x
//
// ANCHORAGE_BENCH_PINS sets the number of pins (default 200,000).
func BenchmarkWorkerStart(b *testing.B) {
	ctx := context.Background()
	l, pins := nodePlacementLog(b)
	for b.Loop() {
		snaps := &projectionstest.Snapshots{}
		start := func(until ...string) (map[string]time.Duration, int64) {
			marks := make(chan string, 8)
			lg := slog.New(markHandler{marks})
			w := projections.NewWorker(l, &countingPinner{}, projections.WorkerConfig{NodeID: "n1", Snapshots: snaps, Logger: lg})
			rctx, cancel := context.WithCancel(ctx)
			done := make(chan error, 1)
			peak := trackPeakHeap()
			t0 := time.Now()
			go func() { done <- w.Run(rctx) }()
			at := map[string]time.Duration{}
			for len(at) < len(until) {
				m := <-marks
				if slices.Contains(until, m) {
					at[m] = time.Since(t0)
				}
			}
			grew := peak()
			cancel()
			require.NoError(b, <-done)
			return at, grew
		}
		first, grew := start("worker state read from the log", "saved the worker's start-up snapshot")
		second, _ := start("worker state restored from its snapshot")
		b.ReportMetric(first["worker state read from the log"].Seconds(), "s/start-from-log")
		b.ReportMetric((first["saved the worker's start-up snapshot"] - first["worker state read from the log"]).Seconds(), "s/snapshot-write")
		b.ReportMetric(second["worker state restored from its snapshot"].Seconds(), "s/start-from-snapshot")
		b.ReportMetric(float64(len(snaps.Files["n1"]))/float64(pins), "snapshot-B/pin")
		b.ReportMetric(float64(grew)/(1<<20), "start-from-log-peak-heap-growth-MiB")
	}
}

// markHandler sends every log message to a channel (without blocking when nobody reads).
type markHandler struct{ marks chan<- string }

func (h markHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h markHandler) Handle(_ context.Context, r slog.Record) error {
	select {
	case h.marks <- r.Message:
	default:
	}
	return nil
}
func (h markHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h markHandler) WithGroup(string) slog.Handler      { return h }
