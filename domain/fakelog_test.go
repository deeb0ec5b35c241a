package domain_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/anchorage-pin/anchorage/domain"
	"github.com/anchorage-pin/anchorage/events"
)

// fakeLog is an in-memory domain.EventLog with the semantics of the JetStream one: one global sequence, a
// per-subject expected-last-sequence check on every message, and all-or-nothing multi-message appends. Every
// stored envelope goes through events.Marshal/Unmarshal, so what Load returns is what the wire carries.
type fakeLog struct {
	mu       sync.Mutex
	seq      uint64
	subjects map[string][]events.Record
	ids      map[string]bool

	// Counters and the batches stored through Append.
	loads, appendCalls int
	batches            [][]domain.Message

	// beforeAppend, if set, runs at the start of every Append, outside the lock: a concurrent writer.
	beforeAppend func(l *fakeLog, msgs []domain.Message)
	// loadErr and appendErr, if set, fail every Load / Append.
	loadErr, appendErr error
}

func newFakeLog() *fakeLog {
	return &fakeLog{subjects: map[string][]events.Record{}, ids: map[string]bool{}}
}

var _ domain.EventLog = (*fakeLog)(nil)

func (l *fakeLog) Load(ctx context.Context, subject string) ([]events.Record, uint64, error) {
	if err := ctx.Err(); err != nil {
		return nil, 0, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.loads++
	if l.loadErr != nil {
		return nil, 0, l.loadErr
	}
	recs := append([]events.Record(nil), l.subjects[subject]...)
	var last uint64
	if len(recs) > 0 {
		last = recs[len(recs)-1].Seq
	}
	return recs, last, nil
}

func (l *fakeLog) Append(ctx context.Context, msgs ...domain.Message) ([]uint64, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	l.mu.Lock()
	l.appendCalls++
	hook := l.beforeAppend
	l.mu.Unlock()
	if hook != nil {
		hook(l, msgs)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.appendErr != nil {
		return nil, l.appendErr
	}
	seqs, err := l.store(msgs)
	if err == nil {
		l.batches = append(l.batches, msgs)
	}
	return seqs, err
}

// store checks every expectation first and stores all messages or none. l.mu is held.
func (l *fakeLog) store(msgs []domain.Message) ([]uint64, error) {
	if len(msgs) == 0 {
		return nil, nil
	}
	last := map[string]uint64{}
	lastOf := func(s string) uint64 {
		if v, ok := last[s]; ok {
			return v
		}
		if recs := l.subjects[s]; len(recs) > 0 {
			return recs[len(recs)-1].Seq
		}
		return 0
	}
	recs := make([]events.Record, len(msgs))
	seqs := make([]uint64, len(msgs))
	batchIDs := map[string]bool{}
	for i, m := range msgs {
		kind, rest, ok := strings.Cut(m.Subject, ".")
		if !ok || kind == "" {
			return nil, fmt.Errorf("fake log: subject %q has no aggregate kind", m.Subject)
		}
		for _, tok := range strings.Split(rest, ".") {
			if err := events.ValidToken(tok); err != nil {
				return nil, fmt.Errorf("fake log: subject %q: %w", m.Subject, err)
			}
		}
		if got := lastOf(m.Subject); got != m.Expect {
			return nil, fmt.Errorf("fake log: %s: expected last sequence %d, is %d: %w", m.Subject, m.Expect, got, domain.ErrConflict)
		}
		if m.Envelope.ID == "" || l.ids[m.Envelope.ID] || batchIDs[m.Envelope.ID] {
			// JetStream would silently deduplicate it: a command must never reuse an envelope id.
			return nil, fmt.Errorf("fake log: envelope id %q reused", m.Envelope.ID)
		}
		batchIDs[m.Envelope.ID] = true
		body, err := events.Marshal(m.Envelope)
		if err != nil {
			return nil, err
		}
		env, ev, err := events.Unmarshal(body)
		if err != nil {
			return nil, fmt.Errorf("fake log: %w", err)
		}
		seqs[i] = l.seq + uint64(i) + 1
		last[m.Subject] = seqs[i]
		recs[i] = events.Record{Seq: seqs[i], Subject: m.Subject, Envelope: env, Event: ev}
	}
	for i, m := range msgs {
		l.subjects[m.Subject] = append(l.subjects[m.Subject], recs[i])
		l.ids[m.Envelope.ID] = true
	}
	l.seq += uint64(len(msgs))
	return seqs, nil
}

// seed stores events on subject as another writer would, bypassing the counters.
func (l *fakeLog) seed(t testing.TB, subject string, evs ...events.Event) {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, e := range evs {
		env, err := events.New(fmt.Sprintf("seed-%d", l.seq+1), time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC), "system:seed", "", e)
		if err != nil {
			t.Fatal(err)
		}
		recs := l.subjects[subject]
		var last uint64
		if len(recs) > 0 {
			last = recs[len(recs)-1].Seq
		}
		if _, err := l.store([]domain.Message{{Subject: subject, Expect: last, Envelope: env}}); err != nil {
			t.Fatal(err)
		}
	}
}

// events returns the payloads stored on subject.
func (l *fakeLog) events(subject string) []events.Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []events.Event
	for _, r := range l.subjects[subject] {
		out = append(out, r.Event)
	}
	return out
}

