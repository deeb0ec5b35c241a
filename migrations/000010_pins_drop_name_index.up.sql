-- No query reads pins_org_name (org_id, name): an exact name filter is served by pins_org_name_lower and checks
-- the name itself on the rows it finds (see PinsListByName), and every other name filter goes through the
-- lowered name or its trigram index. The index only cost time: an entry per named pin on every insert, and a
-- build of about 1 s in a rebuild of 395,663 pins.
DROP INDEX pins_org_name;
