package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"
)

// writeConfig writes content to dir/config.yaml (a fresh temp dir when dir is "") and returns its path.
func writeConfig(t *testing.T, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "config.yaml")
	require.NoError(t, os.WriteFile(path, []byte(content), 0o600))
	return path
}

func noEnv(string) string { return "" }

func TestDefaults(t *testing.T) {
	d := Default()
	assert.Equal(t, "./.anchorage", d.DataDir)
	assert.Equal(t, Log{Level: "info", Format: "json"}, d.Log)
	assert.Equal(t, "127.0.0.1:8080", d.Server.Listen)
	assert.Equal(t, "", d.Server.PublicURL)
	assert.Equal(t, ByteSize(1<<20), d.Server.MaxBodyBytes)
	assert.Empty(t, d.Server.CORS.AllowedOrigins)
	assert.False(t, d.Server.CORS.AllowCredentials)
	assert.Equal(t, 15*time.Second, d.Server.ShutdownTimeout.D())
	assert.Equal(t, Postgres{MaxConns: 16}, d.Postgres)
	assert.Equal(t, SyncModeGroup, d.NATS.Sync)
	assert.Equal(t, 2*time.Minute, d.NATS.SyncInterval.D())
	assert.Equal(t, "", d.NATS.StoreDir)
	assert.Equal(t, "", d.NATS.Listen)
	assert.Equal(t, ByteSize(0), d.NATS.MaxStoreBytes)
	assert.Equal(t, Kubo{Concurrency: 32, PinTimeout: Duration(10 * time.Minute), SlowAfter: Duration(5 * time.Second), Replication: 1, MaintenanceAlertAfter: Duration(time.Hour)}, d.Kubo)
	assert.Equal(t, Authentik{}, d.Auth.Authentik)
	assert.Empty(t, d.Auth.APIToken.SigningKeys)
	assert.Equal(t, 720*time.Hour, d.Auth.APIToken.DefaultTTL.D())
	assert.Equal(t, 8760*time.Hour, d.Auth.APIToken.MaxTTL.D())
	assert.Empty(t, d.Bootstrap.Sysadmins)

	// Derived defaults.
	assert.Equal(t, filepath.Join(".anchorage", "nats"), d.NATSStoreDir())
	assert.Equal(t, filepath.Join(".anchorage", "nats", "credentials"), d.NATSCredentialsFile())
	assert.Equal(t, filepath.Join(".anchorage", "postgres"), d.PostgresDir())
	assert.Equal(t, filepath.Join(".anchorage", "kubo"), d.KuboDir())
	assert.True(t, d.ManagedPostgres(ModeDev))
	assert.False(t, d.ManagedPostgres(ModeServe))
	assert.Empty(t, d.Warnings())

	// Loading nothing gives the defaults; the defaults are a valid dev config but not a valid serve config.
	loaded, err := Load("", noEnv)
	require.NoError(t, err)
	assert.Equal(t, d, loaded)
	loaded, err = Load("", nil)
	require.NoError(t, err)
	assert.Equal(t, d, loaded)
	require.NoError(t, d.Validate(ModeDev))
	err = d.Validate(ModeServe)
	require.Error(t, err)
	assert.Equal(t, []string{
		"postgres.url: required in serve mode unless postgres.managed is true; set the owner role's DSN, e.g. postgres://anchorage:PASSWORD@db.example.com:5432/anchorage",
		"postgres.apiURL: required in serve mode unless postgres.managed is true; set the API role's DSN (not the table owner, NOBYPASSRLS), e.g. postgres://anchorage_api:PASSWORD@db.example.com:5432/anchorage",
		"auth.apiToken.signingKeys: at least one key is required in serve mode; add e.g. {id: k1, path: /etc/anchorage/k1.key, primary: true}",
	}, strings.Split(err.Error(), "\n"))
}

