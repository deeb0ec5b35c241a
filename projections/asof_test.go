package projections_test

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/anchorage-pin/anchorage/domain"
	"github.com/anchorage-pin/anchorage/events"
	"github.com/anchorage-pin/anchorage/projections"
	"github.com/stretchr/testify/require"
)

const (
	asofOrg = "e7031246-2fa0-557c-adce-49cf9034dd55"
	reqA    = "019cebcb-f375-76f0-8478-82e36b0d5a0a"
	reqB    = "019cebcb-f375-76f0-8478-82e36b0d5b0b"
	reqC    = "019cebcb-f375-76f0-8478-82e36b0d5c0c"
	reqD    = "019cebcb-f375-76f0-8478-82e36b0d5d0d"
	cidV1   = "bafybeiczsscdsbs7ffqz55asqdf3smv6klcw3gofszvwlyarci47bgf354"
	cidV0   = "QmUNLLsPACCz1vLxQVkXqqLX5R1X345qqfHbsf67hvA3Nn" // the same content as cidV1
	cidRaw  = "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy"
)

var t0 = time.Date(2026, 3, 14, 10, 0, 0, 0, time.UTC)

// asofLog builds records: each event stamped sec seconds after t0, with the next sequence.
type asofLog struct{ recs []events.Record }

func (l *asofLog) add(sec float64, subject string, e events.Event) uint64 {
	seq := uint64(len(l.recs) + 1)
	l.recs = append(l.recs, events.Record{Seq: seq, Subject: subject, Envelope: events.Envelope{
		Type: e.EventType(), Version: e.EventVersion(), At: t0.Add(time.Duration(sec * float64(time.Second)))}, Event: e})
	return seq
}

func (l *asofLog) request(sec float64, id, cid, name string, created time.Time, replaces string) {
	l.add(sec, events.PinSubject(asofOrg, id), events.PinRequested{OrgID: asofOrg, RequestID: id, CID: cid, Name: name, Created: created,
		Replaces: replaces, Meta: map[string]string{"name": name}})
}

func (l *asofLog) place(sec float64, id, node string, term uint64) uint64 {
	return l.add(sec, events.PlaceSubject(node, asofOrg, id), events.PinPlaced{OrgID: asofOrg, RequestID: id, NodeID: node, CID: cidRaw, Term: term})
}

func (l *asofLog) unplace(sec float64, id, node string, term uint64) {
	l.add(sec, events.PlaceSubject(node, asofOrg, id), events.PinUnplaced{OrgID: asofOrg, RequestID: id, NodeID: node, CID: cidRaw, Reason: "moved", Term: term})
}

func (l *asofLog) observe(sec float64, id, node, status string, placed uint64, info map[string]string) {
	l.add(sec, events.PlaceSubject(node, asofOrg, id), events.PinStatusObserved{OrgID: asofOrg, RequestID: id, NodeID: node, Status: status,
		Info: info, PlacedSeq: placed})
}

func (l *asofLog) term(sec float64, term uint64) {
	l.add(sec, events.SchedTerm, events.SchedTermStarted{Term: term, SchedulerID: "n1"})
}

// brief renders a pin list as "id-letter:status[info]" in order, for comparisons with hand-written expectations.
func brief(pins []projections.PinView) []string {
	names := map[string]string{reqA: "A", reqB: "B", reqC: "C", reqD: "D"}
	out := []string{}
	for _, p := range pins {
		s := names[p.RequestID] + ":" + p.Status.String()
		if len(p.Info) > 0 {
			b, _ := json.Marshal(p.Info)
			s += string(b)
		}
		out = append(out, s)
	}
	return out
}

