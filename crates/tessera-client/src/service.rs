//! Service accounts (issue 16): a user's backend creates signing requests with its own Ed25519
//! key, and never holds a share.
//!
//! - [`ServiceKey`]: the backend's key (generate, a 0600 key file, the public key to register).
//! - [`ServiceClient`]: the backend's side: authenticates with the key (a signed challenge,
//!   `tessera_api::service::service_auth_message`) and creates and follows requests.
//! - [`ServiceAdmin`]: a device's side: registers, lists and revokes its user's service
//!   accounts, each change signed with the device's identity key.
//! - [`WebhookPoster`]: the HTTP client that posts the server's webhooks (the server has none of
//!   its own; `tessera server` plugs this one in).

use std::path::Path;
use std::time::{Duration, Instant};

use ed25519_dalek::{Signer, SigningKey};
use serde::{Deserialize, Serialize};
use tessera_api as api;
use tessera_api::requests::{CreateRequest, RequestInfo};
use tessera_api::service as wire;
use tessera_store::{DeviceIdentity, Passphrase};
use zeroize::Zeroizing;

use crate::device::{Device, DeviceError, ServerAddress};
use crate::error::net;
use crate::{ClientError, Result, ServerClient};

const KEY_FORMAT: &str = "tessera-service-key";
const KEY_VERSION: u32 = 1;

/// A service account's Ed25519 key (RFC 8032). Zeroized on drop (the signing key's own
/// `zeroize`); `Debug` shows the public key only; not `Clone`.
pub struct ServiceKey {
    signing: SigningKey,
}

impl std::fmt::Debug for ServiceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceKey")
            .field("public_key", &self.public_key_hex())
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// The key file: a format name and version, the public key (to check the file against) and
/// the 32-byte secret seed, hex.
#[derive(Serialize, Deserialize, zeroize::Zeroize, zeroize::ZeroizeOnDrop)]
#[serde(deny_unknown_fields)]
struct KeyFile {
    format: String,
    version: u32,
    public_key: String,
    secret_key: String,
}

/// What can go wrong with a key file.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// It cannot be read or written.
    #[error("{0}")]
    Io(String),
    /// It is not a service key file, or a damaged one.
    #[error("{path} is not a usable service key file: {reason}")]
    Invalid {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
}

impl ServiceKey {
    /// A fresh key from the operating system's random generator.
    #[must_use]
    pub fn generate() -> Self {
        let seed = Zeroizing::new(tessera_core::protocols::fresh_nonce());
        ServiceKey {
            signing: SigningKey::from_bytes(&seed),
        }
    }

    /// The public key (32 bytes).
    #[must_use]
    pub fn public_key(&self) -> [u8; 32] {
        self.signing.verifying_key().to_bytes()
    }

    /// The public key, 64 hex digits (what `tessera service add --public-key` takes).
    #[must_use]
    pub fn public_key_hex(&self) -> String {
        hex::encode(self.public_key())
    }

    /// Signs `message`.
    #[must_use]
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.signing.sign(message).to_bytes()
    }

    /// Writes the key to a new file, readable by its owner only (0600, written atomically);
    /// an existing file is never replaced.
    ///
    /// # Errors
    /// [`KeyFileError::Io`], also when the file exists.
    pub fn save(&self, path: &Path) -> std::result::Result<(), KeyFileError> {
        let seed = Zeroizing::new(self.signing.to_bytes());
        let file = KeyFile {
            format: KEY_FORMAT.into(),
            version: KEY_VERSION,
            public_key: self.public_key_hex(),
            secret_key: hex::encode(seed.as_slice()),
        };
        let text = Zeroizing::new(
            serde_json::to_vec_pretty(&file).map_err(|e| KeyFileError::Io(e.to_string()))?,
        );
        match tessera_store::write_new_private_file(path, &text) {
            Ok(true) => Ok(()),
            Ok(false) => Err(KeyFileError::Io(format!(
                "{} exists already: not replaced",
                path.display()
            ))),
            Err(e) => Err(KeyFileError::Io(e.to_string())),
        }
    }

    /// Reads a key file [`ServiceKey::save`] wrote. A file that others may read is refused
    /// (as ssh refuses such key files).
    ///
    /// # Errors
    /// [`KeyFileError`] naming the file and what is wrong.
    pub fn load(path: &Path) -> std::result::Result<Self, KeyFileError> {
        use std::os::unix::fs::PermissionsExt;
        let invalid = |reason: String| KeyFileError::Invalid {
            path: path.display().to_string(),
            reason,
        };
        let meta = std::fs::metadata(path)
            .map_err(|e| KeyFileError::Io(format!("cannot read {}: {e}", path.display())))?;
        if meta.permissions().mode() & 0o077 != 0 {
            return Err(invalid(format!(
                "others may read it (mode {:o}): chmod 600 it",
                meta.permissions().mode() & 0o777
            )));
        }
        let text = Zeroizing::new(
            std::fs::read(path)
                .map_err(|e| KeyFileError::Io(format!("cannot read {}: {e}", path.display())))?,
        );
        let file: KeyFile =
            serde_json::from_slice(&text).map_err(|e| invalid(format!("not its JSON: {e}")))?;
        if file.format != KEY_FORMAT || file.version != KEY_VERSION {
            return Err(invalid(format!(
                "format {} version {} (this build reads {KEY_FORMAT} version {KEY_VERSION})",
                file.format, file.version
            )));
        }
        let mut seed = Zeroizing::new([0u8; 32]);
        hex::decode_to_slice(file.secret_key.as_str(), seed.as_mut_slice())
            .map_err(|_| invalid("secret_key must be 64 hex digits".into()))?;
        let key = ServiceKey {
            signing: SigningKey::from_bytes(&seed),
        };
        if key.public_key_hex() != file.public_key {
            return Err(invalid(
                "its public key is not the secret key's (a damaged file)".into(),
            ));
        }
        Ok(key)
    }
}

