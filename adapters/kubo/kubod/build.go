package kubod

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// Environment variables read by EnsureBinary.
const (
	// EnvBinary names a Kubo binary to use as is (no cache, no build).
	EnvBinary = "ANCHORAGE_KUBO_BIN"
	// EnvCacheDir overrides the cache root (default <os.UserCacheDir()>/anchorage/kubo).
	EnvCacheDir = "ANCHORAGE_KUBO_CACHE"
)

// BuildOptions tunes EnsureBinary. The zero value is ready to use.
type BuildOptions struct {
	// CacheDir is the cache root; the binary lives at <CacheDir>/<Version>/ipfs.
	// Empty means $ANCHORAGE_KUBO_CACHE, else <os.UserCacheDir()>/anchorage/kubo.
	CacheDir string
	// Logger receives build progress. Nil means slog.Default().
	Logger *slog.Logger
	// Go is the go command used to build. Empty means "go" looked up on PATH.
	Go string
}

// verified remembers binaries whose `ipfs version -n` matched, keyed by path,
// size and mtime, so a process checks a cached binary once.
var verified sync.Map // binaryKey -> struct{}

type binaryKey struct {
	path  string
	size  int64
	mtime time.Time
}

// EnsureBinary returns the path of a Kubo Version binary.
//
// In order: $ANCHORAGE_KUBO_BIN if set (used as is; a version mismatch is only
// logged); the cached <cache>/<Version>/ipfs if `ipfs version -n` reports
// Version; otherwise it builds Kubo from the embedded tools/kubo module with
// `go build -trimpath -ldflags "-s -w -X ...telemetry.defaultEndpoint="`,
// which takes several minutes on a cold Go cache. Concurrent callers, in this
// process or others, build at most once: builders serialise on a lock file in
// the cache directory and the binary appears by atomic rename.
func EnsureBinary(ctx context.Context, opts BuildOptions) (string, error) {
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	if bin := os.Getenv(EnvBinary); bin != "" {
		return explicitBinary(ctx, log, bin)
	}

	bin, err := CachedPath(opts)
	if err != nil {
		return "", err
	}
	dir := filepath.Dir(bin)
	if ok, _ := cachedBinaryOK(ctx, bin); ok {
		return bin, nil
	}

	goCmd := opts.Go
	if goCmd == "" {
		goCmd = "go"
	}
	goPath, err := exec.LookPath(goCmd)
	if err != nil {
		return "", fmt.Errorf("kubod: Kubo %s is not cached at %s and building it needs the Go toolchain, but %q was not found on PATH: install Go, or set %s to an ipfs %s binary: %w",
			Version, bin, goCmd, EnvBinary, Version, err)
	}

	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("kubod: create cache dir: %w", err)
	}
	unlock, err := lockFile(ctx, filepath.Join(dir, ".build.lock"), func() {
		log.Info("waiting for another builder of Kubo to finish", "version", Version, "dir", dir)
	})
	if err != nil {
		return "", fmt.Errorf("kubod: lock %s: %w", dir, err)
	}
	defer unlock()

	// Another builder may have finished while we waited for the lock.
	if ok, _ := cachedBinaryOK(ctx, bin); ok {
		return bin, nil
	}
	if err := build(ctx, log, goPath, dir, bin); err != nil {
		return "", err
	}
	return bin, nil
}

// CachedPath returns where EnsureBinary caches the binary for opts,
// <cache root>/<Version>/ipfs, whether or not it exists yet.
func CachedPath(opts BuildOptions) (string, error) {
	root, err := cacheRoot(opts.CacheDir)
	if err != nil {
		return "", err
	}
	return filepath.Join(root, Version, "ipfs"), nil
}

func explicitBinary(ctx context.Context, log *slog.Logger, bin string) (string, error) {
	path, err := exec.LookPath(bin)
	if err != nil {
		return "", fmt.Errorf("kubod: %s=%q: %w", EnvBinary, bin, err)
	}
	if abs, err := filepath.Abs(path); err == nil {
		path = abs
	}
	if ok, got := cachedBinaryOK(ctx, path); !ok {
		log.Warn("Kubo binary from "+EnvBinary+" is not the expected version; using it anyway",
			"path", path, "want", Version, "got", got)
	}
	return path, nil
}

func cacheRoot(dir string) (string, error) {
	if dir == "" {
		dir = os.Getenv(EnvCacheDir)
	}
	if dir == "" {
		ucd, err := os.UserCacheDir()
		if err != nil {
			return "", fmt.Errorf("kubod: no cache dir (set %s or BuildOptions.CacheDir): %w", EnvCacheDir, err)
		}
		dir = filepath.Join(ucd, "anchorage", "kubo")
	}
	return filepath.Abs(dir)
}

