package domain_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/anchorage-pin/anchorage/domain"
	"github.com/anchorage-pin/anchorage/events"
)

var (
	svcNow  = time.Date(2026, 3, 14, 10, 2, 17, 846240918, time.UTC)
	cmdMeta = domain.Meta{Actor: "token:" + tokID, Corr: "24ede6a4-6b4c-4242-8a23-d5962217bead"}
)

// fakeUsage is a domain.Usage returning fixed numbers.
type fakeUsage struct {
	pins, max int64
	err       error
	calls     int
}

func (u *fakeUsage) PinUsage(_ context.Context, org string) (int64, int64, error) {
	u.calls++
	return u.pins, u.max, u.err
}

// newService returns a service over a fresh fake log with deterministic ids ("…-000000000001", …) and clock.
func newService() (*domain.Service, *fakeLog) {
	l := newFakeLog()
	var mu sync.Mutex
	n := 0
	s := &domain.Service{
		Log: l,
		Env: domain.Env{
			Now: func() time.Time { return svcNow },
			NewID: func() string {
				mu.Lock()
				defer mu.Unlock()
				n++
				return fmt.Sprintf("019cebcb-f375-7000-8000-%012x", n)
			},
			Created: domain.NewCreatedClock(func() time.Time { return svcNow }).Next,
		},
		Tokens: tokenPolicy,
	}
	return s, l
}

func id(n int) string { return fmt.Sprintf("019cebcb-f375-7000-8000-%012x", n) }

func seedOrg(t *testing.T, l *fakeLog) {
	l.seed(t, events.OrgSubject(orgID), events.OrgCreated{OrgID: orgID, Slug: orgSlug, Name: "Acme"})
}

func seedPin(t *testing.T, l *fakeLog, rid string) {
	ev := requested
	ev.RequestID = rid
	l.seed(t, events.PinSubject(orgID, rid), ev)
}

func TestRequestPin(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, l := newService()
	spec := domain.PinSpec{CID: cidV1, Name: "website", Origins: []string{"junk", "/ip4/203.0.113.7/tcp/4001/p2p/" + peerA},
		Meta: map[string]string{"app": "website"}}

	ev, app, err := s.RequestPin(ctx, cmdMeta, orgID, spec)
	require.NoError(t, err)
	assert.Equal(t, events.PinRequested{OrgID: orgID, RequestID: id(1), CID: cidV1, Name: "website",
		Origins: []string{"/ip4/203.0.113.7/tcp/4001/p2p/" + peerA}, Meta: map[string]string{"app": "website"},
		Created: svcNow.Truncate(time.Millisecond)}, ev)
	assert.Equal(t, uint64(1), app.Seq)

	require.Len(t, l.batches, 1)
	require.Len(t, l.batches[0], 1)
	m := l.batches[0][0]
	assert.Equal(t, events.PinSubject(orgID, id(1)), m.Subject)
	assert.Equal(t, uint64(0), m.Expect, "a new request's subject must be empty")
	assert.Equal(t, id(2), m.Envelope.ID, "the envelope has its own id")
	assert.Equal(t, cmdMeta.Actor, m.Envelope.Actor)
	assert.Equal(t, cmdMeta.Corr, m.Envelope.Corr)
	assert.Equal(t, events.Type("pin.requested"), m.Envelope.Type)
	assert.Equal(t, 1, m.Envelope.Version)
	assert.True(t, svcNow.Equal(m.Envelope.At))
	assert.Equal(t, []events.Event{ev}, l.events(m.Subject), "the stored event is the returned one")
	assert.Equal(t, 0, l.loads, "a new request needs no load")

	// The next request in the same millisecond gets a later created time.
	ev2, app2, err := s.RequestPin(ctx, cmdMeta, orgID, domain.PinSpec{CID: cidV0})
	require.NoError(t, err)
	assert.True(t, ev2.Created.After(ev.Created))
	assert.NotEqual(t, ev.RequestID, ev2.RequestID)
	assert.Equal(t, uint64(2), app2.Seq)
}

func TestRequestPinInvalidSpec(t *testing.T) {
	t.Parallel()
	s, l := newService()
	u := &fakeUsage{}
	s.Usage = u
	_, _, err := s.RequestPin(context.Background(), cmdMeta, orgID, domain.PinSpec{CID: "QmCIDToBePinned"})
	checkErr(t, err, errOf(domain.ErrInvalid))
	assert.Zero(t, l.appendCalls)
	assert.Zero(t, u.calls, "the quota is not checked for an invalid request")
}

