package kubo

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/anchorage-pin/anchorage/adapters/kubo/kubod"
	"github.com/anchorage-pin/anchorage/adapters/kubo/kubotest"
	"github.com/ipfs/boxo/files"
	"github.com/ipfs/boxo/path"
	"github.com/ipfs/go-cid"
	"github.com/ipfs/kubo/client/rpc"
	caopts "github.com/ipfs/kubo/core/coreiface/options"
	"github.com/multiformats/go-multihash"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// daemon starts a loopback Kubo daemon and a Client for it.
func daemon(tb testing.TB, opts ...Option) (*kubod.Daemon, *Client) {
	tb.Helper()
	d := kubotest.Daemon(tb)
	return d, client(tb, d, opts...)
}

func client(tb testing.TB, d *kubod.Daemon, opts ...Option) *Client {
	tb.Helper()
	c, err := New(d.APIURL(), 128, opts...)
	require.NoError(tb, err)
	return c
}

func ctxT(tb testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	tb.Cleanup(cancel)
	return ctx
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}

// putRaw stores data as a raw block (not pinned) and returns its CID.
func putRaw(tb testing.TB, c *Client, data []byte) string {
	tb.Helper()
	st, err := c.api.Block().Put(ctxT(tb, 10*time.Second), bytes.NewReader(data), caopts.Block.CidCodec("raw"))
	require.NoError(tb, err)
	return st.Path().RootCid().String()
}

// addFile imports data as a UnixFS file without pinning it.
func addFile(tb testing.TB, c *Client, data []byte, opts ...caopts.UnixfsAddOption) cid.Cid {
	tb.Helper()
	opts = append([]caopts.UnixfsAddOption{caopts.Unixfs.Pin(false, "")}, opts...)
	p, err := c.api.Unixfs().Add(ctxT(tb, 10*time.Second), files.NewBytesFile(data), opts...)
	require.NoError(tb, err)
	return p.RootCid()
}

// absentCID is the CID of random bytes that no daemon has.
func absentCID(tb testing.TB) string {
	tb.Helper()
	h, err := multihash.Sum(randomBytes(64), multihash.SHA2_256, -1)
	require.NoError(tb, err)
	return cid.NewCidV1(cid.Raw, h).String()
}

// pinType asks the daemon how id is pinned ("recursive", "direct", "indirect through <cid>"), "" if not.
func pinType(tb testing.TB, c *Client, id cid.Cid) string {
	tb.Helper()
	typ, pinned, err := c.api.Pin().IsPinned(ctxT(tb, 10*time.Second), path.FromCid(id))
	require.NoError(tb, err)
	if !pinned {
		return ""
	}
	return typ
}

// emptyDir is the empty UnixFS directory, which Kubo v0.43.0's init pins even with --empty-repo.
const emptyDir = "QmUNLLsPACCz1vLxQVkXqqLX5R1X345qqfHbsf67hvA3Nn"

// recursivePins lists the daemon's recursive pins as given by pin/ls, but for emptyDir: CID string -> name.
func recursivePins(tb testing.TB, c *Client) map[string]string {
	tb.Helper()
	var out struct {
		Keys map[string]struct{ Name string }
	}
	require.NoError(tb, c.api.Request("pin/ls").Option("type", "recursive").Option("names", true).Exec(ctxT(tb, 10*time.Second), &out))
	pins := make(map[string]string, len(out.Keys))
	for k, v := range out.Keys {
		if k != emptyDir {
			pins[k] = v.Name
		}
	}
	return pins
}

