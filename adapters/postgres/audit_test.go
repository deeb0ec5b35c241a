package postgres_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/anchorage-pin/anchorage/adapters/natsjs/natstest"
	"github.com/anchorage-pin/anchorage/adapters/postgres"
	"github.com/anchorage-pin/anchorage/adapters/postgres/pgschema"
	"github.com/anchorage-pin/anchorage/domain"
	"github.com/anchorage-pin/anchorage/events"
	"github.com/anchorage-pin/anchorage/projections"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"
)

// auditLog builds a realistic log: orgs, tokens (actors), nodes, scheduler terms, pin requests, replaces,
// removals, placements on two nodes, moves, observations, and a deposed scheduler's fenced decisions. Clocks
// disagree: some events are stamped before events earlier in the log (skew up to 40 ms).
type auditLog struct {
	rng    *rand.Rand
	seq    uint64
	now    time.Time
	skew   bool
	term   uint64
	recs   []events.Record
	actors map[string][]string // org → token actors
	live   map[string][]string // org → live request ids
	cid    map[string]string   // request → cid
	placed map[string]map[string]uint64
}

func newAuditLog(seed uint64, skew bool) *auditLog {
	return &auditLog{
		rng: rand.New(rand.NewPCG(seed, 7)), now: time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC), skew: skew,
		actors: map[string][]string{}, live: map[string][]string{}, cid: map[string]string{}, placed: map[string]map[string]uint64{},
	}
}

// add appends an event stamped 1-10 ms after the previous one (or, with skew, sometimes up to 40 ms before it).
func (l *auditLog) add(subject, actor, corr string, e events.Event) events.Record {
	l.seq++
	l.now = l.now.Add(time.Duration(1+l.rng.IntN(10)) * time.Millisecond)
	at := l.now
	if l.skew && l.rng.IntN(5) == 0 {
		at = at.Add(-time.Duration(l.rng.IntN(40_000)) * time.Microsecond)
	}
	env, err := events.New(uuid.NewString(), at, actor, corr, e)
	if err != nil {
		panic(err)
	}
	r := events.Record{Seq: l.seq, Subject: subject, Envelope: env, Event: e}
	l.recs = append(l.recs, r)
	return r
}

func (l *auditLog) org(slug string) string {
	org := domain.OrgIDForSlug(slug)
	l.add(events.OrgSubject(org), "admin:alice", uuid.NewString(), events.OrgCreated{OrgID: org, Slug: slug})
	for range 3 {
		tok := uuid.NewString()
		l.add(events.TokenSubject(org, tok), "admin:alice", uuid.NewString(), events.TokenMinted{OrgID: org, TokenID: tok, Subject: "dev",
			Scopes: []string{"pins:read"}, KeyID: "k1", IssuedAt: l.now.Truncate(time.Second), ExpiresAt: l.now.Add(time.Hour).Truncate(time.Second)})
		l.actors[org] = append(l.actors[org], "token:"+tok)
	}
	return org
}

func (l *auditLog) node(id string) {
	peer := "12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN"
	l.add(events.NodeSubject(id), "system:worker:"+id, "", events.NodeRegistered{NodeID: id, PeerID: peer, Addrs: []string{"/ip4/127.0.0.1/tcp/4001/p2p/" + peer}})
}

func (l *auditLog) startTerm() {
	l.term++
	l.add(events.SchedTerm, "system:scheduler:n1", "", events.SchedTermStarted{Term: l.term, SchedulerID: "n1"})
}

func (l *auditLog) actor(org string) string { return l.actors[org][l.rng.IntN(len(l.actors[org]))] }

func (l *auditLog) request(org, replaces string) string {
	id := uuid.NewString()
	c := cids[l.rng.IntN(len(cids))]
	l.cid[id] = c
	corr := uuid.NewString()
	actor := l.actor(org)
	req := events.PinRequested{OrgID: org, RequestID: id, CID: c, Name: fmt.Sprint("pin-", l.rng.IntN(5)),
		Meta: map[string]string{"k": fmt.Sprint(l.rng.IntN(3))}, Replaces: replaces, Created: l.now}
	if replaces != "" {
		l.add(events.PinSubject(org, replaces), actor, corr, events.PinReplaced{OrgID: org, RequestID: replaces, ReplacedBy: id})
		l.drop(org, replaces)
	}
	l.add(events.PinSubject(org, id), actor, corr, req)
	l.live[org] = append(l.live[org], id)
	return id
}

func (l *auditLog) drop(org, id string) {
	i := slices.Index(l.live[org], id)
	l.live[org] = slices.Delete(l.live[org], i, i+1)
}

func (l *auditLog) remove(org, id string) {
	l.add(events.PinSubject(org, id), l.actor(org), uuid.NewString(), events.PinRemoved{OrgID: org, RequestID: id})
	l.drop(org, id)
}

func (l *auditLog) place(org, id, node string, term uint64) uint64 {
	r := l.add(events.PlaceSubject(node, org, id), "system:scheduler:n1", "", events.PinPlaced{OrgID: org, RequestID: id, NodeID: node, CID: l.cid[id], Term: term})
	if l.placed[id] == nil {
		l.placed[id] = map[string]uint64{}
	}
	l.placed[id][node] = r.Seq
	return r.Seq
}

