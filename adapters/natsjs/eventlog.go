package natsjs

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/anchorage-pin/anchorage/domain"
	"github.com/anchorage-pin/anchorage/events"
	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Header names anchorage sets on every event besides the NATS ones.
const (
	HeaderType    = "Ev-Type"  // "<type>.v<version>", so tools can filter without decoding the body
	HeaderActor   = "Ev-Actor" // who caused it
	HeaderCorr    = "Ev-Corr"  // correlation id
	streamDirName = events.StreamName
)

// JetStream error codes that mean "the aggregate changed since you read it".
const (
	errWrongLastSequence         = 10071
	errWrongLastSequenceConstant = 10164
)

// StreamConfig is the one event stream: no limits, nothing ever deleted, new writes refused when full.
func StreamConfig(replicas int) jetstream.StreamConfig {
	if replicas < 1 {
		replicas = 1
	}
	return jetstream.StreamConfig{
		Name:               events.StreamName,
		Description:        "anchorage event log: the source of truth",
		Subjects:           events.StreamSubjects,
		Retention:          jetstream.LimitsPolicy,
		Discard:            jetstream.DiscardNew,
		Storage:            jetstream.FileStorage,
		Replicas:           replicas,
		MaxMsgs:            -1,
		MaxBytes:           -1,
		MaxAge:             0,
		MaxMsgsPerSubject:  -1,
		DenyDelete:         true,
		DenyPurge:          true,
		AllowDirect:        true,
		AllowAtomicPublish: true,
		// Retried appends are refused by their expected-sequence check anyway; the window only has to cover a
		// client's immediate retry, and every id in it costs memory (millions during a bulk import).
		Duplicates: 30 * time.Second,
		Metadata:   map[string]string{"schema": "v1"},
	}
}

// LogConfig configures an EventLog.
type LogConfig struct {
	Replicas int
	Logger   *slog.Logger
	Metrics  *Metrics
	// OnSync, if set, observes every group-commit fsync: its duration and how many appends it covered.
	OnSync func(d time.Duration, appends int)
}

// EventLog is the event stream: it implements domain.EventLog and the readers projections use.
type EventLog struct {
	nc     *nats.Conn
	js     jetstream.JetStream
	stream jetstream.Stream
	sync   *groupSync // nil unless the server runs in SyncGroup mode
	dir    string     // the stream's directory when the server is embedded ("" for a remote log)
	log    *slog.Logger
	m      *Metrics
	order  [64]sync.Mutex // AppendOrdered's per-key locks, striped
	forked bool           // made by Fork: the group commit belongs to the original

	wireMode      int    // wireAuto, or what a test chose (wire.go)
	wireDropAfter uint64 // a test's fault: the wire read's connection drops after this many messages
}

var (
	_ domain.EventLog        = (*EventLog)(nil)
	_ domain.OrderedAppender = (*EventLog)(nil)
)

// OpenLog creates or checks the event stream on s and returns the log. With SyncGroup it starts the group commit.
func OpenLog(ctx context.Context, s *Server, cfg LogConfig) (*EventLog, error) {
	nc, err := s.Connect("anchorage-eventlog")
	if err != nil {
		return nil, fmt.Errorf("natsjs: connect: %w", err)
	}
	l, err := openLogConn(ctx, nc, cfg)
	if err != nil {
		nc.Close()
		return nil, err
	}
	l.dir = s.StreamDir()
	if s.Sync() == SyncGroup {
		observe := l.m.observeSync
		if cfg.OnSync != nil {
			observe = func(d time.Duration, n int) { l.m.observeSync(d, n); cfg.OnSync(d, n) }
		}
		l.sync, err = newGroupSync(s.StreamDir(), observe)
		if err != nil {
			nc.Close()
			return nil, fmt.Errorf("natsjs: group sync: %w", err)
		}
	}
	return l, nil
}

// OpenRemoteLog opens the event log over an existing connection to a server in another process (admin CLIs).
// Durability then rests on that server's own sync mode.
func OpenRemoteLog(ctx context.Context, nc *nats.Conn, cfg LogConfig) (*EventLog, error) {
	return openLogConn(ctx, nc, cfg)
}

