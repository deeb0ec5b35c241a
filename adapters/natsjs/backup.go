package natsjs

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/anchorage-pin/anchorage/events"
	"github.com/klauspost/compress/gzip"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// The event-log export format (docs/backup.md): a gzip-compressed stream of newline-terminated JSON lines.
//
//	line 1      header:  {"format":"anchorage-events","version":1,"stream":"ANCHORAGE","first_seq":1,"last_seq":N,
//	                      "messages":N,"exported_at":"…","config":{…the stream's settings…}}
//	lines 2..   one per message, in sequence order:
//	                     {"seq":1,"subject":"orgs.…","time":"…RFC 3339 ns…","headers":{"Ev-Type":["org.created.v1"],…},
//	                      "data":{…the body, verbatim…}}     ("data_b64":"…" instead when the body is not compact JSON)
//	last line   trailer: {"end":"anchorage-events","messages":N,"last_seq":N,"sha256":"…"}
//
// The trailer's sha256 covers the exact bytes of every line before it (header and messages, newlines included),
// so a truncated, edited or corrupted file is detected; gzip's own CRC catches damage to the compressed bytes.
const (
	ExportFormat  = "anchorage-events"
	ExportVersion = 1
)

// ErrStreamNotEmpty is returned by Import when the target stream already holds messages.
var ErrStreamNotEmpty = errors.New("the event stream is not empty")

const (
	exportMaxLine       = 16 << 20 // a 4 MiB body in base64 plus headers fits comfortably
	importWindow        = 1024     // publishes in flight during an import
	importSyncEvery     = 8192     // group-commit fsync this often during an import (follows the filestore's blocks)
	backupProgressEvery = 1000
	exportPullBuffer    = 16 << 20 // bytes the export's ordered consumer buffers
)

// ExportHeader is the first line of an export.
type ExportHeader struct {
	Format     string    `json:"format"`
	Version    int       `json:"version"`
	Stream     string    `json:"stream"`
	FirstSeq   uint64    `json:"first_seq"`
	LastSeq    uint64    `json:"last_seq"`
	Messages   uint64    `json:"messages"`
	ExportedAt time.Time `json:"exported_at"`
	// Config is the source stream's settings, for the record; Import uses the target stream's own.
	Config ExportStreamConfig `json:"config"`
}

// ExportStreamConfig is what an export records of the stream's configuration.
type ExportStreamConfig struct {
	Subjects           []string          `json:"subjects"`
	Retention          string            `json:"retention"`
	Discard            string            `json:"discard"`
	Storage            string            `json:"storage"`
	Replicas           int               `json:"replicas"`
	MaxMsgs            int64             `json:"max_msgs"`
	MaxBytes           int64             `json:"max_bytes"`
	MaxAge             string            `json:"max_age"`
	MaxMsgsPerSubject  int64             `json:"max_msgs_per_subject"`
	DenyDelete         bool              `json:"deny_delete"`
	DenyPurge          bool              `json:"deny_purge"`
	AllowDirect        bool              `json:"allow_direct"`
	AllowAtomicPublish bool              `json:"allow_atomic_publish"`
	Duplicates         string            `json:"duplicates"`
	Metadata           map[string]string `json:"metadata,omitempty"`
}

// exportMsg is a message line.
type exportMsg struct {
	Seq     uint64              `json:"seq"`
	Subject string              `json:"subject"`
	Time    time.Time           `json:"time"`
	Headers map[string][]string `json:"headers,omitempty"`
	Data    json.RawMessage     `json:"data,omitempty"`
	DataB64 []byte              `json:"data_b64,omitempty"`
}

// exportTrailer is the last line.
type exportTrailer struct {
	End      string `json:"end"`
	Messages uint64 `json:"messages"`
	LastSeq  uint64 `json:"last_seq"`
	SHA256   string `json:"sha256"`
}

// exportLine decodes any line after the header: a message, or the trailer when End is set.
type exportLine struct {
	exportMsg
	End      string `json:"end"`
	Messages uint64 `json:"messages"`
	LastSeq  uint64 `json:"last_seq"`
	SHA256   string `json:"sha256"`
}

