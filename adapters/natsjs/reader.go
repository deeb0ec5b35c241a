package natsjs

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/anchorage-pin/anchorage/events"
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
	// MaxBatch bounds how many records one call of fn receives (default 4000: a projection's transaction costs
	// a round trip and a commit whatever its size, so a backlog is worked off in large batches; a batch is only
	// what is already buffered, so a follower that keeps up still applies every event at once).
	MaxBatch int
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
		opts.MaxBatch = 4000
	}
	server, local := consumerFilters(filters)
	cons, err := l.stream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{
		FilterSubjects:    server,
		DeliverPolicy:     jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:       from,
		InactiveThreshold: time.Minute,
	})
	if err != nil {
		return fmt.Errorf("natsjs: ordered consumer: %w", err)
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(2 * opts.MaxBatch))
	if err != nil {
		return fmt.Errorf("natsjs: messages: %w", err)
	}
	// Messages are decoded here, ahead of fn: decoding the next batch overlaps applying this one.
	ch := make(chan decodedMsg, 2*opts.MaxBatch)
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
			if !ok {
				break
			}
		}
		if err := fn(batch, pending); err != nil {
			return err
		}
	}
}

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
// and returns once it has delivered the last of them (or at once when there is none). Decoding runs on several
// goroutines; fn sees the records in order.
func (l *EventLog) ReadUntil(ctx context.Context, from, until uint64, filters []string, maxBatch int, fn func([]events.Record) error) error {
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
	cons, err := l.stream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{
		FilterSubjects:    server,
		DeliverPolicy:     jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:       from,
		InactiveThreshold: time.Minute,
	})
	if err != nil {
		return fmt.Errorf("natsjs: ordered consumer: %w", err)
	}
	info, err := cons.Info(ctx)
	if err != nil {
		return fmt.Errorf("natsjs: consumer info: %w", err)
	}
	if info.NumPending == 0 {
		return nil
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(4 * maxBatch))
	if err != nil {
		return fmt.Errorf("natsjs: messages: %w", err)
	}
	defer it.Stop()

	// Raw batches are cut here and decoded by workers; results come back in the order cut.
	type job struct {
		msgs []seqMsg
		out  chan decoded
	}
	jobs := make(chan job, 8)
	order := make(chan chan decoded, 8)
	workers := max(2, runtime.GOMAXPROCS(0))
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for j := range jobs {
				recs := make([]events.Record, 0, len(j.msgs))
				var derr error
				for _, m := range j.msgs {
					subject := m.msg.Subject()
					if local != nil && !events.MatchesAny(local, subject) {
						continue
					}
					env, ev, err := events.UnmarshalTransient(m.msg.Data())
					if err != nil {
						derr = &DecodeError{Seq: m.seq, Subject: subject, Err: err}
						break
					}
					recs = append(recs, events.Record{Seq: m.seq, Subject: subject, Envelope: env, Event: ev})
				}
				j.out <- decoded{recs, derr}
			}
		})
	}
	cutErr := make(chan error, 1)
	go func() {
		defer close(order)
		defer close(jobs)
		batch := make([]seqMsg, 0, maxBatch)
		flush := func() bool {
			if len(batch) == 0 {
				return true
			}
			out := make(chan decoded, 1)
			select {
			case order <- out:
			case <-ctx.Done():
				return false
			}
			jobs <- job{batch, out}
			batch = make([]seqMsg, 0, maxBatch)
			return true
		}
		for {
			m, err := it.Next()
			if err != nil {
				cutErr <- err
				return
			}
			seq, pending, err := position(m)
			if err != nil {
				cutErr <- err
				return
			}
			if seq > until {
				flush()
				return
			}
			batch = append(batch, seqMsg{m, seq})
			if len(batch) == maxBatch || pending == 0 || seq == until {
				if !flush() {
					return
				}
			}
			if pending == 0 || seq >= until {
				return
			}
		}
	}()
	var ferr error
	for out := range order {
		d := <-out
		if ferr != nil {
			continue // drain
		}
		if d.err != nil {
			ferr = d.err
			continue
		}
		if len(d.recs) == 0 {
			continue // nothing matched the filters
		}
		if err := fn(d.recs); err != nil {
			ferr = err
		}
	}
	wg.Wait()
	if ferr != nil {
		return ferr
	}
	select {
	case err := <-cutErr:
		return fmt.Errorf("natsjs: read: %w", err)
	default:
	}
	return ctx.Err()
}

// seqMsg is a message with its stream sequence, read once from its metadata.
type seqMsg struct {
	msg jetstream.Msg
	seq uint64
}

type decoded struct {
	recs []events.Record
	err  error
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
//
//	v1: $JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<tm>.<pending>
//	v2: $JS.ACK.<domain>.<account hash>.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<tm>.<pending>[.<token>…]
func ackPositions(reply string) (seq, pending uint64, ok bool) {
	const v1Tokens, v2MinTokens = 9, 11
	if !strings.HasPrefix(reply, "$JS.ACK.") {
		return 0, 0, false
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
	tokens := n + 1               // when n == len(dots), at least that many
	token := func(k int) string { // the k-th token (0-based); k >= 1
		end := len(reply)
		if k < n {
			end = dots[k]
		}
		return reply[dots[k-1]+1 : end]
	}
	var si, pi int
	switch {
	case tokens == v1Tokens:
		si, pi = 5, 8
	case tokens >= v2MinTokens:
		si, pi = 7, 10
	default:
		return 0, 0, false
	}
	var err1, err2 error
	seq, err1 = strconv.ParseUint(token(si), 10, 64)
	pending, err2 = strconv.ParseUint(token(pi), 10, 64)
	return seq, pending, err1 == nil && err2 == nil
}
