package httpapi

import (
	"context"
	"log/slog"
	"net/http"
	"net/url"

	"github.com/go-chi/chi/v5"

	"github.com/anchorage-pin/anchorage/domain"
	"github.com/anchorage-pin/anchorage/events"
)

// commandMeta is what every event caused by this request records: the token's actor and the request id.
// An Idempotency-Key on POST /pins makes a retried request return the original pin, not a second one.
func commandMeta(r *http.Request, p Principal) domain.Meta {
	return domain.Meta{Actor: p.Actor, Corr: requestID(r.Context()), IdempotencyKey: r.Header.Get("Idempotency-Key")}
}

// pathID returns the {requestid} of the route, or answers 404 if it cannot be an anchorage id.
func (s *server) pathID(w http.ResponseWriter, r *http.Request) (string, bool) {
	id := chi.URLParam(r, "requestid")
	if !domain.ValidID(id) {
		s.writeError(w, r, domain.Errorf(domain.ErrNotFound, "pin request %q does not exist", clip(id)))
		return "", false
	}
	return id, true
}

// GET /pins
func (s *server) listPins(w http.ResponseWriter, r *http.Request) {
	p, _ := principal(r.Context())
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		// Silently dropping a malformed filter could widen a listing that a client (Kubo's `pin remote rm`)
		// then deletes from; refuse instead.
		s.writeError(w, r, domain.Errorf(domain.ErrInvalid, "the query string is malformed: %v; percent-encode parameter values", err))
		return
	}
	f, err := ParseListQuery(p.OrgID, q)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if !s.readYourWrites(w, r, p) {
		return
	}
	count, views, err := s.cfg.Reader.ListPins(r.Context(), f)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	d := &delegates{s: s}
	out := PinResults{Count: count, Results: make([]PinStatus, 0, len(views))}
	for _, v := range views {
		ps, err := d.fromView(r, v)
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		out.Results = append(out.Results, ps)
	}
	writeJSON(w, http.StatusOK, out)
}

// GET /pins/{requestid}
func (s *server) getPin(w http.ResponseWriter, r *http.Request) {
	id, ok := s.pathID(w, r)
	if !ok {
		return
	}
	p, _ := principal(r.Context())
	if !s.readYourWrites(w, r, p) {
		return
	}
	v, err := s.cfg.Reader.GetPin(r.Context(), p.OrgID, id)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	ps, err := (&delegates{s: s}).fromView(r, v)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, ps)
}

// POST /pins
func (s *server) addPin(w http.ResponseWriter, r *http.Request) {
	spec, err := decodePinBody(w, r, s.cfg.MaxBodyBytes)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	p, _ := principal(r.Context())
	ev, app, err := s.cfg.Pins.RequestPin(r.Context(), commandMeta(r, p), p.OrgID, spec)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	s.respondRequested(w, r, p, "create", ev, app)
}

// POST /pins/{requestid}
func (s *server) replacePin(w http.ResponseWriter, r *http.Request) {
	id, ok := s.pathID(w, r)
	if !ok {
		return
	}
	spec, err := decodePinBody(w, r, s.cfg.MaxBodyBytes)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	p, _ := principal(r.Context())
	ev, app, err := s.cfg.Pins.ReplacePin(r.Context(), commandMeta(r, p), p.OrgID, id, spec)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	s.respondRequested(w, r, p, "replace", ev, app)
}

// DELETE /pins/{requestid}
func (s *server) deletePin(w http.ResponseWriter, r *http.Request) {
	id, ok := s.pathID(w, r)
	if !ok {
		return
	}
	p, _ := principal(r.Context())
	app, err := s.cfg.Pins.RemovePin(r.Context(), commandMeta(r, p), p.OrgID, id)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	// The removal is durable; the next read of this org waits until it is visible.
	s.cfg.Horizon.Record(p.OrgID, app.Seq)
	w.WriteHeader(http.StatusAccepted)
}

// respondRequested answers a create or replace with the new pin as its event describes it, as soon as the event is
// durable. The org's next read waits until the projection shows it (read your writes), so the client polling at
// once sees exactly this object: created is the event's (the projection keeps it), the status is queued and the
// delegates are this node's until the pin is placed.
func (s *server) respondRequested(w http.ResponseWriter, r *http.Request, p Principal, _ string, ev events.PinRequested, app domain.Appended) {
	s.cfg.Horizon.Record(p.OrgID, app.Seq)
	if app.Replayed {
		// A retry of an earlier request (Idempotency-Key): answer with that pin as it is now, if it still exists.
		if s.awaitProjection(r, s.cfg.PinsProjection, "replay", app.Seq) {
			if v, err := s.cfg.Reader.GetPin(r.Context(), p.OrgID, ev.RequestID); err == nil {
				if ps, err := (&delegates{s: s}).fromView(r, v); err == nil {
					writeJSON(w, http.StatusAccepted, ps)
					return
				}
			}
		}
	}
	ps, err := (&delegates{s: s}).fromEvent(r, ev)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusAccepted, ps)
}

// readYourWrites waits, bounded by ReadYourWritesTimeout, until the pins projection has applied the org's last
// write made through this node, so a read never misses it. When the projection is stalled it answers 503 and
// reports false.
func (s *server) readYourWrites(w http.ResponseWriter, r *http.Request, p Principal) bool {
	return s.caughtUp(w, r, p, s.cfg.PinsProjection, "the read models have")
}

// caughtUp is readYourWrites for any projection; what names it in the 503 ("the audit trail has").
func (s *server) caughtUp(w http.ResponseWriter, r *http.Request, p Principal, projection, what string) bool {
	seq := s.cfg.Horizon.Get(p.OrgID)
	if seq == 0 || s.awaitProjection(r, projection, "read", seq) {
		return true
	}
	if err := r.Context().Err(); err != nil {
		s.writeError(w, r, err)
		return false
	}
	s.writeError(w, r, domain.Errorf(domain.ErrUnavailable,
		"%s not caught up with this org's latest write yet (event %d); retry shortly", what, seq))
	return false
}

// awaitProjection waits, bounded by ReadYourWritesTimeout, until projection has applied seq. It reports
// whether it did; a timeout is logged and counted.
func (s *server) awaitProjection(r *http.Request, projection, op string, seq uint64) bool {
	if seq == 0 {
		return true
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.cfg.ReadYourWritesTimeout)
	defer cancel()
	err := s.cfg.Watermark.Wait(ctx, projection, seq)
	if err == nil {
		return true
	}
	if r.Context().Err() != nil {
		return false // the client went away; nothing to report
	}
	s.metrics.rywTimeouts.WithLabelValues(op).Inc()
	s.log.LogAttrs(r.Context(), slog.LevelWarn, "read-your-writes wait timed out; the projection is behind",
		slog.String("request_id", requestID(r.Context())), slog.String("operation", op),
		slog.String("projection", projection), slog.Uint64("seq", seq),
		slog.Duration("timeout", s.cfg.ReadYourWritesTimeout), slog.String("error", err.Error()))
	return false
}