// ExportStats describes a finished export.
type ExportStats struct {
	Messages          uint64
	FirstSeq, LastSeq uint64
	// Bytes is the size of the compressed output; RawBytes the size of the JSON lines before compression.
	Bytes, RawBytes uint64
	// SHA256 is the content checksum recorded in the trailer (hex).
	SHA256   string
	Duration time.Duration
}

// PerSecond is the export's throughput in messages per second.
func (s ExportStats) PerSecond() float64 { return eventsPerSecond(s.Messages, s.Duration) }

// ImportStats describes an import, finished or not: Messages is how many the stream stored (sequences
// 1..Messages).
type ImportStats struct {
	Messages uint64
	LastSeq  uint64
	// Bytes is how much compressed input was read.
	Bytes uint64
	// SHA256 is the verified content checksum (hex), set once the trailer matched.
	SHA256 string
	// Dropped counts the headers not replayed (Nats-Expected-* and other server directives).
	Dropped  uint64
	Duration time.Duration
	Header   ExportHeader
}

// PerSecond is the import's throughput in messages per second.
func (s ImportStats) PerSecond() float64 { return eventsPerSecond(s.Messages, s.Duration) }

func eventsPerSecond(n uint64, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(n) / d.Seconds()
}

// Export writes every message of the event stream, from its first sequence to the last one it holds when the
// export starts, to w in the export format (see ExportFormat). It reads with an ordered consumer (ephemeral,
// server-side nothing else changes), holds a bounded amount in memory whatever the stream's size, and calls
// progress (if not nil) now and then with the messages written so far and the total. Messages appended during
// the export are not included. On error, what was written to w is not a usable export.
func (l *EventLog) Export(ctx context.Context, w io.Writer, progress func(done, total uint64)) (ExportStats, error) {
	start := time.Now()
	info, err := l.stream.Info(ctx)
	if err != nil {
		return ExportStats{}, fmt.Errorf("natsjs: export: stream info: %w", err)
	}
	st := info.State
	hdr := ExportHeader{
		Format: ExportFormat, Version: ExportVersion, Stream: info.Config.Name,
		FirstSeq: st.FirstSeq, LastSeq: st.LastSeq, Messages: st.Msgs,
		ExportedAt: start.UTC(), Config: exportConfig(info.Config),
	}
	if st.Msgs == 0 {
		hdr.FirstSeq = 0
	}
	if progress == nil {
		progress = func(uint64, uint64) {}
	}

	cw := &exportCountWriter{w: w}
	zw, err := gzip.NewWriterLevel(cw, gzip.BestSpeed)
	if err != nil {
		return ExportStats{}, err
	}
	// The lines are compressed and written on a goroutine of their own (exportMessages formats them on another).
	bw := newAsyncWriter(zw, 256<<10, 4)
	defer bw.Close()
	lw := &exportLineWriter{w: bw, h: sha256.New()}
	enc := json.NewEncoder(lw)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(hdr); err != nil {
		return ExportStats{}, fmt.Errorf("natsjs: export: %w", err)
	}

	stats := ExportStats{FirstSeq: hdr.FirstSeq, LastSeq: hdr.LastSeq}
	if st.Msgs > 0 {
		if err := l.exportMessages(ctx, st, lw, &stats, progress); err != nil {
			return stats, err
		}
	}
	if stats.Messages != st.Msgs {
		return stats, fmt.Errorf("natsjs: export: the stream held %d messages up to sequence %d but %d were read; was it changed during the export?", st.Msgs, st.LastSeq, stats.Messages)
	}
	stats.SHA256 = hex.EncodeToString(lw.h.Sum(nil))
	stats.RawBytes = lw.n
	// The trailer is not part of its own checksum.
	lw.h = nil
	if err := enc.Encode(exportTrailer{End: ExportFormat, Messages: stats.Messages, LastSeq: hdr.LastSeq, SHA256: stats.SHA256}); err != nil {
		return stats, fmt.Errorf("natsjs: export: %w", err)
	}
	if err := bw.Close(); err != nil {
		return stats, fmt.Errorf("natsjs: export: write: %w", err)
	}
	if err := zw.Close(); err != nil {
		return stats, fmt.Errorf("natsjs: export: write: %w", err)
	}
	stats.Bytes = cw.n
	stats.Duration = time.Since(start)
	progress(stats.Messages, st.Msgs)
	return stats, nil
}

