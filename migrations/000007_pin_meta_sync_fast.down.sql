-- The pin_meta trigger function as 000004 created it (no early return).
CREATE OR REPLACE FUNCTION pin_meta_sync() RETURNS trigger
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
