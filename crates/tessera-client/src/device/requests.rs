//! Durable signing requests (issue 16) from a device: create one that waits for approvals and
//! for offline co-signers (`POST /requests`), list and read them, approve or refuse one (an
//! identity signature over [`tessera_api::requests::request_decision_message`]), co-sign a
//! `ready` one ([`Online::sign_request`]), and follow the device's event stream
//! ([`Online::events`], `GET /events`, resumable with a cursor).
//!
//! The device never signs a digest it did not compute: before it approves or co-signs, it
//! decodes the request's intent itself ([`tessera_api::intent::decode`]; for a PSBT input, the
//! BIP-174 plan with the wallet's key, as [`Online::sign_psbt`] does) and refuses a request
//! whose digest, kind or path is not what the server says. The signature is returned only once
//! it verifies under the wallet's key at the request's path.

use std::collections::BTreeMap;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tessera_api as api;
use tessera_api::RequestState;
use tessera_api::intent::{Decoded, SignKind};
use tessera_api::requests::{
    CreateRequest, DecideRequest, DeviceEvent, RequestInfo, RequestQuery, request_decision_message,
};
use tessera_core::protocols::{SignRequest, SignSession, fresh_nonce, joint_nonce};
use tessera_core::{DerivationPath, KeyShare, PublicKey, Signature};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use super::DeviceError;
use super::online::{Online, Signed};
use crate::error::net;
use crate::{ClientError, DEVICE, SERVER, WalletRecord};

/// A request's signature, checked against the wallet's key.
#[derive(Debug)]
pub struct RequestSignature {
    /// The signature (low-S, its recovery id checked).
    pub signature: Signature,
    /// The key it verifies under: the wallet's key at the request's path.
    pub public_key: PublicKey,
    /// The digest it signs, as this device computed it from the request's intent.
    pub digest: [u8; 32],
}

fn invalid(why: String) -> DeviceError {
    DeviceError::InvalidRequest(tessera_core::Error::InvalidParameters(why))
}

fn refused(why: String) -> DeviceError {
    DeviceError::Client(ClientError::Refused(why))
}

/// Decodes `info`'s intent here and checks it is what the server says: the same kind, a path
/// that parses, and the same digest. The device never signs (nor approves) a digest it did not
/// compute itself.
///
/// # Errors
/// [`DeviceError::InvalidRequest`] naming what differs.
pub fn check_request(info: &RequestInfo) -> Result<(Decoded, DerivationPath), DeviceError> {
    let decoded = tessera_api::intent::decode(&info.intent).map_err(|e| {
        invalid(format!(
            "request {}: its intent does not decode on this device: {e}",
            info.id
        ))
    })?;
    if info.intent.request_kind() != info.kind {
        return Err(invalid(format!(
            "request {}: the server says it is a {} request, its intent is a {}",
            info.id,
            info.kind,
            info.intent.request_kind()
        )));
    }
    let ours = hex::encode(decoded.digest);
    if !info.digest.eq_ignore_ascii_case(&ours) {
        return Err(invalid(format!(
            "request {}: the server's digest {} is not the digest this device computed from \
             its intent ({ours}); refusing to sign it",
            info.id, info.digest
        )));
    }
    let path: DerivationPath = info
        .path
        .parse()
        .map_err(|e| invalid(format!("request {}: path {:?}: {e}", info.id, info.path)))?;
    Ok((decoded, path))
}

/// A request id as given by a person or the server: hex, checked before it goes into a URL.
fn checked_id(id: &str) -> Result<&str, DeviceError> {
    if id.is_empty() || id.len() > 128 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(invalid(format!(
            "request id {id:?}: expected the hex id `tessera requests list` shows"
        )));
    }
    Ok(id)
}

