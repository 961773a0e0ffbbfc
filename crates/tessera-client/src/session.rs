//! The protocol sessions the device runs with the server (key generation, signing, refresh),
//! each over one WebSocket driven by `tessera-core`'s one driver.

use futures_util::{SinkExt, StreamExt};
use tessera_api as api;
use tessera_api::intent::SignKind;
use tessera_core::driver::{self, Control, DriveError, Link};
use tessera_core::protocols::{
    KeygenSession, RefreshSession, SignRequest, SignSession, fresh_nonce, joint_nonce,
};
use tessera_core::{DerivationPath, KeyShare, PartyIndex, Session, Signature, Threshold, WalletId};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::error::{ClientError, HookError, Result, net};
use crate::{DEVICE, SERVER, ServerClient, WalletRecord};

impl ServerClient {
    /// Creates a 2-of-2 wallet with the server; returns our share (party 0), which the caller must
    /// store. `on_round(r, total)` reports progress.
    ///
    /// # Errors
    /// Network, server or protocol errors.
    pub async fn keygen(&self, name: &str, on_round: impl FnMut(u8, u8)) -> Result<KeyShare> {
        let ours = fresh_nonce();
        let created: api::SessionCreated = self
            .post(
                "/keygen",
                &api::KeygenRequest {
                    name: name.into(),
                    structure: None,
                    device_nonce: Some(hex::encode(ours)),
                },
            )
            .await?;
        let wallet = WalletId::from_hex(&created.wallet_id)?;
        let nonce = run_nonce(&ours, &created)?;
        let session = KeygenSession::new(wallet, Threshold::new(2, 2)?, DEVICE, &nonce)?;
        self.run(&created.session_id, session, on_round).await
    }

    /// Signs a raw `digest` (allowed only where the wallet's policy allows `digest`), under
    /// `path`; the signature is verified locally before it is returned.
    ///
    /// # Errors
    /// Network, server (e.g. a policy denial) or protocol errors.
    pub async fn sign(
        &self,
        share: &KeyShare,
        digest: [u8; 32],
        path: &DerivationPath,
        on_round: impl FnMut(u8, u8),
    ) -> Result<Signature> {
        let kind = SignKind::Digest {
            digest: hex::encode(digest),
        };
        self.sign_kind(share, &kind, path, on_round, |_| {}).await
    }

    /// Signs what `kind` describes; the server decodes it, computes the digest itself and applies
    /// the wallet's policy. When the policy requires another device's approval, `on_wait` is told
    /// (once, with the session id) and this waits for the decision. The signature is verified
    /// locally, against the digest computed here, before it is returned.
    ///
    /// # Errors
    /// Network, server (a policy denial: 403 `policy_denied` naming the rule) or protocol
    /// errors; [`ClientError::Refused`] when the approval is refused or lapses.
    pub async fn sign_kind(
        &self,
        share: &KeyShare,
        kind: &SignKind,
        path: &DerivationPath,
        on_round: impl FnMut(u8, u8),
        on_wait: impl FnOnce(&str),
    ) -> Result<Signature> {
        let digest = tessera_api::intent::decode(kind)?.digest;
        let ours = fresh_nonce();
        let (created, running) = self.sign_on_socket(share, kind, path, ours).await?;
        let session = |created: &api::SessionCreated| -> Result<SignSession> {
            let request = SignRequest {
                nonce: run_nonce(&ours, created)?,
                signers: vec![DEVICE, SERVER],
                digest,
                path: path.clone(),
            };
            Ok(SignSession::new(share, &request)?)
        };
        let signature = match running {
            Some(socket) => self.run_on(socket, session(&created)?, on_round).await?,
            None => {
                // Not run at once: it waits for approval, or our epoch is not the wallet's.
                if created.epoch != share.epoch() {
                    return Err(ClientError::EpochMismatch {
                        device: share.epoch(),
                        pending: None,
                        server: created.epoch,
                    });
                }
                self.await_approval(&created, on_wait).await?;
                self.run(&created.session_id, session(&created)?, on_round)
                    .await?
            }
        };
        share.public_key_at(path)?.verify(&digest, &signature)?;
        Ok(signature)
    }

