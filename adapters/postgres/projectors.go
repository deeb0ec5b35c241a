package postgres

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/anchorage-pin/anchorage/adapters/postgres/internal/dbsqlc"
	"github.com/anchorage-pin/anchorage/domain"
	"github.com/anchorage-pin/anchorage/events"
	"github.com/anchorage-pin/anchorage/projections"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"
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

// Projectors returns the read-model projectors, all writing through the owner pool. The pins and audit
// projectors keep the planner's statistics of their tables current while they grow (growthAnalyzer), logging
// to log at debug level (what they analyzed) and warn (an ANALYZE that failed); nil: no log.
func Projectors(pool *pgxpool.Pool, log *slog.Logger) []projections.Projector {
	g := newGrowthAnalyzer(pool)
	if log != nil {
		g.log = log
	}
	return projectorsWith(pool, g)
}

// rebuildProjectors are Projectors without the analyzer: a rebuild's copies are analyzed once loaded.
func rebuildProjectors(pool *pgxpool.Pool) []projections.Projector { return projectorsWith(pool, nil) }

// projectorsWith builds the projectors, the pins and audit ones reporting their writes to g (nil: none).
func projectorsWith(pool *pgxpool.Pool, g *growthAnalyzer) []projections.Projector {
	pins, audit := NewPinsProjector(pool), NewAuditProjector(pool)
	pins.grow, audit.grow = g, g
	return []projections.Projector{&OrgsProjector{pool}, &TokensProjector{pool}, pins, audit}
}

// pipeline collects the statements of one batch (through sqlc's :exec methods) to send them in one round trip.
type pipeline struct{ b pgx.Batch }

var _ dbsqlc.DBTX = (*pipeline)(nil)

func (p *pipeline) Exec(_ context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	p.b.Queue(sql, args...)
	return pgconn.CommandTag{}, nil
}

func (p *pipeline) Query(context.Context, string, ...any) (pgx.Rows, error) {
	return nil, errors.New("postgres: a projection pipeline only queues statements")
}

func (p *pipeline) QueryRow(context.Context, string, ...any) pgx.Row {
	return errRow{errors.New("postgres: a projection pipeline only queues statements")}
}

type errRow struct{ err error }

func (r errRow) Scan(...any) error { return r.err }

// errCheckpointMoved is the SQLSTATE projection_advance raises.
const errCheckpointMoved = "AC001"

// applyBatch sends, as one pipeline, the checkpoint compare-and-set followed by the statements build queues. A
// pipeline runs as one implicit transaction that commits at its end: if the checkpoint moved, or any statement
// fails, nothing of it is applied. One round trip per batch, whatever its size.
func applyBatch(ctx context.Context, pool *pgxpool.Pool, name string, prev uint64, recs []events.Record, build func(db dbsqlc.DBTX) error) error {
	if len(recs) == 0 {
		return nil
	}
	var p pipeline
	if err := queries.CheckpointAdvanceOrFail(ctx, &p, dbsqlc.CheckpointAdvanceOrFailParams{Name: name, Prev: int64(prev), Next: int64(recs[len(recs)-1].Seq)}); err != nil {
		return err
	}
	if err := build(&p); err != nil {
		return err
	}
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return interpret(err)
	}
	defer conn.Release()
	fastUUIDs(conn.Conn().TypeMap())
	br := conn.SendBatch(ctx, &p.b)
	for i := 0; i < p.b.Len(); i++ {
		if _, err := br.Exec(); err != nil {
			_ = br.Close()
			return batchErr(err)
		}
	}
	return interpret(br.Close())
}

// batchErr is a batch's failure as the runner expects it: projections.ErrCheckpointMoved when the checkpoint's
// compare-and-set failed, else interpret's.
func batchErr(err error) error {
	var pe *pgconn.PgError
	if errors.As(err, &pe) && pe.Code == errCheckpointMoved {
		return projections.ErrCheckpointMoved
	}
	return interpret(err)
}

