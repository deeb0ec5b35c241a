package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"

	httpapi "github.com/anchorage-pin/anchorage/adapters/http"
	"github.com/anchorage-pin/anchorage/adapters/postgres"
	"github.com/anchorage-pin/anchorage/cmd/anchorage/internal/config"
	"github.com/anchorage-pin/anchorage/domain"
	"github.com/anchorage-pin/anchorage/projections"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/spf13/cobra"
)

// addAuditEventsCmds adds the audit trail's operator commands to root's `events` command (creating it when root
// has none): `events query` and `events asof`. They read the audit projection in PostgreSQL as the owner role,
// so they see every org and the events of no org; they need neither the event log nor a running node.
func addAuditEventsCmds(e env, root *cobra.Command) {
	var parent *cobra.Command
	for _, c := range root.Commands() {
		if c.Name() == "events" {
			parent = c
		}
	}
	if parent == nil {
		parent = &cobra.Command{Use: "events", Short: "The event log and its audit trail"}
		parent.PersistentFlags().StringP("config", "c", "", "the node's configuration file")
		parent.PersistentFlags().String("data-dir", "", "data dir of an `anchorage dev` node (uses DIR/anchorage.yaml)")
		root.AddCommand(parent)
	}
	parent.AddCommand(eventsQueryCmd(e), eventsAsOfCmd(e))
}

// auditOpen connects to the read models of the node that --config or --data-dir (the events command's flags)
// names, as the owner role.
func auditOpen(cmd *cobra.Command, e env) (*pgxpool.Pool, error) {
	cfgPath, _ := cmd.Flags().GetString("config")
	dataDir, _ := cmd.Flags().GetString("data-dir")
	if cfgPath == "" && dataDir != "" {
		cfgPath = filepath.Join(dataDir, "anchorage.yaml")
		if _, err := os.Stat(cfgPath); err != nil {
			return nil, fmt.Errorf("%s not found: is `anchorage dev --data-dir %s` running (or did it ever run)?", cfgPath, dataDir)
		}
	}
	if cfgPath == "" {
		return nil, errors.New("say which node's audit trail to read: --config FILE (the node's configuration) or --data-dir DIR (an `anchorage dev` node)")
	}
	cfg, err := loadConfig(cfgPath, e.getenv, config.ModeServe)
	if err != nil {
		return nil, err
	}
	return postgres.OpenOwnerPool(cmd.Context(), cfg.Postgres.URL, 2)
}

// orgSlugs maps org ids to slugs, for listings.
func orgSlugs(ctx context.Context, pool *pgxpool.Pool) map[string]string {
	m := map[string]string{}
	orgs, err := postgres.NewAdmin(pool).Orgs(ctx)
	if err != nil {
		return m // listings then show ids
	}
	for _, o := range orgs {
		m[o.ID] = o.Slug
	}
	return m
}

// queryPageSize is how many events one read returns; --limit may ask for more (several reads).
const queryPageSize = 1000

