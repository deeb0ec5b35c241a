package natsjs

// These tests are in package natsjs (not natsjs_test) to reach the Lease's renewer: they stop it to simulate a
// crashed holder and freeze it to simulate a paused process. natstest imports natsjs, so they start servers
// with StartServer directly, as natstest.Server does.

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
)

const leaseBucket = "LEADER"

func leaseServer(t *testing.T) *Server {
	t.Helper()
	s, err := StartServer(ServerConfig{StoreDir: t.TempDir(), Sync: SyncGroup})
	require.NoError(t, err)
	t.Cleanup(func() { s.Shutdown(context.Background()) })
	return s
}

// leaseClient is one "process": its own connection and its own handle on the bucket.
func leaseClient(t *testing.T, s *Server, name string) (*Leases, *nats.Conn) {
	t.Helper()
	nc, err := s.Connect(name)
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	ls, err := OpenLeases(context.Background(), js, leaseBucket, 1)
	require.NoError(t, err)
	ls.SetLogger(slog.New(slog.NewTextHandler(tWriter{t}, nil)))
	return ls, nc
}

// tWriter sends the lease's logs to the test log.
type tWriter struct{ t *testing.T }

func (w tWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(b)))
	return len(b), nil
}

func campaign(t *testing.T, ls *Leases, holder string, ttl time.Duration) *Lease {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	l, err := ls.Campaign(ctx, "scheduler", holder, ttl)
	require.NoError(t, err)
	t.Cleanup(func() { crash(l) })
	return l
}

// campaignAsync campaigns in the background and delivers the lease with the time it was acquired.
type acquired struct {
	l   *Lease
	at  time.Time
	err error
}

func campaignAsync(ctx context.Context, ls *Leases, holder string, ttl time.Duration) <-chan acquired {
	ch := make(chan acquired, 1)
	go func() {
		l, err := ls.Campaign(ctx, "scheduler", holder, ttl)
		ch <- acquired{l: l, at: time.Now(), err: err}
	}()
	return ch
}

// crash stops the renewer without releasing, as if the holder's process died.
func crash(l *Lease) {
	l.cancel()
	<-l.done
}

func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

func holderOf(t *testing.T, ls *Leases) (string, uint64) {
	t.Helper()
	h, rev, err := ls.Holder(context.Background(), "scheduler")
	require.NoError(t, err)
	return h, rev
}

func TestLeaseAcquireTermRelease(t *testing.T) {
	t.Parallel()
	s := leaseServer(t)
	ls, _ := leaseClient(t, s, "a")

	_, err := ls.Campaign(context.Background(), "scheduler", "a", 500*time.Millisecond)
	require.Error(t, err, "TTLs under 1s are refused")

	start := time.Now()
	l := campaign(t, ls, "a", 2*time.Second)
	t.Logf("uncontended acquisition took %s", time.Since(start))
	require.Positive(t, l.Term())
	require.Equal(t, 2*time.Second, l.TTL())
	require.NoError(t, l.Err())
	require.False(t, isClosed(l.Lost()))
	require.True(t, time.Now().Before(l.Deadline()))
	h, rev := holderOf(t, ls)
	require.Equal(t, "a", h)
	require.Equal(t, l.Term(), rev)

	require.NoError(t, l.Release(context.Background()))
	require.True(t, isClosed(l.Lost()))
	require.ErrorIs(t, l.Err(), ErrLeaseReleased)
	require.ErrorIs(t, l.Err(), ErrLeaseLost)
	require.True(t, l.Deadline().IsZero())
	h, _ = holderOf(t, ls)
	require.Empty(t, h)
}

func TestLeaseSecondCandidateWaitsForRelease(t *testing.T) {
	t.Parallel()
	s := leaseServer(t)
	lsA, _ := leaseClient(t, s, "a")
	lsB, _ := leaseClient(t, s, "b")
	a := campaign(t, lsA, "a", 2*time.Second)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	bCh := campaignAsync(ctx, lsB, "b", 2*time.Second)
	select {
	case got := <-bCh:
		t.Fatalf("b acquired while a holds the lease: %+v", got)
	case <-time.After(1500 * time.Millisecond): // a renews meanwhile
	}
	_, aRev := holderOf(t, lsA)
	require.Greater(t, aRev, a.Term(), "a renewed")

	released := time.Now()
	require.NoError(t, a.Release(context.Background()))
	got := <-bCh
	require.NoError(t, got.err)
	t.Cleanup(func() { crash(got.l) })
	t.Logf("b acquired %s after a released (watch)", got.at.Sub(released))
	require.Less(t, got.at.Sub(released), 500*time.Millisecond, "the watcher, not the poll, woke b")
	require.Greater(t, got.l.Term(), aRev, "terms strictly increase across holders")
	h, _ := holderOf(t, lsB)
	require.Equal(t, "b", h)
}

