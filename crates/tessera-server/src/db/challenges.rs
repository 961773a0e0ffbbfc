//! `challenges`: the one-time challenges a device signs to get a token.

use sqlx::any::AnyExecutor;

/// Forgets the challenges that expired before `at`.
///
/// # Errors
/// A database error.
pub async fn delete_expired(db: impl AnyExecutor<'_>, at: i64) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM challenges WHERE expires_at < $1")
        .bind(at)
        .execute(db)
        .await?;
    Ok(())
}

/// Stores a challenge for `device_id`.
///
/// # Errors
/// A database error.
pub async fn insert(
    db: impl AnyExecutor<'_>,
    challenge: &[u8],
    device_id: &str,
    expires_at: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO challenges (challenge, device_id, expires_at) VALUES ($1, $2, $3)")
        .bind(challenge)
        .bind(device_id)
        .bind(expires_at)
        .execute(db)
        .await?;
    Ok(())
}

/// Takes (deletes) a challenge: the device it was issued to and its expiry.
///
/// # Errors
/// A database error.
pub async fn take(
    db: impl AnyExecutor<'_>,
    challenge: &[u8],
) -> Result<Option<(String, i64)>, sqlx::Error> {
    sqlx::query_as("DELETE FROM challenges WHERE challenge = $1 RETURNING device_id, expires_at")
        .bind(challenge)
        .fetch_optional(db)
        .await
}
