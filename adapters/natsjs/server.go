// Package natsjs runs anchorage's event log on an embedded NATS JetStream server: the server itself, the one
// event stream, optimistic-concurrency appends with group-committed fsyncs, aggregate loads and ordered reads.
package natsjs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"golang.org/x/crypto/bcrypt"
)

// SyncMode says when an append is acknowledged relative to fsync.
type SyncMode string

const (
	// SyncGroup acknowledges an append only after an fsync of the stream's block file that started after the
	// append was stored; concurrent appends share one fsync (group commit). The default.
	SyncGroup SyncMode = "group"
	// SyncAlways makes the server fsync every message itself before acknowledging it.
	SyncAlways SyncMode = "always"
	// SyncInterval acknowledges before fsync and syncs every SyncInterval: acknowledged writes can be lost on
	// power failure or kernel crash.
	SyncInterval SyncMode = "interval"
)

// ServerConfig configures the embedded server.
type ServerConfig struct {
	// StoreDir holds JetStream's files.
	StoreDir string
	// Listen is the client listener, host:port; "" serves in-process connections only.
	Listen string
	// User and Password guard the client listener.
	User, Password string
	Sync           SyncMode
	// SyncInterval applies to SyncInterval mode.
	SyncInterval time.Duration
	// MaxStore caps JetStream file storage in bytes (0: unlimited).
	MaxStore int64
	// Domain is the server's JetStream domain ("" = none): a mirror in another domain reaches this server's
	// JetStream API as $JS.<Domain>.API across a leafnode connection.
	Domain string
	// LeafListen is the leafnode listener, host:port ("" = none); leaf nodes authenticate as LeafUser and
	// LeafPassword.
	LeafListen             string
	LeafUser, LeafPassword string
	// LeafRemotes are leafnode listeners this server dials (nats-leaf://user:password@host:port): a DR standby
	// attaching to its primary.
	LeafRemotes []string
	ServerName  string
	Logger      *slog.Logger
}

// Server is a running embedded NATS server with JetStream.
type Server struct {
	ns  *server.Server
	cfg ServerConfig
	log *slog.Logger
}

// StartServer starts the embedded server and waits until it accepts connections.
func StartServer(cfg ServerConfig) (*Server, error) {
	if cfg.StoreDir == "" {
		return nil, errors.New("natsjs: StoreDir is required")
	}
	if cfg.Sync == "" {
		cfg.Sync = SyncGroup
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(cfg.StoreDir, 0o700); err != nil {
		return nil, fmt.Errorf("natsjs: create store dir: %w", err)
	}
	opts := &server.Options{
		ServerName:         cfg.ServerName,
		JetStream:          true,
		StoreDir:           cfg.StoreDir,
		JetStreamMaxStore:  cfg.MaxStore,
		JetStreamMaxMemory: 256 << 20,
		NoSigs:             true,
		MaxPayload:         4 << 20,
	}
	if opts.ServerName == "" {
		opts.ServerName = "anchorage"
	}
	if opts.JetStreamMaxStore == 0 {
		opts.JetStreamMaxStore = -1
	}
	switch cfg.Sync {
	case SyncAlways:
		opts.SyncAlways = true
	case SyncGroup:
		// We fsync ourselves (groupSync); the server's own timer only matters for KV and consumer state.
		opts.SyncInterval = 2 * time.Minute
	case SyncInterval:
		opts.SyncInterval = cfg.SyncInterval
		cfg.Logger.Warn("nats.sync is interval: appends are acknowledged before they are on disk and can be lost on power failure or kernel crash",
			"syncInterval", cfg.SyncInterval.String())
	default:
		return nil, fmt.Errorf("natsjs: unknown sync mode %q", cfg.Sync)
	}
	if cfg.Listen == "" {
		opts.DontListen = true
	} else {
		host, port, err := net.SplitHostPort(cfg.Listen)
		if err != nil {
			return nil, fmt.Errorf("natsjs: listen address %q: %w", cfg.Listen, err)
		}
		p, err := strconv.Atoi(port)
		if err != nil {
			return nil, fmt.Errorf("natsjs: listen port %q: %w", port, err)
		}
		if p == 0 {
			p = server.RANDOM_PORT
		}
		opts.Host, opts.Port = host, p
		opts.Username, opts.Password = cfg.User, serverPassword(cfg.Password)
	}
	opts.JetStreamDomain = cfg.Domain
	if cfg.LeafListen != "" {
		if cfg.LeafUser == "" || cfg.LeafPassword == "" {
			return nil, errors.New("natsjs: a leafnode listener needs LeafUser and LeafPassword")
		}
		host, port, err := net.SplitHostPort(cfg.LeafListen)
		if err != nil {
			return nil, fmt.Errorf("natsjs: leafnode listen address %q: %w", cfg.LeafListen, err)
		}
		p, err := strconv.Atoi(port)
		if err != nil {
			return nil, fmt.Errorf("natsjs: leafnode listen port %q: %w", port, err)
		}
		if p == 0 {
			p = server.RANDOM_PORT
		}
		opts.LeafNode = server.LeafNodeOpts{Host: host, Port: p, Username: cfg.LeafUser, Password: cfg.LeafPassword}
	}
	for _, r := range cfg.LeafRemotes {
		u, err := url.Parse(r)
		if err != nil || u.Scheme != "nats-leaf" || u.Host == "" {
			return nil, fmt.Errorf("natsjs: leafnode remote %q is not a nats-leaf://user:password@host:port URL", redactedURL(r))
		}
		opts.LeafNode.Remotes = append(opts.LeafNode.Remotes, &server.RemoteLeafOpts{URLs: []*url.URL{u}})
	}
	ns, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("natsjs: new server: %w", err)
	}
	ns.SetLoggerV2(&logger{l: cfg.Logger.With("component", "nats")}, false, false, false)
	ns.Start()
	if !ns.ReadyForConnections(30 * time.Second) {
		ns.Shutdown()
		return nil, errors.New("natsjs: server not ready for connections after 30s")
	}
	return &Server{ns: ns, cfg: cfg, log: cfg.Logger}, nil
}

