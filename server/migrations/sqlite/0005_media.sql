-- The media repository: files uploaded by local users and cached copies of other servers'
-- files. The bytes live in files under the node's media directory; these rows say what each
-- file is. A file is moved into place before its row is written, so a row never names a
-- half-written file.

CREATE TABLE media (
    origin TEXT NOT NULL,
    media_id TEXT NOT NULL,
    content_type TEXT,
    filename TEXT,
    -- NULL while an ID reserved for an asynchronous upload still waits for its content.
    size BIGINT,
    -- The local user who uploaded it; NULL for a copy fetched from another server.
    uploader TEXT,
    created_ms BIGINT NOT NULL,
    PRIMARY KEY (origin, media_id)
);
CREATE INDEX media_uploader ON media (uploader, created_ms);

-- Thumbnails made of a media file, one per requested size and method.
CREATE TABLE media_thumbnails (
    origin TEXT NOT NULL,
    media_id TEXT NOT NULL,
    width BIGINT NOT NULL,
    height BIGINT NOT NULL,
    method TEXT NOT NULL,
    content_type TEXT NOT NULL,
    size BIGINT NOT NULL,
    created_ms BIGINT NOT NULL,
    PRIMARY KEY (origin, media_id, width, height, method),
    FOREIGN KEY (origin, media_id) REFERENCES media (origin, media_id) ON DELETE CASCADE
);
