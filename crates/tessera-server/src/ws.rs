//! `GET /ws?session_id=…`: runs one protocol session over one WebSocket.
//!
//! A 2-of-2 wallet's session: binary frames carry encoded [`tessera_core::Envelope`]s; the
//! server is party 1, the device party 0, and the server's sans-IO session validates every
//! frame. The socket closes with 1000 when the protocol is done, or with one of the codes below
//! and a reason.
//!
//! A structure wallet's session: the socket is the caller's party, looked up in the wallet's
//! parties ([`party_of`]), and is pumped into the session's mailboxes
//! ([`crate::session_pump`]); the server's own party is the coordinator's
//! ([`crate::coordinator`]).

use std::time::Duration;

use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message, WebSocket};
use axum::response::Response;
use serde::Deserialize;
use tessera_api as api;
use tessera_core::driver::{self, Control, DriveError, Link};
use tessera_core::envelope::MAX_ENVELOPE_BYTES;
use tessera_core::{
    DerivationPath, Error, KeyShare, KeygenSession, PartyIndex, RefreshSession, Session,
    SignRequest, SignSession, Threshold, WalletId,
};

use crate::audit;
use crate::auth::{AuthDevice, TokenDevice};
use crate::db::{self, Approval, Protocol, SessionStatus};
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiQuery, ApiWebSocket};
use crate::shutdown::CLOSE_GOING_AWAY;
use crate::state::{AppState, now};
use crate::vault;

/// Close code: a frame failed validation (wrong session, round, sender, malformed...).
pub const CLOSE_INVALID_MESSAGE: u16 = 4400;
/// Close code: the engine proved the device misbehaved; it is refused for this wallet.
pub const CLOSE_MISBEHAVED: u16 = 4403;
/// Close code: no message for the idle timeout.
pub const CLOSE_EXPIRED: u16 = 4408;
/// Close code: the party's socket in a session of parties is open already.
pub const CLOSE_CONFLICT: u16 = 4409;
/// Close code: a server-side failure.
pub const CLOSE_INTERNAL: u16 = 4500;

const DEVICE: PartyIndex = PartyIndex::new(0);
const SERVER: PartyIndex = PartyIndex::new(1);

/// `?session_id=`.
#[derive(Deserialize)]
pub struct WsQuery {
    session_id: String,
}

enum Run {
    Keygen(Box<KeygenSession>, WalletId, String),
    Sign(Box<SignSession>),
    Refresh(Box<RefreshSession>),
}

/// A session ready to run: its state machine and, for a signing run, what its records name.
struct Prepared {
    run: Run,
    /// The digest signed, hex (signing runs).
    digest: String,
    /// What is signed, decoded (signing runs).
    summary: String,
}

/// Opens the socket for a created session of the caller.
///
/// On one database connection: the session with everything opening it checks, the caller's
/// standing included (one query, `db::sessions::open_context`), then the claim. The server's
/// state machine is built after the claim (unsealing the share is the costly part); if that
/// fails, the claim is given back.
#[utoipa::path(get, path = "/ws", tag = "sessions", security(("bearer" = [])), params(("session_id" = String, Query, description = "The session from POST /keygen, /sign, /refresh or /reshare")), responses((status = 101, description = "The protocol socket: binary protocol frames both ways"), crate::openapi::AuthErrors, crate::openapi::NotFound, crate::openapi::Conflict, crate::openapi::Gone, crate::openapi::UpgradeRequired, crate::openapi::Errors))]
pub async fn open(
    State(state): State<AppState>,
    token: TokenDevice,
    ApiQuery(q): ApiQuery<WsQuery>,
    ApiWebSocket(upgrade): ApiWebSocket,
) -> ApiResult<Response> {
    let mut conn = state.db().acquire().await?;
    let (me, session) = match openable(&state, &mut conn, token, &q.session_id).await? {
        Openable::Pair(me, session) => (me, *session),
        Openable::Party { me, peers, start } => {
            drop(conn);
            let session = api::ServerSessionId::new(q.session_id);
            if let Some(job) = start {
                let (runner, appear) = (state.clone(), state.config().session_idle_timeout);
                tokio::spawn(async move {
                    crate::coordinator::run_sign(&runner, &job, appear).await;
                });
                // It runs: its other signers may join.
                state.announce_joinable();
            }
            return Ok(upgrade
                .max_message_size(tessera_api::session_frame::MAX_ADDRESSED)
                .read_buffer_size(16 * 1024)
                .on_upgrade(move |socket| pump_party(state, session, me, peers, socket)));
        }
    };
    // Claim the session: only one socket may ever run it.
    if !db::sessions::claim(&mut *conn, &q.session_id, state.instance(), now()).await? {
        return Err(ApiError::Gone("session is already running".into()));
    }
    drop(conn);
    let prepared = match prepare(&state, &session) {
        Ok(prepared) => prepared,
        Err(e) => {
            if let Err(db_error) = db::sessions::unclaim(
                state.db(),
                &q.session_id,
                state.instance(),
                session.last_message_at,
            )
            .await
            {
                tracing::warn!(session_id = %q.session_id, error = %db_error, "could not give back the claim of a session that did not start");
            }
            return Err(e);
        }
    };
    let run = RunOf {
        state,
        me,
        session_id: q.session_id,
        wallet_id: session.wallet_id,
        protocol: session.protocol,
    };
    Ok(upgrade
        .max_message_size(MAX_ENVELOPE_BYTES + 1024)
        // tungstenite's default read buffer is 128 KiB per socket, most of an idle session's
        // memory; frames are still reassembled up to the size limit.
        .read_buffer_size(16 * 1024)
        .on_upgrade(move |socket| run.run(socket, prepared)))
}

