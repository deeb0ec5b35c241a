package httpapi

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/url"

	"github.com/go-chi/chi/v5"

	"github.com/anchorage-pin/anchorage/domain"
	"github.com/anchorage-pin/anchorage/events"
)

// commandMeta is what every event caused by this request records: the token's actor and the request id.
func commandMeta(r *http.Request, p Principal) domain.Meta {
	return domain.Meta{Actor: p.Actor, Corr: requestID(r.Context())}
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
	// The removal is durable; waiting only makes it visible to the next read. A timeout still answers 202.
	s.awaitProjection(r, "delete", app.Seq)
	w.WriteHeader(http.StatusAccepted)
}

// respondRequested answers a create or replace with the new pin as the read model shows it once it has caught
// up, or as the event describes it if the read model is late. The write is durable either way: an error here
// would make the client retry and create a duplicate.
func (s *server) respondRequested(w http.ResponseWriter, r *http.Request, p Principal, op string, ev events.PinRequested, app domain.Appended) {
	d := &delegates{s: s}
	if s.awaitProjection(r, op, app.Seq) {
		v, err := s.cfg.Reader.GetPin(r.Context(), p.OrgID, ev.RequestID)
		if err == nil {
			ps, err := d.fromView(r, v)
			if err != nil {
				s.writeError(w, r, err)
				return
			}
			writeJSON(w, http.StatusAccepted, ps)
			return
		}
		if r.Context().Err() != nil {
			s.writeError(w, r, r.Context().Err())
			return
		}
		// Removed again in between (not found) or the read model failed: answer from the event.
		level := slog.LevelWarn
		if errors.Is(err, domain.ErrNotFound) {
			level = slog.LevelInfo
		}
		s.log.LogAttrs(r.Context(), level, "pin not readable after its write; answering from the event",
			slog.String("request_id", requestID(r.Context())), slog.String("pin", ev.RequestID), slog.String("error", err.Error()))
	} else if r.Context().Err() != nil {
		s.writeError(w, r, r.Context().Err())
		return
	}
	ps, err := d.fromEvent(r, ev)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusAccepted, ps)
}

// awaitProjection waits, bounded by ReadYourWritesTimeout, until the pins projection has applied seq. It
// reports whether it did; a timeout is logged and counted.
func (s *server) awaitProjection(r *http.Request, op string, seq uint64) bool {
	if seq == 0 {
		return true
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.cfg.ReadYourWritesTimeout)
	defer cancel()
	err := s.cfg.Watermark.Wait(ctx, s.cfg.PinsProjection, seq)
	if err == nil {
		return true
	}
	if r.Context().Err() != nil {
		return false // the client went away; nothing to report
	}
	s.metrics.rywTimeouts.WithLabelValues(op).Inc()
	s.log.LogAttrs(r.Context(), slog.LevelWarn, "read-your-writes wait timed out; the projection is behind",
		slog.String("request_id", requestID(r.Context())), slog.String("operation", op),
		slog.String("projection", s.cfg.PinsProjection), slog.Uint64("seq", seq),
		slog.Duration("timeout", s.cfg.ReadYourWritesTimeout), slog.String("error", err.Error()))
	return false
}
