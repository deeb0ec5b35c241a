package domain_test

import (
	"cmp"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/anchorage-pin/anchorage/domain"
)

// cand is a schedulable, live candidate.
func cand(id string, capacity, placed int64, free uint64) domain.Candidate {
	return domain.Candidate{NodeID: id, Schedulable: true, Live: true, Capacity: capacity, Placed: placed, FreeBytes: free}
}

func TestChooseNodes(t *testing.T) {
	t.Parallel()
	var (
		a        = cand("a", 0, 10, 500)
		b        = cand("b", 0, 3, 900)
		c        = cand("c", 100, 99, 900) // one slot left
		full     = cand("full", 5, 5, 9999)
		over     = cand("over", 5, 6, 9999)
		dead     = domain.Candidate{NodeID: "dead", Schedulable: true, Capacity: 0, FreeBytes: 9999}
		cordoned = domain.Candidate{NodeID: "cordoned", Live: true, FreeBytes: 9999}
	)
	for _, tc := range []struct {
		name            string
		cands           []domain.Candidate
		n               int
		prefer, exclude []string
		want            []string
	}{
		{name: "no candidates", n: 3},
		{name: "n is 0", cands: []domain.Candidate{a, b}, n: 0},
		{name: "n is negative", cands: []domain.Candidate{a, b}, n: -1},
		{name: "most free bytes first", cands: []domain.Candidate{a, b}, n: 2, want: []string{"b", "a"}},
		{name: "free bytes tie: fewest placed", cands: []domain.Candidate{c, b}, n: 2, want: []string{"b", "c"}},
		{name: "all ties: node id", cands: []domain.Candidate{cand("y", 0, 1, 1), cand("x", 0, 1, 1), cand("z", 0, 1, 1)}, n: 3,
			want: []string{"x", "y", "z"}},
		{name: "fewer than n qualify", cands: []domain.Candidate{a, b, full, dead, cordoned}, n: 5, want: []string{"b", "a"}},
		{name: "only n", cands: []domain.Candidate{a, b, c}, n: 1, want: []string{"b"}},
		{name: "full, over capacity, dead and unschedulable nodes never", cands: []domain.Candidate{full, over, dead, cordoned}, n: 4},
		{name: "a node with one slot left", cands: []domain.Candidate{c}, n: 1, want: []string{"c"}},
		{name: "excluded nodes never", cands: []domain.Candidate{a, b, c}, n: 3, exclude: []string{"b", "c"}, want: []string{"a"}},
		{name: "preferred first", cands: []domain.Candidate{a, b, c}, n: 3, prefer: []string{"a"}, want: []string{"a", "b", "c"}},
		{name: "preferred among themselves by the usual order", cands: []domain.Candidate{a, b, c}, n: 3, prefer: []string{"a", "c"},
			want: []string{"c", "a", "b"}},
		{name: "preferred but excluded", cands: []domain.Candidate{a, b}, n: 2, prefer: []string{"a"}, exclude: []string{"a"}, want: []string{"b"}},
		{name: "preferred but full", cands: []domain.Candidate{a, full}, n: 2, prefer: []string{"full"}, want: []string{"a"}},
		{name: "preferred but unknown", cands: []domain.Candidate{a, b}, n: 1, prefer: []string{"gone"}, want: []string{"b"}},
		{name: "a node listed twice counts once, as first listed", cands: []domain.Candidate{a, cand("a", 0, 0, 10000), b}, n: 3,
			want: []string{"b", "a"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			assert.Equal(t, tc.want, domain.ChooseNodes(tc.cands, tc.n, tc.prefer, tc.exclude))
		})
	}
}

// chooseKey is ChooseNodes' documented order.
func chooseKey(prefer []string) func(a, b domain.Candidate) int {
	pref := func(c domain.Candidate) int {
		if slices.Contains(prefer, c.NodeID) {
			return 0
		}
		return 1
	}
	return func(a, b domain.Candidate) int {
		return cmp.Or(cmp.Compare(pref(a), pref(b)), cmp.Compare(b.FreeBytes, a.FreeBytes), cmp.Compare(a.Placed, b.Placed), cmp.Compare(a.NodeID, b.NodeID))
	}
}

