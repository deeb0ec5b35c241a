package natsjs

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/anchorage-pin/anchorage/events"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// DecodeError reports a message the reader could not decode (an unknown event type from a newer release, or a
// corrupt body). Readers stop at it rather than skip: skipping would silently diverge the read models.
type DecodeError struct {
	Seq     uint64
	Subject string
	Err     error
}

func (e *DecodeError) Error() string {
	return fmt.Sprintf("event %d on %s cannot be decoded: %v", e.Seq, e.Subject, e.Err)
}
func (e *DecodeError) Unwrap() error { return e.Err }

// ReadOptions tune Read.
type ReadOptions struct {
	// MaxBatch bounds how many records one call of fn receives (default 12000: a projection's transaction costs
	// a round trip and a commit whatever its size, so a backlog is worked off in large batches; a batch is only
	// what is already buffered, so a follower that keeps up still applies every event at once). Large batches
	// also fold more of each pin's life (request, placement, statuses) into one write: on the seeded
	// million-event backlog the pins projection worked off 30,124 and 38,748 events/s with 12,000 against
	// 19,962 and 19,572 with 4,000 (issue 4's incremental figure).
	MaxBatch int
	// Pace bounds how long records wait to be handed over together. While records keep coming, the next call
	// of fn starts no sooner than paceFactor times the last call's duration after that call started (at most
	// Pace): fn is kept busy at most about 1/paceFactor of the time, however cheap or dear its calls are, and
	// records that arrive after a quiet spell are handed over at once. Zero: no waiting (a batch is what is
	// buffered). A projection's transaction costs much the same for one record as for a dozen: under a stream of
	// POSTs the pins projection applied batches of about 8 pins (see ProjectionPace).
	Pace time.Duration
}

// Read is ReadBatches with the default options.
func (l *EventLog) Read(ctx context.Context, from uint64, filters []string, fn func(recs []events.Record, pending uint64) error) error {
	return l.ReadBatches(ctx, from, filters, ReadOptions{}, fn)
}

// ReadBatches delivers the records with Seq >= from whose subjects match filters (all when empty), in stream order,
// in batches: it blocks for the first available record, then hands fn everything already buffered, up to
// MaxBatch, with the number of matching records still pending after the batch. It returns when ctx ends (nil)
// or fn fails (fn's error). fn must not keep the slice. It uses an ordered consumer: no server
// state, no redelivery, recreated from the last delivered sequence on any gap.
func (l *EventLog) ReadBatches(ctx context.Context, from uint64, filters []string, opts ReadOptions, fn func(recs []events.Record, pending uint64) error) error {
	if from == 0 {
		from = 1
	}
	if opts.MaxBatch <= 0 {
		opts.MaxBatch = 12000
	}
	server, local := consumerFilters(filters)
	cons, err := l.orderedFrom(ctx, from, server)
	if err != nil {
		return fmt.Errorf("natsjs: %w", err)
	}
	// Buffered ahead of fn: a batch's worth pulled and a batch's worth decoded.
	it, err := cons.Messages(jetstream.PullMaxMessages(opts.MaxBatch))
	if err != nil {
		return fmt.Errorf("natsjs: messages: %w", err)
	}
	// Messages are decoded here, ahead of fn: decoding the next batch overlaps applying this one.
	ch := make(chan decodedMsg, opts.MaxBatch)
	errc := make(chan error, 1)
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		defer close(ch)
		for {
			m, err := it.Next()
			if err != nil {
				if !errors.Is(err, jetstream.ErrMsgIteratorClosed) {
					errc <- err
				}
				return
			}
			if local != nil && !events.MatchesAny(local, m.Subject()) {
				continue
			}
			var d decodedMsg
			d.rec, d.pending, d.err = decodeMsg(m)
			select {
			case ch <- d:
			case <-ctx.Done():
				return
			case <-stop:
				return
			}
			if d.err != nil {
				return
			}
		}
	}()
	defer it.Stop()

	batch := make([]events.Record, 0, opts.MaxBatch)
	var lastCall time.Time     // when fn was last called (Pace)
	var lastTook time.Duration // how long that call took
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		var d decodedMsg
		var ok bool
		select {
		case <-ctx.Done():
			return nil
		case err := <-errc:
			return fmt.Errorf("natsjs: read: %w", err)
		case d, ok = <-ch:
			if !ok {
				if ctx.Err() != nil {
					return nil
				}
				return errors.New("natsjs: read: message iterator stopped")
			}
		}
		batch = batch[:0]
		var pending uint64
		// While records keep coming, the batch gathers until the pace allows the next call (see ReadOptions.Pace).
		var wait <-chan time.Time
		if opts.Pace > 0 {
			if left := time.Until(lastCall.Add(min(opts.Pace, paceFactor*lastTook))); left > 0 {
				if timer == nil {
					timer = time.NewTimer(left)
				} else {
					timer.Reset(left)
				}
				wait = timer.C
			}
		}
		for {
			if d.err != nil {
				return d.err
			}
			pending = d.pending
			batch = append(batch, d.rec)
			if len(batch) == opts.MaxBatch {
				break
			}
			select {
			case d, ok = <-ch:
			default:
				ok = false
			}
			if !ok && wait != nil {
				select {
				case d, ok = <-ch:
				case <-wait:
					wait = nil
				case <-ctx.Done():
					return nil
				}
			}
			if !ok {
				break
			}
		}
		if wait != nil {
			timer.Stop()
		}
		lastCall = time.Now()
		if err := fn(batch, pending); err != nil {
			return err
		}
		lastTook = time.Since(lastCall)
	}
}

