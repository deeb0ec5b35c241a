package pgcluster

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// testCache is a per-binary InitCacheDir so that only the first cluster of
// each kind pays for initdb.
var testCache string

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) != "" {
		runHelper()
		return
	}
	d, err := os.MkdirTemp(TempRoot(), "pgcluster-test-cache-")
	if err != nil {
		panic(err)
	}
	testCache = d
	code := m.Run()
	_ = os.RemoveAll(d)
	os.Exit(code)
}

// clusterDir returns a path for a new cluster, on tmpfs when possible
// (see TempRoot), removed when the test ends.
func clusterDir(t *testing.T) string {
	t.Helper()
	d, err := os.MkdirTemp(TempRoot(), "pgcluster-test-")
	require.NoError(t, err)
	require.NoError(t, os.Chmod(d, 0o755)) // the server user must get through
	t.Cleanup(func() { _ = os.RemoveAll(d) })
	return filepath.Join(d, "pg")
}

func start(t *testing.T, cfg Config) *Cluster {
	t.Helper()
	if cfg.InitCacheDir == "" {
		cfg.InitCacheDir = testCache
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	begin := time.Now()
	c, err := Start(ctx, cfg)
	require.NoError(t, err)
	t.Logf("Start (ephemeral=%v) took %v", cfg.Ephemeral, time.Since(begin).Round(time.Millisecond))
	t.Cleanup(func() { _ = c.Stop(context.Background()) })
	return c
}

func processGone(pid int) bool {
	err := syscall.Kill(pid, 0)
	return errors.Is(err, syscall.ESRCH)
}

// exited reports whether pid has exited, as a zombie included: an orphan's new parent (pid 1 in a container) may
// be slow to reap it, or never do.
func exited(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	i := bytes.LastIndexByte(b, ')')
	return i > 0 && i+2 < len(b) && b[i+2] == 'Z'
}

func waitGone(t *testing.T, pid int, within time.Duration) {
	t.Helper()
	require.Eventually(t, func() bool { return processGone(pid) }, within, 10*time.Millisecond,
		"postgres pid %d still alive", pid)
}

func queryString(t *testing.T, c *Cluster, db, user, sql string) string {
	t.Helper()
	ctx := context.Background()
	conn, err := c.Connect(ctx, db, user)
	require.NoError(t, err)
	defer conn.Close(ctx)
	var s string
	require.NoError(t, conn.QueryRow(ctx, sql).Scan(&s))
	return s
}

func TestFindBinariesOnThisMachine(t *testing.T) {
	dir, err := FindBinaries()
	require.NoError(t, err)
	for _, name := range requiredBinaries {
		assert.FileExists(t, filepath.Join(dir, name))
	}
}

func TestFindBinariesMissing(t *testing.T) {
	empty := t.TempDir()
	_, err := findBinaries(empty, []string{filepath.Join(empty, "usr/lib/postgresql/*/bin")})
	require.ErrorIs(t, err, ErrBinariesNotFound)
	assert.Contains(t, err.Error(), "apt-get install postgresql")
	assert.Contains(t, err.Error(), "not found on PATH")

	// An explicit BinDir without the programs fails the same way, before
	// anything is created.
	dir := clusterDir(t)
	_, err = Start(context.Background(), Config{Dir: dir, BinDir: empty})
	require.ErrorIs(t, err, ErrBinariesNotFound)
	assert.Contains(t, err.Error(), "apt-get install postgresql")
	assert.NoDirExists(t, dir)
}

func TestFindBinariesPicksHighestVersion(t *testing.T) {
	root := t.TempDir()
	for _, v := range []string{"9.6", "15", "13"} {
		bin := filepath.Join(root, v, "bin")
		require.NoError(t, os.MkdirAll(bin, 0o755))
		for _, name := range requiredBinaries {
			require.NoError(t, os.WriteFile(filepath.Join(bin, name), []byte("#!/bin/sh\n"), 0o755))
		}
	}
	// 17 exists but is incomplete.
	require.NoError(t, os.MkdirAll(filepath.Join(root, "17", "bin"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(root, "17", "bin", "initdb"), nil, 0o755))

	got, err := findBinaries("", []string{filepath.Join(root, "*", "bin")})
	require.NoError(t, err)
	assert.Equal(t, filepath.Join(root, "15", "bin"), got)

	// PATH wins over the versioned directories.
	got, err = findBinaries("relative:"+filepath.Join(root, "9.6", "bin"), []string{filepath.Join(root, "*", "bin")})
	require.NoError(t, err)
	assert.Equal(t, filepath.Join(root, "9.6", "bin"), got)
}

func TestStartStopRestartKeepsData(t *testing.T) {
	dir := clusterDir(t)
	ctx := context.Background()

	c := start(t, Config{Dir: dir})
	pid := c.Pid()
	require.NoError(t, c.Exec(ctx, "CREATE TABLE kept (v text)"))
	require.NoError(t, c.Exec(ctx, "INSERT INTO kept VALUES ($1)", "hello"))
	require.NoError(t, c.CreateDatabase(ctx, `we"ird db`, "", ""))

	// Durability defaults for a persistent cluster, and no TCP.
	assert.Equal(t, "on", queryString(t, c, "postgres", "postgres", "SHOW fsync"))
	assert.Equal(t, "", queryString(t, c, "postgres", "postgres", "SHOW listen_addresses"))

	// The socket directory is private to the server user.
	fi, err := os.Stat(c.SocketDir())
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o700), fi.Mode().Perm())
	if os.Geteuid() == 0 {
		st := fi.Sys().(*syscall.Stat_t)
		assert.NotZero(t, st.Uid, "socket dir must belong to the unprivileged server user")
	}
	assert.FileExists(t, filepath.Join(c.SocketDir(), fmt.Sprintf(".s.PGSQL.%d", c.Port())))

	require.NoError(t, c.Stop(ctx))
	require.NoError(t, c.Stop(ctx), "Stop is idempotent")
	require.NoError(t, c.Wait())
	waitGone(t, pid, 5*time.Second)
	select {
	case <-c.Done():
	default:
		t.Fatal("Done not closed after Stop")
	}
	require.ErrorIs(t, c.Exec(ctx, "SELECT 1"), ErrStopped)

	c2 := start(t, Config{Dir: dir})
	assert.NotEqual(t, pid, c2.Pid())
	assert.Equal(t, "hello", queryString(t, c2, "postgres", "postgres", "SELECT v FROM kept"))
	assert.Equal(t, "1", queryString(t, c2, `we"ird db`, "postgres", "SELECT '1'"))
	require.NoError(t, c2.DropDatabase(ctx, `we"ird db`))
	require.NoError(t, c2.DropDatabase(ctx, `we"ird db`), "DropDatabase tolerates a missing database")
	require.NoError(t, c2.Stop(ctx))
}

