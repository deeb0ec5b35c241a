package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/anchorage-pin/anchorage/adapters/kubo/kubotest"
	"github.com/anchorage-pin/anchorage/adapters/postgres/pgcluster"
	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"
)

// safeBuffer is a bytes.Buffer safe for a writer and a reader in different goroutines.
type safeBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *safeBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *safeBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// devRun runs `anchorage dev` in the background until the returned stop is called.
func devRun(t *testing.T, dir string) (node *devNode, out *safeBuffer, stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	out = &safeBuffer{}
	ready := make(chan *devNode, 1)
	done := make(chan error, 1)
	getenv := func(k string) string {
		if k == "ANCHORAGE_KUBO_BIN" || k == "HOME" || k == "PATH" {
			return os.Getenv(k)
		}
		return ""
	}
	go func() {
		done <- runDev(ctx, env{getenv: getenv, stdout: out, stderr: out}, devOptions{
			dataDir: dir, listen: "127.0.0.1:0", ready: func(n *devNode) { ready <- n },
		})
	}()
	select {
	case node = <-ready:
	case err := <-done:
		cancel()
		t.Fatalf("anchorage dev failed: %v\n%s", err, out)
	case <-time.After(3 * time.Minute):
		cancel()
		t.Fatalf("anchorage dev did not get ready\n%s", out)
	}
	return node, out, func() {
		cancel()
		select {
		case err := <-done:
			require.NoError(t, err)
		case <-time.After(time.Minute):
			t.Fatal("anchorage dev did not stop")
		}
	}
}

// ipfsClient is a separate Kubo repo acting as a user's `ipfs` CLI.
type ipfsClient struct {
	t    *testing.T
	bin  string
	repo string
}

func newIPFSClient(t *testing.T) ipfsClient {
	c := ipfsClient{t: t, bin: kubotest.Binary(t), repo: t.TempDir()}
	c.run("init", "--profile=test", "--empty-repo")
	return c
}

func (c ipfsClient) run(args ...string) string {
	c.t.Helper()
	cmd := exec.Command(c.bin, args...)
	cmd.Env = append(os.Environ(), "IPFS_PATH="+c.repo, "IPFS_TELEMETRY=off")
	out, err := cmd.CombinedOutput()
	require.NoError(c.t, err, "ipfs %s\n%s", strings.Join(args, " "), out)
	return string(out)
}

func TestDevEndToEnd(t *testing.T) {
	dir := filepath.Join(pgcluster.TempRoot(), "anchorage-devtest-"+strings.ReplaceAll(t.Name(), "/", "-"))
	require.NoError(t, os.RemoveAll(dir))
	t.Cleanup(func() { _ = os.RemoveAll(dir) })

	node, out, stop := devRun(t, dir)
	envFile, err := os.ReadFile(filepath.Join(dir, "dev.env"))
	require.NoError(t, err)
	require.Contains(t, string(envFile), "ANCHORAGE_ENDPOINT="+node.endpoint)
	require.Contains(t, string(envFile), "ANCHORAGE_TOKEN="+node.token)
	require.Contains(t, out.String(), "ipfs pin remote service add anchorage "+node.endpoint+" "+node.token)

	// A real Kubo CLI as the client.
	ipfs := newIPFSClient(t)
	ipfs.run("pin", "remote", "service", "add", "anchorage", node.endpoint, node.token)
	cid := strings.TrimSpace(ipfs.run("add", "-q", "--offline", "--pin=false", filepath.Join(dir, "dev.env")))
	added := ipfs.run("pin", "remote", "add", "--service=anchorage", "--background", "--name=e2e", cid)
	require.Contains(t, added, "Status: queued")
	ls := ipfs.run("pin", "remote", "ls", "--service=anchorage", "--status=queued,pinning,pinned,failed")
	require.Contains(t, ls, cid)
	require.Contains(t, ls, "e2e")
	// The node is fetching content only the (offline) client holds: queued or pinning, not pinned or failed.
	// Kubo sends the four per-status counts concurrently, so one call can straddle the queued→pinning move and
	// see the pin in neither; a settled answer shows it exactly once.
	stat := regexp.MustCompile(`anchorage ` + regexp.QuoteMeta(node.endpoint) + ` (1/0|0/1)/0/0`)
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		got := ipfs.run("pin", "remote", "service", "ls", "--stat")
		if stat.MatchString(got) {
			break
		}
		require.True(t, time.Now().Before(deadline), "service ls --stat never settled on one queued or pinning pin: %s", got)
	}

	// Operators reach the running node.
	admin := func(args ...string) string {
		var o bytes.Buffer
		require.NoError(t, run(context.Background(), append([]string{"admin", "--data-dir", dir}, args...), func(string) string { return "" }, &o, &o), o.String())
		return o.String()
	}
	require.Contains(t, admin("org", "list"), "dev")
	require.Contains(t, admin("token", "list", "--org", "dev"), "anchorage dev")

	// The managed cluster runs with the read-model settings (minimal WAL: see pgcluster.ReadModelSettings).
	pgConn, err := pgx.Connect(context.Background(), "host="+filepath.Join(dir, "postgres", "run")+" port=5432 user=anchorage dbname=anchorage sslmode=disable")
	require.NoError(t, err)
	for name, want := range pgcluster.ReadModelSettings() {
		var got string
		require.NoError(t, pgConn.QueryRow(context.Background(), "SELECT current_setting($1)", name).Scan(&got))
		require.Equal(t, want, got, "managed PostgreSQL setting %s", name)
	}
	require.NoError(t, pgConn.Close(context.Background()))

	// Restart keeps everything: the pin, the org and the token in dev.env.
	stop()
	node2, _, stop2 := devRun(t, dir)
	defer stop2()
	require.Equal(t, node.token, node2.token, "a restart reuses the still-valid token")
	ipfs.run("pin", "remote", "service", "add", "restarted", node2.endpoint, node2.token)
	require.Contains(t, ipfs.run("pin", "remote", "ls", "--service=restarted", "--status=queued,pinning", "--name=e2e"), cid)
	ipfs.run("pin", "remote", "rm", "--service=restarted", "--name=e2e", "--status=queued,pinning", "--force")
	require.NotContains(t, ipfs.run("pin", "remote", "ls", "--service=restarted", "--status=queued,pinning,pinned,failed"), cid)
}
