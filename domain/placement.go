package domain

import (
	"cmp"
	"slices"
)

// Candidate is what the placement policy knows of one node.
type Candidate struct {
	NodeID string
	// Schedulable: registered, neither cordoned nor drained (Node.Schedulable).
	Schedulable bool
	// Live: the node's worker is up and reporting.
	Live bool
	// Capacity is the most placements the node may hold; 0 means unlimited.
	Capacity int64
	// Placed is how many placements the node holds: its load.
	Placed int64
	// FreeBytes is the free space of the node's Kubo repository.
	FreeBytes uint64
}

// hasRoom reports whether the node can take one more placement on top of load.
func (c Candidate) hasRoom(load int64) bool { return c.Capacity == 0 || load < c.Capacity }

// ChooseNodes picks up to n distinct nodes for a new placement: only schedulable, live nodes with room
// (Capacity 0 or Placed < Capacity), never any in exclude (nodes already holding the pin); preferred nodes first
// (e.g. the nodes of the request a replace supersedes), then most free bytes, then fewest placed, then NodeID for
// determinism. Returns fewer than n when not enough nodes qualify. A node listed twice in cands counts once, as
// first listed.
func ChooseNodes(cands []Candidate, n int, prefer, exclude []string) []string {
	if n <= 0 {
		return nil
	}
	seen := map[string]bool{}
	var ok []Candidate
	for _, c := range cands {
		if seen[c.NodeID] {
			continue
		}
		seen[c.NodeID] = true
		if c.Schedulable && c.Live && c.hasRoom(c.Placed) && !slices.Contains(exclude, c.NodeID) {
			ok = append(ok, c)
		}
	}
	pref := func(c Candidate) int {
		if slices.Contains(prefer, c.NodeID) {
			return 0
		}
		return 1
	}
	slices.SortFunc(ok, func(a, b Candidate) int {
		return cmp.Or(
			cmp.Compare(pref(a), pref(b)),
			cmp.Compare(b.FreeBytes, a.FreeBytes),
			cmp.Compare(a.Placed, b.Placed),
			cmp.Compare(a.NodeID, b.NodeID),
		)
	})
	var out []string
	for _, c := range ok[:min(n, len(ok))] {
		out = append(out, c.NodeID)
	}
	return out
}

// Placement is one pin request placed on one node.
type Placement struct {
	OrgID, RequestID, NodeID string
}

// Move is a planned move of one placement.
type Move struct {
	OrgID, RequestID, From, To string
	// Reason is MoveDrained or MoveRebalanced.
	Reason string
}

// Move reasons.
const (
	MoveDrained    = "drained"
	MoveRebalanced = "rebalanced"
)

type pinKey struct{ org, req string }

// PlanRebalance returns moves that empty drained nodes (every placement on a node marked drained moves to a
// chosen target, never exceeding capacities) and then reduce skew: while the most loaded schedulable node holds
// more than ceil(average)+tolerance placements and another schedulable node holds fewer than floor(average),
// move one. Never moves a pin to a node that already holds it, never to a non-schedulable or full node, and
// bounds the plan to maxMoves. Deterministic for a given input.
//
// The balanced nodes are the schedulable, live candidates not marked drained; a node's load is its Placed, plus
// and minus the planned moves. placements lists what may move (and which nodes hold each pin); the caller keeps
// it consistent with the candidates' Placed. Placements on cordoned or dead nodes stay where they are.
//
// Drain targets are chosen least loaded first (then most free bytes, then NodeID), so a drain spreads evenly; if
// the greedy choice leaves a placement without a target, earlier choices are revised (augmenting paths), so
// every drained placement moves whenever the capacities and the holders allow it at all. Drain moves come
// first in the plan; when maxMoves cuts the plan short, the remaining drained placements wait for the next one.
// A placement planned to move is never moved again in the same plan.
func PlanRebalance(cands []Candidate, drained map[string]bool, placements []Placement, tolerance, maxMoves int) []Move {
	if maxMoves <= 0 {
		return nil
	}
	tolerance = max(tolerance, 0)

	// The balanced nodes, in NodeID order, and every node's load.
	byID := map[string]Candidate{}
	var nodes []string
	load := map[string]int64{}
	for _, c := range cands {
		if _, dup := byID[c.NodeID]; dup {
			continue
		}
		byID[c.NodeID] = c
		load[c.NodeID] = c.Placed
		if c.Schedulable && c.Live && !drained[c.NodeID] {
			nodes = append(nodes, c.NodeID)
		}
	}
	slices.Sort(nodes)

	// Distinct placements in a fixed order, and who holds each pin.
	ps := slices.Clone(placements)
	slices.SortFunc(ps, func(a, b Placement) int {
		return cmp.Or(cmp.Compare(a.NodeID, b.NodeID), cmp.Compare(a.OrgID, b.OrgID), cmp.Compare(a.RequestID, b.RequestID))
	})
	ps = slices.Compact(ps)
	holds := map[pinKey]map[string]bool{}
	hold := func(k pinKey, node string) {
		if holds[k] == nil {
			holds[k] = map[string]bool{}
		}
		holds[k][node] = true
	}
	for _, p := range ps {
		hold(pinKey{p.OrgID, p.RequestID}, p.NodeID)
	}

	var moves []Move
	for _, m := range planDrain(byID, nodes, load, drained, ps, holds) {
		if len(moves) == maxMoves {
			return moves
		}
		moves = append(moves, m)
		load[m.From]--
		load[m.To]++
		hold(pinKey{m.OrgID, m.RequestID}, m.To)
	}
	return planSkew(byID, nodes, load, ps, holds, tolerance, maxMoves, moves)
}

