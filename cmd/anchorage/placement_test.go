package main

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/anchorage-pin/anchorage/adapters/kubo"
	"github.com/anchorage-pin/anchorage/adapters/kubo/kubotest"
	"github.com/anchorage-pin/anchorage/adapters/natsjs"
	"github.com/anchorage-pin/anchorage/domain"
	"github.com/anchorage-pin/anchorage/events"
	"github.com/anchorage-pin/anchorage/projections"
	"github.com/ipfs/go-cid"
	"github.com/multiformats/go-multihash"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

var pinsRW = []string{domain.ScopePinsRead, domain.ScopePinsWrite}

func randomData(t testing.TB, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	_, err := rand.Read(b)
	require.NoError(t, err)
	return b
}

// nodeAddrs returns a Kubo daemon's peer id and its addresses (each ending /p2p/<peer id>), as `ipfs id` shows them.
func nodeAddrs(t *testing.T, kc *kubo.Client) (string, []string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	id, err := kc.ID(ctx)
	require.NoError(t, err)
	require.NotEmpty(t, id.Addrs)
	return id.PeerID, id.Addrs
}

// TestPlacementFetchesThroughOrigins: content only a separate daemon has is fetched through the origins given in
// POST /pins, pinned recursively on the node's Kubo, and reported pinned with its DAG size and node 1's delegates.
func TestPlacementFetchesThroughOrigins(t *testing.T) {
	c := startCluster(t, clusterOptions{})
	origin := kubotest.Daemon(t)
	oc, _ := newKuboClient(t, origin)
	_, originAddrs := nodeAddrs(t, oc)
	peer1, addrs1 := nodeAddrs(t, c.kc1)
	_, token := c.org(t, "origins", pinsRW...)

	data := randomData(t, 300_000)
	id := addUnixFSFile(t, origin, data, 256<<10)
	var st struct{ CumulativeSize uint64 }
	require.NoError(t, json.Unmarshal(mustKubo(t, origin, "files/stat", url.Values{"arg": {"/ipfs/" + id}}, nil), &st))
	require.False(t, isPinned(t, c.kc1, id))

	ps := c.addPin(t, token, pinBody{CID: id, Name: "from-origin", Origins: originAddrs})
	assert.Equal(t, "queued", ps.Status)
	assert.Equal(t, originAddrs, ps.Pin.Origins)
	ps = c.waitStatus(t, token, ps.RequestID, "pinned", 20*time.Second)

	assert.True(t, isPinned(t, c.kc1, id), "the node's Kubo pins it recursively")
	assert.Equal(t, fmt.Sprint(st.CumulativeSize), ps.Info["dag_size"], "info.dag_size is the DAG's size")
	assert.ElementsMatch(t, addrs1, ps.Delegates, "delegates are node 1's addresses")
	for _, d := range ps.Delegates {
		assert.True(t, strings.HasSuffix(d, "/p2p/"+peer1), d)
	}
	// The listing says the same.
	code, body := c.call(t, http.MethodGet, "/pins?cid="+id, token, nil)
	require.Equal(t, http.StatusOK, code)
	var res struct{ Results []pinStatusJSON }
	require.NoError(t, json.Unmarshal(body, &res))
	require.Len(t, res.Results, 1)
	assert.Equal(t, "pinned", res.Results[0].Status)
	assert.Equal(t, ps.Info["dag_size"], res.Results[0].Info["dag_size"])
	assert.ElementsMatch(t, addrs1, res.Results[0].Delegates)
}

