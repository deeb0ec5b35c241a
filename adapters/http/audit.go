package httpapi

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/google/uuid"

	"github.com/anchorage-pin/anchorage/domain"
	"github.com/anchorage-pin/anchorage/events"
	"github.com/anchorage-pin/anchorage/projections"
)

// The audit API, under /v1 when Config.Audit is set: who pinned or removed what, when, with which token.
//
//	GET /v1/audit                       the audit trail, newest first, filtered and paginated (audit:read: the
//	                                    token's org; sys:audit: every org, events of no org included, or org=)
//	GET /v1/pins/{requestid}/history    every event of one pin request, placements and observations included,
//	                                    oldest first (pins:read or audit:read; the token's org only)
//	GET /v1/pins?as_of=T                the org's pin list as it stood at T, folded from the audit trail
//	                                    (pins:read; every GET /pins filter applies)
//
// The as-of list is served here rather than as a branch of GET /pins, which is the Pinning Services API's and
// stays exactly the spec's.

// AuditReader reads the audit trail (postgres.AuditReader implements it).
type AuditReader interface {
	// AuditEvents returns the events matching f, newest first, at most f.Limit.
	AuditEvents(ctx context.Context, f projections.AuditFilter) ([]projections.AuditEvent, error)
	// PinHistory returns every event of one of org's pin requests, oldest first; an unknown request (or another
	// org's) is domain.ErrNotFound.
	PinHistory(ctx context.Context, orgID, requestID string) ([]projections.AuditEvent, error)
	// PinsAsOf returns org's pin list as it stood at t, newest first (projections.AsOf).
	PinsAsOf(ctx context.Context, orgID string, t time.Time) ([]projections.PinView, error)
}

// AuditProjection is the audit projection's name: audit reads wait, like pin reads, until it shows the org's
// latest write made through this node.
const AuditProjection = "audit"

// Audit query limits.
const (
	DefaultAuditLimit = 50
	MaxAuditLimit     = 1000
	maxActorLen       = 512
)

// AuditEventJSON is one event of the audit trail as the API returns it.
type AuditEventJSON struct {
	Seq     uint64 `json:"seq"`
	At      string `json:"at"`
	Type    string `json:"type"`
	Version int    `json:"version"`
	Subject string `json:"subject"`
	Actor   string `json:"actor"`
	// Corr, OrgID and RequestID are null when the event has none.
	Corr      *string         `json:"corr"`
	OrgID     *string         `json:"org_id"`
	RequestID *string         `json:"request_id"`
	Data      json.RawMessage `json:"data"`
}

// AuditPage is the body of GET /v1/audit. NextCursor is absent on the last page.
type AuditPage struct {
	Events     []AuditEventJSON `json:"events"`
	NextCursor string           `json:"next_cursor,omitempty"`
}

// AuditHistory is the body of GET /v1/pins/{requestid}/history.
type AuditHistory struct {
	Events []AuditEventJSON `json:"events"`
}

// AuditEventOf renders an audit event as the API does.
func AuditEventOf(e projections.AuditEvent) AuditEventJSON {
	orNull := func(s string) *string {
		if s == "" {
			return nil
		}
		return &s
	}
	data := e.Data
	if len(data) == 0 {
		data = json.RawMessage("null")
	}
	return AuditEventJSON{
		Seq: e.Seq, At: e.At.UTC().Format(time.RFC3339Nano), Type: e.Type, Version: e.Version, Subject: e.Subject, Actor: e.Actor,
		Corr: orNull(e.Corr), OrgID: orNull(e.OrgID), RequestID: orNull(e.RequestID), Data: data,
	}
}

func auditEventsJSON(evs []projections.AuditEvent) []AuditEventJSON {
	out := make([]AuditEventJSON, len(evs))
	for i, e := range evs {
		out[i] = AuditEventOf(e)
	}
	return out
}

