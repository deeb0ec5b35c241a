// Package config loads, overrides, resolves and validates anchorage's configuration.
//
// One YAML file configures anchorage (camelCase keys, unknown keys rejected); environment variables override
// it (ANCHORAGE_ + the key path upper-cased with dots replaced by "_", plus the conventional OIDC_* names);
// Validate reports every problem at once, each naming the key and the fix. docs/configuration.md is the
// reference for every key.
//
// Typical use:
//
//	cfg, err := config.Load(path, os.Getenv)          // defaults < file < environment
//	// ... apply command-line flags ...
//	cfg, err = cfg.Resolve("")                          // remaining relative paths against the working directory
//	err = cfg.Validate(config.ModeServe)
//	logger.Info("config", "config", cfg)               // Config is a slog.LogValuer that hides secrets
package config

import (
	"path/filepath"
	"time"
)

// Config is anchorage's whole configuration. The yaml tags are the keys of the config file; the environment
// variable of a key is derived from its path (see EnvVars).
type Config struct {
	DataDir string `yaml:"dataDir"`
	// MemoryLimit is the Go runtime's soft memory limit (as GOMEMLIMIT); 0 leaves it to GOMEMLIMIT, or none.
	MemoryLimit ByteSize  `yaml:"memoryLimit"`
	Log         Log       `yaml:"log"`
	Server      Server    `yaml:"server"`
	Postgres    Postgres  `yaml:"postgres"`
	NATS        NATS      `yaml:"nats"`
	Kubo        Kubo      `yaml:"kubo"`
	Auth        Auth      `yaml:"auth"`
	Bootstrap   Bootstrap `yaml:"bootstrap"`
}

// Log configures the process logger.
type Log struct {
	Level  string `yaml:"level"`  // debug, info, warn or error
	Format string `yaml:"format"` // json or text
}

// Server configures the HTTP API listener.
type Server struct {
	Listen          string   `yaml:"listen"`    // host:port; port 0 picks a free port
	PublicURL       string   `yaml:"publicURL"` // how clients reach the server; optional
	MaxBodyBytes    ByteSize `yaml:"maxBodyBytes"`
	CORS            CORS     `yaml:"cors"`
	ShutdownTimeout Duration `yaml:"shutdownTimeout"`
}

// CORS configures cross-origin requests from browsers.
type CORS struct {
	AllowedOrigins   []string `yaml:"allowedOrigins"`
	AllowCredentials bool     `yaml:"allowCredentials"`
}

// Postgres configures the read-model database.
type Postgres struct {
	URL      string `yaml:"url"`    // owner/projector role: owns the tables, runs migrations and projectors
	APIURL   string `yaml:"apiURL"` // API role: not the owner, NOBYPASSRLS; reads only
	MaxConns int    `yaml:"maxConns"`
	Managed  bool   `yaml:"managed"` // anchorage runs its own PostgreSQL under PostgresDir()
}

// SyncMode says when the embedded NATS server fsyncs the event log.
type SyncMode string

// Sync modes.
const (
	// SyncModeGroup acknowledges an append only after an fsync that covers it; concurrent appends share fsyncs.
	SyncModeGroup SyncMode = "group"
	// SyncModeAlways makes the server fsync every write itself.
	SyncModeAlways SyncMode = "always"
	// SyncModeInterval is RELAXED: appends are acknowledged before they are fsynced, which happens every
	// nats.syncInterval. A crash can lose acknowledged appends.
	SyncModeInterval SyncMode = "interval"
)

