DROP INDEX audit_events_org_actor;
DROP INDEX audit_events_org_type;
CREATE INDEX audit_events_org_actor ON audit_events (org_id, actor, seq DESC);
CREATE INDEX audit_events_org_type ON audit_events (org_id, type, seq DESC);