// auditRoutes registers the audit API on the /v1 router; nothing when Config.Audit is nil.
func (s *server) auditRoutes(r chi.Router) {
	if s.cfg.Audit == nil {
		return
	}
	r.Group(func(r chi.Router) {
		r.Use(s.authenticate)
		r.Get("/audit", s.listAudit) // audit:read or sys:audit, checked by the handler
		r.With(s.requireAnyScope(domain.ScopePinsRead, domain.ScopeAuditRead, domain.ScopeSysAudit)).Get("/pins/{requestid}/history", s.pinHistory)
		r.With(s.requireScope(domain.ScopePinsRead)).Get("/pins", s.pinsAsOf)
	})
}

// requireAnyScope lets the request through only if its token carries one of scopes.
func (s *server) requireAnyScope(scopes ...string) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			p, ok := principal(r.Context())
			if !ok {
				s.writeError(w, r, errors.New("requireAnyScope used without authenticate"))
				return
			}
			if !slices.ContainsFunc(scopes, func(sc string) bool { return slices.Contains(p.Scopes, sc) }) {
				s.writeError(w, r, forbidden(p, strings.Join(scopes, " or ")))
				return
			}
			next.ServeHTTP(w, r)
		})
	}
}

func forbidden(p Principal, need string) error {
	return domain.ReasonErrorf(domain.ErrForbidden, "FORBIDDEN",
		"this operation needs the %s scope, which the access token does not carry (it has: %s); use a token with %s",
		need, scopeList(p.Scopes), need)
}

// GET /v1/audit
func (s *server) listAudit(w http.ResponseWriter, r *http.Request) {
	p, _ := principal(r.Context())
	sys := slices.Contains(p.Scopes, domain.ScopeSysAudit)
	if !sys && !slices.Contains(p.Scopes, domain.ScopeAuditRead) {
		s.writeError(w, r, forbidden(p, domain.ScopeAuditRead+" (or "+domain.ScopeSysAudit+" for every org)"))
		return
	}
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		s.writeError(w, r, domain.Errorf(domain.ErrInvalid, "the query string is malformed: %v; percent-encode parameter values", err))
		return
	}
	f, err := ParseAuditQuery(p, q)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if !s.auditCaughtUp(w, r, p) {
		return
	}
	limit := f.Limit
	f.Limit++ // one more: is there a next page?
	evs, err := s.cfg.Audit.AuditEvents(r.Context(), f)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	page := AuditPage{}
	if len(evs) > limit {
		evs = evs[:limit]
		page.NextCursor = EncodeAuditCursor(evs[limit-1].Seq)
	}
	page.Events = auditEventsJSON(evs)
	writeJSON(w, http.StatusOK, page)
}

// auditParams are the parameters GET /v1/audit takes.
var auditParams = []string{"actor", "type", "requestid", "cid", "since", "until", "org", "limit", "cursor"}

// eventTypes are the event types this build knows, for validating type filters.
var eventTypes = func() []string {
	var out []string
	for _, tv := range events.Registered() {
		if i := strings.LastIndex(tv, ".v"); i > 0 && !slices.Contains(out, tv[:i]) {
			out = append(out, tv[:i])
		}
	}
	sort.Strings(out)
	return out
}()

