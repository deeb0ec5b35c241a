package postgres

import (
	"context"
	"errors"

	"github.com/anchorage-pin/anchorage/adapters/postgres/internal/dbsqlc"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

const setOrg = "SELECT set_config('app.org_id', $1, true)"

// orgDB runs each sqlc statement scoped to one org in a single round trip: it pipelines
// set_config('app.org_id', org, true) and the statement as one batch. A batch runs in one implicit transaction
// that ends at its Sync, so the transaction-local org applies to the statement and to nothing after it, exactly
// as with BEGIN; set_config; …; COMMIT, minus three round trips.
type orgDB struct {
	pool *pgxpool.Pool
	org  string
}

var _ dbsqlc.DBTX = orgDB{}

func (d orgDB) send(ctx context.Context, sql string, args []any) (pgx.BatchResults, error) {
	b := &pgx.Batch{}
	b.Queue(setOrg, d.org)
	b.Queue(sql, args...)
	br := d.pool.SendBatch(ctx, b)
	if _, err := br.Exec(); err != nil {
		br.Close()
		return nil, err
	}
	return br, nil
}

func (d orgDB) Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	br, err := d.send(ctx, sql, args)
	if err != nil {
		return pgconn.CommandTag{}, err
	}
	tag, err := br.Exec()
	return tag, errors.Join(err, br.Close())
}

func (d orgDB) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	br, err := d.send(ctx, sql, args)
	if err != nil {
		return nil, err
	}
	rows, err := br.Query()
	if err != nil {
		br.Close()
		return nil, err
	}
	return &batchRows{Rows: rows, br: br}, nil
}

func (d orgDB) QueryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	rows, err := d.Query(ctx, sql, args...)
	return &oneRow{rows: rows, err: err}
}

// batchRows releases the batch (and its pooled connection) when the rows are closed.
type batchRows struct {
	pgx.Rows
	br pgx.BatchResults
}

func (r *batchRows) Close() {
	r.Rows.Close()
	_ = r.br.Close()
}

type oneRow struct {
	rows pgx.Rows
	err  error
}

func (r *oneRow) Scan(dest ...any) error {
	if r.err != nil {
		return r.err
	}
	defer r.rows.Close()
	if !r.rows.Next() {
		if err := r.rows.Err(); err != nil {
			return err
		}
		return pgx.ErrNoRows
	}
	if err := r.rows.Scan(dest...); err != nil {
		return err
	}
	r.rows.Close()
	return r.rows.Err()
}