// Connect opens a client connection to the server, in-process (no TCP).
func (s *Server) Connect(name string) (*nats.Conn, error) {
	opts := []nats.Option{nats.InProcessServer(s.ns), nats.Name(name), nats.MaxReconnects(-1)}
	if s.cfg.User != "" {
		opts = append(opts, nats.UserInfo(s.cfg.User, s.cfg.Password))
	}
	return nats.Connect("", opts...)
}

// ClientURL is the listener's URL ("" when serving in-process only).
func (s *Server) ClientURL() string {
	if s.cfg.Listen == "" {
		return ""
	}
	return s.ns.ClientURL()
}

// StreamDir is where the event stream's message blocks live.
func (s *Server) StreamDir() string {
	// The server's StoreDir already ends in "jetstream".
	return filepath.Join(s.ns.StoreDir(), server.DEFAULT_GLOBAL_ACCOUNT, "streams", streamDirName)
}

// Sync is the configured sync mode.
func (s *Server) Sync() SyncMode { return s.cfg.Sync }

// Shutdown stops the server and waits for it.
func (s *Server) Shutdown(ctx context.Context) {
	done := make(chan struct{})
	go func() {
		s.ns.Shutdown()
		s.ns.WaitForShutdown()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
	}
}

// serverPassword is what the server keeps of the client listener's password: a bcrypt hash, so it holds no
// plaintext and starts without its "Plaintext passwords detected" warning in every node's log. The cost is
// bcrypt's least: the password is 24 random bytes (or an operator's), and every connection, the node's own
// in-process ones included, pays one comparison (about a millisecond at the least cost, against 50-100 at the
// default). bcrypt reads at most 72 bytes: a longer password is kept as it is.
func serverPassword(pass string) string {
	if pass == "" || len(pass) > 72 {
		return pass
	}
	h, err := bcrypt.GenerateFromPassword([]byte(pass), bcrypt.MinCost)
	if err != nil {
		return pass
	}
	return string(h)
}

// logger adapts the server's logger to slog.
type logger struct{ l *slog.Logger }

func (g *logger) Noticef(f string, a ...any) { g.l.Info(fmt.Sprintf(f, a...)) }
func (g *logger) Warnf(f string, a ...any)   { g.l.Warn(fmt.Sprintf(f, a...)) }
func (g *logger) Fatalf(f string, a ...any)  { g.l.Error(fmt.Sprintf(f, a...), "fatal", true) }
func (g *logger) Errorf(f string, a ...any)  { g.l.Error(fmt.Sprintf(f, a...)) }
func (g *logger) Debugf(f string, a ...any)  { g.l.Debug(fmt.Sprintf(f, a...)) }
func (g *logger) Tracef(f string, a ...any)  {}

// redactedURL hides a URL's password, for error messages.
func redactedURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "(unparseable URL)"
	}
	return u.Redacted()
}
