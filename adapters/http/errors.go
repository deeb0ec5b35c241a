package httpapi

import (
	"context"
	"errors"
	"log/slog"
	"net/http"

	"github.com/anchorage-pin/anchorage/domain"
)

// Failure is the spec's error body.
type Failure struct {
	Error FailureError `json:"error"`
}

// FailureError is the inside of a Failure.
type FailureError struct {
	Reason  string `json:"reason"`
	Details string `json:"details,omitempty"`
}

// Reasons used besides the domain's defaults.
const (
	ReasonPayloadTooLarge  = "PAYLOAD_TOO_LARGE"
	ReasonInternal         = "INTERNAL_SERVER_ERROR"
	ReasonNotFound         = "NOT_FOUND"
	ReasonMethodNotAllowed = "METHOD_NOT_ALLOWED"
	ReasonNotReady         = "NOT_READY"
	ReasonUnavailable      = "SERVICE_UNAVAILABLE"
	ReasonClientGone       = "CLIENT_CLOSED_REQUEST"
)

// statusClientClosed is logged (and counted) when the client went away before the answer was ready; the
// client never sees it.
const statusClientClosed = 499

// kinds maps each domain error kind to its HTTP status and default reason. 409 is reserved by the spec for
// insufficient funds, so a concurrency conflict is 412.
var kinds = []struct {
	kind   error
	status int
	reason string
}{
	{domain.ErrInvalid, http.StatusBadRequest, "BAD_REQUEST"},
	{domain.ErrUnauthorized, http.StatusUnauthorized, "UNAUTHORIZED"},
	{domain.ErrForbidden, http.StatusForbidden, "FORBIDDEN"},
	{domain.ErrNotFound, http.StatusNotFound, ReasonNotFound},
	{domain.ErrInsufficientFund, http.StatusConflict, "INSUFFICIENT_FUNDS"},
	{domain.ErrConflict, http.StatusPreconditionFailed, "CONCURRENT_MODIFICATION"},
	{domain.ErrUnavailable, http.StatusServiceUnavailable, ReasonUnavailable},
}

// generic details per status, used when the error carries no message safe to show.
var genericDetails = map[int]string{
	http.StatusBadRequest:          "the request is invalid",
	http.StatusUnauthorized:        "the access token is missing or invalid; send `Authorization: Bearer <access token>`",
	http.StatusForbidden:           "the access token does not allow this operation",
	http.StatusNotFound:            "the requested resource does not exist",
	http.StatusConflict:            "the org's quota does not allow this request",
	http.StatusPreconditionFailed:  "the resource changed while the request was applied; retry the request",
	http.StatusServiceUnavailable:  "the service is temporarily unavailable; retry shortly",
	http.StatusInternalServerError: "an internal error occurred; if it persists, contact the operator with the X-Request-Id of this response",
}

// classify maps an error to the status and Failure the client gets. Only *domain.Error messages and fixed
// texts reach the client; everything else is internal.
func classify(err error) (int, FailureError) {
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return http.StatusRequestEntityTooLarge, FailureError{
			Reason:  ReasonPayloadTooLarge,
			Details: "the request body is larger than " + formatBytes(mbe.Limit) + "; a Pin object is far smaller",
		}
	}
	var de *domain.Error
	hasDE := errors.As(err, &de)
	for _, k := range kinds {
		matches := false
		if hasDE && de.Kind != nil {
			matches = errors.Is(de.Kind, k.kind)
		} else {
			matches = errors.Is(err, k.kind)
		}
		if !matches {
			continue
		}
		fe := FailureError{Reason: k.reason, Details: genericDetails[k.status]}
		if hasDE {
			if de.Reason != "" && de.Reason != "INTERNAL_SERVER_ERROR" {
				fe.Reason = de.Reason
			}
			if de.Msg != "" {
				fe.Details = de.Msg
			}
		}
		return k.status, fe
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return http.StatusServiceUnavailable, FailureError{Reason: ReasonUnavailable, Details: "the request timed out inside the service; retry shortly"}
	}
	return http.StatusInternalServerError, FailureError{Reason: ReasonInternal, Details: genericDetails[http.StatusInternalServerError]}
}

// writeError answers with the Failure for err and logs what the client does not see.
func (s *server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	ctx := r.Context()
	if ctx.Err() != nil && errors.Is(err, ctx.Err()) {
		// The client went away (or the server is shutting down): nobody reads the answer.
		s.log.LogAttrs(ctx, slog.LevelDebug, "request abandoned", slog.String("request_id", requestID(ctx)), slog.String("error", err.Error()))
		writeFailure(w, statusClientClosed, FailureError{Reason: ReasonClientGone, Details: "the client closed the request"})
		return
	}
	status, fe := classify(err)
	switch {
	case status == http.StatusInternalServerError:
		s.log.LogAttrs(ctx, slog.LevelError, "request failed", slog.String("request_id", requestID(ctx)),
			slog.String("method", r.Method), slog.String("error", err.Error()))
	case status == http.StatusServiceUnavailable:
		s.log.LogAttrs(ctx, slog.LevelWarn, "service unavailable", slog.String("request_id", requestID(ctx)),
			slog.String("method", r.Method), slog.String("error", err.Error()))
	}
	switch status {
	case http.StatusUnauthorized:
		w.Header().Set("WWW-Authenticate", `Bearer realm="anchorage"`)
	case http.StatusServiceUnavailable:
		w.Header().Set("Retry-After", "1")
	}
	writeFailure(w, status, fe)
}

func writeFailure(w http.ResponseWriter, status int, fe FailureError) {
	if fe.Reason == "" {
		fe.Reason = ReasonInternal
	}
	writeJSON(w, status, Failure{Error: fe})
}

func formatBytes(n int64) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return itoa(n>>20) + " MiB"
	case n >= 1<<10 && n%(1<<10) == 0:
		return itoa(n>>10) + " KiB"
	}
	return itoa(n) + " bytes"
}
