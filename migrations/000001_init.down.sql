DROP FUNCTION IF EXISTS pins_matching_meta(jsonb);
DROP FUNCTION IF EXISTS pins_matching_name(text, text, boolean);
DROP TABLE IF EXISTS pin_org_state, pin_counts, pins, tokens, orgs, projection_checkpoints;
DROP FUNCTION IF EXISTS app_org();
DROP FUNCTION IF EXISTS projection_advance(text, bigint, bigint);
