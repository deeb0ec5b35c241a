package postgres

import (
	"context"
	"errors"
	"time"

	"github.com/anchorage-pin/anchorage/adapters/postgres/internal/dbsqlc"
	"github.com/anchorage-pin/anchorage/domain"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Admin reads across orgs for operator commands, as the owner role.
type Admin struct{ pool *pgxpool.Pool }

// NewAdmin returns operator reads over an owner-role pool.
func NewAdmin(pool *pgxpool.Pool) *Admin { return &Admin{pool: pool} }

// OrgRow is one org as operators see it.
type OrgRow struct {
	ID, Slug, Name string
	MaxPins, Pins  int64
	Created        time.Time
}

// Orgs lists every org.
func (a *Admin) Orgs(ctx context.Context) ([]OrgRow, error) {
	rows, err := queries.OrgList(ctx, a.pool)
	if err != nil {
		return nil, interpret(err)
	}
	out := make([]OrgRow, len(rows))
	for i, r := range rows {
		out[i] = OrgRow{ID: r.OrgID.String(), Slug: r.Slug, Name: r.Name, MaxPins: r.MaxPins, Pins: r.LivePins, Created: r.CreatedAt}
	}
	return out, nil
}

// TokenRow is one API token as operators see it (never its secret).
type TokenRow struct {
	OrgID, ID, Subject, Label, KeyID string
	Scopes                           []string
	Issued, Expires                  time.Time
	Revoked                          *time.Time
	RevokeReason                     string
}

func tokenRow(org, id uuid.UUID, subject, label, kid string, scopes []string, issued, expires time.Time, revoked *time.Time, reason string) TokenRow {
	return TokenRow{OrgID: org.String(), ID: id.String(), Subject: subject, Label: label, KeyID: kid, Scopes: scopes,
		Issued: issued, Expires: expires, Revoked: revoked, RevokeReason: reason}
}

// Tokens lists an org's tokens, newest first.
func (a *Admin) Tokens(ctx context.Context, org string) ([]TokenRow, error) {
	id, err := uuid.Parse(org)
	if err != nil {
		return nil, domain.Errorf(domain.ErrNotFound, "org %q does not exist", org)
	}
	rows, err := queries.TokenList(ctx, a.pool, id)
	if err != nil {
		return nil, interpret(err)
	}
	out := make([]TokenRow, len(rows))
	for i, r := range rows {
		out[i] = tokenRow(r.OrgID, r.TokenID, r.Subject, r.Label, r.KeyID, r.Scopes, r.IssuedAt, r.ExpiresAt, r.RevokedAt, r.RevokeReason)
	}
	return out, nil
}

// Token returns one token.
func (a *Admin) Token(ctx context.Context, org, token string) (TokenRow, error) {
	o, err1 := uuid.Parse(org)
	t, err2 := uuid.Parse(token)
	if err1 != nil || err2 != nil {
		return TokenRow{}, domain.Errorf(domain.ErrNotFound, "token %q does not exist", token)
	}
	r, err := queries.TokenGet(ctx, a.pool, dbsqlc.TokenGetParams{OrgID: o, TokenID: t})
	if err != nil {
		return TokenRow{}, interpret(err)
	}
	return tokenRow(r.OrgID, r.TokenID, r.Subject, r.Label, r.KeyID, r.Scopes, r.IssuedAt, r.ExpiresAt, r.RevokedAt, r.RevokeReason), nil
}

// Org returns one org.
func (a *Admin) Org(ctx context.Context, org string) (OrgRow, error) {
	id, err := uuid.Parse(org)
	if err != nil {
		return OrgRow{}, domain.Errorf(domain.ErrNotFound, "org %q does not exist", org)
	}
	r, err := queries.OrgGet(ctx, a.pool, id)
	if err != nil {
		return OrgRow{}, interpret(err)
	}
	return OrgRow{ID: r.OrgID.String(), Slug: r.Slug, Name: r.Name, MaxPins: r.MaxPins, Created: r.CreatedAt}, nil
}

// Checkpoint returns the last sequence a projection applied.
func (a *Admin) Checkpoint(ctx context.Context, name string) (uint64, error) {
	return checkpoint(ctx, a.pool, name)
}

// WaitCheckpoint waits until projection name applied seq (read-your-writes for operator commands).
func (a *Admin) WaitCheckpoint(ctx context.Context, name string, seq uint64) error {
	for {
		cp, err := a.Checkpoint(ctx, name)
		if err != nil {
			return err
		}
		if cp >= seq {
			return nil
		}
		select {
		case <-ctx.Done():
			return errors.Join(ctx.Err(), domain.Errorf(domain.ErrUnavailable,
				"the %s projection has not applied event %d yet (it is at %d): is the anchorage node running?", name, seq, cp))
		case <-time.After(20 * time.Millisecond):
		}
	}
}
