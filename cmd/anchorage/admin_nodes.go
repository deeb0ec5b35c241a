package main

import (
	"context"
	"errors"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/anchorage-pin/anchorage/adapters/natsjs"
	"github.com/anchorage-pin/anchorage/adapters/postgres"
	"github.com/anchorage-pin/anchorage/domain"
	"github.com/anchorage-pin/anchorage/events"
	"github.com/google/uuid"
	"github.com/spf13/cobra"
)

// nodeCmds are the placement operator commands: nodes, maintenance and rebalance.
func nodeCmds(e env, with func(adminFunc) runE) []*cobra.Command {
	node := &cobra.Command{Use: "node", Short: "Storage nodes: list, cordon, drain, uncordon"}
	node.AddCommand(&cobra.Command{
		Use: "list", Short: "List nodes with their state, placements, capacity and liveness", Args: cobra.NoArgs,
		RunE: with(func(ctx context.Context, a *admin, _ []string) error {
			nodes, err := postgres.NewSchedulerStore(a.pool).Nodes(ctx)
			if err != nil {
				return err
			}
			presence, err := natsjs.OpenPresence(ctx, a.elog.JetStream(), presenceBucket, presenceTTL, 1)
			if err != nil {
				return err
			}
			live, err := presence.Live(ctx)
			if err != nil {
				return err
			}
			w := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "NODE\tSTATE\tLIVE\tPLACED\tCAPACITY\tFREE\tADDRS")
			for _, n := range nodes {
				state := [...]string{"active", "cordoned", "drained"}[n.State]
				capacity := "unlimited"
				if n.Capacity > 0 {
					capacity = fmt.Sprint(n.Capacity)
				}
				l, free := "no", "-"
				if s, ok := live[n.ID]; ok {
					l, free = "yes", fmt.Sprintf("%.1f GiB", float64(s.FreeBytes)/(1<<30))
				}
				addr := ""
				if len(n.Addrs) > 0 {
					addr = n.Addrs[0]
					if len(n.Addrs) > 1 {
						addr += fmt.Sprintf(" (+%d)", len(n.Addrs)-1)
					}
				}
				fmt.Fprintf(w, "%s\t%s\t%s\t%d\t%s\t%s\t%s\n", n.ID, state, l, n.Placed, capacity, free, addr)
			}
			return w.Flush()
		}),
	})
	var reason string
	for _, op := range []struct {
		op    domain.NodeOp
		short string
	}{
		{domain.NodeCordon, "Stop placing new pins on a node (its pins stay)"},
		{domain.NodeDrain, "Move every pin off a node, then keep it empty"},
		{domain.NodeUncordon, "Let a cordoned or drained node take pins again"},
	} {
		c := &cobra.Command{
			Use: string(op.op) + " NODE", Short: op.short, Args: cobra.ExactArgs(1),
			RunE: with(func(ctx context.Context, a *admin, args []string) error {
				app, err := a.svc.OperateNode(ctx, a.meta, args[0], op.op, reason)
				if err != nil {
					return err
				}
				if err := a.waitProjected(ctx, postgres.ProjectionPins, app.Seq); err != nil {
					return err
				}
				fmt.Fprintf(e.stdout, "node %s: %s\n", args[0], op.op)
				return nil
			}),
		}
		if op.op != domain.NodeUncordon {
			c.Flags().StringVar(&reason, "reason", "", "why (recorded in the event log)")
		}
		node.AddCommand(c)
	}

	maint := &cobra.Command{Use: "maintenance", Short: "Pause or resume placement; the API keeps accepting pins"}
	var note string
	for _, on := range []bool{true, false} {
		name := map[bool]string{true: "on", false: "off"}[on]
		c := &cobra.Command{
			Use: name, Short: map[bool]string{true: "Pause placement (pins stay queued)", false: "Resume placement"}[on], Args: cobra.NoArgs,
			RunE: with(func(ctx context.Context, a *admin, _ []string) error {
				app, err := a.svc.SetMaintenance(ctx, a.meta, on, note)
				if err != nil {
					return err
				}
				if err := a.waitProjected(ctx, postgres.ProjectionPins, app.Seq); err != nil {
					return err
				}
				fmt.Fprintf(e.stdout, "maintenance %s\n", name)
				return nil
			}),
		}
		if on {
			c.Flags().StringVar(&note, "reason", "", "why (recorded in the event log and shown by the watchdog)")
		}
		maint.AddCommand(c)
	}

	var dryRun bool
	var tolerance, maxMoves int
	rebalance := &cobra.Command{
		Use:   "rebalance",
		Short: "Plan moves that empty drained nodes and reduce skew; apply them unless --dry-run",
		Args:  cobra.NoArgs,
		RunE: with(func(ctx context.Context, a *admin, _ []string) error {
			moves, err := planRebalance(ctx, a, tolerance, maxMoves)
			if err != nil {
				return err
			}
			w := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "ORG\tREQUEST\tFROM\tTO\tREASON")
			for _, m := range moves {
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", m.OrgID, m.RequestID, m.From, m.To, m.Reason)
			}
			if err := w.Flush(); err != nil {
				return err
			}
			if dryRun || len(moves) == 0 {
				fmt.Fprintf(e.stdout, "%d moves planned%s\n", len(moves), map[bool]string{true: " (dry run: nothing applied)", false: ""}[dryRun])
				return nil
			}
			applied, err := applyMoves(ctx, a, moves)
			fmt.Fprintf(e.stdout, "%d of %d moves applied; each old placement is released once its new one is pinned\n", applied, len(moves))
			return err
		}),
	}
	rebalance.Flags().BoolVar(&dryRun, "dry-run", false, "print the plan without applying it")
	rebalance.Flags().IntVar(&tolerance, "tolerance", 0, "placements a node may hold above the average before pins move off it")
	rebalance.Flags().IntVar(&maxMoves, "max-moves", 1000, "the most moves one rebalance makes")
	return []*cobra.Command{node, maint, rebalance}
}

