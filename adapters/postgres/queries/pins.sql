-- Projector side (owner role) ------------------------------------------------------------------------------

-- name: PinOrgStateGet :many
SELECT org_id, last_pos, last_created FROM pin_org_state WHERE org_id = ANY(@org_ids::uuid[]);

-- name: PinOrgStateAdvance :exec
-- Hands out positions and created times up to the given ones, and adds this batch's new pins to live_pins.
INSERT INTO pin_org_state (org_id, last_pos, last_created, live_pins)
SELECT unnest(@org_ids::uuid[]), unnest(@last_pos::bigint[]), unnest(@last_created::timestamptz[]), unnest(@added::bigint[])
ON CONFLICT (org_id) DO UPDATE
SET last_pos = excluded.last_pos, last_created = excluded.last_created, live_pins = pin_org_state.live_pins + excluded.live_pins;

-- name: PinsInsert :exec
-- One statement for a whole batch, counts included (COPY is not allowed on tables under forced row-level
-- security). Empty names and JSON null stand for NULL. A pin placed in the same batch comes with the status,
-- info and placement its placements give it (placed_node, empty for none; see PinsRederive).
WITH ins AS (
    INSERT INTO pins (org_id, request_id, pos, created, status, cid, cid_key, name, name_lower, meta, origins, info, replaces, last_seq, placed_nodes, replicas)
    SELECT r.org_id, r.request_id, r.pos, r.created, r.status, r.cid, r.cid_key, nullif(r.name, ''), nullif(r.name_lower, ''),
           nullif(r.meta, 'null'::jsonb), nullif(r.origins, 'null'::jsonb), nullif(r.info, 'null'::jsonb), nullif(r.replaces, '00000000-0000-0000-0000-000000000000'::uuid), r.last_seq,
           CASE WHEN r.placed_node <> '' THEN ARRAY[r.placed_node] END, r.replicas
    FROM (SELECT unnest(@org_ids::uuid[]) AS org_id, unnest(@request_ids::uuid[]) AS request_id, unnest(@pos::bigint[]) AS pos,
                 unnest(@created::timestamptz[]) AS created, unnest(@statuses::smallint[]) AS status, unnest(@cids::text[]) AS cid,
                 unnest(@cid_keys::bytea[]) AS cid_key, unnest(@names::text[]) AS name, unnest(@name_lowers::text[]) AS name_lower,
                 unnest(@metas::jsonb[]) AS meta, unnest(@origins::jsonb[]) AS origins, unnest(@infos::jsonb[]) AS info,
                 unnest(@replaces::uuid[]) AS replaces, unnest(@last_seqs::bigint[]) AS last_seq,
                 unnest(@placed_nodes::text[]) AS placed_node, unnest(@replicas::smallint[]) AS replicas) r
    RETURNING org_id, status, pos
)
INSERT INTO pin_counts (org_id, status, bucket, n)
SELECT org_id, status, pos / 1024, count(*) FROM ins GROUP BY 1, 2, 3
ON CONFLICT (org_id, status, bucket) DO UPDATE SET n = pin_counts.n + excluded.n;

-- name: PinsDelete :exec
-- Deletes pins and takes them off the counts and live_pins, in one statement.
WITH d AS (
    DELETE FROM pins p
    USING (SELECT unnest(@org_ids::uuid[]) AS org_id, unnest(@request_ids::uuid[]) AS request_id) x
    WHERE p.org_id = x.org_id AND p.request_id = x.request_id
    RETURNING p.org_id, p.status, p.pos
), c AS (
    INSERT INTO pin_counts (org_id, status, bucket, n)
    SELECT org_id, status, pos / 1024, -count(*) FROM d GROUP BY 1, 2, 3
    ON CONFLICT (org_id, status, bucket) DO UPDATE SET n = pin_counts.n + excluded.n
)
UPDATE pin_org_state s SET live_pins = s.live_pins - g.n
FROM (SELECT org_id, count(*) AS n FROM d GROUP BY org_id) g
WHERE s.org_id = g.org_id;

-- API side (API role, org set with set_config('app.org_id', ..., true); RLS scopes every statement) -------------