// TestPlacementKuboCLI drives the cluster with the real `ipfs` CLI of a running client daemon that holds the
// content: the daemon sends its own addresses as origins and the node fetches from it.
func TestPlacementKuboCLI(t *testing.T) {
	c := startCluster(t, clusterOptions{})
	_, token := c.org(t, "cli", pinsRW...)
	client := kubotest.Daemon(t)
	repo := client.RepoDir()

	dir := t.TempDir()
	files := map[string]string{}
	for _, name := range []string{"x", "y"} {
		p := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(p, randomData(t, 100_000), 0o600))
		files[name] = strings.TrimSpace(mustIPFS(t, repo, "add", "-q", "--pin=false", "--cid-version=1", p))
	}
	require.NotEqual(t, files["x"], files["y"])

	mustIPFS(t, repo, "pin", "remote", "service", "add", "anchorage", c.URL(), token)
	for _, name := range []string{"x", "y"} {
		// Blocking: Kubo polls GET /pins/{id} every 500 ms until pinned.
		out := mustIPFS(t, repo, "pin", "remote", "add", "--service=anchorage", "--name="+name, files[name])
		require.Regexp(t, `Status:\s+pinned`, out)
		require.Contains(t, out, files[name])
		require.True(t, isPinned(t, c.kc1, files[name]), "the node's Kubo has %s pinned", name)
	}

	ls := mustIPFS(t, repo, "pin", "remote", "ls", "--service=anchorage", "--cid="+files["x"])
	assert.Contains(t, ls, files["x"])
	assert.NotContains(t, ls, files["y"])
	ls = mustIPFS(t, repo, "pin", "remote", "ls", "--service=anchorage", "--name=y")
	assert.Contains(t, ls, files["y"])
	assert.NotContains(t, ls, files["x"])
	ls = mustIPFS(t, repo, "pin", "remote", "ls", "--service=anchorage", "--status=pinned")
	assert.Contains(t, ls, files["x"])
	assert.Contains(t, ls, files["y"])
	ls = mustIPFS(t, repo, "pin", "remote", "ls", "--service=anchorage", "--status=queued,pinning,failed")
	assert.Empty(t, strings.TrimSpace(ls))
	stat := regexp.MustCompile(`anchorage\s+` + regexp.QuoteMeta(c.URL()) + `\s+`)
	assert.Regexp(t, stat.String()+`0/0/2/0`, mustIPFS(t, repo, "pin", "remote", "service", "ls", "--stat"))

	mustIPFS(t, repo, "pin", "remote", "rm", "--service=anchorage", "--name=x")
	assert.NotContains(t, mustIPFS(t, repo, "pin", "remote", "ls", "--service=anchorage", "--status=queued,pinning,pinned,failed"), files["x"])
	assert.Regexp(t, stat.String()+`0/0/1/0`, mustIPFS(t, repo, "pin", "remote", "service", "ls", "--stat"))
	require.True(t, poll(func() bool { return !isPinned(t, c.kc1, files["x"]) }, 10*time.Second, 20*time.Millisecond),
		"a removed pin is unpinned from the node's Kubo")
	assert.True(t, isPinned(t, c.kc1, files["y"]))
}

// TestPlacementMaintenancePausesPlacement: in maintenance mode the API keeps accepting pins, which stay queued;
// once it ends they are placed and pinned.
func TestPlacementMaintenancePausesPlacement(t *testing.T) {
	c := startCluster(t, clusterOptions{})
	_, token := c.org(t, "maint", pinsRW...)
	c.setMaintenance(t, true)
	time.Sleep(300 * time.Millisecond) // a scheduling round that began before maintenance was on has ended
	var ids, cids []string
	for range 2 {
		id := putBlock(t, c.kubo1, randomData(t, 512))
		ps := c.addPin(t, token, pinBody{CID: id})
		assert.Equal(t, "queued", ps.Status)
		ids, cids = append(ids, ps.RequestID), append(cids, id)
	}
	deadline := time.Now().Add(time.Second)
	for time.Now().Before(deadline) {
		for i, id := range ids {
			require.Equal(t, "queued", c.getPin(t, token, id).Status, "placement is paused")
			require.False(t, isPinned(t, c.kc1, cids[i]))
		}
		time.Sleep(50 * time.Millisecond)
	}
	c.setMaintenance(t, false)
	for _, id := range ids {
		c.waitStatus(t, token, id, "pinned", 10*time.Second)
	}
	for _, id := range cids {
		assert.True(t, isPinned(t, c.kc1, id))
	}
}

