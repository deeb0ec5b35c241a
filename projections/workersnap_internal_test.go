package projections

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/anchorage-pin/anchorage/domain"
	"github.com/anchorage-pin/anchorage/events"
	"github.com/anchorage-pin/anchorage/projections/projectionstest"
	"github.com/google/uuid"
	"github.com/stretchr/testify/require"
)

// memLog is an in-memory event log with JetStream's read semantics for what a worker's start uses: the last
// event of each subject, a filtered read of a range, event ids by sequence.
type memLog struct {
	mu   sync.Mutex
	id   string
	recs []events.Record // recs[i].Seq == i+1

	lastPerSubject int // LastPerSubject calls
	tailReads      int // ReadUntilAtMost calls
	loads          int // Load calls for the term starts
	loadedAfter    int // events LoadAfter returned
}

func (m *memLog) add(subject string, e events.Event) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.recs = append(m.recs, events.Record{Seq: uint64(len(m.recs) + 1), Subject: subject, Envelope: events.Envelope{ID: uuid.NewString()}, Event: e})
}

func (m *memLog) ConsumeDurable(ctx context.Context, _ string, _ []string, _ int, _ time.Duration, _ func(Delivery), _ func(error)) error {
	<-ctx.Done()
	return nil
}

func (m *memLog) LastPerSubject(_ context.Context, filter string, fn func(events.Record) error) (uint64, error) {
	m.mu.Lock()
	m.lastPerSubject++
	last := map[string]int{}
	for i, r := range m.recs {
		if events.SubjectMatches(filter, r.Subject) {
			last[r.Subject] = i
		}
	}
	idx := make([]int, 0, len(last))
	for _, i := range last {
		idx = append(idx, i)
	}
	slices.Sort(idx)
	recs, upTo := make([]events.Record, len(idx)), uint64(len(m.recs))
	for j, i := range idx {
		recs[j] = m.recs[i]
	}
	m.mu.Unlock()
	for _, r := range recs {
		if err := fn(r); err != nil {
			return 0, err
		}
	}
	return upTo, nil
}

func (m *memLog) LoadAfter(_ context.Context, subject string, after uint64) ([]events.Record, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []events.Record
	for _, r := range m.recs {
		if r.Subject == subject && r.Seq > after {
			out = append(out, r)
		}
	}
	m.loadedAfter += len(out)
	return out, nil
}

func (m *memLog) Load(_ context.Context, subject string) ([]events.Record, uint64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if subject == events.SchedTerm {
		m.loads++
	}
	var out []events.Record
	for _, r := range m.recs {
		if r.Subject == subject {
			out = append(out, r)
		}
	}
	return out, 0, nil
}

func (m *memLog) SubjectCount(_ context.Context, subject string) (uint64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var n uint64
	for _, r := range m.recs {
		if r.Subject == subject {
			n++
		}
	}
	return n, nil
}

func (m *memLog) LastSeq(context.Context) (uint64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return uint64(len(m.recs)), nil
}

func (m *memLog) Append(context.Context, ...domain.Message) ([]uint64, error) {
	return nil, errors.New("memLog: read only")
}

func (m *memLog) AppendBulk(context.Context, []domain.Message) ([]uint64, error) {
	return nil, errors.New("memLog: read only")
}

func (m *memLog) LogID(context.Context) (string, error) { return m.id, nil }

func (m *memLog) EventID(_ context.Context, seq uint64) (string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if seq == 0 || seq > uint64(len(m.recs)) {
		return "", fmt.Errorf("no event %d", seq)
	}
	return m.recs[seq-1].ID, nil
}

func (m *memLog) ReadUntilAtMost(_ context.Context, from, until uint64, filters []string, maxBatch int, maxPending uint64, fn func([]events.Record) error) error {
	m.mu.Lock()
	m.tailReads++
	var recs []events.Record
	pending := uint64(0)
	for _, r := range m.recs {
		if r.Seq >= from && events.MatchesAny(filters, r.Subject) {
			pending++
			if r.Seq <= until {
				recs = append(recs, r)
			}
		}
	}
	m.mu.Unlock()
	if pending > maxPending {
		return fmt.Errorf("%d pending, at most %d wanted", pending, maxPending)
	}
	for len(recs) > 0 {
		n := min(maxBatch, len(recs))
		if err := fn(recs[:n]); err != nil {
			return err
		}
		recs = recs[n:]
	}
	return nil
}

