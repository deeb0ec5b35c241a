package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/anchorage-pin/anchorage/adapters/natsjs"
	"github.com/anchorage-pin/anchorage/adapters/postgres"
	"github.com/anchorage-pin/anchorage/events"
)

// recoveryBench measures what recovery costs on the node's whole log: a raw replay (read every message, decode
// nothing) and one that also decodes every event, a full rebuild of the read models (`anchorage replay
// projections`), a verify, and a restart to ready. It returns the restarted node.
func (n *node) recoveryBench(bin string) (*node, error) {
	ctx := context.Background()
	log, closeLog, err := n.openLog(ctx)
	if err != nil {
		return n, err
	}
	head, err := log.LastSeq(ctx)
	if err != nil {
		closeLog()
		return n, err
	}
	fmt.Printf("\nrecovery over a log of %d events\n", head)
	n.awaitAutovacuum("the raw replay")

	// Raw replay: every message read from the stream (sequence, subject, headers, body), nothing decoded, as
	// the target's figure was taken; then the same read with every event decoded, nothing applied.
	server := n.cmd.Process.Pid
	raw, err := replayRaw(ctx, log, head, server)
	if err != nil {
		closeLog()
		return n, err
	}
	fmt.Printf("  raw replay (read, no decoding, from another process over TCP): %s\n", raw)
	decoded, err := replayDecoded(ctx, log, head, server)
	closeLog()
	if err != nil {
		return n, err
	}
	fmt.Printf("  replay read + decode (from another process over TCP):        %s\n", decoded)
	var rebuild time.Duration

	// Full rebuild into shadow tables and swap, as an operator runs it while the node serves.
	for _, sub := range []string{"projections", "verify"} {
		n.awaitAutovacuum("replay " + sub)
		t0 := time.Now()
		out, err := exec.Command(bin, "replay", sub, "--data-dir", n.dir).Output()
		took := time.Since(t0)
		if err != nil {
			return n, fmt.Errorf("anchorage replay %s: %w\n%s", sub, err, out)
		}
		fmt.Printf("  replay %s: %s in %s (%.0f events/s, whole command)\n", sub, firstLine(out), took.Round(time.Millisecond), float64(head)/took.Seconds())
		if sub == "projections" {
			rebuild = took
		}
	}

	// Restart to ready: stop, start again on the same data dir, until it answers the API.
	n.stop()
	t0 := time.Now()
	m, err := start(bin, n.dir)
	if err != nil {
		return n, err
	}
	ready := time.Since(t0)
	for {
		req, _ := m.get("/pins?limit=1")
		resp, err := m.client.Do(req)
		if err == nil {
			closeBody(resp)
			if resp.StatusCode == http.StatusOK {
				ready = time.Since(t0)
				break
			}
		}
		if time.Since(t0) > 5*time.Minute {
			return m, fmt.Errorf("restarted node does not answer GET /pins")
		}
		time.Sleep(10 * time.Millisecond)
	}
	opened, serving := startupTimes(filepath.Join(n.dir, "server.log"))
	fmt.Printf("  restart to ready: `anchorage dev` answered GET /pins %s after it was started (managed PostgreSQL and Kubo included); "+
		"anchorage itself: event log open after %s, serving after %s\n", ready.Round(time.Millisecond), opened, serving)
	if rss, err := rssOf(m.cmd.Process.Pid); err == nil {
		fmt.Printf("  server RSS after the restart: %.0f MB\n", float64(rss)/(1<<20))
	}

	fmt.Printf("\nrecovery targets (issue 4) over a log of %d events:\n", head)
	check := func(name, got string, ok bool, target string) {
		verdict := "met"
		if !ok {
			verdict = "MISSED"
		}
		fmt.Printf("  %-44s %14s   target %-16s %s\n", name, got, target, verdict)
	}
	check("full rebuild (anchorage replay projections)", rebuild.Round(10*time.Millisecond).String(), rebuild <= 20*time.Second, "<= 20s")
	check("raw replay (read, no decoding)", fmt.Sprintf("%.0f ev/s", raw.rate()), raw.rate() >= 200000, ">= 200000 ev/s")
	fmt.Printf("  %-44s %14s   (informational)\n", "replay read + decode", fmt.Sprintf("%.0f ev/s", decoded.rate()))
	if incrementalRate > 0 {
		check("incremental projectors (slowest, on a backlog)", fmt.Sprintf("%.0f ev/s", incrementalRate), incrementalRate >= 15000, ">= 15000 ev/s")
	} else {
		fmt.Printf("  %-44s %14s   (run with -seed to measure it)\n", "incremental projectors", "-")
	}
	check("restart to ready (GET /pins answers 200)", ready.Round(10*time.Millisecond).String(), ready <= 3*time.Second, "<= 3s")
	return m, nil
}

