package projections

import (
	"encoding/binary"
	"runtime"
	"testing"

	"github.com/google/uuid"
	"github.com/ipfs/go-cid"
	"github.com/multiformats/go-multihash"
	"github.com/stretchr/testify/require"
)

// BenchmarkWorkerStateMemory measures what a node worker keeps on the heap per live placement: its pin set is
// held in memory (a node with a million pins holds a million entries). The IDs and CIDs are fresh strings, as
// decoded from events; only the bytes the worker retains count (the test drops its own copies before measuring).
//
//	go test ./projections -run '^$' -bench BenchmarkWorkerStateMemory -benchtime 1x
func BenchmarkWorkerStateMemory(b *testing.B) {
	const n = 200_000
	for b.Loop() {
		w := NewWorker(nil, nil, WorkerConfig{NodeID: "n1"})
		org := uuid.NewString()
		before := heapInUse()
		w.mu.Lock()
		for i := range n {
			ref := PinRef{string([]byte(org)), uuid.Must(uuid.NewV7()).String()}
			w.setLive(keyOf(ref), uint64(i+1), testCID(i), true)
		}
		w.mu.Unlock()
		after := heapInUse()
		require.Len(b, w.state, n)
		b.ReportMetric(float64(after-before)/n, "B/placement")
		runtime.KeepAlive(w)
	}
}

func heapInUse() int64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapAlloc)
}

func testCID(i int) string {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(i))
	mh, _ := multihash.Sum(b[:], multihash.SHA2_256, -1)
	return cid.NewCidV1(cid.Raw, mh).String()
}

// Keys round-trip: UUID pairs become two UUIDs, anything else is kept as given, and the two never collide.
func TestPinKeyRoundTrip(t *testing.T) {
	u1, u2 := uuid.NewString(), uuid.NewString()
	for _, ref := range []PinRef{{u1, u2}, {"org", "r1"}, {u1, "r1"}, {"ORG", u2}, {u1, "{" + u2 + "}"}, {"a", ""}} {
		require.Equal(t, ref, keyOf(ref).ref(), "%v", ref)
	}
	require.NotEqual(t, keyOf(PinRef{u1, u2}), keyOf(PinRef{u2, u1}))
	require.NotEqual(t, keyOf(PinRef{"a\x00b", "c"}), keyOf(PinRef{"a", "b\x00c"}), "ids with NUL are not subject tokens, but still must not collide")
}

// The v0 and v1 spellings of one content share a key; different contents do not.
func TestCIDKeySpellings(t *testing.T) {
	v0 := "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG"
	c, err := cid.Decode(v0)
	require.NoError(t, err)
	v1 := cid.NewCidV1(cid.DagProtobuf, c.Hash()).String()
	require.Equal(t, keyOfCID(v0), keyOfCID(v1))
	require.NotEqual(t, keyOfCID(testCID(1)), keyOfCID(testCID(2)))
	require.NotEqual(t, keyOfCID("not a cid"), keyOfCID("not a cid either"))
}
