package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/anchorage-pin/anchorage/adapters/kubo"
)

// placementBench puts 1 KiB blocks into the node's Kubo (not pinned), POSTs them all with workers clients and
// times from the first POST until every one is pinned; then it times Kubo alone pinning as many fresh blocks at
// several concurrencies, and reports both from this one run. With rounds > 1 it then takes rounds-1 more pairs
// of Kubo alone (at the concurrency that was best) and anchorage, back to back in alternating order, and
// reports each pair's ratio and their median: on a shared VM whose speed drifts by tens of percent within
// minutes, one anchorage run against a Kubo sweep taken a minute later can read high or low by chance; pairs
// taken back to back, in both orders, cancel most of that drift.
func (n *node) placementBench(count, workers, rounds int) error {
	ctx := context.Background()
	api := n.kuboAPI()
	if api == "" {
		return fmt.Errorf("no ANCHORAGE_KUBO_API in dev.env")
	}
	if os.Getenv("ANCHORAGE_LOAD_CONTENTION") != "" {
		return n.contentionBench(ctx, api, count, workers)
	}
	if err := n.requirePlacing(); err != nil {
		return err
	}
	e2e, err := n.anchorageRound(ctx, api, count, workers, true)
	if err != nil {
		return err
	}
	best, bestC := 0.0, 0
	for _, c := range []int{1, 16, 32, 64, 128} {
		rate, err := kuboRound(ctx, api, count, c)
		if err != nil {
			return err
		}
		if rate > best {
			best, bestC = rate, c
		}
	}
	fmt.Printf("%-40s %8.0f%%  (anchorage %.0f pins/s vs Kubo alone's best %.0f pins/s at %d in flight)\n",
		"anchorage / Kubo alone", 100*e2e/best, e2e, best, bestC)
	if rounds <= 1 {
		return nil
	}
	ratios := []float64{e2e / best}
	for r := 1; r < rounds; r++ {
		// The first pair ran anchorage first; the next ones alternate, so a steady drift of the machine's speed
		// favours neither side.
		var a, k float64
		var err error
		kuboFirst := r%2 == 1
		if kuboFirst {
			k, err = kuboRound(ctx, api, count, bestC)
		}
		if err == nil {
			a, err = n.anchorageRound(ctx, api, count, workers, false)
		}
		if err == nil && !kuboFirst {
			k, err = kuboRound(ctx, api, count, bestC)
		}
		if err != nil {
			return err
		}
		ratios = append(ratios, a/k)
		order := "just before"
		if !kuboFirst {
			order = "just after"
		}
		fmt.Printf("%-40s %8.0f%%  (anchorage %.0f pins/s vs Kubo alone %.0f pins/s at %d in flight, %s)\n",
			fmt.Sprintf("round %d: anchorage / Kubo alone", r+1), 100*a/k, a, k, bestC, order)
	}
	parts := make([]string, len(ratios))
	for i, r := range ratios {
		parts[i] = fmt.Sprintf("%.0f%%", 100*r)
	}
	fmt.Printf("%-40s %8.0f%%  (median of %d back-to-back pairs: %s)\n", "anchorage / Kubo alone, median", 100*median(ratios), len(ratios), strings.Join(parts, ", "))
	return nil
}

