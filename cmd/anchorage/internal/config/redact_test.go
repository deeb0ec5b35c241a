package config

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func secretConfig() Config {
	c := fullConfig()
	c.Postgres.URL = "postgres://owner:ownerpw@db:5432/anchorage?sslmode=require&sslpassword=sslpw"
	c.Postgres.APIURL = "host=db user=api password='api pw' dbname=anchorage"
	c.Kubo.RPCURL = "http://kubo:kubopw@127.0.0.1:5001"
	c.NATS.Cluster.Routes = []string{"nats-route://route:routepw@node2:6222"}
	return c
}

var secrets = []string{"s3cret", "ownerpw", "sslpw", "api pw", "kubopw", "routepw"}

func TestRedacted(t *testing.T) {
	c := secretConfig()
	r := c.Redacted()
	assert.Equal(t, "REDACTED", r.Auth.Authentik.ClientSecret)
	assert.Equal(t, "postgres://owner:REDACTED@db:5432/anchorage?sslmode=require&sslpassword=REDACTED", r.Postgres.URL)
	assert.Equal(t, "host=db user=api password=REDACTED dbname=anchorage", r.Postgres.APIURL)
	assert.Equal(t, "http://kubo:REDACTED@127.0.0.1:5001", r.Kubo.RPCURL)
	assert.Equal(t, []string{"nats-route://route:REDACTED@node2:6222"}, r.NATS.Cluster.Routes)
	assert.Equal(t, c.Auth.Authentik.Issuer, r.Auth.Authentik.Issuer)
	assert.Equal(t, c.Auth.APIToken.SigningKeys, r.Auth.APIToken.SigningKeys)

	// The original is untouched (no shared slices).
	assert.Equal(t, secretConfig(), c)

	// Everything else is unchanged.
	r.Auth.Authentik.ClientSecret = c.Auth.Authentik.ClientSecret
	r.Postgres, r.Kubo.RPCURL, r.NATS.Cluster.Routes = c.Postgres, c.Kubo.RPCURL, c.NATS.Cluster.Routes
	assert.Equal(t, c, r)
}

func TestRedactDSN(t *testing.T) {
	for in, want := range map[string]string{
		"":                                   "",
		"postgres://u@h/db":                  "postgres://u@h/db",
		"postgres://u:p@ss@h/db":             "postgres://u:REDACTED@h/db",
		"password=x host=h":                  "password=REDACTED host=h",
		"host=h PASSWORD = 'a \\' b' user=u": "host=h PASSWORD = REDACTED user=u",
		"postgres://u:p@h:bad port/db":       "REDACTED",
	} {
		assert.Equal(t, want, redactDSN(in), in)
	}
}

func TestSecretsNeverPrinted(t *testing.T) {
	c := secretConfig()
	var jsonLog, textLog bytes.Buffer
	slog.New(slog.NewJSONHandler(&jsonLog, nil)).Info("config", "config", c)
	slog.New(slog.NewTextHandler(&textLog, nil)).Info("config", "config", c)
	outputs := map[string]string{
		"String": c.String(),
		"%v":     fmt.Sprintf("%v", c),
		"%s":     fmt.Sprintf("%s", c),
		"json":   jsonLog.String(),
		"text":   textLog.String(),
	}
	for name, out := range outputs {
		for _, s := range secrets {
			assert.NotContains(t, out, s, name)
		}
		assert.Contains(t, out, "REDACTED", name)
	}

	// The JSON log is nested by key and shows values as they are written in a file.
	var rec struct {
		Config map[string]any `json:"config"`
	}
	require.NoError(t, json.Unmarshal(jsonLog.Bytes(), &rec))
	server := rec.Config["server"].(map[string]any)
	assert.Equal(t, "0.0.0.0:9090", server["listen"])
	assert.Equal(t, "64KiB", server["maxBodyBytes"])
	assert.Equal(t, "30s", server["shutdownTimeout"])
	assert.Equal(t, []any{"https://app.example.com", "http://localhost:5173"}, server["cors"].(map[string]any)["allowedOrigins"])
	assert.Equal(t, float64(32), rec.Config["postgres"].(map[string]any)["maxConns"])
	apiToken := rec.Config["auth"].(map[string]any)["apiToken"].(map[string]any)
	assert.Equal(t, []any{"k1:/etc/anchorage/k1.key:primary", "k0:/etc/anchorage/k0.key"}, apiToken["signingKeys"])
	assert.Equal(t, "interval", rec.Config["nats"].(map[string]any)["sync"])

	// String is the redacted YAML, which loads back.
	back, err := Load(writeConfig(t, c.String()), noEnv)
	require.NoError(t, err)
	assert.Equal(t, c.Redacted(), back)
}

func TestResolve(t *testing.T) {
	c := Default()
	c.NATS.StoreDir = "nats-store"
	c.NATS.CredentialsFile = "/abs/creds"
	c.Auth.APIToken.SigningKeys = []SigningKey{{ID: "k1", Path: "keys/k1.key", Primary: true}}
	r, err := c.Resolve("/base")
	require.NoError(t, err)
	assert.Equal(t, "/base/.anchorage", r.DataDir)
	assert.Equal(t, "/base/nats-store", r.NATS.StoreDir)
	assert.Equal(t, "/abs/creds", r.NATS.CredentialsFile)
	assert.Equal(t, "/base/keys/k1.key", r.Auth.APIToken.SigningKeys[0].Path)
	assert.Equal(t, "keys/k1.key", c.Auth.APIToken.SigningKeys[0].Path, "the receiver is not modified")
	assert.Equal(t, "/base/.anchorage/postgres", r.PostgresDir())
	assert.Equal(t, "/base/nats-store", r.NATSStoreDir())
	assert.Equal(t, "/abs/creds", r.NATSCredentialsFile())

	r, err = Default().Resolve("")
	require.NoError(t, err)
	wd, err := filepath.Abs(".")
	require.NoError(t, err)
	assert.Equal(t, filepath.Join(wd, ".anchorage"), r.DataDir)
	assert.Equal(t, filepath.Join(wd, ".anchorage", "nats", "credentials"), r.NATSCredentialsFile())
}

// clone must copy every slice in Config, or Redacted and Resolve would write through to their receiver.
func TestCloneSharesNoSlices(t *testing.T) {
	c := secretConfig()
	d := c.clone()
	var check func(a, b reflect.Value, path string)
	check = func(a, b reflect.Value, path string) {
		switch a.Kind() {
		case reflect.Struct:
			for i := range a.NumField() {
				check(a.Field(i), b.Field(i), path+"."+a.Type().Field(i).Name)
			}
		case reflect.Slice:
			require.NotZero(t, a.Len(), "%s: give it an element in the test config", path)
			assert.NotEqual(t, a.Pointer(), b.Pointer(), "%s is shared; copy it in clone", path)
		}
	}
	check(reflect.ValueOf(c), reflect.ValueOf(d), "Config")
}

func TestPrimarySigningKey(t *testing.T) {
	k, ok := fullConfig().PrimarySigningKey()
	assert.True(t, ok)
	assert.Equal(t, "k1", k.ID)
	_, ok = Default().PrimarySigningKey()
	assert.False(t, ok)
}
