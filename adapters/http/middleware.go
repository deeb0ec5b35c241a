package httpapi

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"runtime/debug"
	"slices"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/google/uuid"

	"github.com/anchorage-pin/anchorage/domain"
)

type ctxKey int

const (
	keyReqInfo ctxKey = iota
	keyPrincipal
)

// reqInfo is what the access log needs to know about a request; authenticate fills in the org.
type reqInfo struct {
	id  string
	org string
}

// MaxRequestIDLen bounds the X-Request-Id values taken from clients.
const MaxRequestIDLen = 128

func requestID(ctx context.Context) string {
	if info, ok := ctx.Value(keyReqInfo).(*reqInfo); ok {
		return info.id
	}
	return ""
}

func principal(ctx context.Context) (Principal, bool) {
	p, ok := ctx.Value(keyPrincipal).(Principal)
	return p, ok
}

// sanitizeRequestID keeps a client's X-Request-Id when it is a sane token (1 to 128 printable ASCII characters
// without spaces) and otherwise generates one.
func sanitizeRequestID(v string) string {
	if len(v) == 0 || len(v) > MaxRequestIDLen {
		return uuid.NewString()
	}
	for i := 0; i < len(v); i++ {
		if v[i] <= ' ' || v[i] >= 0x7f {
			return uuid.NewString()
		}
	}
	return v
}

// recorder remembers what was written, for the access log, the metrics and the recoverer.
type recorder struct {
	http.ResponseWriter
	status      int
	bytes       int64
	wroteHeader bool
}

func (rw *recorder) WriteHeader(code int) {
	if !rw.wroteHeader {
		rw.status, rw.wroteHeader = code, true
	}
	rw.ResponseWriter.WriteHeader(code)
}

func (rw *recorder) Write(b []byte) (int, error) {
	if !rw.wroteHeader {
		rw.WriteHeader(http.StatusOK)
	}
	n, err := rw.ResponseWriter.Write(b)
	rw.bytes += int64(n)
	return n, err
}

func (rw *recorder) Unwrap() http.ResponseWriter { return rw.ResponseWriter }

// Flush supports streaming handlers (promhttp) when the underlying writer does.
func (rw *recorder) Flush() {
	if f, ok := rw.ResponseWriter.(http.Flusher); ok {
		if !rw.wroteHeader {
			rw.WriteHeader(http.StatusOK)
		}
		f.Flush()
	}
}

// instrument is the outermost middleware: request id, default headers, panic recovery, access log and
// metrics. Every response, errors included, defaults to Content-Type application/json.
func (s *server) instrument(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		info := &reqInfo{id: sanitizeRequestID(r.Header.Get("X-Request-Id"))}
		h := w.Header()
		h.Set("Content-Type", contentTypeJSON)
		h.Set("X-Request-Id", info.id)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Cache-Control", "no-store")
		rec := &recorder{ResponseWriter: w}
		r = r.WithContext(context.WithValue(r.Context(), keyReqInfo, info))
		defer func() {
			p := recover()
			if p != nil && p != http.ErrAbortHandler { //nolint:errorlint // ErrAbortHandler is a sentinel panic value.
				s.log.LogAttrs(r.Context(), slog.LevelError, "panic serving request",
					slog.String("request_id", info.id), slog.String("method", r.Method), slog.String("route", routePattern(r)),
					slog.String("panic", fmt.Sprint(p)), slog.String("stack", string(debug.Stack())))
				if !rec.wroteHeader {
					writeFailure(rec, http.StatusInternalServerError, FailureError{
						Reason: ReasonInternal, Details: genericDetails[http.StatusInternalServerError],
					})
				}
			}
			s.finish(r, rec, info, start)
			if p == http.ErrAbortHandler { //nolint:errorlint // see above
				panic(p)
			}
		}()
		next.ServeHTTP(rec, r)
	})
}

func routePattern(r *http.Request) string {
	if rctx := chi.RouteContext(r.Context()); rctx != nil {
		if p := rctx.RoutePattern(); p != "" {
			return p
		}
	}
	return "unmatched"
}

var knownMethods = []string{
	http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
	http.MethodDelete, http.MethodOptions, http.MethodConnect, http.MethodTrace,
}

func methodLabel(m string) string {
	if slices.Contains(knownMethods, m) {
		return m
	}
	return "OTHER"
}

