//! `held_actions`: what one device may not do alone, waiting for another device or a time lock.

use sqlx::any::AnyExecutor;

use super::{HeldKind, HeldStatus};

/// A stored held action: id, kind, wallet, requested_by, summary, digest, status,
/// requested_at, unlock_at, request (JSON).
pub type Row = (
    String,
    HeldKind,
    Option<String>,
    String,
    String,
    String,
    HeldStatus,
    i64,
    Option<i64>,
    String,
);

macro_rules! held_select {
    ($rest:literal) => {
        concat!(
            "SELECT id, kind, wallet_id, requested_by, summary, digest, status, requested_at, unlock_at, request FROM held_actions ",
            $rest
        )
    };
}

/// The newest live (pending or approved) action of `requested_by` for the request `digest`.
///
/// # Errors
/// A database error.
pub async fn live(
    db: impl AnyExecutor<'_>,
    kind: HeldKind,
    requested_by: &str,
    digest: &str,
) -> Result<Option<Row>, sqlx::Error> {
    sqlx::query_as(held_select!(
        "WHERE kind = $1 AND requested_by = $2 AND digest = $3 AND status IN ('pending', 'approved') ORDER BY requested_at DESC LIMIT 1"
    ))
    .bind(kind)
    .bind(requested_by)
    .bind(digest)
    .fetch_optional(db)
    .await
}

/// The live actions of `user_id`, oldest first.
///
/// # Errors
/// A database error.
pub async fn live_of_user(
    db: impl AnyExecutor<'_>,
    user_id: &str,
) -> Result<Vec<Row>, sqlx::Error> {
    sqlx::query_as(held_select!(
        "WHERE user_id = $1 AND status IN ('pending', 'approved') ORDER BY requested_at, id"
    ))
    .bind(user_id)
    .fetch_all(db)
    .await
}

/// The action `id` of `user_id`.
///
/// # Errors
/// A database error.
pub async fn of_user(
    db: impl AnyExecutor<'_>,
    id: &str,
    user_id: &str,
) -> Result<Option<Row>, sqlx::Error> {
    sqlx::query_as(held_select!("WHERE id = $1 AND user_id = $2"))
        .bind(id)
        .bind(user_id)
        .fetch_optional(db)
        .await
}

/// A new held action (pending).
pub struct NewHeld<'a> {
    /// Its id.
    pub id: &'a str,
    /// What.
    pub kind: HeldKind,
    /// The owner.
    pub user_id: &'a str,
    /// The wallet.
    pub wallet_id: Option<&'a str>,
    /// The asking device.
    pub requested_by: &'a str,
    /// The signed request's digest.
    pub digest: &'a str,
    /// The request (JSON).
    pub request: &'a str,
    /// What it does, for people.
    pub summary: &'a str,
    /// Now.
    pub at: i64,
    /// The end of its time lock, if one releases it.
    pub unlock_at: Option<i64>,
}

/// Inserts a pending held action.
///
/// # Errors
/// A database error.
pub async fn insert(db: impl AnyExecutor<'_>, h: &NewHeld<'_>) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO held_actions (id, kind, user_id, wallet_id, requested_by, digest, request, summary, status, requested_at, unlock_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'pending', $9, $10)",
    )
    .bind(h.id)
    .bind(h.kind)
    .bind(h.user_id)
    .bind(h.wallet_id)
    .bind(h.requested_by)
    .bind(h.digest)
    .bind(h.request)
    .bind(h.summary)
    .bind(h.at)
    .bind(h.unlock_at)
    .execute(db)
    .await?;
    Ok(())
}

/// Marks a live action carried out; returns `false` when it no longer was live.
///
/// # Errors
/// A database error.
pub async fn release(db: impl AnyExecutor<'_>, id: &str) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE held_actions SET status = 'released' WHERE id = $1 AND status IN ('pending', 'approved')",
    )
    .bind(id)
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Moves an action from `from` to `to` (approved or cancelled), recording who decided; returns
/// `false` when it was no longer `from`.
///
/// # Errors
/// A database error.
pub async fn decide(
    db: impl AnyExecutor<'_>,
    id: &str,
    from: HeldStatus,
    to: HeldStatus,
    decided_by: &str,
    at: i64,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE held_actions SET status = $1, decided_by = $2, decided_at = $3 WHERE id = $4 AND status = $5",
    )
    .bind(to)
    .bind(decided_by)
    .bind(at)
    .bind(id)
    .bind(from)
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Cancels an action whatever its status (an approved policy change that no longer applies).
///
/// # Errors
/// A database error.
pub async fn cancel(db: impl AnyExecutor<'_>, id: &str) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE held_actions SET status = 'cancelled' WHERE id = $1")
        .bind(id)
        .execute(db)
        .await?;
    Ok(())
}
