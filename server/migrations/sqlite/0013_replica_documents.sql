-- The newest replica document held for each home (a 64-hex server name): which nodes serve
-- it and which keys they sign with, signed by the home key. Older versions are never kept.
CREATE TABLE replica_documents (
    server_name TEXT NOT NULL PRIMARY KEY,
    version BIGINT NOT NULL,
    document TEXT NOT NULL
);
