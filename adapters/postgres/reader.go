package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/anchorage-pin/anchorage/adapters/postgres/internal/dbsqlc"
	"github.com/anchorage-pin/anchorage/domain"
	"github.com/anchorage-pin/anchorage/projections"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Reader answers API reads as the API role. Every call runs in a read-only transaction that first sets the org
// transaction-locally; row-level security then limits every statement to that org's rows.
type Reader struct{ pool *pgxpool.Pool }

var (
	_ projections.PinReader = (*Reader)(nil)
	_ domain.Usage          = (*Reader)(nil)
)

// NewReader returns a reader over an API-role pool.
func NewReader(pool *pgxpool.Pool) *Reader { return &Reader{pool: pool} }

// InOrg runs fn in a read-only transaction scoped to org by row-level security.
func (r *Reader) InOrg(ctx context.Context, org string, fn func(tx pgx.Tx) error) error {
	if _, err := uuid.Parse(org); err != nil {
		return fmt.Errorf("postgres: org id %q is not a uuid", org)
	}
	err := pgx.BeginTxFunc(ctx, r.pool, pgx.TxOptions{AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SELECT set_config('app.org_id', $1, true)", org); err != nil {
			return err
		}
		return fn(tx)
	})
	return interpret(err)
}

// scoped returns a DBTX whose every statement sees only org's rows.
func (r *Reader) scoped(org string) (orgDB, error) {
	if _, err := uuid.Parse(org); err != nil {
		return orgDB{}, fmt.Errorf("postgres: org id %q is not a uuid", org)
	}
	return orgDB{pool: r.pool, org: org}, nil
}

// GetPin returns one of org's pins.
func (r *Reader) GetPin(ctx context.Context, org, requestID string) (projections.PinView, error) {
	id, err := uuid.Parse(requestID)
	if err != nil {
		return projections.PinView{}, domain.Errorf(domain.ErrNotFound, "pin request %q does not exist", requestID)
	}
	db, err := r.scoped(org)
	if err != nil {
		return projections.PinView{}, err
	}
	row, err := queries.PinGet(ctx, db, id)
	if err != nil {
		if err = interpret(err); errors.Is(err, domain.ErrNotFound) {
			return projections.PinView{}, domain.Errorf(domain.ErrNotFound, "pin request %s does not exist", requestID)
		}
		return projections.PinView{}, err
	}
	return view(row.RequestID, row.Created, row.Status, row.Cid, row.Name, row.Meta, row.Origins, row.Info, row.Delegates)
}

