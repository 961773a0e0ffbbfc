//! Wallet endpoints: create keygen/sign/refresh sessions, read public keys.

use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use tessera_api as api;
use tessera_core::protocols::{fresh_nonce, joint_nonce};
use tessera_core::{DerivationPath, WalletId};

use crate::auth::{AuthDevice, TokenDevice};
use crate::db::wallets::{SignContext, Wallet};
use crate::db::{self, Approval, Protocol, RequestKind, WriteTx};
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiQuery};
use crate::state::{AppState, now};

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
pub(crate) fn device_nonce(text: Option<&str>) -> ApiResult<Option<[u8; 32]>> {
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
    protocol: Protocol,
    params: &impl serde::Serialize,
    epoch: u64,
    device_nonce: Option<[u8; 32]>,
    owner: Option<&str>,
) -> Result<api::SessionCreated, CreateError> {
    let fresh = FreshSession::new(device_nonce);
    let params = serde_json::to_string(params)
        .map_err(|e| CreateError::Api(ApiError::Internal(e.to_string())))?;
    crate::live_sessions::insert_within_caps(
        state,
        tx,
        &fresh.row(me, wallet_id, protocol, &params, (epoch, owner)),
    )
    .await
    .map_err(|e| match e {
        crate::live_sessions::InsertError::Cap(e) => CreateError::Api(e),
        crate::live_sessions::InsertError::Database(e) => CreateError::Database(e),
    })?;
    if protocol != Protocol::Sign {
        crate::audit::append_in(
            tx,
            "session.created",
            crate::audit::Subject::device(me).wallet(wallet_id),
            serde_json::json!({ "session_id": fresh.id, "protocol": protocol.as_str(), "epoch": epoch }),
        )
        .await
        .map_err(CreateError::Api)?;
    }
    Ok(fresh.created(wallet_id, epoch))
}

/// A new session's id, the server's nonce (told to the device) and the run's nonce (the
/// device's contribution, party 0, when it sent one, joined with the server's, party 1).
struct FreshSession {
    id: String,
    server_nonce: [u8; 32],
    nonce: [u8; 32],
}

impl FreshSession {
    fn new(device_nonce: Option<[u8; 32]>) -> Self {
        let server_nonce = fresh_nonce();
        let nonce = match &device_nonce {
            Some(device) => joint_nonce(&[*device, server_nonce]),
            None => server_nonce,
        };
        FreshSession {
            id: hex::encode(fresh_nonce()),
            server_nonce,
            nonce,
        }
    }

    /// Its row: `me`'s session of `protocol` on `wallet_id` at `epoch`, with `params` (JSON),
    /// claimed by `owner` if any.
    fn row<'a>(
        &'a self,
        me: &'a AuthDevice,
        wallet_id: &'a str,
        protocol: Protocol,
        params: &'a str,
        (epoch, owner): (u64, Option<&'a str>),
    ) -> db::sessions::NewSession<'a> {
        db::sessions::NewSession {
            id: &self.id,
            device_id: &me.device_id,
            wallet_id,
            protocol,
            nonce: self.nonce.as_slice(),
            params,
            epoch: epoch as i64,
            owner,
        }
    }

    /// What the device is told.
    fn created(&self, wallet_id: &str, epoch: u64) -> api::SessionCreated {
        api::SessionCreated {
            session_id: self.id.clone().into(),
            wallet_id: wallet_id.into(),
            nonce: hex::encode(self.server_nonce),
            epoch,
            approval: None,
            parties: None,
            reshare: None,
        }
    }
}

/// A new wallet's name, trimmed: 1 to 64 characters, none of them a control character.
///
/// # Errors
/// [`ApiError::BadRequest`] saying so.
pub(crate) fn wallet_name(name: &str) -> ApiResult<&str> {
    let name = name.trim();
    if name.is_empty() || name.len() > 64 || name.chars().any(char::is_control) {
        return Err(ApiError::BadRequest(
            "wallet name must be 1 to 64 printable characters".into(),
        ));
    }
    Ok(name)
}

