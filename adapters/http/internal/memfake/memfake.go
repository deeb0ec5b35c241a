// Package memfake is an in-memory anchorage back end for tests of the HTTP adapter: the real domain.Service
// over an in-memory event log, an asynchronous projector folding the log into an in-memory pins read model
// (advancing real projections.Watermarks), and a token table implementing httpapi.Authenticator.
//
// It is deliberately close to the real stack where the HTTP layer can tell: writes become visible only once
// the projector has applied them, created is millisecond-precise and strictly increasing per org, another
// org's pins are not found, and statuses change only through events.
package memfake

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"

	httpapi "github.com/anchorage-pin/anchorage/adapters/http"
	"github.com/anchorage-pin/anchorage/domain"
	"github.com/anchorage-pin/anchorage/events"
	"github.com/anchorage-pin/anchorage/projections"
)

// NodeID names the fake node in observations.
const NodeID = "memfake"

// NodeAddr is the delegate of pins the fake has "placed" (those observed pinned).
const NodeAddr = "/ip4/198.51.100.7/tcp/4001/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN"

// ServingAddrs are the serving node's own addresses, for httpapi.Config.Delegates.
var ServingAddrs = []string{
	"/ip4/203.0.113.10/tcp/4001/p2p/12D3KooWRBy97UB99e3J6hiPesre1MZeuNQvfan4gBziswrRJsNK",
	"/ip4/203.0.113.10/udp/4001/quic-v1/p2p/12D3KooWRBy97UB99e3J6hiPesre1MZeuNQvfan4gBziswrRJsNK",
}

// Backend is the whole fake.
type Backend struct {
	Service *domain.Service
	Marks   *projections.Watermarks

	mu      sync.Mutex
	recs    []events.Record // records not yet dropped by Reset, in stream order
	seq     uint64          // last stream sequence handed out
	applied uint64          // last sequence the projector applied
	last    map[string]uint64
	pins    map[string]map[string]*pin // org → request id → pin
	tokens  map[string]httpapi.Principal
	paused  bool
	delay   time.Duration
	notify  chan struct{}
	done    chan struct{}
	stopped chan struct{}
}

type pin struct {
	view   projections.PinView
	cidKey []byte
}

// New starts a back end; Close stops its projector.
func New() *Backend {
	b := &Backend{
		Marks:   projections.NewWatermarks(),
		last:    map[string]uint64{},
		pins:    map[string]map[string]*pin{},
		tokens:  map[string]httpapi.Principal{},
		notify:  make(chan struct{}, 1),
		done:    make(chan struct{}),
		stopped: make(chan struct{}),
	}
	clock := domain.NewCreatedClock(time.Now)
	b.Service = &domain.Service{
		Log: (*eventLog)(b),
		Env: domain.Env{Now: time.Now, NewID: uuid.NewString, Created: clock.Next},
	}
	go b.project()
	return b
}

// Close stops the projector.
func (b *Backend) Close() {
	select {
	case <-b.done:
	default:
		close(b.done)
	}
	<-b.stopped
}

// Config returns an httpapi.Config wired to the fake (the caller may adjust it).
func (b *Backend) Config() httpapi.Config {
	return httpapi.Config{
		Auth:      b,
		Pins:      b.Service,
		Reader:    b,
		Watermark: b.Marks,
		Delegates: func(context.Context) []string { return slices.Clone(ServingAddrs) },
		Ready:     ReadyFunc(func(context.Context) error { return nil }),
	}
}

// ReadyFunc adapts a function to httpapi.Health.
type ReadyFunc func(ctx context.Context) error

// Ready implements httpapi.Health.
func (f ReadyFunc) Ready(ctx context.Context) error { return f(ctx) }

// AddToken makes token authenticate as p.
func (b *Backend) AddToken(token string, p httpapi.Principal) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.tokens[token] = p
}

// Authenticate implements httpapi.Authenticator.
func (b *Backend) Authenticate(_ context.Context, bearer string) (httpapi.Principal, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	p, ok := b.tokens[bearer]
	if !ok {
		return httpapi.Principal{}, domain.Errorf(domain.ErrUnauthorized, "the access token is not valid")
	}
	p.Scopes = slices.Clone(p.Scopes)
	return p, nil
}

