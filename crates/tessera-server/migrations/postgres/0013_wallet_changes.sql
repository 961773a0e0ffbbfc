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
