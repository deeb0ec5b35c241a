package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/anchorage-pin/anchorage/adapters/postgres/pgschema"
	"github.com/anchorage-pin/anchorage/domain"
	"github.com/stretchr/testify/require"
)

// get returns a GET's status and body.
func get(t *testing.T, url, token string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// Drill: PostgreSQL is lost. A node started on the same event log with an empty database notices the empty
// read models behind a non-empty log, rebuilds them (reads say so with 503 meanwhile), and then answers every
// request exactly as before.
func TestRecoveryPostgresLost(t *testing.T) {
	dir := t.TempDir()
	n := startTestNodeOn(t, dir, pgschema.New(t), nil)
	orgA, tokA := n.org(t, "recover-a", domain.ScopePinsRead, domain.ScopePinsWrite)
	_, tokB := n.org(t, "recover-b", domain.ScopePinsRead, domain.ScopePinsWrite)
	var ids []string
	for i := 0; i < 30; i++ {
		tok := tokA
		if i%4 == 0 {
			tok = tokB
		}
		ps := postPin(t, n.URL(), tok, `{"cid":"bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy","name":"r`+string(rune('a'+i%5))+`","meta":{"k":"v"}}`)
		ids = append(ids, ps)
	}
	for i, id := range ids[:10] {
		if i%4 != 0 {
			n.setStatus(t, orgA, tokA, id, []string{"pinning", "pinned", "failed"}[i%3])
		}
	}
	queries := []string{
		"/pins", "/pins?status=any", "/pins?status=any&limit=5", "/pins?name=rb", "/pins?status=queued,failed",
		"/pins/" + ids[1], "/pins/" + ids[2], "/pins?meta=%7B%22k%22%3A%22v%22%7D&status=any&limit=3",
	}
	before := map[string]string{}
	for _, q := range queries {
		for _, tok := range []string{tokA, tokB} {
			code, body := get(t, n.URL()+q, tok)
			before[q+tok] = body
			_ = code
		}
	}
	n.close(context.Background())

	// Same event log, brand-new empty database.
	m := startTestNodeOn(t, dir, pgschema.New(t), n.kubo)
	sawRebuilding := false
	require.Eventually(t, func() bool {
		code, body := get(t, m.URL()+"/pins?status=any", tokA)
		if code == http.StatusServiceUnavailable {
			var f struct{ Error struct{ Reason string } }
			_ = json.Unmarshal([]byte(body), &f)
			sawRebuilding = sawRebuilding || f.Error.Reason == "REBUILDING"
			return false
		}
		return code == http.StatusOK
	}, 30*time.Second, 5*time.Millisecond)
	t.Logf("answered 503 REBUILDING meanwhile: %v", sawRebuilding)
	for _, q := range queries {
		for _, tok := range []string{tokA, tokB} {
			_, body := get(t, m.URL()+q, tok)
			require.JSONEq(t, before[q+tok], body, "GET %s after the rebuild", q)
		}
	}
}

// postPin creates a pin and returns its request id.
func postPin(t *testing.T, base, token, body string) string {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, base+"/pins", stringsReader(body))
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusAccepted, resp.StatusCode)
	var ps struct{ RequestID string }
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&ps))
	return ps.RequestID
}

func stringsReader(s string) io.Reader { return strings.NewReader(s) }

// TestRestartReadsWaitOnlyForWhatPinsFold: after a restart, reads wait until the read models show everything
// acknowledged before it, but a trailing event the pins projection does not fold (a token mint here) must not
// hold them back.
func TestRestartReadsWaitOnlyForWhatPinsFold(t *testing.T) {
	dir := t.TempDir()
	db := pgschema.New(t)
	n := startTestNodeOn(t, dir, db, nil)
	_, tok := n.org(t, "restart-floor", domain.ScopePinsRead, domain.ScopePinsWrite)
	id := postPin(t, n.URL(), tok, `{"cid":"bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy","name":"before-restart"}`)
	n.org(t, "restart-floor-2", domain.ScopePinsRead) // the log now ends with token and org events
	n.close(context.Background())

	m := startTestNodeOn(t, dir, db, n.kubo)
	begin := time.Now()
	code, body := get(t, m.URL()+"/pins/"+id, tok)
	require.Equal(t, http.StatusOK, code, body)
	require.Less(t, time.Since(begin), time.Second, "the read waited for an event pins never folds")
}
