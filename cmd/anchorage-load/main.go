// Command anchorage-load is anchorage's loopback load tool. It starts a fresh `anchorage dev` node (a separate
// process, so its RSS is the server's alone), drives POST /pins and list/get queries with N workers, and prints
// req/s, p50/p99 latency, projection lag p50/p99 (from the server's own histogram) and server RSS. Every phase is
// bounded and the node is stopped at the end.
//
//	go tool task bench                              # default phases
//	go run ./cmd/anchorage-load -seed 1000000       # also time queries over an org with a million pins
package main

import (
	"bufio"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/multiformats/go-multihash"
)

type options struct {
	bin         string
	workers     int
	duration    time.Duration
	rate        int
	seed        int
	seedQueued  bool
	queryTime   time.Duration
	keep        bool
	dataDir     string
	explain     string
	qworkers    string
	placement   int
	rounds      int
	recovery    bool
	explainOnly bool
}

func main() {
	var o options
	flag.StringVar(&o.bin, "bin", "bin/anchorage", "the anchorage binary to start")
	flag.IntVar(&o.workers, "workers", 16, "concurrent clients")
	flag.DurationVar(&o.duration, "duration", 15*time.Second, "length of the POST /pins phase")
	flag.IntVar(&o.rate, "rate", 1000, "writes/s of the fixed-rate projection-lag phase (0: skip)")
	flag.IntVar(&o.seed, "seed", 0, "pins to seed into one org through the event log before the query phase (e.g. 1000000)")
	flag.BoolVar(&o.seedQueued, "seed-queued", false, "seed pin requests only (queued, one subject each) instead of requests placed on a pseudo-node with statuses")
	flag.DurationVar(&o.queryTime, "query-duration", 5*time.Second, "length of each query phase")
	flag.BoolVar(&o.keep, "keep", false, "keep the data dir")
	flag.StringVar(&o.dataDir, "data-dir", "", "data dir (default: a temp dir)")
	flag.IntVar(&o.placement, "placement", 2000, "blocks for the placement benchmark (0: skip)")
	flag.IntVar(&o.rounds, "placement-rounds", 3, "placement benchmark: anchorage/Kubo-alone pairs to take back to back (their median ratio is the figure)")
	flag.StringVar(&o.qworkers, "query-workers", "1,16", "comma-separated worker counts for the query phases (1 measures latency, more measures throughput)")
	flag.StringVar(&o.explain, "explain", "", "write EXPLAIN ANALYZE of every API query to this file after seeding")
	flag.BoolVar(&o.explainOnly, "explain-only", false, "only write -explain for the node already running on -data-dir (e.g. one seeded earlier with -keep), then exit")
	flag.BoolVar(&o.recovery, "recovery", false, "finally measure recovery on the whole log: raw replay, replay projections, replay verify, restart to ready")
	flag.Parse()
	// Diagnostic: ANCHORAGE_LOAD_CPUPROFILE=FILE profiles this tool itself (it shares the machine's two cores
	// with the node it measures).
	if f := os.Getenv("ANCHORAGE_LOAD_CPUPROFILE"); f != "" {
		out, err := os.Create(f)
		if err == nil && pprof.StartCPUProfile(out) == nil {
			defer pprof.StopCPUProfile()
		}
	}
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "anchorage-load:", err)
		pprof.StopCPUProfile()
		os.Exit(1)
	}
}

type node struct {
	cmd      *exec.Cmd
	dir      string
	endpoint string
	token    string
	client   *http.Client
}

