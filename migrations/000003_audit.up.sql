-- The audit projection: one row per event of the log (orgs, pins, tokens, placements, nodes, scheduler), as it
-- was recorded, so auditors can ask who pinned or removed what, when, with which token.
--
-- Append-only. The projector only INSERTs (ON CONFLICT (seq) DO NOTHING, in the pipeline that moves its
-- checkpoint), the owner role has no UPDATE or DELETE policy on the table, and it gives up its own UPDATE, DELETE
-- and TRUNCATE privileges on it below: a row, once written, can only go with the whole table.
CREATE TABLE audit_events (
    seq        bigint PRIMARY KEY,   -- the event's stream sequence
    at         timestamptz NOT NULL, -- the envelope's at (microsecond precision)
    subject    text NOT NULL,
    type       text NOT NULL,
    version    integer NOT NULL,
    actor      text NOT NULL,        -- token:<id>, user:<id>, admin:<os user>, system:<component>
    corr       text,                 -- NULL when the envelope has none
    org_id     uuid,                 -- from the subject; NULL for events of no org (nodes.*, sched.*)
    request_id uuid,                 -- pins.* and place.* events
    cid_key    bytea,                -- multihash of the event's CID (pin.requested, pin.placed, pin.unplaced, observations)
    data       jsonb NOT NULL,       -- the payload
    -- Time index. at_max is the greatest at of the log up to and including this event, so it never decreases
    -- as seq grows even when clocks disagree; at_lag is at_max - at, recorded only on the events where it beat
    -- every earlier event's (so max(at_lag) is the log's worst clock disorder). Together they turn a time range
    -- into a range of sequences that contains every event of the range (audit_first_seq, audit_max_lag).
    at_max     timestamptz NOT NULL,
    at_lag     interval
);

-- Every filter reads newest first by seq from its own index; a time range becomes seq bounds on any of them.
CREATE INDEX audit_events_org ON audit_events (org_id, seq DESC);
CREATE INDEX audit_events_org_actor ON audit_events (org_id, actor, seq DESC);
CREATE INDEX audit_events_org_type ON audit_events (org_id, type, seq DESC);
CREATE INDEX audit_events_org_request ON audit_events (org_id, request_id, seq DESC) WHERE request_id IS NOT NULL;
CREATE INDEX audit_events_org_cid ON audit_events (org_id, cid_key, seq DESC) WHERE cid_key IS NOT NULL;
CREATE INDEX audit_events_time ON audit_events (at_max, seq);
CREATE INDEX audit_events_lag ON audit_events (at_lag) WHERE at_lag IS NOT NULL;

-- Tenants (the API role with app.org_id set) see their org's rows only, never the rows of no org (NULL = x is never
-- true). Sysadmin reads of every org, and of the events of no org, go through the owner role, in read-only
-- transactions: its own policy is USING (true), which the planner folds away. (A second permissive policy gated
-- on a setting such as current_setting('app.audit_all') would be OR-ed with the tenant one, and PostgreSQL
-- estimates such a gate at 0.5% of the rows: every LIMIT-ed index walk of a sysadmin query then looks 200 times
-- too long, and plans degrade to scans of the whole trail.)
ALTER TABLE audit_events ENABLE ROW LEVEL SECURITY;
ALTER TABLE audit_events FORCE ROW LEVEL SECURITY;
CREATE POLICY audit_events_owner_read ON audit_events FOR SELECT TO CURRENT_USER USING (true);
CREATE POLICY audit_events_owner_insert ON audit_events FOR INSERT TO CURRENT_USER WITH CHECK (true);
CREATE POLICY audit_events_tenant ON audit_events FOR SELECT USING (org_id = app_org());
REVOKE UPDATE, DELETE, TRUNCATE ON audit_events FROM CURRENT_USER;

-- Time bounds. at_max is global (over every org), so these functions read every row: SECURITY DEFINER, returning
-- sequence numbers only (which every audit row shows anyway), never a row.

-- The first sequence whose at_max is at or after t; 9223372036854775807 when there is none yet.
CREATE FUNCTION audit_first_seq(t timestamptz) RETURNS bigint
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public
AS $$
    SELECT coalesce((SELECT a.seq FROM public.audit_events a WHERE a.at_max >= t ORDER BY a.at_max, a.seq LIMIT 1),
                    9223372036854775807)
$$;

-- The largest at_max - at of any event: an event stamped before t is never later in the log than
-- audit_first_seq(t + audit_max_lag()).
CREATE FUNCTION audit_max_lag() RETURNS interval
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public
AS $$ SELECT coalesce(max(a.at_lag), interval '0') FROM public.audit_events a WHERE a.at_lag IS NOT NULL $$;

-- The scheduler terms started before sequence below (the placement term fence of GET /v1/pins?as_of). They
-- belong to no org, so tenants could not read them; this hands out only their sequence and term number.
CREATE FUNCTION audit_sched_terms(below bigint) RETURNS TABLE (seq bigint, term bigint)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public
AS $$
    SELECT a.seq, (a.data->>'term')::bigint FROM public.audit_events a
    WHERE a.org_id IS NULL AND a.type = 'sched.term_started' AND a.seq < below
    ORDER BY a.seq
$$;
