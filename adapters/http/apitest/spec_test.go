package apitest_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/anchorage-pin/anchorage/adapters/http/apitest"
)

// TestCheckResponseCatches makes sure the validator is not a rubber stamp.
func TestCheckResponseCatches(t *testing.T) {
	spec := apitest.LoadSpec(t)
	const id = "2c1c2b7e-4a8e-4bd4-9d0e-5c5f8a2b9d10"
	const good = `{"requestid":"` + id + `","status":"queued","created":"2026-01-02T03:04:05.123Z",` +
		`"pin":{"cid":"bafkqaaa"},"delegates":["/ip4/203.0.113.1/tcp/4001/p2p/12D3KooWRBy97UB99e3J6hiPesre1MZeuNQvfan4gBziswrRJsNK"],"info":{}}`
	json := http.Header{"Content-Type": {"application/json"}}
	cases := []struct {
		name, method, path string
		status             int
		header             http.Header
		body               string
		wantErr            string // "" = valid
	}{
		{"valid PinStatus", "POST", "/pins", 202, json, good, ""},
		{"valid PinStatus under a prefix", "GET", "/api/v1/pins/" + id, 200, json, good, ""},
		{"valid PinResults", "GET", "/pins", 200, json, `{"count":1,"results":[` + good + `]}`, ""},
		{"valid empty PinResults", "GET", "/pins", 200, json, `{"count":0,"results":[]}`, ""},
		{"valid Failure", "GET", "/pins", 400, json, `{"error":{"reason":"BAD_REQUEST","details":"x"}}`, ""},
		{"valid DELETE", "DELETE", "/pins/" + id, 202, http.Header{}, ``, ""},
		{"meta with many keys (schema bug patched)", "POST", "/pins", 202, json,
			strings.Replace(good, `"cid":"bafkqaaa"`, `"cid":"bafkqaaa","meta":{"a":"1","b":"2","c":"3"}`, 1), ""},
		{"unknown status", "POST", "/pins", 202, json, strings.Replace(good, `"queued"`, `"done"`, 1), "status"},
		{"missing delegates", "POST", "/pins", 202, json, strings.Replace(good, `"delegates":["/ip4/203.0.113.1/tcp/4001/p2p/12D3KooWRBy97UB99e3J6hiPesre1MZeuNQvfan4gBziswrRJsNK"],`, ``, 1), "delegates"},
		{"delegate without p2p", "POST", "/pins", 202, json, strings.Replace(good, `/p2p/12D3KooWRBy97UB99e3J6hiPesre1MZeuNQvfan4gBziswrRJsNK`, ``, 1), "p2p"},
		{"created in seconds", "POST", "/pins", 202, json, strings.Replace(good, `05.123Z`, `05Z`, 1), "created"},
		{"created with offset", "POST", "/pins", 202, json, strings.Replace(good, `05.123Z`, `05.123+00:00`, 1), "created"},
		{"meta number", "POST", "/pins", 202, json, strings.Replace(good, `"cid":"bafkqaaa"`, `"cid":"bafkqaaa","meta":{"a":1}`, 1), "meta"},
		{"results null", "GET", "/pins", 200, json, `{"count":0,"results":null}`, "results"},
		{"count missing", "GET", "/pins", 200, json, `{"results":[]}`, "count"},
		{"text/plain error", "GET", "/pins", 401, http.Header{"Content-Type": {"text/plain"}}, `{"error":{"reason":"UNAUTHORIZED","details":"x"}}`, "Content-Type"},
		{"error without reason", "GET", "/pins", 401, json, `{"error":{"details":"x"}}`, "reason"},
		{"error without details", "GET", "/pins", 401, json, `{"error":{"reason":"UNAUTHORIZED"}}`, "details"},
		{"lower-case reason", "GET", "/pins", 401, json, `{"error":{"reason":"unauthorized","details":"x"}}`, "UPPER_SNAKE"},
		{"undocumented success status", "POST", "/pins", 201, json, good, "status"},
		{"error outside the spec", "GET", "/v1/nothing", 404, json, `{"message":"not found"}`, "Failure"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			req := httptest.NewRequest(tc.method, "http://anchorage.test"+tc.path, nil)
			err := apitest.CheckResponse(spec, req, tc.status, tc.header, []byte(tc.body))
			switch {
			case tc.wantErr == "" && err != nil:
				t.Errorf("valid response rejected: %v", err)
			case tc.wantErr != "" && err == nil:
				t.Errorf("invalid response accepted")
			case tc.wantErr != "" && !strings.Contains(err.Error(), tc.wantErr):
				t.Errorf("error %q does not mention %q", err, tc.wantErr)
			}
		})
	}
}
