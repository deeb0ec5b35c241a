package events

// NodeRegistered is recorded when a node (an anchorage worker paired with one Kubo daemon) joins, or when its
// identity, addresses or capacity change. Subject nodes.<node>.
type NodeRegistered struct {
	NodeID string `json:"node_id"`
	// PeerID is the Kubo daemon's libp2p peer id.
	PeerID string `json:"peer_id"`
	// Addrs are the multiaddrs clients should connect to, each ending /p2p/<peer id>: the pins' delegates.
	Addrs []string `json:"addrs"`
	// Capacity is the most pins the scheduler may place on the node (0: unlimited).
	Capacity int64 `json:"capacity"`
}

func (NodeRegistered) EventType() Type   { return "node.registered" }
func (NodeRegistered) EventVersion() int { return 1 }

// NodeCordoned is recorded when an operator stops new placements on a node; its pins stay.
type NodeCordoned struct {
	NodeID string `json:"node_id"`
	Reason string `json:"reason,omitempty"`
}

func (NodeCordoned) EventType() Type   { return "node.cordoned" }
func (NodeCordoned) EventVersion() int { return 1 }

// NodeDrained is recorded when an operator asks for a node to be emptied: no new placements, and the scheduler
// moves its pins to other nodes.
type NodeDrained struct {
	NodeID string `json:"node_id"`
	Reason string `json:"reason,omitempty"`
}

func (NodeDrained) EventType() Type   { return "node.drained" }
func (NodeDrained) EventVersion() int { return 1 }

// NodeUncordoned is recorded when a cordoned or drained node takes placements again.
type NodeUncordoned struct {
	NodeID string `json:"node_id"`
}

func (NodeUncordoned) EventType() Type   { return "node.uncordoned" }
func (NodeUncordoned) EventVersion() int { return 1 }

func init() {
	register[NodeRegistered]()
	register[NodeCordoned]()
	register[NodeDrained]()
	register[NodeUncordoned]()
}
