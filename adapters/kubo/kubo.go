// Package kubo drives a Kubo daemon over its RPC API (github.com/ipfs/kubo/client/rpc) with a pooled HTTP
// client: identity and addresses, pin add/rm/update/ls, swarm connect, repo size, and the classification of
// its errors (IsTimeout, IsUnavailable).
package kubo

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/ipfs/kubo/client/rpc"
)

// Client talks to one Kubo daemon. It is safe for concurrent use.
type Client struct {
	url     string
	api     *rpc.HttpApi
	dagSize bool
}

// Option tunes New.
type Option func(*Client)

// WithDagSize sets whether Pin reports the pinned DAG's size (default true). The size comes from pin/add's
// progress report, which costs no extra request and no measurable throughput; turn it off only to get plain
// pin/add requests.
func WithDagSize(on bool) Option { return func(c *Client) { c.dagSize = on } }

// New returns a client for the daemon whose RPC API is at url (e.g. http://127.0.0.1:5001), keeping up to
// maxConns connections open (rpc.NewApi would open a new connection per call). Size maxConns to the number
// of calls kept in flight.
func New(url string, maxConns int, opts ...Option) (*Client, error) {
	if maxConns <= 0 {
		maxConns = 32
	}
	hc := &http.Client{Transport: &http.Transport{
		Proxy: nil, MaxIdleConns: maxConns, MaxIdleConnsPerHost: maxConns, IdleConnTimeout: 90 * time.Second,
	}}
	api, err := rpc.NewURLApiWithClient(strings.TrimSuffix(url, "/"), hc)
	if err != nil {
		return nil, fmt.Errorf("kubo: %s: %w", url, err)
	}
	c := &Client{url: url, api: api, dagSize: true}
	for _, o := range opts {
		o(c)
	}
	return c, nil
}

// Identity is a daemon's peer id and the multiaddrs it can be reached at, each ending /p2p/<peer id>.
type Identity struct {
	PeerID string
	Addrs  []string
}

// ID asks the daemon who it is.
func (c *Client) ID(ctx context.Context) (Identity, error) {
	var out struct {
		ID        string
		Addresses []string
	}
	if err := c.api.Request("id").Exec(ctx, &out); err != nil {
		return Identity{}, fmt.Errorf("kubo %s: id: %w", c.url, err)
	}
	var addrs []string
	for _, a := range out.Addresses {
		if strings.HasSuffix(a, "/p2p/"+out.ID) && !slices.Contains(addrs, a) {
			addrs = append(addrs, a)
		}
	}
	return Identity{PeerID: out.ID, Addrs: addrs}, nil
}

// Delegates caches a daemon's addresses for the API's delegates, refreshing them at most every refresh and
// serving the last good answer when the daemon does not respond.
type Delegates struct {
	c       *Client
	refresh time.Duration
	mu      sync.Mutex
	addrs   []string
	at      time.Time
}

// NewDelegates returns a cache over c.
func NewDelegates(c *Client, refresh time.Duration) *Delegates {
	return &Delegates{c: c, refresh: refresh}
}

// Addrs returns the daemon's multiaddrs.
func (d *Delegates) Addrs(ctx context.Context) []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.addrs != nil && time.Since(d.at) < d.refresh {
		return d.addrs
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	id, err := d.c.ID(ctx)
	if err == nil && len(id.Addrs) > 0 {
		d.addrs, d.at = id.Addrs, time.Now()
	}
	return d.addrs
}
