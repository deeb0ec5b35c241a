DROP INDEX IF EXISTS pins_underplaced;
ALTER TABLE pins DROP COLUMN IF EXISTS replaces;
ALTER TABLE pins DROP COLUMN IF EXISTS replicas;
ALTER TABLE pins DROP COLUMN IF EXISTS placed_nodes;
ALTER TABLE pins ADD COLUMN IF NOT EXISTS delegates text[];
DROP TABLE IF EXISTS sched_state, placements, nodes;
