package domain_test

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/anchorage-pin/anchorage/domain"
	"github.com/anchorage-pin/anchorage/events"
)

func TestOrgIDForSlugIsStable(t *testing.T) {
	t.Parallel()
	// Org ids derive from slugs and name every org subject on the log: the mapping must never change.
	assert.Equal(t, orgID, domain.OrgIDForSlug("acme"))
	assert.Equal(t, domain.OrgIDForSlug("dev"), domain.OrgIDForSlug("dev"))
	assert.NotEqual(t, domain.OrgIDForSlug("dev"), domain.OrgIDForSlug("dev2"))
	assert.True(t, domain.ValidID(domain.OrgIDForSlug("dev")))
	assert.NoError(t, events.ValidToken(domain.OrgIDForSlug("dev")))
}

func TestValidateSlug(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		slug string
		ok   bool
	}{
		{"a", true},
		{"0", true},
		{"dev", true},
		{"acme-corp", true},
		{"0day", true},
		{"a-", true},
		{"a--b", true},
		{strings.Repeat("a", 63), true},
		{strings.Repeat("a", 64), false},
		{"", false},
		{"Acme", false},
		{"ACME", false},
		{"-acme", false},
		{"acme_corp", false},
		{"acme.corp", false},
		{"acme corp", false},
		{"acme\n", false},
		{"acme*", false},
		{"café", false},
		{"ａｃｍｅ", false},
		{"аcme", false}, // Cyrillic а
	} {
		err := domain.ValidateSlug(tc.slug)
		if tc.ok {
			assert.NoError(t, err, "slug %q", tc.slug)
		} else {
			checkErr(t, err, errOf(domain.ErrInvalid, "org slug", "1-63 lowercase"))
		}
	}
}

func TestOrgCreate(t *testing.T) {
	t.Parallel()
	created := events.OrgCreated{OrgID: orgID, Slug: orgSlug, Name: "Acme Corporation"}
	for _, tc := range []struct {
		name       string
		given      []events.Event
		slug, orgN string
		want       events.Event
		err        wantErr
	}{
		{name: "new org", slug: "acme", orgN: "Acme Corporation", want: created},
		{name: "no display name", slug: "acme", want: events.OrgCreated{OrgID: orgID, Slug: "acme"}},
		{name: "63-char slug", slug: strings.Repeat("x", 63),
			want: events.OrgCreated{OrgID: domain.OrgIDForSlug(strings.Repeat("x", 63)), Slug: strings.Repeat("x", 63)}},
		{name: "name of 255 bytes", slug: "acme", orgN: strings.Repeat("n", 255),
			want: events.OrgCreated{OrgID: orgID, Slug: "acme", Name: strings.Repeat("n", 255)}},
		{name: "unicode name", slug: "acme", orgN: "Ácme Ünïcode 株式会社",
			want: events.OrgCreated{OrgID: orgID, Slug: "acme", Name: "Ácme Ünïcode 株式会社"}},
		{name: "uppercase slug", slug: "Acme", err: errOf(domain.ErrInvalid, `"Acme"`)},
		{name: "leading dash", slug: "-acme", err: errOf(domain.ErrInvalid)},
		{name: "64-char slug", slug: strings.Repeat("x", 64), err: errOf(domain.ErrInvalid)},
		{name: "unicode slug", slug: "äcme", err: errOf(domain.ErrInvalid)},
		{name: "empty slug", slug: "", err: errOf(domain.ErrInvalid)},
		{name: "name of 256 bytes", slug: "acme", orgN: strings.Repeat("n", 256), err: errOf(domain.ErrInvalid, "256", "255")},
		{name: "name with NUL", slug: "acme", orgN: "Acme\x00Corp", err: errOf(domain.ErrInvalid, "NUL")},
		{name: "name not UTF-8", slug: "acme", orgN: "Acme\xff", err: errOf(domain.ErrInvalid, "UTF-8")},
		{name: "already exists", given: []events.Event{created}, slug: "acme", orgN: "Again",
			err: wantErr{kind: domain.ErrInvalid, reason: "ORG_EXISTS", msg: []string{`"acme" already exists`}}},
		{name: "exists with a quota", given: []events.Event{created, events.OrgQuotaSet{OrgID: orgID, MaxPins: 5}}, slug: "acme",
			err: wantErr{kind: domain.ErrInvalid, reason: "ORG_EXISTS"}},
		{name: "invalid slug is reported before existence", given: []events.Event{created}, slug: "ACME", err: errOf(domain.ErrInvalid)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			o := given(domain.Org{}, tc.given...)
			ev, err := o.Create(tc.slug, tc.orgN)
			checkErr(t, err, tc.err)
			assert.Equal(t, tc.want, ev)
		})
	}
}

func TestOrgApply(t *testing.T) {
	t.Parallel()
	o := given(domain.Org{},
		events.OrgCreated{OrgID: orgID, Slug: "acme", Name: "Acme"},
		events.OrgQuotaSet{OrgID: orgID, MaxPins: 10},
		events.PinRemoved{OrgID: orgID, RequestID: reqID}, // other aggregates' events are ignored
		events.OrgQuotaSet{OrgID: orgID, MaxPins: 20},
	)
	assert.Equal(t, domain.Org{ID: orgID, Slug: "acme", Name: "Acme", MaxPins: 20, Exists: true}, *o)
}

func TestOrgSetQuota(t *testing.T) {
	t.Parallel()
	created := events.OrgCreated{OrgID: orgID, Slug: orgSlug}
	for _, tc := range []struct {
		name  string
		given []events.Event
		max   int64
		want  events.Event
		err   wantErr
	}{
		{name: "unknown org", max: 10, err: errOf(domain.ErrNotFound)},
		{name: "unknown org, negative", max: -1, err: errOf(domain.ErrNotFound)},
		{name: "negative", given: []events.Event{created}, max: -1, err: errOf(domain.ErrInvalid, "-1")},
		{name: "unlimited to limited", given: []events.Event{created}, max: 100, want: events.OrgQuotaSet{OrgID: orgID, MaxPins: 100}},
		{name: "unchanged unlimited", given: []events.Event{created}, max: 0},
		{name: "unchanged limit", given: []events.Event{created, events.OrgQuotaSet{OrgID: orgID, MaxPins: 100}}, max: 100},
		{name: "raised", given: []events.Event{created, events.OrgQuotaSet{OrgID: orgID, MaxPins: 100}}, max: 101,
			want: events.OrgQuotaSet{OrgID: orgID, MaxPins: 101}},
		{name: "back to unlimited", given: []events.Event{created, events.OrgQuotaSet{OrgID: orgID, MaxPins: 100}}, max: 0,
			want: events.OrgQuotaSet{OrgID: orgID, MaxPins: 0}},
		{name: "the last quota counts", given: []events.Event{created, events.OrgQuotaSet{OrgID: orgID, MaxPins: 100},
			events.OrgQuotaSet{OrgID: orgID, MaxPins: 7}}, max: 7},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			o := given(domain.Org{}, tc.given...)
			ev, err := o.SetQuota(tc.max)
			checkErr(t, err, tc.err)
			assert.Equal(t, tc.want, ev)
		})
	}
}
