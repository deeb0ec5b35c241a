package tokens_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/anchorage-pin/anchorage/adapters/tokens"
	"github.com/anchorage-pin/anchorage/domain"
	"github.com/anchorage-pin/anchorage/events"
	"github.com/anchorage-pin/anchorage/projections"
)

var (
	issued = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	now    = issued.Add(time.Minute)
)

const leeway = 5 * time.Second

// fakeRegistry holds token states by token id.
type fakeRegistry struct {
	mu     sync.Mutex
	states map[string]tokens.State
	err    error
}

func (f *fakeRegistry) Lookup(_ context.Context, _, tokenID string) (tokens.State, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return tokens.State{}, f.err
	}
	return f.states[tokenID], nil
}

type fixture struct {
	ring     *tokens.KeyRing
	k1, k2   []byte // raw key material, as a thief would have it
	k1Path   string
	k2Path   string
	registry *fakeRegistry
	verifier *tokens.Verifier
}

func newFixture(t testing.TB) *fixture {
	t.Helper()
	dir := t.TempDir()
	f := &fixture{k1Path: genKey(t, dir, "k1.key"), k2Path: genKey(t, dir, "k2.key")}
	f.k1, f.k2 = keyBytes(t, f.k1Path), keyBytes(t, f.k2Path)
	ring, err := tokens.LoadKeys([]tokens.KeySpec{{ID: "k1", Path: f.k1Path, Primary: true}, {ID: "k2", Path: f.k2Path}})
	require.NoError(t, err)
	f.ring = ring
	exp := issued.Add(time.Hour)
	f.registry = &fakeRegistry{states: map[string]tokens.State{
		"tok1":        {Known: true, OrgID: "acme", ExpiresAt: exp},
		"tok-k2":      {Known: true, OrgID: "acme", ExpiresAt: exp},
		"tok-revoked": {Known: true, Revoked: true, OrgID: "acme", ExpiresAt: exp},
		"tok-short":   {Known: true, OrgID: "acme", ExpiresAt: now.Add(-time.Minute)},
	}}
	f.verifier = &tokens.Verifier{Keys: ring, Registry: f.registry, Now: func() time.Time { return now }, Leeway: leeway}
	return f
}

func minted(tokenID, kid string) events.TokenMinted {
	return events.TokenMinted{
		OrgID: "acme", TokenID: tokenID, Subject: "laptop", Scopes: []string{"pins:read", "pins:write"},
		KeyID: kid, IssuedAt: issued, ExpiresAt: issued.Add(time.Hour),
	}
}

func (f *fixture) sign(t testing.TB, ev events.TokenMinted) string {
	t.Helper()
	s, err := f.ring.Sign(ev)
	require.NoError(t, err)
	return s
}

func baseClaims() jwt.MapClaims {
	return jwt.MapClaims{
		"iss": "anchorage", "sub": "laptop", "org": "acme", "scope": "pins:read pins:write", "jti": "tok1",
		"iat": issued.Unix(), "nbf": issued.Unix(), "exp": issued.Add(time.Hour).Unix(),
	}
}

// with returns base claims with changes applied; a nil value deletes the claim.
func with(changes map[string]any) jwt.MapClaims {
	c := baseClaims()
	for k, v := range changes {
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
	}
	return c
}

// craft signs claims with any method and key, setting the given header fields (a nil value deletes one).
func craft(t testing.TB, m jwt.SigningMethod, key any, header map[string]any, c jwt.MapClaims) string {
	t.Helper()
	tok := jwt.NewWithClaims(m, c)
	for k, v := range header {
		if v == nil {
			delete(tok.Header, k)
		} else {
			tok.Header[k] = v
		}
	}
	s, err := tok.SignedString(key)
	require.NoError(t, err)
	return s
}

func hs256(t testing.TB, key []byte, kid string, c jwt.MapClaims) string {
	t.Helper()
	return craft(t, jwt.SigningMethodHS256, key, map[string]any{"kid": kid}, c)
}

