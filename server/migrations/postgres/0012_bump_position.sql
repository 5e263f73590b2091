-- The stream position of each room's newest message-like event (a message, an encrypted or
-- sticker event, a call invite, a poll or live location start, the room's creation): what a
-- simplified sliding sync orders a user's rooms by, read without scanning their events.
ALTER TABLE rooms ADD COLUMN bump_position BIGINT NOT NULL DEFAULT 0;
UPDATE rooms SET bump_position = COALESCE((
    SELECT MAX(e.position) FROM events e
    WHERE e.room_id = rooms.room_id AND e.rejected = 0 AND e.position > 0
    AND e.event_type IN ('m.room.create', 'm.room.message', 'm.room.encrypted', 'm.sticker',
        'm.call.invite', 'm.poll.start', 'org.matrix.msc3381.poll.start', 'm.beacon_info',
        'org.matrix.msc3672.beacon_info')
), 0);

-- Which rooms' receipts changed between two positions, without reading every receipt.
CREATE INDEX receipts_stream ON receipts (position);
