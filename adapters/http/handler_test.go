package httpapi_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	httpapi "github.com/anchorage-pin/anchorage/adapters/http"
	"github.com/anchorage-pin/anchorage/adapters/http/internal/memfake"
	"github.com/anchorage-pin/anchorage/domain"
	"github.com/anchorage-pin/anchorage/projections"
)

var createdRE = regexp.MustCompile(`^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$`)

func TestNewValidatesConfig(t *testing.T) {
	b := memfake.New()
	t.Cleanup(b.Close)
	full := b.Config()
	if _, err := httpapi.New(full); err != nil {
		t.Fatalf("complete config rejected: %v", err)
	}
	for _, tc := range []struct {
		field string
		clear func(*httpapi.Config)
	}{
		{"Auth", func(c *httpapi.Config) { c.Auth = nil }},
		{"Pins", func(c *httpapi.Config) { c.Pins = nil }},
		{"Reader", func(c *httpapi.Config) { c.Reader = nil }},
		{"Watermark", func(c *httpapi.Config) { c.Watermark = nil }},
		{"Delegates", func(c *httpapi.Config) { c.Delegates = nil }},
		{"Ready", func(c *httpapi.Config) { c.Ready = nil }},
	} {
		cfg := full
		tc.clear(&cfg)
		_, err := httpapi.New(cfg)
		if err == nil || !strings.Contains(err.Error(), tc.field) {
			t.Errorf("without %s: error %v, want one naming it", tc.field, err)
		}
	}
	cfg := full
	cfg.MaxBodyBytes = -1
	if _, err := httpapi.New(cfg); err == nil {
		t.Error("negative MaxBodyBytes accepted")
	}
}

func TestNewTwiceOnOneRegistry(t *testing.T) {
	h := newHarness(t)
	if _, err := httpapi.New(h.cfg); err != nil {
		t.Fatalf("second New on the same registry: %v", err)
	}
}

func TestOperationalEndpoints(t *testing.T) {
	var notReady error
	h := newHarness(t, func(c *httpapi.Config) {
		c.Ready = memfake.ReadyFunc(func(context.Context) error { return notReady })
	})
	r := h.do(http.MethodGet, "/healthz", "", "")
	if r.Status != 200 || strings.TrimSpace(string(r.Body)) != `{"status":"ok"}` {
		t.Errorf("healthz: %d %s", r.Status, r.Body)
	}
	r = h.do(http.MethodGet, "/readyz", "", "")
	if r.Status != 200 {
		t.Errorf("readyz while ready: %d %s", r.Status, r.Body)
	}
	notReady = errors.New("postgres: pins projection is 1200 events behind")
	r = h.do(http.MethodGet, "/readyz", "", "")
	wantFailure(t, r, http.StatusServiceUnavailable, "NOT_READY", "postgres")

	h.do(http.MethodGet, "/pins/"+uuidOf(7), tokRW, "")
	r = h.do(http.MethodGet, "/metrics", "", "")
	if r.Status != 200 || !strings.HasPrefix(r.Header.Get("Content-Type"), "text/plain") {
		t.Fatalf("metrics: %d %q", r.Status, r.Header.Get("Content-Type"))
	}
	if !strings.Contains(string(r.Body), `anchorage_http_request_duration_seconds_count{method="GET",route="/pins/{requestid}",status="404"} 1`) {
		t.Errorf("metrics lack the route-labelled histogram:\n%s", r.Body)
	}
	if strings.Contains(string(r.Body), uuidOf(7)) {
		t.Error("metrics carry a raw path")
	}
}

func TestMetricsNotConfigured(t *testing.T) {
	h := newHarness(t, func(c *httpapi.Config) { c.Registerer, c.Gatherer = nil, nil })
	wantFailure(t, h.do(http.MethodGet, "/metrics", "", ""), http.StatusNotFound, "NOT_FOUND")
}

func uuidOf(n int) string { return fmt.Sprintf("00000000-0000-4000-8000-%012d", n) }

// Every response is JSON with a Failure body on errors: 404, 405, 401, 403, 413, 500, 503. (h.do checks the
// Content-Type and validates every body against the spec.)
func TestErrorResponsesAreJSONFailures(t *testing.T) {
	h := newHarness(t, func(c *httpapi.Config) { c.MaxBodyBytes = 1024 })
	wantFailure(t, h.do(http.MethodGet, "/nope", "", ""), 404, "NOT_FOUND", "/nope")
	wantFailure(t, h.do(http.MethodGet, "/v1/nope", tokRW, ""), 404, "NOT_FOUND")
	wantFailure(t, h.do(http.MethodGet, "/v1", "", ""), 404, "NOT_FOUND")
	r := h.do(http.MethodPut, "/pins", tokRW, `{}`)
	wantFailure(t, r, 405, "METHOD_NOT_ALLOWED", "GET, POST")
	if r.Header.Get("Allow") != "GET, POST" {
		t.Errorf("405 Allow %q", r.Header.Get("Allow"))
	}
	r = h.do(http.MethodPatch, "/pins/"+uuidOf(1), tokRW, "")
	wantFailure(t, r, 405, "METHOD_NOT_ALLOWED")
	if r.Header.Get("Allow") != "GET, POST, DELETE" {
		t.Errorf("405 Allow %q", r.Header.Get("Allow"))
	}
	wantFailure(t, h.do(http.MethodGet, "/pins", "", ""), 401, "UNAUTHORIZED")
	wantFailure(t, h.do(http.MethodPost, "/pins", tokRO, `{"cid":"`+cidV1+`"}`), 403, "FORBIDDEN", "pins:write")
	big := `{"cid":"` + cidV1 + `","name":"` + strings.Repeat("x", 2000) + `"}`
	wantFailure(t, h.do(http.MethodPost, "/pins", tokRW, big), 413, "PAYLOAD_TOO_LARGE", "1 KiB")
	// 413 also when the length is not announced up front.
	r = h.doT(t, http.MethodPost, "/pins", tokRW, big, "Transfer-Encoding", "chunked")
	wantFailure(t, r, 413, "PAYLOAD_TOO_LARGE")
	h.cmd.set(errors.New("nats: connection reset by peer at 10.0.0.3:4222"), nil)
	r = h.do(http.MethodPost, "/pins", tokRW, `{"cid":"`+cidV1+`"}`)
	wantFailure(t, r, 500, "INTERNAL_SERVER_ERROR")
	if strings.Contains(string(r.Body), "10.0.0.3") {
		t.Errorf("500 leaks the internal error: %s", r.Body)
	}
	if !strings.Contains(h.logs.String(), "10.0.0.3") {
		t.Error("the internal error was not logged")
	}
}

