package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"mime/multipart"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/anchorage-pin/anchorage/adapters/kubo"
	"github.com/anchorage-pin/anchorage/adapters/kubo/kubod"
	"github.com/anchorage-pin/anchorage/adapters/kubo/kubotest"
	"github.com/anchorage-pin/anchorage/adapters/natsjs"
	"github.com/anchorage-pin/anchorage/adapters/postgres"
	"github.com/anchorage-pin/anchorage/adapters/postgres/pgschema"
	"github.com/anchorage-pin/anchorage/adapters/tokens"
	"github.com/anchorage-pin/anchorage/cmd/anchorage/internal/config"
	"github.com/anchorage-pin/anchorage/domain"
	"github.com/anchorage-pin/anchorage/events"
	"github.com/anchorage-pin/anchorage/projections"
	"github.com/google/uuid"
	"github.com/stretchr/testify/require"
)

// clusterOptions configure startCluster.
type clusterOptions struct {
	// NoNode starts the app without a storage node of its own (tests that run their own worker).
	NoNode bool
	// NoScheduler keeps the app out of the scheduler election (tests that place pins by hand).
	NoScheduler bool
	// PinTimeout bounds each pin's retrieval (default 20 s).
	PinTimeout time.Duration
}

// cluster is a storage cluster on real parts: one app (embedded JetStream, a throwaway PostgreSQL database with
// the production roles, the HTTP API), whose own storage node "node-1" drives a real Kubo daemon, and the
// scheduler; more nodes (each with its own Kubo daemon and worker) join the same event log with addNode.
type cluster struct {
	*testNode
	kubo1 *kubod.Daemon // node-1's Kubo (nil with NoNode)
	kc1   *kubo.Client
}

func startCluster(t *testing.T, o clusterOptions) *cluster {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	keyPath := filepath.Join(dir, "k1.key")
	require.NoError(t, tokens.GenerateKeyFile(keyPath))
	cfg := config.Default()
	cfg.DataDir = dir
	cfg.Server.Listen = "127.0.0.1:0"
	cfg.Auth.APIToken.SigningKeys = []config.SigningKey{{ID: "k1", Path: keyPath, Primary: true}}
	cfg.Kubo.NodeID = "node-1"
	cfg.Kubo.PinTimeout = config.Duration(20 * time.Second)
	if o.PinTimeout > 0 {
		cfg.Kubo.PinTimeout = config.Duration(o.PinTimeout)
	}
	db := pgschema.New(t)
	c := &cluster{}
	opts := appOptions{Cfg: cfg, OwnerDSN: db.OwnerDSN, APIDSN: db.APIDSN, Logger: testLogger(), NoScheduler: o.NoScheduler}
	if o.NoNode {
		// Delegates for pins not placed anywhere: some real node's addresses.
		d := kubotest.Daemon(t)
		_, opts.Delegates = newKuboClient(t, d)
	} else {
		c.kubo1 = kubotest.Daemon(t)
		c.kc1, opts.Delegates = newKuboClient(t, c.kubo1)
		opts.Kubo = c.kc1
	}
	a, err := startApp(ctx, opts)
	require.NoError(t, err)
	t.Cleanup(func() { a.close(context.Background()) })
	c.testNode = &testNode{app: a, db: db}
	return c
}

