package tokens

import (
	"fmt"
	"slices"
	"strings"

	"github.com/golang-jwt/jwt/v5"

	"github.com/anchorage-pin/anchorage/domain"
	"github.com/anchorage-pin/anchorage/events"
)

// Issuer is the iss claim of every anchorage API token.
const Issuer = "anchorage"

// claims is the payload of an anchorage API token.
type claims struct {
	Org string `json:"org,omitempty"`
	// Scope lists the scopes space-separated (RFC 8693 section 4.2).
	Scope string `json:"scope,omitempty"`
	jwt.RegisteredClaims
}

// Sign returns the JWT for a minted token, signed with the key ev.KeyID names.
func (k *KeyRing) Sign(ev events.TokenMinted) (string, error) {
	key, ok := k.key(ev.KeyID)
	if !ok {
		return "", fmt.Errorf("tokens: sign token %s: signing key %q is not configured (%s)", ev.TokenID, clip(ev.KeyID), configPath)
	}
	switch {
	case ev.TokenID == "":
		return "", fmt.Errorf("tokens: sign: the minted token has no id")
	case ev.OrgID == "":
		return "", fmt.Errorf("tokens: sign token %s: no org", ev.TokenID)
	case ev.Subject == "":
		return "", fmt.Errorf("tokens: sign token %s: no subject", ev.TokenID)
	case len(ev.Scopes) == 0:
		return "", fmt.Errorf("tokens: sign token %s: no scopes", ev.TokenID)
	case ev.IssuedAt.IsZero() || ev.ExpiresAt.IsZero():
		return "", fmt.Errorf("tokens: sign token %s: issue and expiry times are required", ev.TokenID)
	case !ev.ExpiresAt.After(ev.IssuedAt):
		return "", fmt.Errorf("tokens: sign token %s: it expires (%s) before it is issued (%s)", ev.TokenID, ev.ExpiresAt, ev.IssuedAt)
	}
	for _, s := range ev.Scopes {
		if !slices.Contains(domain.KnownScopes, s) {
			return "", fmt.Errorf("tokens: sign token %s: unknown scope %q", ev.TokenID, clip(s))
		}
	}
	c := claims{
		Org:   ev.OrgID,
		Scope: strings.Join(ev.Scopes, " "),
		RegisteredClaims: jwt.RegisteredClaims{
			Issuer:    Issuer,
			Subject:   ev.Subject,
			ID:        ev.TokenID,
			IssuedAt:  jwt.NewNumericDate(ev.IssuedAt),
			NotBefore: jwt.NewNumericDate(ev.IssuedAt),
			ExpiresAt: jwt.NewNumericDate(ev.ExpiresAt),
		},
	}
	tok := jwt.NewWithClaims(jwt.SigningMethodHS256, c)
	tok.Header["kid"] = ev.KeyID
	s, err := tok.SignedString(key)
	if err != nil {
		return "", fmt.Errorf("tokens: sign token %s: %w", ev.TokenID, err)
	}
	return s, nil
}