func TestPanicBecomes500(t *testing.T) {
	h := newHarness(t)
	h.cmd.set(nil, "boom: secret internal state")
	r := h.do(http.MethodPost, "/pins", tokRW, `{"cid":"`+cidV1+`"}`)
	wantFailure(t, r, 500, "INTERNAL_SERVER_ERROR")
	if strings.Contains(string(r.Body), "secret") {
		t.Errorf("panic value leaked: %s", r.Body)
	}
	logs := h.logs.String()
	if !strings.Contains(logs, "panic serving request") || !strings.Contains(logs, "boom") || !strings.Contains(logs, "goroutine") {
		t.Errorf("panic not logged with its stack:\n%s", logs)
	}
	if r.Header.Get("X-Request-Id") == "" {
		t.Error("no request id on the 500")
	}
	// The server keeps serving.
	h.cmd.set(nil, nil)
	h.create(`{"cid":"` + cidV1 + `"}`)
}

func TestErrorTable(t *testing.T) {
	h := newHarness(t)
	cases := []struct {
		err     error
		status  int
		reason  string
		details string
		header  [2]string
	}{
		{domain.Errorf(domain.ErrInvalid, "cid is bad"), 400, "BAD_REQUEST", "cid is bad", [2]string{}},
		{domain.Errorf(domain.ErrUnauthorized, "token expired"), 401, "UNAUTHORIZED", "token expired", [2]string{"WWW-Authenticate", `Bearer realm="anchorage"`}},
		{domain.Errorf(domain.ErrForbidden, "no"), 403, "FORBIDDEN", "no", [2]string{}},
		{domain.Errorf(domain.ErrNotFound, "pin request x does not exist"), 404, "NOT_FOUND", "does not exist", [2]string{}},
		{domain.Errorf(domain.ErrInsufficientFund, "quota 10 reached"), 409, "INSUFFICIENT_FUNDS", "quota", [2]string{}},
		{domain.ReasonErrorf(domain.ErrConflict, "CONCURRENT_MODIFICATION", "kept changing"), 412, "CONCURRENT_MODIFICATION", "kept changing", [2]string{}},
		{fmt.Errorf("append: %w", domain.ErrConflict), 412, "CONCURRENT_MODIFICATION", "retry", [2]string{}},
		{domain.Errorf(domain.ErrUnavailable, "event log unavailable"), 503, "SERVICE_UNAVAILABLE", "unavailable", [2]string{"Retry-After", "1"}},
		{fmt.Errorf("nats: %w", domain.ErrUnavailable), 503, "SERVICE_UNAVAILABLE", "retry", [2]string{"Retry-After", "1"}},
		{domain.ReasonErrorf(domain.ErrInvalid, "ORG_EXISTS", "org exists"), 400, "ORG_EXISTS", "org exists", [2]string{}},
		{fmt.Errorf("wrapped: %w", domain.Errorf(domain.ErrNotFound, "gone")), 404, "NOT_FOUND", "gone", [2]string{}},
		{context.DeadlineExceeded, 503, "SERVICE_UNAVAILABLE", "timed out", [2]string{"Retry-After", "1"}},
		{errors.New("pq: relation pins does not exist"), 500, "INTERNAL_SERVER_ERROR", "X-Request-Id", [2]string{}},
	}
	for _, tc := range cases {
		t.Run(tc.err.Error(), func(t *testing.T) {
			h.cmd.set(tc.err, nil)
			r := h.doT(t, http.MethodDelete, "/pins/"+uuidOf(3), tokRW, "")
			wantFailure(t, r, tc.status, tc.reason, tc.details)
			if tc.header[0] != "" && r.Header.Get(tc.header[0]) != tc.header[1] {
				t.Errorf("%s: %q, want %q", tc.header[0], r.Header.Get(tc.header[0]), tc.header[1])
			}
		})
	}
}

