package natsjs_test

import (
	"context"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/anchorage-pin/anchorage/adapters/natsjs"
	"github.com/anchorage-pin/anchorage/adapters/natsjs/natstest"
	"github.com/anchorage-pin/anchorage/domain"
	"github.com/anchorage-pin/anchorage/events"
	"github.com/anchorage-pin/anchorage/projections"
	"github.com/anchorage-pin/anchorage/projections/projectionstest"
	"github.com/google/uuid"
	"github.com/stretchr/testify/require"
)

// What a node worker's snapshot relies on: the log's id survives a restart and differs for a new store; event
// ids by sequence; a filtered read that refuses, before reading, more than it was allowed.
func TestSnapshotLogMethods(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, err := natsjs.StartServer(natsjs.ServerConfig{StoreDir: dir, Sync: natsjs.SyncInterval, SyncInterval: time.Minute})
	require.NoError(t, err)
	l, err := natsjs.OpenLog(ctx, s, natsjs.LogConfig{})
	require.NoError(t, err)
	appendPinHistories(t, l, 300, "n1", func(_ int, id string) events.PinRequested { return requested(id) })
	appendPinHistories(t, l, 100, "n2", func(_ int, id string) events.PinRequested { return requested(id) })
	id1, err := l.LogID(ctx)
	require.NoError(t, err)
	head, err := l.LastSeq(ctx)
	require.NoError(t, err)
	require.EqualValues(t, 1200, head)

	m := pinMsg(t, uuid.NewString(), 0, requested("x"))
	seqs, err := l.Append(ctx, m)
	require.NoError(t, err)
	got, err := l.EventID(ctx, seqs[0])
	require.NoError(t, err)
	require.Equal(t, m.Envelope.ID, got)
	_, err = l.EventID(ctx, seqs[0]+1)
	require.Error(t, err)

	filter := []string{events.NodePlacements("n1")}
	called := false
	err = l.ReadUntilAtMost(ctx, 1, head, filter, 100, 599, func([]events.Record) error { called = true; return nil })
	require.ErrorIs(t, err, natsjs.ErrTooManyPending)
	require.False(t, called, "refused before reading")
	n := 0
	require.NoError(t, l.ReadUntilAtMost(ctx, 1, head, filter, 100, 600, func(recs []events.Record) error {
		for _, r := range recs {
			require.True(t, events.SubjectMatches(filter[0], r.Subject), r.Subject)
			n++
		}
		return nil
	}))
	require.Equal(t, 600, n, "a placement and an observation per pin on n1")

	l.Close()
	s.Shutdown(ctx)
	l, err = natsjs.OpenLog(ctx, natstest.ServerIn(t, dir, natsjs.SyncInterval), natsjs.LogConfig{})
	require.NoError(t, err)
	defer l.Close()
	id2, err := l.LogID(ctx)
	require.NoError(t, err)
	require.Equal(t, id1, id2, "the same log after a restart")

	_, l3 := natstest.Log(t)
	id3, err := l3.LogID(ctx)
	require.NoError(t, err)
	require.NotEqual(t, id1, id3, "another store, another log")
}

// A node worker on the real event log: its first start reads each placement subject's last event and writes a
// snapshot; the next start loads the snapshot and reads only what came after it, and pins what was placed
// meanwhile.
func TestWorkerStartsFromItsSnapshot(t *testing.T) {
	ctx := context.Background()
	_, l := natstest.Log(t)
	// 300 pins placed on n1 and reported pinned (the observation naming its placement's sequence).
	var msgs []domain.Message
	var ids []string
	for range 300 {
		id := uuid.NewString()
		ids = append(ids, id)
		msgs = append(msgs, pinMsg(t, id, 0, requested(id)), placedMsg(t, "n1", id, benchCID))
	}
	seqs, err := l.AppendBulk(ctx, msgs)
	require.NoError(t, err)
	msgs = msgs[:0]
	for i, id := range ids {
		m := observedMsg(t, "n1", id, benchCID)
		obs := events.PinStatusObserved{OrgID: org, RequestID: id, NodeID: "n1", CID: benchCID, Status: "pinned", PlacedSeq: seqs[2*i+1]}
		m.Envelope, err = events.New(uuid.NewString(), time.Now(), "test:suite", "", obs)
		require.NoError(t, err)
		msgs = append(msgs, m)
	}
	_, err = l.AppendBulk(ctx, msgs)
	require.NoError(t, err)

	src := &countingLog{EventLog: l}
	snaps := &projectionstest.Snapshots{}
	pinner := &countingPinner{}
	// run starts a worker, waits until its start is done (the log line that ends it) and settled holds, checks
	// its pin set's size and stops it.
	run := func(placed int64, startedWith string, settled func() bool) {
		marks := make(chan string, 64)
		w := projections.NewWorker(src, pinner, projections.WorkerConfig{NodeID: "n1", Concurrency: 4, Snapshots: snaps, ReportDelay: -1, Logger: slog.New(markHandler{marks})})
		rctx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- w.Run(rctx) }()
		for m := range marks {
			if m == startedWith {
				break
			}
		}
		require.Eventually(t, settled, 20*time.Second, 10*time.Millisecond)
		require.Equal(t, placed, w.Placed())
		cancel()
		require.NoError(t, <-done)
	}
	run(300, "saved the worker's start-up snapshot", func() bool { return true })
	require.EqualValues(t, 1, src.lastPerSubject.Load())
	require.Zero(t, pinner.pins.Load(), "everything was pinned already")

	// Placed meanwhile, not yet pinned: the next start finds them after the snapshot and pins them.
	msgs = msgs[:0]
	for range 50 {
		id := uuid.NewString()
		msgs = append(msgs, pinMsg(t, id, 0, requested(id)), placedMsg(t, "n1", id, benchCID))
	}
	_, err = l.AppendBulk(ctx, msgs)
	require.NoError(t, err)
	run(350, "worker state restored from its snapshot", func() bool { return pinner.pins.Load() == 50 })
	require.EqualValues(t, 1, src.lastPerSubject.Load(), "the second start read no subject's last event")
	require.Equal(t, 1, snaps.Saved(), "50 events after the snapshot are not worth writing it again")

	// A running worker refreshes its snapshot once enough of the node's events came after it (10,000 here), so
	// the next start reads few.
	w := projections.NewWorker(src, pinner, projections.WorkerConfig{NodeID: "n1", Concurrency: 16, Snapshots: snaps, SnapshotEvery: 50 * time.Millisecond})
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- w.Run(rctx) }()
	appendPinHistories(t, l, 5000, "n1", func(_ int, id string) events.PinRequested { return requested(id) })
	require.Eventually(t, func() bool { return snaps.Saved() >= 2 }, 60*time.Second, 20*time.Millisecond)
	cancel()
	require.NoError(t, <-done)
	run(5350, "worker state restored from its snapshot", func() bool { return true })
	require.EqualValues(t, 1, src.lastPerSubject.Load(), "no start read each subject's last event again")
}

type countingLog struct {
	*natsjs.EventLog
	lastPerSubject atomic.Int64
}

func (c *countingLog) LastPerSubject(ctx context.Context, filter string, fn func(events.Record) error) (uint64, error) {
	c.lastPerSubject.Add(1)
	return c.EventLog.LastPerSubject(ctx, filter, fn)
}

type countingPinner struct{ pins atomic.Int64 }

func (p *countingPinner) Pin(context.Context, string, string) (uint64, error) {
	p.pins.Add(1)
	return 1, nil
}
func (p *countingPinner) Unpin(context.Context, string) error   { return nil }
func (p *countingPinner) Connect(context.Context, []string) int { return 0 }
