package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/anchorage-pin/anchorage/adapters/tokens"
	"github.com/stretchr/testify/require"
)

// The crash drills drive the real `anchorage serve` binary as a child process: built once per test binary run
// with `go build` (with -race when this test binary has it), configured through a YAML file like an operator's,
// administered through the `anchorage admin` CLI, and killed with SIGKILL.

// crashCID is the empty identity CID: Kubo pins it at once without fetching anything, so the worker keeps up
// and no test depends on the network.
const crashCID = "bafkqaaa"

var crashBin struct {
	once sync.Once
	path string
	err  error
	took time.Duration
}

const crashBinPrefix = "anchorage-crashtest-bin-"

// crashServeBinary builds ./cmd/anchorage into a temp dir, once per test binary. The directory is named after
// this process; directories of test binaries that are gone are removed first (there is no hook after the last
// test to remove this run's).
func crashServeBinary(t *testing.T) string {
	t.Helper()
	crashBin.once.Do(func() {
		begin := time.Now()
		root := os.TempDir()
		removeStaleCrashBins(root)
		dir, err := os.MkdirTemp(root, fmt.Sprintf("%s%d-", crashBinPrefix, os.Getpid()))
		if err != nil {
			crashBin.err = err
			return
		}
		goTool, err := exec.LookPath("go")
		if err != nil {
			goTool = filepath.Join(runtime.GOROOT(), "bin", "go")
		}
		out := filepath.Join(dir, "anchorage")
		args := []string{"build", "-o", out}
		if crashRaceEnabled() {
			args = append(args, "-race")
		}
		args = append(args, ".")
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, goTool, args...)
		cmd.Env = append(os.Environ(), "GOFLAGS=-mod=readonly")
		b, err := cmd.CombinedOutput()
		if err != nil {
			crashBin.err = fmt.Errorf("go %s: %w\n%s", strings.Join(args, " "), err, b)
			return
		}
		crashBin.path, crashBin.took = out, time.Since(begin)
	})
	if crashBin.err != nil {
		t.Fatalf("build anchorage: %v", crashBin.err)
	}
	t.Logf("anchorage binary: %s (built in %v, race=%v)", crashBin.path, crashBin.took.Round(time.Millisecond), crashRaceEnabled())
	return crashBin.path
}

// crashRaceEnabled reports whether this test binary was built with -race.
func crashRaceEnabled() bool {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return false
	}
	for _, s := range bi.Settings {
		if s.Key == "-race" {
			return s.Value == "true"
		}
	}
	return false
}

func removeStaleCrashBins(root string) {
	dirs, _ := filepath.Glob(filepath.Join(root, crashBinPrefix+"*"))
	for _, d := range dirs {
		rest := strings.TrimPrefix(filepath.Base(d), crashBinPrefix)
		pidStr, _, _ := strings.Cut(rest, "-")
		pid, err := strconv.Atoi(pidStr)
		if err != nil || pid <= 0 {
			continue
		}
		if err := syscall.Kill(pid, 0); err == nil || errors.Is(err, syscall.EPERM) {
			continue // still running
		}
		_ = os.RemoveAll(d)
	}
}

// crashChildEnv is this process's environment without ANCHORAGE_* (they would override the config file) and
// PG* variables (libpq defaults).
func crashChildEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "ANCHORAGE_") || strings.HasPrefix(kv, "PG") {
			continue
		}
		env = append(env, kv)
	}
	return env
}

// crashNode is one node's data dir and config file, run as `anchorage serve -c <config>` child processes.
type crashNode struct {
	bin     string
	dir     string // holds the config, the signing key, the child's logs and the data dir
	cfgPath string
	starts  int
	proc    *serveProc
	base    string // the API's base URL of the running process
}

