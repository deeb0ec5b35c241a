package projections

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/anchorage-pin/anchorage/domain"
	"github.com/anchorage-pin/anchorage/events"
	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// PinRef names one pin request.
type PinRef struct{ OrgID, RequestID string }

// NodeRow is a registered node as the read model knows it.
type NodeRow struct {
	ID       string
	Addrs    []string
	Capacity int64
	// State is 0 active, 1 cordoned, 2 drained.
	State  int16
	Placed int64
}

// Node states.
const (
	NodeActive   int16 = 0
	NodeCordoned int16 = 1
	NodeDrained  int16 = 2
)

// PinToPlace is a live pin request with fewer placements than wanted.
type PinToPlace struct {
	PinRef
	CID         string
	Origins     []string
	PlacedNodes []string
	// Replaces is the request this one replaced, if any: its nodes are preferred.
	Replaces string
}

// PlacementRef is one live placement.
type PlacementRef struct {
	PinRef
	NodeID string
	CID    string
	// Replaced is true when the request was replaced (not removed).
	Replaced bool
	// Origins are the pin's origins (set for placements to move).
	Origins []string
}

// MoveOrigins is where the target of a move fetches from: the addresses of the node the placement leaves
// (it holds the blocks) first, then the pin's own origins.
func MoveOrigins(sourceAddrs, pinOrigins []string) []string {
	return domain.CleanOrigins(append(slices.Clone(sourceAddrs), pinOrigins...))
}

// SchedState is the scheduler's state as projected: the latest term and maintenance mode.
type SchedState struct {
	Term        uint64
	Maintenance bool
	Since       time.Time
	Note        string
}

// SchedulerStore is the read model the scheduler decides from.
type SchedulerStore interface {
	SchedState(ctx context.Context) (SchedState, error)
	Nodes(ctx context.Context) ([]NodeRow, error)
	Underplaced(ctx context.Context, replication, limit int) ([]PinToPlace, error)
	NodesOf(ctx context.Context, refs []PinRef) (map[PinRef][]string, error)
	Releasable(ctx context.Context, limit int) ([]PlacementRef, error)
	MovesDone(ctx context.Context, limit int) ([]PlacementRef, error)
	MovesFailed(ctx context.Context, limit int) ([]PlacementRef, error)
	OnDrained(ctx context.Context, nodes []string, limit int) ([]PlacementRef, error)
}

// SchedulerLog is the event log as the scheduler writes it.
type SchedulerLog interface {
	Append(ctx context.Context, msgs ...domain.Message) ([]uint64, error)
	AppendBulk(ctx context.Context, msgs []domain.Message) ([]uint64, error)
	LastSeqFor(ctx context.Context, filter string) (uint64, error)
}

// Lease is leadership held for a term.
type Lease interface {
	Term() uint64
	Lost() <-chan struct{}
	Release(ctx context.Context) error
}

// Campaigner hands out the leadership lease.
type Campaigner interface {
	Campaign(ctx context.Context, key, holder string, ttl time.Duration) (Lease, error)
}

// LiveNodes reports which nodes are alive (presence) and their free space.
type LiveNodes interface {
	LiveFree(ctx context.Context) (map[string]uint64, error)
}

// SchedulerConfig configures a Scheduler.
type SchedulerConfig struct {
	ID          string // this candidate's id (the node id)
	Replication int    // placements per pin (default 1)
	LeaseTTL    time.Duration
	Interval    time.Duration // fallback polling (default 250 ms)
	// RoundGap is the least time between the starts of two rounds woken by the read model (default 20 ms): the
	// decisions of a burst of requests are made together. A round that left work behind is followed at once.
	RoundGap   time.Duration
	Batch      int // decisions per round (default 512)
	Logger     *slog.Logger
	Registerer prometheus.Registerer
	// Wake, when set, signals that the read model changed (the pins projection advanced).
	Wake <-chan struct{}
	// Projected returns the pins projection's applied sequence, to know when own decisions are visible.
	Projected func() uint64
	Now       func() time.Time
	// MoveRetry is the wait before a failed move of a drained node's pin is tried again; it doubles with each
	// failure of the same pin, up to 10 minutes (default 30 s).
	MoveRetry time.Duration
}

