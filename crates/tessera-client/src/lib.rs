//! Tessera client SDK: the device side (party 0) of a wallet shared with a commitment server.
//!
//! [`ServerClient`] registers the device, authenticates with its identity key, creates sessions
//! over REST and runs each protocol over one WebSocket with `tessera-core`'s sans-IO sessions.
//! [`device::Device`] is the device SDK on top: every device workflow (set-up, wallets, signing,
//! refresh, approvals, policies, backups, recovery) over a device home, for any front end.
#![forbid(unsafe_code)]
#![deny(missing_docs, clippy::unwrap_used)]

mod approval;
pub mod device;
mod error;
pub mod parties;
pub mod peer;
pub mod reshare;
pub mod service;
mod session;
pub mod session_socket;
pub mod tls;
mod wallet;

pub use error::{ClientError, HookError, Result};
pub use session::RefreshStep;
pub use wallet::{PartyBan, WalletRecord};

use tessera_api as api;
use tessera_core::{KeyShare, PartyIndex};
use tessera_store::DeviceIdentity;

use error::net;

/// The device is party 0, the server party 1.
pub const DEVICE: PartyIndex = PartyIndex::new(0);
/// The server's party index.
pub const SERVER: PartyIndex = PartyIndex::new(1);

/// A connection to one commitment server.
pub struct ServerClient {
    base: String,
    http: reqwest::Client,
    token: Option<String>,
    tls: std::sync::Arc<rustls::ClientConfig>,
}

impl std::fmt::Debug for ServerClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The bearer token stays out.
        f.debug_struct("ServerClient")
            .field("base", &self.base)
            .field("logged_in", &self.token.is_some())
            .finish_non_exhaustive()
    }
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

    /// `GET /wallet?wallet=…`: the wallet with its structure and parties.
    ///
    /// # Errors
    /// Network or server errors.
    pub async fn wallet_detail(&self, wallet_id: &str) -> Result<api::WalletDetail> {
        self.get(&format!("/wallet?wallet={wallet_id}")).await
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
    /// Network or server errors (409 if it changed meanwhile); a change that does not apply at
    /// once is [`ClientError::Server`] 202: `held` (for another device's approval) or
    /// `proposed` (for the signatures of the policy's admin quorum) — see
    /// [`Self::submit_policy`].
    pub async fn set_policy(
        &self,
        identity: &DeviceIdentity,
        wallet_id: &str,
        policy: &api::Policy,
    ) -> Result<api::PolicyInfo> {
        match self.submit_policy(identity, wallet_id, policy).await? {
            api::proposals::PolicyOutcome::Applied(info) => Ok(*info),
            api::proposals::PolicyOutcome::Held(action) => Err(ClientError::Server {
                status: 202,
                code: "held".into(),
                message: format!(
                    "the change weakens a policy that requires approval: held as {} for another device's approval",
                    action.id
                ),
            }),
            api::proposals::PolicyOutcome::Proposed(proposal) => Err(ClientError::Server {
                status: 202,
                code: "proposed".into(),
                message: format!(
                    "the policy names an admin quorum: proposed as {}, it applies once {} have signed it",
                    proposal.id, proposal.waiting_for
                ),
            }),
        }
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
}