func eventsQueryCmd(e env) *cobra.Command {
	var org, actor, typ, request, cid, since, until string
	var limit int
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "query",
		Short: "Who did what, when, with which token: the audit trail, newest first (every org unless --org)",
		Long: `query lists the events of the audit trail (one per event of the log, as recorded), newest first. Without --org
it shows every org's events and those of no org (nodes, scheduler). Filters combine: --actor (token:<id>,
admin:<user>, system:<component>, ...), --type (e.g. pin.removed), --requestid, --cid (matched by multihash, so
Qm… and bafy… spellings find each other), --since (inclusive) and --until (exclusive), RFC 3339 times.
--json prints one JSON object per line, as GET /v1/audit does.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if limit < 1 {
				return fmt.Errorf("--limit %d: it must be at least 1", limit)
			}
			q := map[string][]string{}
			for k, v := range map[string]string{"org": org, "actor": actor, "type": typ, "requestid": request, "cid": cid, "since": since, "until": until} {
				if v != "" {
					q[k] = []string{v}
				}
			}
			// The API's validation, as a sysadmin: the same filters mean the same here.
			f, err := httpapi.ParseAuditQuery(httpapi.Principal{Scopes: []string{domain.ScopeSysAudit}}, q)
			if err != nil {
				return err
			}
			pool, err := auditOpen(cmd, e)
			if err != nil {
				return err
			}
			defer pool.Close()
			r := postgres.NewAuditReader(pool, pool)
			slugs := orgSlugs(cmd.Context(), pool)
			out := newEventPrinter(e.stdout, asJSON, slugs)
			for left := limit; left > 0; {
				f.Limit = min(left, queryPageSize)
				evs, err := r.AuditEvents(cmd.Context(), f)
				if err != nil {
					return err
				}
				for _, ev := range evs {
					if err := out.print(ev); err != nil {
						return err
					}
				}
				if len(evs) < f.Limit {
					break
				}
				left -= len(evs)
				f.BeforeSeq = evs[len(evs)-1].Seq
			}
			return out.flush()
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&org, "org", "", "only this org (slug or id); default: every org and the events of no org")
	fl.StringVar(&actor, "actor", "", "only events caused by this actor, e.g. token:<id> or admin:alice")
	fl.StringVar(&typ, "type", "", "only events of this type, e.g. pin.requested, pin.removed, token.minted")
	fl.StringVar(&request, "requestid", "", "only events of this pin request (its pin and placement events)")
	fl.StringVar(&cid, "cid", "", "only events about this CID (any spelling of the same content)")
	fl.StringVar(&since, "since", "", "only events at or after this RFC 3339 time")
	fl.StringVar(&until, "until", "", "only events before this RFC 3339 time")
	fl.IntVar(&limit, "limit", httpapi.DefaultAuditLimit, "at most this many events")
	fl.BoolVar(&asJSON, "json", false, "print JSON lines instead of a table")
	return cmd
}

// eventPrinter writes events as a table or as JSON lines.
type eventPrinter struct {
	json  *json.Encoder
	tw    *tabwriter.Writer
	slugs map[string]string
}

func newEventPrinter(w io.Writer, asJSON bool, slugs map[string]string) *eventPrinter {
	if asJSON {
		enc := json.NewEncoder(w)
		enc.SetEscapeHTML(false)
		return &eventPrinter{json: enc}
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SEQ\tAT\tORG\tTYPE\tACTOR\tREQUEST\tCORR")
	return &eventPrinter{tw: tw, slugs: slugs}
}

func (p *eventPrinter) print(ev projections.AuditEvent) error {
	if p.json != nil {
		return p.json.Encode(httpapi.AuditEventOf(ev))
	}
	dash := func(s string) string {
		if s == "" {
			return "-"
		}
		return s
	}
	org := ev.OrgID
	if s, ok := p.slugs[org]; ok {
		org = s
	}
	_, err := fmt.Fprintf(p.tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\n", ev.Seq, ev.At.UTC().Format("2006-01-02T15:04:05.000000Z"), dash(org),
		ev.Type, dash(ev.Actor), dash(ev.RequestID), dash(ev.Corr))
	return err
}

func (p *eventPrinter) flush() error {
	if p.tw != nil {
		return p.tw.Flush()
	}
	return nil
}

// pinAsOfJSON is one pin of `events asof --json`.
type pinAsOfJSON struct {
	RequestID string            `json:"requestid"`
	Status    string            `json:"status"`
	Created   string            `json:"created"`
	CID       string            `json:"cid"`
	Name      string            `json:"name,omitempty"`
	Origins   []string          `json:"origins,omitempty"`
	Meta      map[string]string `json:"meta,omitempty"`
	Info      map[string]string `json:"info,omitempty"`
}

func eventsAsOfCmd(e env) *cobra.Command {
	var org, at, cid, name string
	var statuses []string
	var limit int
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "asof --org SLUG --at TIME",
		Short: "An org's pins as they stood at a time, folded from the audit trail",
		Long: `asof prints the pins an org had at --at (RFC 3339), newest first, with the status each had then: the fold of
the org's pin and placement events up to that time (GET /v1/pins?as_of=), not the current read model.
Every status is shown unless --status says otherwise.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			orgID, err := resolveOrg(org)
			if err != nil {
				return err
			}
			t, err := httpapi.ParseTimestamp(at)
			if err != nil {
				return fmt.Errorf("--at %q is not an RFC 3339 time (e.g. 2026-01-02T15:04:05Z)", at)
			}
			q := map[string][]string{"status": statuses}
			if len(statuses) == 0 {
				q["status"] = []string{httpapi.StatusAny}
			}
			if cid != "" {
				q["cid"] = []string{cid}
			}
			if name != "" {
				q["name"] = []string{name}
			}
			f, err := httpapi.ParseListQuery(orgID, q)
			if err != nil {
				return err
			}
			f.Limit = limit
			pool, err := auditOpen(cmd, e)
			if err != nil {
				return err
			}
			defer pool.Close()
			pins, err := postgres.NewAuditReader(pool, pool).PinsAsOf(cmd.Context(), orgID, t)
			if err != nil {
				return err
			}
			_, pins = projections.FilterPins(pins, f)
			if asJSON {
				enc := json.NewEncoder(e.stdout)
				enc.SetEscapeHTML(false)
				for _, p := range pins {
					if err := enc.Encode(pinAsOfJSON{RequestID: p.RequestID, Status: p.Status.String(), Created: httpapi.FormatCreated(p.Created),
						CID: p.CID, Name: p.Name, Origins: p.Origins, Meta: p.Meta, Info: p.Info}); err != nil {
						return err
					}
				}
				return nil
			}
			tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "REQUESTID\tSTATUS\tCREATED\tCID\tNAME")
			for _, p := range pins {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", p.RequestID, p.Status, httpapi.FormatCreated(p.Created), p.CID, p.Name)
			}
			return tw.Flush()
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&org, "org", "", "the org (slug or id; required)")
	fl.StringVar(&at, "at", "", "the time, RFC 3339 (required)")
	fl.StringSliceVar(&statuses, "status", nil, "only these statuses (queued, pinning, pinned, failed); default: all")
	fl.StringVar(&cid, "cid", "", "only pins of this CID")
	fl.StringVar(&name, "name", "", "only pins with exactly this name")
	fl.IntVar(&limit, "limit", 0, "at most this many pins (0: all)")
	fl.BoolVar(&asJSON, "json", false, "print JSON lines instead of a table")
	_ = cmd.MarkFlagRequired("org")
	_ = cmd.MarkFlagRequired("at")
	return cmd
}

// resolveOrg resolves an org slug or id.
func resolveOrg(v string) (string, error) {
	if domain.ValidID(v) {
		return strings.ToLower(v), nil
	}
	if err := domain.ValidateSlug(v); err != nil {
		return "", fmt.Errorf("--org %q is neither an org slug nor an org id", v)
	}
	return domain.OrgIDForSlug(v), nil
}
