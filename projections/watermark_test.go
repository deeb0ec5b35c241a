package projections_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/anchorage-pin/anchorage/projections"
	"github.com/stretchr/testify/require"
)

func TestWatermarkWait(t *testing.T) {
	t.Parallel()
	w := projections.NewWatermarks()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	require.ErrorIs(t, w.Wait(ctx, "pins", 5), context.DeadlineExceeded)

	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Go(func() { require.NoError(t, w.Wait(context.Background(), "pins", 5)) })
	}
	w.Advance("pins", 3)
	w.Advance("pins", 2) // never backwards
	require.Equal(t, uint64(3), w.Applied("pins"))
	w.Advance("pins", 5)
	wg.Wait()
	require.NoError(t, w.Wait(context.Background(), "pins", 1))
	require.Zero(t, w.Applied("other"))
}

func TestHorizons(t *testing.T) {
	t.Parallel()
	h := projections.NewHorizons()
	require.Zero(t, h.Get("a"))
	h.Record("a", 7)
	h.Record("a", 3)
	h.Record("b", 1)
	require.Equal(t, uint64(7), h.Get("a"))
	require.Equal(t, uint64(1), h.Get("b"))

	// The floor (the log's head at start) lifts every org, including ones this node never wrote for.
	h.SetFloor(5)
	h.SetFloor(4)
	require.Equal(t, uint64(7), h.Get("a"))
	require.Equal(t, uint64(5), h.Get("b"))
	require.Equal(t, uint64(5), h.Get("never-written"))
}