func TestPinRoundTrip(t *testing.T) {
	for _, withSize := range []bool{true, false} {
		t.Run(fmt.Sprintf("dagSize=%v", withSize), func(t *testing.T) {
			_, c := daemon(t, WithDagSize(withSize))
			ctx := ctxT(t, time.Minute)
			id := putRaw(t, c, randomBytes(1024))
			key, err := Key(id)
			require.NoError(t, err)

			pinned, err := c.IsPinned(ctx, id)
			require.NoError(t, err)
			assert.False(t, pinned, "a block put without pinning")

			size, err := c.Pin(ctx, id, "round-trip")
			require.NoError(t, err)
			if withSize {
				assert.EqualValues(t, 1024, size)
			} else {
				assert.Zero(t, size)
			}
			pinned, err = c.IsPinned(ctx, id)
			require.NoError(t, err)
			assert.True(t, pinned)
			assert.Equal(t, "round-trip", recursivePins(t, c)[id])
			set, err := c.ListPinned(ctx)
			require.NoError(t, err)
			assert.Contains(t, set, key)
			emptyKey, err := Key(emptyDir)
			require.NoError(t, err)
			assert.Equal(t, map[string]struct{}{key: {}, emptyKey: {}}, set, "ours and the empty directory's")

			// Pinning again succeeds and renames the pin.
			size, err = c.Pin(ctx, id, "renamed")
			require.NoError(t, err)
			if withSize {
				assert.EqualValues(t, 1024, size, "re-pinning walks the DAG again")
			}
			assert.Equal(t, "renamed", recursivePins(t, c)[id])

			require.NoError(t, c.Unpin(ctx, id))
			pinned, err = c.IsPinned(ctx, id)
			require.NoError(t, err)
			assert.False(t, pinned)
			set, err = c.ListPinned(ctx)
			require.NoError(t, err)
			assert.Equal(t, map[string]struct{}{emptyKey: {}}, set)

			// Idempotent: unpinning again, or something never seen, is fine.
			require.NoError(t, c.Unpin(ctx, id))
			require.NoError(t, c.Unpin(ctx, absentCID(t)))
		})
	}
}

// TestKuboNotPinnedError pins down the error Kubo gives for pin/rm of a CID that is not pinned, which Unpin
// relies on.
func TestKuboNotPinnedError(t *testing.T) {
	_, c := daemon(t)
	id, err := cid.Decode(absentCID(t))
	require.NoError(t, err)
	err = c.api.Pin().Rm(ctxT(t, 10*time.Second), path.FromCid(id), caopts.Pin.RmRecursive(true))
	var re *rpc.Error
	require.ErrorAs(t, err, &re)
	assert.Equal(t, NotPinnedMessage, re.Message)
	assert.True(t, IsNotPinned(err))
	assert.True(t, IsNotPinned(fmt.Errorf("wrapped: %w", err)))
	assert.False(t, IsUnavailable(err))
	assert.False(t, IsTimeout(err))
}

// TestPinSpellings: Kubo keys pins by the CID's bytes, so a CIDv0 and a CIDv1 of one DAG are different pins
// to it; the Client treats them as one.
func TestPinSpellings(t *testing.T) {
	_, c := daemon(t)
	ctx := ctxT(t, time.Minute)
	data := randomBytes(300_000)
	v0 := addFile(t, c, data) // default import: CIDv0, 256 KiB chunks, two leaves
	require.EqualValues(t, 0, v0.Version())
	v1 := cid.NewCidV1(cid.DagProtobuf, v0.Hash())

	// Kubo itself: a pin under v0 is invisible under v1.
	require.NoError(t, c.api.Pin().Add(ctx, path.FromCid(v0), caopts.Pin.Recursive(true)))
	assert.Equal(t, "recursive", pinType(t, c, v0))
	assert.Equal(t, "", pinType(t, c, v1), "Kubo does not see a CIDv0 pin under the CIDv1")
	for _, s := range []string{v0.String(), v1.String()} {
		pinned, err := c.IsPinned(ctx, s)
		require.NoError(t, err)
		assert.True(t, pinned, "IsPinned(%s) of a pin made under v0", s)
	}

	// Pin pins the v1 spelling, whatever it is given; the DAG size matches UnixFS's cumulative size.
	size, err := c.Pin(ctx, v0.String(), "")
	require.NoError(t, err)
	var st struct{ CumulativeSize uint64 }
	require.NoError(t, c.api.Request("files/stat", "/ipfs/"+v0.String()).Exec(ctx, &st))
	assert.Equal(t, st.CumulativeSize, size)
	assert.Greater(t, size, uint64(len(data)))
	pins := recursivePins(t, c)
	assert.Contains(t, pins, v0.String())
	assert.Contains(t, pins, v1.String())

	// ListPinned merges both spellings into one key.
	set, err := c.ListPinned(ctx)
	require.NoError(t, err)
	k0, err := Key(v0.String())
	require.NoError(t, err)
	k1, err := Key(v1.String())
	require.NoError(t, err)
	assert.Equal(t, k0, k1)
	emptyKey, err := Key(emptyDir)
	require.NoError(t, err)
	assert.Equal(t, map[string]struct{}{k0: {}, emptyKey: {}}, set)

	// Unpin removes both.
	require.NoError(t, c.Unpin(ctx, v1.String()))
	assert.Empty(t, recursivePins(t, c))
	pinned, err := c.IsPinned(ctx, v0.String())
	require.NoError(t, err)
	assert.False(t, pinned)
}

