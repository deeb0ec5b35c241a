package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/anchorage-pin/anchorage/adapters/natsjs"
	"github.com/anchorage-pin/anchorage/cmd/anchorage/internal/config"
	"github.com/spf13/cobra"
)

// eventsCmd is `anchorage events`: backups of the event log (docs/backup.md).
func eventsCmd(e env) *cobra.Command {
	var f adminFlags
	cmd := &cobra.Command{
		Use:   "events",
		Short: "Back up and restore the event log (the source of truth): export and import",
		Long: `The event log is anchorage's only source of truth: the PostgreSQL read models and the Kubo pinsets are
rebuilt from it. 'events export' writes the whole log to a compressed, self-checking file while the node runs;
'events import' restores such a file into a fresh data dir, before the node first starts there. See docs/backup.md.`,
	}
	cmd.PersistentFlags().StringVarP(&f.cfgPath, "config", "c", "", "the node's configuration `FILE`")
	cmd.PersistentFlags().StringVar(&f.dataDir, "data-dir", "", "the data `DIR` of an anchorage dev node")

	var out string
	export := &cobra.Command{
		Use:   "export --out FILE",
		Short: "Write every event of a running node's log to FILE (gzip-compressed JSON lines with a checksum)",
		Long: `Export reads the running node's event log over NATS, like the admin commands, from sequence 1 to the last
event at the start of the export, and writes it to FILE through a temporary file in the same directory that is
renamed into place only once complete, so FILE is never a half-written backup (an existing FILE is replaced
atomically). Progress goes to stderr, a summary with the file's sha256 to stdout. It changes nothing on the node.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return eventsExport(cmd.Context(), e, f, out)
		},
	}
	export.Flags().StringVarP(&out, "out", "o", "", "the backup `FILE` to write, e.g. anchorage-$(date +%F).jsonl.gz (required)")
	_ = export.MarkFlagRequired("out")

	imp := &cobra.Command{
		Use:   "import FILE",
		Short: "Restore an export into a fresh data dir (the node must not have started there yet)",
		Long: `Import checks FILE completely first (format, version, sequences, count and checksum), then writes its events
into the event store of the data dir that --config or --data-dir names (for --data-dir, DIR/anchorage.yaml when
it exists, else anchorage dev's layout under DIR), with the sequences they had. It only restores into an empty
store: run it with the node stopped, on a data dir where no node has started yet (a node writes events of its own
when it starts). The events are written to a temporary store that becomes the node's only when complete.
Then start the node: it rebuilds its read models from the restored log.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return eventsImport(cmd.Context(), e, f, args[0])
		},
	}
	cmd.AddCommand(export, imp)
	return cmd
}

// eventsProgress prints "verb: done/total events (…%), rate" to w at most once a second.
type eventsProgress struct {
	w     io.Writer
	verb  string
	start time.Time
	mu    sync.Mutex
	last  time.Time
}

func newEventsProgress(w io.Writer, verb string) *eventsProgress {
	now := time.Now()
	return &eventsProgress{w: w, verb: verb, start: now, last: now}
}

func (p *eventsProgress) report(done, total uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := time.Now()
	if now.Sub(p.last) < time.Second {
		return
	}
	p.last = now
	rate := float64(done) / now.Sub(p.start).Seconds()
	if total > 0 {
		fmt.Fprintf(p.w, "%s: %d/%d events (%.0f%%), %.0f events/s\n", p.verb, done, total, 100*float64(done)/float64(total), rate)
		return
	}
	fmt.Fprintf(p.w, "%s: %d events, %.0f events/s\n", p.verb, done, rate)
}

