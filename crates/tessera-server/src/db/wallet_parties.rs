//! Structure wallets (migration 0012): a `wallets` row with its structure text, and its
//! `wallet_parties`, written together; the wallets a user's devices are parties of; devices'
//! acceptances. Which parties a structure names is decided before, by
//! [`crate::wallet_parties`].

use sqlx::any::AnyExecutor;

use super::{PartyKind, WriteTx};
use crate::error::{ApiError, ApiResult};

/// A structure wallet to store.
pub struct NewStructureWallet<'a> {
    /// Hex id.
    pub id: &'a str,
    /// The owner.
    pub user_id: &'a str,
    /// Its name (unique per owner).
    pub name: &'a str,
    /// The canonical structure text.
    pub structure: &'a str,
    /// The size of its smallest quorum (`threshold_t`).
    pub smallest_quorum: i64,
    /// Compressed SEC1 public key; none until its keygen completed.
    pub public_key: Option<&'a [u8]>,
    /// Its epoch.
    pub epoch: i64,
    /// Now.
    pub created_at: i64,
}

/// A party to store.
pub struct NewParty<'a> {
    /// Its index.
    pub party: i64,
    /// Its label in the structure.
    pub label: &'a str,
    /// Server or device.
    pub kind: PartyKind,
    /// The device and its user (a device party).
    pub device: Option<(&'a str, &'a str)>,
}

/// Deletes the structure wallet `name` of `user_id` whose key generation never completed and
/// is over (no session of it live: created or running, and heard of since `live_since`), so
/// that the name can be made again: its parties and pending changes go with it (a wallet
/// without a key has no share, policy or backup). Returns its id.
///
/// # Errors
/// A database error.
pub async fn forget_unmade(
    tx: &mut WriteTx,
    user_id: &str,
    name: &str,
    live_since: i64,
) -> Result<Option<String>, sqlx::Error> {
    let unmade: Option<(String,)> = sqlx::query_as(
        "SELECT w.id FROM wallets w WHERE w.user_id = $1 AND w.name = $2 \
         AND w.public_key IS NULL AND w.structure IS NOT NULL AND NOT EXISTS \
         (SELECT 1 FROM sessions s WHERE s.wallet_id = w.id \
          AND s.status IN ('created', 'running') AND s.last_message_at >= $3)",
    )
    .bind(user_id)
    .bind(name)
    .bind(live_since)
    .fetch_optional(&mut **tx)
    .await?;
    let Some((wallet_id,)) = unmade else {
        return Ok(None);
    };
    for delete in [
        "DELETE FROM wallet_changes WHERE wallet_id = $1",
        "DELETE FROM wallet_parties WHERE wallet_id = $1",
    ] {
        sqlx::query(delete)
            .bind(&wallet_id)
            .execute(&mut **tx)
            .await?;
    }
    // (Another transaction may have discarded it meanwhile: then this one did not.)
    let deleted = sqlx::query("DELETE FROM wallets WHERE id = $1 AND public_key IS NULL")
        .bind(&wallet_id)
        .execute(&mut **tx)
        .await?;
    Ok((deleted.rows_affected() == 1).then_some(wallet_id))
}