// segments and rejoin edit a token while keeping its original signature.
func segment(t testing.TB, tok string, i int) map[string]any {
	t.Helper()
	parts := strings.Split(tok, ".")
	b, err := base64.RawURLEncoding.DecodeString(parts[i])
	require.NoError(t, err)
	var m map[string]any
	require.NoError(t, json.Unmarshal(b, &m))
	return m
}

func replaceSegment(t testing.TB, tok string, i int, m map[string]any) string {
	t.Helper()
	parts := strings.Split(tok, ".")
	b, err := json.Marshal(m)
	require.NoError(t, err)
	parts[i] = base64.RawURLEncoding.EncodeToString(b)
	return strings.Join(parts, ".")
}

func TestSignClaims(t *testing.T) {
	f := newFixture(t)
	ev := minted("tok1", "k2")
	ev.Scopes = []string{"pins:read"}
	raw := f.sign(t, ev)

	h := segment(t, raw, 0)
	assert.Equal(t, map[string]any{"alg": "HS256", "typ": "JWT", "kid": "k2"}, h)
	c := segment(t, raw, 1)
	assert.Equal(t, map[string]any{
		"iss": "anchorage", "sub": "laptop", "org": "acme", "scope": "pins:read", "jti": "tok1",
		"iat": float64(issued.Unix()), "nbf": float64(issued.Unix()), "exp": float64(issued.Add(time.Hour).Unix()),
	}, c)
	// The signature is HS256 over the first two segments with k2.
	_, err := jwt.Parse(raw, func(*jwt.Token) (any, error) { return f.k2, nil },
		jwt.WithValidMethods([]string{"HS256"}), jwt.WithTimeFunc(func() time.Time { return now }))
	require.NoError(t, err)
	_, err = jwt.Parse(raw, func(*jwt.Token) (any, error) { return f.k1, nil }, jwt.WithTimeFunc(func() time.Time { return now }))
	require.ErrorIs(t, err, jwt.ErrTokenSignatureInvalid)

	p, err := f.verifier.Verify(context.Background(), raw)
	require.NoError(t, err)
	assert.Equal(t, tokens.Principal{OrgID: "acme", TokenID: "tok1", Subject: "laptop", Scopes: []string{"pins:read"}, ExpiresAt: issued.Add(time.Hour)}, p)
	assert.True(t, p.Can("pins:read"))
	assert.False(t, p.Can("pins:write"))
	assert.False(t, p.Can(""))
}

func TestSignErrors(t *testing.T) {
	f := newFixture(t)
	tests := []struct {
		name   string
		mutate func(*events.TokenMinted)
		want   string
	}{
		{"unknown kid", func(e *events.TokenMinted) { e.KeyID = "k9" }, `signing key "k9" is not configured`},
		{"empty kid", func(e *events.TokenMinted) { e.KeyID = "" }, "is not configured"},
		{"no token id", func(e *events.TokenMinted) { e.TokenID = "" }, "no id"},
		{"no org", func(e *events.TokenMinted) { e.OrgID = "" }, "no org"},
		{"no subject", func(e *events.TokenMinted) { e.Subject = "" }, "no subject"},
		{"no scopes", func(e *events.TokenMinted) { e.Scopes = nil }, "no scopes"},
		{"unknown scope", func(e *events.TokenMinted) { e.Scopes = []string{"pins:read pins:admin"} }, "unknown scope"},
		{"no expiry", func(e *events.TokenMinted) { e.ExpiresAt = time.Time{} }, "required"},
		{"expires before issued", func(e *events.TokenMinted) { e.ExpiresAt = e.IssuedAt }, "before it is issued"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ev := minted("tok1", "k1")
			tt.mutate(&ev)
			_, err := f.ring.Sign(ev)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tt.want)
		})
	}
}

