DROP INDEX audit_events_org_actor;
DROP INDEX audit_events_org_type;
ALTER TABLE audit_events DROP COLUMN actor_key, DROP COLUMN type_key;
CREATE INDEX audit_events_org_actor ON audit_events (org_id, hashtextextended(actor, 0), seq DESC);
CREATE INDEX audit_events_org_type ON audit_events (org_id, hashtextextended(type, 0), seq DESC);