func TestChooseNodesProperties(t *testing.T) {
	t.Parallel()
	for seed := range uint64(2000) {
		r := rand.New(rand.NewPCG(seed, 1))
		var cands []domain.Candidate
		var ids []string
		for i := range r.IntN(12) {
			id := fmt.Sprintf("n%d", i)
			ids = append(ids, id)
			c := domain.Candidate{NodeID: id, Schedulable: r.IntN(5) > 0, Live: r.IntN(6) > 0,
				Placed: r.Int64N(8), FreeBytes: uint64(r.IntN(4)) << 30}
			if r.IntN(2) == 0 {
				c.Capacity = r.Int64N(8) + 1
			}
			cands = append(cands, c)
		}
		pick := func() []string {
			var out []string
			for _, id := range ids {
				if r.IntN(4) == 0 {
					out = append(out, id)
				}
			}
			return out
		}
		prefer, exclude := pick(), pick()
		n := r.IntN(8) - 1
		got := domain.ChooseNodes(cands, n, prefer, exclude)

		var qualify []domain.Candidate
		for _, c := range cands {
			if c.Schedulable && c.Live && (c.Capacity == 0 || c.Placed < c.Capacity) && !slices.Contains(exclude, c.NodeID) {
				qualify = append(qualify, c)
			}
		}
		slices.SortFunc(qualify, chooseKey(prefer))
		var want []string
		for _, c := range qualify[:max(0, min(n, len(qualify)))] {
			want = append(want, c.NodeID)
		}
		require.Equal(t, want, got, "seed %d: cands %+v n %d prefer %v exclude %v", seed, cands, n, prefer, exclude)
		require.LessOrEqual(t, len(got), max(n, 0))
		for i, id := range got {
			require.NotContains(t, got[:i], id, "seed %d: %s chosen twice", seed, id)
			require.NotContains(t, exclude, id, "seed %d", seed)
		}
		// The order of the candidates does not matter.
		r.Shuffle(len(cands), func(i, j int) { cands[i], cands[j] = cands[j], cands[i] })
		require.Equal(t, got, domain.ChooseNodes(cands, n, prefer, exclude), "seed %d: shuffled", seed)
	}
}

func pl(req, node string) domain.Placement {
	return domain.Placement{OrgID: orgID, RequestID: req, NodeID: node}
}

func mv(req, from, to, reason string) domain.Move {
	return domain.Move{OrgID: orgID, RequestID: req, From: from, To: to, Reason: reason}
}

// onNode lists n placements r<first>.. r<first+n-1> on node.
func onNode(node string, first, n int) []domain.Placement {
	var out []domain.Placement
	for i := first; i < first+n; i++ {
		out = append(out, pl(fmt.Sprintf("r%03d", i), node))
	}
	return out
}