// TestPlacementUnfetchableFails: a CID nobody has fails once the pin timeout passes, saying why.
func TestPlacementUnfetchableFails(t *testing.T) {
	const timeout = 2 * time.Second
	c := startCluster(t, clusterOptions{PinTimeout: timeout})
	_, token := c.org(t, "absent", pinsRW...)
	h, err := multihash.Sum(randomData(t, 64), multihash.SHA2_256, -1)
	require.NoError(t, err)
	absent := cid.NewCidV1(cid.Raw, h).String()

	start := time.Now()
	ps := c.addPin(t, token, pinBody{CID: absent, Name: "nobody-has-it"})
	ps = c.waitStatus(t, token, ps.RequestID, "failed", timeout+15*time.Second)
	assert.GreaterOrEqual(t, time.Since(start), timeout, "failed only after the pin timeout")
	assert.NotEmpty(t, ps.Info["status_details"])
	t.Logf("status_details: %s", ps.Info["status_details"])
	assert.False(t, isPinned(t, c.kc1, absent))
}

// TestPlacementUnpinsOnlyWhenUnneeded: two orgs pin the same CID; removing one request leaves it pinned, removing
// the other unpins it.
func TestPlacementUnpinsOnlyWhenUnneeded(t *testing.T) {
	c := startCluster(t, clusterOptions{})
	orgA, tokenA := c.org(t, "share-a", pinsRW...)
	_, tokenB := c.org(t, "share-b", pinsRW...)
	id := putBlock(t, c.kubo1, randomData(t, 2048))
	a := c.addPin(t, tokenA, pinBody{CID: id})
	b := c.addPin(t, tokenB, pinBody{CID: id})
	c.waitStatus(t, tokenA, a.RequestID, "pinned", 10*time.Second)
	c.waitStatus(t, tokenB, b.RequestID, "pinned", 10*time.Second)
	require.True(t, isPinned(t, c.kc1, id))

	c.removePin(t, tokenA, a.RequestID)
	// Wait until the scheduler released A's placement, then give the worker time to act on it.
	require.True(t, poll(func() bool {
		_, ok := c.placementLog(t, "node-1", orgA, a.RequestID).last().(events.PinUnplaced)
		return ok
	}, 10*time.Second, 10*time.Millisecond), "A's placement is released")
	deadline := time.Now().Add(time.Second)
	for time.Now().Before(deadline) {
		require.True(t, isPinned(t, c.kc1, id), "B's request still needs the CID")
		time.Sleep(20 * time.Millisecond)
	}
	assert.Equal(t, "pinned", c.getPin(t, tokenB, b.RequestID).Status)

	c.removePin(t, tokenB, b.RequestID)
	require.True(t, poll(func() bool { return !isPinned(t, c.kc1, id) }, 10*time.Second, 20*time.Millisecond),
		"unpinned once no live request needs it")
}

