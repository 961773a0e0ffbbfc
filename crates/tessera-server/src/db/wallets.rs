//! `wallets`: the users' wallets. A structure wallet whose keygen has not completed has no
//! public key yet (migration 0012): the functions here, which serve today's wallets, do not see
//! it (`public_key IS NOT NULL`); [`super::wallet_parties`] does.

use sqlx::any::AnyExecutor;
use tessera_core::PublicKey;

use super::{Backend, DeviceStatus, WriteTx};
use crate::error::{ApiError, ApiResult};

/// A wallet.
pub struct Wallet {
    /// Hex wallet id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// The wallet key.
    pub public_key: PublicKey,
    /// Current epoch.
    pub epoch: u64,
}

type WalletRow = (String, String, Vec<u8>, i64);

impl Wallet {
    fn from_row((id, name, pk, epoch): WalletRow) -> ApiResult<Self> {
        let public_key = PublicKey::from_sec1_bytes(&pk)
            .map_err(|e| ApiError::Internal(format!("stored key: {e}")))?;
        Ok(Wallet {
            id,
            name,
            public_key,
            epoch: epoch as u64,
        })
    }
}

/// The wallet `wallet_id` of `user_id` ([`ApiError::NotFound`] for another user's: its
/// existence is not revealed).
///
/// # Errors
/// Not found; a database error.
pub async fn owned(db: impl AnyExecutor<'_>, user_id: &str, wallet_id: &str) -> ApiResult<Wallet> {
    let row: Option<WalletRow> = sqlx::query_as(
        "SELECT id, name, public_key, epoch FROM wallets WHERE id = $1 AND user_id = $2 AND public_key IS NOT NULL",
    )
    .bind(wallet_id)
    .bind(user_id)
    .fetch_optional(db)
    .await?;
    Wallet::from_row(row.ok_or_else(|| ApiError::NotFound(format!("no wallet {wallet_id}")))?)
}

/// The condition that the user (the parameter named) holds an accepted party of wallet `w`
/// (another user's wallet one of its devices was invited into and accepted).
macro_rules! accepted_party_of {
    ($user:literal) => {
        concat!(
            "EXISTS (SELECT 1 FROM wallet_parties ap WHERE ap.wallet_id = w.id AND ap.user_id = ",
            $user,
            " AND ap.kind = 'device' AND ap.acceptance IS NOT NULL)"
        )
    };
}

/// The wallet `wallet_id` of `user_id`, or another user's wallet one of `user_id`'s devices
/// accepted a party of: what a party may read and sign with (owner-only actions, such as
/// policies, resharing and backups, use [`owned`]). Not found otherwise.
///
/// # Errors
/// Not found; a database error.
pub async fn shared(db: impl AnyExecutor<'_>, user_id: &str, wallet_id: &str) -> ApiResult<Wallet> {
    let row: Option<WalletRow> = sqlx::query_as(concat!(
        "SELECT w.id, w.name, w.public_key, w.epoch FROM wallets w WHERE w.id = $1 \
         AND w.public_key IS NOT NULL AND (w.user_id = $2 OR ",
        accepted_party_of!("$2"),
        ")"
    ))
    .bind(wallet_id)
    .bind(user_id)
    .fetch_optional(db)
    .await?;
    Wallet::from_row(row.ok_or_else(|| ApiError::NotFound(format!("no wallet {wallet_id}")))?)
}