/// `GET /sign/ws`: `POST /sign` and `GET /ws` on one socket. The device's first frame is a
/// [`api::SignSocketRequest`] (text); the server answers with a [`api::SignSocketReply`]
/// (text) after doing what `POST /sign` does ([`crate::wallets::create_sign`]: the same checks,
/// policy, limits and records). A 2-of-2 wallet's session that needs no approval, asked from
/// the wallet's epoch, is claimed in the transaction that creates it and runs on this socket at
/// once, as on `GET /ws`; any other session is created as `POST /sign` creates it, and the
/// socket closes with 1000. A refusal is the error `POST /sign` would answer with, then 1000.
///
/// What it saves, against `POST /sign` then `GET /ws`: one HTTP request and token check, the
/// session's read back, and the claim's own commit.
#[utoipa::path(get, path = "/sign/ws", tag = "wallets", security(("bearer" = [])), responses((status = 101, description = "The signing socket: a SignSocketRequest (text), a SignSocketReply (text), then binary protocol frames as on /ws", body = api::SignSocketReply), crate::openapi::AuthErrors, crate::openapi::UpgradeRequired, crate::openapi::Errors))]
pub async fn sign_socket(
    State(state): State<AppState>,
    token: TokenDevice,
    ApiWebSocket(upgrade): ApiWebSocket,
) -> Response {
    upgrade
        .max_message_size(MAX_ENVELOPE_BYTES.max(crate::MAX_BODY_BYTES) + 1024)
        .read_buffer_size(16 * 1024)
        .on_upgrade(move |socket| sign_on_socket(state, token, socket))
}

async fn sign_on_socket(state: AppState, token: TokenDevice, mut socket: WebSocket) {
    let idle = state.config().session_idle_timeout;
    let first = tokio::select! {
        first = tokio::time::timeout(idle, socket.recv()) => first,
        () = state.shutdown().closing() => {
            close(&mut socket, CLOSE_GOING_AWAY, "the server is shutting down; try again in a moment").await;
            return;
        }
    };
    let asked = match first {
        Ok(Some(Ok(Message::Text(text)))) => serde_json::from_str::<api::SignSocketRequest>(&text),
        Ok(Some(Ok(_))) => {
            close(
                &mut socket,
                CLOSE_INVALID_MESSAGE,
                "the first frame must be the signing request (JSON text)",
            )
            .await;
            return;
        }
        Ok(None | Some(Err(_))) => return,
        Err(_) => {
            close(
                &mut socket,
                CLOSE_EXPIRED,
                "no signing request within the idle timeout",
            )
            .await;
            return;
        }
    };
    let asked = match asked {
        Ok(asked) => asked,
        Err(e) => {
            let refused = ApiError::BadRequest(format!("the signing request: {e}"));
            return refuse_on_socket(&mut socket, &refused).await;
        }
    };
    let created = crate::wallets::create_sign(&state, token, asked.intent, Some(asked.epoch)).await;
    let (created, opened) = match created {
        Ok(created) => created,
        Err(e) => return refuse_on_socket(&mut socket, &e).await,
    };
    let Some(opened) = opened else {
        // Waiting for approval, or asked from another epoch: opened on `GET /ws` later.
        if send_reply(
            &mut socket,
            &api::SignSocketReply::Created {
                session: Box::new(created),
                running: false,
            },
        )
        .await
        {
            close(&mut socket, 1000, "open the session on /ws once it may run").await;
        }
        return;
    };
    let session_id = created.session_id.to_string();
    let prepared = match prepare(&state, &opened.context) {
        Ok(prepared) => prepared,
        Err(e) => {
            // It never ran: it ends here, failed on the server's side.
            let subject = audit::Subject::device(&opened.me).wallet(&opened.context.wallet_id);
            let detail = serde_json::json!({ "session_id": session_id, "detail": e.to_string() });
            if let Err(db_error) = record_end(
                &state,
                &session_id,
                (SessionStatus::Failed, Some("could not start")),
                subject,
                &[("sign.failed".to_string(), detail)],
            )
            .await
            {
                tracing::warn!(%session_id, error = %db_error, "could not record the end of a session that did not start");
            }
            return refuse_on_socket(&mut socket, &e).await;
        }
    };
    // A device gone already fails the run, which records it.
    let _ = send_reply(
        &mut socket,
        &api::SignSocketReply::Created {
            session: Box::new(created),
            running: true,
        },
    )
    .await;
    let run = RunOf {
        state,
        me: opened.me,
        session_id,
        wallet_id: opened.context.wallet_id,
        protocol: Protocol::Sign,
    };
    run.run(socket, prepared).await;
}

/// Sends `reply` as a text frame; whether it left.
async fn send_reply(socket: &mut WebSocket, reply: &api::SignSocketReply) -> bool {
    match serde_json::to_string(reply) {
        Ok(text) => socket.send(Message::Text(text.into())).await.is_ok(),
        Err(_) => false,
    }
}

/// Answers the signing socket's request with `error` as `POST /sign` would, then closes with
/// 1000.
async fn refuse_on_socket(socket: &mut WebSocket, error: &ApiError) {
    let (status, body) = error.answer();
    let reply = api::SignSocketReply::Refused {
        status: status.as_u16(),
        error: body,
    };
    if send_reply(socket, &reply).await {
        close(socket, 1000, "refused").await;
    }
}

/// What a socket opens.
enum Openable {
    /// A 2-of-2 session of the caller, run here with the server as party 1.
    Pair(AuthDevice, Box<db::sessions::OpenContext>),
    /// A session of a structure wallet in which the caller is party `me`: its socket is pumped
    /// into the session's mailboxes (`session_pump`), the server's party is run by the
    /// coordinator.
    Party {
        me: PartyIndex,
        peers: Vec<PartyIndex>,
        /// A signing session its requester opens: the server's party to start.
        start: Option<Box<crate::coordinator::SignJob>>,
    },
}

