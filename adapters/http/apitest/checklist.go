package apitest

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
)

// Env is the service under test.
type Env struct {
	// BaseURL is the endpoint a Kubo user would configure, e.g. http://127.0.0.1:8080 (no trailing /pins).
	BaseURL string
	// TokenA and TokenB have pins:read and pins:write on two different orgs, A and B.
	TokenA, TokenB string
	// ReadOnlyToken belongs to org A and has pins:read only.
	ReadOnlyToken string
	// SetStatus moves a pin of org "A" or "B" to status (queued, pinning, pinned or failed) through the real event
	// log, and returns once GET /pins/{requestID} shows it. The pin must then stay in that status while the suite
	// runs (nothing else may observe it): the suite pins random content no one has, but a worker that marks
	// unfetchable content failed, or moves queued pins to pinning, would still interfere. Subtests that need it
	// are skipped when it is nil.
	SetStatus func(tb testing.TB, org string, requestID string, status string)
}

// RunChecklist runs the whole conformance checklist as subtests: pinning-api.md §9 items 1–16, the §10
// decisions, scope misuse, cross-org isolation and Kubo's pagination loop.
//
// The subtests share the server and run one after another. Each names its pins uniquely and asserts on what it
// created, except where the spec defines whole-org answers (the default listing and its count): those assume
// nobody else writes to org A while the suite runs, so give the suite orgs of its own.
func RunChecklist(t *testing.T, env Env) {
	if env.BaseURL == "" || env.TokenA == "" {
		t.Fatal("apitest: Env needs at least BaseURL and TokenA")
	}
	s := &suite{env: env, c: NewClient(t, env.BaseURL), run: "apitest-" + randomHex(4)}
	t.Logf("apitest run %s against %s", s.run, env.BaseURL)

	t.Run("01_auth_missing_or_wrong_token_401", s.auth)
	t.Run("02_create_202_pinstatus", s.create)
	t.Run("03_same_cid_twice_two_requestids", s.sameCIDTwice)
	t.Run("04_invalid_bodies_400", s.invalidBodies)
	t.Run("05_get_own_unknown_foreign", s.get)
	t.Run("06_default_list_only_pinned_newest_first", s.defaultList)
	t.Run("07_status_filter", s.statusFilter)
	t.Run("08_cid_filter_1_10_11", s.cidFilter)
	t.Run("09_name_match_modes", s.nameMatch)
	t.Run("10_meta_filter_contains", s.metaFilter)
	t.Run("11_before_after_strict_any_rfc3339", s.beforeAfter)
	t.Run("12_pagination_25_kubo_loop", s.pagination)
	t.Run("13_limit", s.limit)
	t.Run("14_replace", s.replace)
	t.Run("15_delete", s.delete)
	t.Run("16_content_type_and_empty_results", s.contentType)
	t.Run("decision_created_ms_strictly_increasing", s.createdIncreasing)
	t.Run("decision_meta_limits_400", s.metaLimits)
	t.Run("decision_origins_lenient", s.originsLenient)
	t.Run("decision_cid_v0_v1_match", s.cidSpellings)
	t.Run("decision_count_after_writes", s.countAfterWrites)
	t.Run("decision_conflicts_never_409", s.noConflict409)
	t.Run("scopes_read_only_token", s.readOnly)
	t.Run("isolation_cross_org", s.isolation)
	t.Run("extension_idempotency_key", s.idempotencyKey)
}

type suite struct {
	env Env
	c   *Client
	run string
}

func (s *suite) name(tag string) string { return s.run + "-" + tag }

func (s *suite) setStatus(t *testing.T, org, id, status string) {
	t.Helper()
	if s.env.SetStatus == nil {
		t.Skip("Env.SetStatus is not provided")
	}
	s.env.SetStatus(t, org, id, status)
}

func (s *suite) needB(t *testing.T) {
	if s.env.TokenB == "" {
		t.Skip("Env.TokenB is not provided")
	}
}

// named lists the pins named name (every status: a name is given) as A sees them.
func (s *suite) named(t *testing.T, token, name string, extra ...string) PinResults {
	t.Helper()
	q := url.Values{"name": {name}, "limit": {"1000"}}
	for i := 0; i+1 < len(extra); i += 2 {
		q.Set(extra[i], extra[i+1])
	}
	return s.c.List(t, token, q)
}

func wantIDs(t *testing.T, what string, got []PinStatus, want ...string) {
	t.Helper()
	if g := ids(got); !slices.Equal(g, want) {
		t.Errorf("%s: got requestids %v, want %v", what, g, want)
	}
}

func wantStatus(t *testing.T, what string, r Response, status int, detailsContain ...string) {
	t.Helper()
	if r.Status != status {
		t.Errorf("%s: status %d, want %d; body %s", what, r.Status, status, truncate(r.Body, 500))
		return
	}
	d := r.Failure().Error.Details
	for _, c := range detailsContain {
		if !strings.Contains(d, c) {
			t.Errorf("%s: details %q do not mention %q", what, d, c)
		}
	}
}

// §9.1
func (s *suite) auth(t *testing.T) {
	id := uuid.NewString()
	name := s.name("auth")
	body := map[string]any{"cid": RandomCID(), "name": name}
	reqs := []struct {
		method, path string
		body         any
	}{
		{http.MethodGet, "/pins", nil},
		{http.MethodPost, "/pins", body},
		{http.MethodGet, "/pins/" + id, nil},
		{http.MethodPost, "/pins/" + id, body},
		{http.MethodDelete, "/pins/" + id, nil},
	}
	auths := []struct {
		label string
		h     []string
	}{
		{"no Authorization header", nil},
		{"unknown token", []string{"Authorization", "Bearer apitest-not-a-token-" + randomHex(8)}},
		{"Basic scheme", []string{"Authorization", "Basic YXBpdGVzdDphcGl0ZXN0"}},
		{"Bearer without token", []string{"Authorization", "Bearer"}},
		{"token without scheme", []string{"Authorization", s.env.TokenA}},
	}
	for _, rq := range reqs {
		for _, a := range auths {
			r := s.c.Do(t, rq.method, rq.path, "", rq.body, a.h...)
			what := fmt.Sprintf("%s %s with %s", rq.method, rq.path, a.label)
			wantStatus(t, what, r, http.StatusUnauthorized)
			if f := r.Failure(); f.Error.Reason == "" {
				t.Errorf("%s: no error.reason", what)
			}
			if h := r.Header.Get("WWW-Authenticate"); !strings.HasPrefix(h, "Bearer") {
				t.Errorf("%s: WWW-Authenticate %q, want a Bearer challenge", what, h)
			}
		}
	}
	if n := s.named(t, s.env.TokenA, name).Count; n != 0 {
		t.Errorf("unauthenticated POSTs created %d pins", n)
	}
}