/// `POST /keygen`: a 2-of-2 wallet whose socket the device opens next; or, with a structure, a
/// structure wallet whose key generation the server's coordinator runs (spawned here, waiting
/// for the parties as long as a created session may stay unopened), every device party
/// joining over its own socket.
#[utoipa::path(post, path = "/keygen", tag = "wallets", security(("bearer" = [])), request_body = api::KeygenRequest, responses((status = 200, description = "A key-generation session to open on /ws", body = api::SessionCreated), crate::openapi::AuthErrors, crate::openapi::NotFound, crate::openapi::Conflict, crate::openapi::Errors))]
pub async fn keygen(
    State(state): State<AppState>,
    me: AuthDevice,
    ApiJson(req): ApiJson<api::KeygenRequest>,
) -> ApiResult<Json<api::SessionCreated>> {
    let name = wallet_name(&req.name)?;
    let nonce = device_nonce(req.device_nonce.as_deref())?;
    if let Some(structure) = &req.structure {
        let nonce = nonce.ok_or_else(|| {
            ApiError::BadRequest("a structure wallet's key generation needs a device_nonce".into())
        })?;
        return keygen_structure(&state, &me, name, structure, nonce)
            .await
            .map(Json);
    }
    let mut tx = state.begin_write().await?;
    crate::wallet_parties::discard_unmade(&state, &mut tx, &me, name).await?;
    let taken = db::wallets::name_taken(&mut *tx, &me.user_id, name).await?;
    if taken {
        return Err(ApiError::Conflict(format!(
            "a wallet named {name:?} exists"
        )));
    }
    let wallet_id = WalletId::random().to_string();
    let created = create_session(
        &state,
        &mut tx,
        &me,
        &wallet_id,
        Protocol::Keygen,
        &req,
        0,
        nonce,
        None,
    )
    .await
    .map_err(ApiError::from)?;
    tx.commit().await?;
    Ok(Json(created))
}

/// `POST /keygen` with a structure (see [`keygen`]).
async fn keygen_structure(
    state: &AppState,
    me: &AuthDevice,
    name: &str,
    structure: &str,
    nonce: [u8; 32],
) -> ApiResult<api::SessionCreated> {
    use crate::coordinator;
    let job = coordinator::create_keygen(state, me, name, structure, nonce).await?;
    state.announce_joinable();
    let appear_within = state.config().session_idle_timeout;
    let (run_state, run_job) = (state.clone(), job.clone());
    tokio::spawn(async move {
        if let coordinator::KeygenEnd::Failed { reason, .. } =
            coordinator::run_keygen(&run_state, &run_job, appear_within).await
        {
            tracing::info!(session_id = %run_job.session_id, %reason, "a structure key generation failed");
        }
    });
    let wallet_id = job.wallet.to_string();
    let parties = coordinator::session_parties(
        state.db(),
        &wallet_id,
        &job.structure.to_string(),
        &me.device_id,
        None,
    )
    .await?;
    Ok(api::SessionCreated {
        session_id: job.session_id.clone(),
        wallet_id: wallet_id.into(),
        nonce: hex::encode(job.server_nonce),
        epoch: 0,
        approval: None,
        parties: Some(parties),
        reshare: None,
    })
}

