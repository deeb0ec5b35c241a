package projections

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"time"

	"github.com/anchorage-pin/anchorage/events"
	"github.com/google/uuid"
)

// WorkerSnapshots keeps a node worker's start-up state between runs. At start a worker folds the last event of
// each of its placement subjects into its pin set (a million placements took 15.7 s and 430 MiB of transient
// heap in the embedded server, BenchmarkLastPerSubject); with a snapshot it loads the pin set as it stood at a
// sequence of the log and folds only the node's events after it.
type WorkerSnapshots interface {
	// Load opens the node's snapshot; an error wrapping fs.ErrNotExist when there is none.
	Load(node string) (io.ReadCloser, error)
	// Save replaces the node's snapshot with what write writes, durably; a failed Save leaves the old one.
	Save(node string, write func(io.Writer) error) error
}

// SnapshotLog is what a worker's source offers for snapshots (the event log does).
type SnapshotLog interface {
	// LogID names the event log; a snapshot taken of another log (one created again, say) is not used.
	LogID(ctx context.Context) (string, error)
	// EventID returns the id of the event at seq.
	EventID(ctx context.Context, seq uint64) (string, error)
	// ReadUntilAtMost calls fn with batches of the events matching filters with from <= Seq <= until, in order,
	// or fails without reading when more than maxPending are pending from from on.
	ReadUntilAtMost(ctx context.Context, from, until uint64, filters []string, maxBatch int, maxPending uint64, fn func([]events.Record) error) error
}

// A snapshot file: the magic line, then uvarint-framed fields, then the SHA-256 of everything before it.
//
//	header:  node, log id (strings), seq (the log's last sequence the state covers) and the id of the event
//	         there (checked against the log before use: a log cut short and written again has another), entry
//	         count
//	entry:   flags (live, done, key is the ids form, has origins), key (32 bytes: org and request UUIDs; or
//	         a string), the placement's seq, then when live its CID and, if flagged, its origins
const snapMagic = "anchorage node-worker snapshot 1\n"

const (
	snapLive = 1 << iota
	snapDone
	snapIDsKey
	snapOrigins
)

// snapHeader describes a snapshot.
type snapHeader struct {
	node, logID string
	seq         uint64 // the state is the fold of the node's events up to this sequence of the log
	seqID       string // the id of the log's event at seq ("" when seq is 0)
	entries     uint64
}

// snapStats is what a start from a snapshot did, for the log line.
type snapStats struct {
	entries, tail int
	load          time.Duration
}

// writeSnapshot writes the worker's state as of h.seq (called with w.mu held, before deliveries change it).
func (w *Worker) writeSnapshot(out io.Writer, h snapHeader) error {
	sum := sha256.New()
	bw := bufio.NewWriterSize(io.MultiWriter(out, sum), 1<<16)
	e := &snapEncoder{w: bw}
	e.raw([]byte(snapMagic))
	e.str(h.node)
	e.str(h.logID)
	e.uint(h.seq)
	e.str(h.seqID)
	e.uint(uint64(len(w.state)))
	for k, st := range w.state {
		flags := byte(0)
		if st.live {
			flags |= snapLive
		}
		if st.done {
			flags |= snapDone
		}
		if k.ids != "" {
			flags |= snapIDsKey
		}
		origins := w.resumeOrigins[k]
		if st.live && !st.done && len(origins) > 0 {
			flags |= snapOrigins
		}
		e.raw([]byte{flags})
		if k.ids != "" {
			e.str(k.ids)
		} else {
			e.raw(k.org[:])
			e.raw(k.req[:])
		}
		e.uint(st.seq)
		if st.live {
			e.str(st.cid)
		}
		if flags&snapOrigins != 0 {
			e.uint(uint64(len(origins)))
			for _, o := range origins {
				e.str(o)
			}
		}
	}
	if e.err != nil {
		return e.err
	}
	if err := bw.Flush(); err != nil {
		return err
	}
	_, err := out.Write(sum.Sum(nil))
	return err
}

type snapEncoder struct {
	w   *bufio.Writer
	buf [binary.MaxVarintLen64]byte
	err error
}

func (e *snapEncoder) raw(b []byte) {
	if e.err == nil {
		_, e.err = e.w.Write(b)
	}
}

