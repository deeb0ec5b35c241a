package domain_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/anchorage-pin/anchorage/domain"
	"github.com/anchorage-pin/anchorage/events"
)

const (
	nodeID = "ams-1"
	// peerBv1 is peerB spelled as a CIDv1 (libp2p-key, base36), as `ipfs id --peerid-base base36` prints it.
	peerBv1 = "k51qzi5uqu5dkie2fi8xw4o8bhvari2umu8v010gqgqa1wnyhz35p7vwicwf7h"
)

var (
	addrTCP  = "/ip4/198.51.100.21/tcp/4001/p2p/" + peerB
	addrQUIC = "/ip4/198.51.100.21/udp/4001/quic-v1/p2p/" + peerB
	addrDNS  = "/dns4/ams-1.ipfs.anchorage.example/tcp/4001/p2p/" + peerB
	nodeReg  = events.NodeRegistered{NodeID: nodeID, PeerID: peerB, Addrs: []string{addrTCP, addrQUIC}, Capacity: 1000}
	cordoned = events.NodeCordoned{NodeID: nodeID, Reason: "disk latency"}
	drained  = events.NodeDrained{NodeID: nodeID, Reason: "disk replacement"}
	uncord   = events.NodeUncordoned{NodeID: nodeID}
)

func TestValidNodeID(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		id string
		ok bool
	}{
		{"a", true},
		{"0", true},
		{"ams-1", true},
		{"AMS_1", true},
		{"node_with-both", true},
		{"a-", true},
		{"a_", true},
		{strings.Repeat("n", 64), true},
		{strings.Repeat("n", 65), false},
		{"", false},
		{"-ams", false},
		{"_ams", false},
		{"ams.1", false},
		{"ams*", false},
		{"ams>", false},
		{"ams 1", false},
		{"ams\t1", false},
		{"ams/1", false},
		{"ams:1", false},
		{"ams-1\n", false},
		{"amś", false},
		{"аms", false}, // Cyrillic а
	} {
		assert.Equal(t, tc.ok, domain.ValidNodeID(tc.id), "ValidNodeID(%q)", tc.id)
		if tc.ok {
			assert.NoError(t, events.ValidToken(tc.id), "a valid node id is a subject token: %q", tc.id)
		}
	}
}

func TestNodeApply(t *testing.T) {
	t.Parallel()
	n := given(domain.Node{ID: nodeID}, nodeReg)
	assert.Equal(t, domain.Node{ID: nodeID, PeerID: peerB, Addrs: []string{addrTCP, addrQUIC}, Capacity: 1000, Registered: true}, *n)
	assert.True(t, n.Schedulable())

	for _, tc := range []struct {
		name                           string
		evs                            []events.Event
		cordoned, drained, schedulable bool
	}{
		{name: "never registered"},
		{name: "registered", evs: []events.Event{nodeReg}, schedulable: true},
		{name: "cordoned", evs: []events.Event{nodeReg, cordoned}, cordoned: true},
		{name: "drained implies cordoned", evs: []events.Event{nodeReg, drained}, cordoned: true, drained: true},
		{name: "cordoned then drained", evs: []events.Event{nodeReg, cordoned, drained}, cordoned: true, drained: true},
		{name: "a cordon after a drain keeps the drain", evs: []events.Event{nodeReg, drained, cordoned}, cordoned: true, drained: true},
		{name: "uncordon clears a cordon", evs: []events.Event{nodeReg, cordoned, uncord}, schedulable: true},
		{name: "uncordon clears a drain", evs: []events.Event{nodeReg, drained, uncord}, schedulable: true},
		{name: "re-registration keeps a cordon", evs: []events.Event{nodeReg, cordoned, nodeReg}, cordoned: true},
		{name: "re-registration keeps a drain", evs: []events.Event{nodeReg, drained, nodeReg}, cordoned: true, drained: true},
		{name: "cordoned before registering", evs: []events.Event{cordoned}, cordoned: true},
		{name: "other aggregates' events are ignored", evs: []events.Event{nodeReg, removed,
			events.PinPlaced{OrgID: orgID, RequestID: reqID, NodeID: nodeID, CID: cidV1, Term: 1},
			events.PinUnplaced{OrgID: orgID, RequestID: reqID, NodeID: nodeID, CID: cidV1, Reason: "removed", Term: 1},
			events.MaintenanceSet{On: true}, events.SchedTermStarted{Term: 2, SchedulerID: "x"}}, schedulable: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			n := given(domain.Node{ID: nodeID}, tc.evs...)
			assert.Equal(t, tc.cordoned, n.Cordoned, "cordoned")
			assert.Equal(t, tc.drained, n.Drained, "drained")
			assert.Equal(t, tc.schedulable, n.Schedulable(), "schedulable")
		})
	}

	// The state does not alias the event's addresses.
	ev := events.NodeRegistered{NodeID: nodeID, PeerID: peerB, Addrs: []string{addrTCP}}
	n = given(domain.Node{ID: nodeID}, ev)
	ev.Addrs[0] = "changed"
	assert.Equal(t, []string{addrTCP}, n.Addrs)
}

