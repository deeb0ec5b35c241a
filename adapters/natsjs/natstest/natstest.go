// Package natstest starts real embedded JetStream servers for tests.
package natstest

import (
	"context"
	"testing"

	"github.com/anchorage-pin/anchorage/adapters/natsjs"
	"github.com/stretchr/testify/require"
)

// Server starts an embedded JetStream server storing in a temp dir, with group-committed fsyncs (the default
// mode), shut down when the test ends.
func Server(tb testing.TB) *natsjs.Server {
	tb.Helper()
	return ServerIn(tb, tb.TempDir(), natsjs.SyncGroup)
}

// ServerIn starts a server on an existing store dir (to test restarts) in a given sync mode.
func ServerIn(tb testing.TB, dir string, mode natsjs.SyncMode) *natsjs.Server {
	tb.Helper()
	s, err := natsjs.StartServer(natsjs.ServerConfig{StoreDir: dir, Sync: mode})
	require.NoError(tb, err)
	tb.Cleanup(func() { s.Shutdown(context.Background()) })
	return s
}

// Log starts a server and opens the event log on it.
func Log(tb testing.TB) (*natsjs.Server, *natsjs.EventLog) {
	tb.Helper()
	s := Server(tb)
	l, err := natsjs.OpenLog(context.Background(), s, natsjs.LogConfig{})
	require.NoError(tb, err)
	tb.Cleanup(l.Close)
	return s, l
}
