-- Bans of parties the engine blamed, and wallet locks after repeated unattributed aborts.
-- A ban or lock is never deleted: it is lifted (by a complete refresh of the wallet), and the
-- row keeps who approved the lift and which refresh lifted it.

-- The table of 0001 was never written; it is replaced by one that keeps the whole record.
DROP TABLE banned_parties;
CREATE TABLE banned_parties (
    id                TEXT PRIMARY KEY,          -- hex of 16 random bytes
    wallet_id         TEXT NOT NULL,
    party             INTEGER NOT NULL,               -- party index in the wallet (device = 0)
    device_id         TEXT,                      -- the device that ran the session as that party
    session_id        TEXT NOT NULL,
    round             INTEGER NOT NULL,               -- the protocol round whose message was blamed
    reason            TEXT NOT NULL,             -- the engine's description of the failed check
    banned_at         INTEGER NOT NULL,
    lift_approved_by  TEXT,                      -- another active device of the owner
    lift_signature    TEXT,                      -- its identity signature over api::ban_lift_message
    lift_approved_at  INTEGER,
    lifted_at         INTEGER,
    lift_session      TEXT                       -- the refresh that lifted it
);
-- At most one ban in force per party of a wallet.
CREATE UNIQUE INDEX banned_parties_in_force ON banned_parties(wallet_id, party) WHERE lifted_at IS NULL;

-- Sign and refresh runs that aborted without the engine blaming anybody (a disconnect
-- mid-protocol, an invalid message, a final signature that does not verify). Cleared by a refresh.
CREATE TABLE wallet_aborts (
    session_id  TEXT PRIMARY KEY,
    wallet_id   TEXT NOT NULL,
    party       INTEGER,                              -- named when only one party can be the cause
    reason      TEXT NOT NULL,
    at          INTEGER NOT NULL
);
CREATE INDEX wallet_aborts_by_wallet ON wallet_aborts(wallet_id, at);

-- A wallet locked after too many aborts in the window; only a refresh unlocks it.
CREATE TABLE wallet_locks (
    id            TEXT PRIMARY KEY,
    wallet_id     TEXT NOT NULL,
    reason        TEXT NOT NULL,
    locked_at     INTEGER NOT NULL,
    lifted_at     INTEGER,
    lift_session  TEXT
);
CREATE UNIQUE INDEX wallet_locks_in_force ON wallet_locks(wallet_id) WHERE lifted_at IS NULL;

-- Old share epochs are now deleted when a refresh switches; those earlier builds kept go now
-- (refresh exists so that an old share is worthless).
DELETE FROM server_shares WHERE state = 'retired';
