//! Wallet endpoints: create keygen/sign/refresh sessions, read public keys.

use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use tessera_api as api;
use tessera_core::protocols::{fresh_nonce, joint_nonce};
use tessera_core::{DerivationPath, PublicKey, WalletId};

use crate::auth::AuthDevice;
use crate::db::{Backend, WriteTx};
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiQuery};
use crate::state::{AppState, now};

/// A wallet row.
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

/// Loads a wallet of the caller's user (404 for another user's: its existence is not revealed).
pub async fn wallet_of(state: &AppState, me: &AuthDevice, wallet_id: &str) -> ApiResult<Wallet> {
    let row: Option<WalletRow> = sqlx::query_as(
        "SELECT id, name, public_key, epoch FROM wallets WHERE id = $1 AND user_id = $2",
    )
    .bind(wallet_id)
    .bind(&me.user_id)
    .fetch_optional(state.db())
    .await?;
    wallet_from_row(row, wallet_id)
}

type WalletRow = (String, String, Vec<u8>, i64);

/// What `POST /sign` checks before it creates a session, read in one query (each statement is
/// a round trip to the database's thread, and a sign is latency- and CPU-bound).
struct SignContext {
    /// The wallet, locked for the transaction ([`WriteTx::lock_wallet`]).
    wallet: Wallet,
    /// Bans of the device party and locks standing on the wallet ([`crate::bans`] reads their
    /// details, for the refusal, only when there is one).
    standing: i64,
    /// The newest stored policy: its version and its JSON (none: the default).
    policy: Option<(i64, String)>,
    /// Pending shares no running refresh holds ([`crate::vault::discard_stale_pending`]).
    stale_pending: i64,
}

async fn sign_context(
    tx: &mut WriteTx,
    me: &AuthDevice,
    wallet_id: &str,
) -> ApiResult<SignContext> {
    // Scalar subqueries: on PostgreSQL `FOR UPDATE` locks the wallet row alone.
    macro_rules! select {
        () => {
            "SELECT w.id, w.name, w.public_key, w.epoch, \
         (SELECT COUNT(*) FROM banned_parties b WHERE b.wallet_id = w.id AND b.party = 0 AND b.lifted_at IS NULL) \
         + (SELECT COUNT(*) FROM wallet_locks l WHERE l.wallet_id = w.id AND l.lifted_at IS NULL), \
         (SELECT p.version FROM policies p WHERE p.wallet_id = w.id ORDER BY p.version DESC LIMIT 1), \
         (SELECT p.policy FROM policies p WHERE p.wallet_id = w.id ORDER BY p.version DESC LIMIT 1), \
         (SELECT COUNT(*) FROM server_shares sh WHERE sh.wallet_id = w.id AND sh.state = 'pending' AND NOT EXISTS \
         (SELECT 1 FROM sessions s WHERE s.id = sh.session_id AND s.status = 'running')) \
         FROM wallets w WHERE w.id = $1 AND w.user_id = $2"
        };
    }
    type Row = (
        String,
        String,
        Vec<u8>,
        i64,
        i64,
        Option<i64>,
        Option<String>,
        i64,
    );
    let query = match tx.backend() {
        Backend::Sqlite => sqlx::query_as::<_, Row>(select!()),
        Backend::Postgres => sqlx::query_as::<_, Row>(concat!(select!(), " FOR UPDATE OF w")),
    };
    let row = query
        .bind(wallet_id)
        .bind(&me.user_id)
        .fetch_optional(&mut **tx)
        .await?;
    let Some((id, name, pk, epoch, standing, version, policy, stale_pending)) = row else {
        return Err(ApiError::NotFound(format!("no wallet {wallet_id}")));
    };
    Ok(SignContext {
        wallet: wallet_from_row(Some((id, name, pk, epoch)), wallet_id)?,
        standing,
        policy: version.zip(policy),
        stale_pending,
    })
}

fn wallet_from_row(row: Option<WalletRow>, wallet_id: &str) -> ApiResult<Wallet> {
    let (id, name, pk, epoch) =
        row.ok_or_else(|| ApiError::NotFound(format!("no wallet {wallet_id}")))?;
    let public_key = PublicKey::from_sec1_bytes(&pk)
        .map_err(|e| ApiError::Internal(format!("stored key: {e}")))?;
    Ok(Wallet {
        id,
        name,
        public_key,
        epoch: epoch as u64,
    })
}