// ParseAuditQuery turns a GET /v1/audit query into a filter for p: its own org, or (sys:audit) every org or the
// one org= names. Errors are domain.ErrInvalid (domain.ErrForbidden for org= without sys:audit) saying what to
// fix. Unlike GET /pins, unknown parameters are refused: a misspelt filter must not widen an audit query.
func ParseAuditQuery(p Principal, q url.Values) (projections.AuditFilter, error) {
	f := projections.AuditFilter{OrgID: p.OrgID, Limit: DefaultAuditLimit}
	for k := range q {
		if !slices.Contains(auditParams, k) {
			return f, domain.Errorf(domain.ErrInvalid, "unknown parameter %q; GET /v1/audit takes %s", clip(k), strings.Join(auditParams, ", "))
		}
	}
	get := func(name string) (string, error) {
		v, err := single(q, name)
		return strings.TrimSpace(v), err
	}
	var err error
	if f.Actor, err = get("actor"); err != nil {
		return f, err
	}
	if len(f.Actor) > maxActorLen {
		return f, domain.Errorf(domain.ErrInvalid, "actor is %d bytes long; actors are at most %d (token:<id>, user:<id>, admin:<user>, system:<component>)", len(f.Actor), maxActorLen)
	}
	if f.Type, err = get("type"); err != nil {
		return f, err
	}
	if f.Type != "" && !slices.Contains(eventTypes, f.Type) {
		return f, domain.Errorf(domain.ErrInvalid, "type %q is not an event type; use one of %s", clip(f.Type), strings.Join(eventTypes, ", "))
	}
	if f.RequestID, err = get("requestid"); err != nil {
		return f, err
	}
	if f.RequestID != "" {
		id, perr := uuid.Parse(f.RequestID)
		if perr != nil || !domain.ValidID(f.RequestID) {
			return f, domain.Errorf(domain.ErrInvalid, "requestid %q is not a pin request id (a UUID)", clip(f.RequestID))
		}
		f.RequestID = id.String()
	}
	c, err := get("cid")
	if err != nil {
		return f, err
	}
	if c != "" {
		pc, err := domain.ParseCID(c)
		if err != nil {
			return f, domain.Errorf(domain.ErrInvalid, "cid filter: %s", errMsg(err))
		}
		f.CIDKey = pc.Key
	}
	for _, b := range []struct {
		name string
		dst  *time.Time
	}{{"since", &f.Since}, {"until", &f.Until}} {
		v, err := get(b.name)
		if err != nil {
			return f, err
		}
		if v == "" {
			continue
		}
		t, err := ParseTimestamp(v)
		if err != nil {
			return f, domain.Errorf(domain.ErrInvalid, "%s %q is not an RFC 3339 timestamp (e.g. 2026-01-02T15:04:05Z or 2026-01-02T16:04:05.123+01:00)", b.name, clip(v))
		}
		*b.dst = t
	}
	if !f.Since.IsZero() && !f.Until.IsZero() && !f.Since.Before(f.Until) {
		return f, domain.Errorf(domain.ErrInvalid, "since must be before until (since is inclusive, until exclusive)")
	}
	org, err := get("org")
	if err != nil {
		return f, err
	}
	sys := slices.Contains(p.Scopes, domain.ScopeSysAudit)
	switch {
	case org == "" && sys:
		f.OrgID, f.AllOrgs = "", true
	case org != "":
		id, err := orgParam(org)
		if err != nil {
			return f, err
		}
		if !sys && id != p.OrgID {
			return f, domain.ReasonErrorf(domain.ErrForbidden, "FORBIDDEN",
				"org names another org; reading another org's audit trail needs the %s scope", domain.ScopeSysAudit)
		}
		f.OrgID = id
	}
	if v, err := get("limit"); err != nil {
		return f, err
	} else if v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > MaxAuditLimit {
			return f, domain.Errorf(domain.ErrInvalid, "limit %q is invalid; it must be an integer from 1 to %d (default %d)", clip(v), MaxAuditLimit, DefaultAuditLimit)
		}
		f.Limit = n
	}
	if v, err := get("cursor"); err != nil {
		return f, err
	} else if v != "" {
		seq, err := DecodeAuditCursor(v)
		if err != nil {
			return f, err
		}
		f.BeforeSeq = seq
	}
	return f, nil
}

