package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/anchorage-pin/anchorage/adapters/postgres/internal/dbsqlc"
	"github.com/anchorage-pin/anchorage/domain"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// ExplainCase is one API query shape to explain, with representative arguments.
type ExplainCase struct {
	Name string
	SQL  string
	Args []any
}

// ExplainCases returns every read the API makes, with arguments taken from org's data: a pin id, a CID, a
// name, a meta pair, and a created time in the middle of the org's history.
func (r *Reader) ExplainCases(ctx context.Context, org string) ([]ExplainCase, error) {
	var id, cidStr, name string
	var mid time.Time
	err := r.InOrg(ctx, org, func(tx pgx.Tx) error {
		if err := tx.QueryRow(ctx, `SELECT request_id::text, cid, coalesce(name, '') FROM pins ORDER BY pos DESC LIMIT 1 OFFSET 5`).Scan(&id, &cidStr, &name); err != nil {
			return err
		}
		return tx.QueryRow(ctx, `SELECT created FROM pins WHERE pos >= (SELECT max(pos) / 2 FROM pins) ORDER BY pos LIMIT 1`).Scan(&mid)
	})
	if err != nil {
		return nil, err
	}
	pc, err := domain.ParseCID(cidStr)
	if err != nil {
		return nil, err
	}
	pinned := []int16{2}
	all := []int16{0, 1, 2, 3}
	lower := strings.ToLower(name)
	partial := "%" + escapeLike(name[:max(min(1, len(name)), len(name)-2)]) + "%" // an org without names must not panic
	lowerPartial := strings.ToLower(partial)
	meta := []byte(`{"w":"3"}`)
	var cases []ExplainCase
	// Record each query exactly as the API issues it (SQL and arguments in order) by calling the generated code on
	// a DBTX that only records.
	add := func(name string, call func(db dbsqlc.DBTX) error) {
		rec := &recorder{}
		_ = call(rec)
		cases = append(cases, ExplainCase{Name: name, SQL: rec.sql, Args: rec.args})
	}
	idU, _ := uuid.Parse(id)
	add("GET /pins/{requestid}", func(db dbsqlc.DBTX) error { _, err := queries.PinGet(ctx, db, idU); return err })
	add("GET /pins?limit=10 (default: pinned)", func(db dbsqlc.DBTX) error {
		_, err := queries.PinsList(ctx, db, dbsqlc.PinsListParams{Statuses: pinned, Lim: 10})
		return err
	})
	add("GET /pins?status=any&limit=10", func(db dbsqlc.DBTX) error {
		_, err := queries.PinsList(ctx, db, dbsqlc.PinsListParams{Statuses: all, Lim: 10})
		return err
	})
	add("count for GET /pins (pinned)", func(db dbsqlc.DBTX) error {
		_, err := queries.PinsCountPositions(ctx, db, dbsqlc.PinsCountPositionsParams{Statuses: pinned})
		return err
	})
	add("GET /pins?before=<middle> (a page deep in the history)", func(db dbsqlc.DBTX) error {
		_, err := queries.PinsList(ctx, db, dbsqlc.PinsListParams{Statuses: pinned, Before: &mid, Lim: 10})
		return err
	})
	add("count for before=<middle>", func(db dbsqlc.DBTX) error {
		_, err := queries.PinsCountPositions(ctx, db, dbsqlc.PinsCountPositionsParams{Statuses: pinned, Before: &mid})
		return err
	})
	add("count for after=<middle> (all statuses)", func(db dbsqlc.DBTX) error {
		_, err := queries.PinsCountPositions(ctx, db, dbsqlc.PinsCountPositionsParams{Statuses: all, After: &mid})
		return err
	})
	add("GET /pins?cid=<cid>", func(db dbsqlc.DBTX) error {
		_, err := queries.PinsListByCID(ctx, db, dbsqlc.PinsListByCIDParams{Statuses: all, CidKeys: [][]byte{pc.Key}, Lim: 10})
		return err
	})
	add("count for cid=<cid>", func(db dbsqlc.DBTX) error {
		_, err := queries.PinsCountByCID(ctx, db, dbsqlc.PinsCountByCIDParams{Statuses: all, CidKeys: [][]byte{pc.Key}})
		return err
	})
	add("GET /pins?name=<name>", func(db dbsqlc.DBTX) error {
		_, err := queries.PinsListByName(ctx, db, dbsqlc.PinsListByNameParams{Statuses: all, NameLower: lower, NameExact: true, Name: name, Lim: 10})
		return err
	})
	add("count for name=<name>", func(db dbsqlc.DBTX) error {
		_, err := queries.PinsCountByName(ctx, db, dbsqlc.PinsCountByNameParams{Statuses: all, NameLower: lower, NameExact: true, Name: name})
		return err
	})
	add("GET /pins?name=<part>&match=ipartial (the page and its count, one statement)", func(db dbsqlc.DBTX) error {
		_, err := queries.PinsListByNamePattern(ctx, db, dbsqlc.PinsListByNamePatternParams{Statuses: all, NamePattern: partial, NameLowerPattern: lowerPartial, NameCi: true, Lim: 10})
		return err
	})
	add(`GET /pins?meta={"w":"3"}`, func(db dbsqlc.DBTX) error {
		_, err := queries.PinsListByMeta(ctx, db, dbsqlc.PinsListByMetaParams{Statuses: all, Meta: meta, Lim: 10})
		return err
	})
	add(`count for meta={"w":"3"}`, func(db dbsqlc.DBTX) error {
		_, err := queries.PinsCountByMeta(ctx, db, dbsqlc.PinsCountByMetaParams{Statuses: all, Meta: meta})
		return err
	})
	return cases, nil
}