/// Checks a btc-psbt request's input against the wallet's own plan of the PSBT (BIP-174): the
/// input is the wallet's, at the request's path.
fn check_psbt_input(
    share: &KeyShare,
    kind: &SignKind,
    path: &DerivationPath,
) -> Result<(), DeviceError> {
    let SignKind::BtcPsbt {
        psbt,
        network,
        input,
    } = kind
    else {
        return Ok(());
    };
    let parsed =
        tessera_api::btc::parse_psbt(psbt.as_bytes()).map_err(DeviceError::InvalidRequest)?;
    let key = tessera_api::btc::WalletKey {
        public_key: share.public_key().to_compressed(),
        chain_code: share.chain_code(),
    };
    let plan = tessera_api::btc::plan(&parsed, &key, path, *network)
        .map_err(DeviceError::InvalidRequest)?;
    let ours = plan
        .to_sign
        .iter()
        .any(|i| i.index == *input as usize && &i.path == path);
    if !ours {
        return Err(invalid(format!(
            "PSBT input {input} is not this wallet's at path {path}: refusing to sign it"
        )));
    }
    Ok(())
}

/// Checks a request's stored signature (r ‖ s ‖ v hex, `v` the recovery id, raw or + 27) over
/// `digest` under `public_key`.
fn parse_signature(
    text: &str,
    digest: &[u8; 32],
    public_key: &PublicKey,
) -> Result<Signature, DeviceError> {
    let bad = |why: &str| DeviceError::Protocol(tessera_core::Error::InvalidSignature(why.into()));
    let bytes = hex::decode(text).map_err(|_| bad("the request's signature is not hex"))?;
    if bytes.len() != 65 {
        return Err(bad("the request's signature is not 65 bytes (r || s || v)"));
    }
    let (mut r, mut s) = ([0u8; 32], [0u8; 32]);
    r.copy_from_slice(&bytes[..32]);
    s.copy_from_slice(&bytes[32..64]);
    // Verifies under the key (it finds the recovery id by recovering it).
    let signature =
        Signature::from_scalars(r, s, digest, public_key).map_err(DeviceError::Protocol)?;
    let v = bytes[64];
    if signature.s() != s || (v != signature.recovery_id() && v != signature.recovery_id() + 27) {
        return Err(bad(
            "the request's signature is not in low-S form with its recovery id",
        ));
    }
    Ok(signature)
}

impl Online {
    /// The server's id of this user's wallet `name` (the device need not hold a share of it:
    /// another device of the user may create and follow its requests).
    async fn wallet_id_by_name(&self, name: &str) -> Result<api::WalletId, DeviceError> {
        self.client
            .wallets()
            .await?
            .into_iter()
            .find(|w| w.name == name)
            .map(|w| w.wallet_id)
            .ok_or_else(|| {
                refused(format!(
                    "no wallet named {name:?} among this user's (tessera wallets lists them)"
                ))
            })
    }

    /// The name of the wallet `wallet_id` when this device holds a share of it.
    async fn local_wallet_name(
        &self,
        wallet_id: &api::WalletId,
    ) -> Result<Option<String>, DeviceError> {
        let local = self.keystore.list_wallets()?;
        Ok(self
            .client
            .wallets()
            .await?
            .into_iter()
            .find(|w| &w.wallet_id == wallet_id && local.contains(&w.name))
            .map(|w| w.name))
    }

    /// The ids of the wallets this device holds a share of, with their names.
    ///
    /// # Errors
    /// [`DeviceError::Client`], [`DeviceError::Store`].
    pub async fn held_wallets(&self) -> Result<BTreeMap<api::WalletId, String>, DeviceError> {
        Ok(self
            .wallets()
            .await?
            .into_iter()
            .filter(|w| w.share_on_this_device)
            .map(|w| (w.info.wallet_id, w.info.name))
            .collect())
    }

