-- Projector side (owner role) ------------------------------------------------------------------------------

-- name: AuditInsert :exec
-- One statement per batch; rows are only ever inserted. Empty strings and bytea stand for NULL. The ids come as
-- text: pgx encodes uuid.UUID arrays element by element through database/sql's Valuer, which costs more than
-- the rest of the batch's encoding together.
INSERT INTO audit_events (seq, at, subject, type, version, actor, corr, org_id, request_id, cid_key, data, at_max, at_lag)
SELECT r.seq, r.at, r.subject, r.type, r.version, r.actor, nullif(r.corr, ''), nullif(r.org_id, '')::uuid,
       nullif(r.request_id, '')::uuid, nullif(r.cid_key, ''::bytea), r.data, r.at_max,
       CASE WHEN r.lag_us > 0 THEN r.lag_us * interval '1 microsecond' END
FROM (SELECT unnest(@seqs::bigint[]) AS seq, unnest(@ats::timestamptz[]) AS at, unnest(@subjects::text[]) AS subject,
             unnest(@types::text[]) AS type, unnest(@versions::int[]) AS version, unnest(@actors::text[]) AS actor,
             unnest(@corrs::text[]) AS corr, unnest(@org_ids::text[]) AS org_id, unnest(@request_ids::text[]) AS request_id,
             unnest(@cid_keys::bytea[]) AS cid_key, unnest(@datas::json[]) AS data,
             unnest(@at_maxes::timestamptz[]) AS at_max, unnest(@lags_us::bigint[]) AS lag_us) r
ON CONFLICT (seq) DO NOTHING;

-- name: AuditClockAt :one
-- The time index's running values as of sequence seq: at_max of the last event at or before it, and the largest
-- lag so far, in microseconds.
SELECT EXISTS (SELECT 1 FROM audit_events a WHERE a.seq <= @seq::bigint) AS found,
       coalesce((SELECT (extract(epoch FROM a.at_max) * 1000000)::bigint FROM audit_events a WHERE a.seq <= @seq::bigint ORDER BY a.seq DESC LIMIT 1), 0)::bigint AS at_max_us,
       coalesce((SELECT (extract(epoch FROM max(a.at_lag)) * 1000000)::bigint FROM audit_events a WHERE a.at_lag IS NOT NULL AND a.seq <= @seq::bigint), 0)::bigint AS max_lag_us;

-- Readers (API role with app.org_id or app.audit_all set transaction-locally, or the owner role) -------------

-- name: AuditSeqBounds :one
-- A time range [since, until) as sequence bounds [lo, hi) that contain every event of the range.
SELECT (CASE WHEN sqlc.narg(since)::timestamptz IS NULL THEN 0
             ELSE audit_first_seq(sqlc.narg(since)::timestamptz) END)::bigint AS lo,
       (CASE WHEN sqlc.narg(until)::timestamptz IS NULL THEN 9223372036854775807
             ELSE audit_first_seq(sqlc.narg(until)::timestamptz + audit_max_lag()) END)::bigint AS hi;

-- name: AuditSeqAfter :one
-- The first sequence of the log whose at_max is after cutoff: the log up to cutoff is every sequence below it.
SELECT audit_first_seq(sqlc.arg(cutoff)::timestamptz + '1 microsecond'::interval)::bigint AS hi;

-- name: AuditOrgIDs :many
-- Every org with audit rows (a loose index scan over audit_events_org: one probe per org).
WITH RECURSIVE o(org_id) AS (
    (SELECT a.org_id FROM audit_events a WHERE a.org_id IS NOT NULL ORDER BY a.org_id LIMIT 1)
    UNION ALL
    SELECT (SELECT a.org_id FROM audit_events a WHERE a.org_id > o.org_id ORDER BY a.org_id LIMIT 1)
    FROM o WHERE o.org_id IS NOT NULL
)
SELECT o.org_id::uuid AS org_id FROM o WHERE o.org_id IS NOT NULL;

-- The list queries come in one variant per driving filter (request, cid, actor, type, none), each reading newest
-- first from its own index for each org in org_ids (one org for a tenant, every org for a sysadmin), with the
-- other filters as plain predicates, so a cached generic plan is as good as a custom one. lo/hi are the seq
-- bounds of the time range and the cursor; since/until are then checked exactly on at. The org is matched with
-- = ANY(ARRAY[…]) and leads the ORDER BY: an equality would make it a constant the primary key's order also
-- satisfies, and a generic plan could then walk the whole log by seq, filtering for the org. The actor and type
-- indexes key on actor_key and type_key, hashtextextended(value, 0) as stored columns (migrations 000008, 000012):
-- those variants match the key, which the index serves (bigint equality is leakproof, so it may run before the
-- tenant policy), and then the value itself.

