-- The state event each state event replaced: the event the state before it held under the
-- same (type, state key), which clients read as `unsigned.prev_content`, `prev_sender` and
-- `replaces_state`. Written with the event, so serving it needs no state map: an empty string
-- when it replaced nothing, NULL where it is not known yet (events stored before this column,
-- and outliers, whose state before is not held), which the first read works out once and
-- stores.
ALTER TABLE events ADD COLUMN replaces_state TEXT;
