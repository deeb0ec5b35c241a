package config

import (
	"cmp"
	"errors"
	"fmt"
	"net"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// Validate checks c for mode and returns every problem at once (joined with errors.Join, one per line), each
// naming the key and the fix; nil when c is usable. Values that may hold secrets are never echoed.
func (c Config) Validate(mode Mode) error {
	var v validator
	c.validateGeneral(&v)
	c.validateServer(&v)
	c.validatePostgres(&v, mode)
	c.validateNATS(&v)
	c.validateKubo(&v)
	c.validateAuth(&v, mode)
	for i, s := range c.Bootstrap.Sysadmins {
		key := fmt.Sprintf("bootstrap.sysadmins[%d]", i)
		switch {
		case strings.TrimSpace(s) == "":
			v.add("%s: must not be empty; remove the entry or name a sysadmin, e.g. alice@example.com", key)
		case strings.TrimSpace(s) != s || strings.ContainsAny(s, " \t\r\n"):
			v.add("%s: %q must not contain spaces", key, s)
		}
	}
	return errors.Join(v.errs...)
}

type validator struct{ errs []error }

func (v *validator) add(format string, a ...any) { v.errs = append(v.errs, fmt.Errorf(format, a...)) }

func (v *validator) oneOf(key, value string, allowed ...string) {
	if !slices.Contains(allowed, value) {
		v.add("%s: %q is not one of %s", key, value, strings.Join(allowed, ", "))
	}
}

// hostPort checks an optional host:port listen address; the host may be empty (all interfaces), the port 0.
func (v *validator) hostPort(key, value, example string) {
	if value == "" {
		return
	}
	_, port, err := net.SplitHostPort(value)
	if err == nil {
		var n int
		n, err = strconv.Atoi(port)
		if err == nil && (n < 0 || n > 65535) {
			err = errors.New("port out of range")
		}
	}
	if err != nil {
		v.add("%s: %q is not host:port; use e.g. %s", key, value, example)
	}
}

// httpURL checks an optional absolute http(s) URL.
func (v *validator) httpURL(key, value, example string) {
	if value == "" {
		return
	}
	if u, err := url.Parse(value); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		v.add("%s: %q is not an absolute http(s) URL; use e.g. %s", key, redactURL(value), example)
	}
}

func (v *validator) positive(key string, d Duration, example string) {
	if d <= 0 {
		v.add("%s: must be greater than 0; use e.g. %s", key, example)
	}
}

func (c Config) validateGeneral(v *validator) {
	if c.DataDir == "" {
		v.add("dataDir: must not be empty; set the directory anchorage keeps its data in, e.g. /var/lib/anchorage")
	}
	if c.MemoryLimit < 0 {
		v.add("memoryLimit: must not be negative; use 0 (no limit) or a size, e.g. 512MiB")
	} else if c.MemoryLimit > 0 && c.MemoryLimit < 64<<20 {
		v.add("memoryLimit: %s is too small to run in; use 0 (no limit) or at least 64MiB", c.MemoryLimit)
	}
	v.oneOf("log.level", c.Log.Level, "debug", "info", "warn", "error")
	v.oneOf("log.format", c.Log.Format, "json", "text")
}

func (c Config) validateServer(v *validator) {
	s := c.Server
	if s.Listen == "" {
		v.add("server.listen: must not be empty; use e.g. 127.0.0.1:8080")
	}
	v.hostPort("server.listen", s.Listen, "127.0.0.1:8080")
	v.httpURL("server.publicURL", s.PublicURL, "https://pins.example.com")
	if s.MaxBodyBytes <= 0 {
		v.add("server.maxBodyBytes: must be greater than 0; use e.g. 1MiB")
	}
	wildcard := false
	for i, o := range s.CORS.AllowedOrigins {
		if o == "*" {
			wildcard = true
			continue
		}
		u, err := url.Parse(o)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil ||
			u.Path != "" || u.RawQuery != "" || u.Fragment != "" || strings.HasSuffix(o, "?") || strings.HasSuffix(o, "#") {
			v.add("server.cors.allowedOrigins[%d]: %q is not an origin; use scheme://host[:port] without a path or trailing slash, e.g. https://app.example.com, or \"*\"", i, o)
		}
	}
	if wildcard && s.CORS.AllowCredentials {
		v.add("server.cors.allowCredentials: cannot be true when server.cors.allowedOrigins contains \"*\" (browsers refuse credentials for any origin); list the origins instead")
	}
	v.positive("server.shutdownTimeout", s.ShutdownTimeout, "15s")
}

