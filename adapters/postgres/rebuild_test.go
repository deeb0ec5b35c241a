package postgres_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/anchorage-pin/anchorage/adapters/natsjs"
	"github.com/anchorage-pin/anchorage/adapters/natsjs/natstest"
	"github.com/anchorage-pin/anchorage/adapters/postgres"
	"github.com/anchorage-pin/anchorage/domain"
	"github.com/anchorage-pin/anchorage/events"
	"github.com/anchorage-pin/anchorage/projections"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"
)

// logFixture is a real event log with the live projections following it.
type logFixture struct {
	fixture
	log    *natsjs.EventLog
	runner *projections.Runner
	cancel context.CancelFunc
	done   chan struct{}
}

func newLogFixture(t *testing.T) *logFixture {
	t.Helper()
	f := newFixture(t)
	_, l := natstest.Log(t)
	lf := &logFixture{fixture: f, log: l}
	lf.start(t)
	return lf
}

func (lf *logFixture) start(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	lf.runner = projections.NewRunner(lf.log, postgres.Projectors(lf.owner, nil), projections.RunnerConfig{Backoff: 50 * time.Millisecond})
	lf.cancel, lf.done = cancel, make(chan struct{})
	go func() { lf.runner.Run(ctx); close(lf.done) }()
	t.Cleanup(func() { lf.cancel(); <-lf.done })
}

// append writes events through the real log (each a new aggregate or with its expected sequence).
func (lf *logFixture) append(t *testing.T, subject string, e events.Event) uint64 {
	t.Helper()
	ctx := context.Background()
	_, last, err := lf.log.Load(ctx, subject)
	require.NoError(t, err)
	env, err := events.New(uuid.NewString(), time.Now(), "test:rebuild", "", e)
	require.NoError(t, err)
	seqs, err := lf.log.Append(ctx, domain.Message{Subject: subject, Expect: last, Envelope: env})
	require.NoError(t, err)
	return seqs[0]
}

// waitProjected waits until the pins projection (which reads every subject the compared read models come from)
// has applied the log's head. Not max() over all checkpoints: the audit projection can run ahead of it.
func (lf *logFixture) waitProjected(t *testing.T) {
	t.Helper()
	head, err := lf.log.LastSeq(context.Background())
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		var minSeq int64
		if err := lf.owner.QueryRow(context.Background(), "SELECT coalesce(max(last_seq), 0) FROM projection_checkpoints WHERE name = 'pins'").Scan(&minSeq); err != nil {
			return false
		}
		return uint64(minSeq) >= head
	}, 10*time.Second, 10*time.Millisecond)
}