// median returns the middle value of xs (the mean of the two middle ones for an even count); xs is not changed.
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// anchorageRound puts count fresh blocks into Kubo, POSTs a pin of each with workers clients, and returns the
// rate from the first POST until every one is visible as pinned. The first round also prints a timeline and,
// when asked (ANCHORAGE_LOAD_PROFILE), takes the node's CPU profile.
func (n *node) anchorageRound(ctx context.Context, api string, count, workers int, first bool) (float64, error) {
	blocks, err := putBlocks(ctx, api, count)
	if err != nil {
		return 0, err
	}
	// On a data dir kept from an earlier run, or after an earlier round, the org already holds pinned pins:
	// wait for this round's on top.
	already, err := n.count("status=pinned")
	if err != nil {
		return 0, err
	}
	tail := os.Getenv("ANCHORAGE_LOAD_TAIL") != "" // diagnostic: when the worker's reports were all durable
	workerBefore := 0.0
	if tail {
		if m, err := n.metrics("anchorage_worker_pins_total"); err == nil {
			workerBefore = m[0]
		}
	}
	cpuStart := cpuByPID()
	start := time.Now()
	timeline := func() {}
	if first {
		timeline = n.timeline(start)
		// Diagnostic: with ANCHORAGE_PPROF set (the node inherits it) and ANCHORAGE_LOAD_PROFILE naming a file,
		// the node's CPU profile over the first seconds of the run (about its length at 500 pins/s) is written
		// there.
		if out := os.Getenv("ANCHORAGE_LOAD_PROFILE"); out != "" && os.Getenv("ANCHORAGE_PPROF") != "" {
			go saveProfile(os.Getenv("ANCHORAGE_PPROF"), max(1, count/500), out)
		}
	}
	var errs atomic.Int64
	eachIndex(len(blocks), workers, func(i int) {
		req, _ := n.post(fmt.Sprintf(`{"cid":%q}`, blocks[i]))
		resp, err := n.client.Do(req)
		if err != nil || resp.StatusCode != 202 {
			errs.Add(1)
		}
		if resp != nil {
			closeBody(resp)
		}
	})
	posted := time.Since(start)
	var durable time.Duration
	for {
		if tail && durable == 0 {
			if m, err := n.metrics("anchorage_worker_pins_total"); err == nil && m[0]-workerBefore >= float64(count) {
				durable = time.Since(start)
			}
		}
		c, err := n.count("status=pinned")
		if err != nil {
			timeline()
			return 0, err
		}
		if c -= already; c >= int64(count) {
			if tail {
				fmt.Printf("tail: worker reports durable after %s, all visible as pinned after %s\n", durable.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
			}
			break
		}
		if time.Since(start) > 10*time.Minute {
			timeline()
			return 0, fmt.Errorf("only %d of %d pinned after 10 minutes", c, count)
		}
		time.Sleep(pollDelay(c, int64(count), time.Since(start)))
	}
	total := time.Since(start)
	cpuEnd := cpuByPID()
	timeline() // stopped here, not deferred: its polling would otherwise load the node during Kubo alone
	e2e := float64(count) / total.Seconds()
	fmt.Printf("%-40s %8.0f pins/s  (%d pins, all POSTed in %s, all pinned after %s, errors=%d)\n",
		fmt.Sprintf("anchorage end to end, %d clients", workers), e2e, count, posted.Round(time.Millisecond), total.Round(time.Millisecond), errs.Load())
	fmt.Printf("  CPU used meanwhile: %s\n", cpuDelta(cpuStart, cpuEnd, count, "pin"))
	return e2e, nil
}

// kuboRound puts count fresh blocks into Kubo and returns the rate at which Kubo alone pins them with c calls
// in flight.
func kuboRound(ctx context.Context, api string, count, c int) (float64, error) {
	fresh, err := putBlocks(ctx, api, count)
	if err != nil {
		return 0, err
	}
	kc, err := kubo.New(api, c)
	if err != nil {
		return 0, err
	}
	cpu0 := cpuByPID()
	t0 := time.Now()
	var kerrs atomic.Int64
	eachIndex(len(fresh), c, func(k int) {
		if _, err := kc.Pin(ctx, fresh[k], ""); err != nil {
			kerrs.Add(1)
		}
	})
	rate := float64(count) / time.Since(t0).Seconds()
	fmt.Printf("%-40s %8.0f pins/s  (errors=%d)\n", fmt.Sprintf("Kubo alone, %d in flight", c), rate, kerrs.Load())
	fmt.Printf("  CPU used meanwhile: %s\n", cpuDelta(cpu0, cpuByPID(), count, "pin"))
	return rate, nil
}

// pollDelay is how long to wait before asking again how many pins are pinned: a quarter of the time the rest
// should take at the rate so far, between 10 and 100 ms. Each count is a request, a read-your-writes wait and a
// query on the node being measured, which polling every 10 ms from the start made 100 times a second. Near the
// end polls come every 10 ms as before; a sudden speed-up can only make the run end later (by at most 100 ms),
// which counts against anchorage, never for it.
func pollDelay(done, total int64, elapsed time.Duration) time.Duration {
	d := 100 * time.Millisecond
	if done > 0 {
		d = time.Duration(float64(elapsed) * float64(total-done) / float64(done) / 4)
	}
	return min(max(d, 10*time.Millisecond), 100*time.Millisecond)
}

func (n *node) kuboAPI() string {
	env, _ := os.ReadFile(filepath.Join(n.dir, "dev.env"))
	for _, line := range strings.Split(string(env), "\n") {
		if v, ok := strings.CutPrefix(line, "ANCHORAGE_KUBO_API="); ok {
			return v
		}
	}
	return ""
}

// putBlocks stores count random 1 KiB raw blocks in Kubo without pinning them and returns their CIDs.
func putBlocks(ctx context.Context, api string, count int) ([]string, error) {
	out := make([]string, count)
	var first atomic.Value
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 16}}
	eachIndex(count, 16, func(i int) {
		if first.Load() != nil {
			return
		}
		buf := make([]byte, 1024)
		_, _ = rand.Read(buf)
		var body bytes.Buffer
		mw := multipart.NewWriter(&body)
		part, _ := mw.CreateFormFile("file", "block")
		_, _ = part.Write(buf)
		_ = mw.Close()
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, api+"/api/v0/block/put?cid-codec=raw&mhtype=sha2-256&pin=false", &body)
		req.Header.Set("Content-Type", mw.FormDataContentType())
		resp, err := hc.Do(req)
		if err != nil {
			first.CompareAndSwap(nil, err)
			return
		}
		var r struct{ Key string }
		err = json.NewDecoder(resp.Body).Decode(&r)
		closeBody(resp)
		if err != nil || r.Key == "" {
			first.CompareAndSwap(nil, fmt.Errorf("block/put: %v", err))
			return
		}
		out[i] = r.Key
	})
	if err, ok := first.Load().(error); ok {
		return nil, err
	}
	return out, nil
}