func TestRequestPinQuota(t *testing.T) {
	t.Parallel()
	boom := errors.New("read model down")
	for _, tc := range []struct {
		name  string
		usage *fakeUsage
		err   wantErr
		isErr error
	}{
		{name: "no usage port", usage: nil},
		{name: "unlimited", usage: &fakeUsage{pins: 1 << 40, max: 0}},
		{name: "below the quota", usage: &fakeUsage{pins: 9, max: 10}},
		{name: "at the quota", usage: &fakeUsage{pins: 10, max: 10}, err: errOf(domain.ErrInsufficientFund, "10")},
		{name: "over the quota", usage: &fakeUsage{pins: 12, max: 10}, err: errOf(domain.ErrInsufficientFund, "12", "10")},
		{name: "usage error propagates", usage: &fakeUsage{err: boom}, isErr: boom},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s, l := newService()
			if tc.usage != nil {
				s.Usage = tc.usage
			}
			_, _, err := s.RequestPin(context.Background(), cmdMeta, orgID, domain.PinSpec{CID: cidV1})
			if tc.isErr != nil {
				assert.ErrorIs(t, err, tc.isErr)
				var de *domain.Error
				assert.False(t, errors.As(err, &de), "an internal failure is not a client error")
			} else {
				checkErr(t, err, tc.err)
			}
			if err != nil {
				assert.Zero(t, l.appendCalls, "nothing is appended when the quota check fails")
			} else {
				assert.Equal(t, 1, l.appendCalls)
			}
		})
	}
}

func TestReplacePin(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, l := newService()
	seedPin(t, l, reqID)
	seedPin(t, l, newReq) // an unrelated pin, so sequences differ from subject positions
	oldSubject := events.PinSubject(orgID, reqID)

	newSpec := domain.PinSpec{CID: cidV0, Name: "v2", Origins: []string{"nope"}}
	ev, app, err := s.ReplacePin(ctx, cmdMeta, orgID, reqID, newSpec)
	require.NoError(t, err)
	want := events.PinRequested{OrgID: orgID, RequestID: id(1), CID: cidV0, Name: "v2", Replaces: reqID, Created: svcNow.Truncate(time.Millisecond)}
	assert.Equal(t, want, ev)

	require.Len(t, l.batches, 1, "one atomic append")
	batch := l.batches[0]
	require.Len(t, batch, 2)
	// The new request first: a projector that commits the batch in two parts never sees the old request
	// replaced by one that does not exist yet.
	assert.Equal(t, events.PinSubject(orgID, id(1)), batch[0].Subject)
	assert.Equal(t, uint64(0), batch[0].Expect, "the new request's subject must be empty")
	assert.Equal(t, oldSubject, batch[1].Subject)
	assert.Equal(t, uint64(1), batch[1].Expect, "guarded by the old request's last sequence")
	assert.NotEqual(t, batch[0].Envelope.ID, batch[1].Envelope.ID)
	for _, m := range batch {
		assert.Equal(t, cmdMeta.Actor, m.Envelope.Actor)
		assert.Equal(t, cmdMeta.Corr, m.Envelope.Corr)
	}
	assert.Equal(t, uint64(4), app.Seq, "the sequence of the last event")
	assert.Equal(t, []events.Event{requested, events.PinReplaced{OrgID: orgID, RequestID: reqID, ReplacedBy: id(1)}}, l.events(oldSubject))
	assert.Equal(t, []events.Event{want}, l.events(batch[0].Subject))

	// The old request is gone.
	_, _, err = s.ReplacePin(ctx, cmdMeta, orgID, reqID, newSpec)
	checkErr(t, err, errOf(domain.ErrNotFound, reqID))
	_, err = s.RemovePin(ctx, cmdMeta, orgID, reqID)
	checkErr(t, err, errOf(domain.ErrNotFound))
	// The new one is live.
	_, err = s.RemovePin(ctx, cmdMeta, orgID, id(1))
	require.NoError(t, err)
	assert.Len(t, l.batches, 2)
}