// newCrashNode writes a serve config: API and NATS on random loopback ports, the given PostgreSQL DSNs and
// Kubo, one signing key, group-committed fsyncs (the default).
func newCrashNode(t *testing.T, ownerDSN, apiDSN, kuboRPC string) *crashNode {
	t.Helper()
	n := &crashNode{bin: crashServeBinary(t), dir: t.TempDir()}
	keyPath := filepath.Join(n.dir, "k1.key")
	require.NoError(t, tokens.GenerateKeyFile(keyPath))
	n.cfgPath = filepath.Join(n.dir, "anchorage.yaml")
	cfg := fmt.Sprintf(`dataDir: %q
log:
  level: info
  format: json
server:
  listen: "127.0.0.1:0"
  shutdownTimeout: 10s
postgres:
  url: %q
  apiURL: %q
  maxConns: 16
nats:
  listen: "127.0.0.1:0"
  sync: group
kubo:
  rpcURL: %q
  concurrency: 16
  pinTimeout: 30s
auth:
  apiToken:
    signingKeys:
      - {id: k1, path: %q, primary: true}
`, filepath.Join(n.dir, "data"), ownerDSN, apiDSN, kuboRPC, keyPath)
	require.NoError(t, os.WriteFile(n.cfgPath, []byte(cfg), 0o600))
	return n
}

// serveProc is one `anchorage serve` child process.
type serveProc struct {
	cmd     *exec.Cmd
	logPath string
	done    chan struct{}
	err     error // cmd.Wait's result, valid once done is closed
}

func (p *serveProc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// killGroup SIGKILLs the child's whole process group and waits for the child (cleanup; never fails).
func (p *serveProc) killGroup() {
	if p.exited() {
		return
	}
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
	}
}