// Scheduler places pins on nodes. One is active at a time across the cluster (leader lease); it writes every
// decision under the lease's term and an expected-sequence check on the pin's placement subjects, so a stale
// leader's write either fails or is ignored by every reader (the term fence).
type Scheduler struct {
	store  SchedulerStore
	log    SchedulerLog
	leases Campaigner
	live   LiveNodes
	cfg    SchedulerConfig
	lg     *slog.Logger

	placed, unplaced, conflicts prometheus.Counter
	leader                      prometheus.Gauge
	termG                       prometheus.Gauge

	// liveFree caches the presence answer for liveTTL: listing presence is a KV watch (a consumer created and
	// deleted on the server) while presence itself only changes every few seconds, and a busy leader runs a
	// round every few milliseconds.
	liveFree map[string]uint64
	liveAt   time.Time
}

// liveTTL is how long a presence answer is reused (presence entries are refreshed every 5 s, expire after 15 s).
const liveTTL = time.Second

// liveNodes returns the live nodes' free bytes, at most liveTTL old.
func (s *Scheduler) liveNodes(ctx context.Context) (map[string]uint64, error) {
	now := s.cfg.Now()
	if s.liveFree != nil && now.Sub(s.liveAt) < liveTTL && !now.Before(s.liveAt) {
		return s.liveFree, nil
	}
	free, err := s.live.LiveFree(ctx)
	if err != nil {
		return nil, err
	}
	if len(free) > 0 { // no live node yet: ask again next round, one may be starting
		s.liveFree, s.liveAt = free, now
	}
	return free, nil
}

// NewScheduler builds a scheduler.
func NewScheduler(store SchedulerStore, log SchedulerLog, leases Campaigner, live LiveNodes, cfg SchedulerConfig) *Scheduler {
	cfg.Replication = max(cfg.Replication, 1)
	cfg.LeaseTTL = cmp.Or(cfg.LeaseTTL, 5*time.Second)
	cfg.Interval = cmp.Or(cfg.Interval, 250*time.Millisecond)
	cfg.Batch = cmp.Or(cfg.Batch, 512)
	cfg.RoundGap = cmp.Or(cfg.RoundGap, 20*time.Millisecond)
	cfg.MoveRetry = cmp.Or(cfg.MoveRetry, 30*time.Second)
	cfg.Logger = cmp.Or(cfg.Logger, slog.New(slog.DiscardHandler))
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	reg := cfg.Registerer
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	f := promauto.With(reg)
	return &Scheduler{
		store: store, log: log, leases: leases, live: live, cfg: cfg, lg: cfg.Logger.With("component", "scheduler"),
		placed:    f.NewCounter(prometheus.CounterOpts{Name: "anchorage_scheduler_placements_total", Help: "Placements decided."}),
		unplaced:  f.NewCounter(prometheus.CounterOpts{Name: "anchorage_scheduler_unplacements_total", Help: "Placements released."}),
		conflicts: f.NewCounter(prometheus.CounterOpts{Name: "anchorage_scheduler_conflicts_total", Help: "Decisions refused by an expected-sequence check."}),
		leader:    f.NewGauge(prometheus.GaugeOpts{Name: "anchorage_scheduler_leader", Help: "1 while this node's scheduler leads."}),
		termG:     f.NewGauge(prometheus.GaugeOpts{Name: "anchorage_scheduler_term", Help: "The term this node's scheduler leads in (0: not leading)."}),
	}
}