func (s *server) finish(r *http.Request, rec *recorder, info *reqInfo, start time.Time) {
	d := time.Since(start)
	status := rec.status
	if !rec.wroteHeader {
		status = http.StatusOK
	}
	route := routePattern(r)
	s.metrics.observe(route, methodLabel(r.Method), status, d)
	level := slog.LevelInfo
	if status >= 500 && status != statusClientClosed {
		level = slog.LevelWarn
	}
	// Never log headers or bodies: the Authorization header carries the token.
	s.log.LogAttrs(r.Context(), level, "http request",
		slog.String("method", r.Method),
		slog.String("route", route),
		slog.Int("status", status),
		slog.Duration("duration", d),
		slog.Int64("bytes", rec.bytes),
		slog.String("request_id", info.id),
		slog.String("org_id", info.org),
	)
}

// authenticate requires `Authorization: Bearer <token>` and a token the Authenticator accepts.
func (s *server) authenticate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		token, err := bearerToken(r.Header)
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		p, err := s.cfg.Auth.Authenticate(r.Context(), token)
		if err != nil {
			if errors.Is(err, domain.ErrUnauthorized) {
				s.log.LogAttrs(r.Context(), slog.LevelDebug, "token rejected", slog.String("request_id", requestID(r.Context())))
			}
			s.writeError(w, r, err)
			return
		}
		if p.OrgID == "" {
			s.writeError(w, r, errors.New("authenticator returned a principal without an org"))
			return
		}
		if info, ok := r.Context().Value(keyReqInfo).(*reqInfo); ok {
			info.org = p.OrgID
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), keyPrincipal, p)))
	})
}

// bearerToken extracts the token of `Authorization: Bearer <token>`. Its errors never contain the header.
func bearerToken(h http.Header) (string, error) {
	vals := h.Values("Authorization")
	switch len(vals) {
	case 0:
		return "", domain.Errorf(domain.ErrUnauthorized, "the request has no Authorization header; send `Authorization: Bearer <access token>`")
	case 1:
	default:
		return "", domain.Errorf(domain.ErrUnauthorized, "the request has %d Authorization headers; send exactly one: `Authorization: Bearer <access token>`", len(vals))
	}
	scheme, rest, _ := strings.Cut(strings.TrimSpace(vals[0]), " ")
	if !strings.EqualFold(scheme, "Bearer") {
		return "", domain.Errorf(domain.ErrUnauthorized, "the Authorization header must use the Bearer scheme: `Authorization: Bearer <access token>`")
	}
	token := strings.TrimSpace(rest)
	if token == "" {
		return "", domain.Errorf(domain.ErrUnauthorized, "the Authorization header has no token after `Bearer `")
	}
	if strings.ContainsAny(token, " \t") {
		return "", domain.Errorf(domain.ErrUnauthorized, "the Authorization header is malformed: the token must not contain spaces")
	}
	return token, nil
}

// requireScope lets the request through only if its token carries scope.
func (s *server) requireScope(scope string) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			p, ok := principal(r.Context())
			if !ok {
				s.writeError(w, r, errors.New("requireScope used without authenticate"))
				return
			}
			if !slices.Contains(p.Scopes, scope) {
				s.writeError(w, r, domain.ReasonErrorf(domain.ErrForbidden, "FORBIDDEN",
					"this operation needs the %s scope, which the access token does not carry (it has: %s); use a token with %s",
					scope, scopeList(p.Scopes), scope))
				return
			}
			next.ServeHTTP(w, r)
		})
	}
}

func scopeList(scopes []string) string {
	if len(scopes) == 0 {
		return "none"
	}
	return strings.Join(scopes, ", ")
}

func (s *server) notFound(w http.ResponseWriter, r *http.Request) {
	s.writeError(w, r, domain.Errorf(domain.ErrNotFound,
		"there is no endpoint %s %s; the Pinning Services API is at /pins and /pins/{requestid} under the service's root URL",
		r.Method, clip(r.URL.Path)))
}

func (s *server) methodNotAllowed(w http.ResponseWriter, r *http.Request) {
	var allowed []string
	for _, m := range []string{http.MethodGet, http.MethodPost, http.MethodDelete} {
		if s.router.Match(chi.NewRouteContext(), m, r.URL.Path) {
			allowed = append(allowed, m)
		}
	}
	if len(allowed) > 0 {
		w.Header().Set("Allow", strings.Join(allowed, ", "))
	}
	writeFailure(w, http.StatusMethodNotAllowed, FailureError{
		Reason:  ReasonMethodNotAllowed,
		Details: fmt.Sprintf("%s is not allowed on %s; allowed methods: %s", clip(r.Method), clip(r.URL.Path), strings.Join(allowed, ", ")),
	})
}

// clip shortens client-supplied text echoed in error details.
func clip(s string) string {
	const n = 64
	if len(s) <= n {
		return s
	}
	// Do not cut a UTF-8 sequence in half.
	i := n
	for i > 0 && s[i]&0xC0 == 0x80 {
		i--
	}
	return s[:i] + "…"
}