// §9.2
func (s *suite) create(t *testing.T) {
	c := RandomCID()
	name := s.name("create")
	r := s.c.Expect(t, http.StatusAccepted, http.MethodPost, "/pins", s.env.TokenA, map[string]any{"cid": c, "name": name})
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(r.Body, &raw); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"requestid", "status", "created", "pin", "delegates"} {
		if _, ok := raw[k]; !ok {
			t.Errorf("PinStatus lacks required field %q", k)
		}
	}
	ps := decode[PinStatus](t, r)
	if ps.RequestID == "" {
		t.Error("empty requestid")
	}
	if !slices.Contains([]string{"queued", "pinning", "pinned"}, ps.Status) {
		t.Errorf("status %q after create, want queued, pinning or pinned", ps.Status)
	}
	if ps.Pin.CID != c || ps.Pin.Name != name {
		t.Errorf("pin echoed as %+v, want cid %s name %s", ps.Pin, c, name)
	}
	if n := len(ps.Delegates); n < 1 || n > 20 {
		t.Errorf("%d delegates, want 1..20", n)
	}
	if !createdRE.MatchString(ps.Created) {
		t.Errorf("created %q is not 2006-01-02T15:04:05.000Z", ps.Created)
	}
	// Read your writes: Kubo polls at once.
	got := s.c.Get(t, s.env.TokenA, ps.RequestID)
	if got.RequestID != ps.RequestID || got.Created != ps.Created || got.Pin.CID != c || got.Pin.Name != name {
		t.Errorf("GET right after POST returned %+v, want the created %+v", got, ps)
	}

	// Only cid: optional fields are omitted, not sent empty.
	r = s.c.Expect(t, http.StatusAccepted, http.MethodPost, "/pins", s.env.TokenA, map[string]any{"cid": RandomCID()})
	var only struct {
		Pin  map[string]json.RawMessage `json:"pin"`
		Info json.RawMessage            `json:"info"`
	}
	if err := json.Unmarshal(r.Body, &only); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"name", "meta", "origins"} {
		if _, ok := only.Pin[k]; ok {
			t.Errorf("pin.%s is present although it was not sent: %s", k, r.Body)
		}
	}
	if len(only.Info) > 0 && string(only.Info) != "null" && !strings.HasPrefix(string(only.Info), "{") {
		t.Errorf("info is not an object: %s", only.Info)
	}
}

// §9.3
func (s *suite) sameCIDTwice(t *testing.T) {
	c := RandomCID()
	a := s.c.Create(t, s.env.TokenA, map[string]any{"cid": c})
	b := s.c.Create(t, s.env.TokenA, map[string]any{"cid": c})
	if a.RequestID == b.RequestID {
		t.Fatalf("the same CID pinned twice got the same requestid %s", a.RequestID)
	}
	s.c.Get(t, s.env.TokenA, a.RequestID)
	s.c.Get(t, s.env.TokenA, b.RequestID)
	pr := s.c.List(t, s.env.TokenA, url.Values{"cid": {c}})
	if pr.Count != 2 || len(pr.Results) != 2 {
		t.Errorf("cid=%s: count %d, %d results; want 2 objects", c, pr.Count, len(pr.Results))
	}
}

// §9.4
func (s *suite) invalidBodies(t *testing.T) {
	name := s.name("invalid")
	c := RandomCID()
	cases := []struct {
		label   string
		body    any
		mention string
	}{
		{"name of 256 bytes", map[string]any{"cid": c, "name": name + strings.Repeat("x", 256-len(name))}, "255"},
		{"meta with a number value", map[string]any{"cid": c, "name": name, "meta": map[string]any{"apitest_num": 1}}, "apitest_num"},
		{"meta with a null value", map[string]any{"cid": c, "name": name, "meta": map[string]any{"apitest_null": nil}}, "apitest_null"},
		{"meta with an object value", map[string]any{"cid": c, "name": name, "meta": map[string]any{"apitest_obj": map[string]any{}}}, "apitest_obj"},
		{"meta not an object", map[string]any{"cid": c, "name": name, "meta": "a=1"}, "meta"},
		{"missing cid", map[string]any{"name": name}, "cid"},
		{"cid null", map[string]any{"cid": nil, "name": name}, "cid"},
		{"cid a number", map[string]any{"cid": 42, "name": name}, "cid"},
		{"cid empty", map[string]any{"cid": "", "name": name}, "cid"},
		{"cid not a CID", map[string]any{"cid": "not-a-cid", "name": name}, "cid"},
		{"name a number", map[string]any{"cid": c, "name": 7}, "name"},
		{"truncated JSON", `{"cid":"` + c + `"`, "JSON"},
		{"not JSON", "cid=" + c, "JSON"},
		{"JSON array", `[{"cid":"` + c + `"}]`, "object"},
		{"JSON null", `null`, ""},
		{"empty body", "", ""},
	}
	for _, tc := range cases {
		r := s.c.Do(t, http.MethodPost, "/pins", s.env.TokenA, tc.body)
		if tc.mention == "" {
			wantStatus(t, tc.label, r, http.StatusBadRequest)
		} else {
			wantStatus(t, tc.label, r, http.StatusBadRequest, tc.mention)
		}
		if reason := r.Failure().Error.Reason; r.Status == http.StatusBadRequest && reason != "BAD_REQUEST" {
			t.Errorf("%s: reason %q, want BAD_REQUEST", tc.label, reason)
		}
	}
	if n := s.named(t, s.env.TokenA, name).Count; n != 0 {
		t.Errorf("invalid POSTs created %d pins", n)
	}
	// The boundary is allowed: a 255-byte name.
	long := name + strings.Repeat("y", 255-len(name))
	ps := s.c.Create(t, s.env.TokenA, map[string]any{"cid": c, "name": long})
	if ps.Pin.Name != long {
		t.Errorf("255-byte name echoed as %q", ps.Pin.Name)
	}
}

// §9.5
func (s *suite) get(t *testing.T) {
	ps := s.c.Create(t, s.env.TokenA, map[string]any{"cid": RandomCID(), "name": s.name("get")})
	got := s.c.Get(t, s.env.TokenA, ps.RequestID)
	if got.RequestID != ps.RequestID || got.Created != ps.Created || got.Pin.CID != ps.Pin.CID {
		t.Errorf("GET returned %+v, want %+v", got, ps)
	}
	for _, id := range []string{uuid.NewString(), "not-an-id", "00000000-0000-0000-0000-000000000000", strings.ToUpper(uuid.NewString()), "x%2Fy"} {
		r := s.c.Do(t, http.MethodGet, "/pins/"+id, s.env.TokenA, nil)
		wantStatus(t, "GET /pins/"+id, r, http.StatusNotFound)
		if reason := r.Failure().Error.Reason; reason != "NOT_FOUND" {
			t.Errorf("GET /pins/%s: reason %q, want NOT_FOUND", id, reason)
		}
	}
	if s.env.TokenB != "" {
		r := s.c.Do(t, http.MethodGet, "/pins/"+ps.RequestID, s.env.TokenB, nil)
		wantStatus(t, "GET another org's pin", r, http.StatusNotFound)
	}
}

