package tokens

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/anchorage-pin/anchorage/domain"
	"github.com/anchorage-pin/anchorage/events"
	"github.com/anchorage-pin/anchorage/projections"
)

// DefaultLeeway is the clock skew tolerated on exp, nbf and iat when Verifier.Leeway is 0.
const DefaultLeeway = 5 * time.Second

// maxTokenBytes bounds the tokens Verify looks at; anchorage's are a few hundred bytes.
const maxTokenBytes = 8 << 10

// Principal is who a verified token speaks for.
type Principal struct {
	OrgID   string
	TokenID string
	Subject string
	Scopes  []string
	// ExpiresAt is when the token stops being accepted.
	ExpiresAt time.Time
}

// Can reports whether the token carries scope.
func (p Principal) Can(scope string) bool { return slices.Contains(p.Scopes, scope) }

// State is the verifier's view of one minted token (see projections.TokenState).
type State = projections.TokenState

// Registry tells the verifier which tokens were minted and which were revoked; projections.TokenRegistry,
// kept current from TokenMinted and TokenRevoked events, implements it.
//
// Lookup reports an unknown token as State{Known: false} (or an error wrapping domain.ErrNotFound) and a
// revoked one as State{Known: true, Revoked: true}. Any other error means the registry cannot answer; the
// verifier reports it as domain.ErrUnavailable, not as a rejected token.
type Registry interface {
	Lookup(ctx context.Context, orgID, tokenID string) (State, error)
}

var _ Registry = (*projections.TokenRegistry)(nil)

// Verifier checks API tokens presented by clients.
type Verifier struct {
	Keys     *KeyRing
	Registry Registry
	// Now defaults to time.Now.
	Now func() time.Time
	// Leeway is the clock skew tolerated on exp, nbf and iat; 0 means DefaultLeeway.
	Leeway time.Duration

	// cache holds the checked claims of tokens seen recently: what a token string says never changes, so its
	// signature and claims are verified once. Its registry state (revoked?) and expiry are checked every time.
	mu    sync.Mutex
	cache map[string]checked
}

type checked struct {
	org, id, subject string
	scopes           []string
	exp              time.Time
}

// maxCached bounds the claim cache (a full cache is simply dropped: verification is only a few µs).
const maxCached = 8192

// validMethods is the only algorithm accepted. Anything else (none, HS384, HS512, RS256, ES256, ...) is refused
// before any key is looked at.
var validMethods = []string{jwt.SigningMethodHS256.Alg()}

// Verify checks a raw token (without the "Bearer " prefix) and returns its principal. A token that is not
// acceptable fails with an error wrapping domain.ErrUnauthorized whose message says what is wrong; a registry
// that cannot answer fails with one wrapping domain.ErrUnavailable.
func (v *Verifier) Verify(ctx context.Context, raw string) (Principal, error) {
	if v == nil || v.Keys == nil {
		return Principal{}, domain.Errorf(domain.ErrUnavailable, "API token verification is not configured (%s)", configPath)
	}
	if raw == "" {
		return Principal{}, unauthorized("no API token was presented; send one as `Authorization: Bearer <token>`")
	}
	if len(raw) > maxTokenBytes {
		return Principal{}, unauthorized("the API token is malformed: it is %d bytes long, far more than an anchorage token", len(raw))
	}
	leeway := v.Leeway
	if leeway == 0 {
		leeway = DefaultLeeway
	}
	leeway = max(leeway, 0)
	now := time.Now()
	if v.Now != nil {
		now = v.Now()
	}

	v.mu.Lock()
	cc, hit := v.cache[raw]
	v.mu.Unlock()
	if !hit {
		var err error
		if cc, err = v.check(raw, now, leeway); err != nil {
			return Principal{}, err
		}
		v.mu.Lock()
		if v.cache == nil || len(v.cache) >= maxCached {
			v.cache = make(map[string]checked, 64)
		}
		v.cache[raw] = cc
		v.mu.Unlock()
	}
	return v.current(ctx, cc, now, leeway)
}