func (e *snapEncoder) uint(v uint64) { e.raw(e.buf[:binary.PutUvarint(e.buf[:], v)]) }

func (e *snapEncoder) str(s string) {
	e.uint(uint64(len(s)))
	if e.err == nil {
		_, e.err = e.w.WriteString(s)
	}
}

// readSnapshotHeader reads a snapshot's header; readSnapshotEntries then folds its entries into the worker's
// (empty) state, and checks the file's checksum at the end.
func readSnapshotHeader(r *snapDecoder) (snapHeader, error) {
	magic := make([]byte, len(snapMagic))
	r.full(magic)
	if r.err == nil && string(magic) != snapMagic {
		return snapHeader{}, errors.New("not a node-worker snapshot (or one of another version)")
	}
	h := snapHeader{node: r.str(), logID: r.str(), seq: r.uint(), seqID: r.str(), entries: r.uint()}
	return h, r.err
}

// readSnapshotEntries applies the snapshot's entries (called with w.mu held, the state empty).
func (w *Worker) readSnapshotEntries(r *snapDecoder, h snapHeader) error {
	for i := uint64(0); i < h.entries && r.err == nil; i++ {
		var flags [1]byte
		r.full(flags[:])
		var k pinKey
		if flags[0]&snapIDsKey != 0 {
			k.ids = r.str()
		} else {
			var b [32]byte
			r.full(b[:])
			k.org, k.req = uuid.UUID(b[:16]), uuid.UUID(b[16:])
		}
		seq := r.uint()
		if flags[0]&snapLive == 0 {
			if r.err == nil {
				w.setGone(k, seq)
			}
			continue
		}
		cid := r.str()
		var origins []string
		if flags[0]&snapOrigins != 0 {
			n := r.uint()
			if n > 1<<16 {
				return errors.New("corrupt snapshot: implausible origin count")
			}
			for j := uint64(0); j < n && r.err == nil; j++ {
				origins = append(origins, r.str())
			}
		}
		if r.err != nil {
			break
		}
		w.setLive(k, seq, cid, flags[0]&snapDone != 0)
		if len(origins) > 0 {
			w.resumeOrigins[k] = origins
		}
	}
	if r.err != nil {
		return r.err
	}
	want := r.sum.Sum(nil)
	var got [sha256.Size]byte
	if _, err := io.ReadFull(r.r, got[:]); err != nil {
		return fmt.Errorf("snapshot checksum: %w", err)
	}
	if string(got[:]) != string(want) {
		return errors.New("snapshot checksum mismatch: the file is damaged")
	}
	return nil
}

// snapDecoder reads a snapshot, hashing what it reads (the trailing checksum is read past the hash).
type snapDecoder struct {
	r   *bufio.Reader
	sum hash.Hash
	err error
}

func newSnapDecoder(in io.Reader) *snapDecoder {
	return &snapDecoder{r: bufio.NewReaderSize(in, 1<<16), sum: sha256.New()}
}

func (d *snapDecoder) full(b []byte) {
	if d.err != nil {
		return
	}
	if _, err := io.ReadFull(d.r, b); err != nil {
		d.err = fmt.Errorf("truncated snapshot: %w", err)
		return
	}
	d.sum.Write(b)
}

func (d *snapDecoder) uint() uint64 {
	if d.err != nil {
		return 0
	}
	v, err := binary.ReadUvarint(byteCounter{d})
	if err != nil {
		d.err = fmt.Errorf("truncated snapshot: %w", err)
	}
	return v
}

// snapTailMin is the number of events after a snapshot that a start always reads rather than dropping the
// snapshot, and that makes it write a new one (with a twentieth of its entries, when that is more).
var snapTailMin = 10_000

// maxSnapString bounds one string of a snapshot (IDs, CIDs, multiaddrs are far shorter), so a damaged length
// cannot make the reader allocate gigabytes.
const maxSnapString = 1 << 16

func (d *snapDecoder) str() string {
	n := d.uint()
	if d.err != nil {
		return ""
	}
	if n > maxSnapString {
		d.err = errors.New("corrupt snapshot: implausible string length")
		return ""
	}
	b := make([]byte, n)
	d.full(b)
	return string(b)
}

// byteCounter feeds binary.ReadUvarint one byte at a time, hashing each.
type byteCounter struct{ d *snapDecoder }

