package events_test

import (
	"slices"
	"strings"
	"testing"

	"github.com/anchorage-pin/anchorage/events"
)

// matchSubject is NATS subject matching: '*' matches one token, a trailing '>' one or more.
func matchSubject(filter, subject string) bool {
	f, s := strings.Split(filter, "."), strings.Split(subject, ".")
	for i, ft := range f {
		if ft == ">" {
			return i == len(f)-1 && len(s) > i
		}
		if i >= len(s) || (ft != "*" && ft != s[i]) {
			return false
		}
	}
	return len(f) == len(s)
}

func TestMatchSubject(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		filter, subject string
		want            bool
	}{
		{"pins.>", "pins.a.b", true},
		{"pins.>", "pins", false},
		{"pins.*", "pins.a", true},
		{"pins.*", "pins.a.b", false},
		{"orgs.>", "pins.a", false},
		{"a.b", "a.b", true},
		{"a.b", "a.b.c", false},
	} {
		if got := matchSubject(tc.filter, tc.subject); got != tc.want {
			t.Errorf("match(%q, %q) = %v", tc.filter, tc.subject, got)
		}
	}
}

// SubjectMatches is matchSubject, on the filters anchorage uses and on odd ones.
func TestSubjectMatchesAsNATS(t *testing.T) {
	t.Parallel()
	filters := []string{">", "pins.>", "pins.*", "pins.*.>", "place.n1.>", "place.*.o.r", "a.b", "*", "*.>", "a.>.b", "pins.>x", "pins>", ""}
	subjects := []string{"pins", "pins.", "pins.a", "pins.a.b", "pinsx.a", "place.n1.o.r", "place.n2.o.r", "place.n1", "a.b", "a.b.c", "a", "", ".", "a..b"}
	for _, f := range filters {
		for _, s := range subjects {
			if !validSubject(s) {
				continue
			}
			if got, want := events.SubjectMatches(f, s), matchSubject(f, s); got != want {
				t.Errorf("SubjectMatches(%q, %q) = %v, NATS matching says %v", f, s, got, want)
			}
		}
	}
}

// validSubject: a subject a message can have (no empty token).
func validSubject(s string) bool {
	return s != "" && !slices.Contains(strings.Split(s, "."), "")
}

func FuzzSubjectMatches(f *testing.F) {
	f.Add("pins.>", "pins.a.b")
	f.Add("place.*.o.>", "place.n.o.r")
	f.Fuzz(func(t *testing.T, filter, subject string) {
		if !validSubject(subject) {
			return
		}
		if got, want := events.SubjectMatches(filter, subject), matchSubject(filter, subject); got != want {
			t.Errorf("SubjectMatches(%q, %q) = %v, NATS matching says %v", filter, subject, got, want)
		}
	})
}

func TestSubjectBuilders(t *testing.T) {
	t.Parallel()
	const (
		org  = "e7031246-2fa0-557c-adce-49cf9034dd55"
		req  = "019cebcb-f375-76f0-8478-82e36b0d549b"
		tok  = "019cada2-285a-7128-a24b-e40ad23f0824"
		node = "ams-1"
	)
	for _, tc := range []struct {
		name, got, want, filter string
	}{
		{"org", events.OrgSubject(org), "orgs." + org, events.AllOrgs},
		{"pin", events.PinSubject(org, req), "pins." + org + "." + req, events.AllPins},
		{"token", events.TokenSubject(org, tok), "tokens." + org + "." + tok, events.AllTokens},
		{"place", events.PlaceSubject(node, org, req), "place." + node + "." + org + "." + req, events.AllPlace},
		{"node", events.NodeSubject(node), "nodes." + node, events.AllNodes},
	} {
		if tc.got != tc.want {
			t.Errorf("%s subject = %q, want %q", tc.name, tc.got, tc.want)
		}
		if !matchSubject(tc.filter, tc.got) {
			t.Errorf("%s subject %q is not matched by its filter %q", tc.name, tc.got, tc.filter)
		}
		n := 0
		for _, s := range events.StreamSubjects {
			if matchSubject(s, tc.got) {
				n++
			}
		}
		if n != 1 {
			t.Errorf("%s subject %q is matched by %d stream subjects, want exactly 1", tc.name, tc.got, n)
		}
	}
	// Aggregates of different kinds or instances never share a subject.
	if events.PinSubject(org, req) == events.TokenSubject(org, req) || events.PinSubject(org, req) == events.PinSubject(org, tok) {
		t.Error("distinct aggregates share a subject")
	}
}

func TestStreamSubjects(t *testing.T) {
	t.Parallel()
	if events.StreamName != "ANCHORAGE" {
		t.Errorf("StreamName = %q", events.StreamName)
	}
	seen := map[string]bool{}
	for _, s := range events.StreamSubjects {
		if !strings.HasSuffix(s, ".>") || strings.Count(s, ".") != 1 {
			t.Errorf("stream subject %q is not \"<kind>.>\"", s)
		}
		if seen[s] {
			t.Errorf("stream subject %q listed twice", s)
		}
		seen[s] = true
	}
	for _, f := range []string{events.AllOrgs, events.AllPins, events.AllTokens, events.AllPlace, events.AllNodes, events.AllSched} {
		if !seen[f] {
			t.Errorf("consumer filter %q is not a stream subject", f)
		}
	}
}

func TestValidToken(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		in   string
		ok   bool
	}{
		{"uuid", "e7031246-2fa0-557c-adce-49cf9034dd55", true},
		{"node id", "ams-1_b", true},
		{"single char", "a", true},
		{"printable punctuation", "a:b/c@d=e~!#$%^&()[]{}|", true},
		{"exactly 128 bytes", strings.Repeat("a", 128), true},
		{"129 bytes", strings.Repeat("a", 129), false},
		{"empty", "", false},
		{"dot", "a.b", false},
		{"leading dot", ".a", false},
		{"trailing dot", "a.", false},
		{"star", "*", false},
		{"star inside", "a*b", false},
		{"full wildcard", ">", false},
		{"gt inside", "a>b", false},
		{"space", "a b", false},
		{"leading space", " a", false},
		{"tab", "a\tb", false},
		{"newline", "a\nb", false},
		{"carriage return", "a\r", false},
		{"NUL", "a\x00b", false},
		{"DEL", "a\x7fb", false},
		{"non-ASCII letter", "café", false},
		{"non-ASCII only", "日本", false},
		{"non-breaking space", "a\u00a0b", false},
		{"invalid UTF-8", "a\xffb", false},
	} {
		err := events.ValidToken(tc.in)
		if (err == nil) != tc.ok {
			t.Errorf("%s: ValidToken(%q) = %v, want ok=%v", tc.name, tc.in, err, tc.ok)
		}
		if err != nil && !strings.HasPrefix(err.Error(), "events: ") {
			t.Errorf("%s: error %q lacks the package prefix", tc.name, err)
		}
	}
	if err := events.ValidToken(strings.Repeat("a", 129)); err == nil || !strings.Contains(err.Error(), "128") {
		t.Errorf("the length error names the limit: %v", err)
	}
}
