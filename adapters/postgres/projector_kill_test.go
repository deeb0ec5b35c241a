package postgres_test

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/anchorage-pin/anchorage/adapters/natsjs/natstest"
	"github.com/anchorage-pin/anchorage/adapters/postgres"
	"github.com/anchorage-pin/anchorage/events"
	"github.com/anchorage-pin/anchorage/projections"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"
)

// killMidBatch is a pgx tracer that cuts the projectors off in the middle of a batch. A projector applies a
// batch of events as one pipelined statement batch (checkpoint compare-and-set first, then the row writes) in a
// transaction; after kill statements of such a batch have run, the tracer cancels the runner's context, so the
// rest is cancelled and the transaction never commits, as when the process dies there.
type killMidBatch struct {
	kill   int
	cancel context.CancelFunc

	mu     sync.Mutex
	ran    map[*pgx.Conn]int // statements of the projector batch running on each connection
	killed atomic.Bool
	killAt string // the last statement that ran
}

func (k *killMidBatch) TraceQueryStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceQueryStartData) context.Context {
	return ctx
}

func (k *killMidBatch) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

func (k *killMidBatch) TraceBatchStart(ctx context.Context, conn *pgx.Conn, data pgx.TraceBatchStartData) context.Context {
	if data.Batch != nil && len(data.Batch.QueuedQueries) > k.kill && strings.Contains(data.Batch.QueuedQueries[0].SQL, "CheckpointAdvanceOrFail") {
		k.mu.Lock()
		k.ran[conn] = 0
		k.mu.Unlock()
	}
	return ctx
}

func (k *killMidBatch) TraceBatchQuery(_ context.Context, conn *pgx.Conn, data pgx.TraceBatchQueryData) {
	k.mu.Lock()
	defer k.mu.Unlock()
	n, ok := k.ran[conn]
	if !ok || k.killed.Load() {
		return
	}
	k.ran[conn] = n + 1
	if n+1 >= k.kill {
		k.killed.Store(true)
		k.killAt = strings.Join(strings.Fields(data.SQL), " ")
		k.cancel()
	}
}

func (k *killMidBatch) TraceBatchEnd(_ context.Context, conn *pgx.Conn, _ pgx.TraceBatchEndData) {
	k.mu.Lock()
	delete(k.ran, conn)
	k.mu.Unlock()
}

// TestProjectorKilledMidBatch: projectors cut off inside a batch transaction (after some of its writes) and
// restarted leave read models equal to a rebuild from the log: no row lost, none doubled, counts right.
func TestProjectorKilledMidBatch(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFixture(t)
	_, l := natstest.Log(t)
	lf := &logFixture{fixture: f, log: l}
	ids := lf.history(t, 300)
	extra := 0

	for _, kill := range []int{1, 2, 3} {
		// Fresh work for every round: the rounds before may have projected the whole log before a batch long
		// enough to be cut off came. Requests alone make batches of three statements (checkpoint, insert, org
		// state), too few to cut after the third; a removal among them adds the delete and its placements'.
		for i := range 20 {
			id := uuid.NewString()
			lf.append(t, events.PinSubject(orgA, id), events.PinRequested{OrgID: orgA, RequestID: id, CID: cids[0], Created: time.Now()})
			extra++
			if i%4 == 3 {
				lf.append(t, events.PinSubject(orgA, id), events.PinRemoved{OrgID: orgA, RequestID: id})
				extra--
			}
		}
		runCtx, cancel := context.WithCancel(ctx)
		tracer := &killMidBatch{kill: kill, cancel: cancel, ran: map[*pgx.Conn]int{}}
		cfg, err := pgxpool.ParseConfig(f.db.OwnerDSN)
		require.NoError(t, err)
		cfg.ConnConfig.Tracer = tracer
		pool, err := pgxpool.NewWithConfig(ctx, cfg)
		require.NoError(t, err)
		runner := projections.NewRunner(l, postgres.Projectors(pool, nil), projections.RunnerConfig{Backoff: 10 * time.Millisecond})
		done := make(chan struct{})
		go func() { runner.Run(runCtx); close(done) }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			cancel()
			<-done
			t.Fatalf("kill after %d statements: the projectors were never cut off mid-batch", kill)
		}
		pool.Close()
		require.True(t, tracer.killed.Load())
		t.Logf("cut off after %d statements of a batch; the last to run: %.100s", kill, tracer.killAt)
	}

	// Restarted normally, the projections catch up...
	head, err := l.LastSeq(ctx)
	require.NoError(t, err)
	runCtx, cancel := context.WithCancel(ctx)
	runner := projections.NewRunner(l, postgres.Projectors(f.owner, nil), projections.RunnerConfig{Backoff: 10 * time.Millisecond})
	done := make(chan struct{})
	go func() { runner.Run(runCtx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	require.Eventually(t, func() bool {
		var seq int64
		err := f.owner.QueryRow(ctx, "SELECT coalesce(min(last_seq), 0) FROM projection_checkpoints WHERE name IN ('pins', 'audit')").Scan(&seq)
		return err == nil && uint64(seq) >= head
	}, 30*time.Second, 10*time.Millisecond)

	// ...to exactly what a rebuild from the log gives, row for row.
	rep, err := postgres.Verify(ctx, f.db.OwnerDSN, l, postgres.RebuildOptions{})
	require.NoError(t, err)
	require.Empty(t, rep.Differences)
	var pins int
	require.NoError(t, f.owner.QueryRow(ctx, "SELECT count(*) FROM pins").Scan(&pins))
	require.Equal(t, len(ids)+extra, pins, "every live pin exactly once")
	var counted int
	require.NoError(t, f.owner.QueryRow(ctx, "SELECT coalesce(sum(n), 0) FROM pin_counts").Scan(&counted))
	require.Equal(t, pins, counted, "the status counts add up to the pins")
}
