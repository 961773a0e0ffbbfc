-- PostgreSQL twin of migrations/sqlite/0001_init.sql (BYTEA for BLOB, BIGINT for INTEGER).
-- Users, their devices, wallets and the server's sealed shares, protocol sessions.
-- Times are Unix seconds (UTC).

CREATE TABLE users (
    id          TEXT PRIMARY KEY,            -- UUID
    name        TEXT NOT NULL UNIQUE,
    created_at  BIGINT NOT NULL
);

CREATE TABLE devices (
    id             TEXT PRIMARY KEY,         -- UUID
    user_id        TEXT NOT NULL REFERENCES users(id),
    name           TEXT NOT NULL,
    identity_key   BYTEA NOT NULL,            -- Ed25519 public key, 32 bytes
    status         TEXT NOT NULL CHECK (status IN ('active', 'pending', 'revoked')),
    registered_at  BIGINT NOT NULL,
    last_seen      BIGINT,
    revoked_at     BIGINT,
    UNIQUE (user_id, identity_key)
);
CREATE INDEX devices_by_key ON devices(identity_key);

CREATE TABLE challenges (
    challenge   BYTEA PRIMARY KEY,
    device_id   TEXT NOT NULL REFERENCES devices(id),
    expires_at  BIGINT NOT NULL
);

CREATE TABLE wallets (
    id          TEXT PRIMARY KEY,            -- hex WalletId
    user_id     TEXT NOT NULL REFERENCES users(id),
    name        TEXT NOT NULL,
    threshold_t BIGINT NOT NULL,
    threshold_n BIGINT NOT NULL,
    public_key  BYTEA NOT NULL,               -- compressed SEC1
    epoch       BIGINT NOT NULL,
    created_at  BIGINT NOT NULL,
    UNIQUE (user_id, name)
);

-- The server's share of each wallet, sealed under the key-encryption key (envelope encryption).
CREATE TABLE server_shares (
    wallet_id   TEXT NOT NULL REFERENCES wallets(id),
    epoch       BIGINT NOT NULL,
    state       TEXT NOT NULL CHECK (state IN ('active', 'pending', 'retired')),
    sealed      BYTEA NOT NULL,               -- JSON SealedSecret
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (wallet_id, epoch)
);

CREATE TABLE sessions (
    id               TEXT PRIMARY KEY,       -- hex of 16 random bytes
    device_id        TEXT NOT NULL REFERENCES devices(id),
    wallet_id        TEXT NOT NULL,
    protocol         TEXT NOT NULL CHECK (protocol IN ('keygen', 'sign', 'refresh')),
    status           TEXT NOT NULL CHECK (status IN ('created', 'running', 'done', 'failed', 'expired')),
    nonce            BYTEA NOT NULL,
    params           TEXT NOT NULL,          -- JSON of the request
    epoch            BIGINT NOT NULL,
    created_at       BIGINT NOT NULL,
    last_message_at  BIGINT NOT NULL,
    detail           TEXT
);

-- Parties the engine proved to misbehave; refused for the wallet until it is reshared.
CREATE TABLE banned_parties (
    wallet_id   TEXT NOT NULL,
    party       BIGINT NOT NULL,
    reason      TEXT NOT NULL,
    banned_at   BIGINT NOT NULL,
    PRIMARY KEY (wallet_id, party)
);