const fullFile = `# every key
dataDir: /srv/anchorage
log: { level: debug, format: text }
server:
  listen: 0.0.0.0:9090
  publicURL: https://pins.example.com
  maxBodyBytes: 64KiB
  cors:
    allowedOrigins: [https://app.example.com, "http://localhost:5173"]
    allowCredentials: true
  shutdownTimeout: 30s
postgres:
  url: postgres://owner:ownerpw@db:5432/anchorage
  apiURL: postgres://api:apipw@db:5432/anchorage
  maxConns: 32
  managed: false
nats:
  storeDir: /srv/nats
  listen: 127.0.0.1:4222
  sync: interval
  syncInterval: 1d
  credentialsFile: /srv/nats.creds
  cluster:
    name: anchorage
    listen: 0.0.0.0:6222
    routes:
      - nats-route://node2:6222
      - nats-route://node3:6222
  maxStoreBytes: 100GiB
kubo:
  rpcURL: http://127.0.0.1:5001
  concurrency: 8
  pinTimeout: 1d12h
  slowAfter: 30s
  slowLimit: 64
  replication: 2
  nodeID: node-1
auth:
  authentik:
    issuer: https://auth.example.com/application/o/anchorage/
    clientID: anchorage
    clientSecret: s3cret
    redirectURI: https://pins.example.com/auth/callback
    audience: anchorage-api
  apiToken:
    signingKeys:
      - { id: k1, path: /etc/anchorage/k1.key, primary: true }
      - id: k0
        path: /etc/anchorage/k0.key
    defaultTTL: 30d
    maxTTL: 8760h
bootstrap:
  sysadmins: [alice@example.com, bob@example.com]
`

func fullConfig() Config {
	return Config{
		DataDir: "/srv/anchorage",
		Log:     Log{Level: "debug", Format: "text"},
		Server: Server{
			Listen:       "0.0.0.0:9090",
			PublicURL:    "https://pins.example.com",
			MaxBodyBytes: 64 << 10,
			CORS: CORS{
				AllowedOrigins:   []string{"https://app.example.com", "http://localhost:5173"},
				AllowCredentials: true,
			},
			ShutdownTimeout: Duration(30 * time.Second),
		},
		Postgres: Postgres{
			URL:      "postgres://owner:ownerpw@db:5432/anchorage",
			APIURL:   "postgres://api:apipw@db:5432/anchorage",
			MaxConns: 32,
		},
		NATS: NATS{
			StoreDir:        "/srv/nats",
			Listen:          "127.0.0.1:4222",
			Sync:            SyncModeInterval,
			SyncInterval:    Duration(24 * time.Hour),
			CredentialsFile: "/srv/nats.creds",
			Cluster: NATSCluster{
				Name:   "anchorage",
				Listen: "0.0.0.0:6222",
				Routes: []string{"nats-route://node2:6222", "nats-route://node3:6222"},
			},
			MaxStoreBytes: 100 << 30,
		},
		Kubo: Kubo{
			RPCURL:      "http://127.0.0.1:5001",
			Concurrency: 8,
			PinTimeout:  Duration(36 * time.Hour),
			SlowAfter:   Duration(30 * time.Second),
			SlowLimit:   64,
			Replication: 2,
			NodeID:      "node-1",

			MaintenanceAlertAfter: Duration(time.Hour),
		},
		Auth: Auth{
			Authentik: Authentik{
				Issuer:       "https://auth.example.com/application/o/anchorage/",
				ClientID:     "anchorage",
				ClientSecret: "s3cret",
				RedirectURI:  "https://pins.example.com/auth/callback",
				Audience:     "anchorage-api",
			},
			APIToken: APIToken{
				SigningKeys: []SigningKey{
					{ID: "k1", Path: "/etc/anchorage/k1.key", Primary: true},
					{ID: "k0", Path: "/etc/anchorage/k0.key"},
				},
				DefaultTTL: Duration(30 * 24 * time.Hour),
				MaxTTL:     Duration(8760 * time.Hour),
			},
		},
		Bootstrap: Bootstrap{Sysadmins: []string{"alice@example.com", "bob@example.com"}},
	}
}

func TestLoadFullFile(t *testing.T) {
	cfg, err := Load(writeConfig(t, fullFile), noEnv)
	require.NoError(t, err)
	assert.Equal(t, fullConfig(), cfg)
	require.ErrorContains(t, cfg.Validate(ModeServe), "nats.cluster: clustering is not available", "the file parses, but clustering is refused")
	alone := cfg
	alone.NATS.Cluster = NATSCluster{}
	require.NoError(t, alone.Validate(ModeServe))
	assert.Len(t, cfg.Warnings(), 1, "sync: interval must be warned about")
	assert.Contains(t, cfg.Warnings()[0], "24h")

	// Marshalling (as yaml, unredacted) and loading again gives the same config.
	out, err := yaml.Marshal(cfg)
	require.NoError(t, err)
	again, err := Load(writeConfig(t, string(out)), noEnv)
	require.NoError(t, err)
	assert.Equal(t, cfg, again)
}

