//! The audit log: append-only, hash-chained records of what the server did and refused.
//!
//! Record `n` stores `hash_n = SHA-256("tessera/audit/v1" || n || at || kind || user || device ||
//! wallet || detail || hash_{n-1})` (each field length-prefixed; `hash_0` is 32 zero bytes). A row
//! edited, deleted or moved in the database no longer matches its hash or its successor's
//! `prev_hash`, and [`verify`] names the first such record. Truncating the newest records is
//! not visible from the chain alone: the verification reports the head hash, to compare with a
//! copy kept elsewhere.
//!
//! Records are database rows, never log lines. An audited action and its record commit in one
//! [`WriteTx`] ([`append_in`]); appends are serialised by that transaction (SQLite: the write
//! lock; PostgreSQL: an advisory lock on the chain's head, shared by every replica), and the
//! primary key on `seq` refuses a fork whatever happens. An append does not read the head when
//! the process knows it: it inserts after the head it last wrote, in a statement that writes
//! only if that record is still the head, and reads the head only when it was not. On SQLite a
//! record that stands alone ([`append`]) is that single statement, without a transaction
//! around it.

use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tessera_api as api;

use crate::auth::AuthDevice;
use crate::db::{self, DURABLE_ATTEMPTS, WriteTx, retry_pause};
use crate::error::ApiResult;
use crate::extract::ApiQuery;
use crate::state::{AppState, now, rfc3339};

const GENESIS: [u8; 32] = [0; 32];

/// Who and what a record is about.
#[derive(Default, Clone, Copy)]
pub struct Subject<'a> {
    /// The user.
    pub user: Option<&'a str>,
    /// The device.
    pub device: Option<&'a str>,
    /// The wallet.
    pub wallet: Option<&'a str>,
}

impl<'a> Subject<'a> {
    /// The authenticated device and its user.
    #[must_use]
    pub fn device(me: &'a AuthDevice) -> Self {
        Subject {
            user: Some(&me.user_id),
            device: Some(&me.device_id),
            wallet: None,
        }
    }

    /// The same, about `wallet`.
    #[must_use]
    pub fn wallet(self, wallet: &'a str) -> Self {
        Subject {
            wallet: Some(wallet),
            ..self
        }
    }
}

fn put(h: &mut Sha256, field: Option<&[u8]>) {
    match field {
        None => h.update([0u8]),
        Some(bytes) => {
            h.update([1u8]);
            h.update((bytes.len() as u64).to_be_bytes());
            h.update(bytes);
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn record_hash(
    seq: i64,
    at: i64,
    kind: &str,
    user: Option<&str>,
    device: Option<&str>,
    wallet: Option<&str>,
    detail: &str,
    prev: &[u8],
) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"tessera/audit/v1");
    h.update(seq.to_be_bytes());
    h.update(at.to_be_bytes());
    put(&mut h, Some(kind.as_bytes()));
    put(&mut h, user.map(str::as_bytes));
    put(&mut h, device.map(str::as_bytes));
    put(&mut h, wallet.map(str::as_bytes));
    put(&mut h, Some(detail.as_bytes()));
    put(&mut h, Some(prev));
    h.finalize().into()
}

/// A record about to be appended after record `prev_seq` (hash `prev_hash`), its hash computed.
fn next_record<'a>(
    prev_seq: i64,
    prev_hash: &[u8],
    at: i64,
    kind: &'a str,
    subject: Subject<'a>,
    detail: &'a str,
) -> db::audit::NewRecord<'a> {
    let seq = prev_seq + 1;
    let hash = record_hash(
        seq,
        at,
        kind,
        subject.user,
        subject.device,
        subject.wallet,
        detail,
        prev_hash,
    );
    db::audit::NewRecord {
        seq,
        at,
        kind,
        user: subject.user,
        device: subject.device,
        wallet: subject.wallet,
        detail,
        prev_hash: prev_hash.to_vec(),
        hash,
    }
}

/// The record `kind` about `subject` with `detail`, at `at`, as it would follow the process's
/// last known head (none known: `None`), for a statement or batch that writes it guarded by
/// that head (it writes nothing unless the head is still that record).
pub fn after_known_head<'a>(
    head: &db::audit::HeadCache,
    at: i64,
    kind: &'a str,
    subject: Subject<'a>,
    detail: &'a str,
) -> Option<db::audit::NewRecord<'a>> {
    let (prev_seq, prev_hash) = head.get()?;
    Some(next_record(prev_seq, &prev_hash, at, kind, subject, detail))
}

