package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	httpapi "github.com/anchorage-pin/anchorage/adapters/http"
	"github.com/anchorage-pin/anchorage/adapters/kubo"
	"github.com/anchorage-pin/anchorage/adapters/natsjs"
	"github.com/anchorage-pin/anchorage/adapters/postgres"
	"github.com/anchorage-pin/anchorage/adapters/tokens"
	"github.com/anchorage-pin/anchorage/cmd/anchorage/internal/config"
	"github.com/anchorage-pin/anchorage/domain"
	"github.com/anchorage-pin/anchorage/events"
	"github.com/anchorage-pin/anchorage/projections"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// appOptions are what start needs beyond the config: where PostgreSQL is (managed or not) and where the
// delegates come from.
type appOptions struct {
	Cfg      config.Config
	OwnerDSN string
	APIDSN   string
	// Delegates returns the serving node's own multiaddrs (each ending /p2p/<peerID>).
	Delegates func(ctx context.Context) []string
	Logger    *slog.Logger
	// Kubo is this node's paired daemon; nil runs no storage node (API, projections and scheduler only).
	Kubo *kubo.Client
	// NoScheduler keeps this process out of the scheduler election (tests that place pins by hand).
	NoScheduler bool
	// AcceptLogLoss starts on a damaged event log (see checkLog) and rebuilds the read models from it.
	AcceptLogLoss bool
}

// app is one running anchorage node: embedded NATS with the event log, projectors, the token registry and
// the HTTP API.
type app struct {
	cfg    config.Config
	log    *slog.Logger
	reg    *prometheus.Registry
	nats   *natsjs.Server
	elog   *natsjs.EventLog
	owner  *pgxpool.Pool
	api    *pgxpool.Pool
	reader *postgres.Reader
	runner *projections.Runner
	tokens *projections.TokenRegistry
	keys   *tokens.KeyRing
	svc    *domain.Service
	srv    *http.Server
	addr   string

	presence *natsjs.Presence
	workers  []*projections.Worker
	// workersDone is done when every worker goroutine has returned (their forked log connections close then).
	workersDone sync.WaitGroup
	nodeIDs     []string

	rebuilding atomic.Pointer[rebuildState] // non-nil while the read models are rebuilt at start

	ctx     context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	synced  chan struct{} // closed once the token registry caught up at start
	closing sync.Once
}