func TestEphemeralSettings(t *testing.T) {
	c := start(t, Config{Dir: clusterDir(t), Ephemeral: true, Settings: map[string]string{"work_mem": "8MB"}})
	for setting, want := range map[string]string{
		"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off", "work_mem": "8MB",
		"server_encoding": "UTF8", "lc_collate": "C",
	} {
		assert.Equal(t, want, queryString(t, c, "postgres", "postgres", "SHOW "+setting), setting)
	}
}

func TestManagedSettingsRejected(t *testing.T) {
	dir := clusterDir(t)
	_, err := Start(context.Background(), Config{Dir: dir, Settings: map[string]string{"listen_addresses": "*"}})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "listen_addresses")
	assert.NoDirExists(t, dir)
}

func TestSecondStartOnLiveDirFails(t *testing.T) {
	dir := clusterDir(t)
	c := start(t, Config{Dir: dir, Ephemeral: true})

	_, err := Start(context.Background(), Config{Dir: dir, Ephemeral: true, InitCacheDir: testCache})
	require.ErrorIs(t, err, ErrAlreadyRunning)
	assert.Contains(t, err.Error(), fmt.Sprintf("already running (pid %d)", c.Pid()))

	// The failed attempt did not disturb the running server.
	require.NoError(t, c.Exec(context.Background(), "SELECT 1"))
}