/// Stores a structure wallet and its parties in `tx` (the caller commits, or drops `tx` and
/// nothing is stored).
///
/// # Errors
/// [`ApiError::Conflict`] when the owner has a wallet of that name (also when another
/// transaction stored one meanwhile: the unique index decides); [`ApiError::BadRequest`] for
/// parties the schema refuses (two with one label or device, a second server); a database error.
pub async fn insert(
    tx: &mut WriteTx,
    wallet: &NewStructureWallet<'_>,
    parties: &[NewParty<'_>],
) -> ApiResult<()> {
    let inserted = sqlx::query(
        "INSERT INTO wallets (id, user_id, name, threshold_t, threshold_n, public_key, epoch, created_at, structure) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(wallet.id)
    .bind(wallet.user_id)
    .bind(wallet.name)
    .bind(wallet.smallest_quorum)
    .bind(parties.len() as i64)
    .bind(wallet.public_key)
    .bind(wallet.epoch)
    .bind(wallet.created_at)
    .bind(wallet.structure)
    .execute(&mut **tx)
    .await;
    match inserted {
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
            return Err(ApiError::Conflict(format!(
                "a wallet named {:?} exists",
                wallet.name
            )));
        }
        other => other?,
    };
    insert_parties(tx, wallet.id, parties).await
}

/// Inserts `parties` of wallet `wallet_id`.
async fn insert_parties(
    tx: &mut WriteTx,
    wallet_id: &str,
    parties: &[NewParty<'_>],
) -> ApiResult<()> {
    for p in parties {
        let (device_id, user_id) = p.device.unzip();
        let inserted = sqlx::query(
            "INSERT INTO wallet_parties (wallet_id, party, label, kind, device_id, user_id) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(wallet_id)
        .bind(p.party)
        .bind(p.label)
        .bind(p.kind)
        .bind(device_id)
        .bind(user_id)
        .execute(&mut **tx)
        .await;
        match inserted {
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() || e.is_check_violation() => {
                return Err(ApiError::BadRequest(format!(
                    "party {} ({:?}) cannot be stored with the others: {}",
                    p.party,
                    p.label,
                    e.message()
                )));
            }
            other => other?,
        };
    }
    Ok(())
}

/// The switch of a resharing of wallet `wallet_id` from epoch `epoch - 1`: its structure,
/// smallest quorum, party count and epoch become the new structure's and `epoch`, and its
/// parties are replaced by `parties`. Returns `false` (nothing changed) when the wallet is not at
/// `epoch - 1`.
///
/// # Errors
/// As [`insert`] for the parties; a database error.
pub async fn switch_structure(
    tx: &mut WriteTx,
    wallet_id: &str,
    structure: &str,
    smallest_quorum: i64,
    epoch: i64,
    parties: &[NewParty<'_>],
) -> ApiResult<bool> {
    let updated = sqlx::query(
        "UPDATE wallets SET structure = $1, threshold_t = $2, threshold_n = $3, epoch = $4 \
         WHERE id = $5 AND epoch + 1 = $4 AND structure IS NOT NULL",
    )
    .bind(structure)
    .bind(smallest_quorum)
    .bind(parties.len() as i64)
    .bind(epoch)
    .bind(wallet_id)
    .execute(&mut **tx)
    .await?;
    if updated.rows_affected() != 1 {
        return Ok(false);
    }
    // Another user's device that stays a party keeps its acceptance.
    let accepted: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT device_id, acceptance, accepted_at FROM wallet_parties \
         WHERE wallet_id = $1 AND device_id IS NOT NULL AND acceptance IS NOT NULL \
         AND accepted_at IS NOT NULL",
    )
    .bind(wallet_id)
    .fetch_all(&mut **tx)
    .await?;
    sqlx::query("DELETE FROM wallet_parties WHERE wallet_id = $1")
        .bind(wallet_id)
        .execute(&mut **tx)
        .await?;
    insert_parties(tx, wallet_id, parties).await?;
    for (device_id, signature, at) in accepted {
        record_acceptance(&mut **tx, wallet_id, &device_id, &signature, at).await?;
    }
    Ok(true)
}

/// A stored structure wallet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredWallet {
    /// Hex id.
    pub id: String,
    /// The owner.
    pub user_id: String,
    /// Its name.
    pub name: String,
    /// The canonical structure text (none: a 2-of-2 wallet of the first builds).
    pub structure: Option<String>,
    /// Compressed SEC1 public key (none: its keygen has not completed).
    pub public_key: Option<Vec<u8>>,
    /// Current epoch.
    pub epoch: i64,
}

/// The wallet `wallet_id`, whoever owns it, with its structure and with or without a key.
///
/// # Errors
/// A database error.
pub async fn wallet(
    db: impl AnyExecutor<'_>,
    wallet_id: &str,
) -> Result<Option<StoredWallet>, sqlx::Error> {
    type Row = (String, String, String, Option<String>, Option<Vec<u8>>, i64);
    let row: Option<Row> = sqlx::query_as(
        "SELECT id, user_id, name, structure, public_key, epoch FROM wallets WHERE id = $1",
    )
    .bind(wallet_id)
    .fetch_optional(db)
    .await?;
    Ok(row.map(
        |(id, user_id, name, structure, public_key, epoch)| StoredWallet {
            id,
            user_id,
            name,
            structure,
            public_key,
            epoch,
        },
    ))
}

/// A stored party.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredParty {
    /// Its index.
    pub party: i64,
    /// Its label.
    pub label: String,
    /// Server or device.
    pub kind: PartyKind,
    /// The device (a device party).
    pub device_id: Option<String>,
    /// The device's user (a device party).
    pub user_id: Option<String>,
    /// The device's acceptance (hex signature) and when, once recorded.
    pub accepted: Option<(String, i64)>,
}

type PartyRow = (
    i64,
    String,
    PartyKind,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<i64>,
);

/// The parties of `wallet_id`, by index (none for a 2-of-2 wallet of the first builds).
///
/// # Errors
/// A database error.
pub async fn of_wallet(
    db: impl AnyExecutor<'_>,
    wallet_id: &str,
) -> Result<Vec<StoredParty>, sqlx::Error> {
    let rows: Vec<PartyRow> = sqlx::query_as(
        "SELECT party, label, kind, device_id, user_id, acceptance, accepted_at \
         FROM wallet_parties WHERE wallet_id = $1 ORDER BY party",
    )
    .bind(wallet_id)
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(
            |(party, label, kind, device_id, user_id, acceptance, at)| StoredParty {
                party,
                label,
                kind,
                device_id,
                user_id,
                accepted: acceptance.zip(at),
            },
        )
        .collect())
}

