CREATE INDEX audit_events_time ON audit_events (at_max, seq);

CREATE OR REPLACE FUNCTION audit_first_seq(t timestamptz) RETURNS bigint
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public
AS $$
    SELECT coalesce((SELECT a.seq FROM public.audit_events a WHERE a.at_max >= t ORDER BY a.at_max, a.seq LIMIT 1),
                    9223372036854775807)
$$;