    /// Creates a durable signing request of what `kind` describes with this user's wallet
    /// `wallet` (by name; this device need not hold a share of it) under `path`; it waits for
    /// its approvals and for its co-signers to be online, up to `expires_in` (absent: the
    /// policy's default; at most [`api::requests::MAX_REQUEST_EXPIRY_SECS`]). The intent is
    /// decoded here first, and the server's digest must be the one computed here.
    ///
    /// # Errors
    /// [`DeviceError::InvalidRequest`] (an intent that does not decode, an expiry out of
    /// range, a digest the server computed otherwise), [`DeviceError::Client`] (a policy
    /// denial names its rule).
    pub async fn create_request(
        &self,
        wallet: &str,
        path: &DerivationPath,
        kind: &SignKind,
        expires_in: Option<Duration>,
    ) -> Result<RequestInfo, DeviceError> {
        let decoded = tessera_api::intent::decode(kind).map_err(DeviceError::InvalidRequest)?;
        let expires_in_secs = match expires_in {
            None => None,
            Some(d) if d.as_secs() == 0 => {
                return Err(invalid("the expiry must be at least one second".into()));
            }
            Some(d) if d.as_secs() > api::requests::MAX_REQUEST_EXPIRY_SECS => {
                return Err(invalid(format!(
                    "the expiry {} s is longer than the most a request may wait ({} s, 7 days)",
                    d.as_secs(),
                    api::requests::MAX_REQUEST_EXPIRY_SECS
                )));
            }
            Some(d) => Some(d.as_secs()),
        };
        let body = CreateRequest {
            wallet_id: self.wallet_id_by_name(wallet).await?,
            path: path.to_string(),
            kind: kind.clone(),
            expires_in_secs,
        };
        let info: RequestInfo = self.client.post("/requests", &body).await?;
        if !info
            .digest
            .eq_ignore_ascii_case(&hex::encode(decoded.digest))
        {
            return Err(invalid(format!(
                "the server recorded request {} with digest {}, not the digest this device \
                 computed ({})",
                info.id,
                info.digest,
                hex::encode(decoded.digest)
            )));
        }
        Ok(info)
    }

    /// The requests of this user's wallets, filtered by `query` (a wallet id, a state).
    ///
    /// # Errors
    /// [`DeviceError::Client`].
    pub async fn requests(&self, query: &RequestQuery) -> Result<Vec<RequestInfo>, DeviceError> {
        let mut parts = Vec::new();
        if let Some(wallet) = &query.wallet {
            parts.push(format!("wallet={}", checked_id(wallet)?));
        }
        if let Some(state) = query.state {
            parts.push(format!("state={}", state.as_str()));
        }
        let path = if parts.is_empty() {
            "/requests".to_string()
        } else {
            format!("/requests?{}", parts.join("&"))
        };
        Ok(self.client.get(&path).await?)
    }

    /// [`Self::requests`] of wallet `name` (by name).
    ///
    /// # Errors
    /// As [`Self::requests`]; [`DeviceError::Client`] for a name the user has no wallet by.
    pub async fn requests_of(
        &self,
        name: Option<&str>,
        state: Option<RequestState>,
    ) -> Result<Vec<RequestInfo>, DeviceError> {
        let wallet = match name {
            Some(name) => Some(self.wallet_id_by_name(name).await?),
            None => None,
        };
        self.requests(&RequestQuery { wallet, state }).await
    }

    /// The request `id`.
    ///
    /// # Errors
    /// [`DeviceError::InvalidRequest`] for an id that is not hex, [`DeviceError::Client`]
    /// (404: no such request of this user's).
    pub async fn request(&self, id: &str) -> Result<RequestInfo, DeviceError> {
        let id = checked_id(id)?;
        Ok(self.client.get(&format!("/requests/{id}")).await?)
    }

    /// Approves (or refuses) request `id`: fetches it, checks its digest against its intent
    /// decoded here ([`check_request`]), and signs the decision over the summary it fetched.
    /// Show that summary to the person first: fetch with [`Self::request`], show it, and call
    /// [`Self::decide_fetched`] with what was shown.
    ///
    /// # Errors
    /// As [`Self::decide_fetched`].
    pub async fn decide_request(
        &self,
        id: &str,
        approve: bool,
    ) -> Result<RequestInfo, DeviceError> {
        let info = self.request(id).await?;
        self.decide_fetched(&info, approve).await
    }

    /// Approves (or refuses) the request `info` as fetched (and shown): this device's identity
    /// signature over its id, digest and summary ([`request_decision_message`]), so that the
    /// decision holds for nothing else. The request as it is after the decision.
    ///
    /// # Errors
    /// [`DeviceError::InvalidRequest`] when the intent does not give the server's digest;
    /// [`DeviceError::Client`] (a request that is not awaiting approval, a device that is not
    /// one of its approvers).
    pub async fn decide_fetched(
        &self,
        info: &RequestInfo,
        approve: bool,
    ) -> Result<RequestInfo, DeviceError> {
        check_request(info)?;
        let id = checked_id(&info.id)?;
        let message = request_decision_message(id, &info.digest, &info.summary, approve);
        let body = DecideRequest {
            summary: info.summary.clone(),
            signature: hex::encode(self.identity.sign(&message)),
        };
        let verb = if approve { "approve" } else { "refuse" };
        Ok(self
            .client
            .post(&format!("/requests/{id}/{verb}"), &body)
            .await?)
    }

