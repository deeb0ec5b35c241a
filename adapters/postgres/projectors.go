package postgres

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/anchorage-pin/anchorage/adapters/postgres/internal/dbsqlc"
	"github.com/anchorage-pin/anchorage/domain"
	"github.com/anchorage-pin/anchorage/events"
	"github.com/anchorage-pin/anchorage/projections"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// BucketSize is how many consecutive pin positions one pin_counts row covers.
const BucketSize = 1024

// Projection names. Renaming one rebuilds it from the start of the log.
const (
	ProjectionOrgs   = "orgs"
	ProjectionTokens = "tokens"
	ProjectionPins   = "pins"
)

// Projectors returns the read-model projectors, all writing through the owner pool.
func Projectors(pool *pgxpool.Pool) []projections.Projector {
	return []projections.Projector{&OrgsProjector{pool}, &TokensProjector{pool}, &PinsProjector{pool}}
}

// inBatch runs fn and the checkpoint compare-and-set in one transaction. The checkpoint moves first: a second
// instance working on the same batch blocks on that row and then finds it moved.
func inBatch(ctx context.Context, pool *pgxpool.Pool, name string, prev uint64, recs []events.Record, fn func(tx pgx.Tx) error) error {
	if len(recs) == 0 {
		return nil
	}
	next := recs[len(recs)-1].Seq
	return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		n, err := queries.CheckpointAdvance(ctx, tx, dbsqlc.CheckpointAdvanceParams{Name: name, Next: int64(next), Prev: int64(prev)})
		if err != nil {
			return fmt.Errorf("advance checkpoint %s: %w", name, interpret(err))
		}
		if n == 0 {
			return projections.ErrCheckpointMoved
		}
		if err := fn(tx); err != nil {
			return interpret(err)
		}
		return nil
	})
}

func checkpoint(ctx context.Context, pool *pgxpool.Pool, name string) (uint64, error) {
	n, err := queries.CheckpointGet(ctx, pool, name)
	if err != nil {
		return 0, interpret(err)
	}
	return uint64(n), nil
}

// OrgsProjector maintains orgs.
type OrgsProjector struct{ pool *pgxpool.Pool }

func (p *OrgsProjector) Name() string      { return ProjectionOrgs }
func (p *OrgsProjector) Filters() []string { return []string{events.AllOrgs} }
func (p *OrgsProjector) Checkpoint(ctx context.Context) (uint64, error) {
	return checkpoint(ctx, p.pool, ProjectionOrgs)
}

func (p *OrgsProjector) Apply(ctx context.Context, prev uint64, recs []events.Record) error {
	return inBatch(ctx, p.pool, ProjectionOrgs, prev, recs, func(tx pgx.Tx) error {
		for _, r := range recs {
			switch e := r.Event.(type) {
			case events.OrgCreated:
				id, err := uuid.Parse(e.OrgID)
				if err != nil {
					return fmt.Errorf("event %d: org id: %w", r.Seq, err)
				}
				if err := queries.OrgInsert(ctx, tx, dbsqlc.OrgInsertParams{OrgID: id, Slug: e.Slug, Name: e.Name, CreatedAt: r.At, LastSeq: int64(r.Seq)}); err != nil {
					return err
				}
			case events.OrgQuotaSet:
				id, err := uuid.Parse(e.OrgID)
				if err != nil {
					return fmt.Errorf("event %d: org id: %w", r.Seq, err)
				}
				if err := queries.OrgSetQuota(ctx, tx, dbsqlc.OrgSetQuotaParams{OrgID: id, MaxPins: e.MaxPins, LastSeq: int64(r.Seq)}); err != nil {
					return err
				}
			}
		}
		return nil
	})
}

// TokensProjector maintains tokens (never their secrets).
type TokensProjector struct{ pool *pgxpool.Pool }

func (p *TokensProjector) Name() string      { return ProjectionTokens }
func (p *TokensProjector) Filters() []string { return []string{events.AllTokens} }
func (p *TokensProjector) Checkpoint(ctx context.Context) (uint64, error) {
	return checkpoint(ctx, p.pool, ProjectionTokens)
}