func TestPlanRebalance(t *testing.T) {
	t.Parallel()
	const (
		D = domain.MoveDrained
		R = domain.MoveRebalanced
	)
	drainedNode := domain.Candidate{NodeID: "d", Live: true, Placed: 3}
	cordonedNode := domain.Candidate{NodeID: "k", Live: true, Placed: 9}
	for _, tc := range []struct {
		name       string
		cands      []domain.Candidate
		drained    map[string]bool
		placements []domain.Placement
		tolerance  int
		maxMoves   int
		want       []domain.Move
	}{
		{name: "nothing", maxMoves: 10},
		{name: "balanced", cands: []domain.Candidate{cand("a", 0, 2, 0), cand("b", 0, 2, 0)},
			placements: append(onNode("a", 0, 2), onNode("b", 2, 2)...), maxMoves: 10},
		{name: "maxMoves 0", cands: []domain.Candidate{drainedNode, cand("a", 0, 0, 0)}, drained: map[string]bool{"d": true},
			placements: onNode("d", 0, 3), maxMoves: 0},
		{name: "drain spreads over the least loaded", cands: []domain.Candidate{drainedNode, cand("a", 0, 1, 0), cand("b", 0, 0, 0)},
			drained: map[string]bool{"d": true}, placements: append(onNode("d", 0, 3), onNode("a", 10, 1)...), maxMoves: 10,
			want: []domain.Move{mv("r000", "d", "b", D), mv("r001", "d", "a", D), mv("r002", "d", "b", D)}},
		{name: "drain: free bytes break load ties", cands: []domain.Candidate{drainedNode, cand("a", 0, 0, 1), cand("b", 0, 0, 2)},
			drained: map[string]bool{"d": true}, placements: onNode("d", 0, 3), maxMoves: 10,
			want: []domain.Move{mv("r000", "d", "b", D), mv("r001", "d", "a", D), mv("r002", "d", "b", D)}},
		{name: "drain never to a node holding the pin", cands: []domain.Candidate{drainedNode, cand("a", 0, 1, 0), cand("b", 0, 5, 0)},
			drained:    map[string]bool{"d": true},
			placements: []domain.Placement{pl("r000", "d"), pl("r000", "a"), pl("r001", "b"), pl("r001", "d")}, maxMoves: 10,
			want: []domain.Move{mv("r000", "d", "b", D), mv("r001", "d", "a", D)}},
		{name: "drain never to a full, cordoned or dead node", cands: []domain.Candidate{drainedNode, cand("full", 2, 2, 0), cordonedNode,
			{NodeID: "dead", Schedulable: true}}, drained: map[string]bool{"d": true}, placements: onNode("d", 0, 3), maxMoves: 10},
		{name: "drain never to another drained node, even one claiming to be schedulable",
			cands:   []domain.Candidate{drainedNode, cand("d2", 0, 0, 0), cand("a", 1, 0, 0)},
			drained: map[string]bool{"d": true, "d2": true}, placements: onNode("d", 0, 3), maxMoves: 10,
			want: []domain.Move{mv("r000", "d", "a", D)}},
		{name: "drain fills capacity, the rest waits", cands: []domain.Candidate{drainedNode, cand("a", 3, 2, 0), cand("b", 2, 0, 0)},
			drained: map[string]bool{"d": true}, placements: append(onNode("d", 0, 4), onNode("a", 10, 2)...), maxMoves: 10,
			// b (0 of 2), b (1 of 2), a (2 of 3); then both are full.
			want: []domain.Move{mv("r000", "d", "b", D), mv("r001", "d", "b", D), mv("r002", "d", "a", D)}},
		{name: "drain revises a greedy choice that blocks a later placement",
			// r000 would go to a (least loaded by node id); r001 can only go to a (b holds it); a has one slot.
			cands: []domain.Candidate{drainedNode, cand("a", 5, 4, 0), cand("b", 6, 5, 0)}, drained: map[string]bool{"d": true},
			placements: append([]domain.Placement{pl("r000", "d"), pl("r001", "d"), pl("r001", "b")}, append(onNode("a", 10, 4), onNode("b", 20, 4)...)...),
			maxMoves:   10,
			want:       []domain.Move{mv("r000", "d", "b", D), mv("r001", "d", "a", D)}},
		{name: "one pin on two drained nodes goes to two nodes",
			cands:   []domain.Candidate{drainedNode, {NodeID: "e", Placed: 1}, cand("a", 0, 0, 0), cand("b", 0, 5, 0)},
			drained: map[string]bool{"d": true, "e": true}, placements: []domain.Placement{pl("r000", "d"), pl("r000", "e")}, maxMoves: 10,
			want: []domain.Move{mv("r000", "d", "a", D), mv("r000", "e", "b", D)}},
		{name: "a drained node missing from the candidates is drained too", cands: []domain.Candidate{cand("a", 0, 0, 0)},
			drained: map[string]bool{"gone": true}, placements: onNode("gone", 0, 2), maxMoves: 10,
			want: []domain.Move{mv("r000", "gone", "a", D), mv("r001", "gone", "a", D)}},
		{name: "maxMoves cuts a drain short", cands: []domain.Candidate{drainedNode, cand("a", 0, 0, 0)},
			drained: map[string]bool{"d": true}, placements: onNode("d", 0, 3), maxMoves: 2,
			want: []domain.Move{mv("r000", "d", "a", D), mv("r001", "d", "a", D)}},
		{name: "duplicate placements move once", cands: []domain.Candidate{drainedNode, cand("a", 0, 0, 0)},
			drained: map[string]bool{"d": true}, placements: []domain.Placement{pl("r000", "d"), pl("r000", "d")}, maxMoves: 10,
			want: []domain.Move{mv("r000", "d", "a", D)}},

		{name: "skew: most loaded to least loaded", cands: []domain.Candidate{cand("a", 0, 10, 0), cand("b", 0, 0, 0), cand("c", 0, 5, 0)},
			placements: append(onNode("a", 0, 10), onNode("c", 10, 5)...), maxMoves: 10,
			want: []domain.Move{mv("r009", "a", "b", R), mv("r008", "a", "b", R), mv("r007", "a", "b", R), mv("r006", "a", "b", R), mv("r005", "a", "b", R)}},
		{name: "skew within tolerance", cands: []domain.Candidate{cand("a", 0, 10, 0), cand("b", 0, 0, 0), cand("c", 0, 5, 0)},
			placements: append(onNode("a", 0, 10), onNode("c", 10, 5)...), tolerance: 2, maxMoves: 10,
			want: []domain.Move{mv("r009", "a", "b", R), mv("r008", "a", "b", R), mv("r007", "a", "b", R)}},
		{name: "skew: one node above ceil(average), nobody under floor(average)",
			cands:      []domain.Candidate{cand("a", 0, 8, 0), cand("b", 0, 5, 0), cand("c", 0, 5, 0), cand("d", 0, 5, 0)},
			placements: append(append(append(onNode("a", 0, 8), onNode("b", 10, 5)...), onNode("c", 20, 5)...), onNode("d", 30, 5)...), maxMoves: 10},
		{name: "skew: nobody above ceil(average)", cands: []domain.Candidate{cand("a", 0, 4, 0), cand("b", 0, 4, 0), cand("c", 0, 4, 0), cand("d", 0, 1, 0)},
			placements: append(append(append(onNode("a", 0, 4), onNode("b", 10, 4)...), onNode("c", 20, 4)...), onNode("d", 30, 1)...), maxMoves: 10},
		{name: "skew: to every node under floor(average)", cands: []domain.Candidate{cand("a", 0, 7, 0), cand("b", 0, 4, 0), cand("c", 0, 4, 0)},
			placements: append(append(onNode("a", 0, 7), onNode("b", 10, 4)...), onNode("c", 20, 4)...), maxMoves: 10,
			want: []domain.Move{mv("r006", "a", "b", R), mv("r005", "a", "c", R)}},
		{name: "skew: the target already holds some pins", cands: []domain.Candidate{cand("a", 0, 4, 0), cand("b", 0, 2, 0)},
			placements: []domain.Placement{pl("r000", "a"), pl("r001", "a"), pl("r002", "a"), pl("r003", "a"), pl("r003", "b"), pl("r002", "b")},
			maxMoves:   10, want: []domain.Move{mv("r001", "a", "b", R)}},
		{name: "skew: full, cordoned and dead nodes take nothing and count for nothing",
			cands: []domain.Candidate{cand("a", 0, 6, 0), cand("full", 1, 1, 0), cand("b", 0, 0, 0), cordonedNode,
				{NodeID: "dead", Schedulable: true}},
			placements: append(append(onNode("a", 0, 6), onNode("full", 10, 1)...), onNode("k", 20, 9)...), maxMoves: 10,
			// The average of a, full and b is 7/3: floor 2, ceil 3. b takes 2, then a (4) has nowhere to go.
			want: []domain.Move{mv("r005", "a", "b", R), mv("r004", "a", "b", R)}},
		{name: "skew: capacity bounds the target", cands: []domain.Candidate{cand("a", 0, 8, 0), cand("b", 2, 0, 0), cand("c", 0, 4, 0)},
			placements: append(onNode("a", 0, 8), onNode("c", 10, 4)...), maxMoves: 10,
			want: []domain.Move{mv("r007", "a", "b", R), mv("r006", "a", "b", R)}},
		{name: "drain then skew, never moving a pin twice",
			cands:   []domain.Candidate{{NodeID: "d", Live: true, Placed: 4}, cand("a", 0, 0, 0), cand("b", 0, 0, 0), cand("c", 0, 0, 0)},
			drained: map[string]bool{"d": true}, placements: onNode("d", 0, 4), maxMoves: 10,
			// a gets 2 (r000, r003), b and c one each; a is above ceil(4/3)=2? no: 2 is not above 2.
			want: []domain.Move{mv("r000", "d", "a", D), mv("r001", "d", "b", D), mv("r002", "d", "c", D), mv("r003", "d", "a", D)}},
		{name: "drain then skew", cands: []domain.Candidate{{NodeID: "d", Live: true, Placed: 1}, cand("a", 0, 6, 0), cand("b", 0, 0, 0)},
			drained: map[string]bool{"d": true}, placements: append(onNode("d", 0, 1), onNode("a", 10, 6)...), maxMoves: 10,
			want: []domain.Move{mv("r000", "d", "b", D), mv("r015", "a", "b", R), mv("r014", "a", "b", R)}},
		{name: "maxMoves bounds the skew phase", cands: []domain.Candidate{cand("a", 0, 10, 0), cand("b", 0, 0, 0)},
			placements: onNode("a", 0, 10), maxMoves: 2,
			want: []domain.Move{mv("r009", "a", "b", R), mv("r008", "a", "b", R)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got := domain.PlanRebalance(tc.cands, tc.drained, tc.placements, tc.tolerance, tc.maxMoves)
			assert.Equal(t, tc.want, got)
			checkPlan(t, planInput{tc.cands, tc.drained, tc.placements, tc.tolerance, tc.maxMoves}, got)
		})
	}
}

