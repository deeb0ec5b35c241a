package domain

import (
	"slices"
	"time"

	"github.com/anchorage-pin/anchorage/events"
)

// API token scopes.
const (
	ScopePinsRead  = "pins:read"
	ScopePinsWrite = "pins:write"
	// ScopeAuditRead reads the audit trail of the token's own org (GET /v1/audit).
	ScopeAuditRead = "audit:read"
	// ScopeSysAudit reads the audit trail of every org, system events included.
	ScopeSysAudit = "sys:audit"
)

// KnownScopes lists every scope a token may carry.
var KnownScopes = []string{ScopePinsRead, ScopePinsWrite, ScopeAuditRead, ScopeSysAudit}

// DefaultScopes are what a token gets when its minter names none: the Pinning Services API and nothing else.
// Audit scopes are granted only by asking for them.
var DefaultScopes = []string{ScopePinsRead, ScopePinsWrite}

// TokenPolicy bounds token lifetimes.
type TokenPolicy struct {
	DefaultTTL time.Duration
	MaxTTL     time.Duration
}

// MintToken is the command to issue an API token.
type MintToken struct {
	OrgID   string
	TokenID string
	Subject string
	Label   string
	Scopes  []string
	// TTL 0 means the policy's default.
	TTL   time.Duration
	KeyID string
}

// Token is the write-side state of one API token.
type Token struct {
	OrgID     string
	TokenID   string
	Exists    bool
	Revoked   bool
	ExpiresAt time.Time
}

// Apply folds one event into the state.
func (t *Token) Apply(e events.Event) {
	switch e := e.(type) {
	case events.TokenMinted:
		t.OrgID, t.TokenID, t.Exists, t.ExpiresAt = e.OrgID, e.TokenID, true, e.ExpiresAt
	case events.TokenRevoked:
		t.Revoked = true
	}
}

// Mint decides issuing a token at now.
func (t *Token) Mint(c MintToken, p TokenPolicy, now time.Time) (events.TokenMinted, error) {
	if t.Exists {
		return events.TokenMinted{}, Errorf(ErrConflict, "token %s already exists", c.TokenID)
	}
	if c.Subject == "" {
		return events.TokenMinted{}, Errorf(ErrInvalid, "a token needs a subject (the user, device or job it is for)")
	}
	if len(c.Subject) > 255 || len(c.Label) > 255 {
		return events.TokenMinted{}, Errorf(ErrInvalid, "token subject and label are limited to 255 bytes")
	}
	if err := checkText("token subject", c.Subject); err != nil {
		return events.TokenMinted{}, err
	}
	if err := checkText("token label", c.Label); err != nil {
		return events.TokenMinted{}, err
	}
	if len(c.Scopes) == 0 {
		return events.TokenMinted{}, Errorf(ErrInvalid, "a token needs at least one scope (%v)", KnownScopes)
	}
	scopes := slices.Clone(c.Scopes)
	slices.Sort(scopes)
	scopes = slices.Compact(scopes)
	for _, s := range scopes {
		if !slices.Contains(KnownScopes, s) {
			return events.TokenMinted{}, Errorf(ErrInvalid, "unknown scope %q; known scopes are %v", clip(s), KnownScopes)
		}
	}
	ttl := c.TTL
	if ttl == 0 {
		ttl = p.DefaultTTL
	}
	if ttl < 0 {
		return events.TokenMinted{}, Errorf(ErrInvalid, "token lifetime must be positive")
	}
	if p.MaxTTL > 0 && ttl > p.MaxTTL {
		return events.TokenMinted{}, Errorf(ErrInvalid, "token lifetime %s exceeds the maximum of %s (auth.apiToken.maxTTL)", ttl, p.MaxTTL)
	}
	if c.KeyID == "" {
		return events.TokenMinted{}, Errorf(ErrUnavailable, "no primary signing key is configured (auth.apiToken.signingKeys)")
	}
	now = now.UTC().Truncate(time.Second)
	return events.TokenMinted{
		OrgID: c.OrgID, TokenID: c.TokenID, Subject: c.Subject, Label: c.Label, Scopes: scopes,
		KeyID: c.KeyID, IssuedAt: now, ExpiresAt: now.Add(ttl),
	}, nil
}

// Revoke decides revoking the token. Revoking a revoked token decides nothing.
func (t *Token) Revoke(reason string) (events.Event, error) {
	if !t.Exists {
		return nil, Errorf(ErrNotFound, "token %s does not exist", t.TokenID)
	}
	if t.Revoked {
		return nil, nil
	}
	if len(reason) > 1024 {
		return nil, Errorf(ErrInvalid, "revocation reason is limited to 1024 bytes")
	}
	return events.TokenRevoked{OrgID: t.OrgID, TokenID: t.TokenID, Reason: reason}, nil
}
