package natsjs_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/anchorage-pin/anchorage/adapters/natsjs"
	"github.com/anchorage-pin/anchorage/adapters/natsjs/natstest"
	"github.com/anchorage-pin/anchorage/domain"
	"github.com/anchorage-pin/anchorage/events"
	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const org = "6f0c5a2e-0000-4a53-9a4f-3a6b1f0e2c77"

func pinMsg(t testing.TB, id string, expect uint64, ev events.Event) domain.Message {
	t.Helper()
	env, err := events.New(uuid.NewString(), time.Now(), "test:suite", "corr-1", ev)
	require.NoError(t, err)
	return domain.Message{Subject: events.PinSubject(org, id), Expect: expect, Envelope: env}
}

func requested(id string) events.PinRequested {
	return events.PinRequested{OrgID: org, RequestID: id, CID: "bafkqaaa"}
}

func TestAppendOptimisticConcurrency(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	_, l := natstest.Log(t)
	id := uuid.NewString()

	seqs, err := l.Append(ctx, pinMsg(t, id, 0, requested(id)))
	require.NoError(t, err)
	require.Equal(t, []uint64{1}, seqs)

	// "Subject must be empty" no longer holds: wrong last sequence (10071).
	_, err = l.Append(ctx, pinMsg(t, id, 0, requested(id)))
	require.ErrorIs(t, err, domain.ErrConflict)

	// A stale expectation conflicts too; the right one succeeds.
	other := uuid.NewString()
	_, err = l.Append(ctx, pinMsg(t, other, 0, requested(other)))
	require.NoError(t, err)
	_, err = l.Append(ctx, pinMsg(t, id, 2, events.PinRemoved{OrgID: org, RequestID: id}))
	require.ErrorIs(t, err, domain.ErrConflict)
	seqs, err = l.Append(ctx, pinMsg(t, id, 1, events.PinRemoved{OrgID: org, RequestID: id}))
	require.NoError(t, err)
	require.Equal(t, []uint64{3}, seqs)

	recs, last, err := l.Load(ctx, events.PinSubject(org, id))
	require.NoError(t, err)
	require.Equal(t, uint64(3), last)
	require.Len(t, recs, 2)
	require.IsType(t, events.PinRequested{}, recs[0].Event)
	require.IsType(t, events.PinRemoved{}, recs[1].Event)
	require.Equal(t, "test:suite", recs[1].Actor)
	require.Equal(t, "corr-1", recs[1].Corr)
}

func TestAppendNeverStoresAnEventTwice(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	_, l := natstest.Log(t)
	id := uuid.NewString()
	m := pinMsg(t, id, 0, requested(id))

	_, err := l.Append(ctx, m)
	require.NoError(t, err)
	// The same event again (a retried append whose ack was lost): the server checks the expected sequence
	// before the Nats-Msg-Id window, so it is refused as a conflict, and never stored twice.
	_, err = l.Append(ctx, m)
	require.ErrorIs(t, err, domain.ErrConflict)
	recs, _, err := l.Load(ctx, m.Subject)
	require.NoError(t, err)
	require.Len(t, recs, 1)
}

func TestAtomicBatchIsAllOrNothing(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	_, l := natstest.Log(t)
	oldID, newID := uuid.NewString(), uuid.NewString()
	_, err := l.Append(ctx, pinMsg(t, oldID, 0, requested(oldID)))
	require.NoError(t, err)

	// The second message's expectation fails: nothing of the batch is stored.
	_, err = l.Append(ctx,
		pinMsg(t, oldID, 1, events.PinReplaced{OrgID: org, RequestID: oldID, ReplacedBy: newID}),
		pinMsg(t, newID, 7, requested(newID)))
	require.ErrorIs(t, err, domain.ErrConflict)
	recs, last, err := l.Load(ctx, events.PinSubject(org, oldID))
	require.NoError(t, err)
	require.Len(t, recs, 1)
	require.Equal(t, uint64(1), last)
	recs, _, err = l.Load(ctx, events.PinSubject(org, newID))
	require.NoError(t, err)
	require.Empty(t, recs)

	// Both expectations hold: both stored, contiguously.
	seqs, err := l.Append(ctx,
		pinMsg(t, oldID, 1, events.PinReplaced{OrgID: org, RequestID: oldID, ReplacedBy: newID}),
		pinMsg(t, newID, 0, requested(newID)))
	require.NoError(t, err)
	require.Equal(t, []uint64{2, 3}, seqs)
}

