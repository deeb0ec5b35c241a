package projections

import (
	"context"
	"fmt"
	"time"
)

// Pin statuses, as stored (smallint) and as the Pinning Services API names them.
type Status int16

const (
	StatusQueued Status = iota
	StatusPinning
	StatusPinned
	StatusFailed
)

// AllStatuses lists every status.
var AllStatuses = []Status{StatusQueued, StatusPinning, StatusPinned, StatusFailed}

var statusNames = [...]string{"queued", "pinning", "pinned", "failed"}

func (s Status) String() string {
	if s < 0 || int(s) >= len(statusNames) {
		return fmt.Sprintf("status(%d)", int16(s))
	}
	return statusNames[s]
}

// ParseStatus parses an API status name.
func ParseStatus(name string) (Status, bool) {
	for i, n := range statusNames {
		if n == name {
			return Status(i), true
		}
	}
	return 0, false
}

// PinView is one pin object as the API returns it (the spec's PinStatus).
type PinView struct {
	RequestID string
	Status    Status
	// Created has millisecond precision and is unique and strictly increasing within the org.
	Created time.Time
	CID     string
	Name    string
	Origins []string
	Meta    map[string]string
	Info    map[string]string
	// Delegates are the placed nodes' multiaddrs; empty until the pin is placed.
	Delegates []string
}

// Name match strategies (the spec's TextMatchingStrategy).
type Match string

const (
	MatchExact    Match = "exact"
	MatchIExact   Match = "iexact"
	MatchPartial  Match = "partial"
	MatchIPartial Match = "ipartial"
)

// PinFilter is a validated GET /pins query. All filters combine with AND.
type PinFilter struct {
	OrgID string
	// CIDKeys are multihashes (any of them matches); empty: no CID filter.
	CIDKeys [][]byte
	// Name filters pin.name with Match when non-empty.
	Name  string
	Match Match
	// Statuses: any of them (never empty once validated).
	Statuses []Status
	// Before and After are exclusive bounds on created; zero: unbounded.
	Before, After time.Time
	// Meta: every key must be present with an equal value.
	Meta  map[string]string
	Limit int
}

// PinReader answers the Pinning Services API's reads from the read model, scoped to one org.
type PinReader interface {
	// ListPins returns the matching pins newest first (at most f.Limit) and the count of all matches.
	ListPins(ctx context.Context, f PinFilter) (count int64, pins []PinView, err error)
	// GetPin returns one pin; an unknown id (or another org's) is domain.ErrNotFound.
	GetPin(ctx context.Context, orgID, requestID string) (PinView, error)
}
