package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/anchorage-pin/anchorage/adapters/kubo"
	"github.com/anchorage-pin/anchorage/adapters/kubo/kubod"
	"github.com/anchorage-pin/anchorage/adapters/postgres"
	"github.com/anchorage-pin/anchorage/adapters/postgres/pgcluster"
	"github.com/anchorage-pin/anchorage/adapters/tokens"
	"github.com/anchorage-pin/anchorage/cmd/anchorage/internal/config"
	"github.com/anchorage-pin/anchorage/domain"
	"github.com/jackc/pgx/v5"
	"github.com/spf13/cobra"
	"go.yaml.in/yaml/v3"
)

// Names of what `anchorage dev` creates.
const (
	devDatabase = "anchorage"
	devOwner    = "anchorage"
	devAPIRole  = "anchorage_api"
	devOrg      = "dev"
	devKeyID    = "dev-1"
)

type devOptions struct {
	dataDir string
	listen  string
	cfgPath string
	// acceptLogLoss starts on a damaged event log (see checkLog).
	acceptLogLoss bool
	// ready, when set, receives the running node (tests).
	ready func(*devNode)
}

// devNode is everything `anchorage dev` runs.
type devNode struct {
	app      *app
	pg       *pgcluster.Cluster
	kubo     *kubod.Daemon
	dataDir  string
	token    string
	endpoint string
}