func TestVerifyForgeryAndExpiry(t *testing.T) {
	f := newFixture(t)
	valid := f.sign(t, minted("tok1", "k1"))
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	require.NoError(t, err)
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	attacker := make32(99)
	k1Text, err := os.ReadFile(f.k1Path)
	require.NoError(t, err)
	b64 := func(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }
	at := func(d time.Duration) int64 { return now.Add(d).Unix() }

	tests := []struct {
		name string
		raw  func() string
		want string // fragment of the message; "" means the token must verify
	}{
		// Sanity: the harness accepts good tokens, so every rejection below is due to its one defect.
		{"valid, primary key", func() string { return valid }, ""},
		{"valid, crafted with golang-jwt", func() string { return hs256(t, f.k1, "k1", baseClaims()) }, ""},
		{"valid, non-primary key k2", func() string { return hs256(t, f.k2, "k2", with(map[string]any{"jti": "tok-k2"})) }, ""},

		// Malformed.
		{"empty", func() string { return "" }, "no API token was presented"},
		{"garbage", func() string { return "not-a-jwt" }, "malformed"},
		{"two segments", func() string { return strings.Join(strings.Split(valid, ".")[:2], ".") }, "malformed"},
		{"four segments", func() string { return valid + ".x" }, "malformed"},
		{"header not json", func() string { return b64("{nope") + "." + strings.SplitN(valid, ".", 2)[1] }, "malformed"},
		{"header not base64url", func() string { return "%%%." + strings.SplitN(valid, ".", 2)[1] }, "malformed"},
		{"signature not base64url", func() string { return valid[:strings.LastIndex(valid, ".")] + ".%%%" }, "malformed"},
		{"exp not a number", func() string { return hs256(t, f.k1, "k1", with(map[string]any{"exp": "tomorrow"})) }, "malformed"},
		{"oversized", func() string { return valid + strings.Repeat("A", 9000) }, "malformed"},
		{"bearer prefix left on", func() string { return "Bearer " + valid }, "malformed"},

		// Algorithms.
		{"alg none", func() string {
			return craft(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, map[string]any{"kid": "k1"}, baseClaims())
		}, `algorithm "none"`},
		{"alg none with the real signature", func() string {
			h := segment(t, valid, 0)
			h["alg"] = "none"
			return replaceSegment(t, valid, 0, h)
		}, `algorithm "none"`},
		{"alg missing", func() string {
			h := segment(t, valid, 0)
			delete(h, "alg")
			return replaceSegment(t, valid, 0, h)
		}, "does not name its signing algorithm"},
		{"alg lowercase hs256", func() string {
			h := segment(t, valid, 0)
			h["alg"] = "hs256"
			return replaceSegment(t, valid, 0, h)
		}, `algorithm "hs256"`},
		{"HS384 with the real key", func() string {
			return craft(t, jwt.SigningMethodHS384, f.k1, map[string]any{"kid": "k1"}, baseClaims())
		}, `algorithm "HS384"`},
		{"HS512 with the real key", func() string {
			return craft(t, jwt.SigningMethodHS512, f.k1, map[string]any{"kid": "k1"}, baseClaims())
		}, `algorithm "HS512"`},
		{"RS256", func() string {
			return craft(t, jwt.SigningMethodRS256, rsaKey, map[string]any{"kid": "k1"}, baseClaims())
		}, `algorithm "RS256"`},
		{"ES256", func() string {
			return craft(t, jwt.SigningMethodES256, ecKey, map[string]any{"kid": "k1"}, baseClaims())
		}, `algorithm "ES256"`},
		{"alg confusion: RS256 header over an HMAC signature by the real key", func() string {
			h := segment(t, valid, 0)
			h["alg"] = "RS256"
			unsigned := replaceSegment(t, valid, 0, h)
			signing := unsigned[:strings.LastIndex(unsigned, ".")]
			sig, err := jwt.SigningMethodHS256.Sign(signing, f.k1)
			require.NoError(t, err)
			return signing + "." + base64.RawURLEncoding.EncodeToString(sig)
		}, `algorithm "RS256"`},
		{"alg confusion: HS256 keyed with the key file's text", func() string { return hs256(t, k1Text, "k1", baseClaims()) }, "signature does not match"},

		// Keys.
		{"kid missing", func() string { return craft(t, jwt.SigningMethodHS256, f.k1, nil, baseClaims()) }, "does not name its signing key"},
		{"kid not a string", func() string { return craft(t, jwt.SigningMethodHS256, f.k1, map[string]any{"kid": 1}, baseClaims()) }, "kid header) is malformed"},
		{"kid unknown", func() string { return hs256(t, f.k1, "k9", baseClaims()) }, `key that is no longer configured (kid "k9")`},
		{"re-signed with another key", func() string { return hs256(t, attacker, "k1", baseClaims()) }, "signature does not match"},
		{"kid swapped to another valid kid", func() string {
			h := segment(t, valid, 0)
			h["kid"] = "k2"
			return replaceSegment(t, valid, 0, h)
		}, "signature does not match"},
		{"signed with k2, labelled k1", func() string { return hs256(t, f.k2, "k1", baseClaims()) }, "signature does not match"},
		{"header tampered (extra field)", func() string {
			h := segment(t, valid, 0)
			h["x"] = "y"
			return replaceSegment(t, valid, 0, h)
		}, "signature does not match"},
		{"crit header", func() string {
			return craft(t, jwt.SigningMethodHS256, f.k1, map[string]any{"kid": "k1", "crit": []string{"exp"}}, baseClaims())
		}, "critical header"},
		{"typ not JWT", func() string {
			return craft(t, jwt.SigningMethodHS256, f.k1, map[string]any{"kid": "k1", "typ": "at+jwt"}, baseClaims())
		}, "typ header"},
		{"signature stripped", func() string { return valid[:strings.LastIndex(valid, ".")+1] }, "signature does not match"},

		// Payload tampered, original signature kept.
		{"payload: scope widened", func() string {
			c := segment(t, f.sign(t, func() events.TokenMinted {
				e := minted("tok1", "k1")
				e.Scopes = []string{"pins:read"}
				return e
			}()), 1)
			c["scope"] = "pins:read pins:write"
			return replaceSegment(t, valid, 1, c)
		}, "signature does not match"},
		{"payload: org changed", func() string {
			c := segment(t, valid, 1)
			c["org"] = "victim"
			return replaceSegment(t, valid, 1, c)
		}, "signature does not match"},
		{"payload: exp extended", func() string {
			c := segment(t, valid, 1)
			c["exp"] = at(1000 * time.Hour)
			return replaceSegment(t, valid, 1, c)
		}, "signature does not match"},

		// Time claims, at the leeway's edges.
		{"exp missing", func() string { return hs256(t, f.k1, "k1", with(map[string]any{"exp": nil})) }, "no expiry (exp claim)"},
		{"exp just past leeway", func() string { return hs256(t, f.k1, "k1", with(map[string]any{"exp": at(-leeway)})) }, "expired at"},
		{"exp long past", func() string { return hs256(t, f.k1, "k1", with(map[string]any{"exp": at(-24 * time.Hour)})) }, "expired at"},
		{"exp within leeway", func() string { return hs256(t, f.k1, "k1", with(map[string]any{"exp": at(-leeway + time.Second)})) }, ""},
		{"nbf beyond leeway", func() string { return hs256(t, f.k1, "k1", with(map[string]any{"nbf": at(leeway + time.Second)})) }, "not valid before"},
		{"nbf at leeway", func() string { return hs256(t, f.k1, "k1", with(map[string]any{"nbf": at(leeway)})) }, ""},
		{"iat beyond leeway", func() string { return hs256(t, f.k1, "k1", with(map[string]any{"iat": at(leeway + time.Second)})) }, "issued in the future"},
		{"iat at leeway", func() string { return hs256(t, f.k1, "k1", with(map[string]any{"iat": at(leeway)})) }, ""},
		{"iat missing", func() string { return hs256(t, f.k1, "k1", with(map[string]any{"iat": nil})) }, "no issue time"},
		{"registry expiry earlier than claim", func() string { return hs256(t, f.k1, "k1", with(map[string]any{"jti": "tok-short"})) }, "expired at"},

		// Other claims.
		{"iss wrong", func() string { return hs256(t, f.k1, "k1", with(map[string]any{"iss": "evil"})) }, `not issued by anchorage (iss claim "evil")`},
		{"iss missing", func() string { return hs256(t, f.k1, "k1", with(map[string]any{"iss": nil})) }, "not issued by anchorage"},
		{"jti missing", func() string { return hs256(t, f.k1, "k1", with(map[string]any{"jti": nil})) }, "no token id (jti claim)"},
		{"jti malformed", func() string { return hs256(t, f.k1, "k1", with(map[string]any{"jti": "tok.1"})) }, "jti claim) is malformed"},
		{"org missing", func() string { return hs256(t, f.k1, "k1", with(map[string]any{"org": nil})) }, "names no org"},
		{"org malformed", func() string { return hs256(t, f.k1, "k1", with(map[string]any{"org": "a.>"})) }, "org claim is malformed"},
		{"sub missing", func() string { return hs256(t, f.k1, "k1", with(map[string]any{"sub": nil})) }, "names no subject"},
		{"scope unknown", func() string { return hs256(t, f.k1, "k1", with(map[string]any{"scope": "pins:read admin"})) }, `unknown scope "admin"`},
		{"scope missing", func() string { return hs256(t, f.k1, "k1", with(map[string]any{"scope": nil})) }, "carries no scopes"},
		{"scope blank", func() string { return hs256(t, f.k1, "k1", with(map[string]any{"scope": "  "})) }, "carries no scopes"},
		{"scope as array", func() string { return hs256(t, f.k1, "k1", with(map[string]any{"scope": []string{"pins:read"}})) }, "malformed"},

		// Registry.
		{"unknown jti (never minted)", func() string { return hs256(t, f.k1, "k1", with(map[string]any{"jti": "tok-never"})) }, "not known to this service"},
		{"revoked", func() string { return hs256(t, f.k1, "k1", with(map[string]any{"jti": "tok-revoked"})) }, "has been revoked"},
		{"org mismatch", func() string { return hs256(t, f.k1, "k1", with(map[string]any{"org": "victim"})) }, "does not belong to the org it claims"},
	}
	secrets := []string{
		base64.RawURLEncoding.EncodeToString(f.k1), base64.RawURLEncoding.EncodeToString(f.k2), string(f.k1), string(f.k2),
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			raw := tt.raw()
			p, err := f.verifier.Verify(context.Background(), raw)
			if tt.want == "" {
				require.NoError(t, err)
				assert.Equal(t, "acme", p.OrgID)
				assert.Equal(t, "laptop", p.Subject)
				return
			}
			require.Error(t, err)
			assert.Equal(t, tokens.Principal{}, p)
			assert.ErrorIs(t, err, domain.ErrUnauthorized)
			var de *domain.Error
			require.ErrorAs(t, err, &de)
			assert.Equal(t, "UNAUTHORIZED", de.Reason)
			assert.Contains(t, err.Error(), tt.want)
			for _, s := range secrets {
				assert.NotContains(t, err.Error(), s)
			}
		})
	}
}

