package kubod

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"
)

// DefaultStartTimeout bounds how long Start waits for the daemon to answer.
const DefaultStartTimeout = 60 * time.Second

// Options configures Start.
type Options struct {
	// Binary is the ipfs executable. Empty means EnsureBinary(ctx, BuildOptions{Logger: Logger}).
	Binary string
	// RepoDir is the IPFS repo ($IPFS_PATH). It is initialised
	// (`ipfs init --profile=test --empty-repo`) when it holds no config yet,
	// and reused (with its peer identity) otherwise. Empty means a fresh
	// temporary repo that Stop deletes.
	RepoDir string
	// Logger receives lifecycle events, and the daemon's output at Debug
	// level. Nil means slog.Default().
	Logger *slog.Logger
	// ExtraConfig is applied after LoopbackConfig, keys in sorted order
	// (so "Swarm" is set before "Swarm.ConnMgr"). Keys are dotted config
	// paths, values anything encoding/json accepts.
	ExtraConfig map[string]any
	// StartTimeout bounds the wait for the daemon to answer its API.
	// Zero means DefaultStartTimeout.
	StartTimeout time.Duration
}

// Daemon is a running `ipfs daemon` child process.
type Daemon struct {
	repo      string
	ephemeral bool
	apiURL    string
	peerID    string
	swarm     []string
	cmd       *exec.Cmd
	log       *slog.Logger
	out       *logTail

	done          chan struct{}
	waitErr       error // valid once done is closed
	stopRequested atomic.Bool
	unexpected    atomic.Bool // exited before Stop was called
	signalOnce    sync.Once
	cleanupOnce   sync.Once
}

// APIURL is the RPC API base, e.g. "http://127.0.0.1:40123".
func (d *Daemon) APIURL() string { return d.apiURL }

// PeerID is the daemon's libp2p peer ID.
func (d *Daemon) PeerID() string { return d.peerID }

// SwarmAddrs are the daemon's listen multiaddrs (loopback), each ending in
// /p2p/<PeerID>, as reported by the `id` RPC at startup.
func (d *Daemon) SwarmAddrs() []string { return append([]string(nil), d.swarm...) }

// RepoDir is the daemon's IPFS repo.
func (d *Daemon) RepoDir() string { return d.repo }

// PID is the daemon's process ID.
func (d *Daemon) PID() int { return d.cmd.Process.Pid }

// Done is closed when the daemon process has exited, whatever the reason.
func (d *Daemon) Done() <-chan struct{} { return d.done }

// Logs returns the tail of the daemon's combined stdout and stderr.
func (d *Daemon) Logs() string { return d.out.String() }

