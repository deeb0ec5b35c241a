-- Projector side (owner role) ------------------------------------------------------------------------------

-- name: PlacementsUpsert :exec
-- New placements (pin.placed), counted on their nodes. Zero uuids and empty strings stand for NULL. A placement
-- of a request that is already gone (removed earlier) is gone too; one removed later in the same batch says so.
WITH up AS (
    INSERT INTO placements (org_id, request_id, node_id, cid, status, info, placed_seq, term, moved_from, pin_gone, replaced_by, last_seq)
    SELECT r.org_id, r.request_id, r.node_id, r.cid, r.status, nullif(r.info, 'null'::jsonb), r.placed_seq, r.term,
           nullif(r.moved_from, ''),
           r.pin_gone OR NOT EXISTS (SELECT 1 FROM pins q WHERE q.org_id = r.org_id AND q.request_id = r.request_id),
           nullif(r.replaced_by, '00000000-0000-0000-0000-000000000000'::uuid), r.last_seq
    FROM (SELECT unnest(@org_ids::uuid[]) AS org_id, unnest(@request_ids::uuid[]) AS request_id, unnest(@node_ids::text[]) AS node_id,
                 unnest(@cids::text[]) AS cid, unnest(@statuses::smallint[]) AS status, unnest(@infos::jsonb[]) AS info,
                 unnest(@placed_seqs::bigint[]) AS placed_seq, unnest(@terms::bigint[]) AS term,
                 unnest(@moved_froms::text[]) AS moved_from, unnest(@pin_gones::boolean[]) AS pin_gone,
                 unnest(@replaced_bys::uuid[]) AS replaced_by, unnest(@last_seqs::bigint[]) AS last_seq) r
    ON CONFLICT (org_id, request_id, node_id) DO UPDATE
    SET cid = excluded.cid, status = excluded.status, info = excluded.info, placed_seq = excluded.placed_seq,
        term = excluded.term, moved_from = excluded.moved_from, pin_gone = excluded.pin_gone,
        replaced_by = excluded.replaced_by, last_seq = excluded.last_seq
    RETURNING node_id, (xmax = 0) AS inserted
)
UPDATE nodes n SET placed = n.placed + c.n
FROM (SELECT node_id, count(*) AS n FROM up WHERE inserted GROUP BY node_id) c
WHERE n.node_id = c.node_id;