// NATS configures the embedded NATS JetStream server that holds the event log.
type NATS struct {
	StoreDir        string      `yaml:"storeDir"` // default <dataDir>/nats; see NATSStoreDir
	Listen          string      `yaml:"listen"`   // client listener host:port; "" = in-process only
	Sync            SyncMode    `yaml:"sync"`
	SyncInterval    Duration    `yaml:"syncInterval"`    // only for sync: interval
	CredentialsFile string      `yaml:"credentialsFile"` // default <dataDir>/nats/credentials; see NATSCredentialsFile
	Cluster         NATSCluster `yaml:"cluster"`
	MaxStoreBytes   ByteSize    `yaml:"maxStoreBytes"` // 0 = unlimited
	// Domain is the embedded server's JetStream domain. A disaster-recovery mirror in another domain reaches
	// this log's API as $JS.<domain>.API (docs/backup.md). "" = none.
	Domain    string        `yaml:"domain"`
	LeafNodes NATSLeafNodes `yaml:"leafnodes"`
}

// NATSLeafNodes lets other NATS servers (a DR standby with a mirror) attach to the embedded server as leaf
// nodes. They authenticate with the user:password in CredentialsFile, created on first start when missing.
type NATSLeafNodes struct {
	Listen          string `yaml:"listen"`          // host:port; "" = no leafnode listener
	CredentialsFile string `yaml:"credentialsFile"` // default <dataDir>/nats/leafnode-credentials
}

// NATSCluster is the shape of NATS clustering settings. Clustering is not available yet: Validate refuses any of
// them rather than let a node run alone while its operator believes its log is replicated.
type NATSCluster struct {
	Name   string   `yaml:"name"`
	Listen string   `yaml:"listen"`
	Routes []string `yaml:"routes"` // nats-route://host:port
}

// Kubo configures the IPFS node this anchorage node pins to.
type Kubo struct {
	RPCURL      string   `yaml:"rpcURL"` // e.g. http://127.0.0.1:5001; "" = dev starts its own
	Concurrency int      `yaml:"concurrency"`
	PinTimeout  Duration `yaml:"pinTimeout"`
	// SlowAfter: a pin still running after this long moves to the slow lane (if it has room) and frees its slot.
	SlowAfter Duration `yaml:"slowAfter"`
	// SlowLimit is how many slow pins may be in flight besides the concurrency others (0: 4 x concurrency).
	SlowLimit   int    `yaml:"slowLimit"`
	Replication int    `yaml:"replication"`
	NodeID      string `yaml:"nodeID"` // "" = derived at first start
	// Capacity is the most pins the scheduler places on this node (0: unlimited).
	Capacity int64 `yaml:"capacity"`
	// MaintenanceAlertAfter: maintenance mode on for longer than this is logged and flagged in metrics.
	MaintenanceAlertAfter Duration `yaml:"maintenanceAlertAfter"`
}

// Auth configures authentication.
type Auth struct {
	Authentik Authentik `yaml:"authentik"`
	APIToken  APIToken  `yaml:"apiToken"`
}

// Authentik configures OIDC login for humans. Issuer is kept verbatim, including a trailing slash: the OIDC
// library compares it byte for byte with the issuer the provider announces.
type Authentik struct {
	Issuer       string `yaml:"issuer"`
	ClientID     string `yaml:"clientID"`
	ClientSecret string `yaml:"clientSecret"`
	RedirectURI  string `yaml:"redirectURI"`
	Audience     string `yaml:"audience"`
}

// APIToken configures the JWTs anchorage mints for API clients.
type APIToken struct {
	SigningKeys []SigningKey `yaml:"signingKeys"`
	DefaultTTL  Duration     `yaml:"defaultTTL"`
	MaxTTL      Duration     `yaml:"maxTTL"`
}

// SigningKey names a key file. The primary key signs new tokens; all keys verify.
type SigningKey struct {
	ID      string `yaml:"id"`
	Path    string `yaml:"path"`
	Primary bool   `yaml:"primary"`
}

// Bootstrap lists what anchorage ensures exists at start.
type Bootstrap struct {
	Sysadmins []string `yaml:"sysadmins"`
}

// Mode selects the validation rules.
type Mode int

// Modes.
const (
	// ModeServe is production: the PostgreSQL DSNs are required unless postgres.managed, and at least one
	// signing key is required.
	ModeServe Mode = iota
	// ModeDev is the all-in-one development mode: PostgreSQL is managed unless DSNs are given, and signing
	// keys may be left to the caller to generate.
	ModeDev
)