// eventsConfig resolves the node's configuration from the flags as the admin commands do; with allowFresh, a
// --data-dir without anchorage.yaml means anchorage dev's defaults under that directory (a fresh data dir).
func eventsConfig(e env, f adminFlags, allowFresh bool) (config.Config, error) {
	switch {
	case f.cfgPath != "" && f.dataDir != "":
		return config.Config{}, errors.New("give either --config or --data-dir, not both")
	case f.cfgPath != "":
		return loadConfig(f.cfgPath, e.getenv, config.ModeServe)
	case f.dataDir == "":
		return config.Config{}, errors.New("say which node: --config FILE (the node's configuration) or --data-dir DIR (an `anchorage dev` node)")
	}
	path := filepath.Join(f.dataDir, "anchorage.yaml")
	if _, err := os.Stat(path); err == nil {
		return loadConfig(path, e.getenv, config.ModeServe)
	} else if !allowFresh {
		return config.Config{}, fmt.Errorf("%s not found: is `anchorage dev --data-dir %s` running (or did it ever run)?", path, f.dataDir)
	}
	cfg, err := config.Load("", e.getenv)
	if err != nil {
		return cfg, err
	}
	cfg.DataDir = f.dataDir
	return cfg.Resolve("")
}

func eventsExport(ctx context.Context, e env, f adminFlags, out string) (err error) {
	cfg, err := eventsConfig(e, f, false)
	if err != nil {
		return err
	}
	if st, err := os.Stat(out); err == nil && st.IsDir() {
		return fmt.Errorf("--out %s is a directory; name the backup file", out)
	}
	l, err := connectLog(ctx, cfg, "anchorage-events")
	if err != nil {
		return err
	}
	defer l.Close()

	dir, base := filepath.Split(out)
	if dir == "" {
		dir = "."
	}
	tmp, err := os.CreateTemp(dir, "."+base+".tmp-*")
	if err != nil {
		return fmt.Errorf("create the backup file: %w", err)
	}
	defer func() {
		if err != nil {
			_ = tmp.Close()
			_ = os.Remove(tmp.Name())
		}
	}()
	fileSum := sha256.New()
	p := newEventsProgress(e.stderr, "export")
	stats, err := l.Export(ctx, io.MultiWriter(tmp, fileSum), p.report)
	if err != nil {
		return err
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("write %s: %w", tmp.Name(), err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write %s: %w", tmp.Name(), err)
	}
	if err := os.Rename(tmp.Name(), out); err != nil {
		return fmt.Errorf("move the backup into place: %w", err)
	}
	if err := eventsSyncDir(dir); err != nil {
		return err
	}
	seqs := "no events"
	if stats.Messages > 0 {
		seqs = fmt.Sprintf("sequences %d..%d", stats.FirstSeq, stats.LastSeq)
	}
	fmt.Fprintf(e.stdout, "exported %d events (%s) to %s\n", stats.Messages, seqs, out)
	fmt.Fprintf(e.stdout, "  file:     %d bytes, sha256 %s\n", stats.Bytes, hex.EncodeToString(fileSum.Sum(nil)))
	fmt.Fprintf(e.stdout, "  checksum: sha256 %s over the event lines (verified by import)\n", stats.SHA256)
	fmt.Fprintf(e.stdout, "  took %s (%.0f events/s)\n", stats.Duration.Round(time.Millisecond), stats.PerSecond())
	return nil
}

func eventsImport(ctx context.Context, e env, f adminFlags, file string) error {
	cfg, err := eventsConfig(e, f, true)
	if err != nil {
		return err
	}
	storeDir := cfg.NATSStoreDir()
	jsDir := filepath.Join(storeDir, "jetstream")

	// A store that exists is not fresh. If its node runs, let the stream itself refuse (and say how much it
	// holds); a stopped node's store is never opened from here.
	if _, err := os.Stat(jsDir); err == nil {
		if l, cerr := connectLog(ctx, cfg, "anchorage-events"); cerr == nil {
			defer l.Close()
			return eventsImportInto(ctx, e, l, file, 0, "the running node's event log")
		}
		return fmt.Errorf("%s already exists: this data dir has an event store, and an import only restores into a fresh one; "+
			"restore into a new data dir (--data-dir NEW, or a configuration whose dataDir or nats.storeDir is new), "+
			"or, with the node stopped, move %s aside first", jsDir, jsDir)
	} else if !errors.Is(err, os.ErrNotExist) {
		return err
	}

	// Verify the whole file before writing anything.
	info, err := eventsVerifyFile(ctx, e, file)
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stderr, "verified %s: %d events, format %s v%d, exported %s\n", file, info.Messages, info.Header.Format, info.Header.Version, info.Header.ExportedAt.Format(time.RFC3339))

	// Import into a temporary store next to the final one; it becomes the node's store only when complete.
	if err := os.MkdirAll(storeDir, 0o700); err != nil {
		return fmt.Errorf("create %s: %w", storeDir, err)
	}
	tmpDir, err := os.MkdirTemp(storeDir, ".import-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmpDir)
	srv, err := natsjs.StartServer(natsjs.ServerConfig{StoreDir: tmpDir, Sync: natsjs.SyncGroup, MaxStore: cfg.NATS.MaxStoreBytes.Int64()})
	if err != nil {
		return err
	}
	shutdown := sync.OnceFunc(func() { srv.Shutdown(context.WithoutCancel(ctx)) })
	defer shutdown()
	l, err := natsjs.OpenLog(ctx, srv, natsjs.LogConfig{})
	if err != nil {
		return err
	}
	closeLog := sync.OnceFunc(l.Close)
	defer closeLog()
	if err := eventsImportInto(ctx, e, l, file, info.Messages, jsDir); err != nil {
		return fmt.Errorf("%w\nnothing was written to %s", err, jsDir)
	}
	closeLog()
	shutdown()
	if err := os.Rename(filepath.Join(tmpDir, "jetstream"), jsDir); err != nil {
		return fmt.Errorf("move the imported store into place at %s: %w (did a node start on this data dir during the import? it must stay stopped)", jsDir, err)
	}
	// The next start rebuilds the read models from the restored log, whatever they held (see checkLog). Writing
	// the marker also syncs storeDir, which makes the rename above durable.
	if err := writeFileSync(filepath.Join(storeDir, restoredMarker), fmt.Appendf(nil, "%s restored from %s (%d events)\n",
		time.Now().UTC().Format(time.RFC3339), file, info.Messages)); err != nil {
		return err
	}
	eventsNextSteps(e, f)
	return nil
}

func eventsVerifyFile(ctx context.Context, e env, file string) (natsjs.ExportInfo, error) {
	fh, err := os.Open(file)
	if err != nil {
		return natsjs.ExportInfo{}, err
	}
	defer fh.Close()
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		t := time.NewTicker(2 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				fmt.Fprintf(e.stderr, "verifying %s…\n", file)
			}
		}
	}()
	info, err := natsjs.VerifyExport(ctx, fh)
	if err != nil {
		return info, fmt.Errorf("%s is not a usable backup, nothing was imported: %w", file, err)
	}
	return info, nil
}

