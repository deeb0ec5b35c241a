package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/anchorage-pin/anchorage/events"
)

// recoveryBench measures what recovery costs on the node's whole log: a raw replay (read and decode every
// event), a full rebuild of the read models (`anchorage replay projections`), a verify, and a restart to ready.
// It returns the restarted node.
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

	// Raw replay: every event read from the stream and decoded, nothing applied.
	var count int
	t0 := time.Now()
	err = log.ReadUntil(ctx, 1, head, nil, 5000, func(recs []events.Record) error {
		count += len(recs)
		return nil
	})
	raw := time.Since(t0)
	closeLog()
	if err != nil {
		return n, err
	}
	fmt.Printf("  raw replay (read + decode, over the NATS client connection): %d events in %s, %.0f events/s\n",
		count, raw.Round(time.Millisecond), float64(count)/raw.Seconds())
	var rebuild time.Duration

	// Full rebuild into shadow tables and swap, as an operator runs it while the node serves.
	for _, sub := range []string{"projections", "verify"} {
		t0 = time.Now()
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
	t0 = time.Now()
	m, err := start(bin, n.dir)
	if err != nil {
		return n, err
	}
	ready := time.Since(t0)
	for {
		req, _ := m.get("/pins?limit=1")
		resp, err := m.client.Do(req)
		if err == nil {
			resp.Body.Close()
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
	rawRate := float64(count) / raw.Seconds()
	check("full rebuild (anchorage replay projections)", rebuild.Round(10*time.Millisecond).String(), rebuild <= 20*time.Second, "<= 20s")
	check("raw replay (read + decode)", fmt.Sprintf("%.0f ev/s", rawRate), rawRate >= 200000, ">= 200000 ev/s")
	if incrementalRate > 0 {
		check("incremental projectors (slowest, on a backlog)", fmt.Sprintf("%.0f ev/s", incrementalRate), incrementalRate >= 15000, ">= 15000 ev/s")
	} else {
		fmt.Printf("  %-44s %14s   (run with -seed to measure it)\n", "incremental projectors", "-")
	}
	check("restart to ready (GET /pins answers 200)", ready.Round(10*time.Millisecond).String(), ready <= 3*time.Second, "<= 3s")
	return m, nil
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
