package natsjs_test

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/anchorage-pin/anchorage/adapters/natsjs"
	"github.com/anchorage-pin/anchorage/adapters/natsjs/natstest"
	"github.com/anchorage-pin/anchorage/domain"
	"github.com/anchorage-pin/anchorage/events"
	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"
)

// directGets records the direct-get requests the server receives while a test runs.
type directGets struct {
	mu   sync.Mutex
	reqs []map[string]any
}

func watchDirectGets(t *testing.T, s *natsjs.Server) *directGets {
	t.Helper()
	nc, err := s.Connect("watch")
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	d := &directGets{}
	_, err = nc.Subscribe("$JS.API.DIRECT.GET."+events.StreamName, func(m *nats.Msg) {
		var req map[string]any
		_ = json.Unmarshal(m.Data, &req)
		d.mu.Lock()
		d.reqs = append(d.reqs, req)
		d.mu.Unlock()
	})
	require.NoError(t, err)
	require.NoError(t, nc.Flush())
	return d
}

func (d *directGets) reset() {
	d.mu.Lock()
	d.reqs = nil
	d.mu.Unlock()
}

func (d *directGets) count() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.reqs)
}

// forwardSearches are the requests that make the server search forward by subject from inside the log (or
// for more than one message): each one loads every message block up to the next match.
func (d *directGets) forwardSearches() []map[string]any {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []map[string]any
	for _, r := range d.reqs {
		if r["next_by_subj"] == nil {
			continue
		}
		if seq, _ := r["seq"].(float64); seq > 1 || r["batch"] == nil || r["batch"].(float64) > 1 {
			out = append(out, r)
		}
	}
	return out
}

// filler appends n events on subjects of their own, in one bulk append.
func filler(t *testing.T, l *natsjs.EventLog, n int) {
	t.Helper()
	msgs := make([]domain.Message, 0, n)
	for range n {
		id := uuid.NewString()
		msgs = append(msgs, pinMsg(t, id, 0, requested(id)))
	}
	_, err := l.AppendBulk(t.Context(), msgs)
	require.NoError(t, err)
}

func nodeMsg(t *testing.T, node string, expect uint64, capacity int64) domain.Message {
	return domain.Message{Subject: events.NodeSubject(node), Expect: expect, Envelope: envelope(t, events.NodeRegistered{
		NodeID: node, PeerID: "12D3KooWEBY4TCwuKqq6oTJXzt9xBrcGiVZF3TmfocaaHPsYdHRr", Capacity: capacity})}
}

func seqsOf(recs []events.Record) []uint64 {
	out := make([]uint64, len(recs))
	for i, r := range recs {
		out[i] = r.Seq
	}
	return out
}

// sparseRegistrations appends n registrations of node (capacity 0, 1, …), each chained to the one before and
// followed by 30 events of other subjects, and returns their sequences.
func sparseRegistrations(t *testing.T, l *natsjs.EventLog, node string, n int) []uint64 {
	t.Helper()
	var seqs []uint64
	var last uint64
	for i := range n {
		got, err := l.Append(t.Context(), nodeMsg(t, node, last, int64(i)))
		require.NoError(t, err)
		last = got[0]
		seqs = append(seqs, last)
		filler(t, l, 30)
	}
	return seqs
}

// TestLoadSparseSubjectFollowsTheChain: a subject whose events lie far apart (a node registering at each
// restart, with millions of events between) is loaded without asking the server to search forward between
// them, which made it load and index every message block in between (seconds and ~200 MB at 3M events).
func TestLoadSparseSubjectFollowsTheChain(t *testing.T) {
	defer natsjs.SetDenseSpan(20)()
	ctx := t.Context()
	s, l := natstest.Log(t)
	gets := watchDirectGets(t, s)

	want := sparseRegistrations(t, l, "n1", 4)
	last := want[len(want)-1]
	// Events appended since: none on the node's subject.
	filler(t, l, 5)

	gets.reset()
	recs, got, err := l.Load(ctx, events.NodeSubject("n1"))
	require.NoError(t, err)
	require.Equal(t, want, seqsOf(recs))
	require.Equal(t, last, got)
	for i, r := range recs {
		require.Equal(t, int64(i), r.Event.(events.NodeRegistered).Capacity)
		require.Equal(t, events.NodeSubject("n1"), r.Subject)
	}
	require.Empty(t, gets.forwardSearches(), "Load searched forward through the log")

	// The same for a subject of one event, and of none.
	seqs, err := l.Append(ctx, nodeMsg(t, "n2", 0, 1))
	require.NoError(t, err)
	recs, got, err = l.Load(ctx, events.NodeSubject("n2"))
	require.NoError(t, err)
	require.Equal(t, seqs, seqsOf(recs))
	require.Equal(t, seqs[0], got)
	recs, got, err = l.Load(ctx, events.NodeSubject("n3"))
	require.NoError(t, err)
	require.Empty(t, recs)
	require.Zero(t, got)
	require.Empty(t, gets.forwardSearches())
}

