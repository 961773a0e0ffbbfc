//! Tessera client SDK: the device side (party 0) of a wallet shared with a commitment server.
//!
//! [`ServerClient`] registers the device, authenticates with its identity key, creates sessions
//! over REST and runs each protocol over one WebSocket with `tessera-core`'s sans-IO sessions.
#![forbid(unsafe_code)]
#![deny(missing_docs, clippy::unwrap_used)]

mod approval;
pub mod peer;
pub mod tls;
mod wallet;

pub use wallet::{PartyBan, WalletRecord};

use futures_util::{SinkExt, StreamExt};
use tessera_api as api;
use tessera_api::intent::SignKind;
use tessera_core::driver::{self, Control, DriveError, Link};
use tessera_core::protocols::{
    KeygenSession, RefreshSession, SignRequest, SignSession, fresh_nonce, joint_nonce,
};
use tessera_core::{DerivationPath, KeyShare, PartyIndex, Session, Signature, Threshold, WalletId};
use tessera_store::DeviceIdentity;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// The device is party 0, the server party 1.
pub const DEVICE: PartyIndex = PartyIndex::new(0);
/// The server's party index.
pub const SERVER: PartyIndex = PartyIndex::new(1);

/// Everything that can go wrong talking to the server.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with an error.
    #[error("server refused ({status}): {message}")]
    Server {
        /// HTTP status.
        status: u16,
        /// The server's error code.
        code: String,
        /// The server's message.
        message: String,
    },
    /// The server could not be reached or answered nonsense.
    #[error("cannot reach the server: {0}")]
    Network(String),
    /// The protocol failed on our side (a bad message from the server, an abort...).
    #[error("protocol failed: {0}")]
    Protocol(#[from] tessera_core::Error),
    /// The server closed the protocol socket before the end.
    #[error("the server closed the session (code {code}): {reason}")]
    Closed {
        /// WebSocket close code (4408: expired, 4400: invalid message...).
        code: u16,
        /// The server's reason.
        reason: String,
    },
    /// The device and the server hold different epochs of a wallet's shares and no repair
    /// applies.
    #[error(
        "this device holds epoch {device} (pending {pending:?}) of the wallet, the server {server}"
    )]
    EpochMismatch {
        /// Our current epoch.
        device: u64,
        /// Our pending epoch, if any.
        pending: Option<u64>,
        /// The server's active epoch.
        server: u64,
    },
    /// A refresh was stopped by the caller's step hook (a failed write, or a test's crash).
    #[error("refresh stopped: {0}")]
    Stopped(#[source] HookError),
    /// Not logged in.
    #[error("not logged in: call login first")]
    NotLoggedIn,
    /// Another device refused the request, or its approval lapsed.
    #[error("refused: {0}")]
    Refused(String),
    /// The engine proved that another party of the session misbehaved (a failed consistency
    /// check it attributes, DKLs23 `BanCounterparty`): the party must be banned from the wallet
    /// ([`WalletRecord::ban`]; [`ServerClient::sign_wallet`] and [`ServerClient::refresh`] do).
    #[error("party {party} misbehaved in round {round} of session {session_id}: {reason}")]
    PartyBlamed {
        /// The blamed party.
        party: u8,
        /// The session, hex.
        session_id: String,
        /// The round whose message failed the check.
        round: u8,
        /// The engine's description.
        reason: String,
    },
    /// This device banned a party of the wallet; no session runs until the ban is lifted.
    #[error("refused: {0}")]
    Banned(String),
}

impl ClientError {
    /// Records the ban in `record` if this error is the engine's blame; returns whether it did.
    fn ban_into(&self, record: &mut WalletRecord) -> bool {
        match self {
            ClientError::PartyBlamed {
                party,
                session_id,
                round,
                reason,
            } => {
                record.ban(*party, session_id, *round, reason);
                true
            }
            _ => false,
        }
    }
}

/// Result of the client.
pub type Result<T> = std::result::Result<T, ClientError>;

/// A connection to one commitment server.
pub struct ServerClient {
    base: String,
    http: reqwest::Client,
    token: Option<String>,
    tls: std::sync::Arc<rustls::ClientConfig>,
}

/// What a caller's hook (storing a wallet record, a refresh step) fails with: its own error.
pub type HookError = Box<dyn std::error::Error + Send + Sync>;

