-- Redactions received over federation before the event they redact: applied when it arrives.
CREATE TABLE pending_redactions (
    target_id TEXT NOT NULL,
    redaction_id TEXT NOT NULL,
    room_id TEXT NOT NULL,
    PRIMARY KEY (target_id, redaction_id)
);