// eventsImportInto imports file (total events, 0 if unknown) into l and prints the summary.
func eventsImportInto(ctx context.Context, e env, l *natsjs.EventLog, file string, total uint64, where string) error {
	fh, err := os.Open(file)
	if err != nil {
		return err
	}
	defer fh.Close()
	p := newEventsProgress(e.stderr, "import")
	stats, err := l.Import(ctx, fh, func(done uint64) { p.report(done, total) })
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "imported %d events (sequences 1..%d) into %s\n", stats.Messages, stats.LastSeq, where)
	fmt.Fprintf(e.stdout, "  checksum: sha256 %s verified\n", stats.SHA256)
	fmt.Fprintf(e.stdout, "  took %s (%.0f events/s)\n", stats.Duration.Round(time.Millisecond), stats.PerSecond())
	return nil
}

func eventsNextSteps(e env, f adminFlags) {
	start, target := "anchorage serve -c "+f.cfgPath, "--config "+f.cfgPath
	if f.cfgPath == "" {
		start, target = "anchorage dev --data-dir "+f.dataDir, "--data-dir "+f.dataDir
	}
	fmt.Fprintf(e.stdout, `
next steps:
  1. Start the node on this data dir: %s
     It rebuilds the read models from the restored log first (whatever its PostgreSQL database held: events
     newer than the backup are gone), and each storage node's worker re-reads its placements from the log and
     pins what they say.
  2. Check the result: 'anchorage replay verify %s', 'anchorage admin %s org list', and the API's pin listings.
`, start, target, target)
}

// eventsSyncDir makes a rename in dir durable.
func eventsSyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}