// interfere makes the next n Appends lose a race: just before each, another writer appends conc(i) to the
// subject of the first message that expects a non-empty subject (else the first message).
func (l *fakeLog) interfere(t testing.TB, n int, conc func(i int) events.Event) {
	var i int
	l.beforeAppend = func(l *fakeLog, msgs []domain.Message) {
		if i >= n {
			return
		}
		subject := msgs[0].Subject
		for _, m := range msgs {
			if m.Expect > 0 {
				subject = m.Subject
				break
			}
		}
		l.seed(t, subject, conc(i))
		i++
	}
}

func TestFakeLog(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	l := newFakeLog()
	env := func(id string, e events.Event) events.Envelope {
		en, err := events.New(id, time.Now(), "system:test", "", e)
		if err != nil {
			t.Fatal(err)
		}
		return en
	}
	a, b := events.PinSubject(orgID, reqID), events.PinSubject(orgID, newReq)

	seqs, err := l.Append(ctx, domain.Message{Subject: a, Expect: 0, Envelope: env("1", requested)})
	if err != nil || len(seqs) != 1 || seqs[0] != 1 {
		t.Fatalf("first append: %v %v", seqs, err)
	}
	if _, err := l.Append(ctx, domain.Message{Subject: a, Expect: 0, Envelope: env("2", removed)}); !errors.Is(err, domain.ErrConflict) {
		t.Fatalf("stale expectation: %v", err)
	}
	// A batch whose second expectation fails stores nothing.
	_, err = l.Append(ctx,
		domain.Message{Subject: a, Expect: 1, Envelope: env("3", replaced)},
		domain.Message{Subject: b, Expect: 5, Envelope: env("4", requested)})
	if !errors.Is(err, domain.ErrConflict) || len(l.events(a)) != 1 || len(l.events(b)) != 0 {
		t.Fatalf("partial batch: %v, %d/%d events", err, len(l.events(a)), len(l.events(b)))
	}
	seqs, err = l.Append(ctx,
		domain.Message{Subject: a, Expect: 1, Envelope: env("5", replaced)},
		domain.Message{Subject: b, Expect: 0, Envelope: env("6", requested)})
	if err != nil || fmt.Sprint(seqs) != "[2 3]" {
		t.Fatalf("batch: %v %v", seqs, err)
	}
	if _, err := l.Append(ctx, domain.Message{Subject: b, Expect: 3, Envelope: env("6", removed)}); err == nil {
		t.Fatal("a reused envelope id was accepted")
	}
	if _, err := l.Append(ctx, domain.Message{Subject: "pins." + orgID + ".a.b", Expect: 0, Envelope: env("7", removed)}); err != nil {
		t.Fatal("pins.<org>.a.b is a valid (if unexpected) subject:", err)
	}
	if _, err := l.Append(ctx, domain.Message{Subject: "pins." + orgID + ".*", Expect: 0, Envelope: env("8", removed)}); err == nil {
		t.Fatal("a wildcard subject was accepted")
	}
	recs, last, err := l.Load(ctx, a)
	if err != nil || last != 2 || len(recs) != 2 || recs[1].Event != events.Event(replaced) || recs[1].Subject != a {
		t.Fatalf("load: %+v %d %v", recs, last, err)
	}
}
