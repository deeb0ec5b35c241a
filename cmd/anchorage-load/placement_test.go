package main

import (
	"sync/atomic"
	"testing"
	"time"
)

func TestPollDelay(t *testing.T) {
	for _, c := range []struct {
		done, total int64
		elapsed     time.Duration
		want        time.Duration
	}{
		{0, 2000, time.Second, 100 * time.Millisecond},                // no rate yet
		{100, 2000, time.Second, 100 * time.Millisecond},              // 19 s to go
		{1800, 2000, 3600 * time.Millisecond, 100 * time.Millisecond}, // 400 ms to go
		{1960, 2000, 3920 * time.Millisecond, 20 * time.Millisecond},  // 80 ms to go
		{1999, 2000, 3998 * time.Millisecond, 10 * time.Millisecond},  // 2 ms to go: as often as before
		{2000, 2000, 4 * time.Second, 10 * time.Millisecond},
	} {
		if got := pollDelay(c.done, c.total, c.elapsed); got != c.want {
			t.Errorf("pollDelay(%d, %d, %s) = %s, want %s", c.done, c.total, c.elapsed, got, c.want)
		}
	}
}

func TestMedian(t *testing.T) {
	for _, c := range []struct {
		in   []float64
		want float64
	}{
		{nil, 0},
		{[]float64{0.6}, 0.6},
		{[]float64{0.7, 0.5, 0.6}, 0.6},
		{[]float64{0.9, 0.5, 0.6, 0.8}, 0.7},
	} {
		in := append([]float64(nil), c.in...)
		if got := median(c.in); got < c.want-1e-9 || got > c.want+1e-9 {
			t.Errorf("median(%v) = %v, want %v", in, got, c.want)
		}
		for i := range in {
			if in[i] != c.in[i] {
				t.Errorf("median reordered its input: %v, was %v", c.in, in)
			}
		}
	}
}

func TestEachIndexCallsEveryIndexOnce(t *testing.T) {
	for _, c := range []struct{ count, workers int }{{0, 4}, {1, 4}, {1000, 16}, {5, 1}} {
		seen := make([]atomic.Int32, c.count)
		eachIndex(c.count, c.workers, func(i int) { seen[i].Add(1) })
		for i := range seen {
			if n := seen[i].Load(); n != 1 {
				t.Errorf("count %d, workers %d: index %d called %d times", c.count, c.workers, i, n)
			}
		}
	}
}
