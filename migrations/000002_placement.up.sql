-- Placement: nodes, the placements the scheduler decided, and each pin's status derived from its placements.

-- Nodes are not tenant data: every org's pins may sit on any node. The API role reads them for delegates.
CREATE TABLE nodes (
    node_id       text PRIMARY KEY,
    peer_id       text NOT NULL,
    addrs         text[] NOT NULL,
    capacity      bigint NOT NULL DEFAULT 0, -- 0: unlimited
    state         smallint NOT NULL DEFAULT 0 CHECK (state BETWEEN 0 AND 2), -- 0 active, 1 cordoned, 2 drained
    registered_at timestamptz NOT NULL,
    placed        bigint NOT NULL DEFAULT 0, -- live placements on the node (capacity checks)
    last_seq      bigint NOT NULL
);

-- One row per live placement of a pin request on a node (removed when unplaced). It outlives its pin row: after
-- a removal or replace, the scheduler still has to unplace it (pin_gone), and a replaced pin's placement is only
-- released once its successor (replaced_by) is pinned, so blocks the two share are never unpinned in between.
CREATE TABLE placements (
    org_id      uuid NOT NULL,
    request_id  uuid NOT NULL,
    node_id     text NOT NULL,
    cid         text NOT NULL,
    status      smallint NOT NULL DEFAULT 0 CHECK (status BETWEEN 0 AND 3),
    info        jsonb,
    placed_seq  bigint NOT NULL, -- the pin.placed event; observations answer it
    term        bigint NOT NULL,
    moved_from  text,            -- set by drain/rebalance: the node this placement supersedes
    pin_gone    boolean NOT NULL DEFAULT false,
    replaced_by uuid,
    last_seq    bigint NOT NULL,
    PRIMARY KEY (org_id, request_id, node_id)
);
CREATE INDEX placements_node ON placements (node_id);
CREATE INDEX placements_gone ON placements (org_id, request_id) WHERE pin_gone;
CREATE INDEX placements_moved ON placements (moved_from) WHERE moved_from IS NOT NULL;

-- The scheduler's fence and switch: the latest term started, and maintenance mode.
CREATE TABLE sched_state (
    id                int PRIMARY KEY CHECK (id = 1),
    term              bigint NOT NULL DEFAULT 0,
    maintenance       boolean NOT NULL DEFAULT false,
    maintenance_since timestamptz,
    maintenance_note  text NOT NULL DEFAULT '',
    last_seq          bigint NOT NULL DEFAULT 0
);
INSERT INTO sched_state (id) VALUES (1);

-- Pins: the nodes holding them (their delegates), how many, and the request a replace supersedes.
ALTER TABLE pins DROP COLUMN delegates;
ALTER TABLE pins ADD COLUMN placed_nodes text[];
ALTER TABLE pins ADD COLUMN replicas smallint NOT NULL DEFAULT 0;
ALTER TABLE pins ADD COLUMN replaces uuid;
-- The scheduler's queue: pins with fewer placements than the replication factor (at most 7), oldest first.
CREATE INDEX pins_underplaced ON pins (replicas, created) WHERE replicas < 8;

ALTER TABLE placements ENABLE ROW LEVEL SECURITY;
ALTER TABLE placements FORCE ROW LEVEL SECURITY;
CREATE POLICY placements_owner ON placements TO CURRENT_USER USING (true) WITH CHECK (true);
CREATE POLICY placements_tenant ON placements FOR SELECT USING (org_id = app_org());