func openLogConn(ctx context.Context, nc *nats.Conn, cfg LogConfig) (*EventLog, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("natsjs: jetstream: %w", err)
	}
	want := StreamConfig(cfg.Replicas)
	stream, err := js.Stream(ctx, events.StreamName)
	switch {
	case errors.Is(err, jetstream.ErrStreamNotFound):
		stream, err = js.CreateStream(ctx, want)
		if err != nil {
			return nil, fmt.Errorf("natsjs: create stream: %w", err)
		}
	case err != nil:
		return nil, fmt.Errorf("natsjs: stream: %w", err)
	default:
		have := stream.CachedInfo().Config
		if !have.DenyDelete || !have.DenyPurge || have.Discard != jetstream.DiscardNew || have.MaxAge != 0 || have.MaxMsgs > 0 || have.MaxBytes > 0 {
			return nil, fmt.Errorf("natsjs: stream %s exists with limits or deletes allowed; an event log must keep everything", events.StreamName)
		}
		if !slices.Equal(have.Subjects, want.Subjects) || have.Duplicates != want.Duplicates {
			upd := have
			upd.Subjects, upd.Duplicates = want.Subjects, want.Duplicates
			if stream, err = js.UpdateStream(ctx, upd); err != nil {
				return nil, fmt.Errorf("natsjs: update stream: %w", err)
			}
		}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Metrics == nil {
		cfg.Metrics = NewMetrics(nil)
	}
	return &EventLog{nc: nc, js: js, stream: stream, log: cfg.Logger, m: cfg.Metrics}, nil
}

// Fork returns the same log over another connection, sharing its group commit and metrics. The server
// processes one connection's requests in order, so a long read (a worker's last-message-per-subject scan over a
// million subjects takes seconds) on a fork does not hold up appends on the original. Closing the fork closes
// only nc.
func (l *EventLog) Fork(ctx context.Context, nc *nats.Conn) (*EventLog, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("natsjs: jetstream: %w", err)
	}
	stream, err := js.Stream(ctx, events.StreamName)
	if err != nil {
		return nil, fmt.Errorf("natsjs: stream: %w", err)
	}
	return &EventLog{nc: nc, js: js, stream: stream, sync: l.sync, dir: l.dir, log: l.log, m: l.m, forked: true,
		wireMode: l.wireMode, wireDropAfter: l.wireDropAfter}, nil
}

// Close releases the log's connection.
func (l *EventLog) Close() {
	if l.sync != nil && !l.forked {
		l.sync.close()
	}
	l.nc.Close()
}

// Conn is the log's NATS connection.
func (l *EventLog) Conn() *nats.Conn { return l.nc }

// JetStream is the log's JetStream context.
func (l *EventLog) JetStream() jetstream.JetStream { return l.js }

func header(m domain.Message) nats.Header {
	h := nats.Header{}
	h.Set(jetstream.MsgIDHeader, m.Envelope.ID)
	h.Set(HeaderType, string(m.Envelope.Type)+".v"+strconv.Itoa(m.Envelope.Version))
	if m.Envelope.Actor != "" {
		h.Set(HeaderActor, m.Envelope.Actor)
	}
	if m.Envelope.Corr != "" {
		h.Set(HeaderCorr, m.Envelope.Corr)
	}
	if !m.NoExpect {
		h.Set(jetstream.ExpectedLastSubjSeqHeader, strconv.FormatUint(m.Expect, 10))
		if m.ExpectSubject != "" {
			h.Set(jetstream.ExpectedLastSubjSeqSubjHeader, m.ExpectSubject)
		}
	}
	return h
}

// Append stores msgs atomically. One message is a plain publish; several are one atomic batch (ADR-50), so
// either all of them are stored, each having passed its own expected-sequence check, or none.
func (l *EventLog) Append(ctx context.Context, msgs ...domain.Message) ([]uint64, error) {
	if len(msgs) == 0 {
		return nil, nil
	}
	start := time.Now()
	var seqs []uint64
	var err error
	if len(msgs) == 1 {
		seqs, err = l.publishOne(ctx, msgs[0])
	} else {
		seqs, err = l.publishBatch(ctx, msgs)
	}
	return l.appended(ctx, start, msgs, seqs, err)
}

