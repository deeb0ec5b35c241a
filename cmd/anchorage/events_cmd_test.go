package main

import (
	"bytes"
	"compress/gzip"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/anchorage-pin/anchorage/adapters/natsjs"
	"github.com/anchorage-pin/anchorage/adapters/natsjs/natstest"
	"github.com/anchorage-pin/anchorage/adapters/tokens"
	"github.com/anchorage-pin/anchorage/cmd/anchorage/internal/config"
	"github.com/anchorage-pin/anchorage/domain"
	"github.com/anchorage-pin/anchorage/events"
	"github.com/google/uuid"
	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"
)

// eventsNode is the part of a running node the events commands reach: its embedded NATS server listening on
// loopback with the credentials file, the recorded client URL and DIR/anchorage.yaml, as `anchorage dev` leaves
// them, with an event log holding n events. No PostgreSQL or Kubo: export needs neither.
func eventsNode(t *testing.T, n int) (dir string, l *natsjs.EventLog) {
	t.Helper()
	dir = t.TempDir()
	keyPath := filepath.Join(dir, "k1.key")
	require.NoError(t, tokens.GenerateKeyFile(keyPath))
	cfg := config.Default()
	cfg.DataDir = dir
	cfg.NATS.Listen = "127.0.0.1:0"
	cfg.Postgres.URL = "postgres://anchorage@127.0.0.1:1/anchorage"
	cfg.Postgres.APIURL = "postgres://anchorage_api@127.0.0.1:1/anchorage"
	cfg.Auth.APIToken.SigningKeys = []config.SigningKey{{ID: "k1", Path: keyPath, Primary: true}}
	user, pass, err := natsCredentials(cfg.NATSCredentialsFile(), true)
	require.NoError(t, err)
	srv, err := natsjs.StartServer(natsjs.ServerConfig{StoreDir: cfg.NATSStoreDir(), Listen: cfg.NATS.Listen, User: user, Password: pass})
	require.NoError(t, err)
	t.Cleanup(func() { srv.Shutdown(context.Background()) })
	require.NoError(t, os.WriteFile(filepath.Join(cfg.NATSStoreDir(), "client-url"), []byte(srv.ClientURL()+"\n"), 0o600))
	b, err := yaml.Marshal(cfg)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "anchorage.yaml"), b, 0o600))

	l, err = natsjs.OpenLog(context.Background(), srv, natsjs.LogConfig{})
	require.NoError(t, err)
	t.Cleanup(l.Close)
	org := domain.OrgIDForSlug("acme")
	env := func(ev events.Event) events.Envelope {
		e, err := events.New(uuid.NewString(), time.Now(), "test:events", "", ev)
		require.NoError(t, err)
		return e
	}
	_, err = l.Append(context.Background(), domain.Message{Subject: events.OrgSubject(org), Envelope: env(events.OrgCreated{OrgID: org, Slug: "acme"})})
	require.NoError(t, err)
	var msgs []domain.Message
	for range n - 1 {
		id := uuid.NewString()
		msgs = append(msgs, domain.Message{Subject: events.PinSubject(org, id), Envelope: env(events.PinRequested{OrgID: org, RequestID: id, CID: "bafkqaaa", Created: time.Now().UTC()})})
	}
	_, err = l.AppendBulk(context.Background(), msgs)
	require.NoError(t, err)
	return dir, l
}

func runEvents(args ...string) (stdout, stderr string, err error) {
	var o, e bytes.Buffer
	err = run(context.Background(), append([]string{"events"}, args...), func(string) string { return "" }, &o, &e)
	return o.String(), e.String(), err
}

