package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"github.com/anchorage-pin/anchorage/adapters/postgres"
	"github.com/jackc/pgx/v5"
	"github.com/spf13/cobra"
)

func replayCmd(e env) *cobra.Command {
	var f adminFlags
	cmd := &cobra.Command{Use: "replay", Short: "Recover by replaying the event log: read models, or a node's pins"}
	cmd.PersistentFlags().StringVarP(&f.cfgPath, "config", "c", "", "the node's configuration file")
	cmd.PersistentFlags().StringVar(&f.dataDir, "data-dir", "", "data dir of an `anchorage dev` node")
	with := func(fn adminFunc) runE { return f.run(e, fn) }
	var only []string
	proj := &cobra.Command{
		Use:   "projections",
		Short: "Rebuild the read models from the event log into fresh tables and swap them in (the API keeps serving)",
		Args:  cobra.NoArgs,
		RunE: with(func(ctx context.Context, a *admin, _ []string) error {
			replayGC()
			apiCfg, err := pgx.ParseConfig(a.cfg.Postgres.APIURL)
			if err != nil {
				return fmt.Errorf("postgres.apiURL: %w", err)
			}
			bar := newProgress(e.stderr)
			st, err := postgres.Rebuild(ctx, a.cfg.Postgres.URL, apiCfg.User, a.elog, postgres.RebuildOptions{Only: only, Progress: bar.update, Logger: newLogger(a.cfg.Log, e.stderr)})
			bar.done()
			if err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "rebuilt %s from %d events (up to event %d) in %s: replay %s, indexes and pin_meta %s, swap %s, old tables dropped %s\n",
				strings.Join(st.Replaced, ", "), st.Events, st.Head, st.Total.Round(time.Millisecond),
				st.Replay.Round(time.Millisecond), st.Indexes.Round(time.Millisecond), st.Swap.Round(time.Millisecond),
				st.Drop.Round(time.Millisecond))
			return nil
		}),
	}
	proj.Flags().StringSliceVar(&only, "only", nil, "rebuild only these projections (orgs, tokens, pins)")
	verify := &cobra.Command{
		Use:   "verify",
		Short: "Rebuild into scratch tables and compare every read-model row with the live ones",
		Args:  cobra.NoArgs,
		RunE: with(func(ctx context.Context, a *admin, _ []string) error {
			replayGC()
			bar := newProgress(e.stderr)
			rep, err := postgres.Verify(ctx, a.cfg.Postgres.URL, a.elog, postgres.RebuildOptions{Only: only, Progress: bar.update})
			bar.done()
			if err != nil {
				return err
			}
			for t, n := range rep.Checked {
				fmt.Fprintf(e.stdout, "%-16s %8d rows compared\n", t, n)
			}
			if len(rep.Differences) == 0 {
				fmt.Fprintln(e.stdout, "the read models equal a rebuild from the event log")
				return nil
			}
			for _, d := range rep.Differences {
				fmt.Fprintf(e.stdout, "%s: %d rows only in the live table, %d only in the rebuild\n", d.Table, d.OnlyLive, d.OnlyRebuilt)
				for _, r := range d.SampleLive {
					fmt.Fprintf(e.stdout, "  live:    %s\n", r)
				}
				for _, r := range d.SampleRebult {
					fmt.Fprintf(e.stdout, "  rebuilt: %s\n", r)
				}
			}
			return fmt.Errorf("%d read-model tables differ from the event log; `anchorage replay projections` rebuilds them", len(rep.Differences))
		}),
	}
	verify.Flags().StringSliceVar(&only, "only", nil, "verify only these projections")
	var timeout time.Duration
	node := &cobra.Command{
		Use:   "node NODE",
		Short: "Re-pin a node's whole desired pin set on its Kubo (after its repo was lost)",
		Args:  cobra.ExactArgs(1),
		RunE: with(func(ctx context.Context, a *admin, args []string) error {
			fmt.Fprintf(e.stderr, "asking node %s to re-pin every pin placed on it...\n", args[0])
			msg, err := a.nc.Request(replaySubject(args[0]), nil, timeout)
			if err != nil {
				return fmt.Errorf("node %s did not answer (%w): is it running?", args[0], err)
			}
			var out struct {
				Stats struct{ Placements, Pinned, Failed int }
				Error string
			}
			if err := json.Unmarshal(msg.Data, &out); err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "node %s: %d placements re-driven: %d pinned, %d failed\n", args[0], out.Stats.Placements, out.Stats.Pinned, out.Stats.Failed)
			if out.Error != "" {
				return fmt.Errorf("replay stopped: %s", out.Error)
			}
			if out.Stats.Failed > 0 {
				return fmt.Errorf("%d pins could not be re-pinned; their status is failed with the reason", out.Stats.Failed)
			}
			return nil
		}),
	}
	node.Flags().DurationVar(&timeout, "timeout", time.Hour, "how long to wait for the node")
	cmd.AddCommand(proj, verify, node)
	return cmd
}

// replayGC lets a replay's heap grow to 3 times what it holds (GOGC 200) before collecting: a replay allocates
// every event it decodes and keeps only a few batches, so the default makes it collect several times a second.
// An explicit GOGC is left alone.
func replayGC() {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(200)
	}
}

// progress shows rebuild progress: a bar with events/s and ETA on a terminal, plain lines every few seconds
// otherwise.
type progress struct {
	w     io.Writer
	tty   bool
	mu    sync.Mutex
	start time.Time
	last  time.Time
	line  string
}

func newProgress(w io.Writer) *progress {
	tty := false
	if f, ok := w.(*os.File); ok {
		if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
			tty = true
		}
	}
	return &progress{w: w, tty: tty, start: time.Now()}
}

func (p *progress) update(projection string, done, total uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := time.Now()
	every := 5 * time.Second
	if p.tty {
		every = 100 * time.Millisecond
	}
	if now.Sub(p.last) < every && done < total {
		return
	}
	p.last = now
	rate := float64(done) / max(now.Sub(p.start).Seconds(), 0.001)
	frac := 1.0
	if total > 0 {
		frac = float64(done) / float64(total)
	}
	eta := time.Duration(0)
	if rate > 0 && total > done {
		eta = time.Duration(float64(total-done) / rate * float64(time.Second))
	}
	if p.tty {
		const width = 30
		n := int(frac * width)
		p.line = fmt.Sprintf("\r%-8s [%s%s] %3.0f%% %d/%d events  %.0f ev/s  ETA %s ", projection,
			strings.Repeat("=", n), strings.Repeat(" ", width-n), 100*frac, done, total, rate, eta.Round(time.Second))
		fmt.Fprint(p.w, p.line)
		return
	}
	fmt.Fprintf(p.w, "%s: event %d of %d (%.0f%%), %.0f events/s, ETA %s\n", projection, done, total, 100*frac, rate, eta.Round(time.Second))
}

func (p *progress) done() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.tty && p.line != "" {
		fmt.Fprintln(p.w)
	}
}