-- name: PinGet :one
SELECT q.request_id, q.created, q.status, q.cid, q.name, q.meta, q.origins, q.info,
       (SELECT coalesce(array_agg(a ORDER BY n.node_id), '{}')::text[] FROM nodes n CROSS JOIN LATERAL unnest(n.addrs) AS a WHERE n.node_id = ANY(q.placed_nodes)) AS delegates
FROM pins q WHERE q.request_id = @request_id;

-- The list and count queries below come in one variant per driving filter (none, cid, name, meta, name
-- pattern), most selective first, each carrying the remaining filters as plain predicates. Every variant thus
-- always has its driving index condition, so a cached generic plan is as good as a custom one and the API pays no
-- planning per request. Bounds: "created < before" is "pos < the first pos created at or after before" (pos and
-- created grow together within an org), one index probe each.

-- name: PinsList :many
-- Newest first with no content filter: one index range per status (org, status, pos), merged: O(statuses ×
-- limit) rows read, whatever the org's size.
SELECT p.request_id, p.created, p.status, p.cid, p.name, p.meta, p.origins, p.info,
       (SELECT coalesce(array_agg(a ORDER BY n.node_id), '{}')::text[] FROM nodes n CROSS JOIN LATERAL unnest(n.addrs) AS a WHERE n.node_id = ANY(p.placed_nodes)) AS delegates
FROM unnest(@statuses::smallint[]) AS s(status)
CROSS JOIN LATERAL (
    SELECT q.* FROM pins q
    WHERE q.status = s.status
      AND q.pos > (SELECT coalesce((SELECT a.pos FROM pins a WHERE a.created <= sqlc.narg(after)::timestamptz ORDER BY a.created DESC LIMIT 1), 0))
      AND q.pos < (SELECT coalesce((SELECT b.pos FROM pins b WHERE b.created >= sqlc.narg(before)::timestamptz ORDER BY b.created LIMIT 1), 9223372036854775807))
    ORDER BY q.pos DESC
    LIMIT @lim::int
) p
ORDER BY p.pos DESC
LIMIT @lim::int;

-- Content filters are driven structurally: a MATERIALIZED CTE (or the search function) finds the matches with
-- its own index first, so no cost estimate of a generic plan can route the query through the (status, pos)
-- range instead. They cost O(matches), which is small for CIDs and names.

-- name: PinsListByCID :many
WITH m AS MATERIALIZED (SELECT * FROM pins WHERE cid_key = ANY(@cid_keys::bytea[]))
SELECT q.request_id, q.created, q.status, q.cid, q.name, q.meta, q.origins, q.info,
       (SELECT coalesce(array_agg(a ORDER BY n.node_id), '{}')::text[] FROM nodes n CROSS JOIN LATERAL unnest(n.addrs) AS a WHERE n.node_id = ANY(q.placed_nodes)) AS delegates
FROM m q
WHERE q.status = ANY(@statuses::smallint[])
  AND q.pos > (SELECT coalesce((SELECT a.pos FROM pins a WHERE a.created <= sqlc.narg(after)::timestamptz ORDER BY a.created DESC LIMIT 1), 0))
  AND q.pos < (SELECT coalesce((SELECT b.pos FROM pins b WHERE b.created >= sqlc.narg(before)::timestamptz ORDER BY b.created LIMIT 1), 9223372036854775807))
  AND (sqlc.narg(name_lower)::text IS NULL OR (q.name_lower = sqlc.narg(name_lower)::text AND (NOT @name_exact::boolean OR q.name = sqlc.narg(name)::text)))
  AND (sqlc.narg(name_pattern)::text IS NULL OR q.request_id IN (SELECT f.request_id FROM pins_matching_name(sqlc.narg(name_pattern)::text, sqlc.narg(name_lower_pattern)::text, @name_ci::boolean) AS f(request_id, pos, status)))
  AND (sqlc.narg(meta)::jsonb IS NULL OR q.meta @> sqlc.narg(meta)::jsonb)
ORDER BY q.pos DESC
LIMIT @lim::int;

-- name: PinsListByName :many
WITH m AS MATERIALIZED (SELECT * FROM pins WHERE name_lower = @name_lower::text)
SELECT q.request_id, q.created, q.status, q.cid, q.name, q.meta, q.origins, q.info,
       (SELECT coalesce(array_agg(a ORDER BY n.node_id), '{}')::text[] FROM nodes n CROSS JOIN LATERAL unnest(n.addrs) AS a WHERE n.node_id = ANY(q.placed_nodes)) AS delegates