type planInput struct {
	cands      []domain.Candidate
	drained    map[string]bool
	placements []domain.Placement
	tolerance  int
	maxMoves   int
}

type pinID struct{ org, req string }

// planState is the cluster as a plan leaves it: loads and holders.
type planState struct {
	in    planInput
	cands map[string]domain.Candidate
	load  map[string]int64
	holds map[pinID]map[string]bool
	// movable: original placements not yet moved away.
	movable map[domain.Placement]bool
}

func newPlanState(in planInput) *planState {
	s := &planState{in: in, cands: map[string]domain.Candidate{}, load: map[string]int64{}, holds: map[pinID]map[string]bool{},
		movable: map[domain.Placement]bool{}}
	for _, c := range in.cands {
		s.cands[c.NodeID] = c
		s.load[c.NodeID] = c.Placed
	}
	for _, p := range in.placements {
		k := pinID{p.OrgID, p.RequestID}
		if s.holds[k] == nil {
			s.holds[k] = map[string]bool{}
		}
		s.holds[k][p.NodeID] = true
		s.movable[p] = true
	}
	return s
}

// balanced reports whether node is one of the nodes the plan balances.
func (s *planState) balanced(node string) bool {
	c, ok := s.cands[node]
	return ok && c.Schedulable && c.Live && !s.in.drained[node]
}

