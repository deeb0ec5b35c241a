package domain

import (
	"context"
	"errors"
	"fmt"
	"maps"

	"github.com/anchorage-pin/anchorage/events"
	"github.com/google/uuid"
)

// MaxAttempts bounds how often a command is re-decided after an optimistic-concurrency conflict.
const MaxAttempts = 4

// Service runs commands: load an aggregate, fold, decide, append under optimistic concurrency, retry on
// conflict.
type Service struct {
	Log    EventLog
	Usage  Usage // nil disables the quota check
	Env    Env
	Tokens TokenPolicy
}

// Appended is the outcome of a command: the stream sequence of its last event.
type Appended struct {
	Seq uint64
	// Replayed is true when an idempotent request was answered with the result of an earlier try.
	Replayed bool
}

// ValidID reports whether id can name an aggregate instance (anchorage ids are UUIDs). Anything else cannot
// exist, so lookups treat it as not found without touching the log.
func ValidID(id string) bool {
	_, err := uuid.Parse(id)
	return err == nil && len(id) == 36
}

// decide runs one load → fold → decide → append cycle, retrying on conflict. decideFn receives the loaded
// records and the subject's last sequence and returns the events to append (none: nothing to do).
func (s *Service) decide(ctx context.Context, subject string, decideFn func(recs []events.Record, last uint64) ([]Message, error)) (uint64, error) {
	return s.decideOrdered(ctx, subject, "", decideFn)
}

// decideOrdered is decide with the decision made and appended under orderKey (see OrderedAppender); "" for none.
func (s *Service) decideOrdered(ctx context.Context, subject, orderKey string, decideFn func(recs []events.Record, last uint64) ([]Message, error)) (uint64, error) {
	for attempt := 1; ; attempt++ {
		recs, last, err := s.Log.Load(ctx, subject)
		if err != nil {
			return 0, fmt.Errorf("load %s: %w", subject, err)
		}
		var seqs []uint64
		if orderKey == "" {
			msgs, derr := decideFn(recs, last)
			if derr != nil || len(msgs) == 0 {
				return last, derr
			}
			seqs, err = s.Log.Append(ctx, msgs...)
		} else {
			var derr error
			seqs, err = s.appendOrdered(ctx, orderKey, func() ([]Message, error) {
				msgs, err := decideFn(recs, last)
				derr = err
				return msgs, err
			})
			if derr != nil || (err == nil && len(seqs) == 0) {
				return last, derr // the decision refused the command or had nothing to do: no append happened
			}
		}
		if err == nil {
			return seqs[len(seqs)-1], nil
		}
		if !errors.Is(err, ErrConflict) {
			return 0, err
		}
		if attempt == MaxAttempts {
			return 0, ReasonErrorf(ErrConflict, "CONCURRENT_MODIFICATION",
				"%s kept changing while this request was being applied (%d attempts); retry the request", subject, attempt)
		}
	}
}

func (s *Service) envelope(m Meta, e events.Event) (events.Envelope, error) {
	return events.New(s.Env.NewID(), s.Env.Now(), m.Actor, m.Corr, e)
}

// one wraps a single decided event (nil: nothing to do) as the message to append.
func (s *Service) one(m Meta, subject string, last uint64, ev events.Event, err error) ([]Message, error) {
	if err != nil || ev == nil {
		return nil, err
	}
	env, err := s.envelope(m, ev)
	if err != nil {
		return nil, err
	}
	return []Message{{Subject: subject, Expect: last, Envelope: env}}, nil
}

// appendOrdered builds and appends under key when the log supports it, else builds then appends.
func (s *Service) appendOrdered(ctx context.Context, key string, build func() ([]Message, error)) ([]uint64, error) {
	if oa, ok := s.Log.(OrderedAppender); ok {
		return oa.AppendOrdered(ctx, key, build)
	}
	msgs, err := build()
	if err != nil || len(msgs) == 0 {
		return nil, err
	}
	return s.Log.Append(ctx, msgs...)
}

// fold applies records to an aggregate.
func fold(agg interface{ Apply(events.Event) }, recs []events.Record) {
	for _, r := range recs {
		agg.Apply(r.Event)
	}
}