func TestReplacePinErrors(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		seed  []events.Event
		oldID string
		spec  domain.PinSpec
		err   wantErr
		loads int
	}{
		{name: "never requested", oldID: reqID, spec: domain.PinSpec{CID: cidV1}, err: errOf(domain.ErrNotFound), loads: 1},
		{name: "removed", seed: []events.Event{requested, removed}, oldID: reqID, spec: domain.PinSpec{CID: cidV1}, err: errOf(domain.ErrNotFound), loads: 1},
		{name: "replaced", seed: []events.Event{requested, replaced}, oldID: reqID, spec: domain.PinSpec{CID: cidV1}, err: errOf(domain.ErrNotFound), loads: 1},
		{name: "invalid id", oldID: "not-a-uuid", spec: domain.PinSpec{CID: cidV1}, err: errOf(domain.ErrNotFound, "not-a-uuid")},
		{name: "id with a dot", oldID: reqID + ".x", spec: domain.PinSpec{CID: cidV1}, err: errOf(domain.ErrNotFound)},
		{name: "invalid spec", seed: []events.Event{requested}, oldID: reqID, spec: domain.PinSpec{}, err: errOf(domain.ErrInvalid)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s, l := newService()
			if len(tc.seed) > 0 {
				l.seed(t, events.PinSubject(orgID, reqID), tc.seed...)
			}
			ev, _, err := s.ReplacePin(context.Background(), cmdMeta, orgID, tc.oldID, tc.spec)
			checkErr(t, err, tc.err)
			assert.Zero(t, ev)
			assert.Equal(t, tc.loads, l.loads)
			assert.Zero(t, l.appendCalls)
		})
	}
}

func TestReplacePinIsAtomic(t *testing.T) {
	t.Parallel()
	s, l := newService()
	seedPin(t, l, reqID)
	// The new request's subject is taken (an id collision): the old request must stay untouched.
	l.seed(t, events.PinSubject(orgID, id(1)), removed)
	_, _, err := s.ReplacePin(context.Background(), cmdMeta, orgID, reqID, domain.PinSpec{CID: cidV1})
	checkErr(t, err, wantErr{kind: domain.ErrConflict, reason: "CONCURRENT_MODIFICATION"})
	assert.Equal(t, []events.Event{requested}, l.events(events.PinSubject(orgID, reqID)))
	assert.Empty(t, l.batches)
}

func TestRemovePin(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, l := newService()
	seedPin(t, l, reqID)

	app, err := s.RemovePin(ctx, cmdMeta, orgID, reqID)
	require.NoError(t, err)
	assert.Equal(t, uint64(2), app.Seq)
	require.Len(t, l.batches, 1)
	m := l.batches[0][0]
	assert.Equal(t, uint64(1), m.Expect)
	assert.Equal(t, cmdMeta.Actor, m.Envelope.Actor)
	assert.Equal(t, []events.Event{requested, removed}, l.events(events.PinSubject(orgID, reqID)))

	_, err = s.RemovePin(ctx, cmdMeta, orgID, reqID)
	checkErr(t, err, errOf(domain.ErrNotFound, reqID))
	assert.Len(t, l.batches, 1, "the second removal appends nothing")

	_, err = s.RemovePin(ctx, cmdMeta, orgID, newReq)
	checkErr(t, err, errOf(domain.ErrNotFound))
	assert.Len(t, l.batches, 1)
}

// TestInvalidIDsDoNotTouchTheLog: an id that is not a UUID cannot exist, and must never reach a subject.
func TestInvalidIDsDoNotTouchTheLog(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	bad := []string{"", "not-a-uuid", "a.b", "*", ">", reqID + ".x", strings.ReplaceAll(reqID, "-", ""), "{" + reqID + "}", "urn:uuid:" + reqID}
	for _, b := range bad {
		s, l := newService()
		l.loadErr = errors.New("the log must not be read")
		l.appendErr = errors.New("the log must not be written")
		cmds := map[string]func() error{
			"RemovePin": func() error { _, err := s.RemovePin(ctx, cmdMeta, orgID, b); return err },
			"ReplacePin": func() error {
				_, _, err := s.ReplacePin(ctx, cmdMeta, orgID, b, domain.PinSpec{CID: cidV1})
				return err
			},
			"SetOrgQuota": func() error {
				_, err := s.SetOrgQuota(ctx, cmdMeta, b, 10)
				return err
			},
			"MintToken": func() error {
				_, _, err := s.MintToken(ctx, cmdMeta, mintCmd(func(c *domain.MintToken) { c.OrgID = b }))
				return err
			},
			"RevokeToken(org)":   func() error { _, err := s.RevokeToken(ctx, cmdMeta, b, tokID, ""); return err },
			"RevokeToken(token)": func() error { _, err := s.RevokeToken(ctx, cmdMeta, orgID, b, ""); return err },
		}
		for name, cmd := range cmds {
			err := cmd()
			if assert.ErrorIs(t, err, domain.ErrNotFound, "%s(%q)", name, b) {
				var de *domain.Error
				assert.True(t, errors.As(err, &de))
			}
		}
		assert.Zero(t, l.loads, "id %q", b)
		assert.Zero(t, l.appendCalls, "id %q", b)
	}
}