// orgParam resolves org= (an org id or slug) to an org id.
func orgParam(v string) (string, error) {
	if id, err := uuid.Parse(v); err == nil && domain.ValidID(v) {
		return id.String(), nil
	}
	if err := domain.ValidateSlug(v); err != nil {
		return "", domain.Errorf(domain.ErrInvalid, "org %q is neither an org id (a UUID) nor an org slug", clip(v))
	}
	return domain.OrgIDForSlug(v), nil
}

// auditCursorVersion prefixes a cursor, so its format can change.
const auditCursorVersion = 1

// EncodeAuditCursor returns the opaque cursor of the page after the event seq: the events older than it.
func EncodeAuditCursor(seq uint64) string {
	b := make([]byte, 9)
	b[0] = auditCursorVersion
	binary.BigEndian.PutUint64(b[1:], seq)
	return base64.RawURLEncoding.EncodeToString(b)
}

// DecodeAuditCursor reads a cursor EncodeAuditCursor made.
func DecodeAuditCursor(c string) (uint64, error) {
	b, err := base64.RawURLEncoding.DecodeString(c)
	if err != nil || len(b) != 9 || b[0] != auditCursorVersion || binary.BigEndian.Uint64(b[1:]) == 0 {
		return 0, domain.Errorf(domain.ErrInvalid, "cursor %q is not one this API returned; pass next_cursor back unchanged", clip(c))
	}
	return binary.BigEndian.Uint64(b[1:]), nil
}

// GET /v1/pins/{requestid}/history
func (s *server) pinHistory(w http.ResponseWriter, r *http.Request) {
	id, ok := s.pathID(w, r)
	if !ok {
		return
	}
	p, _ := principal(r.Context())
	if !s.auditCaughtUp(w, r, p) {
		return
	}
	evs, err := s.cfg.Audit.PinHistory(r.Context(), p.OrgID, id)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, AuditHistory{Events: auditEventsJSON(evs)})
}

// GET /v1/pins?as_of=T: the list as it stood at T. Every GET /pins parameter applies (the same defaults: pinned
// only unless status, cid or name says otherwise), evaluated on the folded list; delegates are the serving
// node's, as for a pin not placed (the fold does not know the nodes' addresses at T).
func (s *server) pinsAsOf(w http.ResponseWriter, r *http.Request) {
	p, _ := principal(r.Context())
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		s.writeError(w, r, domain.Errorf(domain.ErrInvalid, "the query string is malformed: %v; percent-encode parameter values", err))
		return
	}
	v, err := single(q, "as_of")
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if strings.TrimSpace(v) == "" {
		s.writeError(w, r, domain.Errorf(domain.ErrInvalid,
			"as_of is required on /v1/pins: the list as it stood at an RFC 3339 time, e.g. ?as_of=2026-01-02T15:04:05Z (the current list is GET /pins)"))
		return
	}
	at, err := ParseTimestamp(v)
	if err != nil {
		s.writeError(w, r, domain.Errorf(domain.ErrInvalid, "as_of %q is not an RFC 3339 timestamp (e.g. 2026-01-02T15:04:05Z)", clip(v)))
		return
	}
	q.Del("as_of")
	f, err := ParseListQuery(p.OrgID, q)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if !s.auditCaughtUp(w, r, p) {
		return
	}
	pins, err := s.cfg.Audit.PinsAsOf(r.Context(), p.OrgID, at)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	count, page := projections.FilterPins(pins, f)
	d := &delegates{s: s}
	out := PinResults{Count: count, Results: make([]PinStatus, 0, len(page))}
	for _, v := range page {
		ps, err := d.fromView(r, v)
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		out.Results = append(out.Results, ps)
	}
	writeJSON(w, http.StatusOK, out)
}

// auditCaughtUp waits, bounded by ReadYourWritesTimeout, until the audit projection shows the org's last write
// made through this node; it answers 503 and reports false when it does not.
func (s *server) auditCaughtUp(w http.ResponseWriter, r *http.Request, p Principal) bool {
	return s.caughtUp(w, r, p, AuditProjection, "the audit trail has")
}