// Two expectations on one subject inside a batch is error 10164 ("wrong last sequence", no number), the code a
// clustered stream also uses for in-flight conflicts. It must map to a conflict like 10071.
func TestConflictCode10164(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	_, l := natstest.Log(t)
	id := uuid.NewString()
	_, err := l.Append(ctx,
		pinMsg(t, id, 0, requested(id)),
		pinMsg(t, id, 1, events.PinRemoved{OrgID: org, RequestID: id}))
	require.ErrorIs(t, err, domain.ErrConflict)
	require.Contains(t, err.Error(), "wrong last sequence")
}

func TestLoadLongHistoryAndEmptySubject(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	_, l := natstest.Log(t)
	recs, last, err := l.Load(ctx, events.PinSubject(org, uuid.NewString()))
	require.NoError(t, err)
	require.Empty(t, recs)
	require.Zero(t, last)

	// More events than one direct-get batch (256), interleaved with another subject.
	id, noise := uuid.NewString(), uuid.NewString()
	var expect, noiseExpect uint64
	for i := 0; i < 600; i++ {
		seqs, err := l.Append(ctx, pinMsg(t, id, expect, requested(id)))
		require.NoError(t, err)
		expect = seqs[0]
		if i%3 == 0 {
			seqs, err = l.Append(ctx, pinMsg(t, noise, noiseExpect, requested(noise)))
			require.NoError(t, err)
			noiseExpect = seqs[0]
		}
	}
	recs, last, err = l.Load(ctx, events.PinSubject(org, id))
	require.NoError(t, err)
	require.Len(t, recs, 600)
	require.Equal(t, expect, last)
	for i := 1; i < len(recs); i++ {
		require.Greater(t, recs[i].Seq, recs[i-1].Seq)
	}
}

func TestReadInOrderFromSequence(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	_, l := natstest.Log(t)
	var ids []string
	for i := 0; i < 50; i++ {
		id := uuid.NewString()
		ids = append(ids, id)
		_, err := l.Append(ctx, pinMsg(t, id, 0, requested(id)))
		require.NoError(t, err)
		tok := domain.Message{Subject: events.TokenSubject(org, id), Envelope: pinMsg(t, id, 0, events.TokenRevoked{OrgID: org, TokenID: id}).Envelope}
		_, err = l.Append(ctx, tok)
		require.NoError(t, err)
	}
	rctx, cancel := context.WithCancel(ctx)
	var got []events.Record
	err := l.ReadBatches(rctx, 21, []string{events.AllPins}, natsjs.ReadOptions{MaxBatch: 7}, func(b []events.Record, _ uint64) error {
		require.LessOrEqual(t, len(b), 7)
		got = append(got, b...)
		if got[len(got)-1].Seq == 99 {
			cancel()
		}
		return nil
	})
	require.NoError(t, err)
	require.Len(t, got, 40) // pins at odd sequences 21..99
	for i, r := range got {
		require.Equal(t, uint64(21+2*i), r.Seq)
		require.Equal(t, ids[10+i], r.Event.(events.PinRequested).RequestID)
	}
}

func TestReadStopsAtUndecodableEvent(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	_, l := natstest.Log(t)
	_, err := l.Conn().Request(events.PinSubject(org, "x"), []byte(`{"id":"1","type":"pin.teleported","v":9,"data":{}}`), 5*time.Second)
	require.NoError(t, err)
	err = l.Read(ctx, 1, nil, func([]events.Record, uint64) error { return nil })
	var de *natsjs.DecodeError
	require.ErrorAs(t, err, &de)
	require.Equal(t, uint64(1), de.Seq)
	require.ErrorIs(t, err, events.ErrUnknownType)
}

