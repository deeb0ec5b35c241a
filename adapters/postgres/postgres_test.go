package postgres_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/anchorage-pin/anchorage/adapters/postgres"
	"github.com/anchorage-pin/anchorage/adapters/postgres/pgschema"
	"github.com/anchorage-pin/anchorage/adapters/postgres/pgtest"
	"github.com/anchorage-pin/anchorage/domain"
	"github.com/anchorage-pin/anchorage/events"
	"github.com/anchorage-pin/anchorage/projections"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

var (
	orgA = domain.OrgIDForSlug("org-a")
	orgB = domain.OrgIDForSlug("org-b")
	cids = []string{
		"bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy",
		"QmUNLLsPACCz1vLxQVkXqqLX5R1X345qqfHbsf67hvA3Nn",
		"bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi",
		"bafkqaaa",
	}
)

// stream builds synthetic records with increasing sequences.
type stream struct {
	seq    uint64
	recs   []events.Record
	at     time.Time
	placed map[string]uint64 // request id → its placement's sequence on node n1
}

func (s *stream) add(subject string, e events.Event) events.Record {
	s.seq++
	if s.at.IsZero() {
		s.at = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	}
	s.at = s.at.Add(time.Duration(rand.IntN(3)) * time.Millisecond) // collisions included
	r := events.Record{Seq: s.seq, Subject: subject, Envelope: events.Envelope{ID: uuid.NewString(), Type: e.EventType(), Version: e.EventVersion(), At: s.at}, Event: e}
	s.recs = append(s.recs, r)
	return r
}

func (s *stream) request(org, name string, meta map[string]string, cid string) string {
	id := uuid.NewString()
	s.add(events.PinSubject(org, id), events.PinRequested{OrgID: org, RequestID: id, CID: cid, Name: name, Meta: meta, Created: s.at})
	return id
}

// status places the pin on node n1 (once) and records n1's observation of it.
func (s *stream) status(org, id, status string) {
	if s.placed == nil {
		s.placed = map[string]uint64{}
	}
	if _, ok := s.placed[id]; !ok {
		r := s.add(events.PlaceSubject("n1", org, id), events.PinPlaced{OrgID: org, RequestID: id, NodeID: "n1", CID: cids[0]})
		s.placed[id] = r.Seq
	}
	s.add(events.PlaceSubject("n1", org, id), events.PinStatusObserved{OrgID: org, RequestID: id, NodeID: "n1", Status: status,
		Info: map[string]string{"note": status}, PlacedSeq: s.placed[id]})
}

func (s *stream) remove(org, id string) {
	s.add(events.PinSubject(org, id), events.PinRemoved{OrgID: org, RequestID: id})
}

type fixture struct {
	db     pgschema.DB
	owner  *pgxpool.Pool
	api    *pgxpool.Pool
	reader *postgres.Reader
	pins   projections.Projector
}

func newFixture(t *testing.T) fixture {
	t.Helper()
	ctx := context.Background()
	db := pgschema.New(t)
	owner, err := postgres.OpenOwnerPool(ctx, db.OwnerDSN, 4)
	require.NoError(t, err)
	t.Cleanup(owner.Close)
	api, err := postgres.OpenAPIPool(ctx, db.APIDSN, 4)
	require.NoError(t, err)
	t.Cleanup(api.Close)
	return fixture{db: db, owner: owner, api: api, reader: postgres.NewReader(api), pins: postgres.NewPinsProjector(owner)}
}

// applyAll applies recs to the pins projector in batches of the given size.
func (f fixture) applyAll(t *testing.T, recs []events.Record, batch int) {
	t.Helper()
	ctx := context.Background()
	prev, err := f.pins.Checkpoint(ctx)
	require.NoError(t, err)
	for i := 0; i < len(recs); i += batch {
		b := recs[i:min(i+batch, len(recs))]
		require.NoError(t, f.pins.Apply(ctx, prev, b))
		prev = b[len(b)-1].Seq
	}
}

// dump returns every read-model row of the pins projection, as text, for comparisons.
func (f fixture) dump(t *testing.T) []string {
	t.Helper()
	var out []string
	for _, q := range []string{
		"SELECT org_id, request_id, pos, created, status, cid, name, name_lower, meta, origins, info, placed_nodes, replicas, replaces, last_seq FROM pins ORDER BY org_id, pos",
		"SELECT org_id, request_id, node_id, cid, status, info, placed_seq, term, moved_from, pin_gone, replaced_by, last_seq FROM placements ORDER BY 1, 2, 3",
		"SELECT org_id, status, bucket, n FROM pin_counts WHERE n <> 0 ORDER BY 1, 2, 3",
		"SELECT org_id, last_pos, last_created, live_pins FROM pin_org_state ORDER BY 1",
	} {
		rows, err := f.owner.Query(context.Background(), q)
		require.NoError(t, err)
		for rows.Next() {
			vals, err := rows.Values()
			require.NoError(t, err)
			out = append(out, fmt.Sprint(vals...))
		}
		require.NoError(t, rows.Err())
	}
	return out
}