// paceFactor: see ReadOptions.Pace.
const paceFactor = 4

type decodedMsg struct {
	rec     events.Record
	pending uint64
	err     error
}

func decodeMsg(m jetstream.Msg) (events.Record, uint64, error) {
	seq, pending, err := position(m)
	if err != nil {
		return events.Record{}, 0, err
	}
	env, ev, err := events.Unmarshal(m.Data())
	if err != nil {
		return events.Record{}, 0, &DecodeError{Seq: seq, Subject: m.Subject(), Err: err}
	}
	return events.Record{Seq: seq, Subject: m.Subject(), Envelope: env, Event: ev}, pending, nil
}

// ReadUntil calls fn with batches of the records matching filters with from <= Seq <= until, in stream order,
// and returns once it has delivered the last of them (or at once when there is none). It decodes what
// ReadRawUntil reads: decoding runs on several goroutines; fn sees the records in order.
func (l *EventLog) ReadUntil(ctx context.Context, from, until uint64, filters []string, maxBatch int, fn func([]events.Record) error) error {
	return l.readUntil(ctx, from, until, filters, maxBatch, 0, fn)
}

// ErrTooManyPending is ReadUntilAtMost's answer when more events are pending than the caller wants to read.
var ErrTooManyPending = errors.New("natsjs: more events pending than the read allows")

// ReadUntilAtMost is ReadUntil, except that it reads nothing and returns ErrTooManyPending (wrapped) when more
// than maxPending events match filters from sequence from on (counted by the server up to the end of the log,
// not only up to until): a caller with a cheaper way to a large answer (a node worker's start, which can read
// the last event of each subject instead) learns it before reading.
func (l *EventLog) ReadUntilAtMost(ctx context.Context, from, until uint64, filters []string, maxBatch int, maxPending uint64, fn func([]events.Record) error) error {
	return l.readUntil(ctx, from, until, filters, maxBatch, max(maxPending, 1), fn)
}

