package kubod

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// LoopbackConfig is the configuration Start applies to every repo before
// launching the daemon (docs/kubo.md §2): every listener on 127.0.0.1 with a
// kernel-chosen port, no bootstrap peers, no DHT or other routing, no
// autoconf/AutoTLS/mDNS/NAT port mapping/relays, telemetry off. Keys are
// dotted config paths as accepted by `ipfs config`. A kept repo's swarm
// listener then gets the port it had before (stableSwarmAddr).
var LoopbackConfig = []ConfigEntry{
	{"Addresses.API", "/ip4/127.0.0.1/tcp/0"},
	{"Addresses.Gateway", "/ip4/127.0.0.1/tcp/0"},
	{"Addresses.Swarm", []string{"/ip4/127.0.0.1/tcp/0"}},
	{"Bootstrap", []string{}},
	{"Routing.Type", "none"},
	{"AutoConf.Enabled", false},
	{"AutoTLS.Enabled", false},
	{"Discovery.MDNS.Enabled", false},
	{"Swarm.DisableNatPortMap", true},
	{"Swarm.RelayClient.Enabled", false},
	{"Swarm.RelayService.Enabled", false},
	{"Plugins.Plugins.telemetry.Config.Mode", "off"},
}

// ConfigEntry sets one dotted config key to a JSON-encodable value.
type ConfigEntry struct {
	Key   string
	Value any
}

// applyConfig rewrites <repo>/config with the entries set, in order. It is
// the file-level equivalent of `ipfs config --json KEY VALUE` for each entry,
// done in one write instead of one ~40 ms process per key. The daemon must
// not be running.
func applyConfig(repo string, entries []ConfigEntry) error {
	path := filepath.Join(repo, "config")
	raw, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var cfg map[string]any
	if err := json.Unmarshal(raw, &cfg); err != nil {
		return fmt.Errorf("parse %s: %w", path, err)
	}
	for _, e := range entries {
		if err := setKey(cfg, e.Key, e.Value); err != nil {
			return err
		}
	}
	out, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return err
	}
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	tmp := path + ".kubod-tmp"
	if err := os.WriteFile(tmp, append(out, '\n'), fi.Mode().Perm()); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func setKey(cfg map[string]any, key string, value any) error {
	parts := strings.Split(key, ".")
	for _, p := range parts {
		if p == "" {
			return fmt.Errorf("invalid config key %q", key)
		}
	}
	// Round-trip the value through JSON so the map only holds JSON types.
	b, err := json.Marshal(value)
	if err != nil {
		return fmt.Errorf("config %s: %w", key, err)
	}
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		return fmt.Errorf("config %s: %w", key, err)
	}
	m := cfg
	for _, p := range parts[:len(parts)-1] {
		next, ok := m[p].(map[string]any)
		if !ok { // absent or null: create the section
			next = map[string]any{}
			m[p] = next
		}
		m = next
	}
	m[parts[len(parts)-1]] = v
	return nil
}
