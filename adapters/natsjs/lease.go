package natsjs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Leases are named, expiring leader leases in a NATS KV bucket with per-key TTLs: "at most one active holder of
// a key at a time", for liveness only. Correctness must come from fencing: stamp every decision with the lease's
// Term and make readers ignore decisions of older terms, because two holders can overlap briefly (a paused
// process only notices its loss when it runs again).
//
// Mechanics (event-store.md §5): acquisition is a KV Create with a per-key TTL; renewal is a raw publish to the
// key's subject carrying Nats-TTL (so the TTL restarts; kv.Update would drop it and a dead holder would keep the
// key forever) and Nats-Expected-Last-Subject-Sequence (so a holder whose key expired or was taken cannot renew).
// When a key expires, the server replaces it with a delete marker; candidates watch for it and Create again.
type Leases struct {
	js     jetstream.JetStream
	kv     jetstream.KeyValue
	bucket string
	prefix string // "$KV.<bucket>.", where the key's messages are published
	log    *slog.Logger
}

// Lease errors. Every reason a Lease is lost wraps ErrLeaseLost.
var (
	ErrLeaseLost = errors.New("natsjs: lease lost")
	// ErrLeaseTaken: a renewal was refused because the key changed since our last write (it expired, was
	// deleted, or another holder created it).
	ErrLeaseTaken = fmt.Errorf("%w: key changed since our last renewal", ErrLeaseLost)
	// ErrLeaseExpired: no renewal succeeded before the lease's local deadline.
	ErrLeaseExpired = fmt.Errorf("%w: not renewed before its local deadline", ErrLeaseLost)
	// ErrLeaseReleased: the holder released it.
	ErrLeaseReleased = fmt.Errorf("%w: released", ErrLeaseLost)
)

// leaseMarkerTTL is how long the server keeps the delete marker it leaves when a key's TTL expires. With
// History 1 the marker replaces the key; keeping it a while lets late watchers see why the key vanished.
const leaseMarkerTTL = time.Minute

// OpenLeases creates or updates the lease bucket: history 1, file storage, per-key TTLs enabled
// (LimitMarkerTTL; needs server 2.11+).
func OpenLeases(ctx context.Context, js jetstream.JetStream, bucket string, replicas int) (*Leases, error) {
	if replicas < 1 {
		replicas = 1
	}
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:         bucket,
		Description:    "anchorage leader leases (per-key TTL)",
		History:        1,
		Storage:        jetstream.FileStorage,
		Replicas:       replicas,
		LimitMarkerTTL: leaseMarkerTTL,
	})
	if err != nil {
		return nil, fmt.Errorf("natsjs: lease bucket %s: %w", bucket, err)
	}
	return &Leases{js: js, kv: kv, bucket: bucket, prefix: "$KV." + bucket + ".", log: slog.Default()}, nil
}

// SetLogger sets where renewal and campaign problems are logged (default slog.Default()). Call it before use.
func (ls *Leases) SetLogger(l *slog.Logger) {
	if l != nil {
		ls.log = l
	}
}

// leaseValue is the value of a held key. Nonce identifies one acquisition, so a holder can recognise its own
// renewal whose acknowledgement was lost.
type leaseValue struct {
	Holder string `json:"holder"`
	Nonce  string `json:"nonce"`
}

// Holder reports who holds key and the key's current revision; "" and 0 when nobody does.
func (ls *Leases) Holder(ctx context.Context, key string) (string, uint64, error) {
	e, err := ls.kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return "", 0, nil
	}
	if err != nil {
		return "", 0, fmt.Errorf("natsjs: lease %s: %w", key, err)
	}
	var v leaseValue
	if err := json.Unmarshal(e.Value(), &v); err != nil {
		return "", 0, fmt.Errorf("natsjs: lease %s: decode value: %w", key, err)
	}
	return v.Holder, e.Revision(), nil
}

// leaseTTL is the TTL the server will apply: it counts whole seconds and refuses less than one.
func leaseTTL(ttl time.Duration) (time.Duration, error) {
	if ttl < time.Second {
		return 0, fmt.Errorf("natsjs: lease ttl %s: must be at least 1s (the server counts TTLs in whole seconds)", ttl)
	}
	return ttl.Round(time.Second), nil
}

