package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	osuser "os/user"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/anchorage-pin/anchorage/adapters/natsjs"
	"github.com/anchorage-pin/anchorage/adapters/postgres"
	"github.com/anchorage-pin/anchorage/adapters/tokens"
	"github.com/anchorage-pin/anchorage/cmd/anchorage/internal/config"
	"github.com/anchorage-pin/anchorage/domain"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/spf13/cobra"
)

// admin is an operator's connection to a running node: its event log over NATS (commands) and its read models
// as the owner role (listings).
type admin struct {
	cfg   config.Config
	nc    *nats.Conn
	elog  *natsjs.EventLog
	pool  *pgxpool.Pool
	reads *postgres.Admin
	svc   *domain.Service
	keys  *tokens.KeyRing
	meta  domain.Meta
}

type adminFlags struct {
	cfgPath string
	dataDir string
}

func (f *adminFlags) open(ctx context.Context, e env) (*admin, error) {
	path := f.cfgPath
	if path == "" && f.dataDir != "" {
		path = filepath.Join(f.dataDir, "anchorage.yaml")
		if _, err := os.Stat(path); err != nil {
			return nil, fmt.Errorf("%s not found: is `anchorage dev --data-dir %s` running (or did it ever run)?", path, f.dataDir)
		}
	}
	if path == "" {
		return nil, errors.New("say which node to administer: --config FILE (the node's configuration) or --data-dir DIR (an `anchorage dev` node)")
	}
	cfg, err := loadConfig(path, e.getenv, config.ModeServe)
	if err != nil {
		return nil, err
	}
	a := &admin{cfg: cfg}
	if a.elog, err = connectLog(ctx, cfg, "anchorage-admin"); err != nil {
		return nil, err
	}
	a.nc = a.elog.Conn()
	if a.pool, err = postgres.OpenOwnerPool(ctx, cfg.Postgres.URL, 2); err != nil {
		a.close()
		return nil, err
	}
	a.reads = postgres.NewAdmin(a.pool)
	specs := make([]tokens.KeySpec, len(cfg.Auth.APIToken.SigningKeys))
	for i, k := range cfg.Auth.APIToken.SigningKeys {
		specs[i] = tokens.KeySpec{ID: k.ID, Path: k.Path, Primary: k.Primary}
	}
	if a.keys, err = tokens.LoadKeys(specs); err != nil {
		a.close()
		return nil, err
	}
	actor := "admin:unknown"
	if u, err := osuser.Current(); err == nil {
		actor = "admin:" + u.Username
	}
	a.meta = domain.Meta{Actor: actor, Corr: uuid.NewString()}
	a.svc = &domain.Service{
		Log: a.elog,
		Env: domain.Env{
			Now:     time.Now,
			NewID:   func() string { return uuid.Must(uuid.NewV7()).String() },
			Created: domain.NewCreatedClock(time.Now).Next,
		},
		Tokens: domain.TokenPolicy{DefaultTTL: cfg.Auth.APIToken.DefaultTTL.D(), MaxTTL: cfg.Auth.APIToken.MaxTTL.D()},
	}
	return a, nil
}

func (a *admin) close() {
	if a.pool != nil {
		a.pool.Close()
	}
	if a.nc != nil {
		a.nc.Close()
	}
}

// waitProjected waits (a few seconds at most) until projection shows seq, so what the command prints is already
// visible to the API.
func (a *admin) waitProjected(ctx context.Context, projection string, seq uint64) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	return a.reads.WaitCheckpoint(ctx, projection, seq)
}

// natsURL finds the node's NATS listener: the configured address, or the one a node listening on port 0
// recorded when it started.
func natsURL(cfg config.Config) (string, error) {
	if cfg.NATS.Listen == "" {
		return "", errors.New("nats.listen is empty: the node serves its event log in-process only, so admin commands cannot reach it; set nats.listen (e.g. 127.0.0.1:4222)")
	}
	if !strings.HasSuffix(cfg.NATS.Listen, ":0") {
		return "nats://" + cfg.NATS.Listen, nil
	}
	b, err := os.ReadFile(filepath.Join(cfg.NATSStoreDir(), "client-url"))
	if err != nil {
		return "", fmt.Errorf("the node listens on a random port and has not recorded it (%w): is it running?", err)
	}
	return strings.TrimSpace(string(b)), nil
}