// startApp starts a node. On error everything started so far is stopped again.
func startApp(ctx context.Context, o appOptions) (_ *app, err error) {
	t0 := time.Now()
	a := &app{cfg: o.Cfg, log: o.Logger, reg: prometheus.NewRegistry(), synced: make(chan struct{})}
	if a.log == nil {
		a.log = slog.New(slog.DiscardHandler)
	}
	a.ctx, a.cancel = context.WithCancel(context.Background())
	defer func() {
		if err != nil {
			a.close(context.Background())
		}
	}()
	a.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	specs := make([]tokens.KeySpec, len(o.Cfg.Auth.APIToken.SigningKeys))
	for i, k := range o.Cfg.Auth.APIToken.SigningKeys {
		specs[i] = tokens.KeySpec{ID: k.ID, Path: k.Path, Primary: k.Primary}
	}
	if a.keys, err = tokens.LoadKeys(specs); err != nil {
		return nil, err
	}

	// The event log.
	user, pass, err := natsCredentials(o.Cfg.NATSCredentialsFile(), o.Cfg.NATS.Listen != "")
	if err != nil {
		return nil, err
	}
	leafUser, leafPass, err := leafNodeCredentials(o.Cfg.NATSLeafNodeCredentialsFile(), o.Cfg.NATS.LeafNodes.Listen != "")
	if err != nil {
		return nil, err
	}
	a.nats, err = natsjs.StartServer(natsjs.ServerConfig{
		StoreDir: o.Cfg.NATSStoreDir(), Listen: o.Cfg.NATS.Listen, User: user, Password: pass,
		Sync: natsjs.SyncMode(o.Cfg.NATS.Sync), SyncInterval: o.Cfg.NATS.SyncInterval.D(),
		MaxStore: o.Cfg.NATS.MaxStoreBytes.Int64(), Logger: a.log,
		Domain: o.Cfg.NATS.Domain, LeafListen: o.Cfg.NATS.LeafNodes.Listen, LeafUser: leafUser, LeafPassword: leafPass,
	})
	if err != nil {
		return nil, err
	}
	if o.Cfg.NATS.LeafNodes.Listen != "" {
		a.log.Info("leafnode listener for DR standbys", "listen", o.Cfg.NATS.LeafNodes.Listen, "domain", o.Cfg.NATS.Domain,
			"credentialsFile", o.Cfg.NATSLeafNodeCredentialsFile())
	}
	if url := a.nats.ClientURL(); url != "" {
		if err := os.WriteFile(filepath.Join(o.Cfg.NATSStoreDir(), "client-url"), []byte(url+"\n"), 0o600); err != nil {
			return nil, fmt.Errorf("write NATS client URL: %w", err)
		}
	}
	a.elog, err = natsjs.OpenLog(ctx, a.nats, natsjs.LogConfig{Logger: a.log, Metrics: natsjs.NewMetrics(a.reg)})
	if err != nil {
		return nil, err
	}
	a.log.Info("event log open", "took", time.Since(t0).Round(time.Millisecond).String())
	// Recovering a large stream reads its whole index file into memory once (155 MB at 1M pins); an idle node
	// would otherwise keep that garbage resident until its first GC.
	debug.FreeOSMemory()

	// The read models.
	apiCfg, err := pgx.ParseConfig(o.APIDSN)
	if err != nil {
		return nil, fmt.Errorf("postgres.apiURL: %w", err)
	}
	if err := postgres.Migrate(ctx, o.OwnerDSN, apiCfg.User); err != nil {
		return nil, err
	}
	maxConns := int32(o.Cfg.Postgres.MaxConns)
	if a.owner, err = postgres.OpenOwnerPool(ctx, o.OwnerDSN, 4); err != nil {
		return nil, err
	}
	if a.api, err = postgres.OpenAPIPool(ctx, o.APIDSN, maxConns); err != nil {
		return nil, err
	}
	a.reader = postgres.NewReader(a.api)
	// The projections read from their checkpoints; one of a rarely written subject space (orgs, tokens) starts
	// past the head when nothing since its checkpoint matches (natsjs.ReadStart).
	a.runner = projections.NewRunner(natsjs.SkippingReader{EventLog: a.elog, Pace: natsjs.ProjectionPace}, postgres.Projectors(a.owner, a.log), projections.RunnerConfig{Logger: a.log, Registerer: a.reg})
	// Read models empty behind a non-empty log (a lost or new database): rebuild them in the background with the
	// fast path before following the log; meanwhile reads answer 503 and writes keep working.
	// A damaged log (events missing) stops the start here unless the loss is accepted, which also rebuilds.
	damaged, recovered, err := a.checkLog(ctx, o.AcceptLogLoss)
	if err != nil {
		return nil, err
	}
	empty, err := a.readModelsEmpty(ctx)
	if err != nil {
		return nil, err
	}
	if empty || damaged {
		a.rebuilding.Store(&rebuildState{})
		a.wg.Go(func() {
			if a.rebuildReadModels(o.OwnerDSN, apiCfg.User) && recovered != nil {
				recovered()
			}
			a.runner.Run(a.ctx)
		})
	} else {
		a.wg.Go(func() { a.runner.Run(a.ctx) })
	}

	// Tokens: an in-memory fold of every token event, for verification.
	a.tokens = projections.NewTokenRegistry(func(ctx context.Context) (uint64, error) {
		return a.elog.LastSeqFor(ctx, events.AllTokens)
	})
	a.wg.Go(a.followTokens)

	clock := domain.NewCreatedClock(time.Now)
	if st, err := a.elog.JetStream().Stream(ctx, events.StreamName); err == nil {
		clock.SetFloor(st.CachedInfo().State.LastTime) // creation times stay above everything already acknowledged
	}
	a.svc = &domain.Service{
		Log:   a.elog,
		Usage: newUsageCache(a.reader, a.log, time.Second),
		Env: domain.Env{
			Now:     time.Now,
			NewID:   func() string { return uuid.Must(uuid.NewV7()).String() },
			Created: clock.Next,
		},
		Tokens: domain.TokenPolicy{DefaultTTL: o.Cfg.Auth.APIToken.DefaultTTL.D(), MaxTTL: o.Cfg.Auth.APIToken.MaxTTL.D()},
	}

	// Placement: presence (liveness), this node's worker, and the scheduler candidate.
	if a.presence, err = natsjs.OpenPresence(ctx, a.elog.JetStream(), presenceBucket, presenceTTL, 1); err != nil {
		return nil, err
	}
	a.presence.SetLogger(a.log)
	if o.Kubo != nil {
		if err := a.startNode(ctx, o.Kubo, ""); err != nil {
			return nil, err
		}
	}
	if !o.NoScheduler {
		schedID := uuid.NewString()
		if len(a.nodeIDs) > 0 {
			schedID = a.nodeIDs[0]
		}
		if err := a.startScheduler(ctx, schedID); err != nil {
			return nil, err
		}
	}

	// The API. Reads wait for the projections to apply at least the log's head at start: what was acknowledged
	// before a restart or crash is read-your-writes visible too, not only what this process writes.
	// The floor is the last event the pins projection folds, not the stream's head: a projection's checkpoint
	// only reaches events it reads (a trailing token event would never be "applied" by pins), and after an
	// accepted log loss the stream's counters run past its last stored message.
	horizons := projections.NewHorizons()
	var floor uint64
	for _, f := range (&postgres.PinsProjector{}).Filters() {
		last := a.elog.LastSeqFor // pins.> and place.> end near the log's end: found in its last block
		if f != events.AllPins && f != events.AllPlace {
			last = a.elog.LastSeqForFew // a few node and scheduler subjects, whose last events can be old
		}
		seq, err := last(ctx, f)
		if err != nil {
			return nil, err
		}
		floor = max(floor, seq)
	}
	horizons.SetFloor(floor)
	handler, err := httpapi.New(httpapi.Config{
		Horizon:        horizons,
		Auth:           tokenAuth{&tokens.Verifier{Keys: a.keys, Registry: a.tokens}},
		Pins:           a.svc,
		Reader:         a.reader,
		Watermark:      a.runner.Watermarks(),
		PinsProjection: postgres.ProjectionPins,
		Delegates:      o.Delegates,
		Ready:          readiness{a},
		MaxBodyBytes:   o.Cfg.Server.MaxBodyBytes.Int64(),
		CORSOrigins:    o.Cfg.Server.CORS.AllowedOrigins,
		Logger:         a.log,
		Registerer:     a.reg,
		Gatherer:       a.reg,
		Audit:          postgres.NewAuditReader(a.api, a.owner),
	})
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", o.Cfg.Server.Listen)
	if err != nil {
		return nil, fmt.Errorf("server.listen %s: %w", o.Cfg.Server.Listen, err)
	}
	a.addr = ln.Addr().String()
	// The memory limit applies once started: while the stream recovers, the heap holds its subject index (about
	// 200 MB at 1M pins) and as much garbage at once, and a limit below their sum made the collector run dozens
	// of times back to back (38 collections instead of 4 and a second more to start, at 280MiB and 1M pins).
	if l := o.Cfg.MemoryLimit; l > 0 {
		debug.SetMemoryLimit(l.Int64())
		a.log.Info("Go memory limit set", "memoryLimit", l.String())
	}
	a.srv = &http.Server{Handler: a.whileRebuilding(handler), ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute}
	a.wg.Go(func() {
		if err := a.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			a.log.Error("http server stopped", "err", err)
		}
	})
	a.log.Info("anchorage is serving", "addr", a.addr, "natsSync", o.Cfg.NATS.Sync, "natsClientURL", a.nats.ClientURL(),
		"startup", time.Since(t0).Round(time.Millisecond).String())
	a.wg.Go(func() { trimAfterStart(a.ctx, a.log, startTrimDelay) })
	return a, nil
}

