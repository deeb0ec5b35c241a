package natsjs_test

import (
	"sync"
	"testing"

	"github.com/anchorage-pin/anchorage/adapters/natsjs/natstest"
	"github.com/anchorage-pin/anchorage/events"
	"github.com/google/uuid"
	"github.com/stretchr/testify/require"
)

// LastPerSubject hands over exactly the last event of each matching subject, in stream order, however the
// subjects' events interleave with others, and ignores what is appended while it reads.
func TestLastPerSubject(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	_, l := natstest.Log(t)

	// Nothing matches: no call, and the log's last sequence.
	upTo, err := l.LastPerSubject(ctx, events.NodePlacements("n1"), func(events.Record) error {
		t.Fatal("called on an empty log")
		return nil
	})
	require.NoError(t, err)
	require.Zero(t, upTo)

	want := map[string]uint64{} // placement subject of n1 -> sequence of its last event
	for i := range 300 {
		id := uuid.NewString()
		_, err := l.Append(ctx, pinMsg(t, id, 0, requested(id)))
		require.NoError(t, err)
		seqs, err := l.Append(ctx, placedMsg(t, "n1", id, "bafkqaaa"))
		require.NoError(t, err)
		want[events.PlaceSubject("n1", org, id)] = seqs[0]
		if i%3 == 0 {
			seqs, err = l.Append(ctx, observedMsg(t, "n1", id, "bafkqaaa"))
			require.NoError(t, err)
			want[events.PlaceSubject("n1", org, id)] = seqs[0]
		}
		_, err = l.Append(ctx, placedMsg(t, "n2", id, "bafkqaaa")) // another node's: not matched
		require.NoError(t, err)
	}
	_, err = l.Append(ctx, pinMsg(t, uuid.NewString(), 0, requested(uuid.NewString()))) // the log ends on another subject
	require.NoError(t, err)
	head, err := l.LastSeq(ctx)
	require.NoError(t, err)

	// Appends going on during the read (new subjects of n1 and new events of old ones) are not part of it.
	var wg sync.WaitGroup
	stop := make(chan struct{})
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			id := uuid.NewString()
			if _, err := l.Append(ctx, placedMsg(t, "n1", id, "bafkqaaa")); err != nil {
				return
			}
		}
	})
	got := map[string]uint64{}
	var prev uint64
	upTo, err = l.LastPerSubject(ctx, events.NodePlacements("n1"), func(r events.Record) error {
		require.Greater(t, r.Seq, prev, "in stream order")
		prev = r.Seq
		_, dup := got[r.Subject]
		require.False(t, dup, "one event per subject")
		got[r.Subject] = r.Seq
		return nil
	})
	close(stop)
	wg.Wait()
	require.NoError(t, err)
	require.GreaterOrEqual(t, upTo, head)
	for subj, seq := range got {
		require.LessOrEqual(t, seq, upTo, "%s: nothing after the sequence it says it read up to", subj)
		if seq > head {
			continue // appended after head was read, before the read started: newer than the state asked for
		}
		require.Equal(t, want[subj], seq, subj)
	}
	for subj := range want {
		require.Contains(t, got, subj)
	}
}
