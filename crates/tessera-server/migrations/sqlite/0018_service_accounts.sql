-- Service accounts (issue 16): a user's backend creates signing requests with its own Ed25519
-- key, registered by an active device of the user, scoped to wallets and request kinds. A key is
-- registered once for good (UNIQUE even after revocation): a replayed registration cannot bring
-- a revoked key back.
CREATE TABLE service_accounts (
    id          TEXT PRIMARY KEY,            -- UUID
    user_id     TEXT NOT NULL REFERENCES users(id),
    name        TEXT NOT NULL,               -- NFC, checked as device names are
    public_key  BLOB NOT NULL UNIQUE,        -- Ed25519, 32 bytes
    wallets     TEXT NOT NULL,               -- JSON array of wallet ids
    kinds       TEXT NOT NULL,               -- JSON array of request kinds
    created_by  TEXT NOT NULL REFERENCES devices(id),
    created_at  INTEGER NOT NULL,
    revoked_at  INTEGER,
    revoked_by  TEXT REFERENCES devices(id)
);
CREATE INDEX service_accounts_by_user ON service_accounts(user_id);

-- The one-time challenges a service account signs to get a token (the devices' `challenges`
-- table refers to devices).
CREATE TABLE service_challenges (
    challenge   BLOB PRIMARY KEY,
    service_id  TEXT NOT NULL REFERENCES service_accounts(id),
    expires_at  INTEGER NOT NULL
);

-- Webhook outbox: one row per request state change, written in the transaction of the change,
-- delivered (and retried with backoff) by a worker; rows survive restarts.
CREATE TABLE webhook_deliveries (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    body          TEXT NOT NULL,             -- the exact bytes signed and POSTed
    attempts      INTEGER NOT NULL DEFAULT 0,
    next_at       INTEGER NOT NULL,          -- due (or claimed until) this time
    created_at    INTEGER NOT NULL,
    delivered_at  INTEGER,
    failed_at     INTEGER,                   -- given up after the last attempt
    last_error    TEXT
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries(next_at) WHERE delivered_at IS NULL AND failed_at IS NULL;