func (c Config) validatePostgres(v *validator, mode Mode) {
	p := c.Postgres
	if p.Managed {
		for _, k := range []struct{ key, value string }{{"postgres.url", p.URL}, {"postgres.apiURL", p.APIURL}} {
			if k.value != "" {
				v.add("%s: must be empty when postgres.managed is true (anchorage connects to the server it runs itself); remove it or set postgres.managed: false", k.key)
			}
		}
	} else if mode == ModeServe || p.URL != "" || p.APIURL != "" {
		why := "in serve mode unless postgres.managed is true"
		if mode != ModeServe {
			why = "when the other PostgreSQL DSN is set (leave both empty for a managed PostgreSQL)"
		}
		if p.URL == "" {
			v.add("postgres.url: required %s; set the owner role's DSN, e.g. postgres://anchorage:PASSWORD@db.example.com:5432/anchorage", why)
		}
		if p.APIURL == "" {
			v.add("postgres.apiURL: required %s; set the API role's DSN (not the table owner, NOBYPASSRLS), e.g. postgres://anchorage_api:PASSWORD@db.example.com:5432/anchorage", why)
		}
	}
	for _, k := range []struct{ key, value string }{{"postgres.url", p.URL}, {"postgres.apiURL", p.APIURL}} {
		if k.value != "" && !validDSN(k.value) {
			v.add("%s: is not a PostgreSQL DSN; use postgres://USER:PASSWORD@HOST:5432/DBNAME or \"host=HOST user=USER dbname=DBNAME\"", k.key)
		}
	}
	if p.URL != "" && p.URL == p.APIURL {
		v.add("postgres.apiURL: must not be the same DSN as postgres.url; the API role must be a separate role that does not own the tables and has NOBYPASSRLS, or row-level security is bypassed")
	}
	if p.MaxConns < 1 {
		v.add("postgres.maxConns: %d must be at least 1; use e.g. 16", p.MaxConns)
	}
}

// validDSN accepts a postgres:// or postgresql:// URL, or a libpq key=value string.
func validDSN(s string) bool {
	if strings.HasPrefix(s, "postgres://") || strings.HasPrefix(s, "postgresql://") {
		_, err := url.Parse(s)
		return err == nil
	}
	return !strings.Contains(s, "://") && strings.Contains(s, "=")
}

func (c Config) validateNATS(v *validator) {
	n := c.NATS
	v.oneOf("nats.sync", string(n.Sync), string(SyncModeGroup), string(SyncModeAlways), string(SyncModeInterval))
	if n.Sync == SyncModeInterval && n.SyncInterval <= 0 {
		v.add("nats.syncInterval: must be greater than 0 when nats.sync is interval; use e.g. 2m")
	}
	v.hostPort("nats.listen", n.Listen, "127.0.0.1:4222")
	v.hostPort("nats.cluster.listen", n.Cluster.Listen, "0.0.0.0:6222")
	for i, r := range n.Cluster.Routes {
		u, err := url.Parse(r)
		if err != nil || u.Scheme != "nats-route" || u.Hostname() == "" || u.Port() == "" {
			v.add("nats.cluster.routes[%d]: %q is not a nats-route URL; use e.g. nats-route://node2.example.com:6222", i, redactURL(r))
		}
	}
	if n.Cluster.Name == "" && (n.Cluster.Listen != "" || len(n.Cluster.Routes) > 0) {
		v.add("nats.cluster.name: required when nats.cluster.listen or nats.cluster.routes is set; use the same name on every node, e.g. anchorage")
	}
	if n.Cluster.Name != "" || n.Cluster.Listen != "" || len(n.Cluster.Routes) > 0 {
		// Accepting the section and running alone would leave an operator believing the log is replicated.
		v.add("nats.cluster: clustering is not available in this version; the node would run alone and nothing would replicate its event log. Remove the nats.cluster section (for a standby copy of the log, use nats.leafnodes with a mirror: see docs/backup.md)")
	}
	if n.MaxStoreBytes < 0 {
		v.add("nats.maxStoreBytes: must not be negative; use 0 for unlimited or a size such as 100GiB")
	}
	if n.Domain != "" && !natsDomainRE.MatchString(n.Domain) {
		v.add("nats.domain: %q is not a JetStream domain name; use 1-64 letters, digits, - and _, e.g. primary", n.Domain)
	}
	v.hostPort("nats.leafnodes.listen", n.LeafNodes.Listen, "0.0.0.0:7422")
	if n.LeafNodes.Listen != "" && n.Domain == "" {
		v.add("nats.domain: required when nats.leafnodes.listen is set, so a mirror on the standby can name this log's API ($JS.<domain>.API); use e.g. primary")
	}
}

var natsDomainRE = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

var nodeIDRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$`)

func (c Config) validateKubo(v *validator) {
	k := c.Kubo
	v.httpURL("kubo.rpcURL", k.RPCURL, "http://127.0.0.1:5001")
	if k.Concurrency < 1 || k.Concurrency > 256 {
		v.add("kubo.concurrency: %d is out of range; use 1 to 256 (8 to 32 suits most nodes)", k.Concurrency)
	}
	v.positive("kubo.pinTimeout", k.PinTimeout, "10m")
	v.positive("kubo.slowAfter", k.SlowAfter, "5s")
	if k.SlowLimit < 0 || k.SlowLimit > 4096 {
		v.add("kubo.slowLimit: %d is out of range; use 0 (4 x kubo.concurrency) to 4096", k.SlowLimit)
	}
	if k.Capacity < 0 {
		v.add("kubo.capacity: %d must be 0 (unlimited) or a positive number of pins", k.Capacity)
	}
	if k.MaintenanceAlertAfter < 0 {
		v.add("kubo.maintenanceAlertAfter: must not be negative")
	}
	if k.Replication > 7 {
		v.add("kubo.replication: %d is more than the 7 replicas a pin can have", k.Replication)
	}
	if k.Replication < 1 {
		v.add("kubo.replication: %d must be at least 1", k.Replication)
	}
	if k.NodeID != "" && !nodeIDRE.MatchString(k.NodeID) {
		v.add("kubo.nodeID: %q is not a node id; use 1-64 letters, digits, '-' or '_' starting with a letter or digit (it appears in NATS subjects), or leave it empty to derive one", k.NodeID)
	}
}

var keyIDRE = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)

func (c Config) validateAuth(v *validator, mode Mode) {
	a := c.Auth.Authentik
	if a.Issuer != "" {
		// Kept verbatim: a trailing slash is part of the issuer.
		u, err := url.Parse(a.Issuer)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
			v.add("auth.authentik.issuer: %q is not an absolute http(s) URL without query or fragment; use the provider's issuer exactly as Authentik shows it, e.g. https://auth.example.com/application/o/anchorage/", redactURL(a.Issuer))
		}
		if a.ClientID == "" {
			v.add("auth.authentik.clientID: required when auth.authentik.issuer is set; copy the client ID of the Authentik provider")
		}
	} else {
		var set []string
		for _, k := range []struct{ key, value string }{
			{"clientID", a.ClientID}, {"clientSecret", a.ClientSecret}, {"redirectURI", a.RedirectURI}, {"audience", a.Audience},
		} {
			if k.value != "" {
				set = append(set, "auth.authentik."+k.key)
			}
		}
		if len(set) > 0 {
			v.add("auth.authentik.issuer: required when %s is set; set the provider's issuer URL or remove the other auth.authentik keys", strings.Join(set, ", "))
		}
	}
	v.httpURL("auth.authentik.redirectURI", a.RedirectURI, "the callback URL registered in Authentik, https://pins.example.com/...")

	t := c.Auth.APIToken
	if mode == ModeServe && len(t.SigningKeys) == 0 {
		v.add("auth.apiToken.signingKeys: at least one key is required in serve mode; add e.g. {id: k1, path: /etc/anchorage/k1.key, primary: true}")
	}
	firstUse := map[string]int{}
	var primaries []string
	for i, k := range t.SigningKeys {
		key := fmt.Sprintf("auth.apiToken.signingKeys[%d]", i)
		switch {
		case k.ID == "":
			v.add("%s.id: must not be empty; name the key, e.g. k1", key)
		case !keyIDRE.MatchString(k.ID):
			v.add("%s.id: %q is not a key id; use 1-64 letters, digits, '.', '_' or '-'", key, k.ID)
		default:
			if j, dup := firstUse[k.ID]; dup {
				v.add("%s.id: %q is already used by auth.apiToken.signingKeys[%d]; key ids must be unique", key, k.ID, j)
			} else {
				firstUse[k.ID] = i
			}
		}
		if k.Path == "" {
			v.add("%s.path: must not be empty; set the key file, e.g. /etc/anchorage/%s.key", key, cmp.Or(k.ID, "k1"))
		}
		if k.Primary {
			primaries = append(primaries, k.ID)
		}
	}
	if len(t.SigningKeys) > 0 && len(primaries) != 1 {
		found := strconv.Itoa(len(primaries))
		if len(primaries) > 1 {
			found += ": " + strings.Join(primaries, ", ")
		}
		v.add("auth.apiToken.signingKeys: exactly one key must have primary: true (found %s)", found)
	}
	v.positive("auth.apiToken.defaultTTL", t.DefaultTTL, "720h or 30d")
	v.positive("auth.apiToken.maxTTL", t.MaxTTL, "8760h or 365d")
	if t.DefaultTTL > 0 && t.MaxTTL > 0 && t.DefaultTTL > t.MaxTTL {
		v.add("auth.apiToken.defaultTTL (%s) must not exceed auth.apiToken.maxTTL (%s)", t.DefaultTTL, t.MaxTTL)
	}
}