func (p *TokensProjector) Apply(ctx context.Context, prev uint64, recs []events.Record) error {
	return inBatch(ctx, p.pool, ProjectionTokens, prev, recs, func(tx pgx.Tx) error {
		for _, r := range recs {
			switch e := r.Event.(type) {
			case events.TokenMinted:
				org, err1 := uuid.Parse(e.OrgID)
				tok, err2 := uuid.Parse(e.TokenID)
				if err1 != nil || err2 != nil {
					return fmt.Errorf("event %d: bad ids in %s", r.Seq, r.Type)
				}
				if err := queries.TokenInsert(ctx, tx, dbsqlc.TokenInsertParams{
					OrgID: org, TokenID: tok, Subject: e.Subject, Label: e.Label, Scopes: e.Scopes, KeyID: e.KeyID,
					IssuedAt: e.IssuedAt, ExpiresAt: e.ExpiresAt, LastSeq: int64(r.Seq),
				}); err != nil {
					return err
				}
			case events.TokenRevoked:
				org, err1 := uuid.Parse(e.OrgID)
				tok, err2 := uuid.Parse(e.TokenID)
				if err1 != nil || err2 != nil {
					return fmt.Errorf("event %d: bad ids in %s", r.Seq, r.Type)
				}
				at := r.At
				if err := queries.TokenRevoke(ctx, tx, dbsqlc.TokenRevokeParams{OrgID: org, TokenID: tok, RevokedAt: &at, Reason: e.Reason, LastSeq: int64(r.Seq)}); err != nil {
					return err
				}
			}
		}
		return nil
	})
}

// PinsProjector maintains pins, pin_counts and pin_org_state from pin and status-observation events.
//
// It folds each batch in memory first (a pin created and removed in one batch never touches a table), then
// applies set-based statements: one DELETE, one UPDATE, one COPY, one counts upsert, one org-state upsert.
// Positions and created times are handed out in stream order from pin_org_state, so a replay with any batching
// reproduces exactly the same rows.
type PinsProjector struct{ pool *pgxpool.Pool }

func (p *PinsProjector) Name() string      { return ProjectionPins }
func (p *PinsProjector) Filters() []string { return []string{events.AllPins, events.AllObs} }
func (p *PinsProjector) Checkpoint(ctx context.Context) (uint64, error) {
	return checkpoint(ctx, p.pool, ProjectionPins)
}

type pinKey struct{ org, id uuid.UUID }

type orgState struct {
	lastPos     int64
	lastCreated time.Time
	live        int64
}

type statusUpdate struct {
	status int16
	info   []byte
	seq    int64
}

type newPin struct {
	key                 pinKey
	pos                 int64
	created             time.Time
	status              int16
	cid                 string
	cidKey              []byte
	name, nameLower     string
	meta, origins, info []byte
	seq                 int64 // -1: removed within the batch
}

var jsonNull = []byte("null")

func jsonOrNull(b []byte) []byte {
	if len(b) == 0 {
		return jsonNull
	}
	return b
}

type countKey struct {
	org    uuid.UUID
	status int16
	bucket int64
}

func (p *PinsProjector) Apply(ctx context.Context, prev uint64, recs []events.Record) error {
	return inBatch(ctx, p.pool, ProjectionPins, prev, recs, func(tx pgx.Tx) error {
		return applyPins(ctx, tx, recs)
	})
}

