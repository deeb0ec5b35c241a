package httpapi_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	httpapi "github.com/anchorage-pin/anchorage/adapters/http"
	"github.com/anchorage-pin/anchorage/adapters/http/internal/memfake"
	"github.com/anchorage-pin/anchorage/domain"
	"github.com/anchorage-pin/anchorage/events"
	"github.com/anchorage-pin/anchorage/projections"
)

// fakeAudit is an in-memory audit trail: AuditEvents filters a fixed list (newest first) the way the read model
// does, and records the filters it was asked.
type fakeAudit struct {
	mu      sync.Mutex
	events  []projections.AuditEvent // oldest first
	recs    []events.Record          // what PinsAsOf folds
	filters []projections.AuditFilter
}

func (a *fakeAudit) AuditEvents(_ context.Context, f projections.AuditFilter) ([]projections.AuditEvent, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.filters = append(a.filters, f)
	var out []projections.AuditEvent
	for i := len(a.events) - 1; i >= 0 && len(out) < f.Limit; i-- {
		e := a.events[i]
		if (!f.AllOrgs || f.OrgID != "") && e.OrgID != f.OrgID || f.BeforeSeq > 0 && e.Seq >= f.BeforeSeq ||
			f.Actor != "" && e.Actor != f.Actor || f.Type != "" && e.Type != f.Type || f.RequestID != "" && e.RequestID != f.RequestID {
			continue
		}
		out = append(out, e)
	}
	return out, nil
}

func (a *fakeAudit) PinHistory(_ context.Context, org, id string) ([]projections.AuditEvent, error) {
	var out []projections.AuditEvent
	for _, e := range a.events {
		if e.OrgID == org && e.RequestID == id {
			out = append(out, e)
		}
	}
	if len(out) == 0 {
		return nil, domain.Errorf(domain.ErrNotFound, "pin request %s does not exist", id)
	}
	return out, nil
}

func (a *fakeAudit) PinsAsOf(_ context.Context, org string, t time.Time) ([]projections.PinView, error) {
	var recs []events.Record
	for _, r := range a.recs {
		if strings.Contains(r.Subject, org) || r.Subject == events.SchedTerm {
			recs = append(recs, r)
		}
	}
	return projections.PinsAsOf(recs, t), nil
}

func (a *fakeAudit) lastFilter() projections.AuditFilter {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.filters[len(a.filters)-1]
}

// auditCIDs are valid CIDs (a CIDv1 and, second, a CIDv0).
var auditCIDs = []string{"bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy", "QmUNLLsPACCz1vLxQVkXqqLX5R1X345qqfHbsf67hvA3Nn"}

// Tokens of the audit harness.
const (
	audPins  = "aud-pins-token" // org A: pins:read, pins:write
	audRead  = "aud-read-token" // org A: audit:read
	audSys   = "aud-sys-token"  // org A: sys:audit
	audWrite = "aud-write-only" // org A: pins:write
)

type auditHarness struct {
	h          http.Handler
	b          *memfake.Backend
	audit      *fakeAudit
	orgA, orgB string
}

func newAuditHarness(t *testing.T, withAudit bool) *auditHarness {
	t.Helper()
	b := memfake.New()
	t.Cleanup(b.Close)
	ah := &auditHarness{b: b, audit: &fakeAudit{}, orgA: domain.OrgIDForSlug("acme"), orgB: domain.OrgIDForSlug("globex")}
	b.AddToken(audPins, httpapi.Principal{OrgID: ah.orgA, Actor: "token:pins", Scopes: []string{domain.ScopePinsRead, domain.ScopePinsWrite}})
	b.AddToken(audRead, httpapi.Principal{OrgID: ah.orgA, Actor: "token:read", Scopes: []string{domain.ScopeAuditRead}})
	b.AddToken(audSys, httpapi.Principal{OrgID: ah.orgA, Actor: "token:sys", Scopes: []string{domain.ScopeSysAudit}})
	b.AddToken(audWrite, httpapi.Principal{OrgID: ah.orgA, Actor: "token:w", Scopes: []string{domain.ScopePinsWrite}})
	cfg := b.Config()
	cfg.ReadYourWritesTimeout = 200 * time.Millisecond
	if withAudit {
		cfg.Audit = ah.audit
	}
	h, err := httpapi.New(cfg)
	require.NoError(t, err)
	ah.h = h
	return ah
}

