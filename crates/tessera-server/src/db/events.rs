//! `device_events`: each device's event stream (`GET /events`, issue 16), numbered per device.
//!
//! An event is written in the transaction of the change it tells, after that transaction's
//! audit record: on PostgreSQL the audit record took the chain head's advisory lock
//! ([`WriteTx::lock_audit_head`], taken here again in case it was not), which every writer of
//! every replica takes, so `max(seq) + 1` is read by one transaction at a time and the numbers
//! of a device's events follow the order of the commits. A device that reads its events after
//! cursor `n` therefore never sees an event numbered below `n` appear later. On SQLite the
//! transaction's write lock does the same.

use sqlx::any::AnyExecutor;

use super::WriteTx;
use crate::error::ApiResult;
use tessera_api::EventKind;

/// An event: seq, kind, request, wallet, device it is about, summary, at.
pub type EventRow = (
    i64,
    EventKind,
    Option<String>,
    Option<String>,
    Option<String>,
    String,
    i64,
);

/// Appends an event to `device_id`'s stream in `tx` (after the transaction's audit record, see
/// the module documentation); returns its number.
///
/// # Errors
/// A database error.
#[allow(clippy::too_many_arguments)] // the columns of one row
pub async fn push(
    tx: &mut WriteTx,
    device_id: &str,
    kind: EventKind,
    request_id: Option<&str>,
    wallet_id: Option<&str>,
    about_device: Option<&str>,
    summary: &str,
) -> ApiResult<i64> {
    tx.lock_audit_head().await?;
    let (seq,): (i64,) =
        sqlx::query_as("SELECT COALESCE(MAX(seq), 0) + 1 FROM device_events WHERE device_id = $1")
            .bind(device_id)
            .fetch_one(&mut **tx)
            .await?;
    sqlx::query(
        "INSERT INTO device_events (device_id, seq, kind, request_id, wallet_id, about_device, summary, at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(device_id)
    .bind(seq)
    .bind(kind)
    .bind(request_id)
    .bind(wallet_id)
    .bind(about_device)
    .bind(summary)
    .bind(crate::clock::now())
    .execute(&mut **tx)
    .await?;
    Ok(seq)
}

/// `device_id`'s events numbered above `after`, oldest first, at most `limit`.
///
/// # Errors
/// A database error.
pub async fn after(
    db: impl AnyExecutor<'_>,
    device_id: &str,
    after: i64,
    limit: i64,
) -> Result<Vec<EventRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT seq, kind, request_id, wallet_id, about_device, summary, at FROM device_events \
         WHERE device_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
    )
    .bind(device_id)
    .bind(after)
    .bind(limit)
    .fetch_all(db)
    .await
}