// The pin list at many times of one history, against hand-computed expectations: requests, a created collision,
// placements, observations (late, stale, final to final), a new scheduler term fencing a deposed scheduler's
// decisions, a replace and a removal.
func TestAsOfAcrossAHistory(t *testing.T) {
	t.Parallel()
	var l asofLog
	l.request(1, reqA, cidV1, "a", t0.Add(time.Second), "")
	pA := l.place(2, reqA, "n1", 1)
	l.request(3, reqB, cidRaw, "b", t0.Add(time.Second), "") // same created as A: bumped by 1 ms
	l.observe(4, reqA, "n1", "pinning", pA, map[string]string{"note": "fetching"})
	l.term(5, 2)
	l.place(6, reqB, "n1", 1) // a deposed scheduler: fenced
	pB := l.place(7, reqB, "n2", 2)
	l.observe(8, reqA, "n1", "pinned", pA, map[string]string{"dag_size": "7"})
	l.observe(9, reqA, "n1", "pinning", pA, nil) // late progress report: ignored
	l.add(10, events.PinSubject(asofOrg, reqA), events.PinReplaced{OrgID: asofOrg, RequestID: reqA, ReplacedBy: reqC})
	l.request(10, reqC, cidV0, "c", t0.Add(10*time.Second), reqA)
	l.observe(11, reqB, "n2", "failed", pB, map[string]string{"status_details": "timeout"})
	l.observe(12, reqB, "n1", "pinned", 6, nil) // answers the fenced placement, which never existed: ignored
	pC := l.place(13, reqC, "n1", 2)
	l.remove(14, reqB)
	l.observe(15, reqC, "n1", "pinned", pC, map[string]string{"dag_size": "42"})

	for _, tc := range []struct {
		at   float64
		want []string
	}{
		{0.5, []string{}},
		{1, []string{"A:queued"}}, // at T itself: included
		{2.5, []string{"A:queued"}},
		{3, []string{"B:queued", "A:queued"}},
		{4, []string{"B:queued", `A:pinning{"note":"fetching"}`}},
		{6, []string{"B:queued", `A:pinning{"note":"fetching"}`}},
		{7, []string{"B:queued", `A:pinning{"note":"fetching"}`}},
		{8, []string{"B:queued", `A:pinned{"dag_size":"7"}`}},
		{9.5, []string{"B:queued", `A:pinned{"dag_size":"7"}`}},
		{10, []string{"C:queued", "B:queued"}},
		{11, []string{"C:queued", `B:failed{"status_details":"timeout"}`}},
		{12, []string{"C:queued", `B:failed{"status_details":"timeout"}`}},
		{13.9, []string{"C:queued", `B:failed{"status_details":"timeout"}`}},
		{14, []string{"C:queued"}},
		{15, []string{`C:pinned{"dag_size":"42"}`}},
		{99, []string{`C:pinned{"dag_size":"42"}`}},
	} {
		got := projections.PinsAsOf(l.recs, t0.Add(time.Duration(tc.at*float64(time.Second))))
		require.Equal(t, tc.want, brief(got), "as of %gs", tc.at)
	}

	// The whole view at 10 s: created (with B's bump), the request's fields, no delegates.
	got := projections.PinsAsOf(l.recs, t0.Add(10*time.Second))
	require.Equal(t, []projections.PinView{
		{RequestID: reqC, Status: projections.StatusQueued, Created: t0.Add(10 * time.Second), CID: cidV0, Name: "c", Meta: map[string]string{"name": "c"}},
		{RequestID: reqB, Status: projections.StatusQueued, Created: t0.Add(time.Second + time.Millisecond), CID: cidRaw, Name: "b", Meta: map[string]string{"name": "b"}},
	}, got)
}

// remove is a pin.removed.
func (l *asofLog) remove(sec float64, id string) {
	l.add(sec, events.PinSubject(asofOrg, id), events.PinRemoved{OrgID: asofOrg, RequestID: id})
}

