// Package pgcluster runs a private local PostgreSQL cluster as a child
// process: persistent for `anchorage dev`, throwaway for tests (see
// package pgtest).
//
// The server listens only on a unix socket inside a 0700 directory (no
// TCP), which is what makes the "trust" authentication initdb is run with
// acceptable: only the current user (and root) can connect, as any role.
//
// When the current process is root, initdb and postgres (which refuse to
// run as root) are run as the "postgres" user, else "nobody"; Start chowns
// what they need and fails early when that user cannot reach Config.Dir.
//
// Layout of Config.Dir:
//
//	data/          the PostgreSQL data directory (PGDATA)
//	run/           the unix socket directory (when the path is short enough)
//	postgres.log   initdb and server output
//	.pgcluster.lock held (flock) while a Cluster runs on Dir
package pgcluster

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

// Port is the port number of the unix socket (.s.PGSQL.5432). The socket
// directory is private to the cluster, so a fixed number cannot clash.
const Port = 5432

// Superuser is the bootstrap superuser role created by initdb.
const Superuser = "postgres"

// ErrAlreadyRunning is wrapped by the error Start returns when another
// server (or another Cluster in this process) is running on Config.Dir.
var ErrAlreadyRunning = errors.New("PostgreSQL cluster already running")

// ErrStopped is returned by the helpers that need a connection once the
// cluster has been stopped.
var ErrStopped = errors.New("pgcluster: cluster stopped")

// Config configures Start.
type Config struct {
	// Dir holds the cluster (created if missing). A cluster initialised
	// earlier in Dir is reused with all its data.
	Dir string
	// Ephemeral trades durability for speed (fsync, synchronous_commit
	// and full_page_writes off): for tests only. Persistent clusters keep
	// PostgreSQL's durability defaults.
	Ephemeral bool
	// Logger receives lifecycle messages (nil: discard). Server output
	// goes to Dir/postgres.log.
	Logger *slog.Logger
	// BinDir overrides FindBinaries.
	BinDir string
	// Settings are extra server settings (postgresql.conf names), passed
	// as -c name=value on every start. listen_addresses, port and
	// unix_socket_directories are managed by pgcluster and rejected.
	Settings map[string]string
	// StartTimeout bounds initdb plus the wait for the server to accept
	// connections (default 60s; crash recovery can take a while).
	StartTimeout time.Duration
	// InitCacheDir, when set, keeps a pristine copy of initdb's output
	// there (keyed by binaries and server user) and initialises new
	// clusters by copying it, which is much faster than initdb. The
	// directory must be private to the current user. Used by pgtest.
	InitCacheDir string
}

// ReadModelSettings tune a cluster that holds nothing but state derived from another log, such as anchorage's
// read models, which are rebuilt by replaying its event stream and never replicated or archived from this
// cluster:
//   - wal_level minimal (max_wal_senders 0): tables and indexes created in a transaction are synced at commit
//     instead of written to the WAL. A rebuild creates every table and index it fills: measured on 971,868
//     events, 588 MB of WAL instead of about 2 GB, and no WAL-triggered checkpoint mid-rebuild. Commits stay
//     crash-safe; what it gives up is streaming replication and point-in-time recovery of this cluster, which
//     a replayable read model does not need (an operator who wants them runs their own PostgreSQL).
//   - max_wal_size 2GB: at the default 1GB a rebuild of a million events still set off checkpoints while it
//     loaded ("checkpoints are occurring too frequently"), each writing back pages the rebuild was filling.
//   - deadlock_timeout 100ms: it is also how long a statement waits on an autovacuum holding a lock it needs
//     before PostgreSQL cancels the autovacuum. A rebuild's swap, which API queries queue behind, waited a whole
//     second for each live table autovacuum was working on (1-3 s swaps instead of 0.2 s).
func ReadModelSettings() map[string]string {
	return map[string]string{
		"wal_level":        "minimal",
		"max_wal_senders":  "0",
		"max_wal_size":     "2GB",
		"deadlock_timeout": "100ms",
	}
}

