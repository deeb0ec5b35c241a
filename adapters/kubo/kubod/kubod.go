// Package kubod obtains a Kubo (go-ipfs) binary and runs loopback-only Kubo
// daemons as child processes.
//
// The binary is built from the Go module proxy the first time it is needed and
// cached per version (see EnsureBinary). The module graph used for that build
// is the one pinned in tools/kubo (go.mod + go.sum); copies of those two files
// are embedded here so the anchorage binary can build Kubo on a machine that
// has only the Go toolchain and the module proxy, without the source tree.
//
// Why a checked-in copy instead of embedding tools/kubo directly: go:embed
// cannot reach outside the package directory, and a directory holding a file
// named go.mod would become a module of its own. So kubo.go.mod and
// kubo.go.sum are copies, refreshed by `go generate` (after changing
// tools/kubo), and TestEmbeddedModuleMatchesTools fails when they drift.
package kubod

//go:generate cp ../../../tools/kubo/go.mod kubo.go.mod
//go:generate cp ../../../tools/kubo/go.sum kubo.go.sum

import _ "embed"

// Version is the Kubo release this package builds and runs.
const Version = "v0.43.0"

// kuboPackage is the main package built into the ipfs binary.
const kuboPackage = "github.com/ipfs/kubo/cmd/ipfs"

// telemetryEndpointSymbol is blanked at link time so the binary cannot report
// usage to an outside host (checked to exist in Kubo v0.43.0's source).
const telemetryEndpointSymbol = "github.com/ipfs/kubo/plugin/plugins/telemetry.defaultEndpoint"

var (
	//go:embed kubo.go.mod
	embeddedGoMod []byte
	//go:embed kubo.go.sum
	embeddedGoSum []byte
)