// history writes random placement histories: pins of three orgs (one whose ID is not a UUID) placed on n1 and
// n2, observed, unplaced, placed again under another CID, some by a deposed scheduler term; CIDs drawn from a
// small pool so several placements share content.
type history struct {
	log   *memLog
	rng   *rand.Rand
	orgs  []string
	pins  []PinRef
	term  uint64
	cids  []string
	steps int
}

func newHistory(log *memLog, seed uint64) *history {
	h := &history{log: log, rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)), orgs: []string{uuid.NewString(), uuid.NewString(), "org-x"}, term: 1}
	for i := range 12 {
		h.cids = append(h.cids, testCID(i))
	}
	log.add(events.SchedTerm, events.SchedTermStarted{Term: 1, SchedulerID: "s1"})
	return h
}

func (h *history) write(n int) {
	for range n {
		h.steps++
		node := "n1"
		if h.rng.IntN(4) == 0 {
			node = "n2"
		}
		var ref PinRef
		if len(h.pins) == 0 || h.rng.IntN(3) == 0 {
			req := uuid.NewString()
			if h.rng.IntN(10) == 0 {
				req = fmt.Sprintf("req-%d", h.steps)
			}
			ref = PinRef{h.orgs[h.rng.IntN(len(h.orgs))], req}
			h.pins = append(h.pins, ref)
		} else {
			ref = h.pins[h.rng.IntN(len(h.pins))]
		}
		subject := events.PlaceSubject(node, ref.OrgID, ref.RequestID)
		cid := h.cids[h.rng.IntN(len(h.cids))]
		term := h.term
		if h.rng.IntN(15) == 0 {
			term = h.term - 1 // a deposed scheduler's decision: not valid once a higher term started before it
		}
		switch h.rng.IntN(10) {
		case 0, 1, 2:
			var origins []string
			if h.rng.IntN(2) == 0 {
				origins = []string{fmt.Sprintf("/ip4/127.0.0.1/tcp/%d/p2p/peer", 4000+h.steps)}
			}
			h.log.add(subject, events.PinPlaced{OrgID: ref.OrgID, RequestID: ref.RequestID, NodeID: node, CID: cid, Origins: origins, Term: term})
		case 3, 4, 5:
			status := []string{"pinning", "pinned", "failed"}[h.rng.IntN(3)]
			placed, _ := h.log.LastSeq(context.Background())
			h.log.add(subject, events.PinStatusObserved{OrgID: ref.OrgID, RequestID: ref.RequestID, NodeID: node, CID: cid, Status: status, PlacedSeq: 1 + uint64(h.rng.IntN(int(placed)))})
		case 6, 7:
			h.log.add(subject, events.PinUnplaced{OrgID: ref.OrgID, RequestID: ref.RequestID, NodeID: node, CID: cid, Reason: "removed", Term: term})
		case 8:
			h.log.add(events.PinSubject(ref.OrgID, ref.RequestID), events.PinRemoved{OrgID: ref.OrgID, RequestID: ref.RequestID})
		case 9:
			if h.rng.IntN(4) == 0 {
				h.term += 2
				h.log.add(events.SchedTerm, events.SchedTermStarted{Term: h.term, SchedulerID: "s1"})
			}
		}
	}
}

// workerState is a worker's state in comparable form.
type workerState struct {
	State   map[pinKey]placementState
	Refs    map[cidKey]int32
	Origins map[pinKey][]string // of live, unfinished placements: what resume uses
}

func stateOf(w *Worker) workerState {
	w.mu.Lock()
	defer w.mu.Unlock()
	s := workerState{State: map[pinKey]placementState{}, Refs: map[cidKey]int32{}, Origins: map[pinKey][]string{}}
	for k, st := range w.state {
		s.State[k] = placementState{seq: st.seq, cid: st.cid, live: st.live, done: st.done}
		if st.live && !st.done && len(w.resumeOrigins[k]) > 0 {
			s.Origins[k] = w.resumeOrigins[k]
		}
	}
	for k, n := range w.refs {
		s.Refs[k] = n
	}
	return s
}