// Cluster is a running PostgreSQL server. Stop it when done.
type Cluster struct {
	cfg       Config
	log       *slog.Logger
	dir       string
	dataDir   string
	socketDir string
	ownSocket bool // socketDir is a temp dir removed on Stop
	binDir    string
	id        *identity
	logPath   string
	logFile   *os.File
	logStart  int64
	lockFile  *os.File
	version   int // server_version_num

	proc     *proc
	exitErr  error // valid once proc.done is closed
	exitDone chan struct{}
	stopping atomic.Bool
	stopOnce sync.Once
	stopErr  error

	admin *connPool
}

// Start initialises (if needed) and starts the cluster in cfg.Dir and
// waits until it accepts connections.
func Start(ctx context.Context, cfg Config) (_ *Cluster, err error) {
	if cfg.Dir == "" {
		return nil, errors.New("pgcluster: Config.Dir is required")
	}
	dir, err := filepath.Abs(cfg.Dir)
	if err != nil {
		return nil, fmt.Errorf("pgcluster: %w", err)
	}
	for k := range cfg.Settings {
		switch strings.ToLower(k) {
		case "listen_addresses", "port", "unix_socket_directories", "unix_socket_permissions", "unix_socket_group":
			return nil, fmt.Errorf("pgcluster: setting %q is managed by pgcluster (unix socket only, no TCP)", k)
		}
	}
	if cfg.StartTimeout <= 0 {
		cfg.StartTimeout = 60 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.StartTimeout)
	defer cancel()

	c := &Cluster{
		cfg:      cfg,
		log:      cfg.Logger,
		dir:      dir,
		dataDir:  filepath.Join(dir, "data"),
		logPath:  filepath.Join(dir, "postgres.log"),
		exitDone: make(chan struct{}),
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	c.log = c.log.With("component", "pgcluster", "dir", dir)

	if cfg.BinDir != "" {
		c.binDir, err = checkBinDir(cfg.BinDir)
	} else {
		c.binDir, err = FindBinaries()
	}
	if err != nil {
		return nil, err
	}

	if c.id, err = serverIdentity(c.dataDir); err != nil {
		return nil, err
	}
	// Fail before touching anything if the server user cannot get there.
	if err := checkReachable(dir, c.id); err != nil {
		return nil, err
	}
	if err := ensureDir(dir, c.id); err != nil {
		return nil, fmt.Errorf("pgcluster: create %s: %w", dir, err)
	}
	if err := checkReachable(dir, c.id); err != nil { // e.g. a restrictive umask
		return nil, err
	}

	defer func() {
		if err != nil {
			c.cleanup()
		}
	}()
	if err := c.lock(); err != nil {
		return nil, err
	}
	if err := c.checkPostmasterPid(); err != nil {
		return nil, err
	}
	if err := c.openLog(); err != nil {
		return nil, err
	}

	begin := time.Now()
	if _, statErr := os.Stat(filepath.Join(c.dataDir, "PG_VERSION")); statErr != nil {
		if !errors.Is(statErr, fs.ErrNotExist) {
			return nil, fmt.Errorf("pgcluster: %w", statErr)
		}
		if _, err := os.Stat(c.dataDir); err == nil {
			return nil, fmt.Errorf("pgcluster: %s exists but holds no PostgreSQL cluster (no PG_VERSION); remove it or choose another Dir", c.dataDir)
		}
		c.log.Info("initialising new cluster", "bin_dir", c.binDir, "run_as", c.runAsName())
		if err := c.initdb(ctx); err != nil {
			return nil, err
		}
		c.log.Info("initialised cluster", "elapsed", time.Since(begin).Round(time.Millisecond))
	}
	if err := c.prepareSocketDir(); err != nil {
		return nil, err
	}
	if err := c.startAndWait(ctx); err != nil {
		return nil, err
	}
	c.log.Info("postgres ready", "pid", c.proc.pid(), "socket_dir", c.socketDir, "elapsed", time.Since(begin).Round(time.Millisecond))
	return c, nil
}

// lock takes an exclusive flock on Dir/.pgcluster.lock, so that two
// Clusters never run on one Dir (in this process or another).
func (c *Cluster) lock() error {
	f, err := os.OpenFile(filepath.Join(c.dir, ".pgcluster.lock"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("pgcluster: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			if pid, _ := postmasterPid(c.dataDir); pid > 0 {
				return fmt.Errorf("%w (pid %d) on %s: stop it first or use another Dir", ErrAlreadyRunning, pid, c.dir)
			}
			return fmt.Errorf("%w on %s (locked by another process): stop it first or use another Dir", ErrAlreadyRunning, c.dir)
		}
		return fmt.Errorf("pgcluster: lock %s: %w", f.Name(), err)
	}
	c.lockFile = f
	return nil
}

// postmasterPid reads the pid recorded in data/postmaster.pid (0 when
// absent). Single-user backends record it negated.
func postmasterPid(dataDir string) (int, error) {
	b, err := os.ReadFile(filepath.Join(dataDir, "postmaster.pid"))
	if err != nil {
		return 0, err
	}
	line, _, _ := strings.Cut(string(b), "\n")
	pid, err := strconv.Atoi(strings.TrimSpace(line))
	if err != nil {
		return 0, fmt.Errorf("parse postmaster.pid: %w", err)
	}
	if pid < 0 {
		pid = -pid
	}
	return pid, nil
}

// checkPostmasterPid refuses to start over a live server started outside
// pgcluster and removes a lock file whose pid has been reused by an
// unrelated process. (A pid that no longer exists is handled by postgres.)
func (c *Cluster) checkPostmasterPid() error {
	pid, err := postmasterPid(c.dataDir)
	if err != nil || pid <= 0 {
		return nil
	}
	if err := syscall.Kill(pid, 0); err != nil && !errors.Is(err, syscall.EPERM) {
		c.log.Info("stale postmaster.pid (process gone); postgres will replace it", "pid", pid)
		return nil
	}
	if isPostmasterOf(pid, c.dataDir) {
		return fmt.Errorf("%w (pid %d) on %s: stop it first or use another Dir", ErrAlreadyRunning, pid, c.dir)
	}
	c.log.Warn("removing stale postmaster.pid: its pid now belongs to an unrelated process", "pid", pid)
	if err := os.Remove(filepath.Join(c.dataDir, "postmaster.pid")); err != nil {
		return fmt.Errorf("pgcluster: remove stale postmaster.pid: %w", err)
	}
	return nil
}

// isPostmasterOf reports whether the live process pid is a postgres
// running in dataDir. When /proc cannot tell, it conservatively says yes.
func isPostmasterOf(pid int, dataDir string) bool {
	comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	if err != nil {
		return true
	}
	if strings.TrimSpace(string(comm)) != "postgres" {
		return false
	}
	cwd, err := os.Readlink(fmt.Sprintf("/proc/%d/cwd", pid))
	if err != nil {
		return true
	}
	a, errA := os.Stat(cwd)
	b, errB := os.Stat(dataDir)
	if errA != nil || errB != nil {
		return true
	}
	return os.SameFile(a, b)
}

const maxLogSize = 32 << 20

func (c *Cluster) openLog() error {
	if fi, err := os.Stat(c.logPath); err == nil && fi.Size() > maxLogSize {
		_ = os.Rename(c.logPath, c.logPath+".1")
	}
	f, err := os.OpenFile(c.logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("pgcluster: open log: %w", err)
	}
	if fi, err := f.Stat(); err == nil {
		c.logStart = fi.Size()
	}
	fmt.Fprintf(f, "---- pgcluster start %s (pid %d) ----\n", time.Now().Format(time.RFC3339), os.Getpid())
	c.logFile = f
	return nil
}

func (c *Cluster) runAsName() string {
	if c.id == nil {
		return "(current user)"
	}
	return c.id.name
}

// LogPath is the file that receives initdb and server output.
func (c *Cluster) LogPath() string { return c.logPath }

// logTail returns the last lines logged since this Start.
func (c *Cluster) logTail() string {
	f, err := os.Open(c.logPath)
	if err != nil {
		return ""
	}
	defer f.Close()
	const maxBytes = 4096
	fi, err := f.Stat()
	if err != nil {
		return ""
	}
	from := max(c.logStart, fi.Size()-maxBytes)
	buf := make([]byte, fi.Size()-from)
	n, _ := f.ReadAt(buf, from)
	buf = buf[:n]
	if from > c.logStart {
		if i := bytes.IndexByte(buf, '\n'); i >= 0 {
			buf = buf[i+1:]
		}
	}
	lines := strings.Split(strings.TrimRight(string(buf), "\n"), "\n")
	if len(lines) > 30 {
		lines = lines[len(lines)-30:]
	}
	return strings.Join(lines, "\n")
}

func (c *Cluster) withLog(err error) error {
	tail := c.logTail()
	if tail == "" {
		return err
	}
	return fmt.Errorf("%w\n--- %s (tail) ---\n%s", err, c.logPath, tail)
}

// childEnv is our environment without libpq/server PG* variables.
func childEnv() []string {
	env := os.Environ()
	return slices.DeleteFunc(env, func(kv string) bool { return strings.HasPrefix(kv, "PG") })
}

func (c *Cluster) command(name string, args ...string) *exec.Cmd {
	cmd := exec.Command(filepath.Join(c.binDir, name), args...)
	cmd.Dir = c.dir
	cmd.Env = childEnv()
	cmd.Stdin = nil
	cmd.Stdout = c.logFile
	cmd.Stderr = c.logFile
	cmd.SysProcAttr = sysProcAttr(c.id.credential())
	return cmd
}

func (c *Cluster) initdbArgs(dataDir string) []string {
	args := []string{
		"-D", dataDir,
		"-U", Superuser,
		"--auth-local=trust", // see package doc: unix socket in a 0700 dir only
		"--auth-host=reject",
		"--encoding=UTF8",
		"--locale=C",
	}
	if c.cfg.Ephemeral {
		args = append(args, "--no-sync")
	}
	return args
}

// initdb creates the data directory, atomically: into a temp directory
// renamed into place on success, so a crash never leaves a half-made
// cluster behind.
func (c *Cluster) initdb(ctx context.Context) error {
	tmp := filepath.Join(c.dir, "data.init-tmp")
	if err := os.RemoveAll(tmp); err != nil {
		return fmt.Errorf("pgcluster: %w", err)
	}
	cacheEntry := c.initCacheEntry()
	if cacheEntry != "" {
		if _, err := os.Stat(filepath.Join(cacheEntry, "PG_VERSION")); err == nil {
			err := copyTree(cacheEntry, tmp, c.id)
			if err == nil {
				c.log.Debug("initialised from cache", "cache", cacheEntry)
				return os.Rename(tmp, c.dataDir)
			}
			c.log.Warn("init cache unusable; running initdb", "cache", cacheEntry, "err", err)
			_ = os.RemoveAll(tmp)
		}
	}

	cmd := c.command("initdb", c.initdbArgs(tmp)...)
	p, err := startLocked(cmd)
	if err != nil {
		return fmt.Errorf("pgcluster: run initdb: %w", err)
	}
	select {
	case <-p.done:
	case <-ctx.Done():
		_ = p.signal(syscall.SIGKILL)
		<-p.done
		_ = os.RemoveAll(tmp)
		return c.withLog(fmt.Errorf("pgcluster: initdb in %s: %w", c.dir, ctx.Err()))
	}
	if p.err != nil {
		_ = os.RemoveAll(tmp)
		return c.withLog(fmt.Errorf("pgcluster: initdb in %s failed: %w", c.dir, p.err))
	}
	if cacheEntry != "" {
		c.fillInitCache(tmp, cacheEntry)
	}
	return os.Rename(tmp, c.dataDir)
}

// initCacheEntry names the cache entry for our binaries, options and
// server user ("" when caching is off or the cache dir is not private).
func (c *Cluster) initCacheEntry() string {
	root := c.cfg.InitCacheDir
	if root == "" {
		return ""
	}
	if err := os.MkdirAll(root, 0o700); err != nil || !privateDir(root) {
		c.log.Warn("ignoring InitCacheDir: not a private directory of the current user", "dir", root)
		return ""
	}
	h := sha256.New()
	fmt.Fprintln(h, c.binDir, c.id.credential(), c.initdbArgs(""))
	for _, name := range requiredBinaries {
		if fi, err := os.Stat(filepath.Join(c.binDir, name)); err == nil {
			fmt.Fprintln(h, name, fi.Size(), fi.ModTime().UnixNano())
		}
	}
	return filepath.Join(root, "initdb-"+hex.EncodeToString(h.Sum(nil))[:16])
}

func (c *Cluster) fillInitCache(src, entry string) {
	if _, err := os.Stat(entry); err == nil {
		return
	}
	tmp := fmt.Sprintf("%s.tmp-%d-%d", entry, os.Getpid(), time.Now().UnixNano())
	var owner *identity // cache entries stay ours; copies are chowned on use
	if err := copyTree(src, tmp, owner); err != nil {
		c.log.Warn("could not fill init cache", "err", err)
		_ = os.RemoveAll(tmp)
		return
	}
	if err := os.Rename(tmp, entry); err != nil { // lost a race: fine
		_ = os.RemoveAll(tmp)
	}
}

// safeSocketDir matches socket directory paths that need no quoting in
// unix_socket_directories and in DSNs.
var safeSocketDir = regexp.MustCompile(`^/[A-Za-z0-9/._+@-]*$`)

// prepareSocketDir picks Dir/run, or a private temp dir when that path is
// too long for a unix socket (sun_path is 108 bytes) or needs quoting.
func (c *Cluster) prepareSocketDir() error {
	dir := filepath.Join(c.dir, "run")
	if len(dir) > 90 || !safeSocketDir.MatchString(dir) {
		tmpRoot := "/tmp"
		if fi, err := os.Stat(tmpRoot); err != nil || !fi.IsDir() {
			tmpRoot = os.TempDir()
		}
		d, err := os.MkdirTemp(tmpRoot, "pgsock-")
		if err != nil {
			return fmt.Errorf("pgcluster: socket dir: %w", err)
		}
		c.ownSocket = true
		dir = d
	} else if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("pgcluster: socket dir: %w", err)
	}
	c.socketDir = dir
	// Private to the server user (and root, which bypasses permissions).
	if err := os.Chmod(dir, 0o700); err != nil {
		return fmt.Errorf("pgcluster: socket dir: %w", err)
	}
	if err := c.id.chown(dir); err != nil {
		return fmt.Errorf("pgcluster: socket dir: %w", err)
	}
	return nil
}