// Pause stops the projector from applying new events (a stalled projection); Resume lets it catch up.
func (b *Backend) Pause() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.paused = true
}

// Resume undoes Pause.
func (b *Backend) Resume() {
	b.mu.Lock()
	b.paused = false
	b.mu.Unlock()
	b.kick()
}

// SetDelay makes the projector lag d behind every append, like a real projection does, so that a handler that
// does not wait for its write is caught reading stale data.
func (b *Backend) SetDelay(d time.Duration) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.delay = d
}

// Reset drops every event and pin (tokens stay). Sequences keep increasing.
func (b *Backend) Reset() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.recs = nil
	b.applied = b.seq
	clear(b.last)
	clear(b.pins)
	b.Marks.Advance("pins", b.seq)
}

// Applied returns the last sequence the projector applied.
func (b *Backend) Applied() uint64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.applied
}

// SetStatus records that the fake node observed status for a pin, through the event log, and waits until the
// read model shows it. info may be nil.
func (b *Backend) SetStatus(ctx context.Context, org, requestID, status string, info map[string]string) error {
	if _, ok := projections.ParseStatus(status); !ok {
		return fmt.Errorf("memfake: unknown status %q", status)
	}
	subject := events.PlaceSubject(NodeID, org, requestID)
	env, err := events.New(uuid.NewString(), time.Now(), "system:memfake", "", events.PinStatusObserved{
		OrgID: org, RequestID: requestID, NodeID: NodeID, Status: status, Info: info,
	})
	if err != nil {
		return err
	}
	log := (*eventLog)(b)
	_, last, err := log.Load(ctx, subject)
	if err != nil {
		return err
	}
	seqs, err := log.Append(ctx, domain.Message{Subject: subject, Expect: last, Envelope: env})
	if err != nil {
		return err
	}
	return b.Marks.Wait(ctx, "pins", seqs[0])
}

func (b *Backend) kick() {
	select {
	case b.notify <- struct{}{}:
	default:
	}
}

// project applies appended records in order, asynchronously, like the real projection runner.
func (b *Backend) project() {
	defer close(b.stopped)
	for {
		select {
		case <-b.done:
			return
		case <-b.notify:
		}
		b.mu.Lock()
		delay := b.delay
		b.mu.Unlock()
		if delay > 0 {
			select {
			case <-time.After(delay):
			case <-b.done:
				return
			}
		}
		b.mu.Lock()
		if b.paused {
			b.mu.Unlock()
			continue
		}
		for _, r := range b.recs {
			if r.Seq > b.applied {
				b.apply(r)
				b.applied = r.Seq
			}
		}
		applied := b.applied
		b.mu.Unlock()
		b.Marks.Advance("pins", applied)
	}
}

// apply folds one record into the read model; b.mu is held.
func (b *Backend) apply(r events.Record) {
	switch e := r.Event.(type) {
	case events.PinRequested:
		pc, err := domain.ParseCID(e.CID)
		if err != nil {
			return
		}
		org := b.pins[e.OrgID]
		if org == nil {
			org = map[string]*pin{}
			b.pins[e.OrgID] = org
		}
		org[e.RequestID] = &pin{cidKey: pc.Key, view: projections.PinView{
			RequestID: e.RequestID, Status: projections.StatusQueued, Created: e.Created.UTC().Truncate(time.Millisecond),
			CID: e.CID, Name: e.Name, Origins: slices.Clone(e.Origins), Meta: maps.Clone(e.Meta),
		}}
	case events.PinReplaced:
		delete(b.pins[e.OrgID], e.RequestID)
	case events.PinRemoved:
		delete(b.pins[e.OrgID], e.RequestID)
	case events.PinStatusObserved:
		p := b.pins[e.OrgID][e.RequestID]
		if p == nil {
			return
		}
		st, ok := projections.ParseStatus(e.Status)
		if !ok {
			return
		}
		p.view.Status = st
		p.view.Info = maps.Clone(e.Info)
		if st == projections.StatusPinned {
			p.view.Delegates = []string{NodeAddr}
		} else {
			p.view.Delegates = nil
		}
	}
}

