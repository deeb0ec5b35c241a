-- Projector side (owner role) ------------------------------------------------------------------------------

-- name: PinOrgStateLock :many
SELECT org_id, last_pos, last_created, live_pins FROM pin_org_state
WHERE org_id = ANY(@org_ids::uuid[]) FOR UPDATE;

-- name: PinOrgStateSave :exec
INSERT INTO pin_org_state (org_id, last_pos, last_created, live_pins)
SELECT unnest(@org_ids::uuid[]), unnest(@last_pos::bigint[]), unnest(@last_created::timestamptz[]), unnest(@live_pins::bigint[])
ON CONFLICT (org_id) DO UPDATE
SET last_pos = excluded.last_pos, last_created = excluded.last_created, live_pins = excluded.live_pins;

-- name: PinsInsert :exec
-- One statement for a whole batch (COPY is not allowed on tables under forced row-level security). Empty names
-- and JSON null stand for NULL.
INSERT INTO pins (org_id, request_id, pos, created, status, cid, cid_key, name, name_lower, meta, origins, info, last_seq)
SELECT r.org_id, r.request_id, r.pos, r.created, r.status, r.cid, r.cid_key, nullif(r.name, ''), nullif(r.name_lower, ''),
       nullif(r.meta, 'null'::jsonb), nullif(r.origins, 'null'::jsonb), nullif(r.info, 'null'::jsonb), r.last_seq
FROM (SELECT unnest(@org_ids::uuid[]) AS org_id, unnest(@request_ids::uuid[]) AS request_id, unnest(@pos::bigint[]) AS pos,
             unnest(@created::timestamptz[]) AS created, unnest(@statuses::smallint[]) AS status, unnest(@cids::text[]) AS cid,
             unnest(@cid_keys::bytea[]) AS cid_key, unnest(@names::text[]) AS name, unnest(@name_lowers::text[]) AS name_lower,
             unnest(@metas::jsonb[]) AS meta, unnest(@origins::jsonb[]) AS origins, unnest(@infos::jsonb[]) AS info,
             unnest(@last_seqs::bigint[]) AS last_seq) r;

-- name: PinsDelete :many
DELETE FROM pins p
USING (SELECT unnest(@org_ids::uuid[]) AS org_id, unnest(@request_ids::uuid[]) AS request_id) d
WHERE p.org_id = d.org_id AND p.request_id = d.request_id
RETURNING p.org_id, p.status, p.pos;

-- name: PinsSetStatus :many
-- Applies status observations; returns old and new status so the counts can move.
UPDATE pins p SET status = u.status, info = u.info, last_seq = u.last_seq
FROM (SELECT unnest(@org_ids::uuid[]) AS org_id, unnest(@request_ids::uuid[]) AS request_id,
             unnest(@statuses::smallint[]) AS status, unnest(@infos::jsonb[]) AS info, unnest(@last_seqs::bigint[]) AS last_seq) u,
     LATERAL (SELECT q.status AS old_status FROM pins q WHERE q.org_id = u.org_id AND q.request_id = u.request_id) o
WHERE p.org_id = u.org_id AND p.request_id = u.request_id
RETURNING p.org_id, p.pos, o.old_status::smallint AS old_status, p.status AS new_status;

-- name: PinCountsAdd :exec
INSERT INTO pin_counts (org_id, status, bucket, n)
SELECT unnest(@org_ids::uuid[]), unnest(@statuses::smallint[]), unnest(@buckets::bigint[]), unnest(@deltas::bigint[])
ON CONFLICT (org_id, status, bucket) DO UPDATE SET n = pin_counts.n + excluded.n;

-- API side (API role, org set with set_config('app.org_id', ..., true); RLS scopes every statement) -------------

-- name: PinGet :one
SELECT request_id, created, status, cid, name, meta, origins, info, delegates
FROM pins WHERE request_id = @request_id;

-- name: PinsPosBefore :one
-- The first position created at or after @before: "created < before" is "pos < this".
SELECT coalesce((SELECT pos FROM pins WHERE created >= @before ORDER BY created LIMIT 1), 9223372036854775807)::bigint AS pos;