// §9.6 and §10.1 (no filter: only pinned).
func (s *suite) defaultList(t *testing.T) {
	name := s.name("default")
	p1 := s.c.Create(t, s.env.TokenA, map[string]any{"cid": RandomCID(), "name": name})
	p2 := s.c.Create(t, s.env.TokenA, map[string]any{"cid": RandomCID(), "name": name})
	p3 := s.c.Create(t, s.env.TokenA, map[string]any{"cid": RandomCID(), "name": name})
	s.setStatus(t, "A", p1.RequestID, "pinned")
	s.setStatus(t, "A", p3.RequestID, "pinned")
	// p2 stays queued.

	pr := s.c.ListRaw(t, s.env.TokenA, "")
	if len(pr.Results) > 10 {
		t.Errorf("default list returned %d results, want at most 10", len(pr.Results))
	}
	for _, r := range pr.Results {
		if r.Status != "pinned" {
			t.Errorf("default list returned %s with status %s; only pinned objects are listed without a status filter", r.RequestID, r.Status)
		}
	}
	assertNewestFirst(t, "default list", pr.Results)
	if len(pr.Results) < 2 || pr.Results[0].RequestID != p3.RequestID || pr.Results[1].RequestID != p1.RequestID {
		t.Errorf("default list starts %v, want the newest pinned objects %s, %s first", fmtIDs(pr.Results), p3.RequestID, p1.RequestID)
	}
	if slices.Contains(ids(pr.Results), p2.RequestID) {
		t.Errorf("default list contains queued pin %s", p2.RequestID)
	}
	pinned := s.c.List(t, s.env.TokenA, url.Values{"status": {"pinned"}, "limit": {"1"}})
	if pinned.Count != pr.Count {
		t.Errorf("default list count %d, status=pinned count %d; they must be equal", pr.Count, pinned.Count)
	}
	if len(pinned.Results) != 1 {
		t.Errorf("limit=1 returned %d results", len(pinned.Results))
	}
	if pr.Count < 2 {
		t.Errorf("default list count %d, want at least the 2 pinned objects just created", pr.Count)
	}
}

func assertNewestFirst(t *testing.T, what string, ps []PinStatus) {
	t.Helper()
	for i := 1; i < len(ps); i++ {
		if !ps[i].CreatedTime().Before(ps[i-1].CreatedTime()) {
			t.Errorf("%s: result %d (%s) is not strictly older than result %d (%s)", what, i, ps[i].Created, i-1, ps[i-1].Created)
		}
	}
}

// §9.7 and §10.1 (status=any, cid/name lookups see every status).
func (s *suite) statusFilter(t *testing.T) {
	name := s.name("status")
	tag := s.name("status-meta")
	meta, _ := json.Marshal(map[string]string{"apitest": tag})
	byStatus := map[string]PinStatus{}
	for _, st := range []string{"queued", "pinning", "pinned", "failed"} {
		ps := s.c.Create(t, s.env.TokenA, map[string]any{"cid": RandomCID(), "name": name, "meta": map[string]string{"apitest": tag}})
		if st != "queued" {
			s.setStatus(t, "A", ps.RequestID, st)
		}
		byStatus[st] = ps
	}
	list := func(q url.Values) PinResults {
		t.Helper()
		q.Set("meta", string(meta))
		q.Set("limit", "1000")
		return s.c.List(t, s.env.TokenA, q)
	}
	statusesOf := func(pr PinResults) []string {
		var out []string
		for _, r := range pr.Results {
			out = append(out, r.Status)
		}
		slices.Sort(out)
		return out
	}
	check := func(label string, pr PinResults, want ...string) {
		t.Helper()
		slices.Sort(want)
		if got := statusesOf(pr); !slices.Equal(got, want) || pr.Count != int64(len(want)) {
			t.Errorf("%s: count %d statuses %v, want %v", label, pr.Count, got, want)
		}
	}
	check("meta only (no status): only pinned", list(url.Values{}), "pinned")
	check("status=queued,pinning,pinned,failed", list(url.Values{"status": {"queued,pinning,pinned,failed"}}), "queued", "pinning", "pinned", "failed")
	check("status=any", list(url.Values{"status": {"any"}}), "queued", "pinning", "pinned", "failed")
	check("status=queued&status=failed (repeated)", list(url.Values{"status": {"queued", "failed"}}), "queued", "failed")
	check("status=pinning", list(url.Values{"status": {"pinning"}}), "pinning")
	check("status=failed,pinned", list(url.Values{"status": {"failed,pinned"}}), "failed", "pinned")

	// A name or cid lookup sees a pin that is still queued.
	pr := s.named(t, s.env.TokenA, name)
	if pr.Count != 4 {
		t.Errorf("name=%s without status: count %d, want all 4 statuses", name, pr.Count)
	}
	pr = s.c.List(t, s.env.TokenA, url.Values{"cid": {byStatus["queued"].Pin.CID}})
	wantIDs(t, "cid lookup of a queued pin without status", pr.Results, byStatus["queued"].RequestID)
	pr = s.named(t, s.env.TokenA, name, "status", "pinned")
	wantIDs(t, "name with status=pinned", pr.Results, byStatus["pinned"].RequestID)

	if st := byStatus["failed"]; st.RequestID != "" {
		got := s.c.Get(t, s.env.TokenA, st.RequestID)
		if got.Status != "failed" {
			t.Errorf("pin set to failed reads as %s", got.Status)
		}
	}

	for _, bad := range []string{"bogus", "pinned,bogus", "PINNED_X", "deleted"} {
		r := s.c.Do(t, http.MethodGet, "/pins?status="+url.QueryEscape(bad), s.env.TokenA, nil)
		wantStatus(t, "status="+bad, r, http.StatusBadRequest, "status")
	}
}

// §9.8
func (s *suite) cidFilter(t *testing.T) {
	name := s.name("cids")
	var cids, want []string
	for range 10 {
		ps := s.c.Create(t, s.env.TokenA, map[string]any{"cid": RandomCID(), "name": name})
		cids = append(cids, ps.Pin.CID)
		want = append(want, ps.RequestID)
	}
	slices.Reverse(want) // newest first
	one := s.c.List(t, s.env.TokenA, url.Values{"cid": {cids[3]}})
	wantIDs(t, "cid=1 CID", one.Results, want[6])

	comma := s.c.List(t, s.env.TokenA, url.Values{"cid": {strings.Join(cids, ",")}})
	wantIDs(t, "cid=10 CIDs comma-separated", comma.Results, want...)
	if comma.Count != 10 {
		t.Errorf("cid=10 CIDs: count %d, want 10", comma.Count)
	}
	rep := s.c.List(t, s.env.TokenA, url.Values{"cid": cids})
	wantIDs(t, "cid=10 CIDs repeated", rep.Results, want...)
	mixed := s.c.List(t, s.env.TokenA, url.Values{"cid": {strings.Join(cids[:5], ","), cids[5], strings.Join(cids[6:], ",")}})
	wantIDs(t, "cid=10 CIDs mixed forms", mixed.Results, want...)
	lim := s.c.List(t, s.env.TokenA, url.Values{"cid": {strings.Join(cids, ",")}, "limit": {"3"}})
	if lim.Count != 10 || len(lim.Results) != 3 {
		t.Errorf("cid=10 CIDs limit=3: count %d, %d results; want 10 and 3", lim.Count, len(lim.Results))
	}

	eleven := append(slices.Clone(cids), RandomCID())
	r := s.c.Do(t, http.MethodGet, "/pins?"+url.Values{"cid": {strings.Join(eleven, ",")}}.Encode(), s.env.TokenA, nil)
	wantStatus(t, "cid=11 CIDs comma-separated", r, http.StatusBadRequest, "10")
	r = s.c.Do(t, http.MethodGet, "/pins?"+url.Values{"cid": eleven}.Encode(), s.env.TokenA, nil)
	wantStatus(t, "cid=11 CIDs repeated", r, http.StatusBadRequest, "10")
	r = s.c.Do(t, http.MethodGet, "/pins?cid=not-a-cid", s.env.TokenA, nil)
	wantStatus(t, "cid=not-a-cid", r, http.StatusBadRequest, "cid")
	none := s.c.List(t, s.env.TokenA, url.Values{"cid": {RandomCID()}})
	if none.Count != 0 || len(none.Results) != 0 {
		t.Errorf("cid of nothing: count %d, results %d", none.Count, len(none.Results))
	}
}

