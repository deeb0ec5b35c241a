package natsjs_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/anchorage-pin/anchorage/adapters/natsjs"
	"github.com/anchorage-pin/anchorage/adapters/natsjs/natstest"
	"github.com/anchorage-pin/anchorage/domain"
	"github.com/anchorage-pin/anchorage/events"
	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
)

// BenchmarkAppend measures durable appends (one new pin aggregate each) with concurrent writers, in the group
// commit mode against the server's own per-message fsync.
func BenchmarkAppend(b *testing.B) {
	for _, mode := range []natsjs.SyncMode{natsjs.SyncGroup, natsjs.SyncAlways} {
		for _, writers := range []int{1, 16} {
			b.Run(fmt.Sprintf("%s/writers=%d", mode, writers), func(b *testing.B) {
				s := natstest.ServerIn(b, b.TempDir(), mode)
				l, err := natsjs.OpenLog(context.Background(), s, natsjs.LogConfig{})
				require.NoError(b, err)
				defer l.Close()
				b.SetParallelism(writers)
				b.ResetTimer()
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						id := uuid.NewString()
						if _, err := l.Append(context.Background(), pinMsg(b, id, 0, requested(id))); err != nil {
							b.Error(err)
							return
						}
					}
				})
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "appends/s")
			})
		}
	}
}

// BenchmarkReplay measures reading (raw) and reading and decoding (decoded) the whole log in order (what a rebuild or an export reads),
// over a log of 200,000 realistic pin events (request, placement, observation), through an in-process client
// connection and through TCP loopback (as the admin CLI reads a running node's log).
func BenchmarkReplay(b *testing.B) {
	const pins = 66_667
	ctx := context.Background()
	s, err := natsjs.StartServer(natsjs.ServerConfig{StoreDir: b.TempDir(), Sync: natsjs.SyncGroup, Listen: "127.0.0.1:0"})
	require.NoError(b, err)
	b.Cleanup(func() { s.Shutdown(ctx) })
	l, err := natsjs.OpenLog(ctx, s, natsjs.LogConfig{})
	require.NoError(b, err)
	defer l.Close()
	appendPinHistories(b, l, pins, "node-1", func(i int, id string) events.PinRequested {
		return events.PinRequested{OrgID: org, RequestID: id, CID: benchCID, Name: fmt.Sprintf("file-%d.tar", i),
			Meta: map[string]string{"app": "bench"}, Created: time.Now()}
	})
	head, err := l.LastSeq(ctx)
	require.NoError(b, err)
	nc, err := nats.Connect(s.ClientURL())
	require.NoError(b, err)
	defer nc.Close()
	remote, err := natsjs.OpenRemoteLog(ctx, nc, natsjs.LogConfig{})
	require.NoError(b, err)
	// Raw: the stream's own read rate (ReadRawUntil: every message with its sequence, subject, headers and body,
	// nothing decoded), the ceiling for everything below.
	for _, tc := range []struct {
		name string
		log  *natsjs.EventLog
	}{{"raw/in-process", l}, {"raw/loopback", remote}} {
		b.Run(tc.name, func(b *testing.B) {
			n, bytes := 0, 0
			for b.Loop() {
				next := uint64(1)
				require.NoError(b, tc.log.ReadRawUntil(ctx, 1, head, nil, 5000, func(msgs []natsjs.RawMsg) error {
					for _, m := range msgs {
						if m.Seq != next {
							return fmt.Errorf("sequence %d after %d", m.Seq, next-1)
						}
						next++
						bytes += len(m.Data)
					}
					return nil
				}))
				require.Equal(b, head+1, next)
				n += int(head)
			}
			b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "events/s")
			b.ReportMetric(float64(bytes)/float64(n), "body-B/event")
		})
	}
	// The ordered consumer's message iterator with Metadata per message (as the export reads), for comparison.
	b.Run("raw/iterator-metadata", func(b *testing.B) {
		n := 0
		for b.Loop() {
			cons, err := l.JetStream().OrderedConsumer(ctx, events.StreamName, jetstream.OrderedConsumerConfig{})
			require.NoError(b, err)
			it, err := cons.Messages(jetstream.PullMaxMessages(20000))
			require.NoError(b, err)
			for {
				m, err := it.Next()
				require.NoError(b, err)
				n++
				md, err := m.Metadata()
				require.NoError(b, err)
				if md.Sequence.Stream >= head {
					break
				}
			}
			it.Stop()
		}
		b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "events/s")
	})
	// Raw with the pins projection's four filters given to the server: it matches a multi-filter consumer against
	// every distinct subject of each block it reads, which is why readers give whole-space filters to no
	// consumer and filter themselves (compare decoded/pins-filters).
	// (Only the first 20,000 events: the whole log takes minutes.)
	b.Run("raw/server-multi-filter", func(b *testing.B) {
		n := 0
		for b.Loop() {
			read := 0
			cons, err := l.JetStream().OrderedConsumer(ctx, events.StreamName, jetstream.OrderedConsumerConfig{FilterSubjects: pinsFilters})
			require.NoError(b, err)
			it, err := cons.Messages(jetstream.PullMaxMessages(20000))
			require.NoError(b, err)
			for {
				m, err := it.Next()
				require.NoError(b, err)
				n++
				read++
				md, err := m.Metadata()
				require.NoError(b, err)
				if md.NumPending == 0 || read == 20000 {
					break
				}
			}
			it.Stop()
		}
		b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "events/s")
	})
	// Decoded, in order, in batches: what rebuilds, exports and audit scans read.
	for _, tc := range []struct {
		name    string
		log     *natsjs.EventLog
		filters []string
	}{{"decoded/in-process", l, nil}, {"decoded/loopback", remote, nil}, {"decoded/pins-filters", l, pinsFilters}} {
		b.Run(tc.name, func(b *testing.B) {
			n := 0
			for b.Loop() {
				require.NoError(b, tc.log.ReadUntil(ctx, 1, head, tc.filters, 5000, func(recs []events.Record) error {
					n += len(recs)
					return nil
				}))
			}
			b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "events/s")
		})
	}
}

