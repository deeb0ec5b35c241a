DROP FUNCTION IF EXISTS audit_sched_terms(bigint);
DROP FUNCTION IF EXISTS audit_max_lag();
DROP FUNCTION IF EXISTS audit_first_seq(timestamptz);
DROP TABLE IF EXISTS audit_events;