// §9.9
func (s *suite) nameMatch(t *testing.T) {
	p := s.name("match")
	mk := func(n string) string {
		return s.c.Create(t, s.env.TokenA, map[string]any{"cid": RandomCID(), "name": n}).RequestID
	}
	alpha := mk(p + "-Report-Alpha")
	beta := mk(p + "-report-beta")
	under := mk(p + "-x_y")
	mk(p + "-xzy")
	pct := mk(p + "-50%")
	mk(p + "-500")
	cases := []struct {
		label, name, match string
		want               []string // newest first
	}{
		{"exact hit", p + "-Report-Alpha", "exact", []string{alpha}},
		{"default is exact", p + "-Report-Alpha", "", []string{alpha}},
		{"exact case miss", p + "-report-alpha", "exact", nil},
		{"exact substring miss", p + "-Report", "exact", nil},
		{"iexact hit", strings.ToUpper(p + "-report-alpha"), "iexact", []string{alpha}},
		{"partial substring", p + "-Report", "partial", []string{alpha}},
		{"partial case-sensitive", p + "-REPORT", "partial", nil},
		{"ipartial substring", strings.ToUpper(p + "-REPORT"), "ipartial", []string{beta, alpha}},
		{"partial treats _ literally", p + "-x_y", "partial", []string{under}},
		{"partial treats % literally", p + "-50%", "partial", []string{pct}},
		{"ipartial treats _ literally", strings.ToUpper(p + "-X_Y"), "ipartial", []string{under}},
	}
	for _, tc := range cases {
		q := url.Values{"name": {tc.name}}
		if tc.match != "" {
			q.Set("match", tc.match)
		}
		pr := s.c.List(t, s.env.TokenA, q)
		wantIDs(t, tc.label, pr.Results, tc.want...)
		if pr.Count != int64(len(tc.want)) {
			t.Errorf("%s: count %d, want %d", tc.label, pr.Count, len(tc.want))
		}
	}
	r := s.c.Do(t, http.MethodGet, "/pins?"+url.Values{"name": {p}, "match": {"fuzzy"}}.Encode(), s.env.TokenA, nil)
	wantStatus(t, "match=fuzzy", r, http.StatusBadRequest, "match")
	r = s.c.Do(t, http.MethodGet, "/pins?match=fuzzy", s.env.TokenA, nil)
	wantStatus(t, "match=fuzzy without name", r, http.StatusBadRequest, "match")
	r = s.c.Do(t, http.MethodGet, "/pins?"+url.Values{"name": {strings.Repeat("n", 256)}}.Encode(), s.env.TokenA, nil)
	wantStatus(t, "name filter of 256 bytes", r, http.StatusBadRequest, "255")
}

// §9.10
func (s *suite) metaFilter(t *testing.T) {
	run := s.name("meta")
	m1 := s.c.Create(t, s.env.TokenA, map[string]any{"cid": RandomCID(), "meta": map[string]string{"a": "1", "run": run, "extra": "y"}})
	m2 := s.c.Create(t, s.env.TokenA, map[string]any{"cid": RandomCID(), "meta": map[string]string{"a": "2", "run": run}})
	m3 := s.c.Create(t, s.env.TokenA, map[string]any{"cid": RandomCID(), "meta": map[string]string{"run": run}})
	metaQ := func(m map[string]string) url.Values {
		b, _ := json.Marshal(m)
		return url.Values{"meta": {string(b)}, "status": {"any"}}
	}
	pr := s.c.List(t, s.env.TokenA, metaQ(map[string]string{"a": "1", "run": run}))
	wantIDs(t, `meta={"a":"1","run":…}`, pr.Results, m1.RequestID)
	pr = s.c.List(t, s.env.TokenA, metaQ(map[string]string{"run": run}))
	wantIDs(t, `meta={"run":…}`, pr.Results, m3.RequestID, m2.RequestID, m1.RequestID)
	pr = s.c.List(t, s.env.TokenA, metaQ(map[string]string{"a": "3", "run": run}))
	wantIDs(t, `meta={"a":"3","run":…}`, pr.Results)
	// Kubo-style encoding (url.Values percent-encodes the JSON) and the raw form from the spec's example.
	raw := "status=any&meta=" + url.QueryEscape(`{"run":"`+run+`","extra":"y"}`)
	pr = s.c.ListRaw(t, s.env.TokenA, raw)
	wantIDs(t, "meta with extra=y", pr.Results, m1.RequestID)

	for _, bad := range []string{`not json`, `["a"]`, `{"a":1}`, `{"a":null}`, `"a"`, `{"a":"1"`} {
		r := s.c.Do(t, http.MethodGet, "/pins?meta="+url.QueryEscape(bad), s.env.TokenA, nil)
		wantStatus(t, "meta="+bad, r, http.StatusBadRequest, "meta")
	}
}