// AppendOrdered builds messages and appends them under key's lock, which it holds only until the messages are
// sent: one connection delivers them in send order and the stream stores them in that order, so builds under
// the same key are stored in the order they ran. The publish acknowledgement and the group-commit fsync are
// awaited outside the lock, so appends under one key still share fsyncs. Several messages are an atomic batch,
// whose commit is awaited under the lock.
func (l *EventLog) AppendOrdered(ctx context.Context, key string, build func() ([]domain.Message, error)) ([]uint64, error) {
	h := uint32(2166136261) // FNV-1a
	for i := 0; i < len(key); i++ {
		h = (h ^ uint32(key[i])) * 16777619
	}
	mu := &l.order[h%uint32(len(l.order))]
	mu.Lock()
	msgs, err := build()
	if err != nil || len(msgs) == 0 {
		mu.Unlock()
		return nil, err
	}
	start := time.Now()
	if len(msgs) > 1 {
		seqs, err := l.publishBatch(ctx, msgs)
		mu.Unlock()
		return l.appended(ctx, start, msgs, seqs, err)
	}
	m := msgs[0]
	body, err := events.Marshal(m.Envelope)
	if err != nil {
		mu.Unlock()
		return nil, err
	}
	fut, err := l.js.PublishMsgAsync(&nats.Msg{Subject: m.Subject, Header: header(m), Data: body})
	mu.Unlock()
	if err != nil {
		return nil, l.publishErr(m.Subject, err)
	}
	var timeout <-chan time.Time // bounds the wait when ctx does not
	if _, ok := ctx.Deadline(); !ok {
		t := time.NewTimer(10 * time.Second)
		defer t.Stop()
		timeout = t.C
	}
	var seqs []uint64
	select {
	case ack := <-fut.Ok():
		seqs = []uint64{ack.Sequence}
	case err = <-fut.Err():
		err = l.publishErr(m.Subject, err)
	case <-ctx.Done():
		err = l.publishErr(m.Subject, ctx.Err())
	case <-timeout:
		err = l.publishErr(m.Subject, nats.ErrTimeout)
	}
	return l.appended(ctx, start, msgs, seqs, err)
}

// appended finishes an append: counts conflicts, waits for the group-commit fsync, records metrics.
func (l *EventLog) appended(ctx context.Context, start time.Time, msgs []domain.Message, seqs []uint64, err error) ([]uint64, error) {
	if err != nil {
		if errors.Is(err, domain.ErrConflict) {
			l.m.conflicts.Inc()
		}
		return nil, err
	}
	l.m.ackSeconds.Observe(time.Since(start).Seconds())
	if l.sync != nil {
		if err := l.sync.Wait(ctx); err != nil {
			return nil, domain.Errorf(domain.ErrUnavailable, "the event log could not make the write durable: %v", err)
		}
	}
	for _, m := range msgs {
		l.m.appended.WithLabelValues(string(m.Envelope.Type)).Inc()
	}
	l.m.appendSeconds.Observe(time.Since(start).Seconds())
	return seqs, nil
}

func (l *EventLog) publishOne(ctx context.Context, m domain.Message) ([]uint64, error) {
	body, err := events.Marshal(m.Envelope)
	if err != nil {
		return nil, err
	}
	ack, err := l.js.PublishMsg(ctx, &nats.Msg{Subject: m.Subject, Header: header(m), Data: body})
	if err != nil {
		return nil, l.publishErr(m.Subject, err)
	}
	return []uint64{ack.Sequence}, nil
}

func (l *EventLog) publishErr(subject string, err error) error {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		switch apiErr.ErrorCode {
		case errWrongLastSequence, errWrongLastSequenceConstant:
			return fmt.Errorf("append %s: %w (%s)", subject, domain.ErrConflict, apiErr.Description)
		}
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) || errors.Is(err, nats.ErrTimeout) {
		return fmt.Errorf("append %s: %w", subject, err)
	}
	return fmt.Errorf("append %s: %w", subject, err)
}

type pubAck struct {
	Stream string `json:"stream"`
	Seq    uint64 `json:"seq"`
	Batch  string `json:"batch"`
	Count  int    `json:"count"`
	Error  *struct {
		Code        int    `json:"code"`
		ErrCode     int    `json:"err_code"`
		Description string `json:"description"`
	} `json:"error"`
}

