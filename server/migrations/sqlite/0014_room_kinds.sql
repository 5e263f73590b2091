-- What simplified sliding sync's list filters ask of a room, kept beside it so a list of
-- thousands of rooms is filtered without reading any state: the room's type from its create
-- event (NULL: a room without a type; 'm.space': a space), and whether its current state holds
-- an m.room.encryption event. Both move in the write that moves the room's current state.
ALTER TABLE rooms ADD COLUMN room_type TEXT;
ALTER TABLE rooms ADD COLUMN encrypted BIGINT NOT NULL DEFAULT 0;

-- Rooms held before: walk each room's current state group down its delta chain (a delta only
-- adds or replaces entries, so an entry anywhere on the chain is in the current state).
UPDATE rooms SET encrypted = 1 WHERE room_id IN (
    WITH RECURSIVE chain (room_id, group_id, prev_group, depth) AS (
        SELECT r.room_id, s.group_id, s.prev_group, 0 FROM rooms r
        JOIN state_groups s ON s.group_id = r.current_group
        UNION ALL
        SELECT c.room_id, s.group_id, s.prev_group, c.depth + 1 FROM state_groups s
        JOIN chain c ON s.group_id = c.prev_group
        WHERE c.depth < 4194304
    )
    SELECT c.room_id FROM chain c
    JOIN state_group_entries g ON g.group_id = c.group_id
    WHERE g.event_type = 'm.room.encryption' AND g.state_key = ''
);
UPDATE rooms SET room_type = (
    SELECT CASE
        WHEN json_type(e.pdu, '$.content.type') = 'text'
        THEN json_extract(e.pdu, '$.content.type')
    END
    FROM events e
    WHERE e.room_id = rooms.room_id AND e.event_type = 'm.room.create' AND e.state_key = ''
    AND e.rejected = 0
    ORDER BY e.position
    LIMIT 1
);
