package natsjs_test

import (
	"context"
	"fmt"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/anchorage-pin/anchorage/adapters/natsjs"
	"github.com/anchorage-pin/anchorage/adapters/natsjs/natstest"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
)

func openPresence(t *testing.T, ttl time.Duration) *natsjs.Presence {
	t.Helper()
	s := natstest.Server(t)
	nc, err := s.Connect("presence")
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	p, err := natsjs.OpenPresence(context.Background(), js, "NODES", ttl, 1)
	require.NoError(t, err)
	p.SetLogger(slog.New(slog.DiscardHandler))
	return p
}

func live(t *testing.T, p *natsjs.Presence) map[string]natsjs.NodeStatus {
	t.Helper()
	m, err := p.Live(context.Background())
	require.NoError(t, err)
	return m
}

func TestPresenceBeatShowsInLive(t *testing.T) {
	t.Parallel()
	p := openPresence(t, 5*time.Second)
	ctx := context.Background()
	require.Empty(t, live(t, p))

	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	st := natsjs.NodeStatus{NodeID: "node-1", FreeBytes: 1 << 40, UsedBytes: 1 << 30, Pins: 42, At: at, Version: "v1.2.3"}
	require.NoError(t, p.Beat(ctx, st))
	require.Equal(t, map[string]natsjs.NodeStatus{"node-1": st}, live(t, p))

	st.Pins, st.FreeBytes = 43, 1<<39
	st.At = time.Time{}
	require.NoError(t, p.Beat(ctx, st))
	got := live(t, p)["node-1"]
	require.Equal(t, int64(43), got.Pins, "latest value wins")
	require.Equal(t, uint64(1<<39), got.FreeBytes)
	require.WithinDuration(t, time.Now(), got.At, 5*time.Second, "a zero At is stamped")

	require.Error(t, p.Beat(ctx, natsjs.NodeStatus{}), "node id required")
}

func TestPresenceExpiresWithoutBeats(t *testing.T) {
	t.Parallel()
	const ttl = time.Second
	p := openPresence(t, ttl)
	ctx := context.Background()
	require.NoError(t, p.Beat(ctx, natsjs.NodeStatus{NodeID: "node-1"}))
	last := time.Now()
	require.Contains(t, live(t, p), "node-1")
	for {
		if _, ok := live(t, p)["node-1"]; !ok {
			break
		}
		require.Less(t, time.Since(last), ttl+time.Second, "entry must expire about one ttl after the last beat")
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("node gone from Live %s after its last beat (ttl %s)", time.Since(last), ttl)
	require.GreaterOrEqual(t, time.Since(last), ttl-50*time.Millisecond)
}

func TestPresenceGoneRemovesAtOnce(t *testing.T) {
	t.Parallel()
	p := openPresence(t, time.Minute)
	ctx := context.Background()
	require.NoError(t, p.Beat(ctx, natsjs.NodeStatus{NodeID: "node-1"}))
	require.NoError(t, p.Beat(ctx, natsjs.NodeStatus{NodeID: "node-2"}))
	require.NoError(t, p.Gone(ctx, "node-1"))
	got := live(t, p)
	require.Len(t, got, 1)
	require.Contains(t, got, "node-2")

	// A node that comes back is live again.
	require.NoError(t, p.Beat(ctx, natsjs.NodeStatus{NodeID: "node-1"}))
	require.Len(t, live(t, p), 2)
}

func TestPresenceManyNodesAndKeep(t *testing.T) {
	t.Parallel()
	const ttl = time.Second
	p := openPresence(t, ttl)
	ctx := context.Background()
	const n = 200
	for i := range n {
		require.NoError(t, p.Beat(ctx, natsjs.NodeStatus{NodeID: fmt.Sprintf("node-%03d", i), Pins: int64(i)}))
	}
	got := live(t, p)
	require.Len(t, got, n)
	for i := range n {
		require.Equal(t, int64(i), got[fmt.Sprintf("node-%03d", i)].Pins)
	}

	// One node keeps beating; the rest stop and expire.
	kctx, stop := context.WithCancel(ctx)
	var beats atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		p.Keep(kctx, ttl/4, func() natsjs.NodeStatus {
			return natsjs.NodeStatus{NodeID: "node-007", Pins: 1000 + beats.Add(1)}
		})
	}()
	time.Sleep(3 * ttl)
	got = live(t, p)
	require.Len(t, got, 1, "only the node that keeps beating is live")
	require.Greater(t, got["node-007"].Pins, int64(1005))
	stop()
	<-done

	require.NoError(t, p.Gone(ctx, "node-007"))
	require.Empty(t, live(t, p))
}

// TestPresenceLiveStartsOverWhenTheListingStalls: a watcher that never completes its listing (its pending entry
// expired before delivery) makes Live list again after the stall, not wait forever; one that never completes
// makes it fail after its attempts.
func TestPresenceLiveStartsOverWhenTheListingStalls(t *testing.T) {
	p := openPresence(t, time.Minute)
	ctx := context.Background()
	require.NoError(t, p.Beat(ctx, natsjs.NodeStatus{NodeID: "node-1"}))

	restore := natsjs.StallWatches(p, 2, 100*time.Millisecond)
	start := time.Now()
	got, err := p.Live(ctx)
	require.NoError(t, err)
	require.Contains(t, got, "node-1")
	require.GreaterOrEqual(t, time.Since(start), 200*time.Millisecond, "two stalled listings, then a complete one")
	restore()

	restore = natsjs.StallWatches(p, 100, 50*time.Millisecond)
	defer restore()
	_, err = p.Live(ctx)
	require.ErrorContains(t, err, "stalled 3 times")
}
