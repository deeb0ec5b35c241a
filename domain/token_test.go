package domain_test

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"

	"github.com/anchorage-pin/anchorage/domain"
	"github.com/anchorage-pin/anchorage/events"
)

var (
	tokenPolicy = domain.TokenPolicy{DefaultTTL: 720 * time.Hour, MaxTTL: 8760 * time.Hour}
	mintNow     = time.Date(2026, 3, 2, 9, 20, 11, 483127846, time.FixedZone("CET", 3600))
	issuedAt    = time.Date(2026, 3, 2, 8, 20, 11, 0, time.UTC) // mintNow in UTC, whole seconds
	minted      = events.TokenMinted{OrgID: orgID, TokenID: tokID, Subject: "ci-deploy", Label: "GitHub Actions deploy",
		Scopes: []string{domain.ScopePinsRead, domain.ScopePinsWrite}, KeyID: "k2026-03",
		IssuedAt: issuedAt, ExpiresAt: issuedAt.Add(720 * time.Hour)}
	revoked = events.TokenRevoked{OrgID: orgID, TokenID: tokID, Reason: "lost"}
)

func mintCmd(edit func(*domain.MintToken)) domain.MintToken {
	c := domain.MintToken{OrgID: orgID, TokenID: tokID, Subject: "ci-deploy", Label: "GitHub Actions deploy",
		Scopes: []string{domain.ScopePinsWrite, domain.ScopePinsRead}, KeyID: "k2026-03"}
	if edit != nil {
		edit(&c)
	}
	return c
}

func mintedWith(edit func(*events.TokenMinted)) events.TokenMinted {
	m := minted
	m.Scopes = append([]string(nil), minted.Scopes...)
	edit(&m)
	return m
}