// planRebalance plans moves from the read models and the nodes' presence.
func planRebalance(ctx context.Context, a *admin, tolerance, maxMoves int) ([]domain.Move, error) {
	store := postgres.NewSchedulerStore(a.pool)
	nodes, err := store.Nodes(ctx)
	if err != nil {
		return nil, err
	}
	presence, err := natsjs.OpenPresence(ctx, a.elog.JetStream(), presenceBucket, presenceTTL, 1)
	if err != nil {
		return nil, err
	}
	free, err := presence.LiveFree(ctx)
	if err != nil {
		return nil, err
	}
	placed, err := store.Placements(ctx)
	if err != nil {
		return nil, err
	}
	var cands []domain.Candidate
	drained := map[string]bool{}
	for _, n := range nodes {
		_, live := free[n.ID]
		cands = append(cands, domain.Candidate{NodeID: n.ID, Schedulable: n.State == 0, Live: live, Capacity: n.Capacity, Placed: n.Placed, FreeBytes: free[n.ID]})
		if n.State == 2 {
			drained[n.ID] = true
		}
	}
	ps := make([]domain.Placement, len(placed))
	for i, p := range placed {
		ps[i] = domain.Placement{OrgID: p.OrgID, RequestID: p.RequestID, NodeID: p.NodeID}
	}
	return domain.PlanRebalance(cands, drained, ps, tolerance, maxMoves), nil
}

// applyMoves writes each move as a placement on the target marked moved_from, in the current scheduler term,
// checked against the pin's latest placement message; the scheduler releases the old placement once the new one
// is pinned. A move whose pin changed meanwhile is skipped.
func applyMoves(ctx context.Context, a *admin, moves []domain.Move) (int, error) {
	st, err := postgres.NewSchedulerStore(a.pool).SchedState(ctx)
	if err != nil {
		return 0, err
	}
	applied := 0
	for _, m := range moves {
		cid, origins, err := postgres.NewSchedulerStore(a.pool).MoveSource(ctx, m.OrgID, m.RequestID, m.From)
		if err != nil {
			return applied, err
		}
		seq, err := a.elog.LastSeqFor(ctx, events.PlaceAnyNode(m.OrgID, m.RequestID))
		if err != nil {
			return applied, err
		}
		env, err := events.New(uuid.Must(uuid.NewV7()).String(), time.Now(), a.meta.Actor, a.meta.Corr,
			events.PinPlaced{OrgID: m.OrgID, RequestID: m.RequestID, NodeID: m.To, CID: cid, Origins: origins, Term: st.Term, MovedFrom: m.From})
		if err != nil {
			return applied, err
		}
		_, err = a.elog.Append(ctx, domain.Message{Subject: events.PlaceSubject(m.To, m.OrgID, m.RequestID), Expect: seq,
			ExpectSubject: events.PlaceAnyNode(m.OrgID, m.RequestID), Envelope: env})
		if errors.Is(err, domain.ErrConflict) {
			continue
		}
		if err != nil {
			return applied, err
		}
		applied++
	}
	return applied, nil
}