// fromLog is the state the log implies: every one of the node's events folded in order, as the live path
// applies them (what a start must reproduce, from each subject's last event or from a snapshot). It also checks
// that a worker without snapshots derives exactly that.
func fromLog(t *testing.T, log *memLog) workerState {
	ref := NewWorker(log, nil, WorkerConfig{NodeID: "n1"})
	require.NoError(t, ref.loadTerms(context.Background(), 0))
	log.mu.Lock()
	recs := slices.Clone(log.recs)
	log.mu.Unlock()
	ref.mu.Lock()
	for _, r := range recs {
		if events.SubjectMatches(events.NodePlacements("n1"), r.Subject) {
			ref.fold(r)
		}
	}
	ref.mu.Unlock()
	want := stateOf(ref)
	w := NewWorker(log, nil, WorkerConfig{NodeID: "n1"})
	require.NoError(t, w.rebuild(context.Background()))
	require.Equal(t, want, stateOf(w), "each subject's last event")
	return want
}

// A worker started from a snapshot plus the node's events after it has exactly the state one reading each
// subject's last event has: over random histories, with the snapshot taken at several points.
func TestWorkerSnapshotStateEqualsTheLogs(t *testing.T) {
	for seed := range uint64(20) {
		log := &memLog{id: "log-1"}
		h := newHistory(log, seed)
		snaps := &projectionstest.Snapshots{}
		h.write(300)
		for round := range 4 {
			w := NewWorker(log, nil, WorkerConfig{NodeID: "n1", Snapshots: snaps})
			require.NoError(t, w.rebuild(context.Background()))
			require.Equal(t, fromLog(t, log), stateOf(w), "seed %d, round %d", seed, round)
			h.write(100 + 200*round)
		}
		require.Equal(t, 1+4, log.lastPerSubject, "seed %d: only the first start (and the four comparisons) read each subject's last event", seed)
	}
}

// The snapshot is written at the first start and again only once the events after it have grown.
func TestWorkerSnapshotRewrittenOnlyWhenTheTailGrows(t *testing.T) {
	defer func(v int) { snapTailMin = v }(snapTailMin)
	snapTailMin = 50
	log := &memLog{id: "log-1"}
	h := newHistory(log, 1)
	h.write(500)
	snaps := &projectionstest.Snapshots{}
	start := func() {
		w := NewWorker(log, nil, WorkerConfig{NodeID: "n1", Snapshots: snaps})
		require.NoError(t, w.rebuild(context.Background()))
	}
	start()
	require.Equal(t, 1, snaps.Saved())
	start() // nothing after it
	require.Equal(t, 1, snaps.Saved())
	h.write(10) // a few events on n1 at most: read at start, not worth a rewrite
	start()
	require.Equal(t, 1, snaps.Saved())
	h.write(100) // more than snapTailMin events on n1, fewer than the snapshot's entries
	start()
	require.Equal(t, 2, snaps.Saved())
	require.Equal(t, 1, log.lastPerSubject)
	require.Equal(t, fromLog(t, log), func() workerState {
		w := NewWorker(log, nil, WorkerConfig{NodeID: "n1", Snapshots: snaps})
		require.NoError(t, w.rebuild(context.Background()))
		return stateOf(w)
	}())
}

