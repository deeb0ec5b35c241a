package config

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// validConfig is fullConfig without its nats.cluster section, which parses but is refused (clustering is not
// available yet).
func validConfig() Config {
	c := fullConfig()
	c.NATS.Cluster = NATSCluster{}
	return c
}

func TestValidateAcceptsGoodConfigs(t *testing.T) {
	require.NoError(t, validConfig().Validate(ModeServe))
	require.NoError(t, validConfig().Validate(ModeDev))
	require.NoError(t, Default().Validate(ModeDev))

	managed := Default()
	managed.Postgres.Managed = true
	managed.Auth.APIToken.SigningKeys = []SigningKey{{ID: "k1", Path: "k1.key", Primary: true}}
	require.NoError(t, managed.Validate(ModeServe), "serve with a managed PostgreSQL needs no DSNs")

	for _, listen := range []string{"127.0.0.1:0", ":8080", "[::1]:8080", "localhost:65535"} {
		c := Default()
		c.Server.Listen = listen
		assert.NoError(t, c.Validate(ModeDev), listen)
	}
	c := Default()
	c.Postgres.URL = "host=db user=owner password='x y' dbname=anchorage"
	c.Postgres.APIURL = "postgresql://api@db/anchorage?sslmode=require"
	c.Server.CORS.AllowedOrigins = []string{"*", "http://localhost:5173"}
	c.Auth.Authentik = Authentik{Issuer: "http://localhost:9000/application/o/dev/", ClientID: "dev"}
	assert.NoError(t, c.Validate(ModeDev))
}