// Campaign blocks until holderID acquires key, or ctx ends (its error is returned). ttl is rounded to whole
// seconds (the server's TTL unit) and must be at least 1s. While someone else holds the key, Campaign watches it
// and retries as soon as it is deleted, purged or expires, with a poll every ttl/2 as a fallback.
// The returned Lease renews itself every ttl/3 until it is released or lost.
func (ls *Leases) Campaign(ctx context.Context, key, holderID string, ttl time.Duration) (*Lease, error) {
	ttl, err := leaseTTL(ttl)
	if err != nil {
		return nil, err
	}
	nonce := uuid.NewString()
	value, err := json.Marshal(leaseValue{Holder: holderID, Nonce: nonce})
	if err != nil {
		return nil, err
	}
	var w jetstream.KeyWatcher
	defer func() {
		if w != nil {
			_ = w.Stop()
		}
	}()
	poll := time.NewTicker(ttl / 2)
	defer poll.Stop()
	for {
		if w == nil {
			// Watch before trying, so a delete right after a refused Create is not missed.
			w, err = ls.kv.Watch(ctx, key, jetstream.UpdatesOnly(), jetstream.MetaOnly())
			if err != nil {
				if errors.Is(err, jetstream.ErrInvalidKey) {
					return nil, fmt.Errorf("natsjs: lease %q: %w", key, err)
				}
				if ctx.Err() != nil {
					return nil, ctx.Err()
				}
				ls.log.Warn("lease campaign: cannot watch the key; polling", "bucket", ls.bucket, "key", key, "err", err)
				w = nil
			}
		}
		start := time.Now()
		rev, err := ls.kv.Create(ctx, key, value, jetstream.KeyTTL(ttl))
		if err == nil {
			return ls.newLease(key, holderID, nonce, value, ttl, rev, start), nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if errors.Is(err, jetstream.ErrInvalidKey) {
			return nil, fmt.Errorf("natsjs: lease %q: %w", key, err)
		}
		if !errors.Is(err, jetstream.ErrKeyExists) && !isWrongLastSeq(err) {
			ls.log.Warn("lease campaign: create failed", "bucket", ls.bucket, "key", key, "err", err)
		}
		// Someone else holds it: wait for it to go away.
	wait:
		for {
			var updates <-chan jetstream.KeyValueEntry
			if w != nil {
				updates = w.Updates()
			}
			select {
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-poll.C:
				break wait
			case e, ok := <-updates:
				if !ok {
					_ = w.Stop()
					w = nil // re-watch on the next round
					break wait
				}
				if e != nil && (e.Operation() == jetstream.KeyValueDelete || e.Operation() == jetstream.KeyValuePurge) {
					break wait
				}
			}
		}
	}
}

// Lease is one acquisition of a key. It renews itself in the background until Release or loss.
type Lease struct {
	ls       *Leases
	key      string
	holder   string
	nonce    string
	value    []byte
	ttl      time.Duration
	interval time.Duration // between renewals
	margin   time.Duration // the local deadline is this much before the server-side expiry
	term     uint64

	mu       sync.Mutex
	rev      uint64    // the key's revision after our last acknowledged write
	deadline time.Time // monotonic: send time of our last acknowledged write + ttl - margin
	err      error     // why it was lost; nil while held

	lost     chan struct{}
	lostOnce sync.Once
	cancel   context.CancelFunc // stops the renewer
	done     chan struct{}      // closed when the renewer has returned
	// frozen is held by tests to simulate a stopped process: the renewer blocks on it whenever it wakes up.
	frozen sync.Mutex
}

func (ls *Leases) newLease(key, holder, nonce string, value []byte, ttl time.Duration, rev uint64, sent time.Time) *Lease {
	margin := max(ttl/5, 100*time.Millisecond)
	l := &Lease{
		ls: ls, key: key, holder: holder, nonce: nonce, value: value, ttl: ttl,
		interval: ttl / 3, margin: margin, term: rev,
		rev: rev, deadline: sent.Add(ttl - margin),
		lost: make(chan struct{}), done: make(chan struct{}),
	}
	ctx, cancel := context.WithCancel(context.Background())
	l.cancel = cancel
	go l.run(ctx)
	return l
}

// Term is the key's revision when this lease was acquired: strictly greater than every earlier holder's term in
// the same bucket. Use it as the fencing token.
func (l *Lease) Term() uint64 { return l.term }

// Key is the leased key; Holder is this lease's holder ID; TTL is the TTL the server applies.
func (l *Lease) Key() string        { return l.key }
func (l *Lease) Holder() string     { return l.holder }
func (l *Lease) TTL() time.Duration { return l.ttl }

// Lost is closed once the lease is lost or released. Stop acting as the holder at once.
func (l *Lease) Lost() <-chan struct{} { return l.lost }

// Err is nil while the lease is held, then why it was lost (wrapping ErrLeaseLost).
func (l *Lease) Err() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.err
}

// Deadline is the local monotonic time until which the lease is certainly still ours, given a server-side TTL
// that started no earlier than our last acknowledged renewal was sent. A holder about to act can check
// time.Now().Before(l.Deadline()) as well as Lost.
func (l *Lease) Deadline() time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.err != nil {
		return time.Time{}
	}
	return l.deadline
}

