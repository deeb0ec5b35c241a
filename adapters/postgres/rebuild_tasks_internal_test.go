package postgres

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/anchorage-pin/anchorage/adapters/postgres/pgcluster"
	"github.com/anchorage-pin/anchorage/adapters/postgres/pgtest"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"
)

// The rebuild's finishing graph runs each task after its dependencies, overlaps independent ones, and stops at
// the first failure.
func TestRunTasks(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tmpl := pgtest.Template(t, "plain", func(context.Context, *pgcluster.Cluster, string) error { return nil })
	pool, err := pgxpool.New(ctx, pgtest.DSN(t, pgtest.NewDatabase(t, tmpl)))
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	sh := &shadow{owner: pool, log: slog.New(slog.DiscardHandler)}

	var mu sync.Mutex
	var trace []string
	note := func(s string) {
		mu.Lock()
		trace = append(trace, s)
		mu.Unlock()
	}
	task := func(name string, deps ...*finishTask) *finishTask {
		return &finishTask{name: name, deps: deps, run: func(context.Context, *pgxpool.Conn) error {
			note("start " + name)
			time.Sleep(5 * time.Millisecond)
			note("end " + name)
			return nil
		}}
	}
	// x and y are independent: each waits until the other has started.
	xStarted, yStarted := make(chan struct{}), make(chan struct{})
	meet := func(name string, mine, other chan struct{}) *finishTask {
		return &finishTask{name: name, run: func(context.Context, *pgxpool.Conn) error {
			close(mine)
			select {
			case <-other:
				return nil
			case <-time.After(10 * time.Second):
				return fmt.Errorf("%s never ran alongside the other independent task", name)
			}
		}}
	}
	a := task("a")
	b, c := task("b", a), task("c", a)
	d := task("d", b, c)
	// Listed dependents first: the order of the list must not override the graph.
	tasks := []*finishTask{d, b, c, a, meet("x", xStarted, yStarted), meet("y", yStarted, xStarted)}
	require.NoError(t, sh.runTasks(ctx, tasks, 2))
	for _, tk := range []*finishTask{a, b, c, d} {
		start := slices.Index(trace, "start "+tk.name)
		require.GreaterOrEqual(t, start, 0, "%s ran", tk.name)
		for _, dep := range tk.deps {
			require.Greater(t, start, slices.Index(trace, "end "+dep.name), "%s started before %s ended: %v", tk.name, dep.name, trace)
		}
	}

	// A failure is returned, and what depends on the failed task never runs.
	trace = nil
	boom := errors.New("boom")
	bad := &finishTask{name: "bad", run: func(context.Context, *pgxpool.Conn) error { return boom }}
	after := task("after", bad)
	err = sh.runTasks(ctx, []*finishTask{bad, after}, 2)
	require.ErrorIs(t, err, boom)
	require.ErrorContains(t, err, "rebuild bad")
	require.NotContains(t, trace, "start after")
}
