package kubo

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/ipfs/boxo/path"
	"github.com/ipfs/go-cid"
	iface "github.com/ipfs/kubo/core/coreiface"
	caopts "github.com/ipfs/kubo/core/coreiface/options"
	ma "github.com/multiformats/go-multiaddr"
	"github.com/multiformats/go-multihash"
)

// MaxPinNameBytes is the longest pin name Kubo accepts (it rejects longer ones); Pin truncates names to it.
const MaxPinNameBytes = 255

// ConnectTimeout bounds each swarm/connect made by Connect.
const ConnectTimeout = 2 * time.Second

// Pin pins cid recursively under name, fetching whatever blocks the daemon lacks, and returns once the whole
// DAG is local and pinned. ctx carries the pin's deadline: when it expires the daemon stops fetching and the
// error satisfies IsTimeout. Pinning a CID that is already pinned succeeds (Kubo walks the DAG again and
// renames the pin).
//
// Kubo keys pins by the CID's exact bytes, so a CIDv0 and its CIDv1 would make two pins of the same DAG. Pin
// always pins the CIDv1 spelling; IsPinned, Unpin and Update accept and handle either.
//
// dagSize is the total size in bytes of the DAG's distinct blocks when the Client was built WithDagSize(true)
// (the default), else 0. It comes from pin/add's own progress report, so it costs no extra request.
func (c *Client) Pin(ctx context.Context, cidStr, name string) (dagSize uint64, err error) {
	id, _, err := spellings(cidStr)
	if err != nil {
		return 0, fmt.Errorf("kubo %s: pin: %w", c.url, err)
	}
	name = truncateName(name)
	if !c.dagSize {
		err = c.api.Pin().Add(ctx, path.FromCid(id), caopts.Pin.Recursive(true), caopts.Pin.Name(name))
	} else {
		dagSize, err = c.pinWithProgress(ctx, id, name)
	}
	if err != nil {
		return 0, fmt.Errorf("kubo %s: pin %s: %w", c.url, cidStr, err)
	}
	return dagSize, nil
}

// pinAddOutput is one object of pin/add's output stream with progress=true: progress reports
// ({"Progress":nodes,"Bytes":bytes}, every 500 ms and once more at the end) and finally {"Pins":[...]}.
type pinAddOutput struct {
	Pins     []string
	Progress int
	Bytes    uint64
}

// pinWithProgress runs pin/add with progress=true and returns the byte count of the last progress report,
// which the daemon sends right before the result: the sum of the sizes of the DAG's distinct blocks (the
// pinner walks the whole DAG on every pin/add, even of a pinned CID, so the report is always there).
func (c *Client) pinWithProgress(ctx context.Context, id cid.Cid, name string) (uint64, error) {
	req := c.api.Request("pin/add", path.FromCid(id).String()).
		Option("recursive", true).
		Option("progress", true)
	if name != "" {
		req = req.Option("name", name)
	}
	resp, err := req.Send(ctx)
	if err != nil {
		return 0, err
	}
	if resp.Error != nil {
		return 0, resp.Error
	}
	defer resp.Close()
	var size uint64
	dec := json.NewDecoder(resp.Output)
	for {
		var out pinAddOutput
		if err := dec.Decode(&out); err != nil {
			return 0, streamError(ctx, err)
		}
		if out.Pins != nil {
			return size, nil
		}
		size = out.Bytes
	}
}

// streamError classifies an error met while reading a streamed answer. Once the daemon has started
// streaming (after the first progress report, 500 ms into a pin/add), it reports a failure in an HTTP
// trailer, which client/rpc turns into a plain error carrying the daemon's message; that becomes an
// *rpc.Error like a failure reported up front.
func streamError(ctx context.Context, err error) error {
	var (
		ne  net.Error
		se  *json.SyntaxError
		ute *json.UnmarshalTypeError
	)
	switch {
	case err == io.EOF:
		return errors.New("answer ended without a result")
	case ctx.Err() != nil, errors.Is(err, io.ErrUnexpectedEOF), errors.As(err, &ne), errors.As(err, &se), errors.As(err, &ute):
		return err
	default:
		return &rpcError{Message: err.Error()}
	}
}

