//! The audit log: append-only, hash-chained records of what the server did and refused.
//!
//! Record `n` stores `hash_n = SHA-256("tessera/audit/v1" || n || at || kind || user || device ||
//! wallet || detail || hash_{n-1})` (each field length-prefixed; `hash_0` is 32 zero bytes). A row
//! edited, deleted or moved in the database no longer matches its hash or its successor's
//! `prev_hash`, and [`verify`] names the first such record. Truncating the newest records is
//! not visible from the chain alone: the verification reports the head hash, to compare with a
//! copy kept elsewhere.
//!
//! Records are database rows, never log lines. Appends are serialised in this process and, across
//! replicas, by the primary key on `seq` (a lost race is retried).

use axum::Json;
use axum::extract::{Query, State};
use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tessera_core::api;

use crate::auth::AuthDevice;
use crate::error::{ApiError, ApiResult};
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

/// Appends a record.
///
/// # Errors
/// A database error (the caller decides whether the action it records may still stand).
pub async fn append(
    state: &AppState,
    kind: &str,
    subject: Subject<'_>,
    detail: Value,
) -> ApiResult<()> {
    if !state.config().controls {
        return Ok(());
    }
    let detail = detail.to_string();
    let _one_at_a_time = state.audit_lock().lock().await;
    let mut last_error = None;
    for _ in 0..8 {
        let mut tx = state.db().begin().await?;
        let last: Option<(i64, Vec<u8>)> =
            sqlx::query_as("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")
                .fetch_optional(&mut *tx)
                .await?;
        let (prev_seq, prev_hash) = last.unwrap_or((0, GENESIS.to_vec()));
        let seq = prev_seq + 1;
        let at = now();
        let hash = record_hash(
            seq,
            at,
            kind,
            subject.user,
            subject.device,
            subject.wallet,
            &detail,
            &prev_hash,
        );
        let inserted = sqlx::query(
            "INSERT INTO audit_log (seq, at, kind, user_id, device_id, wallet_id, detail, prev_hash, hash) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(seq)
        .bind(at)
        .bind(kind)
        .bind(subject.user)
        .bind(subject.device)
        .bind(subject.wallet)
        .bind(&detail)
        .bind(prev_hash)
        .bind(hash.as_slice())
        .execute(&mut *tx)
        .await;
        match inserted {
            Ok(_) => {
                tx.commit().await?;
                return Ok(());
            }
            // Another replica appended the same seq first: read the new head and retry.
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                last_error = Some(e.to_string());
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(ApiError::Internal(format!(
        "audit append kept losing races: {}",
        last_error.unwrap_or_default()
    )))
}

/// Appends a record and logs (does not return) a failure: for events after the fact.
pub async fn note(state: &AppState, kind: &str, subject: Subject<'_>, detail: Value) {
    if let Err(e) = append(state, kind, subject, detail).await {
        tracing::error!(kind, error = %e, "could not write an audit record");
    }
}

type Row = (
    i64,
    i64,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    String,
    Vec<u8>,
    Vec<u8>,
);

/// sqlx takes only static SQL: the shared column list is spliced in at compile time.
macro_rules! audit_select {
    ($rest:literal) => {
        concat!(
            "SELECT seq, at, kind, user_id, device_id, wallet_id, detail, prev_hash, hash FROM audit_log ",
            $rest
        )
    };
}

/// Checks the whole chain, in order.
///
/// # Errors
/// A database error.
pub async fn verify(db: &sqlx::AnyPool) -> Result<api::AuditVerification, sqlx::Error> {
    let rows: Vec<Row> = sqlx::query_as(audit_select!("ORDER BY seq"))
        .fetch_all(db)
        .await?;
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
pub async fn list(
    State(state): State<AppState>,
    me: AuthDevice,
    Query(q): Query<AuditQuery>,
) -> ApiResult<Json<Vec<api::AuditRecord>>> {
    let rows: Vec<Row> = match &q.wallet {
        Some(wallet) => {
            crate::wallets::wallet_of(&state, &me, wallet).await?;
            sqlx::query_as(audit_select!("WHERE wallet_id = $1 ORDER BY seq"))
                .bind(wallet)
                .fetch_all(state.db())
                .await?
        }
        None => {
            sqlx::query_as(audit_select!("WHERE user_id = $1 ORDER BY seq"))
                .bind(&me.user_id)
                .fetch_all(state.db())
                .await?
        }
    };
    Ok(Json(
        rows.into_iter()
            .map(
                |(seq, at, kind, user, device, wallet, detail, _, hash)| api::AuditRecord {
                    seq: seq.max(0) as u64,
                    at: rfc3339(at),
                    kind,
                    user_id: user,
                    device_id: device,
                    wallet_id: wallet,
                    detail,
                    hash: hex::encode(hash),
                },
            )
            .collect(),
    ))
}

/// `GET /audit/verify`: checks the whole chain (any authenticated device may ask).
pub async fn verify_endpoint(
    State(state): State<AppState>,
    _me: AuthDevice,
) -> ApiResult<Json<api::AuditVerification>> {
    Ok(Json(verify(state.db()).await?))
}
