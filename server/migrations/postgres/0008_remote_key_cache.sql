-- The last answer other servers gave about their users' device and cross-signing keys, so a
-- client can still encrypt to a user whose node is offline. Dropped when the user's node says
-- their keys changed.
CREATE TABLE remote_key_cache (
    user_id TEXT PRIMARY KEY,
    keys_json TEXT NOT NULL,
    fetched_ts BIGINT NOT NULL
);