func run(o options) error {
	if o.explainOnly {
		if o.dataDir == "" || o.explain == "" {
			return errors.New("-explain-only needs -data-dir and -explain")
		}
		n := &node{dir: o.dataDir}
		if err := n.explain(o.explain, -1); err != nil {
			return err
		}
		fmt.Printf("wrote %s\n", o.explain)
		return nil
	}
	dir := o.dataDir
	if dir == "" {
		d, err := os.MkdirTemp(tmpRoot(), "anchorage-load-")
		if err != nil {
			return err
		}
		// The managed PostgreSQL runs as an unprivileged user, which must be able to traverse the data dir.
		if err := os.Chmod(d, 0o755); err != nil {
			return err
		}
		dir = d
	}
	if !o.keep {
		defer os.RemoveAll(dir)
	}
	fmt.Printf("machine: %s, %d cores, %s; speed now: %.1f M keys sorted/s on one core, fsync %s\n", cpuModel(), runtime.NumCPU(), runtime.Version(), cpuSpeed(), fsyncSpeed(tmpRoot()))
	n, err := start(o.bin, dir)
	if err != nil {
		return err
	}
	defer func() { n.stop() }()
	fmt.Printf("node: %s (pid %d, data %s)\n\n", n.endpoint, n.cmd.Process.Pid, dir)

	// Phase 0: placement end to end against Kubo alone, on a fresh node.
	if o.placement > 0 {
		if err := n.placementBench(o.placement, o.workers, o.rounds); err != nil {
			return err
		}
		fmt.Println()
	}
	// The phases below POST random CIDs nobody has: with placement paused they stay queued instead of keeping the
	// worker busy fetching them until the pin timeout.
	if err := n.admin(o.bin, "maintenance", "on", "--reason", "load test"); err != nil {
		return err
	}

	// Phase 1: POST /pins, closed loop, N workers.
	lag0, err := n.lagHistogram()
	if err != nil {
		return err
	}
	// Names are unique to the run: on a data dir kept across runs, the same names run after run made the
	// partial-name filter's patterns match once per earlier run too (its count is a search of every match).
	run := strconv.FormatUint(rand.Uint64()%(36*36*36*36), 36)
	cpu0 := cpuByPID()
	res, ids := n.hammer(o.workers, o.duration, 0, func(w, i int) (*http.Request, error) {
		return n.post(fmt.Sprintf(`{"cid":%q,"name":"load-%s-%d-%d","meta":{"w":"%d"}}`, randomCID(), run, w, i, w))
	})
	lag1, _ := n.lagHistogram()
	cpu1 := cpuByPID()
	res.print(fmt.Sprintf("POST /pins, %d workers", o.workers))
	printLag("projection lag (pins) during POST", lag1.minus(lag0))
	// CPU per request varies less than throughput on a shared VM whose speed drifts: it is what to compare
	// between builds.
	fmt.Printf("  CPU used meanwhile: %s\n", cpuDelta(cpu0, cpu1, len(res.lat), "req"))

	// Phase 2: projection lag at a fixed write rate.
	if o.rate > 0 {
		lag0, _ = n.lagHistogram()
		res, _ = n.hammer(o.workers, 10*time.Second, o.rate, func(w, i int) (*http.Request, error) {
			return n.post(fmt.Sprintf(`{"cid":%q}`, randomCID()))
		})
		lag1, _ = n.lagHistogram()
		res.print(fmt.Sprintf("POST /pins at %d/s", o.rate))
		printLag(fmt.Sprintf("projection lag (pins) at %d writes/s", o.rate), lag1.minus(lag0))
	}

	// Phase 3: queries.
	if o.seed > 0 {
		if err := n.seed(o.seed, o.seedQueued); err != nil {
			return err
		}
	} else if err := n.settle(30 * time.Minute); err != nil {
		// A reused data dir (-data-dir of an earlier -keep run) may still hold events the read models lack.
		return err
	}
	total, err := n.count("status=any")
	if err != nil {
		return err
	}
	if o.explain != "" {
		if err := n.explain(o.explain, total); err != nil {
			return err
		}
		fmt.Printf("wrote %s\n", o.explain)
	}
	var qws []int
	for _, w := range strings.Split(o.qworkers, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(w))
		if err != nil || n < 1 {
			return fmt.Errorf("-query-workers: %q is not a positive number", w)
		}
		qws = append(qws, n)
	}
	if len(ids) == 0 {
		return errors.New("no pins created")
	}
	someID := func() string { return ids[rand.IntN(len(ids))].id }
	someCID := func() string { return ids[rand.IntN(len(ids))].cid }
	someName := func() string { return ids[rand.IntN(len(ids))].name }
	before := time.Now().UTC().Add(-time.Duration(rand.IntN(5)+1) * time.Second).Format("2006-01-02T15:04:05.000Z")
	queries := []struct {
		name string
		q    func() string
	}{
		{"GET /pins?limit=10 (status=queued)", func() string { return "/pins?limit=10&status=queued" }},
		{"GET /pins?limit=10 (all statuses)", func() string { return "/pins?limit=10&status=any" }},
		{"GET /pins/{requestid}", func() string { return "/pins/" + someID() }},
		{"filter cid", func() string { return "/pins?cid=" + someCID() }},
		{"filter name (exact)", func() string { return "/pins?name=" + someName() }},
		{"filter name (iexact)", func() string { return "/pins?match=iexact&name=" + strings.ToUpper(someName()) }},
		{"filter name (partial)", func() string { n := someName(); return "/pins?match=partial&name=" + n[:len(n)-1] }},
		{"filter meta", func() string { return "/pins?status=any&meta=" + url.QueryEscape(`{"w":"3"}`) }},
		{"filter before (page 2)", func() string { return "/pins?status=any&before=" + before }},
		{"filter status=failed", func() string { return "/pins?status=failed" }},
	}
	for _, qw := range qws {
		fmt.Printf("\nqueries over an org holding %d pins (%d workers, %s each)\n", total, qw, o.queryTime)
		for _, q := range queries {
			r, _ := n.hammer(qw, o.queryTime, 0, func(w, i int) (*http.Request, error) {
				return n.get(q.q())
			})
			r.print(q.name)
		}
	}
	rss, err := rssOf(n.cmd.Process.Pid)
	if err == nil {
		fmt.Printf("\nserver RSS (anchorage process): %.0f MB\n", float64(rss)/(1<<20))
	}
	if o.recovery {
		if n, err = n.recoveryBench(o.bin); err != nil {
			return err
		}
	}
	fmt.Printf("\nmachine speed at the end: %.1f M keys sorted/s on one core, fsync %s\n", cpuSpeed(), fsyncSpeed(dir))
	return nil
}

