-- SQLite runs one server process: these tables stay empty (mailboxes and relay codes live in
-- its memory); they exist so that both schemas are the same.
-- Frames between server replicas (crate::mailboxes): which replica holds each open mailbox, and
-- frames too large for a NOTIFY payload on their way to it (read and deleted by the receiver;
-- rows older than a bound are deleted by housekeeping).
CREATE TABLE mailboxes (
    address TEXT PRIMARY KEY,
    instance TEXT NOT NULL,
    opened_at INTEGER NOT NULL
);
CREATE INDEX mailboxes_by_instance ON mailboxes (instance);
CREATE TABLE mailbox_frames (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    mailbox TEXT NOT NULL,
    frame BLOB NOT NULL,
    sent_at INTEGER NOT NULL
);
CREATE INDEX mailbox_frames_by_mailbox ON mailbox_frames (mailbox);
CREATE INDEX mailbox_frames_by_age ON mailbox_frames (sent_at);
-- The device relay's codes whose first device waits for the second (crate::relay), shared by
-- every replica: the caps count them, and the second device may arrive at any replica.
CREATE TABLE relay_codes (
    code TEXT PRIMARY KEY,
    instance TEXT NOT NULL,
    wait_id INTEGER NOT NULL,
    source TEXT NOT NULL,
    since INTEGER NOT NULL
);
CREATE INDEX relay_codes_by_source ON relay_codes (source);
CREATE INDEX relay_codes_by_instance ON relay_codes (instance);
