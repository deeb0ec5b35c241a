package postgres_test

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/anchorage-pin/anchorage/adapters/postgres"
	"github.com/anchorage-pin/anchorage/projections"
	"github.com/ipfs/go-cid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/multiformats/go-multihash"
	"github.com/stretchr/testify/require"
)

// A partial-name search right after a burst of writes, before autovacuum has ever analyzed pins, is driven by the
// trigram index alone, exactly as at steady state. Without statistics the planner took "org_id = app_org()" for
// selective and ANDed the trigram bitmap with a bitmap of the org's whole range in another (org_id, …) index:
// O(org) per call (about 28 ms at 336k freshly seeded pins, twice per request with the count). The plans are
// taken from auto_explain (nested statements, so the query pins_matching_name runs is the one checked), for the
// API's own requests through Reader.ListPins; the assertion is on their shape and buffers, never on time.
func TestPartialNameSearchPlanAfterBulkLoad(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFixture(t)
	// Autovacuum must not get there first: the state under test is "not analyzed yet".
	_, err := f.owner.Exec(ctx, "ALTER TABLE pins SET (autovacuum_enabled = false)")
	require.NoError(t, err)

	// The load tool's seed: names seed-N in one org, most pins then observed pinned (an update: the dead
	// versions stay in every index until a vacuum), plus a few pins of another org whose names hold the pattern.
	const n = 20000
	const chunk = 2000
	var seq uint64
	for lo := 0; lo < n; lo += chunk {
		s := &stream{seq: seq}
		var ids []string
		for i := lo; i < lo+chunk; i++ {
			ids = append(ids, s.request(orgA, "seed-"+strconv.Itoa(i), map[string]string{"w": strconv.Itoa(i % 16)}, testCID(i)))
			if i%2000 == 0 { // matches, in the other org: never counted
				s.request(orgB, "seed-1234-"+strconv.Itoa(i), nil, testCID(-i-1))
			}
		}
		for k, id := range ids {
			if (lo+k)%20 < 16 {
				s.status(orgA, id, "pinned")
			}
		}
		prev, err := f.pins.Checkpoint(ctx)
		require.NoError(t, err)
		for i := 0; i < len(s.recs); i += 4000 {
			b := s.recs[i:min(i+4000, len(s.recs))]
			require.NoError(t, f.pins.Apply(ctx, prev, b))
			prev = b[len(b)-1].Seq
		}
		seq = s.seq
	}
	var analyzed bool
	require.NoError(t, f.owner.QueryRow(ctx, `SELECT reltuples >= 0 FROM pg_class WHERE oid = 'public.pins'::regclass`).Scan(&analyzed))
	require.False(t, analyzed, "pins must not have statistics yet")

	// The API role's sessions in this database log every plan, nested statements included, as notices.
	db := pgx.Identifier{f.db.Name}.Sanitize()
	for _, set := range []string{"session_preload_libraries = 'auto_explain'", "auto_explain.log_min_duration = 0",
		"auto_explain.log_analyze = on", "auto_explain.log_buffers = on", "auto_explain.log_timing = off",
		"auto_explain.log_nested_statements = on", "auto_explain.log_format = json", "auto_explain.log_level = notice"} {
		require.NoError(t, f.db.Cluster.Exec(ctx, "ALTER ROLE anchorage_api IN DATABASE "+db+" SET "+set))
	}
	cfg, err := pgxpool.ParseConfig(f.db.APIDSN)
	require.NoError(t, err)
	cfg.MaxConns = 1
	var mu sync.Mutex
	var plans []explained
	cfg.ConnConfig.OnNotice = func(_ *pgconn.PgConn, n *pgconn.Notice) {
		_, js, ok := strings.Cut(n.Message, "plan:\n")
		if !ok {
			return
		}
		var p explained
		if json.Unmarshal([]byte(js), &p) == nil {
			mu.Lock()
			plans = append(plans, p)
			mu.Unlock()
		}
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	reader := postgres.NewReader(pool)

	check := func(when string) {
		t.Helper()
		for _, q := range []struct {
			name  string
			match projections.Match
			want  int64 // seed-1234 and seed-1234N in orgA: 11
		}{{"seed-1234", projections.MatchPartial, 11}, {"SEED-1234", projections.MatchIPartial, 11}} {
			mu.Lock()
			plans = plans[:0]
			mu.Unlock()
			count, got, err := reader.ListPins(ctx, projections.PinFilter{OrgID: orgA, Statuses: projections.AllStatuses,
				Name: q.name, Match: q.match, Limit: 10})
			require.NoError(t, err)
			require.Equal(t, q.want, count, "%s: %s", when, q.name)
			require.Len(t, got, 10)
			mu.Lock()
			searches := 0
			for _, p := range plans {
				if !strings.Contains(p.QueryText, "name_lower LIKE $1") {
					continue
				}
				searches++
				idx := p.Plan.indexes(nil)
				require.Equal(t, []string{"pins_name_trgm"}, idx, "%s, %s: the name search reads the trigram index alone\n%s", when, q.name, p.raw())
				// Tens of pages for the matches, never the org's range of an (org_id, …) index: that is
				// hundreds of pages at this size and grows with the org.
				require.Less(t, p.Plan.SharedHit+p.Plan.SharedRead, int64(150), "%s, %s: buffers\n%s", when, q.name, p.raw())
				t.Logf("%s, %s: %s, %d buffers", when, q.name, idx, p.Plan.SharedHit+p.Plan.SharedRead)
			}
			mu.Unlock()
			require.Equal(t, 1, searches, "%s: %s: the page and its count share one search", when, q.name)
		}
	}
	check("right after the bulk load, before any ANALYZE")
	_, err = f.owner.Exec(ctx, "VACUUM ANALYZE pins")
	require.NoError(t, err)
	pool.Reset() // fresh sessions, nothing cached from before the statistics
	check("at steady state, vacuumed and analyzed")
}

// explained is the part of an auto_explain JSON plan the test looks at.
type explained struct {
	QueryText string   `json:"Query Text"`
	Plan      planNode `json:"Plan"`
}

type planNode struct {
	NodeType   string     `json:"Node Type"`
	IndexName  string     `json:"Index Name"`
	Relation   string     `json:"Relation Name"`
	SharedHit  int64      `json:"Shared Hit Blocks"`
	SharedRead int64      `json:"Shared Read Blocks"`
	Plans      []planNode `json:"Plans"`
}

func (p planNode) indexes(acc []string) []string {
	if p.IndexName != "" {
		acc = append(acc, p.IndexName)
	}
	for _, c := range p.Plans {
		acc = c.indexes(acc)
	}
	return acc
}

func (e explained) raw() string {
	b, _ := json.MarshalIndent(e.Plan, "", "  ")
	return string(b)
}

// testCID returns a distinct raw CIDv1 for each i, so the org's CID index is as large as a real one.
func testCID(i int) string {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(i))
	sum := sha256.Sum256(b[:])
	mh, _ := multihash.Encode(sum[:], multihash.SHA2_256)
	return cid.NewCidV1(cid.Raw, mh).String()
}
