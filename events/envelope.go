// Package events is anchorage's wire contract: the events on the JetStream log, their envelope and subjects.
//
// An event type is named "<aggregate>.<past-tense verb>" and versioned. A released (type, version) pair is frozen:
// fields may be added, never renamed, retyped or given a new meaning. A breaking change is a new version, and
// decoders keep accepting every old one. testdata/golden/ holds one golden JSON file per (type, version); the golden test
// refuses edits to released files. docs/events.md catalogues them.
//
// This package imports only the standard library.
package events

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"
)

// Type names an event type, e.g. "pin.requested".
type Type string

// Event is the typed payload of an envelope.
type Event interface {
	EventType() Type
	EventVersion() int
}

// Envelope is what is stored as the body of every message on the event stream.
type Envelope struct {
	// ID is unique per event and doubles as the Nats-Msg-Id, so a retried append is deduplicated.
	ID string `json:"id"`
	// Type and Version identify the payload schema.
	Type    Type `json:"type"`
	Version int  `json:"v"`
	// At is when the command that produced the event was decided (UTC).
	At time.Time `json:"at"`
	// Actor is who caused the event: "token:<id>", "user:<id>", "system:<component>" or "admin:<os user>".
	Actor string `json:"actor"`
	// Corr correlates every event produced by one request or command (the HTTP request id, say).
	Corr string `json:"corr,omitempty"`
	// Data is the payload, decoded with Decode.
	Data json.RawMessage `json:"data"`
}

// Record is an envelope as read back from the log, with its position.
type Record struct {
	Seq     uint64
	Subject string
	Envelope
	Event Event
}

// ErrUnknownType is returned for an event type or version this build does not know.
var ErrUnknownType = errors.New("events: unknown event type")

// New wraps a payload in an envelope.
func New(id string, at time.Time, actor, corr string, e Event) (Envelope, error) {
	data, err := json.Marshal(e)
	if err != nil {
		return Envelope{}, fmt.Errorf("events: encode %s: %w", e.EventType(), err)
	}
	return Envelope{ID: id, Type: e.EventType(), Version: e.EventVersion(), At: at.UTC(), Actor: actor, Corr: corr, Data: data}, nil
}

// Marshal encodes an envelope as stored on the stream.
func Marshal(env Envelope) ([]byte, error) { return json.Marshal(env) }

// Unmarshal decodes a stored message body into its envelope and typed payload.
func Unmarshal(body []byte) (Envelope, Event, error) {
	if env, ev, ok := fastUnmarshal(body, false); ok {
		return env, ev, nil
	}
	return slowUnmarshal(body)
}

// UnmarshalTransient is Unmarshal for records that are used and dropped (replays, exports, scans): the strings
// of the result share one copy of body, which saves an allocation per field but keeps the whole body alive as
// long as any of them is. Records kept for long (caches, indexes) should come from Unmarshal.
func UnmarshalTransient(body []byte) (Envelope, Event, error) {
	if env, ev, ok := fastUnmarshal(body, true); ok {
		return env, ev, nil
	}
	return slowUnmarshal(body)
}

// slowUnmarshal is Unmarshal with encoding/json alone.
func slowUnmarshal(body []byte) (Envelope, Event, error) {
	var env Envelope
	if err := json.Unmarshal(body, &env); err != nil {
		return Envelope{}, nil, fmt.Errorf("events: decode envelope: %w", err)
	}
	ev, err := slowDecode(env.Type, env.Version, env.Data)
	return env, ev, err
}

// Decode decodes a payload of a known type and version.
func Decode(t Type, v int, data []byte) (Event, error) {
	if ev, ok := fastDecode(t, v, data); ok {
		return ev, nil
	}
	return slowDecode(t, v, data)
}

// slowDecode is Decode with encoding/json alone.
func slowDecode(t Type, v int, data []byte) (Event, error) {
	dec, ok := registry[key{t, v}]
	if !ok {
		return nil, fmt.Errorf("%w: %s v%d", ErrUnknownType, t, v)
	}
	ev, err := dec(data)
	if err != nil {
		return nil, fmt.Errorf("events: decode %s v%d: %w", t, v, err)
	}
	return ev, nil
}

type key struct {
	t Type
	v int
}

var registry = map[key]func([]byte) (Event, error){}

// register records a payload type; called from init in the files defining events.
func register[T Event]() {
	var zero T
	k := key{zero.EventType(), zero.EventVersion()}
	if _, dup := registry[k]; dup {
		panic(fmt.Sprintf("events: %s v%d registered twice", k.t, k.v))
	}
	registry[k] = func(data []byte) (Event, error) {
		var v T
		if err := json.Unmarshal(data, &v); err != nil {
			return nil, err
		}
		return v, nil
	}
}

// Registered lists every known (type, version) as "type.vN", sorted, for the catalogue and golden tests.
func Registered() []string {
	out := make([]string, 0, len(registry))
	for k := range registry {
		out = append(out, fmt.Sprintf("%s.v%d", k.t, k.v))
	}
	slices.Sort(out)
	return out
}
