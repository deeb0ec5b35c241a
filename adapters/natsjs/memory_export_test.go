package natsjs

import dto "github.com/prometheus/client_model/go"

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