// applyBulkTx is applyBatch in a transaction of its own, for writes that use COPY (which a pipeline cannot
// hold): the checkpoint's compare-and-set first, then write's statements one by one.
func applyBulkTx(ctx context.Context, pool *pgxpool.Pool, name string, prev uint64, recs []events.Record, write func(tx pgx.Tx) error) error {
	if len(recs) == 0 {
		return nil
	}
	err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		fastUUIDs(tx.Conn().TypeMap())
		if err := queries.CheckpointAdvanceOrFail(ctx, tx, dbsqlc.CheckpointAdvanceOrFailParams{Name: name, Prev: int64(prev), Next: int64(recs[len(recs)-1].Seq)}); err != nil {
			return err
		}
		return write(tx)
	})
	return batchErr(err)
}

// fastUUIDs makes m encode google/uuid's UUID (the generated queries' uuid parameters, thousands per batch) as
// the 16 bytes it is. pgx otherwise takes it through its driver.Valuer: a string per value, parsed back, with an
// error built and discarded on the way, which cost a rebuild a third of its CPU. Idempotent.
func fastUUIDs(m *pgtype.Map) {
	if t, ok := m.TypeForOID(pgtype.UUIDOID); ok {
		if _, done := t.Codec.(uuidCodec); done {
			return
		}
	}
	t := &pgtype.Type{Name: "uuid", OID: pgtype.UUIDOID, Codec: uuidCodec{}}
	m.RegisterType(t)
	m.RegisterType(&pgtype.Type{Name: "_uuid", OID: pgtype.UUIDArrayOID, Codec: uuidArrayCodec{&pgtype.ArrayCodec{ElementType: t}}})
}

// uuidArrayCodec is pgx's uuid[] codec, encoding a []uuid.UUID (the generated batch statements' id columns)
// directly in the binary format. pgx otherwise walks the slice by reflection, boxing each element: 3.5 % of a
// rebuild's CPU in the CLI.
type uuidArrayCodec struct{ *pgtype.ArrayCodec }

func (c uuidArrayCodec) PlanEncode(m *pgtype.Map, oid uint32, format int16, value any) pgtype.EncodePlan {
	if _, ok := value.([]uuid.UUID); ok && format == pgtype.BinaryFormatCode {
		return uuidArrayBinary{}
	}
	return c.ArrayCodec.PlanEncode(m, oid, format, value)
}

type uuidArrayBinary struct{}

// Encode writes PostgreSQL's binary array: dimensions, a has-nulls flag, the element type, each dimension's
// length and lower bound, then each element as its length and bytes. A nil slice is NULL, as pgx has it.
func (uuidArrayBinary) Encode(value any, buf []byte) ([]byte, error) {
	v := value.([]uuid.UUID)
	if v == nil {
		return nil, nil
	}
	buf = binary.BigEndian.AppendUint32(buf, uint32(min(len(v), 1))) // an empty array has no dimension
	buf = binary.BigEndian.AppendUint32(buf, 0)
	buf = binary.BigEndian.AppendUint32(buf, pgtype.UUIDOID)
	if len(v) == 0 {
		return buf, nil
	}
	buf = binary.BigEndian.AppendUint32(buf, uint32(len(v)))
	buf = binary.BigEndian.AppendUint32(buf, 1)
	buf = slices.Grow(buf, len(v)*20)
	for i := range v {
		buf = binary.BigEndian.AppendUint32(buf, 16)
		buf = append(buf, v[i][:]...)
	}
	return buf, nil
}

// uuidCodec is pgx's uuid codec, encoding uuid.UUID directly in the binary format.
type uuidCodec struct{ pgtype.UUIDCodec }

func (c uuidCodec) PlanEncode(m *pgtype.Map, oid uint32, format int16, value any) pgtype.EncodePlan {
	if _, ok := value.(uuid.UUID); ok && format == pgtype.BinaryFormatCode {
		return uuidBinary{}
	}
	return c.UUIDCodec.PlanEncode(m, oid, format, value)
}

type uuidBinary struct{}