// A pin on several nodes is pinned if any placement is, else pinning, else queued, else failed; the deciding
// placement (the first by that order, then by node id) gives its info.
func TestAsOfStatusFromSeveralPlacements(t *testing.T) {
	t.Parallel()
	var l asofLog
	l.request(1, reqD, cidRaw, "d", time.Time{}, "") // no created: the event's time
	p2 := l.place(2, reqD, "n2", 0)
	p1 := l.place(3, reqD, "n1", 0)
	l.observe(4, reqD, "n2", "pinned", p2, map[string]string{"on": "n2"})
	l.observe(5, reqD, "n1", "pinning", p1, map[string]string{"on": "n1"})
	l.observe(6, reqD, "n1", "pinned", p1, map[string]string{"on": "n1"})
	l.observe(7, reqD, "n1", "failed", p1, map[string]string{"on": "n1", "why": "gone"})
	l.observe(8, reqD, "n2", "failed", p2, map[string]string{"on": "n2", "why": "gone"})
	p3 := l.place(9, reqD, "n3", 0)
	l.unplace(10, reqD, "n3", 0)
	l.unplace(11, reqD, "n1", 0)
	l.unplace(12, reqD, "n2", 0)
	l.place(13, reqD, "n1", 0) // placed again: a fresh, queued placement
	l.observe(14, reqD, "n1", "pinned", p1, nil)
	_ = p3
	for _, tc := range []struct {
		at   float64
		want string
	}{
		{1, "D:queued"},
		{3, "D:queued"},
		{4, `D:pinned{"on":"n2"}`},
		{5, `D:pinned{"on":"n2"}`},               // pinned beats pinning
		{6, `D:pinned{"on":"n1"}`},               // both pinned: n1 before n2
		{7, `D:pinned{"on":"n2"}`},               // n1 failed (final to final is allowed)
		{8, `D:failed{"on":"n1","why":"gone"}`},  // both failed: n1
		{9, "D:queued"},                          // queued (n3) beats failed
		{10, `D:failed{"on":"n1","why":"gone"}`}, // n3 gone
		{12, "D:queued"},                         // no placement at all
		{14, "D:queued"},                         // the new placement ignores the old one's observation
	} {
		got := projections.PinsAsOf(l.recs, t0.Add(time.Duration(tc.at*float64(time.Second))))
		require.Equal(t, []string{tc.want}, brief(got), "as of %gs", tc.at)
		require.Equal(t, t0.Add(time.Second), got[0].Created)
	}
}

// The log as it stood at T ends before the first event stamped after T, even if a later one (a slower clock) is
// stamped before T.
func TestAsOfStopsAtTheFirstEventAfterT(t *testing.T) {
	t.Parallel()
	var l asofLog
	l.request(1, reqA, cidRaw, "a", time.Time{}, "")
	l.request(5, reqB, cidRaw, "b", time.Time{}, "")
	l.request(3, reqC, cidRaw, "c", time.Time{}, "") // appended after B, stamped before it
	require.Equal(t, []string{"A:queued"}, brief(projections.PinsAsOf(l.recs, t0.Add(4*time.Second))))
	require.Equal(t, []string{"C:queued", "B:queued", "A:queued"}, brief(projections.PinsAsOf(l.recs, t0.Add(5*time.Second))),
		"C's created is bumped past B's to keep the org's order")

	a := projections.NewAsOf(t0.Add(4 * time.Second))
	require.True(t, a.Apply(l.recs[0]))
	require.False(t, a.Apply(l.recs[1]))
	require.False(t, a.Apply(l.recs[2]), "nothing after the stop")
	require.Equal(t, []string{"A:queued"}, brief(a.Pins()))
}

// Records of other kinds, unknown statuses and duplicates change nothing.
func TestAsOfIgnoresWhatItDoesNotFold(t *testing.T) {
	t.Parallel()
	var l asofLog
	l.add(1, events.OrgSubject(asofOrg), events.OrgCreated{OrgID: asofOrg, Slug: "acme"})
	l.request(2, reqA, cidRaw, "a", time.Time{}, "")
	l.request(3, reqA, cidRaw, "again", time.Time{}, "")
	p := l.place(4, reqA, "n1", 0)
	l.observe(5, reqA, "n1", "exploded", p, nil)
	l.observe(6, reqB, "n1", "pinned", p, nil) // a request that does not exist
	l.add(7, events.NodeSubject("n1"), events.NodeCordoned{NodeID: "n1"})
	got := projections.PinsAsOf(l.recs, t0.Add(time.Minute))
	require.Equal(t, []string{"A:queued"}, brief(got))
	require.Equal(t, "a", got[0].Name)
}