// connectLog opens a running node's event log over its NATS listener, with the node's credentials. The events
// commands use it alone (not admin.open): a backup must work while the read models are down.
func connectLog(ctx context.Context, cfg config.Config, name string) (*natsjs.EventLog, error) {
	url, err := natsURL(cfg)
	if err != nil {
		return nil, err
	}
	user, pass, err := natsCredentials(cfg.NATSCredentialsFile(), true)
	if err != nil {
		return nil, err
	}
	nc, err := nats.Connect(url, nats.UserInfo(user, pass), nats.Name(name), nats.Timeout(5*time.Second))
	if err != nil {
		return nil, fmt.Errorf("connect to the node's event log at %s: %w (is the node running?)", url, err)
	}
	l, err := natsjs.OpenRemoteLog(ctx, nc, natsjs.LogConfig{})
	if err != nil {
		nc.Close()
		return nil, err
	}
	return l, nil
}

// adminFunc is an operator command run against an open node; runE is what cobra runs.
type (
	adminFunc func(ctx context.Context, a *admin, args []string) error
	runE      func(*cobra.Command, []string) error
)

// run returns a command body that opens the node the flags name, runs fn and closes the node again.
func (f *adminFlags) run(e env, fn adminFunc) runE {
	return func(cmd *cobra.Command, args []string) error {
		a, err := f.open(cmd.Context(), e)
		if err != nil {
			return err
		}
		defer a.close()
		return fn(cmd.Context(), a, args)
	}
}

