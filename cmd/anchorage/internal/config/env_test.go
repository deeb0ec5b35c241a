package config

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func envOf(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func TestEnvName(t *testing.T) {
	for key, want := range map[string]string{
		"dataDir":                    "ANCHORAGE_DATADIR",
		"server.listen":              "ANCHORAGE_SERVER_LISTEN",
		"postgres.apiURL":            "ANCHORAGE_POSTGRES_APIURL",
		"auth.apiToken.defaultTTL":   "ANCHORAGE_AUTH_APITOKEN_DEFAULTTTL",
		"auth.apiToken.signingKeys":  "ANCHORAGE_AUTH_APITOKEN_SIGNINGKEYS",
		"server.cors.allowedOrigins": "ANCHORAGE_SERVER_CORS_ALLOWEDORIGINS",
	} {
		assert.Equal(t, want, EnvName(key))
	}
}

// Every leaf has exactly one, distinct variable, and each can be set from the environment.
func TestEnvVarsCoverEveryLeaf(t *testing.T) {
	vars := EnvVars()
	assert.Len(t, vars, 44)
	seen := map[string]string{}
	for _, v := range vars {
		if other, dup := seen[v.Name]; dup {
			t.Errorf("%s and %s both map to %s", other, v.Key, v.Name)
		}
		seen[v.Name] = v.Key
		assert.Equal(t, EnvName(v.Key), v.Name)
	}
	assert.Equal(t, EnvVar{Name: "ANCHORAGE_DATADIR", Key: "dataDir"}, vars[0])
	assert.Equal(t, EnvVar{Name: "ANCHORAGE_BOOTSTRAP_SYSADMINS", Key: "bootstrap.sysadmins"}, vars[len(vars)-1])

	var c Config
	eachLeaf(reflect.ValueOf(&c).Elem(), "", func(key string, v reflect.Value) {
		sample := map[reflect.Kind]string{reflect.Bool: "true", reflect.Int: "3", reflect.Int64: "3"}[v.Kind()]
		if sample == "" {
			sample = "k:/p" // a string, a list, or the signing keys
		}
		if _, ok := v.Addr().Interface().(*Duration); ok {
			sample = "1s"
		}
		assert.NoError(t, setFromString(v, sample), key)
		assert.False(t, v.IsZero(), "%s was not set", key)
	})
}

func TestEnvOverrides(t *testing.T) {
	for _, tc := range []struct {
		name  string
		env   map[string]string
		check func(t *testing.T, c Config)
	}{
		{"string", map[string]string{"ANCHORAGE_SERVER_LISTEN": "0.0.0.0:1"}, func(t *testing.T, c Config) {
			assert.Equal(t, "0.0.0.0:1", c.Server.Listen)
		}},
		{"top-level string", map[string]string{"ANCHORAGE_DATADIR": "/var/lib/anchorage"}, func(t *testing.T, c Config) {
			assert.Equal(t, "/var/lib/anchorage", c.DataDir)
		}},
		{"acronym key", map[string]string{"ANCHORAGE_POSTGRES_APIURL": "postgres://a@b/c"}, func(t *testing.T, c Config) {
			assert.Equal(t, "postgres://a@b/c", c.Postgres.APIURL)
		}},
		{"typed string", map[string]string{"ANCHORAGE_NATS_SYNC": "always"}, func(t *testing.T, c Config) {
			assert.Equal(t, SyncModeAlways, c.NATS.Sync)
		}},
		{"int", map[string]string{"ANCHORAGE_KUBO_CONCURRENCY": "32"}, func(t *testing.T, c Config) {
			assert.Equal(t, 32, c.Kubo.Concurrency)
		}},
		{"bool", map[string]string{"ANCHORAGE_POSTGRES_MANAGED": "true", "ANCHORAGE_SERVER_CORS_ALLOWCREDENTIALS": "1"}, func(t *testing.T, c Config) {
			assert.True(t, c.Postgres.Managed)
			assert.True(t, c.Server.CORS.AllowCredentials)
		}},
		{"duration with days", map[string]string{"ANCHORAGE_AUTH_APITOKEN_DEFAULTTTL": "1d12h", "ANCHORAGE_AUTH_APITOKEN_MAXTTL": "365d"}, func(t *testing.T, c Config) {
			assert.Equal(t, 36*time.Hour, c.Auth.APIToken.DefaultTTL.D())
			assert.Equal(t, 365*24*time.Hour, c.Auth.APIToken.MaxTTL.D())
		}},
		{"size", map[string]string{"ANCHORAGE_SERVER_MAXBODYBYTES": "64KiB", "ANCHORAGE_NATS_MAXSTOREBYTES": "1073741824"}, func(t *testing.T, c Config) {
			assert.Equal(t, ByteSize(64<<10), c.Server.MaxBodyBytes)
			assert.Equal(t, ByteSize(1<<30), c.NATS.MaxStoreBytes)
		}},
		{"list", map[string]string{"ANCHORAGE_BOOTSTRAP_SYSADMINS": "alice@example.com, bob@example.com,", "ANCHORAGE_NATS_CLUSTER_ROUTES": "nats-route://a:1"}, func(t *testing.T, c Config) {
			assert.Equal(t, []string{"alice@example.com", "bob@example.com"}, c.Bootstrap.Sysadmins)
			assert.Equal(t, []string{"nats-route://a:1"}, c.NATS.Cluster.Routes)
		}},
		{"signing keys", map[string]string{"ANCHORAGE_AUTH_APITOKEN_SIGNINGKEYS": "k1:/etc/anchorage/k1.key:primary, k2:/etc/anchorage/k2.key,k3:C:/keys/k3.key"}, func(t *testing.T, c Config) {
			assert.Equal(t, []SigningKey{
				{ID: "k1", Path: "/etc/anchorage/k1.key", Primary: true},
				{ID: "k2", Path: "/etc/anchorage/k2.key"},
				{ID: "k3", Path: "C:/keys/k3.key"},
			}, c.Auth.APIToken.SigningKeys)
		}},
		{"OIDC_*", map[string]string{
			"OIDC_ISSUER": "https://auth.example.com/application/o/a/", "OIDC_CLIENT_ID": "cid",
			"OIDC_CLIENT_SECRET": "sec", "OIDC_REDIRECT_URI": "https://pins.example.com/cb",
		}, func(t *testing.T, c Config) {
			assert.Equal(t, Authentik{
				Issuer: "https://auth.example.com/application/o/a/", ClientID: "cid",
				ClientSecret: "sec", RedirectURI: "https://pins.example.com/cb",
			}, c.Auth.Authentik)
		}},
		{"ANCHORAGE_ beats OIDC_", map[string]string{
			"OIDC_ISSUER": "https://oidc.example.com/", "ANCHORAGE_AUTH_AUTHENTIK_ISSUER": "https://anchorage.example.com/",
			"OIDC_CLIENT_ID": "oidc", "ANCHORAGE_AUTH_AUTHENTIK_CLIENTID": "anchorage",
			"OIDC_CLIENT_SECRET": "oidc-secret", "ANCHORAGE_AUTH_AUTHENTIK_CLIENTSECRET": "anchorage-secret",
			"OIDC_REDIRECT_URI": "https://oidc.example.com/cb", "ANCHORAGE_AUTH_AUTHENTIK_REDIRECTURI": "https://anchorage.example.com/cb",
		}, func(t *testing.T, c Config) {
			assert.Equal(t, Authentik{
				Issuer: "https://anchorage.example.com/", ClientID: "anchorage",
				ClientSecret: "anchorage-secret", RedirectURI: "https://anchorage.example.com/cb",
			}, c.Auth.Authentik)
		}},
		{"empty means unset", map[string]string{"ANCHORAGE_SERVER_LISTEN": ""}, func(t *testing.T, c Config) {
			assert.Equal(t, "127.0.0.1:8080", c.Server.Listen)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Load("", envOf(tc.env))
			require.NoError(t, err)
			tc.check(t, c)
		})
	}
}

func TestEnvOverridesFile(t *testing.T) {
	path := writeConfig(t, `
server: {listen: 127.0.0.1:1111, publicURL: https://file.example.com}
auth:
  authentik: {issuer: https://file.example.com/, clientID: file}
  apiToken:
    signingKeys: [{id: f1, path: /f1.key, primary: true}]
bootstrap: {sysadmins: [file@example.com]}
`)
	c, err := Load(path, envOf(map[string]string{
		"ANCHORAGE_SERVER_LISTEN":             "127.0.0.1:2222",
		"OIDC_ISSUER":                         "https://env.example.com/",
		"ANCHORAGE_AUTH_APITOKEN_SIGNINGKEYS": "e1:/e1.key:primary",
		"ANCHORAGE_BOOTSTRAP_SYSADMINS":       "env@example.com",
	}))
	require.NoError(t, err)
	assert.Equal(t, "127.0.0.1:2222", c.Server.Listen, "env beats file")
	assert.Equal(t, "https://file.example.com", c.Server.PublicURL, "file beats default")
	assert.Equal(t, "https://env.example.com/", c.Auth.Authentik.Issuer, "OIDC_ISSUER beats file")
	assert.Equal(t, "file", c.Auth.Authentik.ClientID)
	assert.Equal(t, []SigningKey{{ID: "e1", Path: "/e1.key", Primary: true}}, c.Auth.APIToken.SigningKeys, "env replaces the list")
	assert.Equal(t, []string{"env@example.com"}, c.Bootstrap.Sysadmins)
	assert.Equal(t, 32, c.Kubo.Concurrency, "default kept")
}

func TestEnvErrors(t *testing.T) {
	_, err := Load("", envOf(map[string]string{
		"ANCHORAGE_KUBO_CONCURRENCY":          "lots",
		"ANCHORAGE_POSTGRES_MANAGED":          "maybe",
		"ANCHORAGE_SERVER_MAXBODYBYTES":       "12 apples",
		"ANCHORAGE_SERVER_SHUTDOWNTIMEOUT":    "15",
		"ANCHORAGE_AUTH_APITOKEN_SIGNINGKEYS": "k1:/a.key:primary,k2",
	}))
	require.Error(t, err)
	assert.Equal(t, []string{
		`ANCHORAGE_SERVER_MAXBODYBYTES (server.maxBodyBytes): "12 apples" is not a size; use e.g. 1048576, 64KiB or 1MiB`,
		`ANCHORAGE_SERVER_SHUTDOWNTIMEOUT (server.shutdownTimeout): "15" is not a duration; use e.g. 15s, 10m, 720h or 30d (units: ms, s, m, h, d)`,
		`ANCHORAGE_POSTGRES_MANAGED (postgres.managed): "maybe" is not true or false`,
		`ANCHORAGE_KUBO_CONCURRENCY (kubo.concurrency): "lots" is not a whole number`,
		`ANCHORAGE_AUTH_APITOKEN_SIGNINGKEYS (auth.apiToken.signingKeys): "k2" is not id:path[:primary]; use e.g. k1:/etc/anchorage/k1.key:primary,k2:/etc/anchorage/k2.key`,
	}, strings.Split(err.Error(), "\n"))

	for _, bad := range []string{":/a.key", "k1:", "k1::primary", "k1:/a,,k2:/b"} {
		_, err := parseSigningKeys(bad)
		assert.Error(t, err, bad)
	}
}