// readUntil is ReadUntil with ReadUntilAtMost's limit (0: none).
func (l *EventLog) readUntil(ctx context.Context, from, until uint64, filters []string, maxBatch int, maxPending uint64, fn func([]events.Record) error) error {
	// Raw batches are decoded by workers; results come back in the order read.
	type job struct {
		msgs []RawMsg
		out  chan decoded
	}
	jobs := make(chan job, 8)
	order := make(chan chan decoded, 8)
	stop := make(chan struct{}) // closed when fn fails: the read stops
	workers := max(2, runtime.GOMAXPROCS(0))
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for j := range jobs {
				recs := make([]events.Record, 0, len(j.msgs))
				var derr error
				for i := range j.msgs {
					m := &j.msgs[i]
					env, ev, err := events.UnmarshalOwned(m.Data)
					if err != nil {
						derr = &DecodeError{Seq: m.Seq, Subject: m.Subject, Err: err}
						break
					}
					recs = append(recs, events.Record{Seq: m.Seq, Subject: m.Subject, Envelope: env, Event: ev})
				}
				j.out <- decoded{recs, derr}
			}
		})
	}
	readErr := make(chan error, 1)
	go func() {
		defer close(order)
		defer close(jobs)
		readErr <- l.readRawUntil(ctx, from, until, filters, maxBatch, maxPending, func(msgs []RawMsg) error {
			out := make(chan decoded, 1)
			select {
			case order <- out:
			case <-stop:
				return errReadStopped
			}
			jobs <- job{msgs, out}
			return nil
		})
	}()
	var ferr error
	for out := range order {
		d := <-out
		if ferr != nil {
			continue // drain
		}
		if d.err != nil {
			ferr = d.err
		} else if err := fn(d.recs); err != nil {
			ferr = err
		}
		if ferr != nil {
			close(stop)
		}
	}
	wg.Wait()
	rerr := <-readErr
	switch {
	case ferr != nil:
		return ferr
	case rerr != nil:
		return rerr
	}
	return ctx.Err()
}

var errReadStopped = errors.New("natsjs: read stopped")

type decoded struct {
	recs []events.Record
	err  error
}

// RawMsg is one message of the stream as stored, not decoded. Headers returns its headers.
type RawMsg struct {
	Seq     uint64 // stream sequence
	Subject string
	Data    []byte // the event's body (JSON), not shared with another message (ReadUntil's records share it)

	header    nats.Header // as the NATS client parsed it (the ordered consumer's read)
	rawHeader []byte      // as sent (the wire read), parsed by Headers
}

// ReadRawUntil calls fn with batches of the messages matching filters with from <= Seq <= until, in stream
// order and undecoded, and returns once it has delivered the last of them (or at once when there is none): the
// read under ReadUntil, and the stream's own read rate. The next batch is read while fn runs; every batch is a
// new slice, which fn may keep. It returns fn's error, the read's, or ctx's.
//
// A read of wireMinPending messages or more pulls them over a connection of its own (wire.go); a smaller one, or
// one over a connection the wire read does not speak, reads through an ordered consumer's Consume callback
// rather than its Messages iterator: the iterator's Next costs a heartbeat timer and a channel receive per
// message (about 1 µs of a replay's 5-6 µs per event).
func (l *EventLog) ReadRawUntil(ctx context.Context, from, until uint64, filters []string, maxBatch int, fn func([]RawMsg) error) error {
	return l.readRawUntil(ctx, from, until, filters, maxBatch, 0, fn)
}

// readRawUntil is ReadRawUntil with ReadUntilAtMost's limit (0: none).
func (l *EventLog) readRawUntil(ctx context.Context, from, until uint64, filters []string, maxBatch int, maxPending uint64, fn func([]RawMsg) error) error {
	if from == 0 {
		from = 1
	}
	if until < from {
		return nil
	}
	if maxBatch <= 0 {
		maxBatch = 1000
	}
	server, local := consumerFilters(filters)
	cons, err := l.orderedFrom(ctx, from, server)
	if err != nil {
		return fmt.Errorf("natsjs: %w", err)
	}
	info, err := cons.Info(ctx)
	if err != nil {
		return fmt.Errorf("natsjs: consumer info: %w", err)
	}
	if info.NumPending == 0 {
		return nil
	}
	if maxPending > 0 && info.NumPending > maxPending {
		return fmt.Errorf("%w: %d events from sequence %d on, at most %d wanted", ErrTooManyPending, info.NumPending, from, maxPending)
	}
	if l.wireMode == wireAlways || (l.wireMode == wireAuto && info.NumPending >= wireMinPending) {
		e, err := l.wireEndpoint()
		if err == nil {
			// The wire read pulls from the consumer just created; the ordered consumer takes over from the
			// message after its last one if it fails.
			last, err := l.readWire(ctx, e, info.Name, from, until, local, maxBatch, fn)
			l.deleteConsumer(info.Name)
			var we *wireError
			if !errors.As(err, &we) {
				l.m.reads.WithLabelValues("wire").Inc()
				return err // nil, fn's error or ctx's
			}
			l.m.reads.WithLabelValues("wire_fallback").Inc()
			l.log.Warn("the fast read of the event log failed; the ordered consumer reads on", "after_seq", last, "err", err)
			if last >= until {
				return nil
			}
			if cons, err = l.orderedFrom(ctx, last+1, server); err != nil {
				return fmt.Errorf("natsjs: %w", err)
			}
			return l.readOrdered(ctx, cons, last+1, until, local, maxBatch, fn)
		}
	}
	l.m.reads.WithLabelValues("ordered").Inc()
	return l.readOrdered(ctx, cons, from, until, local, maxBatch, fn)
}