// startLockedThread starts cmd from a goroutine that holds its OS thread until the child exits: the
// parent-death signal fires when the forking thread exits, and a thread is only terminated when a goroutine
// that locked it ends (pgcluster does exactly that with its servers' threads when they stop).
func startLockedThread(cmd *exec.Cmd) (*serveProc, error) {
	p := &serveProc{cmd: cmd, done: make(chan struct{})}
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with this goroutine, after the child
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

// start runs `anchorage serve` on the node's config and waits until /readyz answers 200. It returns how long
// that took from the process start.
func (n *crashNode) start(t *testing.T) time.Duration {
	t.Helper()
	d, err := n.tryStart(t, 60*time.Second)
	require.NoError(t, err)
	return d
}

func (n *crashNode) tryStart(t *testing.T, within time.Duration) (time.Duration, error) {
	t.Helper()
	require.True(t, n.proc == nil || n.proc.exited(), "a serve process is still running")
	n.starts++
	logPath := filepath.Join(n.dir, fmt.Sprintf("serve-%d.log", n.starts))
	f, err := os.Create(logPath)
	require.NoError(t, err)
	defer f.Close() // the child has its own descriptor
	cmd := exec.Command(n.bin, "serve", "-c", n.cfgPath)
	cmd.Env = crashChildEnv()
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	begin := time.Now()
	p, err := startLockedThread(cmd)
	require.NoError(t, err)
	p.logPath = logPath
	n.proc = p
	t.Cleanup(p.killGroup)

	deadline := time.Now().Add(within)
	addr := ""
	for addr == "" {
		addr = servingAddr(logPath)
		if addr != "" {
			break
		}
		if p.exited() {
			return 0, fmt.Errorf("anchorage serve exited before serving (%v):\n%s", p.err, tail(logPath, 40))
		}
		if time.Now().After(deadline) {
			p.killGroup()
			return 0, fmt.Errorf("anchorage serve did not start serving within %v:\n%s", within, tail(logPath, 40))
		}
		time.Sleep(10 * time.Millisecond)
	}
	n.base = "http://" + addr
	for {
		code, _, err := crashDo(http.MethodGet, n.base+"/readyz", "", nil, nil, 3*time.Second)
		if err == nil && code == http.StatusOK {
			return time.Since(begin), nil
		}
		if p.exited() {
			return 0, fmt.Errorf("anchorage serve exited before it was ready (%v):\n%s", p.err, tail(logPath, 40))
		}
		if time.Now().After(deadline) {
			p.killGroup()
			return 0, fmt.Errorf("anchorage serve not ready within %v (last /readyz %d, %v):\n%s", within, code, err, tail(logPath, 40))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// servingAddr finds the API address in the "anchorage is serving" line of a child's JSON log.
func servingAddr(logPath string) string {
	b, err := os.ReadFile(logPath)
	if err != nil {
		return ""
	}
	if i := bytes.LastIndexByte(b, '\n'); i >= 0 {
		b = b[:i+1] // complete lines only
	} else {
		return ""
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Bytes()
		if !bytes.Contains(line, []byte(`"anchorage is serving"`)) {
			continue
		}
		var m struct {
			Msg  string `json:"msg"`
			Addr string `json:"addr"`
		}
		if json.Unmarshal(line, &m) == nil && m.Msg == "anchorage is serving" && m.Addr != "" {
			return m.Addr
		}
	}
	return ""
}

// tail returns the last n lines of a file.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// raceReports returns the race detector's reports in the log at path (a race-built serve exits 66 at the end,
// long after printing them), or "".
func raceReports(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	var out []string
	in := false
	for _, line := range strings.Split(string(b), "\n") {
		switch {
		case strings.HasPrefix(line, "WARNING: DATA RACE"):
			in = true
			out = append(out, "==================")
		case line == "==================":
			in = false
			continue
		}
		if in {
			out = append(out, line)
		}
	}
	if len(out) == 0 {
		return ""
	}
	return "\nrace reports of the serve process:\n" + strings.Join(out, "\n")
}

// kill9 SIGKILLs the serve process (kill -9) and waits until it is gone.
func (n *crashNode) kill9(t *testing.T) {
	t.Helper()
	require.NotNil(t, n.proc)
	require.NoError(t, n.proc.cmd.Process.Signal(syscall.SIGKILL))
	select {
	case <-n.proc.done:
	case <-time.After(10 * time.Second):
		t.Fatal("anchorage serve did not die within 10s of SIGKILL")
	}
	var ee *exec.ExitError
	require.ErrorAs(t, n.proc.err, &ee)
	ws, _ := ee.Sys().(syscall.WaitStatus)
	require.True(t, ws.Signaled() && ws.Signal() == syscall.SIGKILL, "serve died of SIGKILL, not %v", n.proc.err)
}

// stop stops the serve process gracefully (SIGTERM) and requires a clean exit; it returns how long it took.
func (n *crashNode) stop(t *testing.T) time.Duration {
	t.Helper()
	require.NotNil(t, n.proc)
	begin := time.Now()
	require.NoError(t, n.proc.cmd.Process.Signal(syscall.SIGTERM))
	select {
	case <-n.proc.done:
	case <-time.After(30 * time.Second):
		t.Fatalf("anchorage serve did not stop within 30s of SIGTERM:\n%s", tail(n.proc.logPath, 20))
	}
	require.NoError(t, n.proc.err, "graceful stop must exit 0:\n%s%s", tail(n.proc.logPath, 20), raceReports(n.proc.logPath))
	return time.Since(begin)
}

// cli runs `anchorage <args>` against the node's config and returns stdout, stderr and the exit code.
func (n *crashNode) cli(t *testing.T, timeout time.Duration, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	full := append([]string{args[0], "-c", n.cfgPath}, args[1:]...)
	cmd := exec.CommandContext(ctx, n.bin, full...)
	cmd.Env = crashChildEnv()
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("anchorage %s did not finish within %v\nstdout:\n%s\nstderr:\n%s", strings.Join(full, " "), timeout, o.String(), e.String())
	}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		code = ee.ExitCode()
	default:
		t.Fatalf("anchorage %s: %v", strings.Join(full, " "), err)
	}
	return o.String(), e.String(), code
}

// orgToken creates an org and mints a read/write token in it with the admin CLI, then waits until the running
// node accepts the token.
func (n *crashNode) orgToken(t *testing.T, slug string) string {
	t.Helper()
	out, errOut, code := n.cli(t, time.Minute, "admin", "org", "create", slug)
	require.Zero(t, code, "admin org create: %s%s", out, errOut)
	out, errOut, code = n.cli(t, time.Minute, "admin", "token", "mint", "--org", slug, "--subject", "crash-test")
	require.Zero(t, code, "admin token mint: %s%s", out, errOut)
	token := strings.TrimSpace(out)
	require.NotEmpty(t, token)
	crashPoll(t, 10*time.Second, "the node accepts the minted token", func() bool {
		code, _, err := crashDo(http.MethodGet, n.base+"/v1/whoami", token, nil, nil, 3*time.Second)
		return err == nil && code == http.StatusOK
	})
	return token
}

// crashPoll polls cond every 10 ms until it holds or within passes.
func crashPoll(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting until %s", within, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// crashTransport is shared by the drills' HTTP clients: enough idle connections for the load clients.
var crashTransport = &http.Transport{MaxIdleConns: 128, MaxIdleConnsPerHost: 64, IdleConnTimeout: 30 * time.Second}

// crashDo sends one request and returns the status and body.
func crashDo(method, u, token string, body []byte, hdr http.Header, timeout time.Duration) (int, []byte, error) {
	code, b, _, err := crashDoH(method, u, token, body, hdr, timeout)
	return code, b, err
}

// crashDoH is crashDo that also returns the response headers.
func crashDoH(method, u, token string, body []byte, hdr http.Header, timeout time.Duration) (int, []byte, http.Header, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return 0, nil, nil, err
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := crashTransport.RoundTrip(req)
	if err != nil {
		return 0, nil, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, resp.Header, err
}

// crashPinStatus is the part of a PinStatus the drills check.
type crashPinStatus struct {
	RequestID string `json:"requestid"`
	Status    string `json:"status"`
	Created   string `json:"created"`
	Pin       struct {
		CID  string `json:"cid"`
		Name string `json:"name"`
	} `json:"pin"`
}

// crashFailure is the spec's error body.
type crashFailure struct {
	Error struct {
		Reason  string `json:"reason"`
		Details string `json:"details"`
	} `json:"error"`
}

// postResult is what one keyed POST /pins got.
type postResult struct {
	code int
	ps   crashPinStatus
	body string
	err  error
	took time.Duration
}

// postKeyed sends POST /pins for name with an Idempotency-Key.
func postKeyed(base, token, key, name string, timeout time.Duration) postResult {
	body := fmt.Appendf(nil, `{"cid":%q,"name":%q}`, crashCID, name)
	begin := time.Now()
	code, b, err := crashDo(http.MethodPost, base+"/pins", token, body, http.Header{"Idempotency-Key": {key}}, timeout)
	r := postResult{code: code, body: string(b), err: err, took: time.Since(begin)}
	if err == nil && code == http.StatusAccepted {
		if err := json.Unmarshal(b, &r.ps); err != nil {
			r.err = fmt.Errorf("202 with an unreadable body %q: %w", b, err)
		}
	}
	return r
}

// pinLedger records every keyed POST of a load run: the keys sent, and which got a 202 with which pin.
type pinLedger struct {
	mu      sync.Mutex
	order   []string                  // every key sent, in the order sent
	names   map[string]string         // key → pin name
	acked   map[string]crashPinStatus // key → the 202's pin
	failed  map[string]string         // key → what went wrong instead
	non202  map[int]int               // status → count, for answers other than 202
	slowest time.Duration
}

func newPinLedger() *pinLedger {
	return &pinLedger{names: map[string]string{}, acked: map[string]crashPinStatus{}, failed: map[string]string{}, non202: map[int]int{}}
}

func (l *pinLedger) sent(key, name string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.order = append(l.order, key)
	l.names[key] = name
}

func (l *pinLedger) record(key string, r postResult) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.slowest = max(l.slowest, r.took)
	switch {
	case r.err == nil && r.code == http.StatusAccepted:
		l.acked[key] = r.ps
		delete(l.failed, key)
	case r.err != nil:
		l.failed[key] = r.err.Error()
	default:
		l.non202[r.code]++
		l.failed[key] = fmt.Sprintf("HTTP %d: %s", r.code, r.body)
	}
}

func (l *pinLedger) counts() (sent, acked, failed int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.order), len(l.acked), len(l.failed)
}

// slowestAck is the longest a POST took to get its answer so far.
func (l *pinLedger) slowestAck() time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.slowest
}

// failures returns "key: what went wrong" for every key without a 202, sorted.
func (l *pinLedger) failures() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]string, 0, len(l.failed))
	for k, why := range l.failed {
		out = append(out, k+": "+why)
	}
	sort.Strings(out)
	return out
}

