package events

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

func init() {
	register[PinRequested]()
	register[PinReplaced]()
	register[PinRemoved]()
}
