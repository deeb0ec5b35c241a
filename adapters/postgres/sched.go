package postgres

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/anchorage-pin/anchorage/adapters/postgres/internal/dbsqlc"
	"github.com/anchorage-pin/anchorage/projections"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
)

// SchedulerStore is the scheduler's view of the read models (owner role, across orgs).
type SchedulerStore struct{ pool *pgxpool.Pool }

var _ projections.SchedulerStore = (*SchedulerStore)(nil)

// NewSchedulerStore returns the scheduler's store over an owner-role pool.
func NewSchedulerStore(pool *pgxpool.Pool) *SchedulerStore { return &SchedulerStore{pool: pool} }

// SchedState returns the latest term and maintenance mode.
func (s *SchedulerStore) SchedState(ctx context.Context) (projections.SchedState, error) {
	st, err := queries.SchedStateGet(ctx, s.pool)
	if err != nil {
		return projections.SchedState{}, interpret(err)
	}
	out := projections.SchedState{Term: uint64(st.Term), Maintenance: st.Maintenance, Note: st.MaintenanceNote}
	if st.MaintenanceSince != nil {
		out.Since = *st.MaintenanceSince
	}
	return out, nil
}

// Nodes lists registered nodes with their placement counts.
func (s *SchedulerStore) Nodes(ctx context.Context) ([]projections.NodeRow, error) {
	rows, err := queries.NodeList(ctx, s.pool)
	if err != nil {
		return nil, interpret(err)
	}
	out := make([]projections.NodeRow, len(rows))
	for i, r := range rows {
		out[i] = projections.NodeRow{ID: r.NodeID, Addrs: r.Addrs, Capacity: r.Capacity, State: r.State, Placed: r.Placed}
	}
	return out, nil
}

// Underplaced returns live pins with fewer than replication placements, oldest first.
func (s *SchedulerStore) Underplaced(ctx context.Context, replication, limit int) ([]projections.PinToPlace, error) {
	rows, err := queries.SchedUnderplaced(ctx, s.pool, dbsqlc.SchedUnderplacedParams{Replication: int16(replication), Lim: int32(limit)})
	if err != nil {
		return nil, interpret(err)
	}
	out := make([]projections.PinToPlace, 0, len(rows))
	for _, r := range rows {
		p := projections.PinToPlace{PinRef: projections.PinRef{OrgID: r.OrgID.String(), RequestID: r.RequestID.String()}, CID: r.Cid, PlacedNodes: r.PlacedNodes}
		if len(r.Origins) > 0 {
			_ = json.Unmarshal(r.Origins, &p.Origins)
		}
		if r.Replaces != nil {
			p.Replaces = r.Replaces.String()
		}
		out = append(out, p)
	}
	return out, nil
}

// NodesOf returns the nodes holding each request's placements.
func (s *SchedulerStore) NodesOf(ctx context.Context, refs []projections.PinRef) (map[projections.PinRef][]string, error) {
	var prm dbsqlc.SchedNodesOfParams
	for _, r := range refs {
		o, err1 := uuid.Parse(r.OrgID)
		q, err2 := uuid.Parse(r.RequestID)
		if err1 != nil || err2 != nil {
			continue
		}
		prm.OrgIds = append(prm.OrgIds, o)
		prm.RequestIds = append(prm.RequestIds, q)
	}
	rows, err := queries.SchedNodesOf(ctx, s.pool, prm)
	if err != nil {
		return nil, interpret(err)
	}
	out := map[projections.PinRef][]string{}
	for _, r := range rows {
		k := projections.PinRef{OrgID: r.OrgID.String(), RequestID: r.RequestID.String()}
		out[k] = append(out[k], r.NodeID)
	}
	return out, nil
}

func placementRefs[T any](rows []T, f func(T) (uuid.UUID, uuid.UUID, string, string, bool)) []projections.PlacementRef {
	out := make([]projections.PlacementRef, len(rows))
	for i, r := range rows {
		o, q, n, c, replaced := f(r)
		out[i] = projections.PlacementRef{PinRef: projections.PinRef{OrgID: o.String(), RequestID: q.String()}, NodeID: n, CID: c, Replaced: replaced}
	}
	return out
}

