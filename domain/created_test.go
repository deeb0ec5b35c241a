package domain_test

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/anchorage-pin/anchorage/domain"
)

// scriptedNow returns the given times in turn, then the last one forever.
func scriptedNow(ts ...time.Time) func() time.Time {
	var mu sync.Mutex
	return func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		t := ts[0]
		if len(ts) > 1 {
			ts = ts[1:]
		}
		return t
	}
}

func TestCreatedClock(t *testing.T) {
	t.Parallel()
	t0 := time.Date(2026, 3, 14, 10, 2, 17, 846240918, time.UTC)
	ms := time.Millisecond
	cet := time.FixedZone("CET", 3600)
	for _, tc := range []struct {
		name  string
		now   []time.Time
		orgs  []string
		wants []time.Time
	}{
		{name: "millisecond precision, UTC", now: []time.Time{t0.In(cet)}, orgs: []string{"a"},
			wants: []time.Time{t0.Truncate(ms)}},
		{name: "advancing clock is kept", now: []time.Time{t0, t0.Add(5 * ms), t0.Add(time.Second)}, orgs: []string{"a", "a", "a"},
			wants: []time.Time{t0.Truncate(ms), t0.Add(5 * ms).Truncate(ms), t0.Add(time.Second).Truncate(ms)}},
		{name: "collisions bump by 1 ms", now: []time.Time{t0, t0, t0.Add(100 * time.Microsecond)}, orgs: []string{"a", "a", "a"},
			wants: []time.Time{t0.Truncate(ms), t0.Truncate(ms).Add(ms), t0.Truncate(ms).Add(2 * ms)}},
		{name: "clock going backwards", now: []time.Time{t0, t0.Add(-5 * time.Second), t0.Add(-time.Hour), t0.Add(10 * ms)},
			orgs:  []string{"a", "a", "a", "a"},
			wants: []time.Time{t0.Truncate(ms), t0.Truncate(ms).Add(ms), t0.Truncate(ms).Add(2 * ms), t0.Add(10 * ms).Truncate(ms)}},
		{name: "orgs independent", now: []time.Time{t0, t0, t0, t0}, orgs: []string{"a", "b", "a", "b"},
			wants: []time.Time{t0.Truncate(ms), t0.Truncate(ms), t0.Truncate(ms).Add(ms), t0.Truncate(ms).Add(ms)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := domain.NewCreatedClock(scriptedNow(tc.now...))
			for i, org := range tc.orgs {
				got := c.Next(org)
				assert.True(t, tc.wants[i].Equal(got), "call %d (%s): got %s, want %s", i, org, got.Format(time.RFC3339Nano), tc.wants[i].Format(time.RFC3339Nano))
				assert.Equal(t, time.UTC, got.Location())
				assert.Zero(t, got.Nanosecond()%int(ms), "millisecond precision")
			}
		})
	}
}

// TestCreatedClockFloor: after a restart with a clock behind the log, times still grow past the floor.
func TestCreatedClockFloor(t *testing.T) {
	t.Parallel()
	t0 := time.Date(2026, 3, 14, 10, 2, 17, 846240918, time.UTC)
	ms := time.Millisecond
	c := domain.NewCreatedClock(scriptedNow(t0.Add(-time.Minute), t0.Add(-time.Minute), t0.Add(time.Second)))
	c.SetFloor(t0)
	c.SetFloor(t0.Add(-time.Hour)) // a lower floor changes nothing
	for i, want := range []time.Time{t0.Truncate(ms).Add(ms), t0.Truncate(ms).Add(ms)} {
		got := c.Next([]string{"a", "b"}[i])
		assert.True(t, want.Equal(got), "call %d: got %s, want %s", i, got.Format(time.RFC3339Nano), want.Format(time.RFC3339Nano))
	}
	assert.True(t, t0.Add(time.Second).Truncate(ms).Equal(c.Next("a")), "a clock past the floor is used as is")
}

func TestCreatedClockConcurrent(t *testing.T) {
	t.Parallel()
	// A clock that barely moves: most calls collide.
	var ticks atomic.Int64
	base := time.Date(2026, 3, 14, 10, 0, 0, 0, time.UTC)
	c := domain.NewCreatedClock(func() time.Time { return base.Add(time.Duration(ticks.Add(1)/50) * time.Millisecond) })

	const workers, perWorker = 8, 400
	orgs := []string{"a", "b", "c"}
	got := make([]map[string][]time.Time, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			mine := map[string][]time.Time{}
			for i := range perWorker {
				org := orgs[(w+i)%len(orgs)]
				mine[org] = append(mine[org], c.Next(org))
			}
			got[w] = mine
		}()
	}
	wg.Wait()

	all := map[string]map[time.Time]bool{}
	for _, org := range orgs {
		all[org] = map[time.Time]bool{}
	}
	total := 0
	for w := range workers {
		for org, ts := range got[w] {
			for i, ts1 := range ts {
				require.False(t, all[org][ts1], "org %s: %s handed out twice", org, ts1)
				all[org][ts1] = true
				total++
				if i > 0 {
					require.True(t, ts1.After(ts[i-1]), "org %s: not increasing within one goroutine", org)
				}
			}
		}
	}
	assert.Equal(t, workers*perWorker, total)
}