// publishBatch sends msgs as one atomic batch: Nats-Batch-Id on all, Nats-Batch-Sequence 1..n, and
// Nats-Batch-Commit on the last, whose reply carries the pub ack for the whole batch.
func (l *EventLog) publishBatch(ctx context.Context, msgs []domain.Message) ([]uint64, error) {
	if len(msgs) > 1000 {
		return nil, fmt.Errorf("natsjs: an atomic append holds at most 1000 events, not %d", len(msgs))
	}
	batchID := uuid.NewString()
	var reply *nats.Msg
	for i, m := range msgs {
		body, err := events.Marshal(m.Envelope)
		if err != nil {
			return nil, err
		}
		h := header(m)
		h.Set("Nats-Batch-Id", batchID)
		h.Set("Nats-Batch-Sequence", strconv.Itoa(i+1))
		msg := &nats.Msg{Subject: m.Subject, Header: h, Data: body}
		if i < len(msgs)-1 {
			if err := l.nc.PublishMsg(msg); err != nil {
				return nil, fmt.Errorf("append batch: %w", err)
			}
			continue
		}
		h.Set("Nats-Batch-Commit", "1")
		if _, ok := ctx.Deadline(); !ok {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
		}
		reply, err = l.nc.RequestMsgWithContext(ctx, msg)
		if err != nil {
			return nil, fmt.Errorf("append batch: %w", err)
		}
	}
	var ack pubAck
	if err := json.Unmarshal(reply.Data, &ack); err != nil {
		return nil, fmt.Errorf("append batch: bad ack %q: %w", reply.Data, err)
	}
	if ack.Error != nil {
		switch ack.Error.ErrCode {
		case errWrongLastSequence, errWrongLastSequenceConstant:
			return nil, fmt.Errorf("append batch: %w (%s)", domain.ErrConflict, ack.Error.Description)
		}
		return nil, fmt.Errorf("append batch: %s (code %d)", ack.Error.Description, ack.Error.ErrCode)
	}
	if ack.Count != len(msgs) {
		return nil, fmt.Errorf("append batch: server stored %d of %d events", ack.Count, len(msgs))
	}
	seqs := make([]uint64, len(msgs))
	for i := range msgs {
		seqs[i] = ack.Seq - uint64(len(msgs)-1-i)
	}
	return seqs, nil
}

// Load returns every event on subject, in order, and the subject's last sequence. It uses direct gets (ADR-31)
// that the server answers from its per-subject index (first and last message of a subject) or by sequence, so
// the cost follows the subject's events, not the stretch of log between them (see loadLiteral).
func (l *EventLog) Load(ctx context.Context, subject string) ([]events.Record, uint64, error) {
	ctx, cancel := withDefaultTimeout(ctx)
	defer cancel()
	if strings.ContainsAny(subject, "*>") {
		return l.loadForward(ctx, subject, 1, nil)
	}
	return l.loadLiteral(ctx, subject)
}

// requestTimeout bounds a request to the server made under a context without a deadline.
const requestTimeout = 10 * time.Second

// withDefaultTimeout is ctx, bounded by requestTimeout unless it has a deadline already.
func withDefaultTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, requestTimeout)
}

// LoadLast returns the last event on a literal subject, read from the subject index (ok false: none).
func (l *EventLog) LoadLast(ctx context.Context, subject string) (events.Record, bool, error) {
	if strings.ContainsAny(subject, "*>") {
		return events.Record{}, false, fmt.Errorf("load %s: LoadLast takes a literal subject", subject)
	}
	ctx, cancel := withDefaultTimeout(ctx)
	defer cancel()
	m, err := l.directGet(ctx, map[string]any{"last_by_subj": subject})
	if err != nil || m == nil {
		return events.Record{}, false, err
	}
	return m.rec, true, nil
}

// LoadAfter returns the events on a literal subject with a sequence above after, in order: the ones a reader
// that already holds the subject's events up to after lacks. It reads the subject's last event from the index
// and follows the chain of expected-last-sequence headers back only as far as after, so its cost is the number
// of new events, however long the subject's history (see loadLiteral); where the chain breaks it reads forward
// from after.
func (l *EventLog) LoadAfter(ctx context.Context, subject string, after uint64) ([]events.Record, error) {
	if strings.ContainsAny(subject, "*>") {
		return nil, fmt.Errorf("load %s: LoadAfter takes a literal subject", subject)
	}
	ctx, cancel := withDefaultTimeout(ctx)
	defer cancel()
	last, err := l.directGet(ctx, map[string]any{"last_by_subj": subject})
	if err != nil || last == nil || last.rec.Seq <= after {
		return nil, err
	}
	recs, _, ok, err := l.chainBack(ctx, subject, last, after)
	if err != nil || ok {
		return recs, err
	}
	recs, _, err = l.loadForward(ctx, subject, after+1, nil)
	return recs, err
}

// denseSpan is how far apart (in stream sequences) a subject's first and last events may be for Load to read
// forward between them: about one message block, so the walk touches one or two blocks. (A variable for tests.)
var denseSpan uint64 = 16 << 10

