//! `policy_proposals` and `policy_proposal_signatures`: policy versions waiting for their admin
//! quorum (issue 16), and each admin's signature of them.

use sqlx::any::AnyExecutor;

/// A proposal row.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Row {
    /// Its id.
    pub id: String,
    /// The wallet.
    pub wallet_id: String,
    /// The version it sets.
    pub version: i64,
    /// The policy JSON signed.
    pub policy: String,
    /// Its SHA-256, hex.
    pub policy_sha256: String,
    /// The rules of its base version it weakens, JSON array.
    pub weakens: String,
    /// The proposing device.
    pub proposed_by: String,
    /// The admin quorum it waits for, as text.
    pub waiting_for: String,
    /// pending, applied or superseded.
    pub state: String,
    /// When.
    pub created_at: i64,
}

macro_rules! columns {
    () => {
        "id, wallet_id, version, policy, policy_sha256, weakens, proposed_by, waiting_for, state, created_at"
    };
}

/// A signature row: device, labels (JSON), signature, at, and whether the device is active.
pub type SignatureRow = (String, String, String, i64, bool);

/// One proposal.
///
/// # Errors
/// A database error.
pub async fn get(db: impl AnyExecutor<'_>, id: &str) -> Result<Option<Row>, sqlx::Error> {
    sqlx::query_as(concat!(
        "SELECT ",
        columns!(),
        " FROM policy_proposals WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(db)
    .await
}

/// The proposal of these exact bytes for this version, in any state.
///
/// # Errors
/// A database error.
pub async fn find(
    db: impl AnyExecutor<'_>,
    wallet_id: &str,
    version: i64,
    policy_sha256: &str,
) -> Result<Option<Row>, sqlx::Error> {
    sqlx::query_as(concat!(
        "SELECT ",
        columns!(),
        " FROM policy_proposals WHERE wallet_id = $1 AND version = $2 AND policy_sha256 = $3"
    ))
    .bind(wallet_id)
    .bind(version)
    .bind(policy_sha256)
    .fetch_optional(db)
    .await
}

/// A wallet's proposals in `state`, oldest first.
///
/// # Errors
/// A database error.
pub async fn of_wallet(
    db: impl AnyExecutor<'_>,
    wallet_id: &str,
    state: &str,
) -> Result<Vec<Row>, sqlx::Error> {
    sqlx::query_as(concat!(
        "SELECT ",
        columns!(),
        " FROM policy_proposals WHERE wallet_id = $1 AND state = $2 ORDER BY created_at, id"
    ))
    .bind(wallet_id)
    .bind(state)
    .fetch_all(db)
    .await
}

/// Every proposal in `state`, oldest first, at most `limit`.
///
/// # Errors
/// A database error.
pub async fn in_state(
    db: impl AnyExecutor<'_>,
    state: &str,
    limit: i64,
) -> Result<Vec<Row>, sqlx::Error> {
    sqlx::query_as(concat!(
        "SELECT ",
        columns!(),
        " FROM policy_proposals WHERE state = $1 ORDER BY created_at, id LIMIT $2"
    ))
    .bind(state)
    .bind(limit)
    .fetch_all(db)
    .await
}

/// A new proposal.
pub struct NewProposal<'a> {
    /// Its id.
    pub id: &'a str,
    /// The wallet.
    pub wallet_id: &'a str,
    /// The version it sets.
    pub version: i64,
    /// The policy JSON signed.
    pub policy: &'a str,
    /// Its SHA-256, hex.
    pub policy_sha256: &'a str,
    /// The rules it weakens, JSON array.
    pub weakens: &'a str,
    /// The proposing device.
    pub proposed_by: &'a str,
    /// The admin quorum it waits for, as text.
    pub waiting_for: &'a str,
    /// Now.
    pub at: i64,
}

/// Inserts a pending proposal.
///
/// # Errors
/// A database error (a unique violation: the same bytes were proposed meanwhile).
pub async fn insert(db: impl AnyExecutor<'_>, p: &NewProposal<'_>) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO policy_proposals (id, wallet_id, version, policy, policy_sha256, weakens, proposed_by, waiting_for, state, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'pending', $9, $9)",
    )
    .bind(p.id)
    .bind(p.wallet_id)
    .bind(p.version)
    .bind(p.policy)
    .bind(p.policy_sha256)
    .bind(p.weakens)
    .bind(p.proposed_by)
    .bind(p.waiting_for)
    .bind(p.at)
    .execute(db)
    .await?;
    Ok(())
}

