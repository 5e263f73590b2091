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