func (ah *auditHarness) get(t *testing.T, target, token string) (int, []byte) {
	t.Helper()
	req := httptest.NewRequest(http.MethodGet, "http://anchorage.test"+target, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	rec := httptest.NewRecorder()
	ah.h.ServeHTTP(rec, req)
	body, _ := io.ReadAll(rec.Result().Body)
	require.Equal(t, "application/json", rec.Result().Header.Get("Content-Type"))
	return rec.Code, body
}

func (ah *auditHarness) failure(t *testing.T, target, token string, status int, reason, detail string) {
	t.Helper()
	code, body := ah.get(t, target, token)
	require.Equal(t, status, code, "%s: %s", target, body)
	var f httpapi.Failure
	require.NoError(t, json.Unmarshal(body, &f), "%s", body)
	require.Equal(t, reason, f.Error.Reason, "%s", body)
	require.Contains(t, f.Error.Details, detail, "%s", body)
}

func auditEvent(seq uint64, org, typ, actor, request string) projections.AuditEvent {
	subject := "orgs." + org
	if request != "" {
		subject = "pins." + org + "." + request
	}
	if org == "" {
		subject = "sched.term"
	}
	return projections.AuditEvent{Seq: seq, At: time.Date(2026, 3, 1, 9, 0, 0, int(seq)*1000, time.UTC), Subject: subject, Type: typ,
		Version: 1, Actor: actor, OrgID: org, RequestID: request, Data: json.RawMessage(`{"n": 1}`)}
}

func TestAuditRoutesOnlyWithAReader(t *testing.T) {
	t.Parallel()
	ah := newAuditHarness(t, false)
	for _, path := range []string{"/v1/audit", "/v1/pins/" + uuid.NewString() + "/history", "/v1/pins?as_of=2026-01-01T00:00:00Z"} {
		ah.failure(t, path, audSys, http.StatusNotFound, "NOT_FOUND", "there is no endpoint")
	}
}

// Scopes: a pins-only token sees no audit trail (403, the reader is never asked); audit:read sees its own org;
// sys:audit sees every org (the events of no org included), or the one org= names.
func TestAuditScopes(t *testing.T) {
	t.Parallel()
	ah := newAuditHarness(t, true)
	ah.failure(t, "/v1/audit", audPins, http.StatusForbidden, "FORBIDDEN", "audit:read")
	ah.failure(t, "/v1/audit?org=acme", audPins, http.StatusForbidden, "FORBIDDEN", "audit:read")
	require.Empty(t, ah.audit.filters, "the reader was asked for a forbidden query")

	code, body := ah.get(t, "/v1/audit", audRead)
	require.Equal(t, http.StatusOK, code, "%s", body)
	f := ah.audit.lastFilter()
	require.Equal(t, ah.orgA, f.OrgID)
	require.False(t, f.AllOrgs)
	require.Equal(t, httpapi.DefaultAuditLimit+1, f.Limit)

	// An audit:read token may name its own org (by slug or id), never another.
	for _, org := range []string{"acme", ah.orgA, strings.ToUpper(ah.orgA)} {
		code, body = ah.get(t, "/v1/audit?org="+org, audRead)
		require.Equal(t, http.StatusOK, code, "%s", body)
		require.Equal(t, ah.orgA, ah.audit.lastFilter().OrgID)
	}
	ah.failure(t, "/v1/audit?org=globex", audRead, http.StatusForbidden, "FORBIDDEN", "sys:audit")
	ah.failure(t, "/v1/audit?org="+ah.orgB, audRead, http.StatusForbidden, "FORBIDDEN", "sys:audit")

	code, body = ah.get(t, "/v1/audit", audSys)
	require.Equal(t, http.StatusOK, code, "%s", body)
	f = ah.audit.lastFilter()
	require.True(t, f.AllOrgs)
	require.Empty(t, f.OrgID)
	code, body = ah.get(t, "/v1/audit?org=globex", audSys)
	require.Equal(t, http.StatusOK, code, "%s", body)
	require.Equal(t, ah.orgB, ah.audit.lastFilter().OrgID)
	ah.failure(t, "/v1/audit?org=Not_A_Slug", audSys, http.StatusBadRequest, "BAD_REQUEST", "neither an org id")

	// History: pins:read or audit:read (or sys:audit); as of: pins:read.
	ah.failure(t, "/v1/pins/"+uuid.NewString()+"/history", audWrite, http.StatusForbidden, "FORBIDDEN", "pins:read or audit:read or sys:audit")
	ah.failure(t, "/v1/pins?as_of=2026-01-01T00:00:00Z", audRead, http.StatusForbidden, "FORBIDDEN", "pins:read")
	ah.failure(t, "/v1/audit", "nope", http.StatusUnauthorized, "UNAUTHORIZED", "")
}

func TestAuditQueryValidation(t *testing.T) {
	t.Parallel()
	ah := newAuditHarness(t, true)
	for q, want := range map[string]string{
		"?reqid=x":          `unknown parameter "reqid"`,
		"?type=pin.pinned":  `type "pin.pinned" is not an event type`,
		"?type=pin":         "is not an event type",
		"?requestid=abc":    "is not a pin request id",
		"?cid=notacid":      "cid filter",
		"?since=yesterday":  "since \"yesterday\" is not an RFC 3339 timestamp",
		"?until=2026-13-01": "is not an RFC 3339 timestamp",
		"?limit=0":          "limit \"0\" is invalid",
		"?limit=1001":       "from 1 to 1000",
		"?limit=ten":        "limit \"ten\" is invalid",
		"?cursor=zzz":       "pass next_cursor back unchanged",
		"?actor=a&actor=b":  "actor is given 2 times",
		"?since=2026-01-02T00:00:00Z&until=2026-01-01T00:00:00Z": "since must be before until",
		"?since=2026-01-01T00:00:00Z&until=2026-01-01T00:00:00Z": "since must be before until",
		"?actor=" + strings.Repeat("x", 513):                     "actors are at most 512",
		"?%zz":                                                   "the query string is malformed",
	} {
		ah.failure(t, "/v1/audit"+q, audRead, http.StatusBadRequest, "BAD_REQUEST", want)
	}
	require.Empty(t, ah.audit.filters)

	// Valid values reach the reader normalised.
	id := uuid.NewString()
	q := url.Values{"actor": {" token:abc "}, "type": {"pin.removed"}, "requestid": {strings.ToUpper(id)}, "since": {"2026-01-01T01:00:00+01:00"},
		"until": {"2026-01-02T00:00:00.5Z"}, "limit": {"7"}, "cursor": {httpapi.EncodeAuditCursor(99)},
		"cid": {"QmUNLLsPACCz1vLxQVkXqqLX5R1X345qqfHbsf67hvA3Nn"}}
	code, body := ah.get(t, "/v1/audit?"+q.Encode(), audRead)
	require.Equal(t, http.StatusOK, code, "%s", body)
	f := ah.audit.lastFilter()
	pc, err := domain.ParseCID("bafybeiczsscdsbs7ffqz55asqdf3smv6klcw3gofszvwlyarci47bgf354")
	require.NoError(t, err)
	require.Equal(t, projections.AuditFilter{OrgID: ah.orgA, Actor: "token:abc", Type: "pin.removed", RequestID: id, CIDKey: pc.Key,
		Since: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), Until: time.Date(2026, 1, 2, 0, 0, 0, 5e8, time.UTC), BeforeSeq: 99, Limit: 8}, f,
		"a CIDv0 matches its CIDv1 spelling (the multihash)")
}