// TestPlacementReplaceKeepsSharedBlocks: replacing a pin by one whose DAG shares a block with it (a site's new
// version, as Kubo's MFS policy does) never leaves the shared block unpinned: the old placement is released only
// once the new one is pinned. A chain of replacements, each checked.
func TestPlacementReplaceKeepsSharedBlocks(t *testing.T) {
	const versions = 5
	c := startCluster(t, clusterOptions{})
	org, token := c.org(t, "replace", pinsRW...)
	// Files of two 1 KiB raw leaves each: the shared first leaf, and one of their own.
	shared := randomData(t, 1024)
	sharedCID := putBlock(t, c.kubo1, shared)
	dags, own := make([]string, versions), make([]string, versions)
	for i := range versions {
		leaf := randomData(t, 1024)
		dags[i] = addUnixFSFile(t, c.kubo1, slices.Concat(shared, leaf), 1024)
		own[i] = putBlock(t, c.kubo1, leaf)
	}
	ownPinned := func(i int) bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		ok, err := pinnedAnyhow(ctx, c.kubo1, own[i])
		require.NoError(t, err)
		return ok
	}

	ps := c.addPin(t, token, pinBody{CID: dags[0], Name: "site"})
	c.waitStatus(t, token, ps.RequestID, "pinned", 10*time.Second)
	require.True(t, isPinned(t, c.kc1, dags[0]))

	// From now to the end, the shared block must stay pinned (recursively or indirectly).
	ctx, stop := context.WithCancel(context.Background())
	var checks atomic.Int64
	var gaps sync.Map // time -> recursive pins then
	var firstErr atomic.Value
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			ok, err := pinnedAnyhow(cctx, c.kubo1, sharedCID)
			cancel()
			if ctx.Err() != nil {
				return
			}
			checks.Add(1)
			if err != nil {
				firstErr.CompareAndSwap(nil, err.Error())
			} else if !ok {
				rec, _ := kuboRPC(ctx, c.kubo1.APIURL(), "pin/ls", url.Values{"type": {"recursive"}}, nil)
				gaps.Store(time.Now().Format("15:04:05.000000"), string(rec))
			}
			time.Sleep(2 * time.Millisecond)
		}
	}()
	defer func() { stop(); <-done }()

	ids := []string{ps.RequestID}
	for i := 1; i < versions; i++ {
		prev := ids[i-1]
		next := c.replacePin(t, token, prev, pinBody{CID: dags[i], Name: "site"})
		require.NotEqual(t, prev, next.RequestID)
		ids = append(ids, next.RequestID)
		code, _ := c.call(t, http.MethodGet, "/pins/"+prev, token, nil)
		assert.Equal(t, http.StatusNotFound, code, "the replaced request is gone at once")
		c.waitStatus(t, token, next.RequestID, "pinned", 10*time.Second)
		require.True(t, poll(func() bool { return !ownPinned(i-1) && !isPinned(t, c.kc1, dags[i-1]) }, 10*time.Second, 10*time.Millisecond),
			"version %d is released once version %d is pinned", i-1, i)
		assert.True(t, isPinned(t, c.kc1, dags[i]))
		assert.True(t, ownPinned(i))

		// In the log: the old placement is released only after the new one was observed pinned.
		oldLog, newLog := c.placementLog(t, "node-1", org, prev), c.placementLog(t, "node-1", org, next.RequestID)
		var released, pinned uint64
		for _, r := range oldLog.records {
			if _, ok := r.Event.(events.PinUnplaced); ok {
				released = r.Seq
			}
		}
		for _, r := range newLog.records {
			if o, ok := r.Event.(events.PinStatusObserved); ok && o.Status == "pinned" && pinned == 0 {
				pinned = r.Seq
			}
		}
		if !assert.Greater(t, released, pinned, "version %d's placement released (seq %d) before version %d was pinned (seq %d)", i-1, released, i, pinned) {
			for _, r := range slices.Concat(oldLog.records, newLog.records) {
				t.Logf("  seq %d at %s: %T %+v", r.Seq, r.At.Format("15:04:05.000000"), r.Event, r.Event)
			}
		}
	}
	time.Sleep(50 * time.Millisecond) // a few more checks after the last release
	stop()
	<-done
	assert.Nil(t, firstErr.Load(), "pin/ls failed")
	assert.Greater(t, checks.Load(), int64(20))
	gaps.Range(func(at, rec any) bool {
		t.Errorf("the shared block was not pinned at %s; recursive pins then: %s", at, rec)
		return true
	})
}