func cloneView(v projections.PinView) projections.PinView {
	v.Origins = slices.Clone(v.Origins)
	v.Meta = maps.Clone(v.Meta)
	v.Info = maps.Clone(v.Info)
	v.Delegates = slices.Clone(v.Delegates)
	return v
}

// GetPin implements projections.PinReader.
func (b *Backend) GetPin(_ context.Context, orgID, requestID string) (projections.PinView, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	p := b.pins[orgID][requestID]
	if p == nil {
		return projections.PinView{}, domain.Errorf(domain.ErrNotFound, "pin request %s does not exist", requestID)
	}
	return cloneView(p.view), nil
}

// ListPins implements projections.PinReader.
func (b *Backend) ListPins(_ context.Context, f projections.PinFilter) (int64, []projections.PinView, error) {
	if f.Limit < 1 || len(f.Statuses) == 0 {
		return 0, nil, fmt.Errorf("memfake: unvalidated filter %+v", f)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	var match []*pin
	for _, p := range b.pins[f.OrgID] {
		if matches(p, f) {
			match = append(match, p)
		}
	}
	slices.SortFunc(match, func(x, y *pin) int {
		if c := y.view.Created.Compare(x.view.Created); c != 0 {
			return c
		}
		return strings.Compare(y.view.RequestID, x.view.RequestID)
	})
	out := make([]projections.PinView, 0, min(len(match), f.Limit))
	for _, p := range match[:min(len(match), f.Limit)] {
		out = append(out, cloneView(p.view))
	}
	return int64(len(match)), out, nil
}

func matches(p *pin, f projections.PinFilter) bool {
	v := p.view
	if !slices.Contains(f.Statuses, v.Status) {
		return false
	}
	if len(f.CIDKeys) > 0 && !slices.ContainsFunc(f.CIDKeys, func(k []byte) bool { return bytes.Equal(k, p.cidKey) }) {
		return false
	}
	if f.Name != "" {
		ok := false
		switch f.Match {
		case projections.MatchIExact:
			ok = strings.ToLower(v.Name) == strings.ToLower(f.Name)
		case projections.MatchPartial:
			ok = strings.Contains(v.Name, f.Name)
		case projections.MatchIPartial:
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

// eventLog is the Backend seen as a domain.EventLog.
type eventLog Backend

// Load implements domain.EventLog.
func (l *eventLog) Load(_ context.Context, subject string) ([]events.Record, uint64, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []events.Record
	for _, r := range l.recs {
		if r.Subject == subject {
			out = append(out, r)
		}
	}
	return out, l.last[subject], nil
}

// Append implements domain.EventLog: all or nothing, each message guarded by its expected last sequence.
func (l *eventLog) Append(_ context.Context, msgs ...domain.Message) ([]uint64, error) {
	l.mu.Lock()
	for _, m := range msgs {
		if l.last[m.Subject] != m.Expect {
			l.mu.Unlock()
			return nil, fmt.Errorf("memfake: %s is at %d, expected %d: %w", m.Subject, l.last[m.Subject], m.Expect, domain.ErrConflict)
		}
	}
	decoded := make([]events.Event, len(msgs))
	for i, m := range msgs {
		ev, err := events.Decode(m.Envelope.Type, m.Envelope.Version, m.Envelope.Data)
		if err != nil {
			l.mu.Unlock()
			return nil, err
		}
		decoded[i] = ev
	}
	seqs := make([]uint64, len(msgs))
	for i, m := range msgs {
		l.seq++
		seqs[i] = l.seq
		l.last[m.Subject] = l.seq
		l.recs = append(l.recs, events.Record{Seq: l.seq, Subject: m.Subject, Envelope: m.Envelope, Event: decoded[i]})
	}
	l.mu.Unlock()
	(*Backend)(l).kick()
	return seqs, nil
}