func (l *EventLog) exportMessages(ctx context.Context, st jetstream.StreamState, w io.Writer, stats *ExportStats, progress func(done, total uint64)) error {
	cons, err := l.orderedFrom(ctx, st.FirstSeq, nil)
	if err != nil {
		return fmt.Errorf("natsjs: export: %w", err)
	}
	it, err := cons.Messages(jetstream.PullMaxBytes(exportPullBuffer))
	if err != nil {
		return fmt.Errorf("natsjs: export: messages: %w", err)
	}
	defer it.Stop()
	stop := context.AfterFunc(ctx, it.Stop)
	defer stop()

	// This goroutine reads; another formats the lines and writes them (to w, which hashes them and hands them
	// to the compressing goroutine), in batches, in order.
	batches := make(chan []exportItem, 4)
	free := make(chan []exportItem, 4)
	formatted := make(chan error, 1)
	var failed atomic.Bool // the formatter stopped: reading on is pointless
	go func() {
		var line []byte
		var ferr error
		for b := range batches {
			for _, m := range b {
				if ferr != nil {
					break
				}
				if line, ferr = appendMsgLine(line[:0], m.seq, m.subject, m.ts, m.h, m.data); ferr == nil {
					if _, err := w.Write(line); err != nil {
						ferr = fmt.Errorf("natsjs: export: write: %w", err)
					}
				}
				if ferr != nil {
					failed.Store(true)
				}
			}
			clear(b) // drop the bodies
			select {
			case free <- b[:0]:
			default: // enough spare batches already
			}
		}
		formatted <- ferr
	}()
	batch := make([]exportItem, 0, exportBatch)
	send := func() {
		batches <- batch
		select {
		case batch = <-free:
		default:
			batch = make([]exportItem, 0, exportBatch)
		}
	}
	rerr := func() error {
		prev := st.FirstSeq - 1
		for {
			m, err := it.Next()
			if err != nil {
				if ctx.Err() != nil {
					return fmt.Errorf("natsjs: export: %w", ctx.Err())
				}
				return fmt.Errorf("natsjs: export: read after sequence %d: %w", prev, err)
			}
			md, err := m.Metadata()
			if err != nil {
				return fmt.Errorf("natsjs: export: message metadata: %w", err)
			}
			seq := md.Sequence.Stream
			if seq > st.LastSeq {
				return nil // appended after the export started
			}
			if seq <= prev {
				return fmt.Errorf("natsjs: export: sequence %d delivered after %d", seq, prev)
			}
			prev = seq
			batch = append(batch, exportItem{seq: seq, subject: m.Subject(), ts: md.Timestamp, h: m.Headers(), data: m.Data()})
			if len(batch) == cap(batch) {
				send()
				if failed.Load() {
					return nil // the formatter's error is the export's
				}
			}
			stats.Messages++
			if stats.Messages%backupProgressEvery == 0 {
				progress(stats.Messages, st.Msgs)
			}
			// NumPending 0: nothing after this one now (only possible before LastSeq if the tail was deleted).
			if seq == st.LastSeq || md.NumPending == 0 {
				return nil
			}
		}
	}()
	if len(batch) > 0 {
		send()
	}
	close(batches)
	ferr := <-formatted
	if rerr != nil {
		return rerr
	}
	return ferr
}

// exportItem is one message on its way from the export's reader to its formatter.
type exportItem struct {
	seq     uint64
	subject string
	ts      time.Time
	h       nats.Header
	data    []byte
}

// exportBatch is how many messages the export's reader hands its formatter at a time.
const exportBatch = 256