// history writes a history with every kind of event the read models fold, and returns the request ids of the
// pins it leaves live.
func (lf *logFixture) history(t *testing.T, pins int) []string {
	t.Helper()
	lf.append(t, events.OrgSubject(orgA), events.OrgCreated{OrgID: orgA, Slug: "org-a"})
	lf.append(t, events.OrgSubject(orgB), events.OrgCreated{OrgID: orgB, Slug: "org-b"})
	lf.append(t, events.OrgSubject(orgA), events.OrgQuotaSet{OrgID: orgA, MaxPins: 1000})
	tok := uuid.NewString()
	lf.append(t, events.TokenSubject(orgA, tok), events.TokenMinted{OrgID: orgA, TokenID: tok, Subject: "ci", Scopes: []string{"pins:read"}, KeyID: "k1", IssuedAt: time.Now().UTC().Truncate(time.Second), ExpiresAt: time.Now().Add(time.Hour).UTC().Truncate(time.Second)})
	lf.append(t, events.TokenSubject(orgA, tok), events.TokenRevoked{OrgID: orgA, TokenID: tok, Reason: "test"})
	peer := "12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN"
	lf.append(t, events.NodeSubject("n1"), events.NodeRegistered{NodeID: "n1", PeerID: peer, Addrs: []string{"/ip4/127.0.0.1/tcp/4001/p2p/" + peer}})
	lf.append(t, events.SchedTerm, events.SchedTermStarted{Term: 1, SchedulerID: "n1"})
	var ids []string
	for i := 0; i < pins; i++ {
		org := orgA
		if i%3 == 0 {
			org = orgB
		}
		id := uuid.NewString()
		ids = append(ids, id)
		cid := cids[i%len(cids)]
		lf.append(t, events.PinSubject(org, id), events.PinRequested{OrgID: org, RequestID: id, CID: cid, Name: fmt.Sprint("p", i%7),
			Meta: map[string]string{"i": fmt.Sprint(i % 5)}, Created: time.Now()})
		if i%2 == 0 {
			placed := lf.append(t, events.PlaceSubject("n1", org, id), events.PinPlaced{OrgID: org, RequestID: id, NodeID: "n1", CID: cid, Term: 1})
			status := []string{"pinning", "pinned", "failed"}[i%3]
			lf.append(t, events.PlaceSubject("n1", org, id), events.PinStatusObserved{OrgID: org, RequestID: id, NodeID: "n1", CID: cid, Status: status, PlacedSeq: placed})
		}
		if i%9 == 4 {
			lf.append(t, events.PinSubject(org, id), events.PinRemoved{OrgID: org, RequestID: id})
			ids = ids[:len(ids)-1]
		}
	}
	// Two replicas (status decided among placements by PinsRederive), a move (moved_from) and an unplace, a
	// replace whose predecessor's placements wait for release, and a placement on a node that never registered:
	// in a batch of their own pin's request, or not, depending on the batching.
	peer2 := "12D3KooWPjceQrSwdWXPyLLeABRXmuqt69Rg3sBYbU1Nft9HyQ6X"
	lf.append(t, events.NodeSubject("n2"), events.NodeRegistered{NodeID: "n2", PeerID: peer2, Addrs: []string{"/ip4/127.0.0.1/tcp/4002/p2p/" + peer2}})
	term := uint64(1)
	for i := 0; i < 6; i++ {
		org, id, cid := orgA, uuid.NewString(), cids[i%len(cids)]
		ids = append(ids, id)
		lf.append(t, events.PinSubject(org, id), events.PinRequested{OrgID: org, RequestID: id, CID: cid, Name: fmt.Sprint("r", i), Created: time.Now()})
		p1 := lf.append(t, events.PlaceSubject("n1", org, id), events.PinPlaced{OrgID: org, RequestID: id, NodeID: "n1", CID: cid, Term: term})
		p2 := lf.append(t, events.PlaceSubject("n2", org, id), events.PinPlaced{OrgID: org, RequestID: id, NodeID: "n2", CID: cid, Term: term})
		lf.append(t, events.PlaceSubject("n1", org, id), events.PinStatusObserved{OrgID: org, RequestID: id, NodeID: "n1", CID: cid, Status: []string{"pinned", "failed", "pinning"}[i%3], PlacedSeq: p1})
		lf.append(t, events.PlaceSubject("n2", org, id), events.PinStatusObserved{OrgID: org, RequestID: id, NodeID: "n2", CID: cid, Status: "failed", PlacedSeq: p2,
			Info: map[string]string{"reason": "test"}})
		switch i % 3 {
		case 0: // moved from n2 to ghost (never registered), then unplaced from n2; and a pin placed after its removal
			late := uuid.NewString()
			lf.append(t, events.PinSubject(org, late), events.PinRequested{OrgID: org, RequestID: late, CID: cid, Created: time.Now()})
			lf.append(t, events.PinSubject(org, late), events.PinRemoved{OrgID: org, RequestID: late})
			lf.append(t, events.PlaceSubject("n1", org, late), events.PinPlaced{OrgID: org, RequestID: late, NodeID: "n1", CID: cid, Term: term})
			lf.append(t, events.PlaceSubject("ghost", org, id), events.PinPlaced{OrgID: org, RequestID: id, NodeID: "ghost", CID: cid, Term: term, MovedFrom: "n2"})
			lf.append(t, events.PlaceSubject("n2", org, id), events.PinUnplaced{OrgID: org, RequestID: id, NodeID: "n2", CID: cid, Reason: "moved", Term: term})
		case 1: // replaced; the successor placed on n1
			next := uuid.NewString()
			ids[len(ids)-1] = next
			lf.append(t, events.PinSubject(org, id), events.PinReplaced{OrgID: org, RequestID: id, ReplacedBy: next})
			lf.append(t, events.PinSubject(org, next), events.PinRequested{OrgID: org, RequestID: next, CID: cids[(i+1)%len(cids)], Replaces: id, Created: time.Now()})
			lf.append(t, events.PlaceSubject("n1", org, next), events.PinPlaced{OrgID: org, RequestID: next, NodeID: "n1", CID: cids[(i+1)%len(cids)], Term: term})
		case 2: // a deposed term's placement, ignored
			term++
			lf.append(t, events.SchedTerm, events.SchedTermStarted{Term: term, SchedulerID: "n2"})
			lf.append(t, events.PlaceSubject("n2", orgB, id), events.PinPlaced{OrgID: orgB, RequestID: id, NodeID: "n2", CID: cid, Term: term - 1})
		}
	}
	lf.append(t, events.NodeSubject("n1"), events.NodeCordoned{NodeID: "n1", Reason: "test"})
	lf.append(t, events.SchedMaintenance, events.MaintenanceSet{On: true, Reason: "test"})
	return ids
}

