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
	"slices"
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
//	         count; then (version 2) the scheduler-term fence: how many events of the term subject it read
//	         plus one (0: none), the sequence of the last, the count of term starts and each one's sequence
//	         and term
//	entry:   flags (live, done, key is the ids form, has origins), key (32 bytes: org and request UUIDs; or
//	         a string), the placement's seq, then when live its CID and, if flagged, its origins
const snapMagic = "anchorage node-worker snapshot 2\n"

// snapMagicV1 marks a snapshot without the term fence (read, never written: its fence is read from the log).
const snapMagicV1 = "anchorage node-worker snapshot 1\n"

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
	terms       snapTerms
}

// snapTerms is the worker's scheduler-term fence as a snapshot keeps it, so that a start reads only the term
// starts after it rather than one event (and message block) per restart in the log's history. It is cut at the
// snapshot's seq, the last event checked against the log.
type snapTerms struct {
	read   int    // events of the term subject read (-1: none, or a version 1 snapshot)
	seq    uint64 // every event of the term subject up to this sequence was read
	starts []termStart
}

// fenceAt is the fence cut at seq: the starts up to it, and read counting those.
func (w *Worker) fenceAt(seq uint64) snapTerms {
	if w.termsRead < 0 {
		return snapTerms{read: -1}
	}
	t := snapTerms{seq: min(w.termsSeq, seq)}
	for _, s := range w.terms.starts {
		if s.seq <= t.seq {
			t.starts = append(t.starts, s)
		}
	}
	t.read = len(t.starts)
	return t
}

// adoptFence takes the fence a (checked) snapshot kept, unless the worker's covers more already.
func (w *Worker) adoptFence(t snapTerms) {
	if t.read < 0 || (w.termsRead >= 0 && w.termsSeq >= t.seq) {
		return
	}
	w.terms = termFence{starts: slices.Clone(t.starts)}
	w.termsRead, w.termsSeq = t.read, t.seq
}

// sameAs reports whether two headers describe the same snapshot.
func (h snapHeader) sameAs(o snapHeader) bool {
	return h.node == o.node && h.logID == o.logID && h.seq == o.seq && h.seqID == o.seqID && h.entries == o.entries &&
		h.terms.read == o.terms.read && h.terms.seq == o.terms.seq && slices.Equal(h.terms.starts, o.terms.starts)
}

// snapStats is what a start from a snapshot did, for the log line.
type snapStats struct {
	entries, tail int
	load          time.Duration
}

// snapEntry is one placement of a snapshot.
type snapEntry struct {
	k       pinKey
	seq     uint64
	live    bool
	done    bool
	cid     string   // when live
	origins []string // when live and not done, if known
}

// stateEntries yields the worker's state as snapshot entries (called with w.mu held).
func (w *Worker) stateEntries(yield func(snapEntry) bool) {
	for k, st := range w.state {
		en := snapEntry{k: k, seq: st.seq, live: st.live, done: st.done}
		if st.live {
			en.cid = st.cid
			if !st.done {
				en.origins = w.resumeOrigins[k]
			}
		}
		if !yield(en) {
			return
		}
	}
}

// writeSnapshot writes a snapshot of h.entries entries.
func writeSnapshot(out io.Writer, h snapHeader, entries func(yield func(snapEntry) bool)) error {
	return writeSnapshotAs(out, snapMagic, h, entries)
}

// writeSnapshotAs is writeSnapshot in the version magic names: snapMagicV1 has no term fence (written by tests,
// as an older anchorage wrote it).
func writeSnapshotAs(out io.Writer, magic string, h snapHeader, entries func(yield func(snapEntry) bool)) error {
	sum := sha256.New()
	bw := bufio.NewWriterSize(io.MultiWriter(out, sum), 1<<16)
	e := &snapEncoder{w: bw}
	e.raw([]byte(magic))
	e.str(h.node)
	e.str(h.logID)
	e.uint(h.seq)
	e.str(h.seqID)
	e.uint(h.entries)
	if magic != snapMagicV1 {
		e.uint(uint64(h.terms.read + 1))
		e.uint(h.terms.seq)
		e.uint(uint64(len(h.terms.starts)))
		for _, t := range h.terms.starts {
			e.uint(t.seq)
			e.uint(t.term)
		}
	}
	n := uint64(0)
	for en := range entries {
		e.entry(en)
		n++
	}
	if e.err != nil {
		return e.err
	}
	if n != h.entries {
		return fmt.Errorf("snapshot: %d entries written, %d announced", n, h.entries)
	}
	if err := bw.Flush(); err != nil {
		return err
	}
	_, err := out.Write(sum.Sum(nil))
	return err
}