func TestNodeRegister(t *testing.T) {
	t.Parallel()
	reg := func(addrs []string, capacity int64) events.NodeRegistered {
		return events.NodeRegistered{NodeID: nodeID, PeerID: peerB, Addrs: addrs, Capacity: capacity}
	}
	many := func(k int) []string {
		var out []string
		for i := range k {
			out = append(out, fmt.Sprintf("/ip4/198.51.100.%d/tcp/4001/p2p/%s", i+1, peerB))
		}
		return out
	}
	for _, tc := range []struct {
		name     string
		id       string // default nodeID
		given    []events.Event
		peer     string
		addrs    []string
		capacity int64
		want     events.Event
		err      wantErr
	}{
		{name: "new node", peer: peerB, addrs: []string{addrTCP, addrQUIC}, capacity: 1000, want: nodeReg},
		{name: "unlimited capacity", peer: peerB, addrs: []string{addrDNS}, want: reg([]string{addrDNS}, 0)},
		{name: "addresses keep their order", peer: peerB, addrs: []string{addrDNS, addrQUIC, addrTCP},
			want: reg([]string{addrDNS, addrQUIC, addrTCP}, 0)},
		{name: "duplicate addresses are dropped", peer: peerB, addrs: []string{addrTCP, addrQUIC, addrTCP}, capacity: 1000, want: nodeReg},
		{name: "32 addresses", peer: peerB, addrs: many(32), want: reg(many(32), 0)},
		{name: "CIDv1 peer id is stored in its canonical form", peer: peerBv1,
			addrs: []string{"/ip4/198.51.100.21/tcp/4001/p2p/" + peerBv1}, want: reg([]string{addrTCP}, 0)},
		{name: "circuit relay address", peer: peerB,
			addrs: []string{"/ip4/203.0.113.9/tcp/4001/p2p/" + peerA + "/p2p-circuit/p2p/" + peerB},
			want:  reg([]string{"/ip4/203.0.113.9/tcp/4001/p2p/" + peerA + "/p2p-circuit/p2p/" + peerB}, 0)},
		{name: "64-char node id", id: strings.Repeat("n", 64), peer: peerB, addrs: []string{addrTCP},
			want: events.NodeRegistered{NodeID: strings.Repeat("n", 64), PeerID: peerB, Addrs: []string{addrTCP}}},

		// Only changes of state become events.
		{name: "unchanged", given: []events.Event{nodeReg}, peer: peerB, addrs: []string{addrTCP, addrQUIC}, capacity: 1000},
		{name: "unchanged, addresses reordered", given: []events.Event{nodeReg}, peer: peerB, addrs: []string{addrQUIC, addrTCP}, capacity: 1000},
		{name: "unchanged, with a duplicate", given: []events.Event{nodeReg}, peer: peerB, addrs: []string{addrQUIC, addrTCP, addrQUIC}, capacity: 1000},
		{name: "unchanged, peer id spelled as CIDv1", given: []events.Event{reg([]string{addrTCP}, 0)}, peer: peerBv1,
			addrs: []string{"/ip4/198.51.100.21/tcp/4001/p2p/" + peerBv1}},
		{name: "unchanged while cordoned", given: []events.Event{nodeReg, cordoned}, peer: peerB, addrs: []string{addrTCP, addrQUIC}, capacity: 1000},
		{name: "capacity changed", given: []events.Event{nodeReg}, peer: peerB, addrs: []string{addrTCP, addrQUIC}, capacity: 2000,
			want: reg([]string{addrTCP, addrQUIC}, 2000)},
		{name: "capacity to unlimited", given: []events.Event{nodeReg}, peer: peerB, addrs: []string{addrTCP, addrQUIC},
			want: reg([]string{addrTCP, addrQUIC}, 0)},
		{name: "address added", given: []events.Event{nodeReg}, peer: peerB, addrs: []string{addrTCP, addrQUIC, addrDNS}, capacity: 1000,
			want: reg([]string{addrTCP, addrQUIC, addrDNS}, 1000)},
		{name: "address removed", given: []events.Event{nodeReg}, peer: peerB, addrs: []string{addrQUIC}, capacity: 1000,
			want: reg([]string{addrQUIC}, 1000)},
		{name: "peer id changed", given: []events.Event{nodeReg}, peer: peerA, addrs: []string{"/ip4/198.51.100.21/tcp/4001/p2p/" + peerA},
			capacity: 1000, want: events.NodeRegistered{NodeID: nodeID, PeerID: peerA,
				Addrs: []string{"/ip4/198.51.100.21/tcp/4001/p2p/" + peerA}, Capacity: 1000}},
		{name: "last registration counts", given: []events.Event{nodeReg, reg([]string{addrDNS}, 5)}, peer: peerB, addrs: []string{addrDNS}, capacity: 5},

		// Validation.
		{name: "empty node id", id: "-", peer: peerB, addrs: []string{addrTCP}, err: errOf(domain.ErrInvalid, "node id", `""`)},
		{name: "node id starting with a dash", id: "-ams", peer: peerB, addrs: []string{addrTCP}, err: errOf(domain.ErrInvalid, `"-ams"`, "starting with a letter or digit")},
		{name: "node id with a dot", id: "ams.1", peer: peerB, addrs: []string{addrTCP}, err: errOf(domain.ErrInvalid, "node id")},
		{name: "65-char node id", id: strings.Repeat("n", 65), peer: peerB, addrs: []string{addrTCP}, err: errOf(domain.ErrInvalid, "node id")},
		{name: "no peer id", addrs: []string{addrTCP}, err: errOf(domain.ErrInvalid, "peer id")},
		{name: "peer id not a peer id", peer: "ams-1", addrs: []string{addrTCP}, err: errOf(domain.ErrInvalid, `"ams-1"`, "not a libp2p peer id")},
		{name: "peer id a CID of the wrong codec", peer: cidV1, addrs: []string{addrTCP}, err: errOf(domain.ErrInvalid, "not a libp2p peer id")},
		{name: "no addresses", peer: peerB, err: errOf(domain.ErrInvalid, "at least one address", "/p2p/"+peerB)},
		{name: "empty address list", peer: peerB, addrs: []string{}, err: errOf(domain.ErrInvalid, "at least one address")},
		{name: "33 addresses", peer: peerB, addrs: many(33), err: errOf(domain.ErrInvalid, "33", "32")},
		{name: "negative capacity", peer: peerB, addrs: []string{addrTCP}, capacity: -1, err: errOf(domain.ErrInvalid, "-1")},
		{name: "address not a multiaddr", peer: peerB, addrs: []string{addrTCP, "198.51.100.21:4001"},
			err: errOf(domain.ErrInvalid, `"198.51.100.21:4001"`, "not a multiaddr")},
		{name: "empty address", peer: peerB, addrs: []string{""}, err: errOf(domain.ErrInvalid, "not a multiaddr")},
		{name: "address without /p2p", peer: peerB, addrs: []string{"/ip4/198.51.100.21/tcp/4001"},
			err: errOf(domain.ErrInvalid, "must end in /p2p/"+peerB)},
		{name: "address of another peer", peer: peerB, addrs: []string{addrTCP, "/ip4/198.51.100.21/tcp/4001/p2p/" + peerA},
			err: errOf(domain.ErrInvalid, "must end in /p2p/"+peerB)},
		{name: "address with /p2p in the middle only", peer: peerB, addrs: []string{"/p2p/" + peerB + "/p2p-circuit"},
			err: errOf(domain.ErrInvalid, "must end in /p2p/")},
		{name: "address that is only /p2p", peer: peerB, addrs: []string{"/p2p/" + peerB}, err: errOf(domain.ErrInvalid, "no transport address")},
		{name: "address too long", peer: peerB, addrs: []string{"/dns4/" + strings.Repeat("a", 1020) + "/tcp/4001/p2p/" + peerB},
			err: errOf(domain.ErrInvalid, "1024")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			id := tc.id
			if id == "" {
				id = nodeID
			}
			if id == "-" {
				id = ""
			}
			n := given(domain.Node{ID: id}, tc.given...)
			ev, err := n.Register(tc.peer, tc.addrs, tc.capacity)
			checkErr(t, err, tc.err)
			assert.Equal(t, tc.want, ev)
			if ev != nil {
				// Applying the decision makes the same command a no-op.
				n.Apply(ev)
				again, err := n.Register(tc.peer, tc.addrs, tc.capacity)
				assert.NoError(t, err)
				assert.Nil(t, again, "registering twice")
			}
		})
	}
}