impl ServerClient {
    /// `POST /service-accounts`: registers a service account of our user, signed with our
    /// identity key.
    ///
    /// # Errors
    /// Network or server errors (400 for bad input, naming the field).
    pub async fn add_service_account(
        &self,
        identity: &DeviceIdentity,
        name: &str,
        public_key: &[u8; 32],
        wallets: &[api::WalletId],
        kinds: &[api::RequestKind],
    ) -> Result<wire::ServiceAccount> {
        let signature = identity.sign(&wire::service_account_message(
            name, public_key, wallets, kinds,
        ));
        self.post(
            "/service-accounts",
            &wire::AddServiceAccount {
                name: name.into(),
                public_key: hex::encode(public_key),
                wallets: wallets.to_vec(),
                kinds: kinds.to_vec(),
                signature: hex::encode(signature),
            },
        )
        .await
    }

    /// `GET /service-accounts`.
    ///
    /// # Errors
    /// Network or server errors.
    pub async fn service_accounts(&self) -> Result<Vec<wire::ServiceAccount>> {
        self.get("/service-accounts").await
    }

    /// `POST /service-accounts/{id}/revoke`, signed with our identity key.
    ///
    /// # Errors
    /// Network or server errors (404 unknown, 409 already revoked).
    pub async fn revoke_service_account(
        &self,
        identity: &DeviceIdentity,
        service_id: &str,
    ) -> Result<wire::ServiceAccount> {
        let signature = identity.sign(&wire::service_revoke_message(service_id));
        self.post(
            &format!("/service-accounts/{service_id}/revoke"),
            &wire::RevokeServiceAccount {
                signature: hex::encode(signature),
            },
        )
        .await
    }

    /// Logs in as the service account `service_id` with its key: the token that
    /// [`ServerClient::token`] then holds is a service-account token.
    ///
    /// # Errors
    /// Network or server errors (401 for a revoked account or a wrong key).
    pub async fn login_service(&mut self, key: &ServiceKey, service_id: &str) -> Result<()> {
        let challenge: api::Challenge = self
            .post(
                "/auth/service/challenge",
                &wire::ServiceChallengeRequest {
                    service_id: service_id.into(),
                },
            )
            .await?;
        let bytes = hex::decode(&challenge.challenge).map_err(net)?;
        let signature = key.sign(&wire::service_auth_message(service_id, &bytes));
        let token: api::Token = self
            .post(
                "/auth/service/token",
                &wire::ServiceTokenRequest {
                    service_id: service_id.into(),
                    challenge: challenge.challenge,
                    signature: hex::encode(signature),
                },
            )
            .await?;
        self.token = Some(token.token);
        Ok(())
    }

    /// `GET /webhooks/key`: the key the server signs webhook bodies with, hex.
    ///
    /// # Errors
    /// Network or server errors.
    pub async fn webhook_key(&self) -> Result<String> {
        let key: wire::WebhookKey = self.get("/webhooks/key").await?;
        Ok(key.public_key)
    }
}

/// A service account's connection: its key, logged in to the server.
#[derive(Debug)]
pub struct ServiceClient {
    client: ServerClient,
    key: ServiceKey,
    service_id: String,
}