-- name: AuditListByRequest :many
SELECT e.seq, e.at, e.subject, e.type, e.version, e.actor, e.corr, e.org_id, e.request_id, e.data
FROM unnest(@org_ids::uuid[]) AS o(org_id)
CROSS JOIN LATERAL (
    SELECT a.seq, a.at, a.subject, a.type, a.version, a.actor, a.corr, a.org_id, a.request_id, a.data FROM audit_events a
    WHERE a.org_id = ANY(ARRAY[o.org_id]) AND a.request_id = @request_id::uuid AND a.seq >= @lo::bigint AND a.seq < @hi::bigint
      AND (sqlc.narg(actor)::text IS NULL OR a.actor = sqlc.narg(actor)::text)
      AND (sqlc.narg(type)::text IS NULL OR a.type = sqlc.narg(type)::text)
      AND (sqlc.narg(cid_key)::bytea IS NULL OR a.cid_key = sqlc.narg(cid_key)::bytea)
      AND (sqlc.narg(since)::timestamptz IS NULL OR a.at >= sqlc.narg(since)::timestamptz)
      AND (sqlc.narg(until)::timestamptz IS NULL OR a.at < sqlc.narg(until)::timestamptz)
    ORDER BY a.org_id, a.seq DESC
    LIMIT @lim::int
) e
ORDER BY e.seq DESC
LIMIT @lim::int;

-- name: AuditListByCID :many
SELECT e.seq, e.at, e.subject, e.type, e.version, e.actor, e.corr, e.org_id, e.request_id, e.data
FROM unnest(@org_ids::uuid[]) AS o(org_id)
CROSS JOIN LATERAL (
    SELECT a.seq, a.at, a.subject, a.type, a.version, a.actor, a.corr, a.org_id, a.request_id, a.data FROM audit_events a
    WHERE a.org_id = ANY(ARRAY[o.org_id]) AND a.cid_key = @cid_key::bytea AND a.seq >= @lo::bigint AND a.seq < @hi::bigint
      AND (sqlc.narg(actor)::text IS NULL OR a.actor = sqlc.narg(actor)::text)
      AND (sqlc.narg(type)::text IS NULL OR a.type = sqlc.narg(type)::text)
      AND (sqlc.narg(since)::timestamptz IS NULL OR a.at >= sqlc.narg(since)::timestamptz)
      AND (sqlc.narg(until)::timestamptz IS NULL OR a.at < sqlc.narg(until)::timestamptz)
    ORDER BY a.org_id, a.seq DESC
    LIMIT @lim::int
) e
ORDER BY e.seq DESC
LIMIT @lim::int;

-- name: AuditListByActor :many
SELECT e.seq, e.at, e.subject, e.type, e.version, e.actor, e.corr, e.org_id, e.request_id, e.data
FROM unnest(@org_ids::uuid[]) AS o(org_id)
CROSS JOIN LATERAL (
    SELECT a.seq, a.at, a.subject, a.type, a.version, a.actor, a.corr, a.org_id, a.request_id, a.data FROM audit_events a
    WHERE a.org_id = ANY(ARRAY[o.org_id]) AND a.actor_key = hashtextextended(@actor::text, 0) AND a.actor = @actor::text AND a.seq >= @lo::bigint AND a.seq < @hi::bigint
      AND (sqlc.narg(type)::text IS NULL OR a.type = sqlc.narg(type)::text)
      AND (sqlc.narg(since)::timestamptz IS NULL OR a.at >= sqlc.narg(since)::timestamptz)
      AND (sqlc.narg(until)::timestamptz IS NULL OR a.at < sqlc.narg(until)::timestamptz)
    ORDER BY a.org_id, a.seq DESC
    LIMIT @lim::int
) e
ORDER BY e.seq DESC
LIMIT @lim::int;

-- name: AuditListByType :many
SELECT e.seq, e.at, e.subject, e.type, e.version, e.actor, e.corr, e.org_id, e.request_id, e.data
FROM unnest(@org_ids::uuid[]) AS o(org_id)
CROSS JOIN LATERAL (
    SELECT a.seq, a.at, a.subject, a.type, a.version, a.actor, a.corr, a.org_id, a.request_id, a.data FROM audit_events a
    WHERE a.org_id = ANY(ARRAY[o.org_id]) AND a.type_key = hashtextextended(@type::text, 0) AND a.type = @type::text AND a.seq >= @lo::bigint AND a.seq < @hi::bigint
      AND (sqlc.narg(since)::timestamptz IS NULL OR a.at >= sqlc.narg(since)::timestamptz)
      AND (sqlc.narg(until)::timestamptz IS NULL OR a.at < sqlc.narg(until)::timestamptz)
    ORDER BY a.org_id, a.seq DESC
    LIMIT @lim::int
) e
ORDER BY e.seq DESC
LIMIT @lim::int;

