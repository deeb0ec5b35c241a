package natsjs_test

import (
	"errors"
	"testing"
	"time"

	"github.com/anchorage-pin/anchorage/adapters/natsjs"
	"github.com/anchorage-pin/anchorage/adapters/natsjs/natstest"
	"github.com/anchorage-pin/anchorage/domain"
	"github.com/anchorage-pin/anchorage/events"
	"github.com/google/uuid"
	"github.com/stretchr/testify/require"
)

// rawLog appends n pins, each followed by a token event: pins at odd sequences, tokens at even ones.
func rawLog(t *testing.T, n int) (*natsjs.EventLog, []string) {
	_, l := natstest.Log(t)
	return l, appendRawLog(t, l, n)
}

// appendRawLog appends rawLog's events to l and returns the pins' ids.
func appendRawLog(t *testing.T, l *natsjs.EventLog, n int) []string {
	var msgs []domain.Message
	var ids []string
	for range n {
		id := uuid.NewString()
		ids = append(ids, id)
		msgs = append(msgs, pinMsg(t, id, 0, requested(id)),
			domain.Message{Subject: events.TokenSubject(org, id), Envelope: pinMsg(t, id, 0, events.TokenRevoked{OrgID: org, TokenID: id}).Envelope})
	}
	_, err := l.AppendBulk(t.Context(), msgs)
	require.NoError(t, err)
	return ids
}

func TestReadRawUntil(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	l, ids := rawLog(t, 300) // sequences 1..600

	// Every message from..until, in order, in batches of at most maxBatch, with subject, headers and body.
	var got []natsjs.RawMsg
	require.NoError(t, l.ReadRawUntil(ctx, 5, 555, nil, 64, func(b []natsjs.RawMsg) error {
		require.NotEmpty(t, b)
		require.LessOrEqual(t, len(b), 64)
		got = append(got, b...) // batches may be kept
		return nil
	}))
	require.Len(t, got, 551)
	for i, m := range got {
		seq := uint64(5 + i)
		require.Equal(t, seq, m.Seq)
		id := ids[(seq-1)/2]
		if seq%2 == 1 {
			require.Equal(t, events.PinSubject(org, id), m.Subject)
			require.Equal(t, "pin.requested.v1", header(t, m).Get(natsjs.HeaderType))
		} else {
			require.Equal(t, events.TokenSubject(org, id), m.Subject)
		}
		env, _, err := events.Unmarshal(m.Data)
		require.NoError(t, err)
		require.NotEmpty(t, env.ID)
		require.Equal(t, env.ID, header(t, m).Get("Nats-Msg-Id"))
	}

	// Filters: one on the server, several applied by the reader; until past the head stops at the head.
	for _, filters := range [][]string{{events.AllPins}, {events.AllPins, events.AllPlace}} {
		var seqs []uint64
		require.NoError(t, l.ReadRawUntil(ctx, 100, 10_000, filters, 7, func(b []natsjs.RawMsg) error {
			for _, m := range b {
				seqs = append(seqs, m.Seq)
			}
			return nil
		}))
		require.Len(t, seqs, 250, "filters %v", filters)
		for i, s := range seqs {
			require.Equal(t, uint64(101+2*i), s)
		}
	}

	// Nothing to read: no call.
	for _, r := range [][2]uint64{{601, 700}, {10, 9}} {
		require.NoError(t, l.ReadRawUntil(ctx, r[0], r[1], nil, 10, func([]natsjs.RawMsg) error {
			t.Fatalf("called for %v", r)
			return nil
		}))
	}

	// fn's error ends the read.
	stop := errors.New("stop")
	calls := 0
	err := l.ReadRawUntil(ctx, 1, 600, nil, 10, func([]natsjs.RawMsg) error {
		calls++
		return stop
	})
	require.ErrorIs(t, err, stop)
	require.Equal(t, 1, calls)
}