func (c *Cluster) serverArgs() []string {
	settings := map[string]string{
		"listen_addresses":        "",
		"port":                    strconv.Itoa(Port),
		"unix_socket_directories": c.socketDir,
		"unix_socket_permissions": "0700",
	}
	if c.cfg.Ephemeral {
		settings["fsync"] = "off"
		settings["synchronous_commit"] = "off"
		settings["full_page_writes"] = "off"
	}
	for k, v := range c.cfg.Settings {
		settings[k] = v
	}
	args := []string{"-D", c.dataDir}
	for _, k := range slices.Sorted(maps.Keys(settings)) {
		args = append(args, "-c", k+"="+settings[k])
	}
	return args
}

func (c *Cluster) startServer() error {
	p, err := startLocked(c.command("postgres", c.serverArgs()...))
	if err != nil {
		return fmt.Errorf("pgcluster: run postgres: %w", err)
	}
	c.proc = p
	go func() {
		<-p.done
		var err error
		switch {
		case c.stopping.Load() && p.err == nil:
		case c.stopping.Load():
			err = fmt.Errorf("pgcluster: postgres (pid %d) did not shut down cleanly: %w", p.pid(), p.err)
		default:
			status := "exited with status 0"
			if p.err != nil {
				status = p.err.Error()
			}
			err = c.withLog(fmt.Errorf("pgcluster: postgres (pid %d) exited unexpectedly: %s", p.pid(), status))
			c.log.Error("postgres exited unexpectedly", "pid", p.pid(), "err", status, "log", c.logPath)
		}
		c.exitErr = err
		close(c.exitDone)
	}()
	return nil
}