// A start from a snapshot reads only the scheduler-term starts after the snapshot's fence, never the whole
// term history (one message block per restart), and still fences exactly as a worker reading it all. A version 1
// snapshot, which has no fence, is still used: its start reads the term history once.
func TestWorkerSnapshotKeepsTheTermFence(t *testing.T) {
	defer func(v, m int) { snapTailMin, snapTermsMax = v, m }(snapTailMin, snapTermsMax)
	snapTailMin = 20
	log := &memLog{id: "log-1"}
	h := newHistory(log, 11)
	for range 30 { // many restarts: a term start each
		h.term++
		log.add(events.SchedTerm, events.SchedTermStarted{Term: h.term, SchedulerID: "s1"})
		h.write(10)
	}
	snaps := &projectionstest.Snapshots{}
	start := func() *Worker {
		w := NewWorker(log, nil, WorkerConfig{NodeID: "n1", Snapshots: snaps})
		require.NoError(t, w.rebuild(context.Background()))
		return w
	}
	start()
	require.Equal(t, 1, log.loads, "the first start reads the term history")
	require.Equal(t, 1, snaps.Saved())

	// Restarts, each starting a term, with and without placements in between.
	for i := range 5 {
		h.term++
		log.add(events.SchedTerm, events.SchedTermStarted{Term: h.term, SchedulerID: "s1"})
		h.write(5 * i)
		log.loadedAfter, log.loads = 0, 0
		w := start()
		require.Zero(t, log.loads, "restart %d read the whole term history", i)
		require.LessOrEqual(t, log.loadedAfter, 2+i, "restart %d: only the term starts after the snapshot", i)
		ref := NewWorker(log, nil, WorkerConfig{NodeID: "n1"})
		require.NoError(t, ref.loadTerms(context.Background(), 0))
		require.Equal(t, ref.terms, w.terms, "restart %d: the fence", i)
		require.Equal(t, ref.termsRead, w.termsRead)
		require.Equal(t, fromLog(t, log), stateOf(w), "restart %d", i)
	}

	// Term starts after the fence, restart after restart with nothing else: the snapshot is written again once
	// there are snapTermsMax of them.
	snapTermsMax = 1
	saved := snaps.Saved()
	start() // the restarts above left a term start after its fence: written again
	require.Equal(t, saved+1, snaps.Saved())
	snapTermsMax, saved = 3, saved+1
	for i := range 7 {
		h.term++
		log.add(events.SchedTerm, events.SchedTermStarted{Term: h.term, SchedulerID: "s1"})
		log.loads = 0
		w := start()
		require.Zero(t, log.loads)
		require.Equal(t, saved+(i+1)/3, snaps.Saved(), "restart %d", i)
		require.Equal(t, fromLog(t, log), stateOf(w))
	}

	// A version 1 snapshot: the same header and entries without the fence.
	w := start()
	var buf bytes.Buffer
	w.mu.Lock()
	h1 := snapHeader{node: "n1", logID: "log-1", seq: uint64(len(log.recs)), seqID: log.recs[len(log.recs)-1].ID, entries: uint64(len(w.state))}
	err := writeSnapshotAs(&buf, snapMagicV1, h1, w.stateEntries)
	w.mu.Unlock()
	require.NoError(t, err)
	snaps.Files["n1"] = buf.Bytes()
	loads, lps, saved := log.loads, log.lastPerSubject, snaps.Saved()
	w = start()
	require.Equal(t, lps, log.lastPerSubject, "the version 1 snapshot was used")
	require.Equal(t, loads+1, log.loads, "its start read the term history")
	require.Equal(t, saved+1, snaps.Saved(), "and wrote a snapshot with the fence")
	require.Equal(t, fromLog(t, log), stateOf(w))
	log.loads = 0
	start()
	require.Zero(t, log.loads)
}

// A snapshot that does not fit the log is not used: the worker reads each subject's last event instead, and
// writes a new snapshot.
func TestWorkerSnapshotRejected(t *testing.T) {
	defer func(v int) { snapTailMin = v }(snapTailMin)
	snapTailMin = 20
	cases := map[string]func(log *memLog, snaps *projectionstest.Snapshots, h *history){
		"another log": func(log *memLog, _ *projectionstest.Snapshots, _ *history) { log.id = "log-2" },
		"another node's": func(_ *memLog, snaps *projectionstest.Snapshots, _ *history) {
			w := NewWorker(nil, nil, WorkerConfig{NodeID: "n9"})
			var buf bytes.Buffer
			require.NoError(t, w.writeSnapshot(&buf, snapHeader{node: "n9", logID: "log-1"}))
			snaps.Files["n1"] = buf.Bytes()
		},
		"the log cut short and written again": func(log *memLog, _ *projectionstest.Snapshots, h *history) {
			log.recs = log.recs[:len(log.recs)-5]
			h.write(30)
		},
		"the log cut short": func(log *memLog, _ *projectionstest.Snapshots, _ *history) { log.recs = log.recs[:len(log.recs)-1] },
		"damaged": func(_ *memLog, snaps *projectionstest.Snapshots, _ *history) {
			b := snaps.Files["n1"]
			b[len(b)/2] ^= 0x40
		},
		"truncated": func(_ *memLog, snaps *projectionstest.Snapshots, _ *history) {
			snaps.Files["n1"] = snaps.Files["n1"][:len(snaps.Files["n1"])-40]
		},
		"too far behind": func(_ *memLog, _ *projectionstest.Snapshots, h *history) { h.write(2000) },
	}
	for name, spoil := range cases {
		t.Run(name, func(t *testing.T) {
			log := &memLog{id: "log-1"}
			h := newHistory(log, 7)
			h.write(200)
			snaps := &projectionstest.Snapshots{}
			w := NewWorker(log, nil, WorkerConfig{NodeID: "n1", Snapshots: snaps})
			require.NoError(t, w.rebuild(context.Background()))
			spoil(log, snaps, h)
			w = NewWorker(log, nil, WorkerConfig{NodeID: "n1", Snapshots: snaps})
			require.NoError(t, w.rebuild(context.Background()))
			require.Equal(t, 2, log.lastPerSubject, "read from the log again")
			require.Equal(t, 2, snaps.Saved(), "and a new snapshot written")
			require.Equal(t, fromLog(t, log), stateOf(w))
		})
	}
}