func (l *auditLog) unplace(org, id, node string, term uint64) {
	l.add(events.PlaceSubject(node, org, id), "system:scheduler:n1", "", events.PinUnplaced{OrgID: org, RequestID: id, NodeID: node, CID: l.cid[id], Reason: "removed", Term: term})
}

func (l *auditLog) observe(org, id, node, status string, placedSeq uint64) {
	l.add(events.PlaceSubject(node, org, id), "system:worker:"+node, "", events.PinStatusObserved{OrgID: org, RequestID: id, NodeID: node, CID: l.cid[id],
		Status: status, Info: map[string]string{"by": node, "status": status}, PlacedSeq: placedSeq})
}

// history writes n rounds of random activity over two orgs and two nodes.
func (l *auditLog) history(n int) {
	a, b := l.org("audit-a"), l.org("audit-b")
	l.node("n1")
	l.node("n2")
	l.startTerm()
	orgs := []string{a, b}
	for i := 0; i < n; i++ {
		org := orgs[l.rng.IntN(2)]
		live := l.live[org]
		switch k := l.rng.IntN(20); {
		case k < 7 || len(live) == 0:
			l.request(org, "")
		case k < 9:
			l.request(org, live[l.rng.IntN(len(live))])
		case k < 11:
			l.remove(org, live[l.rng.IntN(len(live))])
		case k < 15:
			id := live[l.rng.IntN(len(live))]
			node := []string{"n1", "n2"}[l.rng.IntN(2)]
			if s, ok := l.placed[id][node]; ok {
				l.observe(org, id, node, []string{"pinning", "pinned", "failed", "pinning"}[l.rng.IntN(4)], s)
			} else {
				l.place(org, id, node, l.term)
			}
		case k < 16:
			id := live[l.rng.IntN(len(live))]
			for node := range l.placed[id] {
				l.unplace(org, id, node, l.term)
				delete(l.placed[id], node)
				break
			}
		case k < 17:
			// A deposed scheduler decides: fenced off by every reader.
			if l.term > 1 {
				l.place(org, live[l.rng.IntN(len(live))], "n2", l.term-1)
			} else {
				l.startTerm()
			}
		case k < 18:
			l.add(events.NodeSubject("n2"), "admin:bob", uuid.NewString(), events.NodeCordoned{NodeID: "n2", Reason: "disk"})
		case k < 19:
			l.add(events.SchedMaintenance, "admin:bob", uuid.NewString(), events.MaintenanceSet{On: l.rng.IntN(2) == 0})
		default:
			l.startTerm()
		}
	}
}

// expected is the audit row an event should produce (the oracle).
type expected struct {
	projections.AuditEvent
	cidKey []byte
}

func (l *auditLog) expectedRows() []expected {
	var out []expected
	for _, r := range l.recs {
		e := expected{AuditEvent: projections.AuditEvent{Seq: r.Seq, At: r.At.Truncate(time.Microsecond), Subject: r.Subject, Type: string(r.Type),
			Version: r.Version, Actor: r.Actor, Corr: r.Corr, Data: r.Data}}
		parts := strings.Split(r.Subject, ".")
		switch parts[0] {
		case "orgs", "tokens":
			e.OrgID = parts[1]
		case "pins":
			e.OrgID, e.RequestID = parts[1], parts[2]
		case "place":
			e.OrgID, e.RequestID = parts[2], parts[3]
		}
		var c string
		switch ev := r.Event.(type) {
		case events.PinRequested:
			c = ev.CID
		case events.PinPlaced:
			c = ev.CID
		case events.PinUnplaced:
			c = ev.CID
		case events.PinStatusObserved:
			c = ev.CID
		}
		if c != "" {
			pc, _ := domain.ParseCID(c)
			e.cidKey = pc.Key
		}
		out = append(out, e)
	}
	return out
}

func (e expected) matches(f projections.AuditFilter) bool {
	switch {
	case !f.AllOrgs && e.OrgID != f.OrgID,
		f.AllOrgs && f.OrgID != "" && e.OrgID != f.OrgID,
		f.Actor != "" && e.Actor != f.Actor,
		f.Type != "" && e.Type != f.Type,
		f.RequestID != "" && e.RequestID != f.RequestID,
		f.CIDKey != nil && !bytes.Equal(e.cidKey, f.CIDKey),
		!f.Since.IsZero() && e.At.Before(f.Since),
		!f.Until.IsZero() && !e.At.Before(f.Until),
		f.BeforeSeq > 0 && e.Seq >= f.BeforeSeq:
		return false
	}
	return true
}

type auditFixture struct {
	db     pgschema.DB
	owner  *pgxpool.Pool
	api    *pgxpool.Pool
	reader *postgres.Reader
	pins   projections.Projector
	audit  *postgres.AuditProjector
}

func newAuditFixture(tb testing.TB) auditFixture {
	tb.Helper()
	ctx := context.Background()
	db := pgschema.New(tb)
	owner, err := postgres.OpenOwnerPool(ctx, db.OwnerDSN, 4)
	require.NoError(tb, err)
	tb.Cleanup(owner.Close)
	api, err := postgres.OpenAPIPool(ctx, db.APIDSN, 4)
	require.NoError(tb, err)
	tb.Cleanup(api.Close)
	return auditFixture{db: db, owner: owner, api: api, reader: postgres.NewReader(api), pins: postgres.NewPinsProjector(owner),
		audit: postgres.NewAuditProjector(owner).WithCoalesce(0)}
}

