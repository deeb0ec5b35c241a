// Package apitest is a spec-conformance suite for a running anchorage: it checks the IPFS Pinning Services
// API v1.0.0 (docs/spec/ipfs-pinning-service-v1.0.0.yaml) and this project's decisions on top of it
// (/work/shared/docs/pinning-api.md §9 and §10) over plain HTTP, so it runs unchanged against an in-memory
// test server or the real stack.
//
// Every response the suite receives is checked with ValidateResponse: the status must be documented for the
// operation, the body must match the spec's schema, and anchorage's invariants must hold (Content-Type
// application/json, created with exactly three fractional digits in UTC, delegates ending /p2p/<peerID>,
// Failure reasons in UPPER_SNAKE with details).
package apitest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/legacy"
)

// SpecPath is the OpenAPI document's path relative to the module root.
const SpecPath = "docs/spec/ipfs-pinning-service-v1.0.0.yaml"

var (
	specOnce sync.Once
	specDoc  *openapi3.T
	specErr  error

	routersMu sync.Mutex
	routerFor = map[*openapi3.T]routers.Router{}
)

// LoadSpec loads (once per process) the Pinning Services API document from the module root, found by walking
// up from the working directory to go.mod, and patches it for validation (see PatchSpec).
func LoadSpec(tb testing.TB) *openapi3.T {
	tb.Helper()
	specOnce.Do(func() {
		var root string
		root, specErr = moduleRoot()
		if specErr != nil {
			return
		}
		specDoc, specErr = LoadSpecFile(filepath.Join(root, SpecPath))
	})
	if specErr != nil {
		tb.Fatalf("apitest: %v", specErr)
	}
	return specDoc
}

// LoadSpecFile loads and patches an OpenAPI document.
func LoadSpecFile(path string) (*openapi3.T, error) {
	doc, err := openapi3.NewLoader().LoadFromFile(path)
	if err != nil {
		return nil, fmt.Errorf("load %s: %w", path, err)
	}
	if err := PatchSpec(doc); err != nil {
		return nil, err
	}
	if err := doc.Validate(context.Background()); err != nil {
		return nil, fmt.Errorf("validate %s: %w", path, err)
	}
	return doc, nil
}

// PatchSpec fixes what in the v1.0.0 document would make validation wrong:
//
//   - PinMeta and StatusInfo put minProperties/maxProperties inside additionalProperties (a known bug of the
//     spec: it constrains each string value, which means nothing). They are moved to the object itself, the
//     evident intent ("at most 1000 keys").
//   - servers names https://pinning-service.example.com; it is dropped so operations are found by path alone,
//     whatever host the service under test listens on.
func PatchSpec(doc *openapi3.T) error {
	if doc.Components == nil {
		return errors.New("the document has no components")
	}
	for _, name := range []string{"PinMeta", "StatusInfo"} {
		ref := doc.Components.Schemas[name]
		if ref == nil || ref.Value == nil {
			return fmt.Errorf("the document has no %s schema", name)
		}
		s := ref.Value
		if ap := s.AdditionalProperties.Schema; ap != nil && ap.Value != nil {
			if ap.Value.MaxProps != nil && s.MaxProps == nil {
				s.MaxProps = ap.Value.MaxProps
			}
			if ap.Value.MinProps != 0 && s.MinProps == 0 {
				s.MinProps = ap.Value.MinProps
			}
			ap.Value.MaxProps, ap.Value.MinProps = nil, 0
		}
	}
	doc.Servers = nil
	return nil
}

func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			if _, err := os.Stat(filepath.Join(dir, SpecPath)); err == nil {
				return dir, nil
			}
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no go.mod with %s found above the working directory", SpecPath)
		}
		dir = parent
	}
}

func router(spec *openapi3.T) (routers.Router, error) {
	routersMu.Lock()
	defer routersMu.Unlock()
	if r, ok := routerFor[spec]; ok {
		return r, nil
	}
	r, err := legacy.NewRouter(spec)
	if err != nil {
		return nil, err
	}
	routerFor[spec] = r
	return r, nil
}

// ValidateResponse checks one response (see CheckResponse) and reports a problem with tb.Errorf, so it may be
// called from any goroutine of the test.
func ValidateResponse(tb testing.TB, spec *openapi3.T, req *http.Request, resp *http.Response, body []byte) {
	tb.Helper()
	if err := CheckResponse(spec, req, resp.StatusCode, resp.Header, body); err != nil {
		tb.Errorf("%s %s → %d: %v\nbody: %s", req.Method, req.URL.RequestURI(), resp.StatusCode, err, truncate(body, 2000))
	}
}

var (
	createdRE = regexp.MustCompile(`^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$`)
	reasonRE  = regexp.MustCompile(`^[A-Z][A-Z0-9_]*$`)
	p2pRE     = regexp.MustCompile(`^/.+/p2p/[A-Za-z0-9]+$`)
)

