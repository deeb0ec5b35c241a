package domain

import (
	"regexp"

	"github.com/anchorage-pin/anchorage/events"
	"github.com/google/uuid"
)

var slugRE = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,62}$`)

// orgNamespace derives org ids from slugs, so "create org dev" twice is an optimistic-concurrency conflict on
// the same subject: uniqueness without a separate reservation.
var orgNamespace = uuid.MustParse("6f0c5a2e-8f1e-4a53-9a4f-3a6b1f0e2c77")

// OrgIDForSlug returns the org id a slug maps to.
func OrgIDForSlug(slug string) string { return uuid.NewSHA1(orgNamespace, []byte(slug)).String() }

// ValidateSlug checks an org slug.
func ValidateSlug(slug string) error {
	if !slugRE.MatchString(slug) {
		return Errorf(ErrInvalid, "org slug %q is invalid: use 1-63 lowercase letters, digits and '-', starting with a letter or digit", clip(slug))
	}
	return nil
}

// Org is the write-side state of an organisation.
type Org struct {
	ID      string
	Slug    string
	Name    string
	MaxPins int64
	Exists  bool
}

// Apply folds one event into the state.
func (o *Org) Apply(e events.Event) {
	switch e := e.(type) {
	case events.OrgCreated:
		o.ID, o.Slug, o.Name, o.Exists = e.OrgID, e.Slug, e.Name, true
	case events.OrgQuotaSet:
		o.MaxPins = e.MaxPins
	}
}

// Create decides the creation of an org.
func (o *Org) Create(slug, name string) (events.Event, error) {
	if err := ValidateSlug(slug); err != nil {
		return nil, err
	}
	if len(name) > 255 {
		return nil, Errorf(ErrInvalid, "org name is %d bytes long; the limit is 255", len(name))
	}
	if err := checkText("org name", name); err != nil {
		return nil, err
	}
	if o.Exists {
		return nil, ReasonErrorf(ErrInvalid, "ORG_EXISTS", "org %q already exists", slug)
	}
	return events.OrgCreated{OrgID: OrgIDForSlug(slug), Slug: slug, Name: name}, nil
}

// SetQuota decides a quota change; 0 means unlimited.
func (o *Org) SetQuota(maxPins int64) (events.Event, error) {
	if !o.Exists {
		return nil, Errorf(ErrNotFound, "org does not exist")
	}
	if maxPins < 0 {
		return nil, Errorf(ErrInvalid, "quota must be 0 (unlimited) or a positive number of pins, not %d", maxPins)
	}
	if maxPins == o.MaxPins {
		return nil, nil
	}
	return events.OrgQuotaSet{OrgID: o.ID, MaxPins: maxPins}, nil
}
