package main

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/anchorage-pin/anchorage/adapters/postgres"
	"github.com/anchorage-pin/anchorage/adapters/postgres/pgschema"
	"github.com/anchorage-pin/anchorage/domain"
	"github.com/stretchr/testify/require"
)

// tearLastBlock cuts the last message block of a stopped node's stream in half; crashed also removes the
// stream index, as a crash before it was written would.
func tearLastBlock(t *testing.T, dataDir string, crashed bool) {
	t.Helper()
	msgs := filepath.Join(dataDir, "nats", "jetstream", "$G", "streams", "ANCHORAGE", "msgs")
	blks, err := filepath.Glob(filepath.Join(msgs, "*.blk"))
	require.NoError(t, err)
	require.NotEmpty(t, blks)
	last := blks[len(blks)-1]
	b, err := os.ReadFile(last)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(last, b[:len(b)/2], 0o600))
	if crashed {
		require.NoError(t, os.Remove(filepath.Join(msgs, "index.db")))
	}
}

// pinCount is the count a GET /pins?status=any answers, once reads are served again.
func pinCount(t *testing.T, n *testNode, token string) int {
	t.Helper()
	var count int
	require.Eventually(t, func() bool {
		code, body := get(t, n.URL()+"/pins?status=any&limit=1", token)
		if code != http.StatusOK {
			return false
		}
		var pr struct{ Count int }
		if err := json.Unmarshal([]byte(body), &pr); err != nil {
			return false
		}
		count = pr.Count
		return true
	}, 30*time.Second, 10*time.Millisecond)
	return count
}

// Drill: the event log loses its tail (a torn last block, and a crash before the index was written: the
// server silently ends the log where the damage starts). The read models have applied the lost events, which
// is how the loss shows. The node refuses to start, names the damage and both remedies, and keeps refusing
// (marker file) until the loss is accepted; then it rebuilds the read models from what is left, and a new
// write, which reuses a lost sequence, is projected rather than skipped.
func TestDamagedLogTailRefusesToStart(t *testing.T) {
	dir := t.TempDir()
	db := pgschema.New(t)
	n := startTestNodeOn(t, dir, db, nil)
	_, tok := n.org(t, "damaged", domain.ScopePinsRead, domain.ScopePinsWrite)
	for i := 0; i < 60; i++ {
		postPin(t, n.URL(), tok, `{"cid":"bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy","name":"p`+strconv.Itoa(i)+`"}`)
	}
	require.Equal(t, 60, pinCount(t, n, tok))
	head, err := n.elog.LastSeq(context.Background())
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, n.runner.Watermarks().Wait(ctx, postgres.ProjectionPins, head))
	n.close(context.Background())
	tearLastBlock(t, dir, true)

	_, err = tryStartTestNode(t, dir, db, n.kubo, nil)
	require.ErrorIs(t, err, errLogDamaged)
	require.Contains(t, err.Error(), "were lost from the end of the log")
	require.Contains(t, err.Error(), "--accept-log-loss")
	require.Contains(t, err.Error(), "anchorage events import")
	require.FileExists(t, filepath.Join(dir, "nats", lostDataMarker))

	// Even with the evidence gone (a brand-new database would rebuild silently), the marker keeps it refused.
	_, err = tryStartTestNode(t, dir, pgschema.New(t), n.kubo, nil)
	require.ErrorIs(t, err, errLogDamaged)
	require.Contains(t, err.Error(), "an earlier start found damage")

	m, err := tryStartTestNode(t, dir, db, n.kubo, func(o *appOptions) { o.AcceptLogLoss = true })
	require.NoError(t, err)
	left := pinCount(t, m, tok)
	require.Less(t, left, 60, "the torn block lost pins")
	require.Eventually(t, func() bool {
		_, err := os.Stat(filepath.Join(dir, "nats", lostDataMarker))
		return os.IsNotExist(err)
	}, 10*time.Second, 10*time.Millisecond, "the marker is removed once the read models are rebuilt")
	id := postPin(t, m.URL(), tok, `{"cid":"bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy","name":"after"}`)
	code, _ := get(t, m.URL()+"/pins/"+id, tok)
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, left+1, pinCount(t, m, tok))
	m.close(context.Background())

	// The accepted state is the new normal: a plain restart starts.
	r := startTestNodeOn(t, dir, db, n.kubo)
	require.Equal(t, left+1, pinCount(t, r, tok))
}

