package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/anchorage-pin/anchorage/adapters/postgres"
)

// rebuildState is the progress of a rebuild at start.
type rebuildState struct {
	mu          sync.Mutex
	done, total uint64
	err         error
}

func (s *rebuildState) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return "rebuilding the read models from the event log failed and is being retried: " + s.err.Error()
	}
	if s.total == 0 {
		return "rebuilding the read models from the event log"
	}
	return fmt.Sprintf("rebuilding the read models from the event log: event %d of %d (%.0f%%)", s.done, s.total, 100*float64(s.done)/float64(s.total))
}

// readModelsEmpty reports whether the read models hold nothing while the log holds events: a lost or new
// database that a rebuild fills fastest.
func (a *app) readModelsEmpty(ctx context.Context) (bool, error) {
	head, err := a.elog.LastSeq(ctx)
	if err != nil || head == 0 {
		return false, err
	}
	adm := postgres.NewAdmin(a.owner)
	for _, p := range []string{postgres.ProjectionOrgs, postgres.ProjectionTokens, postgres.ProjectionPins} {
		cp, err := adm.Checkpoint(ctx, p)
		if err != nil || cp > 0 {
			return false, err
		}
	}
	return true, nil
}

// rebuildReadModels rebuilds every read model from the log, retrying until it succeeds (true) or the node
// stops (false).
func (a *app) rebuildReadModels(ownerDSN, apiRole string) bool {
	st := a.rebuilding.Load()
	a.log.Warn("rebuilding the read models from the event log before serving reads")
	for a.ctx.Err() == nil {
		stats, err := postgres.Rebuild(a.ctx, ownerDSN, apiRole, a.elog, postgres.RebuildOptions{
			Logger: a.log,
			Progress: func(_ string, done, total uint64) {
				st.mu.Lock()
				st.done, st.total = done, total
				st.mu.Unlock()
			},
		})
		if err == nil {
			a.log.Info("read models rebuilt from the event log", "events", stats.Events, "head", stats.Head, "took", stats.Total.String())
			a.rebuilding.Store(nil)
			return true
		}
		st.mu.Lock()
		st.err = err
		st.mu.Unlock()
		a.log.Error("rebuilding the read models failed; retrying", "err", err)
		sleepCtx(a.ctx, 5*time.Second)
	}
	return false
}

// whileRebuilding answers reads of the pins API with 503 and Retry-After while the read models are rebuilt:
// they would be incomplete. Writes only need the log and go through.
func (a *app) whileRebuilding(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		st := a.rebuilding.Load()
		if st == nil || r.Method != http.MethodGet || !(r.URL.Path == "/pins" || strings.HasPrefix(r.URL.Path, "/pins/") || strings.HasPrefix(r.URL.Path, "/v1/")) {
			next.ServeHTTP(w, r)
			return
		}
		body, _ := json.Marshal(map[string]map[string]string{"error": {"reason": "REBUILDING", "details": st.String() + "; retry shortly"}})
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Retry-After", "5")
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = w.Write(body)
	})
}