// check verifies a token's signature and claims, which depend only on the token string and the key ring.
func (v *Verifier) check(raw string, now time.Time, leeway time.Duration) (checked, error) {
	var c claims
	parser := jwt.NewParser(
		jwt.WithValidMethods(validMethods),
		jwt.WithLeeway(leeway),
		jwt.WithTimeFunc(func() time.Time { return now }),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithIssuer(Issuer),
	)
	tok, err := parser.ParseWithClaims(raw, &c, v.keyFor)
	if err != nil {
		return checked{}, explain(tok, &c, err)
	}

	switch {
	case c.IssuedAt == nil:
		return checked{}, unauthorized("the API token has no issue time (iat claim), so it was not issued by anchorage")
	case c.ID == "":
		return checked{}, unauthorized("the API token has no token id (jti claim), so it was not issued by anchorage")
	case events.ValidToken(c.ID) != nil:
		return checked{}, unauthorized("the API token's id (jti claim) is malformed")
	case c.Org == "":
		return checked{}, unauthorized("the API token names no org (org claim), so it was not issued by anchorage")
	case events.ValidToken(c.Org) != nil:
		return checked{}, unauthorized("the API token's org claim is malformed")
	case c.Subject == "":
		return checked{}, unauthorized("the API token names no subject (sub claim), so it was not issued by anchorage")
	}
	scopes := strings.Fields(c.Scope)
	if len(scopes) == 0 {
		return checked{}, unauthorized("the API token carries no scopes (scope claim); mint one with the scopes it needs")
	}
	slices.Sort(scopes)
	scopes = slices.Compact(scopes)
	for _, s := range scopes {
		if !slices.Contains(domain.KnownScopes, s) {
			return checked{}, unauthorized("the API token carries unknown scope %q; known scopes are %v", clip(s), domain.KnownScopes)
		}
	}
	return checked{org: c.Org, id: c.ID, subject: c.Subject, scopes: scopes, exp: c.ExpiresAt.Time}, nil
}

// current checks what can change after a token was issued: whether the registry knows it and has not revoked it,
// and its expiry.
func (v *Verifier) current(ctx context.Context, c checked, now time.Time, leeway time.Duration) (Principal, error) {
	if v.Registry == nil {
		return Principal{}, domain.Errorf(domain.ErrUnavailable, "API token verification has no token registry; retry shortly")
	}
	st, err := v.Registry.Lookup(ctx, c.org, c.id)
	switch {
	case err == nil:
	case errors.Is(err, domain.ErrNotFound):
		st = State{}
	case errors.Is(err, domain.ErrUnavailable):
		return Principal{}, err
	default:
		return Principal{}, &unavailableError{
			safe:  domain.Errorf(domain.ErrUnavailable, "API tokens cannot be checked right now; retry shortly").(*domain.Error),
			cause: err,
		}
	}
	if !st.Known {
		return Principal{}, unauthorized("the API token %s is not known to this service: it was never issued here, or its org was deleted", c.id)
	}
	if st.OrgID != c.org {
		return Principal{}, unauthorized("the API token %s does not belong to the org it claims", c.id)
	}
	if st.Revoked {
		return Principal{}, unauthorized("the API token %s has been revoked; mint a new one", c.id)
	}
	exp := c.exp
	if !st.ExpiresAt.IsZero() && st.ExpiresAt.Before(exp) {
		exp = st.ExpiresAt
	}
	if !now.Before(exp.Add(leeway)) {
		return Principal{}, unauthorized("the API token %s expired at %s; mint a new one", c.id, stamp(exp))
	}
	return Principal{OrgID: c.org, TokenID: c.id, Subject: c.subject, Scopes: c.scopes, ExpiresAt: exp.UTC()}, nil
}

// keyError is a rejection decided while choosing the key; its message is safe to show.
type keyError struct{ msg string }

func (e *keyError) Error() string { return e.msg }