// Drill: a torn block after a clean shutdown leaves a gap the server's own counters show. Once accepted, the
// same gap does not stop later starts.
func TestDamagedLogGapAcceptedOnce(t *testing.T) {
	dir := t.TempDir()
	db := pgschema.New(t)
	n := startTestNodeOn(t, dir, db, nil)
	_, tok := n.org(t, "gap", domain.ScopePinsRead, domain.ScopePinsWrite)
	for i := 0; i < 60; i++ {
		postPin(t, n.URL(), tok, `{"cid":"bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy"}`)
	}
	n.close(context.Background())
	tearLastBlock(t, dir, false)

	_, err := tryStartTestNode(t, dir, db, n.kubo, nil)
	require.ErrorIs(t, err, errLogDamaged)
	require.Contains(t, err.Error(), "sequences in that range are missing")
	require.Contains(t, err.Error(), ".blk")

	m, err := tryStartTestNode(t, dir, db, n.kubo, func(o *appOptions) { o.AcceptLogLoss = true })
	require.NoError(t, err)
	left := pinCount(t, m, tok)
	require.Less(t, left, 60)
	require.FileExists(t, filepath.Join(dir, "nats", acceptedLossFile))
	m.close(context.Background())

	r := startTestNodeOn(t, dir, db, n.kubo)
	require.Equal(t, left, pinCount(t, r, tok))
}

// Drill: restore the log from a backup. The node's database still holds read models of events newer than the
// backup (ahead of the restored log): the start after the import rebuilds them from the restored log instead of
// refusing, and every answer equals what it was when the backup was taken.
func TestRestoreFromBackupRebuildsReadModels(t *testing.T) {
	dir := t.TempDir()
	db := pgschema.New(t)
	n := startTestNodeOn(t, dir, db, nil)
	_, tok := n.org(t, "restore", domain.ScopePinsRead, domain.ScopePinsWrite)
	for i := 0; i < 30; i++ {
		postPin(t, n.URL(), tok, `{"cid":"bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy","name":"b`+strconv.Itoa(i%7)+`"}`)
	}
	queries := []string{"/pins?status=any", "/pins?status=any&limit=3", "/pins?name=b3"}
	before := map[string]string{}
	for _, q := range queries {
		_, before[q] = get(t, n.URL()+q, tok)
	}
	backup := filepath.Join(t.TempDir(), "backup.jsonl.gz")
	f, err := os.Create(backup)
	require.NoError(t, err)
	_, err = n.elog.Export(context.Background(), f, nil)
	require.NoError(t, err)
	require.NoError(t, f.Close())
	// Written after the backup: lost by the restore.
	for i := 0; i < 10; i++ {
		postPin(t, n.URL(), tok, `{"cid":"bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy","name":"late"}`)
	}
	require.Equal(t, 40, pinCount(t, n, tok))
	n.close(context.Background())

	require.NoError(t, os.Rename(filepath.Join(dir, "nats", "jetstream"), filepath.Join(dir, "jetstream-damaged")))
	out, errOut, err := runEvents("import", "--data-dir", dir, backup)
	require.NoError(t, err, errOut)
	require.Contains(t, out, "imported")

	m := startTestNodeOn(t, dir, db, n.kubo)
	require.Equal(t, 30, pinCount(t, m, tok))
	for _, q := range queries {
		_, body := get(t, m.URL()+q, tok)
		require.JSONEq(t, before[q], body, "GET %s after the restore", q)
	}
	require.Eventually(t, func() bool {
		_, err := os.Stat(filepath.Join(dir, "nats", restoredMarker))
		return os.IsNotExist(err)
	}, 10*time.Second, 10*time.Millisecond)
	m.close(context.Background())
	// An ordinary restart afterwards.
	r := startTestNodeOn(t, dir, db, n.kubo)
	require.Equal(t, 30, pinCount(t, r, tok))
}
