package main

import (
	"bufio"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"strings"
)

// fileSnapshots keeps node workers' start-up snapshots (projections.WorkerSnapshots) as files under
// <dataDir>/worker, one per node.
type fileSnapshots struct{ dir string }

func (f fileSnapshots) path(node string) string {
	return filepath.Join(f.dir, url.PathEscape(node)+".snapshot")
}

// Load opens the node's snapshot (an error wrapping fs.ErrNotExist when there is none).
func (f fileSnapshots) Load(node string) (io.ReadCloser, error) { return os.Open(f.path(node)) }

// Save writes the snapshot to a temporary file, syncs it and renames it over the old one, so a crash leaves
// either the old snapshot or the new one whole (a torn file would fail its checksum anyway).
func (f fileSnapshots) Save(node string, write func(io.Writer) error) error {
	if err := os.MkdirAll(f.dir, 0o700); err != nil {
		return err
	}
	path := f.path(node)
	// A process killed while writing leaves its temporary file: the next save clears them.
	if stale, _ := filepath.Glob(filepath.Join(f.dir, globEscape(filepath.Base(path))+".*.tmp")); len(stale) > 0 {
		for _, s := range stale {
			_ = os.Remove(s)
		}
	}
	tmp, err := os.CreateTemp(f.dir, filepath.Base(path)+".*.tmp")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // after the rename, nothing to remove
	bw := bufio.NewWriterSize(tmp, 1<<20)
	if err := write(bw); err != nil {
		tmp.Close()
		return err
	}
	if err := bw.Flush(); err != nil {
		tmp.Close()
		return err
	}
	return syncAndRename(tmp, path)
}

// globEscape quotes the glob metacharacters of a file name (a node id may hold '[' or '*').
func globEscape(s string) string {
	var b strings.Builder
	for _, r := range s {
		if strings.ContainsRune(`*?[\\`, r) {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}
