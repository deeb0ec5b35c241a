package pgcluster

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"
)

// PrewarmIndexes finds the files of the indexes of a database's public schema, every 1 GB segment included, and
// leaves the tables alone.
func TestPrewarmIndexes(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := start(t, Config{Dir: clusterDir(t), Ephemeral: true})
	require.NoError(t, c.CreateDatabase(ctx, "warm", "", ""))
	conn, err := pgx.Connect(ctx, c.SuperuserDSN("warm"))
	require.NoError(t, err)
	defer conn.Close(ctx)
	for _, q := range []string{
		"CREATE TABLE t (id bigint PRIMARY KEY, v text)",
		"CREATE INDEX t_v ON t (v)",
		"INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 20000) g",
		"CREATE SCHEMA other",
		"CREATE TABLE other.u (id bigint PRIMARY KEY)",
		"INSERT INTO other.u SELECT generate_series(1, 20000)",
	} {
		_, err := conn.Exec(ctx, q)
		require.NoError(t, err, q)
	}
	var want int64
	require.NoError(t, conn.QueryRow(ctx, "SELECT pg_relation_size('t_pkey') + pg_relation_size('t_v')").Scan(&want))

	st, err := c.PrewarmIndexes(ctx, "warm")
	require.NoError(t, err)
	require.Equal(t, 2, st.Files, "t's two indexes, not the table, not another schema's")
	require.Equal(t, want, st.Bytes)

	_, err = c.PrewarmIndexes(ctx, "no such database")
	require.Error(t, err)
}