// Run campaigns for leadership and, while leading, schedules; until ctx ends.
func (s *Scheduler) Run(ctx context.Context) {
	for ctx.Err() == nil {
		lease, err := s.leases.Campaign(ctx, "scheduler", s.cfg.ID, s.cfg.LeaseTTL)
		if err != nil {
			if ctx.Err() == nil {
				s.lg.Error("campaign failed; retrying", "err", err)
				sleep(ctx, time.Second)
			}
			continue
		}
		err = s.lead(ctx, lease)
		_ = lease.Release(context.WithoutCancel(ctx))
		s.leader.Set(0)
		s.termG.Set(0)
		if err != nil && ctx.Err() == nil {
			s.lg.Warn("stopped leading", "term", lease.Term(), "err", err)
			sleep(ctx, s.cfg.Interval)
		}
	}
}

// errDeposed means a newer term exists.
var errDeposed = errors.New("a newer scheduler term has started")

func (s *Scheduler) lead(ctx context.Context, lease Lease) error {
	term := lease.Term()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-lease.Lost():
			cancel()
		case <-ctx.Done():
		}
	}()
	// Record the term in the log, fenced on the last term record this leader has seen: if another leader wrote
	// one since, this fails and we step down.
	last, err := s.log.LastSeqFor(ctx, events.SchedTerm)
	if err != nil {
		return err
	}
	if err := s.appendOne(ctx, events.SchedTerm, last, events.SchedTermStarted{Term: term, SchedulerID: s.cfg.ID}); err != nil {
		return fmt.Errorf("start term %d: %w", term, err)
	}
	s.lg.Info("leading", "term", term)
	s.leader.Set(1)
	s.termG.Set(float64(term))
	r := &round{s: s, term: term, pending: map[PinRef]uint64{}, pendingOn: map[string]int64{}, retry: map[PinRef]moveRetry{}}
	tick := time.NewTicker(s.cfg.Interval)
	defer tick.Stop()
	for {
		started := time.Now()
		busy, err := r.run(ctx)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if errors.Is(err, errDeposed) {
			return err
		}
		if err != nil {
			s.lg.Error("scheduling round failed", "term", term, "err", err)
		}
		if busy {
			continue
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		case <-s.cfg.Wake:
			// The read model moves with every projected batch, which under load is every few milliseconds:
			// gather what arrives within RoundGap into one round (one set of queries, one batch of decisions).
			if !sleep(ctx, s.cfg.RoundGap-time.Since(started)) {
				return ctx.Err()
			}
		}
	}
}

func (s *Scheduler) envelope(e events.Event) (events.Envelope, error) {
	return events.New(uuid.Must(uuid.NewV7()).String(), s.cfg.Now(), "system:scheduler:"+s.cfg.ID, "", e)
}

func (s *Scheduler) appendOne(ctx context.Context, subject string, expect uint64, e events.Event) error {
	env, err := s.envelope(e)
	if err != nil {
		return err
	}
	_, err = s.log.Append(ctx, domain.Message{Subject: subject, Expect: expect, Envelope: env})
	return err
}

// round is one leader's working state within its term.
type round struct {
	s    *Scheduler
	term uint64
	// pending holds this leader's decisions the read model does not show yet (by stream sequence), so a pin is
	// not decided twice while its projection catches up; pendingOn counts them per node for capacities.
	mu        sync.Mutex
	pending   map[PinRef]uint64
	pendingOn map[string]int64
	// addrs are the registered nodes' addresses (this round's), retry the backoff of pins whose move failed.
	addrs map[string][]string
	retry map[PinRef]moveRetry
}

// moveRetry is when a pin whose move failed may be moved again.
type moveRetry struct {
	fails int
	at    time.Time
}