func TestVerifyRegistryFailures(t *testing.T) {
	f := newFixture(t)
	valid := f.sign(t, minted("tok1", "k1"))
	cause := errors.New("nats: connection closed")

	tests := []struct {
		name     string
		err      error
		wantKind error
		want     string
	}{
		{"unavailable registry", cause, domain.ErrUnavailable, "retry shortly"},
		{"deadline", context.DeadlineExceeded, domain.ErrUnavailable, "retry shortly"},
		{"already a domain unavailable", domain.Errorf(domain.ErrUnavailable, "catching up"), domain.ErrUnavailable, "catching up"},
		{"not found means unknown", domain.Errorf(domain.ErrNotFound, "no such token"), domain.ErrUnauthorized, "not known"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f.registry.mu.Lock()
			f.registry.err = tt.err
			f.registry.mu.Unlock()
			_, err := f.verifier.Verify(context.Background(), valid)
			require.Error(t, err)
			assert.ErrorIs(t, err, tt.wantKind)
			if tt.wantKind == domain.ErrUnavailable {
				assert.NotErrorIs(t, err, domain.ErrUnauthorized)
				assert.ErrorIs(t, err, tt.err, "the cause stays available for logs")
				var de *domain.Error
				require.ErrorAs(t, err, &de)
				assert.Equal(t, "SERVICE_UNAVAILABLE", de.Reason)
				assert.NotContains(t, de.Msg, "nats", "the client-facing message does not leak internals")
			}
			assert.Contains(t, err.Error(), tt.want)
		})
	}

	v := &tokens.Verifier{Keys: f.ring, Now: func() time.Time { return now }}
	_, err := v.Verify(context.Background(), valid)
	assert.ErrorIs(t, err, domain.ErrUnavailable, "no registry is not a free pass")
	_, err = (&tokens.Verifier{Registry: f.registry}).Verify(context.Background(), valid)
	assert.ErrorIs(t, err, domain.ErrUnavailable, "no keys")
}