// recorder is a DBTX that records the statement it is given instead of running it.
type recorder struct {
	sql  string
	args []any
}

var errRecorded = errors.New("recorded")

func (r *recorder) Exec(_ context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	r.sql, r.args = sql, args
	return pgconn.CommandTag{}, errRecorded
}

func (r *recorder) Query(_ context.Context, sql string, args ...any) (pgx.Rows, error) {
	r.sql, r.args = sql, args
	return nil, errRecorded
}

func (r *recorder) QueryRow(_ context.Context, sql string, args ...any) pgx.Row {
	r.sql, r.args = sql, args
	return errRow{errRecorded}
}

var sqlcHeader = regexp.MustCompile(`^-- name: \S+ \S+\n`)

// Explain runs EXPLAIN (ANALYZE, BUFFERS) for c as the API role, scoped to org by RLS exactly as the API does
// (prepared, so the cached plan is the one shown), and returns the plan text.
func (r *Reader) Explain(ctx context.Context, org string, c ExplainCase) (string, error) {
	var out strings.Builder
	err := r.InOrg(ctx, org, func(tx pgx.Tx) error {
		name := "explain_" + fmt.Sprint(time.Now().UnixNano())
		if _, err := tx.Exec(ctx, "PREPARE "+name+" AS "+sqlcHeader.ReplaceAllString(c.SQL, ""), pgx.QueryExecModeSimpleProtocol); err != nil {
			return err
		}
		// Warm the plan cache the way a pooled connection is warm: several executions first.
		exec := "EXECUTE " + name + "(" + placeholders(len(c.Args)) + ")"
		// EXECUTE takes no protocol-level parameters: send the arguments as literals (simple protocol). jsonb
		// arguments are []byte, which would be sent as bytea there: pass them as text.
		args := []any{pgx.QueryExecModeSimpleProtocol}
		for _, a := range c.Args {
			if b, ok := a.([]byte); ok && json.Valid(b) {
				a = string(b)
			}
			args = append(args, a)
		}
		for range 6 {
			if _, err := tx.Exec(ctx, exec, args...); err != nil {
				return err
			}
		}
		rows, err := tx.Query(ctx, "EXPLAIN (ANALYZE, BUFFERS) "+exec, args...)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var line string
			if err := rows.Scan(&line); err != nil {
				return err
			}
			out.WriteString(line + "\n")
		}
		return rows.Err()
	})
	return out.String(), err
}

func placeholders(n int) string {
	p := make([]string, n)
	for i := range p {
		p[i] = fmt.Sprintf("$%d", i+1)
	}
	return strings.Join(p, ", ")
}