func TestLeaseCampaignReturnsWhenContextEnds(t *testing.T) {
	t.Parallel()
	s := leaseServer(t)
	lsA, _ := leaseClient(t, s, "a")
	lsB, _ := leaseClient(t, s, "b")
	campaign(t, lsA, "a", 1*time.Second)

	ctx, cancel := context.WithTimeout(context.Background(), 700*time.Millisecond)
	defer cancel()
	_, err := lsB.Campaign(ctx, "scheduler", "b", time.Second)
	require.ErrorIs(t, err, context.DeadlineExceeded)
}

// Renewing keeps the key alive well past its TTL, and each renewal carries the TTL: once renewals stop, the key
// expires about one TTL after the last one. (kv.Update would drop the TTL and keep it forever.)
func TestLeaseRenewalKeepsKeyAndItsTTL(t *testing.T) {
	t.Parallel()
	s := leaseServer(t)
	ls, _ := leaseClient(t, s, "a")
	const ttl = time.Second
	l := campaign(t, ls, "a", ttl)

	end := time.Now().Add(4 * ttl)
	var renewals uint64
	prev := l.Term()
	for time.Now().Before(end) {
		time.Sleep(100 * time.Millisecond)
		h, rev := holderOf(t, ls)
		require.Equal(t, "a", h, "key alive after %s", time.Until(end))
		if rev != prev {
			renewals++
			prev = rev
		}
		require.False(t, isClosed(l.Lost()))
	}
	require.GreaterOrEqual(t, renewals, uint64(8), "renewed every ttl/3")

	crash(l)
	l.mu.Lock()
	lastRenewal := l.deadline.Add(-ttl + l.margin) // when the last acknowledged renewal was sent
	l.mu.Unlock()
	for {
		h, _ := holderOf(t, ls)
		if h == "" {
			break
		}
		require.Less(t, time.Since(lastRenewal), ttl+1500*time.Millisecond, "key must expire about one TTL after the last renewal")
		time.Sleep(20 * time.Millisecond)
	}
	took := time.Since(lastRenewal)
	t.Logf("%d renewals over %s; key expired %s after the last renewal (ttl %s)", renewals, 4*ttl, took, ttl)
	require.GreaterOrEqual(t, took, ttl, "not before its TTL")

	e, err := ls.kv.Get(context.Background(), "scheduler")
	require.ErrorIs(t, err, jetstream.ErrKeyNotFound)
	require.Nil(t, e)
}

// A holder that dies without releasing is replaced about one TTL after its last renewal.
func TestLeaseCrashedHolderIsReplaced(t *testing.T) {
	t.Parallel()
	s := leaseServer(t)
	lsA, _ := leaseClient(t, s, "a")
	lsB, _ := leaseClient(t, s, "b")
	const ttl = 2 * time.Second
	a := campaign(t, lsA, "a", ttl)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	bCh := campaignAsync(ctx, lsB, "b", ttl)
	time.Sleep(time.Second)
	crash(a)
	crashed := time.Now()
	a.mu.Lock()
	lastRenewal, aRev := a.deadline.Add(-ttl+a.margin), a.rev
	a.mu.Unlock()

	got := <-bCh
	require.NoError(t, got.err)
	t.Cleanup(func() { crash(got.l) })
	t.Logf("b acquired %s after a crashed, %s after a's last renewal (ttl %s)",
		got.at.Sub(crashed), got.at.Sub(lastRenewal), ttl)
	require.GreaterOrEqual(t, got.at.Sub(lastRenewal), ttl)
	require.Less(t, got.at.Sub(lastRenewal), ttl+1500*time.Millisecond)
	require.Greater(t, got.l.Term(), aRev)
}