// Start initialises (if needed) and configures a loopback-only repo, launches
// `ipfs daemon` as a child process and returns once the API answers an `id`
// call. ctx bounds the startup only, not the daemon's lifetime: call Stop.
//
// On Linux the child gets SIGTERM when this process dies (Pdeathsig).
func Start(ctx context.Context, opts Options) (*Daemon, error) {
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	bin := opts.Binary
	if bin == "" {
		var err error
		if bin, err = EnsureBinary(ctx, BuildOptions{Logger: log}); err != nil {
			return nil, err
		}
	}
	timeout := opts.StartTimeout
	if timeout <= 0 {
		timeout = DefaultStartTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	d := &Daemon{repo: opts.RepoDir, log: log, out: newLogTail(64 << 10), done: make(chan struct{})}
	if d.repo == "" {
		dir, err := os.MkdirTemp("", "kubod-repo-")
		if err != nil {
			return nil, fmt.Errorf("kubod: %w", err)
		}
		d.repo, d.ephemeral = dir, true
	} else {
		abs, err := filepath.Abs(d.repo)
		if err != nil {
			return nil, fmt.Errorf("kubod: %w", err)
		}
		d.repo = abs
		if err := os.MkdirAll(d.repo, 0o700); err != nil {
			return nil, fmt.Errorf("kubod: %w", err)
		}
	}
	fail := func(err error) (*Daemon, error) {
		if d.ephemeral {
			_ = os.RemoveAll(d.repo)
		}
		return nil, err
	}

	// Refuse a repo a live daemon is serving, before touching its config.
	if api := readAPIFile(d.repo); api.ok {
		if url, err := apiURLFromMultiaddr(api.content); err == nil {
			probeCtx, c := context.WithTimeout(ctx, 2*time.Second)
			id, err := callID(probeCtx, &http.Client{Transport: &http.Transport{Proxy: nil}}, url)
			c()
			if err == nil {
				return fail(fmt.Errorf("kubod: repo %s is in use by a running daemon (peer %s, API %s)", d.repo, id.ID, url))
			}
		}
	}

	env := daemonEnv(d.repo)
	if _, err := os.Stat(filepath.Join(d.repo, "config")); err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			return fail(fmt.Errorf("kubod: %w", err))
		}
		cmd := exec.CommandContext(ctx, bin, "init", "--profile=test", "--empty-repo")
		cmd.Env = env
		if out, err := cmd.CombinedOutput(); err != nil {
			return fail(fmt.Errorf("kubod: ipfs init %s: %w\n%s", d.repo, err, tail(out, 4096)))
		}
	}
	cfg := append([]ConfigEntry(nil), LoopbackConfig...)
	if _, set := opts.ExtraConfig["Addresses.Swarm"]; !d.ephemeral && !set {
		addr, err := stableSwarmAddr(d.repo)
		if err != nil {
			return fail(fmt.Errorf("kubod: %w", err))
		}
		cfg = append(cfg, ConfigEntry{"Addresses.Swarm", []string{addr}})
	}
	keys := make([]string, 0, len(opts.ExtraConfig))
	for k := range opts.ExtraConfig {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		cfg = append(cfg, ConfigEntry{k, opts.ExtraConfig[k]})
	}
	if err := applyConfig(d.repo, cfg); err != nil {
		return fail(fmt.Errorf("kubod: configure %s: %w", d.repo, err))
	}

	d.cmd = exec.Command(bin, "daemon")
	d.cmd.Env = env
	d.cmd.Dir = d.repo
	d.cmd.Stdout = d.out
	d.cmd.Stderr = d.out
	d.cmd.WaitDelay = 5 * time.Second
	setProcAttr(d.cmd)
	d.out.log = log

	// An api file left by a crashed daemon, or owned by another daemon
	// still running on this repo, must not be mistaken for ours: only a
	// file rewritten after launch counts.
	stale := readAPIFile(d.repo)
	launched := time.Now()
	if err := d.launch(); err != nil {
		return fail(fmt.Errorf("kubod: start ipfs daemon: %w", err))
	}
	if err := d.waitReady(ctx, stale); err != nil {
		stopCtx, c := context.WithTimeout(context.Background(), 10*time.Second)
		_ = d.Stop(stopCtx)
		c()
		return nil, fmt.Errorf("kubod: ipfs daemon (repo %s) not ready: %w\n--- daemon output ---\n%s", d.repo, err, d.Logs())
	}
	log.Info("kubo daemon ready", "api", d.apiURL, "peer", d.peerID, "repo", d.repo,
		"pid", d.PID(), "took", time.Since(launched).Round(time.Millisecond))
	return d, nil
}

// launch starts the daemon and records its exit.
func (d *Daemon) launch() error {
	return startLocked(d.cmd, func(err error) {
		d.waitErr = err
		if !d.stopRequested.Load() {
			d.unexpected.Store(true)
			d.log.Warn("kubo daemon exited unexpectedly", "repo", d.repo, "err", err)
		}
		close(d.done)
	})
}

// startLocked starts cmd from a goroutine locked to its OS thread, which
// stays alive until the child exits, then calls exited with cmd.Wait's
// result. Pdeathsig fires when the forking *thread* exits, not the process
// (golang/go#27505), so the child must not be forked from a thread the
// runtime may terminate (that of any goroutine that exits while locked).
func startLocked(cmd *exec.Cmd, exited func(error)) error {
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := cmd.Start(); err != nil {
			runtime.UnlockOSThread()
			started <- err
			return
		}
		started <- nil
		err := cmd.Wait()
		runtime.UnlockOSThread() // the child is reaped; the thread may be reused
		exited(err)
	}()
	return <-started
}

