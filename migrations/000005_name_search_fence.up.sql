-- Name searches right after a burst of writes. Until autovacuum first analyzes pins (a fresh node loaded in bulk),
-- or while its statistics predate an org's growth, the planner takes "org_id = app_org()" for a selective
-- condition: it ANDs the trigram bitmap with a bitmap of the org's whole range in one of the (org_id, …) btrees.
-- That range is O(org), dead index entries of not yet vacuumed updates included: at 336k freshly seeded pins,
-- 3,652 buffers and 17-32 ms per call where the trigram scan alone read 104 (under 1 ms). So the trigram index
-- drives the search alone, behind a materialized fence, and the org is checked on the rows it finds: the plan an
-- analyzed table gets, whatever the statistics say. Rows of other orgs holding the pattern are read and dropped,
-- as in that plan.
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
        'WITH m AS MATERIALIZED (
             SELECT p.org_id, p.request_id, p.pos, p.status FROM public.pins p
             WHERE p.name_lower LIKE $1
               AND ($2 = $1 OR (p.name_lower || '''') LIKE $2)
               AND ($3 OR p.name LIKE $4)
         )
         SELECT m.request_id, m.pos, m.status FROM m WHERE m.org_id = public.app_org()'
        USING drive, lower_pattern, case_insensitive, pattern;
END $$;
