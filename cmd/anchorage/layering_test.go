package main

import (
	"encoding/json"
	"io"
	"os/exec"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

const module = "github.com/anchorage-pin/anchorage/"

// TestLayering enforces the one-way import direction events ← domain ← projections ← adapters ← cmd, and that
// adapters never import each other: interfaces live with their consumers and cmd wires them.
func TestLayering(t *testing.T) {
	t.Parallel()
	out, err := exec.Command("go", "list", "-e", "-json=ImportPath,Imports", "../../...").Output()
	require.NoError(t, err)
	dec := json.NewDecoder(strings.NewReader(string(out)))
	allowThirdParty := map[string][]string{
		"events":      nil,
		"migrations":  nil,
		"domain":      {"github.com/ipfs/go-cid", "github.com/multiformats/go-multiaddr", "github.com/google/uuid"},
		"projections": {"github.com/prometheus/client_golang/", "github.com/google/uuid"},
	}
	rank := map[string]int{"events": 0, "migrations": 0, "domain": 1, "projections": 2, "adapters": 3, "cmd": 4}
	checked := 0
	for {
		var p struct {
			ImportPath string
			Imports    []string
		}
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else {
			require.NoError(t, err)
		}
		rel, ok := strings.CutPrefix(p.ImportPath, module)
		if !ok || strings.HasPrefix(rel, "tools/") {
			continue
		}
		layer := strings.Split(rel, "/")[0]
		myRank, known := rank[layer]
		require.True(t, known, "package %s is outside the design's top-level layout", rel)
		checked++
		for _, imp := range p.Imports {
			if irel, ours := strings.CutPrefix(imp, module); ours {
				ilayer := strings.Split(irel, "/")[0]
				require.LessOrEqual(t, rank[ilayer], myRank, "%s imports %s: imports must flow events ← domain ← projections ← adapters ← cmd", rel, irel)
				if layer == "adapters" && ilayer == "adapters" {
					require.Equal(t, strings.Split(rel, "/")[1], strings.Split(irel, "/")[1], "%s imports another adapter (%s); define an interface in the consumer and wire it in cmd", rel, irel)
				}
				continue
			}
			if !strings.Contains(strings.Split(imp, "/")[0], ".") {
				continue // standard library
			}
			allowed, restricted := allowThirdParty[layer]
			if !restricted {
				continue
			}
			ok := false
			for _, a := range allowed {
				if imp == a || strings.HasPrefix(imp, strings.TrimSuffix(a, "/")+"/") || strings.HasPrefix(imp, a) {
					ok = true
				}
			}
			require.True(t, ok, "%s imports %s; the %s layer may only use the standard library and %v", rel, imp, layer, allowed)
		}
	}
	require.Greater(t, checked, 5)
}