func history(n int) *stream {
	s := &stream{}
	var live []string
	for i := 0; i < n; i++ {
		org := orgA
		if i%3 == 0 {
			org = orgB
		}
		id := s.request(org, fmt.Sprintf("pin-%d", i%50), map[string]string{"app": fmt.Sprint(i % 7)}, cids[i%len(cids)])
		live = append(live, org+"/"+id)
		if i%4 == 0 {
			s.status(org, id, "pinning")
		}
		if i%5 == 0 {
			s.status(org, id, "pinned")
		}
		if i%11 == 0 && len(live) > 3 {
			k := rand.IntN(len(live))
			parts := strings.SplitN(live[k], "/", 2)
			s.remove(parts[0], parts[1])
			live = slices.Delete(live, k, k+1)
		}
	}
	return s
}

// Projections are deterministic: any batching of the same history gives the same rows.
func TestPinsProjectionIsDeterministic(t *testing.T) {
	t.Parallel()
	s := history(600)
	one := newFixture(t)
	one.applyAll(t, s.recs, 1)
	big := newFixture(t)
	big.applyAll(t, s.recs, 1000)
	mid := newFixture(t)
	mid.applyAll(t, s.recs, 37)
	require.Equal(t, one.dump(t), big.dump(t))
	require.Equal(t, one.dump(t), mid.dump(t))
}

// Every batch delivered twice (redelivery, or a second projector instance) changes nothing the second time.
func TestPinsProjectionIgnoresRedelivery(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := history(300)
	f := newFixture(t)
	ref := newFixture(t)
	ref.applyAll(t, s.recs, 25)

	prev := uint64(0)
	for i := 0; i < len(s.recs); i += 25 {
		b := s.recs[i:min(i+25, len(s.recs))]
		require.NoError(t, f.pins.Apply(ctx, prev, b))
		// Again, as if redelivered: the checkpoint has moved, nothing is applied.
		require.ErrorIs(t, f.pins.Apply(ctx, prev, b), projections.ErrCheckpointMoved)
		prev = b[len(b)-1].Seq
	}
	require.Equal(t, ref.dump(t), f.dump(t))
}

// created is millisecond precision and strictly increasing per org even when events collide in time.
func TestCreatedStrictlyIncreasingPerOrg(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := &stream{}
	var ids []string
	for i := 0; i < 50; i++ {
		id := uuid.NewString()
		// All in the same millisecond.
		s.add(events.PinSubject(orgA, id), events.PinRequested{OrgID: orgA, RequestID: id, CID: cids[0], Created: time.Date(2026, 5, 5, 5, 5, 5, 123456789, time.UTC)})
		ids = append(ids, id)
	}
	f := newFixture(t)
	f.applyAll(t, s.recs, 7)
	var last time.Time
	for _, id := range ids {
		v, err := f.reader.GetPin(ctx, orgA, id)
		require.NoError(t, err)
		require.Equal(t, v.Created, v.Created.Truncate(time.Millisecond))
		require.True(t, v.Created.After(last), "created must increase")
		last = v.Created
	}
}