/// A wallet one of a user's devices is a party of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Membership {
    /// The wallet.
    pub wallet_id: String,
    /// Its name.
    pub wallet_name: String,
    /// Its owner (the user's own, or another user's that invited the device).
    pub owner_id: String,
    /// The owner's name.
    pub owner_name: String,
    /// Compressed SEC1 public key (none: its keygen has not completed).
    pub public_key: Option<Vec<u8>>,
    /// Current epoch.
    pub epoch: i64,
    /// The device's party index.
    pub party: i64,
    /// Its label.
    pub label: String,
    /// The device.
    pub device_id: String,
    /// When the device accepted (none: not yet, or not asked: a device of the owner).
    pub accepted_at: Option<i64>,
}

type MembershipRow = (
    String,
    String,
    String,
    String,
    Option<Vec<u8>>,
    i64,
    i64,
    String,
    String,
    Option<i64>,
);

/// The wallets any device of `user_id` is a party of, its own and other users', one row per
/// (wallet, device), oldest wallet first.
///
/// # Errors
/// A database error.
pub async fn of_user_devices(
    db: impl AnyExecutor<'_>,
    user_id: &str,
) -> Result<Vec<Membership>, sqlx::Error> {
    let rows: Vec<MembershipRow> = sqlx::query_as(
        "SELECT w.id, w.name, w.user_id, u.name, w.public_key, w.epoch, p.party, p.label, p.device_id, p.accepted_at \
         FROM wallet_parties p JOIN wallets w ON w.id = p.wallet_id JOIN users u ON u.id = w.user_id \
         WHERE p.user_id = $1 ORDER BY w.created_at, w.id, p.party",
    )
    .bind(user_id)
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(
            |(
                wallet_id,
                wallet_name,
                owner_id,
                owner_name,
                public_key,
                epoch,
                party,
                label,
                device_id,
                accepted_at,
            )| Membership {
                wallet_id,
                wallet_name,
                owner_id,
                owner_name,
                public_key,
                epoch,
                party,
                label,
                device_id,
                accepted_at,
            },
        )
        .collect())
}

/// Records `device_id`'s acceptance of its party in `wallet_id`: its signature (hex; verified
/// by the caller) and when. Returns whether it was recorded: false when the device is not a
/// party of the wallet or already accepted (the first acceptance stays).
///
/// # Errors
/// A database error.
pub async fn record_acceptance(
    db: impl AnyExecutor<'_>,
    wallet_id: &str,
    device_id: &str,
    signature: &str,
    at: i64,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE wallet_parties SET acceptance = $1, accepted_at = $2 \
         WHERE wallet_id = $3 AND device_id = $4 AND kind = 'device' AND acceptance IS NULL",
    )
    .bind(signature)
    .bind(at)
    .bind(wallet_id)
    .bind(device_id)
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Sets the public key of a structure wallet whose keygen completed. Returns whether it was
/// set: false when the wallet has a key already (or does not exist).
///
/// # Errors
/// A database error.
pub async fn set_public_key(
    db: impl AnyExecutor<'_>,
    wallet_id: &str,
    public_key: &[u8],
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE wallets SET public_key = $1 WHERE id = $2 AND public_key IS NULL AND structure IS NOT NULL",
    )
    .bind(public_key)
    .bind(wallet_id)
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// A party of a wallet with its device as the registry has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartyDevice {
    /// Its index.
    pub party: i64,
    /// Its label.
    pub label: String,
    /// The device, its name and its identity key (none: the server's party).
    pub device: Option<(String, String, Vec<u8>)>,
}