// TestGroupSyncAssumptions pins the filestore behaviour the group commit rests on: block files are
// msgs/<n>.blk, and an acknowledged message is already written into the last one. If an upgrade of
// nats-server breaks either, this fails.
func TestGroupSyncAssumptions(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	s, l := natstest.Log(t)
	id := uuid.NewString()
	m := pinMsg(t, id, 0, requested(id))
	_, err := l.Append(ctx, m)
	require.NoError(t, err)
	blocks, err := filepath.Glob(filepath.Join(s.StreamDir(), "msgs", "*.blk"))
	require.NoError(t, err)
	require.NotEmpty(t, blocks)
	data, err := os.ReadFile(blocks[len(blocks)-1])
	require.NoError(t, err)
	require.True(t, bytes.Contains(data, []byte(m.Envelope.ID)), "acknowledged event not in the last block file")
}

// Concurrent appends share fsyncs: far fewer fsync rounds than appends, and every append is acknowledged.
func TestGroupCommitSharesFsyncs(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	s := natstest.Server(t)
	var rounds, covered atomic.Int64
	l, err := natsjs.OpenLog(ctx, s, natsjs.LogConfig{OnSync: func(_ time.Duration, n int) {
		rounds.Add(1)
		covered.Add(int64(n))
	}})
	require.NoError(t, err)
	t.Cleanup(l.Close)
	const writers, each = 32, 20
	var wg sync.WaitGroup
	for w := 0; w < writers; w++ {
		wg.Go(func() {
			for i := 0; i < each; i++ {
				id := uuid.NewString()
				_, err := l.Append(ctx, pinMsg(t, id, 0, requested(id)))
				require.NoError(t, err)
			}
		})
	}
	wg.Wait()
	require.Equal(t, int64(writers*each), covered.Load())
	require.Less(t, rounds.Load(), int64(writers*each), "no fsync was shared")
	t.Logf("%d appends, %d fsyncs", writers*each, rounds.Load())
}

func TestRestartKeepsEvents(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	dir := t.TempDir()
	id := uuid.NewString()
	{
		s, err := natsjs.StartServer(natsjs.ServerConfig{StoreDir: dir})
		require.NoError(t, err)
		l, err := natsjs.OpenLog(ctx, s, natsjs.LogConfig{})
		require.NoError(t, err)
		_, err = l.Append(ctx, pinMsg(t, id, 0, requested(id)))
		require.NoError(t, err)
		l.Close()
		s.Shutdown(ctx)
	}
	s := natstest.ServerIn(t, dir, natsjs.SyncGroup)
	l, err := natsjs.OpenLog(ctx, s, natsjs.LogConfig{})
	require.NoError(t, err)
	defer l.Close()
	recs, last, err := l.Load(ctx, events.PinSubject(org, id))
	require.NoError(t, err)
	require.Len(t, recs, 1)
	require.Equal(t, uint64(1), last)
}

func TestStreamRefusesDeletes(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	_, l := natstest.Log(t)
	id := uuid.NewString()
	_, err := l.Append(ctx, pinMsg(t, id, 0, requested(id)))
	require.NoError(t, err)
	st, err := l.JetStream().Stream(ctx, events.StreamName)
	require.NoError(t, err)
	require.Error(t, st.DeleteMsg(ctx, 1))
	require.Error(t, st.Purge(ctx))
	cfg := st.CachedInfo().Config
	require.True(t, cfg.DenyDelete && cfg.DenyPurge)
	require.True(t, strings.EqualFold(cfg.Discard.String(), "DiscardNew") || cfg.Discard == 1)
}