func testLogger() *slog.Logger {
	if os.Getenv("ANCHORAGE_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

func newKuboClient(t *testing.T, d *kubod.Daemon) (*kubo.Client, func(context.Context) []string) {
	t.Helper()
	kc, delegates, err := kuboClient(d.APIURL(), 32)
	require.NoError(t, err)
	return kc, delegates
}

// addNode starts another Kubo daemon and runs a storage node with id on it, in the same app (one event log,
// several workers).
func (c *cluster) addNode(t *testing.T, id string) (*kubod.Daemon, *kubo.Client) {
	t.Helper()
	d := kubotest.Daemon(t)
	// Stop the app (and this node's worker) before the daemon (cleanups run last-registered first).
	t.Cleanup(func() { c.close(context.Background()) })
	kc, _ := newKuboClient(t, d)
	require.NoError(t, c.startNode(context.Background(), kc, id))
	return d, kc
}

// customNode registers a storage node the test runs a worker for itself (projections.NewWorker on the app's
// log) and keeps its presence alive until the test ends, so the scheduler places pins on it.
func (c *cluster) customNode(t *testing.T, id string, kc *kubo.Client) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ident, err := kc.ID(ctx)
	require.NoError(t, err)
	app, err := c.svc.RegisterNode(ctx, domain.Meta{Actor: "test:node"}, id, ident.PeerID, ident.Addrs, 0)
	require.NoError(t, err)
	liveCtx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		c.presence.Keep(liveCtx, time.Second, func() natsjs.NodeStatus { return natsjs.NodeStatus{NodeID: id, FreeBytes: 1 << 30} })
	})
	t.Cleanup(func() { stop(); wg.Wait() })
	c.waitProjected(t, app.Seq)
}

// runWorker runs w until the test ends (or the returned stop is called) and checks it ends cleanly.
func runWorker(t *testing.T, w *projections.Worker) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				require.NoError(t, err)
			case <-time.After(30 * time.Second):
				t.Error("the worker did not stop")
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// waitProjected waits until the pins projection (placements, nodes, scheduler state) has applied seq.
func (c *cluster) waitProjected(t *testing.T, seq uint64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, c.runner.Watermarks().Wait(ctx, postgres.ProjectionPins, seq))
}

// operateNode cordons, drains or uncordons a node through the service, as `anchorage admin node …` does, and
// waits until the read models show it.
func (c *cluster) operateNode(t *testing.T, node string, op domain.NodeOp) {
	t.Helper()
	app, err := c.svc.OperateNode(context.Background(), domain.Meta{Actor: "test:admin"}, node, op, "test")
	require.NoError(t, err)
	c.waitProjected(t, app.Seq)
}

func (c *cluster) setMaintenance(t *testing.T, on bool) {
	t.Helper()
	app, err := c.svc.SetMaintenance(context.Background(), domain.Meta{Actor: "test:admin"}, on, "test")
	require.NoError(t, err)
	c.waitProjected(t, app.Seq)
}

// appendEvent appends e on subject through the real log, checked against the subject's last message.
func (c *cluster) appendEvent(t *testing.T, subject string, e events.Event) uint64 {
	t.Helper()
	ctx := context.Background()
	_, last, err := c.elog.Load(ctx, subject)
	require.NoError(t, err)
	env, err := events.New(uuid.NewString(), time.Now(), "system:test", "", e)
	require.NoError(t, err)
	seqs, err := c.elog.Append(ctx, domain.Message{Subject: subject, Expect: last, Envelope: env})
	require.NoError(t, err)
	return seqs[0]
}

// placementLog is what the log holds about one pin's placement on one node.
type placementLog struct {
	records []events.Record
	placed  []uint64 // sequences of the pin.placed messages
	// final counts the final (pinned or failed) observations per placed_seq and status.
	final map[uint64]map[string]int
}

func (c *cluster) placementLog(t *testing.T, node, org, request string) placementLog {
	t.Helper()
	recs, _, err := c.elog.Load(context.Background(), events.PlaceSubject(node, org, request))
	require.NoError(t, err)
	pl := placementLog{records: recs, final: map[uint64]map[string]int{}}
	for _, r := range recs {
		switch e := r.Event.(type) {
		case events.PinPlaced:
			pl.placed = append(pl.placed, r.Seq)
		case events.PinStatusObserved:
			if e.Status == "pinned" || e.Status == "failed" {
				if pl.final[e.PlacedSeq] == nil {
					pl.final[e.PlacedSeq] = map[string]int{}
				}
				pl.final[e.PlacedSeq][e.Status]++
			}
		}
	}
	return pl
}

