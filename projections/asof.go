package projections

import (
	"bytes"
	"cmp"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/anchorage-pin/anchorage/domain"
	"github.com/anchorage-pin/anchorage/events"
)

// AuditEvent is one event of the log as the audit projection recorded it.
type AuditEvent struct {
	Seq     uint64
	At      time.Time
	Subject string
	Type    string
	Version int
	Actor   string
	Corr    string
	// OrgID is the org of the event's subject; empty for events of no org (nodes, scheduler).
	OrgID string
	// RequestID is the pin request of a pin or placement event; empty otherwise.
	RequestID string
	// Data is the payload as recorded.
	Data json.RawMessage
}

// Record decodes e back into a log record.
func (e AuditEvent) Record() (events.Record, error) {
	ev, err := events.Decode(events.Type(e.Type), e.Version, e.Data)
	if err != nil {
		return events.Record{}, fmt.Errorf("audit event %d: %w", e.Seq, err)
	}
	return events.Record{Seq: e.Seq, Subject: e.Subject, Envelope: events.Envelope{
		Type: events.Type(e.Type), Version: e.Version, At: e.At, Actor: e.Actor, Corr: e.Corr, Data: e.Data,
	}, Event: ev}, nil
}

// AuditFilter is a validated query of the audit trail. All filters combine with AND.
type AuditFilter struct {
	// OrgID limits the query to one org. Empty with AllOrgs: every org and the events of no org (sysadmins).
	OrgID   string
	AllOrgs bool
	// Actor, Type and RequestID match exactly when non-empty; CIDKey (a multihash) when non-nil.
	Actor     string
	Type      string
	RequestID string
	CIDKey    []byte
	// Since (inclusive) and Until (exclusive) bound the events' at; zero: unbounded.
	Since, Until time.Time
	// BeforeSeq is the keyset cursor: only events with Seq < BeforeSeq (0: no bound).
	BeforeSeq uint64
	// Limit is the most events returned, newest first.
	Limit int
}

// AsOf folds one org's pin and placement events, in log order, into its pin list as it stood at a time T,
// deriving each pin's status at T exactly as the live pins projection does:
//
//   - a pin exists from its pin.requested until its pin.removed or pin.replaced;
//   - created is the request's, in milliseconds, bumped by 1 ms when it does not exceed the org's previous one
//     (so it is unique and increasing per org);
//   - a placement exists from its pin.placed (status queued) until its pin.unplaced; a pin.placed or
//     pin.unplaced whose term is lower than the highest sched.term_started before it is ignored (the term
//     fence), so the fold needs the sched.term_started records interleaved in log order;
//   - an observation applies only to the placement it names (placed_seq), and never turns pinned or failed back
//     into queued or pinning;
//   - a pin is pinned if any of its placements is, else pinning if any is, else queued if any is or it has none,
//     else failed; its info is that of the placement deciding the status (the first by status, then node id).
//
// "As it stood at T" is the log up to the first event stamped after T: Apply ignores that event and everything
// after it. With clocks that never run backwards it is every event stamped at or before T.
type AsOf struct {
	at      time.Time
	stopped bool
	term    uint64
	created map[string]time.Time // per org: the last created handed out
	pins    map[pinRef]*asofPin
	places  map[placeRef]*asofPlacement
}

type pinRef struct{ org, request string }

type placeRef struct {
	pin  pinRef
	node string
}

type asofPin struct {
	view   PinView
	cidKey []byte
}

type asofPlacement struct {
	status    Status
	info      map[string]string
	placedSeq uint64
}

// NewAsOf starts a fold of the log as it stood at t.
func NewAsOf(t time.Time) *AsOf {
	return &AsOf{at: t, created: map[string]time.Time{}, pins: map[pinRef]*asofPin{}, places: map[placeRef]*asofPlacement{}}
}

// Apply folds the next record of the log. It reports false once the fold has reached a record stamped after T
// (that record and every later one change nothing).
func (a *AsOf) Apply(r events.Record) bool {
	if a.stopped {
		return false
	}
	if r.At.After(a.at) {
		a.stopped = true
		return false
	}
	switch e := r.Event.(type) {
	case events.SchedTermStarted:
		a.term = max(a.term, e.Term)
	case events.PinRequested:
		k := pinRef{e.OrgID, e.RequestID}
		if a.pins[k] != nil {
			return true
		}
		created := e.Created
		if created.IsZero() {
			created = r.At
		}
		created = created.UTC().Truncate(time.Millisecond)
		if last := a.created[e.OrgID]; !created.After(last) {
			created = last.Add(time.Millisecond)
		}
		a.created[e.OrgID] = created
		p := &asofPin{view: PinView{
			RequestID: e.RequestID, Status: StatusQueued, Created: created, CID: e.CID, Name: e.Name,
			Origins: slices.Clone(e.Origins), Meta: maps.Clone(e.Meta),
		}}
		if len(p.view.Origins) == 0 {
			p.view.Origins = nil
		}
		if len(p.view.Meta) == 0 {
			p.view.Meta = nil
		}
		if pc, err := domain.ParseCID(e.CID); err == nil {
			p.cidKey = pc.Key
		}
		a.pins[k] = p
	case events.PinReplaced:
		delete(a.pins, pinRef{e.OrgID, e.RequestID})
	case events.PinRemoved:
		delete(a.pins, pinRef{e.OrgID, e.RequestID})
	case events.PinPlaced:
		if e.Term < a.term {
			return true // decided by a deposed scheduler
		}
		a.places[placeRef{pinRef{e.OrgID, e.RequestID}, e.NodeID}] = &asofPlacement{status: StatusQueued, placedSeq: r.Seq}
	case events.PinUnplaced:
		if e.Term < a.term {
			return true
		}
		delete(a.places, placeRef{pinRef{e.OrgID, e.RequestID}, e.NodeID})
	case events.PinStatusObserved:
		pl := a.places[placeRef{pinRef{e.OrgID, e.RequestID}, e.NodeID}]
		s, ok := ParseStatus(e.Status)
		if pl == nil || !ok || pl.placedSeq != e.PlacedSeq || (final(pl.status) && !final(s)) {
			return true // no such placement (any more), an earlier one's, or a late progress report
		}
		pl.status, pl.info = s, maps.Clone(e.Info)
		if len(pl.info) == 0 {
			pl.info = nil
		}
	}
	return true
}