func TestLastSeqFor(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	_, l := natstest.Log(t)
	seq, err := l.LastSeqFor(ctx, events.AllTokens)
	require.NoError(t, err)
	require.Zero(t, seq)
	id := uuid.NewString()
	_, err = l.Append(ctx, domain.Message{Subject: events.TokenSubject(org, id), Envelope: pinMsg(t, id, 0, events.TokenRevoked{OrgID: org, TokenID: id}).Envelope})
	require.NoError(t, err)
	_, err = l.Append(ctx, pinMsg(t, id, 0, requested(id)))
	require.NoError(t, err)
	seq, err = l.LastSeqFor(ctx, events.AllTokens)
	require.NoError(t, err)
	require.Equal(t, uint64(1), seq)
}

// The stream deduplicates by Nats-Msg-Id (the envelope id) within its window: a message re-sent without an
// expectation (a retried import, say) is acknowledged as a duplicate and stored once.
func TestStreamDeduplicatesByMsgID(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	_, l := natstest.Log(t)
	id := uuid.NewString()
	m := pinMsg(t, id, 0, requested(id))
	body, err := events.Marshal(m.Envelope)
	require.NoError(t, err)
	for i := 0; i < 3; i++ {
		ack, err := l.JetStream().PublishMsg(ctx, &nats.Msg{Subject: m.Subject, Data: body, Header: nats.Header{"Nats-Msg-Id": []string{m.Envelope.ID}}})
		require.NoError(t, err)
		require.Equal(t, uint64(1), ack.Sequence)
		require.Equal(t, i > 0, ack.Duplicate)
	}
	recs, _, err := l.Load(ctx, m.Subject)
	require.NoError(t, err)
	require.Len(t, recs, 1)
	st, err := l.JetStream().Stream(ctx, events.StreamName)
	require.NoError(t, err)
	require.Equal(t, 30*time.Second, st.CachedInfo().Config.Duplicates)
}

// TestAppendOrderedStoresInBuildOrder: concurrent appends under one key are stored in the order their builds
// ran (what keeps pin creation times growing with stream order), conflicts still surface, and a build error
// appends nothing.
func TestAppendOrderedStoresInBuildOrder(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	_, l := natstest.Log(t)

	var ticket atomic.Int64
	const writers, each = 16, 40
	var wg sync.WaitGroup
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				id := uuid.NewString()
				_, err := l.AppendOrdered(ctx, org, func() ([]domain.Message, error) {
					ev := requested(id)
					ev.Name = strconv.FormatInt(ticket.Add(1), 10) // the order the builds ran in
					return []domain.Message{pinMsg(t, id, 0, ev)}, nil
				})
				assert.NoError(t, err)
			}
		}()
	}
	wg.Wait()

	var names []int64
	err := l.ReadUntil(ctx, 1, writers*each, nil, 256, func(recs []events.Record) error {
		for _, r := range recs {
			n, err := strconv.ParseInt(r.Event.(events.PinRequested).Name, 10, 64)
			if err != nil {
				return err
			}
			names = append(names, n)
		}
		return nil
	})
	require.NoError(t, err)
	require.Len(t, names, writers*each)
	require.True(t, slices.IsSorted(names), "stream order differs from build order: %v", names)

	// An expectation that no longer holds is a conflict, as with Append.
	id := uuid.NewString()
	_, err = l.Append(ctx, pinMsg(t, id, 0, requested(id)))
	require.NoError(t, err)
	_, err = l.AppendOrdered(ctx, org, func() ([]domain.Message, error) { return []domain.Message{pinMsg(t, id, 0, requested(id))}, nil })
	require.ErrorIs(t, err, domain.ErrConflict)

	// A refused build appends nothing and returns its error.
	head, err := l.LastSeq(ctx)
	require.NoError(t, err)
	refused := errors.New("refused")
	_, err = l.AppendOrdered(ctx, org, func() ([]domain.Message, error) { return nil, refused })
	require.ErrorIs(t, err, refused)
	after, err := l.LastSeq(ctx)
	require.NoError(t, err)
	require.Equal(t, head, after)
}

