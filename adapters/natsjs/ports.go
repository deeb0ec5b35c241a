package natsjs

import (
	"context"
	"time"

	"github.com/anchorage-pin/anchorage/projections"
)

// Campaigner hands out the scheduler's leadership lease (projections.Campaigner).
type Campaigner struct{ Leases *Leases }

var _ projections.Campaigner = Campaigner{}

// Campaign blocks until this holder leads.
func (c Campaigner) Campaign(ctx context.Context, key, holder string, ttl time.Duration) (projections.Lease, error) {
	l, err := c.Leases.Campaign(ctx, key, holder, ttl)
	if err != nil {
		return nil, err
	}
	return l, nil
}

var _ projections.LiveNodes = (*Presence)(nil)

// LiveFree reports every live node's free bytes (projections.LiveNodes).
func (p *Presence) LiveFree(ctx context.Context) (map[string]uint64, error) {
	live, err := p.Live(ctx)
	if err != nil {
		return nil, err
	}
	out := make(map[string]uint64, len(live))
	for id, s := range live {
		out[id] = s.FreeBytes
	}
	return out, nil
}