// spread is max-min load over the balanced nodes.
func (s *planState) spread() int64 {
	var lo, hi int64
	first := true
	for id := range s.cands {
		if !s.balanced(id) {
			continue
		}
		l := s.load[id]
		if first || l < lo {
			lo = l
		}
		if first || l > hi {
			hi = l
		}
		first = false
	}
	return hi - lo
}

// average is floor and ceil of the average load of the balanced nodes.
func (s *planState) average() (floor, ceil int64) {
	var total, count int64
	for id := range s.cands {
		if s.balanced(id) {
			total += s.load[id]
			count++
		}
	}
	if count == 0 {
		return 0, 0
	}
	return total / count, (total + count - 1) / count
}

// apply checks one move against the state and applies it.
func (s *planState) apply(t testingT, m domain.Move) {
	t.Helper()
	k := pinID{m.OrgID, m.RequestID}
	from := domain.Placement{OrgID: m.OrgID, RequestID: m.RequestID, NodeID: m.From}
	require.True(t, s.movable[from], "%+v: not a placement of the input, or moved already", m)
	require.True(t, s.balanced(m.To), "%+v: target is not schedulable, live and undrained", m)
	require.False(t, s.holds[k][m.To], "%+v: target already holds the pin", m)
	c := s.cands[m.To]
	require.True(t, c.Capacity == 0 || s.load[m.To] < c.Capacity, "%+v: target is full (%d of %d)", m, s.load[m.To], c.Capacity)
	switch m.Reason {
	case domain.MoveDrained:
		require.True(t, s.in.drained[m.From], "%+v: a drain move from an undrained node", m)
	case domain.MoveRebalanced:
		require.True(t, s.balanced(m.From), "%+v: a rebalancing move from a node not being balanced", m)
		require.Greater(t, s.load[m.From], s.load[m.To]+1, "%+v: the move does not narrow the spread", m)
		floor, ceil := s.average()
		require.Greater(t, s.load[m.From], ceil+int64(max(s.in.tolerance, 0)), "%+v: source within ceil(average)+tolerance", m)
		require.Less(t, s.load[m.To], floor, "%+v: target not under floor(average)", m)
	default:
		require.Failf(t, "unknown reason", "%+v: reason %q", m, m.Reason)
	}
	delete(s.movable, from)
	s.load[m.From]--
	s.load[m.To]++
	s.holds[k][m.To] = true
}

// testingT is what the invariant checks need of a *testing.T.
type testingT interface {
	require.TestingT
	Helper()
}

