package domain_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/ipfs/go-cid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/anchorage-pin/anchorage/domain"
)

const (
	cidV1Base58 = "zdj7Wic6KcJAfWz1c9o4M6kq9Lwd5BfbxkVafnrojaaGiSFxM" // cidV1 in base58btc
	cidV1Upper  = "BAFYBEIGDYRZT5SFP7UDM7HU76UH7Y26NF3EFUYLQABF3OCLGTQY55FBZDI"
	otherCID    = "bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5e" // "hello world", raw
)

func TestParseCID(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		in      string
		version uint64
		err     wantErr
	}{
		{name: "v0", in: cidV0, version: 0},
		{name: "v1 base32", in: cidV1, version: 1},
		{name: "v1 base32 upper", in: cidV1Upper, version: 1},
		{name: "v1 base58btc", in: cidV1Base58, version: 1},
		{name: "v1 raw codec", in: otherCID, version: 1},
		{name: "empty", in: "", err: errOf(domain.ErrInvalid, "cid is required")},
		{name: "junk", in: "hello", err: errOf(domain.ErrInvalid, `"hello"`, "not a valid CID")},
		{name: "placeholder from the spec", in: "QmCIDToBePinned", err: errOf(domain.ErrInvalid, "not a valid CID")},
		{name: "truncated v0", in: cidV0[:len(cidV0)-1], err: errOf(domain.ErrInvalid)},
		{name: "truncated v1", in: cidV1[:len(cidV1)-1], err: errOf(domain.ErrInvalid)},
		{name: "leading space", in: " " + cidV1, err: errOf(domain.ErrInvalid)},
		{name: "trailing newline", in: cidV0 + "\n", err: errOf(domain.ErrInvalid)},
		{name: "path", in: "/ipfs/" + cidV1, err: errOf(domain.ErrInvalid)},
		{name: "512 bytes of junk is a parse error", in: strings.Repeat("b", 512), err: errOf(domain.ErrInvalid, "not a valid CID")},
		{name: "513 bytes", in: strings.Repeat("b", 513), err: errOf(domain.ErrInvalid, "513", "512")},
		{name: "long message is clipped", in: "x" + strings.Repeat("y", 200), err: errOf(domain.ErrInvalid, "…")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			pc, err := domain.ParseCID(tc.in)
			checkErr(t, err, tc.err)
			if err != nil {
				assert.NotContains(t, err.Error(), strings.Repeat("y", 60), "the input is clipped in the message")
				return
			}
			assert.Equal(t, tc.version, pc.CID.Version())
			assert.Equal(t, []byte(pc.CID.Hash()), pc.Key)
		})
	}
}

func TestParseCIDKeySharedAcrossSpellings(t *testing.T) {
	t.Parallel()
	keys := map[string][]byte{}
	for _, s := range []string{cidV0, cidV1, cidV1Upper, cidV1Base58} {
		pc, err := domain.ParseCID(s)
		require.NoError(t, err, s)
		keys[s] = pc.Key
	}
	for s, k := range keys {
		assert.Equal(t, keys[cidV0], k, "%s and %s name the same content", s, cidV0)
	}
	// The constants really are the same content.
	v0, err := cid.Decode(cidV0)
	require.NoError(t, err)
	assert.Equal(t, cidV1, cid.NewCidV1(cid.DagProtobuf, v0.Hash()).String())

	other, err := domain.ParseCID(otherCID)
	require.NoError(t, err)
	assert.NotEqual(t, keys[cidV0], other.Key)
}

// meta builds a map of n entries with keys "k000".. and values of vlen bytes.
func meta(n, vlen int) map[string]string {
	m := map[string]string{}
	for i := range n {
		m[fmt.Sprintf("k%03d", i)] = strings.Repeat("v", vlen)
	}
	return m
}

func TestValidateName(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		in   string
		err  wantErr
	}{
		{name: "empty", in: ""},
		{name: "ascii", in: "PreciousData.pdf"},
		{name: "unicode", in: "Präsentation 2026 — 最終版.pdf"},
		{name: "255 bytes", in: strings.Repeat("n", 255)},
		{name: "255 bytes of multibyte runes", in: strings.Repeat("é", 127) + "n"},
		{name: "256 bytes", in: strings.Repeat("n", 256), err: errOf(domain.ErrInvalid, "256", "255")},
		{name: "256 bytes though 128 runes", in: strings.Repeat("é", 128), err: errOf(domain.ErrInvalid, "255")},
		{name: "NUL", in: "a\x00b", err: errOf(domain.ErrInvalid, "name", "NUL")},
		{name: "invalid UTF-8", in: "a\xff", err: errOf(domain.ErrInvalid, "name", "UTF-8")},
		{name: "truncated rune", in: "caf\xc3", err: errOf(domain.ErrInvalid, "UTF-8")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			checkErr(t, domain.ValidateName(tc.in), tc.err)
		})
	}
}

