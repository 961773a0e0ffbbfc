//! `GET /ws?session_id=…`: runs one protocol session over one WebSocket.
//!
//! Binary frames carry encoded [`tessera_core::Envelope`]s; the server is party 1, the device
//! party 0, and the server's sans-IO session validates every frame. The socket closes with 1000
//! when the protocol is done, or with one of the codes below and a reason.

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
use crate::auth::AuthDevice;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiQuery, ApiWebSocket};
use crate::state::{AppState, now};
use crate::vault;

/// Close code: a frame failed validation (wrong session, round, sender, malformed...).
pub const CLOSE_INVALID_MESSAGE: u16 = 4400;
/// Close code: the engine proved the device misbehaved; it is refused for this wallet.
pub const CLOSE_MISBEHAVED: u16 = 4403;
/// Close code: no message for the idle timeout.
pub const CLOSE_EXPIRED: u16 = 4408;
/// Close code: a server-side failure.
pub const CLOSE_INTERNAL: u16 = 4500;

const DEVICE: PartyIndex = PartyIndex::new(0);
const SERVER: PartyIndex = PartyIndex::new(1);

/// `?session_id=`.
#[derive(Deserialize)]
pub struct WsQuery {
    session_id: String,
}

/// A session row with its signing request's approval, expiry and decision time (if any), the
/// wallet's active sealed share (sign and refresh) and how many bans and locks stand on the wallet.
type SessionRow = (
    String,
    String,
    String,
    Vec<u8>,
    String,
    i64,
    String,
    Option<String>,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    Option<Vec<u8>>,
    i64,
);

enum Run {
    Keygen(Box<KeygenSession>, WalletId, String),
    Sign(Box<SignSession>),
    Refresh(Box<RefreshSession>),
}