FROM m q
WHERE q.status = ANY(@statuses::smallint[])
  AND q.pos > (SELECT coalesce((SELECT a.pos FROM pins a WHERE a.created <= sqlc.narg(after)::timestamptz ORDER BY a.created DESC LIMIT 1), 0))
  AND q.pos < (SELECT coalesce((SELECT b.pos FROM pins b WHERE b.created >= sqlc.narg(before)::timestamptz ORDER BY b.created LIMIT 1), 9223372036854775807))
  AND (NOT @name_exact::boolean OR q.name = @name::text)
  AND (sqlc.narg(meta)::jsonb IS NULL OR q.meta @> sqlc.narg(meta)::jsonb)
ORDER BY q.pos DESC
LIMIT @lim::int;

-- name: PinsListByMeta :many
-- Driven by pin_meta (migration 000004): one index range per status over the pins holding the filter's driving
-- pair (its only pair, or the one with the fewest pins), merged newest first like PinsList, each pin checked
-- against the whole filter: O(statuses x limit) rows read for a one-pair filter, whatever the org's size.
WITH d AS MATERIALIZED (
    SELECT pin_meta_kv(e.key, e.value) AS kv FROM jsonb_each(@meta::jsonb) AS e
    ORDER BY CASE WHEN (SELECT count(*) FROM jsonb_object_keys(@meta::jsonb)) = 1 THEN 0
                  ELSE (SELECT coalesce(sum(c.n), 0) FROM pin_meta_counts c WHERE c.kv = pin_meta_kv(e.key, e.value)) END
    LIMIT 1
)
SELECT p.request_id, p.created, p.status, p.cid, p.name, p.meta, p.origins, p.info,
       (SELECT coalesce(array_agg(a ORDER BY n.node_id), '{}')::text[] FROM nodes n CROSS JOIN LATERAL unnest(n.addrs) AS a WHERE n.node_id = ANY(p.placed_nodes)) AS delegates
FROM unnest(@statuses::smallint[]) AS s(status)
CROSS JOIN LATERAL (
    SELECT q.* FROM pin_meta m JOIN pins q ON q.status = m.status AND q.pos = m.pos
    WHERE m.kv = (SELECT d.kv FROM d) AND m.status = s.status
      AND m.pos > (SELECT coalesce((SELECT a.pos FROM pins a WHERE a.created <= sqlc.narg(after)::timestamptz ORDER BY a.created DESC LIMIT 1), 0))
      AND m.pos < (SELECT coalesce((SELECT b.pos FROM pins b WHERE b.created >= sqlc.narg(before)::timestamptz ORDER BY b.created LIMIT 1), 9223372036854775807))
      AND q.meta @> @meta::jsonb
      AND (sqlc.narg(name_pattern)::text IS NULL OR (q.name_lower LIKE sqlc.narg(name_lower_pattern)::text AND (@name_ci::boolean OR q.name LIKE sqlc.narg(name_pattern)::text)))
    ORDER BY m.pos DESC
    LIMIT @lim::int
) p
ORDER BY p.pos DESC
LIMIT @lim::int;

-- name: PinsListByNamePattern :many
-- A name-pattern filter's page and its count from one search: the trigram search's matches are found once, where
-- a list and a count statement each searched them (the search is O(names the pattern matches)). Every row carries
-- the count; no row means no match.
WITH f AS MATERIALIZED (
    SELECT f.request_id, f.pos FROM pins_matching_name(@name_pattern::text, @name_lower_pattern::text, @name_ci::boolean) AS f(request_id, pos, status)
    WHERE f.status = ANY(@statuses::smallint[])
      AND f.pos > (SELECT coalesce((SELECT a.pos FROM pins a WHERE a.created <= sqlc.narg(after)::timestamptz ORDER BY a.created DESC LIMIT 1), 0))
      AND f.pos < (SELECT coalesce((SELECT b.pos FROM pins b WHERE b.created >= sqlc.narg(before)::timestamptz ORDER BY b.created LIMIT 1), 9223372036854775807))
), m AS MATERIALIZED (
    SELECT f.request_id, f.pos FROM f ORDER BY f.pos DESC LIMIT @lim::int
)
SELECT q.request_id, q.created, q.status, q.cid, q.name, q.meta, q.origins, q.info,
       (SELECT coalesce(array_agg(a ORDER BY n.node_id), '{}')::text[] FROM nodes n CROSS JOIN LATERAL unnest(n.addrs) AS a WHERE n.node_id = ANY(q.placed_nodes)) AS delegates,
       (SELECT count(*) FROM f)::bigint AS total