// appendMsgLine appends the export line of one message to b: {"seq":…,"subject":…,"time":…,"headers":{…},"data":…}
// and a newline. Subjects and headers must be valid UTF-8 (JSON cannot carry anything else verbatim); anchorage
// writes ASCII only. The body is embedded verbatim as "data" when it is one JSON value a decoder gives back byte
// for byte, else in base64 as "data_b64".
func appendMsgLine(b []byte, seq uint64, subject string, ts time.Time, h nats.Header, data []byte) ([]byte, error) {
	if !utf8.ValidString(subject) {
		return b, fmt.Errorf("natsjs: export: sequence %d: subject is not valid UTF-8", seq)
	}
	b = append(b, `{"seq":`...)
	b = strconv.AppendUint(b, seq, 10)
	b = append(b, `,"subject":`...)
	b = exportAppendJSONString(b, subject)
	b = append(b, `,"time":"`...)
	b = ts.UTC().AppendFormat(b, time.RFC3339Nano)
	b = append(b, '"')
	if len(h) > 0 {
		keys := make([]string, 0, len(h))
		for k := range h {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		b = append(b, `,"headers":{`...)
		for i, k := range keys {
			if !utf8.ValidString(k) {
				return b, fmt.Errorf("natsjs: export: sequence %d: header name %q is not valid UTF-8", seq, k)
			}
			if i > 0 {
				b = append(b, ',')
			}
			b = exportAppendJSONString(b, k)
			b = append(b, ":["...)
			for j, v := range h[k] {
				if !utf8.ValidString(v) {
					return b, fmt.Errorf("natsjs: export: sequence %d: header %s is not valid UTF-8", seq, k)
				}
				if j > 0 {
					b = append(b, ',')
				}
				b = exportAppendJSONString(b, v)
			}
			b = append(b, ']')
		}
		b = append(b, '}')
	}
	switch {
	case len(data) == 0:
	case embeddableJSON(data):
		b = append(b, `,"data":`...)
		b = append(b, data...)
	default:
		b = append(b, `,"data_b64":"`...)
		b = base64.StdEncoding.AppendEncode(b, data)
		b = append(b, '"')
	}
	return append(b, '}', '\n'), nil
}

// embeddableJSON reports whether b can be embedded in a line as a JSON value that decodes back to exactly b:
// valid UTF-8 and JSON, no surrounding whitespace (a decoder drops it) and no line break (it would end the line).
func embeddableJSON(b []byte) bool {
	switch b[0] {
	case ' ', '\t', '\r', '\n':
		return false
	}
	switch b[len(b)-1] {
	case ' ', '\t', '\r', '\n':
		return false
	}
	return bytes.IndexByte(b, '\n') < 0 && bytes.IndexByte(b, '\r') < 0 && utf8.Valid(b) && json.Valid(b)
}

// exportAppendJSONString appends s as a JSON string: verbatim when it is printable ASCII without quote or backslash
// (every subject and header anchorage writes), else as encoding/json escapes it.
func exportAppendJSONString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' {
			q, _ := json.Marshal(s)
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

func exportConfig(c jetstream.StreamConfig) ExportStreamConfig {
	return ExportStreamConfig{
		Subjects: c.Subjects, Retention: c.Retention.String(), Discard: c.Discard.String(), Storage: c.Storage.String(),
		Replicas: c.Replicas, MaxMsgs: c.MaxMsgs, MaxBytes: c.MaxBytes, MaxAge: c.MaxAge.String(),
		MaxMsgsPerSubject: c.MaxMsgsPerSubject, DenyDelete: c.DenyDelete, DenyPurge: c.DenyPurge,
		AllowDirect: c.AllowDirect, AllowAtomicPublish: c.AllowAtomicPublish, Duplicates: c.Duplicates.String(),
		Metadata: c.Metadata,
	}
}

// Import publishes every message of an export (see Export) into the event stream, which must be empty
// (ErrStreamNotEmpty otherwise): each with its subject, body and headers except the Nats-* ones other than
// Nats-Msg-Id (the Nats-Expected-* checks were made when the event was first written, and server directives must
// not act again), pipelined, and each with Nats-Expected-Last-Sequence set to its own sequence minus one, so every
// message lands at exactly the sequence it had, or the import fails there. Stream timestamps are the time of the
// import; the envelope's "at" keeps the event's time.
//
// Import checks the file as it reads it: the header's format and version, sequences 1, 2, 3… without a gap, then
// the trailer's count and checksum. It publishes as it reads, so when the input turns out to be truncated or
// corrupt the stream keeps what was published before the failure: the returned stats' Messages (sequences
// 1..Messages), which the error repeats. Run VerifyExport over the input first for an all-or-nothing import.
// progress (if not nil) is called now and then with the messages stored so far.
func (l *EventLog) Import(ctx context.Context, r io.Reader, progress func(done uint64)) (ImportStats, error) {
	start := time.Now()
	var stats ImportStats
	if progress == nil {
		progress = func(uint64) {}
	}
	info, err := l.stream.Info(ctx)
	if err != nil {
		return stats, fmt.Errorf("natsjs: import: stream info: %w", err)
	}
	if info.State.Msgs > 0 || info.State.LastSeq > 0 {
		return stats, fmt.Errorf("natsjs: import: %w: stream %s holds %d events (last sequence %d); an import reproduces sequences from 1, so it only restores into an empty stream: restore into a fresh data dir (a node that has started writes its own events, so import before starting it)",
			ErrStreamNotEmpty, info.Config.Name, info.State.Msgs, info.State.LastSeq)
	}

	p := &importPipe{l: l, progress: progress, stats: &stats, window: make([]importPending, 0, importWindow)}
	fail := func(err error) (ImportStats, error) {
		// Settle what is in flight (even when ctx ended), then report what the stream really holds.
		qctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		_ = p.drain(qctx, 0)
		stats.Duration = time.Since(start)
		last, lerr := l.LastSeq(qctx)
		switch {
		case lerr != nil:
			return stats, fmt.Errorf("natsjs: import: %w; sequences 1..%d of the backup were stored before the failure (the stream's state could not be read: %v): do not start a node on this store; discard it and import an intact backup into a fresh one",
				err, stats.Messages, lerr)
		case last == 0:
			return stats, fmt.Errorf("natsjs: import: %w; nothing was imported (the stream is still empty)", err)
		case last != stats.Messages:
			return stats, fmt.Errorf("natsjs: import: %w; the stream holds sequences 1..%d of the backup and then other messages up to sequence %d (something else wrote to it during the import): do not start a node on this store; discard it and import into a fresh one that nothing else writes to",
				err, stats.Messages, last)
		}
		return stats, fmt.Errorf("natsjs: import: %w; the stream now holds sequences 1..%d of the backup, an incomplete log: do not start a node on it; discard this store and import an intact backup into a fresh one",
			err, stats.Messages)
	}
	err = readExport(ctx, r, &stats, func(m *exportMsg) error { return p.publish(ctx, m) })
	if err != nil {
		return fail(err)
	}
	if err := p.drain(ctx, 0); err != nil {
		return fail(err)
	}
	if l.sync != nil {
		if err := l.sync.Wait(ctx); err != nil {
			return fail(err)
		}
	}
	if last, err := l.LastSeq(ctx); err != nil {
		return fail(err)
	} else if last != stats.Header.LastSeq {
		return fail(fmt.Errorf("after the import the stream's last sequence is %d, the backup's %d", last, stats.Header.LastSeq))
	}
	stats.LastSeq = stats.Header.LastSeq
	stats.Duration = time.Since(start)
	progress(stats.Messages)
	return stats, nil
}

type importPending struct {
	seq uint64
	f   jetstream.PubAckFuture
}

// importPipe keeps up to importWindow publishes in flight and checks their acks in order.
type importPipe struct {
	l        *EventLog
	progress func(uint64)
	stats    *ImportStats
	window   []importPending // FIFO; head at index 0
	failed   error
}

func (p *importPipe) publish(ctx context.Context, m *exportMsg) error {
	if len(p.window) >= importWindow {
		if err := p.drain(ctx, importWindow/2); err != nil {
			return err
		}
	}
	h := nats.Header{}
	for k, vs := range m.Headers {
		if strings.HasPrefix(k, "Nats-") && k != jetstream.MsgIDHeader {
			p.stats.Dropped++
			continue
		}
		h[k] = vs
	}
	h.Set(jetstream.ExpectedLastSeqHeader, strconv.FormatUint(m.Seq-1, 10))
	data := []byte(m.Data)
	if m.DataB64 != nil {
		data = m.DataB64
	}
	f, err := p.l.js.PublishMsgAsync(&nats.Msg{Subject: m.Subject, Header: h, Data: data}, jetstream.WithStallWait(bulkStallWait))
	if err != nil {
		return fmt.Errorf("publish sequence %d (%s): %w", m.Seq, m.Subject, err)
	}
	p.window = append(p.window, importPending{seq: m.Seq, f: f})
	return nil
}

// drain waits for acks until at most keep publishes are in flight.
func (p *importPipe) drain(ctx context.Context, keep int) error {
	n := 0
	for len(p.window)-n > keep {
		pd := p.window[n]
		n++
		select {
		case ack := <-pd.f.Ok():
			switch {
			case p.failed != nil:
				// Stored after a failure (only possible when something else wrote to the stream): not the
				// backup's message at its sequence, not counted; Import reports the stream's last sequence.
			case ack.Duplicate:
				p.failed = fmt.Errorf("sequence %d (%s) was taken for a duplicate of sequence %d (same Nats-Msg-Id %q)",
					pd.seq, pd.f.Msg().Subject, ack.Sequence, pd.f.Msg().Header.Get(jetstream.MsgIDHeader))
			case ack.Sequence != pd.seq:
				p.failed = fmt.Errorf("sequence %d (%s) was stored as %d", pd.seq, pd.f.Msg().Subject, ack.Sequence)
			default:
				p.stats.Messages++
				if p.stats.Messages%backupProgressEvery == 0 {
					p.progress(p.stats.Messages)
				}
				if p.l.sync != nil && p.stats.Messages%importSyncEvery == 1 {
					if err := p.l.sync.Wait(ctx); err != nil {
						p.failed = err
					}
				}
			}
		case err := <-pd.f.Err():
			if p.failed == nil {
				if errors.Is(err, nats.ErrNoResponders) {
					err = fmt.Errorf("%w: subject %s is not one of the stream's subjects", err, pd.f.Msg().Subject)
				}
				p.failed = fmt.Errorf("store sequence %d (%s): %w", pd.seq, pd.f.Msg().Subject, err)
			}
		case <-ctx.Done():
			p.window = p.window[n-1:]
			return ctx.Err()
		}
	}
	p.window = append(p.window[:0], p.window[n:]...)
	return p.failed
}

// ExportInfo is what VerifyExport found.
type ExportInfo struct {
	Header   ExportHeader
	Messages uint64
	// Bytes is the compressed size read.
	Bytes  uint64
	SHA256 string
}

// VerifyExport reads a whole export and checks it as Import would (format, version, sequences without gaps,
// count and checksum) without touching any stream.
func VerifyExport(ctx context.Context, r io.Reader) (ExportInfo, error) {
	var stats ImportStats
	err := readExport(ctx, r, &stats, func(*exportMsg) error {
		stats.Messages++
		return nil
	})
	info := ExportInfo{Header: stats.Header, Messages: stats.Messages, Bytes: stats.Bytes, SHA256: stats.SHA256}
	if err != nil {
		return info, fmt.Errorf("natsjs: verify export: %w", err)
	}
	return info, nil
}

// readExport decodes an export, calling fn for each message in order, and verifies it: stats.Header, Bytes and
// (once the trailer matched) SHA256 are set.
func readExport(ctx context.Context, r io.Reader, stats *ImportStats, fn func(*exportMsg) error) error {
	cr := &exportCountReader{r: r}
	defer func() { stats.Bytes = cr.n }()
	zr, err := gzip.NewReader(bufio.NewReaderSize(cr, 256<<10))
	if err != nil {
		return fmt.Errorf("not a gzip-compressed anchorage export: %w", err)
	}
	defer zr.Close()
	br := bufio.NewReaderSize(zr, 1<<20)
	h := sha256.New()
	lineNo := 0
	var long []byte
	// next returns the next newline-terminated line without its newline; io.EOF at a clean end. A last line
	// without its newline is truncation.
	next := func() ([]byte, error) {
		long = long[:0]
		for {
			b, err := br.ReadSlice('\n')
			switch {
			case err == nil:
				lineNo++
				if len(long) > 0 {
					long = append(long, b[:len(b)-1]...)
					return long, nil
				}
				return b[:len(b)-1], nil
			case errors.Is(err, bufio.ErrBufferFull):
				if len(long)+len(b) > exportMaxLine {
					return nil, fmt.Errorf("line %d is longer than %d bytes", lineNo+1, exportMaxLine)
				}
				long = append(long, b...)
			case errors.Is(err, io.EOF):
				if len(b)+len(long) > 0 {
					return nil, io.ErrUnexpectedEOF
				}
				return nil, io.EOF
			default:
				return nil, err
			}
		}
	}

	b, err := next()
	if errors.Is(err, io.EOF) {
		return errors.New("the file is empty")
	}
	if err != nil {
		return fmt.Errorf("read header: %w", err)
	}
	hdr := &stats.Header
	if err := json.Unmarshal(b, hdr); err != nil || hdr.Format == "" {
		return fmt.Errorf("line 1 is not an anchorage export header (expected format %q)", ExportFormat)
	}
	if hdr.Format != ExportFormat {
		return fmt.Errorf("format %q is not %q", hdr.Format, ExportFormat)
	}
	if hdr.Version != ExportVersion {
		return fmt.Errorf("export format version %d is not supported: this build reads version %d (use the anchorage release that wrote the file, or a newer one)", hdr.Version, ExportVersion)
	}
	if hdr.Stream != events.StreamName {
		return fmt.Errorf("the export is of stream %q, not %q", hdr.Stream, events.StreamName)
	}
	if hdr.Messages > 0 && hdr.FirstSeq != 1 {
		return fmt.Errorf("the export starts at sequence %d: an import reproduces sequences from 1, so it can only restore a stream that starts at 1", hdr.FirstSeq)
	}
	if hdr.Messages > 0 && hdr.LastSeq != hdr.Messages {
		return fmt.Errorf("the export's header says %d messages up to sequence %d: the source stream had gaps, which an import cannot reproduce", hdr.Messages, hdr.LastSeq)
	}
	exportHashLine(h, b)

	var line exportLine
	var prev uint64
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		b, err := next()
		if errors.Is(err, io.EOF) {
			return fmt.Errorf("the export is truncated: it ends after sequence %d of %d without its trailer", prev, hdr.LastSeq)
		}
		if err != nil {
			if errors.Is(err, io.ErrUnexpectedEOF) {
				return fmt.Errorf("the export is truncated: it ends in the middle of the line after sequence %d of %d", prev, hdr.LastSeq)
			}
			return fmt.Errorf("read after sequence %d (line %d): %w", prev, lineNo+1, err)
		}
		line = exportLine{}
		if !parseMsgLine(b, &line.exportMsg) {
			if err := json.Unmarshal(b, &line); err != nil {
				return fmt.Errorf("line %d (after sequence %d) is corrupt: %v", lineNo, prev, err)
			}
		}
		if line.End != "" {
			if line.End != ExportFormat {
				return fmt.Errorf("line %d is a trailer of format %q", lineNo, line.End)
			}
			sum := hex.EncodeToString(h.Sum(nil))
			switch {
			case line.Messages != prev || line.LastSeq != prev:
				return fmt.Errorf("the trailer says %d messages up to sequence %d but the file holds %d up to %d", line.Messages, line.LastSeq, prev, prev)
			case prev != hdr.LastSeq:
				return fmt.Errorf("the header says the export ends at sequence %d but it ends at %d", hdr.LastSeq, prev)
			case line.SHA256 != sum:
				return fmt.Errorf("checksum mismatch: the trailer says sha256 %s, the content is %s; the file was altered or corrupted", line.SHA256, sum)
			}
			if _, err := next(); !errors.Is(err, io.EOF) {
				if err == nil {
					return fmt.Errorf("line %d follows the trailer", lineNo)
				}
				return fmt.Errorf("after the trailer: %w", err)
			}
			// Reading to EOF made gzip check its CRC and length.
			stats.SHA256 = sum
			return nil
		}
		if line.Seq != prev+1 {
			if line.Seq == 0 {
				return fmt.Errorf("line %d (after sequence %d) is neither a message nor the trailer", lineNo, prev)
			}
			return fmt.Errorf("sequence %d is missing (line %d holds sequence %d): the export has a gap", prev+1, lineNo, line.Seq)
		}
		if line.Seq > hdr.LastSeq {
			return fmt.Errorf("sequence %d is beyond the header's last sequence %d", line.Seq, hdr.LastSeq)
		}
		if line.Subject == "" {
			return fmt.Errorf("sequence %d has no subject", line.Seq)
		}
		if len(line.Data) > 0 && line.DataB64 != nil {
			return fmt.Errorf("sequence %d has both data and data_b64", line.Seq)
		}
		exportHashLine(h, b)
		prev = line.Seq
		if err := fn(&line.exportMsg); err != nil {
			return err
		}
	}
}