    /// Co-signs the `ready` request `id` with this device's share: fetches it, decodes its
    /// intent here and refuses it unless the server's digest is the one computed here (for a
    /// PSBT input, also unless the wallet's own plan has that input at that path), opens its
    /// session (`POST /requests/{id}/session`), runs this device's party (a structure wallet's
    /// other co-signers `with`, party labels, join from their `tessera listen`; empty: the
    /// server picks them among those online) and returns the signature once it verifies under
    /// the wallet's key at the request's path. `on_round(r, total)` reports progress.
    ///
    /// # Errors
    /// [`DeviceError::InvalidRequest`] (a digest this device did not compute),
    /// [`DeviceError::Client`] ([`ClientError::Refused`] for a request that is not ready:
    /// refused, expired, signed…, or a wallet this device holds no share of; the server's
    /// refusal), [`DeviceError::Store`].
    pub async fn sign_request(
        &self,
        id: &str,
        with: &[String],
        on_round: impl FnMut(u8, u8),
    ) -> Result<Signed, DeviceError> {
        let info = self.request(id).await?;
        self.sign_fetched(&info, with, on_round).await
    }

    /// [`Self::sign_request`] of the request `info` as fetched.
    ///
    /// # Errors
    /// As [`Self::sign_request`].
    pub async fn sign_fetched(
        &self,
        info: &RequestInfo,
        with: &[String],
        on_round: impl FnMut(u8, u8),
    ) -> Result<Signed, DeviceError> {
        let id = checked_id(&info.id)?.to_string();
        match info.state {
            RequestState::Ready => {}
            RequestState::AwaitingApproval => {
                return Err(refused(format!(
                    "request {id} still waits for its approvals (tessera requests show {id})"
                )));
            }
            RequestState::Signing => {
                return Err(refused(format!(
                    "request {id} is being signed already (another device opened its session)"
                )));
            }
            state => {
                let why = info
                    .detail
                    .as_deref()
                    .map(|d| format!(": {d}"))
                    .unwrap_or_default();
                return Err(refused(format!(
                    "request {id} is {state}{why}; it can no longer be signed"
                )));
            }
        }
        check_request(info)?;
        let name = self
            .local_wallet_name(&info.wallet_id)
            .await?
            .ok_or_else(|| {
                refused(format!(
                    "this device holds no share of wallet {} (request {id}): it is signed on a \
                 device that does",
                    info.wallet_id
                ))
            })?;
        let mut record = self.wallet(&name)?;
        self.sign_fetched_wallet(info, &name, &mut record, with, on_round)
            .await
    }

    /// [`Self::sign_fetched`] with the record of wallet `name` the caller loaded already
    /// ([`Self::wallet`]; an agent that signs many requests unseals it once); a changed record
    /// (a repair, a ban) is stored and left in `record`.
    ///
    /// # Errors
    /// As [`Self::sign_request`]; [`DeviceError::InvalidRequest`] when `record` is not the
    /// request's wallet.
    pub async fn sign_fetched_wallet(
        &self,
        info: &RequestInfo,
        name: &str,
        record: &mut WalletRecord,
        with: &[String],
        on_round: impl FnMut(u8, u8),
    ) -> Result<Signed, DeviceError> {
        let id = checked_id(&info.id)?.to_string();
        if info.state != RequestState::Ready {
            return Err(refused(format!(
                "request {id} is {}, not ready",
                info.state
            )));
        }
        if record.current.wallet_id().to_string() != info.wallet_id.as_str() {
            return Err(invalid(format!(
                "request {id} is of wallet {}, not of this device's wallet {name}",
                info.wallet_id
            )));
        }
        let (decoded, path) = check_request(info)?;
        check_psbt_input(&record.current, &info.intent, &path)?;
        self.settle_with_server(name, record).await?;
        let signature = self
            .run_request_session(&id, name, record, info, &decoded, &path, with, on_round)
            .await?;
        // Verified once more here, whichever way it ran: the wallet's key at the path, the
        // digest computed on this device.
        let signed = super::online::signed(&record.current, &info.intent, &path, signature)?;
        signed
            .public_key
            .verify(&decoded.digest, &signed.signature)
            .map_err(DeviceError::Protocol)?;
        Ok(signed)
    }