// §9.11 and §10.2 (any RFC 3339 form, exclusive bounds).
func (s *suite) beforeAfter(t *testing.T) {
	name := s.name("time")
	var pins []PinStatus
	for range 3 {
		pins = append(pins, s.c.Create(t, s.env.TokenA, map[string]any{"cid": RandomCID(), "name": name}))
		time.Sleep(3 * time.Millisecond)
	}
	c2 := pins[1].CreatedTime()
	expect := func(pred func(time.Time) bool) []string {
		var out []string
		for i := len(pins) - 1; i >= 0; i-- {
			if pred(pins[i].CreatedTime()) {
				out = append(out, pins[i].RequestID)
			}
		}
		return out
	}
	plus1 := time.FixedZone("+01:00", 3600)
	minus5 := time.FixedZone("-05:00", -5*3600)
	forms := []struct {
		label, value string
		at           time.Time
	}{
		{"as emitted (ms, Z)", pins[1].Created, c2},
		{"Go RFC3339Nano", c2.Format(time.RFC3339Nano), c2},
		{"9 digits", c2.Format("2006-01-02T15:04:05.000000000Z07:00"), c2},
		{"6 digits", c2.Format("2006-01-02T15:04:05.000000Z07:00"), c2},
		{"+00:00 offset", c2.Format("2006-01-02T15:04:05.000") + "+00:00", c2},
		{"+01:00 offset", c2.In(plus1).Format("2006-01-02T15:04:05.000Z07:00"), c2},
		{"-05:00 offset", c2.In(minus5).Format("2006-01-02T15:04:05.000000Z07:00"), c2},
		{"no fraction", c2.Truncate(time.Second).Format(time.RFC3339), c2.Truncate(time.Second)},
		{"1 ns after", c2.Add(time.Nanosecond).Format(time.RFC3339Nano), c2.Add(time.Nanosecond)},
	}
	for _, f := range forms {
		pr := s.named(t, s.env.TokenA, name, "before", f.value)
		wantIDs(t, "before="+f.value+" ("+f.label+")", pr.Results, expect(func(c time.Time) bool { return c.Before(f.at) })...)
		pr = s.named(t, s.env.TokenA, name, "after", f.value)
		wantIDs(t, "after="+f.value+" ("+f.label+")", pr.Results, expect(func(c time.Time) bool { return c.After(f.at) })...)
	}
	// Strictness, stated plainly.
	pr := s.named(t, s.env.TokenA, name, "before", pins[1].Created)
	wantIDs(t, "before=created of the second pin", pr.Results, pins[0].RequestID)
	pr = s.named(t, s.env.TokenA, name, "after", pins[1].Created)
	wantIDs(t, "after=created of the second pin", pr.Results, pins[2].RequestID)
	pr = s.named(t, s.env.TokenA, name, "after", pins[0].Created, "before", pins[2].Created)
	wantIDs(t, "after=first&before=third", pr.Results, pins[1].RequestID)

	// An unencoded '+' in the offset arrives as a space.
	unenc := c2.In(plus1).Format("2006-01-02T15:04:05.000Z07:00")
	raw := "name=" + url.QueryEscape(name) + "&before=" + unenc
	pr = s.c.ListRaw(t, s.env.TokenA, raw)
	wantIDs(t, "before with an unencoded '+'", pr.Results, pins[0].RequestID)

	for _, bad := range []string{"yesterday", "2026-13-01T00:00:00Z", "1700000000", "2026-01-02"} {
		r := s.c.Do(t, http.MethodGet, "/pins?before="+url.QueryEscape(bad), s.env.TokenA, nil)
		wantStatus(t, "before="+bad, r, http.StatusBadRequest, "before")
	}
}

// §9.12, §5.2/5.3 and Kubo's (boxo's) pagination loop, over pins created concurrently (same millisecond).
func (s *suite) pagination(t *testing.T) {
	const n = 25
	name := s.name("page")
	var (
		mu      sync.Mutex
		created []PinStatus
		wg      sync.WaitGroup
	)
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := s.c.DoErr(t, http.MethodPost, "/pins", s.env.TokenA, map[string]any{"cid": RandomCID(), "name": name})
			if err != nil {
				t.Error(err)
				return
			}
			if r.Status != http.StatusAccepted {
				t.Errorf("concurrent create: status %d: %s", r.Status, r.Body)
				return
			}
			var ps PinStatus
			if err := json.Unmarshal(r.Body, &ps); err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			created = append(created, ps)
			mu.Unlock()
		}()
	}
	wg.Wait()
	if len(created) != n {
		t.Fatalf("created %d of %d pins", len(created), n)
	}
	seen := map[string]string{}
	for _, ps := range created {
		if other, dup := seen[ps.Created]; dup {
			t.Errorf("pins %s and %s share created %s; created must be unique per org", other, ps.RequestID, ps.Created)
		}
		seen[ps.Created] = ps.RequestID
	}

	// boxo's Ls: status always sent, limit 10, before = last result's created re-encoded with RFC3339Nano; stop
	// when count == len(results); count != 0 with no results is an error.
	walk := func(label string, reformat func(PinStatus) string) {
		t.Helper()
		q := url.Values{"name": {name}, "status": {"queued,pinning,pinned,failed"}, "limit": {"10"}}
		var got []PinStatus
		var counts []int64
		for page := 0; ; page++ {
			if page > n {
				t.Fatalf("%s: no end after %d pages", label, page)
			}
			pr := s.c.List(t, s.env.TokenA, q)
			counts = append(counts, pr.Count)
			got = append(got, pr.Results...)
			if pr.Count == int64(len(pr.Results)) {
				break
			}
			if len(pr.Results) == 0 {
				t.Fatalf("%s: PinResults.count=%d but no PinResults.results", label, pr.Count)
			}
			q.Set("before", reformat(pr.Results[len(pr.Results)-1]))
		}
		if !slices.Equal(counts, []int64{25, 15, 5}) {
			t.Errorf("%s: page counts %v, want [25 15 5]", label, counts)
		}
		uniq := map[string]bool{}
		for _, ps := range got {
			uniq[ps.RequestID] = true
		}
		if len(got) != n || len(uniq) != n {
			t.Errorf("%s: walked %d results, %d unique; want %d", label, len(got), len(uniq), n)
		}
		for _, ps := range created {
			if !uniq[ps.RequestID] {
				t.Errorf("%s: pin %s (created %s) was skipped", label, ps.RequestID, ps.Created)
			}
		}
		assertNewestFirst(t, label, got)
	}
	walk("Kubo (RFC3339Nano)", func(ps PinStatus) string { return ps.CreatedTime().Format(time.RFC3339Nano) })
	walk("JS (created string as is)", func(ps PinStatus) string { return ps.Created })

	// The compliance checker: default limit, second page disjoint from the first.
	q := url.Values{"name": {name}}
	first := s.c.List(t, s.env.TokenA, q)
	if len(first.Results) != 10 || first.Count != n {
		t.Errorf("first page: %d results count %d; want 10 and %d", len(first.Results), first.Count, n)
	}
	if len(first.Results) > 0 {
		q.Set("before", first.Results[len(first.Results)-1].Created)
		second := s.c.List(t, s.env.TokenA, q)
		for _, id := range ids(second.Results) {
			if slices.Contains(ids(first.Results), id) {
				t.Errorf("second page repeats %s from the first", id)
			}
		}
		if second.Count != n-10 {
			t.Errorf("second page count %d, want %d (count honours before)", second.Count, n-10)
		}
	}
}

// §9.13
func (s *suite) limit(t *testing.T) {
	name := s.name("limit")
	for range 3 {
		s.c.Create(t, s.env.TokenA, map[string]any{"cid": RandomCID(), "name": name})
	}
	for _, bad := range []string{"0", "1001", "-1", "abc", "1.5", "99999999999999999999"} {
		r := s.c.Do(t, http.MethodGet, "/pins?limit="+url.QueryEscape(bad), s.env.TokenA, nil)
		wantStatus(t, "limit="+bad, r, http.StatusBadRequest, "limit")
	}
	pr := s.named(t, s.env.TokenA, name, "limit", "1000")
	if len(pr.Results) != 3 || pr.Count != 3 {
		t.Errorf("limit=1000: %d results count %d, want 3", len(pr.Results), pr.Count)
	}
	pr = s.named(t, s.env.TokenA, name, "limit", "1")
	if len(pr.Results) != 1 || pr.Count != 3 {
		t.Errorf("limit=1: %d results count %d, want 1 result and count 3 (count ignores limit)", len(pr.Results), pr.Count)
	}
}

