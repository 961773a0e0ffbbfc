//! `service_accounts`, `service_challenges` and `webhook_deliveries` (issue 16): service
//! accounts, the challenges they sign for a token, and the webhook outbox.

use sqlx::any::AnyExecutor;

/// A service account: id, user, name, public key, wallets (JSON), kinds (JSON), created by,
/// created at, revoked at.
pub type ServiceRow = (
    String,
    String,
    String,
    Vec<u8>,
    String,
    String,
    String,
    i64,
    Option<i64>,
);

/// A service account to insert.
pub struct NewServiceAccount<'a> {
    /// Its id.
    pub id: &'a str,
    /// Its user.
    pub user_id: &'a str,
    /// Its name (NFC).
    pub name: &'a str,
    /// Its Ed25519 public key.
    pub public_key: &'a [u8],
    /// JSON array of wallet ids.
    pub wallets: &'a str,
    /// JSON array of request kinds.
    pub kinds: &'a str,
    /// The registering device.
    pub created_by: &'a str,
    /// When.
    pub at: i64,
}

/// Inserts a service account.
///
/// # Errors
/// A database error (a public key registered before breaks the unique constraint).
pub async fn insert(
    db: impl AnyExecutor<'_>,
    a: &NewServiceAccount<'_>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO service_accounts (id, user_id, name, public_key, wallets, kinds, created_by, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(a.id)
    .bind(a.user_id)
    .bind(a.name)
    .bind(a.public_key)
    .bind(a.wallets)
    .bind(a.kinds)
    .bind(a.created_by)
    .bind(a.at)
    .execute(db)
    .await?;
    Ok(())
}

/// Whether `public_key` was ever registered (revoked accounts included).
///
/// # Errors
/// A database error.
pub async fn key_known(db: impl AnyExecutor<'_>, public_key: &[u8]) -> Result<bool, sqlx::Error> {
    let row: Option<(String,)> =
        sqlx::query_as("SELECT id FROM service_accounts WHERE public_key = $1")
            .bind(public_key)
            .fetch_optional(db)
            .await?;
    Ok(row.is_some())
}

/// One service account.
///
/// # Errors
/// A database error.
pub async fn by_id(db: impl AnyExecutor<'_>, id: &str) -> Result<Option<ServiceRow>, sqlx::Error> {
    sqlx::query_as(concat!(
        "SELECT id, user_id, name, public_key, wallets, kinds, created_by, created_at, revoked_at",
        " FROM service_accounts WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(db)
    .await
}

/// A user's service accounts, oldest first.
///
/// # Errors
/// A database error.
pub async fn of_user(
    db: impl AnyExecutor<'_>,
    user_id: &str,
) -> Result<Vec<ServiceRow>, sqlx::Error> {
    sqlx::query_as(concat!(
        "SELECT id, user_id, name, public_key, wallets, kinds, created_by, created_at, revoked_at",
        " FROM service_accounts WHERE user_id = $1 ORDER BY created_at, id"
    ))
    .bind(user_id)
    .fetch_all(db)
    .await
}

/// Revokes `id` of `user_id` if it is not revoked yet; whether it was.
///
/// # Errors
/// A database error.
pub async fn revoke(
    db: impl AnyExecutor<'_>,
    id: &str,
    user_id: &str,
    by: &str,
    at: i64,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE service_accounts SET revoked_at = $1, revoked_by = $2 \
         WHERE id = $3 AND user_id = $4 AND revoked_at IS NULL",
    )
    .bind(at)
    .bind(by)
    .bind(id)
    .bind(user_id)
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Stores a challenge for `service_id`, forgetting the expired ones.
///
/// # Errors
/// A database error.
pub async fn insert_challenge(
    db: &mut sqlx::AnyConnection,
    challenge: &[u8],
    service_id: &str,
    now: i64,
    expires_at: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM service_challenges WHERE expires_at < $1")
        .bind(now)
        .execute(&mut *db)
        .await?;
    sqlx::query(
        "INSERT INTO service_challenges (challenge, service_id, expires_at) VALUES ($1, $2, $3)",
    )
    .bind(challenge)
    .bind(service_id)
    .bind(expires_at)
    .execute(&mut *db)
    .await?;
    Ok(())
}

/// Takes (deletes) a challenge: the service account it was issued to and its expiry.
///
/// # Errors
/// A database error.
pub async fn take_challenge(
    db: impl AnyExecutor<'_>,
    challenge: &[u8],
) -> Result<Option<(String, i64)>, sqlx::Error> {
    sqlx::query_as(
        "DELETE FROM service_challenges WHERE challenge = $1 RETURNING service_id, expires_at",
    )
    .bind(challenge)
    .fetch_optional(db)
    .await
}

/// Queues a webhook body, due at `at`.
///
/// # Errors
/// A database error.
pub async fn queue_delivery(
    db: impl AnyExecutor<'_>,
    body: &str,
    at: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO webhook_deliveries (body, next_at, created_at) VALUES ($1, $2, $2)")
        .bind(body)
        .bind(at)
        .execute(db)
        .await?;
    Ok(())
}

/// A delivery waiting: id, body, attempts so far, due at.
pub type DeliveryRow = (i64, String, i64, i64);

/// Up to `limit` deliveries due at `now`, oldest first.
///
/// # Errors
/// A database error.
pub async fn due_deliveries(
    db: impl AnyExecutor<'_>,
    now: i64,
    limit: i64,
) -> Result<Vec<DeliveryRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, body, attempts, next_at FROM webhook_deliveries \
         WHERE delivered_at IS NULL AND failed_at IS NULL AND next_at <= $1 \
         ORDER BY id LIMIT $2",
    )
    .bind(now)
    .bind(limit)
    .fetch_all(db)
    .await
}

