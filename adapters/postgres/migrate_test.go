package postgres_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/anchorage-pin/anchorage/adapters/postgres"
	"github.com/anchorage-pin/anchorage/adapters/postgres/pgschema"
	"github.com/anchorage-pin/anchorage/migrations"
	"github.com/golang-migrate/migrate/v4"
	migratepgx "github.com/golang-migrate/migrate/v4/database/pgx/v5"
	"github.com/golang-migrate/migrate/v4/source/iofs"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/stretchr/testify/require"
)

// Every down migration undoes its up migration: going down one step at a time, the schema after each step is the
// one migrating up to that version gives (tables, columns, indexes, constraints, row-level security and policies,
// triggers, functions), nothing is left at the bottom, and migrating up again gives back exactly the schema of a
// fresh database, grants included. An operator rolling a release back runs these.
func TestMigrationsGoDownAndUpAgain(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgschema.New(t)
	cfg, err := pgx.ParseConfig(db.OwnerDSN)
	require.NoError(t, err)
	sqlDB := stdlib.OpenDB(*cfg)
	t.Cleanup(func() { sqlDB.Close() })

	// shape describes the schema; acl: with the privileges granted on tables and functions (Migrate grants the
	// API role its own after the migrations, so only a database it migrated has them). Columns are listed by name:
	// a down migration that adds back a dropped column adds it last (000002's pins.delegates), and every query
	// names its columns. Functions are compared without their comments, which a down migration need not repeat.
	shape := func(acl bool) []string {
		t.Helper()
		rows, err := sqlDB.QueryContext(ctx, `
SELECT 'relation ' || c.relname || ' ' || c.relkind::text || ' rls ' || c.relrowsecurity || ' ' || c.relforcerowsecurity
       || ' acl ' || CASE WHEN $1 THEN coalesce(c.relacl::text, '') ELSE '' END || ' options ' || coalesce(array_to_string(c.reloptions, ','), '')
FROM pg_class c WHERE c.relnamespace = 'public'::regnamespace AND c.relname <> 'schema_migrations' AND c.relname NOT LIKE 'schema_migrations%'
UNION ALL
SELECT 'index ' || tablename || ' ' || indexdef FROM pg_indexes WHERE schemaname = 'public' AND tablename <> 'schema_migrations'
UNION ALL
SELECT 'column ' || table_name || ' ' || column_name || ' ' || data_type || ' ' || is_nullable
       || ' ' || coalesce(column_default, '') || ' ' || coalesce(generation_expression, '')
FROM information_schema.columns WHERE table_schema = 'public' AND table_name <> 'schema_migrations'
UNION ALL
SELECT 'constraint ' || conrelid::regclass::text || ' ' || conname || ' ' || pg_get_constraintdef(oid)
FROM pg_constraint WHERE connamespace = 'public'::regnamespace AND conrelid <> 'public.schema_migrations'::regclass
UNION ALL
SELECT 'policy ' || tablename || ' ' || policyname || ' ' || permissive || ' ' || roles::text || ' ' || cmd || ' '
       || coalesce(qual, '') || ' ' || coalesce(with_check, '')
FROM pg_policies WHERE schemaname = 'public'
UNION ALL
SELECT 'trigger ' || tgrelid::regclass::text || ' ' || pg_get_triggerdef(oid) FROM pg_trigger
WHERE NOT tgisinternal AND tgrelid::regclass::text NOT LIKE '%.%'
UNION ALL
SELECT 'function ' || p.oid::regprocedure::text || ' acl ' || CASE WHEN $1 THEN coalesce(p.proacl::text, '') ELSE '' END
       || ' ' || regexp_replace(regexp_replace(pg_get_functiondef(p.oid), '--[^\n]*', '', 'g'), '\s+', ' ', 'g')
FROM pg_proc p WHERE p.pronamespace = 'public'::regnamespace AND p.prokind IN ('f', 'p')
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = p.oid AND d.deptype = 'e')
UNION ALL
SELECT 'extension ' || extname FROM pg_extension WHERE extname <> 'plpgsql'
ORDER BY 1`, acl)
		require.NoError(t, err)
		defer rows.Close()
		var out []string
		for rows.Next() {
			var s string
			require.NoError(t, rows.Scan(&s))
			out = append(out, s)
		}
		require.NoError(t, rows.Err())
		return out
	}
	fresh := shape(true)
	require.NotEmpty(t, fresh)

	drv, err := migratepgx.WithInstance(sqlDB, &migratepgx.Config{})
	require.NoError(t, err)
	src, err := iofs.New(migrations.FS, ".")
	require.NoError(t, err)
	m, err := migrate.NewWithInstance("iofs", src, "pgx5", drv)
	require.NoError(t, err)
	version, dirty, err := m.Version()
	require.NoError(t, err)
	require.False(t, dirty)
	require.GreaterOrEqual(t, version, uint(10))
	down := map[uint][]string{version: shape(false)}
	for v := version; v > 0; v-- {
		require.NoError(t, m.Steps(-1), "down from version %d", v)
		down[v-1] = shape(false)
	}
	_, _, err = m.Version()
	require.ErrorIs(t, err, migrate.ErrNilVersion, "every migration undone")
	// pg_trgm stays: 000001 creates it only if missing, so it may have been there before, for others.
	require.Equal(t, []string{"extension pg_trgm"}, down[0], "nothing of the schema left")

	for v := uint(1); v <= version; v++ {
		require.NoError(t, m.Steps(1), "up to version %d", v)
		require.Equal(t, shape(false), down[v], "version %d: going down to it and up to it give the same schema", v)
	}
	require.NoError(t, postgres.Migrate(ctx, db.OwnerDSN, pgschema.API))
	require.Equal(t, fresh, shape(true))
}

// A database migrated by a newer release, or left dirty by a migration that stopped halfway, makes Migrate fail
// with what to do about it rather than migrate's "no migration found for version N".
func TestMigrateSaysWhatToDoWithANewerOrDirtySchema(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgschema.New(t)
	conn, err := pgx.Connect(ctx, db.OwnerDSN)
	require.NoError(t, err)
	defer conn.Close(ctx)
	var version int64
	require.NoError(t, conn.QueryRow(ctx, "SELECT version FROM schema_migrations").Scan(&version))

	_, err = conn.Exec(ctx, "UPDATE schema_migrations SET version = 99")
	require.NoError(t, err)
	err = postgres.Migrate(ctx, db.OwnerDSN, pgschema.API)
	require.ErrorContains(t, err, fmt.Sprintf("schema is at version 99, newer than this release's %d", version))
	require.ErrorContains(t, err, fmt.Sprintf("goto %d", version))
	require.ErrorContains(t, err, "empty database")

	_, err = conn.Exec(ctx, "UPDATE schema_migrations SET version = $1, dirty = true", version)
	require.NoError(t, err)
	err = postgres.Migrate(ctx, db.OwnerDSN, pgschema.API)
	require.ErrorContains(t, err, fmt.Sprintf("migration to schema version %d stopped halfway", version))

	_, err = conn.Exec(ctx, "UPDATE schema_migrations SET dirty = false")
	require.NoError(t, err)
	require.NoError(t, postgres.Migrate(ctx, db.OwnerDSN, pgschema.API))
}