// settle waits until the pins projection has caught up with the log (a node restarted on a kept data dir
// projects what it had not yet), so queries are timed on the whole data set and without a backlog competing.
func (n *node) settle(limit time.Duration) error {
	start := time.Now()
	for {
		lag, err := n.gauge(`anchorage_projection_lag_events{projection="pins"}`)
		if err != nil {
			return err
		}
		if lag < 100 {
			if d := time.Since(start); d > time.Second {
				fmt.Printf("projection caught up in %s\n", d.Round(time.Second))
			}
			return nil
		}
		if time.Since(start) > limit {
			return fmt.Errorf("pins projection still %.0f events behind after %s", lag, limit)
		}
		time.Sleep(time.Second)
	}
}

// tmpRoot keeps the node on the real disk: fsync costs are part of what is measured.
func tmpRoot() string { return os.TempDir() }

func start(bin, dir string) (*node, error) {
	cmd := exec.Command(bin, "dev", "--data-dir", dir, "--listen", "127.0.0.1:0")
	if err := os.MkdirAll(dir, 0o755); err != nil { // the managed PostgreSQL runs as another user: it must reach the dir
		return nil, err
	}
	logf, err := os.Create(filepath.Join(dir, "server.log"))
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	cmd.Stderr = logf
	// Its own process group (a terminal's Ctrl-C reaches only us, and we stop it cleanly), and killed with us if
	// this tool dies.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w (build it first: go build -o bin/anchorage ./cmd/anchorage)", bin, err)
	}
	ready := make(chan error, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), "anchorage is ready") {
				ready <- nil
			}
		}
		ready <- errors.New("anchorage dev exited before it was ready; see " + logf.Name())
	}()
	select {
	case err := <-ready:
		if err != nil {
			return nil, err
		}
	case <-time.After(10 * time.Minute):
		_ = cmd.Process.Kill()
		return nil, errors.New("anchorage dev not ready after 10 minutes")
	}
	env, err := os.ReadFile(filepath.Join(dir, "dev.env"))
	if err != nil {
		return nil, err
	}
	n := &node{cmd: cmd, dir: dir, client: &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 256, MaxConnsPerHost: 256}}}
	for _, line := range strings.Split(string(env), "\n") {
		if v, ok := strings.CutPrefix(line, "ANCHORAGE_ENDPOINT="); ok {
			n.endpoint = v
		}
		if v, ok := strings.CutPrefix(line, "ANCHORAGE_TOKEN="); ok {
			n.token = v
		}
	}
	return n, nil
}