/// The structure a session's parameters name (sessions of structure wallets).
#[derive(Deserialize)]
struct Structured {
    #[serde(default)]
    structure: Option<String>,
}

/// The caller's created session `session_id`, still openable (approved, for a signing request
/// that needed it), with no ban or lock in its way; and the caller, confirmed active. Or a live
/// session of a structure wallet in which the caller is a party ([`party_of`]).
async fn openable(
    state: &AppState,
    conn: &mut sqlx::AnyConnection,
    token: TokenDevice,
    session_id: &str,
) -> ApiResult<Openable> {
    // Everything opening needs, in one read (see `db::sessions::open_context`).
    let session = match db::sessions::open_context(&mut *conn, session_id, &token.device_id).await?
    {
        Ok(session) => session,
        Err(caller) => {
            token.confirm(caller)?;
            return Err(ApiError::NotFound("unknown session".into()));
        }
    };
    let me = token.confirm(session.caller.clone())?;
    if serde_json::from_str::<Structured>(&session.params)
        .is_ok_and(|params| params.structure.is_some())
    {
        return party_of(state, conn, &me, session_id, &session).await;
    }
    if session.device_id != me.device_id {
        return Err(ApiError::Forbidden(
            "this session belongs to another device".into(),
        ));
    }
    let idle = state.config().session_idle_timeout.as_secs() as i64;
    let open_by = crate::live_sessions::open_by(
        idle,
        session.last_message_at,
        session.approval,
        session.approval_expires,
        session.decided_at,
    );
    if session.status == SessionStatus::Created && now() > open_by {
        // Created but never opened within the idle timeout: it expires like an idle socket.
        db::sessions::expire_unopened(&mut *conn, session_id).await?;
        return Err(ApiError::Gone(
            "session expired before it was opened; start a new one".into(),
        ));
    }
    if session.status != SessionStatus::Created {
        return Err(ApiError::Gone(format!(
            "session is {}; start a new one",
            session.status
        )));
    }
    if session.obstacles > 0 {
        crate::bans::refuse_session(&mut *conn, &session.wallet_id, session.protocol).await?;
    }
    if session.protocol == Protocol::Sign {
        refuse_unapproved(Approval::at(
            session.approval,
            session.approval_expires,
            now(),
        ))?;
    }
    Ok(Openable::Pair(me, Box::new(session)))
}

/// The caller's party in a session of a structure wallet: the session must be live (created,
/// or running: the coordinator claims a key generation as soon as it starts waiting for the
/// parties) and created within the idle timeout, and the caller one of its parties: any party
/// of the wallet for a key generation, one of the signers for a signing session, the others
/// being its peers.
/// A signing session starts when its requester opens it (after the approval the wallet's
/// policy may require): the socket claims it and the server's party is started
/// ([`crate::coordinator::run_sign`]); the other signers join it once it runs.
async fn party_of(
    state: &AppState,
    conn: &mut sqlx::AnyConnection,
    me: &AuthDevice,
    session_id: &str,
    session: &db::sessions::OpenContext,
) -> ApiResult<Openable> {
    if !matches!(
        session.status,
        SessionStatus::Created | SessionStatus::Running
    ) {
        // Say why, as recorded (e.g. an invited device declined: `wallet_parties::decline`).
        let detail = db::sessions::end_of(&mut *conn, session_id)
            .await?
            .and_then(|(_, detail)| detail);
        return Err(ApiError::Gone(match detail {
            Some(why) => format!("session is {} ({why}); start a new one", session.status),
            None => format!("session is {}; start a new one", session.status),
        }));
    }
    let idle = state.config().session_idle_timeout.as_secs() as i64;
    // A running session's last_message_at is when it was claimed; a created one may wait for
    // its approval, as a 2-of-2 session does.
    let join_by = crate::live_sessions::open_by(
        idle,
        session.last_message_at,
        session.approval,
        session.approval_expires,
        session.decided_at,
    );
    if now() > join_by {
        return Err(ApiError::Gone(
            "session is past the time its parties had to join; start a new one".into(),
        ));
    }
    if session.protocol == Protocol::Reshare {
        // The run's parties are in the session (a device joining the wallet is not one of its
        // parties yet): `crate::reshare`.
        let stored: crate::reshare::StoredReshare = serde_json::from_str(&session.params)
            .map_err(|e| ApiError::Internal(format!("stored session: {e}")))?;
        let me_index = stored.run_index(&me.device_id).ok_or_else(|| {
            ApiError::Forbidden("this device takes no part in this resharing".into())
        })?;
        let peers = (0..stored.run.len())
            .filter_map(|i| u8::try_from(i).ok())
            .filter(|&i| i != me_index.get())
            .map(PartyIndex::new)
            .collect();
        return Ok(Openable::Party {
            me: me_index,
            peers,
            start: None,
        });
    }
    let parties = db::wallet_parties::of_wallet(&mut *conn, &session.wallet_id).await?;
    let index = |party: i64| {
        u8::try_from(party)
            .map(PartyIndex::new)
            .map_err(|_| ApiError::Internal(format!("stored party {party}")))
    };
    let mine = parties
        .iter()
        .find(|p| p.device_id.as_deref() == Some(me.device_id.as_str()))
        .ok_or_else(|| ApiError::Forbidden("this device is not a party of this session".into()))?;
    if me.user_id != session.owner_id && mine.accepted.is_none() {
        return Err(ApiError::Forbidden(
            "this device was invited into another user's wallet and has not accepted: accept \
             the invitation first (`tessera listen`, POST /wallet/accept)"
                .into(),
        ));
    }
    let me_index = index(mine.party)?;
    if session.protocol != Protocol::Sign {
        let peers = parties
            .iter()
            .filter(|p| p.party != mine.party)
            .map(|p| index(p.party))
            .collect::<ApiResult<_>>()?;
        return Ok(Openable::Party {
            me: me_index,
            peers,
            start: None,
        });
    }
    let internal = |e: &dyn std::fmt::Display| ApiError::Internal(e.to_string());
    let stored: crate::wallets::StoredSign =
        serde_json::from_str(&session.params).map_err(|e| internal(&e))?;
    if !stored.signers.contains(&me_index.get()) {
        return Err(ApiError::Forbidden(
            "this device is not one of this session's signers".into(),
        ));
    }
    let peers = stored
        .signers
        .iter()
        .filter(|&&p| p != me_index.get())
        .map(|&p| PartyIndex::new(p))
        .collect();
    if session.status == SessionStatus::Running {
        return Ok(Openable::Party {
            me: me_index,
            peers,
            start: None,
        });
    }
    // Created: only its requester starts it, once nothing stands in its way.
    if session.device_id != me.device_id {
        return Err(ApiError::Conflict(
            "this signing session has not been started by the device that asked for it".into(),
        ));
    }
    if session.obstacles > 0 {
        // A structure wallet: a lock stops it, a ban only if it is on one of its signers.
        crate::bans::refuse_locked(&mut *conn, &session.wallet_id).await?;
        let bans = crate::bans::structure_bans(&mut *conn, &session.wallet_id).await?;
        crate::bans::refuse_banned_signers(&bans, &stored.signers)?;
    }
    refuse_unapproved(Approval::at(
        session.approval,
        session.approval_expires,
        now(),
    ))?;
    let share = session
        .share
        .clone()
        .ok_or_else(|| ApiError::NotFound("no server share for this wallet".into()))?;
    let nonce: [u8; 32] = session
        .nonce
        .as_slice()
        .try_into()
        .map_err(|_| ApiError::Internal("stored nonce length".into()))?;
    let session_id = api::ServerSessionId::new(session_id.to_string());
    if !db::sessions::claim(&mut *conn, session_id.as_str(), state.instance(), now()).await? {
        return Err(ApiError::Gone("session is already running".into()));
    }
    Ok(Openable::Party {
        me: me_index,
        peers,
        start: Some(Box::new(crate::coordinator::SignJob {
            session_id,
            wallet_id: session.wallet_id.clone(),
            requester: me.clone(),
            nonce,
            stored,
            share,
        })),
    })
}

