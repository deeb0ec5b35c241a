CREATE INDEX pins_org_name ON pins (org_id, name) WHERE name IS NOT NULL;