// parseMsgLine decodes a message line written exactly as appendMsgLine writes it, several times faster than
// encoding/json; it returns false for anything else (the trailer, escaped strings, other field orders), which
// the caller then decodes with encoding/json. The body is validated as JSON, and copied: b is reused.
func parseMsgLine(b []byte, m *exportMsg) bool {
	p := exportLineParser{b: b}
	if !p.lit(`{"seq":`) {
		return false
	}
	seq, ok := p.uint()
	if !ok || !p.lit(`,"subject":`) {
		return false
	}
	subject, ok := p.str()
	if !ok || !p.lit(`,"time":`) {
		return false
	}
	ts, ok := p.str()
	if !ok {
		return false
	}
	t, err := time.Parse(time.RFC3339Nano, ts)
	if err != nil {
		return false
	}
	*m = exportMsg{Seq: seq, Subject: subject, Time: t}
	if p.lit(`,"headers":{`) {
		m.Headers = make(map[string][]string, 8)
		for first := true; ; first = false {
			if p.lit("}") {
				break
			}
			if !first && !p.lit(",") {
				return false
			}
			k, ok := p.str()
			if !ok || !p.lit(":[") {
				return false
			}
			var vs []string
			for firstV := true; ; firstV = false {
				if p.lit("]") {
					break
				}
				if !firstV && !p.lit(",") {
					return false
				}
				v, ok := p.str()
				if !ok {
					return false
				}
				vs = append(vs, v)
			}
			if _, dup := m.Headers[k]; dup {
				return false
			}
			m.Headers[k] = vs
		}
	}
	switch {
	case p.lit(`,"data":`):
		if len(b) < p.i+2 || b[len(b)-1] != '}' {
			return false
		}
		data := b[p.i : len(b)-1]
		if !json.Valid(data) {
			return false
		}
		m.Data = bytes.Clone(data)
		return true
	case p.lit(`,"data_b64":`):
		enc, ok := p.str()
		if !ok || !p.lit("}") || p.i != len(b) {
			return false
		}
		if m.DataB64, err = base64.StdEncoding.DecodeString(enc); err != nil {
			return false
		}
		return true
	}
	return p.lit("}") && p.i == len(b)
}