func TestConflictRetry(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	for n := 0; n <= domain.MaxAttempts+1; n++ {
		t.Run(fmt.Sprintf("SetOrgQuota/%d conflicts", n), func(t *testing.T) {
			t.Parallel()
			s, l := newService()
			seedOrg(t, l)
			l.interfere(t, n, func(i int) events.Event { return events.OrgQuotaSet{OrgID: orgID, MaxPins: int64(i + 1)} })

			app, err := s.SetOrgQuota(ctx, cmdMeta, orgID, 100)
			subject := events.OrgSubject(orgID)
			if n < domain.MaxAttempts {
				require.NoError(t, err)
				assert.Equal(t, n+1, l.loads, "one load per attempt")
				require.Len(t, l.batches, 1)
				assert.Equal(t, uint64(n+1), l.batches[0][0].Expect, "decided on the latest state")
				evs := l.events(subject)
				assert.Equal(t, events.OrgQuotaSet{OrgID: orgID, MaxPins: 100}, evs[len(evs)-1])
				assert.Equal(t, uint64(n+2), app.Seq)
				return
			}
			checkErr(t, err, wantErr{kind: domain.ErrConflict, reason: "CONCURRENT_MODIFICATION", msg: []string{subject, fmt.Sprint(domain.MaxAttempts)}})
			assert.Equal(t, domain.MaxAttempts, l.loads, "gives up after MaxAttempts")
			assert.Equal(t, domain.MaxAttempts, l.appendCalls)
			assert.Empty(t, l.batches, "nothing of ours was stored")
			assert.Len(t, l.events(subject), 1+domain.MaxAttempts, "only the concurrent writes")
		})
	}

	t.Run("ReplacePin re-decides both messages", func(t *testing.T) {
		t.Parallel()
		s, l := newService()
		seedPin(t, l, reqID)
		l.interfere(t, 2, func(int) events.Event {
			return events.PinStatusObserved{OrgID: orgID, RequestID: reqID, Status: "pinned"}
		})
		ev, _, err := s.ReplacePin(ctx, cmdMeta, orgID, reqID, domain.PinSpec{CID: cidV1})
		require.NoError(t, err)
		require.Len(t, l.batches, 1)
		assert.Equal(t, uint64(0), l.batches[0][0].Expect)
		assert.Equal(t, uint64(3), l.batches[0][1].Expect)
		old := l.events(events.PinSubject(orgID, reqID))
		require.Len(t, old, 4)
		assert.Equal(t, events.PinReplaced{OrgID: orgID, RequestID: reqID, ReplacedBy: ev.RequestID}, old[3])
		assert.Equal(t, []events.Event{ev}, l.events(events.PinSubject(orgID, ev.RequestID)))
	})

	t.Run("RemovePin: a concurrent removal turns into not found", func(t *testing.T) {
		t.Parallel()
		s, l := newService()
		seedPin(t, l, reqID)
		l.interfere(t, 1, func(int) events.Event { return removed })
		_, err := s.RemovePin(ctx, cmdMeta, orgID, reqID)
		checkErr(t, err, errOf(domain.ErrNotFound))
		assert.Equal(t, 2, l.loads)
		assert.Empty(t, l.batches)
	})

	t.Run("CreateOrg: a concurrent creation turns into ORG_EXISTS", func(t *testing.T) {
		t.Parallel()
		s, l := newService()
		l.interfere(t, 1, func(int) events.Event { return events.OrgCreated{OrgID: orgID, Slug: orgSlug} })
		_, _, err := s.CreateOrg(ctx, cmdMeta, orgSlug, "Acme")
		checkErr(t, err, wantErr{kind: domain.ErrInvalid, reason: "ORG_EXISTS"})
		assert.Equal(t, 2, l.loads)
	})

	t.Run("other append errors are not retried", func(t *testing.T) {
		t.Parallel()
		s, l := newService()
		seedPin(t, l, reqID)
		unavailable := domain.Errorf(domain.ErrUnavailable, "disk full")
		l.appendErr = unavailable
		_, err := s.RemovePin(ctx, cmdMeta, orgID, reqID)
		assert.ErrorIs(t, err, unavailable)
		assert.Equal(t, 1, l.loads)
		assert.Equal(t, 1, l.appendCalls)
	})

	t.Run("load errors are returned", func(t *testing.T) {
		t.Parallel()
		s, l := newService()
		boom := errors.New("nats down")
		l.loadErr = boom
		_, err := s.RemovePin(ctx, cmdMeta, orgID, reqID)
		assert.ErrorIs(t, err, boom)
		assert.Zero(t, l.appendCalls)
	})
}

