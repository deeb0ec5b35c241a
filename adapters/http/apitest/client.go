package apitest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/ipfs/go-cid"
	mh "github.com/multiformats/go-multihash"
)

// PinStatus is the spec's PinStatus as the suite decodes it.
type PinStatus struct {
	RequestID string            `json:"requestid"`
	Status    string            `json:"status"`
	Created   string            `json:"created"`
	Pin       Pin               `json:"pin"`
	Delegates []string          `json:"delegates"`
	Info      map[string]string `json:"info"`
}

// CreatedTime parses Created.
func (p PinStatus) CreatedTime() time.Time {
	t, _ := time.Parse(time.RFC3339Nano, p.Created)
	return t
}

// Pin is the spec's Pin.
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

// Failure is the spec's error body.
type Failure struct {
	Error struct {
		Reason  string `json:"reason"`
		Details string `json:"details"`
	} `json:"error"`
}

// Response is one HTTP exchange as the suite saw it.
type Response struct {
	Status int
	Header http.Header
	Body   []byte
}

// Failure decodes the body as a Failure.
func (r Response) Failure() Failure {
	var f Failure
	_ = json.Unmarshal(r.Body, &f)
	return f
}

// Client talks to the service under test and validates every response against the spec.
type Client struct {
	BaseURL string
	Spec    *openapi3.T
	HTTP    *http.Client
}

// NewClient returns a client for baseURL.
func NewClient(tb testing.TB, baseURL string) *Client {
	return &Client{BaseURL: strings.TrimRight(baseURL, "/"), Spec: LoadSpec(tb), HTTP: &http.Client{Timeout: 30 * time.Second}}
}

// Do sends one request: path is relative to the base URL and may carry a raw query; body is sent as is when
// it is a []byte or string and as JSON otherwise (nil: no body). token "" sends no Authorization header;
// headers are extra header pairs. The response is checked with ValidateResponse. A transport failure ends the
// test, so call Do only from the test's goroutine (DoErr from others).
func (c *Client) Do(tb testing.TB, method, path, token string, body any, headers ...string) Response {
	tb.Helper()
	r, err := c.DoErr(tb, method, path, token, body, headers...)
	if err != nil {
		tb.Fatal(err)
	}
	return r
}

// DoErr is Do returning transport failures instead of ending the test; it may be called from any goroutine.
func (c *Client) DoErr(tb testing.TB, method, path, token string, body any, headers ...string) (Response, error) {
	tb.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case []byte:
		rd = bytes.NewReader(b)
	case string:
		rd = strings.NewReader(b)
	default:
		j, err := json.Marshal(b)
		if err != nil {
			return Response{}, fmt.Errorf("encode request body: %w", err)
		}
		rd = bytes.NewReader(j)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, c.BaseURL+path, rd)
	if err != nil {
		return Response{}, fmt.Errorf("build request %s %s: %w", method, path, err)
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "anchorage-apitest")
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		if headers[i+1] == "" {
			req.Header.Del(headers[i])
		} else {
			req.Header.Set(headers[i], headers[i+1])
		}
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return Response{}, fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return Response{}, fmt.Errorf("%s %s: read body: %w", method, path, err)
	}
	ValidateResponse(tb, c.Spec, req, resp, b)
	return Response{Status: resp.StatusCode, Header: resp.Header, Body: b}, nil
}

// Expect sends a request and fails the test unless the status is want.
func (c *Client) Expect(tb testing.TB, want int, method, path, token string, body any, headers ...string) Response {
	tb.Helper()
	r := c.Do(tb, method, path, token, body, headers...)
	if r.Status != want {
		tb.Fatalf("%s %s: status %d, want %d; body: %s", method, path, r.Status, want, truncate(r.Body, 1000))
	}
	return r
}

// Create POSTs a pin and returns the PinStatus (202 required).
func (c *Client) Create(tb testing.TB, token string, pin any) PinStatus {
	tb.Helper()
	r := c.Expect(tb, http.StatusAccepted, http.MethodPost, "/pins", token, pin)
	return decode[PinStatus](tb, r)
}

// Replace POSTs to /pins/{id} and returns the new PinStatus (202 required).
func (c *Client) Replace(tb testing.TB, token, id string, pin any) PinStatus {
	tb.Helper()
	r := c.Expect(tb, http.StatusAccepted, http.MethodPost, "/pins/"+url.PathEscape(id), token, pin)
	return decode[PinStatus](tb, r)
}

// Get fetches one pin (200 required).
func (c *Client) Get(tb testing.TB, token, id string) PinStatus {
	tb.Helper()
	r := c.Expect(tb, http.StatusOK, http.MethodGet, "/pins/"+url.PathEscape(id), token, nil)
	return decode[PinStatus](tb, r)
}

// List runs GET /pins with the query (200 required).
func (c *Client) List(tb testing.TB, token string, q url.Values) PinResults {
	tb.Helper()
	return c.ListRaw(tb, token, q.Encode())
}

// ListRaw runs GET /pins with a raw query string (200 required).
func (c *Client) ListRaw(tb testing.TB, token, rawQuery string) PinResults {
	tb.Helper()
	path := "/pins"
	if rawQuery != "" {
		path += "?" + rawQuery
	}
	r := c.Expect(tb, http.StatusOK, http.MethodGet, path, token, nil)
	pr := decode[PinResults](tb, r)
	if pr.Results == nil {
		tb.Fatalf("GET %s: results is null", path)
	}
	return pr
}

func decode[T any](tb testing.TB, r Response) T {
	tb.Helper()
	var v T
	if err := json.Unmarshal(r.Body, &v); err != nil {
		tb.Fatalf("decode %T: %v; body: %s", v, err, truncate(r.Body, 1000))
	}
	return v
}

// RandomCID returns a CIDv1 (raw, sha2-256) of random bytes: content no one has, so the service never
// finishes fetching it on its own.
func RandomCID() string { return cid.NewCidV1(cid.Raw, randomHash()).String() }

// CIDSpellings returns three spellings of one random multihash: CIDv0 (Qm…), CIDv1 dag-pb (bafy…) and CIDv1 raw
// (bafk…). anchorage matches cid filters by multihash, so each finds pins created with any other.
func CIDSpellings() (v0, v1, raw string) {
	h := randomHash()
	return cid.NewCidV0(h).String(), cid.NewCidV1(cid.DagProtobuf, h).String(), cid.NewCidV1(cid.Raw, h).String()
}

func randomHash() mh.Multihash {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	h, err := mh.Sum(b, mh.SHA2_256, -1)
	if err != nil {
		panic(err)
	}
	return h
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func ids(ps []PinStatus) []string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = p.RequestID
	}
	return out
}

func fmtIDs(ps []PinStatus) string { return fmt.Sprint(ids(ps)) }