/// Moves a pending proposal to `state`.
///
/// # Errors
/// A database error.
pub async fn set_state(
    db: impl AnyExecutor<'_>,
    id: &str,
    state: &str,
    at: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE policy_proposals SET state = $2, updated_at = $3 WHERE id = $1 AND state = 'pending'",
    )
    .bind(id)
    .bind(state)
    .bind(at)
    .execute(db)
    .await?;
    Ok(())
}

/// Supersedes every pending proposal of `wallet_id` for a version at most `version` (the one
/// just applied, and any older one left behind); their ids.
///
/// # Errors
/// A database error.
pub async fn supersede(
    db: &mut sqlx::AnyConnection,
    wallet_id: &str,
    version: i64,
    at: i64,
) -> Result<Vec<String>, sqlx::Error> {
    let ids: Vec<(String,)> = sqlx::query_as(
        "SELECT id FROM policy_proposals WHERE wallet_id = $1 AND version <= $2 AND state = 'pending' ORDER BY id",
    )
    .bind(wallet_id)
    .bind(version)
    .fetch_all(&mut *db)
    .await?;
    sqlx::query(
        "UPDATE policy_proposals SET state = 'superseded', updated_at = $3 \
         WHERE wallet_id = $1 AND version <= $2 AND state = 'pending'",
    )
    .bind(wallet_id)
    .bind(version)
    .bind(at)
    .execute(&mut *db)
    .await?;
    Ok(ids.into_iter().map(|(id,)| id).collect())
}

/// Adds a device's signature; false if it had signed already.
///
/// # Errors
/// A database error.
pub async fn add_signature(
    db: &mut sqlx::AnyConnection,
    proposal_id: &str,
    device_id: &str,
    labels: &str,
    signature: &str,
    at: i64,
) -> Result<bool, sqlx::Error> {
    let signed: Option<(String,)> = sqlx::query_as(
        "SELECT device_id FROM policy_proposal_signatures WHERE proposal_id = $1 AND device_id = $2",
    )
    .bind(proposal_id)
    .bind(device_id)
    .fetch_optional(&mut *db)
    .await?;
    if signed.is_some() {
        return Ok(false);
    }
    sqlx::query(
        "INSERT INTO policy_proposal_signatures (proposal_id, device_id, labels, signature, at) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(proposal_id)
    .bind(device_id)
    .bind(labels)
    .bind(signature)
    .bind(at)
    .execute(&mut *db)
    .await?;
    Ok(true)
}

/// A proposal's signatures, oldest first, each with whether its device is still active (a
/// revoked admin's signature no longer counts).
///
/// # Errors
/// A database error.
pub async fn signatures(
    db: impl AnyExecutor<'_>,
    proposal_id: &str,
) -> Result<Vec<SignatureRow>, sqlx::Error> {
    let rows: Vec<(String, String, String, i64, String)> = sqlx::query_as(
        "SELECT s.device_id, s.labels, s.signature, s.at, d.status FROM policy_proposal_signatures s \
         JOIN devices d ON d.id = s.device_id WHERE s.proposal_id = $1 ORDER BY s.at, s.device_id",
    )
    .bind(proposal_id)
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(d, l, s, at, status)| (d, l, s, at, status == "active"))
        .collect())
}
