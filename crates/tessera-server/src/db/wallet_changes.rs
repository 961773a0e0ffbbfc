//! Migration 0013: `wallet_changes`, a structure wallet's party changes waiting for a
//! resharing — a device approved after the wallet was made joins it, a revoked device leaves it
//! (`crate::reshare`'s module documentation); and `device_presence`, the devices whose agent is
//! online (`crate::coordinator::joinable`), one row per waiting request since migration 0014.

use sqlx::any::AnyExecutor;

use super::WriteTx;

/// A change waiting for a resharing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingChange {
    /// The device.
    pub device_id: String,
    /// Its name as registered.
    pub device_name: String,
    /// Its label in the wallet (a device leaving it), none for one joining it.
    pub label: Option<String>,
    /// `add` or `remove`.
    pub change: String,
    /// Since when (Unix seconds).
    pub created_at: i64,
}

/// The structure wallets of `user_id` with a key that device `device_id` is not a party of:
/// (id, structure).
///
/// # Errors
/// A database error.
pub async fn joinable_wallets(
    tx: &mut WriteTx,
    user_id: &str,
    device_id: &str,
) -> Result<Vec<(String, String)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT w.id, w.structure FROM wallets w WHERE w.user_id = $1 AND w.structure IS NOT NULL \
         AND w.public_key IS NOT NULL AND NOT EXISTS \
         (SELECT 1 FROM wallet_parties p WHERE p.wallet_id = w.id AND p.device_id = $2) \
         ORDER BY w.created_at, w.id",
    )
    .bind(user_id)
    .bind(device_id)
    .fetch_all(&mut **tx)
    .await
}

/// Records that device `device_id` joins wallet `wallet_id`.
///
/// # Errors
/// A database error.
pub async fn add(
    tx: &mut WriteTx,
    wallet_id: &str,
    device_id: &str,
    at: i64,
) -> Result<(), sqlx::Error> {
    record(tx, wallet_id, device_id, "add", at).await
}

/// Records `change` (`add` or `remove`) of device `device_id` in wallet `wallet_id`, replacing
/// the one recorded before.
async fn record(
    tx: &mut WriteTx,
    wallet_id: &str,
    device_id: &str,
    change: &str,
    at: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO wallet_changes (wallet_id, device_id, change, created_at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (wallet_id, device_id) DO UPDATE SET change = excluded.change, created_at = excluded.created_at",
    )
    .bind(wallet_id)
    .bind(device_id)
    .bind(change)
    .bind(at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The revocation of `device_id`: it no longer joins any wallet, and it leaves every wallet it
/// is a party of. Returns those wallets' ids.
///
/// # Errors
/// A database error.
pub async fn on_revocation(
    tx: &mut WriteTx,
    device_id: &str,
    at: i64,
) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query("DELETE FROM wallet_changes WHERE device_id = $1 AND change = 'add'")
        .bind(device_id)
        .execute(&mut **tx)
        .await?;
    let wallets: Vec<(String,)> = sqlx::query_as(
        "SELECT wallet_id FROM wallet_parties WHERE device_id = $1 ORDER BY wallet_id",
    )
    .bind(device_id)
    .fetch_all(&mut **tx)
    .await?;
    for (wallet_id,) in &wallets {
        record(tx, wallet_id, device_id, "remove", at).await?;
    }
    Ok(wallets.into_iter().map(|(w,)| w).collect())
}

/// After a resharing's switch of `wallet_id`, in its transaction: deletes the changes its
/// parties now satisfy (a device added is a party, a device removed is not).
///
/// # Errors
/// A database error.
pub async fn settle(tx: &mut WriteTx, wallet_id: &str) -> Result<(), sqlx::Error> {
    sqlx::query(
        "DELETE FROM wallet_changes WHERE wallet_id = $1 AND ( \
         (change = 'add' AND EXISTS (SELECT 1 FROM wallet_parties p WHERE p.wallet_id = $1 AND p.device_id = wallet_changes.device_id)) \
         OR (change = 'remove' AND NOT EXISTS (SELECT 1 FROM wallet_parties p WHERE p.wallet_id = $1 AND p.device_id = wallet_changes.device_id)))",
    )
    .bind(wallet_id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The changes of `wallet_id` waiting for a resharing, oldest first.
///
/// # Errors
/// A database error.
pub async fn of_wallet(
    db: impl AnyExecutor<'_>,
    wallet_id: &str,
) -> Result<Vec<PendingChange>, sqlx::Error> {
    type Row = (String, String, Option<String>, String, i64);
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT c.device_id, d.name, p.label, c.change, c.created_at FROM wallet_changes c \
         JOIN devices d ON d.id = c.device_id \
         LEFT JOIN wallet_parties p ON p.wallet_id = c.wallet_id AND p.device_id = c.device_id \
         WHERE c.wallet_id = $1 ORDER BY c.created_at, c.device_id",
    )
    .bind(wallet_id)
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(
            |(device_id, device_name, label, change, created_at)| PendingChange {
                device_id,
                device_name,
                label,
                change,
                created_at,
            },
        )
        .collect())
}

/// Request `request_id` of device `device_id` (one waiting `GET /sessions/joinable`) keeps it
/// online until `until` (Unix seconds). A device is online while any of its requests is.
///
/// # Errors
/// A database error.
pub async fn present_until(
    db: impl AnyExecutor<'_>,
    device_id: &str,
    request_id: &str,
    until: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO device_presence (device_id, request_id, until) VALUES ($1, $2, $3) \
         ON CONFLICT (device_id, request_id) DO UPDATE SET until = excluded.until",
    )
    .bind(device_id)
    .bind(request_id)
    .bind(until)
    .execute(db)
    .await?;
    Ok(())
}

/// Deletes the presence of requests that ended before `before`. Returns how many.
///
/// # Errors
/// A database error.
pub async fn forget_presence_before(
    db: impl AnyExecutor<'_>,
    before: i64,
) -> Result<u64, sqlx::Error> {
    let done = sqlx::query("DELETE FROM device_presence WHERE until < $1")
        .bind(before)
        .execute(db)
        .await?;
    Ok(done.rows_affected())
}

/// Whether device `device_id`'s agent is online at `at`.
///
/// # Errors
/// A database error.
pub async fn is_online(
    db: impl AnyExecutor<'_>,
    device_id: &str,
    at: i64,
) -> Result<bool, sqlx::Error> {
    let n: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM device_presence WHERE device_id = $1 AND until >= $2",
    )
    .bind(device_id)
    .bind(at)
    .fetch_one(db)
    .await?;
    Ok(n > 0)
}

/// The party indices of wallet `wallet_id`'s active devices that are online at `at`.
///
/// # Errors
/// A database error.
pub async fn online_parties(
    db: impl AnyExecutor<'_>,
    wallet_id: &str,
    at: i64,
) -> Result<Vec<tessera_core::PartyIndex>, sqlx::Error> {
    let rows: Vec<(i64,)> = sqlx::query_as(
        "SELECT p.party FROM wallet_parties p JOIN devices d ON d.id = p.device_id \
         WHERE p.wallet_id = $1 AND d.status = 'active' AND EXISTS \
         (SELECT 1 FROM device_presence o WHERE o.device_id = p.device_id AND o.until >= $2) \
         ORDER BY p.party",
    )
    .bind(wallet_id)
    .bind(at)
    .fetch_all(db)
    .await?;
    // Stored indices are those of a structure's parties, which fit a u8.
    Ok(rows
        .into_iter()
        .filter_map(|(p,)| u8::try_from(p).ok().map(tessera_core::PartyIndex::new))
        .collect())
}
