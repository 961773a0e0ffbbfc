//! `mailboxes` and `mailbox_frames` (PostgreSQL; see [`crate::mailboxes`]): which replica holds
//! each open mailbox, and frames on their way to it, announced with `NOTIFY` on the holder's
//! channel. Each send is one statement, so a frame is stored and announced only while its
//! mailbox is held by the replica it was routed to.

use sqlx::AnyPool;

/// Registers `address` as held by `instance`; `false` when it is held already.
///
/// # Errors
/// A database error.
pub async fn open(
    db: &AnyPool,
    address: &str,
    instance: &str,
    at: i64,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "INSERT INTO mailboxes (address, instance, opened_at) VALUES ($1, $2, $3) \
         ON CONFLICT (address) DO NOTHING",
    )
    .bind(address)
    .bind(instance)
    .bind(at)
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Forgets `address` (held by `instance`) and the frames still on their way to it.
///
/// # Errors
/// A database error.
pub async fn close(db: &AnyPool, address: &str, instance: &str) -> Result<(), sqlx::Error> {
    let mut tx = db.begin().await?;
    sqlx::query("DELETE FROM mailboxes WHERE address = $1 AND instance = $2")
        .bind(address)
        .bind(instance)
        .execute(&mut *tx)
        .await?;
    sqlx::query("DELETE FROM mailbox_frames WHERE mailbox = $1")
        .bind(address)
        .execute(&mut *tx)
        .await?;
    tx.commit().await
}

/// The replica that holds `address`, if any.
///
/// # Errors
/// A database error.
pub async fn holder(db: &AnyPool, address: &str) -> Result<Option<String>, sqlx::Error> {
    let row: Option<(String,)> =
        sqlx::query_as("SELECT instance FROM mailboxes WHERE address = $1")
            .bind(address)
            .fetch_optional(db)
            .await?;
    Ok(row.map(|r| r.0))
}

/// Sends `payload` (a small frame, encoded) as the notification itself on `channel`, if
/// `instance` still holds `address`. Returns whether it was sent.
///
/// # Errors
/// A database error.
pub async fn notify_inline(
    db: &AnyPool,
    address: &str,
    instance: &str,
    channel: &str,
    payload: &str,
) -> Result<bool, sqlx::Error> {
    let sent: Option<(String,)> = sqlx::query_as(
        "SELECT pg_notify($3, $4)::text FROM mailboxes WHERE address = $1 AND instance = $2",
    )
    .bind(address)
    .bind(instance)
    .bind(channel)
    .bind(payload)
    .fetch_optional(db)
    .await?;
    Ok(sent.is_some())
}

/// Stores `frame` for `address` and notifies `channel` with `r <row id>`, if `instance` still
/// holds `address`. Returns whether it was stored.
///
/// # Errors
/// A database error.
pub async fn store_and_notify(
    db: &AnyPool,
    address: &str,
    instance: &str,
    channel: &str,
    frame: &[u8],
    at: i64,
) -> Result<bool, sqlx::Error> {
    let sent: Option<(i64, String)> = sqlx::query_as(
        "WITH f AS (INSERT INTO mailbox_frames (mailbox, frame, sent_at) \
         SELECT $1, $3, $4 WHERE EXISTS \
         (SELECT 1 FROM mailboxes WHERE address = $1 AND instance = $2) RETURNING id) \
         SELECT id, pg_notify($5, 'r ' || id)::text FROM f",
    )
    .bind(address)
    .bind(instance)
    .bind(frame)
    .bind(at)
    .bind(channel)
    .fetch_optional(db)
    .await?;
    Ok(sent.is_some())
}

/// Takes (reads and deletes) the stored frame `id`: its mailbox and bytes.
///
/// # Errors
/// A database error.
pub async fn take_frame(db: &AnyPool, id: i64) -> Result<Option<(String, Vec<u8>)>, sqlx::Error> {
    sqlx::query_as("DELETE FROM mailbox_frames WHERE id = $1 RETURNING mailbox, frame")
        .bind(id)
        .fetch_optional(db)
        .await
}

/// Deletes the frames sent before `before` (their receiver died or never read them).
///
/// # Errors
/// A database error.
pub async fn delete_frames_before(db: &AnyPool, before: i64) -> Result<u64, sqlx::Error> {
    let done = sqlx::query("DELETE FROM mailbox_frames WHERE sent_at < $1")
        .bind(before)
        .execute(db)
        .await?;
    Ok(done.rows_affected())
}

/// The replicas besides `me` that hold mailboxes or relay codes.
///
/// # Errors
/// A database error.
pub async fn other_holders(db: &AnyPool, me: &str) -> Result<Vec<String>, sqlx::Error> {
    let rows: Vec<(String,)> = sqlx::query_as(
        "SELECT instance FROM mailboxes WHERE instance <> $1 \
         UNION SELECT instance FROM relay_codes WHERE instance <> $1",
    )
    .bind(me)
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(|r| r.0).collect())
}

/// Forgets every mailbox and relay code of the (dead) replica `instance`, and the frames on
/// their way to its mailboxes.
///
/// # Errors
/// A database error.
pub async fn forget_replica(db: &AnyPool, instance: &str) -> Result<(), sqlx::Error> {
    let mut tx = db.begin().await?;
    sqlx::query(
        "DELETE FROM mailbox_frames WHERE mailbox IN \
         (SELECT address FROM mailboxes WHERE instance = $1)",
    )
    .bind(instance)
    .execute(&mut *tx)
    .await?;
    sqlx::query("DELETE FROM mailboxes WHERE instance = $1")
        .bind(instance)
        .execute(&mut *tx)
        .await?;
    sqlx::query("DELETE FROM relay_codes WHERE instance = $1")
        .bind(instance)
        .execute(&mut *tx)
        .await?;
    tx.commit().await
}

/// How many frames are stored (for tests and metrics).
///
/// # Errors
/// A database error.
pub async fn stored_frames(db: &AnyPool) -> Result<i64, sqlx::Error> {
    let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM mailbox_frames")
        .fetch_one(db)
        .await?;
    Ok(n)
}