func final(s Status) bool { return s == StatusPinned || s == StatusFailed }

// statusRank orders placement statuses by how much they say about the pin: pinned, pinning, queued, failed.
var statusRank = [...]int{StatusQueued: 2, StatusPinning: 1, StatusPinned: 0, StatusFailed: 3}

// Pins returns the pin list at T, newest first (by created, which is per-org unique), with each pin's status
// and info derived from its placements. Delegates are left empty: the fold does not know the nodes' addresses.
func (a *AsOf) Pins() []PinView {
	type best struct {
		node string
		pl   *asofPlacement
	}
	decide := map[pinRef]best{}
	for k, pl := range a.places {
		if a.pins[k.pin] == nil {
			continue
		}
		b, ok := decide[k.pin]
		if !ok || statusRank[pl.status] < statusRank[b.pl.status] || (pl.status == b.pl.status && k.node < b.node) {
			decide[k.pin] = best{k.node, pl}
		}
	}
	out := make([]PinView, 0, len(a.pins))
	for k, p := range a.pins {
		v := p.view
		v.Origins, v.Meta = slices.Clone(v.Origins), maps.Clone(v.Meta)
		if b, ok := decide[k]; ok {
			v.Status, v.Info = b.pl.status, maps.Clone(b.pl.info)
		}
		out = append(out, v)
	}
	slices.SortFunc(out, func(x, y PinView) int {
		if c := y.Created.Compare(x.Created); c != 0 {
			return c
		}
		return strings.Compare(y.RequestID, x.RequestID)
	})
	return out
}

// PinsAsOf folds recs (one org's pin and placement events with the sched.term_started records, in log order)
// into the pin list as it stood at t, newest first.
func PinsAsOf(recs []events.Record, t time.Time) []PinView {
	a := NewAsOf(t)
	for _, r := range recs {
		if !a.Apply(r) {
			break
		}
	}
	return a.Pins()
}

// FilterPins applies a list filter (statuses, CIDs, name with its match strategy, before/after, meta, limit) to
// pins in memory, keeping their order: the matches' count and the first f.Limit of them (all when Limit < 1).
func FilterPins(pins []PinView, f PinFilter) (int64, []PinView) {
	var out []PinView
	var n int64
	for _, v := range pins {
		if !pinMatches(v, f) {
			continue
		}
		n++
		if f.Limit < 1 || len(out) < f.Limit {
			out = append(out, v)
		}
	}
	return n, out
}

func pinMatches(v PinView, f PinFilter) bool {
	if len(f.Statuses) > 0 && !slices.Contains(f.Statuses, v.Status) {
		return false
	}
	if len(f.CIDKeys) > 0 {
		pc, err := domain.ParseCID(v.CID)
		if err != nil || !slices.ContainsFunc(f.CIDKeys, func(k []byte) bool { return bytes.Equal(k, pc.Key) }) {
			return false
		}
	}
	if f.Name != "" {
		var ok bool
		switch f.Match {
		case MatchIExact:
			ok = strings.ToLower(v.Name) == strings.ToLower(f.Name)
		case MatchPartial:
			ok = strings.Contains(v.Name, f.Name)
		case MatchIPartial:
			ok = strings.Contains(strings.ToLower(v.Name), strings.ToLower(f.Name))
		default:
			ok = v.Name == f.Name
		}
		if !ok {
			return false
		}
	}
	if !f.Before.IsZero() && !v.Created.Before(f.Before) {
		return false
	}
	if !f.After.IsZero() && !v.Created.After(f.After) {
		return false
	}
	for k, want := range f.Meta {
		if got, ok := v.Meta[k]; !ok || got != want {
			return false
		}
	}
	return true
}

// compareSeq orders audit events newest first.
func compareSeq(x, y AuditEvent) int { return cmp.Compare(y.Seq, x.Seq) }

// MergeNewestFirst merges lists of audit events that are each newest first into one, newest first, without
// duplicates, keeping at most limit (all when limit < 1).
func MergeNewestFirst(limit int, lists ...[]AuditEvent) []AuditEvent {
	var all []AuditEvent
	for _, l := range lists {
		all = append(all, l...)
	}
	slices.SortFunc(all, compareSeq)
	all = slices.CompactFunc(all, func(x, y AuditEvent) bool { return x.Seq == y.Seq })
	if limit > 0 && len(all) > limit {
		all = all[:limit]
	}
	return all
}
