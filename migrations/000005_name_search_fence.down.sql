CREATE OR REPLACE FUNCTION pins_matching_name(pattern text, lower_pattern text, case_insensitive boolean)
RETURNS TABLE (request_id uuid, pos bigint, status smallint)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, public
AS $$
DECLARE
    drive text := public.pins_name_driver(lower_pattern);
BEGIN
    RETURN QUERY EXECUTE
        'SELECT p.request_id, p.pos, p.status FROM public.pins p
         WHERE p.org_id = public.app_org() AND p.name_lower LIKE $1
           AND ($2 = $1 OR (p.name_lower || '''') LIKE $2)
           AND ($3 OR p.name LIKE $4)'
        USING drive, lower_pattern, case_insensitive, pattern;
END $$;
