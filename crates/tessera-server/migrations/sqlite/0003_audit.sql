-- Append-only audit log: each record's hash covers its fields and the previous record's hash,
-- so editing, deleting or reordering rows breaks the chain (tessera audit verify).
CREATE TABLE audit_log (
    seq        INTEGER PRIMARY KEY,      -- 1, 2, 3... no gaps
    at         INTEGER NOT NULL,         -- Unix seconds
    kind       TEXT NOT NULL,
    user_id    TEXT,
    device_id  TEXT,
    wallet_id  TEXT,
    detail     TEXT NOT NULL,            -- JSON
    prev_hash  BLOB NOT NULL,
    hash       BLOB NOT NULL
);
CREATE INDEX audit_by_wallet ON audit_log(wallet_id, seq);
CREATE INDEX audit_by_user ON audit_log(user_id, seq);
