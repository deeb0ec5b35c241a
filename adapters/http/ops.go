package httpapi

import (
	"context"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// readyTimeout bounds a readiness check.
const readyTimeout = 2 * time.Second

// GET /healthz: the process serves HTTP.
func (s *server) healthz(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

// GET /readyz: the dependencies answer.
func (s *server) readyz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), readyTimeout)
	defer cancel()
	if err := s.cfg.Ready.Ready(ctx); err != nil {
		w.Header().Set("Retry-After", "1")
		writeFailure(w, http.StatusServiceUnavailable, FailureError{Reason: ReasonNotReady, Details: "not ready: " + err.Error()})
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}

// Whoami is the body of GET /v1/whoami.
type Whoami struct {
	OrgID  string   `json:"org_id"`
	Actor  string   `json:"actor"`
	Scopes []string `json:"scopes"`
}

// GET /v1/whoami
func (s *server) whoami(w http.ResponseWriter, r *http.Request) {
	p, _ := principal(r.Context())
	scopes := p.Scopes
	if scopes == nil {
		scopes = []string{}
	}
	writeJSON(w, http.StatusOK, Whoami{OrgID: p.OrgID, Actor: p.Actor, Scopes: scopes})
}

type metrics struct {
	duration    *prometheus.HistogramVec
	rywTimeouts *prometheus.CounterVec
}

// newMetrics registers the HTTP metrics on reg (nil: unregistered). Registering twice on one registry reuses
// the metrics already there instead of failing.
func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	duration := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "anchorage_http_request_duration_seconds",
		Help:    "HTTP request duration, by chi route pattern, method and status.",
		Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
	}, []string{"route", "method", "status"})
	ryw := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "anchorage_http_read_your_writes_timeouts_total",
		Help: "Writes answered before the pins projection showed them because the read-your-writes wait timed out, by operation.",
	}, []string{"operation"})
	if reg != nil {
		var err error
		if duration, err = register(reg, duration); err != nil {
			return nil, err
		}
		if ryw, err = register(reg, ryw); err != nil {
			return nil, err
		}
	}
	return &metrics{duration: duration, rywTimeouts: ryw}, nil
}

func register[C prometheus.Collector](reg prometheus.Registerer, c C) (C, error) {
	if err := reg.Register(c); err != nil {
		if are, ok := err.(prometheus.AlreadyRegisteredError); ok { //nolint:errorlint // Register returns it unwrapped
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing, nil
			}
		}
		return c, err
	}
	return c, nil
}

func (m *metrics) observe(route, method string, status int, d time.Duration) {
	m.duration.WithLabelValues(route, method, strconv.Itoa(status)).Observe(d.Seconds())
}
