// Package kubotest provides real Kubo daemons to tests.
//
// Tests never skip for lack of a binary: the first call to Binary in a test
// binary runs kubod.EnsureBinary, which builds Kubo into the user cache when
// it is missing (several minutes once per machine; set ANCHORAGE_KUBO_BIN to
// use an existing binary). Run such tests with a generous -timeout on a cold
// machine.
package kubotest

import (
	"context"
	"io"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/anchorage-pin/anchorage/adapters/kubo/kubod"
)

// BuildTimeout bounds the one-off Kubo build done by Binary.
const BuildTimeout = 30 * time.Minute

var (
	binOnce sync.Once
	binPath string
	binErr  error
)

// Binary returns the path of a Kubo kubod.Version binary, building it (once
// per test binary, progress on stderr) when it is not cached.
func Binary(tb testing.TB) string {
	tb.Helper()
	binOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), BuildTimeout)
		defer cancel()
		log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
		warnIfBuildMayTimeOut(tb, log)
		binPath, binErr = kubod.EnsureBinary(ctx, kubod.BuildOptions{Logger: log})
	})
	if binErr != nil {
		tb.Fatalf("kubotest: no Kubo binary: %v", binErr)
	}
	return binPath
}

// Daemon starts a loopback-only daemon on a fresh repo in tb.TempDir() and
// stops it in tb.Cleanup.
func Daemon(tb testing.TB) *kubod.Daemon {
	tb.Helper()
	return Start(tb, kubod.Options{RepoDir: tb.TempDir()})
}

// Start starts a daemon with opts, filling in Binary (from Binary) and a quiet
// Logger when unset, and stops it in tb.Cleanup. Use it to restart a daemon on
// an existing RepoDir.
func Start(tb testing.TB, opts kubod.Options) *kubod.Daemon {
	tb.Helper()
	if opts.Binary == "" {
		opts.Binary = Binary(tb)
	}
	if opts.Logger == nil {
		// Daemon output goes to Daemon.Logs and into Start's error; keep
		// test logs for failures.
		opts.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*kubod.DefaultStartTimeout)
	defer cancel()
	d, err := kubod.Start(ctx, opts)
	if err != nil {
		tb.Fatalf("kubotest: %v", err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := d.Stop(ctx); err != nil {
			tb.Errorf("kubotest: stop daemon: %v", err)
		}
	})
	return d
}

// warnIfBuildMayTimeOut says so when Kubo is not cached and the test binary's
// -timeout (10m by default) is shorter than a cold build can take.
func warnIfBuildMayTimeOut(tb testing.TB, log *slog.Logger) {
	if os.Getenv(kubod.EnvBinary) != "" {
		return
	}
	if p, err := kubod.CachedPath(kubod.BuildOptions{}); err != nil {
		return
	} else if _, err := os.Stat(p); err == nil {
		return
	}
	dl, ok := tb.(interface{ Deadline() (time.Time, bool) })
	if !ok {
		return
	}
	if end, ok := dl.Deadline(); ok && time.Until(end) < 20*time.Minute {
		log.Warn("kubotest: Kubo is not cached and a cold build takes 4-15 min; if this test binary times out, rerun with -timeout 30m",
			"timeout_in", time.Until(end).Round(time.Second))
	}
}
