-- Migration 000008 keyed the actor and type indexes on expressions, hashtextextended(value, 0). Under row-level
-- security, which every tenant's query runs under, PostgreSQL may not apply a function that is not leakproof to a
-- row before the policy's own condition, so a tenant's filter by a rare actor or type could not use its index and
-- read the org's whole trail instead (331 ms for one row among 1,037,979). The hashes are now stored columns,
-- compared with bigint equality, which is leakproof: the index keeps its fixed-width key (the point of 000008)
-- and serves tenants again.
ALTER TABLE audit_events
    ADD COLUMN actor_key bigint GENERATED ALWAYS AS (hashtextextended(actor, 0)) STORED,
    ADD COLUMN type_key bigint GENERATED ALWAYS AS (hashtextextended(type, 0)) STORED;
DROP INDEX audit_events_org_actor;
DROP INDEX audit_events_org_type;
CREATE INDEX audit_events_org_actor ON audit_events (org_id, actor_key, seq DESC);
CREATE INDEX audit_events_org_type ON audit_events (org_id, type_key, seq DESC);