func TestPinAbsentTimesOut(t *testing.T) {
	for _, withSize := range []bool{true, false} {
		t.Run(fmt.Sprintf("dagSize=%v", withSize), func(t *testing.T) {
			_, c := daemon(t, WithDagSize(withSize))
			id := absentCID(t)
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			start := time.Now()
			_, err := c.Pin(ctx, id, "absent")
			took := time.Since(start)
			require.Error(t, err)
			assert.True(t, IsTimeout(err), "%v", err)
			assert.False(t, IsUnavailable(err), "%v", err)
			assert.Less(t, took, 3*time.Second)
			assert.GreaterOrEqual(t, took, 2*time.Second)

			// The daemon dropped the pin and is fine.
			ctx = ctxT(t, 10*time.Second)
			pinned, err := c.IsPinned(ctx, id)
			require.NoError(t, err)
			assert.False(t, pinned)
			local := putRaw(t, c, randomBytes(1024))
			_, err = c.Pin(ctx, local, "")
			require.NoError(t, err)
		})
	}
}

// twoFiles imports two UnixFS files (raw leaves, 1 KiB chunks) that share their first leaf.
func twoFiles(t *testing.T, c *Client) (a, b, shared, onlyA, onlyB cid.Cid) {
	x, y, z := randomBytes(1024), randomBytes(1024), randomBytes(1024)
	opts := []caopts.UnixfsAddOption{caopts.Unixfs.CidVersion(1), caopts.Unixfs.RawLeaves(true), caopts.Unixfs.Chunker("size-1024")}
	a = addFile(t, c, append(append([]byte{}, x...), y...), opts...)
	b = addFile(t, c, append(append([]byte{}, x...), z...), opts...)
	leaf := func(data []byte) cid.Cid {
		h, err := multihash.Sum(data, multihash.SHA2_256, -1)
		require.NoError(t, err)
		return cid.NewCidV1(cid.Raw, h)
	}
	return a, b, leaf(x), leaf(y), leaf(z)
}