// snapshotOf writes a random history of steps steps and returns it with the snapshot a worker's start takes.
func snapshotOf(tb testing.TB, seed uint64, steps int) (*memLog, []byte) {
	log := &memLog{id: "log-1"}
	newHistory(log, seed).write(steps)
	snaps := &projectionstest.Snapshots{}
	w := NewWorker(log, nil, WorkerConfig{NodeID: "n1", Snapshots: snaps})
	require.NoError(tb, w.rebuild(context.Background()))
	return log, snaps.Files["n1"]
}

// Every prefix of a snapshot, and every single-byte change, is refused without a panic and leaves the state
// empty.
func TestWorkerSnapshotDamage(t *testing.T) {
	log, good := snapshotOf(t, 3, 120)
	try := func(b []byte) error {
		w := NewWorker(log, nil, WorkerConfig{NodeID: "n1", Snapshots: &projectionstest.Snapshots{Files: map[string][]byte{"n1": b}}})
		_, _, ok, err := w.restoreSnapshot(context.Background(), log)
		if ok {
			return nil
		}
		require.Empty(t, w.state)
		require.Empty(t, w.refs)
		return err
	}
	require.NoError(t, try(good))
	for n := range len(good) {
		require.Error(t, try(good[:n]), "prefix of %d bytes", n)
	}
	for i := 0; i < len(good); i += 7 {
		b := slices.Clone(good)
		b[i] ^= 1
		require.Error(t, try(b), "byte %d changed", i)
	}
}

// FuzzWorkerSnapshot feeds arbitrary bytes to the snapshot reader: an error or a state, never a panic or a
// huge allocation.
func FuzzWorkerSnapshot(f *testing.F) {
	log, good := snapshotOf(f, 5, 60)
	f.Add(good)
	f.Add([]byte(snapMagic))
	f.Fuzz(func(t *testing.T, b []byte) {
		w := NewWorker(log, nil, WorkerConfig{NodeID: "n1", Snapshots: &projectionstest.Snapshots{Files: map[string][]byte{"n1": b}}})
		_, _, _, _ = w.restoreSnapshot(context.Background(), log)
	})
}