// deleteConsumer deletes a reader's consumer (an inactive one would go after InactiveThreshold anyway).
func (l *EventLog) deleteConsumer(name string) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = l.stream.DeleteConsumer(ctx, name)
}

// readOrdered is readRawUntil's read through the ordered consumer cons, which starts at from.
func (l *EventLog) readOrdered(ctx context.Context, cons jetstream.Consumer, from, until uint64, local []string, maxBatch int, fn func([]RawMsg) error) error {

	// The callback cuts batches and hands them over; batches is closed after the last one or at a read error
	// (rerr, written before the close). The ordered consumer calls it on one goroutine at a time, except
	// across a reset of its consumer (a new subscription's goroutine may start before the old one's call
	// returned): mu keeps the calls in turn, and last drops anything delivered twice.
	var (
		mu       sync.Mutex
		batch    = make([]RawMsg, 0, maxBatch)
		last     = from - 1
		finished bool
		rerr     error
	)
	batches := make(chan []RawMsg, 4)
	stop := make(chan struct{})
	finish := func(err error) {
		finished, rerr = true, err
		close(batches)
	}
	handler := func(m jetstream.Msg) {
		mu.Lock()
		defer mu.Unlock()
		if finished {
			return
		}
		seq, pending, err := position(m)
		if err != nil {
			finish(err)
			return
		}
		if seq <= last {
			return
		}
		last = seq
		if seq <= until {
			subject := m.Subject()
			if local == nil || events.MatchesAny(local, subject) {
				batch = append(batch, RawMsg{Seq: seq, Subject: subject, header: m.Headers(), Data: m.Data()})
			}
		}
		end := pending == 0 || seq >= until
		if len(batch) > 0 && (len(batch) == maxBatch || end) {
			select {
			case batches <- batch:
			case <-stop:
				finished = true
				return
			}
			batch = make([]RawMsg, 0, maxBatch)
		}
		if end {
			finish(nil)
		}
	}
	// The error handler runs under the ordered consumer's lock, which Stop takes too: it must not wait for mu
	// (held by a callback that waits for the loop below).
	var closeErr atomic.Pointer[error]
	cc, err := cons.Consume(handler, jetstream.PullMaxMessages(4*maxBatch), jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
		if errors.Is(err, jetstream.ErrConnectionClosed) {
			closeErr.Store(&err)
		}
	}))
	if err != nil {
		return fmt.Errorf("natsjs: consume: %w", err)
	}
	defer func() {
		close(stop) // first: a callback waiting to hand over a batch returns
		cc.Stop()
	}()
	closed := cc.Closed()
	stopped := false // the consumer stopped under the read (the connection closed)
	delivered := from - 1
	for {
		var b []RawMsg
		var ok bool
		if !stopped {
			select {
			case b, ok = <-batches:
			case <-ctx.Done():
				return ctx.Err()
			case <-closed:
				stopped = true
				continue
			}
		} else {
			// Deliver what was read, then fail.
			select {
			case b, ok = <-batches:
			default:
				err := errors.New("consumer stopped")
				if p := closeErr.Load(); p != nil {
					err = *p
				}
				return fmt.Errorf("natsjs: read after sequence %d: %w", delivered, err)
			}
		}
		if !ok {
			if rerr != nil {
				return fmt.Errorf("natsjs: read: %w", rerr)
			}
			return nil
		}
		delivered = b[len(b)-1].Seq
		if err := fn(b); err != nil {
			return err
		}
	}
}

