-- Durable signing requests (issue 16): created by a device or a service account, they wait in
-- the database (for approvals, then for their co-signers to be online) and survive restarts and
-- replica failover. A protocol session is created only for a ready request; its end moves the
-- request to signed (with the signature) or back to ready (failed after three attempts).
CREATE TABLE requests (
    id              TEXT PRIMARY KEY,
    wallet_id       TEXT NOT NULL REFERENCES wallets(id),
    creator_kind    TEXT NOT NULL CHECK (creator_kind IN ('device', 'service')),
    creator_id      TEXT NOT NULL,
    kind            TEXT NOT NULL,
    intent          TEXT NOT NULL,          -- JSON of tessera_api::intent::SignKind, as sent
    path            TEXT NOT NULL,
    digest          TEXT NOT NULL,          -- hex
    summary         TEXT NOT NULL,          -- what approvers are shown and sign
    state           TEXT NOT NULL CHECK (state IN ('awaiting_approval', 'ready', 'signing',
                                                   'signed', 'refused', 'expired', 'failed')),
    approval_rule   TEXT,                   -- JSON of the ApprovalRule it waits for, from its policy
    policy_version  INTEGER NOT NULL,
    created_at      INTEGER NOT NULL,
    expires_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    session_id      TEXT,                   -- the protocol session that runs (or last ran) it
    attempts        INTEGER NOT NULL DEFAULT 0,
    signature       TEXT,                   -- r || s || v, hex, once signed
    detail          TEXT
);
CREATE INDEX requests_by_wallet ON requests(wallet_id, state);
CREATE INDEX requests_by_expiry ON requests(state, expires_at);
CREATE INDEX requests_by_session ON requests(session_id);

-- Each approver's decision: its identity signature over
-- tessera_api::requests::request_decision_message (request id, digest, summary shown).
CREATE TABLE request_decisions (
    request_id  TEXT NOT NULL REFERENCES requests(id),
    device_id   TEXT NOT NULL REFERENCES devices(id),
    labels      TEXT NOT NULL,              -- JSON array of the rule's labels it speaks for
    approve     INTEGER NOT NULL CHECK (approve IN (0, 1)),
    summary     TEXT NOT NULL,
    signature   TEXT NOT NULL,
    at          INTEGER NOT NULL,
    PRIMARY KEY (request_id, device_id)
);

-- Each device's event stream (GET /events): numbered per device, written in the transaction
-- of the change it tells (after that transaction took the audit head, so numbers follow the
-- order of commits on every replica).
CREATE TABLE device_events (
    device_id       TEXT NOT NULL REFERENCES devices(id),
    seq             INTEGER NOT NULL,
    kind            TEXT NOT NULL,
    request_id      TEXT,
    wallet_id       TEXT,
    about_device    TEXT,
    summary         TEXT NOT NULL,
    at              INTEGER NOT NULL,
    PRIMARY KEY (device_id, seq)
);
