package httpapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"

	httpapi "github.com/anchorage-pin/anchorage/adapters/http"
	"github.com/anchorage-pin/anchorage/adapters/http/apitest"
	"github.com/anchorage-pin/anchorage/adapters/http/internal/memfake"
	"github.com/anchorage-pin/anchorage/domain"
	"github.com/anchorage-pin/anchorage/events"
	"github.com/anchorage-pin/anchorage/projections"
)

// Tokens of the harness.
const (
	tokRW = "secret-token-rw-7f3a" // org A, read and write
	tokRO = "secret-token-ro-91c2" // org A, read only
	tokWO = "secret-token-wo-44d0" // org A, write only
	tokB  = "secret-token-b-0b1e"  // org B, read and write
)

var allTokens = []string{tokRW, tokRO, tokWO, tokB}

// syncBuffer is a goroutine-safe log sink.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// spyCommander records calls and can fail or panic instead of delegating.
type spyCommander struct {
	next httpapi.PinCommander

	mu    sync.Mutex
	calls int
	metas []domain.Meta
	err   error
	panic any
}

func (c *spyCommander) before(m domain.Meta) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.calls++
	c.metas = append(c.metas, m)
	if c.panic != nil {
		panic(c.panic)
	}
	return c.err
}

func (c *spyCommander) set(err error, p any) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.err, c.panic = err, p
}

func (c *spyCommander) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.calls
}

func (c *spyCommander) lastMeta() domain.Meta {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.metas) == 0 {
		return domain.Meta{}
	}
	return c.metas[len(c.metas)-1]
}

func (c *spyCommander) RequestPin(ctx context.Context, m domain.Meta, org string, spec domain.PinSpec) (events.PinRequested, domain.Appended, error) {
	if err := c.before(m); err != nil {
		return events.PinRequested{}, domain.Appended{}, err
	}
	return c.next.RequestPin(ctx, m, org, spec)
}

func (c *spyCommander) ReplacePin(ctx context.Context, m domain.Meta, org, oldID string, spec domain.PinSpec) (events.PinRequested, domain.Appended, error) {
	if err := c.before(m); err != nil {
		return events.PinRequested{}, domain.Appended{}, err
	}
	return c.next.ReplacePin(ctx, m, org, oldID, spec)
}

func (c *spyCommander) RemovePin(ctx context.Context, m domain.Meta, org, id string) (domain.Appended, error) {
	if err := c.before(m); err != nil {
		return domain.Appended{}, err
	}
	return c.next.RemovePin(ctx, m, org, id)
}

// spyReader records calls and can fail instead of delegating.
type spyReader struct {
	next projections.PinReader

	mu      sync.Mutex
	calls   int
	getErr  error
	listErr error
	filters []projections.PinFilter
}

func (r *spyReader) GetPin(ctx context.Context, org, id string) (projections.PinView, error) {
	r.mu.Lock()
	r.calls++
	err := r.getErr
	r.mu.Unlock()
	if err != nil {
		return projections.PinView{}, err
	}
	return r.next.GetPin(ctx, org, id)
}

func (r *spyReader) ListPins(ctx context.Context, f projections.PinFilter) (int64, []projections.PinView, error) {
	r.mu.Lock()
	r.calls++
	r.filters = append(r.filters, f)
	err := r.listErr
	r.mu.Unlock()
	if err != nil {
		return 0, nil, err
	}
	return r.next.ListPins(ctx, f)
}

func (r *spyReader) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.calls
}

func (r *spyReader) set(getErr, listErr error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.getErr, r.listErr = getErr, listErr
}

// spyWatermark records waits.
type spyWatermark struct {
	next httpapi.Watermark

	mu    sync.Mutex
	waits []string
	seqs  []uint64
}

func (w *spyWatermark) Wait(ctx context.Context, projection string, seq uint64) error {
	w.mu.Lock()
	w.waits = append(w.waits, projection)
	w.seqs = append(w.seqs, seq)
	w.mu.Unlock()
	return w.next.Wait(ctx, projection, seq)
}

type authFunc func(ctx context.Context, bearer string) (httpapi.Principal, error)

func (f authFunc) Authenticate(ctx context.Context, bearer string) (httpapi.Principal, error) {
	return f(ctx, bearer)
}

type harness struct {
	t      testing.TB
	b      *memfake.Backend
	cmd    *spyCommander
	reader *spyReader
	wm     *spyWatermark
	reg    *prometheus.Registry
	logs   *syncBuffer
	h      http.Handler
	spec   *openapi3.T
	orgA   string
	orgB   string
	cfg    httpapi.Config
}