// truncateName cuts name to at most MaxPinNameBytes bytes at a character boundary.
func truncateName(name string) string {
	if len(name) <= MaxPinNameBytes {
		return name
	}
	n := MaxPinNameBytes
	for n > 0 && !utf8.RuneStart(name[n]) {
		n--
	}
	return name[:n]
}

// spellings parses s and returns its CIDv1 and, when the same DAG also has a CIDv0 spelling (dag-pb with a
// sha2-256 multihash), that CIDv0, else cid.Undef.
func spellings(s string) (v1, v0 cid.Cid, err error) {
	id, err := cid.Decode(s)
	if err != nil {
		return cid.Undef, cid.Undef, fmt.Errorf("%q: %w", s, err)
	}
	v1 = cid.NewCidV1(id.Type(), id.Hash())
	if p := id.Prefix(); p.Codec == cid.DagProtobuf && p.MhType == multihash.SHA2_256 && p.MhLength == 32 {
		v0 = cid.NewCidV0(id.Hash())
	}
	return v1, v0, nil
}

// each returns the defined ones of ids.
func each(ids ...cid.Cid) []cid.Cid {
	out := ids[:0:0]
	for _, id := range ids {
		if id.Defined() {
			out = append(out, id)
		}
	}
	return out
}

// Unpin removes cid's recursive pin, under its CIDv1 and its CIDv0 spelling. A CID that is not pinned, or
// only indirectly (as part of another pinned DAG), is not an error. The blocks stay in the repo until the
// daemon's garbage collection.
func (c *Client) Unpin(ctx context.Context, cidStr string) error {
	v1, v0, err := spellings(cidStr)
	if err != nil {
		return fmt.Errorf("kubo %s: unpin: %w", c.url, err)
	}
	return c.unpin(ctx, cidStr, each(v1, v0))
}

func (c *Client) unpin(ctx context.Context, cidStr string, ids []cid.Cid) error {
	for _, id := range ids {
		err := c.api.Pin().Rm(ctx, path.FromCid(id), caopts.Pin.RmRecursive(true))
		if err != nil && !IsNotPinned(err) {
			return fmt.Errorf("kubo %s: unpin %s: %w", c.url, cidStr, err)
		}
	}
	return nil
}

// Update moves a recursive pin from one DAG to another with pin/update: the daemon fetches only what to has
// that from lacks, pins to (keeping from's pin name) and then unpins from, so blocks the two DAGs share stay
// pinned throughout. ctx bounds the fetch, as for Pin.
//
// Update converges on "to pinned, from not" and so is safe to retry: when from is no longer recursively
// pinned (an earlier attempt succeeded, or the pin was lost) it pins to with pin/add unless it already is,
// and when to is already recursively pinned it just unpins from.
func (c *Client) Update(ctx context.Context, from, to string) error {
	from1, from0, err := spellings(from)
	if err != nil {
		return fmt.Errorf("kubo %s: update from: %w", c.url, err)
	}
	to1, _, err := spellings(to)
	if err != nil {
		return fmt.Errorf("kubo %s: update to: %w", c.url, err)
	}
	froms := each(from1, from0)
	for i, f := range froms {
		err := c.api.Pin().Update(ctx, path.FromCid(f), path.FromCid(to1), caopts.Pin.Unpin(true))
		switch {
		case err == nil:
			return c.unpin(ctx, from, froms[i+1:])
		case rpcMessageContains(err, "'from' cid was not recursively pinned"):
			continue
		case rpcMessageContains(err, "'to' cid was already recursively pinned"):
			return c.unpin(ctx, from, froms)
		default:
			return fmt.Errorf("kubo %s: update %s -> %s: %w", c.url, from, to, err)
		}
	}
	// from is not pinned (under either spelling): pin to.
	pinned, err := c.IsPinned(ctx, to)
	if err != nil || pinned {
		return err
	}
	if err := c.api.Pin().Add(ctx, path.FromCid(to1), caopts.Pin.Recursive(true)); err != nil {
		return fmt.Errorf("kubo %s: update %s -> %s (%[2]s not pinned): pin %[3]s: %w", c.url, from, to, err)
	}
	return nil
}