-- name: NodesPlacedAdd :exec
-- Counts placements written by COPY (a rebuild's copies: see PinsProjector.ApplyBulk) on their nodes, as
-- PlacementsUpsert counts the ones it inserts.
UPDATE nodes n SET placed = n.placed + c.n
FROM (SELECT unnest(@node_ids::text[]) AS node_id, unnest(@ns::bigint[]) AS n) c
WHERE n.node_id = c.node_id;

-- name: PlacementsDelete :exec
-- Unplaced placements, uncounted from their nodes.
WITH d AS (
    DELETE FROM placements p
    USING (SELECT unnest(@org_ids::uuid[]) AS org_id, unnest(@request_ids::uuid[]) AS request_id, unnest(@node_ids::text[]) AS node_id) x
    WHERE p.org_id = x.org_id AND p.request_id = x.request_id AND p.node_id = x.node_id
    RETURNING p.node_id
)
UPDATE nodes n SET placed = n.placed - c.n
FROM (SELECT node_id, count(*) AS n FROM d GROUP BY node_id) c
WHERE n.node_id = c.node_id;

-- name: PlacementsObserve :exec
-- Status observations; one answering an earlier placement of the pin on that node is ignored, and pinned or
-- failed are final for a placement: a late "pinning" never downgrades them.
UPDATE placements p SET status = o.status, info = nullif(o.info, 'null'::jsonb), last_seq = o.last_seq
FROM (SELECT unnest(@org_ids::uuid[]) AS org_id, unnest(@request_ids::uuid[]) AS request_id, unnest(@node_ids::text[]) AS node_id,
             unnest(@statuses::smallint[]) AS status, unnest(@infos::jsonb[]) AS info, unnest(@placed_seqs::bigint[]) AS placed_seq,
             unnest(@last_seqs::bigint[]) AS last_seq) o
WHERE p.org_id = o.org_id AND p.request_id = o.request_id AND p.node_id = o.node_id AND p.placed_seq = o.placed_seq
  AND NOT (p.status IN (2, 3) AND o.status IN (0, 1));

-- name: PlacementsMarkGone :exec
-- The pin request was removed or replaced: its placements wait for the scheduler to release them.
UPDATE placements p SET pin_gone = true, replaced_by = nullif(g.replaced_by, '00000000-0000-0000-0000-000000000000'::uuid)
FROM (SELECT unnest(@org_ids::uuid[]) AS org_id, unnest(@request_ids::uuid[]) AS request_id, unnest(@replaced_bys::uuid[]) AS replaced_by) g
WHERE p.org_id = g.org_id AND p.request_id = g.request_id;

-- name: PinsRederive :exec
-- Derives each touched pin's status, info and delegates from its placements, and moves the counts: pinned if any
-- placement is pinned, else pinning if any is, else queued if any is (or none exists), else failed; info comes
-- from the placement that decides the status. The pins a batch inserts with what its own placements give them
-- are not passed (see placementFold.derived).
WITH t AS (
    SELECT DISTINCT x.org_id, x.request_id
    FROM (SELECT unnest(@org_ids::uuid[]) AS org_id, unnest(@request_ids::uuid[]) AS request_id) x
), d AS (
    SELECT t.org_id, t.request_id, coalesce(b.status, 0::smallint) AS status, b.info, n.nodes, coalesce(n.replicas, 0)::smallint AS replicas
    FROM t
    LEFT JOIN LATERAL (
        SELECT p.status, p.info FROM placements p
        WHERE p.org_id = t.org_id AND p.request_id = t.request_id
        ORDER BY CASE p.status WHEN 2 THEN 0 WHEN 1 THEN 1 WHEN 0 THEN 2 ELSE 3 END, p.node_id
        LIMIT 1
    ) b ON true
    LEFT JOIN LATERAL (
        SELECT array_agg(p.node_id ORDER BY p.node_id) AS nodes, count(*) AS replicas FROM placements p
        WHERE p.org_id = t.org_id AND p.request_id = t.request_id
    ) n ON true
), u AS (
    UPDATE pins q SET status = d.status, info = d.info, placed_nodes = d.nodes, replicas = d.replicas
    FROM d, LATERAL (SELECT o.status AS old_status FROM pins o WHERE o.org_id = d.org_id AND o.request_id = d.request_id) old
    WHERE q.org_id = d.org_id AND q.request_id = d.request_id
    RETURNING q.org_id, q.pos, old.old_status, q.status AS new_status
)
INSERT INTO pin_counts (org_id, status, bucket, n)
SELECT x.org_id, x.status, x.bucket, sum(x.delta) FROM (
    SELECT org_id, old_status AS status, pos / 1024 AS bucket, -1 AS delta FROM u WHERE old_status <> new_status
    UNION ALL
    SELECT org_id, new_status, pos / 1024, 1 FROM u WHERE old_status <> new_status
) x
GROUP BY 1, 2, 3
ON CONFLICT (org_id, status, bucket) DO UPDATE SET n = pin_counts.n + excluded.n;

-- name: SchedStateGet :one
SELECT term, maintenance, maintenance_since, maintenance_note FROM sched_state WHERE id = 1;

-- name: SchedTermSet :exec
UPDATE sched_state SET term = greatest(term, @term::bigint), last_seq = @last_seq WHERE id = 1;

-- name: SchedMaintenanceSet :exec
UPDATE sched_state SET maintenance = @maintenance, maintenance_note = @note,
    maintenance_since = CASE WHEN @maintenance::boolean AND NOT maintenance THEN @at::timestamptz
                             WHEN @maintenance::boolean THEN maintenance_since END,
    last_seq = @last_seq
WHERE id = 1;

-- name: NodeRegister :exec
INSERT INTO nodes (node_id, peer_id, addrs, capacity, registered_at, last_seq)
VALUES (@node_id, @peer_id, @addrs, @capacity, @at, @last_seq)
ON CONFLICT (node_id) DO UPDATE SET peer_id = excluded.peer_id, addrs = excluded.addrs, capacity = excluded.capacity,
    last_seq = excluded.last_seq;

-- name: NodeSetState :exec
UPDATE nodes SET state = @state, last_seq = @last_seq WHERE node_id = @node_id;

-- Scheduler and operators (owner role, across orgs) ----------------------------------------------------------

-- name: NodeList :many
SELECT node_id, peer_id, addrs, capacity, state, placed, registered_at FROM nodes ORDER BY node_id;

-- name: SchedUnderplaced :many
-- Live pins with fewer placements than wanted, oldest first.
SELECT org_id, request_id, cid, origins, replicas, coalesce(placed_nodes, '{}')::text[] AS placed_nodes, replaces
FROM pins
WHERE replicas < @replication::smallint AND replicas < 8
ORDER BY replicas, created
LIMIT @lim::int;

-- name: SchedNodesOf :many
-- The nodes holding placements of the given requests (a replace prefers its predecessor's nodes).
SELECT org_id, request_id, node_id FROM placements
WHERE (org_id, request_id) IN (SELECT unnest(@org_ids::uuid[]), unnest(@request_ids::uuid[]));

-- name: SchedReleasable :many
-- Placements whose request is gone and that nothing waits for: removed, or replaced by a request that is no
-- longer pending (pinned, failed, or itself gone).
SELECT p.org_id, p.request_id, p.node_id, p.cid, (p.replaced_by IS NOT NULL)::boolean AS replaced
FROM placements p
WHERE p.pin_gone
  AND (p.replaced_by IS NULL OR NOT EXISTS (
        SELECT 1 FROM pins s WHERE s.org_id = p.org_id AND s.request_id = p.replaced_by AND s.status IN (0, 1)))
LIMIT @lim::int;

-- name: SchedMovesDone :many
-- Moves whose new placement is pinned: the placement on the old node can go.
SELECT o.org_id, o.request_id, o.node_id, o.cid
FROM placements n
JOIN placements o ON o.org_id = n.org_id AND o.request_id = n.request_id AND o.node_id = n.moved_from
WHERE n.moved_from IS NOT NULL AND n.status = 2 AND NOT o.pin_gone
LIMIT @lim::int;

-- name: SchedOnDrained :many
-- Placements on drained nodes that are not being moved yet, with the pin's origins (the move's target fetches
-- from those and from the drained node itself).
SELECT o.org_id, o.request_id, o.node_id, o.cid, p.origins
FROM placements o
LEFT JOIN pins p ON p.org_id = o.org_id AND p.request_id = o.request_id
WHERE o.node_id = ANY(@node_ids::text[]) AND NOT o.pin_gone
  AND NOT EXISTS (SELECT 1 FROM placements n WHERE n.org_id = o.org_id AND n.request_id = o.request_id AND n.moved_from = o.node_id)
LIMIT @lim::int;

-- name: SchedMovesFailed :many
-- Moves whose new placement failed: released, so that the drain tries again (elsewhere, if it can).
SELECT n.org_id, n.request_id, n.node_id, n.cid
FROM placements n
WHERE n.moved_from IS NOT NULL AND n.status = 3 AND NOT n.pin_gone
LIMIT @lim::int;

-- name: PlacementOrigins :one
-- Where a move of one placement fetches from: the pin's origins and the addresses of the node it leaves.
SELECT p.cid, coalesce(pin.origins, 'null'::jsonb)::jsonb AS origins, coalesce(nd.addrs, '{}')::text[] AS node_addrs
FROM placements p
LEFT JOIN pins pin ON pin.org_id = p.org_id AND pin.request_id = p.request_id
LEFT JOIN nodes nd ON nd.node_id = p.node_id
WHERE p.org_id = @org_id AND p.request_id = @request_id AND p.node_id = @node_id;

-- name: PlacementList :many
-- Every live placement (rebalance planning), for operators.
SELECT org_id, request_id, node_id FROM placements WHERE NOT pin_gone ORDER BY node_id, org_id, request_id;

-- name: PlacementGet :one
SELECT org_id, request_id, node_id, cid, status, placed_seq, term FROM placements
WHERE org_id = @org_id AND request_id = @request_id AND node_id = @node_id;
