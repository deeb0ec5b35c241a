package natsjs_test

import (
	"bytes"
	"log/slog"
	"sync/atomic"
	"testing"

	"github.com/anchorage-pin/anchorage/adapters/natsjs"
	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"
)

// writerFunc is an io.Writer made of a function.
type writerFunc func(p []byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// The client listener's password is kept hashed: the server starts without its plaintext-password warning, the
// password still lets clients in (the node's in-process ones and a listener client), and another does not.
func TestServerKeepsTheListenerPasswordHashed(t *testing.T) {
	t.Parallel()
	var plaintext atomic.Bool // the server's log said it holds a plaintext password
	logs := writerFunc(func(p []byte) (int, error) {
		if bytes.Contains(p, []byte("Plaintext passwords detected")) {
			plaintext.Store(true)
		}
		return len(p), nil
	})
	s, err := natsjs.StartServer(natsjs.ServerConfig{StoreDir: t.TempDir(), Sync: natsjs.SyncGroup, Listen: "127.0.0.1:0",
		User: "anchorage", Password: "0123456789abcdef0123456789abcdef0123456789abcdef",
		Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	require.NoError(t, err)
	t.Cleanup(func() { s.Shutdown(t.Context()) })

	nc, err := s.Connect("in-process")
	require.NoError(t, err)
	nc.Close()
	nc, err = nats.Connect(s.ClientURL(), nats.UserInfo("anchorage", "0123456789abcdef0123456789abcdef0123456789abcdef"))
	require.NoError(t, err)
	nc.Close()
	_, err = nats.Connect(s.ClientURL(), nats.UserInfo("anchorage", "0123456789abcdef0123456789abcdef0123456789abcdeX"),
		nats.MaxReconnects(0))
	require.Error(t, err)
	require.False(t, plaintext.Load(), "the server warned of a plaintext password")
}