type exportLineParser struct {
	b []byte
	i int
}

func (p *exportLineParser) lit(s string) bool {
	if len(p.b)-p.i < len(s) || string(p.b[p.i:p.i+len(s)]) != s {
		return false
	}
	p.i += len(s)
	return true
}

func (p *exportLineParser) uint() (uint64, bool) {
	j := p.i
	for j < len(p.b) && p.b[j] >= '0' && p.b[j] <= '9' {
		j++
	}
	n, err := strconv.ParseUint(string(p.b[p.i:j]), 10, 64)
	if err != nil {
		return 0, false
	}
	p.i = j
	return n, true
}

// str reads a JSON string without escapes (false for one with escapes or control characters).
func (p *exportLineParser) str() (string, bool) {
	if p.i >= len(p.b) || p.b[p.i] != '"' {
		return "", false
	}
	for j := p.i + 1; j < len(p.b); j++ {
		switch c := p.b[j]; {
		case c == '"':
			s := string(p.b[p.i+1 : j])
			p.i = j + 1
			return s, true
		case c == '\\' || c < 0x20:
			return "", false
		}
	}
	return "", false
}

func exportHashLine(h hash.Hash, b []byte) {
	h.Write(b)
	h.Write([]byte{'\n'})
}

// exportLineWriter passes writes through, counting them and adding them to h while h is not nil.
type exportLineWriter struct {
	w io.Writer
	h hash.Hash
	n uint64
}

func (l *exportLineWriter) Write(p []byte) (int, error) {
	if l.h != nil {
		l.h.Write(p)
		l.n += uint64(len(p))
	}
	return l.w.Write(p)
}

type exportCountWriter struct {
	w io.Writer
	n uint64
}

func (c *exportCountWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += uint64(n)
	return n, err
}

type exportCountReader struct {
	r io.Reader
	n uint64
}

func (c *exportCountReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += uint64(n)
	return n, err
}
