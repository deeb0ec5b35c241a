-- Meta filters in O(limit): GET /pins?meta={"k":"v"} is newest first over the pins whose meta holds that pair, and
-- its count is the total. The GIN index on pins.meta finds every match (O(matches), with a heap recheck each: the
-- jsonb_path_ops index is lossy), which at a million pins and a common pair is hundreds of milliseconds. These
-- two tables index each (key, value) pair the way pins_org_status_pos and pin_counts index statuses:
--   pin_meta        one row per pin and top-level meta pair, ordered by (org, pair, status, pos): a page is an
--                   index range per status, joined to pins on (org, status, pos);
--   pin_meta_counts live pins per (org, pair, status) in buckets of 1024 positions: a count is a sum of whole
--                   buckets plus index-only counts of the two partial ones.
-- A pair is identified by the md5 of its one-pair JSON object ({"k": "v"} as PostgreSQL prints jsonb): fixed
-- size whatever the lengths of key and value, and computed the same way from a pin's meta and from a filter.
-- Both tables are derived from pins alone and kept in step with it by statement-level triggers (one statement
-- per projector batch, whatever its size), so the projectors need not know about them.

CREATE FUNCTION pin_meta_kv(k text, v jsonb) RETURNS uuid
LANGUAGE sql IMMUTABLE PARALLEL SAFE STRICT
AS $$ SELECT md5(jsonb_build_object(k, v)::text)::uuid $$;

CREATE TABLE pin_meta (
    org_id uuid NOT NULL,
    kv     uuid NOT NULL,
    status smallint NOT NULL,
    pos    bigint NOT NULL,
    PRIMARY KEY (org_id, kv, status, pos)
);

CREATE TABLE pin_meta_counts (
    org_id uuid NOT NULL,
    kv     uuid NOT NULL,
    status smallint NOT NULL,
    bucket bigint NOT NULL,
    n      bigint NOT NULL,
    PRIMARY KEY (org_id, kv, status, bucket)
);

ALTER TABLE pin_meta ENABLE ROW LEVEL SECURITY;
ALTER TABLE pin_meta FORCE ROW LEVEL SECURITY;
CREATE POLICY pin_meta_owner ON pin_meta TO CURRENT_USER USING (true) WITH CHECK (true);
CREATE POLICY pin_meta_tenant ON pin_meta FOR SELECT USING (org_id = app_org());

ALTER TABLE pin_meta_counts ENABLE ROW LEVEL SECURITY;
ALTER TABLE pin_meta_counts FORCE ROW LEVEL SECURITY;
CREATE POLICY pin_meta_counts_owner ON pin_meta_counts TO CURRENT_USER USING (true) WITH CHECK (true);
CREATE POLICY pin_meta_counts_tenant ON pin_meta_counts FOR SELECT USING (org_id = app_org());

-- The triggers write to the pin_meta tables of the schema of the pins table that fired them (a rebuild builds its
-- copies in another schema), in one statement per direction: rows gone (old) leave, rows come (new) enter, with
-- their counts. An UPDATE that changes neither status nor meta nor pos moves nothing.
CREATE FUNCTION pin_meta_sync() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    s text := quote_ident(TG_TABLE_SCHEMA);
BEGIN
    IF TG_OP = 'DELETE' OR TG_OP = 'UPDATE' THEN
        EXECUTE format($q$
            WITH gone AS (
                SELECT o.org_id, public.pin_meta_kv(e.key, e.value) AS kv, o.status, o.pos
                FROM old_rows o %s CROSS JOIN LATERAL jsonb_each(CASE WHEN jsonb_typeof(o.meta) = 'object' THEN o.meta END) e
                %s
            ), d AS (
                DELETE FROM %s.pin_meta m USING gone g
                WHERE m.org_id = g.org_id AND m.kv = g.kv AND m.status = g.status AND m.pos = g.pos
                RETURNING m.org_id, m.kv, m.status, m.pos
            )
            INSERT INTO %s.pin_meta_counts AS c (org_id, kv, status, bucket, n)
            SELECT org_id, kv, status, pos / 1024, -count(*) FROM d GROUP BY 1, 2, 3, 4
            ON CONFLICT (org_id, kv, status, bucket) DO UPDATE SET n = c.n + excluded.n
            $q$,
            CASE WHEN TG_OP = 'UPDATE' THEN 'JOIN new_rows x ON x.org_id = o.org_id AND x.request_id = o.request_id' ELSE '' END,
            CASE WHEN TG_OP = 'UPDATE' THEN 'WHERE (x.status, x.pos) IS DISTINCT FROM (o.status, o.pos) OR x.meta IS DISTINCT FROM o.meta' ELSE '' END,
            s, s);
    END IF;
    IF TG_OP = 'INSERT' OR TG_OP = 'UPDATE' THEN
        EXECUTE format($q$
            WITH ins AS (
                INSERT INTO %s.pin_meta (org_id, kv, status, pos)
                SELECT n.org_id, public.pin_meta_kv(e.key, e.value), n.status, n.pos
                FROM new_rows n %s CROSS JOIN LATERAL jsonb_each(CASE WHEN jsonb_typeof(n.meta) = 'object' THEN n.meta END) e
                %s
                RETURNING org_id, kv, status, pos
            )
            INSERT INTO %s.pin_meta_counts AS c (org_id, kv, status, bucket, n)
            SELECT org_id, kv, status, pos / 1024, count(*) FROM ins GROUP BY 1, 2, 3, 4
            ON CONFLICT (org_id, kv, status, bucket) DO UPDATE SET n = c.n + excluded.n
            $q$,
            s,
            CASE WHEN TG_OP = 'UPDATE' THEN 'JOIN old_rows o ON o.org_id = n.org_id AND o.request_id = n.request_id' ELSE '' END,
            CASE WHEN TG_OP = 'UPDATE' THEN 'WHERE (n.status, n.pos) IS DISTINCT FROM (o.status, o.pos) OR n.meta IS DISTINCT FROM o.meta' ELSE '' END,
            s);
    END IF;
    IF TG_OP = 'TRUNCATE' THEN
        EXECUTE format('TRUNCATE %s.pin_meta, %s.pin_meta_counts', s, s);
    END IF;
    RETURN NULL;