func TestFilterPins(t *testing.T) {
	t.Parallel()
	mk := func(i int, st projections.Status, cid, name string, meta map[string]string) projections.PinView {
		return projections.PinView{RequestID: fmt.Sprint(i), Status: st, Created: t0.Add(time.Duration(10-i) * time.Second), CID: cid, Name: name, Meta: meta}
	}
	pins := []projections.PinView{ // newest first
		mk(1, projections.StatusPinned, cidV1, "Website", map[string]string{"env": "prod"}),
		mk(2, projections.StatusQueued, cidRaw, "website-beta", map[string]string{"env": "dev"}),
		mk(3, projections.StatusFailed, cidV0, "docs", nil),
		mk(4, projections.StatusPinned, cidRaw, "WEBSITE", map[string]string{"env": "prod", "x": "y"}),
	}
	ids := func(f projections.PinFilter) (int64, []string) {
		n, page := projections.FilterPins(pins, f)
		out := []string{}
		for _, p := range page {
			out = append(out, p.RequestID)
		}
		return n, out
	}
	pcV0, err := domain.ParseCID(cidV0)
	require.NoError(t, err)
	for _, tc := range []struct {
		f    projections.PinFilter
		n    int64
		want []string
	}{
		{projections.PinFilter{}, 4, []string{"1", "2", "3", "4"}},
		{projections.PinFilter{Statuses: []projections.Status{projections.StatusPinned}}, 2, []string{"1", "4"}},
		{projections.PinFilter{Statuses: []projections.Status{projections.StatusPinned}, Limit: 1}, 2, []string{"1"}},
		{projections.PinFilter{CIDKeys: [][]byte{pcV0.Key}}, 2, []string{"1", "3"}}, // v0 and v1 of the same content
		{projections.PinFilter{Name: "Website", Match: projections.MatchExact}, 1, []string{"1"}},
		{projections.PinFilter{Name: "website", Match: projections.MatchIExact}, 2, []string{"1", "4"}},
		{projections.PinFilter{Name: "site", Match: projections.MatchPartial}, 2, []string{"1", "2"}},
		{projections.PinFilter{Name: "SITE", Match: projections.MatchIPartial}, 3, []string{"1", "2", "4"}},
		{projections.PinFilter{Before: t0.Add(8 * time.Second), After: t0.Add(6 * time.Second)}, 1, []string{"3"}},
		{projections.PinFilter{Meta: map[string]string{"env": "prod"}}, 2, []string{"1", "4"}},
		{projections.PinFilter{Meta: map[string]string{"env": "prod", "x": "y"}}, 1, []string{"4"}},
	} {
		n, got := ids(tc.f)
		require.Equal(t, tc.n, n, "%+v", tc.f)
		require.Equal(t, tc.want, got, "%+v", tc.f)
	}
}

func TestAuditEventRecordAndMerge(t *testing.T) {
	t.Parallel()
	data := json.RawMessage(`{"org_id":"` + asofOrg + `","request_id":"` + reqA + `"}`)
	e := projections.AuditEvent{Seq: 7, At: t0, Subject: events.PinSubject(asofOrg, reqA), Type: "pin.removed", Version: 1, Actor: "token:x",
		Corr: "c", OrgID: asofOrg, RequestID: reqA, Data: data}
	r, err := e.Record()
	require.NoError(t, err)
	require.Equal(t, events.PinRemoved{OrgID: asofOrg, RequestID: reqA}, r.Event)
	require.Equal(t, uint64(7), r.Seq)
	require.Equal(t, "token:x", r.Actor)
	e.Type = "pin.exploded"
	_, err = e.Record()
	require.ErrorIs(t, err, events.ErrUnknownType)

	ev := func(seqs ...uint64) []projections.AuditEvent {
		var out []projections.AuditEvent
		for _, s := range seqs {
			out = append(out, projections.AuditEvent{Seq: s})
		}
		return out
	}
	seqs := func(evs []projections.AuditEvent) []uint64 {
		var out []uint64
		for _, e := range evs {
			out = append(out, e.Seq)
		}
		return out
	}
	require.Equal(t, []uint64{9, 8, 5, 4}, seqs(projections.MergeNewestFirst(4, ev(9, 5, 1), ev(8, 5, 4, 2))))
	require.Equal(t, []uint64{9, 8, 5, 4, 2, 1}, seqs(projections.MergeNewestFirst(0, ev(9, 5, 1), ev(8, 5, 4, 2))))
}
