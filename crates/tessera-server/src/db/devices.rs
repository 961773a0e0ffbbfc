//! `users` and `devices`: the device registry.

use sqlx::any::AnyExecutor;

use super::{Backend, DeviceStatus, WriteTx};

/// A stored device: id, user, name, identity key, status, registered_at, last_seen, revoked_at.
pub type DeviceRow = (
    String,
    String,
    String,
    Vec<u8>,
    DeviceStatus,
    i64,
    Option<i64>,
    Option<i64>,
);

macro_rules! device_select {
    ($rest:literal) => {
        concat!(
            "SELECT id, user_id, name, identity_key, status, registered_at, last_seen, revoked_at FROM devices ",
            $rest
        )
    };
}

/// Advisory-lock space of user names on PostgreSQL (the other key is `hashtext(name)`).
const USER_NAME_LOCK_SPACE: i32 = 0x05e4;

/// Serialises the transactions that register under the user name `name` (PostgreSQL: an
/// advisory lock, since the user may not exist yet; then the user's row, as [`lock_user`]).
///
/// # Errors
/// A database error.
pub async fn lock_user_by_name(tx: &mut WriteTx, name: &str) -> Result<(), sqlx::Error> {
    if tx.backend() == Backend::Postgres {
        sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext($2))")
            .bind(USER_NAME_LOCK_SPACE)
            .bind(name)
            .execute(&mut **tx)
            .await?;
    }
    sqlx::query("UPDATE users SET name = name WHERE name = $1")
        .bind(name)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Locks the user's row for the transaction (a no-op write: PostgreSQL takes the row lock,
/// SQLite already holds the write lock).
///
/// # Errors
/// A database error.
pub async fn lock_user(db: impl AnyExecutor<'_>, user_id: &str) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE users SET name = name WHERE id = $1")
        .bind(user_id)
        .execute(db)
        .await?;
    Ok(())
}

/// The id of the user named `name`.
///
/// # Errors
/// A database error.
pub async fn user_named(
    db: impl AnyExecutor<'_>,
    name: &str,
) -> Result<Option<String>, sqlx::Error> {
    let user: Option<(String,)> = sqlx::query_as("SELECT id FROM users WHERE name = $1")
        .bind(name)
        .fetch_optional(db)
        .await?;
    Ok(user.map(|(id,)| id))
}

/// The name of the user `user_id`.
///
/// # Errors
/// A database error.
pub async fn user_name(
    db: impl AnyExecutor<'_>,
    user_id: &str,
) -> Result<Option<String>, sqlx::Error> {
    let user: Option<(String,)> = sqlx::query_as("SELECT name FROM users WHERE id = $1")
        .bind(user_id)
        .fetch_optional(db)
        .await?;
    Ok(user.map(|(name,)| name))
}

/// Inserts a user.
///
/// # Errors
/// A database error.
pub async fn insert_user(
    db: impl AnyExecutor<'_>,
    id: &str,
    name: &str,
    at: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO users (id, name, created_at) VALUES ($1, $2, $3)")
        .bind(id)
        .bind(name)
        .bind(at)
        .execute(db)
        .await?;
    Ok(())
}

/// A new device.
pub struct NewDevice<'a> {
    /// Its id.
    pub id: &'a str,
    /// Its user.
    pub user_id: &'a str,
    /// Its name.
    pub name: &'a str,
    /// Its Ed25519 identity key.
    pub identity_key: &'a [u8],
    /// Active (a new user's first device) or pending.
    pub status: DeviceStatus,
    /// Now.
    pub at: i64,
}

/// Inserts a device.
///
/// # Errors
/// A database error.
pub async fn insert(db: impl AnyExecutor<'_>, d: &NewDevice<'_>) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO devices (id, user_id, name, identity_key, status, registered_at) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(d.id)
    .bind(d.user_id)
    .bind(d.name)
    .bind(d.identity_key)
    .bind(d.status)
    .bind(d.at)
    .execute(db)
    .await?;
    Ok(())
}