func TestLivePostmasterStartedElsewhere(t *testing.T) {
	// A server started outside pgcluster (no flock) on the same data dir
	// is detected through postmaster.pid.
	dir := clusterDir(t)
	c := start(t, Config{Dir: dir, Ephemeral: true})
	other := &Cluster{dir: dir, dataDir: c.DataDir(), log: c.log}
	err := other.checkPostmasterPid()
	require.ErrorIs(t, err, ErrAlreadyRunning)
	assert.Contains(t, err.Error(), fmt.Sprintf("(pid %d)", c.Pid()))

	// A postmaster.pid naming a live process that is not a postmaster of
	// that data dir (pid reuse after a crash) is stale and removed.
	fake := filepath.Join(t.TempDir(), "data")
	require.NoError(t, os.MkdirAll(fake, 0o700))
	pidFile := filepath.Join(fake, "postmaster.pid")
	require.NoError(t, os.WriteFile(pidFile, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o600))
	other = &Cluster{dir: filepath.Dir(fake), dataDir: fake, log: c.log}
	require.NoError(t, other.checkPostmasterPid())
	assert.NoFileExists(t, pidFile)
	// Same for the live postmaster of another data dir.
	require.NoError(t, os.WriteFile(pidFile, []byte(strconv.Itoa(c.Pid())+"\n"), 0o600))
	require.NoError(t, other.checkPostmasterPid())
	assert.NoFileExists(t, pidFile)
}

func TestCrashThenRestartRecovers(t *testing.T) {
	dir := clusterDir(t)
	ctx := context.Background()
	c := start(t, Config{Dir: dir})
	require.NoError(t, c.Exec(ctx, "CREATE TABLE t (v int)"))
	require.NoError(t, c.Exec(ctx, "INSERT INTO t VALUES (42)"))

	// Simulate a crash: the postmaster dies, leaving postmaster.pid.
	pid := c.Pid()
	require.NoError(t, syscall.Kill(pid, syscall.SIGKILL))
	select {
	case <-c.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("Done not closed after the server died")
	}
	err := c.Wait()
	require.Error(t, err)
	assert.Contains(t, err.Error(), "exited unexpectedly")
	assert.Equal(t, err, c.Stop(ctx), "Stop reports the unexpected exit")
	assert.FileExists(t, filepath.Join(c.DataDir(), "postmaster.pid"))

	// Its backends notice the postmaster's death and exit; then a new
	// Start recovers from the stale postmaster.pid and the crash.
	c2 := start(t, Config{Dir: dir})
	assert.Equal(t, "42", queryString(t, c2, "postgres", "postgres", "SELECT v::text FROM t"))
}

// A backend busy in a query does not look for its postmaster's death until the query ends, and keeps the dead
// postmaster's shared memory until it exits: a start in the meantime must wait for it, not fail.
func TestRestartWhileOrphanedBackendRuns(t *testing.T) {
	dir := clusterDir(t)
	ctx := context.Background()
	c := start(t, Config{Dir: dir, Ephemeral: true})
	conn, err := c.Connect(ctx, "postgres", Superuser)
	require.NoError(t, err)
	var backend int
	require.NoError(t, conn.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&backend))
	busy := make(chan error, 1)
	go func() {
		// A few seconds of CPU that never waits on a latch (where backends notice postmaster death).
		_, err := conn.Exec(ctx, "SELECT count(*) FROM generate_series(1, 20000000)")
		busy <- err
	}()
	time.Sleep(300 * time.Millisecond) // the query is running
	require.NoError(t, syscall.Kill(c.Pid(), syscall.SIGKILL))
	<-c.Done()
	require.Error(t, c.Stop(ctx), "Stop reports the unexpected exit and releases the Dir")
	require.False(t, exited(backend), "the backend outlived its postmaster (the case under test)")

	c2 := start(t, Config{Dir: dir, Ephemeral: true})
	assert.Equal(t, "1", queryString(t, c2, "postgres", "postgres", "SELECT 1::text"))
	assert.True(t, exited(backend), "the new postmaster started only after the orphaned backend exited")
	<-busy
}