func TestVerifyAndRebuild(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	lf := newLogFixture(t)
	lf.history(t, 120)
	lf.waitProjected(t)

	// Audit payloads written before migration 000006 have jsonb's spelling ({"a": 1} where the log has {"a":1}):
	// the same values, so verify finds nothing. (Audit rows cannot be updated but by a superuser.)
	su, err := pgx.Connect(ctx, lf.db.Cluster.SuperuserDSN(lf.db.Name))
	require.NoError(t, err)
	tag, err := su.Exec(ctx, "UPDATE audit_events SET data = data::jsonb::json WHERE seq IN (SELECT seq FROM audit_events ORDER BY seq LIMIT 50) AND data::text <> data::jsonb::text")
	require.NoError(t, err)
	require.Positive(t, tag.RowsAffected(), "the log's spelling differs from jsonb's")
	require.NoError(t, su.Close(ctx))

	// The live read models equal a rebuild from the log. Verify's copies get their keys, not the secondary
	// indexes (they are compared on their keys and serve no query); a rebuild's get everything (below).
	var verifyTasks, rebuildTasks bytes.Buffer
	logTo := func(b *bytes.Buffer) *slog.Logger {
		return slog.New(slog.NewJSONHandler(b, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	rep, err := postgres.Verify(ctx, lf.db.OwnerDSN, lf.log, postgres.RebuildOptions{Logger: logTo(&verifyTasks)})
	require.NoError(t, err)
	require.Empty(t, rep.Differences)
	require.Positive(t, rep.Checked["pins"])
	require.Positive(t, rep.Checked["placements"])
	require.Contains(t, verifyTasks.String(), `"task":"index audit_events_pkey"`)
	require.Contains(t, verifyTasks.String(), `"task":"analyze pins"`)
	require.NotContains(t, verifyTasks.String(), `"task":"index audit_events_org"`)
	require.NotContains(t, verifyTasks.String(), `"task":"index pins_name_trgm"`)

	// A damaged read model is found, and the rows named: a changed row is on both sides, a lost one only in
	// the rebuild, an invented one only in the live table.
	var victim string
	require.NoError(t, lf.owner.QueryRow(ctx, "SELECT request_id::text FROM pins ORDER BY pos LIMIT 1").Scan(&victim))
	_, err = lf.owner.Exec(ctx, "UPDATE pins SET name = 'tampered' WHERE request_id = $1", victim)
	require.NoError(t, err)
	var lost string
	require.NoError(t, lf.owner.QueryRow(ctx, "DELETE FROM placements WHERE request_id = (SELECT request_id FROM placements ORDER BY placed_seq LIMIT 1) RETURNING request_id::text").Scan(&lost))
	_, err = lf.owner.Exec(ctx, "CREATE TEMP TABLE n AS SELECT * FROM nodes LIMIT 1; UPDATE n SET node_id = 'invented'; INSERT INTO nodes SELECT * FROM n; DROP TABLE n")
	require.NoError(t, err)
	rep, err = postgres.Verify(ctx, lf.db.OwnerDSN, lf.log, postgres.RebuildOptions{})
	require.NoError(t, err)
	diffs := map[string]postgres.Difference{}
	for _, d := range rep.Differences {
		diffs[d.Table] = d
	}
	require.Len(t, diffs, 3, "%+v", rep.Differences)
	require.EqualValues(t, 1, diffs["pins"].OnlyLive)
	require.EqualValues(t, 1, diffs["pins"].OnlyRebuilt)
	require.Contains(t, diffs["pins"].SampleLive[0], "tampered")
	require.Contains(t, diffs["pins"].SampleRebult[0], victim)
	require.NotContains(t, diffs["pins"].SampleRebult[0], "tampered")
	require.EqualValues(t, 0, diffs["placements"].OnlyLive)
	require.EqualValues(t, 1, diffs["placements"].OnlyRebuilt)
	require.Contains(t, diffs["placements"].SampleRebult[0], lost)
	require.EqualValues(t, 1, diffs["nodes"].OnlyLive)
	require.EqualValues(t, 0, diffs["nodes"].OnlyRebuilt)
	require.Contains(t, diffs["nodes"].SampleLive[0], "invented")

	// A rebuild repairs it, while events keep arriving and the live projector keeps running.
	var pinsBefore int
	require.NoError(t, lf.owner.QueryRow(ctx, "SELECT count(*) FROM pins").Scan(&pinsBefore))
	schemaBefore := schemaShape(t, lf)
	stop := make(chan struct{})
	appended := make(chan int)
	go func() {
		n := 0
		for {
			select {
			case <-stop:
				appended <- n
				return
			default:
			}
			id := uuid.NewString()
			// With meta: the pin_meta triggers fire on the copies during the catch-up (their dynamic statements)
			// and on the live tables (static ones).
			env, _ := events.New(uuid.NewString(), time.Now(), "test:rebuild", "", events.PinRequested{OrgID: orgA, RequestID: id, CID: cids[0], Created: time.Now(),
				Meta: map[string]string{"during": fmt.Sprint(n % 3)}})
			if _, err := lf.log.Append(ctx, domain.Message{Subject: events.PinSubject(orgA, id), Envelope: env}); err == nil {
				n++
			}
		}
	}()
	// While they are built, the copies are left alone by autovacuum.
	var copyOptions []string
	var once sync.Once
	progress := func(string, uint64, uint64) {
		once.Do(func() {
			rows, err := lf.owner.Query(ctx, `SELECT c.relname || ' ' || coalesce(array_to_string(c.reloptions, ','), '') || ' toast ' || coalesce(array_to_string(tc.reloptions, ','), '-')
				FROM pg_class c LEFT JOIN pg_class tc ON tc.oid = c.reltoastrelid
				WHERE c.relnamespace = 'anchorage_rebuild'::regnamespace AND c.relkind = 'r' ORDER BY 1`)
			if err == nil {
				copyOptions, err = pgx.CollectRows(rows, pgx.RowTo[string])
			}
			if err != nil {
				copyOptions = []string{err.Error()}
			}
		})
	}
	st, err := postgres.Rebuild(ctx, lf.db.OwnerDSN, "anchorage_api", lf.log, postgres.RebuildOptions{Batch: 37, Progress: progress, Logger: logTo(&rebuildTasks)})
	close(stop)
	n := <-appended
	require.NoError(t, err)
	require.Positive(t, st.Events)
	require.Contains(t, st.Replaced, "pins")
	lf.waitProjected(t)
	t.Logf("rebuild: %+v while %d pins were requested concurrently", st, n)
	require.Contains(t, rebuildTasks.String(), `"task":"index audit_events_org"`)
	require.Contains(t, rebuildTasks.String(), `"task":"index pins_name_trgm"`)
	require.NotEmpty(t, copyOptions)
	for _, o := range copyOptions {
		require.Regexp(t, `^\S+ autovacuum_enabled=false toast (-|autovacuum_enabled=false)$`, o)
	}

	// The rebuilt tables: the tampering is gone, concurrent writes are there, and they equal a fresh verify.
	var name *string
	require.NoError(t, lf.owner.QueryRow(ctx, "SELECT name FROM pins WHERE request_id = $1", victim).Scan(&name))
	require.NotEqual(t, "tampered", *name)
	var total int
	require.NoError(t, lf.owner.QueryRow(ctx, "SELECT count(*) FROM pins").Scan(&total))
	require.Equal(t, pinsBefore+n, total, "every pin requested during the rebuild is there, once")
	require.Positive(t, n)
	rep, err = postgres.Verify(ctx, lf.db.OwnerDSN, lf.log, postgres.RebuildOptions{})
	require.NoError(t, err)
	require.Empty(t, rep.Differences, "after rebuild")
	// Every index, primary key, constraint and trigger came back as it was (some are built after the load).
	require.Equal(t, schemaBefore, schemaShape(t, lf))

	// Row-level security survived the swap: nothing without an org, one org's rows with it.
	api, err := postgres.OpenAPIPool(ctx, lf.db.APIDSN, 2)
	require.NoError(t, err)
	defer api.Close()
	for _, table := range []string{"pins", "placements", "pin_counts", "orgs", "tokens"} {
		var c int
		require.NoError(t, api.QueryRow(ctx, "SELECT count(*) FROM "+table).Scan(&c))
		require.Zero(t, c, "API role sees %s rows without an org after the swap", table)
	}
	require.NoError(t, postgres.NewReader(api).InOrg(ctx, orgB, func(tx pgx.Tx) error {
		var other int
		if err := tx.QueryRow(ctx, "SELECT count(*) FROM pins WHERE org_id <> $1", orgB).Scan(&other); err != nil {
			return err
		}
		require.Zero(t, other)
		return nil
	}))

	// The live projector follows the log on the new tables, pin_meta included (the triggers' statements were
	// planned against the tables the swap dropped).
	id := uuid.NewString()
	lf.append(t, events.PinSubject(orgA, id), events.PinRequested{OrgID: orgA, RequestID: id, CID: cids[1], Created: time.Now(),
		Meta: map[string]string{"after": "swap"}})
	lf.waitProjected(t)
	_, err = postgres.NewReader(api).GetPin(ctx, orgA, id)
	require.NoError(t, err)
	count, _, err := postgres.NewReader(api).ListPins(ctx, projections.PinFilter{OrgID: orgA, Statuses: projections.AllStatuses, Meta: map[string]string{"after": "swap"}, Limit: 10})
	require.NoError(t, err)
	require.EqualValues(t, 1, count)
	rep, err = postgres.Verify(ctx, lf.db.OwnerDSN, lf.log, postgres.RebuildOptions{})
	require.NoError(t, err)
	require.Empty(t, rep.Differences, "after the swap and more projection")
}

func TestRebuildOnly(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	lf := newLogFixture(t)
	lf.history(t, 20)
	lf.waitProjected(t)
	st, err := postgres.Rebuild(ctx, lf.db.OwnerDSN, "anchorage_api", lf.log, postgres.RebuildOptions{Only: []string{postgres.ProjectionTokens}})
	require.NoError(t, err)
	require.Equal(t, []string{"tokens"}, st.Replaced)
	_, err = postgres.Rebuild(ctx, lf.db.OwnerDSN, "anchorage_api", lf.log, postgres.RebuildOptions{Only: []string{"nope"}})
	require.ErrorContains(t, err, `unknown projection "nope"`)
	rep, err := postgres.Verify(ctx, lf.db.OwnerDSN, lf.log, postgres.RebuildOptions{})
	require.NoError(t, err)
	require.Empty(t, rep.Differences)
}

// Verify's copies are scratch: UNLOGGED, no WAL written for them. A rebuild's copies, which go live, are not.
func TestVerifyCopiesAreUnloggedAndRebuildCopiesAreNot(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	lf := newLogFixture(t)
	lf.history(t, 20)
	lf.waitProjected(t)
	// Progress runs on the rebuild's goroutines: it records what it sees, the test checks it afterwards.
	var mu sync.Mutex
	seen := map[string][]string{}
	persistence := func(schema string) func(string, uint64, uint64) {
		return func(string, uint64, uint64) {
			var kinds []string
			err := lf.owner.QueryRow(ctx, `SELECT array_agg(DISTINCT relpersistence::text) FROM pg_class
				WHERE relnamespace = $1::regnamespace AND relkind = 'r'`, schema).Scan(&kinds)
			if err != nil {
				kinds = []string{err.Error()}
			}
			mu.Lock()
			seen[schema] = append(seen[schema], kinds...)
			mu.Unlock()
		}
	}
	_, err := postgres.Verify(ctx, lf.db.OwnerDSN, lf.log, postgres.RebuildOptions{Progress: persistence("anchorage_verify")})
	require.NoError(t, err)
	_, err = postgres.Rebuild(ctx, lf.db.OwnerDSN, "anchorage_api", lf.log, postgres.RebuildOptions{Progress: persistence("anchorage_rebuild")})
	require.NoError(t, err)
	require.NotEmpty(t, seen["anchorage_verify"])
	require.NotEmpty(t, seen["anchorage_rebuild"])
	for schema, want := range map[string]string{"anchorage_verify": "u", "anchorage_rebuild": "p"} {
		for _, k := range seen[schema] {
			require.Equal(t, want, k, schema)
		}
	}
}

// A rebuild loads the audit trail's copy in one transaction opened by TRUNCATE (so that, with wal_level =
// minimal, its rows are not also written to the WAL, and COPY can freeze them): while it loads, that
// transaction holds the copy's ACCESS EXCLUSIVE lock. Afterwards the trail equals the log's.
func TestRebuildLoadsTheAuditTrailInOneTransaction(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	lf := newLogFixture(t)
	lf.history(t, 30)
	lf.waitProjected(t)
	var mu sync.Mutex
	var held []bool
	progress := func(projection string, _, _ uint64) {
		if projection != postgres.ProjectionAudit {
			return
		}
		var locked bool
		err := lf.owner.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_locks
			WHERE relation = 'anchorage_rebuild.audit_events'::regclass AND mode = 'AccessExclusiveLock' AND granted)`).Scan(&locked)
		mu.Lock()
		held = append(held, err == nil && locked)
		mu.Unlock()
	}
	_, err := postgres.Rebuild(ctx, lf.db.OwnerDSN, "anchorage_api", lf.log, postgres.RebuildOptions{Batch: 7, Progress: progress})
	require.NoError(t, err)
	require.Greater(t, len(held), 3, "several batches")
	for i, h := range held {
		require.True(t, h, "batch %d of the audit trail's load: the load's transaction holds the copy", i)
	}
	// Loaded with COPY FREEZE: every page all-visible (the rebuild's ANALYZE counts them), nothing for
	// autovacuum to do.
	var pages, visible int32
	require.NoError(t, lf.owner.QueryRow(ctx, `SELECT relpages, relallvisible FROM pg_class WHERE oid = 'public.audit_events'::regclass`).Scan(&pages, &visible))
	require.Positive(t, pages)
	require.Equal(t, pages, visible)
	rep, err := postgres.Verify(ctx, lf.db.OwnerDSN, lf.log, postgres.RebuildOptions{Batch: 5})
	require.NoError(t, err)
	require.Empty(t, rep.Differences)
	require.Positive(t, rep.Checked["audit_events"])
}

// failingSource is a log whose reads fail after a number of batches.
type failingSource struct {
	postgres.RebuildSource
	batches int
}

var errReadBroke = errors.New("the log's read broke")

func (f failingSource) ReadUntil(ctx context.Context, from, until uint64, filters []string, maxBatch int, fn func([]events.Record) error) error {
	n := 0
	return f.RebuildSource.ReadUntil(ctx, from, until, filters, maxBatch, func(recs []events.Record) error {
		if n++; n > f.batches {
			return errReadBroke
		}
		return fn(recs)
	})
}

// A rebuild whose read fails halfway through the audit trail's load returns the failure (its load rolled back,
// its connection given back: it does not hang), replaces nothing, and the next rebuild succeeds.
func TestRebuildFailingMidLoadReplacesNothing(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	lf := newLogFixture(t)
	lf.history(t, 30)
	lf.waitProjected(t)
	before := schemaShape(t, lf)
	done := make(chan error, 1)
	go func() {
		_, err := postgres.Rebuild(ctx, lf.db.OwnerDSN, "anchorage_api", failingSource{lf.log, 3}, postgres.RebuildOptions{Batch: 5})
		done <- err
	}()
	select {
	case err := <-done:
		require.ErrorIs(t, err, errReadBroke)
	case <-time.After(time.Minute):
		t.Fatal("the failed rebuild still runs after a minute")
	}
	require.Equal(t, before, schemaShape(t, lf))
	rep, err := postgres.Verify(ctx, lf.db.OwnerDSN, lf.log, postgres.RebuildOptions{})
	require.NoError(t, err)
	require.Empty(t, rep.Differences)
	_, err = postgres.Rebuild(ctx, lf.db.OwnerDSN, "anchorage_api", lf.log, postgres.RebuildOptions{Batch: 5})
	require.NoError(t, err)
}

// schemaShape lists the public schema's indexes, constraints, storage options and triggers, by table, as definitions.
func schemaShape(t *testing.T, lf *logFixture) []string {
	t.Helper()
	rows, err := lf.owner.Query(context.Background(), `
SELECT 'index ' || tablename || ' ' || indexdef FROM pg_indexes WHERE schemaname = 'public'
UNION ALL
SELECT 'column ' || table_name || ' ' || row_number() OVER (PARTITION BY table_name ORDER BY ordinal_position) || ' ' || column_name
       || ' ' || data_type || ' ' || is_nullable || ' ' || coalesce(column_default, '') || ' ' || coalesce(generation_expression, '')
FROM information_schema.columns WHERE table_schema = 'public'
UNION ALL
SELECT 'constraint ' || conrelid::regclass::text || ' ' || conname || ' ' || pg_get_constraintdef(oid)
FROM pg_constraint WHERE connamespace = 'public'::regnamespace
UNION ALL
SELECT 'options ' || c.relname || ' ' || c.relpersistence::text || ' ' || coalesce(array_to_string(c.reloptions, ','), '') || ' toast ' || coalesce(array_to_string(tc.reloptions, ','), '')
FROM pg_class c LEFT JOIN pg_class tc ON tc.oid = c.reltoastrelid
WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'i')
UNION ALL
SELECT 'trigger ' || tgrelid::regclass::text || ' ' || pg_get_triggerdef(oid)
FROM pg_trigger WHERE NOT tgisinternal AND tgrelid::regclass::text NOT LIKE '%.%'
ORDER BY 1`)
	require.NoError(t, err)
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	require.NotEmpty(t, out)
	return out
}

// The swap moves the replaced tables out instead of dropping them in its transaction (whose commit would unlink
// their files while it holds the locks the API's reads wait on), and drops them after it: nothing of them is left.
// A table something else depends on (a view) still fails the rebuild before anything is replaced, and the tables
// a rebuild stopped after its swap left behind are dropped by the next one.
func TestRebuildDropsTheReplacedTablesAfterTheSwap(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	lf := newLogFixture(t)
	lf.history(t, 12)
	lf.waitProjected(t)
	count := func(q string) int {
		var n int
		require.NoError(t, lf.owner.QueryRow(ctx, q).Scan(&n))
		return n
	}
	pins := count("SELECT count(*) FROM pins")
	oldOID := count("SELECT 'public.pins'::regclass::oid::int")

	st, err := postgres.Rebuild(ctx, lf.db.OwnerDSN, "anchorage_api", lf.log, postgres.RebuildOptions{})
	require.NoError(t, err)
	require.Positive(t, st.Swap)
	require.Positive(t, st.Drop)
	require.Equal(t, pins, count("SELECT count(*) FROM pins"))
	require.NotEqual(t, oldOID, count("SELECT 'public.pins'::regclass::oid::int"), "pins was replaced")
	require.Zero(t, count("SELECT count(*) FROM pg_class WHERE oid = "+fmt.Sprint(oldOID)), "the replaced pins table is dropped")
	require.Zero(t, count("SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'anchorage_rebuild%'"))

	// A view on a live table: the rebuild fails as a DROP of it would, and the live table stays.
	_, err = lf.owner.Exec(ctx, "CREATE VIEW pin_cids AS SELECT cid FROM pins")
	require.NoError(t, err)
	live := count("SELECT 'public.pins'::regclass::oid::int")
	_, err = postgres.Rebuild(ctx, lf.db.OwnerDSN, "anchorage_api", lf.log, postgres.RebuildOptions{})
	require.ErrorContains(t, err, "depend")
	require.Equal(t, live, count("SELECT 'public.pins'::regclass::oid::int"))
	require.Equal(t, pins, count("SELECT count(*) FROM pin_cids"))
	require.Zero(t, count("SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'anchorage_rebuild%'"))
	_, err = lf.owner.Exec(ctx, "DROP VIEW pin_cids")
	require.NoError(t, err)

	// Tables left in the retired schema by a rebuild stopped after its swap: the next rebuild drops them.
	for _, q := range []string{"CREATE SCHEMA anchorage_rebuild_retired", "CREATE TABLE anchorage_rebuild_retired.pins (x int)"} {
		_, err = lf.owner.Exec(ctx, q)
		require.NoError(t, err)
	}
	_, err = postgres.Rebuild(ctx, lf.db.OwnerDSN, "anchorage_api", lf.log, postgres.RebuildOptions{})
	require.NoError(t, err)
	require.Zero(t, count("SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'anchorage_rebuild%'"))
	rep, err := postgres.Verify(ctx, lf.db.OwnerDSN, lf.log, postgres.RebuildOptions{})
	require.NoError(t, err)
	require.Empty(t, rep.Differences)
}
