//! `policies`: signing policies, versioned per wallet (the highest version is in force).

use sqlx::any::AnyExecutor;

/// The policy in force: version, JSON, set_by, set_at (none: the default policy).
///
/// # Errors
/// A database error.
pub async fn current(
    db: impl AnyExecutor<'_>,
    wallet_id: &str,
) -> Result<Option<(i64, String, String, i64)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT version, policy, set_by, set_at FROM policies WHERE wallet_id = $1 ORDER BY version DESC LIMIT 1",
    )
    .bind(wallet_id)
    .fetch_optional(db)
    .await
}

/// The policies in force whose JSON mentions `text` (a device or user id): (wallet id, JSON).
///
/// # Errors
/// A database error.
pub async fn in_force_mentioning(
    db: impl AnyExecutor<'_>,
    text: &str,
) -> Result<Vec<(String, String)>, sqlx::Error> {
    // Ids are UUIDs or hex: no LIKE wildcard in them but `_`, which only widens the filter; the
    // caller parses each policy.
    sqlx::query_as(
        "SELECT p.wallet_id, p.policy FROM policies p WHERE p.policy LIKE $1 AND p.version = \
         (SELECT MAX(q.version) FROM policies q WHERE q.wallet_id = p.wallet_id) \
         ORDER BY p.wallet_id",
    )
    .bind(format!("%{text}%"))
    .fetch_all(db)
    .await
}

/// A new policy version.
pub struct NewPolicy<'a> {
    /// The wallet.
    pub wallet_id: &'a str,
    /// Its version.
    pub version: i64,
    /// Its JSON.
    pub policy: &'a str,
    /// The device that set it.
    pub set_by: &'a str,
    /// That device's identity signature, hex.
    pub signature: &'a str,
    /// Now.
    pub at: i64,
}

/// Inserts a policy version (a unique violation: that version was set meanwhile).
///
/// # Errors
/// A database error.
pub async fn insert(db: impl AnyExecutor<'_>, p: &NewPolicy<'_>) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO policies (wallet_id, version, policy, set_by, signature, set_at) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(p.wallet_id)
    .bind(p.version)
    .bind(p.policy)
    .bind(p.set_by)
    .bind(p.signature)
    .bind(p.at)
    .execute(db)
    .await?;
    Ok(())
}