// unacked returns the keys that never got a 202, in the order sent.
func (l *pinLedger) unacked() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, k := range l.order {
		if _, ok := l.acked[k]; !ok {
			out = append(out, k)
		}
	}
	return out
}

// pinLoad is a running load: clients POSTing keyed pins until stopped.
type pinLoad struct {
	stop   atomic.Bool
	wg     sync.WaitGroup
	ledger atomic.Pointer[pinLedger] // where requests sent from now on are recorded
}

// startPinLoad starts clients that POST pins to base with unique keys (prefix-cNN-NNNNNN) and names until
// halt is called. A client stops at its first transport error (the server was killed).
func startPinLoad(ledger *pinLedger, base, token, prefix string, clients int) *pinLoad {
	ld := &pinLoad{}
	ld.ledger.Store(ledger)
	for c := range clients {
		ld.wg.Go(func() {
			for i := 0; !ld.stop.Load(); i++ {
				key := fmt.Sprintf("%s-c%02d-%06d", prefix, c, i)
				name := "name-" + key
				l := ld.ledger.Load()
				l.sent(key, name)
				r := postKeyed(base, token, key, name, 15*time.Second)
				l.record(key, r)
				if r.err != nil {
					return // the server is gone (killed): this client's last request was in flight
				}
			}
		})
	}
	return ld
}

