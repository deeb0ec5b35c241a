package projections

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/anchorage-pin/anchorage/domain"
	"github.com/anchorage-pin/anchorage/events"
)

var tNow = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func mint(org, id string, exp time.Time) events.TokenMinted {
	return events.TokenMinted{OrgID: org, TokenID: id, Subject: "s", Scopes: []string{"pins:read"}, KeyID: "k1",
		IssuedAt: tNow.Add(-time.Minute), ExpiresAt: exp}
}

func revoke(org, id string) events.TokenRevoked { return events.TokenRevoked{OrgID: org, TokenID: id} }

func rec(seq uint64, e events.Event) events.Record { return events.Record{Seq: seq, Event: e} }

// newTestRegistry has a fixed clock and no head, so Lookup never waits.
func newTestRegistry(head func(context.Context) (uint64, error)) *TokenRegistry {
	r := NewTokenRegistry(head)
	r.now = func() time.Time { return tNow }
	return r
}

func TestTokenRegistryFold(t *testing.T) {
	exp := tNow.Add(time.Hour)
	undecoded := func(seq uint64, e events.Event) events.Record {
		env, err := events.New("id", tNow, "admin:root", "", e)
		require.NoError(t, err)
		return events.Record{Seq: seq, Subject: "tokens.x", Envelope: env}
	}
	tests := []struct {
		name        string
		records     []events.Record
		org, id     string
		want        TokenState
		wantApplied uint64
	}{
		{"empty", nil, "acme", "t1", TokenState{}, 0},
		{"minted", []events.Record{rec(1, mint("acme", "t1", exp))}, "acme", "t1",
			TokenState{Known: true, OrgID: "acme", ExpiresAt: exp}, 1},
		{"pointer payload", []events.Record{rec(1, ptr(mint("acme", "t1", exp)))}, "acme", "t1",
			TokenState{Known: true, OrgID: "acme", ExpiresAt: exp}, 1},
		{"undecoded record", []events.Record{undecoded(4, mint("acme", "t1", exp)), undecoded(5, revoke("acme", "t1"))}, "acme", "t1",
			TokenState{Known: true, Revoked: true, OrgID: "acme", ExpiresAt: exp}, 5},
		{"other token", []events.Record{rec(1, mint("acme", "t1", exp))}, "acme", "t2", TokenState{}, 1},
		{"revoked", []events.Record{rec(1, mint("acme", "t1", exp)), rec(2, revoke("acme", "t1"))}, "acme", "t1",
			TokenState{Known: true, Revoked: true, OrgID: "acme", ExpiresAt: exp}, 2},
		{"revocation of another org's token of the same id", []events.Record{
			rec(1, mint("acme", "t1", exp)), rec(2, mint("other", "t1", exp)), rec(3, revoke("other", "t1")),
		}, "acme", "t1", TokenState{Known: true, OrgID: "acme", ExpiresAt: exp}, 3},
		{"revoke of an unknown token is a no-op", []events.Record{rec(1, revoke("acme", "t1"))}, "acme", "t1", TokenState{}, 1},
		{"redelivered mint does not un-revoke", []events.Record{
			rec(1, mint("acme", "t1", exp)), rec(2, revoke("acme", "t1")), rec(1, mint("acme", "t1", exp)),
		}, "acme", "t1", TokenState{Known: true, Revoked: true, OrgID: "acme", ExpiresAt: exp}, 2},
		{"a later mint does not un-revoke", []events.Record{
			rec(1, mint("acme", "t1", exp)), rec(2, revoke("acme", "t1")), rec(3, mint("acme", "t1", exp.Add(time.Hour))),
		}, "acme", "t1", TokenState{Known: true, Revoked: true, OrgID: "acme", ExpiresAt: exp.Add(time.Hour)}, 3},
		{"stale record ignored", []events.Record{
			rec(5, mint("acme", "t1", exp)), rec(3, revoke("acme", "t1")),
		}, "acme", "t1", TokenState{Known: true, OrgID: "acme", ExpiresAt: exp}, 5},
		{"seq 0 ignored", []events.Record{rec(0, mint("acme", "t1", exp))}, "acme", "t1", TokenState{}, 0},
		{"other events advance applied", []events.Record{
			rec(1, mint("acme", "t1", exp)), rec(7, events.TokenRevoked{}), {Seq: 9},
		}, "acme", "t1", TokenState{Known: true, OrgID: "acme", ExpiresAt: exp}, 9},
		{"org mismatch reports the token's org", []events.Record{rec(1, mint("acme", "t1", exp))}, "evil", "t1",
			TokenState{Known: true, OrgID: "acme", ExpiresAt: exp}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newTestRegistry(nil)
			for _, rc := range tt.records {
				r.Apply(rc)
			}
			got, err := r.Lookup(context.Background(), tt.org, tt.id)
			require.NoError(t, err)
			assert.Equal(t, tt.want, got)
			assert.Equal(t, tt.wantApplied, r.Applied())
		})
	}
}