/// Claims delivery `id` for one attempt (counted now), if it is still due at `due` (no other
/// replica claimed it): it is not due again before `until`. Whether it was claimed.
///
/// # Errors
/// A database error.
pub async fn claim_delivery(
    db: impl AnyExecutor<'_>,
    id: i64,
    due: i64,
    until: i64,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE webhook_deliveries SET attempts = attempts + 1, next_at = $1 \
         WHERE id = $2 AND next_at = $3 AND delivered_at IS NULL AND failed_at IS NULL",
    )
    .bind(until)
    .bind(id)
    .bind(due)
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Records the end of an attempt: delivered (`delivered`), given up (`failed`), or due again at
/// `next_at`, with the last error.
///
/// # Errors
/// A database error.
pub async fn settle_delivery(
    db: impl AnyExecutor<'_>,
    id: i64,
    outcome: DeliveryOutcome<'_>,
    at: i64,
) -> Result<(), sqlx::Error> {
    let query = match outcome {
        DeliveryOutcome::Delivered => sqlx::query(
            "UPDATE webhook_deliveries SET delivered_at = $1, last_error = NULL WHERE id = $2",
        )
        .bind(at)
        .bind(id),
        DeliveryOutcome::Retry { next_at, error } => {
            sqlx::query("UPDATE webhook_deliveries SET next_at = $1, last_error = $2 WHERE id = $3")
                .bind(next_at)
                .bind(error)
                .bind(id)
        }
        DeliveryOutcome::GaveUp { error } => sqlx::query(
            "UPDATE webhook_deliveries SET failed_at = $1, last_error = $2 WHERE id = $3",
        )
        .bind(at)
        .bind(error)
        .bind(id),
    };
    query.execute(db).await?;
    Ok(())
}

/// How a delivery attempt ended.
#[derive(Clone, Copy, Debug)]
pub enum DeliveryOutcome<'a> {
    /// The receiver answered 2xx.
    Delivered,
    /// Try again at `next_at`.
    Retry {
        /// When.
        next_at: i64,
        /// What went wrong.
        error: &'a str,
    },
    /// No more attempts.
    GaveUp {
        /// What went wrong last.
        error: &'a str,
    },
}

/// Deliveries by state: (waiting, delivered, given up).
///
/// # Errors
/// A database error.
pub async fn delivery_counts(db: impl AnyExecutor<'_>) -> Result<(i64, i64, i64), sqlx::Error> {
    sqlx::query_as(
        "SELECT COUNT(CASE WHEN delivered_at IS NULL AND failed_at IS NULL THEN 1 END), \
                COUNT(delivered_at), COUNT(failed_at) FROM webhook_deliveries",
    )
    .fetch_one(db)
    .await
}
