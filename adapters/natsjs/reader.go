package natsjs

import (
	"context"
	"errors"
	"fmt"
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
	// MaxBatch bounds how many records one call of fn receives (default 1000).
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
		opts.MaxBatch = 1000
	}
	cons, err := l.stream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{
		FilterSubjects:    filters,
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
	ch := make(chan jetstream.Msg, 2*opts.MaxBatch)
	errc := make(chan error, 1)
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
			select {
			case ch <- m:
			case <-ctx.Done():
				return
			}
		}
	}()
	defer it.Stop()

	batch := make([]events.Record, 0, opts.MaxBatch)
	for {
		var m jetstream.Msg
		var ok bool
		select {
		case <-ctx.Done():
			return nil
		case err := <-errc:
			return fmt.Errorf("natsjs: read: %w", err)
		case m, ok = <-ch:
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
			rec, np, err := decodeMsg(m)
			if err != nil {
				return err
			}
			pending = np
			batch = append(batch, rec)
			if len(batch) == opts.MaxBatch {
				break
			}
			select {
			case m, ok = <-ch:
				if !ok {
					m = nil
				}
			default:
				m = nil
			}
			if m == nil {
				break
			}
		}
		if err := fn(batch, pending); err != nil {
			return err
		}
	}
}

func decodeMsg(m jetstream.Msg) (events.Record, uint64, error) {
	md, err := m.Metadata()
	if err != nil {
		return events.Record{}, 0, fmt.Errorf("natsjs: message metadata: %w", err)
	}
	env, ev, err := events.Unmarshal(m.Data())
	if err != nil {
		return events.Record{}, 0, &DecodeError{Seq: md.Sequence.Stream, Subject: m.Subject(), Err: err}
	}
	return events.Record{Seq: md.Sequence.Stream, Subject: m.Subject(), Envelope: env, Event: ev}, md.NumPending, nil
}