fn net(e: impl std::fmt::Display) -> ClientError {
    ClientError::Network(e.to_string())
}

impl ServerClient {
    /// A client for the server at `base_url` (`https://…` verified against the web PKI, or
    /// `http://…` for a server on loopback).
    ///
    /// # Errors
    /// [`ClientError::Network`] for an unusable URL.
    pub fn new(base_url: &str) -> Result<Self> {
        Self::build(base_url, None)
    }

    /// A client that accepts only the server certificate with this SHA-256 fingerprint (64 hex
    /// digits, as `tessera server --dev-tls` prints).
    ///
    /// # Errors
    /// [`ClientError::Network`] for an unusable URL or fingerprint, or a non-https URL.
    pub fn with_pinned_certificate(base_url: &str, fingerprint: &str) -> Result<Self> {
        if !base_url.starts_with("https://") {
            return Err(net("a pinned certificate needs an https:// server URL"));
        }
        Self::build(
            base_url,
            Some(tls::parse_fingerprint(fingerprint).map_err(net)?),
        )
    }

    fn build(base_url: &str, pin: Option<[u8; 32]>) -> Result<Self> {
        let base = base_url.trim_end_matches('/').to_string();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(ClientError::Network(format!(
                "{base_url} is not an http(s) URL"
            )));
        }
        let tls = tls::client_config(pin).map_err(net)?;
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured((*tls).clone())
            .build()
            .map_err(net)?;
        Ok(ServerClient {
            base,
            http,
            token: None,
            tls,
        })
    }

    async fn answer<T: serde::de::DeserializeOwned>(resp: reqwest::Response) -> Result<T> {
        let status = resp.status();
        let body = resp.bytes().await.map_err(net)?;
        if status.is_success() {
            return serde_json::from_slice(&body)
                .map_err(|e| net(format!("unexpected answer: {e}")));
        }
        let (code, message) = match serde_json::from_slice::<api::ApiError>(&body) {
            Ok(e) => (e.error, e.message),
            Err(_) => (
                "unknown".into(),
                String::from_utf8_lossy(&body).into_owned(),
            ),
        };
        Err(ClientError::Server {
            status: status.as_u16(),
            code,
            message,
        })
    }

    async fn post<B: serde::Serialize, T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T> {
        let mut req = self.http.post(format!("{}{path}", self.base)).json(body);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        Self::answer(req.send().await.map_err(net)?).await
    }

    async fn put<B: serde::Serialize, T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T> {
        let mut req = self.http.put(format!("{}{path}", self.base)).json(body);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        Self::answer(req.send().await.map_err(net)?).await
    }

    async fn get<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T> {
        let mut req = self.http.get(format!("{}{path}", self.base));
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        Self::answer(req.send().await.map_err(net)?).await
    }

    /// `GET /status`.
    ///
    /// # Errors
    /// Network or server errors.
    pub async fn status(&self) -> Result<api::Status> {
        self.get("/status").await
    }

    /// Registers this device (or finds it again, after a reinstall that kept the identity key).
    ///
    /// # Errors
    /// Network or server errors.
    pub async fn register(
        &self,
        identity: &DeviceIdentity,
        user: &str,
        device_name: &str,
    ) -> Result<api::Device> {
        let key = identity.public_key();
        let signature = identity.sign(&api::register_message(user, device_name, &key));
        self.post(
            "/devices",
            &api::RegisterDevice {
                user: user.into(),
                device_name: device_name.into(),
                identity_key: hex::encode(key),
                signature: hex::encode(signature),
            },
        )
        .await
    }

    /// Answers a challenge with the identity key and keeps the token for later calls.
    ///
    /// # Errors
    /// Network or server errors (403 while the device is pending approval).
    pub async fn login(&mut self, identity: &DeviceIdentity, device_id: &str) -> Result<()> {
        let challenge: api::Challenge = self
            .post(
                "/auth/challenge",
                &api::ChallengeRequest {
                    device_id: device_id.into(),
                },
            )
            .await?;
        let bytes = hex::decode(&challenge.challenge).map_err(net)?;
        let signature = identity.sign(&api::auth_message(device_id, &bytes));
        let token: api::Token = self
            .post(
                "/auth/token",
                &api::TokenRequest {
                    device_id: device_id.into(),
                    challenge: challenge.challenge,
                    signature: hex::encode(signature),
                },
            )
            .await?;
        self.token = Some(token.token);
        Ok(())
    }

    /// The bearer token, for callers that need it (tests).
    #[must_use]
    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// `GET /devices`.
    ///
    /// # Errors
    /// Network or server errors.
    pub async fn devices(&self) -> Result<Vec<api::Device>> {
        self.get("/devices").await
    }

    /// `POST /devices/{id}/revoke`.
    ///
    /// # Errors
    /// Network or server errors.
    pub async fn revoke(&self, device_id: &str) -> Result<api::Device> {
        self.revoke_with(device_id, &api::RevokeDevice::default())
            .await
    }

    /// [`ServerClient::revoke`] with options: `force` revokes even the user's last active
    /// device (the server refuses that with 409 otherwise).
    ///
    /// # Errors
    /// Network or server errors.
    pub async fn revoke_with(
        &self,
        device_id: &str,
        options: &api::RevokeDevice,
    ) -> Result<api::Device> {
        self.post(&format!("/devices/{device_id}/revoke"), options)
            .await
    }

    /// Approves a pending device of our user, signing with our identity key. `code` is what the
    /// new device shows; the one pending device that shows it is approved.
    ///
    /// # Errors
    /// [`ClientError::Server`] 400 for a code of the wrong form, 404 when no pending device
    /// shows that code, 409 when several do (nothing is approved then).
    pub async fn approve(&self, identity: &DeviceIdentity, code: &str) -> Result<api::Device> {
        use approval::pending_device_with_code;
        let pending: Vec<api::Device> = self
            .devices()
            .await?
            .into_iter()
            .filter(|d| d.status == api::DeviceStatus::Pending)
            .collect();
        let (device, key) = pending_device_with_code(&pending, code)?;
        let signature = identity.sign(&api::approve_message(&device.device_id, &key));
        self.post(
            &format!("/devices/{}/approve", device.device_id),
            &api::ApproveDevice {
                signature: hex::encode(signature),
            },
        )
        .await
    }

    /// `POST /backups/verify`: the server checks a backup of one of our wallets' shares against
    /// the public share it derives itself, and records the outcome in its audit log.
    ///
    /// # Errors
    /// [`ClientError::Server`] 400 with the reason when the backup does not verify.
    pub async fn verify_backup(&self, backup: &[u8]) -> Result<api::BackupReport> {
        self.post(
            "/backups/verify",
            &api::VerifyBackup {
                backup: hex::encode(backup),
            },
        )
        .await
    }

    /// `POST /backups/server`: has the server back up its share of `wallet_id` under
    /// `structure` to `holders` (public keys as text), signed by our identity. To holders other
    /// than the wallet's fixed ones, the export is held for another device's approval or a time
    /// lock ([`api::ServerBackupOutcome::Held`]); the same call collects it afterwards.
    ///
    /// # Errors
    /// Network or server errors.
    pub async fn backup_server_share(
        &self,
        identity: &DeviceIdentity,
        wallet_id: &str,
        structure: &str,
        holders: Vec<String>,
    ) -> Result<api::ServerBackupOutcome> {
        let signature = identity.sign(&api::server_backup_message(wallet_id, structure, &holders));
        self.post(
            "/backups/server",
            &api::ServerBackupRequest {
                wallet_id: wallet_id.into(),
                structure: structure.into(),
                holders,
                signature: hex::encode(signature),
            },
        )
        .await
    }

    /// `POST /devices/{id}/recover`: this pending device proves that it holds `share` (the
    /// device share of one of its user's wallets, restored from a backup), which approves it,
    /// or, while the user has active devices, holds the recovery under a time lock
    /// ([`api::Recovery::Held`]; the same call after it ends approves the device).
    ///
    /// # Errors
    /// Network or server errors (401 when the proof does not verify).
    pub async fn recover_device(
        &self,
        identity: &DeviceIdentity,
        device_id: &str,
        share: &KeyShare,
    ) -> Result<api::Recovery> {
        let wallet_id = share.wallet_id().to_string();
        let message =
            api::recover_message(device_id, &identity.public_key(), &wallet_id, share.epoch());
        let proof = share.prove_possession(&message)?;
        self.post(
            &format!("/devices/{device_id}/recover"),
            &api::RecoverDevice {
                wallet_id: wallet_id.into(),
                epoch: share.epoch(),
                proof: hex::encode(proof),
                signature: hex::encode(identity.sign(&message)),
            },
        )
        .await
    }

    /// `GET /wallets`.
    ///
    /// # Errors
    /// Network or server errors.
    pub async fn wallets(&self) -> Result<Vec<api::WalletInfo>> {
        self.get("/wallets").await
    }

    /// `GET /pubkey?wallet=…`.
    ///
    /// # Errors
    /// Network or server errors.
    pub async fn pubkey(&self, wallet_id: &str) -> Result<api::WalletInfo> {
        self.get(&format!("/pubkey?wallet={wallet_id}")).await
    }

    /// `GET /audit[?wallet=…]`: the audit records of this user (or of one wallet), oldest first.
    ///
    /// # Errors
    /// Network or server errors.
    pub async fn audit(&self, wallet_id: Option<&str>) -> Result<Vec<api::AuditRecord>> {
        match wallet_id {
            Some(w) => self.get(&format!("/audit?wallet={w}")).await,
            None => self.get("/audit").await,
        }
    }

    /// `GET /audit/verify`: the server checks the whole audit chain.
    ///
    /// # Errors
    /// Network or server errors.
    pub async fn audit_verify(&self) -> Result<api::AuditVerification> {
        self.get("/audit/verify").await
    }

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
        let created: api::SessionCreated = self
            .post(
                "/sign",
                &api::SignIntentRequest {
                    wallet_id: share.wallet_id().into(),
                    path: path.to_string(),
                    kind: kind.clone(),
                    device_nonce: Some(hex::encode(ours)),
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
        if created.approval.as_deref() == Some("pending") {
            on_wait(&created.session_id);
            loop {
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                let status: api::SignStatus =
                    self.get(&format!("/sign/{}", created.session_id)).await?;
                match status.approval.as_str() {
                    "pending" => continue,
                    "approved" => break,
                    other => {
                        return Err(ClientError::Refused(format!("the approval was {other}")));
                    }
                }
            }
        }
        let nonce = run_nonce(&ours, &created)?;
        let request = SignRequest {
            nonce,
            signers: vec![DEVICE, SERVER],
            digest,
            path: path.clone(),
        };
        let session = SignSession::new(share, &request)?;
        let signature = self.run(&created.session_id, session, on_round).await?;
        share.public_key_at(path)?.verify(&digest, &signature)?;
        Ok(signature)
    }

    /// `GET /policy?wallet=…`.
    ///
    /// # Errors
    /// Network or server errors.
    pub async fn policy(&self, wallet_id: &str) -> Result<api::PolicyInfo> {
        self.get(&format!("/policy?wallet={wallet_id}")).await
    }

    /// Sets a wallet's policy (the next version), signed with this device's identity key.
    ///
    /// # Errors
    /// Network or server errors (409 if it changed meanwhile); a change held for another
    /// device's approval is [`ClientError::Server`] 202 `held` (see [`Self::propose_policy`]).
    pub async fn set_policy(
        &self,
        identity: &DeviceIdentity,
        wallet_id: &str,
        policy: &api::Policy,
    ) -> Result<api::PolicyInfo> {
        match self.propose_policy(identity, wallet_id, policy).await? {
            api::PolicyChange::Applied(info) => Ok(info),
            api::PolicyChange::Held(action) => Err(ClientError::Server {
                status: 202,
                code: "held".into(),
                message: format!(
                    "the change weakens a policy that requires approval: held as {} for another device's approval",
                    action.id
                ),
            }),
        }
    }

    /// Proposes a wallet's next policy version, signed with this device's identity key: applied
    /// at once, or (a weakening of a policy that requires approval) held for another active
    /// device's approval; sending the same proposal again applies it once approved or once its
    /// time lock ended.
    ///
    /// # Errors
    /// Network or server errors (409 if it changed meanwhile).
    pub async fn propose_policy(
        &self,
        identity: &DeviceIdentity,
        wallet_id: &str,
        policy: &api::Policy,
    ) -> Result<api::PolicyChange> {
        let current = self.policy(wallet_id).await?;
        let version = current.version + 1;
        let text = serde_json::to_string(policy).map_err(net)?;
        let signature = hex::encode(identity.sign(&api::policy_message(wallet_id, version, &text)));
        self.put(
            "/policy",
            &api::SetPolicy {
                wallet_id: wallet_id.into(),
                version,
                policy: policy.clone(),
                signature,
            },
        )
        .await
    }

    /// `GET /bans?wallet=…`: the server's bans of the wallet's parties, in force and lifted.
    ///
    /// # Errors
    /// Network or server errors.
    pub async fn bans(&self, wallet_id: &str) -> Result<Vec<api::Ban>> {
        self.get(&format!("/bans?wallet={wallet_id}")).await
    }

    /// Approves lifting a ban the server holds against a party of one of our wallets, signed with
    /// this device's identity key (this must be another device than the one the ban names); the
    /// next complete refresh of the wallet lifts it.
    ///
    /// # Errors
    /// Network or server errors (403 from the banned device itself).
    pub async fn approve_ban_lift(
        &self,
        identity: &DeviceIdentity,
        ban: &api::Ban,
    ) -> Result<api::Ban> {
        let signature =
            hex::encode(identity.sign(&api::ban_lift_message(&ban.wallet_id, &ban.ban_id)));
        self.post(
            &format!("/bans/{}/approve-lift", ban.ban_id),
            &api::ApproveBanLift { signature },
        )
        .await
    }

    /// `GET /approvals`: signing requests of this user waiting for another device.
    ///
    /// # Errors
    /// Network or server errors.
    pub async fn approvals(&self) -> Result<Vec<api::PendingApproval>> {
        self.get("/approvals").await
    }

    /// `GET /actions`: actions of this user held for a device's approval or a time lock.
    ///
    /// # Errors
    /// Network or server errors.
    pub async fn held_actions(&self) -> Result<Vec<api::HeldAction>> {
        self.get("/actions").await
    }

    /// Approves (another device's) or cancels (any) held action, signed with this device's
    /// identity key over the action and its request's digest.
    ///
    /// # Errors
    /// Network or server errors (403 approving our own request).
    pub async fn decide_held(
        &self,
        identity: &DeviceIdentity,
        action: &api::HeldAction,
        approve: bool,
    ) -> Result<api::HeldAction> {
        let signature = hex::encode(identity.sign(&api::held_action_message(
            &action.id,
            &action.digest,
            approve,
        )));
        self.post(
            &format!("/actions/{}", action.id),
            &api::DecideHeldAction { approve, signature },
        )
        .await
    }

    /// Approves (or refuses) a pending signing request of another device, signed with this
    /// device's identity key over what will be signed.
    ///
    /// # Errors
    /// Network or server errors.
    pub async fn decide(
        &self,
        identity: &DeviceIdentity,
        request: &api::PendingApproval,
        approve: bool,
    ) -> Result<api::SignStatus> {
        let signature = hex::encode(identity.sign(&api::sign_approval_message(
            &request.session_id,
            &request.digest,
            approve,
        )));
        self.post(
            &format!("/approvals/{}", request.session_id),
            &api::ApproveSign { approve, signature },
        )
        .await
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
        let fresh = exchange(&mut socket, &mut session, |r| {
            step(RefreshStep::Round(r), record).map_err(ClientError::Stopped)
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

    async fn connect(&self, session_id: &str) -> Result<Socket> {
        let token = self.token.as_ref().ok_or(ClientError::NotLoggedIn)?;
        let ws_base = self.base.replacen("http", "ws", 1);
        let mut request = format!("{ws_base}/ws?session_id={session_id}")
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
    async fn run<S: Session>(
        &self,
        session_id: &str,
        mut session: S,
        mut on_round: impl FnMut(u8, u8),
    ) -> Result<S::Output> {
        let mut socket = self.connect(session_id).await?;
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
    /// A protocol round completed (nothing to store).
    Round(u8),
    /// The new share is `record.pending`: store the record now, before the commit is sent.
    PendingStored,
    /// The commit was sent; the server may have switched already.
    CommitSent,
    /// Both sides switched: `record.current` is the new share; store the record.
    Switched,
    /// The engine blamed the server: `record.bans` holds the ban; store the record.
    Banned,
}

type Socket =
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
fn drive_error(session_id: tessera_core::SessionId, e: DriveError<ClientError>) -> ClientError {
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
        DriveError::Expired => net("the server went quiet"),
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