/// What a signing session keeps for its socket: the digest the server computed, and the path.
#[derive(serde::Serialize, Deserialize)]
pub struct StoredSign {
    /// The digest, hex.
    pub digest: String,
    /// The derivation path.
    pub path: String,
    /// The request's kind.
    pub kind: RequestKind,
    /// What is signed, decoded (for the audit record of the signature).
    #[serde(default)]
    pub summary: String,
    /// A structure wallet's session: its structure (its sockets are its parties',
    /// `ws::party_of`, and the coordinator runs the server's party).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub structure: Option<String>,
    /// The parties that sign (a structure wallet's session), by index.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub signers: Vec<u8>,
    /// What is signed, as asked (a structure wallet's session: the other signing devices decode
    /// it themselves).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intent: Option<tessera_api::intent::SignKind>,
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
///
/// The caller's standing (active, of the token's user) is read with the wallet, in the same
/// query, and confirmed before anything else is done.
#[utoipa::path(post, path = "/sign", tag = "wallets", security(("bearer" = [])), request_body = api::SignIntentRequest, responses((status = 200, description = "A signing session to open on /ws (it may wait for approval)", body = api::SessionCreated), crate::openapi::AuthErrors, crate::openapi::PolicyDenied, crate::openapi::NotFound, crate::openapi::Conflict, crate::openapi::Gone, crate::openapi::Errors))]
pub async fn sign(
    State(state): State<AppState>,
    token: TokenDevice,
    ApiJson(req): ApiJson<api::SignIntentRequest>,
) -> ApiResult<Json<api::SessionCreated>> {
    Ok(Json(create_sign(&state, token, req, None).await?.0))
}

/// A signing session created by `GET /sign/ws` and claimed in the transaction that created it,
/// to run on the socket that asked for it ([`crate::ws::sign_socket`]): what opening it on
/// `GET /ws` would have read back.
pub(crate) struct OpenedHere {
    /// The caller, confirmed.
    pub(crate) me: AuthDevice,
    /// The session as `db::sessions::open_context` reads it.
    pub(crate) context: db::sessions::OpenContext,
}

/// `POST /sign`'s work: checks, policy, the session, the request and its record, in one
/// transaction. With `here`, the epoch of the asking device's share (`GET /sign/ws`), a 2-of-2
/// wallet's session that needs no approval, asked from the wallet's epoch, is also claimed in
/// that transaction and its share read, to run at once on the socket that asked; a structure
/// wallet's request is refused there (it is `POST /sign`'s).
pub(crate) async fn create_sign(
    state: &AppState,
    token: TokenDevice,
    req: api::SignIntentRequest,
    here: Option<u64>,
) -> ApiResult<(api::SessionCreated, Option<OpenedHere>)> {
    req.path
        .parse::<DerivationPath>()
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let nonce = device_nonce(req.device_nonce.as_deref())?;
    // What is asked is decoded now; a request that does not decode is refused (400) once the
    // caller is known to own the wallet, and then audited too (`sign.invalid`).
    let decoded = tessera_api::intent::decode(&req.kind);
    let kind = req.kind.request_kind();

    let mut tx = state.begin_write().await?;
    let context = db::wallets::sign_context(
        &mut tx,
        &token.device_id,
        &token.user_id,
        &req.wallet_id,
        here.is_some(),
    )
    .await?;
    let SignContext {
        caller,
        wallet,
        standing,
        policy,
        stale_pending,
        structure,
        share,
    } = match context {
        Ok(context) => context,
        Err(caller) => {
            token.confirm(caller)?;
            // Bad input is said first, as for every other request; with no wallet of the caller
            // to audit it under, it is not audited.
            if let Err(e) = &decoded {
                return Err(ApiError::BadRequest(e.to_string()));
            }
            return Err(ApiError::NotFound(format!("no wallet {}", req.wallet_id)));
        }
    };
    let me = token.confirm(caller)?;
    if here.is_some() && structure.is_some() {
        return Err(ApiError::Conflict(
            "a structure wallet's signing session is created with POST /sign".into(),
        ));
    }
    refuse_banned(&mut tx, &wallet.id, standing, structure.is_some()).await?;
    let decoded = match for_wallet(state, &mut tx, &wallet.id, &req.kind, &req.path, decoded).await
    {
        Ok(decoded) => decoded,
        Err(Refusal::Invalid(why)) => {
            let subject = crate::audit::Subject::device(&me).wallet(&wallet.id);
            return Err(invalid_request(tx, subject, kind, why).await);
        }
        Err(Refusal::Other(e)) => return Err(e),
    };
    let digest = hex::encode(decoded.digest);
    let mut plan = plan_sign_session(
        &mut tx,
        &me.device_id,
        (&wallet, structure.as_deref()),
        (&req.kind, kind),
        (&digest, &req.path, &decoded.summary),
        &req.with,
    )
    .await?;
    let subject = crate::audit::Subject::device(&me).wallet(&wallet.id);
    let request = Request {
        kind,
        decoded: &decoded,
        digest: &digest,
        path: &req.path,
    };
    // The wallet's policy, checked against its recent history (controls off, a benchmark: no
    // policy and no records).
    let checked = if tx.audited() {
        match check_policy(&mut tx, policy, &wallet.id, &request).await? {
            Ok(checked) => Some(checked),
            Err((version, denial)) => {
                return Err(refuse(tx, subject, &request, version, denial).await);
            }
        }
    } else {
        None
    };
    if let Some(checked) = &checked {
        if checked.policy.approvals.is_some() {
            return Err(ApiError::Conflict(
                "this wallet's policy names an approval quorum: create a request \
                 (POST /requests, `tessera requests create`)"
                    .into(),
            ));
        }
        // The signature's audit record tells tokens as the request's record does.
        plan.stored.summary = crate::policy::summary(&checked.policy, &decoded);
    }
    // Run on the asking socket at once: a session that needs no approval, asked from the
    // wallet's epoch, inserted claimed by this instance.
    let run_here = here == Some(wallet.epoch)
        && !checked
            .as_ref()
            .is_some_and(|checked| checked.policy.require_approval);
    let params = if run_here {
        serde_json::to_string(&plan.stored).map_err(|e| ApiError::Internal(e.to_string()))?
    } else {
        String::new()
    };
    let owner = run_here.then(|| state.instance());
    let (mut created, approval) = open_and_record(
        state,
        &mut tx,
        (&me, &wallet),
        plan,
        (nonce, owner),
        stale_pending,
        (&request, checked.as_ref()),
    )
    .await?;
    if approval == Approval::Pending {
        created.approval = Some(approval);
    }
    let opened = if run_here {
        let server_nonce = session_nonce(&created.nonce)?;
        let run_nonce = match nonce {
            Some(device) => tessera_core::protocols::joint_nonce(&[device, server_nonce]),
            None => server_nonce,
        };
        Some(OpenedHere {
            context: db::sessions::OpenContext {
                device_id: me.device_id.to_string(),
                wallet_id: wallet.id.clone(),
                protocol: Protocol::Sign,
                nonce: run_nonce.to_vec(),
                status: db::SessionStatus::Running,
                last_message_at: now(),
                params,
                approval: Some(approval),
                approval_expires: None,
                decided_at: None,
                share,
                obstacles: 0,
                caller: None,
                owner_id: me.user_id.to_string(),
            },
            me,
        })
    } else {
        None
    };
    tx.commit().await?;
    Ok((created, opened))
}

/// A session's nonce as `SessionCreated` carries it (hex), as bytes.
fn session_nonce(hex_nonce: &str) -> ApiResult<[u8; 32]> {
    let mut bytes = [0u8; 32];
    hex::decode_to_slice(hex_nonce, &mut bytes)
        .map_err(|_| ApiError::Internal("session nonce".into()))?;
    Ok(bytes)
}

/// The session half of a signing request, planned before its policy is checked (a structure
/// wallet's co-signers are chosen first, as `POST /sign` always did): what the session keeps,
/// and a structure wallet's parties.
pub(crate) struct SignPlan {
    /// What the session keeps.
    pub(crate) stored: StoredSign,
    /// A structure wallet's parties (none: a 2-of-2 wallet).
    pub(crate) parties: Option<api::SessionParties>,
}

/// Plans a signing session of `device_id` on `wallet` (with its structure, if any) for the
/// request `intent` of `kind`, its `digest`, `path` and `summary`; `with` names co-signers of
/// a structure wallet.
///
/// # Errors
/// 400 for `with` on a 2-of-2 wallet; the co-signers' refusals ([`crate::coordinator::sign_parties`]).
pub(crate) async fn plan_sign_session(
    tx: &mut WriteTx,
    device_id: &str,
    (wallet, structure): (&Wallet, Option<&str>),
    (intent, kind): (&tessera_api::intent::SignKind, RequestKind),
    (digest, path, summary): (&str, &str, &str),
    with: &[String],
) -> ApiResult<SignPlan> {
    let mut stored = StoredSign {
        digest: digest.to_string(),
        path: path.to_string(),
        kind,
        summary: summary.to_string(),
        structure: None,
        signers: Vec::new(),
        intent: None,
    };
    let parties = match structure {
        Some(structure) => {
            let request = db::sign_runs::Request {
                wallet_id: &wallet.id,
                epoch: wallet.epoch as i64,
                digest,
            };
            let parties =
                crate::coordinator::sign_parties(tx, request, structure, device_id, with).await?;
            stored.structure = Some(structure.to_string());
            stored.signers.clone_from(&parties.signers);
            stored.intent = Some(intent.clone());
            Some(parties)
        }
        None if !with.is_empty() => {
            return Err(ApiError::BadRequest(
                "`with` names co-signers of a structure wallet; this is a 2-of-2 wallet".into(),
            ));
        }
        None => None,
    };
    Ok(SignPlan { stored, parties })
}

/// Creates the planned signing session in `tx` and, for a request the policy allowed
/// (`checked`), records it (its `sign_requests` row and its `sign.requested` record); returns
/// the session and its approval.
///
/// On SQLite, when the process knows the audit chain's head, the three rows are one batch of
/// statements ([`db::sessions::insert_sign_request`]: one hand-off to SQLite's thread instead
/// of three); when that batch is refused (a cap reached, a stale head), nothing of it was
/// written and they are written one by one, as on PostgreSQL, which also says which cap.
async fn open_and_record(
    state: &AppState,
    tx: &mut WriteTx,
    (me, wallet): (&AuthDevice, &Wallet),
    plan: SignPlan,
    (nonce, owner): (Option<[u8; 32]>, Option<&str>),
    mut stale_pending: i64,
    (request, checked): (&Request<'_>, Option<&Allowed>),
) -> ApiResult<(api::SessionCreated, Approval)> {
    let Some(checked) = checked else {
        let created =
            open_sign_session(state, tx, me, wallet, plan, (nonce, owner), stale_pending).await?;
        return Ok((created, Approval::None));
    };
    if tx.backend() == db::Backend::Sqlite {
        if stale_pending > 0 {
            crate::vault::discard_stale_pending(tx, &wallet.id).await?;
            stale_pending = 0;
        }
        let fresh = FreshSession::new(nonce);
        let params =
            serde_json::to_string(&plan.stored).map_err(|e| ApiError::Internal(e.to_string()))?;
        let session = fresh.row(
            me,
            &wallet.id,
            Protocol::Sign,
            &params,
            (wallet.epoch, owner),
        );
        let summary = crate::policy::summary(&checked.policy, request.decoded);
        let row = request_row(me, &wallet.id, &fresh.id, request, checked, &summary);
        let detail = request_detail(&fresh.id, request, checked, &summary).to_string();
        let subject = crate::audit::Subject::device(me).wallet(&wallet.id);
        if let Some(record) = crate::audit::after_known_head(
            tx.audit_head(),
            checked.at,
            "sign.requested",
            subject,
            &detail,
        ) {
            let caps = crate::live_sessions::caps(state);
            if db::sessions::insert_sign_request(tx, (&session, &caps), &row, &record).await? {
                tx.audit_head().advance(record.seq, record.hash);
                let mut created = fresh.created(&wallet.id, wallet.epoch);
                created.parties = plan.parties;
                return Ok((created, row.approval));
            }
        }
    }
    let created =
        open_sign_session(state, tx, me, wallet, plan, (nonce, owner), stale_pending).await?;
    let approval =
        record_request(tx, me, &wallet.id, &created.session_id, request, checked).await?;
    Ok((created, approval))
}

/// Creates the planned signing session in `tx` (after the policy allowed it): discards the
/// wallet's stale pending shares (`stale_pending`, read with the wallet) and inserts the
/// session within the caps.
///
/// # Errors
/// The caps' refusals; a database error.
pub(crate) async fn open_sign_session(
    state: &AppState,
    tx: &mut WriteTx,
    me: &AuthDevice,
    wallet: &Wallet,
    plan: SignPlan,
    (nonce, owner): (Option<[u8; 32]>, Option<&str>),
    stale_pending: i64,
) -> ApiResult<api::SessionCreated> {
    if stale_pending > 0 {
        crate::vault::discard_stale_pending(tx, &wallet.id).await?;
    }
    let mut created = create_session(
        state,
        tx,
        me,
        &wallet.id,
        Protocol::Sign,
        &plan.stored,
        wallet.epoch,
        nonce,
        owner,
    )
    .await
    .map_err(ApiError::from)?;
    created.parties = plan.parties;
    Ok(created)
}

/// Refuses signing with a wallet whose parties have bans in force (`standing` of them): a
/// structure wallet only when it is locked (its bans exclude their parties only,
/// `coordinator::sign_parties`), a 2-of-2 wallet at once.
///
/// # Errors
/// The ban's refusal; a database error.
pub(crate) async fn refuse_banned(
    tx: &mut WriteTx,
    wallet_id: &str,
    standing: i64,
    structure: bool,
) -> ApiResult<()> {
    if standing == 0 {
        return Ok(());
    }
    if structure {
        crate::bans::refuse_locked(tx, wallet_id).await
    } else {
        crate::bans::refuse_signing(tx, wallet_id).await
    }
}

/// Why what is asked cannot be signed with a wallet.
pub(crate) enum Refusal {
    /// Bad input: the caller's 400, audited as `sign.invalid` ([`invalid_request`]).
    Invalid(String),
    /// Another error (the database, the vault).
    Other(ApiError),
}

/// What is asked (`kind`, decoded as `decoded`) as it will be signed with `wallet_id` at
/// `path`: a PSBT input planned with the wallet's key ([`plan_psbt_input`]).
///
/// # Errors
/// [`Refusal::Invalid`] for input that does not decode or is not the wallet's to sign.
pub(crate) async fn for_wallet<E: std::fmt::Display>(
    state: &AppState,
    conn: &mut sqlx::AnyConnection,
    wallet_id: &str,
    kind: &tessera_api::intent::SignKind,
    path: &str,
    decoded: Result<tessera_api::intent::Decoded, E>,
) -> Result<tessera_api::intent::Decoded, Refusal> {
    let mut decoded = decoded.map_err(|e| Refusal::Invalid(e.to_string()))?;
    if let tessera_api::intent::SignKind::BtcPsbt {
        psbt,
        network,
        input,
    } = kind
    {
        match plan_psbt_input(
            (state, conn),
            wallet_id,
            psbt,
            *network,
            *input,
            path,
            &mut decoded,
        )
        .await
        {
            Ok(()) => {}
            Err(ApiError::BadRequest(why)) => return Err(Refusal::Invalid(why)),
            Err(e) => return Err(Refusal::Other(e)),
        }
    }
    Ok(decoded)
}

/// A PSBT input's request, checked with the wallet's key (its chain code is in the server's
/// share, unsealed for it): the input must be the wallet's, at the request's path, and the
/// digest the one [`tessera_api::intent::decode`] computed; `decoded` gets the transaction as
/// the policy reads it (its change known) and a summary of the whole transaction. The share is
/// read on `conn`, the caller's write transaction: a second connection taken from the pool while
/// holding one waits for the pool (SQLite's has one connection).
async fn plan_psbt_input(
    (state, conn): (&AppState, &mut sqlx::AnyConnection),
    wallet_id: &str,
    psbt: &str,
    network: tessera_api::btc::BtcNetwork,
    input: u32,
    path: &str,
    decoded: &mut tessera_api::intent::Decoded,
) -> ApiResult<()> {
    use tessera_api::btc;
    let bad = |e: tessera_core::error::Error| ApiError::BadRequest(e.to_string());
    let share = crate::vault::load_active_on(state, conn, wallet_id).await?;
    let key = btc::WalletKey {
        public_key: share.public_key().to_compressed(),
        chain_code: share.chain_code(),
    };
    drop(share);
    let parsed = btc::parse_psbt(psbt.as_bytes()).map_err(bad)?;
    let path: DerivationPath = path
        .parse()
        .map_err(|e: tessera_core::error::Error| ApiError::BadRequest(e.to_string()))?;
    let plan = btc::plan(&parsed, &key, &path, network).map_err(bad)?;
    let index = input as usize;
    let Some(ours) = plan.to_sign.iter().find(|i| i.index == index) else {
        let mine: Vec<String> = plan.to_sign.iter().map(|i| i.index.to_string()).collect();
        return Err(ApiError::BadRequest(format!(
            "input {input} is not this wallet's to sign (its inputs to sign: {})",
            if mine.is_empty() {
                "none".to_string()
            } else {
                mine.join(", ")
            }
        )));
    };
    if ours.path != path {
        return Err(ApiError::BadRequest(format!(
            "input {input} pays to the wallet's key at {}, not at {path}: sign it at that path",
            ours.path
        )));
    }
    if ours.sighash != decoded.digest {
        return Err(ApiError::Internal(format!(
            "input {input}: the planned sighash differs from the decoded one"
        )));
    }
    decoded.btc = Some(plan.spend());
    decoded.summary = format!(
        "Bitcoin ({network}) transaction {}, input {input}: {}",
        plan.txid, plan.summary
    );
    Ok(())
}

/// What `POST /sign` asks to sign, decoded.
pub(crate) struct Request<'a> {
    pub(crate) kind: RequestKind,
    pub(crate) decoded: &'a tessera_api::intent::Decoded,
    pub(crate) digest: &'a str,
    pub(crate) path: &'a str,
}

/// A request the policy allowed: the policy's version, the policy, and when it was checked.
pub(crate) struct Allowed {
    pub(crate) version: u64,
    pub(crate) policy: api::Policy,
    pub(crate) at: i64,
}

/// Evaluates the wallet's policy (`stored`, read with the wallet) against its recent history,
/// in the signing transaction. `Err` inside: the policy's version and the denial.
pub(crate) async fn check_policy(
    tx: &mut WriteTx,
    stored: Option<(i64, String)>,
    wallet_id: &str,
    request: &Request<'_>,
) -> ApiResult<Result<Allowed, (u64, crate::policy::Denial)>> {
    let (version, policy) = crate::policy::from_stored(stored)?;
    let at = now();
    let history = crate::policy::history(tx, &policy, wallet_id, at).await?;
    Ok(
        match crate::policy::evaluate(&policy, request.kind, request.decoded, &history, at) {
            Ok(()) => Ok(Allowed {
                version,
                policy,
                at,
            }),
            Err(denial) => Err((version, denial)),
        },
    )
}

/// Audits a denial (`sign.denied`) and commits it: the error to answer with.
pub(crate) async fn refuse(
    mut tx: WriteTx,
    subject: crate::audit::Subject<'_>,
    request: &Request<'_>,
    version: u64,
    denial: crate::policy::Denial,
) -> ApiError {
    crate::observe::policy_denied(request.kind.as_str(), denial.rule);
    let recorded = async {
        crate::audit::append_in(
            &mut tx,
            "sign.denied",
            subject,
            serde_json::json!({
                "rule": denial.rule, "reason": denial.message, "kind": request.kind,
                "summary": request.decoded.summary, "digest": request.digest,
                "policy_version": version,
            }),
        )
        .await?;
        tx.commit().await
    }
    .await;
    match recorded {
        Ok(()) => ApiError::PolicyDenied {
            rule: denial.rule.to_string(),
            message: denial.message,
        },
        Err(e) => e,
    }
}

/// Audits a request that does not decode (`sign.invalid`: its kind and why) and commits it,
/// when the server keeps an audit log: the error to answer with (400 saying why).
pub(crate) async fn invalid_request(
    mut tx: WriteTx,
    subject: crate::audit::Subject<'_>,
    kind: RequestKind,
    why: String,
) -> ApiError {
    if !tx.audited() {
        return ApiError::BadRequest(why);
    }
    let recorded = async {
        crate::audit::append_in(
            &mut tx,
            "sign.invalid",
            subject,
            serde_json::json!({ "kind": kind, "reason": why }),
        )
        .await?;
        tx.commit().await
    }
    .await;
    match recorded {
        Ok(()) => ApiError::BadRequest(why),
        Err(e) => e,
    }
}

/// Records an allowed request (its `sign_requests` row and its `sign.requested` record) in the
/// signing transaction; returns its approval (pending when the policy requires one).
async fn record_request(
    tx: &mut WriteTx,
    me: &AuthDevice,
    wallet_id: &str,
    session_id: &str,
    request: &Request<'_>,
    allowed: &Allowed,
) -> ApiResult<Approval> {
    // What approvers see and the audit log records: token amounts in the symbols and decimals
    // of the policy's token list.
    let summary = crate::policy::summary(&allowed.policy, request.decoded);
    let row = request_row(me, wallet_id, session_id, request, allowed, &summary);
    db::approvals::insert(&mut **tx, &row).await?;
    crate::audit::append_in(
        tx,
        "sign.requested",
        crate::audit::Subject::device(me).wallet(wallet_id),
        request_detail(session_id, request, allowed, &summary),
    )
    .await?;
    Ok(row.approval)
}

/// An allowed request's `sign_requests` row, with `summary` (the policy's summary of what is
/// signed); its approval is pending when the policy requires one.
fn request_row<'a>(
    me: &'a AuthDevice,
    wallet_id: &'a str,
    session_id: &'a str,
    request: &'a Request<'_>,
    allowed: &Allowed,
    summary: &'a str,
) -> db::approvals::NewSignRequest<'a> {
    let Allowed { policy, at, .. } = allowed;
    let decoded = request.decoded;
    db::approvals::NewSignRequest {
        session_id,
        wallet_id,
        device_id: &me.device_id,
        kind: request.kind,
        value_wei: decoded.value.map(|v| v.to_string()),
        max_fee_wei: decoded.max_fee.map(|v| v.to_string()),
        token_amounts: crate::policy::token_amounts(policy, decoded),
        btc_spend: crate::policy::btc_spend(decoded),
        digest: request.digest,
        summary,
        requested_at: *at,
        approval: if policy.require_approval {
            Approval::Pending
        } else {
            Approval::None
        },
        expires_at: at + policy.approval_timeout_secs as i64,
    }
}