// run makes one round of decisions; busy reports that there may be more work right away.
func (r *round) run(ctx context.Context) (busy bool, err error) {
	s := r.s
	st, err := s.store.SchedState(ctx)
	if err != nil {
		return false, err
	}
	if st.Term > r.term {
		return false, errDeposed
	}
	r.forgetProjected()
	if st.Maintenance {
		return false, nil
	}
	nodes, err := s.store.Nodes(ctx)
	if err != nil {
		return false, err
	}
	free, err := s.liveNodes(ctx)
	if err != nil {
		return false, err
	}
	cands := make([]domain.Candidate, 0, len(nodes))
	var drained []string
	r.addrs = make(map[string][]string, len(nodes))
	for _, n := range nodes {
		r.addrs[n.ID] = n.Addrs
		_, live := free[n.ID]
		cands = append(cands, domain.Candidate{
			NodeID: n.ID, Schedulable: n.State == NodeActive, Live: live, Capacity: n.Capacity,
			Placed: n.Placed + r.pendingOn[n.ID], FreeBytes: free[n.ID],
		})
		if n.State == NodeDrained {
			drained = append(drained, n.ID)
		}
	}
	limit := s.cfg.Batch

	// 1. Release placements nothing needs any more: removed requests, and replaced ones whose successor is no
	// longer pending (so blocks the two share stay pinned throughout).
	rel, err := s.store.Releasable(ctx, limit)
	if err != nil {
		return false, err
	}
	n1, err := r.unplace(ctx, rel, func(p PlacementRef) string {
		if p.Replaced {
			return "replaced"
		}
		return "removed"
	})
	if err != nil {
		return false, err
	}
	// 2. Finish moves: the new placement is pinned, the old one can go.
	done, err := s.store.MovesDone(ctx, limit)
	if err != nil {
		return false, err
	}
	n2, err := r.unplace(ctx, done, func(PlacementRef) string { return "moved" })
	if err != nil {
		return false, err
	}
	for _, p := range done {
		delete(r.retry, p.PinRef) // moved at last: forget its failures
	}
	// Moves that failed (the target could not fetch the content) are released, to be tried again after a
	// backoff; meanwhile the placement on the drained node keeps the pin.
	failed, err := s.store.MovesFailed(ctx, limit)
	if err != nil {
		return false, err
	}
	nf, err := r.unplace(ctx, failed, func(PlacementRef) string { return "move failed" })
	if err != nil {
		return false, err
	}
	for _, p := range failed {
		r.moveFailed(p)
	}
	n2 += nf
	// 3. Drain: place each pin of a drained node elsewhere, marked as a move.
	n3 := 0
	if len(drained) > 0 {
		on, err := s.store.OnDrained(ctx, drained, limit)
		if err != nil {
			return false, err
		}
		if n3, err = r.move(ctx, on, cands); err != nil {
			return false, err
		}
	}
	// 4. Place pins with fewer placements than wanted.
	under, err := s.store.Underplaced(ctx, s.cfg.Replication, limit)
	if err != nil {
		return false, err
	}
	n4, err := r.place(ctx, under, cands)
	if err != nil {
		return false, err
	}
	return n1+n2+n3+n4 > 0 && (len(rel) == limit || len(done) == limit || len(under) == limit), nil
}

// moveFailed schedules the next try of a pin whose move failed.
func (r *round) moveFailed(p PlacementRef) {
	rt := r.retry[p.PinRef]
	rt.fails++
	wait := r.s.cfg.MoveRetry << min(rt.fails-1, 10)
	rt.at = r.s.cfg.Now().Add(min(wait, 10*time.Minute))
	r.retry[p.PinRef] = rt
	r.s.lg.Warn("moving a pin to another node failed; the drain tries again later", "org", p.OrgID, "request", p.RequestID,
		"target", p.NodeID, "cid", p.CID, "failures", rt.fails, "retryAt", rt.at)
}

// forgetProjected drops pending decisions the pins projection has applied.
func (r *round) forgetProjected() {
	if r.s.cfg.Projected == nil {
		return
	}
	applied := r.s.cfg.Projected()
	r.mu.Lock()
	defer r.mu.Unlock()
	for ref, seq := range r.pending {
		if seq <= applied {
			delete(r.pending, ref)
		}
	}
	if len(r.pending) == 0 {
		clear(r.pendingOn)
	}
}