func (c *Cluster) waitReady(ctx context.Context) error {
	cfg, err := pgx.ParseConfig(c.SuperuserDSN("postgres"))
	if err != nil {
		return fmt.Errorf("pgcluster: %w", err)
	}
	cfg.ConnectTimeout = 5 * time.Second
	var lastErr error
	delay := 5 * time.Millisecond
	for {
		if _, statErr := os.Stat(filepath.Join(c.socketDir, fmt.Sprintf(".s.PGSQL.%d", Port))); statErr == nil {
			conn, err := pgx.ConnectConfig(ctx, cfg)
			if err == nil {
				err = conn.QueryRow(ctx, "SELECT current_setting('server_version_num')::int").Scan(&c.version)
				conn.Close(context.Background())
				if err == nil {
					c.admin = newConnPool(cfg, 4)
					return nil
				}
			}
			lastErr = err
		}
		select {
		case <-c.exitDone:
			return c.withLog(fmt.Errorf("pgcluster: postgres exited during startup: %v", c.proc.err))
		case <-ctx.Done():
			msg := "timed out waiting for postgres to accept connections"
			if lastErr != nil {
				msg += " (last error: " + lastErr.Error() + ")"
			}
			return c.withLog(fmt.Errorf("pgcluster: %s on %s: %w", msg, c.socketDir, ctx.Err()))
		case <-time.After(delay):
		}
		delay = min(delay*2, 100*time.Millisecond)
	}
}