/// Opens the socket for a created session of the caller.
pub async fn open(
    State(state): State<AppState>,
    me: AuthDevice,
    ApiQuery(q): ApiQuery<WsQuery>,
    ApiWebSocket(upgrade): ApiWebSocket,
) -> ApiResult<Response> {
    // Everything opening needs, in one read: the session; for a signing request, its approval;
    // for sign and refresh, the active sealed share; and whether a ban or lock may stand in the
    // way (its details are read only then).
    let row: Option<SessionRow> = sqlx::query_as(
        "SELECT s.device_id, s.wallet_id, s.protocol, s.nonce, s.status, s.last_message_at, s.params, \
         r.approval, r.expires_at, r.decided_at, sh.epoch, sh.sealed, \
         (SELECT COUNT(*) FROM banned_parties b WHERE b.wallet_id = s.wallet_id AND b.party = 0 AND b.lifted_at IS NULL) \
         + (SELECT COUNT(*) FROM wallet_locks l WHERE l.wallet_id = s.wallet_id AND l.lifted_at IS NULL) \
         FROM sessions s LEFT JOIN sign_requests r ON r.session_id = s.id \
         LEFT JOIN server_shares sh ON sh.wallet_id = s.wallet_id AND sh.state = 'active' \
         AND s.protocol IN ('sign', 'refresh') WHERE s.id = $1",
    )
    .bind(&q.session_id)
    .fetch_optional(state.db())
    .await?;
    let (
        device_id,
        wallet_id,
        protocol,
        nonce,
        status,
        last_message_at,
        params,
        approval,
        approval_expires,
        decided_at,
        share_epoch,
        sealed,
        obstacles,
    ) = row.ok_or_else(|| ApiError::NotFound("unknown session".into()))?;
    if device_id != me.device_id {
        return Err(ApiError::Forbidden(
            "this session belongs to another device".into(),
        ));
    }
    let idle = state.config().session_idle_timeout.as_secs() as i64;
    let open_by = crate::live_sessions::open_by(
        idle,
        last_message_at,
        approval.as_deref(),
        approval_expires,
        decided_at,
    );
    if status == "created" && now() > open_by {
        // Created but never opened within the idle timeout: it expires like an idle socket.
        sqlx::query("UPDATE sessions SET status = 'expired', detail = 'never opened' WHERE id = $1 AND status = 'created'")
            .bind(&q.session_id)
            .execute(state.db())
            .await?;
        return Err(ApiError::Gone(
            "session expired before it was opened; start a new one".into(),
        ));
    }
    if status != "created" {
        return Err(ApiError::Gone(format!(
            "session is {status}; start a new one"
        )));
    }
    if obstacles > 0 {
        crate::bans::refuse_session(&mut *state.db().acquire().await?, &wallet_id, &protocol)
            .await?;
    }
    // The share the session runs with, read above (sign and refresh).
    let active_share = || match (share_epoch, sealed.as_deref()) {
        (Some(epoch), Some(sealed)) => vault::unseal(&state, &wallet_id, epoch, sealed),
        _ => Err(ApiError::NotFound(format!(
            "no server share for wallet {wallet_id}"
        ))),
    };
    let nonce: [u8; 32] = nonce
        .try_into()
        .map_err(|_| ApiError::Internal("stored nonce length".into()))?;
    let mut digest_hex = String::new();
    let mut summary = String::new();
    let run = match protocol.as_str() {
        "keygen" => {
            let req: api::KeygenRequest =
                serde_json::from_str(&params).map_err(|e| ApiError::Internal(e.to_string()))?;
            let wallet =
                WalletId::from_hex(&wallet_id).map_err(|e| ApiError::Internal(e.to_string()))?;
            let threshold = Threshold::new(2, 2).map_err(|e| ApiError::Internal(e.to_string()))?;
            let session = KeygenSession::new(wallet, threshold, SERVER, &nonce)
                .map_err(|e| ApiError::Internal(e.to_string()))?;
            Run::Keygen(Box::new(session), wallet, req.name)
        }
        "sign" => {
            let req: crate::wallets::StoredSign =
                serde_json::from_str(&params).map_err(|e| ApiError::Internal(e.to_string()))?;
            match crate::live_sessions::approval_state(approval, approval_expires).as_str() {
                "none" | "approved" => {}
                "pending" => {
                    return Err(ApiError::Forbidden(
                        "this signature waits for approval by another device of the user".into(),
                    ));
                }
                "refused" => {
                    return Err(ApiError::Forbidden(
                        "another device of the user refused this signature".into(),
                    ));
                }
                other => {
                    return Err(ApiError::Gone(format!(
                        "the approval {other}; make a new request"
                    )));
                }
            }
            let share = active_share()?;
            let mut digest = [0u8; 32];
            hex::decode_to_slice(&req.digest, &mut digest)
                .map_err(|_| ApiError::Internal("digest".into()))?;
            let path: DerivationPath = req
                .path
                .parse()
                .map_err(|e: Error| ApiError::Internal(e.to_string()))?;
            digest_hex.clone_from(&req.digest);
            summary.clone_from(&req.summary);
            let request = SignRequest {
                nonce,
                signers: vec![DEVICE, SERVER],
                digest,
                path,
            };
            let session = SignSession::new(&share, &request)
                .map_err(|e| ApiError::BadRequest(e.to_string()))?;
            Run::Sign(Box::new(session))
        }
        "refresh" => {
            let share = active_share()?;
            let session = RefreshSession::new(&share, &nonce)
                .map_err(|e| ApiError::Internal(e.to_string()))?;
            Run::Refresh(Box::new(session))
        }
        other => return Err(ApiError::Internal(format!("unknown protocol {other}"))),
    };
    // Claim the session: only one socket may ever run it.
    let claimed = sqlx::query("UPDATE sessions SET status = 'running', last_message_at = $1, owner = $3 WHERE id = $2 AND status = 'created'")
        .bind(now())
        .bind(&q.session_id)
        .bind(state.instance())
        .execute(state.db())
        .await?;
    if claimed.rows_affected() != 1 {
        return Err(ApiError::Gone("session is already running".into()));
    }
    let session_id = q.session_id;
    Ok(upgrade
        .max_message_size(MAX_ENVELOPE_BYTES + 1024)
        // tungstenite's default read buffer is 128 KiB per socket, most of an idle session's
        // memory; frames are still reassembled up to the size limit.
        .read_buffer_size(16 * 1024)
        .on_upgrade(move |mut socket| async move {
            let mut signature = None;
            let last_round = match &run {
                Run::Keygen(s, ..) => s.total_rounds(),
                Run::Sign(s) => s.total_rounds(),
                Run::Refresh(s) => s.total_rounds(),
            };
            let mut link = DeviceLink {
                state: &state,
                socket: &mut socket,
                release: (protocol == "sign").then(|| crate::release::Release {
                    session_id: session_id.clone(),
                    wallet_id: wallet_id.clone(),
                    digest: digest_hex.clone(),
                    device: me.clone(),
                }),
                last_round,
            };
            let outcome = match run {
                Run::Keygen(s, wallet, name) => {
                    match drive(&state, &mut link, *s).await {
                        Ok(share) => stored(
                            vault::store_new_wallet(&state, &me, wallet, &name, &share).await,
                            "could not store the result",
                        ),
                        Err(outcome) => outcome,
                    }
                }
                Run::Sign(s) => {
                    match drive(&state, &mut link, *s).await {
                        Ok(sig) => {
                            signature = Some(hex::encode(sig.to_rsv()));
                            stored(Ok(()), "could not store the result")
                        }
                        Err(outcome) => outcome,
                    }
                }
                Run::Refresh(s) => {
                    match drive(&state, &mut link, *s).await {
                        Ok(share) => {
                            commit_refresh(&state, &mut link, &wallet_id, &session_id, share).await
                        }
                        Err(outcome) => outcome,
                    }
                }
            };
            let released = protocol == "sign" && link.release.is_none();
            let kind = match (protocol.as_str(), outcome.status) {
                // The device may hold a valid signature: the run did not plainly fail.
                ("sign", "failed" | "expired") if released => "sign.unconfirmed".to_string(),
                (_, "expired") => "session.expired".to_string(),
                ("sign", "done") => "sign.completed".to_string(),
                (p, status) => format!("{p}.{status}"),
            };
            let mut detail = serde_json::json!({
                "session_id": session_id,
                "detail": outcome.detail,
            });
            if let Some(sig) = signature {
                detail["signature"] = sig.into();
                detail["digest"] = digest_hex.into();
                detail["summary"] = summary.into();
            }
            let mut close_with = outcome.close.clone();
            let subject = audit::Subject::device(&me).wallet(&wallet_id);
            if let Err(e) =
                record_end(&state, &session_id, &outcome, subject, &[(kind, detail)]).await
            {
                tracing::error!(session_id = %session_id, error = %e, "could not record the end of a session");
                // Never report success without the record.
                if outcome.status == "done" {
                    close_with = Some((
                        CLOSE_INTERNAL,
                        "the server could not record the outcome".to_string(),
                    ));
                }
            }
            // A blamed party is banned (and its ban audited) before the close frame tells the
            // device how the run ended.
            crate::bans::after_run(
                &state,
                &me,
                &wallet_id,
                &session_id,
                crate::bans::RunEnd {
                    protocol: &protocol,
                    status: outcome.status,
                    close_code: outcome.close.as_ref().map(|(c, _)| *c),
                    detail: outcome.detail.as_deref(),
                    blamed: outcome.blamed.as_ref(),
                },
            )
            .await;
            if let Some((code, reason)) = close_with {
                close(&mut socket, code, &reason).await;
            }
        }))
}

