ALTER INDEX pins_name_trgm RESET (gin_pending_list_limit);
CREATE INDEX IF NOT EXISTS pins_meta ON pins USING gin (meta jsonb_path_ops) WHERE meta IS NOT NULL;
DROP TRIGGER IF EXISTS pins_meta_truncate ON pins;
DROP TRIGGER IF EXISTS pins_meta_delete ON pins;
DROP TRIGGER IF EXISTS pins_meta_update ON pins;
DROP TRIGGER IF EXISTS pins_meta_insert ON pins;
DROP FUNCTION IF EXISTS pin_meta_sync();
DROP TABLE IF EXISTS pin_meta_counts;
DROP TABLE IF EXISTS pin_meta;
DROP FUNCTION IF EXISTS pin_meta_kv(text, jsonb);
CREATE OR REPLACE FUNCTION pins_matching_name(pattern text, lower_pattern text, case_insensitive boolean)
RETURNS TABLE (request_id uuid, pos bigint, status smallint)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public
AS $$
    SELECT p.request_id, p.pos, p.status FROM public.pins p
    WHERE p.org_id = public.app_org()
      AND p.name_lower LIKE lower_pattern
      AND (case_insensitive OR p.name LIKE pattern)
$$;
DROP FUNCTION IF EXISTS pins_name_driver(text);