// A holder frozen for longer than its TTL (GC pause, SIGSTOP) notices on waking that it lost the lease; its
// renewal is refused because another holder took the key; its Release deletes nothing.
func TestLeasePausedHolderLosesAndCannotRelease(t *testing.T) {
	t.Parallel()
	s := leaseServer(t)
	lsA, _ := leaseClient(t, s, "a")
	lsB, _ := leaseClient(t, s, "b")
	const ttl = time.Second
	a := campaign(t, lsA, "a", ttl)

	a.frozen.Lock()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	got := <-campaignAsync(ctx, lsB, "b", 2*time.Second)
	require.NoError(t, got.err)
	t.Cleanup(func() { crash(got.l) })
	require.False(t, isClosed(a.Lost()), "a is frozen: it cannot know yet")

	woke := time.Now()
	a.frozen.Unlock()
	select {
	case <-a.Lost():
		t.Logf("paused holder reported loss %s after waking (%v)", time.Since(woke), a.Err())
	case <-time.After(time.Second):
		t.Fatal("a did not notice it lost the lease")
	}
	require.ErrorIs(t, a.Err(), ErrLeaseLost)

	// Its renewal is refused by the expected-sequence check (what a paused holder whose local deadline had
	// not passed yet would hit).
	err := a.renew(context.Background(), time.Now().Add(5*time.Second))
	require.ErrorIs(t, err, ErrLeaseTaken)

	_, bRev := holderOf(t, lsB)
	require.NoError(t, a.Release(context.Background()), "release by a non-holder is a no-op")
	h, rev := holderOf(t, lsB)
	require.Equal(t, "b", h)
	require.Equal(t, bRev, rev)
	require.False(t, isClosed(got.l.Lost()))
}

// When the key changes under a running holder (deleted, then created by another), its next renewal fails with
// a revision mismatch and Lost closes within about ttl/3.
func TestLeaseRenewalMismatchClosesLost(t *testing.T) {
	t.Parallel()
	s := leaseServer(t)
	lsA, _ := leaseClient(t, s, "a")
	lsB, _ := leaseClient(t, s, "b")
	const ttl = 3 * time.Second
	a := campaign(t, lsA, "a", ttl)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	bCh := campaignAsync(ctx, lsB, "b", ttl)
	time.Sleep(100 * time.Millisecond)
	taken := time.Now()
	require.NoError(t, lsB.kv.Delete(ctx, "scheduler")) // an operator removes the key; b takes it at once
	got := <-bCh
	require.NoError(t, got.err)
	t.Cleanup(func() { crash(got.l) })

	select {
	case <-a.Lost():
		t.Logf("a lost the lease %s after the key was taken: %v", time.Since(taken), a.Err())
	case <-time.After(ttl):
		t.Fatal("a did not notice the key changed")
	}
	require.ErrorIs(t, a.Err(), ErrLeaseTaken)
	require.Less(t, time.Since(taken), ttl/3+500*time.Millisecond)
	require.Greater(t, got.l.Term(), a.Term())
	h, _ := holderOf(t, lsB)
	require.Equal(t, "b", h)
}

// A holder cut off from the server considers the lease lost at its local deadline (last acknowledged renewal
// + ttl - margin), before the server could let anyone else take it.
func TestLeaseLostAtLocalDeadlineWhenServerUnreachable(t *testing.T) {
	t.Parallel()
	s := leaseServer(t)
	ls, _ := leaseClient(t, s, "a")
	const ttl = 2 * time.Second
	l := campaign(t, ls, "a", ttl)
	time.Sleep(300 * time.Millisecond)

	s.Shutdown(context.Background())
	down := time.Now()
	l.mu.Lock()
	lastRenewal := l.deadline.Add(-ttl + l.margin)
	l.mu.Unlock()
	select {
	case <-l.Lost():
	case <-time.After(ttl + time.Second):
		t.Fatal("lease not lost at its local deadline")
	}
	t.Logf("lost %s after the server went down, %s after the last acknowledged renewal (ttl %s, margin %s): %v",
		time.Since(down), time.Since(lastRenewal), ttl, l.margin, l.Err())
	require.ErrorIs(t, l.Err(), ErrLeaseExpired)
	require.Less(t, time.Since(lastRenewal), ttl, "lost before the server-side expiry")
}

func TestLeaseErrorsWrapLost(t *testing.T) {
	for _, err := range []error{ErrLeaseTaken, ErrLeaseExpired, ErrLeaseReleased} {
		require.True(t, errors.Is(err, ErrLeaseLost), err)
	}
}