// runDrainScenario: pins on node-1 (node-2 cordoned), then node-2 uncordoned and node-1 drained;
// every pin must end pinned on node-2 only, staying pinned throughout. With onBoth the blocks are also in
// node-2's repo (not pinned), so nothing has to be fetched from node-1.
func runDrainScenario(t *testing.T, onBoth bool) {
	const n = 6
	c := startCluster(t, clusterOptions{PinTimeout: 5 * time.Second})
	d2, kc2 := c.addNode(t, "node-2")
	peer2, addrs2 := nodeAddrs(t, kc2)
	c.operateNode(t, "node-2", domain.NodeCordon)
	_, token := c.org(t, "drain", pinsRW...)

	var ids, cids []string
	for range n {
		data := randomData(t, 4096)
		id := putBlock(t, c.kubo1, data)
		if onBoth {
			putBlock(t, d2, data)
		}
		ps := c.addPin(t, token, pinBody{CID: id})
		ids, cids = append(ids, ps.RequestID), append(cids, id)
	}
	for _, id := range ids {
		c.waitStatus(t, token, id, "pinned", 10*time.Second)
	}
	for _, id := range cids {
		require.True(t, isPinned(t, c.kc1, id))
		require.False(t, isPinned(t, kc2, id), "node-2 is cordoned")
	}
	c.operateNode(t, "node-2", domain.NodeUncordon)

	// Sample the statuses all along: every pin stays pinned.
	ctx, stop := context.WithCancel(context.Background())
	var samples atomic.Int64
	var bad sync.Map
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			for _, q := range []string{"status=queued,pinning,failed&limit=1", "status=pinned&limit=1"} {
				code, body, err := c.tryCall(http.MethodGet, "/pins?"+q, token, nil)
				if ctx.Err() != nil {
					return
				}
				var res struct{ Count int64 }
				if err != nil || code != http.StatusOK || json.Unmarshal(body, &res) != nil {
					bad.Store(fmt.Sprintf("%s: %d %v %s", q, code, err, body), true)
					continue
				}
				if want := map[bool]int64{true: 0, false: n}[strings.HasPrefix(q, "status=queued")]; res.Count != want {
					_, body, _ := c.tryCall(http.MethodGet, "/pins?status=queued,pinning,failed", token, nil)
					bad.Store(fmt.Sprintf("%s: count %d, want %d; not pinned: %s; placements:%s", q, res.Count, want, body, placementRows(c)), true)
				}
			}
			samples.Add(1)
			time.Sleep(10 * time.Millisecond)
		}
	}()
	defer func() { stop(); <-done }()

	start := time.Now()
	c.operateNode(t, "node-1", domain.NodeDrain)
	if !poll(func() bool {
		for _, id := range cids {
			if !isPinned(t, kc2, id) || isPinned(t, c.kc1, id) {
				return false
			}
		}
		return true
	}, 15*time.Second, 20*time.Millisecond) {
		t.Fatalf("not every pin moved to node-2 and was unpinned from node-1; placements:%s", placementRows(c))
	}
	t.Logf("drained in %s", time.Since(start).Round(time.Millisecond))
	time.Sleep(100 * time.Millisecond) // a few more samples after the move
	for _, id := range ids {
		ps := c.getPin(t, token, id)
		if !assert.Equal(t, "pinned", ps.Status, "pin %s", id) {
			t.Logf("placements:%s", placementRows(c))
		}
		assert.ElementsMatch(t, addrs2, ps.Delegates, "delegates follow the placement to node-2")
		for _, d := range ps.Delegates {
			assert.True(t, strings.HasSuffix(d, "/p2p/"+peer2), d)
		}
	}
	stop()
	<-done
	assert.Greater(t, samples.Load(), int64(3))
	bad.Range(func(k, _ any) bool {
		t.Errorf("while draining: %s", k)
		return true
	})
}

// placementRows lists the placements read model (for failure messages).
func placementRows(c *cluster) string {
	var b strings.Builder
	rows, err := c.owner.Query(context.Background(), `SELECT request_id::text, node_id, status, coalesce(info::text, ''),
		coalesce(moved_from, ''), pin_gone FROM placements ORDER BY request_id, node_id`)
	if err != nil {
		return err.Error()
	}
	defer rows.Close()
	for rows.Next() {
		var id, node, info, from string
		var status int16
		var gone bool
		if err := rows.Scan(&id, &node, &status, &info, &from, &gone); err != nil {
			return err.Error()
		}
		fmt.Fprintf(&b, "\n  %s on %s: status %d, info %s, moved from %q, gone %v", id, node, status, info, from, gone)
	}
	return b.String()
}