// §9.14
func (s *suite) replace(t *testing.T) {
	name := s.name("replace")
	old := s.c.Create(t, s.env.TokenA, map[string]any{"cid": RandomCID(), "name": name})
	newCID := RandomCID()
	nw := s.c.Replace(t, s.env.TokenA, old.RequestID, map[string]any{"cid": newCID, "name": name, "meta": map[string]string{"v": "2"}})
	if nw.RequestID == old.RequestID {
		t.Errorf("replace kept requestid %s; it must issue a new one", old.RequestID)
	}
	if nw.Pin.CID != newCID || nw.Pin.Name != name || nw.Pin.Meta["v"] != "2" {
		t.Errorf("replace echoed %+v, want cid %s name %s meta v=2", nw.Pin, newCID, name)
	}
	if !slices.Contains([]string{"queued", "pinning", "pinned"}, nw.Status) {
		t.Errorf("status %q after replace", nw.Status)
	}
	if !nw.CreatedTime().After(old.CreatedTime()) {
		t.Errorf("new created %s is not after the old %s", nw.Created, old.Created)
	}
	r := s.c.Do(t, http.MethodGet, "/pins/"+old.RequestID, s.env.TokenA, nil)
	wantStatus(t, "GET the replaced pin", r, http.StatusNotFound)
	s.c.Get(t, s.env.TokenA, nw.RequestID)
	pr := s.named(t, s.env.TokenA, name)
	wantIDs(t, "list after replace", pr.Results, nw.RequestID)
	if pr.Count != 1 {
		t.Errorf("count after replace %d, want 1", pr.Count)
	}
	pr = s.c.List(t, s.env.TokenA, url.Values{"cid": {old.Pin.CID}})
	wantIDs(t, "old cid after replace", pr.Results)

	// Same CID, new name: still a new object.
	again := s.c.Replace(t, s.env.TokenA, nw.RequestID, map[string]any{"cid": newCID, "name": name + "-renamed"})
	if again.RequestID == nw.RequestID || again.Pin.CID != newCID {
		t.Errorf("same-CID replace: %+v", again)
	}

	// Replacing what is gone or never existed is 404; an invalid body is 400 and leaves the pin alone.
	for _, id := range []string{old.RequestID, uuid.NewString(), "not-an-id"} {
		r := s.c.Do(t, http.MethodPost, "/pins/"+id, s.env.TokenA, map[string]any{"cid": RandomCID()})
		wantStatus(t, "replace "+id, r, http.StatusNotFound)
	}
	r = s.c.Do(t, http.MethodPost, "/pins/"+again.RequestID, s.env.TokenA, map[string]any{"name": "no cid"})
	wantStatus(t, "replace with an invalid body", r, http.StatusBadRequest)
	s.c.Get(t, s.env.TokenA, again.RequestID)
}

// §9.15
func (s *suite) delete(t *testing.T) {
	name := s.name("delete")
	keep := s.c.Create(t, s.env.TokenA, map[string]any{"cid": RandomCID(), "name": name})
	gone := s.c.Create(t, s.env.TokenA, map[string]any{"cid": RandomCID(), "name": name})
	if n := s.named(t, s.env.TokenA, name).Count; n != 2 {
		t.Fatalf("count before delete %d, want 2", n)
	}
	r := s.c.Expect(t, http.StatusAccepted, http.MethodDelete, "/pins/"+gone.RequestID, s.env.TokenA, nil)
	if len(r.Body) != 0 {
		t.Errorf("DELETE answered with a body: %q", r.Body)
	}
	r = s.c.Do(t, http.MethodGet, "/pins/"+gone.RequestID, s.env.TokenA, nil)
	wantStatus(t, "GET after DELETE", r, http.StatusNotFound)
	pr := s.named(t, s.env.TokenA, name)
	wantIDs(t, "list right after DELETE", pr.Results, keep.RequestID)
	if pr.Count != 1 {
		t.Errorf("count right after DELETE %d, want 1", pr.Count)
	}
	r = s.c.Do(t, http.MethodDelete, "/pins/"+gone.RequestID, s.env.TokenA, nil)
	wantStatus(t, "DELETE twice", r, http.StatusNotFound)
	for _, id := range []string{uuid.NewString(), "not-an-id"} {
		r = s.c.Do(t, http.MethodDelete, "/pins/"+id, s.env.TokenA, nil)
		wantStatus(t, "DELETE "+id, r, http.StatusNotFound)
	}
}

// §9.16: every response is JSON (checked by ValidateResponse on each); results is [] when empty.
func (s *suite) contentType(t *testing.T) {
	r := s.c.Expect(t, http.StatusOK, http.MethodGet, "/pins?"+url.Values{"name": {s.name("nothing")}}.Encode(), s.env.TokenA, nil)
	var raw struct {
		Count   *int64          `json:"count"`
		Results json.RawMessage `json:"results"`
	}
	if err := json.Unmarshal(r.Body, &raw); err != nil {
		t.Fatal(err)
	}
	if string(raw.Results) != "[]" || raw.Count == nil || *raw.Count != 0 {
		t.Errorf("empty list body %s, want count 0 and results []", r.Body)
	}
	for _, rq := range []struct {
		method, path string
		status       int
	}{
		{http.MethodGet, "/no-such-endpoint", http.StatusNotFound},
		{http.MethodGet, "/pins/" + uuid.NewString() + "/extra", http.StatusNotFound},
		{http.MethodPut, "/pins", http.StatusMethodNotAllowed},
		{http.MethodPatch, "/pins/" + uuid.NewString(), http.StatusMethodNotAllowed},
	} {
		r := s.c.Do(t, rq.method, rq.path, s.env.TokenA, nil)
		wantStatus(t, rq.method+" "+rq.path, r, rq.status)
	}
}

// §10.2
func (s *suite) createdIncreasing(t *testing.T) {
	var prev PinStatus
	for i := range 8 {
		ps := s.c.Create(t, s.env.TokenA, map[string]any{"cid": RandomCID(), "name": s.name("created")})
		if !createdRE.MatchString(ps.Created) {
			t.Errorf("created %q is not millisecond UTC", ps.Created)
		}
		if i > 0 && !ps.CreatedTime().After(prev.CreatedTime()) {
			t.Errorf("created %s is not after the previous %s", ps.Created, prev.Created)
		}
		prev = ps
	}
}