impl ServiceClient {
    /// Connects to `server` (its TLS settings: the web PKI, or a pinned certificate) and logs
    /// in as `service_id` with `key`.
    ///
    /// # Errors
    /// [`ClientError`]: an unusable address, the network, or the server's refusal (401 for a
    /// revoked account or a key that is not the account's).
    pub async fn connect(
        server: &ServerAddress,
        key: ServiceKey,
        service_id: &str,
    ) -> Result<Self> {
        let mut client = match &server.fingerprint {
            Some(f) => ServerClient::with_pinned_certificate(&server.url, f)?,
            None => ServerClient::new(&server.url)?,
        };
        client.login_service(&key, service_id).await?;
        Ok(ServiceClient {
            client,
            key,
            service_id: service_id.into(),
        })
    }

    /// The service account.
    #[must_use]
    pub fn service_id(&self) -> &str {
        &self.service_id
    }

    /// The bearer token (tests).
    #[must_use]
    pub fn token(&self) -> Option<&str> {
        self.client.token()
    }

    /// Logs in again (a token lives 15 minutes).
    ///
    /// # Errors
    /// As [`ServiceClient::connect`].
    pub async fn login_again(&mut self) -> Result<()> {
        self.client.login_service(&self.key, &self.service_id).await
    }

    /// `POST /requests`: a signing request within the account's scope.
    ///
    /// # Errors
    /// [`ClientError::Server`]: 403 outside the scope (naming the wallet or kind), 400 for bad
    /// input.
    pub async fn create_request(&self, request: &CreateRequest) -> Result<RequestInfo> {
        self.client.post("/requests", request).await
    }

    /// `GET /requests/{id}`.
    ///
    /// # Errors
    /// Network or server errors (404 for a request this account may not read).
    pub async fn request(&self, id: &str) -> Result<RequestInfo> {
        self.client.get(&format!("/requests/{id}")).await
    }

    /// Waits until request `id` reaches a final state (signed, refused, expired, failed),
    /// polling; logs in again when the token expires meanwhile.
    ///
    /// # Errors
    /// [`ClientError::Network`] when `timeout` passes first; network or server errors.
    pub async fn wait(&mut self, id: &str, timeout: Duration) -> Result<RequestInfo> {
        let until = Instant::now() + timeout;
        let mut pause = Duration::from_millis(200);
        loop {
            let info = match self.request(id).await {
                Err(ClientError::Server { status: 401, .. }) => {
                    self.login_again().await?;
                    self.request(id).await?
                }
                other => other?,
            };
            if info.state.is_final() {
                return Ok(info);
            }
            if Instant::now() + pause > until {
                return Err(ClientError::Network(format!(
                    "request {id} is still {} after {} s",
                    info.state,
                    timeout.as_secs()
                )));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(2));
        }
    }
}

/// A device managing its user's service accounts: logged in, its identity key unsealed.
pub struct ServiceAdmin {
    client: ServerClient,
    identity: DeviceIdentity,
}

impl std::fmt::Debug for ServiceAdmin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceAdmin")
            .field("client", &self.client)
            .finish_non_exhaustive()
    }
}

impl ServiceAdmin {
    /// Unseals `device`'s identity key with `passphrase` and logs in to its server.
    ///
    /// # Errors
    /// [`DeviceError`]: not set up, a wrong passphrase, the server's refusal.
    pub async fn connect(
        device: &Device,
        passphrase: &Passphrase,
    ) -> std::result::Result<Self, DeviceError> {
        let config = device.config()?;
        let identity = device.keystore()?.load_identity(passphrase)?;
        let mut client = ServerAddress::of(&config).client()?;
        client.login(&identity, &config.device_id).await?;
        Ok(ServiceAdmin { client, identity })
    }

    /// The wallet ids for `names_or_ids`: each a wallet id, or the name of a wallet of the user.
    ///
    /// # Errors
    /// [`ClientError::Network`] naming a wallet that is neither; network or server errors.
    pub async fn wallet_ids(&self, names_or_ids: &[String]) -> Result<Vec<api::WalletId>> {
        let wallets = self.client.wallets().await?;
        names_or_ids
            .iter()
            .map(|w| {
                wallets
                    .iter()
                    .find(|i| i.wallet_id.as_str() == w || &i.name == w)
                    .map(|i| i.wallet_id.clone())
                    // Unknown ones go to the server as given, which says what is wrong.
                    .map_or_else(|| Ok(api::WalletId::from(w.as_str())), Ok)
            })
            .collect()
    }

    /// Registers a service account.
    ///
    /// # Errors
    /// Network or server errors (400 for bad input, naming the field).
    pub async fn add(
        &self,
        name: &str,
        public_key: &[u8; 32],
        wallets: &[api::WalletId],
        kinds: &[api::RequestKind],
    ) -> Result<wire::ServiceAccount> {
        self.client
            .add_service_account(&self.identity, name, public_key, wallets, kinds)
            .await
    }