// TestPlacementDrainMovesPins: draining node-1 moves every pin to node-2 (which holds the blocks, unpinned),
// releases node-1's pins, and the pins stay pinned throughout.
func TestPlacementDrainMovesPins(t *testing.T) { runDrainScenario(t, true) }

// TestPlacementDrainFetchesFromDrainedNode: the same, but only node-1 holds the content (the usual case: the
// client that uploaded it is gone). Node-2 can only get it from node-1.
func TestPlacementDrainFetchesFromDrainedNode(t *testing.T) { runDrainScenario(t, false) }

// killingPinner is the real Kubo client, which stops the worker (cancels its context) when the worker starts its
// killAt-th pin.
type killingPinner struct {
	*kubo.Client
	calls  atomic.Int64
	killAt int64
	kill   func()
}

func (p *killingPinner) Pin(ctx context.Context, cid, name string) (uint64, error) {
	if p.calls.Add(1) == p.killAt {
		p.kill()
	}
	return p.Client.Pin(ctx, cid, name)
}

// TestPlacementWorkerRestartMidBatch: a node's worker stopped while it works through many pins, then restarted
// (same node id: its durable consumer continues), pins everything, each placement reported pinned exactly once.
func TestPlacementWorkerRestartMidBatch(t *testing.T) {
	const (
		n    = 200
		node = "node-w"
	)
	c := startCluster(t, clusterOptions{NoNode: true})
	d := kubotest.Daemon(t)
	kc, _ := newKuboClient(t, d)
	ctx := context.Background()
	c.customNode(t, node, kc)
	cfg := projections.WorkerConfig{NodeID: node, PinTimeout: 20 * time.Second, Unavailable: kubo.IsUnavailable, Logger: testLogger()}

	org, token := c.org(t, "batch", pinsRW...)
	cids := make([]string, n)
	for i := range cids {
		cids[i] = putBlock(t, d, randomData(t, 256))
	}
	ids := make([]string, n)
	var wg sync.WaitGroup
	var postErrs atomic.Int64
	for w := range 8 {
		wg.Go(func() {
			for i := w; i < n; i += 8 {
				code, body, err := c.tryCall(http.MethodPost, "/pins", token, pinBody{CID: cids[i]})
				var ps pinStatusJSON
				if err != nil || code != http.StatusAccepted || json.Unmarshal(body, &ps) != nil {
					postErrs.Add(1)
					continue
				}
				ids[i] = ps.RequestID
			}
		})
	}
	wg.Wait()
	require.Zero(t, postErrs.Load())

	// The first worker finds 200 placements waiting, and is stopped when it starts its 60th pin.
	ctx1, kill := context.WithCancel(ctx)
	defer kill()
	first := projections.NewWorker(c.elog, &killingPinner{Client: kc, killAt: 60, kill: kill}, cfg)
	firstDone := make(chan error, 1)
	go func() { firstDone <- first.Run(ctx1) }()
	select {
	case err := <-firstDone:
		require.NoError(t, err)
	case <-time.After(30 * time.Second):
		t.Fatal("the first worker was not stopped mid-batch")
	}
	pinnedAtStop := c.count(t, token, "status=pinned&limit=1")
	t.Logf("the first worker stopped with %d of %d pins reported pinned", pinnedAtStop, n)
	require.Less(t, pinnedAtStop, int64(n), "stopped mid-batch")

	// Restart: a new worker for the same node.
	runWorker(t, projections.NewWorker(c.elog, kc, cfg))
	start := time.Now()
	if !poll(func() bool { return c.count(t, token, "status=pinned&limit=1") == n }, 15*time.Second, 50*time.Millisecond) {
		var stuck []string
		for i, id := range ids {
			if st := c.getPin(t, token, id).Status; st != "pinned" {
				stuck = append(stuck, fmt.Sprintf("\n  %s (%s, %s):", id, st, cids[i]))
				for _, r := range c.placementLog(t, node, org, id).records {
					stuck = append(stuck, fmt.Sprintf("\n    seq %d at %s: %T %+v", r.Seq, r.At.Format("15:04:05.000"), r.Event, r.Event))
				}
			}
		}
		t.Fatalf("pins not pinned within 15 s of the restart (a delivery the stopped worker had fetched but not "+
			"started waits for the consumer's AckWait, PinTimeout + 1 min):%s", strings.Join(stuck, ""))
	}
	t.Logf("all pinned %s after the restart", time.Since(start).Round(time.Millisecond))

	pins, err := kc.ListPinned(ctx)
	require.NoError(t, err)
	for i, id := range ids {
		key, err := kubo.Key(cids[i])
		require.NoError(t, err)
		assert.Contains(t, pins, key, "pin %s is pinned in Kubo", id)
		pl := c.placementLog(t, node, org, id)
		require.Len(t, pl.placed, 1, "pin %s placed once", id)
		assert.Equal(t, map[uint64]map[string]int{pl.placed[0]: {"pinned": 1}}, pl.final,
			"pin %s: exactly one final observation, pinned, of its placement", id)
		o, ok := pl.last().(events.PinStatusObserved)
		assert.True(t, ok && o.Status == "pinned", "pin %s: nothing follows the pinned observation, last is %+v", id, pl.last())
	}
}