func (uuidBinary) Encode(value any, buf []byte) ([]byte, error) {
	u := value.(uuid.UUID)
	return append(buf, u[:]...), nil
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
	return applyBatch(ctx, p.pool, ProjectionOrgs, prev, recs, func(tx dbsqlc.DBTX) error {
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
	return applyBatch(ctx, p.pool, ProjectionTokens, prev, recs, func(tx dbsqlc.DBTX) error {
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
// It folds each batch in memory first (a pin created and removed in one batch never touches a table), then sends
// it as one pipeline: checkpoint compare-and-set, one DELETE, one UPDATE and one INSERT (each moving the counts
// in the same statement), one org-state upsert. Positions and created times are handed out in stream order from
// pin_org_state, whose last values it caches while its compare-and-sets keep succeeding, so a replay with any
// batching reproduces exactly the same rows.
type PinsProjector struct {
	pool *pgxpool.Pool
	grow *growthAnalyzer // nil: none
	mu   sync.Mutex
	orgs map[uuid.UUID]*orgPos // cached pin_org_state positions; nil after any failure
	term *uint64               // cached sched_state.term; nil after any failure
}

// NewPinsProjector returns the pins projector.
func NewPinsProjector(pool *pgxpool.Pool) *PinsProjector { return &PinsProjector{pool: pool} }

func (p *PinsProjector) Name() string { return ProjectionPins }
func (p *PinsProjector) Filters() []string {
	return []string{events.AllPins, events.AllPlace, events.AllNodes, events.AllSched}
}
func (p *PinsProjector) Checkpoint(ctx context.Context) (uint64, error) {
	return checkpoint(ctx, p.pool, ProjectionPins)
}

type pinKey struct{ org, id uuid.UUID }

type orgPos struct {
	lastPos     int64
	lastCreated time.Time
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
	replaces            uuid.UUID
	seq                 int64 // -1: removed within the batch
}

var jsonNull = []byte("null")

func jsonOrNull(b []byte) []byte {
	if len(b) == 0 {
		return jsonNull
	}
	return b
}

func (p *PinsProjector) Apply(ctx context.Context, prev uint64, recs []events.Record) error {
	return p.applyLocked(ctx, prev, recs, false)
}

// ApplyBulk is Apply for a rebuild's copies, which have no row-level security: the same rows, but those of the
// pins the batch requests, and of their placements, are written with COPY (as PinsInsert and PlacementsUpsert
// would have inserted them, counts included) in one transaction with the rest of the batch. A rebuild's
// batches are large (RebuildBatch), so most of a pin's events fall in the batch that requests it and most rows
// are written once, by COPY. On the seeded million-event log that replaced 3.3 s of PlacementsUpsert and 1.5 s
// of PinsInsert statements.
func (p *PinsProjector) ApplyBulk(ctx context.Context, prev uint64, recs []events.Record) error {
	return p.applyLocked(ctx, prev, recs, true)
}

func (p *PinsProjector) applyLocked(ctx context.Context, prev uint64, recs []events.Record, bulk bool) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	err := p.apply(ctx, prev, recs, bulk)
	if err != nil {
		p.orgs, p.term = nil, nil // whatever happened, the caches may no longer match the tables
	}
	return err
}

// positions makes sure the cache holds every org in need, reading the missing ones.
func (p *PinsProjector) positions(ctx context.Context, need map[uuid.UUID]bool) error {
	if p.orgs == nil {
		p.orgs = map[uuid.UUID]*orgPos{}
	}
	var missing []uuid.UUID
	for org := range need {
		if p.orgs[org] == nil {
			missing = append(missing, org)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	rows, err := queries.PinOrgStateGet(ctx, p.pool, missing)
	if err != nil {
		return interpret(err)
	}
	for _, org := range missing {
		p.orgs[org] = &orgPos{}
	}
	for _, r := range rows {
		p.orgs[r.OrgID] = &orgPos{lastPos: r.LastPos, lastCreated: r.LastCreated}
	}
	return nil
}

// apply folds recs and writes them: in one pipeline, or (bulk) in a transaction with COPY for the new rows.
func (p *PinsProjector) apply(ctx context.Context, prev uint64, recs []events.Record, bulk bool) error {
	need := map[uuid.UUID]bool{}
	for _, r := range recs {
		if e, ok := r.Event.(events.PinRequested); ok {
			if org, err := uuid.Parse(e.OrgID); err == nil {
				need[org] = true
			}
		}
	}
	if err := p.positions(ctx, need); err != nil {
		return err
	}
	// Work on copies: the cache only advances once the batch has committed.
	next := make(map[uuid.UUID]*orgPos, len(need))
	added := map[uuid.UUID]int64{}
	for org := range need {
		c := *p.orgs[org]
		next[org] = &c
	}

	if p.term == nil {
		st, err := queries.SchedStateGet(ctx, p.pool)
		if err != nil {
			return interpret(err)
		}
		t := uint64(st.Term)
		p.term = &t
	}
	term := *p.term

	var inserts []*newPin
	inserted := map[pinKey]*newPin{}
	var fresh map[pinKey]bool // bulk: the pins requested by this batch (whether or not removed again)
	if bulk {
		fresh = map[pinKey]bool{}
	}
	metaPairs := 0
	var deletes []pinKey
	var gone dbsqlc.PlacementsMarkGoneParams
	pl := newPlacementFold()
	var nodes []func(db dbsqlc.DBTX) error
	var sched []func(db dbsqlc.DBTX) error

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
			st := next[k.org]
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
			added[k.org]++
			row := &newPin{
				key: k, pos: st.lastPos, created: created, status: int16(projections.StatusQueued),
				cid: e.CID, cidKey: pc.Key, name: e.Name, nameLower: strings.ToLower(e.Name), seq: int64(r.Seq),
			}
			if e.Replaces != "" {
				if row.replaces, err = uuid.Parse(e.Replaces); err != nil {
					return fmt.Errorf("event %d: replaces: %w", r.Seq, err)
				}
			}
			if len(e.Meta) > 0 {
				metaPairs += len(e.Meta) // pin_meta rows, by the insert trigger
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
			if fresh != nil {
				fresh[k] = true
			}
		case events.PinReplaced, events.PinRemoved:
			var org, id, by string
			if rp, ok := e.(events.PinReplaced); ok {
				org, id, by = rp.OrgID, rp.RequestID, rp.ReplacedBy
			} else {
				rm := e.(events.PinRemoved)
				org, id = rm.OrgID, rm.RequestID
			}
			k, err := keyOf(org, id)
			if err != nil {
				return fmt.Errorf("event %d: %w", r.Seq, err)
			}
			// Its placements stay until the scheduler releases them (after a replace's successor is pinned).
			var byID uuid.UUID
			if by != "" {
				if byID, err = uuid.Parse(by); err != nil {
					return fmt.Errorf("event %d: replaced_by: %w", r.Seq, err)
				}
			}
			gone.OrgIds = append(gone.OrgIds, k.org)
			gone.RequestIds = append(gone.RequestIds, k.id)
			gone.ReplacedBys = append(gone.ReplacedBys, byID)
			pl.removed(k, byID)
			if row, ok := inserted[k]; ok {
				// Created in this batch: it never reaches the table.
				delete(inserted, k)
				row.seq = -1
				added[k.org]--
				continue
			}
			deletes = append(deletes, k)
		case events.SchedTermStarted:
			term = max(term, e.Term)
			sched = append(sched, func(db dbsqlc.DBTX) error {
				return queries.SchedTermSet(ctx, db, dbsqlc.SchedTermSetParams{Term: int64(e.Term), LastSeq: int64(r.Seq)})
			})
		case events.MaintenanceSet:
			at := r.At
			sched = append(sched, func(db dbsqlc.DBTX) error {
				return queries.SchedMaintenanceSet(ctx, db, dbsqlc.SchedMaintenanceSetParams{Maintenance: e.On, Note: e.Reason, At: at, LastSeq: int64(r.Seq)})
			})
		case events.NodeRegistered:
			at := r.At
			nodes = append(nodes, func(db dbsqlc.DBTX) error {
				return queries.NodeRegister(ctx, db, dbsqlc.NodeRegisterParams{NodeID: e.NodeID, PeerID: e.PeerID, Addrs: e.Addrs, Capacity: e.Capacity, At: at, LastSeq: int64(r.Seq)})
			})
		case events.NodeCordoned, events.NodeDrained, events.NodeUncordoned:
			node, state := "", int16(0)
			switch e := e.(type) {
			case events.NodeCordoned:
				node, state = e.NodeID, 1
			case events.NodeDrained:
				node, state = e.NodeID, 2
			case events.NodeUncordoned:
				node = e.NodeID
			}
			nodes = append(nodes, func(db dbsqlc.DBTX) error {
				return queries.NodeSetState(ctx, db, dbsqlc.NodeSetStateParams{NodeID: node, State: state, LastSeq: int64(r.Seq)})
			})
		case events.PinPlaced:
			if e.Term < term {
				continue // decided by a deposed scheduler: fenced off
			}
			k, err := keyOf(e.OrgID, e.RequestID)
			if err != nil {
				return fmt.Errorf("event %d: %w", r.Seq, err)
			}
			pl.placed(placementKey{k, e.NodeID}, e, r.Seq)
		case events.PinUnplaced:
			if e.Term < term {
				continue
			}
			k, err := keyOf(e.OrgID, e.RequestID)
			if err != nil {
				return fmt.Errorf("event %d: %w", r.Seq, err)
			}
			pl.unplaced(placementKey{k, e.NodeID})
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
			pl.observed(placementKey{k, e.NodeID}, int16(s), info, e.PlacedSeq, r.Seq)
		}
	}

	insertedRows := 0
	// write applies the fold; copier is the bulk transaction (nil: a pipeline, with statements only).
	write := func(db dbsqlc.DBTX, copier pgx.Tx) error {
		for _, f := range nodes {
			if err := f(db); err != nil {
				return err
			}
		}
		if len(deletes) > 0 {
			var prm dbsqlc.PinsDeleteParams
			for _, k := range deletes {
				prm.OrgIds = append(prm.OrgIds, k.org)
				prm.RequestIds = append(prm.RequestIds, k.id)
			}
			if err := queries.PinsDelete(ctx, db, prm); err != nil {
				return err
			}
		}
		if len(gone.OrgIds) > 0 {
			if err := queries.PlacementsMarkGone(ctx, db, gone); err != nil {
				return err
			}
		}
		var ins dbsqlc.PinsInsertParams
		for _, row := range inserts {
			if row.seq < 0 {
				continue
			}
			// A pin placed in its own batch is inserted with what its placements make of it, not inserted queued
			// and then updated by PinsRederive.
			node, replicas := "", int16(0)
			if status, info, n, r, ok := pl.derive(row.key); ok {
				row.status, row.info, node, replicas = status, info, n, r
				if pl.touched[row.key] {
					if pl.derived == nil {
						pl.derived = map[pinKey]bool{}
					}
					pl.derived[row.key] = true
				}
			}
			ins.PlacedNodes = append(ins.PlacedNodes, node)
			ins.Replicas = append(ins.Replicas, replicas)
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
			ins.Replaces = append(ins.Replaces, row.replaces)
			ins.LastSeqs = append(ins.LastSeqs, row.seq)
		}
		if len(ins.OrgIds) > 0 {
			var err error
			if copier != nil {
				err = copyPins(ctx, copier, ins)
			} else {
				err = queries.PinsInsert(ctx, db, ins)
			}
			if err != nil {
				return err
			}
		}
		insertedRows = len(ins.OrgIds)
		if err := pl.apply(ctx, db, copier, fresh, func(k pinKey) bool { return inserted[k] != nil }); err != nil {
			return err
		}
		if len(next) > 0 {
			var prm dbsqlc.PinOrgStateAdvanceParams
			for org, st := range next {
				prm.OrgIds = append(prm.OrgIds, org)
				prm.LastPos = append(prm.LastPos, st.lastPos)
				prm.LastCreated = append(prm.LastCreated, st.lastCreated)
				prm.Added = append(prm.Added, added[org])
			}
			if err := queries.PinOrgStateAdvance(ctx, db, prm); err != nil {
				return err
			}
		}
		for _, f := range sched {
			if err := f(db); err != nil {
				return err
			}
		}
		return nil
	}
	var err error
	if bulk {
		err = applyBulkTx(ctx, p.pool, ProjectionPins, prev, recs, func(tx pgx.Tx) error { return write(tx, tx) })
	} else {
		err = applyBatch(ctx, p.pool, ProjectionPins, prev, recs, func(db dbsqlc.DBTX) error { return write(db, nil) })
	}
	if err != nil {
		return err
	}
	for org, st := range next {
		p.orgs[org] = st
	}
	*p.term = term
	placements, rederived := pl.writes()
	p.grow.wrote("pins", insertedRows+len(deletes)+rederived)
	p.grow.wrote("placements", placements)
	p.grow.wrote("pin_meta", metaPairs)
	return nil
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

// pinsRebuildBatch is the pins projection's batch in a rebuild (see foldBatcher): the events of a pin's life
// (request, placement, statuses) mostly fall in one batch, and its rows are written once, by COPY. On the
// seeded log of a million events (350,000 pins), back to back: batches of 10,000 events 14.5 and 16.4 s,
// 30,000 13.3 and 13.3 s, 100,000 15.4 and 14.7 s, 300,000 17.4 and 17.5 s (the larger ones spend their gain in
// memory: the CLI's RSS was 0.8, 1.0, 1.4-1.5 and 2.3-2.9 GB).
const pinsRebuildBatch = 30000

// RebuildBatch: a batch folds each pin's events into one row write, so a rebuild gives the pins projection
// larger ones than the others'.
func (p *PinsProjector) RebuildBatch() int { return pinsRebuildBatch }

var pinsCopyColumns = []string{"org_id", "request_id", "pos", "created", "status", "cid", "cid_key", "name", "name_lower",
	"meta", "origins", "info", "replaces", "last_seq", "placed_nodes", "replicas"}

// copyPins writes PinsInsert's rows with COPY, with its conversions (empty strings, JSON null and the zero UUID
// stand for NULL), and adds them to pin_counts as PinsInsert does.
func copyPins(ctx context.Context, tx pgx.Tx, ins dbsqlc.PinsInsertParams) error {
	var zero uuid.UUID
	n, err := tx.CopyFrom(ctx, pgx.Identifier{"pins"}, pinsCopyColumns, pgx.CopyFromSlice(len(ins.OrgIds), func(i int) ([]any, error) {
		var placed []string
		if ins.PlacedNodes[i] != "" {
			placed = []string{ins.PlacedNodes[i]}
		}
		var replaces any
		if ins.Replaces[i] != zero {
			replaces = ins.Replaces[i]
		}
		return []any{ins.OrgIds[i], ins.RequestIds[i], ins.Pos[i], ins.Created[i], ins.Statuses[i], ins.Cids[i], ins.CidKeys[i],
			textOrNull(ins.Names[i]), textOrNull(ins.NameLowers[i]), jsonbOrNull(ins.Metas[i]), jsonbOrNull(ins.Origins[i]),
			jsonbOrNull(ins.Infos[i]), replaces, ins.LastSeqs[i], placed, ins.Replicas[i]}, nil
	}))
	if err != nil {
		return err
	}
	if n != int64(len(ins.OrgIds)) {
		return fmt.Errorf("pins COPY stored %d rows of %d", n, len(ins.OrgIds))
	}
	type countKey struct {
		org    uuid.UUID
		status int16
		bucket int64
	}
	keys, counts := countInOrder(len(ins.OrgIds), func(i int) countKey {
		return countKey{ins.OrgIds[i], ins.Statuses[i], ins.Pos[i] / 1024}
	})
	var prm dbsqlc.PinCountsAddParams
	for _, k := range keys {
		prm.OrgIds = append(prm.OrgIds, k.org)
		prm.Statuses = append(prm.Statuses, k.status)
		prm.Buckets = append(prm.Buckets, k.bucket)
		prm.Ns = append(prm.Ns, counts[k])
	}
	return queries.PinCountsAdd(ctx, tx, prm)
}

// countInOrder counts the keys of n rows (key(i) is row i's), returning the distinct keys in the order they
// first appear: a COPY's rows counted per group, for the statement that adds the counts.
func countInOrder[K comparable](n int, key func(i int) K) (keys []K, counts map[K]int64) {
	counts = map[K]int64{}
	for i := range n {
		k := key(i)
		if counts[k] == 0 {
			keys = append(keys, k)
		}
		counts[k]++
	}
	return keys, counts
}

// textOrNull is s, or NULL for "".
func textOrNull(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// jsonbOrNull is the JSON document b, or NULL for JSON null (jsonOrNull's stand-in) and nothing.
func jsonbOrNull(b []byte) any {
	if len(b) == 0 || bytes.Equal(b, jsonNull) {
		return nil
	}
	return b
}
