package projections

import (
	"cmp"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/anchorage-pin/anchorage/domain"
	"github.com/anchorage-pin/anchorage/events"
	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// Pinner is a node's Kubo, as the worker drives it.
type Pinner interface {
	// Pin pins cid recursively, fetching what is missing; ctx carries the retrieval deadline. The worker gives no
	// name (see pinName).
	Pin(ctx context.Context, cid, name string) (dagSize uint64, err error)
	// Unpin removes cid's recursive pin; a CID that is not pinned is not an error.
	Unpin(ctx context.Context, cid string) error
	// Connect dials provider hints (best effort) and reports how many answered.
	Connect(ctx context.Context, addrs []string) int
}

// pinName is the name the worker pins under in Kubo: none. Kubo keeps one pin per CID, however many requests
// hold it, so a request's name on it would be wrong once that request is removed while another keeps the CID;
// and a named pin costs Kubo one more synced LevelDB write (its name index) inside the pinner lock that
// serialises every pin, about 5-10 % of its pin rate on local blocks.
const pinName = ""

// Delivery is one event delivered to a worker at least once.
type Delivery interface {
	Event() events.Record
	// Attempt counts deliveries of this event (1 the first time).
	Attempt() uint64
	Ack() error
	Nak(delay time.Duration) error
}

// WorkerSource delivers a node's placement events.
type WorkerSource interface {
	// ConsumeDurable delivers matching events at least once from the named durable consumer until ctx ends.
	ConsumeDurable(ctx context.Context, name string, filters []string, maxAckPending int, ackWait time.Duration, fn func(Delivery), onErr func(error)) error
	// LastPerSubject calls fn with the last event of every subject matching filter, in stream order (possibly
	// preceded by earlier events of a subject, in order: the worker folds them in order).
	LastPerSubject(ctx context.Context, filter string, fn func(events.Record) error) (uint64, error)
	// Load returns every event on one subject and its last sequence.
	Load(ctx context.Context, subject string) ([]events.Record, uint64, error)
	// LoadAfter returns the events on one subject with a sequence above after, reading only those.
	LoadAfter(ctx context.Context, subject string, after uint64) ([]events.Record, error)
	// SubjectCount is how many events one subject holds, from the log's subject index (no event is read).
	SubjectCount(ctx context.Context, subject string) (uint64, error)
	// LastSeq is the sequence of the last event in the log.
	LastSeq(ctx context.Context) (uint64, error)
	Append(ctx context.Context, msgs ...domain.Message) ([]uint64, error)
	// AppendBulk pipelines independent appends and returns each one's sequence (0: failed).
	AppendBulk(ctx context.Context, msgs []domain.Message) ([]uint64, error)
}

// WorkerConfig configures a node worker.
type WorkerConfig struct {
	NodeID string
	// Concurrency is how many pins are fetched at once (default 16).
	Concurrency int
	// SlowAfter: a pin still running after this long (default 5 s) moves to the slow lane, if it has room, and
	// frees its slot for the next pin. Content that is slow or impossible to find then holds at most SlowLimit
	// calls in flight until PinTimeout, instead of every slot while content at hand waits behind it.
	SlowAfter time.Duration
	// SlowLimit is how many slow pins may be in flight besides the Concurrency others (default 4 x Concurrency).
	SlowLimit int
	// PinTimeout bounds one pin's retrieval; after it the pin is failed (default 10 minutes).
	PinTimeout time.Duration
	// PinningDelay: a pin still in progress after this long is reported pinning (default 1 s). Local content
	// pins in milliseconds, and in well under a second even when Kubo is saturated; reporting pinning for it
	// would only double the events (and their fsyncs and projection work) when the node is busiest.
	PinningDelay time.Duration
	// ReportDelay: the reporter waits up to this long after a status report for more before appending them
	// together (default 100 ms; negative: append at once), and at most 2 x Concurrency reports. Pins finish one
	// at a time (Kubo serialises them), so without it nearly every report was an append of its own, each waiting
	// for an fsync of the event log: a steady stream of fsyncs competing with the ones Kubo makes, one after
	// another under its pinner lock, for every pin (at 25 ms, about 22 event-log fsyncs a second while Kubo
	// pinned 400-500/s; at 100 ms, about 8). It waits only while more reports can come: once no pin is in
	// progress or waiting for a slot, what it holds is appended at once, so the last pin of a burst, or a lone
	// pin, is not held back.
	ReportDelay time.Duration
	// Unavailable reports errors meaning Kubo is down (retry later) rather than that the pin failed.
	Unavailable func(error) bool
	Logger      *slog.Logger
	Registerer  prometheus.Registerer
	// Snapshots, when set (and the source is a SnapshotLog), keep the worker's start-up state between runs, so a
	// start reads only the node's events since the last one (see WorkerSnapshots).
	Snapshots WorkerSnapshots
	// SnapshotEvery is how often a running worker brings its snapshot up to date, when at least snapTailMin of
	// the node's events came after it (default 10 minutes; negative: only at start).
	SnapshotEvery time.Duration
	Now           func() time.Time
}

// Worker drives one node's Kubo from its placements: pins what is placed on it, reports what it observes, and
// unpins a CID only when no live placement on the node (of any request, in any org) still needs it.
type Worker struct {
	src    WorkerSource
	pinner Pinner
	cfg    WorkerConfig
	lg     *slog.Logger
	sem    chan struct{}
	slow   chan struct{} // the slow lane's slots (see SlowAfter)

	mu    sync.Mutex
	terms termFence
	// termsThrough: terms holds every term start with a sequence below this one.
	termsThrough uint64
	// termsRead is how many events of the term subject the fence has read (-1: none yet), and termsSeq the
	// sequence of the last. Term starts are only ever appended and the fence reads a prefix of them (every one up
	// to termsSeq), so while the log holds as many the fence is complete and needs no new read; when it holds
	// more, only those after termsSeq are read.
	termsRead int
	termsSeq  uint64
	// state and refs hold a node's whole pin set (a million entries on a node with a million pins), so their keys
	// are compact values rather than strings (BenchmarkWorkerStateMemory).
	state map[pinKey]*placementState
	refs  map[cidKey]int32 // live placements per CID (by multihash)
	// resumeOrigins are the origins of unfinished placements found by rebuild, for resume.
	resumeOrigins map[pinKey][]string
	jobs          sync.WaitGroup
	// stopping is set (under mu) once a Run's deliveries have ended: a delivery still being handled then starts
	// no job (jobs.Add must not race the Run's jobs.Wait); it is delivered again later.
	stopping bool
	// busy counts placements between the start of their job (including the wait for a pin slot) and their final
	// report being queued: while it is above zero more reports are on their way.
	busy    atomic.Int64
	ctx     context.Context // the Run context: jobs stop with it
	reports chan report
	// reportsMu guards sending on reports against its close at shutdown (a delayed pinning report can fire late).
	reportsMu     sync.RWMutex
	reportsClosed bool

	pinned, failed, unpins, retries, slowPins prometheus.Counter
	inflight                                  prometheus.Gauge
	pinSeconds                                prometheus.Histogram
}

type placementState struct {
	seq    uint64 // the latest placement decision applied (placed or unplaced)
	cid    string // as placed; "" when not live
	cancel context.CancelFunc
	live   bool
	done   bool // a final status was reported for this placement
}

// pinKey identifies a pin request in the worker's maps: its two IDs as UUIDs when both are UUIDs in canonical
// form (anchorage makes them so), else the IDs themselves (ids: the length of the org ID, ':', both IDs).
type pinKey struct {
	org, req uuid.UUID
	ids      string
}

func keyOf(ref PinRef) pinKey {
	org, err1 := uuid.Parse(ref.OrgID)
	req, err2 := uuid.Parse(ref.RequestID)
	if err1 != nil || err2 != nil || org.String() != ref.OrgID || req.String() != ref.RequestID {
		return pinKey{ids: strconv.Itoa(len(ref.OrgID)) + ":" + ref.OrgID + ref.RequestID}
	}
	return pinKey{org: org, req: req}
}

func (k pinKey) ref() PinRef {
	if n, ids, ok := strings.Cut(k.ids, ":"); ok {
		if l, err := strconv.Atoi(n); err == nil && l <= len(ids) {
			return PinRef{ids[:l], ids[l:]}
		}
	}
	return PinRef{k.org.String(), k.req.String()}
}

// cidKey identifies a CID's content whatever its spelling: its multihash's SHA-256 digest when the multihash is a
// SHA-256 one (nearly all), else the SHA-256 of the multihash (or of the string, for one that does not parse).
type cidKey [32]byte

func keyOfCID(c string) cidKey {
	pc, err := domain.ParseCID(c)
	if err != nil {
		return sha256.Sum256([]byte(c))
	}
	if len(pc.Key) == 34 && pc.Key[0] == 0x12 && pc.Key[1] == 0x20 { // sha2-256, 32 bytes
		return cidKey(pc.Key[2:])
	}
	return sha256.Sum256(pc.Key)
}

// NewWorker builds a node worker.
func NewWorker(src WorkerSource, pinner Pinner, cfg WorkerConfig) *Worker {
	cfg.Concurrency = cmp.Or(cfg.Concurrency, 16)
	cfg.PinTimeout = cmp.Or(cfg.PinTimeout, 10*time.Minute)
	cfg.PinningDelay = cmp.Or(cfg.PinningDelay, time.Second)
	cfg.ReportDelay = cmp.Or(cfg.ReportDelay, 100*time.Millisecond)
	cfg.SnapshotEvery = cmp.Or(cfg.SnapshotEvery, 10*time.Minute)
	cfg.SlowAfter = cmp.Or(cfg.SlowAfter, 5*time.Second)
	cfg.SlowLimit = cmp.Or(cfg.SlowLimit, 4*cfg.Concurrency)
	cfg.Logger = cmp.Or(cfg.Logger, slog.New(slog.DiscardHandler))
	if cfg.Unavailable == nil {
		cfg.Unavailable = func(error) bool { return false }
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	reg := cfg.Registerer
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	f := promauto.With(reg)
	return &Worker{
		src: src, pinner: pinner, cfg: cfg, lg: cfg.Logger.With("component", "worker", "node", cfg.NodeID),
		sem: make(chan struct{}, cfg.Concurrency), slow: make(chan struct{}, cfg.SlowLimit), state: map[pinKey]*placementState{}, refs: map[cidKey]int32{}, resumeOrigins: map[pinKey][]string{}, termsRead: -1,
		pinned:     f.NewCounter(prometheus.CounterOpts{Name: "anchorage_worker_pins_total", Help: "Pins this node's worker completed."}),
		failed:     f.NewCounter(prometheus.CounterOpts{Name: "anchorage_worker_pin_failures_total", Help: "Pins this node's worker reported failed."}),
		unpins:     f.NewCounter(prometheus.CounterOpts{Name: "anchorage_worker_unpins_total", Help: "CIDs this node's worker unpinned from Kubo."}),
		retries:    f.NewCounter(prometheus.CounterOpts{Name: "anchorage_worker_retries_total", Help: "Placements retried because Kubo or the log was unavailable."}),
		slowPins:   f.NewCounter(prometheus.CounterOpts{Name: "anchorage_worker_slow_pins_total", Help: "Pins moved to the slow lane (still running after SlowAfter), freeing their slot for the next pin."}),
		inflight:   f.NewGauge(prometheus.GaugeOpts{Name: "anchorage_worker_pins_in_flight", Help: "Pins being fetched now."}),
		pinSeconds: f.NewHistogram(prometheus.HistogramOpts{Name: "anchorage_worker_pin_seconds", Help: "Kubo pin/add durations.", Buckets: prometheus.ExponentialBuckets(0.001, 2, 20)}),
	}
}

// runCtx is the context of the current Run (nil before the first). A Run's deliveries can still be handled
// while the worker is restarted, so it is read under w.mu.
func (w *Worker) runCtx() context.Context {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.ctx
}

// Placed counts this node's live placements (for presence).
func (w *Worker) Placed() int64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := int64(0)
	for _, s := range w.state {
		if s.live {
			n++
		}
	}
	return n
}

// Run rebuilds the node's desired state from the last placement message of each of its pins, then follows its
// placements until ctx ends, and waits for the pins in flight.
func (w *Worker) Run(ctx context.Context) error {
	w.mu.Lock()
	w.ctx, w.stopping = ctx, false
	w.mu.Unlock()
	if err := w.rebuild(ctx); err != nil {
		return fmt.Errorf("worker %s: rebuild: %w", w.cfg.NodeID, err)
	}
	w.reports = make(chan report, 4*w.cfg.Concurrency)
	reporterDone := make(chan struct{})
	go func() { w.reporter(); close(reporterDone) }()
	if sl, ok := w.src.(SnapshotLog); ok && w.cfg.Snapshots != nil && w.cfg.SnapshotEvery > 0 {
		rctx, stop := context.WithCancel(ctx)
		refresherDone := make(chan struct{})
		go func() { w.refreshSnapshots(rctx, sl); close(refresherDone) }()
		defer func() { stop(); <-refresherDone }() // a next Run's start reads the snapshot this one writes
	}
	if n := w.resume(); n > 0 {
		w.lg.Info("resumed placements left unfinished by the previous run", "placements", n)
	}
	// One subject filter: JetStream serves a consumer with several filters by intersecting them with every
	// subject of each block it reads (about one per pin), per message. Term starts are loaded as needed instead
	// (fenceThrough).
	filters := []string{events.NodePlacements(w.cfg.NodeID)}
	err := w.src.ConsumeDurable(ctx, "node-"+w.cfg.NodeID, filters, 4*w.cfg.Concurrency, w.cfg.PinTimeout+time.Minute,
		w.handle, func(err error) { w.lg.Error("delivery failed", "err", err) })
	// A delivery can still be in its handler after ConsumeDurable returns: from here on it starts no job.
	w.mu.Lock()
	w.stopping = true
	w.mu.Unlock()
	w.jobs.Wait()
	w.reportsMu.Lock()
	w.reportsClosed = true
	close(w.reports)
	w.reportsMu.Unlock()
	<-reporterDone
	return err
}

// report is an observation waiting to be appended, and what to do once it is durable (or failed).
type report struct {
	msg  domain.Message
	done func(ok bool)
}

// reporter appends observations in batches (pipelined, sharing fsyncs) so a pin slot is free as soon as Kubo
// answers, not after its report's fsync; each delivery is acknowledged only once its report is durable. A batch
// collects what arrives within ReportDelay of its first report while other pins are under way (see busy).
func (w *Worker) reporter() {
	// At most twice the pin slots per append: the reports held unacknowledged, plus the pins in flight, stay
	// below the consumer's ack limit (4 x Concurrency), so a long ReportDelay never stops deliveries.
	batch := make([]report, 0, max(2*w.cfg.Concurrency, 16))
	for r := range w.reports {
		var t *time.Timer
		var timeout <-chan time.Time // nil: take only what is already queued
		if w.cfg.ReportDelay > 0 && w.busy.Load() > 0 {
			t = time.NewTimer(w.cfg.ReportDelay)
			timeout = t.C
		}
		batch = w.collect(append(batch[:0], r), timeout)
		if t != nil {
			t.Stop()
		}
		msgs := make([]domain.Message, len(batch))
		for i, r := range batch {
			msgs[i] = r.msg
		}
		seqs, err := w.src.AppendBulk(context.Background(), msgs)
		if err != nil {
			w.lg.Warn("could not append status reports; their placements will be retried", "err", err, "reports", len(batch))
		}
		for i, r := range batch {
			if r.done != nil {
				r.done(err == nil && i < len(seqs) && seqs[i] > 0)
			}
		}
	}
}

// collect adds reports to batch until it is full, timeout fires (nil: until no report is queued) or the reports
// channel is closed.
func (w *Worker) collect(batch []report, timeout <-chan time.Time) []report {
	for len(batch) < cap(batch) {
		var r report
		var ok bool
		if timeout == nil {
			select {
			case r, ok = <-w.reports:
			default:
				return batch
			}
		} else {
			select {
			case r, ok = <-w.reports:
			case <-timeout:
				return batch
			}
		}
		if !ok {
			return batch
		}
		batch = append(batch, r)
		if timeout != nil && w.busy.Load() == 0 {
			return batch // no more pins are under way: nothing else to wait for
		}
	}
	return batch
}

// rebuild derives the node's pin set (which placements are live, which CIDs they hold) from the log without
// reading its history: from the worker's snapshot and the node's events after it when there is a usable one,
// else from the last event of each placement subject (and then it writes a snapshot for the next start).
func (w *Worker) rebuild(ctx context.Context) error {
	// From nothing: a Run after a failed one derives the state again (its jobs have all ended; whatever they
	// reported is in the log). resume emptied resumeOrigins.
	w.mu.Lock()
	w.state, w.refs, w.resumeOrigins = map[pinKey]*placementState{}, map[cidKey]int32{}, map[pinKey][]string{}
	w.mu.Unlock()
	// A decision counts unless a higher term had started before it: the fold needs every term start (a snapshot
	// keeps those up to it; restoreSnapshot reads the ones after).
	sl, _ := w.src.(SnapshotLog)
	if sl == nil || w.cfg.Snapshots == nil {
		if err := w.loadTerms(ctx, 0); err != nil {
			return err
		}
		_, err := w.rebuildFromLog(ctx)
		return err
	}
	h, st, ok, err := w.restoreSnapshot(ctx, sl)
	if ok {
		w.lg.Info("worker state restored from its snapshot", "placements", st.entries, "events_after_it", st.tail, "took", st.load.Round(time.Millisecond).String())
		// Write it again only when the events after it have grown, or the term starts after its fence (one per
		// restart, each a block to load at every start): a few do not slow the next start. A snapshot without a
		// fence (version 1) is written again at once.
		w.mu.Lock()
		termsAfter := w.termsRead - h.terms.read
		w.mu.Unlock()
		if st.tail >= max(snapTailMin, st.entries/20) || h.terms.read < 0 || termsAfter >= snapTermsMax {
			w.saveSnapshot(h)
		}
		return nil
	}
	if err != nil {
		w.lg.Warn("not using the worker's snapshot; reading the node's placements from the log", "err", err)
	}
	if err := w.loadTerms(ctx, 0); err != nil {
		return err
	}
	t0 := time.Now()
	upTo, err := w.rebuildFromLog(ctx)
	if err != nil {
		return err
	}
	w.mu.Lock()
	n := len(w.state)
	w.mu.Unlock()
	w.lg.Info("worker state read from the log", "placements", n, "took", time.Since(t0).Round(time.Millisecond).String())
	h = snapHeader{node: w.cfg.NodeID, seq: upTo}
	if h.logID, err = sl.LogID(ctx); err == nil && upTo > 0 {
		h.seqID, err = sl.EventID(ctx, upTo)
	}
	if err != nil {
		w.lg.Warn("could not save the worker's start-up snapshot; the next start reads the log again", "err", err)
		return nil
	}
	w.saveSnapshot(h)
	return nil
}

// rebuildFromLog folds the last event of each of the node's placement subjects into the state. It returns the
// log sequence the state covers.
//
// A subject whose last event is a decision of a deposed scheduler term (which the fence ignores) is read whole:
// its state is that of its last valid event, as the live path, which acknowledges and ignores such a decision,
// leaves it. Such decisions are rare (a stale leader's write that no newer decision on the subject fenced).
func (w *Worker) rebuildFromLog(ctx context.Context) (uint64, error) {
	var stale []string
	// Under w.mu: presence reads the state (Placed) while the worker starts.
	upTo, err := w.src.LastPerSubject(ctx, events.NodePlacements(w.cfg.NodeID), func(r events.Record) error {
		w.mu.Lock()
		defer w.mu.Unlock()
		if !w.fold(r) {
			stale = append(stale, r.Subject)
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	for _, subject := range stale {
		recs, _, err := w.src.Load(ctx, subject)
		if err != nil {
			return 0, err
		}
		w.mu.Lock()
		for _, r := range recs {
			if r.Seq <= upTo {
				w.fold(r)
			}
		}
		w.mu.Unlock()
	}
	return upTo, nil
}

// fold applies one of the node's placement events to the state as the live path would: in order, each
// subject's last valid event deciding (called with w.mu held). It reports false for a decision it ignored (made
// in a deposed scheduler term).
func (w *Worker) fold(r events.Record) bool {
	switch e := r.Event.(type) {
	case events.PinPlaced:
		if !w.terms.valid(r.Seq, e.Term) {
			return false
		}
		k := keyOf(PinRef{e.OrgID, e.RequestID})
		w.setLive(k, r.Seq, e.CID, false)
		if len(e.Origins) > 0 {
			w.resumeOrigins[k] = e.Origins
		} else {
			delete(w.resumeOrigins, k)
		}
	case events.PinStatusObserved:
		if e.CID != "" && e.PlacedSeq > 0 {
			k := keyOf(PinRef{e.OrgID, e.RequestID})
			w.setLive(k, e.PlacedSeq, e.CID, e.Status == "pinned" || e.Status == "failed")
			delete(w.resumeOrigins, k) // origins are known only while the placement is the subject's last event
		}
	case events.PinUnplaced:
		if !w.terms.valid(r.Seq, e.Term) {
			return false
		}
		k := keyOf(PinRef{e.OrgID, e.RequestID})
		w.setGone(k, r.Seq)
		delete(w.resumeOrigins, k)
	}
	return true
}

// setLive records the live placement at seq of the pin k and returns its state (called with w.mu held).
func (w *Worker) setLive(k pinKey, seq uint64, cid string, done bool) *placementState {
	old := w.state[k]
	if old == nil || !old.live {
		w.refs[keyOfCID(cid)]++
	} else if old.cid != cid {
		w.unref(keyOfCID(old.cid))
		w.refs[keyOfCID(cid)]++
	}
	st := &placementState{seq: seq, live: true, cid: cid, done: done}
	w.state[k] = st
	return st
}

// setGone records that the pin k has no live placement since seq (called with w.mu held).
func (w *Worker) setGone(k pinKey, seq uint64) {
	if old := w.state[k]; old != nil && old.live {
		w.unref(keyOfCID(old.cid))
	}
	w.state[k] = &placementState{seq: seq}
}

// unref drops one live placement of the content ck from refs (called with w.mu held).
func (w *Worker) unref(ck cidKey) {
	if w.refs[ck]--; w.refs[ck] <= 0 {
		delete(w.refs, ck)
	}
}

// loadTerms makes the fence hold every term start. Called on receiving a decision at seq, it makes the fence
// complete below seq: a term start before seq was stored before that decision, so before this read. It also
// covers every decision up to the log's last sequence read just before (stored before the read too), so the
// decisions of a burst that were already stored need no read of their own.
//
// There is one term start per scheduler term, so one per restart or failover, scattered over the log, and
// reading one loads its message block (8 MB). So the starts are read only when the log holds another number of
// them than the fence (counted from the log's subject index, which reads no event), and then only the ones
// after the fence's last: reading them all again for every new decision, as it once did, cost a block load per
// term start in the log's history for every burst of placements (66 on a data dir restarted that often); reading
// them all at every start or new term still grew with every restart. Only a worker's first start, with no
// snapshot (which keeps the fence), reads them all.
func (w *Worker) loadTerms(ctx context.Context, seq uint64) error {
	through := seq
	if seq > 0 {
		last, err := w.src.LastSeq(ctx)
		if err != nil {
			return err
		}
		through = max(through, last)
	}
	// Counted after the log's last sequence was read: every term start stored before then is counted.
	n, err := w.src.SubjectCount(ctx, events.SchedTerm)
	if err != nil {
		return err
	}
	w.mu.Lock()
	read, after := w.termsRead, w.termsSeq
	w.mu.Unlock()
	known := read >= 0 && uint64(read) == n
	var recs []events.Record
	switch {
	case known:
	case read < 0:
		recs, _, err = w.src.Load(ctx, events.SchedTerm)
	default:
		recs, err = w.src.LoadAfter(ctx, events.SchedTerm, after)
	}
	if err != nil {
		return err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if !known {
		w.termsRead = max(w.termsRead, 0)
	}
	for _, r := range recs {
		if r.Seq <= w.termsSeq {
			continue // read by a concurrent call
		}
		if e, ok := r.Event.(events.SchedTermStarted); ok {
			w.terms.started(r.Seq, e.Term)
		}
		w.termsRead++
		w.termsSeq = r.Seq
	}
	w.termsThrough = max(w.termsThrough, through)
	return nil
}

// fenceThrough makes sure the fence knows every term start before the decision at seq (two small reads: the
// log's last sequence and the few term events; skipped when an earlier read already covers seq). On failure the
// delivery is retried.
func (w *Worker) fenceThrough(d Delivery, seq uint64) bool {
	w.mu.Lock()
	known := seq <= w.termsThrough
	w.mu.Unlock()
	if known {
		return true
	}
	if err := w.loadTerms(w.runCtx(), seq); err != nil {
		w.lg.Warn("could not read the scheduler terms; the placement will be retried", "seq", seq, "err", err)
		_ = d.Nak(time.Second)
		return false
	}
	return true
}

func (w *Worker) handle(d Delivery) {
	rec := d.Event()
	switch e := rec.Event.(type) {
	case events.PinPlaced:
		if w.fenceThrough(d, rec.Seq) {
			w.placed(d, rec, e)
		}
	case events.PinUnplaced:
		if w.fenceThrough(d, rec.Seq) {
			w.unplaced(d, rec, e)
		}
	default:
		_ = d.Ack() // its own observations
	}
}

func (w *Worker) placed(d Delivery, rec events.Record, e events.PinPlaced) {
	ref := PinRef{e.OrgID, e.RequestID}
	w.mu.Lock()
	if !w.terms.valid(rec.Seq, e.Term) {
		w.mu.Unlock()
		_ = d.Ack() // decided by a deposed scheduler
		return
	}
	k := keyOf(ref)
	cur := w.state[k]
	if cur != nil && (cur.seq > rec.Seq || (cur.seq == rec.Seq && cur.done)) {
		w.mu.Unlock()
		_ = d.Ack() // superseded, or already reported
		return
	}
	var st *placementState
	if cur != nil && cur.seq == rec.Seq {
		st = cur // a redelivery of the placement being worked on (or restored by rebuild)
	} else {
		st = w.setLive(k, rec.Seq, e.CID, false)
	}
	w.startLocked(d, ref, rec, e, st)
}

// startLocked starts the pin job of placement st unless one runs; it is called with w.mu held and releases it.
func (w *Worker) startLocked(d Delivery, ref PinRef, rec events.Record, e events.PinPlaced, st *placementState) {
	if st.cancel != nil {
		w.mu.Unlock()
		_ = d.Ack() // the job for this placement is running and will report
		return
	}
	if w.stopping {
		w.mu.Unlock()
		_ = d.Nak(0) // the Run is ending: delivered again to the next one
		return
	}
	parent := w.ctx
	if parent == nil {
		parent = context.Background()
	}
	ctx, cancel := context.WithTimeout(parent, w.cfg.PinTimeout)
	st.cancel = cancel
	w.jobs.Add(1) // under mu, before Run can set stopping and wait
	w.mu.Unlock()

	w.busy.Add(1)
	w.sem <- struct{}{}
	go func() {
		defer w.jobs.Done()
		defer w.slowLane()()
		defer cancel()
		w.pin(ctx, d, ref, rec, e, st)
	}()
}

// slowLane is called by a pin job holding a slot of w.sem. After SlowAfter it moves the job to a slot of the
// slow lane if one is free, releasing its w.sem slot for the next pin; the returned func, called when the job
// ends, releases whichever slot the job then holds.
func (w *Worker) slowLane() (release func()) {
	var mu sync.Mutex
	const (
		fast = iota
		slow
		ended
	)
	state := fast
	t := time.AfterFunc(w.cfg.SlowAfter, func() {
		mu.Lock()
		defer mu.Unlock()
		if state != fast {
			return
		}
		select {
		case w.slow <- struct{}{}:
			state = slow
			<-w.sem
			w.slowPins.Inc()
		default: // the slow lane is full: keep the slot
		}
	})
	return func() {
		t.Stop()
		mu.Lock()
		defer mu.Unlock()
		if state == slow {
			<-w.slow
		} else {
			<-w.sem
		}
		state = ended
	}
}

func (w *Worker) pin(ctx context.Context, d Delivery, ref PinRef, rec events.Record, e events.PinPlaced, st *placementState) {
	// No longer busy once the final report is queued (or there is none to make).
	idle := sync.OnceFunc(func() { w.busy.Add(-1) })
	defer idle()
	// Redelivered (a worker stopped mid-pin): if the outcome was already reported, do nothing twice.
	if d.Attempt() > 1 && w.reported(ctx, ref, rec.Seq) {
		w.finish(ref, rec.Seq, true)
		_ = d.Ack()
		return
	}
	w.inflight.Inc()
	defer w.inflight.Dec()
	start := w.cfg.Now()
	// The pinning report must never be queued after the final one, or it would be the last word.
	var reportMu sync.Mutex
	final := false
	pinning := time.AfterFunc(w.cfg.PinningDelay, func() {
		reportMu.Lock()
		defer reportMu.Unlock()
		if !final {
			w.enqueue(ref, rec.Seq, e.CID, "pinning", map[string]string{"status_details": "fetching from the network"}, nil)
		}
	})
	finalize := func() {
		reportMu.Lock()
		final = true
		reportMu.Unlock()
		pinning.Stop()
	}
	if len(e.Origins) > 0 {
		cctx, ccancel := context.WithTimeout(ctx, 3*time.Second)
		w.pinner.Connect(cctx, e.Origins)
		ccancel()
	}
	size, err := w.pinner.Pin(ctx, e.CID, pinName)
	finalize()
	w.pinSeconds.Observe(w.cfg.Now().Sub(start).Seconds())

	if rc := w.runCtx(); rc != nil && rc.Err() != nil {
		// Shutting down: leave the placement unacknowledged so it is delivered again after a restart.
		w.finish(ref, rec.Seq, false)
		_ = d.Nak(0)
		return
	}
	if w.superseded(ref, rec.Seq) {
		_ = d.Ack() // unplaced meanwhile: the unplace handles Kubo
		return
	}
	status, info := "pinned", map[string]string{}
	switch {
	case err == nil:
		if size > 0 {
			info["dag_size"] = strconv.FormatUint(size, 10)
		}
	case w.cfg.Unavailable(err):
		w.retries.Inc()
		w.lg.Warn("kubo unavailable; will retry the pin", "pin", ref.RequestID, "cid", e.CID, "err", err)
		w.finish(ref, rec.Seq, false)
		_ = d.Nak(5 * time.Second)
		return
	case errors.Is(err, context.DeadlineExceeded):
		status = "failed"
		info["status_details"] = fmt.Sprintf("could not retrieve %s within %s: no provider answered", e.CID, w.cfg.PinTimeout)
	default:
		status = "failed"
		info["status_details"] = "kubo could not pin " + e.CID + ": " + err.Error()
	}
	idle()
	w.enqueue(ref, rec.Seq, e.CID, status, info, func(ok bool) {
		if !ok {
			w.retries.Inc()
			w.finish(ref, rec.Seq, false)
			_ = d.Nak(time.Second)
			return
		}
		if status == "pinned" {
			w.pinned.Inc()
		} else {
			w.failed.Inc()
		}
		w.finish(ref, rec.Seq, true)
		_ = d.Ack()
	})
}

// finish records the end of a pin job for the placement at seq.
func (w *Worker) finish(ref PinRef, seq uint64, done bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if st := w.state[keyOf(ref)]; st != nil && st.seq == seq {
		st.cancel, st.done = nil, done
	}
}

func (w *Worker) superseded(ref PinRef, seq uint64) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	st := w.state[keyOf(ref)]
	return st == nil || st.seq != seq || !st.live
}

// reported tells whether the pin's placement subject already ends with a final observation of this placement.
func (w *Worker) reported(ctx context.Context, ref PinRef, placedSeq uint64) bool {
	recs, _, err := w.src.Load(ctx, events.PlaceSubject(w.cfg.NodeID, ref.OrgID, ref.RequestID))
	if err != nil || len(recs) == 0 {
		return false
	}
	o, ok := recs[len(recs)-1].Event.(events.PinStatusObserved)
	return ok && o.PlacedSeq == placedSeq && (o.Status == "pinned" || o.Status == "failed")
}

// enqueue hands an observation to the reporter; done (if any) learns whether it became durable.
func (w *Worker) enqueue(ref PinRef, placedSeq uint64, cid, status string, info map[string]string, done func(ok bool)) {
	if len(info) == 0 {
		info = nil
	}
	env, err := events.New(uuid.Must(uuid.NewV7()).String(), w.cfg.Now(), "system:worker:"+w.cfg.NodeID, "",
		events.PinStatusObserved{OrgID: ref.OrgID, RequestID: ref.RequestID, NodeID: w.cfg.NodeID, CID: cid, Status: status, Info: info, PlacedSeq: placedSeq})
	if err != nil {
		if done != nil {
			done(false)
		}
		return
	}
	// No expected-sequence check: an observation only applies to the placement it names (PlacedSeq), so one
	// that lands after an unplace is ignored by every reader.
	w.reportsMu.RLock()
	defer w.reportsMu.RUnlock()
	if w.reportsClosed {
		if done != nil {
			done(false)
		}
		return
	}
	w.reports <- report{msg: domain.Message{Subject: events.PlaceSubject(w.cfg.NodeID, ref.OrgID, ref.RequestID), NoExpect: true, Envelope: env}, done: done}
}

func (w *Worker) unplaced(d Delivery, rec events.Record, e events.PinUnplaced) {
	ref := PinRef{e.OrgID, e.RequestID}
	w.mu.Lock()
	if !w.terms.valid(rec.Seq, e.Term) {
		w.mu.Unlock()
		_ = d.Ack()
		return
	}
	k := keyOf(ref)
	cur := w.state[k]
	if cur != nil && cur.seq >= rec.Seq {
		w.mu.Unlock()
		_ = d.Ack() // stale or already applied
		return
	}
	unpin := ""
	var ck cidKey
	if cur != nil && cur.live {
		if cur.cancel != nil {
			cur.cancel() // stop fetching what is no longer wanted
		}
		if ck = keyOfCID(cur.cid); w.refs[ck] == 1 {
			unpin = cur.cid
		}
	}
	w.mu.Unlock()
	if unpin != "" {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		err := w.pinner.Unpin(ctx, unpin)
		cancel()
		if err != nil {
			w.retries.Inc()
			w.lg.Warn("unpin failed; will retry", "cid", unpin, "err", err)
			_ = d.Nak(5 * time.Second)
			return
		}
		w.unpins.Inc()
	}
	w.mu.Lock()
	if cur != nil && cur.live {
		w.unref(ck)
	}
	w.state[k] = &placementState{seq: rec.Seq}
	w.mu.Unlock()
	_ = d.Ack()
}

// termFence knows where each scheduler term started in the log. A decision made in term T at position S counts
// unless a higher term had started before S: a deposed leader's later writes are ignored, while decisions made
// before the new term started stay valid however late they are delivered.
type termFence struct {
	starts []termStart // in log order
}

type termStart struct {
	seq  uint64
	term uint64
}

func (f *termFence) started(seq, term uint64) {
	for _, s := range f.starts {
		if s.seq == seq {
			return
		}
	}
	f.starts = append(f.starts, termStart{seq, term})
	slices.SortFunc(f.starts, func(a, b termStart) int { return cmp.Compare(a.seq, b.seq) })
}

func (f *termFence) valid(seq, term uint64) bool {
	for _, s := range f.starts {
		if s.seq >= seq {
			break
		}
		if s.term > term {
			return false
		}
	}
	return true
}

// resume starts the pin jobs of placements that are live but have no final report: ones a previous run was
// working on when it stopped or crashed, and ones its consumer had fetched but not handed over. Their
// deliveries only come back after the ack wait (the pin timeout plus a minute); a redelivery that finds the
// job running or done is simply acknowledged.
func (w *Worker) resume() int {
	type job struct {
		ref PinRef
		rec events.Record
		e   events.PinPlaced
	}
	w.mu.Lock()
	var jobs []job
	for k, st := range w.state {
		if st.live && !st.done && st.cancel == nil {
			ref := k.ref()
			jobs = append(jobs, job{ref,
				events.Record{Seq: st.seq, Subject: events.PlaceSubject(w.cfg.NodeID, ref.OrgID, ref.RequestID)},
				events.PinPlaced{OrgID: ref.OrgID, RequestID: ref.RequestID, NodeID: w.cfg.NodeID, CID: st.cid, Origins: w.resumeOrigins[k]}})
		}
	}
	w.resumeOrigins = nil
	w.mu.Unlock()
	slices.SortFunc(jobs, func(a, b job) int { return cmp.Compare(a.rec.Seq, b.rec.Seq) })
	for _, j := range jobs {
		j.rec.Event = j.e
		w.restart(&resumed{w: w, ref: j.ref, rec: j.rec, e: j.e})
	}
	return len(jobs)
}

// restart starts a resumed placement's job if it is still live, unfinished and not running.
func (w *Worker) restart(d *resumed) {
	w.mu.Lock()
	st := w.state[keyOf(d.ref)]
	if st == nil || st.seq != d.rec.Seq || !st.live || st.done || st.cancel != nil {
		w.mu.Unlock()
		return
	}
	w.startLocked(d, d.ref, d.rec, d.e, st)
}

// resumed is the Delivery of a placement restored from the log rather than delivered by the consumer: Ack is a
// no-op (the consumer's own delivery is acknowledged when it comes), Nak tries again after the delay.
type resumed struct {
	w   *Worker
	ref PinRef
	rec events.Record
	e   events.PinPlaced
}

func (d *resumed) Event() events.Record { return d.rec }
func (d *resumed) Attempt() uint64      { return 2 } // may have been reported just before the stop: check first
func (d *resumed) Ack() error           { return nil }
func (d *resumed) Nak(delay time.Duration) error {
	time.AfterFunc(delay, func() {
		if rc := d.w.runCtx(); rc != nil && rc.Err() == nil {
			d.w.restart(d)
		}
	})
	return nil
}

// placedOrigins returns the origins of the placement decided at seq, read from the pin's placement subject.
func (w *Worker) placedOrigins(ctx context.Context, ref PinRef, seq uint64) []string {
	recs, _, err := w.src.Load(ctx, events.PlaceSubject(w.cfg.NodeID, ref.OrgID, ref.RequestID))
	if err != nil {
		return nil
	}
	for _, r := range recs {
		if e, ok := r.Event.(events.PinPlaced); ok && r.Seq == seq {
			return e.Origins
		}
	}
	return nil
}

// ReplayStats counts what a replay re-drove.
type ReplayStats struct {
	Placements int `json:"placements"`
	Pinned     int `json:"pinned"`
	Failed     int `json:"failed"`
}

// Replay re-drives every live placement of the node through Kubo, whatever was reported before: after a lost
// Kubo repo, the node's desired pin set (the latest placement state of each pin, which the worker holds) is
// pinned again. It returns when every pin is done.
func (w *Worker) Replay(ctx context.Context) (ReplayStats, error) {
	type item struct {
		ref PinRef
		cid string
		seq uint64
	}
	w.mu.Lock()
	var items []item
	for k, st := range w.state {
		if st.live {
			items = append(items, item{k.ref(), st.cid, st.seq})
		}
	}
	w.mu.Unlock()
	stats := ReplayStats{Placements: len(items)}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, it := range items {
		w.busy.Add(1)
		select {
		case w.sem <- struct{}{}:
		case <-ctx.Done():
			w.busy.Add(-1)
			wg.Wait()
			return stats, ctx.Err()
		}
		wg.Go(func() {
			defer func() { <-w.sem }()
			idle := sync.OnceFunc(func() { w.busy.Add(-1) })
			defer idle()
			pctx, cancel := context.WithTimeout(ctx, w.cfg.PinTimeout)
			defer cancel()
			// The repo's blocks are gone: fetch from where the placement said they are (its origins).
			if origins := w.placedOrigins(ctx, it.ref, it.seq); len(origins) > 0 {
				cctx, ccancel := context.WithTimeout(pctx, 3*time.Second)
				w.pinner.Connect(cctx, origins)
				ccancel()
			}
			size, err := w.pinner.Pin(pctx, it.cid, pinName)
			status, info := "pinned", map[string]string{"status_details": "re-pinned by a node replay"}
			if err != nil {
				status, info = "failed", map[string]string{"status_details": "replay: kubo could not pin " + it.cid + ": " + err.Error()}
			} else if size > 0 {
				info["dag_size"] = strconv.FormatUint(size, 10)
			}
			done := make(chan bool, 1)
			idle()
			w.enqueue(it.ref, it.seq, it.cid, status, info, func(ok bool) { done <- ok })
			<-done
			mu.Lock()
			if status == "pinned" {
				stats.Pinned++
			} else {
				stats.Failed++
			}
			mu.Unlock()
		})
	}
	wg.Wait()
	return stats, nil
}
