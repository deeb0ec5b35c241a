package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/anchorage-pin/anchorage/domain"
	"github.com/anchorage-pin/anchorage/events"
	"github.com/anchorage-pin/anchorage/projections"
)

// CreatedLayout is how PinStatus.created is emitted: UTC, exactly three fractional digits.
const CreatedLayout = "2006-01-02T15:04:05.000Z"

// FormatCreated formats a creation time as the API emits it.
func FormatCreated(t time.Time) string { return t.UTC().Format(CreatedLayout) }

// PinStatus is the spec's PinStatus object as this service emits it.
type PinStatus struct {
	RequestID string            `json:"requestid"`
	Status    string            `json:"status"`
	Created   string            `json:"created"`
	Pin       Pin               `json:"pin"`
	Delegates []string          `json:"delegates"`
	Info      map[string]string `json:"info"`
}

// Pin is the spec's Pin object as echoed inside a PinStatus.
type Pin struct {
	CID     string            `json:"cid"`
	Name    string            `json:"name,omitempty"`
	Origins []string          `json:"origins,omitempty"`
	Meta    map[string]string `json:"meta,omitempty"`
}

// PinResults is the spec's list response.
type PinResults struct {
	Count   int64       `json:"count"`
	Results []PinStatus `json:"results"`
}

// MaxDelegates is the spec's limit on PinStatus.delegates.
const MaxDelegates = 20

// cleanDelegates keeps the addresses that end in /p2p/<peerID> (Kubo fails `pin remote add` on any other),
// without duplicates, at most MaxDelegates.
func cleanDelegates(in []string) []string {
	out := make([]string, 0, min(len(in), MaxDelegates))
	for _, a := range in {
		if len(out) == MaxDelegates {
			break
		}
		i := strings.LastIndex(a, "/p2p/")
		if i < 0 || i+len("/p2p/") == len(a) || strings.Contains(a[i+len("/p2p/"):], "/") {
			continue
		}
		dup := false
		for _, o := range out {
			if o == a {
				dup = true
				break
			}
		}
		if !dup {
			out = append(out, a)
		}
	}
	return out
}

// delegates resolves the delegates of pins: their own (placed nodes) or the serving node's, asked at most once
// per request.
type delegates struct {
	s       *server
	node    []string
	fetched bool
}

func (d *delegates) of(r *http.Request, own []string) ([]string, error) {
	if c := cleanDelegates(own); len(c) > 0 {
		return c, nil
	}
	if !d.fetched {
		d.node, d.fetched = cleanDelegates(d.s.cfg.Delegates(r.Context())), true
	}
	if len(d.node) == 0 {
		return nil, domain.ReasonErrorf(domain.ErrUnavailable, "NO_DELEGATES",
			"the service has no delegate addresses to offer (a server misconfiguration); retry later or contact the operator")
	}
	return d.node, nil
}

func statusName(st projections.Status) (string, error) {
	if _, ok := projections.ParseStatus(st.String()); !ok {
		return "", fmt.Errorf("read model returned unknown pin status %d", st)
	}
	return st.String(), nil
}

func (d *delegates) fromView(r *http.Request, v projections.PinView) (PinStatus, error) {
	dl, err := d.of(r, v.Delegates)
	if err != nil {
		return PinStatus{}, err
	}
	st, err := statusName(v.Status)
	if err != nil {
		return PinStatus{}, err
	}
	info := v.Info
	if info == nil {
		info = map[string]string{}
	}
	return PinStatus{
		RequestID: v.RequestID,
		Status:    st,
		Created:   FormatCreated(v.Created),
		Pin:       Pin{CID: v.CID, Name: v.Name, Origins: v.Origins, Meta: v.Meta},
		Delegates: dl,
		Info:      info,
	}, nil
}

// fromEvent builds the PinStatus of a request the read model does not show yet: it is queued.
func (d *delegates) fromEvent(r *http.Request, ev events.PinRequested) (PinStatus, error) {
	return d.fromView(r, projections.PinView{
		RequestID: ev.RequestID, Status: projections.StatusQueued, Created: ev.Created,
		CID: ev.CID, Name: ev.Name, Origins: ev.Origins, Meta: ev.Meta,
	})
}

// decodePinBody reads and checks a POST body (the spec's Pin). It is strict about what the spec makes a
// contract (cid, name, meta) and lenient about hints (origins) and unknown fields.
func decodePinBody(w http.ResponseWriter, r *http.Request, limit int64) (domain.PinSpec, error) {
	if r.ContentLength > limit {
		return domain.PinSpec{}, &http.MaxBytesError{Limit: limit}
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return domain.PinSpec{}, err
		}
		return domain.PinSpec{}, domain.Errorf(domain.ErrInvalid, "the request body could not be read: %v", err)
	}
	return ParsePinBody(body)
}

