package domain

import (
	"bytes"
	"regexp"
	"slices"

	"github.com/anchorage-pin/anchorage/events"
	"github.com/multiformats/go-multiaddr"
)

// Limits of a node registration.
const (
	MaxNodeAddrs     = 32
	MaxNodeAddrBytes = 1024
	MaxNodeReason    = 1024
)

// nodeIDRE is the node id rule, the same as the configuration's kubo.nodeID: it is one NATS subject token
// (events.PlaceSubject, events.NodeSubject) and never starts with '-', so it cannot be mistaken for a flag.
var nodeIDRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$`)

// ValidNodeID reports whether id can name a node: 1-64 letters, digits, '-' or '_', starting with a letter or
// digit.
func ValidNodeID(id string) bool { return nodeIDRE.MatchString(id) }

// Node is the write-side state of one node: an anchorage worker paired with one Kubo daemon.
type Node struct {
	ID       string
	PeerID   string
	Addrs    []string
	Capacity int64
	// Registered is true once the node has registered. Drained implies Cordoned.
	Registered, Cordoned, Drained bool
}

// Apply folds one event into the state.
func (n *Node) Apply(e events.Event) {
	switch e := e.(type) {
	case events.NodeRegistered:
		n.ID, n.PeerID, n.Addrs, n.Capacity, n.Registered = e.NodeID, e.PeerID, slices.Clone(e.Addrs), e.Capacity, true
	case events.NodeCordoned:
		n.Cordoned = true
	case events.NodeDrained:
		n.Cordoned, n.Drained = true, true
	case events.NodeUncordoned:
		n.Cordoned, n.Drained = false, false
	}
}

// Schedulable reports whether the scheduler may place new pins on the node.
func (n *Node) Schedulable() bool { return n.Registered && !n.Cordoned && !n.Drained }

// Register decides a node's registration, or a change of its peer id, addresses or capacity. Every address must
// be a multiaddr ending in /p2p/<peerID>. The event carries the peer id and the addresses in their canonical
// text form, the addresses without duplicates and in the order given. Registering again with the same peer id,
// the same set of addresses (in any order) and the same capacity decides nothing. A re-registration keeps the
// node's cordon or drain.
func (n *Node) Register(peerID string, addrs []string, capacity int64) (events.Event, error) {
	if !ValidNodeID(n.ID) {
		return nil, Errorf(ErrInvalid, "node id %q is invalid: use 1-64 letters, digits, '-' or '_', starting with a letter or digit", clip(n.ID))
	}
	if peerID == "" {
		return nil, Errorf(ErrInvalid, "node %s needs the peer id of its Kubo daemon", n.ID)
	}
	peer, err := multiaddr.NewComponent("p2p", peerID)
	if err != nil {
		return nil, Errorf(ErrInvalid, "peer id %q of node %s is not a libp2p peer id: %v", clip(peerID), n.ID, err)
	}
	if len(addrs) == 0 {
		return nil, Errorf(ErrInvalid, "node %s needs at least one address (a multiaddr ending in /p2p/%s)", n.ID, peer.Value())
	}
	if len(addrs) > MaxNodeAddrs {
		return nil, Errorf(ErrInvalid, "node %s has %d addresses; the limit is %d", n.ID, len(addrs), MaxNodeAddrs)
	}
	if capacity < 0 {
		return nil, Errorf(ErrInvalid, "node capacity must be 0 (unlimited) or a positive number of pins, not %d", capacity)
	}
	clean := make([]string, 0, len(addrs))
	for _, a := range addrs {
		canon, err := nodeAddr(a, peer)
		if err != nil {
			return nil, err
		}
		if !slices.Contains(clean, canon) {
			clean = append(clean, canon)
		}
	}
	ev := events.NodeRegistered{NodeID: n.ID, PeerID: peer.Value(), Addrs: clean, Capacity: capacity}
	if n.Registered && n.PeerID == ev.PeerID && n.Capacity == capacity && sameSet(n.Addrs, clean) {
		return nil, nil
	}
	return ev, nil
}

// nodeAddr checks one node address and returns its canonical text form.
func nodeAddr(a string, peer *multiaddr.Component) (string, error) {
	if len(a) > MaxNodeAddrBytes {
		return "", Errorf(ErrInvalid, "node address %q is %d bytes long; the limit is %d", clip(a), len(a), MaxNodeAddrBytes)
	}
	m, err := multiaddr.NewMultiaddr(a)
	if err != nil {
		return "", Errorf(ErrInvalid, "node address %q is not a multiaddr: %v", clip(a), err)
	}
	rest, last := multiaddr.SplitLast(m)
	if last == nil || last.Code() != multiaddr.P_P2P || !bytes.Equal(last.RawValue(), peer.RawValue()) {
		return "", Errorf(ErrInvalid, "node address %q must end in /p2p/%s, the node's peer id", clip(a), peer.Value())
	}
	if len(rest) == 0 {
		return "", Errorf(ErrInvalid, "node address %q has no transport address before /p2p/%s", clip(a), peer.Value())
	}
	return m.String(), nil
}

// sameSet reports whether a and b hold the same strings, in any order.
func sameSet(a, b []string) bool {
	x, y := slices.Clone(a), slices.Clone(b)
	slices.Sort(x)
	slices.Sort(y)
	return slices.Equal(slices.Compact(x), slices.Compact(y))
}

// Cordon decides stopping new placements on the node; its pins stay. Cordoning a cordoned or drained node
// decides nothing (to stop a drain, uncordon the node).
func (n *Node) Cordon(reason string) (events.Event, error) {
	if err := n.operate("cordon", reason); err != nil {
		return nil, err
	}
	if n.Cordoned || n.Drained {
		return nil, nil
	}
	return events.NodeCordoned{NodeID: n.ID, Reason: reason}, nil
}

// Drain decides emptying the node: no new placements, and the scheduler moves its pins away. It implies a
// cordon. Draining a drained node decides nothing.
func (n *Node) Drain(reason string) (events.Event, error) {
	if err := n.operate("drain", reason); err != nil {
		return nil, err
	}
	if n.Drained {
		return nil, nil
	}
	return events.NodeDrained{NodeID: n.ID, Reason: reason}, nil
}

// Uncordon decides letting a cordoned or drained node take placements again. Uncordoning a schedulable node
// decides nothing.
func (n *Node) Uncordon() (events.Event, error) {
	if err := n.operate("uncordon", ""); err != nil {
		return nil, err
	}
	if !n.Cordoned && !n.Drained {
		return nil, nil
	}
	return events.NodeUncordoned{NodeID: n.ID}, nil
}

// operate checks what every operator command on a node needs: a registered node and a storable reason.
func (n *Node) operate(what, reason string) error {
	if !n.Registered {
		return Errorf(ErrNotFound, "node %q does not exist; only a registered node can be told to %s", clip(n.ID), what)
	}
	if len(reason) > MaxNodeReason {
		return Errorf(ErrInvalid, "%s reason is %d bytes long; the limit is %d bytes", what, len(reason), MaxNodeReason)
	}
	return checkText(what+" reason", reason)
}
