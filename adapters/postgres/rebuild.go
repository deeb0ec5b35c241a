package postgres

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/anchorage-pin/anchorage/adapters/postgres/internal/dbsqlc"
	"github.com/anchorage-pin/anchorage/events"
	"github.com/anchorage-pin/anchorage/projections"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// ProjectionTables lists, per projection, the read-model tables it owns. A rebuild replaces exactly these.
var ProjectionTables = map[string][]string{
	ProjectionOrgs:   {"orgs"},
	ProjectionTokens: {"tokens"},
	ProjectionPins:   {"pins", "pin_counts", "pin_org_state", "nodes", "placements", "sched_state", "pin_meta", "pin_meta_counts"},
}

// seedRows are rows a migration inserts that a projection then only updates.
var seedRows = map[string]string{
	"sched_state": "INSERT INTO %s.sched_state (id) VALUES (1)",
}

// RebuildSource is the event log as a rebuild reads it.
type RebuildSource interface {
	LastSeq(ctx context.Context) (uint64, error)
	// ReadUntil calls fn with batches of records matching filters with from <= Seq <= until, in order.
	ReadUntil(ctx context.Context, from, until uint64, filters []string, maxBatch int, fn func([]events.Record) error) error
}

// RebuildOptions configure a rebuild.
type RebuildOptions struct {
	// Only limits the rebuild to these projections (default: all).
	Only []string
	// Progress is called as events are applied: done and total events so far.
	Progress func(projection string, done, total uint64)
	// Batch is the number of events per projection transaction (default 10000, or the projector's own
	// RebuildBatch when it has one).
	Batch  int
	Logger *slog.Logger
	// Projectors builds the projectors to run against a pool (default: Projectors, without their statistics
	// upkeep: the copies are analyzed once loaded).
	Projectors func(pool *pgxpool.Pool) []projections.Projector
}

// RebuildStats reports what a rebuild did.
type RebuildStats struct {
	Events   uint64        // events applied to the shadow tables
	Head     uint64        // the stream sequence the new read models include
	Replay   time.Duration // replay and projection into the shadow tables
	Indexes  time.Duration
	Swap     time.Duration // the exclusive part
	Drop     time.Duration // dropping the replaced tables, after the swap
	Total    time.Duration
	Replaced []string // tables replaced
}

// Rebuild replays the log from sequence 1 into fresh copies of the read models and swaps them in, while the
// API keeps serving the current ones. The copies are built by the same projectors as the live read models
// (running with the shadow schema first on their search path), so the result is what incremental projection
// produces. The swap is one short transaction that holds the live projections' checkpoints, catches the copies
// up to the head of the log, moves them in (RLS, policies and grants already in place: no window where a
// tenant sees another's rows) and sets the checkpoints; the live projector then simply carries on from there.
func Rebuild(ctx context.Context, ownerDSN, apiRole string, src RebuildSource, opts RebuildOptions) (RebuildStats, error) {
	start := time.Now()
	sh, err := newShadow(ctx, ownerDSN, apiRole, "anchorage_rebuild", opts, false)
	if err != nil {
		return RebuildStats{}, err
	}
	defer sh.close()
	st, err := sh.build(ctx, src)
	if err != nil {
		return st, err
	}
	t0 := time.Now()
	if err := sh.swap(ctx, src); err != nil {
		return st, err
	}
	st.Swap = time.Since(t0)
	t1 := time.Now()
	if err := sh.dropRetired(ctx); err != nil {
		return st, err
	}
	st.Drop = time.Since(t1)
	st.Total = time.Since(start)
	st.Replaced = sh.tables()
	st.Events = sh.applied
	st.Head = sh.head
	return st, nil
}

// shadow is a schema holding fresh copies of some projections' tables.
type shadow struct {
	owner    *pgxpool.Pool // search_path public: the live tables
	pool     *pgxpool.Pool // search_path <schema>, public: the copies
	schema   string
	apiRole  string
	names    []string // projections
	projs    []projections.Projector
	opts     RebuildOptions
	log      *slog.Logger
	applied  uint64
	head     uint64
	progress map[string]uint64
	// seen is, per projection, the sequence up to which catchUp has read the log for it: its checkpoint only
	// moves with its own events, and a projection with few (orgs, tokens) would otherwise have the log read again
	// from its last one.
	seen map[string]uint64
	// indexes are the live tables' indexes as recreated on the copies: read once by create, which builds the
	// early ones, and built by finish.
	indexes []indexDef
	// scratch: the copies are verify's, compared row by row on their primary keys and then dropped. finish
	// builds their primary keys and unique constraints only, not the secondary indexes (they never serve a
	// query), and they are UNLOGGED: a crash loses nothing of value, and loading them skips writing their rows
	// twice (the audit trail's copy alone is about 500 MB of WAL per million events).
	scratch bool
	// fixedBatch: the options set Batch, and every projection gets it (tests vary it); otherwise a projector
	// with a RebuildBatch gets that.
	fixedBatch bool
}