// A running worker's refresh folds the events after its snapshot into it without its own state: a start from
// the refreshed snapshot reads nothing after it and has the state the log implies. A refresh of a damaged
// snapshot fails and leaves it as it was; one with too few events to fold in writes nothing.
func TestWorkerSnapshotRefresh(t *testing.T) {
	defer func(v int) { snapTailMin = v }(snapTailMin)
	snapTailMin = 20
	ctx := context.Background()
	for seed := range uint64(10) {
		log := &memLog{id: "log-1"}
		h := newHistory(log, seed)
		h.write(300)
		snaps := &projectionstest.Snapshots{}
		w := NewWorker(log, nil, WorkerConfig{NodeID: "n1", Snapshots: snaps})
		require.NoError(t, w.rebuild(ctx))
		for round := range 5 {
			h.write(100 + 100*round)
			n, err := w.refreshSnapshot(ctx, log)
			require.NoError(t, err)
			require.Positive(t, n, "seed %d, round %d", seed, round)
			head, _ := log.LastSeq(ctx)
			started := NewWorker(log, nil, WorkerConfig{NodeID: "n1", Snapshots: snaps})
			_, st, ok, err := started.restoreSnapshot(ctx, log)
			require.NoError(t, err)
			require.True(t, ok)
			require.Zero(t, st.tail, "the refreshed snapshot covers the log up to %d", head)
			require.Equal(t, fromLog(t, log), stateOf(started), "seed %d, round %d", seed, round)
		}
		require.Equal(t, 1+5, snaps.Saved())
		require.Equal(t, 1+5, log.lastPerSubject, "the first start and the comparisons only")
	}

	log := &memLog{id: "log-1"}
	h := newHistory(log, 99)
	h.write(300)
	snaps := &projectionstest.Snapshots{}
	w := NewWorker(log, nil, WorkerConfig{NodeID: "n1", Snapshots: snaps})
	require.NoError(t, w.rebuild(ctx))
	n, err := w.refreshSnapshot(ctx, log)
	require.NoError(t, err)
	require.Zero(t, n, "nothing after the snapshot")
	h.write(200)
	good := slices.Clone(snaps.Files["n1"])
	snaps.Files["n1"][len(good)-50] ^= 1
	damaged := slices.Clone(snaps.Files["n1"])
	_, err = w.refreshSnapshot(ctx, log)
	require.ErrorContains(t, err, "checksum")
	require.Equal(t, damaged, snaps.Files["n1"], "left as it was")
	require.Equal(t, 1, snaps.Saved())
	snaps.Files["n1"] = good
	h.log.add(events.PinSubject("o", "r"), events.PinRemoved{OrgID: "o", RequestID: "r"})
	snapTailMin = 1_000_000
	n, err = w.refreshSnapshot(ctx, log)
	require.NoError(t, err)
	require.Zero(t, n, "too few events to be worth a rewrite")
	require.Equal(t, 1, snaps.Saved())
}

// BenchmarkSnapshotRefresh measures a running worker's snapshot refresh: a snapshot of a node's pin set
// (ANCHORAGE_BENCH_PINS placements, default 1,000,000) with 20,000 new placements after it, folded in and written
// out again (in memory: the file system's cost is left out).
//
//	go test ./projections -run '^$' -bench BenchmarkSnapshotRefresh -benchtime 3x
func BenchmarkSnapshotRefresh(b *testing.B) {
	pins := 1_000_000
	if v, err := strconv.Atoi(os.Getenv("ANCHORAGE_BENCH_PINS")); err == nil && v > 0 {
		pins = v
	}
	ctx := context.Background()
	log := &memLog{id: "log-1"}
	log.add(events.SchedTerm, events.SchedTermStarted{Term: 1, SchedulerID: "s1"})
	org := uuid.NewString()
	w := NewWorker(log, nil, WorkerConfig{NodeID: "n1"})
	w.mu.Lock()
	for i := range pins {
		w.setLive(keyOf(PinRef{org, uuid.NewString()}), uint64(i+1), testCID(i), true)
	}
	w.mu.Unlock()
	var buf bytes.Buffer
	require.NoError(b, w.writeSnapshot(&buf, snapHeader{node: "n1", logID: "log-1", seq: 1, seqID: log.recs[0].ID}))
	for i := range 20_000 {
		req := uuid.NewString()
		log.add(events.PlaceSubject("n1", org, req), events.PinPlaced{OrgID: org, RequestID: req, NodeID: "n1", CID: testCID(pins + i), Term: 1})
	}
	snapshot := buf.Bytes()
	b.ResetTimer()
	for b.Loop() {
		snaps := &projectionstest.Snapshots{Files: map[string][]byte{"n1": snapshot}}
		r := NewWorker(log, nil, WorkerConfig{NodeID: "n1", Snapshots: snaps})
		n, err := r.refreshSnapshot(ctx, log)
		require.NoError(b, err)
		require.Equal(b, 20_000, n)
	}
	b.ReportMetric(float64(len(snapshot))/float64(pins), "snapshot-B/pin")
}