// RequestPin records a new pin request for org (POST /pins).
func (s *Service) RequestPin(ctx context.Context, m Meta, org string, spec PinSpec) (events.PinRequested, Appended, error) {
	spec, _, err := ValidatePinSpec(spec)
	if err != nil {
		return events.PinRequested{}, Appended{}, err
	}
	id := s.Env.NewID()
	if m.IdempotencyKey != "" {
		if len(m.IdempotencyKey) > 255 {
			return events.PinRequested{}, Appended{}, Errorf(ErrInvalid, "the Idempotency-Key is %d bytes long; the limit is 255", len(m.IdempotencyKey))
		}
		// The id derives from the key: a retry lands on the same, already written subject and is answered with
		// the original request, however long after (no dedup window involved).
		id = uuid.NewSHA1(idempotencyNamespace, []byte(org+"\x00"+m.IdempotencyKey)).String()
		if orig, app, ok, err := s.replayed(ctx, org, id, spec); ok || err != nil {
			return orig, app, err
		}
	}
	if err := s.checkQuota(ctx, org); err != nil {
		return events.PinRequested{}, Appended{}, err
	}
	ev := Request(org, id, spec)
	// The creation time is read under the org's append order, so created grows with stream order.
	seqs, err := s.appendOrdered(ctx, org, func() ([]Message, error) {
		ev.Created = s.Env.Created(org)
		env, err := s.envelope(m, ev)
		if err != nil {
			return nil, err
		}
		// The subject must be empty: a fresh id cannot conflict, and a keyed one conflicts with its own earlier try.
		return []Message{{Subject: events.PinSubject(org, ev.RequestID), Expect: 0, Envelope: env}}, nil
	})
	if errors.Is(err, ErrConflict) && m.IdempotencyKey != "" {
		if orig, app, ok, err := s.replayed(ctx, org, id, spec); ok || err != nil {
			return orig, app, err
		}
	}
	if err != nil {
		return events.PinRequested{}, Appended{}, err
	}
	return ev, Appended{Seq: seqs[0]}, nil
}

// idempotencyNamespace derives pin ids from Idempotency-Keys.
var idempotencyNamespace = uuid.MustParse("1b4e28ba-2fa1-11d2-883f-0016d3cca427")

// replayed looks for an earlier request under the same Idempotency-Key: the same pin is returned as it was
// requested (ok); a different one means the key was reused for another request.
func (s *Service) replayed(ctx context.Context, org, id string, spec PinSpec) (events.PinRequested, Appended, bool, error) {
	recs, _, err := s.Log.Load(ctx, events.PinSubject(org, id))
	if err != nil || len(recs) == 0 {
		return events.PinRequested{}, Appended{}, false, err
	}
	orig, ok := recs[0].Event.(events.PinRequested)
	if !ok {
		return events.PinRequested{}, Appended{}, false, nil
	}
	if orig.CID != spec.CID || orig.Name != spec.Name || !maps.Equal(orig.Meta, spec.Meta) {
		return events.PinRequested{}, Appended{}, true, ReasonErrorf(ErrInvalid, "IDEMPOTENCY_KEY_REUSED",
			"this Idempotency-Key was already used for another pin request (cid %s); use a new key for a new request", clip(orig.CID))
	}
	return orig, Appended{Seq: recs[0].Seq, Replayed: true}, true, nil
}

func (s *Service) checkQuota(ctx context.Context, org string) error {
	if s.Usage == nil {
		return nil
	}
	pins, maxPins, err := s.Usage.PinUsage(ctx, org)
	if err != nil {
		return fmt.Errorf("quota check: %w", err)
	}
	if maxPins > 0 && pins >= maxPins {
		return Errorf(ErrInsufficientFund, "the org holds %d pin requests and its quota is %d; remove pins or ask an operator to raise the quota", pins, maxPins)
	}
	return nil
}

