package natsjs_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/anchorage-pin/anchorage/adapters/natsjs"
	"github.com/anchorage-pin/anchorage/events"
)

// header is m's headers, which must parse.
func header(t *testing.T, m natsjs.RawMsg) nats.Header {
	t.Helper()
	h, err := m.Headers()
	require.NoError(t, err)
	return h
}

// readAll reads from..until with filters and maxBatch, every batch checked against maxBatch.
func readAll(t *testing.T, l *natsjs.EventLog, from, until uint64, filters []string, maxBatch int) []natsjs.RawMsg {
	t.Helper()
	var got []natsjs.RawMsg
	require.NoError(t, l.ReadRawUntil(t.Context(), from, until, filters, maxBatch, func(b []natsjs.RawMsg) error {
		require.NotEmpty(t, b)
		require.LessOrEqual(t, len(b), maxBatch)
		got = append(got, b...)
		return nil
	}))
	return got
}

// requireSameMsgs: the same messages, with the same subjects, bodies and headers.
func requireSameMsgs(t *testing.T, want, got []natsjs.RawMsg, what string) {
	t.Helper()
	seqs := func(ms []natsjs.RawMsg) []uint64 {
		s := make([]uint64, len(ms))
		for i, m := range ms {
			s[i] = m.Seq
		}
		return s
	}
	require.Equal(t, seqs(want), seqs(got), what) // short of printing every body
	for i := range want {
		require.Equal(t, want[i].Subject, got[i].Subject, what)
		require.True(t, string(want[i].Data) == string(got[i].Data), "%s: body of %d", what, want[i].Seq)
		require.Equal(t, header(t, want[i]), header(t, got[i]), "%s: headers of %d", what, want[i].Seq)
	}
}

// The wire read gives exactly what the ordered consumer gives: over the in-process connection and over TCP with
// a password, with a filter on the server, filters applied locally, ranges that start and end anywhere, and
// batches of any size.
func TestWireReadMatchesOrderedRead(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	s, err := natsjs.StartServer(natsjs.ServerConfig{StoreDir: t.TempDir(), Sync: natsjs.SyncGroup, Listen: "127.0.0.1:0", User: "reader", Password: "s3cret-pw"})
	require.NoError(t, err)
	t.Cleanup(func() { s.Shutdown(context.Background()) })
	l, err := natsjs.OpenLog(ctx, s, natsjs.LogConfig{})
	require.NoError(t, err)
	t.Cleanup(l.Close)
	appendRawLog(t, l, 2500) // sequences 1..5000: pins odd, tokens even

	nc, err := nats.Connect(s.ClientURL(), nats.UserInfo("reader", "s3cret-pw"))
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	tcp, err := natsjs.OpenRemoteLog(ctx, nc, natsjs.LogConfig{})
	require.NoError(t, err)

	ordered, err := natsjs.OpenRemoteLog(ctx, nc, natsjs.LogConfig{})
	require.NoError(t, err)
	natsjs.SetWire(ordered, false)
	natsjs.SetWire(l, true)
	natsjs.SetWire(tcp, true)

	cases := []struct {
		from, until uint64
		filters     []string
		batch       int
	}{
		{1, 5000, nil, 5000},
		{1, 5000, nil, 7},
		{2, 4999, nil, 1000},
		{1, 100_000, nil, 333}, // until past the head: ends at the head
		{17, 4000, []string{events.AllPins}, 64},
		{1, 5000, []string{events.AllPins, events.AllTokens}, 500},
		{100, 3000, []string{events.AllTokens, events.AllPlace}, 41},
		{4999, 5000, nil, 10},
	}
	for _, c := range cases {
		what := fmt.Sprintf("%d..%d %v batch %d", c.from, c.until, c.filters, c.batch)
		want := readAll(t, ordered, c.from, c.until, c.filters, c.batch)
		require.NotEmpty(t, want, what)
		requireSameMsgs(t, want, readAll(t, l, c.from, c.until, c.filters, c.batch), "in-process "+what)
		requireSameMsgs(t, want, readAll(t, tcp, c.from, c.until, c.filters, c.batch), "tcp "+what)
	}

	require.Equal(t, float64(len(cases)), natsjs.Reads(l, "wire"))
	require.Equal(t, float64(len(cases)), natsjs.Reads(tcp, "wire"))
	require.Zero(t, natsjs.Reads(l, "wire_fallback")+natsjs.Reads(tcp, "wire_fallback")+natsjs.Reads(l, "ordered")+natsjs.Reads(tcp, "ordered"))
	require.Equal(t, float64(len(cases)), natsjs.Reads(ordered, "ordered"))

	// Decoded reads ride on the same path.
	var recs []events.Record
	require.NoError(t, tcp.ReadUntil(ctx, 1, 5000, nil, 1000, func(b []events.Record) error {
		recs = append(recs, b...)
		return nil
	}))
	require.Len(t, recs, 5000)
	for i, r := range recs {
		require.Equal(t, uint64(i+1), r.Seq)
	}

	// Nothing is left behind on the server: a wire read deletes its consumer.
	stream, err := l.JetStream().Stream(ctx, events.StreamName)
	require.NoError(t, err)
	consumers := func() []string {
		var names []string
		for n := range stream.ConsumerNames(ctx).Name() {
			names = append(names, n)
		}
		return names
	}
	before := consumers()
	readAll(t, tcp, 1, 5000, nil, 1000)
	readAll(t, l, 1, 5000, nil, 1000)
	require.ElementsMatch(t, before, consumers())
}

