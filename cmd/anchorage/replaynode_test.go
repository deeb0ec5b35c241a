package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/anchorage-pin/anchorage/adapters/kubo/kubotest"
	"github.com/anchorage-pin/anchorage/adapters/postgres/pgcluster"
	"github.com/stretchr/testify/require"
)

// Drill: a node's Kubo repo is lost (every pin and block gone). `anchorage replay node` derives the node's
// desired pin set from the latest placement state of each pin in the log and re-drives it through the worker,
// fetching from the pins' origins; every pin is back in Kubo and the API still says pinned.
func TestReplayNodeAfterLostRepo(t *testing.T) {
	const n = 20
	dir := filepath.Join(pgcluster.TempRoot(), "anchorage-replaynode-"+strings.ReplaceAll(t.Name(), "/", "-"))
	require.NoError(t, os.RemoveAll(dir))
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	node, out, stop := devRun(t, dir)
	defer stop()
	nodeID := node.app.nodeIDs[0]

	// The content lives on a user's daemon, named as origin.
	src := kubotest.Daemon(t)
	srcKC, _ := newKuboClient(t, src)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	ident, err := srcKC.ID(ctx)
	require.NoError(t, err)
	var origins []string
	for _, a := range ident.Addrs {
		if strings.Contains(a, "/127.0.0.1/") {
			origins = append(origins, a)
		}
	}
	require.NotEmpty(t, origins)
	cids := make([]string, n)
	for i := range cids {
		cids[i] = putBlock(t, src, []byte(fmt.Sprintf("replay node drill block %d %d", i, time.Now().UnixNano())))
		body, _ := json.Marshal(map[string]any{"cid": cids[i], "name": fmt.Sprintf("drill-%d", i), "origins": origins})
		postPin(t, node.endpoint, node.token, string(body))
	}
	pinnedCount := func() int {
		code, body := get(t, node.endpoint+"/pins?status=pinned&limit=1", node.token)
		if code != http.StatusOK {
			return -1
		}
		var pr struct{ Count int }
		_ = json.Unmarshal([]byte(body), &pr)
		return pr.Count
	}
	require.Eventually(t, func() bool { return pinnedCount() == n }, time.Minute, 50*time.Millisecond, "pins pinned\n%s", out)

	// Lose the repo's pins and blocks.
	for _, c := range cids {
		mustKubo(t, node.kubo, "pin/rm", url.Values{"arg": {c}}, nil)
	}
	mustKubo(t, node.kubo, "repo/gc", nil, nil)
	for _, c := range cids {
		pinned, err := pinnedAnyhow(ctx, node.kubo, c)
		require.NoError(t, err)
		require.False(t, pinned)
	}
	// Let the node forget its connection to the source, so the replay must reconnect through the origins.
	_, _ = kuboRPC(ctx, node.kubo.APIURL(), "swarm/disconnect", url.Values{"arg": {origins[0]}}, nil)

	var o bytes.Buffer
	start := time.Now()
	err = run(ctx, []string{"replay", "node", nodeID, "--data-dir", dir}, func(string) string { return "" }, &o, &o)
	require.NoError(t, err, o.String())
	t.Logf("replay node: %s in %s", strings.TrimSpace(o.String()), time.Since(start).Round(time.Millisecond))
	require.Contains(t, o.String(), fmt.Sprintf("%d placements re-driven: %d pinned, 0 failed", n, n))
	for _, c := range cids {
		pinned, err := pinnedAnyhow(ctx, node.kubo, c)
		require.NoError(t, err)
		require.True(t, pinned, "%s is pinned again", c)
	}
	require.Equal(t, n, pinnedCount())

	// Replay is an operator command, not a loop: an unknown node says so.
	o.Reset()
	err = run(ctx, []string{"replay", "node", "no-such-node", "--data-dir", dir, "--timeout", "500ms"}, func(string) string { return "" }, &o, &o)
	require.Error(t, err)
	require.Contains(t, err.Error(), "is it running?")
}