FROM m JOIN pins q ON q.request_id = m.request_id
ORDER BY q.pos DESC;

-- name: PinsCountByCID :one
WITH m AS MATERIALIZED (SELECT * FROM pins WHERE cid_key = ANY(@cid_keys::bytea[]))
SELECT count(*)::bigint AS n FROM m q
WHERE q.status = ANY(@statuses::smallint[])
  AND q.pos > (SELECT coalesce((SELECT a.pos FROM pins a WHERE a.created <= sqlc.narg(after)::timestamptz ORDER BY a.created DESC LIMIT 1), 0))
  AND q.pos < (SELECT coalesce((SELECT b.pos FROM pins b WHERE b.created >= sqlc.narg(before)::timestamptz ORDER BY b.created LIMIT 1), 9223372036854775807))
  AND (sqlc.narg(name_lower)::text IS NULL OR (q.name_lower = sqlc.narg(name_lower)::text AND (NOT @name_exact::boolean OR q.name = sqlc.narg(name)::text)))
  AND (sqlc.narg(name_pattern)::text IS NULL OR q.request_id IN (SELECT f.request_id FROM pins_matching_name(sqlc.narg(name_pattern)::text, sqlc.narg(name_lower_pattern)::text, @name_ci::boolean) AS f(request_id, pos, status)))
  AND (sqlc.narg(meta)::jsonb IS NULL OR q.meta @> sqlc.narg(meta)::jsonb);

-- name: PinsCountByName :one
WITH m AS MATERIALIZED (SELECT * FROM pins WHERE name_lower = @name_lower::text)
SELECT count(*)::bigint AS n FROM m q
WHERE q.status = ANY(@statuses::smallint[])
  AND q.pos > (SELECT coalesce((SELECT a.pos FROM pins a WHERE a.created <= sqlc.narg(after)::timestamptz ORDER BY a.created DESC LIMIT 1), 0))
  AND q.pos < (SELECT coalesce((SELECT b.pos FROM pins b WHERE b.created >= sqlc.narg(before)::timestamptz ORDER BY b.created LIMIT 1), 9223372036854775807))
  AND (NOT @name_exact::boolean OR q.name = @name::text)
  AND (sqlc.narg(meta)::jsonb IS NULL OR q.meta @> sqlc.narg(meta)::jsonb);