/// Party `me`'s socket in a session of a structure wallet, pumped into the session's mailboxes
/// until the pump ends (`session_pump::Pump`, which closes the socket). A party whose socket is
/// open already is refused with [`CLOSE_CONFLICT`]; peers that do not come within the idle
/// timeout, with [`CLOSE_EXPIRED`].
async fn pump_party(
    state: AppState,
    session: api::ServerSessionId,
    me: PartyIndex,
    peers: Vec<PartyIndex>,
    mut socket: WebSocket,
) {
    use crate::session_link::LinkError;
    let _live = state.shutdown().track("party");
    let idle = state.config().session_idle_timeout;
    let opening = crate::session_pump::Pump::open_checking(
        state.mailboxes(),
        Some(state.db()),
        &session,
        me,
        &peers,
        idle,
    );
    // Waiting for its peers, the socket is closed at shutdown too.
    let opened = tokio::select! {
        opened = opening => opened,
        () = state.shutdown().closing() => Err(LinkError::ShuttingDown),
    };
    match opened {
        Ok(pump) => {
            let ended = pump
                .run(&mut socket, idle, state.shutdown().closing())
                .await;
            tracing::debug!(session_id = %session, party = %me, ?ended, "a device's socket in a session of parties ended");
        }
        Err(e) => {
            let code = match &e {
                LinkError::NeverAppeared { .. } | LinkError::Ended(_) => CLOSE_EXPIRED,
                LinkError::Mailboxes(ApiError::Conflict(_)) => CLOSE_CONFLICT,
                LinkError::Mailboxes(_) | LinkError::Closed(_) => CLOSE_INTERNAL,
                LinkError::ShuttingDown => CLOSE_GOING_AWAY,
                LinkError::Gone { .. } | LinkError::Peer(_) | LinkError::Invalid(_) => {
                    CLOSE_INVALID_MESSAGE
                }
            };
            let reason = match &e {
                LinkError::Mailboxes(ApiError::Conflict(_)) => {
                    "this party's socket in the session is open already".to_string()
                }
                LinkError::ShuttingDown => {
                    "the server is shutting down; try again in a moment".to_string()
                }
                e => e.to_string(),
            };
            close(&mut socket, code, &reason).await;
        }
    }
}