func TestAuthentication(t *testing.T) {
	h := newHarness(t)
	for _, tc := range []struct {
		label, header, mention string
	}{
		{"missing", "", "no Authorization header"},
		{"basic", "Basic dXNlcjpwYXNz", "Bearer scheme"},
		{"no token", "Bearer", "no token"},
		{"no token, trailing space", "Bearer   ", "no token"},
		{"token with space", "Bearer a b", "malformed"},
		{"unknown token", "Bearer not-a-token", "not valid"},
		{"token without scheme", tokRW, "Bearer scheme"},
	} {
		t.Run(tc.label, func(t *testing.T) {
			var hdr []string
			if tc.header != "" {
				hdr = []string{"Authorization", tc.header}
			}
			for _, rq := range [][2]string{{"GET", "/pins"}, {"POST", "/pins"}, {"GET", "/pins/" + uuidOf(1)}, {"POST", "/pins/" + uuidOf(1)}, {"DELETE", "/pins/" + uuidOf(1)}, {"GET", "/v1/whoami"}} {
				body := ""
				if rq[0] == "POST" {
					body = `{"cid":"` + cidV1 + `"}`
				}
				r := h.doT(t, rq[0], rq[1], "", body, hdr...)
				wantFailure(t, r, 401, "UNAUTHORIZED", tc.mention)
				if !strings.HasPrefix(r.Header.Get("WWW-Authenticate"), "Bearer") {
					t.Errorf("WWW-Authenticate %q", r.Header.Get("WWW-Authenticate"))
				}
			}
		})
	}
	if h.cmd.count() != 0 || h.reader.count() != 0 {
		t.Errorf("unauthenticated requests reached the commander (%d) or reader (%d)", h.cmd.count(), h.reader.count())
	}
	// Case-insensitive scheme.
	r := h.do(http.MethodGet, "/pins", "", "", "Authorization", "bearer "+tokRW)
	if r.Status != 200 {
		t.Errorf("lower-case bearer: %d", r.Status)
	}
}

func TestAuthenticatorUnavailable(t *testing.T) {
	h := newHarness(t, func(c *httpapi.Config) {
		c.Auth = authFunc(func(context.Context, string) (httpapi.Principal, error) {
			return httpapi.Principal{}, domain.Errorf(domain.ErrUnavailable, "the token registry is not loaded yet; retry shortly")
		})
	})
	r := h.do(http.MethodGet, "/pins", tokRW, "")
	wantFailure(t, r, 503, "SERVICE_UNAVAILABLE", "retry")
	if r.Header.Get("Retry-After") != "1" {
		t.Errorf("Retry-After %q", r.Header.Get("Retry-After"))
	}
}

func TestScopes(t *testing.T) {
	h := newHarness(t)
	p := h.create(`{"cid":"` + cidV1 + `"}`)
	before := h.cmd.count()
	for _, rq := range [][3]string{{"POST", "/pins", `{"cid":"` + cidV1 + `"}`}, {"POST", "/pins/" + p.RequestID, `{"cid":"` + cidV1 + `"}`}, {"DELETE", "/pins/" + p.RequestID, ""}} {
		wantFailure(t, h.do(rq[0], rq[1], tokRO, rq[2]), 403, "FORBIDDEN", "pins:write")
	}
	if h.cmd.count() != before {
		t.Error("a read-only token reached the commander")
	}
	for _, path := range []string{"/pins", "/pins/" + p.RequestID} {
		wantFailure(t, h.do("GET", path, tokWO, ""), 403, "FORBIDDEN", "pins:read")
		if r := h.do("GET", path, tokRO, ""); r.Status != 200 {
			t.Errorf("read-only GET %s: %d", path, r.Status)
		}
	}
	// whoami needs no particular scope.
	r := h.do("GET", "/v1/whoami", tokWO, "")
	var who httpapi.Whoami
	if err := json.Unmarshal(r.Body, &who); err != nil || r.Status != 200 || who.OrgID != h.orgA || who.Actor != "token:wo" || !slices.Equal(who.Scopes, []string{"pins:write"}) {
		t.Errorf("whoami: %d %s", r.Status, r.Body)
	}
}

func TestCreateReadsItsWrite(t *testing.T) {
	h := newHarness(t)
	r := h.do(http.MethodPost, "/pins", tokRW, `{"cid":"`+cidV0+`","name":"precious.pdf","meta":{"app_id":"99986338"},"origins":["/ip4/203.0.113.142/tcp/4001/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN"],"unknown":{"x":[1,2]}}`)
	if r.Status != 202 {
		t.Fatalf("%d %s", r.Status, r.Body)
	}
	ps := r.pinStatus(t)
	if ps.Status != "queued" || ps.Pin.CID != cidV0 || ps.Pin.Name != "precious.pdf" || ps.Pin.Meta["app_id"] != "99986338" || len(ps.Pin.Origins) != 1 {
		t.Errorf("created %+v", ps)
	}
	if !createdRE.MatchString(ps.Created) || !slices.Equal(ps.Delegates, memfake.ServingAddrs) || ps.Info == nil {
		t.Errorf("created %q delegates %v info %v", ps.Created, ps.Delegates, ps.Info)
	}
	// The answer came at once, from the durable event: nothing waited for the projection yet.
	h.wm.mu.Lock()
	waits := slices.Clone(h.wm.waits)
	h.wm.mu.Unlock()
	if len(waits) != 0 {
		t.Errorf("POST waited for the projection: %v", waits)
	}
	// Kubo polls at once: the read waits for the org's last write, and the pin is there, exactly as answered.
	got := h.do(http.MethodGet, "/pins/"+ps.RequestID, tokRW, "").pinStatus(t)
	if got.RequestID != ps.RequestID || got.Created != ps.Created || got.Status != ps.Status {
		t.Errorf("GET after POST: %+v, POST said %+v", got, ps)
	}
	h.wm.mu.Lock()
	waits, seqs := slices.Clone(h.wm.waits), slices.Clone(h.wm.seqs)
	h.wm.mu.Unlock()
	if len(waits) != 1 || waits[0] != "pins" || seqs[0] == 0 || h.b.Applied() < seqs[0] {
		t.Errorf("read waits %v seqs %v applied %d", waits, seqs, h.b.Applied())
	}
	// The request id and actor reach the event.
	r = h.do(http.MethodPost, "/pins", tokRW, `{"cid":"`+cidV1+`"}`, "X-Request-Id", "kubo-req-42")
	if r.Header.Get("X-Request-Id") != "kubo-req-42" {
		t.Errorf("X-Request-Id echoed as %q", r.Header.Get("X-Request-Id"))
	}
	if m := h.cmd.lastMeta(); m.Corr != "kubo-req-42" || m.Actor != "token:rw" {
		t.Errorf("command meta %+v", m)
	}
}

