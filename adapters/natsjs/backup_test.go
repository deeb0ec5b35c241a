package natsjs_test

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/anchorage-pin/anchorage/adapters/natsjs"
	"github.com/anchorage-pin/anchorage/adapters/natsjs/natstest"
	"github.com/anchorage-pin/anchorage/domain"
	"github.com/anchorage-pin/anchorage/events"
	"github.com/google/uuid"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
)

func envelope(t testing.TB, ev events.Event) events.Envelope {
	t.Helper()
	env, err := events.New(uuid.NewString(), time.Now(), "test:backup", "corr-"+uuid.NewString()[:8], ev)
	require.NoError(t, err)
	return env
}

// seedMixed fills l with about n events of several types and subject spaces, written every way the log writes:
// single appends with expected sequences, pipelined bulk appends, placements checked against a wildcard, atomic
// batches, and two raw messages (a non-JSON body and an empty one) to cover bodies anchorage never writes.
func seedMixed(t testing.TB, l *natsjs.EventLog, n int) {
	t.Helper()
	ctx := context.Background()
	orgs := []string{domain.OrgIDForSlug("acme"), domain.OrgIDForSlug("globex"), domain.OrgIDForSlug("initech")}
	for i, o := range orgs {
		_, err := l.Append(ctx, domain.Message{Subject: events.OrgSubject(o), Envelope: envelope(t, events.OrgCreated{OrgID: o, Slug: fmt.Sprint("org", i), Name: "Org <&> \"" + strconv.Itoa(i) + "\""})})
		require.NoError(t, err)
	}
	nodes := []string{"node-a", "node-b"}
	for _, nd := range nodes {
		_, err := l.Append(ctx, domain.Message{Subject: events.NodeSubject(nd), Envelope: envelope(t, events.NodeRegistered{NodeID: nd, PeerID: "12D3Koo" + nd, Addrs: []string{"/ip4/127.0.0.1/tcp/4001/p2p/12D3Koo" + nd}})})
		require.NoError(t, err)
	}
	var reqs []string
	for len(reqs) < n/2 {
		var msgs []domain.Message
		for range 500 {
			id := uuid.NewString()
			o := orgs[len(reqs)%len(orgs)]
			reqs = append(reqs, id)
			msgs = append(msgs, domain.Message{Subject: events.PinSubject(o, id), Envelope: envelope(t, events.PinRequested{
				OrgID: o, RequestID: id, CID: "bafkqaaa", Name: "p<" + id[:4] + ">&", Meta: map[string]string{"k": "v\u00e9\u2028"}, Created: time.Now().UTC(),
			})})
		}
		seqs, err := l.AppendBulk(ctx, msgs)
		require.NoError(t, err)
		require.NotContains(t, seqs, uint64(0))
	}
	// Placements, each checked against every node's placement of its pin.
	var msgs []domain.Message
	for i, id := range reqs[:n/4] {
		o := orgs[i%len(orgs)]
		msgs = append(msgs, domain.Message{
			Subject: events.PlaceSubject(nodes[i%2], o, id), ExpectSubject: events.PlaceAnyNode(o, id),
			Envelope: envelope(t, events.PinPlaced{OrgID: o, RequestID: id, NodeID: nodes[i%2], CID: "bafkqaaa", Term: 1}),
		})
	}
	_, err := l.AppendBulk(ctx, msgs)
	require.NoError(t, err)
	// Removals with the subject's last sequence.
	for i, id := range reqs[n/4 : n/4+n/8] {
		o := orgs[(n/4+i)%len(orgs)]
		_, last, err := l.Load(ctx, events.PinSubject(o, id))
		require.NoError(t, err)
		_, err = l.Append(ctx, domain.Message{Subject: events.PinSubject(o, id), Expect: last, Envelope: envelope(t, events.PinRemoved{OrgID: o, RequestID: id})})
		require.NoError(t, err)
	}
	// A few atomic batches (replacements).
	for i := range 5 {
		o, old, nu := orgs[0], reqs[len(reqs)-1-i], uuid.NewString()
		_, last, err := l.Load(ctx, events.PinSubject(o, old))
		require.NoError(t, err)
		_, err = l.Append(ctx,
			domain.Message{Subject: events.PinSubject(o, old), Expect: last, Envelope: envelope(t, events.PinReplaced{OrgID: o, RequestID: old, ReplacedBy: nu})},
			domain.Message{Subject: events.PinSubject(o, nu), Envelope: envelope(t, events.PinRequested{OrgID: o, RequestID: nu, CID: "bafkqaaa", Replaces: old, Created: time.Now().UTC()})},
		)
		require.NoError(t, err)
	}
	_, err = l.Append(ctx, domain.Message{Subject: events.SchedTerm, Envelope: envelope(t, events.SchedTermStarted{Term: 1, SchedulerID: "s1"})})
	require.NoError(t, err)
	// Bodies anchorage never writes: not JSON, not compact JSON, and empty.
	for _, body := range [][]byte{{0xff, 0x00, 'x'}, []byte(`{"a": 1}`), nil} {
		_, err := l.JetStream().PublishMsg(ctx, &nats.Msg{Subject: events.PinSubject(orgs[1], uuid.NewString()), Header: nats.Header{"X-Raw": {"1"}}, Data: body})
		require.NoError(t, err)
	}
}

