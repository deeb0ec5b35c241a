package natsjs

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// Damage describes events missing from the log. The stream is append-only with deletes denied, so a healthy
// log holds every sequence from 1 to its last; anything else means its files were damaged (a torn or
// corrupted block, a disk that lost acknowledged writes) and the server dropped what it could not read.
type Damage struct {
	FirstSeq, LastSeq, Msgs uint64
	// Missing counts sequences in [1, LastSeq] that hold no message.
	Missing uint64
	// Lost lists sequences the server itself reported lost while recovering (nil when it reported none).
	Lost      []uint64
	LostBytes uint64
	// Ahead is set by the caller when a reader (a projection checkpoint) has seen a sequence beyond LastSeq:
	// the log lost its tail.
	Ahead uint64
	// Blocks are the stream's message block files, last one last ("" for a log in another process).
	Blocks []string
}

// Any reports whether anything is missing.
func (d Damage) Any() bool {
	return d.Missing > 0 || len(d.Lost) > 0 || d.LostBytes > 0 || d.Ahead > d.LastSeq
}

// String explains the damage in words an operator can act on.
func (d Damage) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "the event log holds %d events with sequences %d..%d", d.Msgs, d.FirstSeq, d.LastSeq)
	if d.Missing > 0 {
		fmt.Fprintf(&b, "; %d sequences in that range are missing", d.Missing)
	}
	if len(d.Lost) > 0 || d.LostBytes > 0 {
		fmt.Fprintf(&b, "; the server reported %d messages (%d bytes) lost while recovering its files", len(d.Lost), d.LostBytes)
		if len(d.Lost) > 0 {
			fmt.Fprintf(&b, " (sequences %s)", seqRanges(d.Lost))
		}
	}
	if d.Ahead > d.LastSeq {
		fmt.Fprintf(&b, "; the read models have already applied events up to %d, so events %d..%d were lost from the end of the log",
			d.Ahead, d.LastSeq+1, d.Ahead)
	}
	if n := len(d.Blocks); n > 0 {
		fmt.Fprintf(&b, "; the stream's files are in %s (blocks %s", filepath.Dir(d.Blocks[n-1]), filepath.Base(d.Blocks[0]))
		if n > 1 {
			fmt.Fprintf(&b, " to %s", filepath.Base(d.Blocks[n-1]))
		}
		b.WriteString(")")
	}
	return b.String()
}

// seqRanges formats sorted sequences compactly: "5..9, 12".
func seqRanges(seqs []uint64) string {
	s := slices.Clone(seqs)
	slices.Sort(s)
	var parts []string
	for i := 0; i < len(s); {
		j := i
		for j+1 < len(s) && s[j+1] == s[j]+1 {
			j++
		}
		if j > i {
			parts = append(parts, fmt.Sprintf("%d..%d", s[i], s[j]))
		} else {
			parts = append(parts, strconv.FormatUint(s[i], 10))
		}
		if len(parts) == 20 && j+1 < len(s) {
			parts = append(parts, fmt.Sprintf("and %d more", len(s)-j-1))
			break
		}
		i = j + 1
	}
	return strings.Join(parts, ", ")
}

// CheckIntegrity compares the stream's state with what an append-only log must look like. It reads only the
// stream's counters (no message is read), so it is cheap enough to run at every start.
func (l *EventLog) CheckIntegrity(ctx context.Context) (Damage, error) {
	info, err := l.stream.Info(ctx)
	if err != nil {
		return Damage{}, fmt.Errorf("natsjs: stream info: %w", err)
	}
	st := info.State
	d := Damage{FirstSeq: st.FirstSeq, LastSeq: st.LastSeq, Msgs: st.Msgs}
	if st.LastSeq > 0 {
		// Sequences before FirstSeq and deleted ones inside the range are all missing: nothing may be removed.
		d.Missing = st.LastSeq - st.Msgs
	}
	if st.Lost != nil {
		d.Lost, d.LostBytes = st.Lost.Msgs, st.Lost.Bytes
	}
	if l.dir != "" {
		d.Blocks = blockFiles(filepath.Join(l.dir, "msgs"))
	}
	return d, nil
}

// blockFiles lists a stream's message blocks in sequence order (1.blk, 2.blk, …, 10.blk).
func blockFiles(dir string) []string {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	type blk struct {
		n    int
		path string
	}
	var bs []blk
	for _, e := range ents {
		name, ok := strings.CutSuffix(e.Name(), ".blk")
		if !ok {
			continue
		}
		if n, err := strconv.Atoi(name); err == nil {
			bs = append(bs, blk{n, filepath.Join(dir, e.Name())})
		}
	}
	slices.SortFunc(bs, func(a, b blk) int { return a.n - b.n })
	out := make([]string, len(bs))
	for i, b := range bs {
		out[i] = b.path
	}
	return out
}