// awaitAutovacuum waits (at most three minutes) until no autovacuum worker runs in the node's PostgreSQL, and says how
// long it waited. The seed leaves a million fresh rows that autovacuum vacuums in the next minute or two (the
// audit trail alone, about 500 MB, takes it 15 s of reading and writing), and a rebuild's swap leaves fresh
// tables too: timed alongside such a vacuum, a replay measured the vacuum as much as itself (188k events/s
// against 217-336k otherwise). An operator's replay may meet one, but the figures are the replay's own.
func (n *node) awaitAutovacuum(before string) {
	ctx := context.Background()
	cfg, err := n.config()
	if err != nil || cfg.Postgres.URL == "" {
		fmt.Printf("  (not waiting for autovacuum before %s: no PostgreSQL URL in the node's config: %v)\n", before, err)
		return
	}
	pool, err := postgres.OpenOwnerPool(ctx, cfg.Postgres.URL, 1)
	if err != nil {
		fmt.Printf("  (not waiting for autovacuum before %s: %v)\n", before, err)
		return
	}
	defer pool.Close()
	t0 := time.Now()
	quiet := 0
	for quiet < 3 && time.Since(t0) < 3*time.Minute {
		var workers int
		if err := pool.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'autovacuum worker'`).Scan(&workers); err != nil {
			fmt.Printf("  (stopped waiting for autovacuum before %s: %v)\n", before, err)
			return
		}
		if workers == 0 {
			quiet++
		} else {
			quiet = 0
		}
		time.Sleep(500 * time.Millisecond)
	}
	if waited := time.Since(t0); waited > 2*time.Second {
		fmt.Printf("  waited %s for autovacuum to finish before %s\n", waited.Round(100*time.Millisecond), before)
	}
}

// replayStats is one timed replay of the whole log: wall time, this process's CPU time and the node's.
type replayStats struct {
	events, bytes     uint64
	took, cpu, server time.Duration
}

func (s replayStats) rate() float64 { return float64(s.events) / s.took.Seconds() }

func (s replayStats) String() string {
	perEvent := func(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e3 / float64(max(s.events, 1)) }
	body := ""
	if s.bytes > 0 {
		body = fmt.Sprintf(" (%.0f MB of bodies, %.1f MB/s)", float64(s.bytes)/1e6, float64(s.bytes)/1e6/s.took.Seconds())
	}
	return fmt.Sprintf("%d events%s in %s, %.0f events/s; CPU per event: client %.2f µs, node %.2f µs (load average %s)",
		s.events, body, s.took.Round(time.Millisecond), s.rate(), perEvent(s.cpu), perEvent(s.server), loadAverage())
}

// replayRaw reads the whole log with ReadRawUntil: every message, checked to arrive with contiguous sequences
// from 1 to head, its body bytes counted.
func replayRaw(ctx context.Context, log *natsjs.EventLog, head uint64, server int) (replayStats, error) {
	return timedReplay(head, server, "raw replay: %d events read, the log holds %d", func(s *replayStats) error {
		next := uint64(1)
		return log.ReadRawUntil(ctx, 1, head, nil, 5000, func(msgs []natsjs.RawMsg) error {
			for _, m := range msgs {
				if m.Seq != next {
					return fmt.Errorf("raw replay: sequence %d after %d", m.Seq, next-1)
				}
				next++
				s.bytes += uint64(len(m.Data))
			}
			s.events += uint64(len(msgs))
			return nil
		})
	})
}

// replayDecoded reads and decodes the whole log with ReadUntil.
func replayDecoded(ctx context.Context, log *natsjs.EventLog, head uint64, server int) (replayStats, error) {
	return timedReplay(head, server, "replay: %d events read and decoded, the log holds %d", func(s *replayStats) error {
		return log.ReadUntil(ctx, 1, head, nil, 5000, func(recs []events.Record) error {
			s.events += uint64(len(recs))
			return nil
		})
	})
}

// timedReplay times read, which counts what it reads into the stats, with this process's CPU and the node's
// (pid server), and checks that it read the whole log (short: the error's format, given the count and head).
func timedReplay(head uint64, server int, short string, read func(*replayStats) error) (replayStats, error) {
	var s replayStats
	cpu0, srv0, t0 := processCPU(), pidCPU(server), time.Now()
	err := read(&s)
	s.took, s.cpu, s.server = time.Since(t0), processCPU()-cpu0, pidCPU(server)-srv0
	if err == nil && s.events != head {
		err = fmt.Errorf(short, s.events, head)
	}
	return s, err
}

// processCPU is the user and system CPU time this process has used.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// pidCPU is the user and system CPU time process pid has used (0 if unknown), from /proc/<pid>/stat.
func pidCPU(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(b[i+1:])) // state ppid … utime (12th) stime (13th)
	if len(f) < 13 {
		return 0
	}
	utime, _ := strconv.ParseUint(f[11], 10, 64)
	stime, _ := strconv.ParseUint(f[12], 10, 64)
	return time.Duration(utime+stime) * time.Second / 100 // USER_HZ
}

func loadAverage() string {
	b, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

func firstLine(b []byte) string {
	s, _, _ := strings.Cut(strings.TrimSpace(string(b)), "\n")
	return s
}

// startupTimes reads the node's startup durations from its JSON log: when the event log was open and when it
// was serving, both from the start of startApp.
func startupTimes(path string) (opened, serving string) {
	f, err := os.Open(path)
	if err != nil {
		return "?", "?"
	}
	defer f.Close()
	opened, serving = "?", "?"
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var l struct {
			Msg     string `json:"msg"`
			Took    string `json:"took"`
			Startup string `json:"startup"`
		}
		if json.Unmarshal(sc.Bytes(), &l) != nil {
			continue
		}
		switch l.Msg {
		case "event log open":
			opened = l.Took
		case "anchorage is serving":
			serving = l.Startup
		}
	}
	return opened, serving
}