func TestValidateMeta(t *testing.T) {
	t.Parallel()
	// whole builds 16 entries whose compact JSON is 16383+extra bytes: 15 entries "k000":"v…" of 4+1024+5 bytes,
	// one "k999" of 4+862+extra+5, 15 commas and 2 braces.
	whole := func(extra int) map[string]string {
		m := meta(15, 1024)
		m["k999"] = strings.Repeat("v", 862+extra)
		b, err := json.Marshal(m)
		require.NoError(t, err)
		require.Len(t, b, 16383+extra)
		return m
	}
	for _, tc := range []struct {
		name string
		in   map[string]string
		err  wantErr
	}{
		{name: "nil", in: nil},
		{name: "empty", in: map[string]string{}},
		{name: "one entry", in: map[string]string{"app_id": "99986338-1113-4706-8302-4420da6158aa"}},
		{name: "empty value", in: map[string]string{"k": ""}},
		{name: "64 keys", in: meta(64, 1)},
		{name: "65 keys", in: meta(65, 1), err: errOf(domain.ErrInvalid, "65", "64 keys")},
		{name: "key of 128 bytes", in: map[string]string{strings.Repeat("k", 128): "v"}},
		{name: "key of 129 bytes", in: map[string]string{strings.Repeat("k", 129): "v"}, err: errOf(domain.ErrInvalid, "129", "128 bytes per key")},
		{name: "value of 1024 bytes", in: map[string]string{"k": strings.Repeat("v", 1024)}},
		{name: "value of 1025 bytes", in: map[string]string{"k": strings.Repeat("v", 1025)}, err: errOf(domain.ErrInvalid, "1025", "1024 bytes per value")},
		{name: "every limit at once", in: func() map[string]string {
			m := meta(63, 1)
			m[strings.Repeat("k", 128)] = strings.Repeat("v", 1024)
			return m
		}()},
		{name: "whole object just under 16 KiB", in: whole(0)},
		{name: "whole object just over 16 KiB", in: whole(2), err: errOf(domain.ErrInvalid, "16384")},
		{name: "whole object far over 16 KiB", in: meta(20, 1000), err: errOf(domain.ErrInvalid, "16384 bytes for the whole object")},
		{name: "empty key", in: map[string]string{"": "v"}, err: errOf(domain.ErrInvalid, "empty key", "128")},
		{name: "NUL in key", in: map[string]string{"a\x00": "v"}, err: errOf(domain.ErrInvalid, "meta key", "NUL")},
		{name: "NUL in value", in: map[string]string{"app": "v\x00"}, err: errOf(domain.ErrInvalid, "meta value of key \"app\"", "NUL")},
		{name: "invalid UTF-8 key", in: map[string]string{"\xff": "v"}, err: errOf(domain.ErrInvalid, "meta key", "UTF-8")},
		{name: "invalid UTF-8 value", in: map[string]string{"app": "\xfe"}, err: errOf(domain.ErrInvalid, "meta value", "UTF-8")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			checkErr(t, domain.ValidateMeta(tc.in), tc.err)
		})
	}
}

func TestValidatePinSpec(t *testing.T) {
	t.Parallel()
	origins := []string{"junk", "/ip4/203.0.113.7/tcp/4001/p2p/" + peerA, "/ip4/203.0.113.7/tcp/4001/p2p/" + peerA}
	for _, tc := range []struct {
		name string
		in   domain.PinSpec
		want domain.PinSpec
		err  wantErr
	}{
		{name: "cid only", in: domain.PinSpec{CID: cidV0}, want: domain.PinSpec{CID: cidV0}},
		{name: "everything", in: domain.PinSpec{CID: cidV1, Name: "n", Origins: origins, Meta: map[string]string{"a": "b"}},
			want: domain.PinSpec{CID: cidV1, Name: "n", Origins: origins[1:2], Meta: map[string]string{"a": "b"}}},
		{name: "cid kept verbatim", in: domain.PinSpec{CID: cidV1Upper}, want: domain.PinSpec{CID: cidV1Upper}},
		{name: "empty meta dropped", in: domain.PinSpec{CID: cidV1, Meta: map[string]string{}}, want: domain.PinSpec{CID: cidV1}},
		{name: "only junk origins", in: domain.PinSpec{CID: cidV1, Origins: []string{"junk", ""}}, want: domain.PinSpec{CID: cidV1}},
		{name: "no cid", in: domain.PinSpec{Name: "n"}, err: errOf(domain.ErrInvalid, "cid is required")},
		{name: "bad cid", in: domain.PinSpec{CID: "QmCIDToBePinned"}, err: errOf(domain.ErrInvalid, "cid")},
		{name: "bad name", in: domain.PinSpec{CID: cidV1, Name: strings.Repeat("n", 256)}, err: errOf(domain.ErrInvalid, "255")},
		{name: "bad meta", in: domain.PinSpec{CID: cidV1, Meta: meta(65, 1)}, err: errOf(domain.ErrInvalid, "64")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, pc, err := domain.ValidatePinSpec(tc.in)
			checkErr(t, err, tc.err)
			assert.Equal(t, tc.want, got)
			if err == nil {
				assert.True(t, pc.CID.Defined())
				assert.NotEmpty(t, pc.Key)
			}
		})
	}
}

