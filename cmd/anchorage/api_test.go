package main

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/anchorage-pin/anchorage/adapters/http/apitest"
	"github.com/anchorage-pin/anchorage/adapters/kubo/kubod"
	"github.com/anchorage-pin/anchorage/adapters/kubo/kubotest"
	"github.com/anchorage-pin/anchorage/adapters/postgres/pgschema"
	"github.com/anchorage-pin/anchorage/adapters/tokens"
	"github.com/anchorage-pin/anchorage/cmd/anchorage/internal/config"
	"github.com/anchorage-pin/anchorage/domain"
	"github.com/anchorage-pin/anchorage/events"
	"github.com/google/uuid"
	"github.com/stretchr/testify/require"
)

// testNode is a complete node on real parts: embedded JetStream (group-committed fsyncs), a throwaway
// PostgreSQL database with the production roles, a real Kubo daemon for delegates, and the HTTP API on a
// loopback port.
type testNode struct {
	*app
	db   pgschema.DB
	kubo *kubod.Daemon
}

func startTestNode(t *testing.T) *testNode {
	t.Helper()
	return startTestNodeOn(t, t.TempDir(), pgschema.New(t), nil)
}

// startTestNodeOn starts a node on an existing data dir (its event log and keys) and database: restarting it,
// or pointing it at a new, empty database.
func startTestNodeOn(t *testing.T, dir string, db pgschema.DB, kubo *kubod.Daemon) *testNode {
	t.Helper()
	n, err := tryStartTestNode(t, dir, db, kubo, nil)
	require.NoError(t, err)
	return n
}

// tryStartTestNode is startTestNodeOn returning startApp's error; opts, if set, edits the options first.
func tryStartTestNode(t *testing.T, dir string, db pgschema.DB, kubo *kubod.Daemon, opts func(*appOptions)) (*testNode, error) {
	t.Helper()
	ctx := context.Background()
	keyPath := filepath.Join(dir, "k1.key")
	if _, err := os.Stat(keyPath); err != nil {
		require.NoError(t, tokens.GenerateKeyFile(keyPath))
	}
	cfg := config.Default()
	cfg.DataDir = dir
	cfg.Server.Listen = "127.0.0.1:0"
	cfg.Auth.APIToken.SigningKeys = []config.SigningKey{{ID: "k1", Path: keyPath, Primary: true}}
	if kubo == nil {
		kubo = kubotest.Daemon(t)
	}
	_, delegates, err := kuboClient(kubo.APIURL(), 4)
	require.NoError(t, err)
	log := slog.New(slog.NewJSONHandler(io.Discard, nil))
	if os.Getenv("ANCHORAGE_TEST_LOG") != "" {
		log = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	// No storage node and no scheduler: the checklist moves pins through statuses by hand (SetStatus).
	o := appOptions{Cfg: cfg, OwnerDSN: db.OwnerDSN, APIDSN: db.APIDSN, Delegates: delegates, Logger: log, NoScheduler: true}
	if opts != nil {
		opts(&o)
	}
	a, err := startApp(ctx, o)
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { a.close(context.Background()) })
	return &testNode{app: a, db: db, kubo: kubo}, nil
}

// org creates an org and mints a token in it, through the same commands the admin CLI uses.
func (n *testNode) org(t *testing.T, slug string, scopes ...string) (orgID, token string) {
	t.Helper()
	ctx := context.Background()
	meta := domain.Meta{Actor: "test:setup"}
	if _, _, err := n.svc.CreateOrg(ctx, meta, slug, slug); err != nil {
		var de *domain.Error
		require.ErrorAs(t, err, &de)
		require.Equal(t, "ORG_EXISTS", de.Reason)
	}
	orgID = domain.OrgIDForSlug(slug)
	return orgID, n.mint(t, orgID, scopes...)
}

func (n *testNode) mint(t *testing.T, orgID string, scopes ...string) string {
	t.Helper()
	minted, _, err := n.svc.MintToken(context.Background(), domain.Meta{Actor: "test:setup"}, domain.MintToken{
		OrgID: orgID, Subject: "test", Scopes: scopes, KeyID: n.keys.PrimaryID(),
	})
	require.NoError(t, err)
	jwt, err := n.keys.Sign(minted)
	require.NoError(t, err)
	return jwt
}

// setStatus places a pin on a test node (once, at the current scheduler term) and records that node's
// observation of it through the real event log, then waits until the API shows it.
func (n *testNode) setStatus(tb testing.TB, orgID, token, requestID, status string) {
	tb.Helper()
	ctx := context.Background()
	subject := events.PlaceSubject("test-node", orgID, requestID)
	recs, last, err := n.elog.Load(ctx, subject)
	require.NoError(tb, err)
	placedSeq := uint64(0)
	for _, r := range recs {
		if _, ok := r.Event.(events.PinPlaced); ok {
			placedSeq = r.Seq
		}
	}
	if placedSeq == 0 {
		var term uint64
		require.NoError(tb, n.owner.QueryRow(ctx, "SELECT term FROM sched_state").Scan(&term))
		env, err := events.New(uuid.NewString(), time.Now(), "system:test", "", events.PinPlaced{
			OrgID: orgID, RequestID: requestID, NodeID: "test-node", CID: "bafkqaaa", Term: term,
		})
		require.NoError(tb, err)
		seqs, err := n.elog.Append(ctx, domain.Message{Subject: subject, Expect: last, Envelope: env})
		require.NoError(tb, err)
		placedSeq, last = seqs[0], seqs[0]
	}
	env, err := events.New(uuid.NewString(), time.Now(), "system:test", "", events.PinStatusObserved{
		OrgID: orgID, RequestID: requestID, NodeID: "test-node", Status: status, PlacedSeq: placedSeq,
	})
	require.NoError(tb, err)
	_, err = n.elog.Append(ctx, domain.Message{Subject: subject, Expect: last, Envelope: env})
	require.NoError(tb, err)
	require.Eventually(tb, func() bool {
		req, _ := http.NewRequest(http.MethodGet, n.URL()+"/pins/"+requestID, nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode == 200 && strings.Contains(string(body), `"status":"`+status+`"`)
	}, 5*time.Second, 5*time.Millisecond)
}

// TestPinningAPIChecklist runs the whole spec conformance checklist (pinning-api.md §9 and §10, scopes,
// isolation, Kubo's pagination) against the real stack, validating every response against the OpenAPI document.
func TestPinningAPIChecklist(t *testing.T) {
	n := startTestNode(t)
	orgA, tokenA := n.org(t, "checklist-a", domain.ScopePinsRead, domain.ScopePinsWrite)
	orgB, tokenB := n.org(t, "checklist-b", domain.ScopePinsRead, domain.ScopePinsWrite)
	readOnly := n.mint(t, orgA, domain.ScopePinsRead)
	apitest.RunChecklist(t, apitest.Env{
		BaseURL: n.URL(), TokenA: tokenA, TokenB: tokenB, ReadOnlyToken: readOnly,
		SetStatus: func(tb testing.TB, org, requestID, status string) {
			if org == "A" {
				n.setStatus(tb, orgA, tokenA, requestID, status)
			} else {
				n.setStatus(tb, orgB, tokenB, requestID, status)
			}
		},
	})
}