/// The device `device_id` (an error when there is none).
///
/// # Errors
/// A database error, `RowNotFound` included.
pub async fn by_id(db: impl AnyExecutor<'_>, device_id: &str) -> Result<DeviceRow, sqlx::Error> {
    sqlx::query_as(device_select!("WHERE id = $1"))
        .bind(device_id)
        .fetch_one(db)
        .await
}

/// The device `device_id` of `user_id`.
///
/// # Errors
/// A database error.
pub async fn of_user(
    db: impl AnyExecutor<'_>,
    device_id: &str,
    user_id: &str,
) -> Result<Option<DeviceRow>, sqlx::Error> {
    sqlx::query_as(device_select!("WHERE id = $1 AND user_id = $2"))
        .bind(device_id)
        .bind(user_id)
        .fetch_optional(db)
        .await
}

/// The device of `user_id` with the identity key `key`.
///
/// # Errors
/// A database error.
pub async fn by_key(
    db: impl AnyExecutor<'_>,
    user_id: &str,
    key: &[u8],
) -> Result<Option<DeviceRow>, sqlx::Error> {
    sqlx::query_as(device_select!("WHERE user_id = $1 AND identity_key = $2"))
        .bind(user_id)
        .bind(key)
        .fetch_optional(db)
        .await
}

/// The devices of `user_id`, oldest first.
///
/// # Errors
/// A database error.
pub async fn list(db: impl AnyExecutor<'_>, user_id: &str) -> Result<Vec<DeviceRow>, sqlx::Error> {
    sqlx::query_as(device_select!(
        "WHERE user_id = $1 ORDER BY registered_at, name, id"
    ))
    .bind(user_id)
    .fetch_all(db)
    .await
}

/// A device's identity key (an error when there is no such device).
///
/// # Errors
/// A database error, `RowNotFound` included.
pub async fn identity_key(
    db: impl AnyExecutor<'_>,
    device_id: &str,
) -> Result<Vec<u8>, sqlx::Error> {
    let (key,): (Vec<u8>,) = sqlx::query_as("SELECT identity_key FROM devices WHERE id = $1")
        .bind(device_id)
        .fetch_one(db)
        .await?;
    Ok(key)
}

/// A device's status and user (what every authenticated request checks).
///
/// # Errors
/// A database error.
pub async fn standing(
    db: impl AnyExecutor<'_>,
    device_id: &str,
) -> Result<Option<(DeviceStatus, String)>, sqlx::Error> {
    sqlx::query_as("SELECT status, user_id FROM devices WHERE id = $1")
        .bind(device_id)
        .fetch_optional(db)
        .await
}

/// A device's status.
///
/// # Errors
/// A database error.
pub async fn status(
    db: impl AnyExecutor<'_>,
    device_id: &str,
) -> Result<Option<DeviceStatus>, sqlx::Error> {
    let row: Option<(DeviceStatus,)> = sqlx::query_as("SELECT status FROM devices WHERE id = $1")
        .bind(device_id)
        .fetch_optional(db)
        .await?;
    Ok(row.map(|(s,)| s))
}

/// The status of the device `device_id` of `user_id`.
///
/// # Errors
/// A database error.
pub async fn status_of_user(
    db: impl AnyExecutor<'_>,
    device_id: &str,
    user_id: &str,
) -> Result<Option<DeviceStatus>, sqlx::Error> {
    let row: Option<(DeviceStatus,)> =
        sqlx::query_as("SELECT status FROM devices WHERE id = $1 AND user_id = $2")
            .bind(device_id)
            .bind(user_id)
            .fetch_optional(db)
            .await?;
    Ok(row.map(|(s,)| s))
}

/// A device's identity key, status and user (an error when there is no such device).
///
/// # Errors
/// A database error, `RowNotFound` included.
pub async fn key_status_user(
    db: impl AnyExecutor<'_>,
    device_id: &str,
) -> Result<(Vec<u8>, DeviceStatus, String), sqlx::Error> {
    sqlx::query_as("SELECT identity_key, status, user_id FROM devices WHERE id = $1")
        .bind(device_id)
        .fetch_one(db)
        .await
}

