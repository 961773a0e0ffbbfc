-- Actions that one device cannot take alone: exporting the server's share (or changing the
-- holders it is exported to), weakening a wallet's policy, recovering a device while active
-- devices exist. Each waits for another active device's signed approval or, where allowed, for
-- its time lock to end; any active device of the owner may cancel it meanwhile.
CREATE TABLE held_actions (
    id            TEXT PRIMARY KEY,
    kind          TEXT NOT NULL CHECK (kind IN ('server-share-export', 'policy-change', 'device-recovery')),
    user_id       TEXT NOT NULL,
    wallet_id     TEXT,
    requested_by  TEXT NOT NULL,            -- device id (the recovering device for a recovery)
    digest        TEXT NOT NULL,            -- hex SHA-256 of the signed request, what approvers sign
    request       TEXT NOT NULL,            -- JSON of the request, to carry it out
    summary       TEXT NOT NULL,
    status        TEXT NOT NULL CHECK (status IN ('pending', 'approved', 'cancelled', 'released')),
    requested_at  INTEGER NOT NULL,
    unlock_at     INTEGER,                  -- end of the time lock; NULL: only an approval releases it
    decided_by    TEXT,
    decided_at    INTEGER
);
CREATE INDEX held_actions_by_user ON held_actions(user_id, status);

-- The holders the server's share of a wallet is backed up to: fixed by the first export,
-- changed only through an approved (or time-locked) export to other holders.
CREATE TABLE server_backup_holders (
    wallet_id  TEXT PRIMARY KEY REFERENCES wallets(id),
    structure  TEXT NOT NULL,
    holders    TEXT NOT NULL,               -- JSON array of holder public keys as text, sorted
    set_by     TEXT NOT NULL,
    set_at     INTEGER NOT NULL
);
