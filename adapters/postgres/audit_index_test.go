package postgres_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/anchorage-pin/anchorage/adapters/postgres/internal/dbsqlc"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"
)

// The list queries by actor, type, request and CID drive from their indexes (the actor and type ones key on a
// stored hash of the value, migrations 000008 and 000012), for a sysadmin (the owner role) and for a tenant (the
// API role, under the tenant policy): the query must match the index's key with a condition PostgreSQL may apply
// before the policy's (a leakproof one), or it walks the org's whole trail and filters. The reader plans every audit query for its arguments (customPlans), and so
// does this test.
func TestAuditActorAndTypeQueriesUseTheirHashedIndexes(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newAuditFixture(t)
	const org = "3b9f0e0e-4a59-5b1c-8d53-0c3a5b6f4a11"
	// 40,000 rows of one org: one busy actor and type, a rare actor and a rare type; a request and a CID with 40
	// events each among ones of a few events.
	_, err := f.owner.Exec(ctx, `
INSERT INTO audit_events (seq, at, subject, type, version, actor, org_id, request_id, cid_key, data, at_max)
SELECT g, now(), 'pins.x', CASE WHEN g % 1000 = 0 THEN 'token.revoked' ELSE 'pin.requested' END, 1,
       CASE WHEN g % 997 = 0 THEN 'token:rare' ELSE 'system:load' END, $1,
       CASE WHEN g % 991 = 0 THEN '0f0f0f0f-0000-4000-8000-000000000001'::uuid ELSE md5((g / 3)::text)::uuid END,
       CASE WHEN g % 983 = 0 THEN '\x1220ff'::bytea ELSE decode(md5((g / 3)::text), 'hex') END, '{}', now()
FROM generate_series(1, 40000) g`, org)
	require.NoError(t, err)
	_, err = f.owner.Exec(ctx, "ANALYZE audit_events")
	require.NoError(t, err)

	for _, role := range []struct {
		name string
		pool *pgxpool.Pool
	}{{"owner", f.owner}, {"tenant", f.api}} {
		for _, q := range []struct {
			name, sql, index, key, args string
			rows                        int
		}{
			{"by_actor", dbsqlc.AuditListByActor, "audit_events_org_actor", "actor_key", "'{" + org + "}', 'token:rare', 0, 9223372036854775807, NULL, NULL, NULL, 100", 40},
			{"by_type", dbsqlc.AuditListByType, "audit_events_org_type", "type_key", "'{" + org + "}', 'token.revoked', 0, 9223372036854775807, NULL, NULL, 100", 40},
			{"by_request", dbsqlc.AuditListByRequest, "audit_events_org_request", "request_id", "'{" + org + "}', '0f0f0f0f-0000-4000-8000-000000000001', 0, 9223372036854775807, NULL, NULL, NULL, NULL, NULL, 100", 40},
			{"by_cid", dbsqlc.AuditListByCID, "audit_events_org_cid", "cid_key", "'{" + org + "}', '\\x1220ff', 0, 9223372036854775807, NULL, NULL, NULL, NULL, 100", 40},
		} {
			tx, err := role.pool.Begin(ctx)
			require.NoError(t, err)
			_, err = tx.Exec(ctx, "SELECT set_config('app.org_id', $1, true)", org)
			require.NoError(t, err)
			_, err = tx.Exec(ctx, "PREPARE "+q.name+" AS "+q.sql)
			require.NoError(t, err)
			var plan string
			require.NoError(t, tx.QueryRow(ctx, "EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE "+q.name+"("+q.args+")").Scan(&plan))
			require.NoError(t, tx.Rollback(ctx))
			require.Contains(t, plan, `"Index Name": "`+q.index+`"`, "%s, %s", role.name, q.name)
			require.Regexp(t, `"Index Cond": "[^"]*`+q.key+` = `, plan, "%s, %s: the key is an index condition", role.name, q.name)
			require.Regexp(t, `"Actual Rows": `+fmt.Sprint(q.rows)+`,`, plan, "%s, %s: every matching row found", role.name, q.name)
			require.NotRegexp(t, `"Rows Removed by Filter": [1-9][0-9]{3,}`, plan, "%s, %s: no walk through the trail", role.name, q.name)
		}
	}
}

// audit_first_seq bisects the primary key (migration 000009): on a log with gaps in its sequences and runs of
// equal at_max it answers what a scan for the first row reaching t answers, at, just before and just after every
// seventh row's at_max, and "none yet" on an empty trail and after the last row.
func TestAuditFirstSeqBisects(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newAuditFixture(t)
	first := func(at time.Time) int64 {
		var seq int64
		require.NoError(t, f.owner.QueryRow(ctx, "SELECT audit_first_seq($1)", at).Scan(&seq))
		return seq
	}
	const none = int64(9223372036854775807)
	base := time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)
	require.Equal(t, none, first(base), "empty trail")

	rng := rand.New(rand.NewPCG(9, 9))
	var seqs []int64
	var ats []time.Time
	seq, at := int64(1+rng.IntN(50)), base
	for range 3000 {
		seqs, ats = append(seqs, seq), append(ats, at)
		seq += int64(1 + rng.IntN(4)*rng.IntN(2)) // mostly contiguous, now and then a gap
		if rng.IntN(3) > 0 {
			at = at.Add(time.Duration(1+rng.IntN(5)) * time.Millisecond) // else a run of equal at_max
		}
	}
	_, err := f.owner.Exec(ctx, `
INSERT INTO audit_events (seq, at, subject, type, version, actor, data, at_max)
SELECT s, a, 'x', 'x', 1, 'x', '{}', a FROM unnest($1::bigint[], $2::timestamptz[]) AS r(s, a)`, seqs, ats)
	require.NoError(t, err)

	want := func(at time.Time) int64 {
		for i, a := range ats {
			if !a.Before(at) {
				return seqs[i]
			}
		}
		return none
	}
	probes := []time.Time{base.Add(-time.Hour), ats[len(ats)-1].Add(time.Microsecond), ats[len(ats)-1].Add(time.Hour)}
	for i := 0; i < len(ats); i += 7 {
		probes = append(probes, ats[i], ats[i].Add(-time.Microsecond), ats[i].Add(time.Microsecond))
	}
	for _, p := range probes {
		require.Equal(t, want(p), first(p), "audit_first_seq(%s)", p.Format(time.RFC3339Nano))
	}
}
