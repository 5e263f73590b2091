-- A device's transaction ID names one event: the write of a repeated send fails here, and the
-- first send's event is returned, so a send needs no lookup before it writes.
DROP INDEX events_txn;
CREATE UNIQUE INDEX events_txn ON events (sender, txn_device, txn_id) WHERE txn_id IS NOT NULL;