// eachIndex calls f(i) for every i in [0, count) from workers goroutines, each taking the next index as it
// finishes one, and returns when all calls have returned.
func eachIndex(count, workers int, f func(i int)) {
	var next atomic.Int64
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= count {
					return
				}
				f(i)
			}
		})
	}
	wg.Wait()
}

// admin runs an anchorage admin command against the node.
func (n *node) admin(bin string, args ...string) error {
	out, err := exec.Command(bin, append([]string{"admin", "--data-dir", n.dir}, args...)...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("anchorage admin %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return nil
}

// timeline samples the node's progress every 500 ms (placements decided, pins done by the worker, pins visible
// as pinned) and prints it when the returned func is called.
func (n *node) timeline(start time.Time) func() {
	stop := make(chan struct{})
	done := make(chan struct{})
	var lines []string
	go func() {
		defer close(done)
		var lastSum, lastCalls float64
		t := time.NewTicker(500 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
			}
			m, err := n.metrics("anchorage_scheduler_placements_total", "anchorage_worker_pins_total", "anchorage_worker_pins_in_flight", "anchorage_worker_pin_seconds_sum", "anchorage_worker_pin_seconds_count")
			if err != nil {
				lines = append(lines, fmt.Sprintf("  t=%5.1fs no metrics: %v", time.Since(start).Seconds(), err))
				continue
			}
			placed, worker, inflight, sum, calls := m[0], m[1], m[2], m[3], m[4]
			pinned, _ := n.count("status=pinned")
			mean := 0.0
			if calls > lastCalls {
				mean = 1000 * (sum - lastSum) / (calls - lastCalls)
			}
			lastSum, lastCalls = sum, calls
			lines = append(lines, fmt.Sprintf("  t=%5.1fs placed=%5.0f worker-pinned=%5.0f api-pinned=%5d in-flight=%3.0f pin/add mean %5.1f ms", time.Since(start).Seconds(), placed, worker, pinned, inflight, mean))
		}
	}()
	return func() {
		close(stop)
		<-done
		fmt.Println(strings.Join(lines, "\n"))
	}
}

// metrics reads the first sample of each named series (whatever its labels; 0 when absent) from one fetch of
// /metrics, uncompressed: the timeline's sampling should cost the node being measured as little as it can.
func (n *node) metrics(names ...string) ([]float64, error) {
	req, err := http.NewRequest("GET", n.endpoint+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept-Encoding", "identity")
	resp, err := n.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer closeBody(resp)
	b, _ := io.ReadAll(resp.Body)
	vals := make([]float64, len(names))
	found := make([]bool, len(names))
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "#") {
			continue
		}
		for i, name := range names {
			if !found[i] && strings.HasPrefix(line, name) && len(line) > len(name) && (line[len(name)] == ' ' || line[len(name)] == '{') {
				found[i] = true
				_, _ = fmt.Sscan(line[strings.LastIndexByte(line, ' ')+1:], &vals[i])
			}
		}
	}
	return vals, nil
}