func TestRequestIDSanitised(t *testing.T) {
	h := newHarness(t)
	for _, bad := range []string{strings.Repeat("a", 129), "has space", "ctl\x01", "ünïcode"} {
		r := h.do(http.MethodGet, "/healthz", "", "", "X-Request-Id", bad)
		got := r.Header.Get("X-Request-Id")
		if got == bad || len(got) != 36 {
			t.Errorf("X-Request-Id %q answered with %q, want a generated uuid", bad, got)
		}
	}
	r := h.do(http.MethodGet, "/healthz", "", "")
	if len(r.Header.Get("X-Request-Id")) != 36 {
		t.Errorf("no generated request id: %q", r.Header.Get("X-Request-Id"))
	}
	ok := strings.Repeat("b", 128)
	if got := h.do(http.MethodGet, "/healthz", "", "", "X-Request-Id", ok).Header.Get("X-Request-Id"); got != ok {
		t.Errorf("128-char id replaced by %q", got)
	}
}

func TestReadYourWritesWhileProjectionStalls(t *testing.T) {
	h := newHarness(t)
	keep := h.create(`{"cid":"` + cidV1 + `","name":"keep"}`)
	h.b.Pause()
	// Writes do not depend on the projection: they answer at once, from the durable event.
	start := time.Now()
	r := h.do(http.MethodPost, "/pins", tokRW, `{"cid":"`+cidV0+`","name":"stalled","meta":{"k":"v"}}`)
	if d := time.Since(start); d > 200*time.Millisecond {
		t.Errorf("POST took %v while the projection was stalled", d)
	}
	if r.Status != 202 {
		t.Fatalf("%d %s", r.Status, r.Body)
	}
	ps := r.pinStatus(t)
	if ps.Status != "queued" || ps.Pin.CID != cidV0 || ps.Pin.Name != "stalled" || ps.Pin.Meta["k"] != "v" ||
		!createdRE.MatchString(ps.Created) || !slices.Equal(ps.Delegates, memfake.ServingAddrs) || ps.RequestID == "" {
		t.Errorf("PinStatus %+v", ps)
	}
	r = h.do(http.MethodPost, "/pins/"+keep.RequestID, tokRW, `{"cid":"`+cidV1+`","name":"replaced"}`)
	if r.Status != 202 || r.pinStatus(t).Pin.Name != "replaced" || r.pinStatus(t).RequestID == keep.RequestID {
		t.Errorf("replace while stalled: %d %s", r.Status, r.Body)
	}
	newID := r.pinStatus(t).RequestID
	r = h.do(http.MethodDelete, "/pins/"+newID, tokRW, "")
	if r.Status != 202 || len(r.Body) != 0 {
		t.Errorf("delete while stalled: %d %q", r.Status, r.Body)
	}
	// A read of this org must not miss those writes: it waits (300ms here) and then says to retry, never stale.
	start = time.Now()
	r = h.do(http.MethodGet, "/pins/"+ps.RequestID, tokRW, "")
	if d := time.Since(start); d < 250*time.Millisecond || d > 5*time.Second {
		t.Errorf("read answered after %v, want after the 300ms wait", d)
	}
	wantFailure(t, r, 503, "SERVICE_UNAVAILABLE")
	if r.Header.Get("Retry-After") == "" {
		t.Error("503 without Retry-After")
	}
	wantFailure(t, h.do(http.MethodGet, "/pins?status=any", tokRW, ""), 503, "SERVICE_UNAVAILABLE")
	if got := counterValue(t, h, "anchorage_http_read_your_writes_timeouts_total"); got != 2 {
		t.Errorf("timeouts counted %v, want 2", got)
	}
	if !strings.Contains(h.logs.String(), "read-your-writes wait timed out") {
		t.Error("timeout not logged")
	}
	// Once the projector catches up, everything is visible.
	h.b.Resume()
	if r := h.do(http.MethodGet, "/pins/"+ps.RequestID, tokRW, ""); r.Status != 200 || r.pinStatus(t).Created != ps.Created {
		t.Errorf("stalled pin after resume: %d %s", r.Status, r.Body)
	}
	if r := h.do(http.MethodGet, "/pins/"+newID, tokRW, ""); r.Status != 404 {
		t.Errorf("deleted pin: %d", r.Status)
	}
}

func TestCreateAnswersFromEventWhenReadFails(t *testing.T) {
	h := newHarness(t)
	h.reader.set(errors.New("postgres: connection refused"), nil)
	r := h.do(http.MethodPost, "/pins", tokRW, `{"cid":"`+cidV1+`"}`)
	if r.Status != 202 || r.pinStatus(t).Status != "queued" {
		t.Errorf("%d %s", r.Status, r.Body)
	}
	// GET itself does fail (500, logged).
	wantFailure(t, h.do(http.MethodGet, "/pins/"+r.pinStatus(t).RequestID, tokRW, ""), 500, "INTERNAL_SERVER_ERROR")
}