// ListPins answers GET /pins: one statement for the page and, unless the page shows there is nothing more,
// one for the count, each a single round trip. The driving filter picks the query variant (see queries/pins.sql).
func (r *Reader) ListPins(ctx context.Context, f projections.PinFilter) (int64, []projections.PinView, error) {
	db, err := r.scoped(f.OrgID)
	if err != nil {
		return 0, nil, err
	}
	statuses := make([]int16, len(f.Statuses))
	for i, s := range f.Statuses {
		statuses[i] = int16(s)
	}
	var after, before *time.Time
	if !f.After.IsZero() {
		after = &f.After
	}
	if !f.Before.IsZero() {
		before = &f.Before
	}
	var meta []byte
	if len(f.Meta) > 0 {
		if meta, err = json.Marshal(f.Meta); err != nil {
			return 0, nil, err
		}
	}
	var nameLower, name, pattern, lowerPattern *string
	exact, ci := false, false
	if f.Name != "" {
		switch f.Match {
		case projections.MatchPartial, projections.MatchIPartial:
			p := "%" + escapeLike(f.Name) + "%"
			lp := strings.ToLower(p)
			pattern, lowerPattern, ci = &p, &lp, f.Match == projections.MatchIPartial
		default:
			l, n := strings.ToLower(f.Name), f.Name
			nameLower, name, exact = &l, &n, f.Match != projections.MatchIExact
		}
	}
	lim := int32(f.Limit)
	var rows []dbsqlc.PinsListRow
	var count func() (int64, error)
	switch {
	case len(f.CIDKeys) > 0:
		got, err := queries.PinsListByCID(ctx, db, dbsqlc.PinsListByCIDParams{Statuses: statuses, After: after, Before: before,
			CidKeys: f.CIDKeys, NameLower: nameLower, NameExact: exact, Name: name, NamePattern: pattern, NameLowerPattern: lowerPattern,
			NameCi: ci, Meta: meta, Lim: lim})
		rows, err = convertRows(got, err)
		if err != nil {
			return 0, nil, interpret(err)
		}
		count = func() (int64, error) {
			return queries.PinsCountByCID(ctx, db, dbsqlc.PinsCountByCIDParams{Statuses: statuses, After: after, Before: before,
				CidKeys: f.CIDKeys, NameLower: nameLower, NameExact: exact, Name: name, NamePattern: pattern, NameLowerPattern: lowerPattern,
				NameCi: ci, Meta: meta})
		}
	case nameLower != nil:
		got, err := queries.PinsListByName(ctx, db, dbsqlc.PinsListByNameParams{Statuses: statuses, After: after, Before: before,
			NameLower: *nameLower, NameExact: exact, Name: *name, Meta: meta, Lim: lim})
		rows, err = convertRows(got, err)
		if err != nil {
			return 0, nil, interpret(err)
		}
		count = func() (int64, error) {
			return queries.PinsCountByName(ctx, db, dbsqlc.PinsCountByNameParams{Statuses: statuses, After: after, Before: before,
				NameLower: *nameLower, NameExact: exact, Name: *name, Meta: meta})
		}
	case meta != nil:
		got, err := queries.PinsListByMeta(ctx, db, dbsqlc.PinsListByMetaParams{Statuses: statuses, After: after, Before: before,
			Meta: meta, NamePattern: pattern, NameLowerPattern: lowerPattern, NameCi: ci, Lim: lim})
		rows, err = convertRows(got, err)
		if err != nil {
			return 0, nil, interpret(err)
		}
		count = func() (int64, error) {
			return queries.PinsCountByMeta(ctx, db, dbsqlc.PinsCountByMetaParams{Statuses: statuses, After: after, Before: before,
				Meta: meta, NamePattern: pattern, NameLowerPattern: lowerPattern, NameCi: ci})
		}
	case pattern != nil:
		// The page and the count come from one statement (one trigram search; no row: no match).
		got, err := queries.PinsListByNamePattern(ctx, db, dbsqlc.PinsListByNamePatternParams{Statuses: statuses, After: after, Before: before,
			NamePattern: *pattern, NameLowerPattern: *lowerPattern, NameCi: ci, Lim: lim})
		if err != nil {
			return 0, nil, interpret(err)
		}
		total := int64(0)
		rows = make([]dbsqlc.PinsListRow, len(got))
		for i, r := range got {
			rows[i] = dbsqlc.PinsListRow{RequestID: r.RequestID, Created: r.Created, Status: r.Status, Cid: r.Cid, Name: r.Name,
				Meta: r.Meta, Origins: r.Origins, Info: r.Info, Delegates: r.Delegates}
			total = r.Total
		}
		count = func() (int64, error) { return total, nil }
	default:
		rows, err = queries.PinsList(ctx, db, dbsqlc.PinsListParams{Statuses: statuses, After: after, Before: before, Lim: lim})
		if err != nil {
			return 0, nil, interpret(err)
		}
		count = func() (int64, error) {
			return queries.PinsCountPositions(ctx, db, dbsqlc.PinsCountPositionsParams{Statuses: statuses, After: after, Before: before})
		}
	}
	out := make([]projections.PinView, 0, len(rows))
	for _, row := range rows {
		v, err := view(row.RequestID, row.Created, row.Status, row.Cid, row.Name, row.Meta, row.Origins, row.Info, row.Delegates)
		if err != nil {
			return 0, nil, err
		}
		out = append(out, v)
	}
	// A page with room to spare, unbounded in time, already holds every match.
	if len(rows) < f.Limit && after == nil && before == nil {
		return int64(len(rows)), out, nil
	}
	n, err := count()
	if err != nil {
		return 0, nil, interpret(err)
	}
	// The count is its own statement with its own snapshot: a pin that changed status in between would leave
	// count < len(results), which clients read as a broken service (Kubo: "count=N but no results"). The page
	// itself is proof of at least that many matches.
	if n < int64(len(rows)) {
		n = int64(len(rows))
	}
	return n, out, nil
}

// listRow is any of the generated list row types, which all have PinsListRow's fields.
type listRow interface {
	dbsqlc.PinsListByCIDRow | dbsqlc.PinsListByNameRow | dbsqlc.PinsListByMetaRow
}

func convertRows[T listRow](rows []T, err error) ([]dbsqlc.PinsListRow, error) {
	if err != nil {
		return nil, err
	}
	out := make([]dbsqlc.PinsListRow, len(rows))
	for i, r := range rows {
		out[i] = dbsqlc.PinsListRow(r)
	}
	return out, nil
}

// PinUsage reports org's live pin count and quota (domain.Usage).
func (r *Reader) PinUsage(ctx context.Context, org string) (pins, maxPins int64, err error) {
	id, err := uuid.Parse(org)
	if err != nil {
		return 0, 0, fmt.Errorf("postgres: org id %q is not a uuid", org)
	}
	u, err := queries.OrgUsage(ctx, orgDB{pool: r.pool, org: org}, id)
	if err != nil {
		return 0, 0, interpret(err)
	}
	return u.LivePins, u.MaxPins, nil
}

func view(id uuid.UUID, created time.Time, status int16, cid string, name *string, meta, origins, info []byte, delegates []string) (projections.PinView, error) {
	v := projections.PinView{
		RequestID: id.String(), Status: projections.Status(status), Created: created.UTC(), CID: cid, Delegates: delegates,
	}
	if len(origins) > 0 {
		if err := json.Unmarshal(origins, &v.Origins); err != nil {
			return v, fmt.Errorf("pin %s: origins: %w", id, err)
		}
	}
	if name != nil {
		v.Name = *name
	}
	if len(meta) > 0 {
		if err := json.Unmarshal(meta, &v.Meta); err != nil {
			return v, fmt.Errorf("pin %s: meta: %w", id, err)
		}
	}
	if len(info) > 0 {
		if err := json.Unmarshal(info, &v.Info); err != nil {
			return v, fmt.Errorf("pin %s: info: %w", id, err)
		}
	}
	return v, nil
}

func escapeLike(s string) string {
	return strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`).Replace(s)
}