// IsPinned reports whether cid is pinned recursively, under its CIDv1 or its CIDv0 spelling. It never
// fetches anything.
func (c *Client) IsPinned(ctx context.Context, cidStr string) (bool, error) {
	v1, v0, err := spellings(cidStr)
	if err != nil {
		return false, fmt.Errorf("kubo %s: is pinned: %w", c.url, err)
	}
	for _, id := range each(v1, v0) {
		_, pinned, err := c.api.Pin().IsPinned(ctx, path.FromCid(id), caopts.Pin.IsPinned.Recursive())
		if err != nil {
			return false, fmt.Errorf("kubo %s: is pinned %s: %w", c.url, cidStr, err)
		}
		if pinned {
			return true, nil
		}
	}
	return false, nil
}

// ListPinned returns the daemon's recursive pins keyed by Key (the CID's multihash), so that CIDv0 and CIDv1
// spellings of the same content compare equal.
func (c *Client) ListPinned(ctx context.Context) (map[string]struct{}, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ch := make(chan iface.Pin, 256)
	errc := make(chan error, 1)
	go func() { errc <- c.api.Pin().Ls(ctx, ch, caopts.Pin.Ls.Recursive()) }()
	set := make(map[string]struct{})
	for p := range ch {
		set[string(p.Path().RootCid().Hash())] = struct{}{}
	}
	if err := <-errc; err != nil {
		return nil, fmt.Errorf("kubo %s: pin ls: %w", c.url, err)
	}
	return set, nil
}

// Key returns the key ListPinned uses for cid: its multihash, as a byte string.
func Key(cidStr string) (string, error) {
	id, err := cid.Decode(cidStr)
	if err != nil {
		return "", err
	}
	return string(id.Hash()), nil
}

// Connect asks the daemon to connect to each of addrs that names a peer (has a /p2p/ component; others are
// skipped), all in parallel and each bounded by ConnectTimeout, and returns how many connections succeeded.
// It never fails: a pin whose providers cannot be reached may still find the content elsewhere.
func (c *Client) Connect(ctx context.Context, addrs []string) (connected int) {
	var n atomic.Int64
	var wg sync.WaitGroup
	seen := make(map[string]bool, len(addrs))
	for _, a := range addrs {
		m, err := ma.NewMultiaddr(a)
		if err != nil {
			continue
		}
		if _, err := m.ValueForProtocol(ma.P_P2P); err != nil {
			continue
		}
		s := m.String()
		if seen[s] {
			continue
		}
		seen[s] = true
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(ctx, ConnectTimeout)
			defer cancel()
			if c.api.Request("swarm/connect", s).Exec(ctx, nil) == nil {
				n.Add(1)
			}
		})
	}
	wg.Wait()
	return int(n.Load())
}

// RepoStat reports how many bytes the daemon's repo uses and how many it may use (Datastore.StorageMax, 10 GB
// unless configured). Free space is max - used, but used can exceed max (StorageMax only triggers garbage
// collection when enabled; it is no quota), so clamp at zero.
func (c *Client) RepoStat(ctx context.Context) (used, max uint64, err error) {
	var out struct {
		RepoSize   uint64
		StorageMax uint64
	}
	if err := c.api.Request("repo/stat").Option("size-only", true).Exec(ctx, &out); err != nil {
		return 0, 0, fmt.Errorf("kubo %s: repo stat: %w", c.url, err)
	}
	return out.RepoSize, out.StorageMax, nil
}

// rpcMessageContains reports whether err carries a daemon error whose message contains s.
func rpcMessageContains(err error, s string) bool {
	var e *rpcError
	return errors.As(err, &e) && strings.Contains(e.Message, s)
}