// apiFile is a snapshot of $IPFS_PATH/api.
type apiFile struct {
	ok      bool
	modTime time.Time
	content string
}

func readAPIFile(repo string) apiFile {
	path := filepath.Join(repo, "api")
	fi, err := os.Stat(path)
	if err != nil {
		return apiFile{}
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		return apiFile{}
	}
	return apiFile{ok: true, modTime: fi.ModTime(), content: strings.TrimSpace(string(raw))}
}

func (d *Daemon) waitReady(ctx context.Context, stale apiFile) error {
	client := &http.Client{Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}}
	var lastErr error
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-d.done:
			return fmt.Errorf("daemon exited during startup: %v", d.waitErr)
		case <-ctx.Done():
			if lastErr != nil {
				return fmt.Errorf("%w (last error: %v)", ctx.Err(), lastErr)
			}
			return ctx.Err()
		case <-tick.C:
		}
		api := readAPIFile(d.repo)
		if !api.ok || api == stale {
			lastErr = fmt.Errorf("waiting for the daemon to write %s", filepath.Join(d.repo, "api"))
			continue
		}
		url, err := apiURLFromMultiaddr(api.content)
		if err != nil {
			lastErr = err
			continue
		}
		id, err := callID(ctx, client, url)
		if err != nil {
			lastErr = err
			continue
		}
		select {
		case <-d.out.ready:
		default:
			lastErr = fmt.Errorf("API answers but the daemon has not printed %q yet", readyLine)
			continue
		}
		d.apiURL, d.peerID = url, id.ID
		suffix := "/p2p/" + id.ID
		for _, a := range id.Addresses {
			if !strings.HasSuffix(a, suffix) {
				a += suffix
			}
			d.swarm = append(d.swarm, a)
		}
		return nil
	}
}

func apiURLFromMultiaddr(s string) (string, error) {
	m, err := ma.NewMultiaddr(s)
	if err != nil {
		return "", fmt.Errorf("parse api address %q: %w", s, err)
	}
	na, err := manet.ToNetAddr(m)
	if err != nil {
		return "", fmt.Errorf("api address %q: %w", s, err)
	}
	return "http://" + na.String(), nil
}

type idResponse struct {
	ID        string
	Addresses []string
}

func callID(ctx context.Context, client *http.Client, apiURL string) (*idResponse, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, apiURL+"/api/v0/id", nil)
	if err != nil {
		return nil, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		var buf bytes.Buffer
		_, _ = buf.ReadFrom(resp.Body)
		return nil, fmt.Errorf("id: HTTP %d: %s", resp.StatusCode, strings.TrimSpace(buf.String()))
	}
	var id idResponse
	if err := json.NewDecoder(resp.Body).Decode(&id); err != nil {
		return nil, fmt.Errorf("id: %w", err)
	}
	if id.ID == "" {
		return nil, errors.New("id: empty peer ID")
	}
	return &id, nil
}

// Stop asks the daemon to shut down (SIGTERM) and waits for it to exit. If ctx
// ends first the daemon is killed (SIGKILL) and Stop reports that. Stop is
// idempotent and safe for concurrent use; later calls just wait for the exit.
// It returns an error if the daemon had already exited on its own with a
// failure. A temporary repo (Options.RepoDir empty) is deleted.
func (d *Daemon) Stop(ctx context.Context) error {
	d.signalOnce.Do(func() {
		d.stopRequested.Store(true)
		select {
		case <-d.done:
		default:
			if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
				_ = d.cmd.Process.Kill()
			}
		}
	})
	var err error
	select {
	case <-d.done:
	case <-ctx.Done():
		_ = d.cmd.Process.Kill()
		select {
		case <-d.done:
		case <-time.After(10 * time.Second):
			return fmt.Errorf("kubod: daemon pid %d survived SIGKILL", d.PID())
		}
		err = fmt.Errorf("kubod: daemon did not stop in time and was killed: %w", ctx.Err())
	}
	d.cleanupOnce.Do(func() {
		if d.ephemeral {
			_ = os.RemoveAll(d.repo)
		}
		d.log.Info("kubo daemon stopped", "repo", d.repo, "pid", d.PID())
	})
	if err == nil && d.unexpected.Load() && d.waitErr != nil {
		err = fmt.Errorf("kubod: daemon had exited unexpectedly: %w\n%s", d.waitErr, tail([]byte(d.Logs()), 4096))
	}
	return err
}