// TestReadPace: while records keep coming, a paced read hands over together what arrives within the pace of the
// last call (paceFactor times its duration, at most Pace); after a quiet spell a record is handed over at once.
func TestReadPace(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	_, l := natstest.Log(t)
	appendPin := func() {
		id := uuid.NewString()
		_, err := l.Append(ctx, pinMsg(t, id, 0, requested(id)))
		require.NoError(t, err)
	}
	type call struct {
		n  int
		at time.Time
	}
	calls := make(chan call, 16)
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		first := true
		done <- l.ReadBatches(rctx, 1, []string{events.AllPins}, natsjs.ReadOptions{Pace: 600 * time.Millisecond}, func(b []events.Record, _ uint64) error {
			calls <- call{len(b), time.Now()}
			if first {
				// A call of 150 ms: the next may start 600 ms (4 x 150) after this one did.
				first = false
				time.Sleep(150 * time.Millisecond)
			}
			return nil
		})
	}()
	start := time.Now()
	appendPin()
	c1 := <-calls
	require.Equal(t, 1, c1.n)
	appendPin() // during the first call
	time.Sleep(250 * time.Millisecond)
	appendPin() // after it, within its pace
	c2 := <-calls
	require.Equal(t, 2, c2.n, "the records that came within the pace are handed over together")
	require.GreaterOrEqual(t, c2.at.Sub(c1.at), 550*time.Millisecond, "the second call waited for the pace")
	require.Less(t, c1.at.Sub(start), 300*time.Millisecond, "the first record, after a quiet spell, was handed over at once")

	// The second call was quick, so its pace is short: the next record goes at once.
	time.Sleep(100 * time.Millisecond)
	t0 := time.Now()
	appendPin()
	c3 := <-calls
	require.Equal(t, 1, c3.n)
	require.Less(t, c3.at.Sub(t0), 300*time.Millisecond)
	cancel()
	require.NoError(t, <-done)
}

func TestSubjectCount(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	_, l := natstest.Log(t)
	id := uuid.NewString()
	n, err := l.SubjectCount(ctx, events.PinSubject(org, id))
	require.NoError(t, err)
	require.Zero(t, n)
	var last uint64
	for range 3 {
		seqs, err := l.Append(ctx, pinMsg(t, id, last, requested(id)))
		require.NoError(t, err)
		last = seqs[0]
	}
	other := uuid.NewString()
	_, err = l.Append(ctx, pinMsg(t, other, 0, requested(other)))
	require.NoError(t, err)
	n, err = l.SubjectCount(ctx, events.PinSubject(org, id))
	require.NoError(t, err)
	require.Equal(t, uint64(3), n)
	_, err = l.SubjectCount(ctx, events.AllPins)
	require.Error(t, err, "a wildcard is refused")
}

// TestAppendBulkLargerThanThePublishWindow: a bulk append of five times the client's window of unacknowledged
// publishes (4,000) stores every event once, in order. Whether the acks ever lag past the client's 200 ms stall
// default is the machine's timing (it failed one suite run under -race with "stalled with too many outstanding
// async published messages", and did not fail in three runs beside two busy loops without bulkStallWait), so
// this exercises the path rather than reproducing that failure.
func TestAppendBulkLargerThanThePublishWindow(t *testing.T) {
	t.Parallel()
	_, l := natstest.Log(t)
	ctx := context.Background()
	org := uuid.NewString()
	var msgs []domain.Message
	for range 20000 {
		id := uuid.NewString()
		env, err := events.New(uuid.NewString(), time.Now(), "test:bulk", "", events.PinRequested{OrgID: org, RequestID: id, CID: "bafkqaaa", Created: time.Now()})
		require.NoError(t, err)
		msgs = append(msgs, domain.Message{Subject: events.PinSubject(org, id), Envelope: env})
	}
	seqs, err := l.AppendBulk(ctx, msgs)
	require.NoError(t, err)
	require.Len(t, seqs, len(msgs))
	for i := 1; i < len(seqs); i++ {
		require.Equal(t, seqs[i-1]+1, seqs[i])
	}
	last, err := l.LastSeq(ctx)
	require.NoError(t, err)
	require.Equal(t, seqs[len(seqs)-1], last)
}