func applyPins(ctx context.Context, tx pgx.Tx, recs []events.Record) error {
	// Lock the state of every org the batch touches.
	orgSet := map[uuid.UUID]bool{}
	for _, r := range recs {
		if org, ok := pinOrg(r.Event); ok {
			orgSet[org] = true
		}
	}
	orgIDs := make([]uuid.UUID, 0, len(orgSet))
	for id := range orgSet {
		orgIDs = append(orgIDs, id)
	}
	rows, err := queries.PinOrgStateLock(ctx, tx, orgIDs)
	if err != nil {
		return err
	}
	states := make(map[uuid.UUID]*orgState, len(orgIDs))
	for _, r := range rows {
		states[r.OrgID] = &orgState{lastPos: r.LastPos, lastCreated: r.LastCreated, live: r.LivePins}
	}
	state := func(org uuid.UUID) *orgState {
		st := states[org]
		if st == nil {
			st = &orgState{}
			states[org] = st
		}
		return st
	}

	var inserts []*newPin
	inserted := map[pinKey]*newPin{}
	var deletes []pinKey
	updates := map[pinKey]statusUpdate{}
	var updateOrder []pinKey
	counts := map[countKey]int64{}

	for _, r := range recs {
		switch e := r.Event.(type) {
		case events.PinRequested:
			k, err := keyOf(e.OrgID, e.RequestID)
			if err != nil {
				return fmt.Errorf("event %d: %w", r.Seq, err)
			}
			if _, dup := inserted[k]; dup {
				continue
			}
			pc, err := domain.ParseCID(e.CID)
			if err != nil {
				return fmt.Errorf("event %d: %w", r.Seq, err)
			}
			st := state(k.org)
			created := e.Created
			if created.IsZero() {
				created = r.At
			}
			created = created.UTC().Truncate(time.Millisecond)
			if !created.After(st.lastCreated) {
				created = st.lastCreated.Add(time.Millisecond)
			}
			st.lastPos++
			st.lastCreated = created
			st.live++
			row := &newPin{
				key: k, pos: st.lastPos, created: created, status: int16(projections.StatusQueued),
				cid: e.CID, cidKey: pc.Key, name: e.Name, nameLower: strings.ToLower(e.Name), seq: int64(r.Seq),
			}
			if len(e.Meta) > 0 {
				if row.meta, err = json.Marshal(e.Meta); err != nil {
					return err
				}
			}
			if len(e.Origins) > 0 {
				if row.origins, err = json.Marshal(e.Origins); err != nil {
					return err
				}
			}
			inserts = append(inserts, row)
			inserted[k] = row
		case events.PinReplaced, events.PinRemoved:
			var org, id string
			if rp, ok := e.(events.PinReplaced); ok {
				org, id = rp.OrgID, rp.RequestID
			} else {
				rm := e.(events.PinRemoved)
				org, id = rm.OrgID, rm.RequestID
			}
			k, err := keyOf(org, id)
			if err != nil {
				return fmt.Errorf("event %d: %w", r.Seq, err)
			}
			delete(updates, k)
			if row, ok := inserted[k]; ok {
				// Created in this batch: it never reaches the table.
				delete(inserted, k)
				row.seq = -1
				state(k.org).live--
				continue
			}
			deletes = append(deletes, k)
		case events.PinStatusObserved:
			k, err := keyOf(e.OrgID, e.RequestID)
			if err != nil {
				return fmt.Errorf("event %d: %w", r.Seq, err)
			}
			s, ok := projections.ParseStatus(e.Status)
			if !ok {
				return fmt.Errorf("event %d: unknown status %q", r.Seq, e.Status)
			}
			var info []byte
			if len(e.Info) > 0 {
				if info, err = json.Marshal(e.Info); err != nil {
					return err
				}
			}
			if row, ok := inserted[k]; ok {
				row.status, row.seq, row.info = int16(s), int64(r.Seq), info
				continue
			}
			if _, seen := updates[k]; !seen {
				updateOrder = append(updateOrder, k)
			}
			updates[k] = statusUpdate{status: int16(s), info: info, seq: int64(r.Seq)}
		}
	}

	// 1. Deletes of rows from earlier batches.
	if len(deletes) > 0 {
		orgs, ids := make([]uuid.UUID, len(deletes)), make([]uuid.UUID, len(deletes))
		for i, k := range deletes {
			orgs[i], ids[i] = k.org, k.id
		}
		gone, err := queries.PinsDelete(ctx, tx, dbsqlc.PinsDeleteParams{OrgIds: orgs, RequestIds: ids})
		if err != nil {
			return err
		}
		for _, g := range gone {
			counts[countKey{g.OrgID, g.Status, g.Pos / BucketSize}]--
			state(g.OrgID).live--
		}
	}
	// 2. Status changes of rows from earlier batches.
	if len(updateOrder) > 0 {
		var prm dbsqlc.PinsSetStatusParams
		for _, k := range updateOrder {
			u, ok := updates[k]
			if !ok {
				continue
			}
			prm.OrgIds = append(prm.OrgIds, k.org)
			prm.RequestIds = append(prm.RequestIds, k.id)
			prm.Statuses = append(prm.Statuses, u.status)
			prm.Infos = append(prm.Infos, u.info)
			prm.LastSeqs = append(prm.LastSeqs, u.seq)
		}
		if len(prm.OrgIds) > 0 {
			changed, err := queries.PinsSetStatus(ctx, tx, prm)
			if err != nil {
				return err
			}
			for _, c := range changed {
				if c.OldStatus != c.NewStatus {
					counts[countKey{c.OrgID, c.OldStatus, c.Pos / BucketSize}]--
					counts[countKey{c.OrgID, c.NewStatus, c.Pos / BucketSize}]++
				}
			}
		}
	}
	// 3. New rows.
	var ins dbsqlc.PinsInsertParams
	for _, row := range inserts {
		if row.seq < 0 {
			continue
		}
		ins.OrgIds = append(ins.OrgIds, row.key.org)
		ins.RequestIds = append(ins.RequestIds, row.key.id)
		ins.Pos = append(ins.Pos, row.pos)
		ins.Created = append(ins.Created, row.created)
		ins.Statuses = append(ins.Statuses, row.status)
		ins.Cids = append(ins.Cids, row.cid)
		ins.CidKeys = append(ins.CidKeys, row.cidKey)
		ins.Names = append(ins.Names, row.name)
		ins.NameLowers = append(ins.NameLowers, row.nameLower)
		ins.Metas = append(ins.Metas, jsonOrNull(row.meta))
		ins.Origins = append(ins.Origins, jsonOrNull(row.origins))
		ins.Infos = append(ins.Infos, jsonOrNull(row.info))
		ins.LastSeqs = append(ins.LastSeqs, row.seq)
		counts[countKey{row.key.org, row.status, row.pos / BucketSize}]++
	}
	if len(ins.OrgIds) > 0 {
		if err := queries.PinsInsert(ctx, tx, ins); err != nil {
			return err
		}
	}
	// 4. Counts.
	if len(counts) > 0 {
		var prm dbsqlc.PinCountsAddParams
		for k, d := range counts {
			if d == 0 {
				continue
			}
			prm.OrgIds = append(prm.OrgIds, k.org)
			prm.Statuses = append(prm.Statuses, k.status)
			prm.Buckets = append(prm.Buckets, k.bucket)
			prm.Deltas = append(prm.Deltas, d)
		}
		if len(prm.OrgIds) > 0 {
			if err := queries.PinCountsAdd(ctx, tx, prm); err != nil {
				return err
			}
		}
	}
	// 5. Org state.
	if len(states) > 0 {
		var prm dbsqlc.PinOrgStateSaveParams
		for id, st := range states {
			prm.OrgIds = append(prm.OrgIds, id)
			prm.LastPos = append(prm.LastPos, st.lastPos)
			prm.LastCreated = append(prm.LastCreated, st.lastCreated)
			prm.LivePins = append(prm.LivePins, st.live)
		}
		if err := queries.PinOrgStateSave(ctx, tx, prm); err != nil {
			return err
		}
	}
	return nil
}

func pinOrg(e events.Event) (uuid.UUID, bool) {
	var org string
	switch e := e.(type) {
	case events.PinRequested:
		org = e.OrgID
	case events.PinReplaced:
		org = e.OrgID
	case events.PinRemoved:
		org = e.OrgID
	default:
		return uuid.UUID{}, false
	}
	id, err := uuid.Parse(org)
	return id, err == nil
}

func keyOf(org, id string) (pinKey, error) {
	o, err := uuid.Parse(org)
	if err != nil {
		return pinKey{}, fmt.Errorf("org id %q: %w", org, err)
	}
	i, err := uuid.Parse(id)
	if err != nil {
		return pinKey{}, fmt.Errorf("request id %q: %w", id, err)
	}
	return pinKey{o, i}, nil
}
