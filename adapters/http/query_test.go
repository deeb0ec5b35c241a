package httpapi_test

import (
	"errors"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	mh "github.com/multiformats/go-multihash"

	httpapi "github.com/anchorage-pin/anchorage/adapters/http"
	"github.com/anchorage-pin/anchorage/domain"
	"github.com/anchorage-pin/anchorage/projections"
)

var (
	q1  = "QmbWqxBEKC3P8tqsKc98xmWNzrzDtRLMiMPL8wBuTGsMnR"
	b1  = "bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi" // q1 as CIDv1
	ten = tenCIDs()
)

// tenCIDs returns ten distinct identity CIDs (bafkqa…), deterministic.
func tenCIDs() []string {
	var out []string
	for i := range 10 {
		h, err := mh.Sum([]byte{byte('a' + i)}, mh.IDENTITY, -1)
		if err != nil {
			panic(err)
		}
		out = append(out, cid.NewCidV1(cid.Raw, h).String())
	}
	return out
}

func keyOf(t *testing.T, c string) []byte {
	t.Helper()
	pc, err := domain.ParseCID(c)
	if err != nil {
		t.Fatalf("test CID %s: %v", c, err)
	}
	return pc.Key
}

var (
	all    = projections.AllStatuses
	pinned = []projections.Status{projections.StatusPinned}
	ts     = time.Date(2026, 1, 2, 3, 4, 5, 123_000_000, time.UTC)
)

