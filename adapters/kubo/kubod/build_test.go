package kubod_test

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/anchorage-pin/anchorage/adapters/kubo/kubod"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// writeFakeIPFS writes a stand-in binary answering `version -n`.
func writeFakeIPFS(t *testing.T, path, version string) {
	t.Helper()
	script := "#!/bin/sh\nif [ \"$1 $2\" = \"version -n\" ]; then echo " + version + "; exit 0; fi\nexit 3\n"
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
}

func TestEnsureBinaryUsesEnvBinary(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "my-ipfs")
	writeFakeIPFS(t, bin, "0.43.0")
	t.Setenv(kubod.EnvBinary, bin)
	got, err := kubod.EnsureBinary(context.Background(), kubod.BuildOptions{CacheDir: t.TempDir(), Go: "/nonexistent/go"})
	if err != nil {
		t.Fatal(err)
	}
	if got != bin {
		t.Fatalf("got %q, want %q", got, bin)
	}
}

func TestEnsureBinaryUsesCache(t *testing.T) {
	t.Setenv(kubod.EnvBinary, "")
	cache := t.TempDir()
	bin := filepath.Join(cache, kubod.Version, "ipfs")
	writeFakeIPFS(t, bin, strings.TrimPrefix(kubod.Version, "v"))
	// No go toolchain needed on a cache hit.
	got, err := kubod.EnsureBinary(context.Background(), kubod.BuildOptions{CacheDir: cache, Go: "/nonexistent/go"})
	if err != nil {
		t.Fatal(err)
	}
	if got != bin {
		t.Fatalf("got %q, want %q", got, bin)
	}

	// The cache dir can also come from the environment.
	t.Setenv(kubod.EnvCacheDir, cache)
	got, err = kubod.EnsureBinary(context.Background(), kubod.BuildOptions{Go: "/nonexistent/go"})
	if err != nil || got != bin {
		t.Fatalf("via %s: got %q, %v; want %q", kubod.EnvCacheDir, got, err, bin)
	}
}

func TestEnsureBinaryWithoutGo(t *testing.T) {
	t.Setenv(kubod.EnvBinary, "")
	cache := t.TempDir()
	// A cached binary of the wrong version forces a build.
	writeFakeIPFS(t, filepath.Join(cache, kubod.Version, "ipfs"), "0.1.0")
	t.Setenv("PATH", t.TempDir())
	_, err := kubod.EnsureBinary(context.Background(), kubod.BuildOptions{CacheDir: cache})
	if err == nil {
		t.Fatal("EnsureBinary succeeded without a go toolchain")
	}
	for _, want := range []string{"Go toolchain", `"go" was not found on PATH`, kubod.EnvBinary} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
}

// TestEnsureBinaryBuildsOnce runs concurrent EnsureBinary calls against an
// empty cache with a fake go command: exactly one build happens, from the
// embedded module, with telemetry compiled out, and everyone gets the binary.
func TestEnsureBinaryBuildsOnce(t *testing.T) {
	t.Setenv(kubod.EnvBinary, "")
	cache := t.TempDir()
	work := t.TempDir()
	count := filepath.Join(work, "count")
	fakeGo := filepath.Join(work, "go")
	script := `#!/bin/sh
set -e
echo build >> "` + count + `"
[ -f go.mod ] && [ -f go.sum ] || { echo "no go.mod/go.sum in $PWD" >&2; exit 1; }
grep -q '^tool github.com/ipfs/kubo/cmd/ipfs$' go.mod || { echo "go.mod does not pin kubo" >&2; exit 1; }
[ "$GOWORK" = off ] || { echo "GOWORK=$GOWORK" >&2; exit 1; }
out=""; ldflags=""
while [ $# -gt 0 ]; do
  case "$1" in
    -o) out="$2"; shift;;
    -ldflags) ldflags="$2"; shift;;
  esac
  shift
done
case "$ldflags" in
  *"-X github.com/ipfs/kubo/plugin/plugins/telemetry.defaultEndpoint="*) ;;
  *) echo "telemetry not compiled out: $ldflags" >&2; exit 1;;
esac
sleep 0.5
printf '#!/bin/sh\necho ` + strings.TrimPrefix(kubod.Version, "v") + `\n' > "$out"
chmod 755 "$out"
`
	if err := os.WriteFile(fakeGo, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}

	const n = 4
	var wg sync.WaitGroup
	paths := make([]string, n)
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			paths[i], errs[i] = kubod.EnsureBinary(ctx, kubod.BuildOptions{CacheDir: cache, Go: fakeGo, Logger: quiet})
		})
	}
	wg.Wait()
	want := filepath.Join(cache, kubod.Version, "ipfs")
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("caller %d: %v", i, errs[i])
		}
		if paths[i] != want {
			t.Errorf("caller %d: got %q, want %q", i, paths[i], want)
		}
	}
	b, err := os.ReadFile(count)
	if err != nil {
		t.Fatal(err)
	}
	if builds := strings.Count(string(b), "build"); builds != 1 {
		t.Errorf("%d builds, want 1", builds)
	}
	leftovers, _ := filepath.Glob(filepath.Join(cache, kubod.Version, "build-*"))
	if len(leftovers) != 0 {
		t.Errorf("build dirs left behind: %v", leftovers)
	}
}