func TestNodeRegisterDoesNotAliasInput(t *testing.T) {
	t.Parallel()
	addrs := []string{addrTCP, addrQUIC}
	ev, err := given(domain.Node{ID: nodeID}).Register(peerB, addrs, 0)
	assert.NoError(t, err)
	addrs[0] = addrDNS
	assert.Equal(t, []string{addrTCP, addrQUIC}, ev.(events.NodeRegistered).Addrs)
}

func TestNodeOperations(t *testing.T) {
	t.Parallel()
	type op func(n *domain.Node) (events.Event, error)
	cordon := func(r string) op { return func(n *domain.Node) (events.Event, error) { return n.Cordon(r) } }
	drain := func(r string) op { return func(n *domain.Node) (events.Event, error) { return n.Drain(r) } }
	uncordon := func(n *domain.Node) (events.Event, error) { return n.Uncordon() }
	for _, tc := range []struct {
		name  string
		given []events.Event
		op    op
		want  events.Event
		err   wantErr
	}{
		{name: "cordon", given: []events.Event{nodeReg}, op: cordon("disk latency"), want: cordoned},
		{name: "cordon without a reason", given: []events.Event{nodeReg}, op: cordon(""), want: events.NodeCordoned{NodeID: nodeID}},
		{name: "cordon a cordoned node", given: []events.Event{nodeReg, cordoned}, op: cordon("again")},
		{name: "cordon a drained node", given: []events.Event{nodeReg, drained}, op: cordon("stop")},
		{name: "cordon after an uncordon", given: []events.Event{nodeReg, cordoned, uncord}, op: cordon("disk latency"), want: cordoned},
		{name: "cordon an unknown node", op: cordon("x"), err: errOf(domain.ErrNotFound, nodeID)},
		{name: "cordon reason of 1024 bytes", given: []events.Event{nodeReg}, op: cordon(strings.Repeat("r", 1024)),
			want: events.NodeCordoned{NodeID: nodeID, Reason: strings.Repeat("r", 1024)}},
		{name: "cordon reason of 1025 bytes", given: []events.Event{nodeReg}, op: cordon(strings.Repeat("r", 1025)), err: errOf(domain.ErrInvalid, "1025", "1024")},
		{name: "cordon reason with NUL", given: []events.Event{nodeReg}, op: cordon("a\x00b"), err: errOf(domain.ErrInvalid, "NUL")},
		{name: "cordon reason not UTF-8", given: []events.Event{nodeReg}, op: cordon("a\xffb"), err: errOf(domain.ErrInvalid, "UTF-8")},
		{name: "an invalid reason is reported on a no-op too", given: []events.Event{nodeReg, cordoned}, op: cordon("a\x00b"), err: errOf(domain.ErrInvalid)},

		{name: "drain", given: []events.Event{nodeReg}, op: drain("disk replacement"), want: drained},
		{name: "drain a cordoned node", given: []events.Event{nodeReg, cordoned}, op: drain("disk replacement"), want: drained},
		{name: "drain a drained node", given: []events.Event{nodeReg, drained}, op: drain("again")},
		{name: "drain a drained, re-registered node", given: []events.Event{nodeReg, drained, nodeReg}, op: drain("again")},
		{name: "drain after an uncordon", given: []events.Event{nodeReg, drained, uncord}, op: drain("disk replacement"), want: drained},
		{name: "drain an unknown node", op: drain(""), err: errOf(domain.ErrNotFound, nodeID)},
		{name: "drain an unknown node that was cordoned", given: []events.Event{cordoned}, op: drain(""), err: errOf(domain.ErrNotFound)},
		{name: "drain reason of 1025 bytes", given: []events.Event{nodeReg}, op: drain(strings.Repeat("r", 1025)), err: errOf(domain.ErrInvalid, "1024")},

		{name: "uncordon a cordoned node", given: []events.Event{nodeReg, cordoned}, op: uncordon, want: uncord},
		{name: "uncordon a drained node", given: []events.Event{nodeReg, drained}, op: uncordon, want: uncord},
		{name: "uncordon a cordoned and drained node", given: []events.Event{nodeReg, cordoned, drained}, op: uncordon, want: uncord},
		{name: "uncordon a schedulable node", given: []events.Event{nodeReg}, op: uncordon},
		{name: "uncordon twice", given: []events.Event{nodeReg, cordoned, uncord}, op: uncordon},
		{name: "uncordon an unknown node", op: uncordon, err: errOf(domain.ErrNotFound, nodeID)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			n := given(domain.Node{ID: nodeID}, tc.given...)
			ev, err := tc.op(n)
			checkErr(t, err, tc.err)
			assert.Equal(t, tc.want, ev)
			if ev != nil {
				// Applying the decision makes the same command a no-op.
				n.Apply(ev)
				again, err := tc.op(n)
				assert.NoError(t, err)
				assert.Nil(t, again, "%s twice", tc.name)
			}
		})
	}
}

