package httpapi_test

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"unicode/utf8"

	httpapi "github.com/anchorage-pin/anchorage/adapters/http"
	"github.com/anchorage-pin/anchorage/adapters/http/apitest"
	"github.com/anchorage-pin/anchorage/domain"
	"github.com/anchorage-pin/anchorage/projections"
)

// FuzzParseListQuery: arbitrary raw query strings never panic, every error is domain.ErrInvalid with details,
// and every accepted filter is within the spec's bounds.
func FuzzParseListQuery(f *testing.F) {
	seeds := []string{
		"",
		"limit=10&status=queued%2Cpinning%2Cpinned%2Cfailed",
		"before=2026-11-22T10%3A01%3A37.628Z&limit=10&status=queued%2Cpinning%2Cpinned%2Cfailed",
		"limit=1&status=pinned",
		"cid=QmcokBPPmMvtHzjJgvUdHTvNSDb9F5aohuvhXmbJZm2AyW&limit=10&name=e2e-one&status=pinned",
		"limit=10&name=policy%2F12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN%2Fmfs&status=queued%2Cpinning%2Cpinned%2Cfailed",
		"cid=" + strings.Join(ten, ","),
		"cid=" + strings.Join(ten, "&cid=") + "&cid=" + q1,
		"status=queued&status=failed&status=any",
		"name=Foo&match=ipartial",
		"match=regex",
		"meta=%7B%22app_id%22%3A%2299986338-1113-4706-8302-4420da6158aa%22%7D",
		"meta=%7B%22a%22%3A1%7D",
		"meta=map%5Ba%3Ab%5D",
		"before=2026-01-02T04:04:05.123+01:00&after=2026-01-01T00:00:00.123456789Z",
		"before=2026-01-02t03:04:05.1z",
		"before=0001-01-01T00:00:00Z",
		"after=9999-12-31T23:59:59.999999999-23:59",
		"limit=0", "limit=1001", "limit=-0", "limit=+5", "limit=%20%201",
		"status=%E2%80%8Bpinned", "name=%FF%FE", "cid=%00", "a=%zz", "x;y=1",
	}
	for _, s := range seeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		q, _ := url.ParseQuery(raw) // the handler refuses malformed queries; feed what parsed anyway
		filter, err := httpapi.ParseListQuery("org", q)
		if err != nil {
			if !errors.Is(err, domain.ErrInvalid) {
				t.Fatalf("error %v is not domain.ErrInvalid", err)
			}
			var de *domain.Error
			if !errors.As(err, &de) || de.Msg == "" || de.Reason != "BAD_REQUEST" {
				t.Fatalf("error %#v has no details", err)
			}
			if !utf8.ValidString(de.Msg) {
				// Details end up in JSON; invalid UTF-8 would be mangled, not dangerous, but say so.
				t.Logf("details are not valid UTF-8: %q", de.Msg)
			}
			return
		}
		if filter.OrgID != "org" || filter.Limit < 1 || filter.Limit > 1000 || len(filter.Statuses) == 0 ||
			len(filter.Statuses) > 4 || len(filter.CIDKeys) > 10 || len(filter.Name) > 255 || len(filter.Meta) > 64 {
			t.Fatalf("out-of-bounds filter %+v", filter)
		}
		for _, s := range filter.Statuses {
			if _, ok := projections.ParseStatus(s.String()); !ok {
				t.Fatalf("invalid status %v", s)
			}
		}
		switch filter.Match {
		case projections.MatchExact, projections.MatchIExact, projections.MatchPartial, projections.MatchIPartial:
		default:
			t.Fatalf("invalid match %q", filter.Match)
		}
	})
}

