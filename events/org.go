package events

// OrgCreated is recorded when an operator creates an organisation (a tenant). Subject orgs.<org>.
type OrgCreated struct {
	OrgID string `json:"org_id"`
	// Slug is the unique, human-readable handle ("dev", "acme").
	Slug string `json:"slug"`
	Name string `json:"name,omitempty"`
}

func (OrgCreated) EventType() Type   { return "org.created" }
func (OrgCreated) EventVersion() int { return 1 }

// OrgQuotaSet is recorded when an org's pin quota changes. MaxPins 0 means unlimited. Subject orgs.<org>.
type OrgQuotaSet struct {
	OrgID   string `json:"org_id"`
	MaxPins int64  `json:"max_pins"`
}

func (OrgQuotaSet) EventType() Type   { return "org.quota_set" }
func (OrgQuotaSet) EventVersion() int { return 1 }

func init() {
	register[OrgCreated]()
	register[OrgQuotaSet]()
}