// orderedFrom creates an ordered consumer of the messages matching filters (all when empty) from sequence from.
func (l *EventLog) orderedFrom(ctx context.Context, from uint64, filters []string) (jetstream.Consumer, error) {
	cons, err := l.stream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{
		FilterSubjects:    filters,
		DeliverPolicy:     jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:       from,
		InactiveThreshold: time.Minute,
	})
	if err != nil {
		return nil, fmt.Errorf("ordered consumer: %w", err)
	}
	return cons, nil
}

// consumerFilters splits a reader's subject filters into those the consumer gets (server) and those the reader
// applies itself (local; nil: none). Several filters that each name a whole subject space ("pins.>",
// "place.>", …) are read unfiltered and filtered here: the server matches a multi-filter consumer against every
// distinct subject of each message block it reads (with a subject per pin, hundreds of thousands), which costs
// far more than reading the few messages of the other spaces too. A single filter, or narrower ones (one
// node's placements), stay on the server, which then skips what does not match without reading it.
func consumerFilters(filters []string) (server, local []string) {
	if len(filters) < 2 {
		return filters, nil
	}
	for _, f := range filters {
		space, rest, ok := strings.Cut(f, ".")
		if !ok || rest != ">" || space == "*" || space == ">" || space == "" {
			return filters, nil
		}
	}
	return nil, filters
}

// position is a delivered message's stream sequence and the count of messages pending after it: from its ack
// subject (ackPositions), or Metadata for a subject ackPositions does not recognise.
func position(m jetstream.Msg) (seq, pending uint64, err error) {
	if seq, pending, ok := ackPositions(m.Reply()); ok {
		return seq, pending, nil
	}
	md, err := m.Metadata()
	if err != nil {
		return 0, 0, fmt.Errorf("natsjs: message metadata: %w", err)
	}
	return md.Sequence.Stream, md.NumPending, nil
}

// ackPositions reads a delivered message's stream sequence and the count of messages pending after it from its
// ack subject, without the allocations of Metadata (which parses every field): it runs once per message of a
// replay. ok is false for a subject it does not recognise; Metadata then decides.
func ackPositions(reply string) (seq, pending uint64, ok bool) {
	seq, _, pending, ok = ackSubjectPositions(reply)
	return seq, pending, ok
}

// ackSubjectPositions reads the stream sequence, the consumer's delivery sequence and the count pending from an
// ack subject, as a string (the NATS client's reply) or as bytes (the wire read's, in its read buffer):
//
//	v1: $JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<tm>.<pending>
//	v2: $JS.ACK.<domain>.<account hash>.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<tm>.<pending>[.<token>…]
func ackSubjectPositions[T string | []byte](reply T) (sseq, cseq, pending uint64, ok bool) {
	const v1Tokens, v2MinTokens = 9, 11
	if len(reply) < 8 || string(reply[:8]) != "$JS.ACK." {
		return 0, 0, 0, false
	}
	var dots [12]int // positions of the first dots
	n := 0
	for i := 0; i < len(reply); i++ {
		if reply[i] == '.' {
			if n == len(dots) {
				break
			}
			dots[n] = i
			n++
		}
	}
	tokens := n + 1          // when n == len(dots), at least that many
	token := func(k int) T { // the k-th token (0-based); k >= 1
		end := len(reply)
		if k < n {
			end = dots[k]
		}
		return reply[dots[k-1]+1 : end]
	}
	var si int
	switch {
	case tokens == v1Tokens:
		si = 5
	case tokens >= v2MinTokens:
		si = 7
	default:
		return 0, 0, 0, false
	}
	var err1, err2, err3 error
	// The conversions do not allocate: a short string that does not escape is built on the stack.
	sseq, err1 = strconv.ParseUint(string(token(si)), 10, 64)
	cseq, err2 = strconv.ParseUint(string(token(si+1)), 10, 64)
	pending, err3 = strconv.ParseUint(string(token(si+3)), 10, 64)
	return sseq, cseq, pending, err1 == nil && err2 == nil && err3 == nil
}
