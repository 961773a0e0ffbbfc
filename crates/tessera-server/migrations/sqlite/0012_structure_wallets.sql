-- Wallets under an access structure (issue 15, docs/quorum-wallets.md): a wallet's structure and
-- its parties, and sessions that reshare.
--
-- SQLite cannot change a column's NOT NULL or a CHECK in place: `wallets` and `sessions` are
-- rebuilt here (create the new table, copy every row, drop the old one, rename, recreate its
-- indexes), inside the migration's transaction. Foreign keys stay on during migrations, so
-- `wallets` (which server_shares, policies and server_backup_holders reference) is rebuilt with
-- its children's rows set aside and put back after the rename; the rename (with foreign keys
-- on) would otherwise repoint their references at the old table.

-- wallets: `structure` is the canonical structure text (NULL: a 2-of-2 wallet of the first
-- builds, device = party 0, server = party 1); `public_key` is NULL while a structure wallet's
-- keygen has not completed (its name is reserved and its parties invited from the request on).
CREATE TEMP TABLE keep_server_shares AS SELECT * FROM server_shares;
CREATE TEMP TABLE keep_policies AS SELECT * FROM policies;
CREATE TEMP TABLE keep_server_backup_holders AS SELECT * FROM server_backup_holders;
DELETE FROM server_shares;
DELETE FROM policies;
DELETE FROM server_backup_holders;

CREATE TABLE wallets_0012 (
    id          TEXT PRIMARY KEY,            -- hex WalletId
    user_id     TEXT NOT NULL REFERENCES users(id),
    name        TEXT NOT NULL,
    threshold_t INTEGER NOT NULL,            -- structure wallets: the smallest quorum's size
    threshold_n INTEGER NOT NULL,            -- structure wallets: the number of parties
    public_key  BLOB,                        -- compressed SEC1; NULL until a structure keygen ends
    epoch       INTEGER NOT NULL,
    created_at  INTEGER NOT NULL,
    structure   TEXT,
    UNIQUE (user_id, name),
    CHECK (public_key IS NOT NULL OR structure IS NOT NULL)
);
INSERT INTO wallets_0012 (id, user_id, name, threshold_t, threshold_n, public_key, epoch, created_at, structure)
    SELECT id, user_id, name, threshold_t, threshold_n, public_key, epoch, created_at, NULL FROM wallets;
DROP TABLE wallets;
ALTER TABLE wallets_0012 RENAME TO wallets;

INSERT INTO server_shares SELECT * FROM keep_server_shares;
INSERT INTO policies SELECT * FROM keep_policies;
INSERT INTO server_backup_holders SELECT * FROM keep_server_backup_holders;
DROP TABLE keep_server_shares;
DROP TABLE keep_policies;
DROP TABLE keep_server_backup_holders;

-- The parties of a structure wallet: party `party` is the structure's `party`-th label in
-- written order. The server, or a device (with its user: the owner's, or another user's, which
-- takes part only once it accepted: its identity signature over the canonical acceptance
-- message, hex, and when).
CREATE TABLE wallet_parties (
    wallet_id    TEXT NOT NULL REFERENCES wallets(id),
    party        INTEGER NOT NULL,
    label        TEXT NOT NULL,
    kind         TEXT NOT NULL CHECK (kind IN ('server', 'device')),
    device_id    TEXT REFERENCES devices(id),
    user_id      TEXT REFERENCES users(id),
    acceptance   TEXT,
    accepted_at  INTEGER,
    PRIMARY KEY (wallet_id, party),
    UNIQUE (wallet_id, label),
    UNIQUE (wallet_id, device_id),
    CHECK (party >= 0 AND party < 16),
    CHECK ((kind = 'server' AND device_id IS NULL AND user_id IS NULL AND acceptance IS NULL)
        OR (kind = 'device' AND device_id IS NOT NULL AND user_id IS NOT NULL)),
    CHECK ((acceptance IS NULL) = (accepted_at IS NULL))
);
-- One server party per wallet.
CREATE UNIQUE INDEX wallet_parties_one_server ON wallet_parties (wallet_id) WHERE kind = 'server';
-- The wallets a user's devices are parties of (their `wallets`).
CREATE INDEX wallet_parties_by_user ON wallet_parties (user_id);
CREATE INDEX wallet_parties_by_device ON wallet_parties (device_id);

-- sessions: `protocol` may be 'reshare'. Nothing references sessions, so a plain rebuild.
CREATE TABLE sessions_0012 (
    id               TEXT PRIMARY KEY,       -- hex of 16 random bytes
    device_id        TEXT NOT NULL REFERENCES devices(id),
    wallet_id        TEXT NOT NULL,
    protocol         TEXT NOT NULL CHECK (protocol IN ('keygen', 'sign', 'refresh', 'reshare')),
    status           TEXT NOT NULL CHECK (status IN ('created', 'running', 'done', 'failed', 'expired')),
    nonce            BLOB NOT NULL,
    params           TEXT NOT NULL,          -- JSON of the request
    epoch            INTEGER NOT NULL,
    created_at       INTEGER NOT NULL,
    last_message_at  INTEGER NOT NULL,
    detail           TEXT,
    owner            TEXT
);
INSERT INTO sessions_0012 (id, device_id, wallet_id, protocol, status, nonce, params, epoch, created_at, last_message_at, detail, owner)
    SELECT id, device_id, wallet_id, protocol, status, nonce, params, epoch, created_at, last_message_at, detail, owner FROM sessions;
DROP TABLE sessions;
ALTER TABLE sessions_0012 RENAME TO sessions;
-- The indexes of 0002 and 0010. A reshare, like a refresh, writes the next epoch's pending
-- shares: at most one of either is live per wallet.
CREATE UNIQUE INDEX sessions_one_live_switch ON sessions (wallet_id)
    WHERE protocol IN ('refresh', 'reshare') AND status IN ('created', 'running');
CREATE INDEX sessions_live_by_device ON sessions (device_id) WHERE status IN ('created', 'running');
CREATE INDEX sessions_live_by_wallet ON sessions (wallet_id) WHERE status IN ('created', 'running');