func TestUpdate(t *testing.T) {
	_, c := daemon(t)
	ctx := ctxT(t, time.Minute)
	a, b, shared, onlyA, onlyB := twoFiles(t, c)
	_, err := c.Pin(ctx, a.String(), "moving")
	require.NoError(t, err)
	assert.Equal(t, "indirect through "+a.String(), pinType(t, c, shared))

	require.NoError(t, c.Update(ctx, a.String(), b.String()))
	assert.Equal(t, "", pinType(t, c, a), "from is no longer pinned")
	assert.Equal(t, "recursive", pinType(t, c, b))
	assert.Equal(t, "indirect through "+b.String(), pinType(t, c, shared), "the shared block stays pinned")
	assert.Equal(t, "indirect through "+b.String(), pinType(t, c, onlyB))
	assert.Equal(t, "", pinType(t, c, onlyA))
	assert.Equal(t, map[string]string{b.String(): "moving"}, recursivePins(t, c), "pin/update keeps the name")

	// Retrying a finished update is a no-op.
	require.NoError(t, c.Update(ctx, a.String(), b.String()))
	assert.Equal(t, map[string]string{b.String(): "moving"}, recursivePins(t, c))

	// to already pinned: from is just unpinned.
	_, err = c.Pin(ctx, a.String(), "")
	require.NoError(t, err)
	require.NoError(t, c.Update(ctx, a.String(), b.String()))
	assert.Equal(t, map[string]string{b.String(): "moving"}, recursivePins(t, c))

	// from not pinned at all: to gets pinned.
	require.NoError(t, c.Unpin(ctx, b.String()))
	require.NoError(t, c.Update(ctx, a.String(), b.String()))
	assert.Equal(t, "recursive", pinType(t, c, b))
	assert.Equal(t, "", pinType(t, c, a))

	// from pinned under its CIDv0 spelling (by someone else).
	v0 := addFile(t, c, randomBytes(2048))
	require.EqualValues(t, 0, v0.Version())
	require.NoError(t, c.api.Pin().Add(ctx, path.FromCid(v0), caopts.Pin.Recursive(true)))
	require.NoError(t, c.Update(ctx, v0.String(), a.String()))
	assert.Equal(t, "", pinType(t, c, v0))
	assert.Equal(t, "recursive", pinType(t, c, a))
}

// TestConnectAndFetch: B connects to A and pins content only A has, over bitswap.
func TestConnectAndFetch(t *testing.T) {
	a, ca := daemon(t)
	_, cb := daemon(t)
	ctx := ctxT(t, time.Minute)
	data := randomBytes(300_000)
	id := addFile(t, ca, data, caopts.Unixfs.CidVersion(1))

	// Without a connection B cannot find it (no routing).
	short, cancel := context.WithTimeout(ctx, time.Second)
	_, err := cb.Pin(short, id.String(), "")
	cancel()
	require.True(t, IsTimeout(err), "%v", err)

	assert.Zero(t, cb.Connect(ctx, nil))
	require.NotEmpty(t, a.SwarmAddrs())
	noPeer := strings.Split(a.SwarmAddrs()[0], "/p2p/")[0] // no /p2p/: skipped
	// A peer that is not there: its own peer id on a closed port.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	deadPort := l.Addr().(*net.TCPAddr).Port
	require.NoError(t, l.Close())
	h, err := multihash.Sum(randomBytes(32), multihash.SHA2_256, -1)
	require.NoError(t, err)
	dead := fmt.Sprintf("/ip4/127.0.0.1/tcp/%d/p2p/%s", deadPort, h.B58String()) // a valid (RSA-style) peer id
	start := time.Now()
	n := cb.Connect(ctx, append(a.SwarmAddrs(), noPeer, "not a multiaddr", dead))
	assert.Equal(t, len(a.SwarmAddrs()), n)
	assert.Less(t, time.Since(start), ConnectTimeout+time.Second)
	// Kubo reports success for a peer it is already connected to, whatever the address.
	assert.Equal(t, 1, cb.Connect(ctx, []string{fmt.Sprintf("/ip4/127.0.0.1/tcp/%d/p2p/%s", deadPort, a.PeerID())}))

	pinCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	size, err := cb.Pin(pinCtx, id.String(), "from-a")
	require.NoError(t, err)
	var st struct{ CumulativeSize uint64 }
	require.NoError(t, ca.api.Request("files/stat", "/ipfs/"+id.String()).Exec(ctx, &st))
	assert.Equal(t, st.CumulativeSize, size)
	pinned, err := cb.IsPinned(ctx, id.String())
	require.NoError(t, err)
	assert.True(t, pinned)
	pinned, err = ca.IsPinned(ctx, id.String())
	require.NoError(t, err)
	assert.False(t, pinned, "A only had it")
}