func TestEventsExportImport(t *testing.T) {
	t.Parallel()
	const n = 1500
	src, srcLog := eventsNode(t, n)
	backups := t.TempDir()
	file := filepath.Join(backups, "anchorage.jsonl.gz")

	out, _, err := runEvents("export", "--data-dir", src, "--out", file)
	require.NoError(t, err, out)
	require.Contains(t, out, "exported 1500 events (sequences 1..1500) to "+file)
	t.Logf("export stdout:\n%s", out)
	require.Regexp(t, `file: +\d+ bytes, sha256 [0-9a-f]{64}`, out)
	entries, err := os.ReadDir(backups)
	require.NoError(t, err)
	require.Len(t, entries, 1, "no temporary file is left behind")
	st, err := os.Stat(file)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), st.Mode().Perm())

	// A second export through --config replaces the file atomically.
	out, _, err = runEvents("export", "--config", filepath.Join(src, "anchorage.yaml"), "--out", file)
	require.NoError(t, err, out)

	// Restore into a fresh dev data dir (no anchorage.yaml yet).
	dst := filepath.Join(t.TempDir(), "restored")
	out, errOut, err := runEvents("import", "--data-dir", dst, file)
	require.NoError(t, err, errOut)
	require.Contains(t, errOut, "verified "+file+": 1500 events")
	require.Contains(t, out, "imported 1500 events (sequences 1..1500)")
	require.Contains(t, out, "anchorage dev --data-dir "+dst)
	require.Contains(t, out, "anchorage replay verify")
	require.FileExists(t, filepath.Join(dst, "nats", restoredMarker), "the next start rebuilds the read models")
	t.Logf("import stdout:\n%s\nstderr:\n%s", out, errOut)
	leftovers, err := filepath.Glob(filepath.Join(dst, "nats", ".import-*"))
	require.NoError(t, err)
	require.Empty(t, leftovers)

	// The node that starts there finds the same log.
	srv := natstest.ServerIn(t, filepath.Join(dst, "nats"), natsjs.SyncGroup)
	got, err := natsjs.OpenLog(t.Context(), srv, natsjs.LogConfig{})
	require.NoError(t, err)
	last, err := got.LastSeq(t.Context())
	require.NoError(t, err)
	require.Equal(t, uint64(n), last)
	subj := events.OrgSubject(domain.OrgIDForSlug("acme"))
	want, _, err := srcLog.Load(t.Context(), subj)
	require.NoError(t, err)
	have, _, err := got.Load(t.Context(), subj)
	require.NoError(t, err)
	require.Equal(t, want, have)
	got.Close()
	srv.Shutdown(context.Background())

	// That store is no longer fresh: refused without opening it.
	_, _, err = runEvents("import", "--data-dir", dst, file)
	require.ErrorContains(t, err, "already exists")
	require.ErrorContains(t, err, "fresh one")

	// A running node's log is not empty: refused, and left alone.
	_, _, err = runEvents("import", "--data-dir", src, file)
	require.ErrorIs(t, err, natsjs.ErrStreamNotEmpty)
	last, err = srcLog.LastSeq(t.Context())
	require.NoError(t, err)
	require.Equal(t, uint64(n), last)
}

func TestEventsImportRejectsDamagedBackupBeforeWriting(t *testing.T) {
	t.Parallel()
	src, _ := eventsNode(t, 300)
	file := filepath.Join(t.TempDir(), "b.jsonl.gz")
	_, _, err := runEvents("export", "--data-dir", src, "--out", file)
	require.NoError(t, err)

	// Truncate the uncompressed content after 200 events and recompress: a well-formed gzip file.
	raw := gunzip(t, file)
	lines := strings.SplitAfter(string(raw), "\n")
	truncated := filepath.Join(t.TempDir(), "truncated.jsonl.gz")
	writeGzip(t, truncated, strings.Join(lines[:201], ""))

	dst := t.TempDir()
	_, _, err = runEvents("import", "--data-dir", dst, truncated)
	require.ErrorContains(t, err, "is not a usable backup, nothing was imported")
	require.ErrorContains(t, err, "truncated")
	_, serr := os.Stat(filepath.Join(dst, "nats", "jetstream"))
	require.ErrorIs(t, serr, os.ErrNotExist, "no store was created")

	// The same data dir takes the intact backup afterwards.
	out, _, err := runEvents("import", "--data-dir", dst, file)
	require.NoError(t, err)
	require.Contains(t, out, "imported 300 events")
}

func TestEventsCommandErrors(t *testing.T) {
	t.Parallel()
	_, _, err := runEvents("export", "--out", filepath.Join(t.TempDir(), "x.gz"))
	require.ErrorContains(t, err, "--config FILE")
	_, _, err = runEvents("export", "--data-dir", t.TempDir(), "--out", filepath.Join(t.TempDir(), "x.gz"))
	require.ErrorContains(t, err, "anchorage.yaml not found")
	_, _, err = runEvents("export", "--data-dir", t.TempDir())
	require.ErrorContains(t, err, `"out" not set`)
	_, _, err = runEvents("import", "--data-dir", t.TempDir(), filepath.Join(t.TempDir(), "missing.gz"))
	require.ErrorContains(t, err, "no such file")

	// A stopped node cannot be exported from: the error says so.
	src, _ := eventsNode(t, 10)
	cfgPath := filepath.Join(src, "anchorage.yaml")
	require.NoError(t, os.WriteFile(filepath.Join(src, "nats", "client-url"), []byte("nats://127.0.0.1:1\n"), 0o600))
	_, _, err = runEvents("export", "--config", cfgPath, "--out", filepath.Join(t.TempDir(), "x.gz"))
	require.ErrorContains(t, err, "is the node running?")
}

func gunzip(t *testing.T, path string) []byte {
	t.Helper()
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	zr, err := gzip.NewReader(f)
	require.NoError(t, err)
	b, err := io.ReadAll(zr)
	require.NoError(t, err)
	return b
}

func writeGzip(t *testing.T, path, content string) {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	_, err := zw.Write([]byte(content))
	require.NoError(t, err)
	require.NoError(t, zw.Close())
	require.NoError(t, os.WriteFile(path, buf.Bytes(), 0o600))
}