// ParsePinBody parses a POST /pins body into a pin spec, validated with domain.ValidatePinSpec. Errors are
// domain.ErrInvalid with details saying what to fix.
func ParsePinBody(body []byte) (domain.PinSpec, error) {
	if len(bytes.TrimSpace(body)) == 0 {
		return domain.PinSpec{}, domain.Errorf(domain.ErrInvalid, `the request body is empty; send a Pin object such as {"cid":"bafy…","name":"…"}`)
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(body, &fields); err != nil {
		return domain.PinSpec{}, jsonError("the request body", body, err)
	}
	if fields == nil {
		return domain.PinSpec{}, domain.Errorf(domain.ErrInvalid, `the request body is null; send a Pin object such as {"cid":"bafy…"}`)
	}
	var spec domain.PinSpec

	raw, ok := fields["cid"]
	if !ok || isNull(raw) {
		return domain.PinSpec{}, domain.Errorf(domain.ErrInvalid, "cid is required: the body must be a Pin object with a cid string")
	}
	if err := json.Unmarshal(raw, &spec.CID); err != nil {
		return domain.PinSpec{}, domain.Errorf(domain.ErrInvalid, "cid must be a string, not %s", jsonKind(raw))
	}

	if raw, ok := fields["name"]; ok && !isNull(raw) {
		if err := json.Unmarshal(raw, &spec.Name); err != nil {
			return domain.PinSpec{}, domain.Errorf(domain.ErrInvalid, "name must be a string, not %s", jsonKind(raw))
		}
	}

	if raw, ok := fields["meta"]; ok && !isNull(raw) {
		m, err := parseMetaObject("meta", raw)
		if err != nil {
			return domain.PinSpec{}, err
		}
		spec.Meta = m
	}

	if raw, ok := fields["origins"]; ok {
		spec.Origins = lenientOrigins(raw)
	}

	out, _, err := domain.ValidatePinSpec(spec)
	if err != nil {
		return domain.PinSpec{}, err
	}
	return out, nil
}

// lenientOrigins returns the string entries of an origins array, ignoring anything else (origins are hints).
// domain.CleanOrigins then drops what does not parse and keeps at most 20.
func lenientOrigins(raw json.RawMessage) []string {
	var items []json.RawMessage
	if err := json.Unmarshal(raw, &items); err != nil {
		return nil
	}
	out := make([]string, 0, min(len(items), 4*domain.MaxOrigins))
	for _, it := range items {
		var s string
		if json.Unmarshal(it, &s) == nil && s != "" {
			out = append(out, s)
		}
	}
	return domain.CleanOrigins(out)
}

// parseMetaObject parses a JSON object whose values must all be strings, then checks domain.ValidateMeta.
func parseMetaObject(what string, raw []byte) (map[string]string, error) {
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(raw, &obj); err != nil {
		var ute *json.UnmarshalTypeError
		if errors.As(err, &ute) && ute.Field == "" {
			return nil, domain.Errorf(domain.ErrInvalid, `%s must be a JSON object of string values such as {"app_id":"…"}, not %s`, what, jsonKind(raw))
		}
		return nil, jsonError(what, raw, err)
	}
	if obj == nil {
		return nil, domain.Errorf(domain.ErrInvalid, `%s must be a JSON object of string values, not null`, what)
	}
	if len(obj) > domain.MaxMetaKeys {
		// Report the documented limit before looking at the values.
		return nil, domain.Errorf(domain.ErrInvalid, "%s has %d keys; the limit is %d keys", what, len(obj), domain.MaxMetaKeys)
	}
	m := make(map[string]string, len(obj))
	for k, v := range obj {
		var s string
		if err := json.Unmarshal(v, &s); err != nil || isNull(v) {
			return nil, domain.Errorf(domain.ErrInvalid, "%s value of key %q must be a string, not %s; encode numbers and booleans as strings", what, clip(k), jsonKind(v))
		}
		m[k] = s
	}
	if err := domain.ValidateMeta(m); err != nil {
		return nil, err
	}
	if len(m) == 0 {
		return nil, nil
	}
	return m, nil
}

func isNull(raw json.RawMessage) bool { return string(bytes.TrimSpace(raw)) == "null" }

// jsonKind names the JSON type of a value for error messages.
func jsonKind(raw json.RawMessage) string {
	t := bytes.TrimSpace(raw)
	if len(t) == 0 {
		return "empty"
	}
	switch t[0] {
	case '"':
		return "a string"
	case '{':
		return "an object"
	case '[':
		return "an array"
	case 't', 'f':
		return "a boolean"
	case 'n':
		return "null"
	}
	return "a number"
}

// jsonError explains a JSON decoding error with its byte offset.
func jsonError(what string, body []byte, err error) error {
	var se *json.SyntaxError
	var ute *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se):
		return domain.Errorf(domain.ErrInvalid, "%s is not valid JSON: %v (at byte offset %d)", what, se, se.Offset)
	case errors.As(err, &ute):
		if ute.Field == "" {
			return domain.Errorf(domain.ErrInvalid, "%s must be a JSON object (the spec's Pin), not %s", what, jsonKind(body))
		}
		return domain.Errorf(domain.ErrInvalid, "%s: field %s has the wrong type (%s, at byte offset %d)", what, ute.Field, ute.Value, ute.Offset)
	}
	return domain.Errorf(domain.ErrInvalid, "%s is not valid JSON: %v", what, err)
}
