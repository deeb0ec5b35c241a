package projections

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/anchorage-pin/anchorage/domain"
	"github.com/anchorage-pin/anchorage/events"
)

// TokenState is what the token registry knows about one API token. adapters/tokens uses it as tokens.State.
type TokenState struct {
	// Known is true once a TokenMinted for the token has been applied.
	Known bool
	// Revoked is true once a TokenRevoked for the token has been applied.
	Revoked bool
	// OrgID is the org the token was minted in. Lookup may report a token minted in another org than the one
	// asked for (same token id); the caller must compare.
	OrgID string
	// ExpiresAt is the expiry recorded when the token was minted.
	ExpiresAt time.Time
}

// Defaults of TokenRegistry.
const (
	// TokenRegistryMaxWait bounds how long Lookup waits for the registry to catch up with the event log before
	// reporting a token unknown.
	TokenRegistryMaxWait = 2 * time.Second
	// tokenPruneGrace is how long after its expiry a token is kept in memory; well beyond any verifier leeway.
	tokenPruneGrace = time.Hour
	// tokenPruneEvery is the minimum interval between two sweeps for expired tokens.
	tokenPruneEvery = time.Minute
)

// TokenRegistry is an in-memory fold of the token.minted and token.revoked events: the API token verifier's
// view of which tokens exist and which are revoked. It is safe for concurrent use.
//
// Feed it every record of the tokens.> subjects, in log order, with Apply. Records of other events may be fed
// too: they only advance Applied. The head function passed to NewTokenRegistry must return the sequence of the
// last message the registry will eventually be fed (the stream's last sequence when it is fed the whole
// stream, or the last sequence on tokens.> when it is fed a filtered consumer); otherwise lookups of unknown
// tokens wait for a sequence that never comes and fail as unavailable.
type TokenRegistry struct {
	head       func(ctx context.Context) (uint64, error)
	now        func() time.Time
	maxWait    time.Duration
	pruneGrace time.Duration
	pruneEvery time.Duration

	mu sync.RWMutex
	// tokens maps token id → org id → entry. Token ids are unique per org; keying by id first lets Lookup
	// report a token that exists under another org.
	tokens    map[string]map[string]tokenEntry
	applied   uint64
	notify    chan struct{} // closed (and reset to nil) when applied advances; nil when no one waits
	lastPrune time.Time

	hmu      sync.Mutex
	inflight *headCall // the head() call running now
	queued   *headCall // the call to run after inflight, shared by everyone who arrived while it ran
}

type tokenEntry struct {
	revoked   bool
	expiresAt time.Time
}

type headCall struct {
	ctx  context.Context // values of the caller that created it; never cancelled by that caller
	done chan struct{}
	seq  uint64
	err  error
}

// NewTokenRegistry returns an empty registry. head returns the event log's current last sequence (see
// TokenRegistry); it may be nil, and then Lookup never waits.
func NewTokenRegistry(head func(ctx context.Context) (uint64, error)) *TokenRegistry {
	return &TokenRegistry{
		head:       head,
		now:        time.Now,
		maxWait:    TokenRegistryMaxWait,
		pruneGrace: tokenPruneGrace,
		pruneEvery: tokenPruneEvery,
		tokens:     map[string]map[string]tokenEntry{},
	}
}

// Apply folds one record. A record whose Seq is not above the last applied one is ignored, so redelivery is
// harmless. Records of other events only advance Applied.
func (r *TokenRegistry) Apply(rec events.Record) {
	ev := rec.Event
	if ev == nil && (rec.Type == (events.TokenMinted{}).EventType() || rec.Type == (events.TokenRevoked{}).EventType()) {
		// Undecoded record: decode it here. One that does not decode leaves the token unknown, which fails
		// closed.
		ev, _ = events.Decode(rec.Type, rec.Version, rec.Data)
	}

	r.mu.Lock()
	defer r.mu.Unlock()
	if rec.Seq <= r.applied {
		return
	}
	switch e := ev.(type) {
	case events.TokenMinted:
		r.minted(e)
	case *events.TokenMinted:
		if e != nil {
			r.minted(*e)
		}
	case events.TokenRevoked:
		r.revoked(e)
	case *events.TokenRevoked:
		if e != nil {
			r.revoked(*e)
		}
	}
	r.applied = rec.Seq
	if r.notify != nil {
		close(r.notify)
		r.notify = nil
	}
	r.maybePrune()
}

func (r *TokenRegistry) minted(e events.TokenMinted) {
	byOrg := r.tokens[e.TokenID]
	if byOrg == nil {
		byOrg = map[string]tokenEntry{}
		r.tokens[e.TokenID] = byOrg
	}
	old := byOrg[e.OrgID]
	// A revocation is final, whatever comes after it.
	byOrg[e.OrgID] = tokenEntry{revoked: old.revoked, expiresAt: e.ExpiresAt}
}

func (r *TokenRegistry) revoked(e events.TokenRevoked) {
	byOrg := r.tokens[e.TokenID]
	ent, ok := byOrg[e.OrgID]
	if !ok {
		// Revoking a token we do not hold: it was never minted, or it expired and was pruned. Either way it
		// is already rejected.
		return
	}
	ent.revoked = true
	byOrg[e.OrgID] = ent
}

// maybePrune drops tokens that expired more than pruneGrace ago, at most once per pruneEvery. Called with mu
// held for writing.
func (r *TokenRegistry) maybePrune() {
	now := r.now()
	if now.Sub(r.lastPrune) < r.pruneEvery {
		return
	}
	r.lastPrune = now
	cutoff := now.Add(-r.pruneGrace)
	for id, byOrg := range r.tokens {
		for org, ent := range byOrg {
			if !ent.expiresAt.IsZero() && ent.expiresAt.Before(cutoff) {
				delete(byOrg, org)
			}
		}
		if len(byOrg) == 0 {
			delete(r.tokens, id)
		}
	}
}

