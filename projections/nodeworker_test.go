package projections_test

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/anchorage-pin/anchorage/domain"
	"github.com/anchorage-pin/anchorage/events"
	"github.com/anchorage-pin/anchorage/projections"
	"github.com/google/uuid"
	"github.com/ipfs/go-cid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// workerSource is an in-memory event log for one worker: it delivers the given placements once, in order, and
// records what the worker reads and appends.
type workerSource struct {
	placements []events.Record
	current    []events.Record // the last event of each placement subject, as the worker reads them at start
	terms      []events.Record
	lastSeq    uint64
	more       chan events.Record // delivered after placements, while the worker runs (nil: none)

	mu             sync.Mutex
	termLoads      int // whole reads of the term starts
	termLoadsAfter int // reads of the term starts after a sequence
	appends        [][]domain.Message
	acked          int
	nextSeq        uint64
}

type workerDelivery struct {
	src *workerSource
	rec events.Record
}

func (d *workerDelivery) Event() events.Record { return d.rec }
func (d *workerDelivery) Attempt() uint64      { return 1 }
func (d *workerDelivery) Nak(time.Duration) error {
	return nil
}
func (d *workerDelivery) Ack() error {
	d.src.mu.Lock()
	defer d.src.mu.Unlock()
	d.src.acked++
	return nil
}

func (s *workerSource) ConsumeDurable(ctx context.Context, _ string, _ []string, _ int, _ time.Duration, fn func(projections.Delivery), _ func(error)) error {
	for _, r := range s.placements {
		fn(&workerDelivery{s, r})
	}
	for {
		select {
		case r := <-s.more:
			fn(&workerDelivery{s, r})
		case <-ctx.Done():
			return nil
		}
	}
}

func (s *workerSource) LastPerSubject(_ context.Context, _ string, fn func(events.Record) error) (uint64, error) {
	for _, r := range s.current {
		if err := fn(r); err != nil {
			return 0, err
		}
	}
	return s.lastSeq, nil
}