func (f auditFixture) applyAudit(t testing.TB, recs []events.Record, batch int) {
	t.Helper()
	ctx := context.Background()
	prev, err := f.audit.Checkpoint(ctx)
	require.NoError(t, err)
	for i := 0; i < len(recs); i += batch {
		b := recs[i:min(i+batch, len(recs))]
		require.NoError(t, f.audit.Apply(ctx, prev, b))
		prev = b[len(b)-1].Seq
	}
}

// auditDump returns every audit row, every column, as text.
func auditDump(t testing.TB, pool *pgxpool.Pool) []string {
	t.Helper()
	rows, err := pool.Query(context.Background(), `SELECT seq, at, subject, type, version, actor, corr, org_id, request_id,
		encode(cid_key, 'hex'), data::text, at_max, at_lag FROM audit_events ORDER BY seq`)
	require.NoError(t, err)
	defer rows.Close()
	var out []string
	for rows.Next() {
		vals, err := rows.Values()
		require.NoError(t, err)
		out = append(out, fmt.Sprint(vals...))
	}
	require.NoError(t, rows.Err())
	return out
}

// The rows are the events, as recorded; the same with any batching; a redelivered batch (or a second
// instance's) is refused by the checkpoint and a replay over existing rows inserts nothing; nothing can change
// or delete a row, not even the owner.
func TestAuditProjectionRowsAndIdempotency(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	l := newAuditLog(1, true)
	l.history(400)

	one := newAuditFixture(t)
	one.applyAudit(t, l.recs, 1)
	big := newAuditFixture(t)
	big.applyAudit(t, l.recs, 1000)
	mid := newAuditFixture(t)
	prev := uint64(0)
	for i := 0; i < len(l.recs); i += 37 {
		b := l.recs[i:min(i+37, len(l.recs))]
		require.NoError(t, mid.audit.Apply(ctx, prev, b))
		// Redelivered: the checkpoint moved, nothing is applied.
		require.ErrorIs(t, mid.audit.Apply(ctx, prev, b), projections.ErrCheckpointMoved)
		prev = b[len(b)-1].Seq
	}
	want := auditDump(t, one.owner)
	require.Len(t, want, len(l.recs))
	require.Equal(t, want, auditDump(t, big.owner))
	require.Equal(t, want, auditDump(t, mid.owner))

	// A rebuild's load (COPY, binary, encoded by hand) stores the same rows, clock disorder included. It loads
	// a fresh copy without forced row-level security, which COPY refuses.
	bulk := newAuditFixture(t)
	_, err := bulk.owner.Exec(ctx, "ALTER TABLE audit_events NO FORCE ROW LEVEL SECURITY")
	require.NoError(t, err)
	prev = 0
	for i := 0; i < len(l.recs); i += 150 {
		b := l.recs[i:min(i+150, len(l.recs))]
		require.NoError(t, bulk.audit.ApplyBulk(ctx, prev, b))
		prev = b[len(b)-1].Seq
	}
	require.Equal(t, want, auditDump(t, bulk.owner))
	var lags int
	require.NoError(t, bulk.owner.QueryRow(ctx, "SELECT count(*) FROM audit_events WHERE at_lag IS NOT NULL").Scan(&lags))
	require.Positive(t, lags, "the history has clock disorder")

	// A replay from the start over the existing rows (a checkpoint reset) inserts nothing and changes nothing.
	_, err = big.owner.Exec(ctx, "UPDATE projection_checkpoints SET last_seq = 0 WHERE name = 'audit'")
	require.NoError(t, err)
	fresh := postgres.NewAuditProjector(big.owner)
	for i := 0; i < len(l.recs); i += 100 {
		b := l.recs[i:min(i+100, len(l.recs))]
		var from uint64
		if i > 0 {
			from = l.recs[i-1].Seq
		}
		require.NoError(t, fresh.Apply(ctx, from, b))
	}
	require.Equal(t, want, auditDump(t, big.owner))

	// Every column is what the event says.
	rows, err := postgres.NewAuditReader(one.api, one.owner).AuditEvents(ctx, projections.AuditFilter{AllOrgs: true, Limit: 100000})
	require.NoError(t, err)
	slices.Reverse(rows)
	exp := l.expectedRows()
	require.Len(t, rows, len(exp))
	for i, e := range exp {
		got := rows[i]
		require.JSONEq(t, string(e.Data), string(got.Data), "event %d", e.Seq)
		got.Data, e.Data = nil, nil
		require.Equal(t, e.AuditEvent, got, "event %d", e.Seq)
	}

	// There is no way to change the trail: no UPDATE, DELETE or TRUNCATE, even for the owner.
	for _, q := range []string{"UPDATE audit_events SET actor = 'x'", "DELETE FROM audit_events", "TRUNCATE audit_events"} {
		_, err := one.owner.Exec(ctx, q)
		require.ErrorContains(t, err, "permission denied", q)
	}
	require.Equal(t, want, auditDump(t, one.owner))
}