func export(t testing.TB, l *natsjs.EventLog) ([]byte, natsjs.ExportStats) {
	t.Helper()
	var buf bytes.Buffer
	st, err := l.Export(context.Background(), &buf, nil)
	require.NoError(t, err)
	return buf.Bytes(), st
}

func freshLog(t testing.TB) *natsjs.EventLog {
	t.Helper()
	_, l := natstest.Log(t)
	return l
}

func lastSeq(t testing.TB, l *natsjs.EventLog) uint64 {
	t.Helper()
	n, err := l.LastSeq(context.Background())
	require.NoError(t, err)
	return n
}

// kept is what an import replays of a message's headers.
func kept(h nats.Header) nats.Header {
	out := nats.Header{}
	for k, v := range h {
		if !strings.HasPrefix(k, "Nats-") || k == jetstream.MsgIDHeader {
			out[k] = v
		}
	}
	return out
}

func TestExportImportRoundTrip(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	src := freshLog(t)
	seedMixed(t, src, 3000)
	n := lastSeq(t, src)
	require.Greater(t, n, uint64(2500))

	var dones []uint64
	var buf bytes.Buffer
	st, err := src.Export(ctx, &buf, func(done, total uint64) {
		require.Equal(t, n, total)
		dones = append(dones, done)
	})
	require.NoError(t, err)
	require.Equal(t, n, st.Messages)
	require.Equal(t, uint64(1), st.FirstSeq)
	require.Equal(t, n, st.LastSeq)
	require.Equal(t, uint64(buf.Len()), st.Bytes)
	require.Len(t, st.SHA256, 64)
	require.Equal(t, n, dones[len(dones)-1])
	t.Logf("export: %d events, %d bytes compressed (%d raw), %.0f events/s", st.Messages, st.Bytes, st.RawBytes, st.PerSecond())

	// The file is self-describing: the header, then JSON lines with bodies embedded as JSON.
	lines := gunzipLines(t, buf.Bytes())
	require.Len(t, lines, int(n)+2)
	var hdr natsjs.ExportHeader
	require.NoError(t, json.Unmarshal([]byte(lines[0]), &hdr))
	require.Equal(t, natsjs.ExportFormat, hdr.Format)
	require.Equal(t, events.StreamName, hdr.Stream)
	require.Equal(t, n, hdr.Messages)
	require.True(t, hdr.Config.DenyDelete)
	require.Equal(t, events.StreamSubjects, hdr.Config.Subjects)
	require.Contains(t, lines[1], `"data":{"id":`)
	require.Contains(t, lines[1], `"Ev-Type":["org.created.v1"]`)
	require.Contains(t, lines[len(lines)-1], `"end":"anchorage-events"`)

	info, err := natsjs.VerifyExport(ctx, bytes.NewReader(buf.Bytes()))
	require.NoError(t, err)
	require.Equal(t, n, info.Messages)
	require.Equal(t, st.SHA256, info.SHA256)

	// The export changed nothing.
	require.Equal(t, n, lastSeq(t, src))

	dst := freshLog(t)
	var imported uint64
	ist, err := dst.Import(ctx, bytes.NewReader(buf.Bytes()), func(done uint64) { imported = done })
	require.NoError(t, err)
	require.Equal(t, n, ist.Messages)
	require.Equal(t, n, imported)
	require.Equal(t, st.SHA256, ist.SHA256)
	require.NotZero(t, ist.Dropped, "the expected-sequence headers are not replayed")
	t.Logf("import: %d events, %.0f events/s", ist.Messages, ist.PerSecond())

	// Every message is at the same sequence with the same subject, body and kept headers.
	srcS, err := src.JetStream().Stream(ctx, events.StreamName)
	require.NoError(t, err)
	dstS, err := dst.JetStream().Stream(ctx, events.StreamName)
	require.NoError(t, err)
	var expectHeaders, batchHeaders int
	for seq := uint64(1); seq <= n; seq++ {
		a, err := srcS.GetMsg(ctx, seq)
		require.NoError(t, err)
		b, err := dstS.GetMsg(ctx, seq)
		require.NoError(t, err)
		require.Equal(t, a.Subject, b.Subject, "seq %d", seq)
		require.True(t, bytes.Equal(a.Data, b.Data), "seq %d: %q != %q", seq, a.Data, b.Data)
		require.Equal(t, kept(a.Header), kept(b.Header), "seq %d", seq)
		require.Equal(t, strconv.FormatUint(seq-1, 10), b.Header.Get(jetstream.ExpectedLastSeqHeader))
		require.Empty(t, b.Header.Get(jetstream.ExpectedLastSubjSeqHeader))
		if a.Header.Get(jetstream.ExpectedLastSubjSeqHeader) != "" {
			expectHeaders++
		}
		if a.Header.Get("Nats-Batch-Id") != "" {
			batchHeaders++
		}
	}
	require.Greater(t, expectHeaders, 1000)
	t.Logf("%d messages carried expected-sequence headers, %d batch headers", expectHeaders, batchHeaders)

	// The restored log reads back as events, and an export of it carries the same content.
	recs, _, err := dst.Load(ctx, events.OrgSubject(domain.OrgIDForSlug("acme")))
	require.NoError(t, err)
	require.Len(t, recs, 1)
	again, _ := export(t, dst)
	relines := gunzipLines(t, again)
	require.Len(t, relines, len(lines))

	// A non-empty stream is refused and left alone.
	_, err = dst.Import(ctx, bytes.NewReader(buf.Bytes()), nil)
	require.ErrorIs(t, err, natsjs.ErrStreamNotEmpty)
	require.ErrorContains(t, err, "fresh data dir")
	require.Equal(t, n, lastSeq(t, dst))
}