func TestVerifyRotation(t *testing.T) {
	dir := t.TempDir()
	old, next := genKey(t, dir, "old.key"), genKey(t, dir, "new.key")
	reg := &fakeRegistry{states: map[string]tokens.State{
		"t-old": {Known: true, OrgID: "acme", ExpiresAt: issued.Add(time.Hour)},
		"t-new": {Known: true, OrgID: "acme", ExpiresAt: issued.Add(time.Hour)},
	}}
	load := func(specs ...tokens.KeySpec) *tokens.Verifier {
		ring, err := tokens.LoadKeys(specs)
		require.NoError(t, err)
		return &tokens.Verifier{Keys: ring, Registry: reg, Now: func() time.Time { return now }}
	}

	// Before rotation: "old" is primary.
	before := load(tokens.KeySpec{ID: "old", Path: old, Primary: true})
	require.Equal(t, "old", before.Keys.PrimaryID())
	oldTok, err := before.Keys.Sign(minted("t-old", before.Keys.PrimaryID()))
	require.NoError(t, err)

	// During rotation: "new" is primary, "old" still configured.
	during := load(tokens.KeySpec{ID: "old", Path: old}, tokens.KeySpec{ID: "new", Path: next, Primary: true})
	require.Equal(t, "new", during.Keys.PrimaryID())
	newTok, err := during.Keys.Sign(minted("t-new", during.Keys.PrimaryID()))
	require.NoError(t, err)
	_, err = during.Verify(context.Background(), oldTok)
	require.NoError(t, err, "a token of a non-primary key still in the ring verifies")
	_, err = during.Verify(context.Background(), newTok)
	require.NoError(t, err)
	_, err = before.Verify(context.Background(), newTok)
	require.ErrorIs(t, err, domain.ErrUnauthorized, "the old ring does not know the new key")

	// After rotation: "old" removed.
	after := load(tokens.KeySpec{ID: "new", Path: next, Primary: true})
	_, err = after.Verify(context.Background(), oldTok)
	require.ErrorIs(t, err, domain.ErrUnauthorized)
	assert.Contains(t, err.Error(), "signed with a key that is no longer configured")
	_, err = after.Verify(context.Background(), newTok)
	require.NoError(t, err)
}

