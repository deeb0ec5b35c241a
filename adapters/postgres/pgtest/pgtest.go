// Package pgtest gives tests real PostgreSQL databases: one ephemeral
// cluster per test binary (started lazily in pgcluster.TempRoot(), i.e.
// on tmpfs when available), template
// databases built once per binary, and fast per-test clones.
//
// Use it from TestMain so the cluster is stopped and its directory removed
// when the tests finish:
//
//	func TestMain(m *testing.M) { pgtest.Main(m) }
//
// Without TestMain the server still dies with the test binary (parent-death
// signal); its temp directory is then removed by a later pgtest run.
package pgtest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/anchorage-pin/anchorage/adapters/postgres/pgcluster"
)

const (
	clusterDirPrefix = "anchorage-pgtest-cluster-"
	ownerFile        = "owner.pid"
)

var (
	startOnce  sync.Once
	cluster    *pgcluster.Cluster
	clusterDir string
	startErr   error

	templates sync.Map // name -> *templateState
	dbSeq     atomic.Int64
)

type templateState struct {
	once sync.Once
	err  error
}

// Main runs the tests, then stops the shared cluster (if one was started)
// and removes its directory, and exits with the tests' status.
func Main(m *testing.M) {
	code := m.Run()
	if err := shutdown(); err != nil {
		fmt.Fprintln(os.Stderr, "pgtest:", err)
		if code == 0 {
			code = 1
		}
	}
	os.Exit(code)
}