// Pages: newest first, next_cursor while there is more (absent on the last page), the cursor giving the older
// events; every field of an event as recorded, null where the event has none.
func TestAuditPagesAndShape(t *testing.T) {
	t.Parallel()
	ah := newAuditHarness(t, true)
	req := uuid.NewString()
	for i := uint64(1); i <= 12; i++ {
		e := auditEvent(i, ah.orgA, "pin.requested", "token:pins", req)
		switch {
		case i%4 == 0:
			e = auditEvent(i, ah.orgB, "org.created", "admin:alice", "")
		case i == 6:
			e = auditEvent(i, "", "sched.term_started", "system:scheduler:n1", "")
		case i == 7:
			e.Corr = "req-7"
		}
		ah.audit.events = append(ah.audit.events, e)
	}
	var seen []uint64
	target := "/v1/audit?limit=3"
	for pages := 0; ; pages++ {
		code, body := ah.get(t, target, audRead)
		require.Equal(t, http.StatusOK, code, "%s", body)
		var page httpapi.AuditPage
		require.NoError(t, json.Unmarshal(body, &page))
		for _, e := range page.Events {
			seen = append(seen, e.Seq)
		}
		if page.NextCursor == "" {
			require.NotContains(t, string(body), "next_cursor")
			break
		}
		require.Len(t, page.Events, 3)
		seq, err := httpapi.DecodeAuditCursor(page.NextCursor)
		require.NoError(t, err)
		require.Equal(t, page.Events[2].Seq, seq)
		target = "/v1/audit?limit=3&cursor=" + page.NextCursor
	}
	require.Equal(t, []uint64{11, 10, 9, 7, 5, 3, 2, 1}, seen, "org A's events, newest first, each once")

	code, body := ah.get(t, "/v1/audit?limit=1000", audSys)
	require.Equal(t, http.StatusOK, code)
	var raw struct {
		Events []map[string]any `json:"events"`
	}
	require.NoError(t, json.Unmarshal(body, &raw))
	require.Len(t, raw.Events, 12)
	byseq := map[float64]map[string]any{}
	for _, e := range raw.Events {
		byseq[e["seq"].(float64)] = e
		keys := make([]string, 0, len(e))
		for k := range e {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		require.Equal(t, []string{"actor", "at", "corr", "data", "org_id", "request_id", "seq", "subject", "type", "version"}, keys)
	}
	require.Equal(t, map[string]any{"seq": 7.0, "at": "2026-03-01T09:00:00.000007Z", "type": "pin.requested", "version": 1.0,
		"subject": "pins." + ah.orgA + "." + req, "actor": "token:pins", "corr": "req-7", "org_id": ah.orgA, "request_id": req,
		"data": map[string]any{"n": 1.0}}, byseq[7])
	require.Nil(t, byseq[6]["org_id"], "an event of no org")
	require.Nil(t, byseq[6]["request_id"])
	require.Nil(t, byseq[6]["corr"])
}

func TestAuditPinHistory(t *testing.T) {
	t.Parallel()
	ah := newAuditHarness(t, true)
	mine, theirs := uuid.NewString(), uuid.NewString()
	ah.audit.events = []projections.AuditEvent{
		auditEvent(1, ah.orgA, "pin.requested", "token:pins", mine),
		auditEvent(2, ah.orgB, "pin.requested", "token:b", theirs),
		auditEvent(3, ah.orgA, "pin.placed", "system:scheduler:n1", mine),
		auditEvent(4, ah.orgA, "pin.status_observed", "system:worker:n1", mine),
	}
	for _, tok := range []string{audPins, audRead, audSys} {
		code, body := ah.get(t, "/v1/pins/"+mine+"/history", tok)
		require.Equal(t, http.StatusOK, code, "%s", body)
		var h httpapi.AuditHistory
		require.NoError(t, json.Unmarshal(body, &h))
		var got []string
		for _, e := range h.Events {
			got = append(got, e.Type)
		}
		require.Equal(t, []string{"pin.requested", "pin.placed", "pin.status_observed"}, got)
	}
	ah.failure(t, "/v1/pins/"+theirs+"/history", audSys, http.StatusNotFound, "NOT_FOUND", "does not exist")
	ah.failure(t, "/v1/pins/"+uuid.NewString()+"/history", audPins, http.StatusNotFound, "NOT_FOUND", "does not exist")
	ah.failure(t, "/v1/pins/not-an-id/history", audPins, http.StatusNotFound, "NOT_FOUND", "does not exist")
}

// GET /v1/pins?as_of=T serves the fold with GET /pins's filters and defaults.
func TestAuditPinsAsOf(t *testing.T) {
	t.Parallel()
	ah := newAuditHarness(t, true)
	org := ah.orgA
	t0 := time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)
	var seq uint64
	add := func(sec int, subject string, e events.Event) uint64 {
		seq++
		ah.audit.recs = append(ah.audit.recs, events.Record{Seq: seq, Subject: subject,
			Envelope: events.Envelope{Type: e.EventType(), Version: 1, At: t0.Add(time.Duration(sec) * time.Second)}, Event: e})
		return seq
	}
	p1, p2 := uuid.NewString(), uuid.NewString()
	add(1, events.PinSubject(org, p1), events.PinRequested{OrgID: org, RequestID: p1, CID: auditCIDs[0], Name: "one", Created: t0.Add(time.Second)})
	placed := add(2, events.PlaceSubject("n1", org, p1), events.PinPlaced{OrgID: org, RequestID: p1, NodeID: "n1", CID: auditCIDs[0]})
	add(3, events.PinSubject(org, p2), events.PinRequested{OrgID: org, RequestID: p2, CID: auditCIDs[1], Name: "two", Created: t0.Add(3 * time.Second)})
	add(4, events.PlaceSubject("n1", org, p1), events.PinStatusObserved{OrgID: org, RequestID: p1, NodeID: "n1", Status: "pinned", PlacedSeq: placed})
	add(5, events.PinSubject(org, p2), events.PinRemoved{OrgID: org, RequestID: p2})

	list := func(q string) httpapi.PinResults {
		t.Helper()
		code, body := ah.get(t, "/v1/pins?"+q, audPins)
		require.Equal(t, http.StatusOK, code, "%s", body)
		var r httpapi.PinResults
		require.NoError(t, json.Unmarshal(body, &r))
		return r
	}
	ids := func(r httpapi.PinResults) []string {
		var out []string
		for _, p := range r.Results {
			out = append(out, p.Pin.Name+":"+p.Status)
		}
		return out
	}
	at := func(sec int) string {
		return url.QueryEscape(t0.Add(time.Duration(sec) * time.Second).Format(time.RFC3339))
	}
	require.Empty(t, ids(list("as_of="+at(0))))
	require.Empty(t, ids(list("as_of="+at(3))), "pinned only by default: nothing is pinned yet")
	require.Equal(t, []string{"two:queued", "one:queued"}, ids(list("as_of="+at(3)+"&status=any")))
	require.Equal(t, []string{"one:pinned"}, ids(list("as_of="+at(4))))
	require.Equal(t, []string{"two:queued", "one:pinned"}, ids(list("as_of="+at(4)+"&status=queued,pinned")))
	require.Equal(t, []string{"two:queued"}, ids(list("as_of="+at(4)+"&cid="+auditCIDs[1])), "cid (any status)")
	require.Equal(t, []string{"two:queued"}, ids(list("as_of="+at(4)+"&name=two")), "name (any status)")
	require.Equal(t, []string{"one:pinned"}, ids(list("as_of="+at(5)+"&status=any")), "removed by then")
	r := list("as_of=" + at(4) + "&status=any&limit=1")
	require.Equal(t, int64(2), r.Count)
	require.Equal(t, []string{"two:queued"}, ids(r))
	require.Equal(t, memfake.ServingAddrs, r.Results[0].Delegates)

	ah.failure(t, "/v1/pins", audPins, http.StatusBadRequest, "BAD_REQUEST", "as_of is required")
	ah.failure(t, "/v1/pins?as_of=soon", audPins, http.StatusBadRequest, "BAD_REQUEST", "as_of \"soon\" is not an RFC 3339")
	ah.failure(t, "/v1/pins?as_of="+at(4)+"&limit=0", audPins, http.StatusBadRequest, "BAD_REQUEST", "limit")
	ah.failure(t, "/v1/pins?as_of="+at(4)+"&status=gone", audPins, http.StatusBadRequest, "BAD_REQUEST", "status")
}