/// The parties of `wallet_id` by index, each device with its name and identity key.
///
/// # Errors
/// A database error.
pub async fn with_devices(
    db: impl AnyExecutor<'_>,
    wallet_id: &str,
) -> Result<Vec<PartyDevice>, sqlx::Error> {
    type Row = (i64, String, Option<String>, Option<String>, Option<Vec<u8>>);
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT p.party, p.label, p.device_id, d.name, d.identity_key \
         FROM wallet_parties p LEFT JOIN devices d ON d.id = p.device_id \
         WHERE p.wallet_id = $1 ORDER BY p.party",
    )
    .bind(wallet_id)
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(party, label, device_id, name, key)| PartyDevice {
            party,
            label,
            device: device_id
                .zip(name)
                .zip(key)
                .map(|((id, name), key)| (id, name, key)),
        })
        .collect())
}

/// A live session of a structure wallet another device started, in which a device is a party.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Joinable {
    /// The session.
    pub session_id: String,
    /// Its wallet.
    pub wallet_id: String,
    /// The wallet's name.
    pub wallet_name: String,
    /// What it runs.
    pub protocol: super::Protocol,
    /// Its nonce.
    pub nonce: Vec<u8>,
    /// The epoch it starts from.
    pub epoch: i64,
    /// The name of the device that started it.
    pub requested_by: String,
    /// When.
    pub created_at: i64,
    /// Its parameters (JSON).
    pub params: String,
    /// The wallet's structure.
    pub structure: String,
    /// The wallet's owner: its user id and name.
    pub owner: (String, String),
    /// The calling device's party of the wallet: its label, and when it accepted (another
    /// user's wallet; `None`: not accepted). `None` for a device that is not one of the
    /// wallet's parties (one joining it by this resharing).
    pub mine: Option<(String, Option<i64>)>,
}

/// The sessions of structure wallets, created since `since`, that another device started and
/// in which `device_id` is a party of the wallet, oldest first: key generations not ended, and
/// signing sessions running (their requester opened them, after any approval); and the live
/// resharings of its user's wallets and of the wallets it is a party of (a device joining a
/// wallet is not yet a party of it: the caller reads the session's parties from its
/// parameters).
///
/// # Errors
/// A database error.
pub async fn joinable(
    db: impl AnyExecutor<'_>,
    device_id: &str,
    since: i64,
) -> Result<Vec<Joinable>, sqlx::Error> {
    type Row = (
        String,
        String,
        String,
        super::Protocol,
        Vec<u8>,
        i64,
        String,
        i64,
        String,
        String,
        String,
        String,
        Option<String>,
        Option<i64>,
    );
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT s.id, s.wallet_id, w.name, s.protocol, s.nonce, s.epoch, d.name, s.created_at, s.params, w.structure, w.user_id, u.name, \
         p.label, p.accepted_at \
         FROM sessions s JOIN wallets w ON w.id = s.wallet_id JOIN users u ON u.id = w.user_id \
         JOIN wallet_parties p ON p.wallet_id = s.wallet_id AND p.device_id = $1 \
         JOIN devices d ON d.id = s.device_id \
         WHERE w.structure IS NOT NULL AND s.device_id <> $1 AND s.created_at >= $2 \
         AND ((s.protocol = 'keygen' AND s.status IN ('created', 'running')) \
         OR (s.protocol = 'sign' AND s.status = 'running')) \
         UNION ALL \
         SELECT s.id, s.wallet_id, w.name, s.protocol, s.nonce, s.epoch, d.name, s.created_at, s.params, w.structure, w.user_id, u.name, \
         q.label, q.accepted_at \
         FROM sessions s JOIN wallets w ON w.id = s.wallet_id JOIN users u ON u.id = w.user_id \
         JOIN devices d ON d.id = s.device_id \
         LEFT JOIN wallet_parties q ON q.wallet_id = w.id AND q.device_id = $1 \
         WHERE w.structure IS NOT NULL AND s.device_id <> $1 AND s.created_at >= $2 \
         AND s.protocol = 'reshare' AND s.status IN ('created', 'running') \
         AND (w.user_id = (SELECT user_id FROM devices WHERE id = $1) \
         OR q.device_id IS NOT NULL) \
         ORDER BY 8, 1",
    )
    .bind(device_id)
    .bind(since)
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(
            |(
                session_id,
                wallet_id,
                wallet_name,
                protocol,
                nonce,
                epoch,
                requested_by,
                created_at,
                params,
                structure,
                owner_id,
                owner_name,
                label,
                accepted_at,
            )| Joinable {
                session_id,
                wallet_id,
                wallet_name,
                protocol,
                nonce,
                epoch,
                requested_by,
                created_at,
                params,
                structure,
                owner: (owner_id, owner_name),
                mine: label.map(|label| (label, accepted_at)),
            },
        )
        .collect())
}
