-- PostgreSQL twin of migrations/sqlite/0012_structure_wallets.sql (altered in place).
-- Wallets under an access structure (issue 15, docs/quorum-wallets.md): a wallet's structure and
-- its parties, and sessions that reshare.

-- wallets: `structure` is the canonical structure text (NULL: a 2-of-2 wallet of the first
-- builds, device = party 0, server = party 1); `public_key` is NULL while a structure wallet's
-- keygen has not completed (its name is reserved and its parties invited from the request on).
ALTER TABLE wallets ADD COLUMN structure TEXT;
ALTER TABLE wallets ALTER COLUMN public_key DROP NOT NULL;
ALTER TABLE wallets ADD CONSTRAINT wallets_key_or_structure
    CHECK (public_key IS NOT NULL OR structure IS NOT NULL);

-- The parties of a structure wallet: party `party` is the structure's `party`-th label in
-- written order. The server, or a device (with its user: the owner's, or another user's, which
-- takes part only once it accepted: its identity signature over the canonical acceptance
-- message, hex, and when).
CREATE TABLE wallet_parties (
    wallet_id    TEXT NOT NULL REFERENCES wallets(id),
    party        BIGINT NOT NULL,
    label        TEXT NOT NULL,
    kind         TEXT NOT NULL CHECK (kind IN ('server', 'device')),
    device_id    TEXT REFERENCES devices(id),
    user_id      TEXT REFERENCES users(id),
    acceptance   TEXT,
    accepted_at  BIGINT,
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

-- sessions: `protocol` may be 'reshare'.
ALTER TABLE sessions DROP CONSTRAINT sessions_protocol_check;
ALTER TABLE sessions ADD CONSTRAINT sessions_protocol_check
    CHECK (protocol IN ('keygen', 'sign', 'refresh', 'reshare'));
-- A reshare, like a refresh, writes the next epoch's pending shares: at most one of either is
-- live per wallet (replaces the index of 0002).
DROP INDEX sessions_one_live_refresh;
CREATE UNIQUE INDEX sessions_one_live_switch ON sessions (wallet_id)
    WHERE protocol IN ('refresh', 'reshare') AND status IN ('created', 'running');
