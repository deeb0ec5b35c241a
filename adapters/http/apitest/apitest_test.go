package apitest_test

import (
	"context"
	"log/slog"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"

	httpapi "github.com/anchorage-pin/anchorage/adapters/http"
	"github.com/anchorage-pin/anchorage/adapters/http/apitest"
	"github.com/anchorage-pin/anchorage/adapters/http/internal/memfake"
	"github.com/anchorage-pin/anchorage/domain"
)

// TestChecklistAgainstFakes runs the whole suite against the HTTP adapter over the in-memory back end, so the
// suite itself is exercised before the real stack exists.
func TestChecklistAgainstFakes(t *testing.T) {
	b := memfake.New()
	t.Cleanup(b.Close)
	// The projection lags like a real one: a handler that answered before its write is visible would fail.
	b.SetDelay(3 * time.Millisecond)
	orgs := map[string]string{"A": uuid.NewString(), "B": uuid.NewString()}
	b.AddToken("token-a", httpapi.Principal{OrgID: orgs["A"], Actor: "token:a", Scopes: []string{domain.ScopePinsRead, domain.ScopePinsWrite}})
	b.AddToken("token-b", httpapi.Principal{OrgID: orgs["B"], Actor: "token:b", Scopes: []string{domain.ScopePinsRead, domain.ScopePinsWrite}})
	b.AddToken("token-ro", httpapi.Principal{OrgID: orgs["A"], Actor: "token:ro", Scopes: []string{domain.ScopePinsRead}})

	cfg := b.Config()
	cfg.Registerer = prometheus.NewRegistry()
	cfg.Logger = slog.New(slog.DiscardHandler)
	h, err := httpapi.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)

	start := time.Now()
	apitest.RunChecklist(t, apitest.Env{
		BaseURL:       srv.URL,
		TokenA:        "token-a",
		TokenB:        "token-b",
		ReadOnlyToken: "token-ro",
		SetStatus: func(tb testing.TB, org, requestID, status string) {
			tb.Helper()
			var info map[string]string
			if status == "failed" {
				info = map[string]string{"status_details": "apitest: set to failed"}
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := b.SetStatus(ctx, orgs[org], requestID, status, info); err != nil {
				tb.Fatalf("SetStatus: %v", err)
			}
		},
	})
	t.Logf("checklist took %v", time.Since(start))
}

// TestLoadSpecPatched checks the schema-bug patch: meta with many keys validates, values must be strings.
func TestLoadSpecPatched(t *testing.T) {
	spec := apitest.LoadSpec(t)
	meta := spec.Components.Schemas["PinMeta"].Value
	if meta.MaxProps == nil || *meta.MaxProps != 1000 {
		t.Errorf("PinMeta maxProperties = %v, want 1000 on the object", meta.MaxProps)
	}
	if ap := meta.AdditionalProperties.Schema.Value; ap.MaxProps != nil {
		t.Errorf("PinMeta additionalProperties still has maxProperties")
	}
	if err := meta.VisitJSON(map[string]any{"a": "1", "b": "2"}); err != nil {
		t.Errorf("valid meta rejected: %v", err)
	}
	if err := meta.VisitJSON(map[string]any{"a": 1.0}); err == nil {
		t.Error("meta with a number value accepted")
	}
	if spec.Servers != nil {
		t.Error("servers not dropped")
	}
}
