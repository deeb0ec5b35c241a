package domain

import "github.com/anchorage-pin/anchorage/events"

// Pin is the write-side state of one pin request.
type Pin struct {
	OrgID     string
	RequestID string
	Spec      PinSpec
	// Exists is true once requested; Gone once removed or replaced.
	Exists bool
	Gone   bool
}

// Apply folds one event into the state.
func (p *Pin) Apply(e events.Event) {
	switch e := e.(type) {
	case events.PinRequested:
		p.OrgID, p.RequestID, p.Exists = e.OrgID, e.RequestID, true
		p.Spec = PinSpec{CID: e.CID, Name: e.Name, Origins: e.Origins, Meta: e.Meta}
	case events.PinReplaced, events.PinRemoved:
		p.Gone = true
	}
}

// Live reports whether the request exists and was neither removed nor replaced.
func (p *Pin) Live() bool { return p.Exists && !p.Gone }

// Request decides a new pin request. The caller has validated spec with ValidatePinSpec.
func Request(org, requestID string, spec PinSpec) events.PinRequested {
	return events.PinRequested{OrgID: org, RequestID: requestID, CID: spec.CID, Name: spec.Name, Origins: spec.Origins, Meta: spec.Meta}
}

// Remove decides the removal of this pin request.
func (p *Pin) Remove() (events.Event, error) {
	if !p.Live() {
		return nil, Errorf(ErrNotFound, "pin request %s does not exist", p.RequestID)
	}
	return events.PinRemoved{OrgID: p.OrgID, RequestID: p.RequestID}, nil
}

// Replace decides replacing this request by a new one with its own id: the old one is gone and the new one is
// requested, in one atomic append.
func (p *Pin) Replace(newID string, spec PinSpec) (events.PinReplaced, events.PinRequested, error) {
	if !p.Live() {
		return events.PinReplaced{}, events.PinRequested{}, Errorf(ErrNotFound, "pin request %s does not exist", p.RequestID)
	}
	req := Request(p.OrgID, newID, spec)
	req.Replaces = p.RequestID
	return events.PinReplaced{OrgID: p.OrgID, RequestID: p.RequestID, ReplacedBy: newID}, req, nil
}