// contentionBench (ANCHORAGE_LOAD_CONTENTION=1, a diagnostic) pins count fresh blocks with Kubo alone (32 in
// flight) while workers clients POST count pins of CIDs nobody has with placement paused: how much the POST
// path alone (its fsyncs and projection work) slows Kubo, with no scheduler or worker work at all.
func (n *node) contentionBench(ctx context.Context, api string, count, workers int) error {
	bin := flag.Lookup("bin").Value.String()
	if err := n.admin(bin, "maintenance", "on", "--reason", "contention bench"); err != nil {
		return err
	}
	defer func() { _ = n.admin(bin, "maintenance", "off") }()
	for round := 0; round < 2; round++ {
		fresh, err := putBlocks(ctx, api, count)
		if err != nil {
			return err
		}
		kc, err := kubo.New(api, 32)
		if err != nil {
			return err
		}
		t0 := time.Now()
		var postDone atomic.Int64 // ns since t0 when the POSTs ended (0: still running or none)
		var pinsDuringPosts atomic.Int64
		var pinned atomic.Int64
		var wg sync.WaitGroup
		if round == 1 {
			wg.Go(func() {
				eachIndex(count, workers, func(int) {
					req, _ := n.post(fmt.Sprintf(`{"cid":%q}`, randomCID()))
					if resp, err := n.client.Do(req); err == nil {
						closeBody(resp)
					}
				})
				postDone.Store(int64(time.Since(t0)))
				pinsDuringPosts.Store(pinned.Load())
			})
		}
		eachIndex(len(fresh), 32, func(k int) {
			if _, err := kc.Pin(ctx, fresh[k], ""); err == nil {
				pinned.Add(1)
			}
		})
		wg.Wait()
		total := time.Since(t0)
		if round == 0 {
			fmt.Printf("%-40s %8.0f pins/s\n", "Kubo alone, 32 in flight", float64(count)/total.Seconds())
			continue
		}
		pd := time.Duration(postDone.Load())
		fmt.Printf("%-40s %8.0f pins/s over all; %d pinned while the POSTs ran (%s, %.0f pins/s), %.0f pins/s after\n",
			"Kubo, 32 in flight, under POSTs", float64(count)/total.Seconds(), pinsDuringPosts.Load(), pd.Round(time.Millisecond),
			float64(pinsDuringPosts.Load())/pd.Seconds(), float64(int64(count)-pinsDuringPosts.Load())/(total-pd).Seconds())
	}
	return nil
}