// FuzzPostPinBody: arbitrary bodies through the real handler (over the in-memory back end) never produce a
// 5xx or a panic, and always answer JSON that is a valid PinStatus (202) or a valid Failure (4xx).
func FuzzPostPinBody(f *testing.F) {
	peer := "12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN"
	seeds := []string{
		`{"cid":"bafkqacdqojxwezjngaya","name":"probe-00"}`,
		`{"cid":"QmcokBPPmMvtHzjJgvUdHTvNSDb9F5aohuvhXmbJZm2AyW","name":"e2e-one","origins":["/ip4/127.0.0.1/tcp/46385/p2p/` + peer + `","/ip4/127.0.0.1/udp/33887/quic-v1/webtransport/certhash/uEiAkH5a4DPGKUuOBjYw0CgwjvcJCJMD2K_1aluKR_tpevQ/p2p/` + peer + `"]}`,
		`{"cid":"bafkqaaa","name":"e2e-two","origins":["/ip4/127.0.0.1/udp/43749/webrtc-direct/certhash/uEiAkH5a4DPGKUuOBjYw0CgwjvcJCJMD2K_1aluKR_tpevQ/p2p/` + peer + `"]}`,
		`{"cid":"` + cidV1 + `","name":"policy/` + peer + `/mfs","meta":{"app_id":"99986338-1113-4706-8302-4420da6158aa"}}`,
		`{"cid":"` + cidV0 + `","meta":{"a":1}}`,
		`{"cid":"` + cidV0 + `","meta":{"":"x"}}`,
		`{"cid":"` + cidV0 + `","origins":"x"}`,
		`{"cid":"` + cidV0 + `","origins":[1,null,{},[],"junk","/ip4/1.1.1.1/tcp/1"]}`,
		`{"cid":"` + cidV0 + `","name":"\u0000"}`,
		`{"cid":"` + cidV0 + `","name":"\ud800"}`,
		`{"cid":7}`, `{"name":"x"}`, `{}`, `[]`, `null`, `"x"`, ``, `{"cid":"`, `{"cid":"x"}{}`,
		`{"cid":"bafkqaaa","cid":"QmNope"}`,
		`{"cid":"bafkqaaa","meta":{"k":"v","k":"w"}}`,
		"\xff\xfe{\"cid\":\"bafkqaaa\"}",
		`{"cid":"zb2rhe5P4gXftAwvA4eXQ5HJwsER2owDyS9sKaQRRVQPn93bA"}`,
		`{"cid":"mAXASILp4Fr+PAc/qQUFA3l2uIiOwA2Gjlhd6nLQQ/2HyABWt"}`,
	}
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	h := newHarness(f, quietLogs)
	f.Fuzz(func(t *testing.T, body []byte) {
		defer h.b.Reset()
		req := httptest.NewRequest(http.MethodPost, "/pins", strings.NewReader(string(body)))
		req.Header.Set("Authorization", "Bearer "+tokRW)
		req.Header.Set("Content-Type", "application/json")
		rec := httptest.NewRecorder()
		h.h.ServeHTTP(rec, req) // a panic fails the fuzz target (the recoverer would turn it into a 500)
		resp := rec.Result()
		b := rec.Body.Bytes()
		if resp.StatusCode >= 500 {
			t.Fatalf("status %d for body %q: %s", resp.StatusCode, body, b)
		}
		if resp.StatusCode != http.StatusAccepted && (resp.StatusCode < 400 || resp.StatusCode >= 500) {
			t.Fatalf("status %d for body %q", resp.StatusCode, body)
		}
		if !json.Valid(b) {
			t.Fatalf("body is not JSON: %q", b)
		}
		if err := apitest.CheckResponse(h.spec, req, resp.StatusCode, resp.Header, b); err != nil {
			t.Fatalf("invalid response for body %q: %v\n%s", body, err, b)
		}
		if resp.StatusCode == http.StatusAccepted {
			var ps httpapi.PinStatus
			if err := json.Unmarshal(b, &ps); err != nil || ps.RequestID == "" {
				t.Fatalf("202 without a PinStatus: %s", b)
			}
			// The cid is echoed exactly as submitted.
			var in struct {
				CID string `json:"cid"`
			}
			if json.Unmarshal(body, &in) == nil && in.CID != "" && in.CID != ps.Pin.CID {
				t.Fatalf("cid %q echoed as %q", in.CID, ps.Pin.CID)
			}
		}
	})
}