// ReadUntil delivers what ReadRawUntil reads, decoded, with the same batches.
func TestReadUntilMatchesRaw(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	l, _ := rawLog(t, 200)
	for _, filters := range [][]string{nil, {events.AllTokens}, {events.AllPins, events.AllTokens}} {
		var raw []natsjs.RawMsg
		require.NoError(t, l.ReadRawUntil(ctx, 3, 390, filters, 33, func(b []natsjs.RawMsg) error {
			raw = append(raw, b...)
			return nil
		}))
		var recs []events.Record
		require.NoError(t, l.ReadUntil(ctx, 3, 390, filters, 33, func(b []events.Record) error {
			require.LessOrEqual(t, len(b), 33)
			recs = append(recs, b...)
			return nil
		}))
		require.Len(t, recs, len(raw))
		require.NotEmpty(t, recs)
		for i := range recs {
			require.Equal(t, raw[i].Seq, recs[i].Seq)
			require.Equal(t, raw[i].Subject, recs[i].Subject)
			env, _, err := events.Unmarshal(raw[i].Data)
			require.NoError(t, err)
			require.Equal(t, env.ID, recs[i].Envelope.ID)
		}
	}

	// fn's error ends the read and is returned.
	stop := errors.New("stop")
	calls := 0
	err := l.ReadUntil(ctx, 1, 400, nil, 10, func([]events.Record) error {
		calls++
		return stop
	})
	require.ErrorIs(t, err, stop)
	require.Equal(t, 1, calls)
}

func TestReadUntilStopsAtUndecodableEvent(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	l, _ := rawLog(t, 5)
	_, err := l.Conn().Request(events.PinSubject(org, "x"), []byte(`{"id":"1","type":"pin.teleported","v":9,"data":{}}`), 5*time.Second)
	require.NoError(t, err)
	n := 0
	err = l.ReadUntil(ctx, 1, 11, nil, 4, func(recs []events.Record) error {
		n += len(recs)
		return nil
	})
	var de *natsjs.DecodeError
	require.ErrorAs(t, err, &de)
	require.Equal(t, uint64(11), de.Seq)
	require.ErrorIs(t, err, events.ErrUnknownType)
	require.Equal(t, 8, n) // the batches before the undecodable event's
}

// A read whose connection closes under it fails rather than waits.
func TestReadRawUntilConnectionClosed(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	s, l := natstest.Log(t)
	var msgs []domain.Message
	for range 2000 {
		id := uuid.NewString()
		msgs = append(msgs, pinMsg(t, id, 0, requested(id)))
	}
	_, err := l.AppendBulk(ctx, msgs)
	require.NoError(t, err)
	nc, err := s.Connect("reader")
	require.NoError(t, err)
	defer nc.Close()
	remote, err := natsjs.OpenRemoteLog(ctx, nc, natsjs.LogConfig{})
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() {
		done <- remote.ReadRawUntil(ctx, 1, 2000, nil, 10, func([]natsjs.RawMsg) error {
			nc.Close()
			time.Sleep(10 * time.Millisecond)
			return nil
		})
	}()
	select {
	case err := <-done:
		require.Error(t, err)
		t.Log(err)
	case <-time.After(20 * time.Second):
		t.Fatal("ReadRawUntil still waits 20s after its connection closed")
	}
}

// When the ordered consumer is reset under the read (here: its consumer deleted on the server, as an operator or
// a server restart might), the read resumes where it was: nothing lost, nothing repeated, still in order.
func TestReadRawUntilSurvivesConsumerReset(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	l, _ := rawLog(t, 1000) // sequences 1..2000
	stream, err := l.JetStream().Stream(ctx, events.StreamName)
	require.NoError(t, err)
	var got []uint64
	deleted := 0
	start := time.Now()
	require.NoError(t, l.ReadRawUntil(ctx, 1, 2000, nil, 50, func(b []natsjs.RawMsg) error {
		for _, m := range b {
			got = append(got, m.Seq)
		}
		if deleted == 0 && len(got) >= 300 {
			names := stream.ConsumerNames(ctx)
			for n := range names.Name() {
				if err := stream.DeleteConsumer(ctx, n); err != nil {
					return err
				}
				deleted++
			}
			if err := names.Err(); err != nil {
				return err
			}
		}
		return nil
	}))
	require.Positive(t, deleted, "the read's consumer was found and deleted")
	require.Len(t, got, 2000)
	for i, s := range got {
		require.Equal(t, uint64(i+1), s)
	}
	t.Logf("read 2000 messages across a consumer reset in %s", time.Since(start).Round(time.Millisecond))
}