/// What `POST /sign` checks before it creates a session, read in one query (each statement is
/// a round trip to the database's thread, and a sign is latency- and CPU-bound).
pub struct SignContext {
    /// The requesting device's standing: its status and user (none: unknown), for
    /// [`crate::auth::TokenDevice::confirm`].
    pub caller: Option<(DeviceStatus, String)>,
    /// The wallet, locked for the transaction ([`WriteTx::lock_wallet`]).
    pub wallet: Wallet,
    /// Bans of the device party and locks standing on the wallet (their details are read, for
    /// the refusal, only when there is one).
    pub standing: i64,
    /// The newest stored policy: its version and its JSON (none: the default).
    pub policy: Option<(i64, String)>,
    /// Pending shares no running refresh holds.
    pub stale_pending: i64,
    /// A structure wallet's structure (none: a 2-of-2 wallet).
    pub structure: Option<String>,
    /// Its active server share, epoch and sealed bytes, when asked for (`with_share`).
    pub share: Option<(i64, Vec<u8>)>,
}

/// The wallet `wallet_id` of `user_id` with everything signing checks, and the standing of the
/// requesting device `device_id`, locking the wallet row for `tx` on PostgreSQL (SQLite: `tx`
/// holds the write lock). `Ok(Err(standing))`: no such wallet of `user_id`, and the device's
/// standing (read then, so that the caller can answer for the device first).
///
/// # Errors
/// A database error.
pub async fn sign_context(
    tx: &mut WriteTx,
    device_id: &str,
    user_id: &str,
    wallet_id: &str,
    with_share: bool,
) -> ApiResult<Result<SignContext, Option<(DeviceStatus, String)>>> {
    // Scalar subqueries: on PostgreSQL `FOR UPDATE` locks the wallet row alone.
    macro_rules! select {
        ($share:expr) => {
            concat!(
            "SELECT w.id, w.name, w.public_key, w.epoch, w.structure, ",
            $share,
            ", \
         (SELECT COUNT(*) FROM banned_parties b WHERE b.wallet_id = w.id AND b.party = 0 AND b.lifted_at IS NULL) \
         + (SELECT COUNT(*) FROM wallet_locks l WHERE l.wallet_id = w.id AND l.lifted_at IS NULL), \
         (SELECT p.version FROM policies p WHERE p.wallet_id = w.id ORDER BY p.version DESC LIMIT 1), \
         (SELECT p.policy FROM policies p WHERE p.wallet_id = w.id ORDER BY p.version DESC LIMIT 1), \
         (SELECT COUNT(*) FROM server_shares sh WHERE sh.wallet_id = w.id AND sh.state = 'pending' AND NOT EXISTS \
         (SELECT 1 FROM sessions s WHERE s.id = sh.session_id AND s.status = 'running')), \
         (SELECT d.status FROM devices d WHERE d.id = $3), \
         (SELECT d.user_id FROM devices d WHERE d.id = $3) \
         FROM wallets w WHERE w.id = $1 AND w.public_key IS NOT NULL AND (w.user_id = $2 OR ",
            accepted_party_of!("$2"),
            ")"
            )
        };
    }
    type Row = (
        String,
        String,
        Vec<u8>,
        i64,
        Option<String>,
        Option<i64>,
        Option<Vec<u8>>,
        i64,
        Option<i64>,
        Option<String>,
        i64,
        Option<DeviceStatus>,
        Option<String>,
    );
    macro_rules! share {
        () => {
            "(SELECT sh.epoch FROM server_shares sh WHERE sh.wallet_id = w.id AND sh.state = 'active'), \
             (SELECT sh.sealed FROM server_shares sh WHERE sh.wallet_id = w.id AND sh.state = 'active')"
        };
    }
    let query = match (tx.backend(), with_share) {
        (Backend::Sqlite, false) => sqlx::query_as::<_, Row>(select!("NULL, NULL")),
        (Backend::Sqlite, true) => sqlx::query_as::<_, Row>(select!(share!())),
        (Backend::Postgres, false) => {
            sqlx::query_as::<_, Row>(concat!(select!("NULL, NULL"), " FOR UPDATE OF w"))
        }
        (Backend::Postgres, true) => {
            sqlx::query_as::<_, Row>(concat!(select!(share!()), " FOR UPDATE OF w"))
        }
    };
    let row = query
        .bind(wallet_id)
        .bind(user_id)
        .bind(device_id)
        .fetch_optional(&mut **tx)
        .await?;
    let Some((
        id,
        name,
        pk,
        epoch,
        structure,
        share_epoch,
        sealed,
        standing,
        version,
        policy,
        stale_pending,
        status,
        owner,
    )) = row
    else {
        return Ok(Err(super::devices::standing(&mut **tx, device_id).await?));
    };
    Ok(Ok(SignContext {
        caller: status.zip(owner),
        wallet: Wallet::from_row((id, name, pk, epoch))?,
        standing,
        policy: version.zip(policy),
        stale_pending,
        structure,
        share: share_epoch.zip(sealed),
    }))
}

