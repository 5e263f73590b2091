-- Rooms: the events of every room, their DAG edges, state groups, memberships and aliases.

-- One row per room this node takes part in. `extremities` is the JSON array of the room's
-- forward extremities and `current_group` the state group of its current state; both change in
-- the same transaction as the event that moves them.
CREATE TABLE rooms (
    room_id TEXT PRIMARY KEY,
    room_version TEXT NOT NULL,
    current_group BIGINT NOT NULL,
    extremities TEXT NOT NULL,
    published BIGINT NOT NULL DEFAULT 0
);

-- Every event (PDU) of every room. `position` is the node-wide stream position (NULL for
-- outliers); `state_group` is the state after the event; `pdu` is the canonical JSON (in
-- redacted form once redacted).
CREATE TABLE events (
    event_id TEXT PRIMARY KEY,
    room_id TEXT NOT NULL,
    position BIGINT,
    depth BIGINT NOT NULL,
    event_type TEXT NOT NULL,
    state_key TEXT,
    sender TEXT NOT NULL,
    origin_server_ts BIGINT NOT NULL,
    pdu TEXT NOT NULL,
    state_group BIGINT,
    rejected BIGINT NOT NULL DEFAULT 0,
    redacted_by TEXT,
    txn_device TEXT,
    txn_id TEXT
);
CREATE UNIQUE INDEX events_room_position ON events (room_id, position);
CREATE INDEX events_position ON events (position);
CREATE INDEX events_txn ON events (sender, txn_device, txn_id);

-- The `prev_events` edges of the DAG.
CREATE TABLE event_edges (
    event_id TEXT NOT NULL,
    prev_event_id TEXT NOT NULL,
    room_id TEXT NOT NULL,
    PRIMARY KEY (event_id, prev_event_id)
);
CREATE INDEX event_edges_prev ON event_edges (prev_event_id);

-- State groups: a delta over `prev_group`, or a full snapshot when `prev_group` is NULL.
CREATE TABLE state_groups (
    group_id BIGINT PRIMARY KEY,
    room_id TEXT NOT NULL,
    prev_group BIGINT,
    chain_len BIGINT NOT NULL
);
CREATE TABLE state_group_entries (
    group_id BIGINT NOT NULL,
    event_type TEXT NOT NULL,
    state_key TEXT NOT NULL,
    event_id TEXT NOT NULL,
    PRIMARY KEY (group_id, event_type, state_key)
);

-- The current membership of each user in each room, from the room's current state.
CREATE TABLE memberships (
    room_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    membership TEXT NOT NULL,
    event_id TEXT NOT NULL,
    position BIGINT NOT NULL,
    forgotten BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (room_id, user_id)
);
CREATE INDEX memberships_user ON memberships (user_id);

-- Every change of a user's membership, by stream position, so sync can tell which rooms a
-- user was in at any position.
CREATE TABLE membership_log (
    user_id TEXT NOT NULL,
    position BIGINT NOT NULL,
    room_id TEXT NOT NULL,
    membership TEXT NOT NULL,
    event_id TEXT NOT NULL,
    PRIMARY KEY (user_id, position)
);
CREATE INDEX membership_log_room ON membership_log (room_id, position);

-- Local room aliases.
CREATE TABLE room_aliases (
    alias TEXT PRIMARY KEY,
    room_id TEXT NOT NULL,
    creator TEXT NOT NULL
);
CREATE INDEX room_aliases_room ON room_aliases (room_id);