// The API role sees nothing without an org, exactly its org with one, and never another org's rows.
func TestRowLevelSecurity(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := history(90)
	f := newFixture(t)
	f.applyAll(t, s.recs, 1000)
	for _, table := range []string{"pins", "pin_counts", "pin_org_state", "orgs", "tokens"} {
		var n int
		require.NoError(t, f.api.QueryRow(ctx, "SELECT count(*) FROM "+table).Scan(&n))
		require.Zero(t, n, "API role sees %s rows without an org", table)
	}
	var n int
	require.NoError(t, f.api.QueryRow(ctx, "SELECT count(*) FROM pins_matching_meta('{}')").Scan(&n))
	require.Zero(t, n, "search function without an org")

	var aIDs []string
	require.NoError(t, f.reader.InOrg(ctx, orgA, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, "SELECT org_id::text, request_id::text FROM pins")
		if err != nil {
			return err
		}
		for rows.Next() {
			var o, id string
			if err := rows.Scan(&o, &id); err != nil {
				return err
			}
			require.Equal(t, orgA, o)
			aIDs = append(aIDs, id)
		}
		return rows.Err()
	}))
	require.NotEmpty(t, aIDs)
	// Org B asking for org A's pin gets not found.
	_, err := f.reader.GetPin(ctx, orgB, aIDs[0])
	require.ErrorIs(t, err, domain.ErrNotFound)
	v, err := f.reader.GetPin(ctx, orgA, aIDs[0])
	require.NoError(t, err)
	require.Equal(t, aIDs[0], v.RequestID)

	// A transaction-local org does not outlive its transaction on a pooled connection.
	one, err := postgres.OpenAPIPool(ctx, f.db.APIDSN, 1)
	require.NoError(t, err)
	defer one.Close()
	require.NoError(t, postgres.NewReader(one).InOrg(ctx, orgA, func(tx pgx.Tx) error { return nil }))
	require.NoError(t, one.QueryRow(ctx, "SELECT count(*) FROM pins").Scan(&n))
	require.Zero(t, n)
	// Likewise for the pipelined single-round-trip reads: the org ends with the batch.
	_, err = postgres.NewReader(one).GetPin(ctx, orgA, aIDs[0])
	require.NoError(t, err)
	c, _, err := postgres.NewReader(one).ListPins(ctx, projections.PinFilter{OrgID: orgA, Statuses: projections.AllStatuses, Limit: 1})
	require.NoError(t, err)
	require.Positive(t, c)
	require.NoError(t, one.QueryRow(ctx, "SELECT count(*) FROM pins").Scan(&n))
	require.Zero(t, n, "org setting leaked out of a pipelined read")

	// API connections plan no parallel queries (see openPool).
	var parallel string
	require.NoError(t, one.QueryRow(ctx, "SHOW max_parallel_workers_per_gather").Scan(&parallel))
	require.Equal(t, "0", parallel)
	// Nor JIT compilation (see openPool): a plan whose cost estimate crosses jit_above_cost compiled for tens of
	// milliseconds to run for one.
	var jit string
	require.NoError(t, one.QueryRow(ctx, "SHOW jit").Scan(&jit))
	require.Equal(t, "off", jit)
	owner, err := postgres.OpenOwnerPool(ctx, f.db.OwnerDSN, 1)
	require.NoError(t, err)
	defer owner.Close()
	require.NoError(t, owner.QueryRow(ctx, "SHOW jit").Scan(&jit))
	require.Equal(t, "off", jit, "the projectors' connections")

	// The API role cannot write, even to its own org.
	err = f.reader.InOrg(ctx, orgA, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, "DELETE FROM pins")
		return err
	})
	require.Error(t, err)
}

func TestAPIRoleSafetyCheck(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgschema.New(t)
	_, err := postgres.OpenAPIPool(ctx, db.OwnerDSN, 1)
	require.ErrorContains(t, err, "owns read-model tables")
	_, err = postgres.OpenAPIPool(ctx, db.Cluster.SuperuserDSN(db.Name), 1)
	require.ErrorContains(t, err, "superuser")
}