func TestCreateOrg(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, l := newService()
	m := domain.Meta{Actor: "admin:alice", Corr: "93bd04cf-0fd6-40f1-b29d-0da9953f48f1"}

	gotID, app, err := s.CreateOrg(ctx, m, orgSlug, "Acme Corporation")
	require.NoError(t, err)
	assert.Equal(t, orgID, gotID)
	assert.Equal(t, uint64(1), app.Seq)
	require.Len(t, l.batches, 1)
	assert.Equal(t, events.OrgSubject(orgID), l.batches[0][0].Subject)
	assert.Equal(t, uint64(0), l.batches[0][0].Expect)
	assert.Equal(t, "admin:alice", l.batches[0][0].Envelope.Actor)
	assert.Equal(t, []events.Event{events.OrgCreated{OrgID: orgID, Slug: orgSlug, Name: "Acme Corporation"}}, l.events(events.OrgSubject(orgID)))

	gotID, _, err = s.CreateOrg(ctx, m, orgSlug, "Another Acme")
	checkErr(t, err, wantErr{kind: domain.ErrInvalid, reason: "ORG_EXISTS", msg: []string{`"acme"`}})
	assert.Equal(t, orgID, gotID)
	assert.Len(t, l.batches, 1)

	loads := l.loads
	_, _, err = s.CreateOrg(ctx, m, "Acme", "")
	checkErr(t, err, errOf(domain.ErrInvalid, "slug"))
	assert.Equal(t, loads, l.loads, "an invalid slug does not touch the log")

	_, _, err = s.CreateOrg(ctx, m, "beta", strings.Repeat("n", 256))
	checkErr(t, err, errOf(domain.ErrInvalid, "255"))
	assert.Len(t, l.batches, 1)
}

func TestSetOrgQuota(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, l := newService()

	_, err := s.SetOrgQuota(ctx, cmdMeta, orgID, 10)
	checkErr(t, err, errOf(domain.ErrNotFound))

	seedOrg(t, l)
	app, err := s.SetOrgQuota(ctx, cmdMeta, orgID, 10)
	require.NoError(t, err)
	assert.Equal(t, uint64(2), app.Seq)

	app, err = s.SetOrgQuota(ctx, cmdMeta, orgID, 10)
	require.NoError(t, err, "an unchanged quota is not an error")
	assert.Equal(t, uint64(2), app.Seq, "nothing appended: the subject's last sequence")
	assert.Len(t, l.batches, 1)

	_, err = s.SetOrgQuota(ctx, cmdMeta, orgID, -5)
	checkErr(t, err, errOf(domain.ErrInvalid))
	assert.Len(t, l.batches, 1)
}

