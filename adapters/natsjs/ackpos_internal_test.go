package natsjs

import (
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"
)

// metadata is nats.go's own parse of an ack subject.
func metadata(reply string) (*nats.MsgMetadata, error) {
	return (&nats.Msg{Reply: reply, Sub: &nats.Subscription{}}).Metadata()
}

// ackPositions reads what Metadata reads, from both ack subject layouts, and declines anything else.
func TestAckPositions(t *testing.T) {
	t.Parallel()
	for _, reply := range []string{
		"$JS.ACK.EVENTS.cons.1.42.7.1732290000000000000.958",
		"$JS.ACK._.acchash.EVENTS.cons.3.1234567.99.1732290000000000000.0",
		"$JS.ACK.dom.acchash.EVENTS.cons.1.18446744073709551615.5.1732290000000000000.12.tok",
		"$JS.ACK.dom.acchash.EVENTS.cons.1.77.5.1732290000000000000.12.tok.more.and.more",
	} {
		md, err := metadata(reply)
		require.NoError(t, err, reply)
		seq, pending, ok := ackPositions(reply)
		require.True(t, ok, reply)
		require.Equal(t, md.Sequence.Stream, seq, reply)
		require.Equal(t, md.NumPending, pending, reply)
	}
	for _, reply := range []string{
		"", "$JS.ACK", "$JS.ACK.a.b.c", "$JS.ACK.EVENTS.cons.1.x.7.1.958", "$JS.ACK.EVENTS.cons.1.42.7.1.",
		"$JS.ACK.a.b.c.d.e.f.g.h.i.j", // letters where the numbers go
		"_INBOX.abc.def", "$JS.ACK.EVENTS.cons.1.42.7.1.-1",
	} {
		_, _, ok := ackPositions(reply)
		require.False(t, ok, reply)
	}
}

func FuzzAckPositions(f *testing.F) {
	f.Add("$JS.ACK.EVENTS.cons.1.42.7.1732290000000000000.958")
	f.Add("$JS.ACK.dom.acchash.EVENTS.cons.1.77.5.1732290000000000000.12.tok")
	f.Fuzz(func(t *testing.T, reply string) {
		seq, pending, ok := ackPositions(reply)
		md, err := metadata(reply)
		if ok && err == nil && (md.Sequence.Stream != seq || md.NumPending != pending) {
			t.Fatalf("%q: ackPositions %d/%d, Metadata %d/%d", reply, seq, pending, md.Sequence.Stream, md.NumPending)
		}
	})
}

// BenchmarkAckPositions compares the replay's per-message read of its position with Metadata's.
func BenchmarkAckPositions(b *testing.B) {
	const reply = "$JS.ACK._.acchash.EVENTS.OrdConsumer_xyz_1.1.1234567.1234567.1732290000000000000.958123"
	b.Run("ackPositions", func(b *testing.B) {
		for b.Loop() {
			if _, _, ok := ackPositions(reply); !ok {
				b.Fatal("not recognised")
			}
		}
	})
	b.Run("Metadata", func(b *testing.B) {
		for b.Loop() {
			if _, err := metadata(reply); err != nil {
				b.Fatal(err)
			}
		}
	})
}