func TestParseListQuery(t *testing.T) {
	for _, c := range ten {
		keyOf(t, c)
	}
	type check func(t *testing.T, f projections.PinFilter)
	statuses := func(want ...projections.Status) check {
		return func(t *testing.T, f projections.PinFilter) {
			if !slices.Equal(f.Statuses, want) {
				t.Errorf("statuses %v, want %v", f.Statuses, want)
			}
		}
	}
	cids := func(n int) check {
		return func(t *testing.T, f projections.PinFilter) {
			if len(f.CIDKeys) != n {
				t.Errorf("%d CID keys, want %d", len(f.CIDKeys), n)
			}
		}
	}
	before := func(want time.Time) check {
		return func(t *testing.T, f projections.PinFilter) {
			if !f.Before.Equal(want) || !f.After.IsZero() {
				t.Errorf("before %v after %v, want before %v", f.Before, f.After, want)
			}
		}
	}
	after := func(want time.Time) check {
		return func(t *testing.T, f projections.PinFilter) {
			if !f.After.Equal(want) || !f.Before.IsZero() {
				t.Errorf("after %v before %v, want after %v", f.After, f.Before, want)
			}
		}
	}
	limit := func(n int) check {
		return func(t *testing.T, f projections.PinFilter) {
			if f.Limit != n {
				t.Errorf("limit %d, want %d", f.Limit, n)
			}
		}
	}
	match := func(m projections.Match, name string) check {
		return func(t *testing.T, f projections.PinFilter) {
			if f.Match != m || f.Name != name {
				t.Errorf("match %q name %q, want %q %q", f.Match, f.Name, m, name)
			}
		}
	}
	meta := func(want map[string]string) check {
		return func(t *testing.T, f projections.PinFilter) {
			if len(f.Meta) != len(want) {
				t.Errorf("meta %v, want %v", f.Meta, want)
			}
			for k, v := range want {
				if f.Meta[k] != v {
					t.Errorf("meta %v, want %v", f.Meta, want)
				}
			}
		}
	}
	cases := []struct {
		name  string
		raw   string
		err   string // substring of the details; "" = valid
		check []check
	}{
		// §9.6: no parameters.
		{"defaults", "", "", []check{statuses(projections.StatusPinned), limit(10), match(projections.MatchExact, ""), cids(0), meta(nil)}},
		{"unknown params ignored", "foo=bar&Status=queued&page=2", "", []check{statuses(pinned...)}},
		// §9.7 and §10.1.
		{"all four comma", "status=queued,pinning,pinned,failed", "", []check{statuses(all...)}},
		{"all four encoded comma (Kubo)", "status=queued%2Cpinning%2Cpinned%2Cfailed", "", []check{statuses(all...)}},
		{"repeated", "status=failed&status=queued", "", []check{statuses(projections.StatusQueued, projections.StatusFailed)}},
		{"mixed forms", "status=failed,pinning&status=queued", "", []check{statuses(projections.StatusQueued, projections.StatusPinning, projections.StatusFailed)}},
		{"duplicates", "status=pinned,pinned&status=pinned", "", []check{statuses(pinned...)}},
		{"any", "status=any", "", []check{statuses(all...)}},
		{"any with others", "status=any,failed", "", []check{statuses(all...)}},
		{"spaces and empty entries", "status=+queued+,,failed,", "", []check{statuses(projections.StatusQueued, projections.StatusFailed)}},
		{"empty status is absent", "status=", "", []check{statuses(pinned...)}},
		{"unknown status", "status=done", "status \"done\" is unknown", nil},
		{"one unknown among valid", "status=pinned,deleted", "deleted", nil},
		{"cid given: all statuses", "cid=" + b1, "", []check{statuses(all...)}},
		{"name given: all statuses", "name=x", "", []check{statuses(all...)}},
		{"cid with explicit status", "cid=" + b1 + "&status=pinned", "", []check{statuses(pinned...)}},
		{"meta does not widen", `meta={"a":"b"}`, "", []check{statuses(pinned...)}},
		{"empty name is absent", "name=", "", []check{statuses(pinned...), match(projections.MatchExact, "")}},
		// §9.8.
		{"1 cid", "cid=" + q1, "", []check{cids(1)}},
		{"10 cids comma", "cid=" + strings.Join(ten, ","), "", []check{cids(10)}},
		{"10 cids repeated", "cid=" + strings.Join(ten, "&cid="), "", []check{cids(10)}},
		{"10 cids mixed", "cid=" + strings.Join(ten[:4], ",") + "&cid=" + strings.Join(ten[4:], "&cid="), "", []check{cids(10)}},
		{"11 cids comma", "cid=" + strings.Join(ten, ",") + "," + q1, "11 CIDs", nil},
		{"11 cids repeated", "cid=" + strings.Join(ten, "&cid=") + "&cid=" + q1, "at most 10", nil},
		{"v0 and v1 of one hash are one key", "cid=" + q1 + "," + b1, "", []check{cids(1)}},
		{"invalid cid", "cid=" + q1 + ",nope", "not a valid CID", nil},
		{"trailing comma", "cid=" + q1 + ",", "", []check{cids(1)}},
		// §9.9.
		{"match default exact", "name=Foo", "", []check{match(projections.MatchExact, "Foo")}},
		{"match iexact", "name=Foo&match=iexact", "", []check{match(projections.MatchIExact, "Foo")}},
		{"match partial", "name=Foo&match=partial", "", []check{match(projections.MatchPartial, "Foo")}},
		{"match ipartial", "name=Foo&match=ipartial", "", []check{match(projections.MatchIPartial, "Foo")}},
		{"match upper case tolerated", "name=Foo&match=IPARTIAL", "", []check{match(projections.MatchIPartial, "Foo")}},
		{"match invalid", "name=Foo&match=fuzzy", "text matching strategy", nil},
		{"match invalid without name", "match=regex", "text matching strategy", nil},
		{"match without name is harmless", "match=partial", "", []check{statuses(pinned...)}},
		{"name 255", "name=" + strings.Repeat("n", 255), "", nil},
		{"name 256", "name=" + strings.Repeat("n", 256), "255", nil},
		{"name twice differently", "name=a&name=b", "given 2 times", nil},
		{"name twice the same", "name=a&name=a", "", []check{match(projections.MatchExact, "a")}},
		{"name with NUL", "name=a%00b", "NUL", nil},
		// §9.10.
		{"meta", "meta=" + url.QueryEscape(`{"app_id":"99986338","v":"2"}`), "", []check{meta(map[string]string{"app_id": "99986338", "v": "2"})}},
		{"meta empty object", "meta=%7B%7D", "", []check{meta(nil)}},
		{"meta number", "meta=" + url.QueryEscape(`{"a":1}`), `key "a" must be a string`, nil},
		{"meta array", "meta=" + url.QueryEscape(`["a"]`), "JSON object", nil},
		{"meta not json", "meta=a%3Db", "not valid JSON", nil},
		{"meta Go map syntax (boxo's bug)", "meta=map%5Ba%3Ab%5D", "not valid JSON", nil},
		{"meta null", "meta=null", "not null", nil},
		{"meta 65 keys", "meta=" + url.QueryEscape("{"+metaKeys(65)+"}"), "64", nil},
		{"meta long value", "meta=" + url.QueryEscape(`{"k":"`+strings.Repeat("v", 1025)+`"}`), "1024", nil},
		// §9.11 and §4.5 leniency: any RFC 3339 form; bounds are exclusive (the reader compares strictly).
		{"before ms Z", "before=2026-01-02T03:04:05.123Z", "", []check{before(ts)}},
		{"before encoded", "before=2026-01-02T03%3A04%3A05.123Z", "", []check{before(ts)}},
		{"before no fraction", "before=2026-01-02T03:04:05Z", "", []check{before(ts.Truncate(time.Second))}},
		{"before 1 digit", "before=2026-01-02T03:04:05.1Z", "", []check{before(ts.Truncate(time.Second).Add(100 * time.Millisecond))}},
		{"before 9 digits, exact ms", "before=2026-01-02T03:04:05.123000000Z", "", []check{before(ts)}},
		{"before ns rounds up (created is ms)", "before=2026-01-02T03:04:05.123000001Z", "", []check{before(ts.Add(time.Millisecond))}},
		{"after ns truncates (created is ms)", "after=2026-01-02T03:04:05.123999999Z", "", []check{after(ts)}},
		{"before +00:00", "before=2026-01-02T03:04:05.123%2B00:00", "", []check{before(ts)}},
		{"before +01:00", "before=2026-01-02T04:04:05.123%2B01:00", "", []check{before(ts)}},
		{"before -05:30", "before=2026-01-01T21:34:05.123-05:30", "", []check{before(ts)}},
		{"before unencoded + (arrives as space)", "before=2026-01-02T04:04:05.123+01:00", "", []check{before(ts)}},
		{"before lower-case t and z", "before=2026-01-02t03:04:05.123z", "", []check{before(ts)}},
		{"before space separator", "before=2026-01-02%2003:04:05.123Z", "", []check{before(ts)}},
		{"before year 1 still bounds", "before=0001-01-01T00:00:00Z", "", []check{func(t *testing.T, f projections.PinFilter) {
			if f.Before.IsZero() {
				t.Error("before=year 1 became unbounded")
			}
		}}},
		{"after", "after=2026-01-02T03:04:05.123Z", "", []check{after(ts)}},
		{"before and after", "before=2026-01-02T03:04:05.123Z&after=2026-01-01T00:00:00Z", "", []check{func(t *testing.T, f projections.PinFilter) {
			if !f.Before.Equal(ts) || !f.After.Equal(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)) {
				t.Errorf("before %v after %v", f.Before, f.After)
			}
		}}},
		{"before date only", "before=2026-01-02", "RFC 3339", nil},
		{"before unix seconds", "before=1767323045", "RFC 3339", nil},
		{"before month 13", "before=2026-13-02T03:04:05Z", "RFC 3339", nil},
		{"before garbage", "before=yesterday", "before", nil},
		{"after garbage", "after=now", "after", nil},
		{"before twice differently", "before=2026-01-02T03:04:05Z&before=2026-01-02T03:04:06Z", "given 2 times", nil},
		// §9.13.
		{"limit 1", "limit=1", "", []check{limit(1)}},
		{"limit 1000", "limit=1000", "", []check{limit(1000)}},
		{"limit 0", "limit=0", "from 1 to 1000", nil},
		{"limit 1001", "limit=1001", "from 1 to 1000", nil},
		{"limit -1", "limit=-1", "limit", nil},
		{"limit abc", "limit=abc", "limit", nil},
		{"limit 1.5", "limit=1.5", "limit", nil},
		{"limit huge", "limit=99999999999999999999999", "limit", nil},
		{"limit empty is default", "limit=", "", []check{limit(10)}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			q, err := url.ParseQuery(tc.raw)
			if err != nil {
				t.Fatalf("test query %q: %v", tc.raw, err)
			}
			f, err := httpapi.ParseListQuery("org-1", q)
			if tc.err != "" {
				if err == nil {
					t.Fatalf("accepted, want an error mentioning %q; filter %+v", tc.err, f)
				}
				if !errors.Is(err, domain.ErrInvalid) {
					t.Errorf("error %v is not domain.ErrInvalid", err)
				}
				if !strings.Contains(err.Error(), tc.err) {
					t.Errorf("error %q does not mention %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatalf("rejected: %v", err)
			}
			if f.OrgID != "org-1" {
				t.Errorf("org %q", f.OrgID)
			}
			for _, c := range tc.check {
				c(t, f)
			}
		})
	}
}

func TestParseListQueryCIDKeysMatchSpellings(t *testing.T) {
	f, err := httpapi.ParseListQuery("o", url.Values{"cid": {q1}})
	if err != nil {
		t.Fatal(err)
	}
	if string(f.CIDKeys[0]) != string(keyOf(t, b1)) {
		t.Error("v0 and v1 spellings have different keys")
	}
}

func TestParseTimestamp(t *testing.T) {
	for _, s := range []string{
		"2026-01-02T03:04:05.123Z", "2026-01-02T03:04:05.123456789Z", "2026-01-02T03:04:05Z",
		"2026-01-02T04:04:05.123+01:00", "2026-01-02T04:04:05.123 01:00", "2026-01-02 03:04:05.123Z",
	} {
		if _, err := httpapi.ParseTimestamp(s); err != nil {
			t.Errorf("%q: %v", s, err)
		}
	}
	for _, s := range []string{"", "2026", "2026-01-02T03:04:05", "2026-01-02T03:04:05+0100", strings.Repeat("9", 100)} {
		if _, err := httpapi.ParseTimestamp(s); err == nil {
			t.Errorf("%q accepted", s)
		}
	}
}