// Applied is the sequence of the last record applied (0 before any).
func (r *TokenRegistry) Applied() uint64 {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.applied
}

// Lookup reports what the registry knows about a token. A token the registry does not know may have been
// minted a moment ago by another process: Lookup then asks the log for its head and waits (bounded by ctx and
// TokenRegistryMaxWait) until it has applied that far, and looks again. Only then does it report the token
// unknown (Known false, nil error). If the registry cannot catch up in time, or head fails, Lookup returns an
// error wrapping domain.ErrUnavailable: it cannot tell whether the token exists.
//
// When no token of that id exists in orgID but one does in another org, Lookup reports that one (Known, with
// its OrgID), so the caller can reject the mismatch.
func (r *TokenRegistry) Lookup(ctx context.Context, orgID, tokenID string) (TokenState, error) {
	if st, ok := r.lookup(orgID, tokenID); ok {
		return st, nil
	}
	if r.head == nil {
		return TokenState{}, nil
	}
	if err := ctx.Err(); err != nil {
		return TokenState{}, unavailable(err, "token lookup cancelled")
	}

	wctx, cancel := context.WithTimeout(ctx, r.maxWait)
	defer cancel()
	seq, err := r.headSeq(wctx)
	if err != nil {
		return TokenState{}, r.waitFailed(ctx, err, "read the event log's head", 0)
	}
	if err := r.waitApplied(wctx, seq); err != nil {
		return TokenState{}, r.waitFailed(ctx, err, "catch up with the event log", seq)
	}
	st, _ := r.lookup(orgID, tokenID)
	return st, nil
}

func (r *TokenRegistry) lookup(orgID, tokenID string) (TokenState, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	byOrg := r.tokens[tokenID]
	if ent, ok := byOrg[orgID]; ok {
		return TokenState{Known: true, Revoked: ent.revoked, OrgID: orgID, ExpiresAt: ent.expiresAt}, true
	}
	for org, ent := range byOrg {
		return TokenState{Known: true, Revoked: ent.revoked, OrgID: org, ExpiresAt: ent.expiresAt}, true
	}
	return TokenState{}, false
}

// headSeq returns the log's head. At most one head() call runs at a time. A caller arriving while one runs
// does not reuse its answer (it may predate the mint the caller is looking for) but joins the single call
// queued behind it, so a flood of lookups costs at most one call in flight and one queued.
func (r *TokenRegistry) headSeq(ctx context.Context) (uint64, error) {
	r.hmu.Lock()
	var c *headCall
	switch {
	case r.inflight == nil:
		c = &headCall{ctx: context.WithoutCancel(ctx), done: make(chan struct{})}
		r.inflight = c
		go r.runHeads(c)
	case r.queued == nil:
		c = &headCall{ctx: context.WithoutCancel(ctx), done: make(chan struct{})}
		r.queued = c
	default:
		c = r.queued
	}
	r.hmu.Unlock()

	select {
	case <-c.done:
		return c.seq, c.err
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// runHeads runs c, then whatever call was queued meanwhile, until none is.
func (r *TokenRegistry) runHeads(c *headCall) {
	for c != nil {
		ctx, cancel := context.WithTimeout(c.ctx, r.maxWait)
		c.seq, c.err = r.callHead(ctx)
		cancel()
		close(c.done)

		r.hmu.Lock()
		c, r.queued = r.queued, nil
		r.inflight = c
		r.hmu.Unlock()
	}
}

func (r *TokenRegistry) callHead(ctx context.Context) (seq uint64, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("head panicked: %v", p)
		}
	}()
	return r.head(ctx)
}

// waitApplied blocks until Applied() >= seq or ctx is done.
func (r *TokenRegistry) waitApplied(ctx context.Context, seq uint64) error {
	for {
		r.mu.Lock()
		if r.applied >= seq {
			r.mu.Unlock()
			return nil
		}
		if r.notify == nil {
			r.notify = make(chan struct{})
		}
		ch := r.notify
		r.mu.Unlock()

		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (r *TokenRegistry) waitFailed(ctx context.Context, err error, what string, head uint64) error {
	if ctxErr := ctx.Err(); ctxErr != nil {
		return unavailable(ctxErr, "token lookup cancelled")
	}
	if errors.Is(err, context.DeadlineExceeded) {
		if head > 0 {
			return unavailable(err, fmt.Sprintf("the token registry could not %s within %s (applied %d of %d); retry shortly",
				what, r.maxWait, r.Applied(), head))
		}
		return unavailable(err, fmt.Sprintf("the token registry could not %s within %s; retry shortly", what, r.maxWait))
	}
	return unavailable(err, fmt.Sprintf("the token registry could not %s; retry shortly", what))
}

// unavailableError is a domain.ErrUnavailable error safe to show (its *domain.Error) that also wraps the
// internal cause for logs.
type unavailableError struct {
	safe  *domain.Error
	cause error
}

func unavailable(cause error, msg string) error {
	return &unavailableError{safe: domain.Errorf(domain.ErrUnavailable, "%s", msg).(*domain.Error), cause: cause}
}

func (e *unavailableError) Error() string   { return e.safe.Msg + ": " + e.cause.Error() }
func (e *unavailableError) Unwrap() []error { return []error{e.safe, e.cause} }
