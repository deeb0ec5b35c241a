package events

import "time"

// TokenMinted is recorded when an API token is issued. It never carries the token itself: the JWT is only ever
// printed to whoever minted it. Subject tokens.<org>.<token_id>.
type TokenMinted struct {
	OrgID   string `json:"org_id"`
	TokenID string `json:"token_id"` // the JWT's jti
	// Subject is who or what the token is for (a user id, a device or CI job name).
	Subject string   `json:"subject"`
	Label   string   `json:"label,omitempty"`
	Scopes  []string `json:"scopes"`
	// KeyID is the signing key's kid, so a key rotation can tell which tokens it strands.
	KeyID     string    `json:"kid"`
	IssuedAt  time.Time `json:"issued_at"`
	ExpiresAt time.Time `json:"expires_at"`
}

func (TokenMinted) EventType() Type   { return "token.minted" }
func (TokenMinted) EventVersion() int { return 1 }

// TokenRevoked is recorded when an API token is revoked; it is rejected from then on.
type TokenRevoked struct {
	OrgID   string `json:"org_id"`
	TokenID string `json:"token_id"`
	Reason  string `json:"reason,omitempty"`
}

func (TokenRevoked) EventType() Type   { return "token.revoked" }
func (TokenRevoked) EventVersion() int { return 1 }

func init() {
	register[TokenMinted]()
	register[TokenRevoked]()
}
