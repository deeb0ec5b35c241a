package kubo

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/anchorage-pin/anchorage/adapters/kubo/kubotest"
	caopts "github.com/ipfs/kubo/core/coreiface/options"
)

// BenchmarkPinLocal1KiB measures Pin of 1 KiB raw blocks the daemon already has (put with block/put, not
// pinned), one CID per call, by calls in flight, with and without the DAG size, each case on a fresh daemon.
// It reports pins/s. Kubo serialises pins on its pinner lock and each pin fsyncs LevelDB's journal, so the
// rate is bound by the disk's fsync latency (and noisy on a shared machine) and barely grows with
// concurrency. Run with a fixed count for comparable runs, e.g.
//
//	go test -run '^$' -bench PinLocal1KiB -benchtime 3000x ./adapters/kubo/
func BenchmarkPinLocal1KiB(b *testing.B) {
	for _, conc := range []int{1, 8, 16, 32, 64, 128} {
		for _, withSize := range []bool{false, true} {
			d := kubotest.Daemon(b)
			b.Run(fmt.Sprintf("conc=%d/dagSize=%v", conc, withSize), func(b *testing.B) {
				c := client(b, d, WithDagSize(withSize))
				ids := putBlocks(b, c, b.N)
				b.ResetTimer()
				start := time.Now()
				var next atomic.Int64
				var wg sync.WaitGroup
				for range conc {
					wg.Go(func() {
						for {
							i := next.Add(1) - 1
							if i >= int64(len(ids)) {
								return
							}
							ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
							size, err := c.Pin(ctx, ids[i], "bench")
							cancel()
							if err == nil && withSize && size != 1024 {
								err = fmt.Errorf("pin %s: DAG size %d, want 1024", ids[i], size)
							}
							if err != nil {
								b.Error(err)
								return
							}
						}
					})
				}
				wg.Wait()
				b.StopTimer()
				b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "pins/s")
			})
			stop, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			if err := d.Stop(stop); err != nil {
				b.Error(err)
			}
			cancel()
		}
	}
}

// putBlocks stores n random 1 KiB raw blocks, unpinned, 16 at a time.
func putBlocks(tb testing.TB, c *Client, n int) []string {
	tb.Helper()
	ids := make([]string, n)
	var next atomic.Int64
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			for {
				i := next.Add(1) - 1
				if i >= int64(n) {
					return
				}
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				st, err := c.api.Block().Put(ctx, bytes.NewReader(randomBytes(1024)), caopts.Block.CidCodec("raw"))
				cancel()
				if err != nil {
					tb.Error(err)
					return
				}
				ids[i] = st.Path().RootCid().String()
			}
		})
	}
	wg.Wait()
	return ids
}
