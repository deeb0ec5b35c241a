// Package postgres holds anchorage's read models in PostgreSQL: migrations, the projectors that fold events into
// them (as the owner role), and the readers the API uses (as a separate role, under row-level security). All SQL
// lives in queries/*.sql; internal/dbsqlc is generated from it by sqlc (`go tool task generate`).
package postgres

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net"
	"strings"

	"github.com/anchorage-pin/anchorage/adapters/postgres/internal/dbsqlc"
	"github.com/anchorage-pin/anchorage/domain"
	"github.com/anchorage-pin/anchorage/migrations"
	"github.com/golang-migrate/migrate/v4"
	migratepgx "github.com/golang-migrate/migrate/v4/database/pgx/v5"
	"github.com/golang-migrate/migrate/v4/source"
	"github.com/golang-migrate/migrate/v4/source/iofs"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
)

var queries = dbsqlc.New()

// Pool roles.
const (
	// roleOwner pools connect as the role that owns the read-model tables (migrations, projectors, admin reads).
	roleOwner = "owner"
	// roleAPI pools connect as the non-owner role the API reads with, under RLS.
	roleAPI = "api"
)

// OpenOwnerPool connects as the owner role. Projector transactions commit with synchronous_commit off: a read
// model is rebuilt from the log anyway, and its checkpoint commits in the same transaction, so a crash can only
// lose a suffix of projection progress, which is re-applied on restart.
func OpenOwnerPool(ctx context.Context, dsn string, maxConns int32) (*pgxpool.Pool, error) {
	return openPool(ctx, dsn, maxConns, roleOwner)
}

// OpenAPIPool connects as the API role and refuses a role that could bypass row-level security.
func OpenAPIPool(ctx context.Context, dsn string, maxConns int32) (*pgxpool.Pool, error) {
	pool, err := openPool(ctx, dsn, maxConns, roleAPI)
	if err != nil {
		return nil, err
	}
	if err := CheckAPIRole(ctx, pool); err != nil {
		pool.Close()
		return nil, err
	}
	return pool, nil
}

func openPool(ctx context.Context, dsn string, maxConns int32, role string) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("postgres: parse %s DSN: %w", role, err)
	}
	if maxConns > 0 {
		cfg.MaxConns = maxConns
	}
	cfg.ConnConfig.RuntimeParams["application_name"] = "anchorage-" + role
	switch role {
	case roleAPI:
		// The API never writes. Its org is only ever set transaction-locally (set_config(..., true)), so it
		// cannot leak to the next request on a pooled connection.
		cfg.ConnConfig.RuntimeParams["default_transaction_read_only"] = "on"
		// Every API query is an index walk bounded by its limit; a parallel plan only adds the start of its
		// workers. And a filter bound left NULL (no before/after) made the custom plan of a meta count a parallel
		// scan behind a false one-time filter: two workers started and stopped for nothing, 10-20 ms per query
		// on an idle machine, over 200 ms on a busy one.
		cfg.ConnConfig.RuntimeParams["max_parallel_workers_per_gather"] = "0"
		// Nor does one gain from JIT compilation, which PostgreSQL starts once a plan's estimated cost passes
		// jit_above_cost, whatever the rows the query will really touch: at 1.3M pins the meta filter's plan
		// crossed it, and each such list spent 54 ms compiling 65 functions to run for 0.7 ms (p50 524-773 ms
		// under the query benchmark), the partial-name filter the same.
		cfg.ConnConfig.RuntimeParams["jit"] = "off"
	case roleOwner:
		cfg.ConnConfig.RuntimeParams["synchronous_commit"] = "off"
		// The projectors' statements touch a batch's rows; a plan whose estimate crosses jit_above_cost on a large
		// table would compile for tens of milliseconds to run for one (see the API role). Rebuilds, whose bulk
		// statements read whole tables, use a pool of their own and keep PostgreSQL's default.
		cfg.ConnConfig.RuntimeParams["jit"] = "off"
		// plan_cache_mode stays PostgreSQL's default, generic plans once they are as good: forcing a custom plan
		// for every execution raised the projection lag at 1,000 writes/s from p50 1.2 to 1.9-3.5 ms (each small
		// batch planned its statements). A generic plan made while a new node's tables were empty (a sequential
		// scan of pins inside PinsRederive) is made again once the projectors' growthAnalyzer has analyzed them.
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("postgres: connect %s: %w", role, err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("postgres: connect %s: %w", role, interpret(err))
	}
	return pool, nil
}

// CheckAPIRole refuses an API connection whose role would defeat row-level security: a superuser, a role with
// BYPASSRLS, or the owner of a read-model table.
func CheckAPIRole(ctx context.Context, pool *pgxpool.Pool) error {
	var user string
	var super, bypass bool
	var owned int
	err := pool.QueryRow(ctx, `SELECT current_user, r.rolsuper, r.rolbypassrls,
		(SELECT count(*) FROM pg_tables t WHERE t.schemaname = 'public' AND t.tableowner = current_user)
		FROM pg_roles r WHERE r.rolname = current_user`).Scan(&user, &super, &bypass, &owned)
	if err != nil {
		return fmt.Errorf("postgres: inspect API role: %w", interpret(err))
	}
	switch {
	case super:
		return fmt.Errorf("postgres.apiURL connects as %q, a superuser, which bypasses row-level security; use a role without SUPERUSER", user)
	case bypass:
		return fmt.Errorf("postgres.apiURL connects as %q, which has BYPASSRLS; use a role without it (ALTER ROLE %s NOBYPASSRLS)", user, user)
	case owned > 0:
		return fmt.Errorf("postgres.apiURL connects as %q, which owns read-model tables; connect the API as a separate, non-owner role", user)
	}
	return nil
}