// planDrain assigns every placement on a drained node to a balanced node: a maximum assignment that respects
// capacities and holders, found greedily (least loaded first) and completed with augmenting paths.
//
// As a flow: each drained placement (1) → the pair (its pin, a node not holding it) (1) → that node (its free
// room). An augmenting path either reaches a node with room, or displaces the placement that already brings the
// same pin to a node, or displaces any placement assigned to a full node, and so on.
func planDrain(byID map[string]Candidate, nodes []string, load map[string]int64, drained map[string]bool,
	ps []Placement, holds map[pinKey]map[string]bool) []Move {
	var todo []Placement
	for _, p := range ps {
		if drained[p.NodeID] {
			todo = append(todo, p)
		}
	}
	if len(todo) == 0 || len(nodes) == 0 {
		return nil
	}
	type slot struct {
		pin  pinKey
		node string
	}
	assigned := make([]string, len(todo)) // target per todo entry, "" if none
	occupant := map[slot]int{}            // the entry that brings a pin to a node
	at := map[string]map[int]bool{}       // the entries assigned to a node
	for _, n := range nodes {
		at[n] = map[int]bool{}
	}
	key := func(i int) pinKey { return pinKey{todo[i].OrgID, todo[i].RequestID} }
	room := func(node string) bool { return byID[node].hasRoom(load[node] + int64(len(at[node]))) }
	allowed := func(i int, node string) bool { return !holds[key(i)][node] }
	assign := func(i int, node string) {
		if old := assigned[i]; old != "" {
			delete(at[old], i)
			delete(occupant, slot{key(i), old})
		}
		assigned[i] = node
		at[node][i] = true
		occupant[slot{key(i), node}] = i
	}

	// Search state of augment. A slot or node visited by a search that failed stays dead until an augmentation
	// succeeds (the residual graph is unchanged until then), so failures cost little.
	seenSlot, seenNode := map[slot]bool{}, map[string]bool{}
	var augment func(i int) bool
	augment = func(i int) bool {
		for _, t := range nodes {
			s := slot{key(i), t}
			if t == assigned[i] || !allowed(i, t) || seenSlot[s] {
				continue
			}
			seenSlot[s] = true
			if j, taken := occupant[s]; taken {
				// The same pin already comes to t through j: j must go elsewhere.
				if augment(j) {
					assign(i, t)
					return true
				}
				continue
			}
			if seenNode[t] {
				continue
			}
			seenNode[t] = true
			if room(t) {
				assign(i, t)
				return true
			}
			// t is full: make room by sending one of the placements assigned to it elsewhere.
			others := make([]int, 0, len(at[t]))
			for j := range at[t] {
				others = append(others, j)
			}
			slices.Sort(others)
			for _, j := range others {
				sj := slot{key(j), t}
				if seenSlot[sj] {
					continue
				}
				seenSlot[sj] = true
				if augment(j) {
					assign(i, t)
					return true
				}
			}
		}
		return false
	}

	for i := range todo {
		best := ""
		for _, t := range nodes {
			if !allowed(i, t) || !room(t) {
				continue
			}
			if _, taken := occupant[slot{key(i), t}]; taken {
				continue
			}
			if best == "" || targetCmp(byID[t], load[t]+int64(len(at[t])), byID[best], load[best]+int64(len(at[best]))) < 0 {
				best = t
			}
		}
		if best != "" {
			assign(i, best)
			clear(seenSlot)
			clear(seenNode)
		} else if augment(i) {
			clear(seenSlot)
			clear(seenNode)
		}
	}
	// Until no augmenting path is left: then the assignment is maximum.
	for progress := true; progress; {
		progress = false
		clear(seenSlot)
		clear(seenNode)
		for i := range todo {
			if assigned[i] == "" && augment(i) {
				progress = true
				clear(seenSlot)
				clear(seenNode)
			}
		}
	}

	var out []Move
	for i, p := range todo {
		if assigned[i] != "" {
			out = append(out, Move{OrgID: p.OrgID, RequestID: p.RequestID, From: p.NodeID, To: assigned[i], Reason: MoveDrained})
		}
	}
	return out
}