// TestPlacementStaleTermCannotPlace: once a scheduler term has started, a placement decided in an older term is
// ignored by the read model and by the node's worker; one of the current term is honoured.
func TestPlacementStaleTermCannotPlace(t *testing.T) {
	const stale, current = 50, 100
	c := startCluster(t, clusterOptions{NoScheduler: true})
	org, token := c.org(t, "fence", pinsRW...)
	cid1 := putBlock(t, c.kubo1, randomData(t, 1024))
	cid2 := putBlock(t, c.kubo1, randomData(t, 1024))
	p1 := c.addPin(t, token, pinBody{CID: cid1})
	p2 := c.addPin(t, token, pinBody{CID: cid2})

	c.appendEvent(t, events.SchedTerm, events.SchedTermStarted{Term: current, SchedulerID: "new-leader"})
	c.appendEvent(t, events.PlaceSubject("node-1", org, p1.RequestID),
		events.PinPlaced{OrgID: org, RequestID: p1.RequestID, NodeID: "node-1", CID: cid1, Term: stale})
	seq := c.appendEvent(t, events.PlaceSubject("node-1", org, p2.RequestID),
		events.PinPlaced{OrgID: org, RequestID: p2.RequestID, NodeID: "node-1", CID: cid2, Term: current})
	c.waitProjected(t, seq)

	c.waitStatus(t, token, p2.RequestID, "pinned", 10*time.Second)
	assert.True(t, isPinned(t, c.kc1, cid2), "the current term's placement is honoured")

	// A stale unplace of p2 is ignored too.
	seq = c.appendEvent(t, events.PlaceSubject("node-1", org, p2.RequestID),
		events.PinUnplaced{OrgID: org, RequestID: p2.RequestID, NodeID: "node-1", CID: cid2, Reason: "removed", Term: stale})
	c.waitProjected(t, seq)

	deadline := time.Now().Add(time.Second)
	for time.Now().Before(deadline) {
		ps := c.getPin(t, token, p1.RequestID)
		require.Equal(t, "queued", ps.Status, "the stale placement is ignored by the read model")
		require.False(t, isPinned(t, c.kc1, cid1), "the stale placement is ignored by the worker")
		require.Equal(t, "pinned", c.getPin(t, token, p2.RequestID).Status, "the stale unplace is ignored by the read model")
		require.True(t, isPinned(t, c.kc1, cid2), "the stale unplace is ignored by the worker")
		time.Sleep(50 * time.Millisecond)
	}
	var placements int
	require.NoError(t, c.owner.QueryRow(context.Background(),
		"SELECT count(*) FROM placements WHERE request_id = $1", p1.RequestID).Scan(&placements))
	assert.Zero(t, placements, "no placement row for the stale decision")
	for _, r := range c.placementLog(t, "node-1", org, p1.RequestID).records {
		_, observed := r.Event.(events.PinStatusObserved)
		assert.False(t, observed, "the worker reports nothing about a stale placement")
	}
}

