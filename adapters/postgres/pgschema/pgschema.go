// Package pgschema gives tests a fresh, migrated anchorage database on the shared throwaway cluster, with the
// owner and API roles set up as in production.
package pgschema

import (
	"context"
	"testing"

	"github.com/anchorage-pin/anchorage/adapters/postgres"
	"github.com/anchorage-pin/anchorage/adapters/postgres/pgcluster"
	"github.com/anchorage-pin/anchorage/adapters/postgres/pgtest"
	"github.com/jackc/pgx/v5"
)

// Role names used by tests (and by `anchorage dev`).
const (
	Owner = "anchorage"
	API   = "anchorage_api"
)

// DB is a migrated database.
type DB struct {
	Name     string
	OwnerDSN string
	APIDSN   string
	Cluster  *pgcluster.Cluster
}

// New returns a fresh migrated database, dropped when the test ends.
func New(tb testing.TB) DB {
	tb.Helper()
	tmpl := pgtest.Template(tb, "anchorage-schema", func(ctx context.Context, c *pgcluster.Cluster, db string) error {
		return Setup(ctx, c, db)
	})
	name := pgtest.NewDatabase(tb, tmpl)
	c := pgtest.Cluster(tb)
	return DB{Name: name, OwnerDSN: c.DSN(name, Owner), APIDSN: c.DSN(name, API), Cluster: c}
}

// Setup creates the roles, hands db to the owner and migrates it.
func Setup(ctx context.Context, c *pgcluster.Cluster, db string) error {
	if err := postgres.EnsureRoles(ctx, c.Exec, Owner, API); err != nil {
		return err
	}
	if err := c.Exec(ctx, "ALTER DATABASE "+pgx.Identifier{db}.Sanitize()+" OWNER TO "+pgx.Identifier{Owner}.Sanitize()); err != nil {
		return err
	}
	return postgres.Migrate(ctx, c.DSN(db, Owner), API)
}