    /// `GET /sign/ws`: asks for the signature of what `kind` describes with `share`'s wallet
    /// under `path` (what `POST /sign` takes, with our nonce `ours` and our share's epoch), on
    /// a socket that runs the session at once when it may: the session created, and the
    /// socket when it runs there (otherwise the session is opened on `GET /ws` later).
    ///
    /// # Errors
    /// Network errors; the server's refusal, as `POST /sign` answers it.
    async fn sign_on_socket(
        &self,
        share: &KeyShare,
        kind: &SignKind,
        path: &DerivationPath,
        ours: [u8; 32],
    ) -> Result<(api::SessionCreated, Option<Socket>)> {
        let mut socket = self.connect_to("/sign/ws").await?;
        let asked = api::SignSocketRequest {
            intent: api::SignIntentRequest {
                wallet_id: share.wallet_id().into(),
                path: path.to_string(),
                kind: kind.clone(),
                device_nonce: Some(hex::encode(ours)),
                with: Vec::new(),
            },
            epoch: share.epoch(),
        };
        let text = serde_json::to_string(&asked).map_err(net)?;
        socket.send(Message::Text(text.into())).await.map_err(net)?;
        let reply = loop {
            match socket.next().await {
                Some(Ok(Message::Text(text))) => {
                    break serde_json::from_str::<api::SignSocketReply>(&text)
                        .map_err(|e| net(format!("unexpected answer: {e}")))?;
                }
                Some(Ok(Message::Close(Some(f)))) => {
                    return Err(ClientError::Closed {
                        code: u16::from(f.code),
                        reason: f.reason.to_string(),
                    });
                }
                Some(Ok(Message::Close(None))) | None => {
                    return Err(net("the server closed the signing socket"));
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(net(e)),
            }
        };
        match reply {
            api::SignSocketReply::Created {
                session,
                running: true,
            } => Ok((*session, Some(socket))),
            api::SignSocketReply::Created {
                session,
                running: false,
            } => {
                let _ = socket.close(None).await;
                Ok((*session, None))
            }
            api::SignSocketReply::Refused { status, error } => {
                let _ = socket.close(None).await;
                Err(ClientError::Server {
                    status,
                    code: error.error,
                    message: error.message,
                })
            }
        }
    }

    /// `POST /sign` of what `kind` describes with `share`'s wallet under `path` (with the
    /// co-signers `with` of a structure wallet): the session created, and this device's nonce
    /// for it. The session must start from the share's epoch.
    ///
    /// # Errors
    /// Network or server errors; [`ClientError::EpochMismatch`].
    pub(crate) async fn request_sign(
        &self,
        share: &KeyShare,
        kind: &SignKind,
        path: &DerivationPath,
        with: &[String],
    ) -> Result<(api::SessionCreated, [u8; 32])> {
        let ours = fresh_nonce();
        let created: api::SessionCreated = self
            .post(
                "/sign",
                &api::SignIntentRequest {
                    wallet_id: share.wallet_id().into(),
                    path: path.to_string(),
                    kind: kind.clone(),
                    device_nonce: Some(hex::encode(ours)),
                    with: with.to_vec(),
                },
            )
            .await?;
        if created.epoch != share.epoch() {
            return Err(ClientError::EpochMismatch {
                device: share.epoch(),
                pending: None,
                server: created.epoch,
            });
        }
        Ok((created, ours))
    }

    /// Waits for the approval of a signing session that needs one (`on_wait` is told once,
    /// with the session id); returns at once for one that does not.
    ///
    /// # Errors
    /// Network or server errors; [`ClientError::Refused`] when the approval is refused or
    /// lapses.
    pub(crate) async fn await_approval(
        &self,
        created: &api::SessionCreated,
        on_wait: impl FnOnce(&str),
    ) -> Result<()> {
        if created.approval != Some(api::Approval::Pending) {
            return Ok(());
        }
        on_wait(&created.session_id);
        loop {
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            let status: api::SignStatus =
                self.get(&format!("/sign/{}", created.session_id)).await?;
            match status.approval {
                api::Approval::Pending => continue,
                api::Approval::Approved => return Ok(()),
                other => {
                    return Err(ClientError::Refused(format!("the approval was {other}")));
                }
            }
        }
    }

    /// Signs with a wallet record, first settling it against the server's epoch (the repair
    /// after an interrupted refresh); `store` is called when the record changed.
    ///
    /// # Errors
    /// As [`ServerClient::sign`], [`WalletRecord::settle`], or the error `store` returns.
    pub async fn sign_wallet(
        &self,
        record: &mut WalletRecord,
        mut store: impl FnMut(&WalletRecord) -> std::result::Result<(), HookError>,
        kind: &SignKind,
        path: &DerivationPath,
        on_round: impl FnMut(u8, u8),
        on_wait: impl FnOnce(&str),
    ) -> Result<Signature> {
        record.refuse_if_banned()?;
        let info = self.pubkey(&record.current.wallet_id().to_string()).await?;
        if record.settle(info.epoch)? {
            store(record).map_err(ClientError::Stopped)?;
        }
        let result = self
            .sign_kind(&record.current, kind, path, on_round, on_wait)
            .await;
        if let Err(e) = &result
            && e.ban_into(record)
        {
            store(record).map_err(ClientError::Stopped)?;
        }
        result
    }

    /// Refreshes a wallet's shares (both parties, same public key, next epoch) in two phases.
    /// `step` is called at each point where the record must be stored or where a crash is
    /// interesting: after each protocol round, when the new share arrives (store it as pending
    /// before we commit), once the commit is sent, and once both sides switched (store it).
    /// An error from `step` stops the refresh there, as a crash would.
    ///
    /// # Errors
    /// Network, server or protocol errors, [`ClientError::Stopped`].
    pub async fn refresh(
        &self,
        record: &mut WalletRecord,
        mut step: impl FnMut(RefreshStep, &WalletRecord) -> std::result::Result<(), HookError>,
    ) -> Result<u64> {
        record.refuse_refresh_if_banned()?;
        let result = self.refresh_once(record, &mut step).await;
        if let Err(e) = &result
            && e.ban_into(record)
        {
            step(RefreshStep::Banned, record).map_err(ClientError::Stopped)?;
        }
        result
    }

    async fn refresh_once(
        &self,
        record: &mut WalletRecord,
        step: &mut impl FnMut(RefreshStep, &WalletRecord) -> std::result::Result<(), HookError>,
    ) -> Result<u64> {
        let wallet_id = record.current.wallet_id().to_string();
        let ours = fresh_nonce();
        let created: api::SessionCreated = self
            .post(
                "/refresh",
                &api::RefreshRequest {
                    wallet_id: wallet_id.into(),
                    device_nonce: Some(hex::encode(ours)),
                },
            )
            .await?;
        if record.settle(created.epoch)? {
            step(RefreshStep::Settled, record).map_err(ClientError::Stopped)?;
        }
        let nonce = run_nonce(&ours, &created)?;
        let mut session = RefreshSession::new(&record.current, &nonce)?;
        let mut socket = self.connect(&created.session_id).await?;
        let total = session.total_rounds();
        let fresh = exchange(&mut socket, &mut session, |round| {
            step(RefreshStep::Round { round, total }, record).map_err(ClientError::Stopped)
        })
        .await?;
        let epoch = fresh.epoch();
        // The two-phase finish, the server coordinating: it stored its new share as pending;
        // we store ours, commit, and switch once it closes with 1000.
        let session_id = session.session_id();
        let link = &mut ServerLink {
            socket: &mut socket,
        };
        let announced = driver::await_pending(link, SERVER, epoch, None)
            .await
            .map_err(|e| match e {
                DriveError::Finish(_) => net("the server stored another epoch"),
                e => drive_error(session_id, e),
            })?;
        record.pending = Some(fresh);
        step(RefreshStep::PendingStored, record).map_err(ClientError::Stopped)?;
        let committed = announced
            .commit(link)
            .await
            .map_err(|e| drive_error(session_id, e))?;
        step(RefreshStep::CommitSent, record).map_err(ClientError::Stopped)?;
        committed
            .await_switch(link, None)
            .await
            .map_err(|e| drive_error(session_id, e))?;
        record.settle(epoch)?;
        // A complete refresh: a new OT set-up, so what a banned party may have learnt is
        // worthless; the bans the owner approved lifting are lifted.
        record.lift_approved_bans();
        step(RefreshStep::Switched, record).map_err(ClientError::Stopped)?;
        Ok(epoch)
    }

    pub(crate) async fn connect(&self, session_id: &str) -> Result<Socket> {
        self.connect_to(&format!("/ws?session_id={session_id}"))
            .await
    }

    /// Opens the WebSocket at `path` (and query) with our token.
    async fn connect_to(&self, path: &str) -> Result<Socket> {
        let token = self.token.as_ref().ok_or(ClientError::NotLoggedIn)?;
        let ws_base = self.base.replacen("http", "ws", 1);
        let mut request = format!("{ws_base}{path}")
            .into_client_request()
            .map_err(net)?;
        request.headers_mut().insert(
            "authorization",
            format!("Bearer {token}").parse().map_err(net)?,
        );
        let connector = tokio_tungstenite::Connector::Rustls(self.tls.clone());
        // `true`: TCP_NODELAY, so that a protocol frame never waits for the server's delayed ACK.
        let (socket, _) =
            tokio_tungstenite::connect_async_tls_with_config(request, None, true, Some(connector))
                .await
                .map_err(|e| match e {
                    tokio_tungstenite::tungstenite::Error::Http(resp) => {
                        let message = resp
                            .body()
                            .as_ref()
                            .and_then(|b| serde_json::from_slice::<api::ApiError>(b).ok())
                            .map_or_else(|| "refused".to_string(), |e| e.message);
                        ClientError::Server {
                            status: resp.status().as_u16(),
                            code: "ws".into(),
                            message,
                        }
                    }
                    other => net(other),
                })?;
        Ok(socket)
    }

    /// Runs `session` over `GET /ws?session_id=…`.
    pub(crate) async fn run<S: Session>(
        &self,
        session_id: &str,
        session: S,
        on_round: impl FnMut(u8, u8),
    ) -> Result<S::Output> {
        let socket = self.connect(session_id).await?;
        self.run_on(socket, session, on_round).await
    }

    /// Runs `session` over `socket`, opened for it, until the server's close.
    pub(crate) async fn run_on<S: Session>(
        &self,
        mut socket: Socket,
        mut session: S,
        mut on_round: impl FnMut(u8, u8),
    ) -> Result<S::Output> {
        let total = session.total_rounds();
        let output = exchange(&mut socket, &mut session, |r| {
            on_round(r, total);
            Ok(())
        })
        .await?;
        // The server closes with 1000 once it has stored its side; wait for it so that a keygen
        // result is only reported when both sides hold it.
        while let Some(frame) = socket.next().await {
            match frame {
                Ok(Message::Close(Some(f))) if u16::from(f.code) != 1000 => {
                    return Err(ClientError::Closed {
                        code: u16::from(f.code),
                        reason: f.reason.to_string(),
                    });
                }
                Ok(Message::Close(_)) | Err(_) => break,
                _ => {}
            }
        }
        Ok(output)
    }
}

/// Where a refresh is, for [`ServerClient::refresh`]'s `step` hook.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefreshStep {
    /// The record was settled against the server's epoch before starting: store it.
    Settled,
    /// Protocol round `round` of `total` completed (nothing to store).
    Round {
        /// The round done.
        round: u8,
        /// How many the refresh has.
        total: u8,
    },
    /// The new share is `record.pending`: store the record now, before the commit is sent.
    PendingStored,
    /// The commit was sent; the server may have switched already.
    CommitSent,
    /// Both sides switched: `record.current` is the new share; store the record.
    Switched,
    /// The engine blamed the server: `record.bans` holds the ban; store the record.
    Banned,
}

