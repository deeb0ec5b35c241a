package pgtest_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/anchorage-pin/anchorage/adapters/postgres/pgcluster"
	"github.com/anchorage-pin/anchorage/adapters/postgres/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

var setupCalls, leakySeq atomic.Int32

// appTemplate builds a template the way service tests do: an owner role
// runs the migrations, an app role gets DML rights only.
func appTemplate(tb testing.TB) string {
	return pgtest.Template(tb, "app_template", func(ctx context.Context, c *pgcluster.Cluster, db string) error {
		setupCalls.Add(1)
		// Roles are cluster-wide: create them idempotently.
		if err := c.Exec(ctx, `DO $$ BEGIN
			IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'app_owner') THEN CREATE ROLE app_owner LOGIN; END IF;
			IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'app_user') THEN CREATE ROLE app_user LOGIN; END IF;
		END $$`); err != nil {
			return err
		}
		if err := c.Exec(ctx, "ALTER DATABASE "+pgx.Identifier{db}.Sanitize()+" OWNER TO app_owner"); err != nil {
			return err
		}
		conn, err := c.Connect(ctx, db, "app_owner")
		if err != nil {
			return err
		}
		defer conn.Close(ctx)
		_, err = conn.Exec(ctx, `
			CREATE TABLE pins (org text NOT NULL, cid text NOT NULL);
			ALTER TABLE pins ENABLE ROW LEVEL SECURITY;
			CREATE POLICY org_isolation ON pins USING (org = current_setting('app.org'));
			GRANT SELECT, INSERT ON pins TO app_user;
			INSERT INTO pins VALUES ('seed', 'bafyseed');`)
		return err
	})
}

func connect(t *testing.T, db, user string) *pgx.Conn {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, pgtest.Cluster(t).DSN(db, user))
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

func count(t *testing.T, conn *pgx.Conn, sql string) int {
	t.Helper()
	var n int
	require.NoError(t, conn.QueryRow(context.Background(), sql).Scan(&n))
	return n
}

func TestNewDatabaseIsolation(t *testing.T) {
	tmpl := appTemplate(t)
	names := make(chan string, 2)
	for i := range 2 {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			t.Parallel()
			begin := time.Now()
			db := pgtest.NewDatabase(t, tmpl)
			t.Logf("clone %s took %v", db, time.Since(begin).Round(time.Microsecond))
			names <- db

			owner := connect(t, db, "app_owner")
			assert.Equal(t, 1, count(t, owner, "SELECT count(*) FROM pins"), "clone starts with the template's data")
			_, err := owner.Exec(context.Background(), "INSERT INTO pins SELECT 'org', 'bafy' FROM generate_series(1, $1)", 10*(i+1))
			require.NoError(t, err)
			assert.Equal(t, 1+10*(i+1), count(t, owner, "SELECT count(*) FROM pins"), "only this test's rows")

			// The clone keeps the template's owner and its RLS setup.
			assert.Equal(t, 1, count(t, owner, "SELECT count(*) FROM pg_database WHERE datname = current_database() AND pg_get_userbyid(datdba) = 'app_owner'"))
			app := connect(t, db, "app_user")
			_, err = app.Exec(context.Background(), "SELECT set_config('app.org', 'org', false)")
			require.NoError(t, err)
			assert.Equal(t, 10*(i+1), count(t, app, "SELECT count(*) FROM pins"), "RLS hides other orgs")
		})
	}
	t.Cleanup(func() {
		close(names)
		a, b := <-names, <-names
		assert.NotEqual(t, a, b)
		// Both clones were dropped by their tests' cleanups.
		var n int
		require.NoError(t, pgtest.Cluster(t).QueryRow(context.Background(), []any{&n},
			"SELECT count(*) FROM pg_database WHERE datname = ANY($1)", []string{a, b}))
		assert.Zero(t, n)
	})
}

func TestTemplateBuiltOnce(t *testing.T) {
	a := appTemplate(t)
	b := appTemplate(t)
	assert.Equal(t, a, b)
	assert.Equal(t, int32(1), setupCalls.Load())
	// The template refuses connections so that nothing blocks cloning.
	_, err := pgx.Connect(context.Background(), pgtest.Cluster(t).DSN(a, "app_owner"))
	require.Error(t, err)
}

func TestTemplateWithLeakedConnection(t *testing.T) {
	var leaked *pgx.Conn
	tmpl := pgtest.Template(t, fmt.Sprintf("leaky_%d", leakySeq.Add(1)), func(ctx context.Context, c *pgcluster.Cluster, db string) error {
		var err error
		leaked, err = c.Connect(ctx, db, pgcluster.Superuser) // never closed
		if err != nil {
			return err
		}
		_, err = leaked.Exec(ctx, "CREATE TABLE t (v int)")
		return err
	})
	db := pgtest.NewDatabase(t, tmpl)
	assert.Equal(t, 0, count(t, connect(t, db, pgcluster.Superuser), "SELECT count(*) FROM t"))
	assert.Error(t, leaked.Ping(context.Background()), "leaked template connection was terminated")
}

func TestNewDatabaseEmpty(t *testing.T) {
	db := pgtest.NewDatabase(t, "")
	conn, err := pgx.Connect(context.Background(), pgtest.DSN(t, db))
	require.NoError(t, err)
	defer conn.Close(context.Background())
	var n int
	require.NoError(t, conn.QueryRow(context.Background(),
		"SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").Scan(&n))
	assert.Zero(t, n)
}

func TestManyParallelClones(t *testing.T) {
	tmpl := appTemplate(t)
	begin := time.Now()
	t.Run("group", func(t *testing.T) {
		for i := range 8 {
			t.Run(fmt.Sprint(i), func(t *testing.T) {
				t.Parallel()
				db := pgtest.NewDatabase(t, tmpl)
				assert.Equal(t, 1, count(t, connect(t, db, "app_owner"), "SELECT count(*) FROM pins"))
			})
		}
	})
	t.Logf("8 parallel clones + checks + drops took %v", time.Since(begin).Round(time.Millisecond))
}

func TestTemplateSetupFailure(t *testing.T) {
	ft := &fakeTB{TB: t}
	func() {
		defer func() { _ = recover() }()
		pgtest.Template(ft, "broken", func(ctx context.Context, c *pgcluster.Cluster, db string) error {
			if err := c.Exec(ctx, "SELECT 1"); err != nil {
				return err
			}
			return fmt.Errorf("migration 3 failed")
		})
	}()
	require.Contains(t, ft.fatal, "migration 3 failed")
	// The half-built template is gone.
	var n int
	require.NoError(t, pgtest.Cluster(t).QueryRow(context.Background(), []any{&n},
		"SELECT count(*) FROM pg_database WHERE datname = 'broken'"))
	assert.Zero(t, n)
}

// fakeTB records Fatalf instead of ending the test.
type fakeTB struct {
	testing.TB
	fatal string
}

func (f *fakeTB) Fatalf(format string, args ...any) {
	f.fatal = fmt.Sprintf(format, args...)
	panic("fatal")
}