// ReplacePin replaces pin request oldID by a new one (POST /pins/{requestid}).
func (s *Service) ReplacePin(ctx context.Context, m Meta, org, oldID string, spec PinSpec) (events.PinRequested, Appended, error) {
	spec, _, err := ValidatePinSpec(spec)
	if err != nil {
		return events.PinRequested{}, Appended{}, err
	}
	if !ValidID(oldID) {
		return events.PinRequested{}, Appended{}, Errorf(ErrNotFound, "pin request %q does not exist", clip(oldID))
	}
	newID := s.Env.NewID()
	var out events.PinRequested
	seq, err := s.decideOrdered(ctx, events.PinSubject(org, oldID), org, func(recs []events.Record, last uint64) ([]Message, error) {
		p := Pin{RequestID: oldID}
		fold(&p, recs)
		replaced, requested, err := p.Replace(newID, spec)
		if err != nil {
			return nil, err
		}
		requested.Created = s.Env.Created(org)
		out = requested
		e1, err := s.envelope(m, replaced)
		if err != nil {
			return nil, err
		}
		e2, err := s.envelope(m, requested)
		if err != nil {
			return nil, err
		}
		// The new request goes first. Projectors may commit an atomic append in two parts; in between, the
		// successor must already exist (pending), or the old request would look replaced by nothing and its
		// placements would be released before the new ones are pinned (blocks they share would go unpinned).
		return []Message{
			{Subject: events.PinSubject(org, newID), Expect: 0, Envelope: e2},
			{Subject: events.PinSubject(org, oldID), Expect: last, Envelope: e1},
		}, nil
	})
	return out, Appended{Seq: seq}, err
}

// RemovePin removes pin request id (DELETE /pins/{requestid}).
func (s *Service) RemovePin(ctx context.Context, m Meta, org, id string) (Appended, error) {
	if !ValidID(id) {
		return Appended{}, Errorf(ErrNotFound, "pin request %q does not exist", clip(id))
	}
	subject := events.PinSubject(org, id)
	seq, err := s.decide(ctx, subject, func(recs []events.Record, last uint64) ([]Message, error) {
		p := Pin{RequestID: id}
		fold(&p, recs)
		ev, err := p.Remove()
		return s.one(m, subject, last, ev, err)
	})
	return Appended{Seq: seq}, err
}

// CreateOrg creates an org; its id derives from the slug.
func (s *Service) CreateOrg(ctx context.Context, m Meta, slug, name string) (string, Appended, error) {
	if err := ValidateSlug(slug); err != nil {
		return "", Appended{}, err
	}
	id := OrgIDForSlug(slug)
	subject := events.OrgSubject(id)
	seq, err := s.decide(ctx, subject, func(recs []events.Record, last uint64) ([]Message, error) {
		var o Org
		fold(&o, recs)
		ev, err := o.Create(slug, name)
		return s.one(m, subject, last, ev, err)
	})
	return id, Appended{Seq: seq}, err
}

// SetOrgQuota sets an org's pin quota (0 = unlimited).
func (s *Service) SetOrgQuota(ctx context.Context, m Meta, orgID string, maxPins int64) (Appended, error) {
	if !ValidID(orgID) {
		return Appended{}, Errorf(ErrNotFound, "org %q does not exist", clip(orgID))
	}
	subject := events.OrgSubject(orgID)
	seq, err := s.decide(ctx, subject, func(recs []events.Record, last uint64) ([]Message, error) {
		var o Org
		fold(&o, recs)
		ev, err := o.SetQuota(maxPins)
		return s.one(m, subject, last, ev, err)
	})
	return Appended{Seq: seq}, err
}

// MintToken records a new API token for an existing org. The caller signs the JWT from the returned event.
func (s *Service) MintToken(ctx context.Context, m Meta, c MintToken) (events.TokenMinted, Appended, error) {
	if !ValidID(c.OrgID) {
		return events.TokenMinted{}, Appended{}, Errorf(ErrNotFound, "org %q does not exist", clip(c.OrgID))
	}
	orgRecs, _, err := s.Log.Load(ctx, events.OrgSubject(c.OrgID))
	if err != nil {
		return events.TokenMinted{}, Appended{}, fmt.Errorf("load org: %w", err)
	}
	var o Org
	fold(&o, orgRecs)
	if !o.Exists {
		return events.TokenMinted{}, Appended{}, Errorf(ErrNotFound, "org %s does not exist", c.OrgID)
	}
	if c.TokenID == "" {
		c.TokenID = s.Env.NewID()
	} else if !ValidID(c.TokenID) {
		return events.TokenMinted{}, Appended{}, Errorf(ErrInvalid, "token id %q is not a UUID", clip(c.TokenID))
	}
	subject := events.TokenSubject(c.OrgID, c.TokenID)
	var out events.TokenMinted
	seq, err := s.decide(ctx, subject, func(recs []events.Record, last uint64) ([]Message, error) {
		var t Token
		fold(&t, recs)
		ev, err := t.Mint(c, s.Tokens, s.Env.Now())
		out = ev
		return s.one(m, subject, last, ev, err)
	})
	return out, Appended{Seq: seq}, err
}

