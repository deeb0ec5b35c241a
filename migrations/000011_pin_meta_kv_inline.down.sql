CREATE OR REPLACE FUNCTION pin_meta_kv(k text, v jsonb) RETURNS uuid
LANGUAGE sql IMMUTABLE PARALLEL SAFE STRICT
AS $$ SELECT md5(jsonb_build_object(k, v)::text)::uuid $$;