func TestExportEmptyStream(t *testing.T) {
	t.Parallel()
	b, st := export(t, freshLog(t))
	require.Zero(t, st.Messages)
	dst := freshLog(t)
	ist, err := dst.Import(t.Context(), bytes.NewReader(b), nil)
	require.NoError(t, err)
	require.Zero(t, ist.Messages)
	require.Zero(t, lastSeq(t, dst))
}

// TestExportStopsAtItsStart: events appended while an export runs are not in it, and the file stays consistent.
func TestExportStopsAtItsStart(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	src := freshLog(t)
	seedMixed(t, src, 2000)
	n := lastSeq(t, src)
	pr, pw := io.Pipe()
	done := make(chan natsjs.ExportStats, 1)
	go func() {
		st, err := src.Export(ctx, pw, nil)
		pw.CloseWithError(err)
		done <- st
	}()
	// The export is blocked on the pipe after its first writes; append meanwhile.
	first := make([]byte, 1)
	_, err := io.ReadFull(pr, first)
	require.NoError(t, err)
	id := uuid.NewString()
	_, err = src.Append(ctx, pinMsg(t, id, 0, requested(id)))
	require.NoError(t, err)
	rest, err := io.ReadAll(pr)
	require.NoError(t, err)
	st := <-done
	require.Equal(t, n, st.Messages)
	info, err := natsjs.VerifyExport(ctx, bytes.NewReader(append(first, rest...)))
	require.NoError(t, err)
	require.Equal(t, n, info.Messages)
}

