package postgres_test

import (
	"context"
	"testing"

	"github.com/anchorage-pin/anchorage/adapters/postgres/internal/dbsqlc"
	"github.com/stretchr/testify/require"
)

// The actor and type list queries drive from their indexes, which key on a hash of the value (migration 000008):
// the query must match the index's expression, or it would walk the org's whole trail and filter. The reader
// plans every audit query for its arguments (customPlans), and so does this test.
func TestAuditActorAndTypeQueriesUseTheirHashedIndexes(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newAuditFixture(t)
	// 40,000 rows of one org: one busy actor and type, a rare actor and a rare type.
	_, err := f.owner.Exec(ctx, `
INSERT INTO audit_events (seq, at, subject, type, version, actor, org_id, data, at_max)
SELECT g, now(), 'pins.x', CASE WHEN g % 1000 = 0 THEN 'token.revoked' ELSE 'pin.requested' END, 1,
       CASE WHEN g % 997 = 0 THEN 'token:rare' ELSE 'system:load' END,
       '3b9f0e0e-4a59-5b1c-8d53-0c3a5b6f4a11', '{}', now()
FROM generate_series(1, 40000) g`)
	require.NoError(t, err)
	_, err = f.owner.Exec(ctx, "ANALYZE audit_events")
	require.NoError(t, err)

	conn, err := f.owner.Acquire(ctx)
	require.NoError(t, err)
	defer conn.Release()
	org := "{3b9f0e0e-4a59-5b1c-8d53-0c3a5b6f4a11}"
	for _, q := range []struct {
		name, sql, index, args string
	}{
		{"by_actor", dbsqlc.AuditListByActor, "audit_events_org_actor", "'" + org + "', $a$token:rare$a$, 0, 9223372036854775807, NULL, NULL, NULL, 20"},
		{"by_type", dbsqlc.AuditListByType, "audit_events_org_type", "'" + org + "', 'token.revoked', 0, 9223372036854775807, NULL, NULL, 20"},
	} {
		_, err := conn.Exec(ctx, "PREPARE "+q.name+" AS "+q.sql)
		require.NoError(t, err)
		var plan string
		require.NoError(t, conn.QueryRow(ctx, "EXPLAIN (FORMAT JSON) EXECUTE "+q.name+"("+q.args+")").Scan(&plan))
		require.Contains(t, plan, `"Index Name": "`+q.index+`"`, q.name)
		require.Regexp(t, `"Index Cond": "[^"]*hashtextextended`, plan, "%s: the hash is an index condition", q.name)
	}
}
