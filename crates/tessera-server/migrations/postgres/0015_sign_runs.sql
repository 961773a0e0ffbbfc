-- Robust signing of structure wallets (issue 15): the runs of one signing request (a wallet,
-- epoch and digest) since one of them failed naming nobody. The requester asks again after
-- such a failure, and each time the server rebuilds its isolation
-- (tessera_core::structure::Isolation) from these rows to choose the next quorum and to find
-- the one party every failure shares. Deleted once a party is banned from them; runs older
-- than an hour no longer count.
CREATE TABLE sign_runs (
    session_id  TEXT PRIMARY KEY,
    wallet_id   TEXT NOT NULL REFERENCES wallets(id),
    epoch       BIGINT NOT NULL,
    digest      TEXT NOT NULL,
    quorum      TEXT NOT NULL,   -- the signers' party indices, comma-separated
    outcome     TEXT NOT NULL CHECK (outcome IN ('signed', 'failed')),
    at_ms       BIGINT NOT NULL   -- when it ended, Unix milliseconds
);
CREATE INDEX sign_runs_request ON sign_runs (wallet_id, epoch, digest, at_ms);