func TestCleanOrigins(t *testing.T) {
	t.Parallel()
	const (
		tcp      = "/ip4/203.0.113.7/tcp/4001/p2p/" + peerA
		quic     = "/ip4/203.0.113.7/udp/4001/quic-v1/p2p/" + peerA
		quic6    = "/ip6/2001:db8::7/udp/4001/quic-v1/p2p/" + peerA
		wt       = "/ip4/203.0.113.7/udp/4001/quic-v1/webtransport/certhash/uEiBbd0LvlXQhA7aK_g9CSe94FcjXl52pylC6G4fmbnJbsw/certhash/uEiB-PltkG7lShKsC5rn2lHJ9JzN_G8fYmj2af5eItRZn8w/p2p/" + peerA
		webrtc   = "/ip4/203.0.113.7/udp/4001/webrtc-direct/certhash/uEiBbd0LvlXQhA7aK_g9CSe94FcjXl52pylC6G4fmbnJbsw/p2p/" + peerA
		relay    = "/ip4/198.51.100.9/tcp/4001/p2p/" + peerB + "/p2p-circuit/p2p/" + peerA
		dns      = "/dns4/ipfs.acme.example/tcp/443/tls/sni/ipfs.acme.example/ws/p2p/" + peerA
		peerOnly = "/p2p/" + peerA
		noPeer   = "/ip4/203.0.113.7/tcp/4001"
		legacy   = "/ipfs/" + peerA
	)
	long := func(n int) string { // a /dns4 multiaddr of exactly n bytes
		return "/dns4/" + strings.Repeat("a", n-15) + "/tcp/4001"
	}
	many := func(n int) []string {
		var out []string
		for i := range n {
			out = append(out, fmt.Sprintf("/ip4/198.51.100.%d/tcp/4001/p2p/%s", i+1, peerA))
		}
		return out
	}
	for _, tc := range []struct {
		name string
		in   []string
		want []string
	}{
		{name: "nil", in: nil, want: nil},
		{name: "what Kubo sends", in: []string{tcp, quic, quic6, wt, webrtc, relay, dns},
			want: []string{tcp, quic, quic6, wt, webrtc, relay, dns}},
		{name: "p2p and non-p2p forms", in: []string{peerOnly, noPeer, legacy}, want: []string{peerOnly, noPeer, legacy}},
		{name: "junk skipped", in: []string{"", "not-a-multiaddr", "ip4/1.2.3.4", " /ip4/1.2.3.4/tcp/1", "/ip4/999.1.1.1/tcp/1",
			"/ip4/1.2.3.4/tcp/99999", "/ip4/203.0.113.7/tcp/4001/p2p/notapeer", "/garbage/", "/",
			"/ip4/203.0.113.7/udp/4001/quic-v1/webtransport/certhash/notbase/p2p/" + peerA, tcp}, want: []string{tcp}},
		{name: "only junk", in: []string{"junk", ""}, want: nil},
		{name: "duplicates dropped, first order kept", in: []string{quic, tcp, quic, tcp, quic}, want: []string{quic, tcp}},
		{name: "1024 bytes kept, 1025 skipped", in: []string{long(1025), long(1024)}, want: []string{long(1024)}},
		{name: "exactly 20", in: many(20), want: many(20)},
		{name: "more than 20 truncated to 20", in: many(25), want: many(20)},
		{name: "junk does not count toward 20", in: append([]string{"junk", "", "x"}, many(22)...), want: many(20)},
		{name: "duplicates do not count toward 20", in: append(append(many(5), many(5)...), many(30)...), want: many(20)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			in := append([]string(nil), tc.in...)
			got := domain.CleanOrigins(tc.in)
			assert.Equal(t, tc.want, got)
			assert.LessOrEqual(t, len(got), domain.MaxOrigins)
			assert.Equal(t, in, tc.in, "the input is not modified")
		})
	}
}
