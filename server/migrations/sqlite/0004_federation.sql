-- Federation: one outgoing queue per destination server, and the cursor of the task that fills
-- the queues from the event stream (so an event committed before a crash is still sent after it).

-- Events waiting to be sent to `destination`, in stream order.
CREATE TABLE federation_queue (
    destination TEXT NOT NULL,
    position BIGINT NOT NULL,
    event_id TEXT NOT NULL,
    PRIMARY KEY (destination, event_id)
);
CREATE INDEX federation_queue_order ON federation_queue (destination, position);

-- The last stream position whose events have been queued: one row.
CREATE TABLE federation_cursor (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    position BIGINT NOT NULL
);
INSERT INTO federation_cursor (id, position) VALUES (1, 0);

-- Invites of local users to rooms this node is not in: the invite event (also stored as an
-- outlier), the stripped state shown with it, and the room version for joining or refusing.
CREATE TABLE remote_invites (
    room_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    room_version TEXT NOT NULL,
    invite_state TEXT NOT NULL,
    PRIMARY KEY (room_id, user_id)
);
