-- Verify keys of DNS-named servers, as their key servers last gave them, so that a restarted
-- node can check their requests and events while those servers are out of reach.
CREATE TABLE server_keys (
    server_name TEXT NOT NULL,
    key_id TEXT NOT NULL,
    public_key TEXT NOT NULL,
    valid_until_ms BIGINT NOT NULL,
    PRIMARY KEY (server_name, key_id)
);