func ptr[T any](v T) *T { return &v }

func TestTokenRegistryPrunesExpired(t *testing.T) {
	r := newTestRegistry(nil)
	clock := tNow
	r.now = func() time.Time { return clock }
	r.Apply(rec(1, events.OrgCreated{}))                            // the first Apply sweeps
	r.Apply(rec(2, mint("acme", "old", tNow.Add(-2*time.Hour))))    // expired beyond the grace
	r.Apply(rec(3, mint("acme", "recent", tNow.Add(-time.Minute)))) // expired, within the grace
	r.Apply(rec(4, mint("acme", "live", tNow.Add(time.Hour))))
	// The next sweep waits for pruneEvery.
	st, _ := r.Lookup(context.Background(), "acme", "old")
	assert.True(t, st.Known, "no sweep before pruneEvery")

	clock = clock.Add(r.pruneEvery)
	r.Apply(rec(5, events.OrgCreated{}))
	for id, known := range map[string]bool{"old": false, "recent": true, "live": true} {
		st, err := r.Lookup(context.Background(), "acme", id)
		require.NoError(t, err)
		assert.Equal(t, known, st.Known, id)
	}
}

func TestTokenRegistryRevocationIsImmediate(t *testing.T) {
	r := newTestRegistry(nil)
	r.Apply(rec(1, mint("acme", "t1", tNow.Add(time.Hour))))
	st, err := r.Lookup(context.Background(), "acme", "t1")
	require.NoError(t, err)
	require.False(t, st.Revoked)
	r.Apply(rec(2, revoke("acme", "t1")))
	st, err = r.Lookup(context.Background(), "acme", "t1")
	require.NoError(t, err)
	assert.True(t, st.Revoked)
}

func TestTokenRegistryConcurrent(t *testing.T) {
	var head atomic.Uint64
	r := newTestRegistry(func(context.Context) (uint64, error) { return head.Load(), nil })
	const n = 200
	var wg sync.WaitGroup
	// One writer, in log order, as a consumer would be.
	wg.Go(func() {
		seq := uint64(0)
		for i := range n {
			seq++
			head.Store(seq)
			r.Apply(rec(seq, mint("acme", fmt.Sprint("t", i), tNow.Add(time.Hour))))
			if i%2 == 0 {
				seq++
				head.Store(seq)
				r.Apply(rec(seq, revoke("acme", fmt.Sprint("t", i))))
			}
		}
	})
	// Readers.
	for g := range 8 {
		wg.Go(func() {
			for i := range n {
				id := fmt.Sprint("t", (i*7+g)%n)
				st, err := r.Lookup(context.Background(), "acme", id)
				if err != nil {
					t.Error(err)
					return
				}
				if st.Known && st.OrgID != "acme" {
					t.Errorf("%s: org %q", id, st.OrgID)
				}
				_ = r.Applied()
			}
		})
	}
	wg.Wait()
	for i := range n {
		st, err := r.Lookup(context.Background(), "acme", fmt.Sprint("t", i))
		require.NoError(t, err)
		assert.True(t, st.Known)
		assert.Equal(t, i%2 == 0, st.Revoked, i)
	}
	assert.Equal(t, uint64(n+n/2), r.Applied())
}

