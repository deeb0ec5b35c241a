package natsjs_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/anchorage-pin/anchorage/adapters/natsjs"
	"github.com/anchorage-pin/anchorage/adapters/natsjs/natstest"
	"github.com/google/uuid"
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
