package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	httpapi "github.com/anchorage-pin/anchorage/adapters/http"
	"github.com/anchorage-pin/anchorage/adapters/postgres"
	"github.com/anchorage-pin/anchorage/cmd/anchorage/internal/config"
	"github.com/anchorage-pin/anchorage/domain"
	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"
)

// auditCall makes one API request to n.
func auditCall(t *testing.T, n *testNode, method, path, token string, body any) (int, []byte) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		require.NoError(t, err)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, n.URL()+path, rd)
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, out
}

func auditPage(t *testing.T, n *testNode, path, token string) httpapi.AuditPage {
	t.Helper()
	code, body := auditCall(t, n, http.MethodGet, path, token, nil)
	require.Equal(t, http.StatusOK, code, "%s: %s", path, body)
	var p httpapi.AuditPage
	require.NoError(t, json.Unmarshal(body, &p))
	return p
}

func auditTypes(evs []httpapi.AuditEventJSON) []string {
	out := []string{}
	for _, e := range evs {
		out = append(out, e.Type)
	}
	return out
}

// The audit trail on the real stack: pins requested, replaced, removed and observed through the API and the
// event log show up, attributed to their tokens, for whom may see them; a pin's history includes its
// placements; the list as of an earlier time is what GET /pins answered then; and the operator commands read
// the same trail.
func TestAuditEndToEnd(t *testing.T) {
	n := startTestNode(t)
	ctx := context.Background()
	orgA, writer := n.org(t, "audit-e2e-a", domain.ScopePinsRead, domain.ScopePinsWrite)
	orgB, writerB := n.org(t, "audit-e2e-b", domain.ScopePinsRead, domain.ScopePinsWrite)
	auditor := n.mint(t, orgA, domain.ScopeAuditRead)
	sysadmin := n.mint(t, orgA, domain.ScopeSysAudit)
	_, body := auditCall(t, n, http.MethodGet, "/v1/whoami", writer, nil)
	var who httpapi.Whoami
	require.NoError(t, json.Unmarshal(body, &who))
	const cidA, cidB = "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy", "bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi"

	pin := func(token, cid, name string) string {
		code, body := auditCall(t, n, http.MethodPost, "/pins", token, map[string]string{"cid": cid, "name": name})
		require.Equal(t, http.StatusAccepted, code, "%s", body)
		var ps httpapi.PinStatus
		require.NoError(t, json.Unmarshal(body, &ps))
		return ps.RequestID
	}
	first := pin(writer, cidA, "first")
	second := pin(writer, cidB, "second")
	pin(writerB, cidA, "theirs")
	n.setStatus(t, orgA, writer, first, "pinning")
	live := func() string {
		code, body := auditCall(t, n, http.MethodGet, "/pins?status=any", writer, nil)
		require.Equal(t, http.StatusOK, code)
		return string(body)
	}
	before := live()
	at := time.Now()
	time.Sleep(5 * time.Millisecond)
	n.setStatus(t, orgA, writer, first, "pinned")
	code, body := auditCall(t, n, http.MethodPost, "/pins/"+first, writer, map[string]string{"cid": cidA, "name": "first-v2"})
	require.Equal(t, http.StatusAccepted, code, "%s", body)
	var replacement httpapi.PinStatus
	require.NoError(t, json.Unmarshal(body, &replacement))
	code, _ = auditCall(t, n, http.MethodDelete, "/pins/"+second, writer, nil)
	require.Equal(t, http.StatusAccepted, code)
	_, err := n.svc.SetMaintenance(ctx, domain.Meta{Actor: "admin:test"}, true, "audit test") // an event of no org
	require.NoError(t, err)
	require.NotEqual(t, before, live())

	// Scopes: a pins token sees no trail; an auditor sees its org's; a sysadmin every org's and the system's.
	code, body = auditCall(t, n, http.MethodGet, "/v1/audit", writer, nil)
	require.Equal(t, http.StatusForbidden, code, "%s", body)
	require.Contains(t, string(body), `"reason":"FORBIDDEN"`)
	mine := auditPage(t, n, "/v1/audit?limit=1000", auditor)
	require.Equal(t, []string{"pin.removed", "pin.replaced", "pin.requested", "pin.status_observed", "pin.status_observed", "pin.placed",
		"pin.requested", "pin.requested", "token.minted", "token.minted", "token.minted", "org.created"}, auditTypes(mine.Events))
	for _, e := range mine.Events {
		require.Equal(t, orgA, *e.OrgID)
	}
	// Read-your-writes covers an org's writes made through the API; the maintenance event was appended by the
	// service directly and belongs to no org, so the sysadmin's view may take the audit projection's moment.
	var all httpapi.AuditPage
	require.Eventually(t, func() bool {
		all = auditPage(t, n, "/v1/audit?limit=1000", sysadmin)
		return len(all.Events) > 0 && all.Events[0].Type == "sched.maintenance_set"
	}, 5*time.Second, 20*time.Millisecond, "the sysadmin's trail starts with the maintenance event")
	require.Nil(t, all.Events[0].OrgID)
	require.Greater(t, len(all.Events), len(mine.Events))
	theirs := auditPage(t, n, "/v1/audit?org=audit-e2e-b&type=pin.requested", sysadmin)
	require.Len(t, theirs.Events, 1)
	require.Equal(t, orgB, *theirs.Events[0].OrgID)

	// Who removed what, with which token: the removal, attributed to the writer's token, with its request id.
	removed := auditPage(t, n, "/v1/audit?type=pin.removed&actor="+url.QueryEscape(who.Actor), auditor)
	require.Len(t, removed.Events, 1)
	require.Equal(t, second, *removed.Events[0].RequestID)
	require.NotNil(t, removed.Events[0].Corr, "the request's X-Request-Id")
	byCID := auditPage(t, n, "/v1/audit?cid="+cidA, auditor)
	require.Equal(t, []string{"pin.requested", "pin.requested"}, auditTypes(byCID.Events), "the replacement and the first (same content)")
	// (setStatus places the pin with the CID bafkqaaa, whatever the request's.)
	require.Equal(t, []string{"pin.placed"}, auditTypes(auditPage(t, n, "/v1/audit?cid=bafkqaaa", auditor).Events))
	since := auditPage(t, n, "/v1/audit?since="+url.QueryEscape(at.Format(time.RFC3339Nano)), auditor)
	require.Equal(t, []string{"pin.removed", "pin.replaced", "pin.requested", "pin.status_observed"}, auditTypes(since.Events))
	paged := auditPage(t, n, "/v1/audit?limit=5", auditor)
	require.Len(t, paged.Events, 5)
	rest := auditPage(t, n, "/v1/audit?limit=1000&cursor="+paged.NextCursor, auditor)
	require.Equal(t, auditTypes(mine.Events), append(auditTypes(paged.Events), auditTypes(rest.Events)...))

	// The first pin's history: its requests, placement and observations, and its replacement.
	code, body = auditCall(t, n, http.MethodGet, "/v1/pins/"+first+"/history", writer, nil)
	require.Equal(t, http.StatusOK, code, "%s", body)
	var h httpapi.AuditHistory
	require.NoError(t, json.Unmarshal(body, &h))
	require.Equal(t, []string{"pin.requested", "pin.placed", "pin.status_observed", "pin.status_observed", "pin.replaced"}, auditTypes(h.Events))
	require.Equal(t, "place.test-node."+orgA+"."+first, h.Events[1].Subject)
	code, _ = auditCall(t, n, http.MethodGet, "/v1/pins/"+first+"/history", writerB, nil)
	require.Equal(t, http.StatusNotFound, code, "another org's pin")

	// As of before the last changes: exactly what GET /pins answered then.
	code, body = auditCall(t, n, http.MethodGet, "/v1/pins?status=any&as_of="+url.QueryEscape(at.Format(time.RFC3339Nano)), writer, nil)
	require.Equal(t, http.StatusOK, code, "%s", body)
	require.JSONEq(t, before, string(body))
	code, body = auditCall(t, n, http.MethodGet, "/v1/pins?as_of="+url.QueryEscape(time.Now().Format(time.RFC3339Nano)), writer, nil)
	require.Equal(t, http.StatusOK, code, "%s", body)
	var now httpapi.PinResults
	require.NoError(t, json.Unmarshal(body, &now))
	require.Zero(t, now.Count, "pinned only by default; the pinned pin was replaced, its replacement is queued")

	// The operator commands read the same trail, as the owner role.
	cfgPath := filepath.Join(t.TempDir(), "anchorage.yaml")
	cfg := config.Default()
	cfg.DataDir = n.cfg.DataDir
	cfg.Postgres.URL, cfg.Postgres.APIURL = n.db.OwnerDSN, n.db.APIDSN
	cfg.Auth.APIToken.SigningKeys = n.cfg.Auth.APIToken.SigningKeys
	b, err := yaml.Marshal(cfg)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(cfgPath, b, 0o600))
	cli := func(args ...string) string {
		t.Helper()
		var out, errOut bytes.Buffer
		require.NoError(t, run(ctx, append([]string{"events"}, args...), func(string) string { return "" }, &out, &errOut), "%s", errOut.String())
		return out.String()
	}
	lines := strings.Split(strings.TrimSpace(cli("query", "-c", cfgPath, "--json", "--org", "audit-e2e-a", "--type", "pin.removed")), "\n")
	require.Len(t, lines, 1)
	var ev httpapi.AuditEventJSON
	require.NoError(t, json.Unmarshal([]byte(lines[0]), &ev))
	require.Equal(t, removed.Events[0], ev)
	table := cli("query", "-c", cfgPath, "--limit", "3")
	require.Equal(t, 4, strings.Count(table, "\n"), "%s", table)
	require.Contains(t, table, "SEQ")
	require.Contains(t, table, "sched.maintenance_set")
	require.Contains(t, cli("query", "-c", cfgPath, "--actor", who.Actor), "audit-e2e-a", "orgs by slug")
	var got []string
	for _, l := range strings.Split(strings.TrimSpace(cli("query", "-c", cfgPath, "--json", "--limit", "2000")), "\n") {
		require.NoError(t, json.Unmarshal([]byte(l), &ev))
		got = append(got, ev.Type)
	}
	require.Equal(t, auditTypes(all.Events), got)

	asof := cli("asof", "-c", cfgPath, "--org", "audit-e2e-a", "--at", at.Format(time.RFC3339Nano))
	require.Contains(t, asof, first)
	require.Contains(t, asof, "pinning")
	require.Contains(t, asof, second)
	require.NotContains(t, asof, replacement.RequestID)
	asofNow := cli("asof", "-c", cfgPath, "--org", orgA, "--at", time.Now().Format(time.RFC3339Nano), "--json")
	require.Contains(t, asofNow, replacement.RequestID)
	require.Equal(t, 1, strings.Count(asofNow, "\n"))

	var out, errOut bytes.Buffer
	err = run(ctx, []string{"events", "query", "-c", cfgPath, "--type", "pin.exploded"}, func(string) string { return "" }, &out, &errOut)
	require.ErrorContains(t, err, "not an event type")
	err = run(ctx, []string{"events", "query"}, func(string) string { return "" }, &out, &errOut)
	require.ErrorContains(t, err, "--config FILE")

	// The audit projection is a read model like the others: the checkpoint, and replay verify, cover it.
	cp, err := postgres.NewAdmin(n.owner).Checkpoint(ctx, postgres.ProjectionAudit)
	require.NoError(t, err)
	head, err := n.elog.LastSeq(ctx)
	require.NoError(t, err)
	require.Equal(t, head, cp)
}