func TestTokenRegistryWaitsForHead(t *testing.T) {
	exp := tNow.Add(time.Hour)
	tests := []struct {
		name string
		head uint64
		// apply is applied after the lookup started (nil: nothing is).
		apply    []events.Record
		wantErr  bool
		want     TokenState
		maxDelay time.Duration
	}{
		{"arrives after the lookup started", 3, []events.Record{rec(2, events.OrgCreated{}), rec(3, mint("acme", "t1", exp))}, false,
			TokenState{Known: true, OrgID: "acme", ExpiresAt: exp}, time.Second},
		{"never arrives: fails after the bound", 3, nil, true, TokenState{}, time.Second},
		{"log caught up and still unknown: unknown at once", 1, nil, false, TokenState{}, 100 * time.Millisecond},
		{"caught up to head with another token: unknown", 3, []events.Record{rec(3, mint("acme", "t2", exp))}, false, TokenState{}, time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var calls atomic.Int32
			r := newTestRegistry(func(context.Context) (uint64, error) {
				calls.Add(1)
				return tt.head, nil
			})
			r.maxWait = 300 * time.Millisecond
			r.Apply(rec(1, events.OrgCreated{}))

			type result struct {
				st  TokenState
				err error
				d   time.Duration
			}
			done := make(chan result, 1)
			go func() {
				start := time.Now()
				st, err := r.Lookup(context.Background(), "acme", "t1")
				done <- result{st, err, time.Since(start)}
			}()
			if tt.apply != nil {
				// Wait until the lookup asked for the head, then let the records arrive.
				require.Eventually(t, func() bool { return calls.Load() > 0 }, time.Second, time.Millisecond)
				time.Sleep(20 * time.Millisecond)
				for _, rc := range tt.apply {
					r.Apply(rc)
				}
			}
			res := recv(t, done)
			assert.Less(t, res.d, tt.maxDelay)
			if tt.wantErr {
				require.Error(t, res.err)
				assert.ErrorIs(t, res.err, domain.ErrUnavailable)
				assert.ErrorIs(t, res.err, context.DeadlineExceeded)
				assert.Contains(t, res.err.Error(), "applied 1 of 3")
				assert.GreaterOrEqual(t, res.d, r.maxWait, "waited for the bound")
				return
			}
			require.NoError(t, res.err)
			assert.Equal(t, tt.want, res.st)
		})
	}
}

func TestTokenRegistryDefaultBound(t *testing.T) {
	r := NewTokenRegistry(nil)
	assert.Equal(t, 2*time.Second, r.maxWait)
	st, err := r.Lookup(context.Background(), "acme", "t1")
	require.NoError(t, err, "without head, unknown at once")
	assert.False(t, st.Known)
}

func TestTokenRegistryLookupHonoursContext(t *testing.T) {
	r := newTestRegistry(func(ctx context.Context) (uint64, error) { return 10, nil })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := r.Lookup(ctx, "acme", "t1")
	require.Error(t, err)
	assert.ErrorIs(t, err, domain.ErrUnavailable)
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	assert.Less(t, time.Since(start), time.Second)

	ctx, cancel = context.WithCancel(context.Background())
	cancel()
	_, err = r.Lookup(ctx, "acme", "t1")
	assert.ErrorIs(t, err, context.Canceled)
}

func TestTokenRegistryHeadError(t *testing.T) {
	boom := errors.New("nats: no responders")
	r := newTestRegistry(func(context.Context) (uint64, error) { return 0, boom })
	_, err := r.Lookup(context.Background(), "acme", "t1")
	require.Error(t, err)
	assert.ErrorIs(t, err, boom)
	assert.ErrorIs(t, err, domain.ErrUnavailable)
	var de *domain.Error
	require.ErrorAs(t, err, &de)
	assert.NotContains(t, de.Msg, "nats", "the safe message does not leak internals")

	r = newTestRegistry(func(context.Context) (uint64, error) { panic("bug") })
	_, err = r.Lookup(context.Background(), "acme", "t1")
	assert.ErrorIs(t, err, domain.ErrUnavailable)
}