/// Whether `user_id` has a wallet named `name`.
///
/// # Errors
/// A database error.
pub async fn name_taken(
    db: impl AnyExecutor<'_>,
    user_id: &str,
    name: &str,
) -> Result<bool, sqlx::Error> {
    let taken: Option<(String,)> =
        sqlx::query_as("SELECT id FROM wallets WHERE user_id = $1 AND name = $2")
            .bind(user_id)
            .bind(name)
            .fetch_optional(db)
            .await?;
    Ok(taken.is_some())
}

/// The ids of the wallets that have a key of `user_id` and those it accepted a party of
/// ([`shared`]), oldest first.
///
/// # Errors
/// A database error.
pub async fn ids_of_user(
    db: impl AnyExecutor<'_>,
    user_id: &str,
) -> Result<Vec<String>, sqlx::Error> {
    let ids: Vec<(String,)> = sqlx::query_as(concat!(
        "SELECT w.id FROM wallets w WHERE w.public_key IS NOT NULL AND (w.user_id = $1 OR ",
        accepted_party_of!("$1"),
        ") ORDER BY w.created_at, w.name"
    ))
    .bind(user_id)
    .fetch_all(db)
    .await?;
    Ok(ids.into_iter().map(|(id,)| id).collect())
}

/// A wallet's compressed public key and epoch, whoever owns it (none before its keygen ended).
///
/// # Errors
/// A database error.
pub async fn key_and_epoch(
    db: impl AnyExecutor<'_>,
    wallet_id: &str,
) -> Result<Option<(Vec<u8>, i64)>, sqlx::Error> {
    sqlx::query_as("SELECT public_key, epoch FROM wallets WHERE id = $1 AND public_key IS NOT NULL")
        .bind(wallet_id)
        .fetch_optional(db)
        .await
}

/// A new wallet.
pub struct NewWallet<'a> {
    /// Hex id.
    pub id: &'a str,
    /// The owner.
    pub user_id: &'a str,
    /// Its name.
    pub name: &'a str,
    /// Threshold t.
    pub threshold_t: i64,
    /// Parties n.
    pub threshold_n: i64,
    /// Compressed SEC1 public key.
    pub public_key: &'a [u8],
    /// Its epoch.
    pub epoch: i64,
    /// Now.
    pub created_at: i64,
}

/// Inserts a new wallet.
///
/// # Errors
/// A database error.
pub async fn insert(db: impl AnyExecutor<'_>, w: &NewWallet<'_>) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO wallets (id, user_id, name, threshold_t, threshold_n, public_key, epoch, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(w.id)
    .bind(w.user_id)
    .bind(w.name)
    .bind(w.threshold_t)
    .bind(w.threshold_n)
    .bind(w.public_key)
    .bind(w.epoch)
    .bind(w.created_at)
    .execute(db)
    .await?;
    Ok(())
}

/// Sets a wallet's epoch (a refresh switched).
///
/// # Errors
/// A database error.
pub async fn set_epoch(
    db: impl AnyExecutor<'_>,
    wallet_id: &str,
    epoch: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE wallets SET epoch = $1 WHERE id = $2")
        .bind(epoch)
        .bind(wallet_id)
        .execute(db)
        .await?;
    Ok(())
}
