package postgres_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/anchorage-pin/anchorage/projections"
	"github.com/stretchr/testify/require"
)

// Meta filters of one and several pairs, across status changes and removals, answer what a scan of every pin
// answers, and pin_meta/pin_meta_counts (kept by triggers on pins) stay exactly what pins implies. Projected in
// batches of 37 events (statements mixing pins with and without meta) and one at a time (statements whose rows
// have no meta, or change nothing pin_meta holds, which the triggers skip).
func TestMetaFilterPairs(t *testing.T) {
	t.Parallel()
	for _, batch := range []int{37, 1} {
		t.Run(fmt.Sprintf("batch=%d", batch), func(t *testing.T) {
			t.Parallel()
			testMetaFilterPairs(t, batch)
		})
	}
}

func testMetaFilterPairs(t *testing.T, batch int) {
	ctx := context.Background()
	f := newFixture(t)
	s := &stream{}
	type pin struct {
		id     string
		meta   map[string]string
		status projections.Status
		gone   bool
	}
	var pins []*pin
	for i := range 300 {
		m := map[string]string{"app": fmt.Sprint(i % 3), "env": fmt.Sprint(i % 5)}
		if i%7 == 0 {
			m["odd \"key\""] = "välue, with: {json}"
		}
		if i%11 == 0 {
			m = nil
		}
		p := &pin{id: s.request(orgA, fmt.Sprintf("m-%d", i), m, cids[i%len(cids)]), meta: m, status: projections.StatusQueued}
		pins = append(pins, p)
		// The other org holds the same pairs: never counted.
		s.request(orgB, fmt.Sprintf("m-%d", i), m, cids[0])
	}
	for _, p := range pins {
		switch rand.IntN(4) {
		case 0:
			s.status(orgA, p.id, "pinned")
			p.status = projections.StatusPinned
		case 1:
			s.status(orgA, p.id, "failed")
			p.status = projections.StatusFailed
		case 2:
			s.remove(orgA, p.id)
			p.gone = true
		}
	}
	f.applyAll(t, s.recs, batch)

	filters := []map[string]string{
		{"app": "1"}, {"env": "4"}, {"app": "2", "env": "3"}, {"odd \"key\"": "välue, with: {json}"},
		{"app": "0", "odd \"key\"": "välue, with: {json}"}, {"app": "9"}, {"app": "1", "env": "nope"},
	}
	for _, meta := range filters {
		for _, st := range [][]projections.Status{projections.AllStatuses, {projections.StatusPinned}, {projections.StatusQueued, projections.StatusFailed}} {
			for _, limit := range []int{1, 5, 1000} {
				var want []string
				for i := len(pins) - 1; i >= 0; i-- { // newest first
					p := pins[i]
					if p.gone || !slices.Contains(st, p.status) {
						continue
					}
					ok := true
					for k, v := range meta {
						if got, has := p.meta[k]; !has || got != v {
							ok = false
						}
					}
					if ok {
						want = append(want, p.id)
					}
				}
				count, got, err := f.reader.ListPins(ctx, projections.PinFilter{OrgID: orgA, Statuses: st, Meta: meta, Limit: limit})
				require.NoError(t, err)
				require.Equal(t, int64(len(want)), count, "count for %v %v", meta, st)
				var ids []string
				for _, v := range got {
					ids = append(ids, v.RequestID)
				}
				require.Equal(t, want[:min(limit, len(want))], ids, "page for %v %v limit %d", meta, st, limit)
			}
		}
	}

	// The derived tables are exactly what the pins imply.
	var diff int
	require.NoError(t, f.owner.QueryRow(ctx, `
		WITH want AS (
			SELECT p.org_id, pin_meta_kv(e.key, e.value) AS kv, p.status, p.pos FROM pins p CROSS JOIN LATERAL jsonb_each(p.meta) e
		), wantc AS (
			SELECT org_id, kv, status, pos / 1024 AS bucket, count(*) AS n FROM want GROUP BY 1, 2, 3, 4
		)
		SELECT (SELECT count(*) FROM ((SELECT * FROM want EXCEPT ALL SELECT * FROM pin_meta) UNION ALL (SELECT * FROM pin_meta EXCEPT ALL SELECT * FROM want)) x)
		     + (SELECT count(*) FROM ((SELECT * FROM wantc EXCEPT SELECT * FROM pin_meta_counts WHERE n <> 0) UNION ALL (SELECT * FROM pin_meta_counts WHERE n <> 0 EXCEPT SELECT * FROM wantc)) y)`).Scan(&diff))
	require.Zero(t, diff)
}

// pin_meta_kv is inlined into the statements that call it (migration 000011): a STRICT SQL function is not, and
// every call then ran a SELECT of its own, once per meta pair of every pin a rebuild or a trigger handles.
func TestPinMetaKVIsInlined(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFixture(t)
	var plan string
	require.NoError(t, f.owner.QueryRow(ctx, `EXPLAIN (VERBOSE, FORMAT JSON)
		SELECT pin_meta_kv(e.key, e.value) FROM jsonb_each($1::jsonb) e`, `{"app":"x"}`).Scan(&plan))
	require.Contains(t, plan, "md5(")
	require.NotContains(t, plan, "pin_meta_kv(")
	// The same pair gives the same key as before (pin_meta's rows keep their meaning).
	var kv string
	require.NoError(t, f.owner.QueryRow(ctx, `SELECT pin_meta_kv(e.key, e.value)::text FROM jsonb_each('{"app":"x"}'::jsonb) e`).Scan(&kv))
	var want string
	require.NoError(t, f.owner.QueryRow(ctx, `SELECT md5('{"app": "x"}')::uuid::text`).Scan(&want))
	require.Equal(t, want, kv)
}