func TestWaitsBeforeAnswering(t *testing.T) {
	release := make(chan struct{})
	h := newHarness(t, func(c *httpapi.Config) {
		next := c.Watermark
		c.Watermark = waitFunc(func(ctx context.Context, p string, seq uint64) error {
			select {
			case <-release:
			case <-ctx.Done():
				return ctx.Err()
			}
			return next.Wait(ctx, p, seq)
		})
		c.ReadYourWritesTimeout = 5 * time.Second
	})
	// The write answers at once; the read after it waits for the watermark.
	if r := h.do(http.MethodPost, "/pins", tokRW, `{"cid":"`+cidV1+`"}`); r.Status != 202 {
		t.Fatalf("%d %s", r.Status, r.Body)
	}
	done := make(chan result)
	go func() { done <- h.doT(t, http.MethodGet, "/pins?cid="+cidV1, tokRW, "") }()
	select {
	case r := <-done:
		t.Fatalf("read answered before the watermark: %d", r.Status)
	case <-time.After(100 * time.Millisecond):
	}
	close(release)
	if r := <-done; r.Status != 200 {
		t.Errorf("%d %s", r.Status, r.Body)
	}
}

type waitFunc func(ctx context.Context, projection string, seq uint64) error

func (f waitFunc) Wait(ctx context.Context, projection string, seq uint64) error {
	return f(ctx, projection, seq)
}

func counterValue(t *testing.T, h *harness, name string) float64 {
	t.Helper()
	mfs, err := h.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			sum += m.GetCounter().GetValue()
		}
	}
	return sum
}

func histogramRoutes(t *testing.T, h *harness) []string {
	t.Helper()
	mfs, err := h.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var routes []string
	for _, mf := range mfs {
		if mf.GetName() != "anchorage_http_request_duration_seconds" || mf.GetType() != dto.MetricType_HISTOGRAM {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "route" && !slices.Contains(routes, l.GetValue()) {
					routes = append(routes, l.GetValue())
				}
			}
		}
	}
	slices.Sort(routes)
	return routes
}

func TestMetricRoutesArePatterns(t *testing.T) {
	h := newHarness(t)
	p := h.create(`{"cid":"` + cidV1 + `"}`)
	h.do("GET", "/pins/"+p.RequestID, tokRW, "")
	h.do("GET", "/pins/not-an-id", tokRW, "")
	h.do("GET", "/random/"+p.RequestID, tokRW, "")
	h.do("GET", "/v1/whoami", tokRW, "")
	h.do("GET", "/v1/zzz", tokRW, "")
	for _, r := range histogramRoutes(t, h) {
		if strings.Contains(r, p.RequestID) || strings.Contains(r, "not-an-id") || strings.Contains(r, "zzz") {
			t.Errorf("route label %q carries a raw path", r)
		}
	}
	want := []string{"/pins", "/pins/{requestid}", "/v1/whoami"}
	for _, w := range want {
		if !slices.Contains(histogramRoutes(t, h), w) {
			t.Errorf("no route label %q in %v", w, histogramRoutes(t, h))
		}
	}
}

func TestAccessLog(t *testing.T) {
	h := newHarness(t)
	h.do(http.MethodGet, "/pins", tokRW, "", "X-Request-Id", "trace-me-1")
	var entry map[string]any
	for _, line := range strings.Split(strings.TrimSpace(h.logs.String()), "\n") {
		var e map[string]any
		if json.Unmarshal([]byte(line), &e) == nil && e["msg"] == "http request" && e["request_id"] == "trace-me-1" {
			entry = e
		}
	}
	if entry == nil {
		t.Fatalf("no access log entry:\n%s", h.logs.String())
	}
	for k, want := range map[string]any{"method": "GET", "route": "/pins", "status": 200.0, "org_id": h.orgA} {
		if entry[k] != want {
			t.Errorf("access log %s = %v, want %v", k, entry[k], want)
		}
	}
	for _, k := range []string{"duration", "bytes"} {
		if _, ok := entry[k]; !ok {
			t.Errorf("access log lacks %s", k)
		}
	}
}

func TestNonIDRequestIDIs404WithoutCalls(t *testing.T) {
	h := newHarness(t)
	for _, id := range []string{"not-an-id", "123", "00000000-0000-0000-0000-00000000000g", "00000000000000000000000000000000", "%7B%7D", strings.Repeat("a", 300)} {
		for _, m := range []string{"GET", "POST", "DELETE"} {
			body := ""
			if m == "POST" {
				body = `{"cid":"` + cidV1 + `"}`
			}
			wantFailure(t, h.do(m, "/pins/"+id, tokRW, body), 404, "NOT_FOUND")
		}
	}
	if h.cmd.count() != 0 || h.reader.count() != 0 {
		t.Errorf("non-ids reached the commander (%d) or reader (%d)", h.cmd.count(), h.reader.count())
	}
}

func TestGetAndOtherOrgs(t *testing.T) {
	h := newHarness(t)
	p := h.create(`{"cid":"` + cidV1 + `","name":"a-only"}`)
	r := h.do("GET", "/pins/"+p.RequestID, tokRW, "")
	if r.Status != 200 {
		t.Fatalf("%d", r.Status)
	}
	// Another org's id looks missing, for every operation.
	wantFailure(t, h.do("GET", "/pins/"+p.RequestID, tokB, ""), 404, "NOT_FOUND")
	wantFailure(t, h.do("POST", "/pins/"+p.RequestID, tokB, `{"cid":"`+cidV1+`"}`), 404, "NOT_FOUND")
	wantFailure(t, h.do("DELETE", "/pins/"+p.RequestID, tokB, ""), 404, "NOT_FOUND")
	if pr := h.do("GET", "/pins?name=a-only", tokB, "").pinResults(t); pr.Count != 0 {
		t.Errorf("org B lists %d of org A's pins", pr.Count)
	}
	if r := h.do("GET", "/pins/"+p.RequestID, tokRW, ""); r.Status != 200 {
		t.Errorf("org A's pin after org B's attempts: %d", r.Status)
	}
	wantFailure(t, h.do("GET", "/pins/"+uuidOf(99), tokRW, ""), 404, "NOT_FOUND")
}

