package domain

import (
	"context"
	"time"

	"github.com/anchorage-pin/anchorage/events"
)

// EventLog is the write side's view of the event stream.
type EventLog interface {
	// Load returns every event on one aggregate subject, in order, and the subject's last sequence (0 when the
	// subject has no events).
	Load(ctx context.Context, subject string) ([]events.Record, uint64, error)
	// Append stores the messages atomically, in order, each guarded by its expected last subject sequence. It
	// returns the stream sequence of each message once they are durable. An expectation that no longer holds
	// makes it fail with an error wrapping ErrConflict, and nothing is stored.
	Append(ctx context.Context, msgs ...Message) ([]uint64, error)
}

// LastLoader is an EventLog that can read a subject's last event alone. Commands that are most often no-ops given
// that event (a node registering again with what it registered last) check it before loading the whole subject.
type LastLoader interface {
	LoadLast(ctx context.Context, subject string) (rec events.Record, ok bool, err error)
}

// OrderedAppender is an EventLog that can build messages and send them under a per-key lock, so that messages
// built under the same key are stored in the order their builds ran. Pin creation times rely on it: read from
// the per-org clock inside build, they grow with stream order, so the projector keeps them exactly as the 202
// reported them. Logs without it (test fakes) get build then Append.
type OrderedAppender interface {
	AppendOrdered(ctx context.Context, key string, build func() ([]Message, error)) ([]uint64, error)
}

// Message is one event to append.
type Message struct {
	Subject string
	// Expect is the sequence of the last message on Subject (or on ExpectSubject, when set) the decision was
	// based on; 0 means "no such message yet".
	Expect uint64
	// ExpectSubject, when set, is the subject (wildcards allowed) Expect is checked against instead of Subject:
	// a placement is checked against every node's placement of the pin, place.*.<org>.<request>.
	ExpectSubject string
	// NoExpect appends without an expected-sequence check (later messages of an atomic batch that touch the
	// same aggregate as an earlier one, whose check covers them).
	NoExpect bool
	Envelope events.Envelope
}

// Usage reports an org's current pin count and quota, for the soft quota check on pin requests.
type Usage interface {
	PinUsage(ctx context.Context, org string) (pins, maxPins int64, err error)
}

// Env is what a command needs besides its arguments.
type Env struct {
	Now   func() time.Time
	NewID func() string
	// Created hands out pin creation times for an org (see CreatedClock).
	Created func(org string) time.Time
}

// Meta says who issues a command and which request it belongs to; it lands in every event's envelope.
type Meta struct {
	Actor string
	Corr  string
	// IdempotencyKey, when set on a pin request, makes retries of the same request return the original pin
	// instead of creating another (the HTTP Idempotency-Key header).
	IdempotencyKey string
}