    /// Opens request `id`'s session and runs this device's party of it.
    #[allow(clippy::too_many_arguments)] // the request's parts, checked by the caller
    async fn run_request_session(
        &self,
        id: &str,
        name: &str,
        record: &mut WalletRecord,
        info: &RequestInfo,
        decoded: &Decoded,
        path: &DerivationPath,
        with: &[String],
        on_round: impl FnMut(u8, u8),
    ) -> Result<Signature, DeviceError> {
        record.refuse_if_banned()?;
        let share = &record.current;
        let ours = fresh_nonce();
        let mut body = serde_json::json!({ "device_nonce": hex::encode(ours) });
        if !with.is_empty() {
            body["with"] = serde_json::json!(with);
        }
        let created: api::SessionCreated = self
            .client
            .post(&format!("/requests/{id}/session"), &body)
            .await?;
        if created.epoch != share.epoch() {
            return Err(ClientError::EpochMismatch {
                device: share.epoch(),
                pending: None,
                server: created.epoch,
            }
            .into());
        }
        let mut server = [0u8; 32];
        hex::decode_to_slice(&created.nonce, &mut server)
            .map_err(|_| net("the server sent a malformed nonce"))?;
        let nonce = joint_nonce(&[ours, server]);
        let Some(parties) = created.parties else {
            // A 2-of-2 wallet: this device (party 0) and the server, as after `POST /sign`.
            let request = SignRequest {
                nonce,
                signers: vec![DEVICE, SERVER],
                digest: decoded.digest,
                path: path.clone(),
            };
            let session = SignSession::new(share, &request).map_err(ClientError::from)?;
            let result = self
                .run_two_party(created.session_id.as_str(), session, on_round)
                .await;
            if let Err(e) = &result
                && e.ban_into(record)
            {
                self.store(name, record).map_err(ClientError::Stopped)?;
            }
            let signature = result?;
            return Ok(signature);
        };
        // A structure wallet: this device opened the session; it runs as a party joining it
        // would, the other co-signers joining from their agents.
        let session = api::JoinableSession {
            session_id: created.session_id,
            wallet_id: info.wallet_id.clone(),
            wallet_name: name.to_string(),
            protocol: "sign".into(),
            sign: Some(api::JoinableSign {
                path: path.to_string(),
                kind: info.intent.clone(),
            }),
            reshare: None,
            nonce: hex::encode(nonce),
            epoch: created.epoch,
            requested_by: String::new(),
            created_at: 0,
            parties,
            invitation: None,
        };
        self.pinning(async |known| {
            let trust = |party: &api::SessionParty, key| known.trust(party, key);
            (self.client)
                .join_sign(share, &session, &self.identity, trust, on_round)
                .await
        })
        .await
    }

    /// Runs a 2-of-2 signing session over `GET /ws?session_id=…` with the one driver, then
    /// waits for the server's close (1000 once it has stored the signature).
    async fn run_two_party(
        &self,
        session_id: &str,
        session: SignSession,
        on_round: impl FnMut(u8, u8),
    ) -> Result<Signature, ClientError> {
        self.client.run(session_id, session, on_round).await
    }

