package events

import (
	"fmt"
	"strings"
)

// StreamName is the one JetStream stream holding every event.
const StreamName = "ANCHORAGE"

// StreamSubjects are the subject spaces of the event stream, one per aggregate kind.
var StreamSubjects = []string{"orgs.>", "pins.>", "tokens.>", "nodes.>", "place.>", "users.>", "sched.>"}

// Subject builders: one subject per aggregate instance. IDs are validated to be single subject tokens.

func OrgSubject(org string) string            { return "orgs." + org }
func PinSubject(org, requestID string) string { return "pins." + org + "." + requestID }
func TokenSubject(org, tokenID string) string { return "tokens." + org + "." + tokenID }

// PlaceSubject holds one pin request's placement on one node: the scheduler's placed/unplaced decisions and the
// node worker's status observations.
func PlaceSubject(node, org, requestID string) string {
	return "place." + node + "." + org + "." + requestID
}

// PlaceAnyNode matches a pin request's placement subjects on every node (for expected-sequence checks).
func PlaceAnyNode(org, requestID string) string { return "place.*." + org + "." + requestID }

// NodePlacements matches every placement subject of one node (its worker's filter).
func NodePlacements(node string) string { return "place." + node + ".>" }

// NodeSubject is a node's aggregate.
func NodeSubject(node string) string { return "nodes." + node }

// Scheduler subjects.
const (
	SchedTerm        = "sched.term"
	SchedMaintenance = "sched.maintenance"
)

// Filters for consumers.
const (
	AllOrgs   = "orgs.>"
	AllPins   = "pins.>"
	AllTokens = "tokens.>"
	AllPlace  = "place.>"
	AllNodes  = "nodes.>"
	AllSched  = "sched.>"
)

// ValidToken reports whether s can be used as one subject token: non-empty, printable ASCII, no '.', '*', '>'
// or whitespace.
func ValidToken(s string) error {
	if s == "" {
		return fmt.Errorf("events: empty subject token")
	}
	if len(s) > 128 {
		return fmt.Errorf("events: subject token longer than 128 bytes")
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte(".*>", c) >= 0 {
			return fmt.Errorf("events: %q is not a valid subject token", s)
		}
	}
	return nil
}

// MatchesAny reports whether subject matches any of the subject filters ('*' one token, '>' the rest), as
// JetStream matches them.
func MatchesAny(filters []string, subject string) bool {
	for _, f := range filters {
		if SubjectMatches(f, subject) {
			return true
		}
	}
	return false
}

// SubjectMatches reports whether subject matches the subject filter ('*' one token, '>' the rest).
func SubjectMatches(filter, subject string) bool {
	// A filter with no wildcard before its trailing '>' (a whole subject space, "pins.>"; one node's placements)
	// is a prefix: replays test every message against one, so no tokenizing.
	if p, ok := strings.CutSuffix(filter, ">"); ok && (p == "" || p[len(p)-1] == '.') && !strings.Contains(p, "*") {
		return len(subject) > len(p) && strings.HasPrefix(subject, p)
	}
	for {
		ft, frest, fmore := strings.Cut(filter, ".")
		if ft == ">" && !fmore {
			return subject != ""
		}
		st, srest, smore := strings.Cut(subject, ".")
		if ft != "*" && ft != st {
			return false
		}
		if !fmore || !smore {
			return fmore == smore
		}
		filter, subject = frest, srest
	}
}