// loadLiteral loads a literal subject without making the server walk the log between its events. A forward
// read by subject (next_by_subj) checks every message block between two events of the subject, loading each
// one and building its per-subject state, because the server's subject index only knows a subject's first and
// last block: loading a node's registrations (one at its first start, one at each restart, so at both ends of
// a log of millions of events) took seconds and left ~200 MB of per-block state on the heap for minutes.
//
// Instead it reads the first event (and, in the same answer, how many the subject holds) and the last one,
// both from the index, then follows the chain of expected-last-sequence headers back from the last event: an
// event appended with an expected last subject sequence was stored only if that sequence was exactly the
// subject's previous event, so each header names its predecessor and the chain from the last event down to the
// first one is the whole history. Events stored without the header (appended with NoExpect, against another
// subject, or copied by a mirror) break the chain; Load then reads forward, as it did before. So does a subject
// whose events lie within about a block, where reading forward is cheaper than one request per event.
func (l *EventLog) loadLiteral(ctx context.Context, subject string) ([]events.Record, uint64, error) {
	first, err := l.directGet(ctx, map[string]any{"seq": 1, "next_by_subj": subject, "batch": 1})
	if err != nil || first == nil {
		return nil, 0, err
	}
	if !first.hasPending {
		return l.loadForward(ctx, subject, first.rec.Seq+1, []events.Record{first.rec})
	}
	if first.pending == 0 {
		return []events.Record{first.rec}, first.rec.Seq, nil
	}
	last, err := l.directGet(ctx, map[string]any{"last_by_subj": subject})
	if err != nil {
		return nil, 0, err
	}
	if last == nil || last.rec.Seq <= first.rec.Seq {
		return nil, 0, fmt.Errorf("load %s: the last event (%v) is not after the first (%d)", subject, last, first.rec.Seq)
	}
	if last.rec.Seq-first.rec.Seq > denseSpan {
		if recs, ok, err := l.loadChain(ctx, subject, first, last); err != nil || ok {
			return recs, last.rec.Seq, err
		}
	}
	return l.loadForward(ctx, subject, first.rec.Seq+1, []events.Record{first.rec})
}

// loadChain follows the expected-last-sequence headers from last back to first. ok is false when the chain
// breaks (an event without the header), and the caller reads forward instead.
func (l *EventLog) loadChain(ctx context.Context, subject string, first, last *directMsg) ([]events.Record, bool, error) {
	chain, stop, ok, err := l.chainBack(ctx, subject, last, first.rec.Seq)
	if err != nil || !ok || stop != first.rec.Seq {
		return nil, false, err
	}
	return append([]events.Record{first.rec}, chain...), true, nil
}

// chainBack follows the expected-last-sequence headers back from last and returns, in order, the subject's
// events from last down to the first one above floor, and the predecessor where the walk stopped (at or below
// floor). ok is false when the chain breaks: an event stored without the header, or a sequence that is not the
// subject's.
func (l *EventLog) chainBack(ctx context.Context, subject string, last *directMsg, floor uint64) (_ []events.Record, stop uint64, ok bool, _ error) {
	chain := []events.Record{last.rec}
	for cur := last; ; {
		prev, ok := cur.prev()
		if !ok {
			return nil, 0, false, nil
		}
		if prev <= floor {
			slices.Reverse(chain)
			return chain, prev, true, nil
		}
		m, err := l.directGet(ctx, map[string]any{"seq": prev})
		if err != nil {
			return nil, 0, false, err
		}
		if m == nil || m.rec.Subject != subject || m.rec.Seq != prev {
			return nil, 0, false, nil
		}
		chain = append(chain, m.rec)
		cur = m
	}
}

// loadForward reads the events on subject with Seq >= from in batches of next_by_subj direct gets, after recs.
func (l *EventLog) loadForward(ctx context.Context, subject string, from uint64, recs []events.Record) ([]events.Record, uint64, error) {
	var last uint64
	if len(recs) > 0 {
		last = recs[len(recs)-1].Seq
	}
	for {
		batch, more, err := l.directBatch(ctx, subject, from, 256)
		if err != nil {
			return nil, 0, err
		}
		for _, r := range batch {
			recs = append(recs, r)
			last = r.Seq
		}
		if !more || len(batch) == 0 {
			return recs, last, nil
		}
		from = last + 1
	}
}