func TestUnreachableDir(t *testing.T) {
	locked := t.TempDir() // 0700, owned by the current user
	dir := filepath.Join(locked, "pg")

	// Pure check, independent of who runs the test.
	id := &identity{name: "someone", uid: 54321, gid: 54321, groups: []uint32{54321}}
	err := checkReachable(dir, id)
	require.ErrorIs(t, err, ErrDirUnreachable)
	assert.Contains(t, err.Error(), dir)
	assert.Contains(t, err.Error(), "Choose a data directory")

	// Reachable once the parent is searchable; an existing dir itself
	// does not need to be (Start chowns it).
	require.NoError(t, os.Chmod(filepath.Dir(locked), 0o711)) // made by t.TempDir, 0700 too
	require.NoError(t, os.Chmod(locked, 0o711))
	require.NoError(t, checkReachable(dir, id))
	require.NoError(t, os.Mkdir(dir, 0o700))
	require.NoError(t, checkReachable(dir, id))
	require.NoError(t, os.Remove(dir))
	require.NoError(t, os.Chmod(locked, 0o700))

	if os.Geteuid() == 0 {
		// As root the server runs as an unprivileged user that cannot
		// enter the 0700 root-owned directory: Start fails before
		// creating anything.
		_, err := Start(context.Background(), Config{Dir: dir, Ephemeral: true})
		require.ErrorIs(t, err, ErrDirUnreachable)
		assert.Contains(t, err.Error(), dir)
		assert.Contains(t, err.Error(), locked+" (mode -rwx------")
		assert.NoDirExists(t, dir)
	} else {
		// Not root: the server runs as us, so our own 0700 dir is fine.
		c := start(t, Config{Dir: dir, Ephemeral: true})
		require.NoError(t, c.Stop(context.Background()))
	}
}

func TestCreateDatabaseFromTemplate(t *testing.T) {
	c := start(t, Config{Dir: clusterDir(t), Ephemeral: true})
	ctx := context.Background()
	require.NoError(t, c.Exec(ctx, "CREATE ROLE owner_role LOGIN"))
	require.NoError(t, c.CreateDatabase(ctx, "tmpl", "owner_role", ""))
	conn, err := c.Connect(ctx, "tmpl", "owner_role")
	require.NoError(t, err)
	_, err = conn.Exec(ctx, "CREATE TABLE x (v int); INSERT INTO x VALUES (7)")
	require.NoError(t, err)
	require.NoError(t, conn.Close(ctx))

	begin := time.Now()
	require.NoError(t, c.CreateDatabase(ctx, "clone", "", "tmpl"))
	t.Logf("clone took %v", time.Since(begin).Round(time.Microsecond))
	assert.Equal(t, "7", queryString(t, c, "clone", "owner_role", "SELECT v::text FROM x"))
	assert.Equal(t, "owner_role", queryString(t, c, "clone", "owner_role", "SELECT tableowner::text FROM pg_tables WHERE tablename = 'x'"))

	// The DSN works with plain pgx too.
	cfg, err := pgx.ParseConfig(c.DSN("clone", "owner_role"))
	require.NoError(t, err)
	assert.Equal(t, c.SocketDir(), cfg.Host)
	assert.Equal(t, uint16(Port), cfg.Port)
}

