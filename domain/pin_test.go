package domain_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"

	"github.com/anchorage-pin/anchorage/domain"
	"github.com/anchorage-pin/anchorage/events"
)

var (
	pinSpec = domain.PinSpec{CID: cidV1, Name: "website-v2.4.0",
		Origins: []string{"/ip4/203.0.113.7/tcp/4001/p2p/" + peerA}, Meta: map[string]string{"app": "website"}}
	requested = events.PinRequested{OrgID: orgID, RequestID: reqID, CID: cidV1, Name: "website-v2.4.0",
		Origins: []string{"/ip4/203.0.113.7/tcp/4001/p2p/" + peerA}, Meta: map[string]string{"app": "website"},
		Created: time.Date(2026, 3, 14, 9, 26, 53, 589e6, time.UTC)}
	removed  = events.PinRemoved{OrgID: orgID, RequestID: reqID}
	replaced = events.PinReplaced{OrgID: orgID, RequestID: reqID, ReplacedBy: newReq}
)

func TestPinApply(t *testing.T) {
	t.Parallel()
	p := given(domain.Pin{RequestID: reqID}, requested)
	assert.True(t, p.Live())
	assert.Equal(t, domain.Pin{OrgID: orgID, RequestID: reqID, Spec: pinSpec, Exists: true}, *p)

	for _, gone := range []events.Event{removed, replaced} {
		p := given(domain.Pin{RequestID: reqID}, requested, events.PinStatusObserved{OrgID: orgID, RequestID: reqID, Status: "pinned"}, gone)
		assert.False(t, p.Live(), "after %T", gone)
		assert.True(t, p.Exists)
	}
	assert.False(t, given(domain.Pin{RequestID: reqID}).Live())
}

func TestRequest(t *testing.T) {
	t.Parallel()
	ev := domain.Request(orgID, reqID, pinSpec)
	want := requested
	want.Created = time.Time{} // the service stamps it
	assert.Equal(t, want, ev)
}

func TestPinRemove(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		given []events.Event
		want  events.Event
		err   wantErr
	}{
		{name: "live", given: []events.Event{requested}, want: removed},
		{name: "live with observations", given: []events.Event{requested, events.PinStatusObserved{OrgID: orgID, RequestID: reqID, Status: "pinned"}},
			want: removed},
		{name: "never requested", err: errOf(domain.ErrNotFound, reqID)},
		{name: "already removed", given: []events.Event{requested, removed}, err: errOf(domain.ErrNotFound, reqID)},
		{name: "replaced", given: []events.Event{requested, replaced}, err: errOf(domain.ErrNotFound, reqID)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p := given(domain.Pin{RequestID: reqID}, tc.given...)
			ev, err := p.Remove()
			checkErr(t, err, tc.err)
			assert.Equal(t, tc.want, ev)
		})
	}
}

func TestPinReplace(t *testing.T) {
	t.Parallel()
	newSpec := domain.PinSpec{CID: cidV0, Name: "website-v2.5.0", Meta: map[string]string{"app": "website", "release": "v2.5.0"}}
	for _, tc := range []struct {
		name         string
		given        []events.Event
		wantReplaced events.PinReplaced
		wantReq      events.PinRequested
		err          wantErr
	}{
		{name: "live", given: []events.Event{requested},
			wantReplaced: replaced,
			wantReq: events.PinRequested{OrgID: orgID, RequestID: newReq, CID: cidV0, Name: "website-v2.5.0",
				Meta: map[string]string{"app": "website", "release": "v2.5.0"}, Replaces: reqID}},
		{name: "never requested", err: errOf(domain.ErrNotFound, reqID)},
		{name: "removed", given: []events.Event{requested, removed}, err: errOf(domain.ErrNotFound)},
		{name: "replaced already", given: []events.Event{requested, replaced}, err: errOf(domain.ErrNotFound)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p := given(domain.Pin{RequestID: reqID}, tc.given...)
			rp, rq, err := p.Replace(newReq, newSpec)
			checkErr(t, err, tc.err)
			assert.Equal(t, tc.wantReplaced, rp)
			assert.Equal(t, tc.wantReq, rq)
			if err == nil {
				assert.NotEqual(t, rp.RequestID, rq.RequestID, "the new request has its own id")
				assert.Equal(t, rp.ReplacedBy, rq.RequestID)
				assert.Equal(t, rp.RequestID, rq.Replaces)
			}
		})
	}
}