// newShadow prepares a shadow schema; scratch copies (verify's) are unlogged and get only their keys.
func newShadow(ctx context.Context, ownerDSN, apiRole, schema string, opts RebuildOptions, scratch bool) (*shadow, error) {
	sh := &shadow{schema: schema, apiRole: apiRole, progress: map[string]uint64{}, seen: map[string]uint64{},
		scratch: scratch, fixedBatch: opts.Batch > 0}
	if opts.Batch <= 0 {
		opts.Batch = 10000
	}
	if opts.Projectors == nil {
		opts.Projectors = rebuildProjectors
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	sh.opts, sh.log = opts, opts.Logger
	var err error
	if sh.owner, err = OpenOwnerPool(ctx, ownerDSN, 4); err != nil {
		return nil, err
	}
	cfg, err := pgxpool.ParseConfig(ownerDSN)
	if err != nil {
		sh.close()
		return nil, err
	}
	cfg.MaxConns = 4
	cfg.ConnConfig.RuntimeParams["application_name"] = "anchorage-rebuild"
	cfg.ConnConfig.RuntimeParams["synchronous_commit"] = "off"
	// A plan for every execution: the copies start empty and are analyzed only once loaded, so a generic plan
	// would be one made for empty tables (see growthAnalyzer). Rebuild batches are large; planning is cheap here.
	cfg.ConnConfig.RuntimeParams["plan_cache_mode"] = "force_custom_plan"
	cfg.ConnConfig.RuntimeParams["search_path"] = pgx.Identifier{schema}.Sanitize() + ", public"
	if sh.pool, err = pgxpool.NewWithConfig(ctx, cfg); err != nil {
		sh.close()
		return nil, fmt.Errorf("postgres: rebuild pool: %w", err)
	}
	all := sh.opts.Projectors(sh.pool)
	for _, p := range all {
		if len(opts.Only) == 0 || slices.Contains(opts.Only, p.Name()) {
			if _, ok := ProjectionTables[p.Name()]; !ok {
				continue // a projection without rebuildable tables
			}
			sh.projs = append(sh.projs, p)
			sh.names = append(sh.names, p.Name())
		}
	}
	for _, o := range opts.Only {
		if !slices.Contains(sh.names, o) {
			sh.close()
			return nil, fmt.Errorf("unknown projection %q; projections are %v", o, keys(ProjectionTables))
		}
	}
	if err := sh.create(ctx); err != nil {
		sh.close()
		return nil, err
	}
	return sh, nil
}

func keys(m map[string][]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

func (sh *shadow) close() {
	if sh.pool != nil {
		sh.pool.Close()
	}
	if sh.owner != nil {
		for _, schema := range []string{sh.schema, sh.retired()} {
			_, _ = sh.owner.Exec(context.Background(), "DROP SCHEMA IF EXISTS "+pgx.Identifier{schema}.Sanitize()+" CASCADE")
		}
		sh.owner.Close()
	}
}

// retired is the schema the swap moves the replaced live tables into. They are dropped after it commits: a
// DROP TABLE inside the swap unlinks the table's files when the swap commits, while it still holds its locks,
// and the API's reads of the read models wait that long (0.2-0.5 s for a million events' tables, most of the
// swap).
func (sh *shadow) retired() string { return sh.schema + "_retired" }

// dropRetired drops the tables the swap replaced, with their schema. Nothing else depends on them: the swap
// checked that each could be dropped.
func (sh *shadow) dropRetired(ctx context.Context) error {
	if _, err := sh.owner.Exec(ctx, "DROP SCHEMA IF EXISTS "+pgx.Identifier{sh.retired()}.Sanitize()+" CASCADE"); err != nil {
		return fmt.Errorf("postgres: drop the replaced tables: %w", err)
	}
	return nil
}

func (sh *shadow) tables() []string {
	var out []string
	for _, n := range sh.names {
		out = append(out, ProjectionTables[n]...)
	}
	return out
}

// create makes the schema with empty copies of the tables (columns, defaults, checks and primary keys only:
// secondary indexes, and the primary keys of the tables in pkAfterLoad, are built after loading) and of the
// checkpoint table.
func (sh *shadow) create(ctx context.Context) error {
	s := pgx.Identifier{sh.schema}.Sanitize()
	// A rebuild that stopped between its swap and the drop of the replaced tables left them in the retired schema.
	stmts := []string{"DROP SCHEMA IF EXISTS " + s + " CASCADE", "DROP SCHEMA IF EXISTS " + pgx.Identifier{sh.retired()}.Sanitize() + " CASCADE", "CREATE SCHEMA " + s}
	unlogged := ""
	if sh.scratch {
		unlogged = "UNLOGGED "
	}
	for _, t := range append(sh.tables(), "projection_checkpoints") {
		stmts = append(stmts, fmt.Sprintf("CREATE %sTABLE %s.%s (LIKE public.%s INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING GENERATED) WITH (%s)", unlogged, s, t, t, shadowAutovacuumOff))
		if seed, ok := seedRows[t]; ok {
			stmts = append(stmts, fmt.Sprintf(seed, s))
		}
	}
	for _, q := range stmts {
		if _, err := sh.owner.Exec(ctx, q); err != nil {
			return fmt.Errorf("postgres: prepare rebuild (%s): %w", q, err)
		}
	}
	// Primary keys now: the projectors' upserts need them.
	var err error
	if sh.indexes, err = sh.indexDefs(ctx); err != nil {
		return err
	}
	for _, x := range sh.indexes {
		if x.early() {
			if err := x.create(ctx, sh.owner, sh.schema); err != nil {
				return err
			}
		}
	}
	// Triggers come after the bulk replay (finish): see pinMetaTasks.
	return nil
}

// shadowAutovacuumOff keeps autovacuum off the copies while they are built: a freshly loaded table soon passes
// autovacuum's insert threshold, and a vacuum of it then competes with the rebuild for the cores and, holding its
// lock, makes the next index build wait until PostgreSQL cancels it (deadlock_timeout). The finishing graph
// analyzes every copy itself; the swap turns autovacuum back on (shadowAutovacuumReset) before they go live.
const (
	shadowAutovacuumOff   = "autovacuum_enabled = false, toast.autovacuum_enabled = false"
	shadowAutovacuumReset = "RESET (autovacuum_enabled, toast.autovacuum_enabled)"
)

// pkAfterLoad are the tables whose copies are filled without their primary key, which is built afterwards with
// the secondary indexes (an index built over loaded rows costs a fraction of maintaining it row by row):
// audit_events, loaded by COPY (its projector only inserts, and a fresh table holds none of the rows), and
// pin_meta, computed from the replayed pins in bulk.
var pkAfterLoad = map[string]bool{"audit_events": true, "pin_meta": true}

// indexDef is one index of a live table, as recreated on its copy.
type indexDef struct {
	table, name, def string // def: the CREATE INDEX statement for the copy
	constraint       string // "PRIMARY KEY" or "UNIQUE" when the index backs that constraint, else ""
}

// early says whether the copy gets the index before it is loaded: the primary keys and unique constraints the
// projectors' upserts rely on, except on the tables of pkAfterLoad, and the partial indexes of sparseIndexes.
func (x indexDef) early() bool {
	return (x.constraint != "" && !pkAfterLoad[x.table]) || sparseIndexes[x.name]
}

// sparseIndexes are partial indexes over rows that are rare by construction, cheaper to keep while loading (a
// predicate test per row, an insert now and then) than to build afterwards with a scan of the whole table:
// audit_events_lag holds only the events whose clock lagged every earlier one's.
var sparseIndexes = map[string]bool{"audit_events_lag": true}

// indexDefs lists the live tables' indexes, with definitions that create them on the copies under the same
// names (index names are per schema).
func (sh *shadow) indexDefs(ctx context.Context) ([]indexDef, error) {
	var out []indexDef
	for _, t := range append(sh.tables(), "projection_checkpoints") {
		rows, err := sh.owner.Query(ctx, `SELECT i.indexname, i.indexdef,
				CASE c.contype WHEN 'p' THEN 'PRIMARY KEY' WHEN 'u' THEN 'UNIQUE' ELSE '' END
			FROM pg_indexes i LEFT JOIN pg_constraint c ON c.conname = i.indexname AND c.conrelid = ('public.' || i.tablename)::regclass
			WHERE i.schemaname = 'public' AND i.tablename = $1 ORDER BY i.indexname`, t)
		if err != nil {
			return nil, err
		}
		for rows.Next() {
			x := indexDef{table: t}
			if err := rows.Scan(&x.name, &x.def, &x.constraint); err != nil {
				rows.Close()
				return nil, err
			}
			def := strings.Replace(x.def, " ON public."+t+" ", " ON "+pgx.Identifier{sh.schema}.Sanitize()+"."+t+" ", 1)
			if def == x.def {
				rows.Close()
				return nil, fmt.Errorf("postgres: rebuild index %s: unexpected definition %q", x.name, x.def)
			}
			x.def = def
			out = append(out, x)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// create builds the index on the copy (and makes it back its constraint, as on the live table).
func (x indexDef) create(ctx context.Context, db dbsqlc.DBTX, schema string) error {
	if _, err := db.Exec(ctx, x.def); err != nil {
		return fmt.Errorf("postgres: rebuild index %s: %w", x.name, err)
	}
	if x.constraint != "" {
		q := fmt.Sprintf("ALTER TABLE %s.%s ADD CONSTRAINT %s %s USING INDEX %s",
			pgx.Identifier{schema}.Sanitize(), x.table, pgx.Identifier{x.name}.Sanitize(), x.constraint, pgx.Identifier{x.name}.Sanitize())
		if _, err := db.Exec(ctx, q); err != nil {
			return fmt.Errorf("postgres: rebuild constraint %s: %w", x.name, err)
		}
	}
	return nil
}

// copyTriggers recreates the live tables' (non-internal) triggers on the copies.
func (sh *shadow) copyTriggers(ctx context.Context) error {
	for _, t := range sh.tables() {
		rows, err := sh.owner.Query(ctx, `SELECT tgname, pg_get_triggerdef(oid) FROM pg_trigger
			WHERE tgrelid = ('public.' || quote_ident($1))::regclass AND NOT tgisinternal ORDER BY tgname`, t)
		if err != nil {
			return err
		}
		var defs [][2]string
		for rows.Next() {
			var name, def string
			if err := rows.Scan(&name, &def); err != nil {
				rows.Close()
				return err
			}
			defs = append(defs, [2]string{name, def})
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		for _, d := range defs {
			def := strings.Replace(d[1], " ON public."+t+" ", " ON "+pgx.Identifier{sh.schema}.Sanitize()+"."+t+" ", 1)
			if def == d[1] {
				return fmt.Errorf("postgres: rebuild trigger %s: unexpected definition %q", d[0], d[1])
			}
			if _, err := sh.owner.Exec(ctx, def); err != nil {
				return fmt.Errorf("postgres: rebuild trigger %s: %w", d[0], err)
			}
		}
	}
	return nil
}

// Finishing a replayed copy is PostgreSQL work only (indexes, pin_meta, statistics), run as a graph of tasks
// on finishWorkers connections, each with indexBuildMemory of maintenance_work_mem (an index sorted in memory
// is built several times faster). Independent tasks overlap: the audit table's indexes are built while pin_meta
// is computed from pins, so both cores stay busy. Each index is built by its connection alone
// (max_parallel_maintenance_workers 0): with the workers already keeping the cores busy, PostgreSQL's parallel
// index builds only added work (partial sorts to merge, each in a share of the memory, spilling to tape).
// Measured back to back on 971,876 events: indexes and pin_meta 7.4 and 7.7 s instead of 13.1 and 9.4 s,
// PostgreSQL 22.4 and 22.6 CPU-seconds instead of 33.7 and 26.9.
const (
	finishWorkers    = 2
	indexBuildMemory = "256MB"
)

// finishTask is one statement (or a short sequence) of the finishing graph.
type finishTask struct {
	name  string
	run   func(ctx context.Context, conn *pgxpool.Conn) error
	deps  []*finishTask
	state int // 0 waiting, 1 running, 2 done
}

// finish builds what the replay left out: pin_meta and pin_meta_counts from the replayed pins, the deferred
// primary keys and every secondary index, then statistics; finally the live tables' triggers join the copies
// (they keep pin_meta in step with pins from here on, through the catch-ups).
func (sh *shadow) finish(ctx context.Context) error {
	defs := slices.Clone(sh.indexes)
	s := pgx.Identifier{sh.schema}.Sanitize()
	exec := func(q string) func(context.Context, *pgxpool.Conn) error {
		return func(ctx context.Context, c *pgxpool.Conn) error {
			_, err := c.Exec(ctx, q)
			return err
		}
	}
	var tasks []*finishTask
	loads := map[string][]*finishTask{}   // what fills a table: its indexes wait for it
	byTable := map[string][]*finishTask{} // everything done to a table: its statistics wait for it
	if slices.Contains(sh.tables(), "pin_meta") {
		// As the triggers of migration 000004 would have done row by row, in one pass: the copy is made anew by
		// CREATE TABLE AS, which writes its rows in bulk (and, in the transaction that creates the table under
		// wal_level minimal, without WAL). Its primary key, built with the other indexes, makes every column NOT
		// NULL as on the live table. INSERT … SELECT into the empty copy took twice as long (3.1-3.7 s against
		// 1.8 s for 372,574 rows), more than the two concurrent chunks it was run in saved.
		fill := &finishTask{name: "pin_meta", run: exec(fmt.Sprintf(`
DROP TABLE %[1]s.pin_meta;
CREATE TABLE %[1]s.pin_meta WITH (%[2]s) AS
SELECT n.org_id, public.pin_meta_kv(e.key, e.value) AS kv, n.status, n.pos
FROM %[1]s.pins n CROSS JOIN LATERAL jsonb_each(CASE WHEN jsonb_typeof(n.meta) = 'object' THEN n.meta END) e
WHERE n.meta IS NOT NULL`, s, shadowAutovacuumOff))}
		fills := []*finishTask{fill}
		counts := &finishTask{name: "pin_meta_counts", deps: fills, run: exec(fmt.Sprintf(`
INSERT INTO %[1]s.pin_meta_counts (org_id, kv, status, bucket, n)
SELECT org_id, kv, status, pos / 1024, count(*) FROM %[1]s.pin_meta GROUP BY 1, 2, 3, 4`, s))}
		tasks = append(tasks, fills...)
		tasks = append(tasks, counts)
		loads["pin_meta"], loads["pin_meta_counts"] = fills, []*finishTask{counts}
		byTable["pin_meta"] = append(byTable["pin_meta"], fills...)
		byTable["pin_meta_counts"] = append(byTable["pin_meta_counts"], counts)
	}
	// Indexes of the largest tables first: the graph's length is set by them.
	sizes := map[string]int64{}
	for _, t := range sh.tables() {
		var n int64
		if err := sh.owner.QueryRow(ctx, "SELECT pg_relation_size($1::regclass)", sh.schema+"."+t).Scan(&n); err != nil {
			return err
		}
		sizes[t] = n
	}
	slices.SortStableFunc(defs, func(a, b indexDef) int {
		return cmp.Compare(sizes[b.table], sizes[a.table])
	})
	for _, x := range defs {
		if x.early() {
			continue // built by create
		}
		if sh.scratch && x.constraint == "" {
			continue
		}
		t := &finishTask{name: "index " + x.name, deps: loads[x.table], run: func(ctx context.Context, c *pgxpool.Conn) error {
			return x.create(ctx, c, sh.schema)
		}}
		tasks = append(tasks, t)
		byTable[x.table] = append(byTable[x.table], t)
	}
	for _, t := range sh.tables() {
		tasks = append(tasks, &finishTask{name: "analyze " + t, deps: byTable[t], run: exec("ANALYZE " + pgx.Identifier{sh.schema, t}.Sanitize())})
	}
	if err := sh.runTasks(ctx, tasks, finishWorkers); err != nil {
		return err
	}
	return sh.copyTriggers(ctx)
}

// runTasks runs tasks on workers connections, each task once all its deps are done, preferring earlier tasks.
// The first failure cancels the rest and is returned.
func (sh *shadow) runTasks(ctx context.Context, tasks []*finishTask, workers int) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var mu sync.Mutex
	cond := sync.NewCond(&mu)
	// take returns the first waiting task whose deps are done (marked running), or nil when none is left or the
	// run failed; it waits while tasks are waiting on running ones. mu is held.
	take := func() *finishTask {
		for ctx.Err() == nil {
			waiting := false
			for _, t := range tasks {
				if t.state != 0 {
					continue
				}
				waiting = true
				if !slices.ContainsFunc(t.deps, func(d *finishTask) bool { return d.state != 2 }) {
					t.state = 1
					return t
				}
			}
			if !waiting {
				return nil
			}
			cond.Wait()
		}
		return nil
	}
	fail := func(err error) {
		mu.Lock()
		cancel(err)
		cond.Broadcast()
		mu.Unlock()
	}
	var wg sync.WaitGroup
	for range min(workers, len(tasks)) {
		wg.Go(func() {
			conn, err := sh.owner.Acquire(ctx)
			if err != nil {
				fail(err)
				return
			}
			defer conn.Release()
			if _, err := conn.Exec(ctx, "SET maintenance_work_mem = '"+indexBuildMemory+"'"); err != nil {
				fail(err)
				return
			}
			defer conn.Exec(context.WithoutCancel(ctx), "RESET maintenance_work_mem") //nolint:errcheck
			if _, err := conn.Exec(ctx, "SET max_parallel_maintenance_workers = 0"); err != nil {
				fail(err)
				return
			}
			defer conn.Exec(context.WithoutCancel(ctx), "RESET max_parallel_maintenance_workers") //nolint:errcheck
			for {
				mu.Lock()
				t := take()
				mu.Unlock()
				if t == nil {
					return
				}
				t0 := time.Now()
				if err := t.run(ctx, conn); err != nil {
					fail(fmt.Errorf("postgres: rebuild %s: %w", t.name, err))
					return
				}
				sh.log.Debug("rebuild task done", "task", t.name, "took", time.Since(t0))
				mu.Lock()
				t.state = 2
				cond.Broadcast()
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return context.Cause(ctx)
}

// build replays the log into the copies up to its head, then finishes them (indexes, pin_meta, statistics) and
// catches up with what was appended meanwhile.
func (sh *shadow) build(ctx context.Context, src RebuildSource) (RebuildStats, error) {
	var st RebuildStats
	t0 := time.Now()
	head, err := src.LastSeq(ctx)
	if err != nil {
		return st, err
	}
	if err := sh.catchUp(ctx, src, func(string) uint64 { return head }); err != nil {
		return st, err
	}
	st.Replay = time.Since(t0)
	t1 := time.Now()
	if err := sh.finish(ctx); err != nil {
		return st, err
	}
	st.Indexes = time.Since(t1)
	head, err = src.LastSeq(ctx)
	if err != nil {
		return st, err
	}
	return st, sh.catchUp(ctx, src, func(string) uint64 { return head })
}

// catchUp applies every projection's events from its shadow checkpoint up to until(projection). The log is read
// once, over the union of the projections' subjects, and decoded once; each projection applies its share on
// its own connection, concurrently with the others and with the reading (a few batches are buffered per
// projection).
func (sh *shadow) catchUp(ctx context.Context, src RebuildSource, until func(string) uint64) error {
	type lane struct {
		p        projections.Projector
		filters  []string
		from, to uint64
		batch    int
		pending  []events.Record
		ch       chan []events.Record
	}
	var lanes []*lane
	var filters []string
	lo, hi := uint64(0), uint64(0)
	for _, p := range sh.projs {
		from, err := p.Checkpoint(ctx)
		if err != nil {
			return err
		}
		from = max(from, sh.seen[p.Name()])
		to := until(p.Name())
		if to > sh.head {
			sh.head = to
		}
		if from >= to {
			continue
		}
		batch := sh.opts.Batch
		if fb, ok := p.(foldBatcher); ok && !sh.fixedBatch {
			batch = fb.RebuildBatch()
		}
		lanes = append(lanes, &lane{p: p, filters: p.Filters(), from: from, to: to, batch: batch})
		for _, f := range p.Filters() {
			if !slices.Contains(filters, f) {
				filters = append(filters, f)
			}
		}
		if lo == 0 || from+1 < lo {
			lo = from + 1
		}
		hi = max(hi, to)
	}
	if len(lanes) == 0 {
		return nil
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var wg sync.WaitGroup
	var mu sync.Mutex
	for _, l := range lanes {
		// A few batches buffered, but one at most of a lane with large batches (memory).
		l.ch = make(chan []events.Record, 2)
		if l.batch > sh.opts.Batch {
			l.ch = make(chan []events.Record, 1)
		}
		wg.Go(func() {
			prev := l.from
			// A copy loaded from scratch by a projector that can hold its whole load in one transaction.
			if b, ok := l.p.(bulkLoader); ok && l.from == 0 {
				if err := b.BeginBulk(ctx, sh.schema); err != nil {
					cancel(fmt.Errorf("rebuild %s: %w", l.p.Name(), err))
				} else {
					defer func() {
						if err := b.EndBulk(ctx, ctx.Err() == nil); err != nil {
							cancel(fmt.Errorf("rebuild %s: commit its load: %w", l.p.Name(), err))
						}
					}()
				}
			}
			for recs := range l.ch {
				if ctx.Err() != nil {
					continue // drain
				}
				var err error
				if b, ok := l.p.(bulkApplier); ok {
					err = b.ApplyBulk(ctx, prev, recs)
				} else {
					err = l.p.Apply(ctx, prev, recs)
				}
				if err != nil {
					cancel(fmt.Errorf("rebuild %s at event %d: %w", l.p.Name(), recs[0].Seq, err))
					continue
				}
				prev = recs[len(recs)-1].Seq
				mu.Lock()
				sh.applied += uint64(len(recs))
				sh.progress[l.p.Name()] += uint64(len(recs))
				if sh.opts.Progress != nil {
					sh.opts.Progress(l.p.Name(), prev, l.to)
				}
				mu.Unlock()
			}
		})
	}
	send := func(l *lane) bool {
		if len(l.pending) == 0 {
			return true
		}
		select {
		case l.ch <- l.pending:
			l.pending = nil
			return true
		case <-ctx.Done():
			return false
		}
	}
	err := src.ReadUntil(ctx, lo, hi, filters, sh.opts.Batch, func(recs []events.Record) error {
		for _, l := range lanes {
			for _, r := range recs {
				if r.Seq > l.from && r.Seq <= l.to && events.MatchesAny(l.filters, r.Subject) {
					if l.pending == nil {
						l.pending = make([]events.Record, 0, min(l.batch, 1<<16))
					}
					l.pending = append(l.pending, r)
					if len(l.pending) == l.batch && !send(l) {
						return context.Cause(ctx)
					}
				}
			}
		}
		return nil
	})
	for _, l := range lanes {
		if err == nil && !send(l) {
			err = context.Cause(ctx)
		}
		close(l.ch)
	}
	wg.Wait()
	if cause := context.Cause(ctx); cause != nil && !errors.Is(cause, context.Canceled) {
		return cause // a projection failed: that is the error, not the reader's cancellation
	}
	if err != nil {
		return err
	}
	for _, l := range lanes {
		sh.seen[l.p.Name()] = l.to
	}
	return nil
}

// bulkApplier is a projector that can load a batch into a fresh shadow table faster than Apply does (COPY, say:
// the shadow tables have neither row-level security nor secondary indexes while they are filled). The result
// must be exactly Apply's.
type bulkApplier interface {
	ApplyBulk(ctx context.Context, prev uint64, recs []events.Record) error
}

// foldBatcher is a projector that folds a batch in memory before writing it and writes less the more of a
// row's events one batch holds (PinsProjector): a rebuild gives it batches of RebuildBatch events.
type foldBatcher interface {
	RebuildBatch() int
}

// bulkLoader is a bulkApplier that can load a fresh copy from scratch in one transaction (see
// AuditProjector.BeginBulk): BeginBulk before the first batch, EndBulk after the last, committing or not.
type bulkLoader interface {
	bulkApplier
	BeginBulk(ctx context.Context, schema string) error
	EndBulk(ctx context.Context, commit bool) error
}

// swap moves the copies in. It locks the live checkpoints of the rebuilt projections (the live projector
// waits), catches the copies up to the head of the log, gives them the live tables' row-level security,
// policies and grants, replaces the live tables and sets the checkpoints, in one transaction.
func (sh *shadow) swap(ctx context.Context, src RebuildSource) error {
	tx, err := sh.owner.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	if _, err := tx.Exec(ctx, "SET LOCAL lock_timeout = '10s'"); err != nil {
		return err
	}
	if _, err := tx.Exec(ctx, `SELECT name FROM projection_checkpoints WHERE name = ANY($1) FOR UPDATE`, sh.names); err != nil {
		return fmt.Errorf("postgres: lock checkpoints: %w", err)
	}
	head, err := src.LastSeq(ctx)
	if err != nil {
		return err
	}
	if err := sh.catchUp(ctx, src, func(string) uint64 { return head }); err != nil {
		return err
	}
	s, r := pgx.Identifier{sh.schema}.Sanitize(), pgx.Identifier{sh.retired()}.Sanitize()
	if _, err := tx.Exec(ctx, "CREATE SCHEMA "+r); err != nil {
		return fmt.Errorf("postgres: swap: %w", err)
	}
	for _, t := range sh.tables() {
		if err := sh.copySecurity(ctx, tx, t); err != nil {
			return err
		}
		// The live table moves out rather than being dropped here (see retired). A DROP that would fail (a view or
		// a foreign key of someone else's on the table) fails the swap as it did, before anything is replaced: it
		// is tried in a savepoint and undone, which also undoes the unlinking of its files.
		for _, q := range []string{
			fmt.Sprintf("ALTER TABLE %s.%s %s", s, t, shadowAutovacuumReset),
			"SAVEPOINT replaceable",
			"DROP TABLE public." + t,
			"ROLLBACK TO SAVEPOINT replaceable",
			fmt.Sprintf("ALTER TABLE public.%s SET SCHEMA %s", t, r),
			fmt.Sprintf("ALTER TABLE %s.%s SET SCHEMA public", s, t),
		} {
			if _, err := tx.Exec(ctx, q); err != nil {
				return fmt.Errorf("postgres: swap %s (%s): %w", t, q, err)
			}
		}
	}
	if sh.apiRole != "" {
		if _, err := tx.Exec(ctx, "GRANT SELECT ON ALL TABLES IN SCHEMA public TO "+pgx.Identifier{sh.apiRole}.Sanitize()); err != nil {
			return err
		}
	}
	if _, err := tx.Exec(ctx, fmt.Sprintf(`INSERT INTO public.projection_checkpoints AS c (name, last_seq, updated_at)
		SELECT name, last_seq, now() FROM %s.projection_checkpoints WHERE name = ANY($1)
		ON CONFLICT (name) DO UPDATE SET last_seq = excluded.last_seq, updated_at = excluded.updated_at`, s), sh.names); err != nil {
		return err
	}
	return tx.Commit(ctx)
}

// copySecurity gives the copy of table t the live table's row-level security flags and policies.
func (sh *shadow) copySecurity(ctx context.Context, tx pgx.Tx, t string) error {
	var enabled, forced bool
	if err := tx.QueryRow(ctx, `SELECT relrowsecurity, relforcerowsecurity FROM pg_class WHERE oid = ('public.' || $1)::regclass`, t).Scan(&enabled, &forced); err != nil {
		return err
	}
	target := pgx.Identifier{sh.schema, t}.Sanitize()
	if enabled {
		if _, err := tx.Exec(ctx, "ALTER TABLE "+target+" ENABLE ROW LEVEL SECURITY"); err != nil {
			return err
		}
	}
	if forced {
		if _, err := tx.Exec(ctx, "ALTER TABLE "+target+" FORCE ROW LEVEL SECURITY"); err != nil {
			return err
		}
	}
	rows, err := tx.Query(ctx, `SELECT policyname, permissive, roles::text[], cmd, qual, with_check FROM pg_policies WHERE schemaname = 'public' AND tablename = $1`, t)
	if err != nil {
		return err
	}
	type pol struct {
		name, permissive, cmd string
		roles                 []string
		qual, check           *string
	}
	var pols []pol
	for rows.Next() {
		var p pol
		if err := rows.Scan(&p.name, &p.permissive, &p.roles, &p.cmd, &p.qual, &p.check); err != nil {
			rows.Close()
			return err
		}
		pols = append(pols, p)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	for _, p := range pols {
		roles := make([]string, len(p.roles))
		for i, r := range p.roles {
			if r == "public" {
				roles[i] = "PUBLIC"
			} else {
				roles[i] = pgx.Identifier{r}.Sanitize()
			}
		}
		q := fmt.Sprintf("CREATE POLICY %s ON %s AS %s FOR %s TO %s", pgx.Identifier{p.name}.Sanitize(), target, p.permissive, p.cmd, strings.Join(roles, ", "))
		if p.qual != nil {
			q += " USING (" + *p.qual + ")"
		}
		if p.check != nil {
			q += " WITH CHECK (" + *p.check + ")"
		}
		if _, err := tx.Exec(ctx, q); err != nil {
			return fmt.Errorf("postgres: copy policy %s on %s: %w", p.name, t, err)
		}
	}
	return nil
}

// awaitLive waits, up to timeout, until every live projection has applied at least what the copies hold: a
// live projection may trail the log a little (the audit projection gathers events for up to AuditCoalesce), and
// the copies can only be brought forward to the live checkpoints, never back.
func (sh *shadow) awaitLive(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		behind := false
		for _, p := range sh.projs {
			cp, err := p.Checkpoint(ctx)
			if err != nil {
				return err
			}
			live, err := checkpoint(ctx, sh.owner, p.Name())
			if err != nil {
				return err
			}
			behind = behind || live < cp
		}
		if !behind || time.Now().After(deadline) {
			return nil // behind after all: Verify says so
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// errNothingToRebuild is returned by Verify when asked about no projection.
var errNothingToRebuild = errors.New("postgres: nothing to rebuild")

// compareTable compares the live table t with its rebuilt copy in schema (both restricted by where) and returns
// how many rows each has that the other lacks, with a few of them as text, and how many rows the live one has. Rows are compared column by column;
// json columns (which have no equality) as text first and, where the text differs, as JSON values, so one payload
// in two spellings (jsonb's normalised one, from before migration 000006) is equal. A row whose primary key is on
// both sides with other values counts on both, as in an EXCEPT ALL each way.
//
// The rows are matched by the table's primary key, in one join. Two EXCEPT ALLs (the way it was done before)
// sorted or hashed whole rows and parsed every JSON payload: on 1,036,580 audit rows 14.1 s each way, against
// 1.9 s for the join.
func compareTable(ctx context.Context, tx pgx.Tx, t, schema, where string) (d Difference, checked int64, err error) {
	d.Table = t
	rows, err := tx.Query(ctx, `SELECT quote_ident(a.attname), a.atttypid = 'json'::regtype,
			coalesce((SELECT k.n FROM pg_index i, unnest(i.indkey) WITH ORDINALITY k(attnum, n)
				WHERE i.indrelid = a.attrelid AND i.indisprimary AND k.attnum = a.attnum), 0)
		FROM pg_attribute a WHERE a.attrelid = ('public.' || quote_ident($1))::regclass AND a.attnum > 0 AND NOT a.attisdropped
		ORDER BY a.attnum`, t)
	if err != nil {
		return d, 0, err
	}
	var cols []comparedColumn
	keys := map[int]string{} // position in the primary key (from 1) → column
	for rows.Next() {
		var c comparedColumn
		var key int
		if err := rows.Scan(&c.name, &c.json, &key); err != nil {
			rows.Close()
			return d, 0, err
		}
		cols = append(cols, c)
		if key > 0 {
			keys[key] = c.name
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return d, 0, err
	}
	if len(keys) == 0 {
		return d, 0, fmt.Errorf("postgres: verify compares %s by its primary key, and it has none", t)
	}
	var on, lv, rv, differs []string
	for i := 1; i <= len(keys); i++ {
		on = append(on, "l."+keys[i]+" = r."+keys[i])
	}
	for _, c := range cols {
		if c.json {
			differs = append(differs, fmt.Sprintf("(l.%[1]s::text IS DISTINCT FROM r.%[1]s::text AND l.%[1]s::jsonb IS DISTINCT FROM r.%[1]s::jsonb)", c.name))
		} else {
			lv, rv = append(lv, "l."+c.name), append(rv, "r."+c.name)
		}
	}
	if len(lv) > 0 {
		differs = append(differs, fmt.Sprintf("ROW(%s) IS DISTINCT FROM ROW(%s)", strings.Join(lv, ", "), strings.Join(rv, ", ")))
	}
	key := keys[1] // NOT NULL in every row: NULL only where the join found no row on that side
	from := fmt.Sprintf("FROM (SELECT * FROM public.%[1]s %[3]s) l FULL JOIN (SELECT * FROM %[2]s.%[1]s %[3]s) r ON %[4]s",
		pgx.Identifier{t}.Sanitize(), schema, where, strings.Join(on, " AND "))
	cond := fmt.Sprintf("(l.%[1]s IS NULL OR r.%[1]s IS NULL OR %[2]s)", key, strings.Join(differs, " OR "))
	if err := tx.QueryRow(ctx, fmt.Sprintf("SELECT count(l.%[1]s), count(l.%[1]s) FILTER (WHERE %[3]s), count(r.%[1]s) FILTER (WHERE %[3]s) %[2]s", key, from, cond)).
		Scan(&checked, &d.OnlyLive, &d.OnlyRebuilt); err != nil {
		return d, 0, err
	}
	sample := func(side string, n int64) ([]string, error) {
		if n == 0 {
			return nil, nil
		}
		rows, err := tx.Query(ctx, fmt.Sprintf("SELECT %[1]s::text %[2]s WHERE %[3]s AND %[1]s.%[4]s IS NOT NULL LIMIT 5", side, from, cond, key))
		if err != nil {
			return nil, err
		}
		return pgx.CollectRows(rows, pgx.RowTo[string])
	}
	if d.SampleLive, err = sample("l", d.OnlyLive); err != nil {
		return d, 0, err
	}
	d.SampleRebult, err = sample("r", d.OnlyRebuilt)
	return d, checked, err
}

// comparedColumn is one column of a compared table: its quoted name, and whether it is of type json.
type comparedColumn struct {
	name string
	json bool
}

// compareFilter restricts a comparison to rows whose presence is meaningful: count buckets that went back to
// zero may or may not exist, depending on how events were batched.
var compareFilter = map[string]string{"pin_counts": "WHERE n <> 0", "pin_meta_counts": "WHERE n <> 0"}

// Difference is a table whose rebuilt rows differ from the live ones.
type Difference struct {
	Table        string
	OnlyLive     int64    // rows the live table has and a rebuild does not
	OnlyRebuilt  int64    // rows a rebuild has and the live table does not
	SampleLive   []string // a few of those rows, as text
	SampleRebult []string
}

// VerifyReport says whether the live read models equal a rebuild from the log.
type VerifyReport struct {
	Checked     map[string]int64 // rows compared per table
	Checkpoints map[string]uint64
	Differences []Difference
}

// Verify rebuilds the read models from the log into scratch tables (with their keys, without the secondary
// indexes a rebuild builds), brings them to exactly the live checkpoints (holding those meanwhile, so the live
// tables cannot move), and compares every row.
func Verify(ctx context.Context, ownerDSN string, src RebuildSource, opts RebuildOptions) (VerifyReport, error) {
	sh, err := newShadow(ctx, ownerDSN, "", "anchorage_verify", opts, true)
	if err != nil {
		return VerifyReport{}, err
	}
	defer sh.close()
	if len(sh.projs) == 0 {
		return VerifyReport{}, errNothingToRebuild
	}
	if _, err := sh.build(ctx, src); err != nil {
		return VerifyReport{}, err
	}
	if err := sh.awaitLive(ctx, 30*time.Second); err != nil {
		return VerifyReport{}, err
	}
	tx, err := sh.owner.Begin(ctx)
	if err != nil {
		return VerifyReport{}, err
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	live := map[string]uint64{}
	rows, err := tx.Query(ctx, `SELECT name, last_seq FROM projection_checkpoints WHERE name = ANY($1) FOR SHARE`, sh.names)
	if err != nil {
		return VerifyReport{}, err
	}
	for rows.Next() {
		var n string
		var s int64
		if err := rows.Scan(&n, &s); err != nil {
			rows.Close()
			return VerifyReport{}, err
		}
		live[n] = uint64(s)
	}
	rows.Close()
	for _, p := range sh.projs {
		cp, err := p.Checkpoint(ctx)
		if err != nil {
			return VerifyReport{}, err
		}
		if cp > live[p.Name()] {
			// The rebuild read past the live projection (it lags): verify at the live position instead.
			return VerifyReport{}, fmt.Errorf("postgres: the live %s projection is at event %d, behind the log; verify again once it has caught up", p.Name(), live[p.Name()])
		}
	}
	if err := sh.catchUp(ctx, src, func(name string) uint64 { return live[name] }); err != nil {
		return VerifyReport{}, err
	}
	rep := VerifyReport{Checked: map[string]int64{}, Checkpoints: live}
	s := pgx.Identifier{sh.schema}.Sanitize()
	for _, t := range sh.tables() {
		d, checked, err := compareTable(ctx, tx, t, s, compareFilter[t])
		if err != nil {
			return rep, err
		}
		rep.Checked[t] = checked
		if d.OnlyLive > 0 || d.OnlyRebuilt > 0 {
			rep.Differences = append(rep.Differences, d)
		}
	}
	return rep, nil
}
