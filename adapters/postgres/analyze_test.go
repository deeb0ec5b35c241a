package postgres_test

import (
	"context"
	"testing"
	"time"

	"github.com/anchorage-pin/anchorage/adapters/postgres"
	"github.com/stretchr/testify/require"
)

// The projectors keep the planner's statistics current while their tables grow from empty, before autovacuum
// would (it is off here): without statistics the scheduler's query for failed moves scanned all of placements
// instead of its partial index, which holds nothing.
func TestProjectorsKeepStatisticsOfGrowingTables(t *testing.T) {
	f := newFixture(t)
	f.pins = postgres.Projectors(f.owner, nil)[2] // the fixture's has no analyzer
	ctx := context.Background()
	for _, table := range []string{"pins", "placements", "audit_events"} {
		_, err := f.owner.Exec(ctx, "ALTER TABLE "+table+" SET (autovacuum_enabled = false)")
		require.NoError(t, err)
	}
	// A statement prepared while the table is empty keeps its plan until the table's statistics change.
	conn, err := f.owner.Acquire(ctx)
	require.NoError(t, err)
	defer conn.Release()
	_, err = conn.Exec(ctx, `PREPARE failed_moves(int) AS SELECT n.org_id, n.request_id, n.node_id, n.cid
		FROM placements n WHERE n.moved_from IS NOT NULL AND n.status = 3 AND NOT n.pin_gone LIMIT $1`)
	require.NoError(t, err)
	for range 6 { // past the five custom plans after which PostgreSQL may settle on a generic one
		_, err = conn.Exec(ctx, "EXECUTE failed_moves(100)")
		require.NoError(t, err)
	}

	var s stream
	for i := range 3000 {
		id := s.request(orgA, "", nil, cids[i%len(cids)])
		s.status(orgA, id, "pinned")
	}
	f.applyAll(t, s.recs, 100)

	require.Eventually(t, func() bool {
		var analyzed int
		err := f.owner.QueryRow(ctx, `SELECT count(*) FROM pg_stat_user_tables
			WHERE relname IN ('pins', 'placements') AND last_analyze IS NOT NULL AND last_autoanalyze IS NULL`).Scan(&analyzed)
		return err == nil && analyzed == 2
	}, 30*time.Second, 20*time.Millisecond, "pins and placements analyzed by the projector")
	var rows float64
	require.NoError(t, f.owner.QueryRow(ctx, "SELECT reltuples FROM pg_class WHERE relname = 'placements'").Scan(&rows))
	require.GreaterOrEqual(t, rows, 1000.0, "analyzed again as it grew")

	var plan string
	require.NoError(t, conn.QueryRow(ctx, "EXPLAIN (FORMAT JSON) EXECUTE failed_moves(100)").Scan(&plan))
	require.Contains(t, plan, "placements_moved", "the failed-moves query, prepared when placements was empty, uses its partial index")
}