func adminCmd(e env) *cobra.Command {
	var f adminFlags
	cmd := &cobra.Command{Use: "admin", Short: "Operator commands: orgs, API tokens, signing keys"}
	cmd.PersistentFlags().StringVarP(&f.cfgPath, "config", "c", "", "the node's configuration file")
	cmd.PersistentFlags().StringVar(&f.dataDir, "data-dir", "", "data dir of an `anchorage dev` node (uses DIR/anchorage.yaml)")
	with := func(fn adminFunc) runE { return f.run(e, fn) }

	// org
	org := &cobra.Command{Use: "org", Short: "Manage orgs (tenants)"}
	var orgName string
	orgCreate := &cobra.Command{
		Use: "create SLUG", Short: "Create an org", Args: cobra.ExactArgs(1),
		RunE: with(func(ctx context.Context, a *admin, args []string) error {
			id, app, err := a.svc.CreateOrg(ctx, a.meta, args[0], orgName)
			if err != nil {
				return err
			}
			if err := a.waitProjected(ctx, postgres.ProjectionOrgs, app.Seq); err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "created org %s (id %s)\n", args[0], id)
			return nil
		}),
	}
	orgCreate.Flags().StringVar(&orgName, "name", "", "display name")
	orgList := &cobra.Command{
		Use: "list", Short: "List orgs", Args: cobra.NoArgs,
		RunE: with(func(ctx context.Context, a *admin, _ []string) error {
			orgs, err := a.reads.Orgs(ctx)
			if err != nil {
				return err
			}
			w := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "SLUG\tID\tPINS\tQUOTA\tCREATED")
			for _, o := range orgs {
				quota := "unlimited"
				if o.MaxPins > 0 {
					quota = fmt.Sprint(o.MaxPins)
				}
				fmt.Fprintf(w, "%s\t%s\t%d\t%s\t%s\n", o.Slug, o.ID, o.Pins, quota, o.Created.Format(time.RFC3339))
			}
			return w.Flush()
		}),
	}
	orgQuota := &cobra.Command{
		Use: "quota SLUG MAX_PINS", Short: "Set an org's pin quota (0 = unlimited)", Args: cobra.ExactArgs(2),
		RunE: with(func(ctx context.Context, a *admin, args []string) error {
			var n int64
			if _, err := fmt.Sscan(args[1], &n); err != nil {
				return fmt.Errorf("MAX_PINS %q is not a number", args[1])
			}
			app, err := a.svc.SetOrgQuota(ctx, a.meta, domain.OrgIDForSlug(args[0]), n)
			if err != nil {
				return err
			}
			if err := a.waitProjected(ctx, postgres.ProjectionOrgs, app.Seq); err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "org %s: quota %d\n", args[0], n)
			return nil
		}),
	}
	org.AddCommand(orgCreate, orgList, orgQuota)

	// token
	tok := &cobra.Command{Use: "token", Short: "Manage API tokens (per-device JWTs)"}
	var mintOrg, subject, label string
	var scopes []string
	var ttl time.Duration
	mint := &cobra.Command{
		Use: "mint", Short: "Mint an API token; the token is printed once, on stdout, and stored nowhere", Args: cobra.NoArgs,
		RunE: with(func(ctx context.Context, a *admin, _ []string) error {
			minted, app, err := a.svc.MintToken(ctx, a.meta, domain.MintToken{
				OrgID: domain.OrgIDForSlug(mintOrg), Subject: subject, Label: label, Scopes: scopes, TTL: ttl, KeyID: a.keys.PrimaryID(),
			})
			if err != nil {
				return err
			}
			jwt, err := a.keys.Sign(minted)
			if err != nil {
				return err
			}
			if err := a.waitProjected(ctx, postgres.ProjectionTokens, app.Seq); err != nil {
				return err
			}
			fmt.Fprintf(e.stderr, "minted token %s for %s in org %s, scopes %s, expires %s\n",
				minted.TokenID, minted.Subject, mintOrg, strings.Join(minted.Scopes, " "), minted.ExpiresAt.Format(time.RFC3339))
			fmt.Fprintln(e.stdout, jwt)
			return nil
		}),
	}
	mint.Flags().StringVar(&mintOrg, "org", "", "org slug (required)")
	mint.Flags().StringVar(&subject, "subject", "", "who or what the token is for: a user, device or CI job (required)")
	mint.Flags().StringVar(&label, "label", "", "free-text label")
	mint.Flags().StringSliceVar(&scopes, "scope", domain.DefaultScopes, "scopes (repeat or comma-separate): pins:read, pins:write, audit:read (this org's audit trail), sys:audit (every org's)")
	mint.Flags().DurationVar(&ttl, "ttl", 0, "lifetime (default auth.apiToken.defaultTTL, at most maxTTL)")
	_ = mint.MarkFlagRequired("org")
	_ = mint.MarkFlagRequired("subject")

	var listOrg string
	list := &cobra.Command{
		Use: "list", Short: "List an org's tokens (never their secrets)", Args: cobra.NoArgs,
		RunE: with(func(ctx context.Context, a *admin, _ []string) error {
			rows, err := a.reads.Tokens(ctx, domain.OrgIDForSlug(listOrg))
			if err != nil {
				return err
			}
			w := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "ID\tSUBJECT\tLABEL\tSCOPES\tKEY\tISSUED\tEXPIRES\tSTATE")
			now := time.Now()
			for _, t := range rows {
				state := "active"
				switch {
				case t.Revoked != nil:
					state = "revoked " + t.Revoked.Format(time.RFC3339)
				case now.After(t.Expires):
					state = "expired"
				}
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", t.ID, t.Subject, t.Label, strings.Join(t.Scopes, ","), t.KeyID,
					t.Issued.Format(time.RFC3339), t.Expires.Format(time.RFC3339), state)
			}
			return w.Flush()
		}),
	}
	list.Flags().StringVar(&listOrg, "org", "", "org slug (required)")
	_ = list.MarkFlagRequired("org")

	var revokeOrg, reason string
	revoke := &cobra.Command{
		Use: "revoke TOKEN_ID", Short: "Revoke an API token; it is rejected from then on", Args: cobra.ExactArgs(1),
		RunE: with(func(ctx context.Context, a *admin, args []string) error {
			app, err := a.svc.RevokeToken(ctx, a.meta, domain.OrgIDForSlug(revokeOrg), args[0], reason)
			if err != nil {
				return err
			}
			if err := a.waitProjected(ctx, postgres.ProjectionTokens, app.Seq); err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "revoked token %s\n", args[0])
			return nil
		}),
	}
	revoke.Flags().StringVar(&revokeOrg, "org", "", "org slug (required)")
	revoke.Flags().StringVar(&reason, "reason", "", "why (recorded in the event log)")
	_ = revoke.MarkFlagRequired("org")
	tok.AddCommand(mint, list, revoke)

	// key
	key := &cobra.Command{Use: "key", Short: "API token signing keys"}
	var out string
	gen := &cobra.Command{
		Use: "generate", Short: "Write a new random HS256 signing key file (mode 0600)", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := tokens.GenerateKeyFile(out); err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "wrote %s; add it to auth.apiToken.signingKeys as {id: <new id>, path: %s, primary: true}, and keep the old key (primary: false) until its tokens expire\n", out, out)
			return nil
		},
	}
	gen.Flags().StringVar(&out, "out", "", "path of the new key file (required; never overwritten)")
	_ = gen.MarkFlagRequired("out")
	key.AddCommand(gen)

	cmd.AddCommand(org, tok, key)
	cmd.AddCommand(nodeCmds(e, with)...)
	return cmd
}
