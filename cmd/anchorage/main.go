// Command anchorage is a self-hosted, multi-tenant IPFS pinning service speaking the IPFS Pinning Services API.
//
//	anchorage dev                 everything on embedded defaults (managed PostgreSQL, embedded NATS, local Kubo)
//	anchorage serve -c FILE       production entry point
//	anchorage admin ...           operator commands (orgs, tokens, keys)
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/anchorage-pin/anchorage/cmd/anchorage/internal/config"
	"github.com/spf13/cobra"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "anchorage:", err)
		os.Exit(1)
	}
}

// env is the process environment a command sees; tests substitute it.
type env struct {
	getenv func(string) string
	stdout io.Writer
	stderr io.Writer
}

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	e := env{getenv: getenv, stdout: stdout, stderr: stderr}
	root := &cobra.Command{
		Use:           "anchorage",
		Short:         "A self-hosted IPFS pinning service on an event-sourced ledger",
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       version,
	}
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.AddCommand(serveCmd(e), devCmd(e), adminCmd(e), replayCmd(e))
	root.AddCommand(eventsCmd(e), drCmd(e))
	addAuditEventsCmds(e, root) // events query, events asof
	if addr := getenv("ANCHORAGE_PPROF"); addr != "" {
		// Opt-in profiling on a separate listener (e.g. 127.0.0.1:6060), never on the API's.
		go func() { _ = http.ListenAndServe(addr, pprofMux()) }()
	}
	return root.ExecuteContext(ctx)
}

func pprofMux() *http.ServeMux {
	m := http.NewServeMux()
	m.HandleFunc("/debug/pprof/", pprof.Index)
	m.HandleFunc("/debug/pprof/profile", pprof.Profile)
	m.HandleFunc("/debug/pprof/trace", pprof.Trace)
	m.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	return m
}

// newLogger builds the JSON (or text) logger the config asks for, writing to w.
func newLogger(c config.Log, w io.Writer) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(c.Level))
	opts := &slog.HandlerOptions{Level: level}
	if strings.EqualFold(c.Format, "text") {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}

// loadConfig loads path (may be empty) with the environment, resolves paths and validates for mode.
func loadConfig(path string, getenv func(string) string, mode config.Mode) (config.Config, error) {
	cfg, err := config.Load(path, getenv)
	if err != nil {
		return cfg, err
	}
	if cfg, err = cfg.Resolve(""); err != nil {
		return cfg, err
	}
	if err := cfg.Validate(mode); err != nil {
		return cfg, fmt.Errorf("invalid configuration:\n%w", err)
	}
	return cfg, nil
}

// acceptLogLossHelp is the --accept-log-loss flag's help.
const acceptLogLossHelp = "start although the event log lost events (a damaged block file): the loss is logged and " +
	"recorded, and the read models are rebuilt from what the log still holds. Without it such a node refuses to start; " +
	"restoring a backup (anchorage events import) loses nothing"

func serveCmd(e env) *cobra.Command {
	var cfgPath string
	var acceptLogLoss bool
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run an anchorage node against an external PostgreSQL (the production entry point)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := loadConfig(cfgPath, e.getenv, config.ModeServe)
			if err != nil {
				return err
			}
			log := newLogger(cfg.Log, e.stderr)
			for _, w := range cfg.Warnings() {
				log.Warn(w)
			}
			log.Info("starting", "version", version, "config", cfg)
			if cfg.Kubo.RPCURL == "" {
				return errors.New("kubo.rpcURL is required with serve: anchorage needs the RPC address of its node's Kubo daemon")
			}
			kc, delegates, err := kuboClient(cfg.Kubo.RPCURL, cfg.Kubo.Concurrency*2)
			if err != nil {
				return err
			}
			a, err := startApp(cmd.Context(), appOptions{Cfg: cfg, OwnerDSN: cfg.Postgres.URL, APIDSN: cfg.Postgres.APIURL, Delegates: delegates, Logger: log, Kubo: kc, AcceptLogLoss: acceptLogLoss})
			if err != nil {
				return err
			}
			<-cmd.Context().Done()
			log.Info("shutting down")
			a.close(context.Background())
			return nil
		},
	}
	cmd.Flags().StringVarP(&cfgPath, "config", "c", "", "configuration file (YAML); ANCHORAGE_* variables override it")
	cmd.Flags().BoolVar(&acceptLogLoss, "accept-log-loss", false, acceptLogLossHelp)
	return cmd
}