func TestRepoStat(t *testing.T) {
	_, c := daemon(t)
	ctx := ctxT(t, time.Minute)
	used, max, err := c.RepoStat(ctx)
	require.NoError(t, err)
	assert.Positive(t, used)
	assert.EqualValues(t, 10_000_000_000, max, "Kubo's default Datastore.StorageMax (10GB)")
	for range 64 {
		putRaw(t, c, randomBytes(16<<10))
	}
	used2, max2, err := c.RepoStat(ctx)
	require.NoError(t, err)
	assert.Equal(t, max, max2)
	assert.GreaterOrEqual(t, used2, used+64*16<<10)
	assert.Less(t, used2, used+4*64*16<<10)
}

func TestStoppedDaemonIsUnavailable(t *testing.T) {
	d, c := daemon(t)
	id := putRaw(t, c, randomBytes(1024))
	require.NoError(t, d.Stop(ctxT(t, 30*time.Second)))

	ctx := ctxT(t, 10*time.Second)
	_, err := c.Pin(ctx, id, "")
	checkUnavailable(t, err)
	_, err = c.IsPinned(ctx, id)
	checkUnavailable(t, err)
	checkUnavailable(t, c.Unpin(ctx, id))
	checkUnavailable(t, c.Update(ctx, id, id))
	_, err = c.ListPinned(ctx)
	checkUnavailable(t, err)
	_, _, err = c.RepoStat(ctx)
	checkUnavailable(t, err)
	_, err = c.ID(ctx)
	checkUnavailable(t, err)
	assert.Zero(t, c.Connect(ctx, d.SwarmAddrs()))
}

func checkUnavailable(t *testing.T, err error) {
	t.Helper()
	require.Error(t, err)
	assert.True(t, IsUnavailable(err), "IsUnavailable(%v)", err)
	assert.False(t, IsTimeout(err), "IsTimeout(%v)", err)
}

// TestDaemonStopsMidPin: a pin in flight when the daemon goes away is unavailable, not failed, whether the
// daemon shuts down (SIGTERM) or dies (SIGKILL), and whether the pin/add answer had started streaming
// (progress reports begin after 500 ms) or not.
func TestDaemonStopsMidPin(t *testing.T) {
	for _, kill := range []bool{false, true} {
		for _, withSize := range []bool{true, false} {
			for _, after := range []time.Duration{200 * time.Millisecond, 1200 * time.Millisecond} {
				if !withSize && after > time.Second {
					continue // nothing streams without progress reports
				}
				t.Run(fmt.Sprintf("kill=%v/dagSize=%v/after=%v", kill, withSize, after), func(t *testing.T) {
					t.Parallel()
					d, err := kubod.Start(ctxT(t, 2*kubod.DefaultStartTimeout), kubod.Options{
						Binary: kubotest.Binary(t), RepoDir: t.TempDir(),
						Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
					})
					require.NoError(t, err)
					t.Cleanup(func() { _ = d.Stop(context.Background()) }) // reports the kill
					c := client(t, d, WithDagSize(withSize))
					go func() {
						time.Sleep(after)
						if kill {
							_ = syscall.Kill(d.PID(), syscall.SIGKILL)
						} else {
							_ = d.Stop(context.Background())
						}
					}()
					_, err = c.Pin(ctxT(t, 30*time.Second), absentCID(t), "")
					checkUnavailable(t, err)
				})
			}
		}
	}
}

func TestInvalidCID(t *testing.T) {
	c, err := New("http://127.0.0.1:1", 1)
	require.NoError(t, err)
	ctx := context.Background()
	_, err = c.Pin(ctx, "not-a-cid", "")
	require.Error(t, err)
	assert.False(t, IsUnavailable(err) || IsTimeout(err))
	_, err = c.IsPinned(ctx, "")
	require.Error(t, err)
	require.Error(t, c.Unpin(ctx, "Qm"))
	require.Error(t, c.Update(ctx, "x", "y"))
	_, err = Key("nope")
	require.Error(t, err)
}

