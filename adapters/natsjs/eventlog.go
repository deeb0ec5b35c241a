package natsjs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
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
	return &EventLog{nc: nc, js: js, stream: stream, sync: l.sync, dir: l.dir, log: l.log, m: l.m, forked: true}, nil
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

// Load returns every event on subject, in order, and the subject's last sequence. It uses batched direct gets
// (ADR-31), which read the per-subject index instead of scanning.
func (l *EventLog) Load(ctx context.Context, subject string) ([]events.Record, uint64, error) {
	var recs []events.Record
	var last uint64
	from := uint64(1)
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
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
	}
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
		seq, err := strconv.ParseUint(msg.Header.Get(jetstream.SequenceHeader), 10, 64)
		if err != nil {
			return nil, false, fmt.Errorf("load %s: bad sequence header: %w", subject, err)
		}
		env, ev, err := events.Unmarshal(msg.Data)
		if err != nil {
			return nil, false, fmt.Errorf("load %s seq %d: %w", subject, seq, err)
		}
		out = append(out, events.Record{Seq: seq, Subject: msg.Header.Get(jetstream.SubjectHeader), Envelope: env, Event: ev})
	}
}

// LastSeq is the stream's last sequence.
func (l *EventLog) LastSeq(ctx context.Context) (uint64, error) {
	info, err := l.stream.Info(ctx)
	if err != nil {
		return 0, err
	}
	return info.State.LastSeq, nil
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
	info, err := l.stream.Info(ctx, jetstream.WithSubjectFilter(filter))
	if err != nil {
		return 0, err
	}
	var last uint64
	for subj := range info.State.Subjects {
		seq, err := l.LastSeqFor(ctx, subj)
		if err != nil {
			return 0, err
		}
		last = max(last, seq)
	}
	return last, nil
}

// CountSubjects returns how many distinct subjects matching filter hold messages. The server answers from its
// subject index, without reading blocks.
func (l *EventLog) CountSubjects(ctx context.Context, filter string) (int, error) {
	info, err := l.stream.Info(ctx, jetstream.WithSubjectFilter(filter))
	if err != nil {
		return 0, err
	}
	return len(info.State.Subjects), nil
}

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
		f, err := l.js.PublishMsgAsync(&nats.Msg{Subject: m.Subject, Header: header(m), Data: body})
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