func (r *round) isPending(ref PinRef) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	_, ok := r.pending[ref]
	return ok
}

func (r *round) note(ref PinRef, node string, seq uint64, delta int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if seq > r.pending[ref] {
		r.pending[ref] = seq
	}
	r.pendingOn[node] += delta
}

// place decides placements for under-placed pins: one message per new placement, each checked against every
// placement of its pin (place.*.<org>.<request>), all pipelined.
func (r *round) place(ctx context.Context, pins []PinToPlace, cands []domain.Candidate) (int, error) {
	s := r.s
	var prefer map[PinRef][]string
	var replaced []PinRef
	for _, p := range pins {
		if p.Replaces != "" {
			replaced = append(replaced, PinRef{p.OrgID, p.Replaces})
		}
	}
	if len(replaced) > 0 {
		var err error
		if prefer, err = s.store.NodesOf(ctx, replaced); err != nil {
			return 0, err
		}
	}
	var msgs []domain.Message
	var refs []PinRef
	var targets []string
	n := 0
	for _, p := range pins {
		if r.isPending(p.PinRef) {
			continue
		}
		want := s.cfg.Replication - len(p.PlacedNodes)
		nodes := domain.ChooseNodes(cands, want, prefer[PinRef{p.OrgID, p.Replaces}], p.PlacedNodes)
		if len(nodes) == 0 {
			continue // no room anywhere: stays queued
		}
		expect := uint64(0)
		if len(p.PlacedNodes) > 0 {
			seq, err := s.log.LastSeqFor(ctx, events.PlaceAnyNode(p.OrgID, p.RequestID))
			if err != nil {
				return 0, err
			}
			expect = seq
		}
		var batch []domain.Message
		for i, node := range nodes {
			env, err := s.envelope(events.PinPlaced{OrgID: p.OrgID, RequestID: p.RequestID, NodeID: node, CID: p.CID, Origins: p.Origins, Term: r.term})
			if err != nil {
				return 0, err
			}
			m := domain.Message{Subject: events.PlaceSubject(node, p.OrgID, p.RequestID), Expect: expect,
				ExpectSubject: events.PlaceAnyNode(p.OrgID, p.RequestID), Envelope: env}
			if i > 0 {
				// Another node's placement of the same pin, in the same atomic batch: the first message's check
				// covers the whole decision.
				m.ExpectSubject, m.NoExpect = "", true
			}
			batch = append(batch, m)
			for j := range cands {
				if cands[j].NodeID == node {
					cands[j].Placed++
				}
			}
		}
		if len(batch) == 1 {
			// Independent single placements are pipelined together below.
			msgs = append(msgs, batch[0])
			refs = append(refs, p.PinRef)
			targets = append(targets, nodes[0])
			continue
		}
		seqs, err := s.log.Append(ctx, batch...)
		if errors.Is(err, domain.ErrConflict) {
			s.conflicts.Inc()
			continue
		}
		if err != nil {
			return n, err
		}
		for i, node := range nodes {
			r.note(p.PinRef, node, seqs[i], 1)
		}
		s.placed.Add(float64(len(nodes)))
		n += len(nodes)
	}
	m, err := r.appendDecisions(ctx, msgs, refs, targets, 1, s.placed)
	return n + m, err
}