// TestImportRejectsDamagedExports: each kind of damage gives an error saying what is wrong and how much of the
// backup the stream holds; VerifyExport finds the same damage without a stream.
func TestImportRejectsDamagedExports(t *testing.T) {
	t.Parallel()
	src := freshLog(t)
	seedMixed(t, src, 2000)
	good, st := export(t, src)
	n := st.Messages
	lines := gunzipLines(t, good)

	cases := []struct {
		name   string
		file   []byte
		errs   []string
		stored uint64 // sequences 1..stored are in the stream afterwards
	}{
		{
			name: "wrong format version", stored: 0,
			file: gzipLines(t, append([]string{strings.Replace(lines[0], `"version":1`, `"version":2`, 1)}, lines[1:]...)),
			errs: []string{"format version 2 is not supported", "nothing was imported"},
		},
		{
			name: "not an export", stored: 0,
			file: gzipLines(t, []string{`{"hello":"world"}`}),
			errs: []string{"not an anchorage export header", "nothing was imported"},
		},
		{
			name: "not gzip", stored: 0, file: []byte(lines[0] + "\n"),
			errs: []string{"not a gzip-compressed anchorage export", "nothing was imported"},
		},
		{
			name: "truncated at a line", stored: 1000,
			file: gzipLines(t, lines[:1001]),
			errs: []string{"truncated", "ends after sequence 1000 of " + fmt.Sprint(n), "holds sequences 1..1000", "do not start a node"},
		},
		{
			name: "truncated compressed bytes", stored: ^uint64(0), // wherever the cut fell; the error says
			file: good[:len(good)/2],
			errs: []string{"truncated", "do not start a node"},
		},
		{
			name: "corrupt line", stored: 499,
			file: gzipLines(t, replaceLine(lines, 500, func(s string) string { return s[:len(s)/2] })),
			errs: []string{"line 501 (after sequence 499) is corrupt", "holds sequences 1..499"},
		},
		{
			name: "altered body", stored: n,
			file: gzipLines(t, replaceLine(lines, 700, func(s string) string { return strings.Replace(s, "bafkqaaa", "bafkqaab", 1) })),
			errs: []string{"checksum mismatch", fmt.Sprintf("holds sequences 1..%d", n)},
		},
		{
			name: "missing sequence", stored: 699,
			file: gzipLines(t, append(append([]string{}, lines[:700]...), lines[701:]...)),
			errs: []string{"sequence 700 is missing", "gap", "holds sequences 1..699"},
		},
		{
			name: "no trailer", stored: n,
			file: gzipLines(t, lines[:len(lines)-1]),
			errs: []string{"without its trailer", fmt.Sprintf("holds sequences 1..%d", n)},
		},
		{
			name: "data after the trailer", stored: n,
			file: gzipLines(t, append(append([]string{}, lines...), lines[1])),
			errs: []string{"follows the trailer"},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			_, verr := natsjs.VerifyExport(t.Context(), bytes.NewReader(c.file))
			require.Error(t, verr)

			dst := freshLog(t)
			ist, err := dst.Import(t.Context(), bytes.NewReader(c.file), nil)
			require.Error(t, err)
			for _, e := range c.errs {
				require.ErrorContains(t, err, e)
			}
			got := lastSeq(t, dst)
			require.Equal(t, got, ist.Messages, "the stats say what the stream holds")
			if c.stored != ^uint64(0) {
				require.Equal(t, c.stored, got)
			}
			if got > 0 {
				require.ErrorContains(t, err, fmt.Sprintf("holds sequences 1..%d", got))
			}
			t.Logf("%s: %v", c.name, err)
		})
	}
}