// §10.7
func (s *suite) metaLimits(t *testing.T) {
	name := s.name("metalimits")
	manyKeys := func(n int) map[string]string {
		m := map[string]string{}
		for i := range n {
			m[fmt.Sprintf("k%03d", i)] = "v"
		}
		return m
	}
	big := map[string]string{}
	for i := range 20 {
		big[fmt.Sprintf("k%02d", i)] = strings.Repeat("v", 1000)
	}
	cases := []struct {
		label   string
		meta    map[string]string
		mention string
	}{
		{"65 keys", manyKeys(65), "64"},
		{"key of 129 bytes", map[string]string{strings.Repeat("k", 129): "v"}, "128"},
		{"value of 1025 bytes", map[string]string{"k": strings.Repeat("v", 1025)}, "1024"},
		{"object over 16 KiB", big, "16384"},
		{"empty key", map[string]string{"": "v"}, "key"},
	}
	for _, tc := range cases {
		r := s.c.Do(t, http.MethodPost, "/pins", s.env.TokenA, map[string]any{"cid": RandomCID(), "name": name, "meta": tc.meta})
		wantStatus(t, tc.label, r, http.StatusBadRequest, tc.mention)
	}
	if n := s.named(t, s.env.TokenA, name).Count; n != 0 {
		t.Errorf("meta over the limits created %d pins", n)
	}
	// At the limits: accepted.
	at := manyKeys(63)
	at[strings.Repeat("k", 128)] = strings.Repeat("v", 1024)
	ps := s.c.Create(t, s.env.TokenA, map[string]any{"cid": RandomCID(), "name": name, "meta": at})
	if len(ps.Pin.Meta) != 64 {
		t.Errorf("meta at the limits echoed with %d keys, want 64", len(ps.Pin.Meta))
	}
	// The meta filter has the same limits.
	b, _ := json.Marshal(manyKeys(65))
	r := s.c.Do(t, http.MethodGet, "/pins?meta="+url.QueryEscape(string(b)), s.env.TokenA, nil)
	wantStatus(t, "meta filter with 65 keys", r, http.StatusBadRequest, "64")
}

// §10.5
func (s *suite) originsLenient(t *testing.T) {
	name := s.name("origins")
	const peer = "12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN"
	var origins []any
	for i := range 25 {
		origins = append(origins, fmt.Sprintf("/ip4/198.51.100.%d/tcp/4001/p2p/%s", i+1, peer))
	}
	// What Kubo really sends, plus junk of every kind.
	origins = append(origins,
		"/ip4/127.0.0.1/udp/4001/quic-v1/webtransport/certhash/uEiAkH5a4DPGKUuOBjYw0CgwjvcJCJMD2K_1aluKR_tpevQ/p2p/"+peer,
		"/ip4/192.168.1.10/udp/4001/webrtc-direct/certhash/uEiAkH5a4DPGKUuOBjYw0CgwjvcJCJMD2K_1aluKR_tpevQ/p2p/"+peer,
		"not-a-multiaddr", "", 42, nil, map[string]any{"addr": "x"}, []any{"nested"},
		"/ip4/999.1.1.1/tcp/1", "/ip4/198.51.100.1/tcp/4001/p2p/"+peer)
	bodies := []any{
		map[string]any{"cid": RandomCID(), "name": name, "origins": origins},
		map[string]any{"cid": RandomCID(), "name": name, "origins": []string{"junk", "/garbage/"}},
		map[string]any{"cid": RandomCID(), "name": name, "origins": "/ip4/198.51.100.1/tcp/4001/p2p/" + peer},
		map[string]any{"cid": RandomCID(), "name": name, "origins": map[string]any{"0": "x"}},
		map[string]any{"cid": RandomCID(), "name": name, "origins": nil},
		map[string]any{"cid": RandomCID(), "name": name, "origins": 7},
	}
	for i, b := range bodies {
		ps := s.c.Create(t, s.env.TokenA, b)
		if len(ps.Pin.Origins) > 20 {
			t.Errorf("body %d: %d origins echoed, at most 20 allowed", i, len(ps.Pin.Origins))
		}
		for _, o := range ps.Pin.Origins {
			if !strings.HasPrefix(o, "/") || strings.Contains(o, "999.1.1.1") {
				t.Errorf("body %d: junk origin %q echoed", i, o)
			}
		}
	}
	if n := s.named(t, s.env.TokenA, name).Count; n != int64(len(bodies)) {
		t.Errorf("%d pins with lenient origins listed, want %d", n, len(bodies))
	}
}

// §10.10
func (s *suite) cidSpellings(t *testing.T) {
	v0, v1, raw := CIDSpellings()
	p0 := s.c.Create(t, s.env.TokenA, map[string]any{"cid": v0})
	if p0.Pin.CID != v0 {
		t.Errorf("v0 cid echoed as %q, want %q", p0.Pin.CID, v0)
	}
	for _, spelling := range []string{v0, v1, raw} {
		pr := s.c.List(t, s.env.TokenA, url.Values{"cid": {spelling}})
		wantIDs(t, "cid="+spelling+" finds the v0 pin", pr.Results, p0.RequestID)
		if len(pr.Results) == 1 && pr.Results[0].Pin.CID != v0 {
			t.Errorf("listed pin cid %q, want the submitted %q", pr.Results[0].Pin.CID, v0)
		}
	}
	w0, w1, _ := CIDSpellings()
	p1 := s.c.Create(t, s.env.TokenA, map[string]any{"cid": w1})
	pr := s.c.List(t, s.env.TokenA, url.Values{"cid": {w0}})
	wantIDs(t, "cid=v0 finds the v1 pin", pr.Results, p1.RequestID)
	if len(pr.Results) == 1 && pr.Results[0].Pin.CID != w1 {
		t.Errorf("listed pin cid %q, want the submitted %q", pr.Results[0].Pin.CID, w1)
	}
}

// §10.3
func (s *suite) countAfterWrites(t *testing.T) {
	name := s.name("count")
	count := func(want int64, after string) {
		t.Helper()
		if n := s.named(t, s.env.TokenA, name).Count; n != want {
			t.Errorf("count right after %s: %d, want %d", after, n, want)
		}
		pr := s.c.List(t, s.env.TokenA, url.Values{"name": {name}, "status": {"queued,pinning,pinned,failed"}, "limit": {"1"}})
		if pr.Count != want {
			t.Errorf("limit=1 count right after %s: %d, want %d", after, pr.Count, want)
		}
	}
	a := s.c.Create(t, s.env.TokenA, map[string]any{"cid": RandomCID(), "name": name})
	count(1, "the first create")
	s.c.Create(t, s.env.TokenA, map[string]any{"cid": RandomCID(), "name": name})
	count(2, "the second create")
	na := s.c.Replace(t, s.env.TokenA, a.RequestID, map[string]any{"cid": RandomCID(), "name": name})
	count(2, "a replace")
	s.c.Expect(t, http.StatusAccepted, http.MethodDelete, "/pins/"+na.RequestID, s.env.TokenA, nil)
	count(1, "a delete")
}