    /// The signature of the signed request `info`, checked: the digest computed here from its
    /// intent, the wallet's key at its path (from this device's share when it holds one; from
    /// the key the server lists for the wallet at path `m` otherwise). `None` while it is not
    /// signed.
    ///
    /// # Errors
    /// [`DeviceError::InvalidRequest`] (a digest computed otherwise, a path other than `m` of
    /// a wallet this device holds no share of), [`DeviceError::Protocol`] (a signature that does
    /// not verify).
    pub async fn request_signature(
        &self,
        info: &RequestInfo,
    ) -> Result<Option<RequestSignature>, DeviceError> {
        let Some(text) = &info.signature else {
            return Ok(None);
        };
        let (decoded, path) = check_request(info)?;
        let public_key = match self.local_wallet_name(&info.wallet_id).await? {
            Some(name) => self
                .wallet(&name)?
                .current
                .public_key_at(&path)
                .map_err(DeviceError::Protocol)?,
            None if path.to_string() == "m" => {
                let listed = self.client.pubkey(info.wallet_id.as_str()).await?;
                PublicKey::from_hex(&listed.public_key).map_err(DeviceError::Protocol)?
            }
            None => {
                return Err(invalid(format!(
                    "request {}: this device holds no share of the wallet to derive its key at \
                     {path}; check the signature on a device that does",
                    info.id
                )));
            }
        };
        let signature = parse_signature(text, &decoded.digest, &public_key)?;
        Ok(Some(RequestSignature {
            signature,
            public_key,
            digest: decoded.digest,
        }))
    }

    /// This device's event stream from after `cursor` (0: from the start): requests waiting
    /// for its approval or ready for it to co-sign, its requests that ended, devices to
    /// approve, resharings to join. The stream reconnects by itself (with backoff) from the
    /// last cursor it gave out, so that nothing is missed; keep that cursor
    /// ([`EventStream::cursor`]) to resume after a restart.
    #[must_use]
    pub fn events(&self, cursor: u64) -> EventStream<'_> {
        EventStream {
            online: self,
            cursor,
            socket: None,
            failures: 0,
        }
    }

    async fn connect_events(&self, after: u64) -> Result<crate::session::Socket, ClientError> {
        let token = self.client.token.as_ref().ok_or(ClientError::NotLoggedIn)?;
        let ws_base = self.client.base.replacen("http", "ws", 1);
        let mut request = format!("{ws_base}/events?after={after}")
            .into_client_request()
            .map_err(net)?;
        request.headers_mut().insert(
            "authorization",
            format!("Bearer {token}").parse().map_err(net)?,
        );
        let connector = tokio_tungstenite::Connector::Rustls(self.client.tls.clone());
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
                            code: "events".into(),
                            message,
                        }
                    }
                    other => net(other),
                })?;
        Ok(socket)
    }
}

/// The device's event stream ([`Online::events`]): [`EventStream::next`] gives each event once,
/// in order, reconnecting (1 s, doubling to 30 s) after a dropped connection or a server that
/// is away. Cancel-safe: a `next` dropped before it returns loses no event.
pub struct EventStream<'a> {
    online: &'a Online,
    cursor: u64,
    socket: Option<crate::session::Socket>,
    failures: u32,
}

impl std::fmt::Debug for EventStream<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventStream")
            .field("cursor", &self.cursor)
            .field("connected", &self.socket.is_some())
            .finish_non_exhaustive()
    }
}

/// The longest wait between two reconnections.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

impl EventStream<'_> {
    /// The cursor of the last event given out (where a new stream resumes).
    #[must_use]
    pub fn cursor(&self) -> u64 {
        self.cursor
    }

    /// The next event, waiting for it.
    ///
    /// # Errors
    /// [`DeviceError::Client`] with status 401 when the token expired (log in again with
    /// [`Online::login_again`] and resume from [`Self::cursor`]) or 403/404 (a revoked device,
    /// a server without an event stream): nothing a reconnection mends. Network failures are
    /// retried, not returned.
    pub async fn next(&mut self) -> Result<DeviceEvent, DeviceError> {
        loop {
            if self.socket.is_none() {
                if self.failures > 0 {
                    let exp = self.failures.saturating_sub(1).min(5);
                    let wait = Duration::from_secs(1u64 << exp).min(MAX_BACKOFF);
                    tokio::time::sleep(wait).await;
                }
                match self.online.connect_events(self.cursor).await {
                    Ok(socket) => self.socket = Some(socket),
                    Err(ClientError::Server {
                        status,
                        code,
                        message,
                    }) if matches!(status, 400..=499) && status != 429 => {
                        return Err(ClientError::Server {
                            status,
                            code,
                            message,
                        }
                        .into());
                    }
                    // Away, or unreachable: try again after the backoff.
                    Err(_) => {
                        self.failures = self.failures.saturating_add(1);
                        continue;
                    }
                }
            }
            let Some(socket) = self.socket.as_mut() else {
                continue;
            };
            match socket.next().await {
                Some(Ok(Message::Text(text))) => {
                    let event: DeviceEvent = match serde_json::from_str(&text) {
                        Ok(event) => event,
                        Err(e) => {
                            return Err(
                                net(format!("the server sent an unreadable event: {e}")).into()
                            );
                        }
                    };
                    self.failures = 0;
                    // A reconnection may repeat what was given out already.
                    if event.cursor <= self.cursor {
                        continue;
                    }
                    self.cursor = event.cursor;
                    return Ok(event);
                }
                Some(Ok(Message::Ping(p))) => {
                    let _ = socket.send(Message::Pong(p)).await;
                }
                Some(Ok(Message::Close(_)) | Err(_)) | None => {
                    self.socket = None;
                    self.failures = self.failures.saturating_add(1);
                }
                Some(Ok(_)) => {}
            }
        }
    }
}