// checkPlan checks the invariants every plan keeps.
func checkPlan(t testingT, in planInput, plan []domain.Move) {
	t.Helper()
	require.LessOrEqual(t, len(plan), max(in.maxMoves, 0), "plan longer than maxMoves")
	s := newPlanState(in)
	before := s.spread()
	drains := 0
	for i, m := range plan {
		if m.Reason == domain.MoveDrained {
			require.Equal(t, drains, i, "drain moves come first")
			drains++
		}
	}
	for _, m := range plan[:drains] {
		s.apply(t, m)
	}
	afterDrain := s.spread()
	if drains == 0 {
		require.Equal(t, before, afterDrain)
	}
	for _, m := range plan[drains:] {
		s.apply(t, m)
	}
	require.LessOrEqual(t, s.spread(), afterDrain, "rebalancing widened the spread of loads")

	// Drained nodes are as empty as the capacities and the holders allow.
	possible := maxDrain(in)
	require.Equal(t, min(possible, max(in.maxMoves, 0)), drains, "drain moves: %d possible, maxMoves %d", possible, in.maxMoves)

	// A plan shorter than maxMoves leaves no rebalancing move to make.
	if len(plan) < in.maxMoves {
		floor, ceil := s.average()
		for p := range s.movable {
			if !s.balanced(p.NodeID) || s.load[p.NodeID] <= ceil+int64(max(in.tolerance, 0)) {
				continue
			}
			for id, c := range s.cands {
				if s.balanced(id) && s.load[id] < floor && (c.Capacity == 0 || s.load[id] < c.Capacity) {
					require.True(t, s.holds[pinID{p.OrgID, p.RequestID}][id],
						"plan stopped early: %+v could still move from %s (load %d) to %s (load %d); average %d..%d", p, p.NodeID, s.load[p.NodeID], id, s.load[id], floor, ceil)
				}
			}
		}
	}
}

// maxDrain is how many placements on drained nodes can move at all: a maximum flow, by Edmonds-Karp, through
// source → drained placement (1) → (pin, target) (1) → target (free room) → sink.
func maxDrain(in planInput) int {
	s := newPlanState(in)
	var targets []string
	for _, c := range in.cands {
		if s.balanced(c.NodeID) && !slices.Contains(targets, c.NodeID) {
			targets = append(targets, c.NodeID)
		}
	}
	var todo []domain.Placement
	for p := range s.movable {
		if in.drained[p.NodeID] {
			todo = append(todo, p)
		}
	}
	// Vertices: 0 source, 1 sink, then placements, pairs, targets.
	capacity := map[[2]int]int{}
	next := 2
	vertex := map[string]int{}
	v := func(name string) int {
		if id, ok := vertex[name]; ok {
			return id
		}
		vertex[name] = next
		next++
		return next - 1
	}
	for _, t := range targets {
		c := s.cands[t]
		room := len(todo) // unlimited
		if c.Capacity > 0 {
			room = int(max(0, c.Capacity-c.Placed))
		}
		capacity[[2]int{v("t:" + t), 1}] = room
	}
	for _, p := range todo {
		pv := v(fmt.Sprintf("p:%v", p))
		capacity[[2]int{0, pv}] = 1
		for _, t := range targets {
			if s.holds[pinID{p.OrgID, p.RequestID}][t] {
				continue
			}
			pair := v(fmt.Sprintf("pair:%s/%s/%s", p.OrgID, p.RequestID, t))
			capacity[[2]int{pv, pair}] = 1
			capacity[[2]int{pair, v("t:" + t)}] = 1
		}
	}
	adj := map[int][]int{}
	for e := range capacity {
		adj[e[0]] = append(adj[e[0]], e[1])
		adj[e[1]] = append(adj[e[1]], e[0])
	}
	flow := 0
	for {
		prev := map[int]int{0: -1}
		queue := []int{0}
		for len(queue) > 0 && prev[1] == 0 {
			u := queue[0]
			queue = queue[1:]
			for _, w := range adj[u] {
				if _, seen := prev[w]; !seen && capacity[[2]int{u, w}] > 0 {
					prev[w] = u
					queue = append(queue, w)
				}
			}
		}
		if _, ok := prev[1]; !ok {
			return flow
		}
		for w := 1; w != 0; w = prev[w] {
			u := prev[w]
			capacity[[2]int{u, w}]--
			capacity[[2]int{w, u}]++
		}
		flow++
	}
}

