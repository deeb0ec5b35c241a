package postgres

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// growthAnalyzer keeps the planner's statistics in step with the read models while they grow fast, which
// autovacuum does not: it looks at a table at most once a minute (autovacuum_naptime) and, until its first
// ANALYZE, the planner knows nothing of a column's values. On a new node that first minute is a bulk load: the
// scheduler's query for failed moves (moved_from IS NOT NULL, a partial index that holds nothing) scanned the whole
// placements table every round, 0.7 ms at 3,000 placements instead of 0.04 ms, because without statistics the
// planner expects most rows to match. An ANALYZE also makes PostgreSQL re-plan the statements prepared while the
// table was empty: PinsRederive's generic plan had a sequential scan of pins (32k buffers and 32 ms a call in the
// placement benchmark on a fresh node; 0.8k and 2.8 ms once re-planned).
//
// The projectors report the rows each committed batch wrote per table; once a table has had more writes since its
// last ANALYZE than the rows it then held (and at least analyzeMinRows), the analyzer runs ANALYZE on it in the
// background, one table at a time. A table growing from empty is so analyzed at about 500, 1,000, 2,000, …
// rows: a handful of times up to a million, each on a sample of at most 30,000 rows. Past the first doublings
// autovacuum, which looks again after a tenth of a table has changed, runs first and its statistics count too.
type growthAnalyzer struct {
	pool *pgxpool.Pool
	log  *slog.Logger
	mu   sync.Mutex
	tabs map[string]*tableGrowth
	busy bool // an ANALYZE is running
}

type tableGrowth struct {
	base    float64 // rows at the last ANALYZE (pg_class.reltuples; -1, never analyzed, counts as 0)
	known   bool    // base was read
	changed int64   // rows written since
}

// analyzeMinRows is how many rows a table must have had written before the analyzer looks at it.
const analyzeMinRows = 500

func newGrowthAnalyzer(pool *pgxpool.Pool) *growthAnalyzer {
	return &growthAnalyzer{pool: pool, log: slog.New(slog.DiscardHandler), tabs: map[string]*tableGrowth{}}
}

// wrote records that a committed batch wrote n rows of the live table (a name in the public schema), and starts
// an ANALYZE of a table that has had enough writes since its last. Safe on a nil analyzer (it does nothing).
func (g *growthAnalyzer) wrote(table string, n int) {
	if g == nil || n <= 0 {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	t := g.tabs[table]
	if t == nil {
		t = &tableGrowth{}
		g.tabs[table] = t
	}
	t.changed += int64(n)
	if g.busy {
		return
	}
	for name, tg := range g.tabs {
		if tg.changed >= analyzeMinRows && (!tg.known || float64(tg.changed) > tg.base) {
			g.busy = true
			go g.analyze(name, tg.known, tg.changed)
			return
		}
	}
}

// analyze runs ANALYZE on table, which had changed rows written since the last, or, when its size at the last
// ANALYZE is not known yet, reads that first (an earlier ANALYZE, or autovacuum's, may have seen it grown
// already).
func (g *growthAnalyzer) analyze(table string, known bool, changed int64) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	name := pgx.Identifier{"public", table}.Sanitize()
	t0 := time.Now()
	var err error
	if known {
		_, err = g.pool.Exec(ctx, "ANALYZE "+name)
	}
	var rows float64
	if err == nil {
		err = g.pool.QueryRow(ctx, "SELECT reltuples FROM pg_class WHERE oid = $1::regclass", name).Scan(&rows)
	}
	if err == nil && known {
		g.log.Debug("analyzed a growing read model", "table", table, "rows", rows, "took", time.Since(t0))
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.busy = false
	if err != nil {
		g.log.Warn("analyzing a growing read model failed; autovacuum will", "table", table, "err", err)
		return // tried again after the next batch
	}
	t := g.tabs[table]
	if known {
		t.changed -= changed // the rows written while it ran count towards the next
	}
	t.known, t.base = true, max(rows, 0)
}