END $$;

-- A trigger with transition tables takes one event each.
CREATE TRIGGER pins_meta_insert AFTER INSERT ON pins REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION pin_meta_sync();
CREATE TRIGGER pins_meta_update AFTER UPDATE ON pins REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION pin_meta_sync();
CREATE TRIGGER pins_meta_delete AFTER DELETE ON pins REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION pin_meta_sync();
CREATE TRIGGER pins_meta_truncate AFTER TRUNCATE ON pins
    FOR EACH STATEMENT EXECUTE FUNCTION pin_meta_sync();

-- The pins already projected.
INSERT INTO pin_meta (org_id, kv, status, pos)
SELECT p.org_id, pin_meta_kv(e.key, e.value), p.status, p.pos
FROM pins p CROSS JOIN LATERAL jsonb_each(CASE WHEN jsonb_typeof(p.meta) = 'object' THEN p.meta END) e;

INSERT INTO pin_meta_counts (org_id, kv, status, bucket, n)
SELECT org_id, kv, status, pos / 1024, count(*) FROM pin_meta GROUP BY 1, 2, 3, 4;

-- Nothing reads pins.meta through its GIN index any more (a meta filter is driven by pin_meta, or by another
-- filter's index and checked row by row): stop paying for it on every insert. pins_matching_meta stays, unused.
DROP INDEX pins_meta;

-- A GIN index's pending list (fastupdate) is scanned in full by every search until a vacuum or an insert past
-- gin_pending_list_limit (default 4MB) merges it: right after a burst of pins, a name search paid for reading
-- up to 4MB. A smaller list keeps that bounded; inserts still merge in batches.
ALTER INDEX pins_name_trgm SET (gin_pending_list_limit = 256);

-- Name searches (match=partial/ipartial): the trigram index finds the rows holding every trigram of the pattern,
-- walking each trigram's posting list. A word most names share ("backup" in backup-2024-…, "seed" in seed-N)
-- has a posting list about as long as the org: at a million pins, reading it cost ~20 ms whatever the pattern
-- matched. So the index is driven by the pattern with such words cut out (each becomes %, which can only match
-- more), and every row it finds is checked against the whole pattern. "Common" is judged on a sample of the org's
-- names, read at 100 evenly spaced positions (column statistics would be cheaper, but PostgreSQL hides them for
-- tables under row-level security): a word in at least a fifth of them. A pattern left without a word of three
-- or more characters (too few trigrams to be selective) is used whole.
CREATE FUNCTION pins_name_driver(lower_pattern text) RETURNS text
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, public
AS $$
DECLARE
    sample text[];
    w text;
    drive text := lower_pattern;
    kept boolean := false;
BEGIN
    SELECT array_agg(p.name_lower) INTO sample FROM public.pins p
    WHERE p.org_id = public.app_org() AND p.status = ANY ('{0,1,2,3}'::smallint[]) AND p.name_lower IS NOT NULL
      AND p.pos = ANY (ARRAY(SELECT generate_series(1::bigint, s.last_pos, greatest(s.last_pos / 100, 1))
                             FROM public.pin_org_state s WHERE s.org_id = public.app_org()));
    IF sample IS NULL OR cardinality(sample) < 20 THEN
        RETURN lower_pattern;
    END IF;
    FOR w IN SELECT DISTINCT x FROM regexp_split_to_table(lower_pattern, '[^[:alnum:]]+') AS x WHERE x <> '' LOOP
        IF (SELECT count(*) FROM unnest(sample) AS v WHERE strpos(v, w) > 0) * 5 >= cardinality(sample) THEN
            -- Words are whole alphanumeric runs: replacing one never joins or splits another.
            drive := regexp_replace(drive, '(^|[^[:alnum:]])' || w || '($|[^[:alnum:]])', '\1%\2', 'g');
        ELSIF length(w) >= 3 THEN
            kept := true;
        END IF;
    END LOOP;
    IF NOT kept THEN
        RETURN lower_pattern;
    END IF;
    RETURN regexp_replace(drive, '%+', '%', 'g');
END $$;

CREATE OR REPLACE FUNCTION pins_matching_name(pattern text, lower_pattern text, case_insensitive boolean)
RETURNS TABLE (request_id uuid, pos bigint, status smallint)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, public
AS $$
DECLARE
    drive text := public.pins_name_driver(lower_pattern);
BEGIN
    -- Planned per call (EXECUTE), for the patterns at hand. The whole pattern is checked on an expression the
    -- trigram index does not cover, so it cannot be folded back into the index scan.
    RETURN QUERY EXECUTE
        'SELECT p.request_id, p.pos, p.status FROM public.pins p
         WHERE p.org_id = public.app_org() AND p.name_lower LIKE $1
           AND ($2 = $1 OR (p.name_lower || '''') LIKE $2)
           AND ($3 OR p.name LIKE $4)'
        USING drive, lower_pattern, case_insensitive, pattern;
END $$;
REVOKE ALL ON FUNCTION pins_name_driver(text) FROM PUBLIC;