func TestReplaceAndDelete(t *testing.T) {
	h := newHarness(t)
	old := h.create(`{"cid":"` + cidV1 + `","name":"mfs"}`)
	r := h.do("POST", "/pins/"+old.RequestID, tokRW, `{"cid":"`+cidV0+`","name":"mfs"}`)
	if r.Status != 202 {
		t.Fatalf("%d %s", r.Status, r.Body)
	}
	nw := r.pinStatus(t)
	if nw.RequestID == old.RequestID || nw.Pin.CID != cidV0 || nw.Created <= old.Created {
		t.Errorf("replace answered %+v (old %+v)", nw, old)
	}
	wantFailure(t, h.do("GET", "/pins/"+old.RequestID, tokRW, ""), 404, "NOT_FOUND")
	if pr := h.do("GET", "/pins?name=mfs", tokRW, "").pinResults(t); pr.Count != 1 || pr.Results[0].RequestID != nw.RequestID {
		t.Errorf("after replace: %+v", pr)
	}
	wantFailure(t, h.do("POST", "/pins/"+old.RequestID, tokRW, `{"cid":"`+cidV1+`"}`), 404, "NOT_FOUND")
	wantFailure(t, h.do("POST", "/pins/"+nw.RequestID, tokRW, `{"cid":"nope"}`), 400, "BAD_REQUEST", "cid")

	r = h.do("DELETE", "/pins/"+nw.RequestID, tokRW, "")
	if r.Status != 202 || len(r.Body) != 0 {
		t.Fatalf("delete: %d %q", r.Status, r.Body)
	}
	if r.Header.Get("Content-Type") != "application/json" {
		t.Errorf("delete Content-Type %q", r.Header.Get("Content-Type"))
	}
	wantFailure(t, h.do("GET", "/pins/"+nw.RequestID, tokRW, ""), 404, "NOT_FOUND")
	if pr := h.do("GET", "/pins?name=mfs", tokRW, "").pinResults(t); pr.Count != 0 || len(pr.Results) != 0 {
		t.Errorf("after delete: %+v", pr)
	}
	wantFailure(t, h.do("DELETE", "/pins/"+nw.RequestID, tokRW, ""), 404, "NOT_FOUND")
}

func TestPinStatusJSONShape(t *testing.T) {
	h := newHarness(t)
	r := h.do("POST", "/pins", tokRW, `{"cid":"`+cidV1+`"}`)
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(r.Body, &raw); err != nil {
		t.Fatal(err)
	}
	if string(raw["pin"]) != `{"cid":"`+cidV1+`"}` {
		t.Errorf("pin %s: empty name, origins and meta must be omitted", raw["pin"])
	}
	if string(raw["info"]) != `{}` {
		t.Errorf("info %s, want {}", raw["info"])
	}
	// Pinned: the placed node is the delegate, info carries what the node said.
	id := r.pinStatus(t).RequestID
	if err := h.b.SetStatus(context.Background(), h.orgA, id, "pinned", map[string]string{"dag_size": "42"}); err != nil {
		t.Fatal(err)
	}
	ps := h.do("GET", "/pins/"+id, tokRW, "").pinStatus(t)
	if ps.Status != "pinned" || !slices.Equal(ps.Delegates, []string{memfake.NodeAddr}) || ps.Info["dag_size"] != "42" {
		t.Errorf("pinned view %+v", ps)
	}
}

func TestDelegatesMisconfigured(t *testing.T) {
	h := newHarness(t, func(c *httpapi.Config) {
		c.Delegates = func(context.Context) []string {
			return []string{"/ip4/203.0.113.1/tcp/4001", "not-a-multiaddr", "/ip4/203.0.113.1/tcp/4001/p2p/"}
		}
	})
	wantFailure(t, h.do("POST", "/pins", tokRW, `{"cid":"`+cidV1+`"}`), 503, "NO_DELEGATES", "misconfiguration")
}

func TestDelegatesCleaned(t *testing.T) {
	var addrs []string
	for i := range 30 {
		addrs = append(addrs, fmt.Sprintf("/ip4/203.0.113.%d/tcp/4001/p2p/12D3KooWRBy97UB99e3J6hiPesre1MZeuNQvfan4gBziswrRJsNK", i))
	}
	addrs = append([]string{"/ip4/203.0.113.1/tcp/4001", addrs[0]}, addrs...)
	h := newHarness(t, func(c *httpapi.Config) { c.Delegates = func(context.Context) []string { return addrs } })
	ps := h.create(`{"cid":"` + cidV1 + `"}`)
	if len(ps.Delegates) != 20 || ps.Delegates[0] != addrs[2] {
		t.Errorf("delegates %v", ps.Delegates)
	}
}