// keyFor picks the verification key named by the token's kid header.
func (v *Verifier) keyFor(t *jwt.Token) (any, error) {
	if _, ok := t.Header["crit"]; ok {
		return nil, &keyError{"the API token has critical header extensions (crit), which anchorage does not support"}
	}
	if typ, ok := t.Header["typ"]; ok {
		if s, _ := typ.(string); !strings.EqualFold(s, "JWT") {
			return nil, &keyError{"the API token's type (typ header) is not JWT"}
		}
	}
	kidv, ok := t.Header["kid"]
	if !ok {
		return nil, &keyError{"the API token does not name its signing key (kid header), so it was not issued by anchorage"}
	}
	kid, ok := kidv.(string)
	if !ok || kid == "" {
		return nil, &keyError{"the API token's key id (kid header) is malformed"}
	}
	key, ok := v.Keys.key(kid)
	if !ok {
		return nil, &keyError{fmt.Sprintf("the API token was signed with a key that is no longer configured (kid %q); mint a new token", clip(kid))}
	}
	return key, nil
}

// explain turns a parse failure into a message for the client.
func explain(tok *jwt.Token, c *claims, err error) error {
	var kerr *keyError
	if errors.As(err, &kerr) {
		return unauthorized("%s", kerr.msg)
	}
	if errors.Is(err, jwt.ErrTokenMalformed) {
		return unauthorized("the API token is malformed: an anchorage token is a JWT, three base64url segments of JSON separated by '.'")
	}
	if tok != nil {
		alg, _ := tok.Header["alg"].(string)
		if alg == "" {
			return unauthorized("the API token does not name its signing algorithm (alg header)")
		}
		if alg != jwt.SigningMethodHS256.Alg() {
			return unauthorized("the API token is signed with algorithm %q; anchorage tokens are signed with HS256", clip(alg))
		}
	}
	if errors.Is(err, jwt.ErrTokenSignatureInvalid) {
		return unauthorized("the API token's signature does not match its contents: it was altered, or not signed by this service")
	}
	if !errors.Is(err, jwt.ErrTokenInvalidClaims) {
		return unauthorized("the API token is invalid")
	}
	// Claims are only validated once the signature holds, so what follows describes a token we signed (or one
	// signed with our key).
	switch {
	case c.ExpiresAt == nil:
		return unauthorized("the API token has no expiry (exp claim); anchorage tokens always expire")
	case errors.Is(err, jwt.ErrTokenExpired):
		return unauthorized("the API token %s expired at %s; mint a new one", clip(c.ID), stamp(c.ExpiresAt.Time))
	case errors.Is(err, jwt.ErrTokenNotValidYet):
		return unauthorized("the API token %s is not valid before %s; check the client's clock", clip(c.ID), stamp(c.NotBefore.Time))
	case errors.Is(err, jwt.ErrTokenUsedBeforeIssued):
		return unauthorized("the API token %s claims to be issued in the future (%s); check the client's and server's clocks", clip(c.ID), stamp(c.IssuedAt.Time))
	case errors.Is(err, jwt.ErrTokenInvalidIssuer), errors.Is(err, jwt.ErrTokenRequiredClaimMissing) && c.Issuer == "":
		return unauthorized("the API token was not issued by anchorage (iss claim %q)", clip(c.Issuer))
	}
	return unauthorized("the API token's claims are invalid")
}

func unauthorized(format string, a ...any) error {
	return domain.Errorf(domain.ErrUnauthorized, format, a...)
}

func stamp(t time.Time) string { return t.UTC().Format(time.RFC3339) }

// unavailableError is a domain.ErrUnavailable error safe to show (its *domain.Error) that also wraps the
// internal cause, for logs.
type unavailableError struct {
	safe  *domain.Error
	cause error
}

func (e *unavailableError) Error() string   { return e.safe.Msg + ": " + e.cause.Error() }
func (e *unavailableError) Unwrap() []error { return []error{e.safe, e.cause} }