pub(crate) type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The server's side of a session: the WebSocket as a [`Link`] of the one driver.
struct ServerLink<'a> {
    socket: &'a mut Socket,
}

impl Link for ServerLink<'_> {
    type Error = ClientError;

    async fn send(&mut self, envelope: &tessera_core::Envelope) -> Result<()> {
        self.socket
            .send(Message::Binary(envelope.to_bytes().into()))
            .await
            .map_err(net)
    }

    async fn recv(
        &mut self,
        _idle: Option<std::time::Duration>,
    ) -> Result<Option<(PartyIndex, Vec<u8>)>> {
        // The server enforces the idle timeout and closes the socket.
        loop {
            match next_frame(self.socket).await? {
                Message::Binary(bytes) => return Ok(Some((SERVER, bytes.to_vec()))),
                Message::Close(frame) => return Err(closed(frame)),
                _ => {}
            }
        }
    }

    async fn send_control(&mut self, control: Control) -> Result<()> {
        match control {
            Control::Commit(epoch) => {
                let commit =
                    serde_json::to_string(&api::RefreshCommit { commit: epoch }).map_err(net)?;
                self.socket
                    .send(Message::Text(commit.into()))
                    .await
                    .map_err(net)
            }
            Control::Pending(_) | Control::Switched => {
                Err(net("the device never coordinates a finish"))
            }
        }
    }

    async fn recv_control(
        &mut self,
        _from: PartyIndex,
        _idle: Option<std::time::Duration>,
    ) -> Result<Option<Control>> {
        loop {
            match next_frame(self.socket).await? {
                // Phase one: the server stored its new share as pending.
                Message::Text(t) => {
                    let notice: api::RefreshPending = serde_json::from_str(&t)
                        .map_err(|_| net("unexpected message after the refresh"))?;
                    return Ok(Some(Control::Pending(notice.pending)));
                }
                // Phase two: the server switched when it closes with 1000.
                Message::Close(Some(f)) if u16::from(f.code) == 1000 => {
                    return Ok(Some(Control::Switched));
                }
                Message::Close(frame) => return Err(closed(frame)),
                _ => {}
            }
        }
    }
}