// Migrate applies every pending migration as the owner role, then grants the API role what it may read.
func Migrate(ctx context.Context, ownerDSN, apiRole string) error {
	cfg, err := pgx.ParseConfig(ownerDSN)
	if err != nil {
		return fmt.Errorf("postgres: parse owner DSN: %w", err)
	}
	db := stdlib.OpenDB(*cfg)
	defer db.Close()
	if err := db.PingContext(ctx); err != nil {
		return fmt.Errorf("postgres: connect for migrations: %w", interpret(err))
	}
	drv, err := migratepgx.WithInstance(db, &migratepgx.Config{})
	if err != nil {
		return fmt.Errorf("postgres: migration driver: %w", err)
	}
	src, err := iofs.New(migrations.FS, ".")
	if err != nil {
		return fmt.Errorf("postgres: migration source: %w", err)
	}
	m, err := migrate.NewWithInstance("iofs", src, "pgx5", drv)
	if err != nil {
		return fmt.Errorf("postgres: migrate: %w", err)
	}
	if err := checkSchemaVersion(m, src); err != nil {
		return err
	}
	if err := m.Up(); err != nil && !errors.Is(err, migrate.ErrNoChange) {
		return fmt.Errorf("postgres: migrate up: %w", err)
	}
	return grantAPI(ctx, db, apiRole)
}

// checkSchemaVersion turns the two states migrate.Up cannot leave by itself into errors that say what to do: a
// schema newer than this release knows (a newer anchorage migrated the database; migrate would only say that
// it finds no file for that version), and a migration that stopped halfway (the database marked dirty).
func checkSchemaVersion(m *migrate.Migrate, src source.Driver) error {
	v, dirty, err := m.Version()
	if errors.Is(err, migrate.ErrNilVersion) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("postgres: read the schema version: %w", err)
	}
	latest, err := src.First()
	if err != nil {
		return fmt.Errorf("postgres: migration source: %w", err)
	}
	for next, err := src.Next(latest); err == nil; next, err = src.Next(latest) {
		latest = next
	}
	const rebuild = "or point this release at an empty database, in which it rebuilds the read models from the event log (docs/recovery.md, \"PostgreSQL lost\")"
	if v > latest {
		return fmt.Errorf("postgres: the database's schema is at version %d, newer than this release's %d: a newer anchorage migrated it. "+
			"Run that release, or first move the schema back to version %d with that release's down migrations (migrations/*.down.sql, e.g. "+
			"`migrate -path migrations -database URL goto %d`), %s", v, latest, latest, latest, rebuild)
	}
	if dirty {
		return fmt.Errorf("postgres: the migration to schema version %d stopped halfway, and the database is marked dirty: "+
			"repair it by hand and clear schema_migrations.dirty, %s", v, rebuild)
	}
	return nil
}

func grantAPI(ctx context.Context, db *sql.DB, apiRole string) error {
	if apiRole == "" {
		return nil
	}
	role := pgx.Identifier{apiRole}.Sanitize()
	for _, stmt := range []string{
		"GRANT USAGE ON SCHEMA public TO " + role,
		"GRANT SELECT ON ALL TABLES IN SCHEMA public TO " + role,
		"GRANT EXECUTE ON FUNCTION pins_matching_name(text, text, boolean), pins_matching_meta(jsonb), app_org() TO " + role,
	} {
		if _, err := db.ExecContext(ctx, stmt); err != nil {
			return fmt.Errorf("postgres: %s: %w", stmt, err)
		}
	}
	return nil
}

// EnsureRoles creates the owner and API login roles if missing (used by `anchorage dev` and tests, which run
// their own cluster; in production the operator creates them). exec runs SQL as a superuser.
func EnsureRoles(ctx context.Context, exec func(ctx context.Context, sql string, args ...any) error, owner, api string) error {
	for _, r := range []struct{ name, attrs string }{
		{owner, "LOGIN NOSUPERUSER NOBYPASSRLS"},
		{api, "LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE"},
	} {
		lit := strings.ReplaceAll(r.name, "'", "''")
		stmt := fmt.Sprintf(`DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '%s') THEN CREATE ROLE %s %s; END IF; END $$`,
			lit, pgx.Identifier{r.name}.Sanitize(), r.attrs)
		if err := exec(ctx, stmt); err != nil {
			return fmt.Errorf("postgres: create role %s: %w", r.name, err)
		}
	}
	return nil
}

// interpret translates pgx errors into domain kinds at this seam: no rows is not found, and an unreachable or
// restarting database is unavailable (HTTP 503), never an internal error.
func interpret(err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, pgx.ErrNoRows) {
		return domain.ErrNotFound
	}
	var ce *pgconn.ConnectError
	var ne net.Error
	var pe *pgconn.PgError
	switch {
	case errors.As(err, &ce), errors.As(err, &ne), pgconn.SafeToRetry(err):
		return fmt.Errorf("%w: read models unreachable: %v", domain.ErrUnavailable, err)
	case errors.As(err, &pe) && (strings.HasPrefix(pe.Code, "08") || pe.Code == "57P01" || pe.Code == "57P02" || pe.Code == "57P03"):
		// connection exceptions, admin shutdown, crash shutdown, cannot connect now
		return fmt.Errorf("%w: read models unavailable: %v", domain.ErrUnavailable, err)
	}
	return err
}
