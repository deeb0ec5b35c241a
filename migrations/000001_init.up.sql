-- anchorage read models. Every table here is a projection of the event log and can be rebuilt from it.
-- Run as the owner role: it owns the tables and runs the projectors. The API connects as another role, which
-- only SELECTs, and sees exactly one org's rows: the org its transaction set with
-- set_config('app.org_id', <uuid>, true). Without that setting it sees nothing.

CREATE EXTENSION IF NOT EXISTS pg_trgm;

-- The org of the current transaction, or NULL (no rows) when none is set. current_setting(..., true) is NULL
-- when the GUC was never set on the connection and '' after a transaction-local setting ended.
CREATE FUNCTION app_org() RETURNS uuid
LANGUAGE sql STABLE PARALLEL SAFE
AS $$ SELECT nullif(current_setting('app.org_id', true), '')::uuid $$;

-- Projection progress: the last stream sequence each projector applied, moved by compare-and-set in the same
-- transaction as the rows it applied.
CREATE TABLE projection_checkpoints (
    name       text PRIMARY KEY,
    last_seq   bigint NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Moves a checkpoint from p_prev to p_next, or raises AC001 when it is not at p_prev (another instance applied
-- those events first). Projectors call it first in their batch, so the batch's transaction aborts as a whole.
CREATE FUNCTION projection_advance(p_name text, p_prev bigint, p_next bigint) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO projection_checkpoints AS c (name, last_seq, updated_at)
    VALUES (p_name, p_next, now())
    ON CONFLICT (name) DO UPDATE SET last_seq = excluded.last_seq, updated_at = excluded.updated_at
    WHERE c.last_seq = p_prev;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'AC001', MESSAGE = format('checkpoint of projection %s moved from %s', p_name, p_prev);
    END IF;
END $$;

-- orgs projection --------------------------------------------------------------------------------------------
CREATE TABLE orgs (
    org_id     uuid PRIMARY KEY,
    slug       text NOT NULL UNIQUE,
    name       text NOT NULL DEFAULT '',
    max_pins   bigint NOT NULL DEFAULT 0, -- 0: unlimited
    created_at timestamptz NOT NULL,
    last_seq   bigint NOT NULL
);

-- tokens projection ------------------------------------------------------------------------------------------
-- Never holds a token's secret (the JWT): only what was minted and whether it was revoked.
CREATE TABLE tokens (
    org_id        uuid NOT NULL,
    token_id      uuid NOT NULL,
    subject       text NOT NULL,
    label         text NOT NULL DEFAULT '',
    scopes        text[] NOT NULL,
    key_id        text NOT NULL,
    issued_at     timestamptz NOT NULL,
    expires_at    timestamptz NOT NULL,
    revoked_at    timestamptz,
    revoke_reason text NOT NULL DEFAULT '',
    last_seq      bigint NOT NULL,
    PRIMARY KEY (org_id, token_id)
);

-- pins projection --------------------------------------------------------------------------------------------
-- status: 0 queued, 1 pinning, 2 pinned, 3 failed.
-- pos is an org-local ordinal in creation order and created is strictly increasing per org, so both orders
-- agree: "created < T" is "pos < the first pos created at or after T". Counting by pos ranges is what keeps
-- count O(limit) (see pin_counts).
CREATE TABLE pins (
    org_id     uuid NOT NULL,
    request_id uuid NOT NULL,
    pos        bigint NOT NULL,
    created    timestamptz NOT NULL,
    status     smallint NOT NULL CHECK (status BETWEEN 0 AND 3),
    cid        text NOT NULL,      -- exactly as requested; echoed back
    cid_key    bytea NOT NULL,     -- the multihash: v0 and v1 spellings of one CID match
    name       text,
    name_lower text,
    meta       jsonb,
    origins    jsonb,              -- the client's hints that parsed, as a JSON array
    info       jsonb,
    delegates  text[],             -- placed nodes' multiaddrs; NULL until placed
    last_seq   bigint NOT NULL,
    PRIMARY KEY (org_id, request_id)
);
CREATE UNIQUE INDEX pins_org_created ON pins (org_id, created) INCLUDE (pos);
CREATE UNIQUE INDEX pins_org_status_pos ON pins (org_id, status, pos);
CREATE INDEX pins_org_cid ON pins (org_id, cid_key);
CREATE INDEX pins_org_name ON pins (org_id, name) WHERE name IS NOT NULL;
CREATE INDEX pins_org_name_lower ON pins (org_id, name_lower) WHERE name_lower IS NOT NULL;
CREATE INDEX pins_name_trgm ON pins USING gin (name_lower gin_trgm_ops) WHERE name_lower IS NOT NULL;
CREATE INDEX pins_meta ON pins USING gin (meta jsonb_path_ops) WHERE meta IS NOT NULL;

-- Live pins per (org, status) in buckets of 1024 consecutive positions. A count over a pos range is the sum of
-- the whole buckets inside it plus index-only counts of at most two partial buckets.
CREATE TABLE pin_counts (
    org_id uuid NOT NULL,
    status smallint NOT NULL,
    bucket bigint NOT NULL,
    n      bigint NOT NULL,
    PRIMARY KEY (org_id, status, bucket)
);

-- Per-org projection state: the last position and created time handed out, and the live pin count (quota).
CREATE TABLE pin_org_state (
    org_id       uuid PRIMARY KEY,
    last_pos     bigint NOT NULL,
    last_created timestamptz NOT NULL,
    live_pins    bigint NOT NULL
);

-- Row-level security: FORCE makes the owner subject to policies too. The owner (the migrating role) gets a policy
-- over every row; everyone else only the current org's rows, and no rows when no org is set.
ALTER TABLE orgs ENABLE ROW LEVEL SECURITY;
ALTER TABLE orgs FORCE ROW LEVEL SECURITY;
CREATE POLICY orgs_owner ON orgs TO CURRENT_USER USING (true) WITH CHECK (true);
CREATE POLICY orgs_tenant ON orgs FOR SELECT USING (org_id = app_org());

ALTER TABLE tokens ENABLE ROW LEVEL SECURITY;
ALTER TABLE tokens FORCE ROW LEVEL SECURITY;
CREATE POLICY tokens_owner ON tokens TO CURRENT_USER USING (true) WITH CHECK (true);
CREATE POLICY tokens_tenant ON tokens FOR SELECT USING (org_id = app_org());

ALTER TABLE pins ENABLE ROW LEVEL SECURITY;
ALTER TABLE pins FORCE ROW LEVEL SECURITY;
CREATE POLICY pins_owner ON pins TO CURRENT_USER USING (true) WITH CHECK (true);
CREATE POLICY pins_tenant ON pins FOR SELECT USING (org_id = app_org());

ALTER TABLE pin_counts ENABLE ROW LEVEL SECURITY;
ALTER TABLE pin_counts FORCE ROW LEVEL SECURITY;
CREATE POLICY pin_counts_owner ON pin_counts TO CURRENT_USER USING (true) WITH CHECK (true);
CREATE POLICY pin_counts_tenant ON pin_counts FOR SELECT USING (org_id = app_org());

ALTER TABLE pin_org_state ENABLE ROW LEVEL SECURITY;
ALTER TABLE pin_org_state FORCE ROW LEVEL SECURITY;
CREATE POLICY pin_org_state_owner ON pin_org_state TO CURRENT_USER USING (true) WITH CHECK (true);
CREATE POLICY pin_org_state_tenant ON pin_org_state FOR SELECT USING (org_id = app_org());

-- Searches whose operators are not LEAKPROOF (LIKE, jsonb @>): under RLS PostgreSQL will not use an index for
-- them, so they would scan every pin of the org. These SECURITY DEFINER functions run as the owner, use the
-- trigram and jsonb indexes, and restrict to the caller's org themselves, read from the same transaction-local
-- setting as the policies: a caller can never name another org.
-- They return what the caller needs to filter, order and count without touching the matches again.
-- lower_pattern is the pattern lowercased the way name_lower was (by the projector); pattern is checked
-- case-sensitively unless case_insensitive.
CREATE FUNCTION pins_matching_name(pattern text, lower_pattern text, case_insensitive boolean)
RETURNS TABLE (request_id uuid, pos bigint, status smallint)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public
AS $$
    SELECT p.request_id, p.pos, p.status FROM public.pins p
    WHERE p.org_id = public.app_org()
      AND p.name_lower LIKE lower_pattern
      AND (case_insensitive OR p.name LIKE pattern)
$$;

CREATE FUNCTION pins_matching_meta(filter jsonb)
RETURNS TABLE (request_id uuid, pos bigint, status smallint)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public
AS $$
    SELECT p.request_id, p.pos, p.status FROM public.pins p
    WHERE p.org_id = public.app_org() AND p.meta @> filter
$$;

REVOKE ALL ON FUNCTION pins_matching_name(text, text, boolean) FROM PUBLIC;
REVOKE ALL ON FUNCTION pins_matching_meta(jsonb) FROM PUBLIC;
