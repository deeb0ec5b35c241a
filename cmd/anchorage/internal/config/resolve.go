package config

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
)

// Resolve returns a copy of c whose relative paths (dataDir, nats.storeDir, nats.credentialsFile and
// auth.apiToken.signingKeys[].path) are made absolute against baseDir; baseDir "" means the working directory.
//
// Paths written in a config file were already made absolute against the file's directory by Load, so what is
// left relative came from defaults, the environment or flags: pass "" (the working directory) for those.
func (c Config) Resolve(baseDir string) (Config, error) {
	if baseDir == "" {
		wd, err := os.Getwd()
		if err != nil {
			return Config{}, fmt.Errorf("resolve config paths: %w", err)
		}
		baseDir = wd
	}
	abs, err := filepath.Abs(baseDir)
	if err != nil {
		return Config{}, fmt.Errorf("resolve config paths against %s: %w", baseDir, err)
	}
	c = c.clone()
	c.resolvePaths(abs, nil)
	return c, nil
}

// resolvePaths makes the relative paths of the keys that only accepts (all when only is nil) absolute against
// base.
func (c *Config) resolvePaths(base string, only func(key string) bool) {
	want := func(key string) bool { return only == nil || only(key) }
	abs := func(p string) string {
		if p == "" || filepath.IsAbs(p) {
			return p
		}
		return filepath.Join(base, p)
	}
	if want("dataDir") {
		c.DataDir = abs(c.DataDir)
	}
	if want("nats.storeDir") {
		c.NATS.StoreDir = abs(c.NATS.StoreDir)
	}
	if want("nats.credentialsFile") {
		c.NATS.CredentialsFile = abs(c.NATS.CredentialsFile)
		c.NATS.LeafNodes.CredentialsFile = abs(c.NATS.LeafNodes.CredentialsFile)
	}
	if want("auth.apiToken.signingKeys") {
		c.Auth.APIToken.SigningKeys = slices.Clone(c.Auth.APIToken.SigningKeys)
		for i := range c.Auth.APIToken.SigningKeys {
			c.Auth.APIToken.SigningKeys[i].Path = abs(c.Auth.APIToken.SigningKeys[i].Path)
		}
	}
}

// clone returns a copy of c that shares no slices with it.
func (c Config) clone() Config {
	c.Server.CORS.AllowedOrigins = slices.Clone(c.Server.CORS.AllowedOrigins)
	c.NATS.Cluster.Routes = slices.Clone(c.NATS.Cluster.Routes)
	c.Auth.APIToken.SigningKeys = slices.Clone(c.Auth.APIToken.SigningKeys)
	c.Bootstrap.Sysadmins = slices.Clone(c.Bootstrap.Sysadmins)
	return c
}