/// Records how a session ended: its row and its audit records in one write transaction, tried up
/// to [`crate::db::DURABLE_ATTEMPTS`] times (what it records already happened).
async fn record_end(
    state: &AppState,
    session_id: &str,
    outcome: &Outcome,
    subject: audit::Subject<'_>,
    records: &[(String, serde_json::Value)],
) -> ApiResult<()> {
    let mut attempt = 1;
    loop {
        let written = async {
            let mut tx = state.begin_write().await?;
            sqlx::query(
                "UPDATE sessions SET status = $1, detail = $2, last_message_at = $3 WHERE id = $4",
            )
            .bind(outcome.status)
            .bind(outcome.detail.clone())
            .bind(now())
            .bind(session_id)
            .execute(&mut *tx)
            .await?;
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

async fn close(socket: &mut WebSocket, code: u16, reason: &str) {
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
    // Finish the closing handshake: read and drop what the device still sends until its close
    // comes back. Dropping the socket with its frames unread would make the kernel reset the
    // connection, and the device could lose the close code and reason before reading them.
    // Bounded: a device that never answers is dropped after CLOSE_HANDSHAKE.
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
    status: &'static str,
    detail: Option<String>,
    close: Option<(u16, String)>,
    /// The party the engine blamed, to be banned.
    blamed: Option<crate::bans::Blame>,
}

fn ended(status: &'static str, detail: impl Into<String>, close: Option<(u16, &str)>) -> Outcome {
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
            status: "done",
            detail: None,
            close: Some((1000, "done".into())),
            blamed: None,
        },
        Err(e) => ended("failed", e.to_string(), Some((CLOSE_INTERNAL, failure))),
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
            "failed",
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
                "expired",
                "no commit from the device",
                Some((CLOSE_EXPIRED, "session expired waiting for the commit")),
            );
        }
        Err(_) => {
            return ended(
                "failed",
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
/// are the run's [`Outcome`]. `release`, for a signing run, is recorded (and taken) before the
/// first message of the last round leaves: with it the device can finish the signature.
struct DeviceLink<'a> {
    state: &'a AppState,
    socket: &'a mut WebSocket,
    release: Option<crate::release::Release>,
    last_round: u8,
}

impl Link for DeviceLink<'_> {
    type Error = Outcome;

    async fn send(&mut self, envelope: &tessera_core::Envelope) -> Result<(), Outcome> {
        if envelope.round == self.last_round
            && let Some(r) = self.release.as_ref()
        {
            if let Err(err) = crate::release::record(self.state, r).await {
                return Err(ended(
                    "failed",
                    err.to_string(),
                    Some((CLOSE_INTERNAL, "could not record the release")),
                ));
            }
            self.release = None;
        }
        self.socket
            .send(Message::Binary(envelope.to_bytes().into()))
            .await
            .map_err(|_| ended("failed", "the device went away", None))
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
            let frame = match recv_until(self.socket, deadline).await {
                Err(_) => return Ok(None),
                Ok(None | Some(Err(_))) => {
                    return Err(ended("failed", "the device went away", None));
                }
                Ok(Some(Ok(frame))) => frame,
            };
            match frame {
                Message::Binary(b) => return Ok(Some((DEVICE, b.to_vec()))),
                Message::Close(_) => {
                    return Err(ended("failed", "the device closed the session", None));
                }
                Message::Ping(_) | Message::Pong(_) => {}
                Message::Text(_) => {
                    return Err(ended(
                        "failed",
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
                "failed",
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
                "failed",
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
                "failed",
                "no valid commit",
                Some((
                    CLOSE_INVALID_MESSAGE,
                    "expected the commit of the new epoch",
                )),
            )
        };
        loop {
            match recv_until(self.socket, deadline).await {
                Err(_) => return Ok(None),
                Ok(Some(Ok(Message::Text(t)))) => {
                    return serde_json::from_str::<api::RefreshCommit>(&t)
                        .map(|c| Some(Control::Commit(c.commit)))
                        .map_err(|_| invalid());
                }
                Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => {}
                Ok(Some(Ok(_))) => return Err(invalid()),
                Ok(None | Some(Err(_))) => {
                    return Err(ended(
                        "failed",
                        "the device went away before committing; the new share stays pending",
                        None,
                    ));
                }
            }
        }
    }
}

/// The socket's next frame, or `Err` once `deadline` (if any) passed.
async fn recv_until(
    socket: &mut WebSocket,
    deadline: Option<tokio::time::Instant>,
) -> Result<Option<Result<Message, axum::Error>>, tokio::time::error::Elapsed> {
    match deadline {
        Some(deadline) => tokio::time::timeout_at(deadline, socket.recv()).await,
        None => Ok(socket.recv().await),
    }
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
                "expired",
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
                    "failed",
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
                "failed",
                error.to_string(),
                Some((CLOSE_INTERNAL, "could not start the session")),
            ),
            DriveError::Rejected { error, .. } => ended(
                "failed",
                error.to_string(),
                Some((CLOSE_INVALID_MESSAGE, &error.to_string())),
            ),
            DriveError::Finish(m) => ended("failed", m, Some((CLOSE_INTERNAL, "internal error"))),
        })
}

/// The protocol socket: `GET /ws?session_id=…`.
pub(crate) fn router() -> axum::Router<AppState> {
    axum::Router::new().route("/ws", axum::routing::get(open))
}