func (b byteCounter) ReadByte() (byte, error) {
	c, err := b.d.r.ReadByte()
	if err == nil {
		b.d.sum.Write([]byte{c})
	}
	return c, err
}

// restoreSnapshot loads the node's snapshot into the (empty) state if there is a usable one, and folds the
// node's events after it. It reports the sequence the state then covers, the last event folded and what it
// did; ok false (state left empty) when there is no snapshot or it cannot be used, with the reason in err
// unless there simply was none.
func (w *Worker) restoreSnapshot(ctx context.Context, sl SnapshotLog) (h snapHeader, st snapStats, ok bool, err error) {
	t0 := time.Now()
	rc, err := w.cfg.Snapshots.Load(w.cfg.NodeID)
	if errors.Is(err, fs.ErrNotExist) {
		return h, st, false, nil
	}
	if err != nil {
		return h, st, false, err
	}
	defer rc.Close()
	dec := newSnapDecoder(rc)
	if h, err = readSnapshotHeader(dec); err != nil {
		return h, st, false, err
	}
	if h.node != w.cfg.NodeID {
		return h, st, false, fmt.Errorf("the snapshot is node %q's", h.node)
	}
	logID, err := sl.LogID(ctx)
	if err != nil {
		return h, st, false, err
	}
	if h.logID != logID {
		return h, st, false, fmt.Errorf("the snapshot is of another event log (%s, this one is %s)", h.logID, logID)
	}
	head, err := w.src.LastSeq(ctx)
	if err != nil {
		return h, st, false, err
	}
	// The fold below judges decisions by the scheduler terms: know every one started up to head.
	if err := w.loadTerms(ctx, 0); err != nil {
		return h, st, false, err
	}
	if h.seq > head {
		return h, st, false, fmt.Errorf("the snapshot covers the log up to event %d, which ends at %d", h.seq, head)
	}
	if h.seq > 0 {
		id, err := sl.EventID(ctx, h.seq)
		if err != nil {
			return h, st, false, err
		}
		if id != h.seqID {
			return h, st, false, fmt.Errorf("event %d of the log is not the one the snapshot was taken at", h.seq)
		}
	}
	reset := func() {
		w.state, w.refs, w.resumeOrigins = map[pinKey]*placementState{}, map[cidKey]int32{}, map[pinKey][]string{}
	}
	w.mu.Lock()
	err = w.readSnapshotEntries(dec, h)
	if err != nil {
		reset()
	}
	w.mu.Unlock()
	if err != nil {
		return h, st, false, err
	}
	st.entries = int(h.entries)
	// The node's events after the snapshot, folded in order as rebuild folds each subject's last event (a
	// subject's later events supersede its earlier ones). More of them than the snapshot has entries would cost
	// more than reading each subject's last event: then the snapshot is dropped.
	if head > h.seq {
		err = sl.ReadUntilAtMost(ctx, h.seq+1, head, []string{events.NodePlacements(w.cfg.NodeID)}, 1000,
			max(h.entries, uint64(snapTailMin)), func(recs []events.Record) error {
				w.mu.Lock()
				defer w.mu.Unlock()
				for _, r := range recs {
					w.fold(r)
				}
				st.tail += len(recs)
				return nil
			})
		if err != nil {
			w.mu.Lock()
			reset()
			w.mu.Unlock()
			return h, st, false, err
		}
		if h.seqID, err = sl.EventID(ctx, head); err != nil {
			w.mu.Lock()
			reset()
			w.mu.Unlock()
			return h, st, false, err
		}
		h.seq = head
	}
	st.load = time.Since(t0)
	return h, st, true, nil
}

// saveSnapshot writes the state as of h (called before deliveries change the state). A failure is logged:
// the next start reads the log instead.
func (w *Worker) saveSnapshot(h snapHeader) {
	t0 := time.Now()
	w.mu.Lock()
	n := len(w.state)
	err := w.cfg.Snapshots.Save(w.cfg.NodeID, func(out io.Writer) error { return w.writeSnapshot(out, h) })
	w.mu.Unlock()
	if err != nil {
		w.lg.Warn("could not save the worker's start-up snapshot; the next start reads the log instead", "err", err)
		return
	}
	w.lg.Info("saved the worker's start-up snapshot", "placements", n, "through_event", h.seq, "took", time.Since(t0).Round(time.Millisecond))
}
