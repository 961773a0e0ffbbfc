-- Changes of a structure wallet's parties that wait for a resharing (issue 15): a device
-- approved after the wallet was made joins it ('add'), a revoked device leaves it ('remove').
-- Written in the approval's or revocation's transaction, deleted in the transaction of the
-- resharing's switch that makes them true.
CREATE TABLE wallet_changes (
    wallet_id   TEXT NOT NULL REFERENCES wallets(id),
    device_id   TEXT NOT NULL REFERENCES devices(id),
    change      TEXT NOT NULL CHECK (change IN ('add', 'remove')),
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (wallet_id, device_id)
);

-- Which devices are online to take part in sessions: a device agent (`tessera listen`) waiting
-- on GET /sessions/joinable is, until `until` (Unix seconds). The server picks the co-signers
-- of a structure wallet's signature among them when the requester names none.
CREATE TABLE device_presence (
    device_id  TEXT PRIMARY KEY REFERENCES devices(id),
    until      BIGINT NOT NULL
);