// URL is the API's base URL.
func (a *app) URL() string { return "http://" + a.addr }

// close stops everything in reverse order; safe to call more than once.
func (a *app) close(ctx context.Context) {
	a.closing.Do(func() {
		if a.srv != nil {
			sctx, cancel := context.WithTimeout(ctx, a.cfg.Server.ShutdownTimeout.D()+time.Second)
			if err := a.srv.Shutdown(sctx); err != nil {
				a.log.Warn("http shutdown", "err", err)
			}
			cancel()
		}
		a.cancel()
		a.wg.Wait()
		for _, id := range a.nodeIDs {
			gctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
			_ = a.presence.Gone(gctx, id)
			cancel()
		}
		if a.api != nil {
			a.api.Close()
		}
		if a.owner != nil {
			a.owner.Close()
		}
		if a.elog != nil {
			a.elog.Close()
		}
		if a.nats != nil {
			a.nats.Shutdown(ctx)
		}
	})
}

// maxTokensLoaded bounds the tokens followTokens loads one by one at start.
const maxTokensLoaded = 20_000

// followTokens keeps the token registry current, restarting after failures.
func (a *app) followTokens() {
	from := uint64(1)
	var once sync.Once
	markSynced := func() { once.Do(func() { close(a.synced) }) }
	// Token events are few and scattered over the log: load them token by token up to the head, then follow the
	// log from there. (A filtered read from the start makes the server load every message block looking for
	// them: seconds, and ~200 MB of per-block subject state, on a log of millions of events.) With too many
	// tokens for that, or when it fails, read them from the start.
	if recs, head, ok, err := a.elog.LoadAll(a.ctx, events.AllTokens, maxTokensLoaded); err != nil {
		a.log.Warn("could not load the tokens subject by subject; reading them from the start of the log", "err", err)
	} else if ok {
		for _, r := range recs {
			a.tokens.Apply(r)
		}
		from = head + 1
		markSynced()
	}
	// With no token event at all the read below never calls back: the registry is trivially in sync.
	if from == 1 {
		if n, err := a.elog.CountSubjects(a.ctx, events.AllTokens); err == nil && n == 0 {
			markSynced()
		}
	}
	for a.ctx.Err() == nil {
		err := a.elog.Read(a.ctx, from, []string{events.AllTokens}, func(recs []events.Record, pending uint64) error {
			for _, r := range recs {
				a.tokens.Apply(r)
				from = r.Seq + 1
			}
			if pending == 0 {
				markSynced()
			}
			return nil
		})
		if a.ctx.Err() != nil {
			return
		}
		a.log.Error("token registry stopped following the log; retrying", "err", err)
		select {
		case <-a.ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

// readiness reports whether this node can serve: projections healthy, token registry caught up, read models
// reachable.
type readiness struct{ a *app }

func (r readiness) Ready(ctx context.Context) error {
	if st := r.a.rebuilding.Load(); st != nil {
		return errors.New(st.String())
	}
	select {
	case <-r.a.synced:
	default:
		return errors.New("token registry is still catching up with the event log")
	}
	if err := r.a.runner.Err(); err != nil {
		return err
	}
	if err := r.a.api.Ping(ctx); err != nil {
		return fmt.Errorf("read models unreachable: %w", err)
	}
	return nil
}

// tokenAuth adapts the token verifier to the HTTP API.
type tokenAuth struct{ v *tokens.Verifier }

func (t tokenAuth) Authenticate(ctx context.Context, bearer string) (httpapi.Principal, error) {
	p, err := t.v.Verify(ctx, bearer)
	if err != nil {
		return httpapi.Principal{}, err
	}
	return httpapi.Principal{OrgID: p.OrgID, Actor: "token:" + p.TokenID, Scopes: p.Scopes}, nil
}

// usageCache answers the soft quota check from a per-org cache refreshed at most every ttl, so a POST costs no
// read-model query; an org without a quota is never counted at all between refreshes. When the read models
// cannot answer, pin requests go through: writes only need the log, and a soft quota is better than refusing
// every write while PostgreSQL is down.
type usageCache struct {
	r   *postgres.Reader
	log *slog.Logger
	ttl time.Duration
	mu  sync.Mutex
	m   map[string]*usage
}

type usage struct {
	pins, maxPins int64
	at            time.Time
}

func newUsageCache(r *postgres.Reader, log *slog.Logger, ttl time.Duration) *usageCache {
	return &usageCache{r: r, log: log, ttl: ttl, m: map[string]*usage{}}
}

func (c *usageCache) PinUsage(ctx context.Context, org string) (int64, int64, error) {
	c.mu.Lock()
	u, ok := c.m[org]
	if ok && time.Since(u.at) < c.ttl {
		// Count this request, so a burst within one ttl cannot overshoot the quota by more than in-flight writes.
		u.pins++
		pins, maxPins := u.pins-1, u.maxPins
		c.mu.Unlock()
		return pins, maxPins, nil
	}
	c.mu.Unlock()
	pins, maxPins, err := c.r.PinUsage(ctx, org)
	if errors.Is(err, domain.ErrUnavailable) {
		c.log.Warn("quota check skipped: read models unavailable", "org", org, "err", err)
		return 0, 0, nil
	}
	if err != nil {
		return 0, 0, err
	}
	c.mu.Lock()
	c.m[org] = &usage{pins: pins + 1, maxPins: maxPins, at: time.Now()}
	c.mu.Unlock()
	return pins, maxPins, nil
}

// natsCredentials reads (or, the first time, creates) the user:password the NATS listener requires.
func natsCredentials(path string, needed bool) (string, string, error) {
	return credentialsFile("nats.credentialsFile", path, "anchorage", needed)
}

// leafNodeCredentials reads (or, the first time, creates) the user:password leaf nodes (a DR standby) use.
func leafNodeCredentials(path string, needed bool) (string, string, error) {
	return credentialsFile("nats.leafnodes.credentialsFile", path, "anchorage-leaf", needed)
}

// credentialsFile reads the user:password in path, creating it with user and a random password if missing.
func credentialsFile(key, path, user string, needed bool) (string, string, error) {
	if !needed {
		return "", "", nil
	}
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		buf := make([]byte, 24)
		if _, err := rand.Read(buf); err != nil {
			return "", "", err
		}
		b = []byte(user + ":" + hex.EncodeToString(buf) + "\n")
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return "", "", err
		}
		if err := os.WriteFile(path, b, 0o600); err != nil {
			return "", "", fmt.Errorf("%s: %w", key, err)
		}
	} else if err != nil {
		return "", "", fmt.Errorf("%s: %w", key, err)
	}
	user, pass, ok := strings.Cut(strings.TrimSpace(string(b)), ":")
	if !ok || user == "" || pass == "" {
		return "", "", fmt.Errorf("%s %s must hold one line user:password", key, path)
	}
	return user, pass, nil
}

// startTrimDelay is how long after the start trimAfterStart waits: past the event store's cache expiry (10 s of
// no use), so the block buffers loaded while starting are back in their pool.
const startTrimDelay = 15 * time.Second

// trimAfterStart gives back the memory the start used transiently. Starting loads message blocks of the event
// log (8 MB buffers each, one per scattered old event a start reads), and the store keeps their buffers in a
// sync.Pool, which only a garbage collection empties. An idle node collects about every two minutes, so they
// stayed for up to four, and the heap goal computed with them for longer: 152 MB of pooled buffers on a node with
// 1.4M pins, RSS 526 MB at rest; 397 MB after two collections (measured while a start still read the whole
// scheduler-term and node-registration histories, one block per restart; it now reads only what is new). Two
// collections (the first moves a pool's contents aside, the second frees them) and a return of the freed pages
// to the OS cost about a collection's CPU, once.
func trimAfterStart(ctx context.Context, log *slog.Logger, delay time.Duration) {
	select {
	case <-ctx.Done():
		return
	case <-time.After(delay):
	}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	runtime.GC()
	debug.FreeOSMemory()
	runtime.ReadMemStats(&after)
	log.Debug("memory trimmed after the start", "heapInUseBefore", before.HeapInuse, "heapInUseAfter", after.HeapInuse,
		"released", after.HeapReleased)
}
