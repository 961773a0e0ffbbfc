-- Policy changes by the policy's admin quorum (issue 16): a proposed version waits here until the
-- signatures of its admins form an authorised set of the quorum of the version in force; then it
-- is inserted into policies in the same transaction, and the other proposals for its version are
-- superseded. The (wallet, version, policy hash) of a pending proposal is unique: an admin who
-- proposes the same bytes signs the existing proposal.
CREATE TABLE policy_proposals (
    id              TEXT PRIMARY KEY,
    wallet_id       TEXT NOT NULL REFERENCES wallets(id),
    version         INTEGER NOT NULL,
    policy          TEXT NOT NULL,          -- the JSON every admin signs (tessera_api::policy_message)
    policy_sha256   TEXT NOT NULL,          -- hex
    weakens         TEXT NOT NULL,          -- JSON array of the rules of the base version it weakens
    proposed_by     TEXT NOT NULL REFERENCES devices(id),
    waiting_for     TEXT NOT NULL,          -- the admin quorum of the version in force, as text
    state           TEXT NOT NULL CHECK (state IN ('pending', 'applied', 'superseded')),
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    UNIQUE (wallet_id, version, policy_sha256)
);
CREATE INDEX policy_proposals_by_state ON policy_proposals(state, wallet_id);

-- Each admin's identity signature over tessera_api::policy_message(wallet, version, policy).
CREATE TABLE policy_proposal_signatures (
    proposal_id TEXT NOT NULL REFERENCES policy_proposals(id),
    device_id   TEXT NOT NULL REFERENCES devices(id),
    labels      TEXT NOT NULL,              -- JSON array of the admin labels it speaks for
    signature   TEXT NOT NULL,
    at          INTEGER NOT NULL,
    PRIMARY KEY (proposal_id, device_id)
);
