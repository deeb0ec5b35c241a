package postgres

import (
	"context"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/anchorage-pin/anchorage/adapters/postgres/internal/dbsqlc"
	"github.com/anchorage-pin/anchorage/domain"
	"github.com/jackc/pgx/v5"
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
	partial := "%" + escapeLike(name[:max(1, len(name)-2)]) + "%"
	return []ExplainCase{
		{"GET /pins/{requestid}", dbsqlc.PinGet, []any{id}},
		{"GET /pins?limit=10 (default: pinned)", dbsqlc.PinsList, []any{pinned, nil, nil, int32(10)}},
		{"GET /pins?status=any&limit=10", dbsqlc.PinsList, []any{all, nil, nil, int32(10)}},
		{"count for GET /pins (pinned)", dbsqlc.PinsCountPositions, []any{pinned, nil, nil}},
		{"GET /pins?before=<middle> (page deep in the history)", dbsqlc.PinsList, []any{pinned, nil, mid, int32(10)}},
		{"count for before=<middle>", dbsqlc.PinsCountPositions, []any{pinned, nil, mid}},
		{"count for after=<middle>", dbsqlc.PinsCountPositions, []any{all, mid, nil}},
		{"GET /pins?cid=<cid>", dbsqlc.PinsListByCID, []any{all, nil, nil, [][]byte{pc.Key}, nil, false, nil, nil, nil, false, nil, int32(10)}},
		{"count for cid=<cid>", dbsqlc.PinsCountByCID, []any{all, nil, nil, [][]byte{pc.Key}, nil, false, nil, nil, nil, false, nil}},
		{"GET /pins?name=<name>", dbsqlc.PinsListByName, []any{all, nil, nil, lower, true, name, nil, int32(10)}},
		{"count for name=<name>", dbsqlc.PinsCountByName, []any{all, nil, nil, lower, true, name, nil}},
		{"GET /pins?name=<part>&match=ipartial", dbsqlc.PinsListByNamePattern, []any{all, nil, nil, partial, strings.ToLower(partial), true, int32(10)}},
		{"count for name=<part>&match=ipartial", dbsqlc.PinsCountByNamePattern, []any{all, nil, nil, partial, strings.ToLower(partial), true}},
		{`GET /pins?meta={"w":"3"}`, dbsqlc.PinsListByMeta, []any{all, nil, nil, []byte(`{"w":"3"}`), nil, nil, false, int32(10)}},
		{`count for meta={"w":"3"}`, dbsqlc.PinsCountByMeta, []any{all, nil, nil, []byte(`{"w":"3"}`), nil, nil, false}},
	}, nil
}

var sqlcHeader = regexp.MustCompile(`^-- name: \S+ \S+\n`)

// Explain runs EXPLAIN (ANALYZE, BUFFERS) for c as the API role, scoped to org by RLS exactly as the API does
// (prepared, so the cached plan is the one shown), and returns the plan text.
func (r *Reader) Explain(ctx context.Context, org string, c ExplainCase) (string, error) {
	var out strings.Builder
	err := r.InOrg(ctx, org, func(tx pgx.Tx) error {
		name := "explain_" + fmt.Sprint(time.Now().UnixNano())
		if _, err := tx.Exec(ctx, "PREPARE "+name+" AS "+sqlcHeader.ReplaceAllString(c.SQL, "")); err != nil {
			return err
		}
		// Warm the plan cache the way a pooled connection is warm: several executions first.
		exec := "EXECUTE " + name + "(" + placeholders(len(c.Args)) + ")"
		for range 6 {
			if _, err := tx.Exec(ctx, exec, c.Args...); err != nil {
				return err
			}
		}
		rows, err := tx.Query(ctx, "EXPLAIN (ANALYZE, BUFFERS) "+exec, c.Args...)
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
