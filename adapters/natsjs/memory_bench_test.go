package natsjs_test

import (
	"context"
	"encoding/json"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/anchorage-pin/anchorage/adapters/natsjs"
	"github.com/anchorage-pin/anchorage/adapters/natsjs/natstest"
	"github.com/anchorage-pin/anchorage/events"
	"github.com/google/uuid"
	"github.com/stretchr/testify/require"
)

// BenchmarkSubjectIndexMemory measures what the embedded file store keeps on the heap per subject, for the event
// log's subject shapes:
//
//   - index: the stream's subject index (psim), rebuilt at every start and resident for the process's life;
//   - fss: the per-block subject state, built for every message block a read loads (a subject-filtered read
//     loads every block between two matches) and dropped two minutes after the block was last used.
//
// It compares today's two subjects per pin (pins.<org>.<request> for the request, place.<node>.<org>.<request>
// for its placement and status) with one subject per pin carrying the same three events. Request ids are UUIDv7,
// as anchorage makes them (their shared time prefixes keep the radix tree small). The bytes are counted exactly,
// by allocation site, from a heap profile taken at rate 1 after the restart. Run it once:
//
//	go test ./adapters/natsjs -run '^$' -bench BenchmarkSubjectIndexMemory -benchtime 1x
//
// ANCHORAGE_MEMBENCH_PINS sets the number of pins (default 200,000).
func BenchmarkSubjectIndexMemory(b *testing.B) {
	pins := 200_000
	if v, err := strconv.Atoi(os.Getenv("ANCHORAGE_MEMBENCH_PINS")); err == nil && v > 0 {
		pins = v
	}
	org, node := uuid.NewString(), "node-hpsydhrr"
	shapes := []struct {
		name     string
		subjects func(id string) [3]string // request, placement, observation
	}{
		{"two-subjects-per-pin", func(id string) [3]string {
			return [3]string{events.PinSubject(org, id), events.PlaceSubject(node, org, id), events.PlaceSubject(node, org, id)}
		}},
		{"one-subject-per-pin", func(id string) [3]string {
			s := events.PinSubject(org, id)
			return [3]string{s, s, s}
		}},
	}
	for _, shape := range shapes {
		b.Run(shape.name, func(b *testing.B) {
			for b.Loop() {
				m := measureSubjectMemory(b, pins, node, shape.subjects)
				b.ReportMetric(float64(m.subjects), "subjects")
				b.ReportMetric(float64(m.blocks), "blocks")
				b.ReportMetric(float64(m.index)/float64(m.subjects), "index-B/subject")
				b.ReportMetric(float64(m.index)/float64(pins), "index-B/pin")
				b.ReportMetric(float64(m.fss)/float64(pins), "fss-B/pin")
				b.ReportMetric(float64(m.index)/(1<<20), "index-MiB")
				b.ReportMetric(float64(m.fss)/(1<<20), "fss-MiB")
			}
		})
	}
}

type subjectMemory struct {
	subjects, blocks int
	index, fss       int64 // live heap bytes
}

// measureSubjectMemory writes pins×3 events in the given shape (bodies the size of real ones), restarts the
// server so the index is rebuilt from disk as at a real start, then makes a literal-subject read walk every
// block (a node's events at both ends of the log, as a node's registration read them before), and counts the
// live heap allocated by rebuilding the index and by building the blocks' subject state.
func measureSubjectMemory(b *testing.B, pins int, node string, subjects func(id string) [3]string) subjectMemory {
	ctx := context.Background()
	dir := b.TempDir()
	s, err := natsjs.StartServer(natsjs.ServerConfig{StoreDir: dir, Sync: natsjs.SyncInterval, SyncInterval: time.Minute})
	require.NoError(b, err)
	l, err := natsjs.OpenLog(ctx, s, natsjs.LogConfig{})
	require.NoError(b, err)
	js := l.JetStream()
	body := make([]byte, 420) // a PinRequested / PinPlaced envelope is 350-500 bytes of JSON
	for i := range body {
		body[i] = 'x'
	}
	nodeSubj := events.NodeSubject(node)
	publish := func(subj string) {
		for {
			if _, err := js.PublishAsync(subj, body); err == nil {
				return
			}
			<-js.PublishAsyncComplete()
		}
	}
	publish(nodeSubj)
	for range pins {
		for _, subj := range subjects(uuid.Must(uuid.NewV7()).String()) {
			publish(subj)
		}
	}
	publish(nodeSubj)
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(5 * time.Minute):
		b.Fatal("publishing did not complete")
	}
	// At start the server reloads the messages of the last duplicates window to rebuild its de-duplication ids,
	// building those blocks' subject state: all of them here, none on a real log. Shrink the window for the restart.
	cfg := natsjs.StreamConfig(1)
	cfg.Duplicates = 100 * time.Millisecond
	st, err := js.UpdateStream(ctx, cfg)
	require.NoError(b, err)
	subjectCount := int(st.CachedInfo().State.NumSubjects)
	time.Sleep(200 * time.Millisecond)
	l.Close()
	s.Shutdown(ctx)

	rate := runtime.MemProfileRate
	runtime.MemProfileRate = 1
	defer func() { runtime.MemProfileRate = rate }()
	s = natstest.ServerIn(b, dir, natsjs.SyncInterval)
	nc, err := s.Connect("membench")
	require.NoError(b, err)
	defer nc.Close()
	req, _ := json.Marshal(map[string]any{"seq": 2, "next_by_subj": nodeSubj})
	msg, err := nc.Request("$JS.API.DIRECT.GET."+events.StreamName, req, time.Minute)
	require.NoError(b, err)
	require.Empty(b, msg.Header.Get("Status"), "the node's last event was not found")
	index, fss := subjectStateHeap()
	runtime.KeepAlive(s)
	return subjectMemory{subjects: subjectCount, blocks: blockFiles(b, s.StreamDir()), index: index, fss: fss}
}

// subjectStateHeap sums the live heap allocated while recovering the stream (the subject index) and while
// building per-block subject state, from the heap profile.
func subjectStateHeap() (index, fss int64) {
	for range 3 { // a profile shows the heap as of the last completed GC cycle
		runtime.GC()
	}
	var recs []runtime.MemProfileRecord
	for {
		n, ok := runtime.MemProfile(recs, true)
		if ok {
			recs = recs[:n]
			break
		}
		recs = make([]runtime.MemProfileRecord, n+64)
	}
	for _, r := range recs {
		var isIndex, isFss bool
		frames := runtime.CallersFrames(r.Stack())
		for {
			f, more := frames.Next()
			switch {
			case strings.Contains(f.Function, "(*fileStore).recoverFullState"),
				strings.Contains(f.Function, "(*fileStore).populateGlobalPerSubjectInfo"):
				isIndex = true
			case strings.Contains(f.Function, "(*msgBlock).indexCacheBuf"),
				strings.Contains(f.Function, "(*msgBlock).generatePerSubjectInfo"):
				isFss = true
			}
			if !more {
				break
			}
		}
		switch {
		case isIndex && !isFss:
			index += r.InUseBytes()
		case isFss:
			fss += r.InUseBytes()
		}
	}
	return index, fss
}

func blockFiles(b *testing.B, dir string) int {
	entries, err := os.ReadDir(dir + "/msgs")
	require.NoError(b, err)
	n := 0
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".blk") {
			n++
		}
	}
	return n
}