-- name: PinsCountByMeta :one
-- A one-pair filter (without a name pattern) counts like PinsCountPositions, from pin_meta_counts and the two
-- partial buckets in pin_meta: O(limit + pins/1024). Otherwise the pins holding the driving pair are checked
-- one by one: O(pins holding that pair).
WITH d AS MATERIALIZED (
    SELECT pin_meta_kv(e.key, e.value) AS kv FROM jsonb_each(@meta::jsonb) AS e
    ORDER BY CASE WHEN (SELECT count(*) FROM jsonb_object_keys(@meta::jsonb)) = 1 THEN 0
                  ELSE (SELECT coalesce(sum(c.n), 0) FROM pin_meta_counts c WHERE c.kv = pin_meta_kv(e.key, e.value)) END
    LIMIT 1
), bounds AS MATERIALIZED (
    SELECT coalesce((SELECT a.pos FROM pins a WHERE a.created <= sqlc.narg(after)::timestamptz ORDER BY a.created DESC LIMIT 1), 0) AS lo,
           coalesce((SELECT b.pos FROM pins b WHERE b.created >= sqlc.narg(before)::timestamptz ORDER BY b.created LIMIT 1), 9223372036854775807) AS hi
), k AS MATERIALIZED (
    SELECT lo, hi, lo / 1024 AS lo_bucket, hi / 1024 AS hi_bucket, (SELECT d.kv FROM d) AS kv FROM bounds
)
SELECT (CASE WHEN (SELECT count(*) FROM jsonb_object_keys(@meta::jsonb)) = 1 AND sqlc.narg(name_pattern)::text IS NULL THEN
    (SELECT count(*) FROM pin_meta m
     WHERE m.kv = (SELECT kv FROM k) AND m.status = ANY(@statuses::smallint[])
       AND m.pos > (SELECT lo FROM k) AND m.pos < (SELECT least(hi, (lo_bucket + 1) * 1024) FROM k))
  + (SELECT coalesce(sum(c.n), 0) FROM pin_meta_counts c
     WHERE c.kv = (SELECT kv FROM k) AND c.status = ANY(@statuses::smallint[])
       AND c.bucket > (SELECT lo_bucket FROM k) AND c.bucket < (SELECT hi_bucket FROM k))
  + (SELECT count(*) FROM pin_meta m
     WHERE m.kv = (SELECT kv FROM k) AND m.status = ANY(@statuses::smallint[])
       AND m.pos >= (SELECT CASE WHEN lo_bucket < hi_bucket THEN hi_bucket * 1024 ELSE 9223372036854775807 END FROM k)
       AND m.pos < (SELECT hi FROM k))
ELSE
    (SELECT count(*) FROM pin_meta m JOIN pins q ON q.status = m.status AND q.pos = m.pos
     WHERE m.kv = (SELECT kv FROM k) AND m.status = ANY(@statuses::smallint[])
       AND m.pos > (SELECT lo FROM k) AND m.pos < (SELECT hi FROM k)
       AND q.meta @> @meta::jsonb
       AND (sqlc.narg(name_pattern)::text IS NULL OR (q.name_lower LIKE sqlc.narg(name_lower_pattern)::text AND (@name_ci::boolean OR q.name LIKE sqlc.narg(name_pattern)::text))))
END)::bigint AS n;

-- name: PinsCountPositions :one
-- Count of statuses within the bounds: whole 1024-position buckets from pin_counts, plus index-only counts of
-- the partial buckets at both ends (at most 1024 index entries each): O(limit + pins/1024), never O(pins).
WITH bounds AS MATERIALIZED (
    SELECT coalesce((SELECT a.pos FROM pins a WHERE a.created <= sqlc.narg(after)::timestamptz ORDER BY a.created DESC LIMIT 1), 0) AS lo,
           coalesce((SELECT b.pos FROM pins b WHERE b.created >= sqlc.narg(before)::timestamptz ORDER BY b.created LIMIT 1), 9223372036854775807) AS hi
), k AS MATERIALIZED (
    SELECT lo, hi, lo / 1024 AS lo_bucket, hi / 1024 AS hi_bucket FROM bounds
)
SELECT (
    (SELECT count(*) FROM pins q
     WHERE q.status = ANY(@statuses::smallint[])
       AND q.pos > (SELECT lo FROM k) AND q.pos < (SELECT least(hi, (lo_bucket + 1) * 1024) FROM k))
  + (SELECT coalesce(sum(c.n), 0) FROM pin_counts c
     WHERE c.status = ANY(@statuses::smallint[])
       AND c.bucket > (SELECT lo_bucket FROM k) AND c.bucket < (SELECT hi_bucket FROM k))
  + (SELECT count(*) FROM pins q
     WHERE q.status = ANY(@statuses::smallint[])
       AND q.pos >= (SELECT CASE WHEN lo_bucket < hi_bucket THEN hi_bucket * 1024 ELSE 9223372036854775807 END FROM k)
       AND q.pos < (SELECT hi FROM k))
)::bigint AS n;

-- name: PinCountsAdd :exec
-- Adds to the counts of pins written by COPY (a rebuild's copies: see PinsProjector.ApplyBulk).
INSERT INTO pin_counts (org_id, status, bucket, n)
SELECT unnest(@org_ids::uuid[]), unnest(@statuses::smallint[]), unnest(@buckets::bigint[]), unnest(@ns::bigint[])
ON CONFLICT (org_id, status, bucket) DO UPDATE SET n = pin_counts.n + excluded.n;