func TestLoadPartialFileKeepsDefaults(t *testing.T) {
	cfg, err := Load(writeConfig(t, "server:\n  listen: 127.0.0.1:0\n  publicURL:\nkubo: {replication: 3}\n"), noEnv)
	require.NoError(t, err)
	want := Default()
	want.Server.Listen = "127.0.0.1:0"
	want.Kubo.Replication = 3
	assert.Equal(t, want, cfg)
}

func TestLoadEmptyFiles(t *testing.T) {
	for _, content := range []string{"", "# nothing here\n", "---\n", "~\n"} {
		cfg, err := Load(writeConfig(t, content), noEnv)
		require.NoError(t, err, "%q", content)
		assert.Equal(t, Default(), cfg)
	}
}

func TestLoadFileErrors(t *testing.T) {
	for _, tc := range []struct {
		name, content string
		want          []string // lines of the error, after "<path>"
	}{
		{
			name:    "unknown key with suggestion",
			content: "dataDir: /x\nserver:\n  lisen: 127.0.0.1:8080\n",
			want:    []string{`:3: unknown key "server.lisen" (did you mean "listen"?)`},
		},
		{
			name:    "case mistake",
			content: "postgres:\n  apiUrl: x\n",
			want:    []string{`:2: unknown key "postgres.apiUrl" (did you mean "apiURL"?)`},
		},
		{
			name:    "key at the wrong level",
			content: "server:\n  listen: 127.0.0.1:1\nlisten: 1\n",
			want:    []string{`:3: unknown key "listen" (did you mean "server.listen", "nats.listen", "nats.cluster.listen" or "nats.leafnodes.listen"?)`},
		},
		{
			name:    "key at the wrong level, one match",
			content: "kubo:\n  sysadmins: [a]\n",
			want:    []string{`:2: unknown key "kubo.sysadmins" (did you mean "bootstrap.sysadmins"?)`},
		},
		{
			name:    "unknown key without suggestion",
			content: "frobnicate: true\n",
			want:    []string{`:1: unknown key "frobnicate"`},
		},
		{
			name:    "unknown key in a list item",
			content: "auth:\n  apiToken:\n    signingKeys:\n      - id: k1\n        path: /k\n        primry: true\n",
			want:    []string{`:6: unknown key "auth.apiToken.signingKeys[0].primry" (did you mean "primary"?)`},
		},
		{
			name:    "all problems at once",
			content: "server:\n  lisen: x\n  maxBodyBytes: 12 apples\nkubo:\n  concurrency: many\n  pinTimeout: 15\npostgres:\n  managed: maybe\n",
			want: []string{
				`:2: unknown key "server.lisen" (did you mean "listen"?)`,
				`:3: server.maxBodyBytes: "12 apples" is not a size; use e.g. 1048576, 64KiB or 1MiB`,
				`:5: kubo.concurrency: "many" is not a whole number`,
				`:6: kubo.pinTimeout: "15" is not a duration; use e.g. 15s, 10m, 720h or 30d (units: ms, s, m, h, d)`,
				`:8: postgres.managed: "maybe" is not true or false`,
			},
		},
		{
			name:    "duplicate key",
			content: "server:\n  listen: a:1\n  listen: b:2\n",
			want:    []string{`:3: duplicate key "server.listen" (first set at line 2); keep one`},
		},
		{
			name:    "mapping where a value belongs",
			content: "server:\n  listen:\n    host: x\n",
			want:    []string{`:3: server.listen: expected a single value, got a mapping`},
		},
		{
			name:    "value where a mapping belongs",
			content: "server: 127.0.0.1:8080\n",
			want:    []string{`:1: server: expected a mapping of keys, got "127.0.0.1:8080"`},
		},
		{
			name:    "value where a list belongs",
			content: "bootstrap:\n  sysadmins: alice@example.com\n",
			want:    []string{`:2: bootstrap.sysadmins: expected a list (e.g. [a, b] or one "- item" per line), got "alice@example.com"`},
		},
		{
			name:    "list as a duration",
			content: "server:\n  shutdownTimeout: [1s]\n",
			want:    []string{`:2: server.shutdownTimeout: expected a duration such as 15s, got a list`},
		},
		{
			name:    "top level list",
			content: "- a\n- b\n",
			want:    []string{`:1: the top level must be a mapping of keys such as "dataDir: /var/lib/anchorage", got a list`},
		},
		{
			name:    "syntax error",
			content: "server:\n  listen: [\n",
			want:    []string{`:2: did not find expected node content`},
		},
		{
			name:    "two documents",
			content: "dataDir: /a\n---\ndataDir: /b\n",
			want:    []string{`:2: a config file holds one YAML document; remove the second "---" and what follows`},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := writeConfig(t, tc.content)
			_, err := Load(path, noEnv)
			require.Error(t, err)
			var want []string
			for _, w := range tc.want {
				want = append(want, path+w)
			}
			assert.Equal(t, want, strings.Split(err.Error(), "\n"))
		})
	}
}