func (l *EventLog) directBatch(ctx context.Context, subject string, from uint64, n int) ([]events.Record, bool, error) {
	req, _ := json.Marshal(map[string]any{"seq": from, "next_by_subj": subject, "batch": n})
	inbox := l.nc.NewRespInbox()
	sub, err := l.nc.SubscribeSync(inbox)
	if err != nil {
		return nil, false, err
	}
	defer sub.Unsubscribe()
	if err := l.nc.PublishRequest("$JS.API.DIRECT.GET."+events.StreamName, inbox, req); err != nil {
		return nil, false, err
	}
	ctx, cancel := withDefaultTimeout(ctx)
	defer cancel()
	var out []events.Record
	for {
		msg, err := sub.NextMsgWithContext(ctx)
		if err != nil {
			return nil, false, fmt.Errorf("load %s: %w", subject, err)
		}
		switch status := msg.Header.Get("Status"); status {
		case "404":
			return out, false, nil
		case "204":
			pending, _ := strconv.ParseUint(msg.Header.Get("Nats-Num-Pending"), 10, 64)
			return out, pending > 0, nil
		case "":
		default:
			return nil, false, fmt.Errorf("load %s: direct get status %s %s", subject, status, msg.Header.Get("Description"))
		}
		m, err := decodeDirect(msg)
		if err != nil {
			return nil, false, err
		}
		out = append(out, m.rec)
	}
}

// directMsg is one message answered by a direct get.
type directMsg struct {
	rec        events.Record
	pending    uint64 // matching messages after this one (batch requests only)
	hasPending bool
	header     nats.Header
}

// prev is the sequence the message's append expected as its subject's last: its predecessor on the subject
// (0: none). ok is false when the message carries no such header, or one checked against another subject.
func (m *directMsg) prev() (uint64, bool) {
	if m.header.Get(jetstream.ExpectedLastSubjSeqSubjHeader) != "" {
		return 0, false
	}
	v := m.header.Get(jetstream.ExpectedLastSubjSeqHeader)
	if v == "" {
		return 0, false
	}
	seq, err := strconv.ParseUint(v, 10, 64)
	return seq, err == nil
}

func (m *directMsg) String() string { return strconv.FormatUint(m.rec.Seq, 10) }

// directGet asks for one message (nil when there is none). For a batch of one, the reply is the message (or
// the 404); the end-of-batch status that follows it is dropped.
func (l *EventLog) directGet(ctx context.Context, req map[string]any) (*directMsg, error) {
	body, _ := json.Marshal(req)
	msg, err := l.nc.RequestWithContext(ctx, "$JS.API.DIRECT.GET."+events.StreamName, body)
	if err != nil {
		return nil, fmt.Errorf("direct get %s: %w", body, err)
	}
	switch status := msg.Header.Get("Status"); status {
	case "":
	case "404":
		return nil, nil
	default:
		return nil, fmt.Errorf("direct get %s: status %s %s", body, status, msg.Header.Get("Description"))
	}
	return decodeDirect(msg)
}

func decodeDirect(msg *nats.Msg) (*directMsg, error) {
	subject := msg.Header.Get(jetstream.SubjectHeader)
	seq, err := strconv.ParseUint(msg.Header.Get(jetstream.SequenceHeader), 10, 64)
	if err != nil {
		return nil, fmt.Errorf("load %s: bad sequence header: %w", subject, err)
	}
	env, ev, err := events.Unmarshal(msg.Data)
	if err != nil {
		return nil, fmt.Errorf("load %s seq %d: %w", subject, seq, err)
	}
	pending, perr := strconv.ParseUint(msg.Header.Get("Nats-Num-Pending"), 10, 64)
	return &directMsg{rec: events.Record{Seq: seq, Subject: subject, Envelope: env, Event: ev}, pending: pending, hasPending: perr == nil,
		header: msg.Header}, nil
}

// LastSeq is the stream's last sequence.
func (l *EventLog) LastSeq(ctx context.Context) (uint64, error) {
	info, err := l.stream.Info(ctx)
	if err != nil {
		return 0, err
	}
	return info.State.LastSeq, nil
}

// LogID names this event log: the stream's name and creation time. A stream created again (an import into a
// fresh store, a new cluster) has another, so state derived from the old one (a node worker's snapshot) is not
// taken for this one's.
func (l *EventLog) LogID(ctx context.Context) (string, error) {
	info, err := l.stream.Info(ctx)
	if err != nil {
		return "", err
	}
	return info.Config.Name + "@" + info.Created.UTC().Format(time.RFC3339Nano), nil
}