// The time index is exact where clocks disagree: at_max never decreases and at_lag records only new worsts.
func TestAuditTimeIndex(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newAuditFixture(t)
	base := time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)
	var recs []events.Record
	for i, ms := range []int{0, 10, 5, 20, 19, 1, 30, 30, 29} { // stamps, in log order
		env, err := events.New(uuid.NewString(), base.Add(time.Duration(ms)*time.Millisecond), "system:test", "", events.SchedTermStarted{Term: uint64(i)})
		require.NoError(t, err)
		recs = append(recs, events.Record{Seq: uint64(i + 1), Subject: events.SchedTerm, Envelope: env, Event: events.SchedTermStarted{Term: uint64(i)}})
	}
	f.applyAudit(t, recs, 2)
	rows, err := f.owner.Query(ctx, "SELECT (extract(epoch FROM at_max - $1) * 1000)::int, coalesce((extract(epoch FROM at_lag) * 1000)::int, -1) FROM audit_events ORDER BY seq", base)
	require.NoError(t, err)
	var maxes, lags []int
	for rows.Next() {
		var m, l int
		require.NoError(t, rows.Scan(&m, &l))
		maxes, lags = append(maxes, m), append(lags, l)
	}
	require.NoError(t, rows.Err())
	require.Equal(t, []int{0, 10, 10, 20, 20, 20, 30, 30, 30}, maxes)
	require.Equal(t, []int{-1, -1, 5, -1, -1, 19, -1, -1, -1}, lags)

	var lo, hi int64
	// since 19 ms: from the first event whose at_max reaches it (seq 4); until 2 ms: below the first whose
	// at_max reaches 2 + 19 (the worst lag) ms, seq 7.
	require.NoError(t, f.owner.QueryRow(ctx, "SELECT audit_first_seq($1), audit_first_seq($2::timestamptz + audit_max_lag())", base.Add(19*time.Millisecond), base.Add(2*time.Millisecond)).Scan(&lo, &hi))
	require.Equal(t, []int64{4, 7}, []int64{lo, hi})
	r := postgres.NewAuditReader(f.owner, f.owner)
	got, err := r.AuditEvents(ctx, projections.AuditFilter{AllOrgs: true, Until: base.Add(2 * time.Millisecond), Limit: 10})
	require.NoError(t, err)
	require.Equal(t, []uint64{6, 1}, seqs(got), "events stamped before 2 ms, wherever they are in the log")
	got, err = r.AuditEvents(ctx, projections.AuditFilter{AllOrgs: true, Since: base.Add(19 * time.Millisecond), Limit: 10})
	require.NoError(t, err)
	require.Equal(t, []uint64{9, 8, 7, 5, 4}, seqs(got))
}

func seqs(evs []projections.AuditEvent) []uint64 {
	out := make([]uint64, len(evs))
	for i, e := range evs {
		out[i] = e.Seq
	}
	return out
}

// The API role sees no audit row without an org, exactly its org's rows with one and never the events of no org;
// only the owner role sees every row. The API role cannot write.
func TestAuditRowLevelSecurity(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	l := newAuditLog(2, false)
	l.history(150)
	f := newAuditFixture(t)
	f.applyAudit(t, l.recs, 50)
	a, b := domain.OrgIDForSlug("audit-a"), domain.OrgIDForSlug("audit-b")

	count := func(pool *pgxpool.Pool, org string) (total, nullOrg int, orgs []string) {
		err := pgx.BeginTxFunc(ctx, pool, pgx.TxOptions{AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
			if org != "" {
				if _, err := tx.Exec(ctx, "SELECT set_config('app.org_id', $1, true)", org); err != nil {
					return err
				}
			}
			if err := tx.QueryRow(ctx, "SELECT count(*), count(*) FILTER (WHERE org_id IS NULL) FROM audit_events").Scan(&total, &nullOrg); err != nil {
				return err
			}
			rows, err := tx.Query(ctx, "SELECT DISTINCT org_id::text FROM audit_events WHERE org_id IS NOT NULL ORDER BY 1")
			if err != nil {
				return err
			}
			orgs, err = pgx.CollectRows(rows, pgx.RowTo[string])
			return err
		})
		require.NoError(t, err)
		return total, nullOrg, orgs
	}
	n, _, _ := count(f.api, "")
	require.Zero(t, n, "no org: no rows")
	n, nulls, orgs := count(f.api, a)
	require.Positive(t, n)
	require.Zero(t, nulls, "a tenant never sees events of no org")
	require.Equal(t, []string{a}, orgs)
	n, nulls, orgs = count(f.owner, "")
	require.Len(t, l.recs, n)
	require.Positive(t, nulls)
	require.ElementsMatch(t, []string{a, b}, orgs)

	// The reader, scoped to one org, never returns another's events, even asked for them by id.
	r := postgres.NewAuditReader(f.api, nil)
	evs, err := r.AuditEvents(ctx, projections.AuditFilter{OrgID: a, Limit: 1000})
	require.NoError(t, err)
	require.NotEmpty(t, evs)
	for _, e := range evs {
		require.Equal(t, a, e.OrgID)
	}
	var other string
	for _, r := range l.recs {
		if e, ok := r.Event.(events.PinRequested); ok && e.OrgID == b {
			other = e.RequestID
			break
		}
	}
	require.NotEmpty(t, other)
	evs, err = r.AuditEvents(ctx, projections.AuditFilter{OrgID: a, RequestID: other, Limit: 10})
	require.NoError(t, err)
	require.Empty(t, evs)
	_, err = r.PinHistory(ctx, a, other)
	require.ErrorIs(t, err, domain.ErrNotFound)
	// Every org needs the owner pool; without one the reader refuses rather than read less.
	_, err = r.AuditEvents(ctx, projections.AuditFilter{AllOrgs: true, Limit: 10})
	require.ErrorIs(t, err, domain.ErrUnavailable)

	// The API role cannot write, and the org setting does not outlive its transaction.
	err = pgx.BeginTxFunc(ctx, f.api, pgx.TxOptions{}, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, "INSERT INTO audit_events (seq, at, subject, type, version, actor, data, at_max) VALUES (999999, now(), 'x', 'x', 1, 'x', '{}', now())")
		return err
	})
	require.Error(t, err)
	one, err := postgres.OpenAPIPool(ctx, f.db.APIDSN, 1)
	require.NoError(t, err)
	defer one.Close()
	_, err = postgres.NewAuditReader(one, nil).AuditEvents(ctx, projections.AuditFilter{OrgID: a, Limit: 5})
	require.NoError(t, err)
	require.NoError(t, one.QueryRow(ctx, "SELECT count(*) FROM audit_events").Scan(&n))
	require.Zero(t, n, "the org setting leaked out of its transaction")
}

