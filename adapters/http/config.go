package httpapi

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/go-chi/cors"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/anchorage-pin/anchorage/domain"
	"github.com/anchorage-pin/anchorage/events"
	"github.com/anchorage-pin/anchorage/projections"
)

// Defaults for the optional Config fields.
const (
	DefaultMaxBodyBytes          = 1 << 20
	DefaultReadYourWritesTimeout = 2 * time.Second
	DefaultPinsProjection        = "pins"
)

// Principal is who an authenticated request speaks for.
type Principal struct {
	OrgID string
	// Actor is recorded in every event the request causes, e.g. "token:<id>".
	Actor  string
	Scopes []string
}

// Authenticator checks a bearer token. Errors wrap domain.ErrUnauthorized (the token is not acceptable; the
// *domain.Error message is shown to the client, so it must not contain the token) or domain.ErrUnavailable
// (the authenticator cannot answer right now).
type Authenticator interface {
	Authenticate(ctx context.Context, bearer string) (Principal, error)
}

// PinCommander runs the pin commands (domain.Service implements it).
type PinCommander interface {
	RequestPin(ctx context.Context, m domain.Meta, org string, spec domain.PinSpec) (events.PinRequested, domain.Appended, error)
	ReplacePin(ctx context.Context, m domain.Meta, org, oldID string, spec domain.PinSpec) (events.PinRequested, domain.Appended, error)
	RemovePin(ctx context.Context, m domain.Meta, org, id string) (domain.Appended, error)
}

// Watermark lets a request wait until a projection has applied a stream sequence (*projections.Watermarks
// implements it).
type Watermark interface {
	Wait(ctx context.Context, projection string, seq uint64) error
}

// Horizon remembers, per org, the last stream sequence this node wrote (*projections.Horizons implements it).
type Horizon interface {
	Record(org string, seq uint64)
	Get(org string) uint64
}

// Health reports readiness: nil means ready; an error's message says what is not ready and is shown on
// /readyz (unauthenticated), so it must not contain secrets.
type Health interface {
	Ready(ctx context.Context) error
}

// Config wires the handler.
type Config struct {
	// Required.
	Auth      Authenticator
	Pins      PinCommander
	Reader    projections.PinReader
	Watermark Watermark
	// Delegates returns the serving node's own multiaddrs, each ending /p2p/<peerID>; they are the delegates of a
	// pin that has no placement yet. Returning none is a misconfiguration: pin responses then fail with 503.
	Delegates func(ctx context.Context) []string
	Ready     Health

	// Optional.
	// Horizon tracks each org's last write for read-your-writes; default: a private one.
	Horizon               Horizon
	PinsProjection        string        // default "pins"
	MaxBodyBytes          int64         // default 1 MiB
	ReadYourWritesTimeout time.Duration // default 2s
	// CORSOrigins are the allowed browser origins ("*" allows any); none: no CORS headers at all.
	CORSOrigins []string
	Logger      *slog.Logger // default: discard
	// Registerer receives the HTTP metrics (nil: they are not registered anywhere).
	Registerer prometheus.Registerer
	// Gatherer is served on /metrics (nil: Registerer if it is a Gatherer, else /metrics is 404).
	Gatherer prometheus.Gatherer
	Audit    AuditReader // the audit API under /v1 (audit.go); nil: no audit routes
}

type server struct {
	cfg     Config
	log     *slog.Logger
	metrics *metrics
	router  chi.Router
}

// New validates cfg and returns the API handler.
func New(cfg Config) (http.Handler, error) {
	var missing []string
	if cfg.Auth == nil {
		missing = append(missing, "Auth")
	}
	if cfg.Pins == nil {
		missing = append(missing, "Pins")
	}
	if cfg.Reader == nil {
		missing = append(missing, "Reader")
	}
	if cfg.Watermark == nil {
		missing = append(missing, "Watermark")
	}
	if cfg.Delegates == nil {
		missing = append(missing, "Delegates")
	}
	if cfg.Ready == nil {
		missing = append(missing, "Ready")
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("httpapi: Config is missing %v", missing)
	}
	if cfg.MaxBodyBytes < 0 || cfg.ReadYourWritesTimeout < 0 {
		return nil, errors.New("httpapi: MaxBodyBytes and ReadYourWritesTimeout must not be negative")
	}
	if cfg.PinsProjection == "" {
		cfg.PinsProjection = DefaultPinsProjection
	}
	if cfg.Horizon == nil {
		cfg.Horizon = projections.NewHorizons()
	}
	if cfg.MaxBodyBytes == 0 {
		cfg.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if cfg.ReadYourWritesTimeout == 0 {
		cfg.ReadYourWritesTimeout = DefaultReadYourWritesTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Gatherer == nil {
		if g, ok := cfg.Registerer.(prometheus.Gatherer); ok {
			cfg.Gatherer = g
		}
	}
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	s := &server{cfg: cfg, log: cfg.Logger, metrics: m}
	s.router = s.routes()
	return s.router, nil
}

func (s *server) routes() chi.Router {
	r := chi.NewRouter()
	r.Use(s.instrument)
	if len(s.cfg.CORSOrigins) > 0 {
		r.Use(cors.Handler(cors.Options{
			AllowedOrigins:   s.cfg.CORSOrigins,
			AllowedMethods:   []string{http.MethodGet, http.MethodPost, http.MethodDelete, http.MethodOptions},
			AllowedHeaders:   []string{"Authorization", "Content-Type", "X-Request-Id"},
			ExposedHeaders:   []string{"X-Request-Id", "Retry-After", "WWW-Authenticate"},
			AllowCredentials: false,
			MaxAge:           600,
		}))
	}
	r.NotFound(s.notFound)
	r.MethodNotAllowed(s.methodNotAllowed)

	r.Get("/healthz", s.healthz)
	r.Get("/readyz", s.readyz)
	r.Get("/metrics", s.metricsHandler())

	// The Pinning Services API, at the root.
	r.Group(func(r chi.Router) {
		r.Use(s.authenticate)
		r.With(s.requireScope(domain.ScopePinsRead)).Get("/pins", s.listPins)
		r.With(s.requireScope(domain.ScopePinsWrite)).Post("/pins", s.addPin)
		r.With(s.requireScope(domain.ScopePinsRead)).Get("/pins/{requestid}", s.getPin)
		r.With(s.requireScope(domain.ScopePinsWrite)).Post("/pins/{requestid}", s.replacePin)
		r.With(s.requireScope(domain.ScopePinsWrite)).Delete("/pins/{requestid}", s.deletePin)
	})

	// anchorage's own API.
	r.Route("/v1", func(r chi.Router) {
		r.With(s.authenticate).Get("/whoami", s.whoami)
		s.auditRoutes(r)
	})
	return r
}

func (s *server) metricsHandler() http.HandlerFunc {
	if s.cfg.Gatherer == nil {
		return func(w http.ResponseWriter, r *http.Request) {
			s.writeError(w, r, domain.Errorf(domain.ErrNotFound, "metrics are not enabled on this server"))
		}
	}
	h := promhttp.HandlerFor(s.cfg.Gatherer, promhttp.HandlerOpts{})
	return h.ServeHTTP
}
