package events

import "time"

// PinRequested is recorded when an org asks for a CID to be pinned (POST /pins), and for the new object of a
// replace (POST /pins/{requestid}), where Replaces names the old request. Subject pins.<org>.<request_id>.
type PinRequested struct {
	OrgID     string `json:"org_id"`
	RequestID string `json:"request_id"`
	// CID is exactly as the client sent it; it is echoed back verbatim.
	CID  string `json:"cid"`
	Name string `json:"name,omitempty"`
	// Origins are the client's provider hints that parsed as multiaddrs (at most 20).
	Origins []string          `json:"origins,omitempty"`
	Meta    map[string]string `json:"meta,omitempty"`
	// Replaces is the request this one replaces, if any.
	Replaces string `json:"replaces,omitempty"`
	// Created is the request's creation time as the spec's PinStatus.created: millisecond precision and
	// strictly increasing per org on the node that decided it. The pins projection keeps it unless two nodes
	// collide within one millisecond, in which case it bumps the later one by 1 ms.
	Created time.Time `json:"created"`
}

func (PinRequested) EventType() Type   { return "pin.requested" }
func (PinRequested) EventVersion() int { return 1 }

// PinReplaced is recorded on the old request's subject when it is replaced; the same atomic batch carries the
// PinRequested of the new request. The old request no longer exists afterwards.
type PinReplaced struct {
	OrgID      string `json:"org_id"`
	RequestID  string `json:"request_id"`
	ReplacedBy string `json:"replaced_by"`
}

func (PinReplaced) EventType() Type   { return "pin.replaced" }
func (PinReplaced) EventVersion() int { return 1 }

// PinRemoved is recorded when an org deletes a pin request (DELETE /pins/{requestid}).
type PinRemoved struct {
	OrgID     string `json:"org_id"`
	RequestID string `json:"request_id"`
}

func (PinRemoved) EventType() Type   { return "pin.removed" }
func (PinRemoved) EventVersion() int { return 1 }

// PinStatusObserved is recorded by a node's worker when it observes a pin's status on its Kubo: pinning,
// pinned or failed (with Info["status_details"] saying why, and Info["dag_size"] when known). Subject
// place.<node>.<org>.<request_id>, after the placement it reports on.
type PinStatusObserved struct {
	OrgID     string `json:"org_id"`
	RequestID string `json:"request_id"`
	NodeID    string `json:"node_id"`
	// CID is the placement's CID, so a node's state can be rebuilt from the last message of each subject.
	CID    string            `json:"cid,omitempty"`
	Status string            `json:"status"`
	Info   map[string]string `json:"info,omitempty"`
	// PlacedSeq is the stream sequence of the placement this observation answers, so a reader can tell it from
	// an observation of an earlier placement of the same pin on the node.
	PlacedSeq uint64 `json:"placed_seq,omitempty"`
}

func (PinStatusObserved) EventType() Type   { return "pin.status_observed" }
func (PinStatusObserved) EventVersion() int { return 1 }

func init() {
	register[PinStatusObserved]()
	register[PinRequested]()
	register[PinReplaced]()
	register[PinRemoved]()
}