func TestTokenMint(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		given  []events.Event
		cmd    domain.MintToken
		policy *domain.TokenPolicy
		want   events.TokenMinted
		err    wantErr
	}{
		{name: "default TTL, scopes sorted", cmd: mintCmd(nil), want: minted},
		{name: "scopes deduplicated", cmd: mintCmd(func(c *domain.MintToken) {
			c.Scopes = []string{"pins:write", "pins:read", "pins:write", "pins:read"}
		}), want: minted},
		{name: "one scope", cmd: mintCmd(func(c *domain.MintToken) { c.Scopes = []string{"pins:read"} }),
			want: mintedWith(func(m *events.TokenMinted) { m.Scopes = []string{"pins:read"} })},
		{name: "explicit TTL", cmd: mintCmd(func(c *domain.MintToken) { c.TTL = 90 * time.Minute }),
			want: mintedWith(func(m *events.TokenMinted) { m.ExpiresAt = issuedAt.Add(90 * time.Minute) })},
		{name: "TTL exactly the maximum", cmd: mintCmd(func(c *domain.MintToken) { c.TTL = 8760 * time.Hour }),
			want: mintedWith(func(m *events.TokenMinted) { m.ExpiresAt = issuedAt.Add(8760 * time.Hour) })},
		{name: "no maximum", policy: &domain.TokenPolicy{DefaultTTL: time.Hour}, cmd: mintCmd(func(c *domain.MintToken) { c.TTL = 100000 * time.Hour }),
			want: mintedWith(func(m *events.TokenMinted) { m.ExpiresAt = issuedAt.Add(100000 * time.Hour) })},
		{name: "no label", cmd: mintCmd(func(c *domain.MintToken) { c.Label = "" }),
			want: mintedWith(func(m *events.TokenMinted) { m.Label = "" })},
		{name: "subject of 255 bytes", cmd: mintCmd(func(c *domain.MintToken) { c.Subject = strings.Repeat("s", 255) }),
			want: mintedWith(func(m *events.TokenMinted) { m.Subject = strings.Repeat("s", 255) })},
		{name: "TTL over the maximum", cmd: mintCmd(func(c *domain.MintToken) { c.TTL = 8760*time.Hour + time.Second }),
			err: errOf(domain.ErrInvalid, "8760h0m1s", "8760h0m0s", "maxTTL")},
		{name: "default TTL over the maximum", policy: &domain.TokenPolicy{DefaultTTL: 48 * time.Hour, MaxTTL: 24 * time.Hour},
			cmd: mintCmd(nil), err: errOf(domain.ErrInvalid, "maxTTL")},
		{name: "negative TTL", cmd: mintCmd(func(c *domain.MintToken) { c.TTL = -time.Hour }), err: errOf(domain.ErrInvalid, "positive")},
		{name: "unknown scope", cmd: mintCmd(func(c *domain.MintToken) { c.Scopes = []string{"pins:read", "pins:admin"} }),
			err: errOf(domain.ErrInvalid, `"pins:admin"`, "pins:read pins:write")},
		{name: "empty scope", cmd: mintCmd(func(c *domain.MintToken) { c.Scopes = []string{""} }), err: errOf(domain.ErrInvalid, "unknown scope")},
		{name: "scope case matters", cmd: mintCmd(func(c *domain.MintToken) { c.Scopes = []string{"PINS:READ"} }), err: errOf(domain.ErrInvalid)},
		{name: "no scope", cmd: mintCmd(func(c *domain.MintToken) { c.Scopes = nil }), err: errOf(domain.ErrInvalid, "at least one scope")},
		{name: "empty scope list", cmd: mintCmd(func(c *domain.MintToken) { c.Scopes = []string{} }), err: errOf(domain.ErrInvalid, "at least one scope")},
		{name: "empty subject", cmd: mintCmd(func(c *domain.MintToken) { c.Subject = "" }), err: errOf(domain.ErrInvalid, "subject")},
		{name: "subject of 256 bytes", cmd: mintCmd(func(c *domain.MintToken) { c.Subject = strings.Repeat("s", 256) }), err: errOf(domain.ErrInvalid, "255")},
		{name: "label of 256 bytes", cmd: mintCmd(func(c *domain.MintToken) { c.Label = strings.Repeat("l", 256) }), err: errOf(domain.ErrInvalid, "255")},
		{name: "subject with NUL", cmd: mintCmd(func(c *domain.MintToken) { c.Subject = "ci\x00" }), err: errOf(domain.ErrInvalid, "token subject", "NUL")},
		{name: "label not UTF-8", cmd: mintCmd(func(c *domain.MintToken) { c.Label = "\xc3" }), err: errOf(domain.ErrInvalid, "token label", "UTF-8")},
		{name: "no signing key", cmd: mintCmd(func(c *domain.MintToken) { c.KeyID = "" }), err: errOf(domain.ErrUnavailable, "signing key")},
		{name: "already exists", given: []events.Event{minted}, cmd: mintCmd(nil), err: errOf(domain.ErrConflict, tokID, "already exists")},
		{name: "exists though revoked", given: []events.Event{minted, revoked}, cmd: mintCmd(nil), err: errOf(domain.ErrConflict)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p := tokenPolicy
			if tc.policy != nil {
				p = *tc.policy
			}
			scopesBefore := slices.Clone(tc.cmd.Scopes)
			tok := given(domain.Token{TokenID: tokID}, tc.given...)
			ev, err := tok.Mint(tc.cmd, p, mintNow)
			checkErr(t, err, tc.err)
			assert.Equal(t, tc.want, ev)
			assert.Equal(t, scopesBefore, tc.cmd.Scopes, "Mint must not reorder the caller's scopes")
			if err == nil {
				assert.Equal(t, time.UTC, ev.IssuedAt.Location())
				assert.True(t, ev.ExpiresAt.After(ev.IssuedAt))
			}
		})
	}
}

func TestTokenApply(t *testing.T) {
	t.Parallel()
	tok := given(domain.Token{TokenID: tokID}, minted)
	assert.Equal(t, domain.Token{OrgID: orgID, TokenID: tokID, Exists: true, ExpiresAt: minted.ExpiresAt}, *tok)
	tok.Apply(revoked)
	assert.True(t, tok.Revoked)
}

func TestTokenRevoke(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		given  []events.Event
		reason string
		want   events.Event
		err    wantErr
	}{
		{name: "live", given: []events.Event{minted}, reason: "lost", want: revoked},
		{name: "no reason", given: []events.Event{minted}, want: events.TokenRevoked{OrgID: orgID, TokenID: tokID}},
		{name: "reason of 1024 bytes", given: []events.Event{minted}, reason: strings.Repeat("r", 1024),
			want: events.TokenRevoked{OrgID: orgID, TokenID: tokID, Reason: strings.Repeat("r", 1024)}},
		{name: "unknown", reason: "lost", err: errOf(domain.ErrNotFound, tokID)},
		{name: "already revoked: nothing to do", given: []events.Event{minted, revoked}, reason: "again"},
		{name: "reason too long", given: []events.Event{minted}, reason: strings.Repeat("r", 1025), err: errOf(domain.ErrInvalid, "1024")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tok := given(domain.Token{TokenID: tokID}, tc.given...)
			ev, err := tok.Revoke(tc.reason)
			checkErr(t, err, tc.err)
			assert.Equal(t, tc.want, ev)
		})
	}
}