// RevokeToken revokes an API token. Revoking a revoked token succeeds and records nothing.
func (s *Service) RevokeToken(ctx context.Context, m Meta, orgID, tokenID, reason string) (Appended, error) {
	if !ValidID(orgID) || !ValidID(tokenID) {
		return Appended{}, Errorf(ErrNotFound, "token %q does not exist", clip(tokenID))
	}
	subject := events.TokenSubject(orgID, tokenID)
	seq, err := s.decide(ctx, subject, func(recs []events.Record, last uint64) ([]Message, error) {
		t := Token{TokenID: tokenID}
		fold(&t, recs)
		ev, err := t.Revoke(reason)
		return s.one(m, subject, last, ev, err)
	})
	return Appended{Seq: seq}, err
}

// RegisterNode records a node's identity, addresses and capacity, if they changed.
func (s *Service) RegisterNode(ctx context.Context, m Meta, nodeID, peerID string, addrs []string, capacity int64) (Appended, error) {
	if !ValidNodeID(nodeID) {
		return Appended{}, Errorf(ErrInvalid, "node id %q is invalid: use 1-64 letters, digits, '-' or '_', starting with a letter or digit", clip(nodeID))
	}
	subject := events.NodeSubject(nodeID)
	// A node registers at every start, nearly always with what it registered last: when the subject's last event
	// is that registration, nothing is decided and the history (one event per change of address, each in a
	// message block of its own) is not read.
	if ll, ok := s.Log.(LastLoader); ok {
		rec, found, err := ll.LoadLast(ctx, subject)
		if err != nil {
			return Appended{}, fmt.Errorf("load %s: %w", subject, err)
		}
		if _, reg := rec.Event.(events.NodeRegistered); found && reg {
			n := Node{ID: nodeID}
			n.Apply(rec.Event)
			if ev, err := n.Register(peerID, addrs, capacity); err == nil && ev == nil {
				return Appended{Seq: rec.Seq}, nil
			}
		}
	}
	seq, err := s.decide(ctx, subject, func(recs []events.Record, last uint64) ([]Message, error) {
		n := Node{ID: nodeID}
		fold(&n, recs)
		ev, err := n.Register(peerID, addrs, capacity)
		return s.one(m, subject, last, ev, err)
	})
	return Appended{Seq: seq}, err
}

// NodeOp is an operator's action on a node.
type NodeOp string

const (
	NodeCordon   NodeOp = "cordon"
	NodeDrain    NodeOp = "drain"
	NodeUncordon NodeOp = "uncordon"
)

// OperateNode cordons, drains or uncordons a node.
func (s *Service) OperateNode(ctx context.Context, m Meta, nodeID string, op NodeOp, reason string) (Appended, error) {
	if !ValidNodeID(nodeID) {
		return Appended{}, Errorf(ErrNotFound, "node %q does not exist", clip(nodeID))
	}
	subject := events.NodeSubject(nodeID)
	seq, err := s.decide(ctx, subject, func(recs []events.Record, last uint64) ([]Message, error) {
		n := Node{ID: nodeID}
		fold(&n, recs)
		var ev events.Event
		var err error
		switch op {
		case NodeCordon:
			ev, err = n.Cordon(reason)
		case NodeDrain:
			ev, err = n.Drain(reason)
		case NodeUncordon:
			ev, err = n.Uncordon()
		default:
			err = Errorf(ErrInvalid, "unknown node operation %q", op)
		}
		return s.one(m, subject, last, ev, err)
	})
	return Appended{Seq: seq}, err
}

// SetMaintenance pauses (on) or resumes placement. The API keeps accepting pins; they stay queued.
func (s *Service) SetMaintenance(ctx context.Context, m Meta, on bool, reason string) (Appended, error) {
	if len(reason) > 1024 {
		return Appended{}, Errorf(ErrInvalid, "the maintenance reason is limited to 1024 bytes")
	}
	seq, err := s.decide(ctx, events.SchedMaintenance, func(recs []events.Record, last uint64) ([]Message, error) {
		current := false
		for _, r := range recs {
			if e, ok := r.Event.(events.MaintenanceSet); ok {
				current = e.On
			}
		}
		if current == on {
			return nil, nil
		}
		return s.one(m, events.SchedMaintenance, last, events.MaintenanceSet{On: on, Reason: reason}, nil)
	})
	return Appended{Seq: seq}, err
}