// delayedPinningReports is the real event log, on which the worker's "pinning" observations take delay to land (a
// slow append: network, fsync stall, a descheduled goroutine).
type delayedPinningReports struct {
	*natsjs.EventLog
	delay   time.Duration
	delayed *atomic.Int64
}

func (l delayedPinningReports) hold(msgs []domain.Message) {
	for _, m := range msgs {
		if e, err := events.Decode(m.Envelope.Type, m.Envelope.Version, m.Envelope.Data); err == nil {
			if o, ok := e.(events.PinStatusObserved); ok && o.Status == "pinning" {
				l.delayed.Add(1)
				time.Sleep(l.delay)
				return
			}
		}
	}
}

func (l delayedPinningReports) Append(ctx context.Context, msgs ...domain.Message) ([]uint64, error) {
	l.hold(msgs)
	return l.EventLog.Append(ctx, msgs...)
}

func (l delayedPinningReports) AppendBulk(ctx context.Context, msgs []domain.Message) ([]uint64, error) {
	l.hold(msgs)
	return l.EventLog.AppendBulk(ctx, msgs)
}

// slowPinner is the real Kubo client whose pins take at least delay (a fetch from the network).
type slowPinner struct {
	*kubo.Client
	delay time.Duration
}

func (p slowPinner) Pin(ctx context.Context, cid, name string) (uint64, error) {
	time.Sleep(p.delay)
	return p.Client.Pin(ctx, cid, name)
}

// TestPlacementPinningReportCannotOverrideFinal: a pin that takes longer than the worker's PinningDelay gets a
// "pinning" report from a timer; when that report lands after the final "pinned" one, the pin must still end
// pinned, and the log must not end with a stale "pinning" for the placement.
func TestPlacementPinningReportCannotOverrideFinal(t *testing.T) {
	const node = "node-p"
	c := startCluster(t, clusterOptions{NoNode: true})
	d := kubotest.Daemon(t)
	kc, _ := newKuboClient(t, d)
	c.customNode(t, node, kc)
	var delayed atomic.Int64
	runWorker(t, projections.NewWorker(delayedPinningReports{c.elog, 300 * time.Millisecond, &delayed}, slowPinner{kc, 250 * time.Millisecond},
		projections.WorkerConfig{NodeID: node, PinTimeout: 20 * time.Second, PinningDelay: 200 * time.Millisecond, Unavailable: kubo.IsUnavailable}))
	org, token := c.org(t, "slow", pinsRW...)
	id := putBlock(t, d, randomData(t, 1024))
	ps := c.addPin(t, token, pinBody{CID: id})
	c.waitStatus(t, token, ps.RequestID, "pinned", 10*time.Second)
	require.True(t, isPinned(t, kc, id))
	time.Sleep(time.Second) // the delayed "pinning" report has landed by now
	require.Equal(t, int64(1), delayed.Load(), "the pin outlasted PinningDelay: one pinning report")
	pl := c.placementLog(t, node, org, ps.RequestID)
	var seen []string
	for _, r := range pl.records {
		if o, ok := r.Event.(events.PinStatusObserved); ok {
			seen = append(seen, o.Status)
		}
	}
	assert.Equal(t, "pinned", c.getPin(t, token, ps.RequestID).Status, "observations in log order: %v", seen)
	o, ok := pl.last().(events.PinStatusObserved)
	assert.True(t, ok && o.Status == "pinned", "the placement's last observation is the final one; observations in log order: %v", seen)
}