func (n *node) stop() {
	_ = n.cmd.Process.Signal(os.Interrupt)
	done := make(chan struct{})
	go func() { _ = n.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		_ = syscall.Kill(-n.cmd.Process.Pid, syscall.SIGKILL)
	}
}

func (n *node) post(body string) (*http.Request, error) {
	req, err := http.NewRequest(http.MethodPost, n.endpoint+"/pins", strings.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+n.token)
	req.Header.Set("Content-Type", "application/json")
	return req, nil
}

func (n *node) get(path string) (*http.Request, error) {
	req, err := http.NewRequest(http.MethodGet, n.endpoint+path, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+n.token)
	return req, nil
}

func (n *node) count(q string) (int64, error) {
	req, _ := n.get("/pins?limit=1&" + q)
	resp, err := n.client.Do(req)
	if err != nil {
		return 0, err
	}
	defer closeBody(resp)
	var out struct{ Count int64 }
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return 0, err
	}
	return out.Count, nil
}

type created struct{ id, cid, name string }

type result struct {
	n, errs  int
	elapsed  time.Duration
	lat      []time.Duration
	firstErr string
}

func (r result) print(name string) {
	slices.Sort(r.lat)
	q := func(p float64) float64 {
		if len(r.lat) == 0 {
			return math.NaN()
		}
		return float64(r.lat[int(p*float64(len(r.lat)-1))].Microseconds()) / 1000
	}
	fmt.Printf("%-40s %8.0f req/s  p50 %7.2f ms  p99 %7.2f ms  n=%d errors=%d%s\n",
		name, float64(r.n)/r.elapsed.Seconds(), q(0.5), q(0.99), r.n, r.errs, r.firstErr)
}

// hammer runs workers issuing requests from mk until d passes (closed loop, or paced to rate/s when rate > 0).
func (n *node) hammer(workers int, d time.Duration, rate int, mk func(w, i int) (*http.Request, error)) (result, []created) {
	var mu sync.Mutex
	var all result
	var made []created
	var errs atomic.Int64
	var firstErr atomic.Value
	start := time.Now()
	deadline := start.Add(d)
	// Paced: request k is due at start + k/rate, whichever worker takes it; one that is late goes at once, so the
	// rate holds on average as long as the workers keep up. (A 1 ms ticker lost the ticks its receivers missed:
	// 848-928 writes/s of 1,000 on a busy machine.)
	var next atomic.Int64
	var wg sync.WaitGroup
	u, _ := url.Parse(n.endpoint)
	for w := 0; w < workers; w++ {
		wg.Go(func() {
			var lat []time.Duration
			var mine []created
			cc := &connClient{addr: u.Host}
			defer cc.close()
			for i := 0; time.Now().Before(deadline); i++ {
				if rate > 0 {
					due := start.Add(time.Duration(next.Add(1)-1) * time.Second / time.Duration(rate))
					if !due.Before(deadline) {
						break
					}
					time.Sleep(time.Until(due))
				}
				req, err := mk(w, i)
				if err != nil {
					errs.Add(1)
					continue
				}
				t0 := time.Now()
				status, body, err := cc.do(req)
				if err != nil {
					errs.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
					continue
				}
				lat = append(lat, time.Since(t0))
				if status >= 300 {
					errs.Add(1)
					firstErr.CompareAndSwap(nil, fmt.Sprintf("%d %s", status, body))
					continue
				}
				if req.Method == http.MethodPost {
					var ps struct {
						RequestID string `json:"requestid"`
						Pin       struct{ CID, Name string }
					}
					if json.Unmarshal(body, &ps) == nil {
						mine = append(mine, created{ps.RequestID, ps.Pin.CID, ps.Pin.Name})
					}
				}
			}
			mu.Lock()
			all.lat = append(all.lat, lat...)
			made = append(made, mine...)
			mu.Unlock()
		})
	}
	wg.Wait()
	all.elapsed = time.Since(start)
	all.n = len(all.lat)
	all.errs = int(errs.Load())
	if fe, ok := firstErr.Load().(string); ok {
		all.firstErr = " first error: " + fe
	}
	return all, made
}