// randomPlanInput builds a small cluster: some nodes cordoned, dead, full or drained, pins on one to three nodes.
func randomPlanInput(r *rand.Rand) planInput {
	in := planInput{drained: map[string]bool{}, tolerance: r.IntN(3), maxMoves: r.IntN(25)}
	if r.IntN(3) == 0 {
		in.maxMoves = 1000
	}
	nodes := 1 + r.IntN(7)
	var ids []string
	for i := range nodes {
		c := domain.Candidate{NodeID: fmt.Sprintf("n%d", i), Schedulable: r.IntN(6) > 0, Live: r.IntN(8) > 0, FreeBytes: uint64(r.IntN(3)) << 30}
		if r.IntN(2) == 0 {
			c.Capacity = 1 + r.Int64N(10)
		}
		switch r.IntN(5) {
		case 0: // drained, as it should be: not schedulable
			c.Schedulable = false
			in.drained[c.NodeID] = true
		case 1:
			if r.IntN(3) == 0 { // drained, but the candidate still claims to be schedulable
				in.drained[c.NodeID] = true
			}
		}
		in.cands = append(in.cands, c)
		ids = append(ids, c.NodeID)
	}
	if r.IntN(4) == 0 { // a drained node that is gone from the candidates
		in.drained["gone"] = true
		ids = append(ids, "gone")
	}
	// Skew the pins towards a few nodes.
	weights := make([]int, len(ids))
	for i := range weights {
		weights[i] = 1 + r.IntN(6)
	}
	pickNode := func() string {
		sum := 0
		for _, w := range weights {
			sum += w
		}
		x := r.IntN(sum)
		for i, w := range weights {
			if x < w {
				return ids[i]
			}
			x -= w
		}
		panic("unreachable")
	}
	for p := range r.IntN(30) {
		org := orgID
		if r.IntN(4) == 0 {
			org = otherID
		}
		req := fmt.Sprintf("r%03d", p)
		for range 1 + r.IntN(3) {
			n := pickNode()
			if !slices.Contains(in.placements, domain.Placement{OrgID: org, RequestID: req, NodeID: n}) {
				in.placements = append(in.placements, domain.Placement{OrgID: org, RequestID: req, NodeID: n})
			}
		}
	}
	for i := range in.cands {
		for _, p := range in.placements {
			if p.NodeID == in.cands[i].NodeID {
				in.cands[i].Placed++
			}
		}
	}
	return in
}

func TestPlanRebalanceProperties(t *testing.T) {
	t.Parallel()
	seeds := uint64(3000)
	if testing.Short() {
		seeds = 300
	}
	for seed := range seeds {
		r := rand.New(rand.NewPCG(seed, 2))
		in := randomPlanInput(r)
		cands, placements := slices.Clone(in.cands), slices.Clone(in.placements)
		plan := domain.PlanRebalance(in.cands, in.drained, in.placements, in.tolerance, in.maxMoves)
		ok := t.Run(fmt.Sprintf("seed %d", seed), func(t *testing.T) {
			checkPlan(t, in, plan)
			require.Equal(t, cands, in.cands, "candidates modified")
			require.Equal(t, placements, in.placements, "placements modified")

			// Deterministic, whatever the order of the input.
			r.Shuffle(len(cands), func(i, j int) { cands[i], cands[j] = cands[j], cands[i] })
			r.Shuffle(len(placements), func(i, j int) { placements[i], placements[j] = placements[j], placements[i] })
			require.Equal(t, plan, domain.PlanRebalance(cands, in.drained, placements, in.tolerance, in.maxMoves), "shuffled input")
		})
		if !ok {
			t.Logf("seed %d: input %+v\nplan %+v", seed, in, plan)
			return
		}
	}
}

// recorder is a testingT that records failures, so the invariant checks can be tested themselves.
type recorder struct{ failed bool }

type stopTest struct{}

func (r *recorder) Errorf(string, ...any) { r.failed = true }
func (r *recorder) FailNow()              { r.failed = true; panic(stopTest{}) }
func (r *recorder) Helper()               {}