func TestPostBodies(t *testing.T) {
	h := newHarness(t)
	peer := "12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN"
	var many []string
	for i := range 25 {
		many = append(many, fmt.Sprintf(`"/ip4/198.51.100.%d/tcp/4001/p2p/%s"`, i, peer))
	}
	ok := []struct {
		label, body string
		origins     int
	}{
		{"minimal", `{"cid":"` + cidV1 + `"}`, 0},
		{"unknown fields", `{"cid":"` + cidV1 + `","x":1,"CID":"ignored","pin":{"cid":"x"}}`, 0},
		{"null optional fields", `{"cid":"` + cidV1 + `","name":null,"meta":null,"origins":null}`, 0},
		{"origins junk skipped", `{"cid":"` + cidV1 + `","origins":["junk",42,null,{},"","/ip4/1.2.3.4/tcp/1/p2p/` + peer + `"]}`, 1},
		{"origins a string", `{"cid":"` + cidV1 + `","origins":"/ip4/1.2.3.4/tcp/1"}`, 0},
		{"origins an object", `{"cid":"` + cidV1 + `","origins":{"a":"b"}}`, 0},
		{"more than 20 origins", `{"cid":"` + cidV1 + `","origins":[` + strings.Join(many, ",") + `]}`, 20},
		{"duplicate origins", `{"cid":"` + cidV1 + `","origins":[` + many[0] + `,` + many[0] + `]}`, 1},
		{"255-byte name", `{"cid":"` + cidV1 + `","name":"` + strings.Repeat("n", 255) + `"}`, 0},
		{"empty meta", `{"cid":"` + cidV1 + `","meta":{}}`, 0},
		{"whitespace around", " \n\t{\"cid\":\"" + cidV1 + "\"}\n ", 0},
	}
	for _, tc := range ok {
		t.Run(tc.label, func(t *testing.T) {
			r := h.doT(t, "POST", "/pins", tokRW, tc.body)
			if r.Status != 202 {
				t.Fatalf("%d %s", r.Status, r.Body)
			}
			if n := len(r.pinStatus(t).Pin.Origins); n != tc.origins {
				t.Errorf("%d origins kept, want %d", n, tc.origins)
			}
		})
	}
	bad := []struct {
		label, body, mention string
	}{
		{"empty", "", "empty"},
		{"spaces", "   ", "empty"},
		{"null", "null", "null"},
		{"array", `[{"cid":"` + cidV1 + `"}]`, "object"},
		{"string", `"` + cidV1 + `"`, "object"},
		{"truncated", `{"cid":"` + cidV1 + `"`, "offset"},
		{"syntax", `{"cid" "x"}`, "offset 8"},
		{"trailing garbage", `{"cid":"` + cidV1 + `"} x`, "JSON"},
		{"two objects", `{"cid":"` + cidV1 + `"}{}`, "JSON"},
		{"missing cid", `{"name":"x"}`, "cid is required"},
		{"cid null", `{"cid":null}`, "cid is required"},
		{"cid number", `{"cid":7}`, "cid must be a string, not a number"},
		{"cid object", `{"cid":{}}`, "cid must be a string, not an object"},
		{"cid invalid", `{"cid":"QmNope"}`, "not a valid CID"},
		{"name number", `{"cid":"` + cidV1 + `","name":1}`, "name must be a string"},
		{"name 256", `{"cid":"` + cidV1 + `","name":"` + strings.Repeat("n", 256) + `"}`, "255"},
		{"name NUL", `{"cid":"` + cidV1 + `","name":"a\u0000b"}`, "NUL"},
		{"meta number", `{"cid":"` + cidV1 + `","meta":{"ok":"1","count":3}}`, `"count"`},
		{"meta bool", `{"cid":"` + cidV1 + `","meta":{"flag":true}}`, `"flag" must be a string, not a boolean`},
		{"meta null value", `{"cid":"` + cidV1 + `","meta":{"n":null}}`, `"n"`},
		{"meta array", `{"cid":"` + cidV1 + `","meta":["a"]}`, "JSON object"},
		{"meta string", `{"cid":"` + cidV1 + `","meta":"a=b"}`, "JSON object"},
		{"meta 65 keys", `{"cid":"` + cidV1 + `","meta":{` + metaKeys(65) + `}}`, "64"},
		{"meta long key", `{"cid":"` + cidV1 + `","meta":{"` + strings.Repeat("k", 129) + `":"v"}}`, "128"},
		{"meta long value", `{"cid":"` + cidV1 + `","meta":{"k":"` + strings.Repeat("v", 1025) + `"}}`, "1024"},
		{"meta empty key", `{"cid":"` + cidV1 + `","meta":{"":"v"}}`, "empty key"},
	}
	for _, tc := range bad {
		t.Run(tc.label, func(t *testing.T) {
			wantFailure(t, h.doT(t, "POST", "/pins", tokRW, tc.body), 400, "BAD_REQUEST", tc.mention)
		})
	}
}

func metaKeys(n int) string {
	var parts []string
	for i := range n {
		parts = append(parts, fmt.Sprintf(`"k%d":"v"`, i))
	}
	return strings.Join(parts, ",")
}