func (pl placementLog) last() events.Event {
	if len(pl.records) == 0 {
		return nil
	}
	return pl.records[len(pl.records)-1].Event
}

// --- The Pinning Services API over HTTP -------------------------------------------------------------------

// pinStatusJSON is the spec's PinStatus as the API sends it.
type pinStatusJSON struct {
	RequestID string `json:"requestid"`
	Status    string `json:"status"`
	Created   string `json:"created"`
	Pin       struct {
		CID     string            `json:"cid"`
		Name    string            `json:"name"`
		Origins []string          `json:"origins"`
		Meta    map[string]string `json:"meta"`
	} `json:"pin"`
	Delegates []string          `json:"delegates"`
	Info      map[string]string `json:"info"`
}

var apiClient = &http.Client{Timeout: 15 * time.Second}

// tryCall is call for background goroutines: errors are returned, not asserted.
func (c *cluster) tryCall(method, path, token string, body any) (int, []byte, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return 0, nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, c.URL()+path, rd)
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := apiClient.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	return resp.StatusCode, out, err
}

// call sends one API request and returns the status code and body.
func (c *cluster) call(t testing.TB, method, path, token string, body any) (int, []byte) {
	t.Helper()
	code, out, err := c.tryCall(method, path, token, body)
	require.NoError(t, err)
	return code, out
}

type pinBody struct {
	CID     string   `json:"cid"`
	Name    string   `json:"name,omitempty"`
	Origins []string `json:"origins,omitempty"`
}

func (c *cluster) addPin(t testing.TB, token string, p pinBody) pinStatusJSON {
	t.Helper()
	code, body := c.call(t, http.MethodPost, "/pins", token, p)
	require.Equal(t, http.StatusAccepted, code, "%s", body)
	var ps pinStatusJSON
	require.NoError(t, json.Unmarshal(body, &ps))
	return ps
}

func (c *cluster) replacePin(t testing.TB, token, id string, p pinBody) pinStatusJSON {
	t.Helper()
	code, body := c.call(t, http.MethodPost, "/pins/"+id, token, p)
	require.Equal(t, http.StatusAccepted, code, "%s", body)
	var ps pinStatusJSON
	require.NoError(t, json.Unmarshal(body, &ps))
	return ps
}

func (c *cluster) removePin(t testing.TB, token, id string) {
	t.Helper()
	code, body := c.call(t, http.MethodDelete, "/pins/"+id, token, nil)
	require.Equal(t, http.StatusAccepted, code, "%s", body)
}

func (c *cluster) getPin(t testing.TB, token, id string) pinStatusJSON {
	t.Helper()
	code, body := c.call(t, http.MethodGet, "/pins/"+id, token, nil)
	require.Equal(t, http.StatusOK, code, "%s", body)
	var ps pinStatusJSON
	require.NoError(t, json.Unmarshal(body, &ps))
	return ps
}

// poll calls cond in the test's goroutine (so it may use require) every interval until it holds or within has
// passed, and reports whether it held.
func poll(cond func() bool, within, every time.Duration) bool {
	deadline := time.Now().Add(within)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(every)
	}
}

// waitStatus polls GET /pins/{id} until the pin has status, and returns it.
func (c *cluster) waitStatus(t testing.TB, token, id, status string, within time.Duration) pinStatusJSON {
	t.Helper()
	var ps pinStatusJSON
	if !poll(func() bool {
		ps = c.getPin(t, token, id)
		return ps.Status == status
	}, within, 20*time.Millisecond) {
		require.FailNowf(t, "wrong status", "pin %s did not become %s within %s: last seen %s, info %v", id, status, within, ps.Status, ps.Info)
	}
	return ps
}

// count returns the count of GET /pins?<query>.
func (c *cluster) count(t testing.TB, token, query string) int64 {
	t.Helper()
	code, body := c.call(t, http.MethodGet, "/pins?"+query, token, nil)
	require.Equal(t, http.StatusOK, code, "%s", body)
	var res struct{ Count int64 }
	require.NoError(t, json.Unmarshal(body, &res))
	return res.Count
}