// TestExportAndImportStopWhenCanceled: both return the context's error; the import's stats and error say what
// the stream holds.
func TestExportAndImportStopWhenCanceled(t *testing.T) {
	t.Parallel()
	src := freshLog(t)
	seedMixed(t, src, 3000)
	good, _ := export(t, src)

	ctx, cancel := context.WithCancel(t.Context())
	_, err := src.Export(ctx, io.Discard, func(done, _ uint64) {
		if done >= 1000 {
			cancel()
		}
	})
	require.ErrorIs(t, err, context.Canceled)

	dst := freshLog(t)
	ctx, cancel = context.WithCancel(t.Context())
	st, err := dst.Import(ctx, bytes.NewReader(good), func(done uint64) {
		if done >= 1000 {
			cancel()
		}
	})
	require.ErrorIs(t, err, context.Canceled)
	got := lastSeq(t, dst)
	require.Equal(t, got, st.Messages)
	require.GreaterOrEqual(t, got, uint64(1000))
	require.ErrorContains(t, err, fmt.Sprintf("holds sequences 1..%d", got))
}

// TestImportFailsOnConcurrentWriter: a writer appending during an import makes it fail at once rather than
// shift sequences.
func TestImportFailsOnConcurrentWriter(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	src := freshLog(t)
	seedMixed(t, src, 2000)
	good, _ := export(t, src)

	dst := freshLog(t)
	pr, pw := io.Pipe()
	go func() {
		// Feed the first half, let the intruder write, then the rest.
		half := len(good) / 2
		_, _ = pw.Write(good[:half])
		time.Sleep(200 * time.Millisecond)
		id := uuid.NewString()
		_, _ = dst.Append(context.Background(), pinMsg(t, id, 0, requested(id)))
		_, _ = pw.Write(good[half:])
		_ = pw.Close()
	}()
	_, err := dst.Import(ctx, pr, nil)
	require.Error(t, err)
	require.ErrorContains(t, err, "wrong last sequence")
	require.ErrorContains(t, err, "something else wrote to it")
	t.Log(err)
}