func TestVerifyDefaults(t *testing.T) {
	f := newFixture(t)
	raw := hs256(t, f.k1, "k1", with(map[string]any{"exp": now.Add(-3 * time.Second).Unix()}))

	v := &tokens.Verifier{Keys: f.ring, Registry: f.registry, Now: func() time.Time { return now }}
	_, err := v.Verify(context.Background(), raw)
	require.NoError(t, err, "Leeway 0 means the 5s default")

	v.Leeway = time.Second
	_, err = v.Verify(context.Background(), raw)
	require.ErrorIs(t, err, domain.ErrUnauthorized)

	// Now nil means the wall clock: a token issued in 2026 for an hour is expired or not yet valid, but
	// never accepted by accident of a zero time.
	v = &tokens.Verifier{Keys: f.ring, Registry: f.registry}
	fresh := events.TokenMinted{OrgID: "acme", TokenID: "tok1", Subject: "laptop", Scopes: []string{"pins:read"}, KeyID: "k1",
		IssuedAt: time.Now().Truncate(time.Second), ExpiresAt: time.Now().Add(time.Hour)}
	f.registry.mu.Lock()
	f.registry.states["tok1"] = tokens.State{Known: true, OrgID: "acme", ExpiresAt: fresh.ExpiresAt}
	f.registry.mu.Unlock()
	_, err = v.Verify(context.Background(), f.sign(t, fresh))
	require.NoError(t, err)
}

