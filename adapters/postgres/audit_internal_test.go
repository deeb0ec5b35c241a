package postgres

import (
	"strings"
	"testing"

	"github.com/google/uuid"
)

// subjectIDsSplit is the reference: subjectIDs as first written, with strings.Split.
func subjectIDsSplit(subject string) (org, request uuid.UUID) {
	parts := strings.Split(subject, ".")
	var o, r string
	switch {
	case parts[0] == "orgs" && len(parts) == 2, parts[0] == "tokens" && len(parts) == 3:
		o = parts[1]
	case parts[0] == "pins" && len(parts) == 3:
		o, r = parts[1], parts[2]
	case parts[0] == "place" && len(parts) == 4:
		o, r = parts[2], parts[3]
	}
	if id, err := uuid.Parse(o); err == nil {
		org = id
	}
	if id, err := uuid.Parse(r); err == nil && org != zeroUUID {
		request = id
	}
	return org, request
}

func TestSubjectIDs(t *testing.T) {
	t.Parallel()
	o, r := uuid.NewString(), uuid.NewString()
	for _, s := range []string{
		"", ".", "orgs", "orgs." + o, "orgs." + o + ".x", "tokens." + o, "tokens." + o + "." + r, "tokens." + o + "." + r + ".x",
		"pins." + o, "pins." + o + "." + r, "pins." + o + "." + r + ".x", "pins.x." + r, "pins." + o + ".x",
		"place.n." + o + "." + r, "place." + o + "." + r, "place.n." + o + "." + r + ".x", "place.n.x." + r,
		"nodes.n1", "sched.term", "users." + o,
	} {
		go1, gr := subjectIDs(s)
		wo, wr := subjectIDsSplit(s)
		if go1 != wo || gr != wr {
			t.Errorf("subjectIDs(%q) = %v, %v; want %v, %v", s, go1, gr, wo, wr)
		}
	}
}
