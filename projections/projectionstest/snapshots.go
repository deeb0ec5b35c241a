// Package projectionstest holds test doubles for the projections package's ports.
package projectionstest

import (
	"bytes"
	"io"
	"io/fs"
	"sync"
)

// Snapshots keeps node worker snapshots in memory (a projections.SnapshotStore).
type Snapshots struct {
	mu    sync.Mutex
	Files map[string][]byte // by node; set before use to start from a given snapshot
	saves int
}

// Load returns the node's snapshot, fs.ErrNotExist when there is none.
func (s *Snapshots) Load(node string) (io.ReadCloser, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	b, ok := s.Files[node]
	if !ok {
		return nil, fs.ErrNotExist
	}
	return io.NopCloser(bytes.NewReader(b)), nil
}

// Save replaces the node's snapshot with what write writes.
func (s *Snapshots) Save(node string, write func(io.Writer) error) error {
	var buf bytes.Buffer
	if err := write(&buf); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.Files == nil {
		s.Files = map[string][]byte{}
	}
	s.Files[node] = buf.Bytes()
	s.saves++
	return nil
}

// Saved counts the snapshots saved so far.
func (s *Snapshots) Saved() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.saves
}