// connClient sends a worker's requests over one keep-alive connection of its own, writing and reading them in
// the worker's goroutine. The load tool shares the two cores with the node it measures, and net/http's client
// (two goroutine hand-offs per request and its transport's bookkeeping) cost it 0.12-0.20 ms of CPU per POST,
// a sixth of the whole machine's; this does the same HTTP/1.1 exchange with req.Write and http.ReadResponse.
type connClient struct {
	addr string
	conn net.Conn
	br   *bufio.Reader
	bw   *bufio.Writer
}

func (c *connClient) do(req *http.Request) (status int, body []byte, err error) {
	if c.conn == nil {
		conn, err := net.Dial("tcp", c.addr)
		if err != nil {
			return 0, nil, err
		}
		c.conn, c.br, c.bw = conn, bufio.NewReaderSize(conn, 16<<10), bufio.NewWriterSize(conn, 16<<10)
	}
	if err = req.Write(c.bw); err == nil {
		err = c.bw.Flush()
	}
	if err != nil {
		c.close()
		return 0, nil, err
	}
	resp, err := http.ReadResponse(c.br, req)
	if err != nil {
		c.close()
		return 0, nil, err
	}
	body, err = io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.Close {
		c.close()
	}
	return resp.StatusCode, body, err
}

func (c *connClient) close() {
	if c.conn != nil {
		c.conn.Close()
		c.conn = nil
	}
}

// histogram is a scraped Prometheus histogram: cumulative counts by upper bound.
type histogram struct {
	bounds []float64
	counts []float64
}

func (h histogram) minus(o histogram) histogram {
	out := histogram{bounds: h.bounds, counts: slices.Clone(h.counts)}
	if len(o.counts) != len(h.counts) {
		return out // o was empty: nothing to subtract
	}
	for i := range out.counts {
		out.counts[i] -= o.counts[i]
	}
	return out
}

// quantile interpolates within the bucket holding quantile q.
func (h histogram) quantile(q float64) float64 {
	if len(h.counts) == 0 || h.counts[len(h.counts)-1] == 0 {
		return math.NaN()
	}
	target := q * h.counts[len(h.counts)-1]
	lower, prev := 0.0, 0.0
	for i, c := range h.counts {
		if c >= target {
			if math.IsInf(h.bounds[i], 1) {
				return lower
			}
			return lower + (h.bounds[i]-lower)*(target-prev)/math.Max(c-prev, 1)
		}
		lower, prev = h.bounds[i], c
	}
	return lower
}

func printLag(name string, h histogram) {
	fmt.Printf("%-40s p50 %7.2f ms  p99 %7.2f ms  (events=%.0f)\n", name, 1000*h.quantile(0.5), 1000*h.quantile(0.99), h.counts[len(h.counts)-1])
}