// TestLoadAfterReadsOnlyTheNewEvents: LoadLast returns a subject's last event; LoadAfter returns a sparse
// subject's events after a sequence, reading one event per new event (the last from the index, then back along
// the chain to the sequence), however many came before; where the chain breaks it reads forward from the
// sequence and still returns exactly those events.
func TestLoadAfterReadsOnlyTheNewEvents(t *testing.T) {
	ctx := t.Context()
	s, l := natstest.Log(t)
	gets := watchDirectGets(t, s)

	seqs := sparseRegistrations(t, l, "n1", 6)
	subject := events.NodeSubject("n1")
	for _, after := range []uint64{0, seqs[0] - 1, seqs[0], seqs[2], seqs[3] + 5, seqs[4], seqs[5], seqs[5] + 100} {
		var want []uint64
		for _, q := range seqs {
			if q > after {
				want = append(want, q)
			}
		}
		gets.reset()
		recs, err := l.LoadAfter(ctx, subject, after)
		require.NoError(t, err)
		require.Equal(t, want, append([]uint64(nil), seqsOf(recs)...), "after %d", after)
		require.Empty(t, gets.forwardSearches(), "after %d: searched forward", after)
		// The last event, then one get per further new event (the watcher sees the requests asynchronously).
		n := max(1, len(want))
		require.Eventually(t, func() bool { return gets.count() >= n }, 5*time.Second, time.Millisecond, "after %d", after)
		time.Sleep(20 * time.Millisecond)
		require.Equal(t, n, gets.count(), "after %d: direct gets", after)
	}
	recs, err := l.LoadAfter(ctx, events.NodeSubject("nobody"), 0)
	require.NoError(t, err)
	require.Empty(t, recs)
	rec, ok, err := l.LoadLast(ctx, subject)
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, seqs[5], rec.Seq)
	require.Equal(t, int64(5), rec.Event.(events.NodeRegistered).Capacity)
	_, ok, err = l.LoadLast(ctx, events.NodeSubject("nobody"))
	require.NoError(t, err)
	require.False(t, ok)
	_, err = l.LoadAfter(ctx, "nodes.*", 0)
	require.Error(t, err)

	// A chain broken by an event stored without the expected sequence: read forward, the same answer.
	m := nodeMsg(t, "x", 0, 9)
	m.Subject, m.NoExpect = subject, true
	got, err := l.Append(ctx, m)
	require.NoError(t, err)
	seqs = append(seqs, got[0])
	filler(t, l, 30)
	got, err = l.Append(ctx, nodeMsg(t, "n1", got[0], 10))
	require.NoError(t, err)
	seqs = append(seqs, got[0])
	recs, err = l.LoadAfter(ctx, subject, seqs[3])
	require.NoError(t, err)
	require.Equal(t, seqs[4:], seqsOf(recs))
}