/// Builds the server's state machine for `session`.
fn prepare(state: &AppState, session: &db::sessions::OpenContext) -> ApiResult<Prepared> {
    let internal = |e: &dyn std::fmt::Display| ApiError::Internal(e.to_string());
    let wallet_id = &session.wallet_id;
    // The share the session runs with, read with the session (sign and refresh).
    let sealed_share = || {
        session
            .share
            .as_ref()
            .ok_or_else(|| ApiError::NotFound(format!("no server share for wallet {wallet_id}")))
    };
    let active_share = || {
        let (epoch, sealed) = sealed_share()?;
        vault::unseal(state, wallet_id, *epoch, sealed)
    };
    let nonce: [u8; 32] = session
        .nonce
        .as_slice()
        .try_into()
        .map_err(|_| ApiError::Internal("stored nonce length".into()))?;
    let prepared = match session.protocol {
        Protocol::Keygen => {
            let req: api::KeygenRequest =
                serde_json::from_str(&session.params).map_err(|e| internal(&e))?;
            let wallet = WalletId::from_hex(wallet_id).map_err(|e| internal(&e))?;
            let threshold = Threshold::new(2, 2).map_err(|e| internal(&e))?;
            let keygen =
                KeygenSession::new(wallet, threshold, SERVER, &nonce).map_err(|e| internal(&e))?;
            Prepared {
                run: Run::Keygen(Box::new(keygen), wallet, req.name),
                digest: String::new(),
                summary: String::new(),
            }
        }
        Protocol::Sign => {
            let req: crate::wallets::StoredSign =
                serde_json::from_str(&session.params).map_err(|e| internal(&e))?;
            // A wallet that signed within the last minute reuses that signature's unsealed share.
            let (epoch, sealed) = sealed_share()?;
            let share = vault::unseal_for_signing(state, wallet_id, *epoch, sealed)?;
            let mut digest = [0u8; 32];
            hex::decode_to_slice(&req.digest, &mut digest)
                .map_err(|_| ApiError::Internal("digest".into()))?;
            let path: DerivationPath = req.path.parse().map_err(|e: Error| internal(&e))?;
            let request = SignRequest {
                nonce,
                signers: vec![DEVICE, SERVER],
                digest,
                path,
            };
            let sign = SignSession::new(&share, &request)
                .map_err(|e| ApiError::BadRequest(e.to_string()))?;
            Prepared {
                run: Run::Sign(Box::new(sign)),
                digest: req.digest,
                summary: req.summary,
            }
        }
        Protocol::Refresh => {
            let share = active_share()?;
            let refresh = RefreshSession::new(&share, &nonce).map_err(|e| internal(&e))?;
            Prepared {
                run: Run::Refresh(Box::new(refresh)),
                digest: String::new(),
                summary: String::new(),
            }
        }
        // No handler of this build creates one (structure wallets' sessions come next).
        Protocol::Reshare => {
            return Err(ApiError::Internal(
                "reshare sessions are not run by this server build".into(),
            ));
        }
    };
    Ok(prepared)
}

/// A signing run may start once approved, or when the policy required no approval.
fn refuse_unapproved(approval: Approval) -> ApiResult<()> {
    match approval {
        Approval::None | Approval::Approved => Ok(()),
        Approval::Pending => Err(ApiError::Forbidden(
            "this signature waits for approval by another device of the user".into(),
        )),
        Approval::Refused => Err(ApiError::Forbidden(
            "another device of the user refused this signature".into(),
        )),
        Approval::Expired => Err(ApiError::Gone(format!(
            "the approval {}; make a new request",
            Approval::Expired
        ))),
    }
}

/// A claimed session, run once its socket is upgraded.
struct RunOf {
    state: AppState,
    me: AuthDevice,
    session_id: String,
    wallet_id: String,
    protocol: Protocol,
}

impl RunOf {
    /// Runs the protocol over `socket`, records how it ended (its row, its audit records, a ban
    /// or an abort), then closes the socket with the outcome.
    async fn run(self, mut socket: WebSocket, prepared: Prepared) {
        let _live = self.state.shutdown().track("session");
        let started = std::time::Instant::now();
        let kind = self.protocol.as_str();
        crate::observe::session_started(kind, &self.session_id);
        let Prepared {
            run,
            digest,
            summary,
        } = prepared;
        let (outcome, signature, held) = self.drive_run(&mut socket, run).await;
        let (close_with, recorded) = self.record(&outcome, signature, digest, summary).await;
        // A signing run's last message leaves only now, once its end (`sign.completed`, with
        // the signature) is durable: see `DeviceLink`.
        if recorded && outcome.status == SessionStatus::Done {
            for frame in held {
                if socket.send(Message::Binary(frame.into())).await.is_err() {
                    break;
                }
            }
        }
        crate::observe::session_ended(
            kind,
            &self.session_id,
            &outcome.status.to_string(),
            outcome.blamed.as_ref().map(|b| b.party.get()),
            outcome.detail.as_deref(),
            started,
        );
        if let Some((code, reason)) = close_with {
            close(&mut socket, code, &reason).await;
        }
    }

    /// Drives the run to its end: its outcome, the signature (hex) of a signing run, and the
    /// frames held back until the end is recorded (a signing run's last round).
    async fn drive_run(
        &self,
        socket: &mut WebSocket,
        run: Run,
    ) -> (Outcome, Option<String>, Vec<Vec<u8>>) {
        let state = &self.state;
        let mut signature = None;
        let last_round = match &run {
            Run::Keygen(s, ..) => s.total_rounds(),
            Run::Sign(s) => s.total_rounds(),
            Run::Refresh(s) => s.total_rounds(),
        };
        let mut link = DeviceLink {
            state,
            socket,
            hold_last: self.protocol == Protocol::Sign,
            held: Vec::new(),
            last_round,
        };
        let outcome = match run {
            Run::Keygen(s, wallet, name) => match drive(state, &mut link, *s).await {
                Ok(share) => stored(
                    vault::store_new_wallet(state, &self.me, wallet, &name, &share).await,
                    "could not store the result",
                ),
                Err(outcome) => outcome,
            },
            Run::Sign(s) => match drive(state, &mut link, *s).await {
                Ok(sig) => {
                    signature = Some(hex::encode(sig.to_rsv()));
                    stored(Ok(()), "could not store the result")
                }
                Err(outcome) => outcome,
            },
            Run::Refresh(s) => match drive(state, &mut link, *s).await {
                Ok(share) => {
                    commit_refresh(state, &mut link, &self.wallet_id, &self.session_id, share).await
                }
                Err(outcome) => outcome,
            },
        };
        let held = std::mem::take(&mut link.held);
        (outcome, signature, held)
    }

