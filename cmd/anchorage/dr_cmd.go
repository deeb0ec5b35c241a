package main

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"github.com/anchorage-pin/anchorage/adapters/natsjs"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"
)

// drCmd is `anchorage dr`: a standby that mirrors a primary's event log on another machine, and its promotion
// (docs/backup.md).
func drCmd(e env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "dr",
		Short: "Disaster recovery: keep a mirror of a primary's event log on a standby machine, and promote it",
		Long: `A standby keeps a JetStream mirror of the primary's event log: every event with the primary's sequence and
timestamp, copied continuously across a leafnode connection. The primary needs nats.domain and
nats.leafnodes.listen; the standby needs the primary's leafnode credentials file. When the primary is lost,
stop the standby, 'dr promote' its store, and start anchorage with nats.storeDir pointing at it: the read
models are rebuilt from the log (or a PostgreSQL replica of the primary's database is used as it is).`,
	}
	var storeDir, primary, credsFile, primaryDomain, domain string
	var every time.Duration
	standby := &cobra.Command{
		Use:   "standby --store-dir DIR --primary nats-leaf://HOST:PORT --credentials FILE --primary-domain NAME",
		Short: "Run a standby: mirror the primary's event log into DIR until stopped, reporting the lag",
		Long: `Standby runs an embedded NATS server on DIR (no client listener) that dials the primary's leafnode listener
with the user:password in FILE (the primary's nats.leafnodes.credentialsFile, copied here), creates the
mirror the first time and then follows the primary, resuming after interruptions. Every --every it prints the
mirror's last sequence, its lag and how long ago it last heard from the primary. Stop it with Ctrl-C.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return drStandby(cmd.Context(), e, storeDir, primary, credsFile, primaryDomain, domain, every)
		},
	}
	standby.Flags().StringVar(&storeDir, "store-dir", "", "the standby's store `DIR` (required)")
	standby.Flags().StringVar(&primary, "primary", "", "the primary's leafnode listener, nats-leaf://`HOST:PORT` (required)")
	standby.Flags().StringVar(&credsFile, "credentials", "", "`FILE` holding the primary's leafnode user:password (required)")
	standby.Flags().StringVar(&primaryDomain, "primary-domain", "", "the primary's nats.domain (required)")
	standby.Flags().StringVar(&domain, "domain", "standby", "this standby's own JetStream domain (must differ from the primary's)")
	standby.Flags().DurationVar(&every, "every", 10*time.Second, "how often to report the mirror's state")
	for _, f := range []string{"store-dir", "primary", "credentials", "primary-domain"} {
		_ = standby.MarkFlagRequired(f)
	}

	var promoteDir string
	promote := &cobra.Command{
		Use:   "promote --store-dir DIR",
		Short: "Turn a stopped standby's mirror into the event log, so anchorage can start on it",
		Long: `Promote opens the stopped standby's store, stops the mirror from following the primary and makes it the
event log (it takes appends again, continuing at the next sequence). Then start anchorage with nats.storeDir
set to DIR. Never promote while the old primary still takes writes: two logs would diverge.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return drPromote(cmd.Context(), e, promoteDir)
		},
	}
	promote.Flags().StringVar(&promoteDir, "store-dir", "", "the standby's store `DIR` (required)")
	_ = promote.MarkFlagRequired("store-dir")
	cmd.AddCommand(standby, promote)
	return cmd
}

func drStandby(ctx context.Context, e env, storeDir, primary, credsFile, primaryDomain, domain string, every time.Duration) error {
	if domain == primaryDomain {
		return fmt.Errorf("--domain %q is the primary's domain too; give the standby its own, e.g. standby", domain)
	}
	if every <= 0 {
		return errors.New("--every must be greater than 0, e.g. 10s")
	}
	u, err := url.Parse(primary)
	if err != nil || u.Scheme != "nats-leaf" || u.Host == "" || u.User != nil {
		return fmt.Errorf("--primary %q: use the primary's leafnode listener as nats-leaf://HOST:PORT (credentials go in --credentials)", primary)
	}
	if _, err := os.Stat(credsFile); err != nil {
		return fmt.Errorf("--credentials: %w (copy the primary's nats.leafnodes.credentialsFile, by default DATADIR/nats/leafnode-credentials)", err)
	}
	user, pass, err := credentialsFile("--credentials", credsFile, "", true)
	if err != nil {
		return err
	}
	u.User = url.UserPassword(user, pass)
	srv, err := natsjs.StartServer(natsjs.ServerConfig{StoreDir: storeDir, Sync: natsjs.SyncAlways, ServerName: "anchorage-standby",
		Domain: domain, LeafRemotes: []string{u.String()}})
	if err != nil {
		return err
	}
	defer srv.Shutdown(context.WithoutCancel(ctx))
	nc, err := srv.Connect("anchorage-dr-standby")
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	st, err := natsjs.EnsureMirror(ctx, js, primaryDomain)
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "standby: mirroring the event log of domain %s from %s into %s\n", primaryDomain, u.Redacted(), filepath.Clean(storeDir))
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			fmt.Fprintln(e.stdout, "standby: stopped")
			return nil
		case <-t.C:
		}
		ms, err := natsjs.MirrorInfo(ctx, st)
		switch {
		case err != nil && ctx.Err() == nil:
			fmt.Fprintf(e.stdout, "standby: mirror state unavailable: %v\n", err)
		case err == nil:
			idle := "never heard from the primary"
			if ms.Idle >= 0 {
				idle = "last heard from the primary " + ms.Idle.Round(time.Millisecond).String() + " ago"
			}
			line := fmt.Sprintf("standby: last sequence %d, lag %d, %s", ms.LastSeq, ms.Lag, idle)
			if ms.Error != "" {
				line += ", error: " + ms.Error
			}
			fmt.Fprintln(e.stdout, line)
		}
	}
}

func drPromote(ctx context.Context, e env, storeDir string) error {
	if _, err := os.Stat(filepath.Join(storeDir, "jetstream")); err != nil {
		return fmt.Errorf("--store-dir %s holds no event store (%v); name the standby's store dir", storeDir, err)
	}
	srv, err := natsjs.StartServer(natsjs.ServerConfig{StoreDir: storeDir, Sync: natsjs.SyncAlways, ServerName: "anchorage-promote"})
	if err != nil {
		return err
	}
	defer srv.Shutdown(context.WithoutCancel(ctx))
	nc, err := srv.Connect("anchorage-dr-promote")
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	last, err := natsjs.PromoteMirror(ctx, js)
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "promoted: %s is now an event log with %d events; start anchorage with nats.storeDir: %s\n", storeDir, last, storeDir)
	return nil
}