// Every filter, alone and combined, as a tenant and as a sysadmin, paged with the cursor, returns exactly what a
// brute-force evaluation of the log does, in order, without duplicates or gaps.
func TestAuditFiltersMatchBruteForce(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	l := newAuditLog(3, true)
	l.history(700)
	f := newAuditFixture(t)
	f.applyAudit(t, l.recs, 64)
	exp := l.expectedRows()
	a, b := domain.OrgIDForSlug("audit-a"), domain.OrgIDForSlug("audit-b")
	api, owner := postgres.NewAuditReader(f.api, f.owner), postgres.NewAuditReader(f.owner, f.owner)
	rng := rand.New(rand.NewPCG(3, 3))

	pick := func() expected { return exp[rng.IntN(len(exp))] }
	for i := 0; i < 300; i++ {
		var flt projections.AuditFilter
		switch rng.IntN(3) {
		case 0:
			flt.OrgID = a
		case 1:
			flt.AllOrgs = true
		default:
			flt.AllOrgs, flt.OrgID = true, b
		}
		var desc []string
		mask := rng.IntN(64)
		if i < 64 {
			mask = i // every combination once
		}
		if mask&1 != 0 {
			flt.Actor = pick().Actor
			desc = append(desc, "actor")
		}
		if mask&2 != 0 {
			flt.Type = pick().Type
			desc = append(desc, "type")
		}
		if mask&4 != 0 {
			if e := pick(); e.RequestID != "" {
				flt.RequestID = e.RequestID
				desc = append(desc, "request")
			}
		}
		if mask&8 != 0 {
			flt.CIDKey = pick().cidKey
			if flt.CIDKey == nil {
				flt.CIDKey = []byte{0x12, 0x20, 1}
			}
			desc = append(desc, "cid")
		}
		if flt.OrgID == "" && rng.IntN(4) == 0 {
			flt.RequestID, flt.CIDKey = "", nil // mostly unselective sysadmin queries too
		}
		// Time bounds mostly at (or a microsecond off) the stamp of an event the other filters match, so the
		// boundaries are hit.
		var near []expected
		for _, e := range exp {
			if e.matches(flt) {
				near = append(near, e)
			}
		}
		at := func() time.Time {
			e := pick()
			if len(near) > 0 && rng.IntN(4) > 0 {
				e = near[rng.IntN(len(near))]
			}
			return e.At.Add(time.Duration(rng.IntN(3)-1) * time.Microsecond)
		}
		if mask&16 != 0 {
			flt.Since = at()
			desc = append(desc, "since")
		}
		if mask&32 != 0 {
			flt.Until = at()
			desc = append(desc, "until")
		}
		var want []uint64
		for j := len(exp) - 1; j >= 0; j-- {
			if exp[j].matches(flt) {
				want = append(want, exp[j].Seq)
			}
		}
		r := api
		if rng.IntN(4) == 0 {
			r = owner // operators read through the owner role: the same answers
		}
		flt.Limit = 1 + rng.IntN(40)
		var got []uint64
		for page := 0; ; page++ {
			require.Less(t, page, 1000)
			evs, err := r.AuditEvents(ctx, flt)
			require.NoError(t, err)
			require.LessOrEqual(t, len(evs), flt.Limit)
			got = append(got, seqs(evs)...)
			if len(evs) < flt.Limit {
				break
			}
			flt.BeforeSeq = evs[len(evs)-1].Seq
		}
		require.Equal(t, want, got, "filter %d (%s) %+v", i, strings.Join(desc, ","), flt)
	}
}