func (m Mode) String() string {
	switch m {
	case ModeServe:
		return "serve"
	case ModeDev:
		return "dev"
	}
	return "unknown"
}

// Default returns the configuration used for every key that neither the file nor the environment sets.
func Default() Config {
	return Config{
		DataDir: "./.anchorage",
		Log:     Log{Level: "info", Format: "json"},
		Server: Server{
			Listen:          "127.0.0.1:8080",
			MaxBodyBytes:    1 << 20,
			ShutdownTimeout: Duration(15 * time.Second),
		},
		Postgres: Postgres{MaxConns: 16},
		NATS: NATS{
			Sync:         SyncModeGroup,
			SyncInterval: Duration(2 * time.Minute),
		},
		Kubo: Kubo{
			Concurrency:           32,
			PinTimeout:            Duration(10 * time.Minute),
			SlowAfter:             Duration(5 * time.Second),
			Replication:           1,
			MaintenanceAlertAfter: Duration(time.Hour),
		},
		Auth: Auth{APIToken: APIToken{
			DefaultTTL: Duration(720 * time.Hour),
			MaxTTL:     Duration(8760 * time.Hour),
		}},
	}
}

// NATSStoreDir is nats.storeDir, or <dataDir>/nats when it is empty.
func (c Config) NATSStoreDir() string {
	if c.NATS.StoreDir != "" {
		return c.NATS.StoreDir
	}
	return filepath.Join(c.DataDir, "nats")
}

// NATSCredentialsFile is nats.credentialsFile, or <dataDir>/nats/credentials when it is empty.
func (c Config) NATSCredentialsFile() string {
	if c.NATS.CredentialsFile != "" {
		return c.NATS.CredentialsFile
	}
	return filepath.Join(c.DataDir, "nats", "credentials")
}

// NATSLeafNodeCredentialsFile is nats.leafnodes.credentialsFile, or <dataDir>/nats/leafnode-credentials.
func (c Config) NATSLeafNodeCredentialsFile() string {
	if c.NATS.LeafNodes.CredentialsFile != "" {
		return c.NATS.LeafNodes.CredentialsFile
	}
	return filepath.Join(c.DataDir, "nats", "leafnode-credentials")
}

// PostgresDir is where a managed PostgreSQL keeps its data: <dataDir>/postgres.
func (c Config) PostgresDir() string { return filepath.Join(c.DataDir, "postgres") }

// KuboDir is where dev keeps the repository of the Kubo node it starts: <dataDir>/kubo.
func (c Config) KuboDir() string { return filepath.Join(c.DataDir, "kubo") }

// ManagedPostgres reports whether anchorage runs its own PostgreSQL: postgres.managed is true, or mode is
// ModeDev and neither postgres.url nor postgres.apiURL is set.
func (c Config) ManagedPostgres(mode Mode) bool {
	return c.Postgres.Managed || (mode == ModeDev && c.Postgres.URL == "" && c.Postgres.APIURL == "")
}

// PrimarySigningKey returns the signing key marked primary: true, if there is exactly one.
func (c Config) PrimarySigningKey() (SigningKey, bool) {
	var found []SigningKey
	for _, k := range c.Auth.APIToken.SigningKeys {
		if k.Primary {
			found = append(found, k)
		}
	}
	if len(found) != 1 {
		return SigningKey{}, false
	}
	return found[0], true
}

// Warnings returns what is valid but deserves a warning in the start-up log.
func (c Config) Warnings() []string {
	var w []string
	if c.NATS.Sync == SyncModeInterval {
		w = append(w, "nats.sync is interval (RELAXED): appends are acknowledged before they are fsynced, "+
			"so a crash can lose up to "+c.NATS.SyncInterval.String()+" of acknowledged events; use group for durability")
	}
	return w
}