func TestValidateErrors(t *testing.T) {
	for _, tc := range []struct {
		name   string
		mode   Mode
		mutate func(c *Config)
		want   []string
	}{
		{"dataDir empty", ModeServe, func(c *Config) { c.DataDir = "" },
			[]string{"dataDir: must not be empty; set the directory anchorage keeps its data in, e.g. /var/lib/anchorage"}},
		{"log", ModeServe, func(c *Config) { c.Log = Log{Level: "verbose", Format: "xml"} }, []string{
			`log.level: "verbose" is not one of debug, info, warn, error`,
			`log.format: "xml" is not one of json, text`,
		}},
		{"listen without host", ModeServe, func(c *Config) { c.Server.Listen = "8080" },
			[]string{`server.listen: "8080" is not host:port; use e.g. 127.0.0.1:8080`}},
		{"listen bad port", ModeServe, func(c *Config) { c.Server.Listen = "127.0.0.1:70000" },
			[]string{`server.listen: "127.0.0.1:70000" is not host:port; use e.g. 127.0.0.1:8080`}},
		{"listen empty", ModeServe, func(c *Config) { c.Server.Listen = "" },
			[]string{`server.listen: must not be empty; use e.g. 127.0.0.1:8080`}},
		{"publicURL", ModeServe, func(c *Config) { c.Server.PublicURL = "pins.example.com" },
			[]string{`server.publicURL: "pins.example.com" is not an absolute http(s) URL; use e.g. https://pins.example.com`}},
		{"memoryLimit negative", ModeServe, func(c *Config) { c.MemoryLimit = -1 },
			[]string{`memoryLimit: must not be negative; use 0 (no limit) or a size, e.g. 512MiB`}},
		{"memoryLimit tiny", ModeServe, func(c *Config) { c.MemoryLimit = 1 << 20 },
			[]string{`memoryLimit: 1MiB is too small to run in; use 0 (no limit) or at least 64MiB`}},
		{"maxBodyBytes", ModeServe, func(c *Config) { c.Server.MaxBodyBytes = 0 },
			[]string{`server.maxBodyBytes: must be greater than 0; use e.g. 1MiB`}},
		{"cors origins", ModeServe, func(c *Config) {
			c.Server.CORS.AllowedOrigins = []string{"https://app.example.com/", "app.example.com", "*"}
		}, []string{
			`server.cors.allowedOrigins[0]: "https://app.example.com/" is not an origin; use scheme://host[:port] without a path or trailing slash, e.g. https://app.example.com, or "*"`,
			`server.cors.allowedOrigins[1]: "app.example.com" is not an origin; use scheme://host[:port] without a path or trailing slash, e.g. https://app.example.com, or "*"`,
			`server.cors.allowCredentials: cannot be true when server.cors.allowedOrigins contains "*" (browsers refuse credentials for any origin); list the origins instead`,
		}},
		{"shutdownTimeout", ModeServe, func(c *Config) { c.Server.ShutdownTimeout = 0 },
			[]string{`server.shutdownTimeout: must be greater than 0; use e.g. 15s`}},
		{"postgres missing in serve", ModeServe, func(c *Config) { c.Postgres.URL, c.Postgres.APIURL = "", "" }, []string{
			"postgres.url: required in serve mode unless postgres.managed is true; set the owner role's DSN, e.g. postgres://anchorage:PASSWORD@db.example.com:5432/anchorage",
			"postgres.apiURL: required in serve mode unless postgres.managed is true; set the API role's DSN (not the table owner, NOBYPASSRLS), e.g. postgres://anchorage_api:PASSWORD@db.example.com:5432/anchorage",
		}},
		{"postgres half set in dev", ModeDev, func(c *Config) { c.Postgres.APIURL = "" }, []string{
			"postgres.apiURL: required when the other PostgreSQL DSN is set (leave both empty for a managed PostgreSQL); set the API role's DSN (not the table owner, NOBYPASSRLS), e.g. postgres://anchorage_api:PASSWORD@db.example.com:5432/anchorage",
		}},
		{"postgres managed with DSNs", ModeServe, func(c *Config) { c.Postgres.Managed = true }, []string{
			"postgres.url: must be empty when postgres.managed is true (anchorage connects to the server it runs itself); remove it or set postgres.managed: false",
			"postgres.apiURL: must be empty when postgres.managed is true (anchorage connects to the server it runs itself); remove it or set postgres.managed: false",
		}},
		{"postgres bad DSN, secret not echoed", ModeServe, func(c *Config) { c.Postgres.URL = "s3cretpassword" }, []string{
			`postgres.url: is not a PostgreSQL DSN; use postgres://USER:PASSWORD@HOST:5432/DBNAME or "host=HOST user=USER dbname=DBNAME"`,
		}},
		{"postgres same DSN", ModeServe, func(c *Config) { c.Postgres.APIURL = c.Postgres.URL }, []string{
			"postgres.apiURL: must not be the same DSN as postgres.url; the API role must be a separate role that does not own the tables and has NOBYPASSRLS, or row-level security is bypassed",
		}},
		{"postgres maxConns", ModeServe, func(c *Config) { c.Postgres.MaxConns = 0 },
			[]string{"postgres.maxConns: 0 must be at least 1; use e.g. 16"}},
		{"nats sync", ModeServe, func(c *Config) { c.NATS.Sync = "sometimes" },
			[]string{`nats.sync: "sometimes" is not one of group, always, interval`}},
		{"nats syncInterval", ModeServe, func(c *Config) { c.NATS.SyncInterval = 0 },
			[]string{`nats.syncInterval: must be greater than 0 when nats.sync is interval; use e.g. 2m`}},
		{"nats listeners", ModeServe, func(c *Config) { c.NATS.Listen = "4222"; c.NATS.Cluster.Listen = "x" }, []string{
			`nats.listen: "4222" is not host:port; use e.g. 127.0.0.1:4222`,
			`nats.cluster.listen: "x" is not host:port; use e.g. 0.0.0.0:6222`,
			`nats.cluster.name: required when nats.cluster.listen or nats.cluster.routes is set; use the same name on every node, e.g. anchorage`,
			"nats.cluster: clustering is not available in this version; the node would run alone and nothing would replicate its event log. Remove the nats.cluster section (for a standby copy of the log, use nats.leafnodes with a mirror: see docs/backup.md)",
		}},
		{"nats routes and cluster name", ModeServe, func(c *Config) {
			c.NATS.Cluster.Name = ""
			c.NATS.Cluster.Routes = []string{"nats://node2:6222", "nats-route://node3", "nats-route://u:pw@node4:6222"}
		}, []string{
			`nats.cluster.routes[0]: "nats://node2:6222" is not a nats-route URL; use e.g. nats-route://node2.example.com:6222`,
			`nats.cluster.routes[1]: "nats-route://node3" is not a nats-route URL; use e.g. nats-route://node2.example.com:6222`,
			`nats.cluster.name: required when nats.cluster.listen or nats.cluster.routes is set; use the same name on every node, e.g. anchorage`,
			"nats.cluster: clustering is not available in this version; the node would run alone and nothing would replicate its event log. Remove the nats.cluster section (for a standby copy of the log, use nats.leafnodes with a mirror: see docs/backup.md)",
		}},
		{"nats cluster alone", ModeServe, func(c *Config) { c.NATS.Cluster.Name = "anchorage" }, []string{"nats.cluster: clustering is not available in this version; the node would run alone and nothing would replicate its event log. Remove the nats.cluster section (for a standby copy of the log, use nats.leafnodes with a mirror: see docs/backup.md)"}},
		{"nats maxStoreBytes", ModeServe, func(c *Config) { c.NATS.MaxStoreBytes = -1 },
			[]string{`nats.maxStoreBytes: must not be negative; use 0 for unlimited or a size such as 100GiB`}},
		{"nats leafnodes without a domain", ModeServe, func(c *Config) { c.NATS.LeafNodes.Listen = "0.0.0.0:7422" },
			[]string{`nats.domain: required when nats.leafnodes.listen is set, so a mirror on the standby can name this log's API ($JS.<domain>.API); use e.g. primary`}},
		{"nats domain and leafnode listener", ModeServe, func(c *Config) { c.NATS.Domain = "prim ary"; c.NATS.LeafNodes.Listen = "7422" }, []string{
			`nats.domain: "prim ary" is not a JetStream domain name; use 1-64 letters, digits, - and _, e.g. primary`,
			`nats.leafnodes.listen: "7422" is not host:port; use e.g. 0.0.0.0:7422`,
		}},
		{"kubo", ModeServe, func(c *Config) {
			c.Kubo = Kubo{RPCURL: "127.0.0.1:5001", Concurrency: 300, PinTimeout: 0, SlowLimit: -1, Replication: 0, NodeID: "node.1"}
		}, []string{
			`kubo.rpcURL: "127.0.0.1:5001" is not an absolute http(s) URL; use e.g. http://127.0.0.1:5001`,
			`kubo.concurrency: 300 is out of range; use 1 to 256 (8 to 32 suits most nodes)`,
			`kubo.pinTimeout: must be greater than 0; use e.g. 10m`,
			`kubo.slowAfter: must be greater than 0; use e.g. 5s`,
			`kubo.slowLimit: -1 is out of range; use 0 (4 x kubo.concurrency) to 4096`,
			`kubo.replication: 0 must be at least 1`,
			`kubo.nodeID: "node.1" is not a node id; use 1-64 letters, digits, '-' or '_' starting with a letter or digit (it appears in NATS subjects), or leave it empty to derive one`,
		}},
		{"kubo concurrency zero", ModeServe, func(c *Config) { c.Kubo.Concurrency = 0 },
			[]string{`kubo.concurrency: 0 is out of range; use 1 to 256 (8 to 32 suits most nodes)`}},
		{"issuer not a URL, no client id", ModeServe, func(c *Config) {
			c.Auth.Authentik.Issuer = "auth.example.com/"
			c.Auth.Authentik.ClientID = ""
		}, []string{
			`auth.authentik.issuer: "auth.example.com/" is not an absolute http(s) URL without query or fragment; use the provider's issuer exactly as Authentik shows it, e.g. https://auth.example.com/application/o/anchorage/`,
			`auth.authentik.clientID: required when auth.authentik.issuer is set; copy the client ID of the Authentik provider`,
		}},
		{"authentik keys without issuer", ModeServe, func(c *Config) { c.Auth.Authentik.Issuer = "" }, []string{
			`auth.authentik.issuer: required when auth.authentik.clientID, auth.authentik.clientSecret, auth.authentik.redirectURI, auth.authentik.audience is set; set the provider's issuer URL or remove the other auth.authentik keys`,
		}},
		{"redirectURI", ModeServe, func(c *Config) { c.Auth.Authentik.RedirectURI = "/auth/callback" }, []string{
			`auth.authentik.redirectURI: "/auth/callback" is not an absolute http(s) URL; use e.g. the callback URL registered in Authentik, https://pins.example.com/...`,
		}},
		{"no signing keys in serve", ModeServe, func(c *Config) { c.Auth.APIToken.SigningKeys = nil }, []string{
			`auth.apiToken.signingKeys: at least one key is required in serve mode; add e.g. {id: k1, path: /etc/anchorage/k1.key, primary: true}`,
		}},
		{"two primaries", ModeServe, func(c *Config) {
			c.Auth.APIToken.SigningKeys = []SigningKey{{ID: "k1", Path: "/k1", Primary: true}, {ID: "k2", Path: "/k2", Primary: true}}
		}, []string{`auth.apiToken.signingKeys: exactly one key must have primary: true (found 2: k1, k2)`}},
		{"no primary", ModeDev, func(c *Config) {
			c.Auth.APIToken.SigningKeys = []SigningKey{{ID: "k1", Path: "/k1"}}
		}, []string{`auth.apiToken.signingKeys: exactly one key must have primary: true (found 0)`}},
		{"bad keys", ModeServe, func(c *Config) {
			c.Auth.APIToken.SigningKeys = []SigningKey{
				{ID: "k1", Path: "/k1", Primary: true}, {ID: "", Path: "/x"}, {ID: "k 2", Path: "/y"}, {ID: "k1", Path: ""},
			}
		}, []string{
			`auth.apiToken.signingKeys[1].id: must not be empty; name the key, e.g. k1`,
			`auth.apiToken.signingKeys[2].id: "k 2" is not a key id; use 1-64 letters, digits, '.', '_' or '-'`,
			`auth.apiToken.signingKeys[3].id: "k1" is already used by auth.apiToken.signingKeys[0]; key ids must be unique`,
			`auth.apiToken.signingKeys[3].path: must not be empty; set the key file, e.g. /etc/anchorage/k1.key`,
		}},
		{"TTL order", ModeServe, func(c *Config) {
			c.Auth.APIToken.DefaultTTL = Duration(900 * time.Hour)
			c.Auth.APIToken.MaxTTL = Duration(720 * time.Hour)
		}, []string{`auth.apiToken.defaultTTL (900h) must not exceed auth.apiToken.maxTTL (720h)`}},
		{"TTL zero", ModeServe, func(c *Config) { c.Auth.APIToken.DefaultTTL, c.Auth.APIToken.MaxTTL = 0, 0 }, []string{
			`auth.apiToken.defaultTTL: must be greater than 0; use e.g. 720h or 30d`,
			`auth.apiToken.maxTTL: must be greater than 0; use e.g. 8760h or 365d`,
		}},
		{"sysadmins", ModeServe, func(c *Config) { c.Bootstrap.Sysadmins = []string{"ok@example.com", "", " bob@example.com"} }, []string{
			`bootstrap.sysadmins[1]: must not be empty; remove the entry or name a sysadmin, e.g. alice@example.com`,
			`bootstrap.sysadmins[2]: " bob@example.com" must not contain spaces`,
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := validConfig()
			tc.mutate(&c)
			err := c.Validate(tc.mode)
			require.Error(t, err)
			assert.Equal(t, tc.want, strings.Split(err.Error(), "\n"))
			assert.NotContains(t, err.Error(), "s3cret")
			assert.NotContains(t, err.Error(), "pw")
		})
	}
}

func TestValidateReportsEverythingAtOnce(t *testing.T) {
	c := Default()
	c.Server.Listen = "8080"
	c.NATS.Sync = "sometimes"
	c.Auth.APIToken.DefaultTTL = Duration(900 * time.Hour)
	c.Auth.APIToken.MaxTTL = Duration(720 * time.Hour)
	err := c.Validate(ModeServe)
	require.Error(t, err)
	lines := strings.Split(err.Error(), "\n")
	assert.Len(t, lines, 6, err.Error())
	for _, key := range []string{"server.listen:", "postgres.url:", "postgres.apiURL:", "nats.sync:", "auth.apiToken.signingKeys:", "auth.apiToken.defaultTTL ("} {
		assert.Contains(t, err.Error(), key)
	}
}
