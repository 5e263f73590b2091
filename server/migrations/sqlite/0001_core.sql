-- Node-wide bookkeeping: one row.
CREATE TABLE meta (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    stream_position BIGINT NOT NULL
);
INSERT INTO meta (id, stream_position) VALUES (1, 0);