func devCmd(e env) *cobra.Command {
	var o devOptions
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Run anchorage on embedded defaults: a managed PostgreSQL, embedded NATS and a local Kubo, all under --data-dir",
		Long: `Run a complete anchorage node on this machine with no setup: it starts its own PostgreSQL cluster
(initdb/postgres from PATH or /usr/lib/postgresql/*/bin), the embedded NATS JetStream event log and a loopback-only
Kubo daemon (built once from the Go module proxy and cached), creates a "dev" org and an API token, writes
DIR/dev.env and prints the 'ipfs pin remote service add' line to use it. Restarting keeps all data; Ctrl-C stops
everything it started. DIR/anchorage.yaml is (re)written at each start so that 'anchorage admin --data-dir DIR'
reaches this node.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runDev(cmd.Context(), e, o) },
	}
	cmd.Flags().StringVar(&o.dataDir, "data-dir", "", "where everything is kept (default ./.anchorage, or dataDir from config)")
	cmd.Flags().StringVar(&o.listen, "listen", "", "HTTP listen address (default 127.0.0.1:8080; 127.0.0.1:0 picks a free port)")
	cmd.Flags().StringVarP(&o.cfgPath, "config", "c", "", "optional configuration file; ANCHORAGE_* variables override it")
	cmd.Flags().BoolVar(&o.acceptLogLoss, "accept-log-loss", false, acceptLogLossHelp)
	return cmd
}

func runDev(ctx context.Context, e env, o devOptions) error {
	n, err := startDev(ctx, e, o)
	if err != nil {
		return err
	}
	defer n.stop(context.Background())
	if o.ready != nil {
		o.ready(n)
	}
	select {
	case <-ctx.Done():
		n.app.log.Info("interrupted; stopping everything dev started")
	case <-n.pg.Done():
		return fmt.Errorf("PostgreSQL exited unexpectedly: %v (log: %s)", n.pg.Wait(), n.pg.LogPath())
	case <-n.kubo.Done():
		return errors.New("the Kubo daemon exited unexpectedly")
	}
	return nil
}

func startDev(ctx context.Context, e env, o devOptions) (_ *devNode, err error) {
	cfg, err := config.Load(o.cfgPath, e.getenv)
	if err != nil {
		return nil, err
	}
	if o.dataDir != "" {
		cfg.DataDir = o.dataDir
	}
	if o.listen != "" {
		cfg.Server.Listen = o.listen
	}
	if cfg.NATS.Listen == "" {
		// Admin commands in other processes reach the node's log over loopback, with the credentials file.
		cfg.NATS.Listen = "127.0.0.1:0"
	}
	if cfg, err = cfg.Resolve(""); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.DataDir, 0o755); err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	log := newLogger(cfg.Log, e.stderr)
	n := &devNode{dataDir: cfg.DataDir}
	defer func() {
		if err != nil {
			n.stop(context.Background())
		}
	}()

	// Signing key: generated once.
	if len(cfg.Auth.APIToken.SigningKeys) == 0 {
		keyPath := filepath.Join(cfg.DataDir, "keys", devKeyID+".key")
		if _, err := os.Stat(keyPath); errors.Is(err, os.ErrNotExist) {
			if err := os.MkdirAll(filepath.Dir(keyPath), 0o700); err != nil {
				return nil, err
			}
			if err := tokens.GenerateKeyFile(keyPath); err != nil {
				return nil, err
			}
		}
		cfg.Auth.APIToken.SigningKeys = []config.SigningKey{{ID: devKeyID, Path: keyPath, Primary: true}}
	}
	if err := cfg.Validate(config.ModeDev); err != nil {
		return nil, fmt.Errorf("invalid configuration:\n%w", err)
	}

	ownerDSN, apiDSN := cfg.Postgres.URL, cfg.Postgres.APIURL
	if cfg.ManagedPostgres(config.ModeDev) {
		log.Info("starting managed PostgreSQL", "dir", cfg.PostgresDir())
		n.pg, err = pgcluster.Start(ctx, pgcluster.Config{Dir: cfg.PostgresDir(), Logger: log, Settings: pgcluster.ReadModelSettings()})
		if err != nil {
			return nil, err
		}
		if err := devDatabaseSetup(ctx, n.pg); err != nil {
			return nil, err
		}
		ownerDSN, apiDSN = n.pg.DSN(devDatabase, devOwner), n.pg.DSN(devDatabase, devAPIRole)
		// After a reboot the page cache is empty: have the kernel read the read models' indexes back meanwhile.
		go func(pg *pgcluster.Cluster) {
			if st, err := pg.PrewarmIndexes(ctx, devDatabase); err != nil {
				if ctx.Err() == nil {
					log.Warn("could not ask the kernel to read the read models' indexes ahead", "err", err)
				}
			} else {
				log.Info("asked the kernel to read the read models' indexes ahead", "files", st.Files, "bytes", st.Bytes)
			}
		}(n.pg)
	}

	var delegates func(context.Context) []string
	if cfg.Kubo.RPCURL == "" {
		log.Info("starting Kubo (built once from the Go module proxy on first use; this can take several minutes)")
		n.kubo, err = kubod.Start(ctx, kubod.Options{RepoDir: cfg.KuboDir(), Logger: log})
		if err != nil {
			return nil, err
		}
		cfg.Kubo.RPCURL = n.kubo.APIURL()
	}
	kc, err := kubo.New(cfg.Kubo.RPCURL, cfg.Kubo.Concurrency*2)
	if err != nil {
		return nil, err
	}
	delegates = kubo.NewDelegates(kc, 30*time.Second).Addrs

	n.app, err = startApp(ctx, appOptions{Cfg: cfg, OwnerDSN: ownerDSN, APIDSN: apiDSN, Delegates: delegates, Logger: log, Kubo: kc, AcceptLogLoss: o.acceptLogLoss})
	if err != nil {
		return nil, err
	}
	n.endpoint = n.app.URL()
	if err := writeDevConfig(cfg, ownerDSN, apiDSN); err != nil {
		return nil, err
	}
	if n.token, err = devToken(ctx, n.app); err != nil {
		return nil, err
	}
	envPath := filepath.Join(cfg.DataDir, "dev.env")
	body := fmt.Sprintf("ANCHORAGE_ENDPOINT=%s\nANCHORAGE_TOKEN=%s\nANCHORAGE_KUBO_API=%s\n", n.endpoint, n.token, cfg.Kubo.RPCURL)
	if err := os.WriteFile(envPath, []byte(body), 0o600); err != nil {
		return nil, fmt.Errorf("write %s: %w", envPath, err)
	}
	fmt.Fprintf(e.stdout, `anchorage is ready at %s (data in %s)
  credentials: %s
  use it from Kubo:
    ipfs pin remote service add anchorage %s %s
  operator commands: anchorage admin --data-dir %s ...
`, n.endpoint, cfg.DataDir, envPath, n.endpoint, n.token, cfg.DataDir)
	return n, nil
}

func (n *devNode) stop(ctx context.Context) {
	if n.app != nil {
		n.app.close(ctx)
	}
	if n.kubo != nil {
		_ = n.kubo.Stop(ctx)
	}
	if n.pg != nil {
		_ = n.pg.Stop(ctx)
	}
}

// devDatabaseSetup creates the roles and the database on the managed cluster (idempotent).
func devDatabaseSetup(ctx context.Context, c *pgcluster.Cluster) error {
	if err := postgres.EnsureRoles(ctx, c.Exec, devOwner, devAPIRole); err != nil {
		return err
	}
	var exists bool
	if err := c.QueryRow(ctx, []any{&exists}, "SELECT EXISTS (SELECT FROM pg_database WHERE datname = $1)", devDatabase); err != nil {
		return err
	}
	if !exists {
		if err := c.CreateDatabase(ctx, devDatabase, devOwner, ""); err != nil {
			return err
		}
	}
	return c.Exec(ctx, "ALTER DATABASE "+pgx.Identifier{devDatabase}.Sanitize()+" OWNER TO "+pgx.Identifier{devOwner}.Sanitize())
}

// devToken returns the token in dev.env if it still verifies, else creates the dev org if needed and mints a
// new token with devScopes.
func devToken(ctx context.Context, a *app) (string, error) {
	if f, err := os.Open(filepath.Join(a.cfg.DataDir, "dev.env")); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if tok, ok := strings.CutPrefix(sc.Text(), "ANCHORAGE_TOKEN="); ok {
				vctx, cancel := context.WithTimeout(ctx, 3*time.Second)
				_, verr := (&tokens.Verifier{Keys: a.keys, Registry: a.tokens}).Verify(vctx, tok)
				cancel()
				if verr == nil {
					f.Close()
					return tok, nil
				}
			}
		}
		f.Close()
	}
	meta := domain.Meta{Actor: "system:dev"}
	orgID := domain.OrgIDForSlug(devOrg)
	if _, _, err := a.svc.CreateOrg(ctx, meta, devOrg, "Development"); err != nil {
		var de *domain.Error
		if !errors.As(err, &de) || de.Reason != "ORG_EXISTS" {
			return "", err
		}
	}
	minted, _, err := a.svc.MintToken(ctx, meta, domain.MintToken{
		OrgID: orgID, Subject: "dev", Label: "anchorage dev", Scopes: devScopes, KeyID: a.keys.PrimaryID(),
	})
	if err != nil {
		return "", err
	}
	return a.keys.Sign(minted)
}

// devScopes are the dev token's: the pinning API and the dev org's own audit trail, not every org's.
var devScopes = []string{domain.ScopePinsRead, domain.ScopePinsWrite, domain.ScopeAuditRead}

// writeDevConfig writes DIR/anchorage.yaml: a complete config pointing at this dev node's resources, for
// `anchorage admin --data-dir DIR`.
func writeDevConfig(cfg config.Config, ownerDSN, apiDSN string) error {
	out := cfg
	out.Postgres.Managed = false
	out.Postgres.URL, out.Postgres.APIURL = ownerDSN, apiDSN
	b, err := yaml.Marshal(out)
	if err != nil {
		return err
	}
	header := "# Written by `anchorage dev` at every start, for `anchorage admin --data-dir`. Edits are overwritten.\n"
	return os.WriteFile(filepath.Join(cfg.DataDir, "anchorage.yaml"), append([]byte(header), b...), 0o600)
}

// kuboClient connects to a Kubo RPC API and returns the client with the delegates it provides.
func kuboClient(rpcURL string, conns int) (*kubo.Client, func(context.Context) []string, error) {
	c, err := kubo.New(rpcURL, conns)
	if err != nil {
		return nil, nil, err
	}
	return c, kubo.NewDelegates(c, 30*time.Second).Addrs, nil
}
