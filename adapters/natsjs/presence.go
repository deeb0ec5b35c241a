package natsjs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Presence is node liveness and free space: soft state in a NATS KV bucket whose entries expire ttl after their
// last write (bucket MaxAge), not events. A node is live while its key exists.
type Presence struct {
	kv     jetstream.KeyValue
	bucket string
	ttl    time.Duration
	log    *slog.Logger
}

// NodeStatus is what a node reports about itself on every beat (JSON in the KV value).
type NodeStatus struct {
	NodeID    string    `json:"nodeId"`
	FreeBytes uint64    `json:"freeBytes"`
	UsedBytes uint64    `json:"usedBytes"`
	Pins      int64     `json:"pins"`
	At        time.Time `json:"at"`
	Version   string    `json:"version,omitempty"`
}

// OpenPresence creates or updates the presence bucket: history 1, file storage, entries expiring ttl after
// their last write.
func OpenPresence(ctx context.Context, js jetstream.JetStream, bucket string, ttl time.Duration, replicas int) (*Presence, error) {
	if ttl <= 0 {
		return nil, fmt.Errorf("natsjs: presence ttl %s: must be positive", ttl)
	}
	if replicas < 1 {
		replicas = 1
	}
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      bucket,
		Description: "anchorage node presence (expires without beats)",
		History:     1,
		TTL:         ttl,
		Storage:     jetstream.FileStorage,
		Replicas:    replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("natsjs: presence bucket %s: %w", bucket, err)
	}
	return &Presence{kv: kv, bucket: bucket, ttl: ttl, log: slog.Default()}, nil
}

// SetLogger sets where Keep logs failed beats (default slog.Default()). Call it before use.
func (p *Presence) SetLogger(l *slog.Logger) {
	if l != nil {
		p.log = l
	}
}

// TTL is how long an entry lives without a beat.
func (p *Presence) TTL() time.Duration { return p.ttl }

// Beat writes s under s.NodeID, restarting its TTL. A zero At is set to now.
func (p *Presence) Beat(ctx context.Context, s NodeStatus) error {
	if s.NodeID == "" {
		return errors.New("natsjs: presence beat without a node id")
	}
	if s.At.IsZero() {
		s.At = time.Now().UTC()
	}
	b, err := json.Marshal(s)
	if err != nil {
		return err
	}
	if _, err := p.kv.Put(ctx, s.NodeID, b); err != nil {
		return fmt.Errorf("natsjs: presence beat %s: %w", s.NodeID, err)
	}
	return nil
}

// Keep beats status() now and then every interval until ctx ends. Failures are logged, not fatal. It does not
// remove the entry when ctx ends: call Gone on a clean shutdown.
func (p *Presence) Keep(ctx context.Context, every time.Duration, status func() NodeStatus) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		s := status()
		if err := p.Beat(ctx, s); err != nil && ctx.Err() == nil {
			p.log.Warn("presence beat failed", "bucket", p.bucket, "node", s.NodeID, "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// liveStall is how long a listing waits for the watcher's next entry, or for its end-of-initial-values mark,
// before Live starts it over. The mark can be lost for good: the watcher counts the entries pending when it is
// created and sends the mark once that many have arrived, but an entry that expires in between is never
// delivered (nats.go's KV watcher, v1.55.0), and the listing would wait forever. It did: the expiry test hung the
// suite, and the scheduler's placement asks Live for free space. liveAttempts bounds the fresh starts.
var liveStall = 2 * time.Second

const liveAttempts = 3

// errLiveStalled is a listing that stopped receiving before it was complete.
var errLiveStalled = errors.New("natsjs: presence list stalled")

// Live returns the latest status of every node whose entry exists, keyed by node ID.
func (p *Presence) Live(ctx context.Context) (map[string]NodeStatus, error) {
	var err error
	for range liveAttempts {
		var live map[string]NodeStatus
		if live, err = p.live(ctx); !errors.Is(err, errLiveStalled) {
			return live, err
		}
		p.log.Warn("presence list stalled; listing again", "bucket", p.bucket, "stall", liveStall)
	}
	return nil, fmt.Errorf("%w %d times (%s each)", err, liveAttempts, liveStall)
}

// live is one listing: the current entries, or errLiveStalled when liveStall passes without the next one.
func (p *Presence) live(ctx context.Context) (map[string]NodeStatus, error) {
	w, err := p.kv.WatchAll(ctx)
	if err != nil {
		return nil, fmt.Errorf("natsjs: presence list: %w", err)
	}
	defer func() { _ = w.Stop() }()
	stall := time.NewTimer(liveStall)
	defer stall.Stop()
	live := map[string]NodeStatus{}
	for {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-stall.C:
			return nil, errLiveStalled
		case e, ok := <-w.Updates():
			if !ok {
				return nil, errors.New("natsjs: presence list: watcher closed")
			}
			if e == nil { // all current entries delivered
				return live, nil
			}
			stall.Reset(liveStall)
			if e.Operation() != jetstream.KeyValuePut {
				delete(live, e.Key())
				continue
			}
			var s NodeStatus
			if err := json.Unmarshal(e.Value(), &s); err != nil {
				p.log.Warn("presence: undecodable entry", "bucket", p.bucket, "key", e.Key(), "err", err)
				continue
			}
			live[e.Key()] = s
		}
	}
}

// Gone removes nodeID's entry at once (clean shutdown).
func (p *Presence) Gone(ctx context.Context, nodeID string) error {
	if err := p.kv.Delete(ctx, nodeID); err != nil {
		return fmt.Errorf("natsjs: presence gone %s: %w", nodeID, err)
	}
	return nil
}