    /// The user's service accounts.
    ///
    /// # Errors
    /// Network or server errors.
    pub async fn list(&self) -> Result<Vec<wire::ServiceAccount>> {
        self.client.service_accounts().await
    }

    /// Revokes a service account.
    ///
    /// # Errors
    /// Network or server errors.
    pub async fn revoke(&self, service_id: &str) -> Result<wire::ServiceAccount> {
        self.client
            .revoke_service_account(&self.identity, service_id)
            .await
    }
}

/// Posts webhook bodies (for the server, which has no HTTP client of its own).
#[derive(Debug, Clone)]
pub struct WebhookPoster {
    http: reqwest::Client,
}

/// How long one webhook POST may take.
pub const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(10);

/// Checks a webhook URL: `https://…`, or `http://…` to a loopback host only (as the server
/// serves plain HTTP on loopback only).
///
/// # Errors
/// A message naming what is wrong.
pub fn check_webhook_url(url: &str) -> std::result::Result<(), String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("{url:?} is not a URL: {e}"))?;
    let host = parsed
        .host_str()
        .ok_or_else(|| format!("{url} has no host"))?;
    match parsed.scheme() {
        "https" => Ok(()),
        "http" => {
            let bare = host.trim_start_matches('[').trim_end_matches(']');
            let loopback = bare.eq_ignore_ascii_case("localhost")
                || bare
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback());
            if loopback {
                Ok(())
            } else {
                Err(format!(
                    "a webhook URL must be https:// (plain http:// only to a loopback address), not {url}"
                ))
            }
        }
        other => Err(format!("a webhook URL must be https://, not {other}://")),
    }
}

impl WebhookPoster {
    /// A poster verifying servers against the web PKI, with a [`WEBHOOK_TIMEOUT`].
    ///
    /// # Errors
    /// [`ClientError::Network`] when the HTTP client cannot be built.
    pub fn new() -> Result<Self> {
        let tls = crate::tls::client_config(None).map_err(net)?;
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured((*tls).clone())
            .timeout(WEBHOOK_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(net)?;
        Ok(WebhookPoster { http })
    }

    /// POSTs `body` to `url` with `headers`: the answer's status.
    ///
    /// # Errors
    /// Why there is no answer (the receiver is down, a timeout), as text.
    pub async fn post(
        &self,
        url: &str,
        body: &[u8],
        headers: &[(&str, String)],
    ) -> std::result::Result<u16, String> {
        let mut req = self.http.post(url).body(body.to_vec());
        for (name, value) in headers {
            req = req.header(*name, value);
        }
        let resp = req.send().await.map_err(|e| {
            // Without the URL's query, which may carry a receiver's secret.
            e.without_url().to_string()
        })?;
        Ok(resp.status().as_u16())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_key_file_round_trips_and_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("svc.key");
        let key = ServiceKey::generate();
        key.save(&path).unwrap();
        let again = ServiceKey::load(&path).unwrap();
        assert_eq!(again.public_key(), key.public_key());
        assert_eq!(again.sign(b"m"), key.sign(b"m"));
        // Never replaced.
        assert!(ServiceKey::generate().save(&path).is_err());
        // Debug shows no secret.
        let debug = format!("{key:?}");
        assert!(debug.contains("<redacted>") && debug.contains(&key.public_key_hex()));
        let secret = hex::encode(key.signing.to_bytes());
        assert!(!debug.contains(&secret));
        // A readable file is refused; a damaged one too.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = ServiceKey::load(&path).unwrap_err().to_string();
        assert!(e.contains("chmod 600"), "{e}");
        let bad = dir.path().join("bad.key");
        let text = std::fs::read_to_string(&path)
            .unwrap()
            .replace(&key.public_key_hex(), &"00".repeat(32));
        std::fs::write(&bad, text).unwrap();
        std::fs::set_permissions(&bad, std::fs::Permissions::from_mode(0o600)).unwrap();
        let e = ServiceKey::load(&bad).unwrap_err().to_string();
        assert!(e.contains("damaged"), "{e}");
    }

    #[test]
    fn webhook_urls_follow_the_servers_tls_rules() {
        assert!(check_webhook_url("https://hooks.example/t").is_ok());
        assert!(check_webhook_url("http://127.0.0.1:9000/h").is_ok());
        assert!(check_webhook_url("http://[::1]:9000/h").is_ok());
        assert!(check_webhook_url("http://localhost/h").is_ok());
        assert!(check_webhook_url("http://hooks.example/h").is_err());
        assert!(check_webhook_url("http://10.0.0.1/h").is_err());
        assert!(check_webhook_url("ftp://hooks.example/h").is_err());
        assert!(check_webhook_url("hooks.example").is_err());
    }
}