fn info(w: &Wallet) -> api::WalletInfo {
    api::WalletInfo {
        wallet_id: w.id.clone().into(),
        name: w.name.clone(),
        public_key: w.public_key.to_string(),
        eth_address: w.public_key.eth_address(),
        epoch: w.epoch,
    }
}

/// Why a session could not be created: the database error is kept for the caller to inspect.
enum CreateError {
    Api(ApiError),
    Database(sqlx::Error),
}

impl From<CreateError> for ApiError {
    fn from(e: CreateError) -> Self {
        match e {
            CreateError::Api(e) => e,
            CreateError::Database(e) => e.into(),
        }
    }
}

/// Reads a request's `device_nonce`: 64 hex digits, or absent.
fn device_nonce(text: Option<&str>) -> ApiResult<Option<[u8; 32]>> {
    text.map(|text| {
        let mut nonce = [0u8; 32];
        hex::decode_to_slice(text, &mut nonce)
            .map_err(|_| ApiError::BadRequest("device_nonce must be 64 hex digits".into()))?;
        Ok(nonce)
    })
    .transpose()
}

/// Inserts a protocol session in `tx`; a keygen or refresh session is audited with it (a
/// signing session is recorded by its `sign.requested` record). The run's nonce joins the
/// device's contribution (party 0, when it sent one) and a fresh one of the server's (party 1);
/// the device is told the server's.
#[allow(clippy::too_many_arguments)] // one call per protocol; a struct would only rename them
async fn create_session(
    state: &AppState,
    tx: &mut WriteTx,
    me: &AuthDevice,
    wallet_id: &str,
    protocol: &str,
    params: &impl serde::Serialize,
    epoch: u64,
    device_nonce: Option<[u8; 32]>,
) -> Result<api::SessionCreated, CreateError> {
    let session_id = hex::encode(fresh_nonce());
    let server_nonce = fresh_nonce();
    let nonce = match &device_nonce {
        Some(device) => joint_nonce(&[*device, server_nonce]),
        None => server_nonce,
    };
    let params = serde_json::to_string(params)
        .map_err(|e| CreateError::Api(ApiError::Internal(e.to_string())))?;
    crate::live_sessions::insert_within_caps(
        state,
        tx,
        &crate::live_sessions::NewSession {
            id: &session_id,
            device_id: &me.device_id,
            wallet_id,
            protocol,
            nonce: nonce.as_slice(),
            params: &params,
            epoch: epoch as i64,
        },
    )
    .await
    .map_err(|e| match e {
        crate::live_sessions::InsertError::Cap(e) => CreateError::Api(e),
        crate::live_sessions::InsertError::Database(e) => CreateError::Database(e),
    })?;
    if protocol != "sign" {
        crate::audit::append_in(
            tx,
            "session.created",
            crate::audit::Subject::device(me).wallet(wallet_id),
            serde_json::json!({ "session_id": session_id, "protocol": protocol, "epoch": epoch }),
        )
        .await
        .map_err(CreateError::Api)?;
    }
    Ok(api::SessionCreated {
        session_id: session_id.into(),
        wallet_id: wallet_id.into(),
        nonce: hex::encode(server_nonce),
        epoch,
        approval: None,
    })
}

/// `POST /keygen`.
pub async fn keygen(
    State(state): State<AppState>,
    me: AuthDevice,
    ApiJson(req): ApiJson<api::KeygenRequest>,
) -> ApiResult<Json<api::SessionCreated>> {
    let name = req.name.trim();
    if name.is_empty() || name.len() > 64 || name.chars().any(char::is_control) {
        return Err(ApiError::BadRequest(
            "wallet name must be 1 to 64 printable characters".into(),
        ));
    }
    let nonce = device_nonce(req.device_nonce.as_deref())?;
    let mut tx = state.begin_write().await?;
    let taken: Option<(String,)> =
        sqlx::query_as("SELECT id FROM wallets WHERE user_id = $1 AND name = $2")
            .bind(&me.user_id)
            .bind(name)
            .fetch_optional(&mut *tx)
            .await?;
    if taken.is_some() {
        return Err(ApiError::Conflict(format!(
            "a wallet named {name:?} exists"
        )));
    }
    let wallet_id = WalletId::random().to_string();
    let created = create_session(&state, &mut tx, &me, &wallet_id, "keygen", &req, 0, nonce)
        .await
        .map_err(ApiError::from)?;
    tx.commit().await?;
    Ok(Json(created))
}