// Pages read newest first with the cursor while events keep being appended and projected never repeat or skip
// an event: the pages hold exactly the matching events below the first page's newest.
func TestAuditCursorWhileAppending(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newAuditFixture(t)
	f.audit = postgres.NewAuditProjector(f.owner) // as in production: small batches gather
	_, log := natstest.Log(t)
	runner := projections.NewRunner(log, []projections.Projector{f.audit}, projections.RunnerConfig{Backoff: 20 * time.Millisecond})
	rctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { runner.Run(rctx) })
	defer func() { cancel(); wg.Wait() }()

	org := domain.OrgIDForSlug("audit-cursor")
	appendPin := func(actor string) error {
		id := uuid.NewString()
		env, err := events.New(uuid.NewString(), time.Now(), actor, "", events.PinRequested{OrgID: org, RequestID: id, CID: cids[0], Created: time.Now()})
		if err != nil {
			return err
		}
		_, err = log.Append(ctx, domain.Message{Subject: events.PinSubject(org, id), Envelope: env})
		return err
	}
	for i := 0; i < 200; i++ {
		require.NoError(t, appendPin([]string{"token:a", "token:b"}[i%2]))
	}
	require.Eventually(t, func() bool { cp, _ := f.audit.Checkpoint(ctx); return cp >= 200 }, 10*time.Second, 5*time.Millisecond)

	var appended atomic.Int64
	stop := make(chan struct{})
	var writers sync.WaitGroup
	writers.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if appendPin([]string{"token:a", "token:b"}[i%2]) == nil {
				appended.Add(1)
			}
		}
	})
	r := postgres.NewAuditReader(f.api, f.owner)
	for _, flt := range []projections.AuditFilter{{OrgID: org, Limit: 7}, {OrgID: org, Actor: "token:a", Limit: 5}, {AllOrgs: true, Type: "pin.requested", Limit: 9}} {
		var got []uint64
		first := uint64(0)
		for {
			evs, err := r.AuditEvents(ctx, flt)
			require.NoError(t, err)
			if first == 0 && len(evs) > 0 {
				first = evs[0].Seq
			}
			got = append(got, seqs(evs)...)
			if len(evs) < flt.Limit {
				break
			}
			flt.BeforeSeq = evs[len(evs)-1].Seq
			time.Sleep(time.Millisecond) // let appends land between pages
		}
		// The same query at once, from just above the first page: the reference.
		ref := flt
		ref.BeforeSeq, ref.Limit = first+1, 100000
		want, err := r.AuditEvents(ctx, ref)
		require.NoError(t, err)
		require.Equal(t, seqs(want), got, "filter %+v", flt)
		require.True(t, slices.IsSortedFunc(got, func(x, y uint64) int { return int(y) - int(x) }))
	}
	close(stop)
	writers.Wait()
	require.Positive(t, appended.Load(), "events were appended while paging")
}

// Small batches gather: one is applied only once the coalescing interval has passed since the previous one;
// a large batch goes at once, and so does one after a quiet spell.
func TestAuditProjectorCoalesces(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	l := newAuditLog(6, false)
	l.history(400)
	f := newAuditFixture(t)
	p := postgres.NewAuditProjector(f.owner).WithCoalesce(300 * time.Millisecond)
	timed := func(prev uint64, recs []events.Record) time.Duration {
		t0 := time.Now()
		require.NoError(t, p.Apply(ctx, prev, recs))
		return time.Since(t0)
	}
	require.Less(t, timed(0, l.recs[:1]), 250*time.Millisecond, "the first batch is not held back")
	require.GreaterOrEqual(t, timed(1, l.recs[1:3]), 250*time.Millisecond, "a small batch right after one waits")
	require.Less(t, timed(3, l.recs[3:300]), 250*time.Millisecond, "a large batch does not")
	time.Sleep(300 * time.Millisecond)
	require.Less(t, timed(300, l.recs[300:301]), 250*time.Millisecond, "nor one after a quiet spell")
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	require.ErrorIs(t, p.Apply(cctx, 301, l.recs[301:302]), context.Canceled)
	require.Len(t, auditDump(t, f.owner), 301)
}

// A pin's history is every event of its request, placements and observations on every node included, oldest
// first.
func TestAuditPinHistory(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	l := newAuditLog(4, false)
	a := l.org("audit-a")
	b := l.org("audit-b")
	l.node("n1")
	l.node("n2")
	l.startTerm()
	id := l.request(a, "")
	other := l.request(b, "")
	s1 := l.place(a, id, "n1", 1)
	l.observe(a, id, "n1", "pinning", s1)
	s2 := l.place(a, id, "n2", 1)
	l.observe(a, id, "n2", "pinned", s2)
	l.observe(a, id, "n1", "pinned", s1)
	l.unplace(a, id, "n1", 1)
	succ := l.request(a, id) // replaced
	f := newAuditFixture(t)
	f.applyAudit(t, l.recs, 3)

	r := postgres.NewAuditReader(f.api, f.owner)
	h, err := r.PinHistory(ctx, a, id)
	require.NoError(t, err)
	var types []string
	for _, e := range h {
		types = append(types, e.Type+"@"+strings.Split(e.Subject, ".")[0])
		require.Equal(t, id, e.RequestID)
	}
	require.Equal(t, []string{"pin.requested@pins", "pin.placed@place", "pin.status_observed@place", "pin.placed@place",
		"pin.status_observed@place", "pin.status_observed@place", "pin.unplaced@place", "pin.replaced@pins"}, types)
	require.True(t, slices.IsSortedFunc(h, func(x, y projections.AuditEvent) int { return int(x.Seq) - int(y.Seq) }))
	var replaced events.PinReplaced
	require.NoError(t, json.Unmarshal(h[len(h)-1].Data, &replaced))
	require.Equal(t, succ, replaced.ReplacedBy)

	_, err = r.PinHistory(ctx, a, other)
	require.ErrorIs(t, err, domain.ErrNotFound, "another org's request")
	_, err = r.PinHistory(ctx, a, uuid.NewString())
	require.ErrorIs(t, err, domain.ErrNotFound)
	_, err = r.PinHistory(ctx, a, "not-a-uuid")
	require.ErrorIs(t, err, domain.ErrNotFound)
}