-- name: PinsPosAfter :one
-- The last position created at or before @after: "created > after" is "pos > this".
SELECT coalesce((SELECT pos FROM pins WHERE created <= @after ORDER BY created DESC LIMIT 1), 0)::bigint AS pos;

-- name: PinsList :many
-- Newest first within (lo, hi) positions. One index range per status (org, status, pos), merged: O(statuses ×
-- limit) rows read, whatever the org's size. Optional filters are NULL when unused (the API pool plans every
-- execution with its parameters, so unused filters fold away).
SELECT p.request_id, p.created, p.status, p.cid, p.name, p.meta, p.origins, p.info, p.delegates
FROM unnest(@statuses::smallint[]) AS s(status)
CROSS JOIN LATERAL (
    SELECT q.* FROM pins q
    WHERE q.status = s.status AND q.pos > @lo::bigint AND q.pos < @hi::bigint
      AND (sqlc.narg(cid_keys)::bytea[] IS NULL OR q.cid_key = ANY(sqlc.narg(cid_keys)::bytea[]))
      AND (sqlc.narg(name)::text IS NULL OR q.name = sqlc.narg(name)::text)
      AND (sqlc.narg(name_lower)::text IS NULL OR q.name_lower = sqlc.narg(name_lower)::text)
      AND (sqlc.narg(name_pattern)::text IS NULL
           OR q.request_id IN (SELECT pins_matching_name(sqlc.narg(name_pattern)::text, sqlc.narg(name_lower_pattern)::text, @name_ci::boolean)))
      AND (sqlc.narg(meta)::jsonb IS NULL OR q.request_id IN (SELECT pins_matching_meta(sqlc.narg(meta)::jsonb)))
    ORDER BY q.pos DESC
    LIMIT @lim::int
) p
ORDER BY p.pos DESC
LIMIT @lim::int;

-- name: PinsCountFiltered :one
-- Count with content filters (cid, name, meta): these match few pins and use their own indexes.
SELECT count(*)::bigint FROM pins q
WHERE q.status = ANY(@statuses::smallint[]) AND q.pos > @lo::bigint AND q.pos < @hi::bigint
  AND (sqlc.narg(cid_keys)::bytea[] IS NULL OR q.cid_key = ANY(sqlc.narg(cid_keys)::bytea[]))
  AND (sqlc.narg(name)::text IS NULL OR q.name = sqlc.narg(name)::text)
  AND (sqlc.narg(name_lower)::text IS NULL OR q.name_lower = sqlc.narg(name_lower)::text)
  AND (sqlc.narg(name_pattern)::text IS NULL
       OR q.request_id IN (SELECT pins_matching_name(sqlc.narg(name_pattern)::text, sqlc.narg(name_lower_pattern)::text, @name_ci::boolean)))
  AND (sqlc.narg(meta)::jsonb IS NULL OR q.request_id IN (SELECT pins_matching_meta(sqlc.narg(meta)::jsonb)));

-- name: PinsCountPositions :one
-- Count of statuses within (lo, hi) positions: whole 1024-position buckets from pin_counts, plus index-only counts
-- of the partial buckets at both ends (at most 1024 index entries each). The caller passes lo's bucket, the end of
-- it (lo_end = (lo_bucket+1)*1024), hi's bucket and its start (hi_start = hi_bucket*1024).
SELECT (
    (SELECT count(*) FROM pins q
     WHERE q.status = ANY(@statuses::smallint[]) AND q.pos > @lo::bigint AND q.pos < least(@hi::bigint, @lo_end::bigint))
  + CASE WHEN @lo_bucket::bigint < @hi_bucket::bigint THEN
      (SELECT coalesce(sum(c.n), 0) FROM pin_counts c
       WHERE c.status = ANY(@statuses::smallint[]) AND c.bucket > @lo_bucket::bigint AND c.bucket < @hi_bucket::bigint)
    + (SELECT count(*) FROM pins q
       WHERE q.status = ANY(@statuses::smallint[]) AND q.pos >= @hi_start::bigint AND q.pos < @hi::bigint)
    ELSE 0 END
)::bigint AS n;