// TestLoadChainBreaksFallBackToReadingForward: events stored without an expected sequence for their own subject
// (placements reported with NoExpect, decisions checked against a wildcard) cannot be chained; Load still returns
// the whole history, reading forward.
func TestLoadChainBreaksFallBackToReadingForward(t *testing.T) {
	defer natsjs.SetDenseSpan(20)()
	ctx := t.Context()
	_, l := natstest.Log(t)
	for _, tc := range []struct {
		name   string
		middle func(subject string, last uint64) domain.Message
	}{
		{"no-expect", func(subject string, _ uint64) domain.Message {
			m := nodeMsg(t, "x", 0, 7)
			m.Subject, m.NoExpect = subject, true
			return m
		}},
		{"expect-other-subject", func(subject string, last uint64) domain.Message {
			m := nodeMsg(t, "x", last, 7)
			m.Subject, m.ExpectSubject = subject, "nodes.*"
			return m
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			node := "node-" + tc.name
			subject := events.NodeSubject(node)
			var want []uint64
			seqs, err := l.Append(ctx, nodeMsg(t, node, 0, 1))
			require.NoError(t, err)
			want = append(want, seqs[0])
			filler(t, l, 30)
			seqs, err = l.Append(ctx, tc.middle(subject, seqs[0]))
			require.NoError(t, err)
			want = append(want, seqs[0])
			filler(t, l, 30)
			seqs, err = l.Append(ctx, nodeMsg(t, node, seqs[0], 2))
			require.NoError(t, err)
			want = append(want, seqs[0])
			filler(t, l, 30)

			recs, last, err := l.Load(ctx, subject)
			require.NoError(t, err)
			require.Equal(t, want, seqsOf(recs))
			require.Equal(t, want[2], last)
		})
	}
}

// TestReadStartSkipsPastEventsOfOtherSubjects: a single-filter read whose subjects have no event since from
// starts past the head (so the server does not search every block up to it), and still delivers what comes
// next; with an event since from, it starts at from.
func TestReadStartSkipsPastEventsOfOtherSubjects(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	_, l := natstest.Log(t)
	orgEvent := func(i int) domain.Message {
		o := uuid.NewString()
		return domain.Message{Subject: events.OrgSubject(o), Envelope: envelope(t, events.OrgCreated{OrgID: o, Slug: fmt.Sprintf("o%d", i)})}
	}
	seqs, err := l.Append(ctx, orgEvent(1))
	require.NoError(t, err)
	first := seqs[0]
	filler(t, l, 50)
	head, err := l.LastSeq(ctx)
	require.NoError(t, err)

	start, err := l.ReadStart(ctx, first+1, []string{events.AllOrgs})
	require.NoError(t, err)
	require.Equal(t, head+1, start)
	start, err = l.ReadStart(ctx, first, []string{events.AllOrgs})
	require.NoError(t, err)
	require.Equal(t, first, start, "an event at from must be read")
	// Several filters are read unfiltered: no lookup, no skip.
	start, err = l.ReadStart(ctx, first+1, []string{events.AllOrgs, events.AllTokens})
	require.NoError(t, err)
	require.Equal(t, first+1, start)

	// The skipping reader delivers the next matching event, and nothing before it.
	got := make(chan events.Record, 10)
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- natsjs.SkippingReader{EventLog: l}.Read(rctx, first+1, []string{events.AllOrgs}, func(recs []events.Record, _ uint64) error {
			for _, r := range recs {
				got <- r
			}
			return nil
		})
	}()
	seqs, err = l.Append(ctx, orgEvent(2))
	require.NoError(t, err)
	r := <-got
	require.Equal(t, seqs[0], r.Seq)
	cancel()
	require.NoError(t, <-done)
}

// TestLoadAllLoadsSubjectBySubject: LoadAll returns the events of every matching subject up to the head, in
// stream order, and declines a subject space larger than its bound.
func TestLoadAllLoadsSubjectBySubject(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	_, l := natstest.Log(t)
	var want []uint64
	for i := range 3 {
		o, tok := uuid.NewString(), uuid.NewString()
		subject := events.TokenSubject(o, tok)
		seqs, err := l.Append(ctx, domain.Message{Subject: subject, Envelope: envelope(t, events.TokenMinted{OrgID: o, TokenID: tok})})
		require.NoError(t, err)
		want = append(want, seqs[0])
		filler(t, l, 10)
		if i == 1 {
			seqs, err = l.Append(ctx, domain.Message{Subject: subject, Expect: seqs[0], Envelope: envelope(t, events.TokenRevoked{OrgID: o, TokenID: tok})})
			require.NoError(t, err)
			want = append(want, seqs[0])
		}
	}
	head, err := l.LastSeq(ctx)
	require.NoError(t, err)
	recs, gotHead, ok, err := l.LoadAll(ctx, events.AllTokens, 10)
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, head, gotHead)
	require.Equal(t, want, seqsOf(recs))

	_, _, ok, err = l.LoadAll(ctx, events.AllTokens, 2)
	require.NoError(t, err)
	require.False(t, ok)
}