// writeSnapshot writes the worker's state and term fence as of h.seq (called with w.mu held, before deliveries
// change it).
func (w *Worker) writeSnapshot(out io.Writer, h snapHeader) error {
	h.entries = uint64(len(w.state))
	h.terms = w.fenceAt(h.seq)
	return writeSnapshot(out, h, w.stateEntries)
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

func (e *snapEncoder) entry(en snapEntry) {
	flags := byte(0)
	if en.live {
		flags |= snapLive
	}
	if en.done {
		flags |= snapDone
	}
	if en.k.ids != "" {
		flags |= snapIDsKey
	}
	if en.live && !en.done && len(en.origins) > 0 {
		flags |= snapOrigins
	}
	e.raw([]byte{flags})
	if en.k.ids != "" {
		e.str(en.k.ids)
	} else {
		e.raw(en.k.org[:])
		e.raw(en.k.req[:])
	}
	e.uint(en.seq)
	if en.live {
		e.str(en.cid)
	}
	if flags&snapOrigins != 0 {
		e.uint(uint64(len(en.origins)))
		for _, o := range en.origins {
			e.str(o)
		}
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
	v1 := string(magic) == snapMagicV1
	if r.err == nil && string(magic) != snapMagic && !v1 {
		return snapHeader{}, errors.New("not a node-worker snapshot (or one of another version)")
	}
	h := snapHeader{node: r.str(), logID: r.str(), seq: r.uint(), seqID: r.str(), entries: r.uint(), terms: snapTerms{read: -1}}
	if v1 {
		return h, r.err
	}
	h.terms.read, h.terms.seq = int(r.uint())-1, r.uint()
	n := r.uint()
	if r.err == nil && (n > 1<<20 || h.terms.read < -1 || h.terms.read > 1<<30 || h.terms.seq > h.seq) {
		r.err = errors.New("corrupt snapshot: implausible term fence")
	}
	for i := uint64(0); i < n && r.err == nil; i++ {
		t := termStart{seq: r.uint(), term: r.uint()}
		if r.err == nil && (t.seq > h.terms.seq || (i > 0 && t.seq <= h.terms.starts[i-1].seq)) {
			r.err = errors.New("corrupt snapshot: term starts out of order")
		}
		h.terms.starts = append(h.terms.starts, t)
	}
	return h, r.err
}

// readEntry reads one entry (false: r.err says why).
func readEntry(r *snapDecoder) (snapEntry, bool) {
	var flags [1]byte
	r.full(flags[:])
	var en snapEntry
	if flags[0]&snapIDsKey != 0 {
		en.k.ids = r.str()
	} else {
		var b [32]byte
		r.full(b[:])
		en.k.org, en.k.req = uuid.UUID(b[:16]), uuid.UUID(b[16:])
	}
	en.seq = r.uint()
	en.live, en.done = flags[0]&snapLive != 0, flags[0]&snapDone != 0
	if en.live {
		en.cid = r.str()
	}
	if flags[0]&snapOrigins != 0 {
		n := r.uint()
		if n > 1<<16 && r.err == nil {
			r.err = errors.New("corrupt snapshot: implausible origin count")
		}
		for j := uint64(0); j < n && r.err == nil; j++ {
			en.origins = append(en.origins, r.str())
		}
	}
	return en, r.err == nil
}

// readEntries calls fn with each of the snapshot's entries, then checks the file's checksum.
func readEntries(r *snapDecoder, h snapHeader, fn func(snapEntry)) error {
	for i := uint64(0); i < h.entries; i++ {
		en, ok := readEntry(r)
		if !ok {
			return r.err
		}
		fn(en)
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

// readSnapshotEntries applies the snapshot's entries (called with w.mu held, the state empty).
func (w *Worker) readSnapshotEntries(r *snapDecoder, h snapHeader) error {
	return readEntries(r, h, func(en snapEntry) {
		if !en.live {
			w.setGone(en.k, en.seq)
			return
		}
		w.setLive(en.k, en.seq, en.cid, en.done)
		if len(en.origins) > 0 {
			w.resumeOrigins[en.k] = en.origins
		}
	})
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
	v, err := binary.ReadUvarint(hashingByteReader{d})
	if err != nil {
		d.err = fmt.Errorf("truncated snapshot: %w", err)
	}
	return v
}

// snapTailMin is the number of events after a snapshot that a start always reads rather than dropping the
// snapshot, and that makes it write a new one (with a twentieth of its entries, when that is more).
var snapTailMin = 10_000

// snapTermsMax is the number of term starts after a snapshot's fence that makes a start write it again.
var snapTermsMax = 16

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

// hashingByteReader feeds binary.ReadUvarint one byte at a time, hashing each.
type hashingByteReader struct{ d *snapDecoder }

func (b hashingByteReader) ReadByte() (byte, error) {
	c, err := b.d.r.ReadByte()
	if err == nil {
		b.d.sum.Write([]byte{c})
	}
	return c, err
}

// openSnapshot opens the node's snapshot and checks that it fits the log: this node's, of this log, taken at an
// event still at its sequence. It returns the snapshot positioned at its first entry, its header and the log's
// last sequence; an error wrapping fs.ErrNotExist when there is none.
func (w *Worker) openSnapshot(ctx context.Context, sl SnapshotLog) (io.ReadCloser, *snapDecoder, snapHeader, uint64, error) {
	rc, err := w.cfg.Snapshots.Load(w.cfg.NodeID)
	if err != nil {
		return nil, nil, snapHeader{}, 0, err
	}
	h, head, dec, err := func() (snapHeader, uint64, *snapDecoder, error) {
		dec := newSnapDecoder(rc)
		h, err := readSnapshotHeader(dec)
		if err != nil {
			return h, 0, nil, err
		}
		if h.node != w.cfg.NodeID {
			return h, 0, nil, fmt.Errorf("the snapshot is node %q's", h.node)
		}
		logID, err := sl.LogID(ctx)
		if err != nil {
			return h, 0, nil, err
		}
		if h.logID != logID {
			return h, 0, nil, fmt.Errorf("the snapshot is of another event log (%s, this one is %s)", h.logID, logID)
		}
		head, err := w.src.LastSeq(ctx)
		if err != nil {
			return h, 0, nil, err
		}
		if h.seq > head {
			return h, 0, nil, fmt.Errorf("the snapshot covers the log up to event %d, which ends at %d", h.seq, head)
		}
		if h.seq > 0 {
			id, err := sl.EventID(ctx, h.seq)
			if err != nil {
				return h, 0, nil, err
			}
			if id != h.seqID {
				return h, 0, nil, fmt.Errorf("event %d of the log is not the one the snapshot was taken at", h.seq)
			}
		}
		return h, head, dec, nil
	}()
	if err != nil {
		rc.Close()
		return nil, nil, h, 0, err
	}
	return rc, dec, h, head, nil
}

// restoreSnapshot loads the node's snapshot into the (empty) state if there is a usable one, and folds the
// node's events after it. It reports the sequence the state then covers, the last event folded and what it
// did; ok false (state left empty) when there is no snapshot or it cannot be used, with the reason in err
// unless there simply was none.
func (w *Worker) restoreSnapshot(ctx context.Context, sl SnapshotLog) (h snapHeader, st snapStats, ok bool, err error) {
	t0 := time.Now()
	rc, dec, h, head, err := w.openSnapshot(ctx, sl)
	if errors.Is(err, fs.ErrNotExist) {
		return h, st, false, nil
	}
	if err != nil {
		return h, st, false, err
	}
	defer rc.Close()
	reset := func() {
		w.state, w.refs, w.resumeOrigins = map[pinKey]*placementState{}, map[cidKey]int32{}, map[pinKey][]string{}
	}
	w.mu.Lock()
	err = w.readSnapshotEntries(dec, h)
	if err != nil {
		reset()
	} else {
		w.adoptFence(h.terms) // its checksum is good
	}
	w.mu.Unlock()
	if err != nil {
		return h, st, false, err
	}
	// The fold below judges decisions by the scheduler terms: know every one started up to head (reading only
	// those after the snapshot's fence).
	if err := w.loadTerms(ctx, 0); err != nil {
		w.mu.Lock()
		reset()
		w.mu.Unlock()
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
	w.lg.Info("saved the worker's start-up snapshot", "placements", n, "through_event", h.seq, "took", time.Since(t0).Round(time.Millisecond).String())
}

// refreshSnapshot brings the node's snapshot up to the head of the log without touching the worker's state (it
// runs while the worker works): it folds the node's events after the snapshot into a separate state holding
// only the placements they changed, then writes a new snapshot of the old entries they did not change and the
// changed ones. Memory is the changed placements only. It reports how many events it folded in (0: nothing
// worth a rewrite: fewer than snapTailMin, or no snapshot to refresh).
func (w *Worker) refreshSnapshot(ctx context.Context, sl SnapshotLog) (int, error) {
	// Checked against the log once; the file stays open for the first pass over its entries below.
	rc, dec, h, head, err := w.openSnapshot(ctx, sl)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	defer rc.Close()
	if head <= h.seq {
		return 0, nil
	}
	// Only the events matter, not the worker's current state: a fold from nothing keeps, for each placement
	// they touch, the effect of its last valid event, which is what the full fold's state is for it.
	changed := NewWorker(w.src, nil, WorkerConfig{NodeID: w.cfg.NodeID})
	w.mu.Lock()
	changed.terms, changed.termsRead, changed.termsSeq = termFence{starts: slices.Clone(w.terms.starts)}, w.termsRead, w.termsSeq
	w.mu.Unlock()
	if err := changed.loadTerms(ctx, 0); err != nil {
		return 0, err
	}
	tail := 0
	err = sl.ReadUntilAtMost(ctx, h.seq+1, head, []string{events.NodePlacements(w.cfg.NodeID)}, 1000, ^uint64(0),
		func(recs []events.Record) error {
			changed.mu.Lock()
			defer changed.mu.Unlock()
			for _, r := range recs {
				changed.fold(r)
			}
			tail += len(recs)
			return nil
		})
	if err != nil || tail < snapTailMin {
		return 0, err
	}
	// Two passes over the old snapshot: count what survives (the header announces the count), then write.
	kept := uint64(0)
	if err := readEntries(dec, h, func(en snapEntry) {
		if _, ok := changed.state[en.k]; !ok {
			kept++
		}
	}); err != nil {
		return 0, err
	}
	next := snapHeader{node: h.node, logID: h.logID, seq: head, entries: kept + uint64(len(changed.state)), terms: changed.fenceAt(head)}
	if next.seqID, err = sl.EventID(ctx, head); err != nil {
		return 0, err
	}
	err = w.cfg.Snapshots.Save(w.cfg.NodeID, func(out io.Writer) error {
		var rerr error
		werr := writeSnapshot(out, next, func(yield func(snapEntry) bool) {
			stop := false
			rerr = w.readSnapshotAgain(h, func(en snapEntry) {
				if _, ok := changed.state[en.k]; !ok && !stop {
					stop = !yield(en)
				}
			})
			if rerr != nil || stop {
				return
			}
			changed.stateEntries(yield)
		})
		return errors.Join(rerr, werr)
	})
	if err != nil {
		return 0, err
	}
	return tail, nil
}

// readSnapshotAgain reads the entries of the node's snapshot, which must still be the one with header h (already
// checked against the log), and its checksum.
func (w *Worker) readSnapshotAgain(h snapHeader, fn func(snapEntry)) error {
	rc, err := w.cfg.Snapshots.Load(w.cfg.NodeID)
	if err != nil {
		return err
	}
	defer rc.Close()
	dec := newSnapDecoder(rc)
	again, err := readSnapshotHeader(dec)
	if err != nil {
		return err
	}
	if !again.sameAs(h) {
		return errors.New("the snapshot changed while it was being refreshed")
	}
	return readEntries(dec, h, fn)
}

// refreshSnapshots refreshes the node's snapshot every SnapshotEvery until ctx ends, so that a start after a long
// run still reads few events.
func (w *Worker) refreshSnapshots(ctx context.Context, sl SnapshotLog) {
	t := time.NewTicker(w.cfg.SnapshotEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		t0 := time.Now()
		n, err := w.refreshSnapshot(ctx, sl)
		switch {
		case err != nil && ctx.Err() == nil:
			w.lg.Warn("could not refresh the worker's start-up snapshot", "err", err)
		case n > 0:
			w.lg.Info("refreshed the worker's start-up snapshot", "events_folded_in", n, "took", time.Since(t0).Round(time.Millisecond).String())
		}
	}
}
