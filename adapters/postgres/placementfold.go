package postgres

import (
	"context"
	"fmt"

	"github.com/anchorage-pin/anchorage/adapters/postgres/internal/dbsqlc"
	"github.com/anchorage-pin/anchorage/events"
	"github.com/anchorage-pin/anchorage/projections"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

type placementKey struct {
	pin  pinKey
	node string
}

// placementFold folds one batch's placement events into the statements that apply them: the final upsert or
// delete per placement, the observations of placements that existed before the batch, and the pins whose
// status must be re-derived.
type placementFold struct {
	order    []placementKey
	state    map[placementKey]*plChange
	observes map[placementKey]*plObserve
	obsOrder []placementKey
	touched  map[pinKey]bool
	pinOrder []pinKey
	// derived holds the pins inserted by this batch with the status derive gave them from the batch's own
	// placements: PinsRederive skips them. A pin has no placement older than its request (the scheduler places
	// what it has read from the log, fenced on the pin's own subject), so a pin requested in this batch has no
	// placement from before it that the batch did not see.
	derived map[pinKey]bool
	// byPin lists each pin's placements in order: removed and derive look a pin's up without a pass over them
	// all (a rebuild folds batches of 30,000 events: see pinsRebuildBatch).
	byPin map[pinKey][]placementKey
}

type plChange struct {
	del       bool
	cid       string
	status    int16
	info      []byte
	placedSeq uint64
	term      uint64
	movedFrom string
	gone      bool
	replaced  uuid.UUID
	seq       uint64
}

type plObserve struct {
	status    int16
	info      []byte
	placedSeq uint64
	seq       uint64
}

// writes is how many rows of placements and of pins the batch's statements write (at most).
func (f *placementFold) writes() (placements, pins int) {
	return len(f.order) + len(f.observes), len(f.pinOrder)
}

func newPlacementFold() *placementFold {
	return &placementFold{state: map[placementKey]*plChange{}, observes: map[placementKey]*plObserve{}, touched: map[pinKey]bool{},
		byPin: map[pinKey][]placementKey{}}
}

func (f *placementFold) touch(k pinKey) {
	if !f.touched[k] {
		f.touched[k] = true
		f.pinOrder = append(f.pinOrder, k)
	}
}

func (f *placementFold) change(k placementKey) *plChange {
	c := f.state[k]
	if c == nil {
		c = &plChange{}
		f.state[k] = c
		f.order = append(f.order, k)
		f.byPin[k.pin] = append(f.byPin[k.pin], k)
	}
	return c
}

func (f *placementFold) placed(k placementKey, e events.PinPlaced, seq uint64) {
	*f.change(k) = plChange{cid: e.CID, status: int16(projections.StatusQueued), placedSeq: seq, term: e.Term, movedFrom: e.MovedFrom, seq: seq}
	delete(f.observes, k) // observations of an earlier placement no longer apply
	f.touch(k.pin)
}

func (f *placementFold) unplaced(k placementKey) {
	*f.change(k) = plChange{del: true}
	delete(f.observes, k)
	f.touch(k.pin)
}

func (f *placementFold) observed(k placementKey, status int16, info []byte, placedSeq, seq uint64) {
	if c, ok := f.state[k]; ok {
		if !c.del && c.placedSeq == placedSeq && !(final(c.status) && !final(status)) {
			c.status, c.info, c.seq = status, info, seq
			f.touch(k.pin)
		}
		return // an observation of a placement this batch replaced or removed, or a late one
	}
	if o, seen := f.observes[k]; seen {
		if o.placedSeq > placedSeq {
			return // a late report about an older placement: it must not displace the current one's
		}
		if o.placedSeq == placedSeq && final(o.status) && !final(status) {
			return // a late pinning report after this batch's final one
		}
	} else {
		f.obsOrder = append(f.obsOrder, k)
	}
	f.observes[k] = &plObserve{status: status, info: info, placedSeq: placedSeq, seq: seq}
	f.touch(k.pin)
}

// removed notes that a pin request was removed or replaced (by replacedBy): placements of it decided earlier in
// this batch are gone too, exactly as if they had been applied before the removal.
func (f *placementFold) removed(k pinKey, replacedBy uuid.UUID) {
	for _, pk := range f.byPin[k] {
		if c := f.state[pk]; !c.del {
			c.gone, c.replaced = true, replacedBy
		}
	}
}

// apply writes the fold. With copier (a rebuild's bulk transaction: see PinsProjector.ApplyBulk), the
// placements of the pins the batch requested (fresh) are written with COPY instead of PlacementsUpsert: none of
// them can exist yet (a pin has no placement older than its request), so each is an insert, and its pin_gone is
// what PlacementsUpsert would make of it, with live telling whether its pin exists once the batch's pins are
// written.
func (f *placementFold) apply(ctx context.Context, db dbsqlc.DBTX, copier pgx.Tx, fresh map[pinKey]bool, live func(pinKey) bool) error {
	var del dbsqlc.PlacementsDeleteParams
	var up dbsqlc.PlacementsUpsertParams
	var copied []placementKey
	for _, k := range f.order {
		c := f.state[k]
		if c.del {
			del.OrgIds = append(del.OrgIds, k.pin.org)
			del.RequestIds = append(del.RequestIds, k.pin.id)
			del.NodeIds = append(del.NodeIds, k.node)
			continue
		}
		if copier != nil && fresh[k.pin] {
			copied = append(copied, k)
			continue
		}
		up.OrgIds = append(up.OrgIds, k.pin.org)
		up.RequestIds = append(up.RequestIds, k.pin.id)
		up.NodeIds = append(up.NodeIds, k.node)
		up.Cids = append(up.Cids, c.cid)
		up.Statuses = append(up.Statuses, c.status)
		up.Infos = append(up.Infos, jsonOrNull(c.info))
		up.PlacedSeqs = append(up.PlacedSeqs, int64(c.placedSeq))
		up.Terms = append(up.Terms, int64(c.term))
		up.MovedFroms = append(up.MovedFroms, c.movedFrom)
		up.PinGones = append(up.PinGones, c.gone)
		up.ReplacedBys = append(up.ReplacedBys, c.replaced)
		up.LastSeqs = append(up.LastSeqs, int64(c.seq))
	}
	if len(del.OrgIds) > 0 {
		if err := queries.PlacementsDelete(ctx, db, del); err != nil {
			return err
		}
	}
	if len(up.OrgIds) > 0 {
		if err := queries.PlacementsUpsert(ctx, db, up); err != nil {
			return err
		}
	}
	if len(copied) > 0 {
		if err := f.copy(ctx, copier, copied, live); err != nil {
			return err
		}
	}
	var obs dbsqlc.PlacementsObserveParams
	for _, k := range f.obsOrder {
		o, ok := f.observes[k]
		if !ok {
			continue
		}
		obs.OrgIds = append(obs.OrgIds, k.pin.org)
		obs.RequestIds = append(obs.RequestIds, k.pin.id)
		obs.NodeIds = append(obs.NodeIds, k.node)
		obs.Statuses = append(obs.Statuses, o.status)
		obs.Infos = append(obs.Infos, jsonOrNull(o.info))
		obs.PlacedSeqs = append(obs.PlacedSeqs, int64(o.placedSeq))
		obs.LastSeqs = append(obs.LastSeqs, int64(o.seq))
	}
	if len(obs.OrgIds) > 0 {
		if err := queries.PlacementsObserve(ctx, db, obs); err != nil {
			return err
		}
	}
	var rd dbsqlc.PinsRederiveParams
	for _, k := range f.pinOrder {
		if !f.derived[k] {
			rd.OrgIds = append(rd.OrgIds, k.org)
			rd.RequestIds = append(rd.RequestIds, k.id)
		}
	}
	if len(rd.OrgIds) > 0 {
		return queries.PinsRederive(ctx, db, rd)
	}
	return nil
}

var placementsCopyColumns = []string{"org_id", "request_id", "node_id", "cid", "status", "info", "placed_seq", "term",
	"moved_from", "pin_gone", "replaced_by", "last_seq"}

// copy inserts the placements ks with COPY, as PlacementsUpsert would have (empty strings and the zero UUID
// stand for NULL; a placement of a pin that does not exist is gone), and counts them on their nodes.
func (f *placementFold) copy(ctx context.Context, tx pgx.Tx, ks []placementKey, live func(pinKey) bool) error {
	var zero uuid.UUID
	n, err := tx.CopyFrom(ctx, pgx.Identifier{"placements"}, placementsCopyColumns, pgx.CopyFromSlice(len(ks), func(i int) ([]any, error) {
		k := ks[i]
		c := f.state[k]
		var replaced any
		if c.replaced != zero {
			replaced = c.replaced
		}
		return []any{k.pin.org, k.pin.id, k.node, c.cid, c.status, jsonbOrNull(c.info), int64(c.placedSeq), int64(c.term),
			textOrNull(c.movedFrom), c.gone || !live(k.pin), replaced, int64(c.seq)}, nil
	}))
	if err != nil {
		return err
	}
	if n != int64(len(ks)) {
		return fmt.Errorf("placements COPY stored %d rows of %d", n, len(ks))
	}
	nodes, perNode := countInOrder(len(ks), func(i int) string { return ks[i].node })
	var prm dbsqlc.NodesPlacedAddParams
	for _, node := range nodes {
		prm.NodeIds = append(prm.NodeIds, node)
		prm.Ns = append(prm.Ns, perNode[node])
	}
	return queries.NodesPlacedAdd(ctx, tx, prm)
}

// derive returns what PinsRederive would make of pin k from this batch's placements of it alone: its status,
// info, placed node ("" for none) and replica count. ok is false when the pin has several live placements in
// the batch (their order is the database's collation's, so PinsRederive decides). It is asked only about pins
// the batch itself requests, which have no other placements (see derived).
func (f *placementFold) derive(k pinKey) (status int16, info []byte, node string, replicas int16, ok bool) {
	if !f.touched[k] {
		return int16(projections.StatusQueued), nil, "", 0, true
	}
	var live *plChange
	for _, pk := range f.byPin[k] {
		if c := f.state[pk]; !c.del {
			if live != nil {
				return 0, nil, "", 0, false
			}
			live, node = c, pk.node
		}
	}
	if live == nil {
		return int16(projections.StatusQueued), nil, "", 0, true
	}
	return live.status, live.info, node, 1, true
}

// final reports whether a placement status is an outcome (pinned or failed) rather than progress.
func final(status int16) bool {
	return status == int16(projections.StatusPinned) || status == int16(projections.StatusFailed)
}