func daemonEnv(repo string) []string {
	env := make([]string, 0, len(os.Environ())+2)
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "IPFS_PATH=") || strings.HasPrefix(kv, "IPFS_TELEMETRY=") {
			continue
		}
		env = append(env, kv)
	}
	return append(env, "IPFS_PATH="+repo, "IPFS_TELEMETRY=off")
}

// logTail keeps the last max bytes written to it and, when the logger is
// enabled at Debug, forwards complete lines to it.
// It closes ready when the daemon prints its readiness line.
type logTail struct {
	mu        sync.Mutex
	max       int
	buf       []byte
	partial   []byte
	log       *slog.Logger
	ready     chan struct{}
	sawReady  bool
	scanStart int
}

// readyLine is what `ipfs daemon` prints once every subsystem is up (the
// API answers a little earlier, while the daemon is still initialising).
const readyLine = "Daemon is ready"

func newLogTail(max int) *logTail { return &logTail{max: max, ready: make(chan struct{})} }

func (t *logTail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if !t.sawReady {
		if bytes.Contains(t.buf[t.scanStart:], []byte(readyLine)) {
			t.sawReady = true
			close(t.ready)
		} else if n := len(t.buf) - len(readyLine); n > t.scanStart {
			t.scanStart = n
		}
	}
	if len(t.buf) > t.max {
		cut := len(t.buf) - t.max
		t.buf = append(t.buf[:0], t.buf[cut:]...)
		t.scanStart = max(0, t.scanStart-cut)
	}
	if t.log != nil && t.log.Enabled(context.Background(), slog.LevelDebug) {
		t.partial = append(t.partial, p...)
		for {
			i := bytes.IndexByte(t.partial, '\n')
			if i < 0 {
				break
			}
			t.log.Debug("kubo", "line", string(t.partial[:i]))
			t.partial = t.partial[i+1:]
		}
		if len(t.partial) > t.max {
			t.partial = t.partial[:0]
		}
	}
	return len(p), nil
}

func (t *logTail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.buf)
}

// stableSwarmAddr is the loopback swarm address for a kept repo: the port it listened on before, while that port
// is free, else a free one, which the next start keeps. A node's swarm addresses are what it registers and what
// the pinning API hands clients as delegates: a port picked anew at every start changed both, and made every
// restart of a dev node record a new registration.
func stableSwarmAddr(repo string) (string, error) {
	raw, err := os.ReadFile(filepath.Join(repo, "config"))
	if err != nil {
		return "", err
	}
	var cfg struct{ Addresses struct{ Swarm []string } }
	if err := json.Unmarshal(raw, &cfg); err != nil {
		return "", fmt.Errorf("parse %s: %w", filepath.Join(repo, "config"), err)
	}
	if len(cfg.Addresses.Swarm) == 1 {
		if port, ok := strings.CutPrefix(cfg.Addresses.Swarm[0], "/ip4/127.0.0.1/tcp/"); ok {
			if n, err := strconv.Atoi(port); err == nil && n > 0 && n < 65536 {
				if l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", port)); err == nil {
					_ = l.Close()
					return cfg.Addresses.Swarm[0], nil
				}
			}
		}
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("pick a swarm port: %w", err)
	}
	defer l.Close()
	return "/ip4/127.0.0.1/tcp/" + strconv.Itoa(l.Addr().(*net.TCPAddr).Port), nil
}
