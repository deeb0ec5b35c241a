package natsjs

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// groupSync is a group commit for the event stream on a single server.
//
// Why: with SyncAlways the server fsyncs each message under the stream lock, one after another: measured
// 1.1–2k appends/s on this machine class however many writers there are. Without it, an R1 file stream still
// writes every message into its block file before acknowledging it (filestore "flush in place"), but fsyncs only
// on a 2-minute timer. groupSync closes that gap: after its ack, an append waits for an fdatasync of the stream's
// last block file that *started after* the ack. Every append acknowledged before that fsync began is covered by
// it, so many concurrent appends share one fsync, and none is acknowledged to a client before it is on disk.
//
// It relies on two properties of nats-server's filestore, both pinned by TestGroupSyncAssumptions: block files
// are <stream>/msgs/<index>.blk with increasing indexes, and an acknowledged message is already in its block file.
type groupSync struct {
	dir string // the stream's msgs directory

	mu      sync.Mutex
	next    *syncRound
	kick    chan struct{}
	failed  error
	stopped bool

	// loop-owned
	cur    *os.File
	curIdx int

	observe func(d time.Duration, waiters int)
}

type syncRound struct {
	done    chan struct{}
	err     error
	waiters int
}

func newGroupSync(streamDir string, observe func(time.Duration, int)) (*groupSync, error) {
	g := &groupSync{
		dir:     filepath.Join(streamDir, "msgs"),
		next:    &syncRound{done: make(chan struct{})},
		kick:    make(chan struct{}, 1),
		observe: observe,
	}
	if g.observe == nil {
		g.observe = func(time.Duration, int) {}
	}
	// Make everything already on disk durable once, including blocks written before a crash or in another mode.
	if err := g.syncAll(); err != nil {
		return nil, err
	}
	go g.loop()
	return g, nil
}

// Wait returns once everything the stream acknowledged before the call is on disk.
func (g *groupSync) Wait(ctx context.Context) error {
	g.mu.Lock()
	if g.failed != nil {
		err := g.failed
		g.mu.Unlock()
		return err
	}
	if g.stopped {
		g.mu.Unlock()
		return errors.New("natsjs: event log is closed")
	}
	r := g.next
	r.waiters++
	g.mu.Unlock()
	select {
	case g.kick <- struct{}{}:
	default:
	}
	select {
	case <-r.done:
		return r.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (g *groupSync) loop() {
	for range g.kick {
		g.mu.Lock()
		r := g.next
		if r.waiters == 0 {
			stopped := g.stopped
			g.mu.Unlock()
			if stopped {
				return
			}
			continue
		}
		g.next = &syncRound{done: make(chan struct{})}
		g.mu.Unlock()

		start := time.Now()
		err := g.syncLast()
		g.observe(time.Since(start), r.waiters)
		if err != nil {
			// After a failed fsync the kernel may have dropped the dirty pages: nothing written since can be
			// trusted to be durable. Fail every later append until an operator restarts (and the store is checked).
			err = fmt.Errorf("natsjs: fsync of event stream failed; refusing further appends until restart: %w", err)
			g.mu.Lock()
			g.failed = err
			g.mu.Unlock()
		}
		r.err = err
		close(r.done)
	}
}

// syncLast fdatasyncs the last block file, following the filestore onto new blocks (and syncing the directory
// so a new block's entry is durable too).
func (g *groupSync) syncLast() error {
	if g.cur == nil {
		idx, err := lastBlock(g.dir)
		if err != nil {
			return err
		}
		if idx == 0 {
			return nil // nothing written yet
		}
		// Blocks may have been created and filled since the log was opened (appends that did not wait): sync
		// them all once, not just the last (fsyncing a clean file is cheap).
		if err := g.syncAll(); err != nil {
			return err
		}
		if err := g.open(idx); err != nil {
			return err
		}
	}
	for {
		next := filepath.Join(g.dir, strconv.Itoa(g.curIdx+1)+".blk")
		if _, err := os.Stat(next); err != nil {
			break
		}
		// The filestore moved on: seal the old block and follow.
		if err := unix.Fdatasync(int(g.cur.Fd())); err != nil {
			return err
		}
		_ = g.cur.Close()
		if err := g.open(g.curIdx + 1); err != nil {
			return err
		}
		if err := syncDir(g.dir); err != nil {
			return err
		}
	}
	return unix.Fdatasync(int(g.cur.Fd()))
}

func (g *groupSync) open(idx int) error {
	f, err := os.Open(filepath.Join(g.dir, strconv.Itoa(idx)+".blk"))
	if err != nil {
		return err
	}
	g.cur, g.curIdx = f, idx
	return nil
}

// syncAll fsyncs every block and the directories above them.
func (g *groupSync) syncAll() error {
	entries, err := os.ReadDir(g.dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".blk") {
			continue
		}
		f, err := os.Open(filepath.Join(g.dir, e.Name()))
		if err != nil {
			return err
		}
		err = f.Sync()
		_ = f.Close()
		if err != nil {
			return err
		}
	}
	for d := g.dir; ; d = filepath.Dir(d) {
		if err := syncDir(d); err != nil {
			return err
		}
		if filepath.Base(d) == "jetstream" || d == filepath.Dir(d) {
			return nil
		}
	}
}

func (g *groupSync) close() {
	g.mu.Lock()
	g.stopped = true
	g.mu.Unlock()
	select {
	case g.kick <- struct{}{}:
	default:
	}
}

func lastBlock(dir string) (int, error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	last := 0
	for _, e := range entries {
		n, ok := strings.CutSuffix(e.Name(), ".blk")
		if !ok {
			continue
		}
		if i, err := strconv.Atoi(n); err == nil && i > last {
			last = i
		}
	}
	return last, nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
