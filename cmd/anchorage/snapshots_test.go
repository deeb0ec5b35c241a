package main

import (
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// Worker snapshots on disk: none at first, a whole one after Save, the old one kept when a Save fails, no
// temporary files left behind, and node ids that are not file names kept apart.
func TestFileSnapshots(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "worker")
	s := fileSnapshots{dir: dir}
	_, err := s.Load("n1")
	require.ErrorIs(t, err, fs.ErrNotExist)

	read := func(node string) string {
		rc, err := s.Load(node)
		require.NoError(t, err)
		defer rc.Close()
		b, err := io.ReadAll(rc)
		require.NoError(t, err)
		return string(b)
	}
	write := func(node, body string) error {
		return s.Save(node, func(w io.Writer) error { _, err := io.WriteString(w, body); return err })
	}
	require.NoError(t, write("n1", "first"))
	require.Equal(t, "first", read("n1"))
	require.NoError(t, write("n1", "second"))
	require.Equal(t, "second", read("n1"))

	boom := errors.New("boom")
	err = s.Save("n1", func(w io.Writer) error {
		_, _ = io.WriteString(w, "partial")
		return boom
	})
	require.ErrorIs(t, err, boom)
	require.Equal(t, "second", read("n1"), "a failed save leaves the old snapshot")

	require.NoError(t, write("a/b", "slashed"))
	require.NoError(t, write("a%2Fb", "escaped"))
	require.Equal(t, "slashed", read("a/b"))
	require.Equal(t, "escaped", read("a%2Fb"))

	// Temporary files of a save that was killed are cleared by the next one (and only the node's own).
	for _, name := range []string{"n1.snapshot.123.tmp", "n1.snapshot.456.tmp", "a%252Fb.snapshot.1.tmp"} {
		require.NoError(t, os.WriteFile(filepath.Join(dir, name), []byte("torn"), 0o600))
	}
	require.NoError(t, write("n1", "third"))
	require.Equal(t, "third", read("n1"))
	require.FileExists(t, filepath.Join(dir, "a%252Fb.snapshot.1.tmp"))
	require.NoError(t, os.Remove(filepath.Join(dir, "a%252Fb.snapshot.1.tmp")))

	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	require.Len(t, entries, 3, "one file per node, no temporary files: %v", entries)
}