func (s *workerSource) Load(_ context.Context, subject string) ([]events.Record, uint64, error) {
	if subject != events.SchedTerm {
		return nil, 0, nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.termLoads++
	return s.terms, 0, nil
}

func (s *workerSource) LoadAfter(_ context.Context, subject string, after uint64) ([]events.Record, error) {
	if subject != events.SchedTerm {
		return nil, nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.termLoadsAfter++
	var out []events.Record
	for _, r := range s.terms {
		if r.Seq > after {
			out = append(out, r)
		}
	}
	return out, nil
}

func (s *workerSource) SubjectCount(_ context.Context, subject string) (uint64, error) {
	if subject != events.SchedTerm {
		return 0, nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return uint64(len(s.terms)), nil
}

func (s *workerSource) LastSeq(context.Context) (uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lastSeq, nil
}

func (s *workerSource) Append(ctx context.Context, msgs ...domain.Message) ([]uint64, error) {
	return s.AppendBulk(ctx, msgs)
}

func (s *workerSource) AppendBulk(_ context.Context, msgs []domain.Message) ([]uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.appends = append(s.appends, msgs)
	seqs := make([]uint64, len(msgs))
	for i := range seqs {
		s.nextSeq++
		seqs[i] = 1000 + s.nextSeq
	}
	return seqs, nil
}

// observed returns the appended status reports, in order.
func (s *workerSource) observed(t *testing.T) []events.PinStatusObserved {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []events.PinStatusObserved
	for _, batch := range s.appends {
		for _, m := range batch {
			e, err := events.Decode(m.Envelope.Type, m.Envelope.Version, m.Envelope.Data)
			require.NoError(t, err)
			out = append(out, e.(events.PinStatusObserved))
		}
	}
	return out
}

// recordingPinner pins instantly, or one at a time taking each (like Kubo's pinner lock), and records names.
type recordingPinner struct {
	each  time.Duration
	lock  sync.Mutex
	mu    sync.Mutex
	cids  []string
	names []string
}

func (p *recordingPinner) Pin(_ context.Context, cid, name string) (uint64, error) {
	if p.each > 0 {
		p.lock.Lock()
		time.Sleep(p.each)
		p.lock.Unlock()
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cids = append(p.cids, cid)
	p.names = append(p.names, name)
	return 1024, nil
}

func (p *recordingPinner) Unpin(context.Context, string) error   { return nil }
func (p *recordingPinner) Connect(context.Context, []string) int { return 0 }
func (p *recordingPinner) pinned() (cids, names []string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.cids...), append([]string(nil), p.names...)
}

const workerTestCID = "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy"

func termStart(seq, term uint64) events.Record {
	return events.Record{Seq: seq, Subject: events.SchedTerm, Event: events.SchedTermStarted{Term: term, SchedulerID: "s"}}
}

func placement(seq, term uint64, req string) events.Record {
	return events.Record{Seq: seq, Subject: events.PlaceSubject("n1", "org", req),
		Event: events.PinPlaced{OrgID: "org", RequestID: req, NodeID: "n1", CID: workerTestCID, Term: term}}
}

// runWorkerUntil runs w until src has acknowledged n deliveries, then stops it.
func runWorkerUntil(t *testing.T, w *projections.Worker, src *workerSource, n int) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	require.Eventually(t, func() bool {
		src.mu.Lock()
		defer src.mu.Unlock()
		return src.acked >= n
	}, 10*time.Second, time.Millisecond)
	cancel()
	require.NoError(t, <-done)
}

func TestWorkerPinsWithoutAName(t *testing.T) {
	t.Parallel()
	src := &workerSource{terms: []events.Record{termStart(1, 1)}, lastSeq: 12,
		placements: []events.Record{placement(10, 1, "a"), placement(11, 1, "b"), placement(12, 1, "c")}}
	p := &recordingPinner{}
	runWorkerUntil(t, projections.NewWorker(src, p, projections.WorkerConfig{NodeID: "n1", Concurrency: 2}), src, 3)
	cids, names := p.pinned()
	assert.Len(t, cids, 3)
	assert.Equal(t, []string{"", "", ""}, names, "Kubo pins are not named (a named pin costs Kubo one more synced write)")
	for _, o := range src.observed(t) {
		assert.Equal(t, "pinned", o.Status)
	}
}

// A burst of placements already in the log when the first one arrives needs one read of the terms, not one each.
func TestWorkerReadsTheTermsOncePerBurst(t *testing.T) {
	t.Parallel()
	src := &workerSource{terms: []events.Record{termStart(1, 1)}, lastSeq: 60}
	for seq := uint64(11); seq <= 60; seq++ {
		src.placements = append(src.placements, placement(seq, 1, "r"+string(rune('A'+seq-11))))
	}
	p := &recordingPinner{}
	runWorkerUntil(t, projections.NewWorker(src, p, projections.WorkerConfig{NodeID: "n1", Concurrency: 8}), src, 50)
	cids, _ := p.pinned()
	assert.Len(t, cids, 50)
	src.mu.Lock()
	defer src.mu.Unlock()
	assert.Equal(t, 1, src.termLoads, "one read at start; the burst found as many term starts, so no read")
}

// A term that starts while the worker runs is read as soon as a decision after it arrives (the log then holds
// more term starts than the fence), and its predecessor's later decisions are ignored; while no term starts, new
// decisions cost a count of the term starts, not a read of them all.
func TestWorkerReadsTheTermsAgainOnlyWhenOneStarted(t *testing.T) {
	t.Parallel()
	src := &workerSource{terms: []events.Record{termStart(1, 1)}, lastSeq: 11, more: make(chan events.Record),
		placements: []events.Record{placement(10, 1, "a"), placement(11, 1, "b")}}
	p := &recordingPinner{}
	w := projections.NewWorker(src, p, projections.WorkerConfig{NodeID: "n1", Concurrency: 2, ReportDelay: -1})
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	acked := func(n int) func() bool {
		return func() bool { src.mu.Lock(); defer src.mu.Unlock(); return src.acked >= n }
	}
	require.Eventually(t, acked(2), 10*time.Second, time.Millisecond)
	// More decisions of the same term, appended later: counted, not read.
	for i, req := range []string{"c", "d", "e"} {
		src.mu.Lock()
		src.lastSeq = uint64(12 + i)
		src.mu.Unlock()
		src.more <- placement(uint64(12+i), 1, req)
	}
	require.Eventually(t, acked(5), 10*time.Second, time.Millisecond)
	src.mu.Lock()
	loads := src.termLoads
	// A new term starts at 20; the deposed term's decision at 21 must be ignored, the new term's at 22 acted on.
	src.terms = append(src.terms, termStart(20, 2))
	src.lastSeq = 22
	src.mu.Unlock()
	src.more <- placement(21, 1, "deposed")
	src.more <- placement(22, 2, "current")
	require.Eventually(t, acked(7), 10*time.Second, time.Millisecond)
	cancel()
	require.NoError(t, <-done)
	assert.Equal(t, 1, loads, "decisions of a term already known: no read of the term starts")
	src.mu.Lock()
	assert.Equal(t, 1, src.termLoads, "a new term start: no read of them all")
	assert.Equal(t, 1, src.termLoadsAfter, "a new term start: one read of the new ones")
	src.mu.Unlock()
	var reqs []string
	for _, o := range src.observed(t) {
		reqs = append(reqs, o.RequestID)
	}
	assert.ElementsMatch(t, []string{"a", "b", "c", "d", "e", "current"}, reqs)
}

// The fence still ignores a deposed scheduler's decisions when the terms are read once for a burst.
func TestWorkerFenceIgnoresADeposedTerm(t *testing.T) {
	t.Parallel()
	src := &workerSource{terms: []events.Record{termStart(1, 1), termStart(20, 2)}, lastSeq: 100,
		placements: []events.Record{placement(10, 1, "before"), placement(30, 1, "deposed"), placement(31, 2, "current")}}
	p := &recordingPinner{}
	runWorkerUntil(t, projections.NewWorker(src, p, projections.WorkerConfig{NodeID: "n1", Concurrency: 2}), src, 3)
	var reqs []string
	for _, o := range src.observed(t) {
		reqs = append(reqs, o.RequestID)
	}
	assert.ElementsMatch(t, []string{"before", "current"}, reqs)
}

// Pins finishing one after another (Kubo serialises them) are reported in a few appends, not one each: every
// append waits for an fsync of the event log, which competes with Kubo's own.
func TestWorkerBatchesReports(t *testing.T) {
	t.Parallel()
	src := &workerSource{terms: []events.Record{termStart(1, 1)}, lastSeq: 40}
	for seq := uint64(21); seq <= 40; seq++ {
		src.placements = append(src.placements, placement(seq, 1, "r"+string(rune('A'+seq-21))))
	}
	p := &recordingPinner{each: 3 * time.Millisecond}
	runWorkerUntil(t, projections.NewWorker(src, p, projections.WorkerConfig{NodeID: "n1", Concurrency: 4, ReportDelay: time.Second}), src, 20)
	assert.Len(t, src.observed(t), 20)
	src.mu.Lock()
	defer src.mu.Unlock()
	assert.LessOrEqual(t, len(src.appends), 2, "20 reports within a second of the first go in one or two appends")
}

// The reporter holds reports back only while more are on their way: the last pin of a burst (here the only
// one) is reported at once, not after ReportDelay.
func TestWorkerReportsAtOnceWhenNothingElseIsUnderWay(t *testing.T) {
	t.Parallel()
	src := &workerSource{terms: []events.Record{termStart(1, 1)}, lastSeq: 10,
		placements: []events.Record{placement(10, 1, "only")}}
	p := &recordingPinner{}
	start := time.Now()
	runWorkerUntil(t, projections.NewWorker(src, p, projections.WorkerConfig{NodeID: "n1", Concurrency: 4, ReportDelay: time.Hour}), src, 1)
	assert.Less(t, time.Since(start), 5*time.Second, "reported without waiting for ReportDelay")
	assert.Len(t, src.observed(t), 1)
}

// A long ReportDelay never holds more than 2 x Concurrency reports: with the pins in flight they stay below the
// consumer's ack limit (4 x Concurrency), which would otherwise stop deliveries until the delay ran out.
func TestWorkerCapsAReportBatch(t *testing.T) {
	t.Parallel()
	src := &workerSource{terms: []events.Record{termStart(1, 1)}, lastSeq: 60}
	for seq := uint64(21); seq <= 60; seq++ {
		src.placements = append(src.placements, placement(seq, 1, "r"+string(rune('A'+seq-21))))
	}
	p := &recordingPinner{each: time.Millisecond}
	start := time.Now()
	runWorkerUntil(t, projections.NewWorker(src, p, projections.WorkerConfig{NodeID: "n1", Concurrency: 8, ReportDelay: time.Hour}), src, 40)
	assert.Less(t, time.Since(start), 5*time.Second, "full batches and the last one went out without waiting for ReportDelay")
	assert.Len(t, src.observed(t), 40)
	src.mu.Lock()
	defer src.mu.Unlock()
	for _, batch := range src.appends {
		assert.LessOrEqual(t, len(batch), 16, "at most 2 x Concurrency reports per append")
	}
}

// Presence counts the node's placements (Placed) while the worker is still rebuilding them at start: both go
// through the worker's lock (the race detector caught the rebuild writing its state without it).
func TestWorkerPlacedDuringRebuild(t *testing.T) {
	t.Parallel()
	const n = 3000
	src := &workerSource{terms: []events.Record{termStart(1, 1)}, lastSeq: n + 1}
	for i := range n {
		src.current = append(src.current, placement(uint64(i+2), 1, fmt.Sprintf("r%d", i)))
	}
	w := projections.NewWorker(src, &recordingPinner{}, projections.WorkerConfig{NodeID: "n1", Concurrency: 2})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	for deadline := time.Now().Add(10 * time.Second); w.Placed() != n; runtime.Gosched() { // read as often as possible
		require.True(t, time.Now().Before(deadline), "the rebuilt state never held the %d placements", n)
	}
	cancel()
	require.NoError(t, <-done)
}

// unpinRecorder is a recordingPinner that records unpins.
type unpinRecorder struct {
	recordingPinner
	umu    sync.Mutex
	unpins []string
}

func (p *unpinRecorder) Unpin(_ context.Context, cid string) error {
	p.umu.Lock()
	defer p.umu.Unlock()
	p.unpins = append(p.unpins, cid)
	return nil
}

// Two requests (two orgs) place one content under its CIDv1 and its CIDv0 spellings: unplacing the first leaves
// it pinned in Kubo, unplacing the second unpins it, once.
func TestWorkerUnpinsSharedContentOnlyWhenTheLastPlacementGoes(t *testing.T) {
	t.Parallel()
	v0 := "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG"
	c, err := cid.Decode(v0)
	require.NoError(t, err)
	v1 := cid.NewCidV1(cid.DagProtobuf, c.Hash()).String()
	orgA, reqA := uuid.NewString(), uuid.NewString() // UUIDs, as anchorage makes them
	src := &workerSource{terms: []events.Record{termStart(1, 1)}, lastSeq: 13, placements: []events.Record{
		{Seq: 10, Subject: events.PlaceSubject("n1", orgA, reqA), Event: events.PinPlaced{OrgID: orgA, RequestID: reqA, NodeID: "n1", CID: v1, Term: 1}},
		{Seq: 11, Subject: events.PlaceSubject("n1", "org-b", "req-b"), Event: events.PinPlaced{OrgID: "org-b", RequestID: "req-b", NodeID: "n1", CID: v0, Term: 1}},
		{Seq: 12, Subject: events.PlaceSubject("n1", orgA, reqA), Event: events.PinUnplaced{OrgID: orgA, RequestID: reqA, NodeID: "n1", Term: 1}},
		{Seq: 13, Subject: events.PlaceSubject("n1", "org-b", "req-b"), Event: events.PinUnplaced{OrgID: "org-b", RequestID: "req-b", NodeID: "n1", Term: 1}},
	}}
	p := &unpinRecorder{}
	w := projections.NewWorker(src, p, projections.WorkerConfig{NodeID: "n1", Concurrency: 2})
	runWorkerUntil(t, w, src, 4)
	p.umu.Lock()
	defer p.umu.Unlock()
	assert.Equal(t, []string{v0}, p.unpins)
	assert.Zero(t, w.Placed())
}

// stallingPinner never finishes pinning the CIDs in stall (until the pin's deadline), pins the others at once,
// and records how many calls it had in flight at most.
type stallingPinner struct {
	stall  map[string]bool
	mu     sync.Mutex
	now    int
	most   int
	pinned []string
}

func (p *stallingPinner) Pin(ctx context.Context, cid, _ string) (uint64, error) {
	p.mu.Lock()
	p.now++
	p.most = max(p.most, p.now)
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		p.now--
		p.mu.Unlock()
	}()
	if p.stall[cid] {
		<-ctx.Done()
		return 0, ctx.Err()
	}
	p.mu.Lock()
	p.pinned = append(p.pinned, cid)
	p.mu.Unlock()
	return 1, nil
}

func (p *stallingPinner) Unpin(context.Context, string) error   { return nil }
func (p *stallingPinner) Connect(context.Context, []string) int { return 0 }

// Content nobody provides does not hold every pin slot until the retrieval timeout: its pins move to the slow
// lane after SlowAfter and the content at hand behind them is pinned meanwhile; the slow lane is bounded.
func TestWorkerSlowPinsDoNotHoldEverySlot(t *testing.T) {
	t.Parallel()
	const missing, here = "bafkreimissingmissingmissingmissingmissingmissingmissing", workerTestCID
	src := &workerSource{terms: []events.Record{termStart(1, 1)}, lastSeq: 100}
	seq := uint64(10)
	add := func(req, cid string) {
		seq++
		src.placements = append(src.placements, events.Record{Seq: seq, Subject: events.PlaceSubject("n1", "org", req),
			Event: events.PinPlaced{OrgID: "org", RequestID: req, NodeID: "n1", CID: cid, Term: 1}})
	}
	for i := range 4 {
		add(fmt.Sprintf("slow-%d", i), missing)
	}
	for i := range 10 {
		add(fmt.Sprintf("fast-%d", i), here)
	}
	p := &stallingPinner{stall: map[string]bool{missing: true}}
	w := projections.NewWorker(src, p, projections.WorkerConfig{NodeID: "n1", Concurrency: 2, SlowAfter: 20 * time.Millisecond,
		SlowLimit: 4, PinTimeout: time.Hour})
	runWorkerUntil(t, w, src, 10) // the ten pins at hand, reported and acknowledged behind the four stalled ones
	p.mu.Lock()
	defer p.mu.Unlock()
	require.Len(t, p.pinned, 10)
	require.LessOrEqual(t, p.most, 2+4, "Concurrency + SlowLimit calls in flight at most")
}