// CheckResponse validates a response against the operation of the spec that matches the request, plus
// anchorage's invariants:
//
//   - every response of a spec operation that has a body, and every error, has Content-Type application/json;
//   - the status is documented for the operation (4XX/5XX ranges count) and the body matches its schema;
//   - every PinStatus has created formatted 2006-01-02T15:04:05.000Z and delegates ending /p2p/<peerID>;
//   - every Failure has an UPPER_SNAKE reason and non-empty details.
//
// Responses to requests outside the spec (/v1/..., /healthz, /metrics, unknown paths) are checked only when
// they are errors: JSON Content-Type and a valid Failure body.
func CheckResponse(spec *openapi3.T, req *http.Request, status int, header http.Header, body []byte) error {
	var errs []error
	rt, err := router(spec)
	if err != nil {
		return err
	}
	route, params, routeErr := rt.FindRoute(specRequest(req))
	if (routeErr == nil && len(body) > 0) || status >= 400 {
		ct := header.Get("Content-Type")
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil || mt != "application/json" {
			errs = append(errs, fmt.Errorf("Content-Type is %q, want application/json", ct))
		}
	}
	if routeErr != nil {
		if status >= 400 {
			errs = append(errs, checkFailure(spec, body))
		}
		return errors.Join(errs...)
	}
	in := &openapi3filter.ResponseValidationInput{
		RequestValidationInput: &openapi3filter.RequestValidationInput{Request: req, PathParams: params, Route: route},
		Status:                 status,
		Header:                 header,
		Body:                   io.NopCloser(bytes.NewReader(body)),
		Options:                &openapi3filter.Options{IncludeResponseStatus: true, MultiError: true},
	}
	if err := openapi3filter.ValidateResponse(context.Background(), in); err != nil {
		errs = append(errs, err)
	}
	switch {
	case status >= 400:
		errs = append(errs, checkFailure(spec, body))
	case status >= 200 && status < 300 && len(body) > 0:
		errs = append(errs, checkInvariants(body))
	}
	return errors.Join(errs...)
}

// specRequest maps a request to the spec's paths: the service may live under a prefix (http://host/api), so
// everything before /pins is dropped.
func specRequest(req *http.Request) *http.Request {
	p := req.URL.Path
	for i := strings.LastIndex(p, "/pins"); i >= 0; i = strings.LastIndex(p[:i], "/pins") {
		rest := p[i+len("/pins"):]
		if rest == "" || (strings.HasPrefix(rest, "/") && !strings.Contains(rest[1:], "/")) {
			r := req.Clone(context.Background())
			r.URL.Path, r.URL.RawPath = p[i:], ""
			return r
		}
	}
	return req
}

func checkFailure(spec *openapi3.T, body []byte) error {
	var v any
	if err := json.Unmarshal(body, &v); err != nil {
		return fmt.Errorf("error body is not JSON: %w", err)
	}
	ref := spec.Components.Schemas["Failure"]
	if err := ref.Value.VisitJSON(v, openapi3.VisitAsResponse()); err != nil {
		return fmt.Errorf("error body is not a Failure: %w", err)
	}
	var f struct {
		Error struct {
			Reason  string `json:"reason"`
			Details string `json:"details"`
		} `json:"error"`
	}
	_ = json.Unmarshal(body, &f)
	var errs []error
	if !reasonRE.MatchString(f.Error.Reason) {
		errs = append(errs, fmt.Errorf("Failure reason %q is not UPPER_SNAKE", f.Error.Reason))
	}
	if strings.TrimSpace(f.Error.Details) == "" {
		errs = append(errs, errors.New("Failure has no details saying what to fix"))
	}
	return errors.Join(errs...)
}

// checkInvariants checks anchorage's invariants on a PinStatus or PinResults body (told apart by shape).
func checkInvariants(body []byte) error {
	var probe map[string]json.RawMessage
	if json.Unmarshal(body, &probe) != nil {
		return nil // the schema check reported it
	}
	var statuses []PinStatus
	if _, ok := probe["results"]; ok {
		var pr PinResults
		if err := json.Unmarshal(body, &pr); err != nil {
			return err
		}
		if pr.Results == nil {
			return errors.New("results is null; it must be an array")
		}
		statuses = pr.Results
	} else if _, ok := probe["requestid"]; ok {
		var ps PinStatus
		if err := json.Unmarshal(body, &ps); err != nil {
			return err
		}
		statuses = []PinStatus{ps}
	}
	var errs []error
	for _, ps := range statuses {
		if !createdRE.MatchString(ps.Created) {
			errs = append(errs, fmt.Errorf("pin %s: created %q is not UTC with exactly 3 fractional digits", ps.RequestID, ps.Created))
		}
		if len(ps.Delegates) == 0 {
			errs = append(errs, fmt.Errorf("pin %s: no delegates", ps.RequestID))
		}
		for _, d := range ps.Delegates {
			if !p2pRE.MatchString(d) {
				errs = append(errs, fmt.Errorf("pin %s: delegate %q does not end with /p2p/<peerID>", ps.RequestID, d))
			}
		}
	}
	return errors.Join(errs...)
}

func truncate(b []byte, n int) string {
	if len(b) <= n {
		return string(b)
	}
	return string(b[:n]) + "…"
}