// targetCmp orders move targets: least loaded, then most free bytes, then NodeID.
func targetCmp(a Candidate, aLoad int64, b Candidate, bLoad int64) int {
	return cmp.Or(cmp.Compare(aLoad, bLoad), cmp.Compare(b.FreeBytes, a.FreeBytes), cmp.Compare(a.NodeID, b.NodeID))
}

// planSkew appends rebalancing moves to moves until the balanced nodes are within tolerance, nothing can move,
// or the plan holds maxMoves moves. Each move goes from a node above ceil(average)+tolerance to one below
// floor(average), so it never widens the spread of loads, and the loop ends.
func planSkew(byID map[string]Candidate, nodes []string, load map[string]int64, ps []Placement,
	holds map[pinKey]map[string]bool, tolerance, maxMoves int, moves []Move) []Move {
	if len(nodes) < 2 {
		return moves
	}
	var total int64
	for _, n := range nodes {
		if load[n] < 0 { // a load inconsistent with the moves planned: nothing sensible to do
			return moves
		}
		total += load[n]
	}
	count := int64(len(nodes))
	floor := total / count
	ceil := floor
	if total%count != 0 {
		ceil++
	}

	// What may move off each node: its own placements, not yet moved in this plan.
	movable := map[string][]Placement{}
	moved := map[Placement]bool{}
	for _, m := range moves {
		moved[Placement{m.OrgID, m.RequestID, m.From}] = true
	}
	for _, p := range ps {
		if !moved[p] {
			movable[p.NodeID] = append(movable[p.NodeID], p)
		}
	}

	for len(moves) < maxMoves {
		var sources, targets []string
		for _, n := range nodes {
			switch {
			case load[n] > ceil+int64(tolerance):
				sources = append(sources, n)
			case load[n] < floor && byID[n].hasRoom(load[n]):
				targets = append(targets, n)
			}
		}
		slices.SortFunc(sources, func(a, b string) int { return cmp.Or(cmp.Compare(load[b], load[a]), cmp.Compare(a, b)) })
		slices.SortFunc(targets, func(a, b string) int { return targetCmp(byID[a], load[a], byID[b], load[b]) })
		from, to, pick := "", "", -1
	search:
		for _, s := range sources {
			for _, t := range targets {
				// From the end, so taking one out of a long list is cheap.
				for i := len(movable[s]) - 1; i >= 0; i-- {
					if p := movable[s][i]; !holds[pinKey{p.OrgID, p.RequestID}][t] {
						from, to, pick = s, t, i
						break search
					}
				}
			}
		}
		if pick < 0 {
			return moves
		}
		p := movable[from][pick]
		movable[from] = slices.Delete(movable[from], pick, pick+1)
		moves = append(moves, Move{OrgID: p.OrgID, RequestID: p.RequestID, From: from, To: to, Reason: MoveRebalanced})
		load[from]--
		load[to]++
		holds[pinKey{p.OrgID, p.RequestID}][to] = true
	}
	return moves
}