/// Appends a record inside `tx`, after the transaction's other writes: the record commits with
/// the action it records, or neither does. On PostgreSQL this takes the chain head's advisory
/// lock, held until `tx` ends (take wallet locks before it, see [`crate::db`]).
///
/// The head is the process's last known one ([`db::audit::HeadCache`]): one guarded insert
/// that writes only if that is still the head ([`db::audit::insert_after`]); when it is not
/// (another replica appended, a transaction rolled back), the head is read under the lock and
/// the record appended after it.
///
/// # Errors
/// A database error: roll back the action (drop `tx`) and answer with the error.
pub async fn append_in(
    tx: &mut WriteTx,
    kind: &str,
    subject: Subject<'_>,
    detail: Value,
) -> ApiResult<()> {
    if !tx.audited() {
        return Ok(());
    }
    tx.lock_audit_head().await?;
    let detail = detail.to_string();
    let at = now();
    if let Some((prev_seq, prev_hash)) = tx.audit_head().get() {
        let record = next_record(prev_seq, &prev_hash, at, kind, subject, &detail);
        if db::audit::insert_after(&mut **tx, &record).await? {
            tx.audit_head().advance(record.seq, record.hash);
            return Ok(());
        }
    }
    let last = db::audit::head(tx).await?;
    let (prev_seq, prev_hash) = last.unwrap_or((0, GENESIS.to_vec()));
    let record = next_record(prev_seq, &prev_hash, at, kind, subject, &detail);
    db::audit::insert(tx, &record).await?;
    tx.audit_head().advance(record.seq, record.hash);
    Ok(())
}

/// SQLite: appends a record as one autocommit statement after the process's last known head
/// (the statement takes the write lock before it checks the head, and commits durably).
/// Returns whether it was written; when not (no known head, a stale one, or an error), the
/// caller appends in a transaction that reads the head.
async fn append_alone(state: &AppState, kind: &str, subject: Subject<'_>, detail: &str) -> bool {
    let Some(record) = after_known_head(state.audit_head(), now(), kind, subject, detail) else {
        return false;
    };
    match db::audit::insert_after(state.db(), &record).await {
        Ok(true) => {
            state.audit_head().advance(record.seq, record.hash);
            true
        }
        Ok(false) => false,
        Err(e) => {
            tracing::debug!(kind, error = %e, "audit append without a transaction failed; retrying in one");
            false
        }
    }
}

/// SQLite: ends `session_id` with `end` and appends its one record, one batch of statements
/// after the process's last known head ([`db::sessions::end_with_record`]). Returns whether it
/// was written; when not (no known head, a stale one, a durable request's session, an error),
/// nothing was, and the caller records the end in a transaction.
pub(crate) async fn end_session_alone(
    state: &AppState,
    session_id: &str,
    end: (db::SessionStatus, Option<&str>),
    subject: Subject<'_>,
    (kind, detail): (&str, &str),
) -> bool {
    if !state.config().controls || state.backend() != db::Backend::Sqlite {
        return false;
    }
    let at = now();
    let Some(record) = after_known_head(state.audit_head(), at, kind, subject, detail) else {
        return false;
    };
    match db::sessions::end_with_record(state.db(), session_id, end, at, &record).await {
        Ok(()) => {
            state.audit_head().advance(record.seq, record.hash);
            true
        }
        Err(e) => {
            tracing::debug!(kind, error = %e, "a session's end in one batch was not written; writing it in a transaction");
            false
        }
    }
}

/// Appends a record in a transaction of its own: for a record that is the whole action (a
/// backup verified, a refusal) or that follows one already done. Tried up to
/// [`crate::db::DURABLE_ATTEMPTS`] times; the caller must not report success when it fails.
/// On SQLite, the first try is a single statement when the process knows the head
/// (`append_alone`).
///
/// # Errors
/// The last attempt's error.
pub async fn append(
    state: &AppState,
    kind: &str,
    subject: Subject<'_>,
    detail: Value,
) -> ApiResult<()> {
    if !state.config().controls {
        return Ok(());
    }
    if state.backend() == db::Backend::Sqlite
        && append_alone(state, kind, subject, &detail.to_string()).await
    {
        return Ok(());
    }
    let mut attempt = 1;
    loop {
        let written = async {
            let mut tx = state.begin_write().await?;
            append_in(&mut tx, kind, subject, detail.clone()).await?;
            tx.commit().await
        }
        .await;
        match written {
            Ok(()) => return Ok(()),
            Err(e) if attempt < DURABLE_ATTEMPTS => {
                tracing::warn!(kind, attempt, error = %e, "retrying an audit record");
                attempt += 1;
                tokio::time::sleep(retry_pause(attempt)).await;
            }
            Err(e) => {
                tracing::error!(kind, error = %e, "could not write an audit record");
                return Err(e);
            }
        }
    }
}