func TestListPins(t *testing.T) {
	h := newHarness(t)
	// Empty: results is [], never null.
	r := h.do("GET", "/pins", tokRW, "")
	if strings.TrimSpace(string(r.Body)) != `{"count":0,"results":[]}` {
		t.Errorf("empty list %s", r.Body)
	}
	var ids []string
	for i := range 12 {
		ids = append(ids, h.create(fmt.Sprintf(`{"cid":"%s","name":"n%d","meta":{"i":"%d"}}`, cidV1, i, i)).RequestID)
	}
	for _, id := range ids[:11] {
		if err := h.b.SetStatus(context.Background(), h.orgA, id, "pinned", nil); err != nil {
			t.Fatal(err)
		}
	}
	// Default: only pinned, newest first, 10 of them, count ignoring limit.
	pr := h.do("GET", "/pins", tokRW, "").pinResults(t)
	if pr.Count != 11 || len(pr.Results) != 10 || pr.Results[0].RequestID != ids[10] {
		t.Errorf("default list: count %d len %d first %s", pr.Count, len(pr.Results), pr.Results[0].RequestID)
	}
	for i := 1; i < len(pr.Results); i++ {
		if pr.Results[i].Created >= pr.Results[i-1].Created {
			t.Errorf("not newest first at %d", i)
		}
	}
	// name given: every status (the queued one too).
	if pr := h.do("GET", "/pins?name=n11", tokRW, "").pinResults(t); pr.Count != 1 || pr.Results[0].Status != "queued" {
		t.Errorf("name lookup of a queued pin: %+v", pr)
	}
	// cid given: every status.
	if pr := h.do("GET", "/pins?limit=1&cid="+cidV0, tokRW, "").pinResults(t); pr.Count != 12 || len(pr.Results) != 1 {
		t.Errorf("cid lookup (v0 spelling of the v1 pins): count %d len %d", pr.Count, len(pr.Results))
	}
	// Pagination with before.
	pr = h.do("GET", "/pins?status=any&before="+url.QueryEscape(pr.Results[0].Created), tokRW, "").pinResults(t)
	if pr.Count != 10 || len(pr.Results) != 10 || pr.Results[0].RequestID != ids[9] {
		t.Errorf("status=any before the newest pinned: count %d, want the 10 older pins", pr.Count)
	}
	// The filter reaches the reader as parsed.
	wantFailure(t, h.do("GET", "/pins?limit=0", tokRW, ""), 400, "BAD_REQUEST", "limit")
	wantFailure(t, h.do("GET", "/pins?cid=%zz", tokRW, ""), 400, "BAD_REQUEST", "malformed")
	h.reader.set(nil, domain.Errorf(domain.ErrUnavailable, "read model unavailable"))
	wantFailure(t, h.do("GET", "/pins", tokRW, ""), 503, "SERVICE_UNAVAILABLE")
}

func TestCORS(t *testing.T) {
	h := newHarness(t, func(c *httpapi.Config) { c.CORSOrigins = []string{"https://webui.ipfs.io"} })
	r := h.do(http.MethodOptions, "/pins", "", "",
		"Origin", "https://webui.ipfs.io", "Access-Control-Request-Method", "POST", "Access-Control-Request-Headers", "authorization,content-type")
	if r.Status >= 300 {
		t.Errorf("preflight status %d", r.Status)
	}
	if r.Header.Get("Access-Control-Allow-Origin") != "https://webui.ipfs.io" {
		t.Errorf("preflight ACAO %q", r.Header.Get("Access-Control-Allow-Origin"))
	}
	allowH := strings.ToLower(r.Header.Get("Access-Control-Allow-Headers"))
	if !strings.Contains(allowH, "authorization") || !strings.Contains(allowH, "content-type") {
		t.Errorf("preflight allow headers %q", allowH)
	}
	if m := r.Header.Get("Access-Control-Allow-Methods"); !strings.Contains(m, "POST") {
		t.Errorf("preflight allow methods %q", m)
	}
	r = h.do(http.MethodGet, "/pins", tokRW, "", "Origin", "https://webui.ipfs.io")
	if r.Header.Get("Access-Control-Allow-Origin") != "https://webui.ipfs.io" {
		t.Errorf("GET ACAO %q", r.Header.Get("Access-Control-Allow-Origin"))
	}
	r = h.do(http.MethodGet, "/pins", tokRW, "", "Origin", "https://evil.example")
	if r.Header.Get("Access-Control-Allow-Origin") != "" {
		t.Errorf("foreign origin allowed")
	}

	plain := newHarness(t)
	r = plain.do(http.MethodGet, "/pins", tokRW, "", "Origin", "https://webui.ipfs.io")
	for k := range r.Header {
		if strings.HasPrefix(k, "Access-Control-") {
			t.Errorf("CORS header %s without CORSOrigins", k)
		}
	}
}

func TestConcurrentWritesNever409(t *testing.T) {
	h := newHarness(t)
	p := h.create(`{"cid":"` + cidV1 + `"}`)
	statuses := make(chan int, 8)
	for range 8 {
		go func() {
			statuses <- h.doT(t, "POST", "/pins/"+p.RequestID, tokRW, `{"cid":"`+cidV0+`"}`).Status
		}()
	}
	ok := 0
	for range 8 {
		switch st := <-statuses; st {
		case 202:
			ok++
		case 404, 412:
		default:
			t.Errorf("status %d", st)
		}
	}
	if ok != 1 {
		t.Errorf("%d replaces succeeded, want 1", ok)
	}
}

func TestParsedFilterReachesReader(t *testing.T) {
	h := newHarness(t)
	h.do("GET", "/pins?status=failed&name=x&match=ipartial&limit=7&meta=%7B%22a%22%3A%22b%22%7D", tokRW, "")
	h.reader.mu.Lock()
	defer h.reader.mu.Unlock()
	f := h.reader.filters[len(h.reader.filters)-1]
	if f.OrgID != h.orgA || f.Name != "x" || f.Match != projections.MatchIPartial || f.Limit != 7 ||
		!slices.Equal(f.Statuses, []projections.Status{projections.StatusFailed}) || f.Meta["a"] != "b" {
		t.Errorf("filter %+v", f)
	}
}
