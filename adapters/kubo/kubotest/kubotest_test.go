package kubotest_test

import (
	"net/http"
	"path/filepath"
	"testing"

	"github.com/anchorage-pin/anchorage/adapters/kubo/kubod"
	"github.com/anchorage-pin/anchorage/adapters/kubo/kubotest"
)

func TestDaemonStoppedAtCleanup(t *testing.T) {
	var d *kubod.Daemon
	t.Run("uses a daemon", func(t *testing.T) {
		d = kubotest.Daemon(t)
		if filepath.Dir(d.RepoDir()) != filepath.Dir(t.TempDir()) {
			t.Errorf("repo %s is not under the test's temp dir", d.RepoDir())
		}
		resp, err := http.Post(d.APIURL()+"/api/v0/id", "", nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("id: HTTP %d", resp.StatusCode)
		}
	})
	select {
	case <-d.Done():
	default:
		t.Fatal("daemon still running after its test's cleanup")
	}
}

func TestBinaryIsStable(t *testing.T) {
	if a, b := kubotest.Binary(t), kubotest.Binary(t); a != b || a == "" {
		t.Fatalf("Binary returned %q then %q", a, b)
	}
}
