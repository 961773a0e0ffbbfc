-- Append-only audit log: each record's hash covers its fields and the previous record's hash,
-- so editing, deleting or reordering rows breaks the chain (tessera audit verify).
CREATE TABLE audit_log (
    seq        BIGINT PRIMARY KEY,       -- 1, 2, 3... no gaps
    at         BIGINT NOT NULL,         -- Unix seconds
    kind       TEXT NOT NULL,
    user_id    TEXT,
    device_id  TEXT,
    wallet_id  TEXT,
    detail     TEXT NOT NULL,            -- JSON
    prev_hash  BYTEA NOT NULL,
    hash       BYTEA NOT NULL
);
CREATE INDEX audit_by_wallet ON audit_log(wallet_id, seq);
CREATE INDEX audit_by_user ON audit_log(user_id, seq);