// EventID returns the id of the event stored at seq (its Nats-Msg-Id), or an error when there is none.
func (l *EventLog) EventID(ctx context.Context, seq uint64) (string, error) {
	m, err := l.stream.GetMsg(ctx, seq)
	if err != nil {
		return "", fmt.Errorf("natsjs: event %d: %w", seq, err)
	}
	return m.Header.Get(jetstream.MsgIDHeader), nil
}

// LastSeqFor is the sequence of the last event whose subject matches filter (wildcards allowed), 0 if none.
func (l *EventLog) LastSeqFor(ctx context.Context, filter string) (uint64, error) {
	msg, err := l.stream.GetLastMsgForSubject(ctx, filter)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	return msg.Sequence, nil
}

// LastSeqForFew is LastSeqFor for a filter that matches few subjects (nodes.>, sched.>, tokens.>): it lists them
// from the server's subject index and asks for each one's last message. A wildcard last-message lookup instead
// walks the blocks backwards from the end, loading each one's subject state: seconds on a cold store of millions
// of events when the filter's last message is old.
func (l *EventLog) LastSeqForFew(ctx context.Context, filter string) (uint64, error) {
	subjects, err := l.Subjects(ctx, filter)
	if err != nil {
		return 0, err
	}
	return l.lastSeqOf(ctx, subjects)
}

// lastSeqOf is the greatest of the last sequences of subjects (literal subjects, each answered from the index).
func (l *EventLog) lastSeqOf(ctx context.Context, subjects map[string]uint64) (uint64, error) {
	var last uint64
	for subj := range subjects {
		seq, err := l.LastSeqFor(ctx, subj)
		if err != nil {
			return 0, err
		}
		last = max(last, seq)
	}
	return last, nil
}

// Subjects returns the subjects matching filter that hold messages, with their message counts. The server
// answers from its subject index, without reading blocks.
func (l *EventLog) Subjects(ctx context.Context, filter string) (map[string]uint64, error) {
	info, err := l.stream.Info(ctx, jetstream.WithSubjectFilter(filter))
	if err != nil {
		return nil, err
	}
	return info.State.Subjects, nil
}

// SubjectCount is how many events the literal subject holds, from the stream's subject index: no message is
// read, so no message block is loaded (projections.WorkerSource).
func (l *EventLog) SubjectCount(ctx context.Context, subject string) (uint64, error) {
	if strings.ContainsAny(subject, "*>") {
		return 0, fmt.Errorf("natsjs: SubjectCount needs a literal subject, not %q", subject)
	}
	subjects, err := l.Subjects(ctx, subject)
	if err != nil {
		return 0, err
	}
	return subjects[subject], nil
}

// fewSubjects bounds the subject spaces LastSeqMatching answers subject by subject.
const fewSubjects = 1024

// LastSeqMatching is the sequence of the last event matching filter, 0 if none: LastSeqForFew when the filter
// matches few subjects, LastSeqFor otherwise.
func (l *EventLog) LastSeqMatching(ctx context.Context, filter string) (uint64, error) {
	if !strings.ContainsAny(filter, "*>") {
		return l.LastSeqFor(ctx, filter)
	}
	subjects, err := l.Subjects(ctx, filter)
	if err != nil {
		return 0, err
	}
	if len(subjects) <= fewSubjects {
		return l.lastSeqOf(ctx, subjects)
	}
	return l.LastSeqFor(ctx, filter)
}

// ReadStart is where a read of filters from from can begin without missing a matching event: past the
// stream's head when no event in [from, head] matches, else from. A consumer with one subject filter starting
// behind the head makes the server look for a match in every message block up to the head, loading each block
// and building its per-subject state (seconds, and ~200 MB of heap for minutes, on a log of millions of events)
// even when nothing there matches: the case of a projection of a rarely written subject space (orgs, tokens)
// whose checkpoint is its last event, long before the head. Several filters are read unfiltered and matched by
// the client (see consumerFilters), so ReadStart leaves them alone.
func (l *EventLog) ReadStart(ctx context.Context, from uint64, filters []string) (uint64, error) {
	if len(filters) != 1 {
		return from, nil
	}
	head, err := l.LastSeq(ctx)
	if err != nil || head < from {
		return from, err
	}
	// Read the head first: an event appended meanwhile is either after it or counted by the lookup below.
	last, err := l.LastSeqMatching(ctx, filters[0])
	if err != nil || last >= from {
		return from, err
	}
	return head + 1, nil
}