/// An allowed request's `sign.requested` record.
fn request_detail(
    session_id: &str,
    request: &Request<'_>,
    allowed: &Allowed,
    summary: &str,
) -> serde_json::Value {
    serde_json::json!({
        "session_id": session_id, "kind": request.kind, "summary": summary,
        "digest": request.digest, "path": request.path, "policy_version": allowed.version,
        "approval_required": allowed.policy.require_approval,
    })
}

/// `POST /refresh`: new shares for both parties, same public key, next epoch (two-phase).
#[utoipa::path(post, path = "/refresh", tag = "wallets", security(("bearer" = [])), request_body = api::RefreshRequest, responses((status = 200, description = "A refresh session to open on /ws", body = api::SessionCreated), crate::openapi::AuthErrors, crate::openapi::NotFound, crate::openapi::Conflict, crate::openapi::Errors))]
pub async fn refresh(
    State(state): State<AppState>,
    me: AuthDevice,
    ApiJson(req): ApiJson<api::RefreshRequest>,
) -> ApiResult<Json<api::SessionCreated>> {
    let wallet = db::wallets::owned(state.db(), &me.user_id, &req.wallet_id).await?;
    let nonce = device_nonce(req.device_nonce.as_deref())?;
    if db::wallet_parties::wallet(state.db(), &wallet.id)
        .await?
        .is_some_and(|w| w.structure.is_some())
    {
        return Err(ApiError::BadRequest(
            "a structure wallet is refreshed by resharing it to its own structure, every party \
             taking part: `tessera wallet reshare --wallet NAME --refresh` (POST /reshare)"
                .into(),
        ));
    }
    crate::bans::refuse_refresh(&mut *state.db().acquire().await?, &wallet.id).await?;
    // One refresh of a wallet at a time (a unique index on live refresh sessions). One created
    // but never opened within the idle timeout has expired and no longer counts.
    let idle = state.config().session_idle_timeout.as_secs() as i64;
    let mut tx = state.begin_write().await?;
    db::sessions::expire_unopened_refreshes(&mut *tx, &wallet.id, now() - idle).await?;
    crate::vault::discard_stale_pending(&mut tx, &wallet.id).await?;
    match create_session(
        &state,
        &mut tx,
        &me,
        &wallet.id,
        Protocol::Refresh,
        &req,
        wallet.epoch,
        nonce,
        None,
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
#[utoipa::path(get, path = "/pubkey", tag = "wallets", security(("bearer" = [])), params(("wallet" = String, Query, description = "The wallet's name or id")), responses((status = 200, description = "The wallet's public key", body = api::WalletInfo), crate::openapi::AuthErrors, crate::openapi::NotFound, crate::openapi::Errors))]
pub async fn pubkey(
    State(state): State<AppState>,
    me: AuthDevice,
    ApiQuery(q): ApiQuery<PubkeyQuery>,
) -> ApiResult<Json<api::WalletInfo>> {
    Ok(Json(info(
        &db::wallets::shared(state.db(), &me.user_id, &q.wallet).await?,
    )))
}

/// `GET /wallet?wallet=…`: the caller's user's wallet with its structure and parties (each
/// device with its name and identity key).
#[utoipa::path(get, path = "/wallet", tag = "wallets", security(("bearer" = [])), params(("wallet" = String, Query, description = "The wallet's name or id")), responses((status = 200, description = "The wallet, its structure and parties", body = api::WalletDetail), crate::openapi::AuthErrors, crate::openapi::NotFound, crate::openapi::Errors))]
pub async fn detail(
    State(state): State<AppState>,
    me: AuthDevice,
    ApiQuery(q): ApiQuery<PubkeyQuery>,
) -> ApiResult<Json<api::WalletDetail>> {
    let wallet = db::wallets::shared(state.db(), &me.user_id, &q.wallet).await?;
    let structure = db::wallet_parties::wallet(state.db(), &wallet.id)
        .await?
        .and_then(|w| w.structure);
    let (mut parties, mut pending, mut online) = (Vec::new(), Vec::new(), Vec::new());
    if structure.is_some() {
        let at = now();
        parties = crate::coordinator::listed_parties(state.db(), &wallet.id).await?;
        for c in db::wallet_changes::of_wallet(state.db(), &wallet.id).await? {
            pending.push(api::PendingChange {
                label: c
                    .label
                    .or_else(|| crate::names::party_label(&c.device_name))
                    .unwrap_or_default(),
                online: db::wallet_changes::is_online(state.db(), &c.device_id, at).await?,
                device_id: c.device_id.into(),
                device_name: c.device_name,
                change: c.change,
                since: c.created_at,
            });
        }
        online = db::wallet_changes::online_parties(state.db(), &wallet.id, at)
            .await?
            .into_iter()
            .map(|p| p.get())
            .collect();
    }
    Ok(Json(api::WalletDetail {
        info: info(&wallet),
        structure,
        parties,
        pending,
        online,
    }))
}

/// `GET /wallets`.
#[utoipa::path(get, path = "/wallets", tag = "wallets", security(("bearer" = [])), responses((status = 200, description = "The user's wallets and those it co-signs", body = Vec<api::WalletInfo>), crate::openapi::AuthErrors, crate::openapi::Errors))]
pub async fn list(
    State(state): State<AppState>,
    me: AuthDevice,
) -> ApiResult<Json<Vec<api::WalletInfo>>> {
    let ids = db::wallets::ids_of_user(state.db(), &me.user_id).await?;
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        out.push(info(
            &db::wallets::shared(state.db(), &me.user_id, &id).await?,
        ));
    }
    Ok(Json(out))
}

/// Wallets and the REST half of their protocol runs: `POST /keygen`, `POST /sign`,
/// `POST /refresh`, `GET /pubkey`, `GET /wallet`, `GET /wallets`, `GET /sessions/joinable`.
pub(crate) fn router() -> axum::Router<AppState> {
    use axum::routing::{get, post};
    axum::Router::new()
        .route("/keygen", post(keygen))
        .route("/sign", post(sign))
        .route("/refresh", post(refresh))
        .route("/reshare", post(crate::reshare::reshare))
        .route("/wallet/accept", post(crate::wallet_parties::accept))
        .route("/wallet/decline", post(crate::wallet_parties::decline))
        .route("/pubkey", get(pubkey))
        .route("/wallet", get(detail))
        .route("/wallets", get(list))
        .route("/sessions/joinable", get(crate::coordinator::joinable))
}
