package postgres

import (
	"context"
	"testing"

	"github.com/anchorage-pin/anchorage/adapters/postgres/pgcluster"
	"github.com/anchorage-pin/anchorage/adapters/postgres/pgtest"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/stretchr/testify/require"
)

// uuid and uuid[] parameters are encoded by fastUUIDs' plans, and PostgreSQL reads back what was sent: a nil
// slice as NULL, an empty one as an empty array, ids in order.
func TestFastUUIDsRoundTrip(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tmpl := pgtest.Template(t, "plain", func(context.Context, *pgcluster.Cluster, string) error { return nil })
	conn, err := pgx.Connect(ctx, pgtest.DSN(t, pgtest.NewDatabase(t, tmpl)))
	require.NoError(t, err)
	defer conn.Close(ctx)
	fastUUIDs(conn.TypeMap())
	fastUUIDs(conn.TypeMap()) // idempotent
	_, ok := conn.TypeMap().PlanEncode(pgtype.UUIDArrayOID, pgtype.BinaryFormatCode, []uuid.UUID{}).(uuidArrayBinary)
	require.True(t, ok, "[]uuid.UUID takes the direct plan")

	ids := make([]uuid.UUID, 1000)
	for i := range ids {
		ids[i] = uuid.New()
	}
	for _, tc := range []struct {
		name string
		in   []uuid.UUID
	}{{"nil", nil}, {"empty", []uuid.UUID{}}, {"one", ids[:1]}, {"many", ids}} {
		var isNull bool
		var n int
		var text []string
		require.NoError(t, conn.QueryRow(ctx, `SELECT $1::uuid[] IS NULL, coalesce(cardinality($1::uuid[]), -1),
			coalesce((SELECT array_agg(u::text ORDER BY o) FROM unnest($1::uuid[]) WITH ORDINALITY x(u, o)), '{}')`,
			tc.in).Scan(&isNull, &n, &text), tc.name)
		require.Equal(t, tc.in == nil, isNull, tc.name)
		if tc.in == nil {
			continue
		}
		require.Equal(t, len(tc.in), n, tc.name)
		want := make([]string, len(tc.in))
		for i, u := range tc.in {
			want[i] = u.String()
		}
		require.Equal(t, want, text, tc.name)
	}
	// A single uuid still goes as its 16 bytes.
	var s string
	require.NoError(t, conn.QueryRow(ctx, "SELECT $1::uuid::text", ids[7]).Scan(&s))
	require.Equal(t, ids[7].String(), s)
}