// ProjectionPace is the Pace the node's projections read at. It adds at most 10 ms to a projection's lag, and
// only while events keep coming. Under 16 clients POSTing as fast as they could, PostgreSQL's CPU per request
// fell by about a sixth (docs/benchmarks.md, "eighth session"); at 1,000 writes/s the pins projection's lag
// stayed at p99 17-20 ms.
const ProjectionPace = 10 * time.Millisecond

// SkippingReader is the log as a projection source whose reads start at ReadStart, paced at Pace (see
// ReadOptions).
type SkippingReader struct {
	*EventLog
	Pace time.Duration
}

// Read is EventLog.Read from ReadStart(from) (from itself if that lookup fails).
func (r SkippingReader) Read(ctx context.Context, from uint64, filters []string, fn func(recs []events.Record, pending uint64) error) error {
	if start, err := r.ReadStart(ctx, from, filters); err == nil {
		from = start
	} else if ctx.Err() == nil {
		r.log.Warn("could not look up where to start reading; reading from the checkpoint", "filters", filters, "from", from, "err", err)
	}
	return r.ReadBatches(ctx, from, filters, ReadOptions{Pace: r.Pace}, fn)
}

// LoadAll returns every event of the subjects matching filter with Seq <= head, in stream order, loading subject
// by subject (Load) instead of reading the stream: a read of a rarely written subject space from the start
// makes the server load every message block (see ReadStart). ok is false, and nothing is loaded, when the filter
// matches more than maxSubjects subjects. It returns the stream's head: what it loaded is complete up to there.
func (l *EventLog) LoadAll(ctx context.Context, filter string, maxSubjects int) (recs []events.Record, head uint64, ok bool, err error) {
	if head, err = l.LastSeq(ctx); err != nil {
		return nil, 0, false, err
	}
	subjects, err := l.Subjects(ctx, filter)
	if err != nil || len(subjects) > maxSubjects {
		return nil, 0, false, err
	}
	for subj := range subjects {
		rs, _, err := l.Load(ctx, subj)
		if err != nil {
			return nil, 0, false, err
		}
		for _, r := range rs {
			if r.Seq <= head {
				recs = append(recs, r)
			}
		}
	}
	slices.SortFunc(recs, func(a, b events.Record) int { return cmp.Compare(a.Seq, b.Seq) })
	return recs, head, true, nil
}

// CountSubjects returns how many distinct subjects matching filter hold messages. The server answers from its
// subject index, without reading blocks.
func (l *EventLog) CountSubjects(ctx context.Context, filter string) (int, error) {
	subjects, err := l.Subjects(ctx, filter)
	return len(subjects), err
}

// bulkStallWait is how long a bulk append waits for room among the client's unacknowledged publishes (4,000)
// before it gives up. The client's default, 200 ms, failed a bulk append of a few thousand events whenever the
// server's acks were slower than that for a moment (a busy machine: it failed a suite run under -race).
const bulkStallWait = 30 * time.Second

// AppendBulk stores many single-event messages quickly, pipelining them (asynchronous publishes) instead of
// waiting for each acknowledgement: for imports, seeding and the scheduler's independent decisions, not for
// commands that depend on each other. Each message still carries its expected-sequence check, so messages must
// be for distinct subjects. It returns each message's sequence (0 for one that failed) and the first failure,
// after every publish has been answered.
func (l *EventLog) AppendBulk(ctx context.Context, msgs []domain.Message) ([]uint64, error) {
	var futures []jetstream.PubAckFuture
	for _, m := range msgs {
		body, err := events.Marshal(m.Envelope)
		if err != nil {
			return nil, err
		}
		f, err := l.js.PublishMsgAsync(&nats.Msg{Subject: m.Subject, Header: header(m), Data: body}, jetstream.WithStallWait(bulkStallWait))
		if err != nil {
			return nil, fmt.Errorf("bulk append: %w", err)
		}
		futures = append(futures, f)
	}
	seqs := make([]uint64, len(futures))
	var first error
	for i, f := range futures {
		select {
		case ack := <-f.Ok():
			seqs[i] = ack.Sequence
		case err := <-f.Err():
			if first == nil {
				first = l.publishErr(f.Msg().Subject, err)
			}
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if l.sync != nil {
		if err := l.sync.Wait(ctx); err != nil {
			return nil, err
		}
	}
	for _, m := range msgs {
		l.m.appended.WithLabelValues(string(m.Envelope.Type)).Inc()
	}
	return seqs, first
}
