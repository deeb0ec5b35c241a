ALTER TABLE audit_events ALTER COLUMN data TYPE jsonb USING data::jsonb;