func newHarness(t testing.TB, mods ...func(*httpapi.Config)) *harness {
	t.Helper()
	b := memfake.New()
	t.Cleanup(b.Close)
	h := &harness{t: t, b: b, orgA: uuid.NewString(), orgB: uuid.NewString(), logs: &syncBuffer{}, reg: prometheus.NewRegistry()}
	rw := []string{domain.ScopePinsRead, domain.ScopePinsWrite}
	b.AddToken(tokRW, httpapi.Principal{OrgID: h.orgA, Actor: "token:rw", Scopes: rw})
	b.AddToken(tokRO, httpapi.Principal{OrgID: h.orgA, Actor: "token:ro", Scopes: []string{domain.ScopePinsRead}})
	b.AddToken(tokWO, httpapi.Principal{OrgID: h.orgA, Actor: "token:wo", Scopes: []string{domain.ScopePinsWrite}})
	b.AddToken(tokB, httpapi.Principal{OrgID: h.orgB, Actor: "token:b", Scopes: rw})
	cfg := b.Config()
	h.cmd = &spyCommander{next: cfg.Pins}
	h.reader = &spyReader{next: cfg.Reader}
	h.wm = &spyWatermark{next: cfg.Watermark}
	cfg.Pins, cfg.Reader, cfg.Watermark = h.cmd, h.reader, h.wm
	cfg.Logger = slog.New(slog.NewJSONHandler(h.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	cfg.Registerer = h.reg
	cfg.ReadYourWritesTimeout = 300 * time.Millisecond // keeps the timeout tests fast
	for _, m := range mods {
		m(&cfg)
	}
	h.cfg = cfg
	handler, err := httpapi.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	h.h = handler
	h.spec = apitest.LoadSpec(t)
	t.Cleanup(func() {
		// No test may ever log a token.
		logs := h.logs.String()
		for _, tok := range allTokens {
			if strings.Contains(logs, tok) {
				t.Errorf("the logs contain token %s", tok)
			}
		}
		if strings.Contains(strings.ToLower(logs), "authorization") {
			t.Errorf("the logs mention the Authorization header")
		}
	})
	return h
}

type result struct {
	Status int
	Header http.Header
	Body   []byte
}

func (r result) failure() httpapi.Failure {
	var f httpapi.Failure
	_ = json.Unmarshal(r.Body, &f)
	return f
}

func (r result) pinStatus(t testing.TB) httpapi.PinStatus {
	t.Helper()
	var ps httpapi.PinStatus
	if err := json.Unmarshal(r.Body, &ps); err != nil {
		t.Fatalf("not a PinStatus: %v: %s", err, r.Body)
	}
	return ps
}

func (r result) pinResults(t testing.TB) httpapi.PinResults {
	t.Helper()
	var pr httpapi.PinResults
	if err := json.Unmarshal(r.Body, &pr); err != nil {
		t.Fatalf("not PinResults: %v: %s", err, r.Body)
	}
	return pr
}

// do serves one request and validates the response against the spec (and the JSON Content-Type rule).
func (h *harness) do(method, target, token, body string, headers ...string) result {
	h.t.Helper()
	return h.doT(h.t, method, target, token, body, headers...)
}

func (h *harness) doT(t testing.TB, method, target, token, body string, headers ...string) result {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req := httptest.NewRequest(method, "http://anchorage.test"+target, rd)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	rec := httptest.NewRecorder()
	h.h.ServeHTTP(rec, req)
	resp := rec.Result()
	b, _ := io.ReadAll(resp.Body)
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" && !strings.HasPrefix(target, "/metrics") {
		t.Errorf("%s %s → %d: Content-Type %q, want application/json", method, target, resp.StatusCode, ct)
	}
	if err := apitest.CheckResponse(h.spec, req, resp.StatusCode, resp.Header, b); err != nil {
		t.Errorf("%s %s → %d: %v\n%s", method, target, resp.StatusCode, err, b)
	}
	return result{Status: resp.StatusCode, Header: resp.Header, Body: b}
}

// quietLogs discards the handler's logs (fuzzing would pile them up).
func quietLogs(c *httpapi.Config) { c.Logger = slog.New(slog.DiscardHandler) }

func (h *harness) create(body string) httpapi.PinStatus {
	h.t.Helper()
	r := h.do(http.MethodPost, "/pins", tokRW, body)
	if r.Status != http.StatusAccepted {
		h.t.Fatalf("create: %d %s", r.Status, r.Body)
	}
	return r.pinStatus(h.t)
}

func wantFailure(t *testing.T, r result, status int, reason string, detailsContain ...string) {
	t.Helper()
	if r.Status != status {
		t.Fatalf("status %d, want %d; body %s", r.Status, status, r.Body)
	}
	f := r.failure()
	if reason != "" && f.Error.Reason != reason {
		t.Errorf("reason %q, want %q", f.Error.Reason, reason)
	}
	for _, c := range detailsContain {
		if !strings.Contains(f.Error.Details, c) {
			t.Errorf("details %q do not mention %q", f.Error.Details, c)
		}
	}
}

const (
	cidV1 = "bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi"
	cidV0 = "QmbWqxBEKC3P8tqsKc98xmWNzrzDtRLMiMPL8wBuTGsMnR"
)