// A flood of lookups of unknown tokens runs at most one head() at a time, and few in all.
func TestTokenRegistryCoalescesHeadCalls(t *testing.T) {
	var calls, inFlight, maxInFlight atomic.Int32
	release := make(chan struct{})
	r := newTestRegistry(func(ctx context.Context) (uint64, error) {
		calls.Add(1)
		n := inFlight.Add(1)
		defer inFlight.Add(-1)
		for {
			m := maxInFlight.Load()
			if n <= m || maxInFlight.CompareAndSwap(m, n) {
				break
			}
		}
		select {
		case <-release:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
		return 0, nil // caught up: nothing to wait for
	})

	const lookups = 100
	var wg sync.WaitGroup
	errs := make(chan error, lookups)
	for i := range lookups {
		wg.Go(func() {
			st, err := r.Lookup(context.Background(), "acme", fmt.Sprint("nope", i))
			if err == nil && st.Known {
				err = fmt.Errorf("nope%d known", i)
			}
			errs <- err
		})
	}
	// Let every lookup reach headSeq: the first runs head(), the rest queue behind it.
	require.Eventually(t, func() bool {
		r.hmu.Lock()
		defer r.hmu.Unlock()
		return calls.Load() == 1 && r.queued != nil
	}, time.Second, time.Millisecond)
	time.Sleep(50 * time.Millisecond)
	close(release)
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	assert.Equal(t, int32(1), maxInFlight.Load(), "one head() in flight at a time")
	assert.LessOrEqual(t, calls.Load(), int32(3), "lookups share head() calls")
}

// A lookup that arrives while a head() call is in flight does not trust that call's answer, which may predate
// the mint it is looking for.
func TestTokenRegistryDoesNotReuseStaleHead(t *testing.T) {
	var calls atomic.Int32
	firstStarted := make(chan struct{})
	releaseFirst := make(chan struct{})
	r := newTestRegistry(func(ctx context.Context) (uint64, error) {
		if calls.Add(1) == 1 {
			close(firstStarted)
			<-releaseFirst
			return 1, nil // the head before the mint
		}
		return 2, nil
	})
	r.maxWait = time.Second
	r.Apply(rec(1, events.OrgCreated{}))

	first := make(chan error, 1)
	go func() {
		_, err := r.Lookup(context.Background(), "acme", "other")
		first <- err
	}()
	select {
	case <-firstStarted:
	case <-time.After(5 * time.Second):
		t.Fatal("head() was not called")
	}
	// t1 is minted (seq 2) after the first head() call started; its lookup arrives now.
	lookupT1 := func(out chan<- TokenState) {
		st, err := r.Lookup(context.Background(), "acme", "t1")
		assert.NoError(t, err)
		out <- st
	}
	second, third := make(chan TokenState, 1), make(chan TokenState, 1)
	go lookupT1(second)
	require.Eventually(t, func() bool {
		r.hmu.Lock()
		defer r.hmu.Unlock()
		return r.queued != nil
	}, time.Second, time.Millisecond)
	// A third lookup joins the queued call, not the stale one in flight.
	go lookupT1(third)
	time.Sleep(20 * time.Millisecond)
	close(releaseFirst)
	require.NoError(t, recv(t, first))
	r.Apply(rec(2, mint("acme", "t1", tNow.Add(time.Hour))))
	assert.True(t, recv(t, second).Known)
	assert.True(t, recv(t, third).Known)
	assert.Equal(t, int32(2), calls.Load())
}

func recv[T any](t *testing.T, ch <-chan T) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(5 * time.Second):
		t.Fatal("timed out")
		panic("unreachable")
	}
}

func BenchmarkTokenRegistryLookupKnown(b *testing.B) {
	r := NewTokenRegistry(nil)
	for i := range 10000 {
		r.Apply(rec(uint64(i+1), mint("acme", fmt.Sprint("t", i), time.Now().Add(time.Hour))))
	}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if st, _ := r.Lookup(ctx, "acme", "t5000"); !st.Known {
			b.Fatal("unknown")
		}
	}
}