func shutdown() error {
	if cluster == nil {
		if clusterDir != "" {
			return os.RemoveAll(clusterDir)
		}
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := cluster.Stop(ctx)
	return errors.Join(err, os.RemoveAll(clusterDir))
}

// Cluster returns the test binary's shared ephemeral cluster, starting it
// on first use. It fails tb if the cluster cannot be started.
func Cluster(tb testing.TB) *pgcluster.Cluster {
	tb.Helper()
	startOnce.Do(func() {
		begin := time.Now()
		start()
		if startErr == nil {
			tb.Logf("pgtest: started shared cluster in %s in %v", clusterDir, time.Since(begin).Round(time.Millisecond))
		}
	})
	if startErr != nil {
		tb.Fatalf("pgtest: %v", startErr)
	}
	return cluster
}

func start() {
	root := pgcluster.TempRoot()
	removeStale(root)
	dir, err := os.MkdirTemp(root, clusterDirPrefix)
	if err != nil {
		startErr = err
		return
	}
	clusterDir = dir
	if err := os.WriteFile(filepath.Join(dir, ownerFile), []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
		startErr = err
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cluster, startErr = pgcluster.Start(ctx, pgcluster.Config{
		Dir:          dir,
		Ephemeral:    true,
		InitCacheDir: filepath.Join(root, fmt.Sprintf("anchorage-pgtest-initcache-%d", os.Geteuid())),
		Settings:     testSettings(),
	})
	if startErr != nil {
		_ = os.RemoveAll(dir)
		clusterDir = ""
	}
}

// testSettings are the managed cluster's (the same WAL level, so tests run the code paths anchorage dev does)
// plus room for many test databases' connections.
func testSettings() map[string]string {
	s := pgcluster.ReadModelSettings()
	s["max_connections"] = "200"
	return s
}

// removeStale deletes cluster directories left by test binaries that died
// without running Main (their server died with them).
func removeStale(root string) {
	dirs, _ := filepath.Glob(filepath.Join(root, clusterDirPrefix+"*"))
	for _, d := range dirs {
		owner := pidIn(filepath.Join(d, ownerFile))
		if owner == 0 {
			// owner.pid is written right after the directory is made.
			if fi, err := os.Stat(d); err != nil || time.Since(fi.ModTime()) < time.Minute {
				continue
			}
		} else if alive(owner) {
			continue
		}
		if alive(pidIn(filepath.Join(d, "data", "postmaster.pid"))) {
			continue // its server is still shutting down
		}
		_ = os.RemoveAll(d)
	}
}

func pidIn(file string) int {
	b, err := os.ReadFile(file)
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	pid, _ := strconv.Atoi(strings.TrimSpace(line))
	return max(pid, -pid)
}

func alive(pid int) bool {
	if pid <= 0 {
		return false
	}
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

// Template returns name after making sure a template database of that
// name exists in the shared cluster: the first call in a test binary
// creates it (from template0) and runs setup on it (e.g. migrations);
// later calls reuse it. setup must close its connections; any left open
// are terminated, and the template then refuses new connections so that
// it can be cloned.
func Template(tb testing.TB, name string, setup func(ctx context.Context, c *pgcluster.Cluster, dbName string) error) string {
	tb.Helper()
	c := Cluster(tb)
	v, _ := templates.LoadOrStore(name, &templateState{})
	st := v.(*templateState)
	st.once.Do(func() {
		begin := time.Now()
		// Overwritten unless setup ends the goroutine (t.FailNow inside it).
		st.err = errors.New("setup did not return (runtime.Goexit, e.g. t.FailNow, inside setup?)")
		st.err = buildTemplate(c, name, setup)
		if st.err == nil {
			tb.Logf("pgtest: built template %q in %v", name, time.Since(begin).Round(time.Millisecond))
		}
	})
	if st.err != nil {
		tb.Fatalf("pgtest: template %q: %v", name, st.err)
	}
	return name
}

func buildTemplate(c *pgcluster.Cluster, name string, setup func(context.Context, *pgcluster.Cluster, string) error) (err error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if err := c.CreateDatabase(ctx, name, "", "template0"); err != nil {
		return err
	}
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("setup panicked: %v", r)
		}
		if err != nil {
			ctx := context.Background()
			_ = c.Exec(ctx, "ALTER DATABASE "+pgx.Identifier{name}.Sanitize()+" WITH IS_TEMPLATE false")
			_ = c.DropDatabase(ctx, name)
		}
	}()
	if setup != nil {
		if err := setup(ctx, c, name); err != nil {
			return fmt.Errorf("setup: %w", err)
		}
	}
	return freeze(ctx, c, name)
}

// freeze marks db as a template that accepts no connections, then
// terminates the connections still open on it and waits until they are
// gone (CREATE DATABASE ... TEMPLATE fails while anyone is connected).
func freeze(ctx context.Context, c *pgcluster.Cluster, db string) error {
	if err := c.Exec(ctx, fmt.Sprintf("ALTER DATABASE %s WITH IS_TEMPLATE true ALLOW_CONNECTIONS false", pgx.Identifier{db}.Sanitize())); err != nil {
		return err
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		var n int
		if err := c.QueryRow(ctx, []any{&n},
			`SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity
			  WHERE datname = $1 AND pid <> pg_backend_pid()) t`, db); err != nil {
			return err
		}
		if n == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d connection(s) to template %q would not terminate", n, db)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// NewDatabase creates a uniquely named database cloned from template
// (template0, i.e. empty, when template is "") and drops it when the test
// ends. The clone has the template's owner. It returns the database name;
// connect with Cluster(tb).DSN(name, role).
func NewDatabase(tb testing.TB, template string) string {
	tb.Helper()
	c := Cluster(tb)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	name := uniqueName(tb.Name())
	src, owner := template, ""
	if src == "" {
		src = "template0"
	} else if err := c.QueryRow(ctx, []any{&owner},
		"SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = $1", src); err != nil {
		tb.Fatalf("pgtest: template %q: %v", src, err)
	}
	if err := c.CreateDatabase(ctx, name, owner, src); err != nil {
		tb.Fatalf("pgtest: %v", err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := c.DropDatabase(ctx, name); err != nil {
			tb.Errorf("pgtest: %v", err)
		}
	})
	return name
}

// DSN is a superuser connection string for database db of the shared
// cluster.
func DSN(tb testing.TB, db string) string {
	tb.Helper()
	return Cluster(tb).SuperuserDSN(db)
}

// uniqueName builds a database name from a sequence number and the test
// name, within PostgreSQL's 63-byte identifier limit.
func uniqueName(testName string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(testName) {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9':
			b.WriteRune(r)
		default:
			b.WriteByte('_')
		}
	}
	name := fmt.Sprintf("t%d_%s", dbSeq.Add(1), b.String())
	if len(name) > 63 {
		name = name[:63]
	}
	return name
}
