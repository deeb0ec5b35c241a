-- name: OrgInsert :exec
INSERT INTO orgs (org_id, slug, name, max_pins, created_at, last_seq)
VALUES (@org_id, @slug, @name, 0, @created_at, @last_seq)
ON CONFLICT (org_id) DO NOTHING;

-- name: OrgSetQuota :exec
UPDATE orgs SET max_pins = @max_pins, last_seq = @last_seq WHERE org_id = @org_id;

-- name: OrgGet :one
SELECT org_id, slug, name, max_pins, created_at FROM orgs WHERE org_id = @org_id;

-- name: OrgBySlug :one
SELECT org_id, slug, name, max_pins, created_at FROM orgs WHERE slug = @slug;

-- name: OrgList :many
SELECT o.org_id, o.slug, o.name, o.max_pins, o.created_at, coalesce(s.live_pins, 0)::bigint AS live_pins
FROM orgs o LEFT JOIN pin_org_state s ON s.org_id = o.org_id
ORDER BY o.slug;

-- name: OrgUsage :one
-- Runs as the API role: RLS restricts both tables to the transaction's org.
SELECT coalesce((SELECT live_pins FROM pin_org_state WHERE pin_org_state.org_id = @org_id), 0)::bigint AS live_pins,
       coalesce((SELECT max_pins FROM orgs WHERE orgs.org_id = @org_id), 0)::bigint AS max_pins;
