package natsjs_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/anchorage-pin/anchorage/adapters/natsjs"
	"github.com/anchorage-pin/anchorage/adapters/natsjs/natstest"
	"github.com/google/uuid"
	"github.com/stretchr/testify/require"
)

// writeAndDamage appends n events to a fresh log, stops the server, lets damage edit the last block file and
// restarts on the same files.
func writeAndDamage(t *testing.T, n int, damage func(t *testing.T, streamDir, lastBlock string)) *natsjs.EventLog {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	s := natstest.ServerIn(t, dir, natsjs.SyncGroup)
	l, err := natsjs.OpenLog(ctx, s, natsjs.LogConfig{})
	require.NoError(t, err)
	for i := 0; i < n; i++ {
		id := uuid.NewString()
		_, err := l.Append(ctx, pinMsg(t, id, 0, requested(id)))
		require.NoError(t, err)
	}
	d, err := l.CheckIntegrity(ctx)
	require.NoError(t, err)
	require.False(t, d.Any(), "a freshly written log is damaged: %s", d)
	sd := s.StreamDir()
	l.Close()
	s.Shutdown(ctx)
	blks, err := filepath.Glob(filepath.Join(sd, "msgs", "*.blk"))
	require.NoError(t, err)
	require.NotEmpty(t, blks)
	damage(t, sd, blks[len(blks)-1])

	s2 := natstest.ServerIn(t, dir, natsjs.SyncGroup)
	l2, err := natsjs.OpenLog(ctx, s2, natsjs.LogConfig{})
	require.NoError(t, err)
	t.Cleanup(l2.Close)
	return l2
}

func TestCheckIntegrityHealthyAfterRestart(t *testing.T) {
	t.Parallel()
	l := writeAndDamage(t, 50, func(*testing.T, string, string) {})
	d, err := l.CheckIntegrity(context.Background())
	require.NoError(t, err)
	require.False(t, d.Any(), d.String())
	require.EqualValues(t, 50, d.LastSeq)
	require.NotEmpty(t, d.Blocks)
}

// A torn last block after a clean shutdown: the server keeps its index (last sequence 100) but can only read
// the first half of the messages. Nothing in the server's own state says so except the count.
func TestCheckIntegrityTornBlockAfterCleanShutdown(t *testing.T) {
	t.Parallel()
	l := writeAndDamage(t, 100, func(t *testing.T, _, last string) {
		b, err := os.ReadFile(last)
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(last, b[:len(b)/2], 0o600))
	})
	d, err := l.CheckIntegrity(context.Background())
	require.NoError(t, err)
	require.True(t, d.Any())
	require.EqualValues(t, 100, d.LastSeq)
	require.Greater(t, d.Missing, uint64(0))
	require.Contains(t, d.String(), "sequences in that range are missing")
	require.Contains(t, d.String(), "1.blk")
}

// After a crash (no index written) the server rebuilds from the block and silently ends the log where the
// damage starts: the counters look healthy, and only a reader that saw later sequences can tell (Ahead).
func TestCheckIntegrityTornBlockAfterCrash(t *testing.T) {
	t.Parallel()
	l := writeAndDamage(t, 100, func(t *testing.T, sd, last string) {
		require.NoError(t, os.Remove(filepath.Join(sd, "msgs", "index.db")))
		b, err := os.ReadFile(last)
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(last, b[:len(b)/2], 0o600))
	})
	d, err := l.CheckIntegrity(context.Background())
	require.NoError(t, err)
	require.Less(t, d.LastSeq, uint64(100))
	require.False(t, d.Any(), "the counters alone cannot see a lost tail")
	d.Ahead = 100
	require.True(t, d.Any())
	require.Contains(t, d.String(), "were lost from the end of the log")
}

func TestDamageString(t *testing.T) {
	t.Parallel()
	d := natsjs.Damage{FirstSeq: 1, LastSeq: 20, Msgs: 14, Missing: 6, Lost: []uint64{9, 5, 6, 7, 12, 8}, LostBytes: 900}
	require.Equal(t, "the event log holds 14 events with sequences 1..20; 6 sequences in that range are missing; "+
		"the server reported 6 messages (900 bytes) lost while recovering its files (sequences 5..9, 12)", d.String())
}