// TestMirrorOverLeafnodeKeepsSequencesAndPromotes pins the facts docs/backup.md's DR section rests on
// (nats-server v2.15): a mirror in another JetStream domain, over a leafnode connection, keeps every sequence,
// timestamp, subject and body (and drops the Nats-Expected-* headers); anchorage refuses to open it while it is
// a mirror; once promoted (mirror config removed, subjects and atomic publish set) anchorage appends after the
// last mirrored sequence; and the promoted store opens in anchorage's embedded server.
func TestMirrorOverLeafnodeKeepsSequencesAndPromotes(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	leafPort := ln.Addr().(*net.TCPAddr).Port
	require.NoError(t, ln.Close())
	start := func(o *server.Options) *server.Server {
		o.JetStream, o.Host, o.Port, o.NoSigs = true, "127.0.0.1", -1, true
		s, err := server.NewServer(o)
		require.NoError(t, err)
		s.Start()
		require.True(t, s.ReadyForConnections(10*time.Second))
		t.Cleanup(s.Shutdown)
		return s
	}
	primary := start(&server.Options{ServerName: "primary", JetStreamDomain: "primary", StoreDir: t.TempDir(),
		LeafNode: server.LeafNodeOpts{Host: "127.0.0.1", Port: leafPort}})
	leafURL, err := url.Parse(fmt.Sprintf("nats-leaf://127.0.0.1:%d", leafPort))
	require.NoError(t, err)
	drDir := t.TempDir()
	dr := start(&server.Options{ServerName: "dr", JetStreamDomain: "dr", StoreDir: drDir,
		LeafNode: server.LeafNodeOpts{Remotes: []*server.RemoteLeafOpts{{URLs: []*url.URL{leafURL}}}}})

	pc, err := nats.Connect(primary.ClientURL())
	require.NoError(t, err)
	defer pc.Close()
	pl, err := natsjs.OpenRemoteLog(ctx, pc, natsjs.LogConfig{})
	require.NoError(t, err)
	seedMixed(t, pl, 400)
	n := lastSeq(t, pl)

	dc, err := nats.Connect(dr.ClientURL())
	require.NoError(t, err)
	defer dc.Close()
	djs, err := jetstream.New(dc)
	require.NoError(t, err)
	cfg := natsjs.StreamConfig(1)
	cfg.Subjects, cfg.AllowAtomicPublish = nil, false // a mirror has neither
	cfg.Mirror = &jetstream.StreamSource{Name: events.StreamName, External: &jetstream.ExternalStream{APIPrefix: "$JS.primary.API"}}
	mirror, err := djs.CreateStream(ctx, cfg)
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		i, err := mirror.Info(ctx)
		return err == nil && i.State.LastSeq == n
	}, 30*time.Second, 50*time.Millisecond)
	ps, err := pl.JetStream().Stream(ctx, events.StreamName)
	require.NoError(t, err)
	for seq := uint64(1); seq <= n; seq++ {
		a, err := ps.GetMsg(ctx, seq)
		require.NoError(t, err)
		b, err := mirror.GetMsg(ctx, seq)
		require.NoError(t, err)
		require.Equal(t, a.Subject, b.Subject)
		require.Equal(t, a.Time, b.Time)
		require.True(t, bytes.Equal(a.Data, b.Data))
		require.Equal(t, kept(a.Header), kept(b.Header))
		require.Empty(t, b.Header.Get(jetstream.ExpectedLastSubjSeqHeader))
	}

	// Not promoted: anchorage cannot open it (it would need to set the stream's subjects).
	_, err = natsjs.OpenRemoteLog(ctx, dc, natsjs.LogConfig{})
	require.ErrorContains(t, err, "mirrors can not contain subjects")

	// The primary is lost; promote the mirror.
	primary.Shutdown()
	info, err := mirror.Info(ctx)
	require.NoError(t, err)
	up := info.Config
	up.Mirror, up.Subjects, up.AllowAtomicPublish = nil, events.StreamSubjects, true
	_, err = djs.UpdateStream(ctx, up)
	require.NoError(t, err)
	dl, err := natsjs.OpenRemoteLog(ctx, dc, natsjs.LogConfig{})
	require.NoError(t, err)
	id, id2, id3 := uuid.NewString(), uuid.NewString(), uuid.NewString()
	seqs, err := dl.Append(ctx, pinMsg(t, id, 0, requested(id)))
	require.NoError(t, err)
	require.Equal(t, []uint64{n + 1}, seqs)
	seqs, err = dl.Append(ctx, pinMsg(t, id2, 0, requested(id2)), pinMsg(t, id3, 0, requested(id3)))
	require.NoError(t, err, "atomic batches work on the promoted stream")
	require.Equal(t, []uint64{n + 2, n + 3}, seqs)

	// anchorage's embedded server opens the promoted store (nats.storeDir = the standby's store_dir).
	dc.Close()
	dr.Shutdown()
	dr.WaitForShutdown()
	s := natstest.ServerIn(t, drDir, natsjs.SyncGroup)
	l, err := natsjs.OpenLog(ctx, s, natsjs.LogConfig{})
	require.NoError(t, err)
	defer l.Close()
	require.Equal(t, n+3, lastSeq(t, l))
}