// A wire read whose connection drops halfway hands over to the ordered consumer: every message once, in order.
func TestWireReadFallsBackWhereItStopped(t *testing.T) {
	t.Parallel()
	l, _ := rawLog(t, 1500) // sequences 1..3000
	natsjs.SetWire(l, false)
	want := readAll(t, l, 1, 3000, nil, 100)
	natsjs.SetWire(l, true)
	for _, drop := range []uint64{1, 99, 100, 1234, 2999} {
		natsjs.SetWireDropAfter(l, drop)
		requireSameMsgs(t, want, readAll(t, l, 1, 3000, nil, 100), fmt.Sprintf("dropped after %d", drop))
	}
	require.Equal(t, float64(5), natsjs.Reads(l, "wire_fallback"))
	natsjs.SetWireDropAfter(l, 0)
	requireSameMsgs(t, want, readAll(t, l, 1, 3000, nil, 100), "no fault")
	require.Equal(t, float64(1), natsjs.Reads(l, "wire"))
}

// A callback's error ends a wire read at once and is returned.
func TestWireReadStopsAtCallbackError(t *testing.T) {
	t.Parallel()
	l, _ := rawLog(t, 1500)
	natsjs.SetWire(l, true)
	stop := fmt.Errorf("enough")
	calls := 0
	err := l.ReadRawUntil(t.Context(), 1, 3000, nil, 10, func([]natsjs.RawMsg) error {
		calls++
		if calls == 3 {
			return stop
		}
		return nil
	})
	require.ErrorIs(t, err, stop)
	require.Equal(t, 3, calls)

	ctx, cancel := context.WithCancel(t.Context())
	err = l.ReadRawUntil(ctx, 1, 3000, nil, 10, func([]natsjs.RawMsg) error {
		cancel()
		return nil
	})
	require.ErrorIs(t, err, context.Canceled)
}

func TestParseMsgArgs(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		line, subject, reply string
		hmsg                 bool
		hdr, total           int
	}{
		{"pins.a.b 1 $JS.ACK.x 12 40\r\n", "pins.a.b", "$JS.ACK.x", true, 12, 40},
		{"_INBOX.x 1 0 0\r\n", "_INBOX.x", "", true, 0, 0},
		{"_INBOX.x 1 28 28\r\n", "_INBOX.x", "", true, 28, 28},
		{"s 1 r 5\r\n", "s", "r", false, 0, 5},
		{"s  1\tr   5\r\n", "s", "r", false, 0, 5},
		{"s 1 5\r\n", "s", "", false, 0, 5},
	} {
		subject, reply, hdr, total, err := natsjs.ParseMsgArgs([]byte(c.line), c.hmsg)
		require.NoError(t, err, c.line)
		require.Equal(t, c.subject, string(subject), c.line)
		require.Equal(t, c.reply, string(reply), c.line)
		require.Equal(t, c.hdr, hdr, c.line)
		require.Equal(t, c.total, total, c.line)
	}
	for _, bad := range []struct {
		line string
		hmsg bool
	}{
		{"s 1 r 50 40\r\n", true},        // header larger than the message
		{"s 1 r x 40\r\n", true},         // not a number
		{"s 1 r -1 40\r\n", true},        // negative
		{"s 1\r\n", false},               // too few
		{"a b c d e f\r\n", true},        // too many
		{"s 1 r 99999999999\r\n", false}, // too large
		{"", false},
	} {
		_, _, _, _, err := natsjs.ParseMsgArgs([]byte(bad.line), bad.hmsg)
		require.Error(t, err, bad.line)
	}
}