// GET /pins?as_of=T from the audit trail equals what the live pins projection showed at T, at every point of a
// history with replaces, removals, placements on two nodes, moves, observations (late, stale and final ones),
// new scheduler terms and a deposed scheduler's fenced decisions.
func TestAuditAsOfMatchesLivePins(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	l := newAuditLog(5, false) // monotonic clocks: "the log at T" is then exactly what the projection had applied
	l.history(500)
	// Two requests in one millisecond: created is bumped, as the projection does.
	org := domain.OrgIDForSlug("audit-a")
	same := l.now.Truncate(time.Millisecond)
	for range 2 {
		id := uuid.NewString()
		l.cid[id] = cids[1]
		l.add(events.PinSubject(org, id), l.actor(org), "", events.PinRequested{OrgID: org, RequestID: id, CID: cids[1], Created: same})
	}
	// Then every rule of the status derivation in turn (each event is a snapshot below).
	tail := len(l.recs)
	id := l.request(org, "")
	s1 := l.place(org, id, "n2", l.term)
	s2 := l.place(org, id, "n1", l.term)
	l.observe(org, id, "n2", "pinned", s1)
	l.observe(org, id, "n1", "pinned", s2)  // a tie: n1's info decides
	l.observe(org, id, "n1", "pinning", s2) // a late progress report: ignored
	l.observe(org, id, "n2", "failed", s1)  // final to final: applies; n1 still decides
	l.observe(org, id, "n1", "failed", s1)  // answers another placement: ignored
	l.unplace(org, id, "n1", l.term)        // n2 (failed) decides
	s3 := l.place(org, id, "n1", l.term)    // placed again: queued beats failed
	l.observe(org, id, "n1", "pinning", s2) // answers the earlier placement: ignored
	l.observe(org, id, "n1", "pinning", s3)
	l.startTerm()
	l.unplace(org, id, "n1", l.term-1)     // a deposed scheduler: fenced
	l.place(org, id, "n1", l.term-1)       // fenced too
	l.observe(org, id, "n1", "pinned", s3) // still the live placement
	l.remove(org, id)
	f := newAuditFixture(t)
	f.applyAudit(t, l.recs, 100)

	type snap struct {
		at   time.Time
		pins map[string][]projections.PinView
	}
	var snaps []snap
	orgs := []string{org, domain.OrgIDForSlug("audit-b")}
	listLive := func() map[string][]projections.PinView {
		m := map[string][]projections.PinView{}
		for _, o := range orgs {
			_, views, err := f.reader.ListPins(ctx, projections.PinFilter{OrgID: o, Statuses: projections.AllStatuses, Limit: 1000})
			require.NoError(t, err)
			for i := range views {
				views[i].Delegates = nil
			}
			m[o] = views
		}
		return m
	}
	prev := uint64(0)
	for i, r := range l.recs {
		require.NoError(t, f.pins.Apply(ctx, prev, []events.Record{r}))
		prev = r.Seq
		if i%23 == 0 || i >= tail {
			snaps = append(snaps, snap{at: r.At, pins: listLive()})
		}
	}
	snaps = append(snaps, snap{at: l.recs[0].At.Add(-time.Hour), pins: map[string][]projections.PinView{}})
	r := postgres.NewAuditReader(f.api, nil)
	nonEmpty := 0
	for _, s := range snaps {
		for _, o := range orgs {
			got, err := r.PinsAsOf(ctx, o, s.at)
			require.NoError(t, err)
			want := s.pins[o]
			if len(want) == 0 {
				require.Empty(t, got, "as of %s", s.at)
				continue
			}
			nonEmpty++
			require.Equal(t, want, got, "org %s as of %s", o, s.at)
		}
	}
	require.Greater(t, nonEmpty, 20)

	// The pure fold over the org's records (and the scheduler's) agrees: the reader only streams into it.
	last := snaps[len(snaps)-2]
	var recs []events.Record
	for _, rec := range l.recs {
		if rec.Subject == events.SchedTerm || strings.HasPrefix(rec.Subject, "pins."+org+".") || strings.Contains(rec.Subject, "."+org+".") && strings.HasPrefix(rec.Subject, "place.") {
			recs = append(recs, rec)
		}
	}
	require.Equal(t, last.pins[org], projections.PinsAsOf(recs, last.at))
}

// BenchmarkIngest measures what a projector costs per event, batch by batch, on the same realistic log: the
// audit projector against the pins projector (which every write's read-your-writes waits for).
//
//	go test ./adapters/postgres -run '^$' -bench Ingest -benchtime 3x
func BenchmarkIngest(b *testing.B) {
	l := newAuditLog(9, true)
	l.history(6000)
	for _, batch := range []int{1, 10, 100, 1000} {
		for _, name := range []string{"pins", "audit"} {
			b.Run(fmt.Sprintf("%s/batch=%d", name, batch), func(b *testing.B) {
				recs := l.recs
				if batch == 1 {
					recs = recs[:1500]
				}
				for b.Loop() {
					b.StopTimer()
					f := newAuditFixture(b)
					p := projections.Projector(f.audit)
					if name == "pins" {
						p = f.pins
					}
					b.StartTimer()
					prev := uint64(0)
					for i := 0; i < len(recs); i += batch {
						bt := recs[i:min(i+batch, len(recs))]
						if err := p.Apply(context.Background(), prev, bt); err != nil {
							b.Fatal(err)
						}
						prev = bt[len(bt)-1].Seq
					}
				}
				b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N*len(recs)), "µs/event")
			})
		}
	}
}