func TestErrorClassification(t *testing.T) {
	refused := &url.Error{Op: "Post", URL: "http://127.0.0.1:1/api/v0/id", Err: &net.OpError{
		Op: "dial", Net: "tcp", Err: &os.SyscallError{Syscall: "connect", Err: syscall.ECONNREFUSED}}}
	deadline := &url.Error{Op: "Post", URL: "http://127.0.0.1:1/api/v0/pin/add", Err: context.DeadlineExceeded}
	for _, tc := range []struct {
		name                 string
		err                  error
		timeout, unavailable bool
	}{
		{"nil", nil, false, false},
		{"plain", errors.New("boom"), false, false},
		{"daemon error", &rpc.Error{Message: "invalid path \"x\""}, false, false},
		{"not pinned", &rpc.Error{Message: NotPinnedMessage}, false, false},
		{"ctx deadline", fmt.Errorf("kubo: pin: %w", deadline), true, false},
		{"bare deadline", context.DeadlineExceeded, true, false},
		{"daemon-side deadline", &rpc.Error{Message: "context deadline exceeded"}, true, false},
		{"caller cancelled", &url.Error{Op: "Post", URL: "u", Err: context.Canceled}, false, false},
		{"dial refused", fmt.Errorf("kubo: %w", refused), false, true},
		{"dial refused errno", syscall.ECONNREFUSED, false, true},
		{"reset", &url.Error{Op: "Post", URL: "u", Err: &net.OpError{Op: "read", Net: "tcp", Err: &os.SyscallError{Syscall: "read", Err: syscall.ECONNRESET}}}, false, true},
		{"EOF before answer", &url.Error{Op: "Post", URL: "u", Err: io.EOF}, false, true},
		{"cut stream", fmt.Errorf("kubo: %w", io.ErrUnexpectedEOF), false, true},
		{"bare EOF", io.EOF, false, false},
		{"shutdown: bitswap", &rpc.Error{Message: "promise channel was closed"}, false, true},
		{"shutdown: pinner", fmt.Errorf("x: %w", &rpc.Error{Message: "pinner closed"}), false, true},
		{"shutdown text, no daemon error", errors.New("pinner closed"), false, false},
		{"dns", &url.Error{Op: "Post", URL: "u", Err: &net.OpError{Op: "dial", Err: &net.DNSError{Err: "no such host", Name: "kubo"}}}, false, true},
		{"dial timeout", &url.Error{Op: "Post", URL: "u", Err: &net.OpError{Op: "dial", Err: timeoutErr{}}}, true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			assert.Equal(t, tc.timeout, IsTimeout(tc.err), "IsTimeout")
			assert.Equal(t, tc.unavailable, IsUnavailable(tc.err), "IsUnavailable")
		})
	}
}

type timeoutErr struct{}

func (timeoutErr) Error() string   { return "i/o timeout" }
func (timeoutErr) Timeout() bool   { return true }
func (timeoutErr) Temporary() bool { return true }

func TestTruncateName(t *testing.T) {
	assert.Equal(t, "abc", truncateName("abc"))
	long := strings.Repeat("a", 300)
	assert.Len(t, truncateName(long), MaxPinNameBytes)
	// 254 ASCII bytes then a 3-byte rune: cut before the rune.
	s := strings.Repeat("a", 254) + "€€"
	assert.Equal(t, strings.Repeat("a", 254), truncateName(s))
	s = strings.Repeat("é", 200) // 400 bytes
	got := truncateName(s)
	assert.LessOrEqual(t, len(got), MaxPinNameBytes)
	assert.Equal(t, strings.Repeat("é", 127), got)
}

// TestPinLongName: Kubo rejects names over 255 bytes; Pin truncates them.
func TestPinLongName(t *testing.T) {
	_, c := daemon(t)
	ctx := ctxT(t, 10*time.Second)
	id := putRaw(t, c, randomBytes(1024))
	name := strings.Repeat("ü", 255) // 255 characters, 510 bytes
	_, err := c.Pin(ctx, id, name)
	require.NoError(t, err)
	assert.Equal(t, strings.Repeat("ü", 127), recursivePins(t, c)[id])
}