// requirePlacing refuses a node whose placement is paused. A data dir kept (-keep) from an earlier run is left in
// maintenance with that run's random, unfetchable CIDs queued: the pins POSTed now would never be placed, and
// resuming would set the worker fetching the old ones until their timeout, so the figures would mean nothing.
func (n *node) requirePlacing() error {
	var on float64
	var err error
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		// The gauge appears once the scheduler has read its state.
		if on, err = n.gauge("anchorage_scheduler_maintenance"); err == nil || time.Now().After(deadline) {
			break
		}
	}
	switch {
	case err != nil:
		return fmt.Errorf("placement benchmark: cannot tell whether placement is paused: %w", err)
	case on != 0:
		return fmt.Errorf("placement benchmark: placement is paused on %s (an earlier run with -keep leaves its data dir in maintenance, with its unfetchable test pins queued); use a fresh -data-dir, or -placement 0", n.dir)
	}
	return nil
}

// cpuByPID reads the CPU seconds (user + system) every process on the machine has used so far, by pid, with
// its name. Differences between two calls show where a phase's CPU went (cpuDelta).
func cpuByPID() map[int]procCPU {
	out := map[int]procCPU{}
	dirs, _ := os.ReadDir("/proc")
	for _, d := range dirs {
		pid, err := strconv.Atoi(d.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + d.Name() + "/stat")
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...: comm may hold spaces, so split after its closing parenthesis.
		open, close := bytes.IndexByte(b, '('), bytes.LastIndexByte(b, ')')
		if open < 0 || close < open {
			continue
		}
		f := strings.Fields(string(b[close+1:]))
		if len(f) < 13 {
			continue
		}
		ut, _ := strconv.ParseFloat(f[11], 64)
		st, _ := strconv.ParseFloat(f[12], 64)
		out[pid] = procCPU{string(b[open+1 : close]), (ut + st) / 100} // USER_HZ is 100 on Linux
	}
	return out
}

type procCPU struct {
	name string
	s    float64
}

// cpuDelta formats where the CPU went between two cpuByPID calls, by process name, per unit of work (n of them:
// "pin", "req"), largest first.
// Kernel threads are left out (their names change with the work they do); processes that exited in between are
// missing, so short-lived ones are undercounted.
func cpuDelta(before, after map[int]procCPU, n int, unit string) string {
	by := map[string]float64{}
	for pid, p := range after {
		if strings.HasPrefix(p.name, "kworker") {
			continue
		}
		by[p.name] += p.s - before[pid].s
	}
	type row struct {
		name string
		s    float64
	}
	var rows []row
	total := 0.0
	for name, s := range by {
		if s >= 0.05 {
			rows = append(rows, row{name, s})
			total += s
		}
	}
	sort.Slice(rows, func(i, j int) bool { return rows[i].s > rows[j].s })
	parts := []string{fmt.Sprintf("total %.2f s (%.2f ms/%s)", total, 1000*total/float64(n), unit)}
	for _, r := range rows {
		parts = append(parts, fmt.Sprintf("%s %.2f s (%.2f ms/%s)", r.name, r.s, 1000*r.s/float64(n), unit))
	}
	return strings.Join(parts, ", ")
}

// saveProfile writes the CPU profile of the next secs seconds of the node serving pprof at addr to file.
func saveProfile(addr string, secs int, file string) {
	resp, err := http.Get(fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", addr, secs))
	if err != nil {
		fmt.Fprintln(os.Stderr, "profile:", err)
		return
	}
	defer resp.Body.Close()
	f, err := os.Create(file)
	if err != nil {
		fmt.Fprintln(os.Stderr, "profile:", err)
		return
	}
	defer f.Close()
	_, _ = io.Copy(f, resp.Body)
}