/// A device's user, identity key and status.
///
/// # Errors
/// A database error.
pub async fn user_key_status(
    db: impl AnyExecutor<'_>,
    device_id: &str,
) -> Result<Option<(String, Vec<u8>, DeviceStatus)>, sqlx::Error> {
    sqlx::query_as("SELECT user_id, identity_key, status FROM devices WHERE id = $1")
        .bind(device_id)
        .fetch_optional(db)
        .await
}

/// Records that a device authenticated.
///
/// # Errors
/// A database error.
pub async fn touch(db: impl AnyExecutor<'_>, device_id: &str, at: i64) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE devices SET last_seen = $1 WHERE id = $2")
        .bind(at)
        .bind(device_id)
        .execute(db)
        .await?;
    Ok(())
}

/// How many devices of `user_id` wait for approval.
///
/// # Errors
/// A database error.
pub async fn pending_count(db: impl AnyExecutor<'_>, user_id: &str) -> Result<i64, sqlx::Error> {
    let (pending,): (i64,) =
        sqlx::query_as("SELECT COUNT(*) FROM devices WHERE user_id = $1 AND status = 'pending'")
            .bind(user_id)
            .fetch_one(db)
            .await?;
    Ok(pending)
}

/// The names of `user_id`'s devices that are not revoked.
///
/// # Errors
/// A database error.
pub async fn live_names(
    db: impl AnyExecutor<'_>,
    user_id: &str,
) -> Result<Vec<String>, sqlx::Error> {
    let rows: Vec<(String,)> =
        sqlx::query_as("SELECT name FROM devices WHERE user_id = $1 AND status <> 'revoked'")
            .bind(user_id)
            .fetch_all(db)
            .await?;
    Ok(rows.into_iter().map(|(n,)| n).collect())
}

/// How many active devices `user_id` has besides `device_id`.
///
/// # Errors
/// A database error.
pub async fn other_active_count(
    db: impl AnyExecutor<'_>,
    user_id: &str,
    device_id: &str,
) -> Result<i64, sqlx::Error> {
    let (count,): (i64,) = sqlx::query_as(
        "SELECT COUNT(*) FROM devices WHERE user_id = $1 AND status = 'active' AND id <> $2",
    )
    .bind(user_id)
    .bind(device_id)
    .fetch_one(db)
    .await?;
    Ok(count)
}

/// Revokes the device `device_id` of `user_id` unless it is revoked; returns whether it did.
///
/// # Errors
/// A database error.
pub async fn revoke(
    db: impl AnyExecutor<'_>,
    device_id: &str,
    user_id: &str,
    at: i64,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE devices SET status = 'revoked', revoked_at = $1 WHERE id = $2 AND user_id = $3 AND status != 'revoked'",
    )
    .bind(at)
    .bind(device_id)
    .bind(user_id)
    .execute(db)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// Revokes the device `device_id` of `user_id` if it is pending (a cancelled recovery).
///
/// # Errors
/// A database error.
pub async fn revoke_pending(
    db: impl AnyExecutor<'_>,
    device_id: &str,
    user_id: &str,
    at: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE devices SET status = 'revoked', revoked_at = $1 WHERE id = $2 AND user_id = $3 AND status = 'pending'",
    )
    .bind(at)
    .bind(device_id)
    .bind(user_id)
    .execute(db)
    .await?;
    Ok(())
}

/// Activates a pending device; returns whether it was pending.
///
/// # Errors
/// A database error.
pub async fn activate_pending(
    db: impl AnyExecutor<'_>,
    device_id: &str,
) -> Result<bool, sqlx::Error> {
    let done =
        sqlx::query("UPDATE devices SET status = 'active' WHERE id = $1 AND status = 'pending'")
            .bind(device_id)
            .execute(db)
            .await?;
    Ok(done.rows_affected() == 1)
}