// --- Kubo's RPC API, for what the adapter's client does not offer (adding content, any-type pin checks) --------

// kuboRPC calls a Kubo RPC command; file, when not nil, is sent as the command's file argument.
func kuboRPC(ctx context.Context, apiURL, cmd string, q url.Values, file []byte) ([]byte, error) {
	var body io.Reader
	contentType := ""
	if file != nil {
		var buf bytes.Buffer
		mw := multipart.NewWriter(&buf)
		fw, err := mw.CreateFormFile("file", "file")
		if err != nil {
			return nil, err
		}
		if _, err := fw.Write(file); err != nil {
			return nil, err
		}
		if err := mw.Close(); err != nil {
			return nil, err
		}
		body, contentType = &buf, mw.FormDataContentType()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, apiURL+"/api/v0/"+cmd+"?"+q.Encode(), body)
	if err != nil {
		return nil, err
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return out, fmt.Errorf("kubo %s: %s: %s", cmd, resp.Status, bytes.TrimSpace(out))
	}
	return out, nil
}

func mustKubo(t testing.TB, d *kubod.Daemon, cmd string, q url.Values, file []byte) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := kuboRPC(ctx, d.APIURL(), cmd, q, file)
	require.NoError(t, err)
	return out
}

// putBlock stores data as a raw block in d's repo, not pinned, and returns its CID.
func putBlock(t testing.TB, d *kubod.Daemon, data []byte) string {
	t.Helper()
	var out struct{ Key string }
	require.NoError(t, json.Unmarshal(mustKubo(t, d, "block/put", url.Values{"cid-codec": {"raw"}}, data), &out))
	require.NotEmpty(t, out.Key)
	return out.Key
}

// addUnixFSFile imports data as a UnixFS file (CIDv1, raw leaves, chunks of chunk bytes) into d's repo, not pinned.
func addUnixFSFile(t testing.TB, d *kubod.Daemon, data []byte, chunk int) string {
	t.Helper()
	out := mustKubo(t, d, "add", url.Values{
		"pin": {"false"}, "cid-version": {"1"}, "raw-leaves": {"true"}, "chunker": {fmt.Sprintf("size-%d", chunk)},
		"quieter": {"true"},
	}, data)
	var res struct{ Hash string }
	dec := json.NewDecoder(bytes.NewReader(out))
	for dec.More() {
		require.NoError(t, dec.Decode(&res))
	}
	require.NotEmpty(t, res.Hash)
	return res.Hash
}

// pinnedAnyhow reports whether cid is pinned on d in any way (recursively, directly or indirectly).
func pinnedAnyhow(ctx context.Context, d *kubod.Daemon, cid string) (bool, error) {
	out, err := kuboRPC(ctx, d.APIURL(), "pin/ls", url.Values{"arg": {cid}, "type": {"all"}}, nil)
	if err != nil {
		if strings.Contains(string(out), "is not pinned") {
			return false, nil
		}
		return false, err
	}
	return true, nil
}

func isPinned(t testing.TB, kc *kubo.Client, cid string) bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	pinned, err := kc.IsPinned(ctx, cid)
	require.NoError(t, err)
	return pinned
}

// ipfsCLI runs the real `ipfs` binary on repo (a running daemon's repo: the CLI then talks to that daemon).
func ipfsCLI(t testing.TB, repo string, timeout time.Duration, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, kubotest.Binary(t), args...)
	cmd.Env = append(os.Environ(), "IPFS_PATH="+repo, "IPFS_TELEMETRY=off")
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func mustIPFS(t testing.TB, repo string, args ...string) string {
	t.Helper()
	out, err := ipfsCLI(t, repo, time.Minute, args...)
	require.NoError(t, err, "ipfs %s\n%s", strings.Join(args, " "), out)
	return out
}
