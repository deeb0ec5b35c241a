-- The audit trail keeps each event's payload as the log recorded it: json (the text, checked to be JSON) instead
-- of jsonb (parsed into a binary tree on the way in, printed back on the way out). Nothing queries inside it but
-- audit_sched_terms (->> works on json alike), and the text costs less on every path: a rebuild COPYs a row per
-- event (1M rows: 10.9 s of one core with jsonb, 7.9 s with json, in psql), the incremental projector inserts
-- them, and audit reads hand them out. Rows written before this migration keep jsonb's normalised spelling of
-- their payload; replay verify compares payloads as JSON values, so both spellings of one event are equal.
ALTER TABLE audit_events ALTER COLUMN data TYPE json USING data::json;