func TestLoadMissingFile(t *testing.T) {
	_, err := Load(filepath.Join(t.TempDir(), "nope.yaml"), noEnv)
	require.Error(t, err)
	assert.ErrorIs(t, err, os.ErrNotExist)
	assert.Contains(t, err.Error(), "nope.yaml")
}

func TestLoadAnchorsAndMerges(t *testing.T) {
	content := `
defaults: &pg
  maxConns: 4
postgres:
  <<: *pg
  managed: true
`
	_, err := Load(writeConfig(t, content), noEnv)
	require.Error(t, err, "an unknown top-level key is still unknown when used as an anchor")

	content = `
postgres: &pg
  maxConns: 4
  managed: true
  mxConns: 5
`
	_, err = Load(writeConfig(t, content), noEnv)
	require.ErrorContains(t, err, `unknown key "postgres.mxConns" (did you mean "maxConns"?)`)

	content = `
server:
  cors:
    allowedOrigins: &origins [https://a.example.com]
nats:
  cluster:
    routes: *origins
`
	cfg, err := Load(writeConfig(t, content), noEnv)
	require.NoError(t, err)
	assert.Equal(t, []string{"https://a.example.com"}, cfg.NATS.Cluster.Routes)
}

func TestLoadRelativePathsAgainstFileDir(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "etc", "config.yaml")
	require.NoError(t, os.MkdirAll(filepath.Dir(path), 0o755))
	require.NoError(t, os.WriteFile(path, []byte(`
dataDir: data
nats:
  credentialsFile: ../secrets/nats
auth:
  apiToken:
    signingKeys: [{id: k1, path: keys/k1.key, primary: true}, {id: k2, path: /abs/k2.key}]
`), 0o600))
	cfg, err := Load(path, func(k string) string {
		if k == "ANCHORAGE_NATS_STOREDIR" {
			return "from-env"
		}
		return ""
	})
	require.NoError(t, err)
	etc := filepath.Join(dir, "etc")
	assert.Equal(t, filepath.Join(etc, "data"), cfg.DataDir)
	assert.Equal(t, filepath.Join(dir, "secrets", "nats"), cfg.NATS.CredentialsFile)
	assert.Equal(t, "from-env", cfg.NATS.StoreDir, "paths from the environment are left for Resolve")
	assert.Equal(t, filepath.Join(etc, "keys", "k1.key"), cfg.Auth.APIToken.SigningKeys[0].Path)
	assert.Equal(t, "/abs/k2.key", cfg.Auth.APIToken.SigningKeys[1].Path)

	// A default dataDir (not in the file) stays relative for Resolve.
	cfg, err = Load(writeConfig(t, "log: {level: warn}\n"), noEnv)
	require.NoError(t, err)
	assert.Equal(t, "./.anchorage", cfg.DataDir)
}

func TestIssuerTrailingSlashPreserved(t *testing.T) {
	const issuer = "https://auth.example.com/application/o/anchorage/"
	cfg, err := Load(writeConfig(t, "auth:\n  authentik:\n    issuer: "+issuer+"\n    clientID: c\n"), noEnv)
	require.NoError(t, err)
	assert.Equal(t, issuer, cfg.Auth.Authentik.Issuer)
	require.NoError(t, cfg.Validate(ModeDev))
	cfg, err = cfg.Resolve(t.TempDir())
	require.NoError(t, err)
	assert.Equal(t, issuer, cfg.Auth.Authentik.Issuer)
	assert.Equal(t, issuer, cfg.Redacted().Auth.Authentik.Issuer)

	for _, name := range []string{"OIDC_ISSUER", "ANCHORAGE_AUTH_AUTHENTIK_ISSUER"} {
		cfg, err := Load("", func(k string) string {
			if k == name {
				return issuer
			}
			return ""
		})
		require.NoError(t, err)
		assert.Equal(t, issuer, cfg.Auth.Authentik.Issuer, name)
	}
}