// BenchmarkAuditHotPath measures what the audit projector costs the hot path on the real stack (embedded
// JetStream, PostgreSQL): events appended at a steady rate (a pin request, placement and observation mix), with
// the pins projection alone, with the audit projector as shipped (small batches coalesced), and with every batch
// applied at once. It reports the pins projection's lag (what a write's read-your-writes waits for), the append
// rate achieved, and the CPU the Go process and the PostgreSQL backends spent per event.
//
//	go test ./adapters/postgres -run '^$' -bench AuditHotPath -benchtime 1x   (RATE=events/s, default 600)
func BenchmarkAuditHotPath(b *testing.B) {
	rate := 600
	if r, err := strconv.Atoi(os.Getenv("RATE")); err == nil && r > 0 {
		rate = r
	}
	if _, err := os.Stat("/proc/self/stat"); err != nil {
		b.Skip("needs /proc to measure PostgreSQL's CPU")
	}
	for _, mode := range []string{"pins-only", "with-audit", "with-audit-uncoalesced"} {
		b.Run(mode, func(b *testing.B) {
			for b.Loop() {
				hotPath(b, mode, rate)
			}
		})
	}
}

func hotPath(b *testing.B, mode string, rate int) {
	ctx := context.Background()
	f := newAuditFixture(b)
	var backend int
	require.NoError(b, f.owner.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&backend))
	postmaster := procStat(backend).ppid
	_, log := natstest.Log(b)
	projs := []projections.Projector{f.pins}
	switch mode {
	case "with-audit":
		projs = append(projs, postgres.NewAuditProjector(f.owner))
	case "with-audit-uncoalesced":
		projs = append(projs, f.audit)
	}
	runner := projections.NewRunner(log, projs, projections.RunnerConfig{})
	rctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { runner.Run(rctx) })
	defer func() { cancel(); wg.Wait() }()
	org := domain.OrgIDForSlug("hot-path")
	appendEvent := func(subject string, e events.Event) uint64 {
		env, err := events.New(uuid.NewString(), time.Now(), "token:bench", uuid.NewString(), e)
		require.NoError(b, err)
		seqs, err := log.Append(ctx, domain.Message{Subject: subject, Envelope: env})
		require.NoError(b, err)
		return seqs[0]
	}
	var mu sync.Mutex
	var lags []time.Duration
	var waits sync.WaitGroup
	goCPU, pgCPU := selfCPU(), childrenCPU(postmaster)
	start := time.Now()
	tick := time.NewTicker(time.Second / time.Duration(rate))
	defer tick.Stop()
	n := 0
	var last uint64
	for time.Since(start) < 5*time.Second {
		<-tick.C
		id := uuid.NewString()
		switch n % 3 {
		case 0:
			last = appendEvent(events.PinSubject(org, id), events.PinRequested{OrgID: org, RequestID: id, CID: cids[0], Name: "x", Meta: map[string]string{"a": "b"}, Created: time.Now()})
		case 1:
			last = appendEvent(events.PlaceSubject("n1", org, id), events.PinPlaced{OrgID: org, RequestID: id, NodeID: "n1", CID: cids[0]})
		default:
			last = appendEvent(events.PlaceSubject("n1", org, id), events.PinStatusObserved{OrgID: org, RequestID: id, NodeID: "n1", CID: cids[0], Status: "pinned", PlacedSeq: 1})
		}
		n++
		seq, t0 := last, time.Now()
		waits.Go(func() {
			if runner.Watermarks().Wait(ctx, postgres.ProjectionPins, seq) == nil {
				mu.Lock()
				lags = append(lags, time.Since(t0))
				mu.Unlock()
			}
		})
	}
	elapsed := time.Since(start)
	waits.Wait()
	if mode != "pins-only" {
		require.NoError(b, runner.Watermarks().Wait(ctx, postgres.ProjectionAudit, last))
	}
	goCPU, pgCPU = selfCPU()-goCPU, childrenCPU(postmaster)-pgCPU
	slices.Sort(lags)
	q := func(x float64) float64 { return float64(lags[int(x*float64(len(lags)-1))].Microseconds()) }
	b.ReportMetric(q(.5), "pins-lag-p50-µs")
	b.ReportMetric(q(.99), "pins-lag-p99-µs")
	b.ReportMetric(float64(n)/elapsed.Seconds(), "appends/s")
	b.ReportMetric(goCPU/float64(n)*1e6, "go-cpu-µs/event")
	b.ReportMetric(pgCPU/float64(n)*1e6, "pg-cpu-µs/event")
}

type procInfo struct {
	ppid int
	cpu  float64 // seconds, user + system
}

func procStat(pid int) procInfo {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return procInfo{}
	}
	s := string(b)
	fs := strings.Fields(s[strings.LastIndex(s, ")")+2:])
	ppid, _ := strconv.Atoi(fs[1])
	u, _ := strconv.ParseFloat(fs[11], 64)
	st, _ := strconv.ParseFloat(fs[12], 64)
	return procInfo{ppid: ppid, cpu: (u + st) / 100}
}

// childrenCPU is the CPU time of the postmaster and of every process it started (backends, writers).
func childrenCPU(postmaster int) float64 {
	ents, _ := os.ReadDir("/proc")
	var sum float64
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if p := procStat(pid); pid == postmaster || p.ppid == postmaster {
			sum += p.cpu
		}
	}
	return sum
}

func selfCPU() float64 {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e9
}