    /// Records the end of the run; returns the close frame to send and whether the end was
    /// recorded.
    async fn record(
        &self,
        outcome: &Outcome,
        signature: Option<String>,
        digest: String,
        summary: String,
    ) -> (Option<(u16, String)>, bool) {
        // A signing run that failed never released its last message: no `sign.unconfirmed`
        // here (structure wallets' runs, `coordinator`, still release before the end).
        let kind = match (self.protocol, outcome.status) {
            (_, SessionStatus::Expired) => "session.expired".to_string(),
            (Protocol::Sign, SessionStatus::Done) => "sign.completed".to_string(),
            (p, status) => format!("{p}.{status}"),
        };
        let mut detail = serde_json::json!({
            "session_id": self.session_id,
            "detail": outcome.detail,
        });
        if let Some(sig) = signature {
            detail["signature"] = sig.into();
            detail["digest"] = digest.into();
            detail["summary"] = summary.into();
        }
        let mut close_with = outcome.close.clone();
        let subject = audit::Subject::device(&self.me).wallet(&self.wallet_id);
        let recorded = record_end_batched(
            &self.state,
            &self.session_id,
            (outcome.status, outcome.detail.as_deref()),
            subject,
            &[(kind, detail)],
        )
        .await;
        if let Err(e) = &recorded {
            tracing::error!(session_id = %self.session_id, error = %e, "could not record the end of a session");
            // Never report success without the record.
            if outcome.status == SessionStatus::Done {
                close_with = Some((
                    CLOSE_INTERNAL,
                    "the server could not record the outcome".to_string(),
                ));
            }
        }
        // A blamed party is banned (and its ban audited) before the close frame tells the
        // device how the run ended.
        let close_code = outcome.close.as_ref().map(|(c, _)| *c);
        crate::bans::after_run(
            &self.state,
            &self.me,
            &self.wallet_id,
            &self.session_id,
            crate::bans::RunEnd {
                protocol: self.protocol,
                status: outcome.status,
                // The server's failure or its shutdown: not the device's abort.
                server_failed: matches!(close_code, Some(CLOSE_INTERNAL | CLOSE_GOING_AWAY)),
                invalid_message: close_code == Some(CLOSE_INVALID_MESSAGE),
                detail: outcome.detail.as_deref(),
                blamed: outcome.blamed.as_ref(),
            },
        )
        .await;
        (close_with, recorded.is_ok())
    }
}

/// [`record_end`] for a 2-of-2 run (`RunOf::record`): on SQLite, an end with one record is
/// first tried as one batch of statements ([`audit::end_session_alone`]), then as
/// [`record_end`] writes it.
///
/// Only there: a structure wallet's run (`coordinator`) tells its parties the end once it is
/// recorded, and a device of such a run that has not yet got a co-signer's last message must
/// not hear the end first; the faster batch made that happen under load (`quorum.rs`'s
/// unnamed-culprit test), so those ends keep the transaction's pace.
///
/// # Errors
/// The last attempt's error.
pub async fn record_end_batched(
    state: &AppState,
    session_id: &str,
    (status, detail): (SessionStatus, Option<&str>),
    subject: audit::Subject<'_>,
    records: &[(String, serde_json::Value)],
) -> ApiResult<()> {
    if let [(kind, record)] = records
        && audit::end_session_alone(
            state,
            session_id,
            (status, detail),
            subject,
            (kind, &record.to_string()),
        )
        .await
    {
        return Ok(());
    }
    record_end(state, session_id, (status, detail), subject, records).await
}