// After a write through this node the org's audit reads wait until the audit projection shows it (503 when it
// does not in time), like pin reads do with the pins projection.
func TestAuditReadYourWrites(t *testing.T) {
	t.Parallel()
	ah := newAuditHarness(t, true)
	req := httptest.NewRequest(http.MethodPost, "http://anchorage.test/pins", strings.NewReader(`{"cid":"`+auditCIDs[0]+`"}`))
	req.Header.Set("Authorization", "Bearer "+audPins)
	rec := httptest.NewRecorder()
	ah.h.ServeHTTP(rec, req)
	require.Equal(t, http.StatusAccepted, rec.Code, rec.Body.String())
	ah.failure(t, "/v1/audit", audRead, http.StatusServiceUnavailable, "SERVICE_UNAVAILABLE", "the audit trail has not caught up")
	ah.b.Marks.Advance(httpapi.AuditProjection, 1<<62)
	code, body := ah.get(t, "/v1/audit", audRead)
	require.Equal(t, http.StatusOK, code, "%s", body)
}

func TestAuditCursorRoundTrip(t *testing.T) {
	t.Parallel()
	for _, seq := range []uint64{1, 2, 255, 1 << 40, 1<<64 - 1} {
		got, err := httpapi.DecodeAuditCursor(httpapi.EncodeAuditCursor(seq))
		require.NoError(t, err)
		require.Equal(t, seq, got)
	}
	for _, bad := range []string{"", "AQ", "AgAAAAAAAAAB", "AQAAAAAAAAABAA", "!!!!!!!!!!!!", httpapi.EncodeAuditCursor(0)} {
		_, err := httpapi.DecodeAuditCursor(bad)
		require.ErrorIs(t, err, domain.ErrInvalid, "%q", bad)
	}
}