// pinsFilters are the pins projection's subjects.
var pinsFilters = []string{events.AllPins, events.AllPlace, events.AllNodes, events.AllSched}

func withSubject(m domain.Message, subject string) domain.Message {
	m.Subject = subject
	return m
}

const benchCID = "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy"

// placedMsg and observedMsg are node's placement of pin id and the worker's pinned observation of it, on the
// pin's placement subject, appended without an expected-sequence check.
func placedMsg(tb testing.TB, node, id, cid string) domain.Message {
	m := withSubject(pinMsg(tb, id, 0, events.PinPlaced{OrgID: org, RequestID: id, NodeID: node, CID: cid, Term: 1}), events.PlaceSubject(node, org, id))
	m.NoExpect = true
	return m
}

func observedMsg(tb testing.TB, node, id, cid string) domain.Message {
	m := withSubject(pinMsg(tb, id, 0, events.PinStatusObserved{OrgID: org, RequestID: id, NodeID: node, CID: cid, Status: "pinned", PlacedSeq: 1}), events.PlaceSubject(node, org, id))
	m.NoExpect = true
	return m
}

// appendPinHistories appends the histories of pins pins in bulk, three events each as a node's log holds them:
// request(i, id) for the i-th pin, its placement on node, and its pinned observation.
func appendPinHistories(tb testing.TB, l *natsjs.EventLog, pins int, node string, request func(i int, id string) events.PinRequested) {
	msgs := make([]domain.Message, 0, 3*2000)
	for lo := 0; lo < pins; lo += 2000 {
		msgs = msgs[:0]
		for i := lo; i < min(lo+2000, pins); i++ {
			id := uuid.Must(uuid.NewV7()).String()
			msgs = append(msgs, pinMsg(tb, id, 0, request(i, id)), placedMsg(tb, node, id, benchCID), observedMsg(tb, node, id, benchCID))
		}
		_, err := l.AppendBulk(context.Background(), msgs)
		require.NoError(tb, err)
	}
}