func TestWireAckPositions(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		reply               string
		sseq, cseq, pending uint64
		ok                  bool
	}{
		{"$JS.ACK.ANCHORAGE.c_1.1.42.7.1700000000.9", 42, 7, 9, true},
		{"$JS.ACK.hub.ACCHASH.ANCHORAGE.c_1.1.42.7.1700000000.9.tok", 42, 7, 9, true},
		{"$JS.ACK.hub.ACCHASH.ANCHORAGE.c_1.1.42.7.1700000000.9", 42, 7, 9, true},
		{"$JS.ACK.ANCHORAGE.c_1.1.x.7.1700000000.9", 0, 0, 0, false},
		{"$JS.ACK.ANCHORAGE.c_1.1.42.7.1700000000", 0, 0, 0, false},
		{"_INBOX.abc", 0, 0, 0, false},
		{"", 0, 0, 0, false},
	} {
		sseq, cseq, pending, ok := natsjs.WireAckPositions([]byte(c.reply))
		require.Equal(t, c.ok, ok, c.reply)
		if ok {
			require.Equal(t, []uint64{c.sseq, c.cseq, c.pending}, []uint64{sseq, cseq, pending}, c.reply)
			s2, p2, ok2 := natsjs.AckPositionsOfStr(c.reply)
			require.True(t, ok2)
			require.Equal(t, []uint64{sseq, pending}, []uint64{s2, p2}, "agrees with ackPositions")
		}
	}
	require.Equal(t, "408", natsjs.WireStatusCode([]byte("NATS/1.0 408 Request Timeout\r\nNats-Pending-Messages: 5\r\n\r\n")))
	require.Equal(t, "100", natsjs.WireStatusCode([]byte("NATS/1.0 100 Idle Heartbeat\r\n\r\n")))
	require.Equal(t, "", natsjs.WireStatusCode([]byte("NATS/1.0\r\nNats-Msg-Id: x\r\n\r\n")))
	require.Equal(t, "", natsjs.WireStatusCode(nil))
}

// The wire read's parsers never panic, and what they accept is consistent.
func FuzzWireParsers(f *testing.F) {
	f.Add([]byte("pins.a.b 1 $JS.ACK.ANCHORAGE.c_1.1.42.7.1700000000.9 12 40\r\n"), true)
	f.Add([]byte("_INBOX.x 1 28 28\r\n"), true)
	f.Add([]byte("s 1 r 5\r\n"), false)
	f.Add([]byte("$JS.ACK.hub.ACCHASH.ANCHORAGE.c_1.1.42.7.1700000000.9.tok"), false)
	f.Fuzz(func(t *testing.T, line []byte, hmsg bool) {
		subject, reply, hdr, total, err := natsjs.ParseMsgArgs(line, hmsg)
		if err == nil {
			require.True(t, hdr >= 0 && hdr <= total, "hdr %d total %d", hdr, total)
			require.NotEmpty(t, subject)
			require.NotContains(t, string(subject), " ")
			require.NotContains(t, string(reply), " ")
		}
		sseq, _, pending, ok := natsjs.WireAckPositions(line)
		s2, p2, ok2 := natsjs.AckPositionsOfStr(string(line))
		if ok {
			require.True(t, ok2, "ackPositions rejects what the wire parser accepts: %q", line)
			require.Equal(t, sseq, s2)
			require.Equal(t, pending, p2)
		}
		if code := natsjs.WireStatusCode(line); code != "" {
			require.Len(t, code, 3)
		}
	})
}