func FuzzParseAuditQuery(f *testing.F) {
	f.Add("actor=token:x&type=pin.requested&limit=5&cursor=AQAAAAAAAAAB&org=acme")
	f.Add("since=2026-01-01T00:00:00Z&until=2027-01-01T00:00:00Z&cid=bafkqaaa&requestid=" + uuid.NewString())
	org := domain.OrgIDForSlug("acme")
	f.Fuzz(func(t *testing.T, raw string) {
		q, err := url.ParseQuery(raw)
		if err != nil {
			return
		}
		for _, p := range []httpapi.Principal{
			{OrgID: org, Scopes: []string{domain.ScopeAuditRead}},
			{OrgID: org, Scopes: []string{domain.ScopeSysAudit}},
		} {
			flt, err := httpapi.ParseAuditQuery(p, q)
			if err != nil {
				require.True(t, errorsIsAny(err, domain.ErrInvalid, domain.ErrForbidden), "%v", err)
				continue
			}
			require.True(t, flt.Limit >= 1 && flt.Limit <= httpapi.MaxAuditLimit)
			if !slices.Contains(p.Scopes, domain.ScopeSysAudit) {
				require.Equal(t, org, flt.OrgID, "a tenant's query is always its own org's")
				require.False(t, flt.AllOrgs)
			}
		}
	})
}

func errorsIsAny(err error, kinds ...error) bool {
	return slices.ContainsFunc(kinds, func(k error) bool { return errors.Is(err, k) })
}