/// Records how a session ended: its row and its audit records in one write transaction, tried up
/// to [`crate::db::DURABLE_ATTEMPTS`] times (what it records already happened).
///
/// # Errors
/// The last attempt's error.
pub async fn record_end(
    state: &AppState,
    session_id: &str,
    (status, detail): (SessionStatus, Option<&str>),
    subject: audit::Subject<'_>,
    records: &[(String, serde_json::Value)],
) -> ApiResult<()> {
    let mut attempt = 1;
    loop {
        let written = async {
            let mut tx = state.begin_write().await?;
            db::sessions::record_end(&mut *tx, session_id, status, detail, now()).await?;
            // A durable request's session: the request is signed, or waits for another one
            // (its row locked before the audit head, as the lock order wants).
            let signature = records
                .iter()
                .find_map(|(_, d)| d.get("signature").and_then(serde_json::Value::as_str));
            crate::requests::session_ended(&mut tx, session_id, status, signature).await?;
            for (kind, detail) in records {
                audit::append_in(&mut tx, kind, subject, detail.clone()).await?;
            }
            tx.commit().await
        }
        .await;
        match written {
            Ok(()) => return Ok(()),
            Err(e) if attempt < crate::db::DURABLE_ATTEMPTS => {
                tracing::warn!(session_id = %session_id, attempt, error = %e, "retrying the record of a session's end");
                attempt += 1;
                tokio::time::sleep(crate::db::retry_pause(attempt)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Sends a close frame with `code` and `reason` (cut to what a close frame holds), then
/// finishes the closing handshake ([`finish_close`]).
pub(crate) async fn close(socket: &mut WebSocket, code: u16, reason: &str) {
    // Close reasons are limited to 123 bytes.
    let mut reason = reason.to_string();
    while reason.len() > 120 {
        reason.pop();
    }
    if socket
        .send(Message::Close(Some(CloseFrame {
            code,
            reason: reason.into(),
        })))
        .await
        .is_err()
    {
        return;
    }
    finish_close(socket).await;
}

/// Finishes the closing handshake: reads and drops what the device still sends until its close
/// comes back. Dropping the socket with its frames unread would make the kernel reset the
/// connection, and the device could lose the close code and reason before reading them.
/// Bounded: a device that never answers is dropped after [`CLOSE_HANDSHAKE`].
pub(crate) async fn finish_close(socket: &mut WebSocket) {
    let _ = tokio::time::timeout(CLOSE_HANDSHAKE, async {
        while let Some(Ok(frame)) = socket.recv().await {
            if matches!(frame, Message::Close(_)) {
                break;
            }
        }
    })
    .await;
}

/// How long the server waits for the device's close after sending its own.
const CLOSE_HANDSHAKE: std::time::Duration = std::time::Duration::from_secs(2);

/// Runs `session` to its end; returns the session's final status and a detail for the record.
/// How a run ended: the session's status and detail for the record, and the close frame to send
/// once the record is written (so a client that sees the close finds the final status).
struct Outcome {
    status: SessionStatus,
    detail: Option<String>,
    close: Option<(u16, String)>,
    /// The party the engine blamed, to be banned.
    blamed: Option<crate::bans::Blame>,
}

fn ended(status: SessionStatus, detail: impl Into<String>, close: Option<(u16, &str)>) -> Outcome {
    Outcome {
        status,
        detail: Some(detail.into()),
        close: close.map(|(c, r)| (c, r.to_string())),
        blamed: None,
    }
}

/// The record of a run whose last step (storing or switching) succeeded or failed with `failure`.
fn stored(result: ApiResult<()>, failure: &str) -> Outcome {
    match result {
        Ok(()) => Outcome {
            status: SessionStatus::Done,
            detail: None,
            close: Some((1000, "done".into())),
            blamed: None,
        },
        Err(e) => ended(
            SessionStatus::Failed,
            e.to_string(),
            Some((CLOSE_INTERNAL, failure)),
        ),
    }
}

/// The two-phase switch after a refresh ([`tessera_core::driver`]'s finish, the server the
/// coordinator): store ours as pending, tell the device, wait for its commit (it has stored its
/// own as pending), then switch. A crash anywhere leaves the old epoch active here, or the new
/// one once switched; the device holds whichever we hold as active.
async fn commit_refresh(
    state: &AppState,
    link: &mut DeviceLink<'_>,
    wallet_id: &str,
    session_id: &str,
    share: KeyShare,
) -> Outcome {
    let epoch = share.epoch();
    if let Err(e) = vault::store_pending(state, wallet_id, session_id, &share).await {
        return ended(
            SessionStatus::Failed,
            e.to_string(),
            Some((CLOSE_INTERNAL, "could not store the new share")),
        );
    }
    let idle = Some(state.config().session_idle_timeout);
    let committed = match driver::CoordinatorPending::stored(epoch)
        .collect_commits(link, &[DEVICE], idle)
        .await
    {
        Ok(committed) => committed,
        Err(DriveError::Link(outcome) | DriveError::Stopped(outcome)) => return outcome,
        Err(DriveError::Expired) => {
            return ended(
                SessionStatus::Expired,
                "no commit from the device",
                Some((CLOSE_EXPIRED, "session expired waiting for the commit")),
            );
        }
        Err(_) => {
            return ended(
                SessionStatus::Failed,
                "no valid commit",
                Some((
                    CLOSE_INVALID_MESSAGE,
                    "expected the commit of the new epoch",
                )),
            );
        }
    };
    let switched = vault::promote(state, wallet_id, session_id, committed.epoch()).await;
    if switched.is_ok() {
        // The device's link announces the switch with the close 1000, sent once the end is
        // recorded; this step only follows the finish's order.
        if let Err(DriveError::Link(outcome) | DriveError::Stopped(outcome)) =
            committed.announce_switch(link).await
        {
            return outcome;
        }
    }
    stored(switched, "could not switch to the new share")
}

/// The device's side of a session: the WebSocket as a [`Link`] of the one driver. Its errors
/// are the run's [`Outcome`].
///
/// A signing run's last-round message (`hold_last`) is held back in `held`: every party
/// sends its last message as soon as it has the previous round's, so the device sends its own
/// without waiting for ours, and with ours it could finish the signature alone. The server
/// sends it only after it has finished and checked the signature itself and recorded the end
/// (`sign.completed`, with the signature) durably ([`RunOf::run`]). A device whose last
/// message fails the checks never gets ours, and no signature can exist that the audit log
/// does not hold. (Before, the server sent it at once, after recording `sign.released`: one
/// more durable write per signature, and a signature the device could hold with the run
/// recorded as failed.)
struct DeviceLink<'a> {
    state: &'a AppState,
    socket: &'a mut WebSocket,
    hold_last: bool,
    held: Vec<Vec<u8>>,
    last_round: u8,
}

impl Link for DeviceLink<'_> {
    type Error = Outcome;

    async fn send(&mut self, envelope: &tessera_core::Envelope) -> Result<(), Outcome> {
        if self.hold_last && envelope.round == self.last_round {
            self.held.push(envelope.to_bytes());
            return Ok(());
        }
        self.socket
            .send(Message::Binary(envelope.to_bytes().into()))
            .await
            .map_err(|_| ended(SessionStatus::Failed, "the device went away", None))
    }

    async fn recv(
        &mut self,
        idle: Option<Duration>,
    ) -> Result<Option<(PartyIndex, Vec<u8>)>, Outcome> {
        // Pings and pongs do not move the deadline; idle expiry is enforced here, in memory
        // (the row's last_message_at is written once, when the session ends: a write per
        // frame cost an fsync each).
        let deadline = idle.map(|d| tokio::time::Instant::now() + d);
        loop {
            let frame = match recv_until(self.socket, deadline, self.state).await {
                Next::Idle => return Ok(None),
                Next::Closing => return Err(shutting_down("the server shut down")),
                Next::Frame(None | Some(Err(_))) => {
                    return Err(ended(SessionStatus::Failed, "the device went away", None));
                }
                Next::Frame(Some(Ok(frame))) => frame,
            };
            match frame {
                Message::Binary(b) => return Ok(Some((DEVICE, b.to_vec()))),
                Message::Close(_) => {
                    return Err(ended(
                        SessionStatus::Failed,
                        "the device closed the session",
                        None,
                    ));
                }
                Message::Ping(_) | Message::Pong(_) => {}
                Message::Text(_) => {
                    return Err(ended(
                        SessionStatus::Failed,
                        "text frame",
                        Some((
                            CLOSE_INVALID_MESSAGE,
                            "text frames are not protocol messages",
                        )),
                    ));
                }
            }
        }
    }

    async fn send_control(&mut self, control: Control) -> Result<(), Outcome> {
        let went_away = || {
            ended(
                SessionStatus::Failed,
                "the device went away before committing; the new share stays pending",
                None,
            )
        };
        match control {
            Control::Pending(epoch) => {
                let notice = serde_json::to_string(&api::RefreshPending { pending: epoch })
                    .map_err(|_| went_away())?;
                self.socket
                    .send(Message::Text(notice.into()))
                    .await
                    .map_err(|_| went_away())
            }
            // The close with 1000, once the end is recorded, says the server switched.
            Control::Switched => Ok(()),
            Control::Commit(_) => Err(ended(
                SessionStatus::Failed,
                "the server never commits",
                Some((CLOSE_INTERNAL, "internal error")),
            )),
        }
    }

    async fn recv_control(
        &mut self,
        _from: PartyIndex,
        idle: Option<Duration>,
    ) -> Result<Option<Control>, Outcome> {
        // Pings and pongs do not move the deadline.
        let deadline = idle.map(|d| tokio::time::Instant::now() + d);
        let invalid = || {
            ended(
                SessionStatus::Failed,
                "no valid commit",
                Some((
                    CLOSE_INVALID_MESSAGE,
                    "expected the commit of the new epoch",
                )),
            )
        };
        loop {
            match recv_until(self.socket, deadline, self.state).await {
                Next::Idle => return Ok(None),
                Next::Closing => {
                    return Err(shutting_down(
                        "the server shut down before the commit; the new share stays pending",
                    ));
                }
                Next::Frame(Some(Ok(Message::Text(t)))) => {
                    return serde_json::from_str::<api::RefreshCommit>(&t)
                        .map(|c| Some(Control::Commit(c.commit)))
                        .map_err(|_| invalid());
                }
                Next::Frame(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => {}
                Next::Frame(Some(Ok(_))) => return Err(invalid()),
                Next::Frame(None | Some(Err(_))) => {
                    return Err(ended(
                        SessionStatus::Failed,
                        "the device went away before committing; the new share stays pending",
                        None,
                    ));
                }
            }
        }
    }
}

/// What came on a device's socket.
enum Next {
    /// A frame, or the socket's end.
    Frame(Option<Result<Message, axum::Error>>),
    /// The deadline passed first.
    Idle,
    /// The server's grace period after a shutdown signal is over.
    Closing,
}

/// The socket's next frame, unless `deadline` (if any) passes or the server closes its
/// sessions first ([`crate::shutdown`]).
async fn recv_until(
    socket: &mut WebSocket,
    deadline: Option<tokio::time::Instant>,
    state: &AppState,
) -> Next {
    let frame = async {
        match deadline {
            Some(deadline) => tokio::time::timeout_at(deadline, socket.recv())
                .await
                .map_or(Next::Idle, Next::Frame),
            None => Next::Frame(socket.recv().await),
        }
    };
    tokio::select! {
        // `recv` is cancel-safe: a frame is never half read.
        next = frame => next,
        () = state.shutdown().closing() => Next::Closing,
    }
}

/// The end of a run that the server's shutdown closed: failed, on the server's side (no abort
/// is counted against the wallet), closed with [`CLOSE_GOING_AWAY`].
fn shutting_down(detail: &str) -> Outcome {
    ended(
        SessionStatus::Failed,
        detail,
        Some((
            CLOSE_GOING_AWAY,
            "the server is shutting down; try again in a moment",
        )),
    )
}

/// Runs `session` over the device's link; a failure is the run's [`Outcome`].
async fn drive<S: Session>(
    state: &AppState,
    link: &mut DeviceLink<'_>,
    mut session: S,
) -> Result<S::Output, Outcome> {
    let idle = Some(state.config().session_idle_timeout);
    driver::drive(&mut session, link, idle, |_, _| Ok(()))
        .await
        .map_err(|e| match e {
            DriveError::Link(outcome) | DriveError::Stopped(outcome) => outcome,
            DriveError::Expired => ended(
                SessionStatus::Expired,
                "idle timeout",
                Some((
                    CLOSE_EXPIRED,
                    "session expired: no message for the idle timeout",
                )),
            ),
            DriveError::Blamed {
                party,
                round,
                reason,
            } => {
                let e = Error::PartyMisbehaved {
                    party,
                    reason: reason.clone(),
                };
                let mut outcome = ended(
                    SessionStatus::Failed,
                    e.to_string(),
                    Some((CLOSE_MISBEHAVED, &e.to_string())),
                );
                outcome.blamed = Some(crate::bans::Blame {
                    party,
                    round,
                    reason,
                });
                outcome
            }
            DriveError::Rejected { from: None, error } => ended(
                SessionStatus::Failed,
                error.to_string(),
                Some((CLOSE_INTERNAL, "could not start the session")),
            ),
            DriveError::Rejected { error, .. } => ended(
                SessionStatus::Failed,
                error.to_string(),
                Some((CLOSE_INVALID_MESSAGE, &error.to_string())),
            ),
            DriveError::Finish(m) => ended(
                SessionStatus::Failed,
                m,
                Some((CLOSE_INTERNAL, "internal error")),
            ),
        })
}

/// The protocol socket: `GET /ws?session_id=…`.
pub(crate) fn router() -> axum::Router<AppState> {
    axum::Router::new()
        .route("/ws", axum::routing::get(open))
        .route("/sign/ws", axum::routing::get(sign_socket))
}
