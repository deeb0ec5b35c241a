package domain_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/anchorage-pin/anchorage/domain"
	"github.com/anchorage-pin/anchorage/events"
)

const (
	orgSlug = "acme"
	orgID   = "e7031246-2fa0-557c-adce-49cf9034dd55" // OrgIDForSlug("acme")
	otherID = "4ef8aa38-9227-4658-9e27-a1c08a6a63ec"
	reqID   = "019cebab-8995-70ed-a079-d3bde8e25d94"
	newReq  = "019cebcb-f375-76f0-8478-82e36b0d549b"
	tokID   = "019cada2-285a-7128-a24b-e40ad23f0824"
	cidV1   = "bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi"
	cidV0   = "QmbWqxBEKC3P8tqsKc98xmWNzrzDtRLMiMPL8wBuTGsMnR" // the same content as cidV1
	peerA   = "12D3KooWQNtCV4NZdkBaB6ekoipMCkeRkN95hSwJVUnNKrNdSddT"
	peerB   = "12D3KooWMWBrG5L1axQYCK3dVmKTYKVviefWvt2gfjE2k2prLskG"
)

// wantErr describes an expected *domain.Error; the zero value means "no error".
type wantErr struct {
	kind   error
	reason string
	// msg are substrings the message must contain (a limit it names, say).
	msg []string
}

func (w wantErr) String() string {
	if w.kind == nil {
		return "no error"
	}
	return fmt.Sprintf("%v/%s", w.kind, w.reason)
}

// errOf is the wantErr of kind with its default reason.
func errOf(kind error, msg ...string) wantErr {
	reasons := map[error]string{
		domain.ErrInvalid: "BAD_REQUEST", domain.ErrUnauthorized: "UNAUTHORIZED", domain.ErrForbidden: "FORBIDDEN",
		domain.ErrNotFound: "NOT_FOUND", domain.ErrConflict: "CONCURRENT_MODIFICATION",
		domain.ErrInsufficientFund: "INSUFFICIENT_FUNDS", domain.ErrUnavailable: "SERVICE_UNAVAILABLE",
	}
	return wantErr{kind: kind, reason: reasons[kind], msg: msg}
}

// checkErr asserts that err matches want.
func checkErr(t *testing.T, err error, want wantErr) {
	t.Helper()
	if want.kind == nil {
		require.NoError(t, err)
		return
	}
	require.Error(t, err)
	assert.ErrorIs(t, err, want.kind)
	var de *domain.Error
	if assert.True(t, errors.As(err, &de), "%v (%T) is not a *domain.Error", err, err) {
		assert.Equal(t, want.reason, de.Reason, "reason of %q", err)
		assert.NotEmpty(t, de.Msg)
	}
	for _, m := range want.msg {
		assert.Contains(t, err.Error(), m)
	}
}

// given folds events into a fresh aggregate.
func given[A any, P interface {
	*A
	Apply(events.Event)
}](init A, evs ...events.Event) *A {
	a := &init
	for _, e := range evs {
		P(a).Apply(e)
	}
	return a
}

func TestErrors(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		kind   error
		reason string
	}{
		{domain.ErrInvalid, "BAD_REQUEST"},
		{domain.ErrUnauthorized, "UNAUTHORIZED"},
		{domain.ErrForbidden, "FORBIDDEN"},
		{domain.ErrNotFound, "NOT_FOUND"},
		{domain.ErrConflict, "CONCURRENT_MODIFICATION"},
		{domain.ErrInsufficientFund, "INSUFFICIENT_FUNDS"},
		{domain.ErrUnavailable, "SERVICE_UNAVAILABLE"},
		{errors.New("other"), "INTERNAL_SERVER_ERROR"},
	} {
		err := domain.Errorf(tc.kind, "pin %s: %d", "x", 7)
		var de *domain.Error
		require.True(t, errors.As(err, &de))
		assert.Equal(t, tc.reason, de.Reason)
		assert.Equal(t, "pin x: 7", err.Error())
		assert.ErrorIs(t, err, tc.kind)
		assert.ErrorIs(t, fmt.Errorf("wrapped: %w", err), tc.kind)
	}
	err := domain.ReasonErrorf(domain.ErrInvalid, "ORG_EXISTS", "org %q exists", "acme")
	var de *domain.Error
	require.True(t, errors.As(err, &de))
	assert.Equal(t, "ORG_EXISTS", de.Reason)
	assert.ErrorIs(t, err, domain.ErrInvalid)
	assert.NotErrorIs(t, err, domain.ErrConflict)
	assert.Equal(t, `org "acme" exists`, err.Error())
}

func TestValidID(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in string
		ok bool
	}{
		{orgID, true},
		{newReq, true},
		{"", false},
		{"not-a-uuid", false},
		{strings.ReplaceAll(orgID, "-", ""), false},
		{"{" + orgID + "}", false},
		{"urn:uuid:" + orgID, false},
		{orgID + ".x", false},
		{orgID[:35], false},
		{orgID[:35] + "g", false},
		{"a.b.c", false},
		{"*", false},
	} {
		assert.Equal(t, tc.ok, domain.ValidID(tc.in), "ValidID(%q)", tc.in)
	}
}