// startAndWait starts the server and waits until it accepts connections. After a postmaster is killed, its
// backends notice and exit within moments, but until the last has, a new postmaster refuses to start
// ("pre-existing shared memory block ... is still in use"): then it starts again once they are gone (bounded by
// ctx, the start timeout).
func (c *Cluster) startAndWait(ctx context.Context) error {
	for {
		from := c.logSize()
		if err := c.startServer(); err != nil {
			return err
		}
		err := c.waitReady(ctx)
		if err == nil {
			return nil
		}
		exited := false
		select {
		case <-c.exitDone:
			exited = true
		default:
		}
		c.kill()
		if !exited || ctx.Err() != nil || !c.logSince(from, "pre-existing shared memory block") {
			return err
		}
		c.log.Info("backends of a postgres that died still hold its shared memory; starting again once they exit")
		select {
		case <-ctx.Done():
			return err
		case <-time.After(200 * time.Millisecond):
		}
		c.exitDone = make(chan struct{})
		c.exitErr = nil
		c.stopping.Store(false)
	}
}

func (c *Cluster) logSize() int64 {
	fi, err := os.Stat(c.logPath)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// logSince reports whether the server log holds text after offset from.
func (c *Cluster) logSince(from int64, text string) bool {
	f, err := os.Open(c.logPath)
	if err != nil {
		return false
	}
	defer f.Close()
	b, err := io.ReadAll(io.NewSectionReader(f, from, 1<<20))
	return err == nil && bytes.Contains(b, []byte(text))
}

// kill stops a server that failed to become ready (immediate shutdown).
func (c *Cluster) kill() {
	c.stopping.Store(true)
	_ = c.proc.signal(syscall.SIGQUIT)
	select {
	case <-c.exitDone:
	case <-time.After(5 * time.Second):
		_ = c.proc.signal(syscall.SIGKILL)
		<-c.exitDone
	}
}

// cleanup releases everything but the data: admin connections, the socket
// temp dir, the log file and the Dir lock.
func (c *Cluster) cleanup() {
	if c.admin != nil {
		c.admin.close()
	}
	if c.ownSocket && c.socketDir != "" {
		_ = os.RemoveAll(c.socketDir)
	}
	if c.logFile != nil {
		_ = c.logFile.Close()
	}
	if c.lockFile != nil {
		_ = c.lockFile.Close() // releases the flock
	}
}

// Stop shuts the server down ("fast" shutdown: open transactions are
// rolled back, data is checkpointed) and waits for it to exit. If ctx
// expires first, it escalates to an immediate shutdown, then SIGKILL.
// Stop is idempotent; later calls return the first call's result, which is
// nil after a clean shutdown and the exit error if the server had died.
func (c *Cluster) Stop(ctx context.Context) error {
	c.stopOnce.Do(func() { c.stopErr = c.stop(ctx) })
	return c.stopErr
}

func (c *Cluster) stop(ctx context.Context) error {
	select {
	case <-c.exitDone:
		c.cleanup()
		return c.exitErr
	default:
	}
	c.stopping.Store(true)
	if c.admin != nil {
		c.admin.close()
	}
	_ = c.proc.signal(syscall.SIGINT)
	var forced error
	select {
	case <-c.exitDone:
	case <-ctx.Done():
		c.log.Warn("postgres slow to shut down; forcing immediate shutdown", "pid", c.proc.pid())
		forced = fmt.Errorf("pgcluster: shutdown forced: %w", ctx.Err())
		_ = c.proc.signal(syscall.SIGQUIT)
		select {
		case <-c.exitDone:
		case <-time.After(5 * time.Second):
			_ = c.proc.signal(syscall.SIGKILL)
			<-c.exitDone
		}
	}
	c.cleanup()
	c.log.Info("postgres stopped", "pid", c.proc.pid())
	if forced != nil {
		return forced
	}
	return c.exitErr
}

// Done is closed when the server process has exited (after Stop or
// unexpectedly).
func (c *Cluster) Done() <-chan struct{} { return c.exitDone }

// Wait blocks until the server process exits. It returns nil after a clean
// Stop and an error (with the tail of the server log) when the server died
// on its own. Call Stop afterwards anyway to release the Dir lock.
func (c *Cluster) Wait() error {
	<-c.exitDone
	return c.exitErr
}

// Pid is the postmaster's process id.
func (c *Cluster) Pid() int { return c.proc.pid() }

// Dir is the (absolute) cluster directory.
func (c *Cluster) Dir() string { return c.dir }

// DataDir is the PostgreSQL data directory (PGDATA).
func (c *Cluster) DataDir() string { return c.dataDir }

// SocketDir is the directory holding the server's unix socket.
func (c *Cluster) SocketDir() string { return c.socketDir }

// Port is the unix socket's port number (always the Port constant).
func (c *Cluster) Port() int { return Port }

// ServerVersionNum is the server's server_version_num (e.g. 150013).
func (c *Cluster) ServerVersionNum() int { return c.version }

// DSN returns a keyword/value connection string (understood by pgx and
// libpq) for database as user, over the unix socket. No password is needed
// (trust authentication on a private socket).
func (c *Cluster) DSN(database, user string) string {
	return fmt.Sprintf("host=%s port=%d user=%s dbname=%s sslmode=disable",
		dsnQuote(c.socketDir), Port, dsnQuote(user), dsnQuote(database))
}

// SuperuserDSN is DSN(database, "postgres").
func (c *Cluster) SuperuserDSN(database string) string { return c.DSN(database, Superuser) }

func dsnQuote(v string) string {
	if v != "" && !strings.ContainsAny(v, " \t\n\r\\'") {
		return v
	}
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(v) + "'"
}

// Connect opens a connection to database as user. The caller closes it.
func (c *Cluster) Connect(ctx context.Context, database, user string) (*pgx.Conn, error) {
	return pgx.Connect(ctx, c.DSN(database, user))
}

// Exec runs sql as the superuser on the "postgres" database.
func (c *Cluster) Exec(ctx context.Context, sql string, args ...any) error {
	if c.admin == nil {
		return ErrStopped
	}
	conn, err := c.admin.acquire(ctx)
	if err != nil {
		return err
	}
	_, err = conn.Exec(ctx, sql, args...)
	c.admin.release(conn)
	return err
}

// QueryRow runs a single-row query as the superuser on the "postgres"
// database and scans the row into dest.
func (c *Cluster) QueryRow(ctx context.Context, dest []any, sql string, args ...any) error {
	if c.admin == nil {
		return ErrStopped
	}
	conn, err := c.admin.acquire(ctx)
	if err != nil {
		return err
	}
	err = conn.QueryRow(ctx, sql, args...).Scan(dest...)
	c.admin.release(conn)
	return err
}

// CreateDatabase creates database name. owner and template are optional
// ("" means the superuser and template1). Cloning a template requires that
// nobody is connected to it.
func (c *Cluster) CreateDatabase(ctx context.Context, name, owner, template string) error {
	sql := "CREATE DATABASE " + pgx.Identifier{name}.Sanitize()
	if owner != "" {
		sql += " OWNER " + pgx.Identifier{owner}.Sanitize()
	}
	if template != "" {
		sql += " TEMPLATE " + pgx.Identifier{template}.Sanitize()
		if c.version >= 150000 {
			// Copying the files is faster than WAL-logging every block of
			// small (test) databases.
			sql += " STRATEGY FILE_COPY"
		}
	}
	if err := c.Exec(ctx, sql); err != nil {
		return fmt.Errorf("pgcluster: create database %q: %w", name, err)
	}
	return nil
}

// DropDatabase drops database name if it exists, terminating its
// connections.
func (c *Cluster) DropDatabase(ctx context.Context, name string) error {
	sql := "DROP DATABASE IF EXISTS " + pgx.Identifier{name}.Sanitize()
	if c.version >= 130000 {
		sql += " WITH (FORCE)"
	}
	if err := c.Exec(ctx, sql); err != nil {
		return fmt.Errorf("pgcluster: drop database %q: %w", name, err)
	}
	return nil
}

// proc is a child process started from a goroutine that holds its OS
// thread for the child's whole life: Linux's parent-death signal fires when
// the forking *thread* exits, not the process (golang/go#27505).
type proc struct {
	cmd  *exec.Cmd
	done chan struct{}
	err  error // cmd.Wait's result, valid once done is closed
}

func startLocked(cmd *exec.Cmd) (*proc, error) {
	p := &proc{cmd: cmd, done: make(chan struct{})}
	started := make(chan error, 1)
	go func() {
		// Never unlocked: when this goroutine returns (child gone), the
		// runtime terminates the thread, which is then harmless.
		runtime.LockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		p.err = cmd.Wait()
		close(p.done)
	}()
	if err := <-started; err != nil {
		return nil, err
	}
	return p, nil
}

func (p *proc) pid() int {
	if p == nil || p.cmd.Process == nil {
		return 0
	}
	return p.cmd.Process.Pid
}

func (p *proc) signal(sig os.Signal) error {
	if p == nil {
		return nil
	}
	select {
	case <-p.done:
		return nil
	default:
		return p.cmd.Process.Signal(sig)
	}
}

// connPool is a tiny pool of superuser connections to the "postgres"
// database for the admin helpers.
type connPool struct {
	cfg     *pgx.ConnConfig
	maxIdle int
	mu      sync.Mutex
	idle    []*pgx.Conn
	closed  bool
}

func newConnPool(cfg *pgx.ConnConfig, maxIdle int) *connPool {
	return &connPool{cfg: cfg, maxIdle: maxIdle}
}

func (p *connPool) acquire(ctx context.Context) (*pgx.Conn, error) {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil, ErrStopped
	}
	if n := len(p.idle); n > 0 {
		conn := p.idle[n-1]
		p.idle = p.idle[:n-1]
		p.mu.Unlock()
		return conn, nil
	}
	p.mu.Unlock()
	return pgx.ConnectConfig(ctx, p.cfg)
}

func (p *connPool) release(conn *pgx.Conn) {
	healthy := !conn.IsClosed() && conn.PgConn().TxStatus() == 'I'
	p.mu.Lock()
	if healthy && !p.closed && len(p.idle) < p.maxIdle {
		p.idle = append(p.idle, conn)
		p.mu.Unlock()
		return
	}
	p.mu.Unlock()
	closeConn(conn)
}

func (p *connPool) close() {
	p.mu.Lock()
	idle := p.idle
	p.idle, p.closed = nil, true
	p.mu.Unlock()
	for _, conn := range idle {
		closeConn(conn)
	}
}

func closeConn(conn *pgx.Conn) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = conn.Close(ctx)
}