/// What a signing session keeps for its socket: the digest the server computed, and the path.
#[derive(serde::Serialize, Deserialize)]
pub struct StoredSign {
    /// The digest, hex.
    pub digest: String,
    /// The derivation path.
    pub path: String,
    /// The request's kind.
    pub kind: String,
    /// What is signed, decoded (for the audit record of the signature).
    #[serde(default)]
    pub summary: String,
}

/// `POST /sign`: decodes what is to be signed, computes its digest, applies the wallet's policy
/// (a denial is 403 and audited), and creates the session (held for approval if the policy
/// says so).
///
/// The policy check and everything it depends on or changes is one write transaction under the
/// wallet's lock: the policy and the wallet's recent requests are read, the request evaluated,
/// and the session, its `sign_requests` row and its `sign.requested` (or `sign.denied`) record
/// written and committed together (one commit, one fsync). Concurrent requests of a wallet are
/// therefore evaluated one after the other, on every replica, and a limit cannot be exceeded by
/// sending requests at the same time.
pub async fn sign(
    State(state): State<AppState>,
    me: AuthDevice,
    ApiJson(req): ApiJson<api::SignIntentRequest>,
) -> ApiResult<Json<api::SessionCreated>> {
    req.path
        .parse::<DerivationPath>()
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let nonce = device_nonce(req.device_nonce.as_deref())?;
    let decoded =
        tessera_api::intent::decode(&req.kind).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let kind = req.kind.name();
    let digest = hex::encode(decoded.digest);
    let stored = StoredSign {
        digest: digest.clone(),
        path: req.path.clone(),
        kind: kind.to_string(),
        summary: decoded.summary.clone(),
    };

    let mut tx = state.begin_write().await?;
    let SignContext {
        wallet,
        standing,
        policy,
        stale_pending,
    } = sign_context(&mut tx, &me, &req.wallet_id).await?;
    if standing > 0 {
        crate::bans::refuse_signing(&mut tx, &wallet.id).await?;
    }
    let subject = crate::audit::Subject::device(&me).wallet(&wallet.id);
    // The wallet's policy, checked against its recent history (controls off, a benchmark: no
    // policy and no records).
    let checked = if tx.audited() {
        let (version, policy) = crate::policy::from_stored(policy)?;
        let at = now();
        let history = crate::policy::history(&mut tx, &policy, &wallet.id, at).await?;
        if let Err(denial) = crate::policy::evaluate(&policy, kind, &decoded, &history, at) {
            crate::audit::append_in(
                &mut tx,
                "sign.denied",
                subject,
                serde_json::json!({
                    "rule": denial.rule, "reason": denial.message, "kind": kind,
                    "summary": decoded.summary, "digest": digest, "policy_version": version,
                }),
            )
            .await?;
            tx.commit().await?;
            return Err(ApiError::PolicyDenied {
                rule: denial.rule.to_string(),
                message: denial.message,
            });
        }
        Some((version, policy, at))
    } else {
        None
    };
    if stale_pending > 0 {
        crate::vault::discard_stale_pending(&mut tx, &wallet.id).await?;
    }
    let mut created = create_session(
        &state,
        &mut tx,
        &me,
        &wallet.id,
        "sign",
        &stored,
        wallet.epoch,
        nonce,
    )
    .await
    .map_err(ApiError::from)?;
    let Some((version, policy, at)) = checked else {
        tx.commit().await?;
        return Ok(Json(created));
    };
    let approval = if policy.require_approval {
        "pending"
    } else {
        "none"
    };
    sqlx::query(
        "INSERT INTO sign_requests (session_id, wallet_id, device_id, kind, value_wei, max_fee_wei, digest, summary, requested_at, approval, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(&created.session_id)
    .bind(&wallet.id)
    .bind(&me.device_id)
    .bind(kind)
    .bind(decoded.value.map(|v| v.to_string()))
    .bind(decoded.max_fee.map(|v| v.to_string()))
    .bind(&digest)
    .bind(&decoded.summary)
    .bind(at)
    .bind(approval)
    .bind(at + policy.approval_timeout_secs as i64)
    .execute(&mut *tx)
    .await?;
    crate::audit::append_in(
        &mut tx,
        "sign.requested",
        subject,
        serde_json::json!({
            "session_id": created.session_id, "kind": kind, "summary": decoded.summary,
            "digest": digest, "path": req.path, "policy_version": version,
            "approval_required": policy.require_approval,
        }),
    )
    .await?;
    tx.commit().await?;
    if policy.require_approval {
        created.approval = Some("pending".into());
    }
    Ok(Json(created))
}

/// `POST /refresh`: new shares for both parties, same public key, next epoch (two-phase).
pub async fn refresh(
    State(state): State<AppState>,
    me: AuthDevice,
    ApiJson(req): ApiJson<api::RefreshRequest>,
) -> ApiResult<Json<api::SessionCreated>> {
    let wallet = wallet_of(&state, &me, &req.wallet_id).await?;
    let nonce = device_nonce(req.device_nonce.as_deref())?;
    crate::bans::refuse_refresh(&mut *state.db().acquire().await?, &wallet.id).await?;
    // One refresh of a wallet at a time (a unique index on live refresh sessions). One created
    // but never opened within the idle timeout has expired and no longer counts.
    let idle = state.config().session_idle_timeout.as_secs() as i64;
    let mut tx = state.begin_write().await?;
    sqlx::query(
        "UPDATE sessions SET status = 'expired', detail = 'never opened' \
         WHERE wallet_id = $1 AND protocol = 'refresh' AND status = 'created' AND last_message_at < $2",
    )
    .bind(&wallet.id)
    .bind(now() - idle)
    .execute(&mut *tx)
    .await?;
    crate::vault::discard_stale_pending(&mut tx, &wallet.id).await?;
    match create_session(
        &state,
        &mut tx,
        &me,
        &wallet.id,
        "refresh",
        &req,
        wallet.epoch,
        nonce,
    )
    .await
    {
        Ok(created) => {
            tx.commit().await?;
            Ok(Json(created))
        }
        Err(CreateError::Database(sqlx::Error::Database(e))) if e.is_unique_violation() => {
            Err(ApiError::Conflict(format!(
                "a refresh of this wallet is already in progress; try again when it ends \
                 (at most {} s after its last message)",
                idle
            )))
        }
        Err(e) => Err(e.into()),
    }
}

/// `GET /pubkey?wallet=…`.
#[derive(Deserialize)]
pub struct PubkeyQuery {
    wallet: String,
}

/// `GET /pubkey?wallet=…`.
pub async fn pubkey(
    State(state): State<AppState>,
    me: AuthDevice,
    ApiQuery(q): ApiQuery<PubkeyQuery>,
) -> ApiResult<Json<api::WalletInfo>> {
    Ok(Json(info(&wallet_of(&state, &me, &q.wallet).await?)))
}

/// `GET /wallets`.
pub async fn list(
    State(state): State<AppState>,
    me: AuthDevice,
) -> ApiResult<Json<Vec<api::WalletInfo>>> {
    let ids: Vec<(String,)> =
        sqlx::query_as("SELECT id FROM wallets WHERE user_id = $1 ORDER BY created_at, name")
            .bind(&me.user_id)
            .fetch_all(state.db())
            .await?;
    let mut out = Vec::with_capacity(ids.len());
    for (id,) in ids {
        out.push(info(&wallet_of(&state, &me, &id).await?));
    }
    Ok(Json(out))
}

/// Wallets and the REST half of their protocol runs: `POST /keygen`, `POST /sign`,
/// `POST /refresh`, `GET /pubkey`, `GET /wallets`.
pub(crate) fn router() -> axum::Router<AppState> {
    use axum::routing::{get, post};
    axum::Router::new()
        .route("/keygen", post(keygen))
        .route("/sign", post(sign))
        .route("/refresh", post(refresh))
        .route("/pubkey", get(pubkey))
        .route("/wallets", get(list))
}