/// A driver error as the SDK reports it.
pub(crate) fn drive_error(
    session_id: tessera_core::SessionId,
    e: DriveError<ClientError>,
) -> ClientError {
    match e {
        DriveError::Link(e) | DriveError::Stopped(e) => e,
        DriveError::Blamed {
            party,
            round,
            reason,
        } => ClientError::PartyBlamed {
            party: party.get(),
            session_id: session_id.to_string(),
            round,
            reason,
        },
        DriveError::Rejected { error, .. } => ClientError::Protocol(error),
        DriveError::Expired => net("the session went quiet"),
        DriveError::Finish(m) => net(m),
    }
}

/// Runs `session`'s rounds over `socket` until it has its output (the one driver);
/// `round_done(r)` is called once for every completed round, in order, the last one included.
async fn exchange<S: Session>(
    socket: &mut Socket,
    session: &mut S,
    mut round_done: impl FnMut(u8) -> Result<()>,
) -> Result<S::Output> {
    let session_id = session.session_id();
    driver::drive(session, &mut ServerLink { socket }, None, |r, _| {
        round_done(r)
    })
    .await
    .map_err(|e| drive_error(session_id, e))
}

async fn next_frame(socket: &mut Socket) -> Result<Message> {
    socket
        .next()
        .await
        .ok_or_else(|| net("the server went away"))?
        .map_err(net)
}

fn closed(frame: Option<tokio_tungstenite::tungstenite::protocol::CloseFrame>) -> ClientError {
    let (code, reason) = frame.map_or((1005, String::new()), |f| {
        (u16::from(f.code), f.reason.to_string())
    });
    ClientError::Closed { code, reason }
}

/// The run's nonce: our contribution (party 0) joined with the server's, so that the run is new
/// for us whatever the server sent.
fn run_nonce(ours: &[u8; 32], created: &api::SessionCreated) -> Result<[u8; 32]> {
    Ok(joint_nonce(&[*ours, parse_nonce(&created.nonce)?]))
}

fn parse_nonce(text: &str) -> Result<[u8; 32]> {
    let mut nonce = [0u8; 32];
    hex::decode_to_slice(text, &mut nonce).map_err(|_| net("the server sent a malformed nonce"))?;
    Ok(nonce)
}
