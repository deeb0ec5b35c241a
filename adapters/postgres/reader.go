package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
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

// GetPin returns one of org's pins.
func (r *Reader) GetPin(ctx context.Context, org, requestID string) (projections.PinView, error) {
	id, err := uuid.Parse(requestID)
	if err != nil {
		return projections.PinView{}, domain.Errorf(domain.ErrNotFound, "pin request %q does not exist", requestID)
	}
	var v projections.PinView
	err = r.InOrg(ctx, org, func(tx pgx.Tx) error {
		row, err := queries.PinGet(ctx, tx, id)
		if err != nil {
			return err
		}
		v, err = view(row.RequestID, row.Created, row.Status, row.Cid, row.Name, row.Meta, row.Origins, row.Info, row.Delegates)
		return err
	})
	if errors.Is(err, domain.ErrNotFound) {
		return projections.PinView{}, domain.Errorf(domain.ErrNotFound, "pin request %s does not exist", requestID)
	}
	return v, err
}

// ListPins answers GET /pins.
func (r *Reader) ListPins(ctx context.Context, f projections.PinFilter) (int64, []projections.PinView, error) {
	statuses := make([]int16, len(f.Statuses))
	for i, s := range f.Statuses {
		statuses[i] = int16(s)
	}
	lp := dbsqlc.PinsListParams{Statuses: statuses, Lim: int32(f.Limit)}
	content := false
	if len(f.CIDKeys) > 0 {
		lp.CidKeys, content = f.CIDKeys, true
	}
	if f.Name != "" {
		content = true
		switch f.Match {
		case projections.MatchIExact:
			lower := strings.ToLower(f.Name)
			lp.NameLower = &lower
		case projections.MatchPartial, projections.MatchIPartial:
			pattern := "%" + escapeLike(f.Name) + "%"
			lower := strings.ToLower(pattern)
			lp.NamePattern, lp.NameLowerPattern = &pattern, &lower
			lp.NameCi = f.Match == projections.MatchIPartial
		default:
			name := f.Name
			lp.Name = &name
		}
	}
	if len(f.Meta) > 0 {
		b, err := json.Marshal(f.Meta)
		if err != nil {
			return 0, nil, err
		}
		lp.Meta, content = b, true
	}
	var count int64
	var out []projections.PinView
	err := r.InOrg(ctx, f.OrgID, func(tx pgx.Tx) error {
		lo, hi := int64(0), int64(math.MaxInt64)
		var err error
		if !f.After.IsZero() {
			if lo, err = queries.PinsPosAfter(ctx, tx, f.After); err != nil {
				return err
			}
		}
		if !f.Before.IsZero() {
			if hi, err = queries.PinsPosBefore(ctx, tx, f.Before); err != nil {
				return err
			}
		}
		if hi-lo <= 1 {
			return nil
		}
		lp.Lo, lp.Hi = lo, hi
		rows, err := queries.PinsList(ctx, tx, lp)
		if err != nil {
			return err
		}
		out = make([]projections.PinView, 0, len(rows))
		for _, row := range rows {
			v, err := view(row.RequestID, row.Created, row.Status, row.Cid, row.Name, row.Meta, row.Origins, row.Info, row.Delegates)
			if err != nil {
				return err
			}
			out = append(out, v)
		}
		// The count needs no query when this page already holds every match.
		if len(rows) < f.Limit && lo == 0 && hi == math.MaxInt64 {
			count = int64(len(rows))
			return nil
		}
		if content {
			count, err = queries.PinsCountFiltered(ctx, tx, dbsqlc.PinsCountFilteredParams{
				Statuses: statuses, Lo: lo, Hi: hi, CidKeys: lp.CidKeys, Name: lp.Name, NameLower: lp.NameLower,
				NamePattern: lp.NamePattern, NameLowerPattern: lp.NameLowerPattern, NameCi: lp.NameCi, Meta: lp.Meta,
			})
			return err
		}
		loB, hiB := lo/BucketSize, hi/BucketSize
		count, err = queries.PinsCountPositions(ctx, tx, dbsqlc.PinsCountPositionsParams{
			Statuses: statuses, Lo: lo, Hi: hi, LoBucket: loB, LoEnd: (loB + 1) * BucketSize, HiBucket: hiB, HiStart: hiB * BucketSize,
		})
		return err
	})
	if err != nil {
		return 0, nil, err
	}
	if out == nil {
		out = []projections.PinView{}
	}
	return count, out, nil
}

// PinUsage reports org's live pin count and quota (domain.Usage).
func (r *Reader) PinUsage(ctx context.Context, org string) (pins, maxPins int64, err error) {
	id, err := uuid.Parse(org)
	if err != nil {
		return 0, 0, fmt.Errorf("postgres: org id %q is not a uuid", org)
	}
	err = r.InOrg(ctx, org, func(tx pgx.Tx) error {
		u, err := queries.OrgUsage(ctx, tx, id)
		pins, maxPins = u.LivePins, u.MaxPins
		return err
	})
	return pins, maxPins, err
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