// List and count agree with a brute-force evaluation for random filters over an org larger than several count
// buckets.
func TestListAndCountMatchBruteForce(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := &stream{}
	type pin struct {
		id, name, cid string
		meta          map[string]string
		status        projections.Status
		gone          bool
	}
	var pins []*pin
	for i := 0; i < 3000; i++ {
		p := &pin{name: fmt.Sprintf("Item-%03d", rand.IntN(400)), cid: cids[rand.IntN(len(cids))], meta: map[string]string{"app": fmt.Sprint(rand.IntN(5))}}
		p.id = s.request(orgA, p.name, p.meta, p.cid)
		pins = append(pins, p)
		if rand.IntN(10) == 0 {
			s.request(orgB, p.name, p.meta, p.cid) // noise in another org
		}
	}
	for _, p := range pins {
		switch rand.IntN(6) {
		case 0:
			s.remove(orgA, p.id)
			p.gone = true
		case 1, 2:
			s.status(orgA, p.id, "pinned")
			p.status = projections.StatusPinned
		case 3:
			s.status(orgA, p.id, "failed")
			p.status = projections.StatusFailed
		}
	}
	f := newFixture(t)
	f.applyAll(t, s.recs, 500)

	// created times as projected
	created := map[string]time.Time{}
	require.NoError(t, f.reader.InOrg(ctx, orgA, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, "SELECT request_id::text, created FROM pins")
		if err != nil {
			return err
		}
		for rows.Next() {
			var id string
			var c time.Time
			if err := rows.Scan(&id, &c); err != nil {
				return err
			}
			created[id] = c
		}
		return rows.Err()
	}))
	var times []time.Time
	for _, c := range created {
		times = append(times, c)
	}
	slices.SortFunc(times, func(a, b time.Time) int { return a.Compare(b) })

	for trial := 0; trial < 150; trial++ {
		fl := projections.PinFilter{OrgID: orgA, Limit: 1 + rand.IntN(40)}
		fl.Statuses = []projections.Status{projections.AllStatuses[rand.IntN(4)]}
		if rand.IntN(2) == 0 {
			fl.Statuses = projections.AllStatuses
		}
		if rand.IntN(2) == 0 {
			fl.Before = times[rand.IntN(len(times))]
		}
		if rand.IntN(3) == 0 {
			fl.After = times[rand.IntN(len(times))]
		}
		switch rand.IntN(6) {
		case 0:
			fl.Name, fl.Match = fmt.Sprintf("Item-%03d", rand.IntN(400)), projections.MatchExact
		case 1:
			fl.Name, fl.Match = strings.ToLower(fmt.Sprintf("item-%03d", rand.IntN(400))), projections.MatchIExact
		case 2:
			fl.Name, fl.Match = fmt.Sprintf("-%02d", rand.IntN(40)), projections.MatchPartial
		case 3:
			fl.Name, fl.Match = fmt.Sprintf("EM-%d", rand.IntN(4)), projections.MatchIPartial
		}
		if rand.IntN(4) == 0 {
			fl.Meta = map[string]string{"app": fmt.Sprint(rand.IntN(5))}
		}
		if rand.IntN(5) == 0 {
			pc, _ := domain.ParseCID(cids[rand.IntN(len(cids))])
			fl.CIDKeys = [][]byte{pc.Key}
		}

		var want []*pin
		for _, p := range pins {
			c := created[p.id]
			if p.gone || !slices.Contains(fl.Statuses, p.status) ||
				(!fl.Before.IsZero() && !c.Before(fl.Before)) || (!fl.After.IsZero() && !c.After(fl.After)) {
				continue
			}
			if fl.Name != "" {
				ok := false
				switch fl.Match {
				case projections.MatchExact:
					ok = p.name == fl.Name
				case projections.MatchIExact:
					ok = strings.EqualFold(p.name, fl.Name)
				case projections.MatchPartial:
					ok = strings.Contains(p.name, fl.Name)
				case projections.MatchIPartial:
					ok = strings.Contains(strings.ToLower(p.name), strings.ToLower(fl.Name))
				}
				if !ok {
					continue
				}
			}
			if fl.Meta != nil && p.meta["app"] != fl.Meta["app"] {
				continue
			}
			if fl.CIDKeys != nil {
				pc, _ := domain.ParseCID(p.cid)
				if string(pc.Key) != string(fl.CIDKeys[0]) {
					continue
				}
			}
			want = append(want, p)
		}
		slices.SortFunc(want, func(a, b *pin) int { return created[b.id].Compare(created[a.id]) })

		count, got, err := f.reader.ListPins(ctx, fl)
		require.NoError(t, err)
		require.Equal(t, int64(len(want)), count, "count for %+v", fl)
		n := min(fl.Limit, len(want))
		require.Len(t, got, n, "results for %+v", fl)
		for i := 0; i < n; i++ {
			require.Equal(t, want[i].id, got[i].RequestID, "order for %+v", fl)
		}
	}
}

// A pinning report that lands after the placement's pinned (or failed) one never downgrades it, in one batch or
// across batches.
func TestLateProgressReportDoesNotDowngrade(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := &stream{}
	a := s.request(orgA, "late-a", nil, cids[0])
	b := s.request(orgA, "late-b", nil, cids[1])
	s.status(orgA, a, "pinned")
	s.status(orgA, a, "pinning")
	s.status(orgA, b, "failed")
	s.status(orgA, b, "pinning")
	for _, batch := range []int{1, 1000} {
		f := newFixture(t)
		f.applyAll(t, s.recs, batch)
		va, err := f.reader.GetPin(ctx, orgA, a)
		require.NoError(t, err)
		require.Equal(t, projections.StatusPinned, va.Status, "batch %d", batch)
		vb, err := f.reader.GetPin(ctx, orgA, b)
		require.NoError(t, err)
		require.Equal(t, projections.StatusFailed, vb.Status, "batch %d", batch)
	}
}