// TestVerifyWithTokenRegistry wires the verifier to the real projection: a token verifies once minted and
// stops verifying as soon as its revocation is applied.
func TestVerifyWithTokenRegistry(t *testing.T) {
	f := newFixture(t)
	reg := projections.NewTokenRegistry(func(context.Context) (uint64, error) { return 0, nil })
	// The registry prunes long-expired tokens by the wall clock, so this token is issued now.
	v := &tokens.Verifier{Keys: f.ring, Registry: reg}
	ev := minted("tok1", "k1")
	ev.IssuedAt = time.Now().Truncate(time.Second)
	ev.ExpiresAt = ev.IssuedAt.Add(time.Hour)
	raw := f.sign(t, ev)

	_, err := v.Verify(context.Background(), raw)
	require.ErrorIs(t, err, domain.ErrUnauthorized)

	reg.Apply(events.Record{Seq: 1, Event: ev})
	p, err := v.Verify(context.Background(), raw)
	require.NoError(t, err)
	assert.Equal(t, "tok1", p.TokenID)

	reg.Apply(events.Record{Seq: 2, Event: events.TokenRevoked{OrgID: "acme", TokenID: "tok1"}})
	_, err = v.Verify(context.Background(), raw)
	require.ErrorIs(t, err, domain.ErrUnauthorized)
	assert.Contains(t, err.Error(), "revoked")
}

func BenchmarkVerify(b *testing.B) {
	f := newFixture(b)
	raw := f.sign(b, minted("tok1", "k1"))
	ctx := context.Background()
	if _, err := f.verifier.Verify(ctx, raw); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := f.verifier.Verify(ctx, raw); err != nil {
			b.Fatal(err)
		}
	}
}

func ExamplePrincipal_Can() {
	p := tokens.Principal{Scopes: []string{"pins:read"}}
	fmt.Println(p.Can("pins:read"), p.Can("pins:write"))
	// Output: true false
}

// A token verified (and cached) while valid is rejected as soon as it expires or is revoked.
func TestVerifyCachedTokenExpiresAndRevokes(t *testing.T) {
	f := newFixture(t)
	clock := now
	v := &tokens.Verifier{Keys: f.ring, Registry: f.registry, Now: func() time.Time { return clock }, Leeway: leeway}
	raw := f.sign(t, minted("tok1", "k1"))
	for range 3 {
		_, err := v.Verify(context.Background(), raw)
		require.NoError(t, err)
	}
	clock = issued.Add(time.Hour + leeway)
	_, err := v.Verify(context.Background(), raw)
	require.ErrorIs(t, err, domain.ErrUnauthorized)
	require.Contains(t, err.Error(), "expired")

	clock = now
	_, err = v.Verify(context.Background(), raw)
	require.NoError(t, err)
	f.registry.mu.Lock()
	f.registry.states["tok1"] = tokens.State{Known: true, Revoked: true, OrgID: "acme", ExpiresAt: issued.Add(time.Hour)}
	f.registry.mu.Unlock()
	_, err = v.Verify(context.Background(), raw)
	require.ErrorIs(t, err, domain.ErrUnauthorized)
	require.Contains(t, err.Error(), "revoked")
}
