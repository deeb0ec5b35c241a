package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/anchorage-pin/anchorage/adapters/postgres/pgschema"
	"github.com/anchorage-pin/anchorage/domain"
	"github.com/stretchr/testify/require"
)

// TestDRStandbyMirrorsAndPromotes is the DR drill of docs/backup.md with real processes' parts: a primary
// node with a leafnode listener, `anchorage dr standby` mirroring its log while it takes writes, the primary
// lost, `anchorage dr promote`, and a new node on the promoted store and an empty database answering exactly
// what the primary answered, then taking writes at the next sequence.
func TestDRStandbyMirrorsAndPromotes(t *testing.T) {
	ctx := context.Background()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	leafAddr := ln.Addr().String()
	require.NoError(t, ln.Close())

	dir := t.TempDir()
	n, err := tryStartTestNode(t, dir, pgschema.New(t), nil, func(o *appOptions) {
		o.Cfg.NATS.Domain = "primary"
		o.Cfg.NATS.LeafNodes.Listen = leafAddr
	})
	require.NoError(t, err)
	creds := filepath.Join(dir, "nats", "leafnode-credentials")
	b, err := os.ReadFile(creds)
	require.NoError(t, err, "the primary creates its leafnode credentials")
	require.True(t, strings.HasPrefix(string(b), "anchorage-leaf:"))

	_, tok := n.org(t, "dr", domain.ScopePinsRead, domain.ScopePinsWrite)
	for i := 0; i < 20; i++ {
		postPin(t, n.URL(), tok, fmt.Sprintf(`{"cid":"bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy","name":"dr-%02d"}`, i))
	}

	standbyDir := t.TempDir()
	var out safeBuffer
	sctx, stopStandby := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- run(sctx, []string{"dr", "standby", "--store-dir", standbyDir, "--primary", "nats-leaf://" + leafAddr,
			"--credentials", creds, "--primary-domain", "primary", "--every", "50ms"}, func(string) string { return "" }, &out, &out)
	}()
	caughtUp := func() {
		t.Helper()
		head, err := n.elog.LastSeq(ctx)
		require.NoError(t, err)
		want := fmt.Sprintf("standby: last sequence %d, lag 0,", head)
		require.Eventually(t, func() bool { return strings.Contains(out.String(), want) }, 30*time.Second, 20*time.Millisecond,
			"the standby never reported %q:\n%s", want, &out)
	}
	caughtUp()
	// It keeps following while the primary takes writes.
	var ids []string
	for i := 20; i < 30; i++ {
		ids = append(ids, postPin(t, n.URL(), tok, fmt.Sprintf(`{"cid":"bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy","name":"dr-%02d","meta":{"k":"v"}}`, i)))
	}
	caughtUp()
	head, err := n.elog.LastSeq(ctx)
	require.NoError(t, err)

	queries := []string{"/pins?status=any&limit=1000", "/pins?name=dr-25&status=any", "/pins/" + ids[3], "/pins?meta=%7B%22k%22%3A%22v%22%7D&status=any&limit=3"}
	before := map[string]string{}
	for _, q := range queries {
		code, body := get(t, n.URL()+q, tok)
		require.Equal(t, http.StatusOK, code, body)
		before[q] = body
	}

	// The primary is lost. An unpromoted standby cannot be started on.
	n.close(ctx)
	stopStandby()
	require.NoError(t, <-done)
	var pout safeBuffer
	require.NoError(t, run(ctx, []string{"dr", "promote", "--store-dir", standbyDir}, func(string) string { return "" }, &pout, &pout))
	require.Contains(t, pout.String(), fmt.Sprintf("is now an event log with %d events", head))

	// A new node on the promoted store and an empty database, with the same signing keys.
	dir2 := t.TempDir()
	key, err := os.ReadFile(filepath.Join(dir, "k1.key"))
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir2, "k1.key"), key, 0o600))
	m, err := tryStartTestNode(t, dir2, pgschema.New(t), n.kubo, func(o *appOptions) { o.Cfg.NATS.StoreDir = standbyDir })
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		code, _ := get(t, m.URL()+queries[0], tok)
		return code == http.StatusOK
	}, 30*time.Second, 10*time.Millisecond, "the new node never served its rebuilt read models")
	for _, q := range queries {
		_, body := get(t, m.URL()+q, tok)
		require.JSONEq(t, before[q], body, "GET %s on the promoted standby", q)
	}
	id := postPin(t, m.URL(), tok, `{"cid":"bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy","name":"after-failover"}`)
	code, body := get(t, m.URL()+"/pins/"+id, tok)
	require.Equal(t, http.StatusOK, code, body)
	after, err := m.elog.LastSeq(ctx)
	require.NoError(t, err)
	require.Greater(t, after, head, "appends continue after the mirrored sequences")

	// Promoting again is harmless.
	m.close(ctx)
	require.NoError(t, run(ctx, []string{"dr", "promote", "--store-dir", standbyDir}, func(string) string { return "" }, &pout, &pout))
}

// TestDRStandbyRefusesBadInput: each mistake gets a message that says what to fix.
func TestDRStandbyRefusesBadInput(t *testing.T) {
	ctx := context.Background()
	creds := filepath.Join(t.TempDir(), "creds")
	require.NoError(t, os.WriteFile(creds, []byte("anchorage-leaf:secret\n"), 0o600))
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--primary", "nats://127.0.0.1:1", "--credentials", creds, "--primary-domain", "primary"}, "nats-leaf://HOST:PORT"},
		{[]string{"--primary", "nats-leaf://u:p@127.0.0.1:1", "--credentials", creds, "--primary-domain", "primary"}, "credentials go in --credentials"},
		{[]string{"--primary", "nats-leaf://127.0.0.1:1", "--credentials", creds + ".missing", "--primary-domain", "primary"}, "leafnode-credentials"},
		{[]string{"--primary", "nats-leaf://127.0.0.1:1", "--credentials", creds, "--primary-domain", "standby"}, "give the standby its own"},
	} {
		var out safeBuffer
		err := run(ctx, append([]string{"dr", "standby", "--store-dir", t.TempDir()}, tc.args...), func(string) string { return "" }, &out, &out)
		require.ErrorContains(t, err, tc.want)
		require.NotContains(t, err.Error(), "secret")
	}
	var out safeBuffer
	err := run(ctx, []string{"dr", "promote", "--store-dir", t.TempDir()}, func(string) string { return "" }, &out, &out)
	require.ErrorContains(t, err, "holds no event store")
}