// lastLog is a fakeLog that can read a subject's last event alone (domain.LastLoader), as the JetStream one can.
type lastLog struct {
	*fakeLog
	lastLoads int
}

func (l *lastLog) LoadLast(ctx context.Context, subject string) (events.Record, bool, error) {
	recs, _, err := l.fakeLog.Load(ctx, subject)
	l.mu.Lock()
	l.loads-- // not a Load of the history
	l.lastLoads++
	l.mu.Unlock()
	if err != nil || len(recs) == 0 {
		return events.Record{}, false, err
	}
	return recs[len(recs)-1], true, nil
}

// A node registering again with what it registered last (its start, nearly every time) reads only the last event
// of its subject and decides nothing; any other case reads the history and decides as before.
func TestRegisterNodeAgainReadsOnlyTheLastEvent(t *testing.T) {
	ctx := context.Background()
	s, fl := newService()
	l := &lastLog{fakeLog: fl}
	s.Log = l
	m := domain.Meta{Actor: "system:node:" + nodeID}
	first, err := s.RegisterNode(ctx, m, nodeID, peerB, []string{addrTCP, addrQUIC}, 1000)
	require.NoError(t, err)
	require.Equal(t, 1, l.appendCalls)

	// The same registration, addresses in another order: one last-event read, no history, nothing appended.
	loads := l.loads
	again, err := s.RegisterNode(ctx, m, nodeID, peerB, []string{addrQUIC, addrTCP}, 1000)
	require.NoError(t, err)
	require.Equal(t, first.Seq, again.Seq)
	require.Equal(t, loads, l.loads, "the history was read")
	require.Equal(t, 2, l.lastLoads)
	require.Equal(t, 1, l.appendCalls)

	// A changed address: decided from the history, appended.
	_, err = s.RegisterNode(ctx, m, nodeID, peerB, []string{addrTCP, addrDNS}, 1000)
	require.NoError(t, err)
	require.Equal(t, 2, l.appendCalls)
	require.Greater(t, l.loads, loads)

	// After a cordon the last event is not a registration: the history decides (nothing to register), and the
	// cordon stays.
	_, err = s.OperateNode(ctx, m, nodeID, domain.NodeCordon, "disk latency")
	require.NoError(t, err)
	loads = l.loads
	_, err = s.RegisterNode(ctx, m, nodeID, peerB, []string{addrDNS, addrTCP}, 1000)
	require.NoError(t, err)
	require.Equal(t, 3, l.appendCalls)
	require.Greater(t, l.loads, loads)

	// An invalid registration is refused as before, whatever the last event.
	_, err = s.RegisterNode(ctx, m, nodeID, peerB, []string{"/ip4/198.51.100.21/tcp/4001"}, 1000)
	require.Error(t, err)
	require.Equal(t, 3, l.appendCalls)
}