// cachedBinaryOK reports whether bin exists and `bin version -n` prints
// Version (without the leading v). A positive answer is memoised per process
// while the file's size and mtime stay the same. got is the version printed.
func cachedBinaryOK(ctx context.Context, bin string) (ok bool, got string) {
	fi, err := os.Stat(bin)
	if err != nil || !fi.Mode().IsRegular() {
		return false, ""
	}
	key := binaryKey{bin, fi.Size(), fi.ModTime()}
	if _, hit := verified.Load(key); hit {
		return true, strings.TrimPrefix(Version, "v")
	}
	got, err = binaryVersion(ctx, bin)
	if err != nil || got != strings.TrimPrefix(Version, "v") {
		return false, got
	}
	verified.Store(key, struct{}{})
	return true, got
}

func binaryVersion(ctx context.Context, bin string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "version", "-n")
	cmd.Env = append(os.Environ(), "IPFS_TELEMETRY=off")
	out, err := cmd.Output()
	return strings.TrimSpace(string(out)), err
}

// build compiles Kubo into dir and renames it to bin. The caller holds the
// directory's build lock.
func build(ctx context.Context, log *slog.Logger, goPath, dir, bin string) error {
	// Leftovers of builders that were killed; nobody else builds while we
	// hold the lock.
	if stale, _ := filepath.Glob(filepath.Join(dir, "build-*")); len(stale) > 0 {
		for _, p := range stale {
			_ = os.RemoveAll(p)
		}
	}

	work, err := os.MkdirTemp(dir, "build-")
	if err != nil {
		return fmt.Errorf("kubod: %w", err)
	}
	defer os.RemoveAll(work)
	if err := os.WriteFile(filepath.Join(work, "go.mod"), embeddedGoMod, 0o644); err != nil {
		return fmt.Errorf("kubod: %w", err)
	}
	if err := os.WriteFile(filepath.Join(work, "go.sum"), embeddedGoSum, 0o644); err != nil {
		return fmt.Errorf("kubod: %w", err)
	}
	tmpBin := filepath.Join(work, "ipfs")

	log.Info("building Kubo "+Version+" once; takes several minutes on first run", "dest", bin)
	start := time.Now()
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, goPath, "build", "-trimpath",
		"-ldflags", "-s -w -X "+telemetryEndpointSymbol+"=",
		"-o", tmpBin, kuboPackage)
	cmd.Dir = work
	cmd.Env = append(os.Environ(),
		"GOWORK=off", // never pick up a go.work from the environment
		"GOFLAGS="+buildGoflags(os.Getenv("GOFLAGS")),
	)
	cmd.Stdout = &out
	cmd.Stderr = &out
	cmd.WaitDelay = 10 * time.Second

	stopTicker := make(chan struct{})
	go func() {
		t := time.NewTicker(time.Minute)
		defer t.Stop()
		for {
			select {
			case <-stopTicker:
				return
			case <-t.C:
				log.Info("still building Kubo "+Version, "elapsed", time.Since(start).Round(time.Second))
			}
		}
	}()
	// Like the daemon, the build dies with this process (a test binary
	// hitting its -timeout, say) instead of running on as an orphan. Unlike
	// the daemon it stays in this process's group: a terminal's Ctrl-C stops
	// go build and the compilers it runs at once.
	setDeathSignal(cmd)
	exited := make(chan error, 1)
	if err = startLocked(cmd, func(err error) { exited <- err }); err == nil {
		err = <-exited
	}
	close(stopTicker)
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("kubod: building Kubo %s: %w", Version, ctx.Err())
		}
		return fmt.Errorf("kubod: building Kubo %s in %s failed: %w\n%s", Version, work, err, tail(out.Bytes(), 4096))
	}
	if ok, got := cachedBinaryOK(ctx, tmpBin); !ok {
		return fmt.Errorf("kubod: built Kubo reports version %q, want %s", got, Version)
	}
	if err := os.Chmod(tmpBin, 0o755); err != nil {
		return fmt.Errorf("kubod: %w", err)
	}
	if err := os.Rename(tmpBin, bin); err != nil {
		return fmt.Errorf("kubod: install Kubo binary: %w", err)
	}
	if fi, err := os.Stat(bin); err == nil {
		verified.Store(binaryKey{bin, fi.Size(), fi.ModTime()}, struct{}{})
	}
	log.Info("built Kubo "+Version, "path", bin, "took", time.Since(start).Round(100*time.Millisecond))
	return nil
}

// buildGoflags keeps the caller's GOFLAGS except -mod (the embedded go.sum
// is complete, so the build runs with -mod=readonly whatever the caller uses).
func buildGoflags(goflags string) string {
	kept := []string{"-mod=readonly"}
	for _, f := range strings.Fields(goflags) {
		if !strings.HasPrefix(f, "-mod=") && !strings.HasPrefix(f, "--mod=") {
			kept = append(kept, f)
		}
	}
	return strings.Join(kept, " ")
}

// tail returns at most the last n bytes of b, starting at a line boundary.
func tail(b []byte, n int) string {
	if len(b) <= n {
		return string(b)
	}
	b = b[len(b)-n:]
	if i := bytes.IndexByte(b, '\n'); i >= 0 {
		b = b[i+1:]
	}
	return "…\n" + string(b)
}