/// Checks the whole chain, in order.
///
/// # Errors
/// A database error.
pub async fn verify(pool: &sqlx::AnyPool) -> Result<api::AuditVerification, sqlx::Error> {
    let rows = db::audit::all(pool).await?;
    let mut prev = GENESIS.to_vec();
    let mut records = 0u64;
    for (seq, at, kind, user, device, wallet, detail, prev_hash, hash) in rows {
        let expected = records as i64 + 1;
        let fault = |reason: String| {
            Some(api::AuditFault {
                seq: seq.max(0) as u64,
                reason,
            })
        };
        let first_bad = if seq != expected {
            fault(format!(
                "record {expected} is missing (the next is {seq}): a record was deleted"
            ))
        } else if prev_hash != prev {
            fault(format!(
                "record {seq} does not follow record {}: records were deleted, inserted or reordered",
                seq - 1
            ))
        } else if record_hash(
            seq,
            at,
            &kind,
            user.as_deref(),
            device.as_deref(),
            wallet.as_deref(),
            &detail,
            &prev_hash,
        )
        .as_slice()
            != hash
        {
            fault(format!(
                "record {seq} was altered: its hash does not match its contents"
            ))
        } else {
            None
        };
        if first_bad.is_some() {
            return Ok(api::AuditVerification {
                records,
                head: hex::encode(&prev),
                first_bad,
            });
        }
        prev = hash;
        records += 1;
    }
    Ok(api::AuditVerification {
        records,
        head: hex::encode(&prev),
        first_bad: None,
    })
}

/// `?wallet=`.
#[derive(Deserialize)]
pub struct AuditQuery {
    wallet: Option<String>,
}

/// `GET /audit?wallet=…`: the records of the caller's user (of one of its wallets).
#[utoipa::path(get, path = "/audit", tag = "audit", security(("bearer" = [])), params(("wallet" = Option<String>, Query, description = "Only the records of this wallet")), responses((status = 200, description = "The user's audit records, oldest first", body = Vec<api::AuditRecord>), crate::openapi::AuthErrors, crate::openapi::NotFound, crate::openapi::Errors))]
pub async fn list(
    State(state): State<AppState>,
    me: AuthDevice,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> ApiResult<Json<Vec<api::AuditRecord>>> {
    let rows = match &q.wallet {
        Some(wallet) => {
            db::wallets::owned(state.db(), &me.user_id, wallet).await?;
            db::audit::of_wallet(state.db(), wallet).await?
        }
        None => db::audit::of_user(state.db(), &me.user_id).await?,
    };
    Ok(Json(
        rows.into_iter()
            .map(
                |(seq, at, kind, user, device, wallet, detail, _, hash)| api::AuditRecord {
                    seq: seq.max(0) as u64,
                    at: rfc3339(at),
                    kind,
                    user_id: user.map(Into::into),
                    device_id: device.map(Into::into),
                    wallet_id: wallet.map(Into::into),
                    detail,
                    hash: hex::encode(hash),
                },
            )
            .collect(),
    ))
}

/// `GET /audit/verify`: checks the whole chain (any authenticated device may ask).
#[utoipa::path(get, path = "/audit/verify", tag = "audit", security(("bearer" = [])), responses((status = 200, description = "The whole chain checked", body = api::AuditVerification), crate::openapi::AuthErrors, crate::openapi::Errors))]
pub async fn verify_endpoint(
    State(state): State<AppState>,
    _me: AuthDevice,
) -> ApiResult<Json<api::AuditVerification>> {
    Ok(Json(verify(state.db()).await?))
}

/// The audit log: `GET /audit`, `GET /audit/verify`.
pub(crate) fn router() -> axum::Router<AppState> {
    use axum::routing::get;
    axum::Router::new()
        .route("/audit", get(list))
        .route("/audit/verify", get(verify_endpoint))
}