-- name: AuditListByOrg :many
SELECT e.seq, e.at, e.subject, e.type, e.version, e.actor, e.corr, e.org_id, e.request_id, e.data
FROM unnest(@org_ids::uuid[]) AS o(org_id)
CROSS JOIN LATERAL (
    SELECT a.seq, a.at, a.subject, a.type, a.version, a.actor, a.corr, a.org_id, a.request_id, a.data FROM audit_events a
    WHERE a.org_id = ANY(ARRAY[o.org_id]) AND a.seq >= @lo::bigint AND a.seq < @hi::bigint
      AND (sqlc.narg(since)::timestamptz IS NULL OR a.at >= sqlc.narg(since)::timestamptz)
      AND (sqlc.narg(until)::timestamptz IS NULL OR a.at < sqlc.narg(until)::timestamptz)
    ORDER BY a.org_id, a.seq DESC
    LIMIT @lim::int
) e
ORDER BY e.seq DESC
LIMIT @lim::int;

-- name: AuditListNoOrg :many
-- Events of no org (nodes, scheduler), for sysadmins: few, so every filter is a plain predicate on the walk of
-- their end of audit_events_org (ordering by org_id first keeps the plan there).
SELECT a.seq, a.at, a.subject, a.type, a.version, a.actor, a.corr, a.org_id, a.request_id, a.data FROM audit_events a
WHERE a.org_id IS NULL AND a.seq >= @lo::bigint AND a.seq < @hi::bigint
  AND (sqlc.narg(actor)::text IS NULL OR a.actor = sqlc.narg(actor)::text)
  AND (sqlc.narg(type)::text IS NULL OR a.type = sqlc.narg(type)::text)
  AND (sqlc.narg(request_id)::uuid IS NULL OR a.request_id = sqlc.narg(request_id)::uuid)
  AND (sqlc.narg(cid_key)::bytea IS NULL OR a.cid_key = sqlc.narg(cid_key)::bytea)
  AND (sqlc.narg(since)::timestamptz IS NULL OR a.at >= sqlc.narg(since)::timestamptz)
  AND (sqlc.narg(until)::timestamptz IS NULL OR a.at < sqlc.narg(until)::timestamptz)
ORDER BY a.org_id, a.seq DESC
LIMIT @lim::int;

-- name: AuditListAll :many
-- Every org's events and those of no org, newest first, by the primary key (sysadmins without a filter).
SELECT a.seq, a.at, a.subject, a.type, a.version, a.actor, a.corr, a.org_id, a.request_id, a.data FROM audit_events a
WHERE a.seq >= @lo::bigint AND a.seq < @hi::bigint
  AND (sqlc.narg(since)::timestamptz IS NULL OR a.at >= sqlc.narg(since)::timestamptz)
  AND (sqlc.narg(until)::timestamptz IS NULL OR a.at < sqlc.narg(until)::timestamptz)
ORDER BY a.seq DESC
LIMIT @lim::int;

-- name: AuditPinHistory :many
-- Every event of one pin request, oldest first: its pins.<org>.<request> and place.*.<org>.<request> events.
SELECT a.seq, a.at, a.subject, a.type, a.version, a.actor, a.corr, a.org_id, a.request_id, a.data FROM audit_events a
WHERE a.org_id = @org_id::uuid AND a.request_id = @request_id::uuid
ORDER BY a.seq;

-- name: AuditPinEventsBefore :many
-- The org's pin and placement events below sequence hi, oldest first: the input of the as-of fold (streamed, and
-- planned for the actual org and bound: an org's share of the log decides between its index and the log's).
SELECT a.seq, a.at, a.type, a.version, a.data FROM audit_events a
WHERE a.org_id = @org_id::uuid AND a.seq < @hi::bigint
  AND a.type IN ('pin.requested', 'pin.replaced', 'pin.removed', 'pin.placed', 'pin.unplaced', 'pin.status_observed')
ORDER BY a.seq;

-- name: AuditSchedTerms :many
SELECT t.seq::bigint AS seq, t.term::bigint AS term FROM audit_sched_terms(@below::bigint) AS t(seq, term);
