package natsjs

import (
	"slices"
	"testing"

	"github.com/anchorage-pin/anchorage/events"
)

func TestSubjectMatches(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		filter, subject string
		want            bool
	}{
		{"pins.>", "pins.o.r", true},
		{"pins.>", "pins.o", true},
		{"pins.>", "pins", false},
		{"pins.>", "place.n.o.r", false},
		{"pins.>", "pinsx.o", false},
		{"place.*.o.r", "place.n1.o.r", true},
		{"place.*.o.r", "place.n1.o.s", false},
		{"place.*.o.r", "place.n1.o.r.x", false},
		{"place.n1.>", "place.n1.o.r", true},
		{"place.n1.>", "place.n2.o.r", false},
		{"sched.term", "sched.term", true},
		{"sched.term", "sched.terms", false},
		{"sched.term", "sched", false},
		{">", "a.b", true},
		{"*", "a", true},
		{"*", "a.b", false},
	} {
		if got := events.SubjectMatches(tc.filter, tc.subject); got != tc.want {
			t.Errorf("subjectMatches(%q, %q) = %v, want %v", tc.filter, tc.subject, got, tc.want)
		}
	}
}

func TestConsumerFilters(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in            []string
		server, local []string
	}{
		{nil, nil, nil},
		{[]string{"pins.>"}, []string{"pins.>"}, nil},
		{[]string{"pins.>", "place.>"}, nil, []string{"pins.>", "place.>"}},
		{[]string{"place.n1.>", "sched.>"}, []string{"place.n1.>", "sched.>"}, nil},
		{[]string{"pins.>", "sched.term"}, []string{"pins.>", "sched.term"}, nil},
		{[]string{"pins.>", ">"}, []string{"pins.>", ">"}, nil},
	} {
		server, local := consumerFilters(tc.in)
		if !slices.Equal(server, tc.server) || !slices.Equal(local, tc.local) {
			t.Errorf("consumerFilters(%q) = %q, %q; want %q, %q", tc.in, server, local, tc.server, tc.local)
		}
	}
}