// §10.8: 409 means insufficient funds only; racing writes on one pin are 404 or 412, never 409.
func (s *suite) noConflict409(t *testing.T) {
	name := s.name("race")
	p := s.c.Create(t, s.env.TokenA, map[string]any{"cid": RandomCID(), "name": name})
	race := func(label string, do func() (Response, error)) {
		t.Helper()
		const n = 8
		statuses := make([]int, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				r, err := do()
				if err != nil {
					t.Error(err)
					return
				}
				statuses[i] = r.Status
			}()
		}
		wg.Wait()
		ok := 0
		for _, st := range statuses {
			switch st {
			case http.StatusAccepted:
				ok++
			case http.StatusNotFound, http.StatusPreconditionFailed:
			default:
				t.Errorf("%s: status %d; racing writes answer 202, 404 or 412 (never 409)", label, st)
			}
		}
		if ok != 1 {
			t.Errorf("%s: %d writes succeeded (%v), want exactly 1", label, ok, statuses)
		}
	}
	race("concurrent replaces of one pin", func() (Response, error) {
		return s.c.DoErr(t, http.MethodPost, "/pins/"+p.RequestID, s.env.TokenA, map[string]any{"cid": RandomCID(), "name": name})
	})
	pr := s.named(t, s.env.TokenA, name)
	if pr.Count != 1 || len(pr.Results) != 1 {
		t.Fatalf("after racing replaces: count %d, want exactly 1 live pin", pr.Count)
	}
	live := pr.Results[0].RequestID
	race("concurrent deletes of one pin", func() (Response, error) {
		return s.c.DoErr(t, http.MethodDelete, "/pins/"+live, s.env.TokenA, nil)
	})
	if n := s.named(t, s.env.TokenA, name).Count; n != 0 {
		t.Errorf("after racing deletes: count %d, want 0", n)
	}
}

// Scope misuse: a read-only token reads but cannot write.
func (s *suite) readOnly(t *testing.T) {
	if s.env.ReadOnlyToken == "" {
		t.Skip("Env.ReadOnlyToken is not provided")
	}
	name := s.name("readonly")
	p := s.c.Create(t, s.env.TokenA, map[string]any{"cid": RandomCID(), "name": name})
	ro := s.env.ReadOnlyToken
	s.c.Get(t, ro, p.RequestID)
	if n := s.named(t, ro, name).Count; n != 1 {
		t.Errorf("read-only token lists %d pins named %s, want 1", n, name)
	}
	for _, rq := range []struct {
		method, path string
		body         any
	}{
		{http.MethodPost, "/pins", map[string]any{"cid": RandomCID(), "name": name}},
		{http.MethodPost, "/pins/" + p.RequestID, map[string]any{"cid": RandomCID(), "name": name}},
		{http.MethodDelete, "/pins/" + p.RequestID, nil},
	} {
		r := s.c.Do(t, rq.method, rq.path, ro, rq.body)
		wantStatus(t, "read-only "+rq.method+" "+rq.path, r, http.StatusForbidden, "pins:write")
	}
	got := s.c.Get(t, s.env.TokenA, p.RequestID)
	if got.RequestID != p.RequestID {
		t.Errorf("pin changed after refused writes: %+v", got)
	}
	if n := s.named(t, s.env.TokenA, name).Count; n != 1 {
		t.Errorf("after refused writes %d pins named %s, want 1", n, name)
	}
}

// Cross-org isolation: org B cannot see or touch org A's pins, and foreign ids look missing.
func (s *suite) isolation(t *testing.T) {
	s.needB(t)
	name := s.name("isolation")
	c := RandomCID()
	p := s.c.Create(t, s.env.TokenA, map[string]any{"cid": c, "name": name, "meta": map[string]string{"iso": name}})
	b := s.env.TokenB
	for _, rq := range []struct {
		method, path string
		body         any
	}{
		{http.MethodGet, "/pins/" + p.RequestID, nil},
		{http.MethodPost, "/pins/" + p.RequestID, map[string]any{"cid": RandomCID(), "name": name}},
		{http.MethodDelete, "/pins/" + p.RequestID, nil},
	} {
		r := s.c.Do(t, rq.method, rq.path, b, rq.body)
		wantStatus(t, "org B "+rq.method+" org A's pin", r, http.StatusNotFound)
	}
	meta, _ := json.Marshal(map[string]string{"iso": name})
	for _, q := range []url.Values{
		{"name": {name}},
		{"cid": {c}},
		{"meta": {string(meta)}, "status": {"any"}},
		{"name": {s.run}, "match": {"partial"}, "status": {"any"}, "limit": {"1000"}},
	} {
		pr := s.c.List(t, b, q)
		if pr.Count != 0 || len(pr.Results) != 0 {
			t.Errorf("org B lists %d of org A's pins with %s", pr.Count, q.Encode())
		}
	}
	// The org B token works: it sees its own pin with the same name and CID, and org A does not.
	pb := s.c.Create(t, b, map[string]any{"cid": c, "name": name})
	pr := s.c.List(t, b, url.Values{"name": {name}})
	wantIDs(t, "org B lists its own pin", pr.Results, pb.RequestID)
	pr = s.c.List(t, s.env.TokenA, url.Values{"name": {name}})
	wantIDs(t, "org A lists only its own pin", pr.Results, p.RequestID)
	r := s.c.Do(t, http.MethodGet, "/pins/"+pb.RequestID, s.env.TokenA, nil)
	wantStatus(t, "org A GET org B's pin", r, http.StatusNotFound)
	got := s.c.Get(t, s.env.TokenA, p.RequestID)
	if got.Pin.CID != c || got.Pin.Name != name {
		t.Errorf("org A's pin changed: %+v", got)
	}
}

// Extension: a POST retried with the same Idempotency-Key (a client that lost the response) returns the
// original pin instead of creating a second one; the key reused for a different pin is a 400.
func (s *suite) idempotencyKey(t *testing.T) {
	c := RandomCID()
	name := s.name("idem")
	key := "retry-" + randomHex(8)
	first := decode[PinStatus](t, s.c.Expect(t, http.StatusAccepted, http.MethodPost, "/pins", s.env.TokenA,
		map[string]any{"cid": c, "name": name}, "Idempotency-Key", key))
	again := decode[PinStatus](t, s.c.Expect(t, http.StatusAccepted, http.MethodPost, "/pins", s.env.TokenA,
		map[string]any{"cid": c, "name": name}, "Idempotency-Key", key))
	if again.RequestID != first.RequestID || again.Created != first.Created {
		t.Errorf("retry with the same Idempotency-Key created %s (%s), want the original %s (%s)",
			again.RequestID, again.Created, first.RequestID, first.Created)
	}
	if n := s.named(t, s.env.TokenA, name).Count; n != 1 {
		t.Errorf("two POSTs with one Idempotency-Key left %d pins, want 1", n)
	}
	r := s.c.Do(t, http.MethodPost, "/pins", s.env.TokenA, map[string]any{"cid": RandomCID(), "name": name},
		"Idempotency-Key", key)
	wantStatus(t, "Idempotency-Key reused for another pin", r, http.StatusBadRequest, "Idempotency-Key")
	// Keys are per organisation: the same key in another org is that org's own request.
	if s.env.TokenB != "" {
		other := decode[PinStatus](t, s.c.Expect(t, http.StatusAccepted, http.MethodPost, "/pins", s.env.TokenB,
			map[string]any{"cid": c, "name": name}, "Idempotency-Key", key))
		if other.RequestID == first.RequestID {
			t.Errorf("the same Idempotency-Key in two organisations gave one requestid %s", other.RequestID)
		}
	}
}