func TestMintToken(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	m := domain.Meta{Actor: "admin:alice"}

	t.Run("missing org", func(t *testing.T) {
		t.Parallel()
		s, l := newService()
		_, _, err := s.MintToken(ctx, m, mintCmd(func(c *domain.MintToken) { c.TokenID = "" }))
		checkErr(t, err, errOf(domain.ErrNotFound, orgID))
		assert.Zero(t, l.appendCalls)
	})

	t.Run("mints with a fresh id", func(t *testing.T) {
		t.Parallel()
		s, l := newService()
		seedOrg(t, l)
		ev, app, err := s.MintToken(ctx, m, mintCmd(func(c *domain.MintToken) { c.TokenID = "" }))
		require.NoError(t, err)
		want := events.TokenMinted{OrgID: orgID, TokenID: id(1), Subject: "ci-deploy", Label: "GitHub Actions deploy",
			Scopes: []string{"pins:read", "pins:write"}, KeyID: "k2026-03",
			IssuedAt: svcNow.Truncate(time.Second), ExpiresAt: svcNow.Truncate(time.Second).Add(720 * time.Hour)}
		assert.Equal(t, want, ev)
		assert.Equal(t, uint64(2), app.Seq)
		require.Len(t, l.batches, 1)
		assert.Equal(t, events.TokenSubject(orgID, id(1)), l.batches[0][0].Subject)
		assert.Equal(t, uint64(0), l.batches[0][0].Expect)
		assert.Equal(t, []events.Event{want}, l.events(events.TokenSubject(orgID, id(1))))
	})

	t.Run("twice with the same id", func(t *testing.T) {
		t.Parallel()
		s, l := newService()
		seedOrg(t, l)
		_, _, err := s.MintToken(ctx, m, mintCmd(nil))
		require.NoError(t, err)
		_, _, err = s.MintToken(ctx, m, mintCmd(nil))
		checkErr(t, err, errOf(domain.ErrConflict, "already exists"))
		assert.Len(t, l.batches, 1)
	})

	t.Run("invalid command", func(t *testing.T) {
		t.Parallel()
		s, l := newService()
		seedOrg(t, l)
		_, _, err := s.MintToken(ctx, m, mintCmd(func(c *domain.MintToken) { c.Scopes = []string{"admin"} }))
		checkErr(t, err, errOf(domain.ErrInvalid, "admin"))
		_, _, err = s.MintToken(ctx, m, mintCmd(func(c *domain.MintToken) { c.KeyID = "" }))
		checkErr(t, err, errOf(domain.ErrUnavailable))
		assert.Zero(t, l.appendCalls)
	})
}

func TestRevokeToken(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, l := newService()
	subject := events.TokenSubject(orgID, tokID)

	_, err := s.RevokeToken(ctx, cmdMeta, orgID, tokID, "lost")
	checkErr(t, err, errOf(domain.ErrNotFound, tokID))

	l.seed(t, subject, minted)
	app, err := s.RevokeToken(ctx, cmdMeta, orgID, tokID, "lost")
	require.NoError(t, err)
	assert.Equal(t, uint64(2), app.Seq)
	assert.Equal(t, []events.Event{minted, revoked}, l.events(subject))

	app, err = s.RevokeToken(ctx, cmdMeta, orgID, tokID, "again")
	require.NoError(t, err, "revoking a revoked token succeeds")
	assert.Equal(t, uint64(2), app.Seq)
	assert.Len(t, l.batches, 1, "and records nothing")
}

func TestRequestPinIdempotencyKey(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	svc, log := newService()
	m := domain.Meta{Actor: "token:t1", IdempotencyKey: "upload-42"}
	spec := domain.PinSpec{CID: "bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi", Name: "a"}
	first, app1, err := svc.RequestPin(ctx, m, orgID, spec)
	require.NoError(t, err)
	require.False(t, app1.Replayed)
	// A retry returns the original request and appends nothing.
	before := log.appendCalls
	again, app2, err := svc.RequestPin(ctx, m, orgID, spec)
	require.NoError(t, err)
	require.True(t, app2.Replayed)
	require.Equal(t, first.RequestID, again.RequestID)
	require.Equal(t, first.Created, again.Created)
	require.Equal(t, before, log.appendCalls)
	// The same key for another pin is refused; another key or org gets its own pin.
	_, _, err = svc.RequestPin(ctx, m, orgID, domain.PinSpec{CID: spec.CID, Name: "b"})
	require.ErrorIs(t, err, domain.ErrInvalid)
	var de *domain.Error
	require.ErrorAs(t, err, &de)
	require.Equal(t, "IDEMPOTENCY_KEY_REUSED", de.Reason)
	other, _, err := svc.RequestPin(ctx, domain.Meta{IdempotencyKey: "upload-43"}, orgID, spec)
	require.NoError(t, err)
	require.NotEqual(t, first.RequestID, other.RequestID)
}