func gunzipLines(t testing.TB, b []byte) []string {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(b))
	require.NoError(t, err)
	sc := bufio.NewScanner(zr)
	sc.Buffer(nil, 16<<20)
	var out []string
	for sc.Scan() {
		out = append(out, sc.Text())
	}
	require.NoError(t, sc.Err())
	return out
}

func gzipLines(t testing.TB, lines []string) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	for _, l := range lines {
		_, err := io.WriteString(zw, l+"\n")
		require.NoError(t, err)
	}
	require.NoError(t, zw.Close())
	return buf.Bytes()
}

// replaceLine returns a copy of lines with line i (0 = header) changed by f.
func replaceLine(lines []string, i int, f func(string) string) []string {
	out := append([]string{}, lines...)
	out[i] = f(out[i])
	return out
}

// BenchmarkExportImport measures export and import of a 100k-event log (pin requests, ~450 B each on the wire):
// go test ./adapters/natsjs -run '^$' -bench ExportImport -benchtime 3x
func BenchmarkExportImport(b *testing.B) {
	const n = 100_000
	src := freshLog(b)
	ctx := context.Background()
	for i := 0; i < n; i += 1000 {
		msgs := make([]domain.Message, 0, 1000)
		for range 1000 {
			id := uuid.NewString()
			msgs = append(msgs, pinMsg(b, id, 0, events.PinRequested{OrgID: org, RequestID: id, CID: "bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi", Name: "backup-bench", Created: time.Now().UTC()}))
		}
		_, err := src.AppendBulk(ctx, msgs)
		require.NoError(b, err)
	}
	var exportS, importS, size float64
	for b.Loop() {
		var buf bytes.Buffer
		st, err := src.Export(ctx, &buf, nil)
		require.NoError(b, err)
		require.Equal(b, uint64(n), st.Messages)
		dst := freshLog(b)
		ist, err := dst.Import(ctx, bytes.NewReader(buf.Bytes()), nil)
		require.NoError(b, err)
		require.Equal(b, uint64(n), ist.Messages)
		exportS += st.Duration.Seconds()
		importS += ist.Duration.Seconds()
		size = float64(st.Bytes)
	}
	b.ReportMetric(float64(n*b.N)/exportS, "export-events/s")
	b.ReportMetric(float64(n*b.N)/importS, "import-events/s")
	b.ReportMetric(size/n, "file-B/event")
}

// A message the format cannot carry (a header value that is not UTF-8, which only a foreign publisher could
// store) fails the export with its sequence named, however long the log goes on after it.
func TestExportFailsOnAnUnexportableMessage(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	_, l := natstest.Log(t)
	id := uuid.NewString()
	_, err := l.Append(ctx, pinMsg(t, id, 0, requested(id)))
	require.NoError(t, err)
	bad := nats.NewMsg(events.PinSubject(org, uuid.NewString()))
	bad.Header.Set("X-Foreign", "caf\xe9")
	bad.Data = []byte(`{}`)
	ack, err := l.JetStream().PublishMsg(ctx, bad)
	require.NoError(t, err)
	msgs := make([]domain.Message, 0, 3000)
	for range 3000 {
		id := uuid.NewString()
		msgs = append(msgs, pinMsg(t, id, 0, requested(id)))
	}
	_, err = l.AppendBulk(ctx, msgs)
	require.NoError(t, err)

	var buf bytes.Buffer
	_, err = l.Export(ctx, &buf, nil)
	require.Error(t, err)
	require.Contains(t, err.Error(), fmt.Sprintf("sequence %d", ack.Sequence))
	require.Contains(t, err.Error(), "not valid UTF-8")
}
