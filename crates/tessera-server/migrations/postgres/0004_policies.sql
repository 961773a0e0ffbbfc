-- Signing policies, versioned: the highest version of a wallet is in force.
CREATE TABLE policies (
    wallet_id  TEXT NOT NULL REFERENCES wallets(id),
    version    BIGINT NOT NULL,
    policy     TEXT NOT NULL,            -- JSON of tessera_core::api::Policy
    set_by     TEXT NOT NULL,            -- device id
    signature  TEXT NOT NULL,            -- its identity signature over api::policy_message, hex
    set_at     BIGINT NOT NULL,
    PRIMARY KEY (wallet_id, version)
);

-- Signing requests the policy allowed (for the per-hour and per-24h rules) and their approval.
CREATE TABLE sign_requests (
    session_id     TEXT PRIMARY KEY,
    wallet_id      TEXT NOT NULL,
    device_id      TEXT NOT NULL,
    kind           TEXT NOT NULL,
    value_wei      TEXT,                 -- decimal, for eth-tx
    digest         TEXT NOT NULL,        -- hex
    summary        TEXT NOT NULL,
    requested_at   BIGINT NOT NULL,
    approval       TEXT NOT NULL CHECK (approval IN ('none', 'pending', 'approved', 'refused')),
    expires_at     BIGINT,
    decided_by     TEXT,
    decided_at     BIGINT
);
CREATE INDEX sign_requests_by_wallet ON sign_requests(wallet_id, requested_at);