// Releasable returns placements nothing needs any more.
func (s *SchedulerStore) Releasable(ctx context.Context, limit int) ([]projections.PlacementRef, error) {
	rows, err := queries.SchedReleasable(ctx, s.pool, int32(limit))
	if err != nil {
		return nil, interpret(err)
	}
	return placementRefs(rows, func(r dbsqlc.SchedReleasableRow) (uuid.UUID, uuid.UUID, string, string, bool) {
		return r.OrgID, r.RequestID, r.NodeID, r.Cid, r.Replaced
	}), nil
}

// MovesDone returns the old placements of finished moves.
func (s *SchedulerStore) MovesDone(ctx context.Context, limit int) ([]projections.PlacementRef, error) {
	rows, err := queries.SchedMovesDone(ctx, s.pool, int32(limit))
	if err != nil {
		return nil, interpret(err)
	}
	return placementRefs(rows, func(r dbsqlc.SchedMovesDoneRow) (uuid.UUID, uuid.UUID, string, string, bool) {
		return r.OrgID, r.RequestID, r.NodeID, r.Cid, false
	}), nil
}

// OnDrained returns placements on drained nodes not yet being moved.
func (s *SchedulerStore) OnDrained(ctx context.Context, nodes []string, limit int) ([]projections.PlacementRef, error) {
	rows, err := queries.SchedOnDrained(ctx, s.pool, dbsqlc.SchedOnDrainedParams{NodeIds: nodes, Lim: int32(limit)})
	if err != nil {
		return nil, interpret(err)
	}
	out := placementRefs(rows, func(r dbsqlc.SchedOnDrainedRow) (uuid.UUID, uuid.UUID, string, string, bool) {
		return r.OrgID, r.RequestID, r.NodeID, r.Cid, false
	})
	for i, r := range rows {
		if len(r.Origins) > 0 {
			_ = json.Unmarshal(r.Origins, &out[i].Origins)
		}
	}
	return out, nil
}

// MovesFailed returns the new placements of moves that failed.
func (s *SchedulerStore) MovesFailed(ctx context.Context, limit int) ([]projections.PlacementRef, error) {
	rows, err := queries.SchedMovesFailed(ctx, s.pool, int32(limit))
	if err != nil {
		return nil, interpret(err)
	}
	return placementRefs(rows, func(r dbsqlc.SchedMovesFailedRow) (uuid.UUID, uuid.UUID, string, string, bool) {
		return r.OrgID, r.RequestID, r.NodeID, r.Cid, false
	}), nil
}

// Placements lists every live placement (rebalance planning).
func (s *SchedulerStore) Placements(ctx context.Context) ([]projections.PlacementRef, error) {
	rows, err := queries.PlacementList(ctx, s.pool)
	if err != nil {
		return nil, interpret(err)
	}
	return placementRefs(rows, func(r dbsqlc.PlacementListRow) (uuid.UUID, uuid.UUID, string, string, bool) {
		return r.OrgID, r.RequestID, r.NodeID, "", false
	}), nil
}

// MoveSource returns what a move of one live placement needs: the CID, and where to fetch it from (the node
// it leaves, then the pin's own origins).
func (s *SchedulerStore) MoveSource(ctx context.Context, org, request, node string) (cid string, origins []string, err error) {
	o, err1 := uuid.Parse(org)
	q, err2 := uuid.Parse(request)
	if err1 != nil || err2 != nil {
		return "", nil, fmt.Errorf("postgres: placement %s/%s: bad ids", org, request)
	}
	p, err := queries.PlacementOrigins(ctx, s.pool, dbsqlc.PlacementOriginsParams{OrgID: o, RequestID: q, NodeID: node})
	if err != nil {
		return "", nil, interpret(err)
	}
	var pinOrigins []string
	if len(p.Origins) > 0 {
		_ = json.Unmarshal(p.Origins, &pinOrigins)
	}
	return p.Cid, projections.MoveOrigins(p.NodeAddrs, pinOrigins), nil
}