// move places pins of drained nodes on other nodes, marked MovedFrom; the old placement is released once the
// new one is pinned (MovesDone).
func (r *round) move(ctx context.Context, on []PlacementRef, cands []domain.Candidate) (int, error) {
	s := r.s
	refs0 := make([]PinRef, len(on))
	for i, p := range on {
		refs0[i] = p.PinRef
	}
	holders, err := s.store.NodesOf(ctx, refs0)
	if err != nil {
		return 0, err
	}
	var msgs []domain.Message
	var refs []PinRef
	var targets []string
	now := s.cfg.Now()
	for _, p := range on {
		if r.isPending(p.PinRef) {
			continue
		}
		if rt, ok := r.retry[p.PinRef]; ok && now.Before(rt.at) {
			continue
		}
		// Never onto a node that already holds the pin (replication > 1).
		nodes := domain.ChooseNodes(cands, 1, nil, append([]string{p.NodeID}, holders[p.PinRef]...))
		if len(nodes) == 0 {
			continue
		}
		seq, err := s.log.LastSeqFor(ctx, events.PlaceAnyNode(p.OrgID, p.RequestID))
		if err != nil {
			return 0, err
		}
		// The target fetches from the node it replaces (which holds the blocks) and the pin's origins: without
		// content routing nothing else would find them.
		env, err := s.envelope(events.PinPlaced{OrgID: p.OrgID, RequestID: p.RequestID, NodeID: nodes[0], CID: p.CID,
			Origins: MoveOrigins(r.addrs[p.NodeID], p.Origins), Term: r.term, MovedFrom: p.NodeID})
		if err != nil {
			return 0, err
		}
		msgs = append(msgs, domain.Message{Subject: events.PlaceSubject(nodes[0], p.OrgID, p.RequestID), Expect: seq,
			ExpectSubject: events.PlaceAnyNode(p.OrgID, p.RequestID), Envelope: env})
		refs = append(refs, p.PinRef)
		targets = append(targets, nodes[0])
		for j := range cands {
			if cands[j].NodeID == nodes[0] {
				cands[j].Placed++
			}
		}
	}
	return r.appendDecisions(ctx, msgs, refs, targets, 1, s.placed)
}

// unplace releases placements, each checked against the pin's latest placement message.
func (r *round) unplace(ctx context.Context, ps []PlacementRef, reason func(PlacementRef) string) (int, error) {
	s := r.s
	var msgs []domain.Message
	var refs []PinRef
	var nodes []string
	seen := map[PinRef]bool{}
	for _, p := range ps {
		// One decision per pin per round: two messages on one pin's subjects cannot both carry a check.
		if r.isPending(p.PinRef) || seen[p.PinRef] {
			continue
		}
		seen[p.PinRef] = true
		seq, err := s.log.LastSeqFor(ctx, events.PlaceAnyNode(p.OrgID, p.RequestID))
		if err != nil {
			return 0, err
		}
		env, err := s.envelope(events.PinUnplaced{OrgID: p.OrgID, RequestID: p.RequestID, NodeID: p.NodeID, CID: p.CID, Reason: reason(p), Term: r.term})
		if err != nil {
			return 0, err
		}
		msgs = append(msgs, domain.Message{Subject: events.PlaceSubject(p.NodeID, p.OrgID, p.RequestID), Expect: seq,
			ExpectSubject: events.PlaceAnyNode(p.OrgID, p.RequestID), Envelope: env})
		refs = append(refs, p.PinRef)
		nodes = append(nodes, p.NodeID)
	}
	return r.appendDecisions(ctx, msgs, refs, nodes, -1, s.unplaced)
}

// appendDecisions pipelines independent decisions; one refused by its expected-sequence check (the pin
// changed since it was read) is simply decided again next round.
func (r *round) appendDecisions(ctx context.Context, msgs []domain.Message, refs []PinRef, nodes []string, delta int64, c prometheus.Counter) (int, error) {
	if len(msgs) == 0 {
		return 0, nil
	}
	seqs, err := r.s.log.AppendBulk(ctx, msgs)
	n := 0
	for i, seq := range seqs {
		if seq == 0 {
			continue
		}
		n++
		r.note(refs[i], nodes[i], seq, delta)
	}
	c.Add(float64(n))
	if err != nil && !errors.Is(err, domain.ErrConflict) {
		return n, err
	}
	if err != nil {
		r.s.conflicts.Add(float64(len(msgs) - n))
	}
	return n, nil
}

// sleep waits d (nothing when d <= 0) and reports whether ctx is still live.
func sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