func TestDSNQuoting(t *testing.T) {
	c := &Cluster{socketDir: "/tmp/x"}
	cfg, err := pgx.ParseConfig(c.DSN(`my 'db'`, `us\er`))
	require.NoError(t, err)
	assert.Equal(t, `my 'db'`, cfg.Database)
	assert.Equal(t, `us\er`, cfg.User)
	assert.Equal(t, "/tmp/x", cfg.Host)
}

// --- parent death -----------------------------------------------------------

const helperEnv = "PGCLUSTER_TEST_HELPER_DIR"

// runHelper is the child side of TestParentDeathStopsServer: it starts a
// cluster, churns OS threads (which would kill a server forked from a
// thread that exits, golang/go#27505), reports the server pid and waits to
// be killed.
func runHelper() {
	c, err := Start(context.Background(), Config{Dir: os.Getenv(helperEnv), Ephemeral: true, InitCacheDir: os.Getenv("PGCLUSTER_TEST_HELPER_CACHE")})
	if err != nil {
		fmt.Println("error:", strings.ReplaceAll(err.Error(), "\n", " | "))
		os.Exit(1)
	}
	for range 50 {
		done := make(chan struct{})
		go func() {
			runtimeLockAndExit()
			close(done)
		}()
		<-done
	}
	fmt.Println("pid:", c.Pid())
	select {}
}

func TestParentDeathStopsServer(t *testing.T) {
	dir := clusterDir(t)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"="+dir, "PGCLUSTER_TEST_HELPER_CACHE="+testCache)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })

	line, err := bufio.NewReader(out).ReadString('\n')
	require.NoError(t, err)
	pidStr, ok := strings.CutPrefix(strings.TrimSpace(line), "pid: ")
	require.True(t, ok, "helper said %q", line)
	pid, err := strconv.Atoi(pidStr)
	require.NoError(t, err)

	// The thread churn in the helper did not take the server down.
	time.Sleep(200 * time.Millisecond)
	require.False(t, processGone(pid), "server died while its parent lives")

	require.NoError(t, cmd.Process.Kill()) // SIGKILL: no cleanup code runs
	_ = cmd.Wait()
	waitGone(t, pid, 10*time.Second)

	// The abandoned Dir can be started again.
	c := start(t, Config{Dir: dir, Ephemeral: true})
	require.NoError(t, c.Exec(context.Background(), "SELECT 1"))
}

// runtimeLockAndExit ends the calling goroutine while it holds its OS
// thread, which makes the runtime terminate that thread.
func runtimeLockAndExit() { runtime.LockOSThread() }

func TestStartFailureIncludesLogTail(t *testing.T) {
	dir := clusterDir(t)
	_, err := Start(context.Background(), Config{Dir: dir, Ephemeral: true, InitCacheDir: testCache,
		Settings: map[string]string{"shared_buffers": "bogus"}})
	require.Error(t, err)
	t.Logf("error: %v", err)
	assert.Contains(t, err.Error(), "exited during startup")
	assert.Contains(t, err.Error(), `invalid value for parameter "shared_buffers"`, "log tail is part of the error")

	// Nothing is left running or locked: a correct Start works.
	c := start(t, Config{Dir: dir, Ephemeral: true})
	require.NoError(t, c.Exec(context.Background(), "SELECT 1"))
}

func TestLongDirUsesPrivateTempSocketDir(t *testing.T) {
	dir := filepath.Join(clusterDir(t), strings.Repeat("long-path-", 10))
	c := start(t, Config{Dir: dir, Ephemeral: true})
	sock := c.SocketDir()
	assert.False(t, strings.HasPrefix(sock, dir), "socket dir %s must be short", sock)
	fi, err := os.Stat(sock)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o700), fi.Mode().Perm())
	require.NoError(t, c.Exec(context.Background(), "SELECT 1"))
	require.NoError(t, c.Stop(context.Background()))
	assert.NoDirExists(t, sock, "temp socket dir removed on Stop")
}