// Release stops renewing and deletes the key if it is still ours (expected revision), so a candidate can take
// over at once. If it is no longer ours, nothing is deleted and Release returns nil. Lost is closed either way.
func (l *Lease) Release(ctx context.Context) error {
	l.cancel()
	<-l.done
	l.lose(ErrLeaseReleased)
	l.mu.Lock()
	rev := l.rev
	l.mu.Unlock()
	err := l.ls.kv.Delete(ctx, l.key, jetstream.LastRevision(rev))
	if err != nil && !isWrongLastSeq(err) {
		return fmt.Errorf("natsjs: release lease %s: %w", l.key, err)
	}
	return nil
}

func (l *Lease) lose(cause error) {
	l.lostOnce.Do(func() {
		l.mu.Lock()
		l.err = cause
		l.mu.Unlock()
		close(l.lost)
	})
}

// run renews every interval until ctx ends or the lease is lost, and declares it lost at its local deadline
// even if the server cannot be reached.
func (l *Lease) run(ctx context.Context) {
	defer close(l.done)
	next := time.NewTimer(l.interval)
	defer next.Stop()
	for {
		l.mu.Lock()
		deadline := l.deadline
		l.mu.Unlock()
		expire := time.NewTimer(time.Until(deadline))
		select {
		case <-ctx.Done():
			expire.Stop()
			return
		case <-expire.C:
		case <-next.C:
		}
		expire.Stop()
		l.frozen.Lock()
		//lint:ignore SA2001 an empty critical section: tests hold frozen to pause the renewer
		l.frozen.Unlock()
		if ctx.Err() != nil {
			return
		}
		if !time.Now().Before(deadline) {
			l.ls.log.Warn("lease expired locally: no renewal succeeded in time", "bucket", l.ls.bucket, "key", l.key, "term", l.term)
			l.lose(ErrLeaseExpired)
			return
		}
		err := l.renew(ctx, deadline)
		switch {
		case err == nil:
			next.Reset(l.interval)
		case ctx.Err() != nil:
			return
		case errors.Is(err, ErrLeaseLost):
			l.ls.log.Warn("lease lost", "bucket", l.ls.bucket, "key", l.key, "term", l.term, "err", err)
			l.lose(err)
			return
		default:
			l.ls.log.Warn("lease renewal failed; retrying", "bucket", l.ls.bucket, "key", l.key, "term", l.term, "err", err)
			next.Reset(max(l.interval/4, 50*time.Millisecond))
		}
	}
}

// renew republishes the key with a fresh TTL, expecting our last revision. It gives up at deadline.
func (l *Lease) renew(ctx context.Context, deadline time.Time) error {
	l.mu.Lock()
	rev := l.rev
	l.mu.Unlock()
	m := &nats.Msg{Subject: l.ls.prefix + l.key, Data: l.value, Header: nats.Header{}}
	m.Header.Set(jetstream.MsgTTLHeader, strconv.FormatInt(int64(l.ttl/time.Second), 10)+"s")
	m.Header.Set(jetstream.ExpectedLastSubjSeqHeader, strconv.FormatUint(rev, 10))
	rctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	sent := time.Now()
	ack, err := l.ls.js.PublishMsg(rctx, m)
	if err == nil {
		l.mu.Lock()
		l.rev = ack.Sequence
		l.deadline = sent.Add(l.ttl - l.margin)
		l.mu.Unlock()
		return nil
	}
	if !isWrongLastSeq(err) {
		return err
	}
	// Refused. Unless an earlier renewal of ours was stored but its ack lost, the key is no longer ours.
	e, gerr := l.ls.kv.Get(rctx, l.key)
	if gerr == nil && e.Operation() == jetstream.KeyValuePut {
		var v leaseValue
		if json.Unmarshal(e.Value(), &v) == nil && v.Nonce == l.nonce && e.Revision() > rev {
			// Only our renewals carry our nonce, and each expected the previous one: the chain is unbroken.
			// Keep the older deadline (we do not know when that write was sent) and renew again soon.
			l.mu.Lock()
			l.rev = e.Revision()
			l.mu.Unlock()
			return fmt.Errorf("natsjs: lease %s: adopted revision %d of an unacknowledged renewal", l.key, e.Revision())
		}
	}
	return fmt.Errorf("%w (revision %d): %w", ErrLeaseTaken, rev, err)
}

// isWrongLastSeq reports a failed expected-sequence check (10071, or 10164 on replicated streams).
func isWrongLastSeq(err error) bool {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		return apiErr.ErrorCode == errWrongLastSequence || apiErr.ErrorCode == errWrongLastSequenceConstant
	}
	return false
}
