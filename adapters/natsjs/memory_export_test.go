package natsjs

import (
	"context"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	dto "github.com/prometheus/client_model/go"
)

// SetDenseSpan sets how far apart a subject's first and last events must be for Load to follow the chain of
// expected-sequence headers instead of reading forward, until the returned function restores it. Tests using it
// must not run in parallel.
func SetDenseSpan(n uint64) (restore func()) {
	old := denseSpan
	denseSpan = n
	return func() { denseSpan = old }
}

// SetWire makes l's long reads take the wire read always (true) or never (false), whatever their size.
func SetWire(l *EventLog, always bool) {
	l.wireMode = wireNever
	if always {
		l.wireMode = wireAlways
	}
}

// SetWireDropAfter makes l's wire reads drop their connection after n messages (a fault for tests).
func SetWireDropAfter(l *EventLog, n uint64) { l.wireDropAfter = n }

// Wire parsers, for their tests.
var (
	ParseMsgArgs      = parseMsgArgs
	WireAckPositions  = ackSubjectPositions[[]byte]
	WireStatusCode    = statusCode
	AckPositionsOfStr = ackPositions
)

// Reads is how many reads l's metrics counted on path ("wire", "wire_fallback", "ordered").
func Reads(l *EventLog, path string) float64 {
	var m dto.Metric
	if err := l.m.reads.WithLabelValues(path).Write(&m); err != nil {
		panic(err)
	}
	return m.GetCounter().GetValue()
}

// StallWatches makes p's next n KV watches deliver nothing, as a watcher whose pending entry expired before
// delivery does, and sets how long Live waits before starting over, until the returned function restores both.
// Tests using it must not run in parallel.
func StallWatches(p *Presence, n int, stall time.Duration) (restore func()) {
	old, oldStall := p.kv, liveStall
	p.kv, liveStall = &stallingKV{KeyValue: old, left: n}, stall
	return func() { p.kv, liveStall = old, oldStall }
}

type stallingKV struct {
	jetstream.KeyValue
	left int
}

func (s *stallingKV) WatchAll(ctx context.Context, opts ...jetstream.WatchOpt) (jetstream.KeyWatcher, error) {
	if s.left > 0 {
		s.left--
		return silentWatcher{make(chan jetstream.KeyValueEntry)}, nil
	}
	return s.KeyValue.WatchAll(ctx, opts...)
}

type silentWatcher struct{ ch chan jetstream.KeyValueEntry }

func (w silentWatcher) Updates() <-chan jetstream.KeyValueEntry { return w.ch }
func (w silentWatcher) Stop() error                             { return nil }