/// The event cursor record's format version.
const CURSOR_VERSION: u16 = 1;

#[derive(serde::Serialize, serde::Deserialize)]
struct CursorRecord {
    cursor: u64,
}

/// The last event cursor this device's agent handled (0: none), from the device home's
/// storage ([`tessera_store::HomeRecord::EventCursor`]).
///
/// # Errors
/// [`DeviceError::Store`] when the storage cannot be read, [`DeviceError::Damaged`] for a
/// record that does not parse or is of a newer format.
pub fn load_event_cursor(device: &super::Device) -> Result<u64, DeviceError> {
    let home = device.home();
    match home.get(tessera_store::HomeRecord::EventCursor)? {
        None => Ok(0),
        Some(bytes) => super::record::decode::<CursorRecord>(
            &bytes,
            home,
            tessera_store::HomeRecord::EventCursor,
            CURSOR_VERSION,
        )
        .map(|r| r.cursor),
    }
}

/// Keeps `cursor` as the last event this device's agent handled.
///
/// # Errors
/// [`DeviceError::Store`] when the storage cannot be written.
pub fn save_event_cursor(device: &super::Device, cursor: u64) -> Result<(), DeviceError> {
    let text = super::record::encode(&CursorRecord { cursor }, CURSOR_VERSION)?;
    Ok(device
        .home()
        .put(tessera_store::HomeRecord::EventCursor, text.as_bytes())?)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn info(kind: SignKind, digest: &str) -> RequestInfo {
        RequestInfo {
            id: api::RequestId::new("ab12"),
            wallet_id: api::WalletId::new("00ff"),
            state: RequestState::Ready,
            created_by: api::requests::Creator::Device(api::DeviceId::new("d1")),
            kind: kind.request_kind(),
            summary: "what the server says".into(),
            digest: digest.into(),
            path: "m".into(),
            intent: kind,
            created_at: "2026-12-06T00:00:00Z".into(),
            expires_at: "2026-12-07T00:00:00Z".into(),
            approval_rule: None,
            decisions: Vec::new(),
            session_id: None,
            signature: None,
            detail: None,
        }
    }

    #[test]
    fn the_digest_is_computed_here_and_a_different_one_is_refused() {
        let message = SignKind::EthMessage {
            message: "pay 1 ETH to bob".into(),
        };
        let ours = hex::encode(tessera_api::intent::decode(&message).unwrap().digest);
        let (decoded, path) = check_request(&info(message.clone(), &ours)).unwrap();
        assert_eq!(hex::encode(decoded.digest), ours);
        assert_eq!(path.to_string(), "m");
        // Upper-case hex is the same digest.
        check_request(&info(message.clone(), &ours.to_uppercase())).unwrap();

        // The server says another digest: the device refuses, naming both.
        let other = hex::encode([7u8; 32]);
        let e = check_request(&info(message.clone(), &other))
            .unwrap_err()
            .to_string();
        assert!(e.contains(&other) && e.contains(&ours), "{e}");
        assert!(e.contains("refusing to sign"), "{e}");

        // A raw digest whose request claims another one.
        let digest = SignKind::Digest {
            digest: hex::encode([1u8; 32]),
        };
        let e = check_request(&info(digest, &hex::encode([2u8; 32]))).unwrap_err();
        assert!(matches!(e, DeviceError::InvalidRequest(_)), "{e}");
    }

    #[test]
    fn a_kind_path_or_intent_the_server_says_otherwise_is_refused() {
        let message = SignKind::EthMessage {
            message: "hello".into(),
        };
        let ours = hex::encode(tessera_api::intent::decode(&message).unwrap().digest);
        let mut wrong_kind = info(message.clone(), &ours);
        wrong_kind.kind = api::RequestKind::Digest;
        let e = check_request(&wrong_kind).unwrap_err().to_string();
        assert!(e.contains("digest request"), "{e}");

        let mut hardened = info(message.clone(), &ours);
        hardened.path = "m/0'".into();
        let e = check_request(&hardened).unwrap_err().to_string();
        assert!(e.contains("path"), "{e}");

        let bad = SignKind::Digest {
            digest: "zz".into(),
        };
        let e = check_request(&info(bad, &ours)).unwrap_err().to_string();
        assert!(e.contains("does not decode"), "{e}");
    }

    #[test]
    fn request_ids_are_hex_before_they_go_into_a_url() {
        assert!(checked_id("0a1B").is_ok());
        for bad in ["", "../admin", "ab/cd", "ab?x=1", "ab cd", &"a".repeat(129)] {
            assert!(checked_id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_stored_signature_is_checked_against_the_key_and_digest() {
        // Made by libsecp256k1 (coincurve): key 0x05…05, digest 0x09…09, r || s || v.
        let public_key = PublicKey::from_hex(
            "0362c0a046dacce86ddd0343c6d3c7c79c2208ba0d9c9cf24a6d046d21d21f90f7",
        )
        .unwrap();
        let text = "64a90aedc639172b05459e05f4fde8b8b487684d7ccc41e3b44d951b49e70395\
                    49df710d52017c68307a9a6b5c6fe765f3c8a43e3d2a774a603fa19d454262d700";
        let digest = [9u8; 32];
        let signature = parse_signature(text, &digest, &public_key).unwrap();
        assert_eq!(hex::encode(signature.to_rsv()), text);
        // v + 27 (Ethereum's form) is the same signature.
        let plus = format!("{}1b", &text[..128]);
        assert_eq!(
            parse_signature(&plus, &digest, &public_key).unwrap(),
            signature
        );
        // Another digest, another key, a flipped recovery id, a short signature, not hex.
        assert!(parse_signature(text, &[8u8; 32], &public_key).is_err());
        let other = PublicKey::from_hex(
            "0279be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798",
        )
        .unwrap();
        assert!(parse_signature(text, &digest, &other).is_err());
        let flipped = format!("{}01", &text[..128]);
        assert!(parse_signature(&flipped, &digest, &public_key).is_err());
        assert!(parse_signature(&text[..128], &digest, &public_key).is_err());
        assert!(parse_signature("zz", &digest, &public_key).is_err());
    }

    #[test]
    fn a_request_info_reads_back_as_the_server_writes_it() {
        // A digest request: its intent's `kind` and `digest` keys must not clash with the
        // request's own.
        let digest = hex::encode([3u8; 32]);
        let original = info(
            SignKind::Digest {
                digest: digest.clone(),
            },
            &digest,
        );
        let text = serde_json::to_string(&original).unwrap();
        let back: RequestInfo = serde_json::from_str(&text).unwrap();
        assert_eq!(back, original);
    }

    #[test]
    fn the_event_cursor_is_kept_in_the_home() {
        let dir = tempfile::tempdir().unwrap();
        let device = super::super::Device::open_dir(dir.path());
        assert_eq!(load_event_cursor(&device).unwrap(), 0);
        save_event_cursor(&device, 42).unwrap();
        assert_eq!(load_event_cursor(&device).unwrap(), 42);
        std::fs::write(
            dir.path().join("event-cursor.json"),
            b"{\"version\":9,\"cursor\":1}",
        )
        .unwrap();
        let e = load_event_cursor(&device).unwrap_err().to_string();
        assert!(e.contains("version 9"), "{e}");
        std::fs::write(dir.path().join("event-cursor.json"), b"garbage").unwrap();
        assert!(load_event_cursor(&device).is_err());
    }
}
