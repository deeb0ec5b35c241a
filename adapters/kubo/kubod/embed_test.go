package kubod

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestEmbeddedModuleMatchesTools fails when kubo.go.mod / kubo.go.sum drift
// from the canonical tools/kubo module. Fix with `go generate` in this
// package.
func TestEmbeddedModuleMatchesTools(t *testing.T) {
	for _, f := range []struct {
		canonical string
		embedded  []byte
	}{
		{"go.mod", embeddedGoMod},
		{"go.sum", embeddedGoSum},
	} {
		path := filepath.Join("..", "..", "..", "tools", "kubo", f.canonical)
		want, err := os.ReadFile(path)
		if err != nil {
			t.Fatalf("read canonical %s: %v", path, err)
		}
		if !bytes.Equal(want, f.embedded) {
			t.Errorf("embedded kubo.%s differs from %s; run `go generate ./adapters/kubo/kubod`", f.canonical, path)
		}
	}
}

func TestEmbeddedModulePinsKubo(t *testing.T) {
	mod := string(embeddedGoMod)
	if !strings.Contains(mod, "\ntool "+kuboPackage+"\n") {
		t.Errorf("kubo.go.mod lacks `tool %s`", kuboPackage)
	}
	if !strings.Contains(mod, "\tgithub.com/ipfs/kubo "+Version+" ") {
		t.Errorf("kubo.go.mod does not require github.com/ipfs/kubo %s", Version)
	}
	if !strings.Contains(string(embeddedGoSum), "github.com/ipfs/kubo "+Version+" h1:") {
		t.Errorf("kubo.go.sum lacks the github.com/ipfs/kubo %s hash", Version)
	}
}