// TestPlanRebalanceCanFail: the invariant checks catch plans that break them.
func TestPlanRebalanceCanFail(t *testing.T) {
	t.Parallel()
	in := planInput{
		cands:      []domain.Candidate{{NodeID: "d", Live: true, Placed: 2}, cand("a", 1, 0, 0), cand("b", 0, 1, 0), {NodeID: "k", Live: true}},
		drained:    map[string]bool{"d": true},
		placements: []domain.Placement{pl("r000", "d"), pl("r001", "d"), pl("r001", "b")},
		maxMoves:   10,
	}
	good := domain.PlanRebalance(in.cands, in.drained, in.placements, 0, 10)
	require.Len(t, good, 2)
	checkPlan(t, in, good)
	short := in
	short.maxMoves = 1
	even := planInput{cands: []domain.Candidate{cand("a", 0, 2, 0), cand("b", 0, 2, 0)},
		placements: append(onNode("a", 0, 2), onNode("b", 2, 2)...), maxMoves: 10}
	skewed := planInput{cands: []domain.Candidate{cand("a", 0, 4, 0), cand("b", 0, 0, 0)}, placements: onNode("a", 0, 4), maxMoves: 10}
	for _, tc := range []struct {
		name string
		in   planInput
		plan []domain.Move
	}{
		{"to a holder", in, []domain.Move{mv("r000", "d", "a", domain.MoveDrained), mv("r001", "d", "b", domain.MoveDrained)}},
		{"over capacity", in, []domain.Move{mv("r000", "d", "a", domain.MoveDrained), mv("r001", "d", "a", domain.MoveDrained)}},
		{"to a cordoned node", in, []domain.Move{mv("r000", "d", "k", domain.MoveDrained), mv("r001", "d", "a", domain.MoveDrained)}},
		{"drain left undone", in, []domain.Move{mv("r001", "d", "a", domain.MoveDrained)}},
		{"moved twice", in, []domain.Move{mv("r000", "d", "a", domain.MoveDrained), mv("r000", "d", "b", domain.MoveDrained)}},
		{"not a placement", in, []domain.Move{mv("r000", "d", "b", domain.MoveDrained), mv("r001", "d", "a", domain.MoveDrained),
			mv("r000", "a", "b", domain.MoveRebalanced)}},
		{"rebalance after drain", in, []domain.Move{mv("r000", "d", "b", domain.MoveRebalanced), mv("r001", "d", "a", domain.MoveDrained)}},
		{"longer than maxMoves", short, good},
		{"widening rebalance", even, []domain.Move{mv("r000", "a", "b", domain.MoveRebalanced)}},
		{"stopped early", skewed, nil},
		{"unknown reason", skewed, []domain.Move{mv("r000", "a", "b", "moved")}},
	} {
		rec := &recorder{}
		func() {
			defer func() {
				if p := recover(); p != nil && p != (stopTest{}) {
					panic(p)
				}
			}()
			checkPlan(rec, tc.in, tc.plan)
		}()
		assert.True(t, rec.failed, "checkPlan accepted a plan %s: %+v", tc.name, tc.plan)
	}
}

func TestPlanRebalanceLarge(t *testing.T) {
	t.Parallel()
	// 40 nodes, 20000 placements, two drained nodes and a hot spot: the plan stays cheap and keeps its
	// invariants.
	r := rand.New(rand.NewPCG(7, 7))
	in := planInput{drained: map[string]bool{"n00": true, "n01": true}, tolerance: 1, maxMoves: 20000}
	for i := range 40 {
		c := cand(fmt.Sprintf("n%02d", i), 0, 0, uint64(r.IntN(100))<<30)
		if i < 2 {
			c.Schedulable = false
		}
		if i%5 == 0 {
			c.Capacity = 700
		}
		in.cands = append(in.cands, c)
	}
	for p := range 20000 {
		node := r.IntN(40)
		if r.IntN(4) == 0 {
			node = 3 // the hot spot
		}
		in.placements = append(in.placements, pl(fmt.Sprintf("r%05d", p), fmt.Sprintf("n%02d", node)))
		in.cands[node].Placed++
	}
	plan := domain.PlanRebalance(in.cands, in.drained, in.placements, in.tolerance, in.maxMoves)
	require.NotEmpty(t, plan)
	s := newPlanState(in)
	for _, m := range plan {
		s.apply(t, m)
	}
	assert.Zero(t, s.load["n00"]+s.load["n01"], "drained nodes emptied")
	require.Less(t, len(plan), in.maxMoves)
	var total, count, lo, hi int64
	lo = 1 << 62
	for id := range s.cands {
		if s.balanced(id) {
			total += s.load[id]
			count++
			lo, hi = min(lo, s.load[id]), max(hi, s.load[id])
		}
	}
	floor, ceil := total/count, (total+count-1)/count
	assert.True(t, hi <= ceil+1 || lo >= floor, "loads %d..%d, average %d/%d", lo, hi, total, count)
	assert.Less(t, hi, int64(700), "the hot spot was spread")
}
