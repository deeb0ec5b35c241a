package projections

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/anchorage-pin/anchorage/events"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// ErrCheckpointMoved is returned by Projector.Apply when the checkpoint is no longer where the batch starts:
// another instance applied those events first. The runner re-reads the checkpoint and carries on from there.
var ErrCheckpointMoved = errors.New("projections: checkpoint moved")

// Projector folds events into one read model.
type Projector interface {
	// Name identifies the projection and its checkpoint. Renaming it rebuilds it from the start.
	Name() string
	// Filters are the subjects it consumes.
	Filters() []string
	// Checkpoint is the last stream sequence applied.
	Checkpoint(ctx context.Context) (uint64, error)
	// Apply applies recs, in order, and moves the checkpoint from prev to the last record's sequence, all in
	// one transaction. If the checkpoint is not prev it applies nothing and returns ErrCheckpointMoved.
	Apply(ctx context.Context, prev uint64, recs []events.Record) error
}

// Source is the event log as projectors read it.
type Source interface {
	// Read calls fn with batches of records with Seq >= from matching filters, in stream order, until ctx ends
	// (returning nil) or fn fails (returning its error). pending is how many matching records remain after the
	// batch. fn must not keep the slice.
	Read(ctx context.Context, from uint64, filters []string, fn func(recs []events.Record, pending uint64) error) error
}

// RunnerConfig configures a Runner.
type RunnerConfig struct {
	Logger     *slog.Logger
	Registerer prometheus.Registerer
	Watermarks *Watermarks
	// Backoff after a failure (default 1s, doubling up to 5s: a database back from an outage is caught up on
	// within seconds).
	Backoff time.Duration
	Now     func() time.Time
}

// Runner keeps projectors current: one goroutine each, reading from checkpoint+1, never relying on
// redelivery order, applying batches transactionally.
type Runner struct {
	src   Source
	projs []Projector
	cfg   RunnerConfig
	log   *slog.Logger

	mu      sync.Mutex
	lastErr map[string]error

	applied   *prometheus.CounterVec
	lagSecs   *prometheus.HistogramVec
	batchSize *prometheus.HistogramVec
	failures  *prometheus.CounterVec
	position  *prometheus.GaugeVec
	behind    *prometheus.GaugeVec
	applySecs *prometheus.HistogramVec
}

// NewRunner builds a runner for projs reading from src.
func NewRunner(src Source, projs []Projector, cfg RunnerConfig) *Runner {
	cfg.Logger = cmp.Or(cfg.Logger, slog.New(slog.DiscardHandler))
	cfg.Backoff = cmp.Or(cfg.Backoff, time.Second)
	if cfg.Watermarks == nil {
		cfg.Watermarks = NewWatermarks()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	reg := cfg.Registerer
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	f := promauto.With(reg)
	return &Runner{
		src: src, projs: projs, cfg: cfg, log: cfg.Logger, lastErr: map[string]error{},
		applied: f.NewCounterVec(prometheus.CounterOpts{
			Name: "anchorage_projection_events_applied_total", Help: "Events applied to read models.",
		}, []string{"projection"}),
		lagSecs: f.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "anchorage_projection_lag_seconds",
			Help:    "Time from an event's append to its projection's commit.",
			Buckets: []float64{0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 30, 60},
		}, []string{"projection"}),
		batchSize: f.NewHistogramVec(prometheus.HistogramOpts{
			Name: "anchorage_projection_batch_events", Help: "Events per projection transaction.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 11),
		}, []string{"projection"}),
		failures: f.NewCounterVec(prometheus.CounterOpts{
			Name: "anchorage_projection_failures_total", Help: "Projection batches that failed and were retried.",
		}, []string{"projection"}),
		applySecs: f.NewHistogramVec(prometheus.HistogramOpts{
			Name: "anchorage_projection_apply_seconds", Help: "Duration of one projection transaction.",
			Buckets: prometheus.ExponentialBuckets(0.0002, 2, 14),
		}, []string{"projection"}),
		behind: f.NewGaugeVec(prometheus.GaugeOpts{
			Name: "anchorage_projection_lag_events", Help: "Events in the log not yet applied, per projection.",
		}, []string{"projection"}),
		position: f.NewGaugeVec(prometheus.GaugeOpts{
			Name: "anchorage_projection_checkpoint", Help: "Last stream sequence applied, per projection.",
		}, []string{"projection"}),
	}
}

// Watermarks are the runner's applied positions.
func (r *Runner) Watermarks() *Watermarks { return r.cfg.Watermarks }

// Run runs every projector until ctx ends.
func (r *Runner) Run(ctx context.Context) {
	var wg sync.WaitGroup
	for _, p := range r.projs {
		wg.Go(func() { r.run(ctx, p) })
	}
	wg.Wait()
}

// Err reports the last failure of each failing projection (nil map entries are healthy).
func (r *Runner) Err() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	var errs []error
	for name, err := range r.lastErr {
		if err != nil {
			errs = append(errs, fmt.Errorf("projection %s: %w", name, err))
		}
	}
	return errors.Join(errs...)
}

func (r *Runner) setErr(name string, err error) {
	r.mu.Lock()
	r.lastErr[name] = err
	r.mu.Unlock()
}

func (r *Runner) run(ctx context.Context, p Projector) {
	name := p.Name()
	log := r.log.With("projection", name)
	backoff := r.cfg.Backoff
	for ctx.Err() == nil {
		err := r.follow(ctx, p)
		if ctx.Err() != nil {
			return
		}
		if errors.Is(err, ErrCheckpointMoved) {
			log.Info("checkpoint moved by another instance; resuming from it")
			backoff = r.cfg.Backoff
			continue
		}
		r.setErr(name, err)
		r.failures.WithLabelValues(name).Inc()
		log.Error("projection failed; retrying", "err", err, "backoff", backoff.String())
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// follow reads from the checkpoint and applies batches until an error.
func (r *Runner) follow(ctx context.Context, p Projector) error {
	name := p.Name()
	cp, err := p.Checkpoint(ctx)
	if err != nil {
		return fmt.Errorf("read checkpoint: %w", err)
	}
	r.cfg.Watermarks.Advance(name, cp)
	r.position.WithLabelValues(name).Set(float64(cp))
	r.setErr(name, nil)
	return r.src.Read(ctx, cp+1, p.Filters(), func(recs []events.Record, pending uint64) error {
		t0 := time.Now()
		if err := p.Apply(ctx, cp, recs); err != nil {
			return err
		}
		r.applySecs.WithLabelValues(name).Observe(time.Since(t0).Seconds())
		last := recs[len(recs)-1].Seq
		cp = last
		r.cfg.Watermarks.Advance(name, last)
		now := r.cfg.Now()
		lag := r.lagSecs.WithLabelValues(name)
		for _, rec := range recs {
			lag.Observe(now.Sub(rec.At).Seconds())
		}
		r.applied.WithLabelValues(name).Add(float64(len(recs)))
		r.batchSize.WithLabelValues(name).Observe(float64(len(recs)))
		r.position.WithLabelValues(name).Set(float64(last))
		r.behind.WithLabelValues(name).Set(float64(pending))
		r.setErr(name, nil)
		return nil
	})
}
