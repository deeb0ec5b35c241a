package events

// PinPlaced is recorded by the scheduler when it assigns a pin request to a node. The node's worker pins the CID
// on its Kubo. Subject place.<node>.<org>.<request_id>, written under an expected-sequence check on
// place.*.<org>.<request_id>, so two decisions about one pin cannot both land.
type PinPlaced struct {
	OrgID     string   `json:"org_id"`
	RequestID string   `json:"request_id"`
	NodeID    string   `json:"node_id"`
	CID       string   `json:"cid"`
	Origins   []string `json:"origins,omitempty"`
	// Term is the scheduler term that decided it (see SchedTermStarted).
	Term uint64 `json:"term"`
	// MovedFrom names the node this placement replaces (drain, rebalance); that one is unplaced once this one is
	// pinned.
	MovedFrom string `json:"moved_from,omitempty"`
}

func (PinPlaced) EventType() Type   { return "pin.placed" }
func (PinPlaced) EventVersion() int { return 1 }

// PinUnplaced is recorded by the scheduler when a pin request no longer needs a node: the request was removed
// or replaced (and its successor is pinned), or the pin moved to another node (and is pinned there). The worker
// unpins the CID from its Kubo unless another live placement on the node still needs it.
type PinUnplaced struct {
	OrgID     string `json:"org_id"`
	RequestID string `json:"request_id"`
	NodeID    string `json:"node_id"`
	CID       string `json:"cid"`
	// Reason is removed, replaced, moved or rebalanced.
	Reason string `json:"reason"`
	Term   uint64 `json:"term"`
}

func (PinUnplaced) EventType() Type   { return "pin.unplaced" }
func (PinUnplaced) EventVersion() int { return 1 }

func init() {
	register[PinPlaced]()
	register[PinUnplaced]()
}
