-- EDUs that must reach their destination even across restarts of either side (to-device
-- messages, device list and signing key updates, read receipts), per destination, in order.
CREATE TABLE federation_edu_queue (
    id BIGSERIAL PRIMARY KEY,
    destination TEXT NOT NULL,
    edu TEXT NOT NULL
);
CREATE INDEX federation_edu_queue_order ON federation_edu_queue (destination, id);