// switchLedger records the requests sent from now on in l.
func (ld *pinLoad) switchLedger(l *pinLedger) { ld.ledger.Store(l) }

// halt stops sending new requests; wait waits for the ones in flight.
func (ld *pinLoad) halt() { ld.stop.Store(true) }
func (ld *pinLoad) wait() { ld.wg.Wait() }

// listAllPins pages through GET /pins?status=any (newest first, by created) and returns every pin and the
// count the first page reported.
func listAllPins(t *testing.T, base, token string) ([]crashPinStatus, int) {
	t.Helper()
	var all []crashPinStatus
	count := -1
	before := ""
	for page := 0; ; page++ {
		require.Less(t, page, 1000, "too many pages")
		q := url.Values{"status": {"any"}, "limit": {"1000"}}
		if before != "" {
			q.Set("before", before)
		}
		code, b, err := crashDo(http.MethodGet, base+"/pins?"+q.Encode(), token, nil, nil, 30*time.Second)
		require.NoError(t, err)
		require.Equal(t, http.StatusOK, code, "GET /pins: %s", b)
		var res struct {
			Count   int              `json:"count"`
			Results []crashPinStatus `json:"results"`
		}
		require.NoError(t, json.Unmarshal(b, &res))
		if count < 0 {
			count = res.Count
		}
		if len(res.Results) == 0 {
			return all, count
		}
		all = append(all, res.Results...)
		before = res.Results[len(res.Results)-1].Created
	}
}

// pinCountAPI is the count GET /pins?status=any answers (-1 when the request does not get a 200).
func pinCountAPI(base, token string) int {
	code, b, err := crashDo(http.MethodGet, base+"/pins?status=any&limit=1", token, nil, nil, 10*time.Second)
	if err != nil || code != http.StatusOK {
		return -1
	}
	var res struct {
		Count int `json:"count"`
	}
	if json.Unmarshal(b, &res) != nil {
		return -1
	}
	return res.Count
}

// parallel runs fn for every item with n workers and returns the errors fn reported, sorted.
func parallel[T any](items []T, n int, fn func(T) error) []string {
	var mu sync.Mutex
	var errs []string
	ch := make(chan T)
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			for it := range ch {
				if err := fn(it); err != nil {
					mu.Lock()
					errs = append(errs, err.Error())
					mu.Unlock()
				}
			}
		})
	}
	for _, it := range items {
		ch <- it
	}
	close(ch)
	wg.Wait()
	sort.Strings(errs)
	return errs
}

// firstN returns at most n strings, for messages.
func firstN(s []string, n int) []string {
	if len(s) > n {
		return append(s[:n:n], fmt.Sprintf("... and %d more", len(s)-n))
	}
	return s
}

// metricValues scrapes /metrics and returns the samples of a metric by their projection label.
func metricValues(base, metric string) (map[string]float64, error) {
	code, b, err := crashDo(http.MethodGet, base+"/metrics", "", nil, nil, 5*time.Second)
	if err != nil {
		return nil, err
	}
	if code != http.StatusOK {
		return nil, fmt.Errorf("GET /metrics: %d", code)
	}
	out := map[string]float64{}
	for line := range strings.SplitSeq(string(b), "\n") {
		if !strings.HasPrefix(line, metric+"{") {
			continue
		}
		labels, val, ok := strings.Cut(line[len(metric):], " ")
		if !ok {
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(val), 64)
		if err != nil {
			continue
		}
		name := labels
		if _, after, ok := strings.Cut(labels, `projection="`); ok {
			name, _, _ = strings.Cut(after, `"`)
		}
		out[name] = v
	}
	return out, nil
}