func (n *node) lagHistogram() (histogram, error) {
	resp, err := n.client.Get(n.endpoint + "/metrics")
	if err != nil {
		return histogram{}, err
	}
	defer closeBody(resp)
	var h histogram
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		rest, ok := strings.CutPrefix(line, `anchorage_projection_lag_seconds_bucket{`)
		if !ok || !strings.Contains(rest, `projection="pins"`) {
			continue
		}
		i := strings.Index(rest, `le="`)
		j := strings.Index(rest[i+4:], `"`)
		le := rest[i+4 : i+4+j]
		bound := math.Inf(1)
		if le != "+Inf" {
			bound, _ = strconv.ParseFloat(le, 64)
		}
		c, _ := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
		h.bounds = append(h.bounds, bound)
		h.counts = append(h.counts, c)
	}
	if len(h.counts) == 0 { // nothing observed yet
		return histogram{bounds: []float64{math.Inf(1)}, counts: []float64{0}}, nil
	}
	return h, nil
}

var cidCounter atomic.Uint64

// randomCID returns a fresh CIDv1 (raw, sha2-256) for a pin that no other request shares.
func randomCID() string {
	var b [16]byte
	binary.BigEndian.PutUint64(b[:], cidCounter.Add(1))
	binary.BigEndian.PutUint64(b[8:], rand.Uint64())
	sum := sha256.Sum256(b[:])
	mh, _ := multihash.Encode(sum[:], multihash.SHA2_256)
	return cid.NewCidV1(cid.Raw, mh).String()
}

func rssOf(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10, err
		}
	}
	return 0, errors.New("no VmRSS")
}

func numCPU() int { return runtime.NumCPU() }

// fsyncSpeed writes and fdatasyncs 4 KiB 200 times in a temp file under dir and returns the median and 90th
// percentile: the POST phase waits for the event log's group fsync, so its throughput follows the disk's
// latency as much as the cores' speed.
func fsyncSpeed(dir string) string {
	f, err := os.CreateTemp(dir, "fsync-probe-")
	if err != nil {
		return "unknown (" + err.Error() + ")"
	}
	defer os.Remove(f.Name())
	defer f.Close()
	buf := make([]byte, 4096)
	lat := make([]time.Duration, 0, 200)
	for i := range 200 {
		t0 := time.Now()
		if _, err := f.WriteAt(buf, int64(i)*4096); err != nil {
			return "unknown (" + err.Error() + ")"
		}
		if err := syscall.Fdatasync(int(f.Fd())); err != nil {
			return "unknown (" + err.Error() + ")"
		}
		lat = append(lat, time.Since(t0))
	}
	slices.Sort(lat)
	return fmt.Sprintf("p50 %.2f ms, p90 %.2f ms", float64(lat[100])/1e6, float64(lat[180])/1e6)
}

// cpuSpeed sorts random 64-bit keys on one core for 300 ms and returns millions of keys sorted per second. The
// project VM's cores are shared and their speed moves by up to half within an hour: printed before and after
// every run, it says how fast the machine was while the figures were taken.
func cpuSpeed() float64 {
	r := rand.New(rand.NewPCG(1, 2))
	x := make([]uint64, 1<<20)
	t0 := time.Now()
	n := 0
	for time.Since(t0) < 300*time.Millisecond {
		for i := range x {
			x[i] = r.Uint64()
		}
		slices.Sort(x)
		n++
	}
	return float64(n*len(x)) / 1e6 / time.Since(t0).Seconds()
}

func cpuModel() string {
	b, _ := os.ReadFile("/proc/cpuinfo")
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "model name"); ok {
			return strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
		}
	}
	return "unknown CPU"
}

// closeBody reads the rest of a response's body before closing it. Go's HTTP client reuses a connection only
// after its last response was read to the end: closing an unread body (a 202's, or a JSON decoder's unread
// trailing newline) closes the connection, and the next request pays a new one on both sides, which is load a
// real client keeping its connections does not make.
func closeBody(resp *http.Response) {
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
}
