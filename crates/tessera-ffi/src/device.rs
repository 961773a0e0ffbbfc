//! [`TesseraDevice`] and [`OnlineDevice`]: the device SDK's workflows as foreign objects.

use std::path::Path;
use std::sync::Arc;

use tessera_api as api;
use tessera_backup::holder::HolderPublicKey;
use tessera_backup::structure::AccessStructure;
use tessera_client::RefreshStep;
use tessera_client::device::online::{Decided, Pending};
use tessera_client::device::{Device, Online, ServerAddress, backup};
use tessera_core::DerivationPath;
use tessera_store::Passphrase;

use crate::error::{TesseraError, invalid};
use crate::storage::AppHome;
use crate::{
    ActionKind, AuditEntry, BackupInfo, DeviceEntry, PendingEntry, ProgressListener, Registration,
    SignatureInfo, UserPresence, WalletEntry, WalletInfo, confirm, on_round, run, wallet_info,
};

pub(crate) fn passphrase(text: String) -> Result<Passphrase, TesseraError> {
    Ok(Passphrase::new(text)?)
}

/// A device: its home (records and sealed keystore) and the app's user-presence check.
#[derive(uniffi::Object)]
pub struct TesseraDevice {
    pub(crate) device: Device,
    pub(crate) presence: Arc<dyn UserPresence>,
}

impl std::fmt::Debug for TesseraDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TesseraDevice").finish_non_exhaustive()
    }
}

#[uniffi::export]
impl TesseraDevice {
    /// A device whose home the app keeps in `storage` (nothing is written to files).
    #[uniffi::constructor]
    pub fn new(storage: Arc<dyn crate::AppStorage>, presence: Arc<dyn UserPresence>) -> Arc<Self> {
        let home = Arc::new(AppHome::new(storage));
        Arc::new(TesseraDevice {
            device: Device::in_storage(home.clone(), home),
            presence,
        })
    }

    /// A device whose home is the directory `path` (as the `tessera` CLI keeps it).
    #[uniffi::constructor]
    pub fn open_dir(path: String, presence: Arc<dyn UserPresence>) -> Arc<Self> {
        Arc::new(TesseraDevice {
            device: Device::open_dir(Path::new(&path)),
            presence,
        })
    }

    /// Whether the device was set up with a server ([`Self::register`]).
    ///
    /// # Errors
    /// [`TesseraError::Storage`].
    pub fn is_set_up(&self) -> Result<bool, TesseraError> {
        Ok(self.device.is_set_up()?)
    }

    /// The wallets whose shares this device holds, by name.
    ///
    /// # Errors
    /// [`TesseraError::Storage`].
    pub fn local_wallets(&self) -> Result<Vec<String>, TesseraError> {
        let mut names = self.device.keystore()?.list_wallets()?;
        names.sort();
        Ok(names)
    }

    /// Registers this device with the server at `server_url` as `device_name` of `user`,
    /// creating its identity key (sealed under `passphrase`) on first use. The user's first
    /// device is active at once; another waits for an active device's approval of the code
    /// returned.
    ///
    /// # Errors
    /// [`TesseraError::InvalidArgument`] (an empty passphrase, a bad URL),
    /// [`TesseraError::WrongPassphrase`], [`TesseraError::ServerRefused`],
    /// [`TesseraError::Network`].
    pub async fn register(
        &self,
        server_url: String,
        user: String,
        device_name: String,
        passphrase: String,
    ) -> Result<Registration, TesseraError> {
        let device = self.device.clone();
        let passphrase = self::passphrase(passphrase)?;
        run(async move {
            let server = ServerAddress {
                url: server_url,
                fingerprint: None,
            };
            let client = server.client().map_err(invalid)?;
            let registration = device
                .init(&client, &passphrase, &server, &user, &device_name)
                .await?;
            Ok(Registration {
                device_id: registration.device.device_id.to_string(),
                status: registration.device.status.to_string(),
                approval_code: registration.approval_code,
            })
        })
        .await
    }

    /// Unseals the identity key with `passphrase` and logs in to the device's server.
    ///
    /// # Errors
    /// [`TesseraError::NotSetUp`], [`TesseraError::WrongPassphrase`],
    /// [`TesseraError::ServerRefused`] (a revoked or pending device), [`TesseraError::Network`].
    pub async fn connect(&self, passphrase: String) -> Result<Arc<OnlineDevice>, TesseraError> {
        let device = self.device.clone();
        let presence = self.presence.clone();
        let passphrase = self::passphrase(passphrase)?;
        run(async move {
            let online = device.connect(passphrase).await?;
            Ok(Arc::new(OnlineDevice {
                online: Arc::new(online),
                presence,
            }))
        })
        .await
    }

    /// A backup of this device's share of `wallet`, encrypted to `holders` (their public keys
    /// as `tessera backup-key` prints them) under `structure` (e.g. `threshold(2, a, b, c)`),
    /// verifiable by anyone ([`Self::backup_verify`]).
    ///
    /// # Errors
    /// [`TesseraError::InvalidArgument`] (a bad structure or holder key),
    /// [`TesseraError::WalletNotFound`], [`TesseraError::WrongPassphrase`].
    pub fn backup_create(
        &self,
        passphrase: String,
        wallet: String,
        structure: String,
        holders: Vec<String>,
    ) -> Result<Vec<u8>, TesseraError> {
        let passphrase = self::passphrase(passphrase)?;
        let structure = AccessStructure::parse(&structure).map_err(invalid)?;
        let holders = holders
            .iter()
            .map(|text| HolderPublicKey::from_text(text.trim()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(invalid)?;
        let (_, bytes) =
            self.device
                .backup_device_share(&passphrase, &wallet, &structure, &holders)?;
        Ok(bytes)
    }

    /// Checks `backup` (every proof) and says what it holds.
    ///
    /// # Errors
    /// [`TesseraError::InvalidArgument`]: not a backup, or one that does not verify.
    pub fn backup_verify(&self, backup: Vec<u8>) -> Result<BackupInfo, TesseraError> {
        let backup = backup::verify_backup(&backup, None)?;
        let context = backup.context();
        Ok(BackupInfo {
            wallet: context.wallet_name.clone(),
            structure: backup.structure().to_string(),
            public_key: hex::encode(context.wallet_public_key),
            party: context.party,
        })
    }

    /// Restores the share in `backup` with the holders' key files (each sealed under
    /// `holder_passphrase`) and stores it as wallet `as_name` (or the backed-up name). Asks
    /// the user's presence first.
    ///
    /// # Errors
    /// [`TesseraError::InvalidArgument`] (a backup of the server's share, keys that do not
    /// open it), [`TesseraError::WalletExists`], [`TesseraError::UserRefused`].
    pub async fn backup_restore(
        &self,
        passphrase: String,
        backup: Vec<u8>,
        holder_key_files: Vec<String>,
        holder_passphrase: String,
        as_name: Option<String>,
    ) -> Result<WalletInfo, TesseraError> {
        let device = self.device.clone();
        let presence = self.presence.clone();
        let passphrase = self::passphrase(passphrase)?;
        let holder_passphrase = self::passphrase(holder_passphrase)?;
        run(async move {
            let backup = backup::verify_backup(&backup, None)?;
            if backup.context().party != 0 {
                return Err(tessera_client::device::DeviceError::ServerShareOnDevice.into());
            }
            let name = as_name.unwrap_or_else(|| backup.context().wallet_name.clone());
            if device.has_wallet(&name)? {
                return Err(TesseraError::WalletExists { name });
            }
            let keys = holder_key_files
                .iter()
                .map(|p| backup::read_holder_key(Path::new(p), &holder_passphrase))
                .collect::<Result<Vec<_>, _>>()?;
            confirm(
                &presence,
                ActionKind::Restore,
                Some(&name),
                format!(
                    "restore wallet {name} ({}) from a backup",
                    backup.context().wallet_id
                ),
            )
            .await?;
            let share = backup::restore_share(&backup, &keys)?;
            let record = device.save_restored_wallet(&passphrase, &name, share)?;
            Ok(wallet_info(&name, &record.current.public_key()))
        })
        .await
    }
}

/// A device logged in to its server, its identity key unsealed.
#[derive(uniffi::Object)]
pub struct OnlineDevice {
    online: Arc<Online>,
    presence: Arc<dyn UserPresence>,
}

impl std::fmt::Debug for OnlineDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OnlineDevice").finish_non_exhaustive()
    }
}

impl OnlineDevice {
    /// Signs what `kind` describes with `wallet`, after the user confirmed the decoded
    /// summary; nothing is sent before.
    async fn sign(
        &self,
        wallet: String,
        kind: api::intent::SignKind,
        progress: Option<Arc<dyn ProgressListener>>,
    ) -> Result<SignatureInfo, TesseraError> {
        let online = self.online.clone();
        let presence = self.presence.clone();
        run(async move {
            let decoded = api::intent::decode(&kind).map_err(invalid)?;
            // The wallet must be here before the user is asked (without unsealing it: the
            // signature unseals it once).
            require_wallet(&online, &wallet)?;
            confirm(&presence, ActionKind::Sign, Some(&wallet), decoded.summary).await?;
            let path = DerivationPath::root();
            let signed = online
                .sign(&wallet, &kind, &path, on_round(progress), |_| {})
                .await?;
            let mut info = SignatureInfo::from(&signed.signature);
            info.public_key = hex::encode(signed.public_key.to_compressed());
            info.raw_tx = signed.raw_tx.map(|tx| format!("0x{}", hex::encode(tx)));
            Ok(info)
        })
        .await
    }
}

#[uniffi::export]
impl OnlineDevice {
    /// This device's id on the server.
    pub fn device_id(&self) -> String {
        self.online.config().device_id.clone()
    }

    /// Creates a 2-of-2 wallet `wallet` with the server (after the user's confirmation) and
    /// stores this device's share.
    ///
    /// # Errors
    /// [`TesseraError::WalletExists`], [`TesseraError::UserRefused`],
    /// [`TesseraError::ServerRefused`], [`TesseraError::ProtocolAborted`].
    pub async fn keygen(
        &self,
        wallet: String,
        progress: Option<Arc<dyn ProgressListener>>,
    ) -> Result<WalletInfo, TesseraError> {
        let online = self.online.clone();
        let presence = self.presence.clone();
        run(async move {
            if online.device().has_wallet(&wallet)? {
                return Err(TesseraError::WalletExists { name: wallet });
            }
            let summary = format!("create wallet {wallet} with the server");
            confirm(&presence, ActionKind::Keygen, Some(&wallet), summary).await?;
            let share = online.keygen(&wallet, on_round(progress)).await?;
            Ok(wallet_info(&wallet, &share.public_key()))
        })
        .await
    }

    /// Signs `message` (an EIP-191 personal message) with `wallet`.
    ///
    /// # Errors
    /// [`TesseraError::WalletNotFound`], [`TesseraError::UserRefused`],
    /// [`TesseraError::ServerRefused`] (a policy denial), [`TesseraError::ProtocolAborted`].
    pub async fn sign_message(
        &self,
        wallet: String,
        message: String,
        progress: Option<Arc<dyn ProgressListener>>,
    ) -> Result<SignatureInfo, TesseraError> {
        self.sign(
            wallet,
            api::intent::SignKind::EthMessage { message },
            progress,
        )
        .await
    }

    /// Signs a raw 32-byte digest (64 hex digits), where the wallet's policy allows it.
    ///
    /// # Errors
    /// As [`Self::sign_message`]; [`TesseraError::InvalidArgument`] for a bad digest.
    pub async fn sign_digest(
        &self,
        wallet: String,
        digest_hex: String,
        progress: Option<Arc<dyn ProgressListener>>,
    ) -> Result<SignatureInfo, TesseraError> {
        self.sign(
            wallet,
            api::intent::SignKind::Digest { digest: digest_hex },
            progress,
        )
        .await
    }

    /// Signs an Ethereum transaction given as JSON, as `tessera sign --eth-tx` takes it: any
    /// type (`"type"`: `legacy`, `eip2930`, `eip1559` — the default, so `chain_id`, `nonce`,
    /// `max_fee_per_gas`, `max_priority_fee_per_gas`, `gas_limit`, `to`, `value`, `data` alone
    /// is an EIP-1559 transaction — or `eip7702` with its `authorization_list`); the result
    /// carries the signed transaction (EIP-2718 bytes; legacy: RLP with EIP-155's `v`).
    ///
    /// # Errors
    /// As [`Self::sign_message`]; [`TesseraError::InvalidArgument`] for a bad transaction.
    pub async fn sign_eth_tx(
        &self,
        wallet: String,
        tx_json: String,
        progress: Option<Arc<dyn ProgressListener>>,
    ) -> Result<SignatureInfo, TesseraError> {
        let tx = serde_json::from_str(&tx_json)
            .map_err(|e| invalid(format!("not a transaction: {e}")))?;
        self.sign(wallet, api::intent::SignKind::EthTx { tx }, progress)
            .await
    }

    /// Refreshes `wallet`'s shares with the server (same key, next epoch); returns the epoch.
    ///
    /// # Errors
    /// [`TesseraError::WalletNotFound`], [`TesseraError::UserRefused`],
    /// [`TesseraError::ServerRefused`], [`TesseraError::ProtocolAborted`].
    pub async fn refresh(
        &self,
        wallet: String,
        progress: Option<Arc<dyn ProgressListener>>,
    ) -> Result<u64, TesseraError> {
        let online = self.online.clone();
        let presence = self.presence.clone();
        run(async move {
            require_wallet(&online, &wallet)?;
            let summary = format!("refresh the shares of wallet {wallet}");
            confirm(&presence, ActionKind::Refresh, Some(&wallet), summary).await?;
            let mut round = on_round(progress);
            let epoch = online
                .refresh(&wallet, |step| {
                    if let RefreshStep::Round { round: r, total } = step {
                        round(r, total);
                    }
                })
                .await?;
            Ok(epoch)
        })
        .await
    }

    /// This user's wallets, and which of them this device holds a share of.
    ///
    /// # Errors
    /// [`TesseraError::ServerRefused`], [`TesseraError::Network`].
    pub async fn wallets(&self) -> Result<Vec<WalletEntry>, TesseraError> {
        let online = self.online.clone();
        run(async move {
            Ok(online
                .wallets()
                .await?
                .into_iter()
                .map(|w| WalletEntry {
                    name: w.info.name,
                    wallet_id: w.info.wallet_id.to_string(),
                    public_key: w.info.public_key,
                    share_on_this_device: w.share_on_this_device,
                })
                .collect())
        })
        .await
    }

    /// Wallet `wallet`'s public key and address.
    ///
    /// # Errors
    /// [`TesseraError::WalletNotFound`].
    pub fn pubkey(&self, wallet: String) -> Result<WalletInfo, TesseraError> {
        let record = self.online.wallet(&wallet)?;
        Ok(wallet_info(&wallet, &record.current.public_key()))
    }

    /// This user's devices.
    ///
    /// # Errors
    /// [`TesseraError::ServerRefused`], [`TesseraError::Network`].
    pub async fn devices(&self) -> Result<Vec<DeviceEntry>, TesseraError> {
        let online = self.online.clone();
        run(async move { Ok(online.devices().await?.iter().map(device_entry).collect()) }).await
    }

    /// Approves the pending device whose approval code is `code` (after the user's
    /// confirmation).
    ///
    /// # Errors
    /// [`TesseraError::UserRefused`], [`TesseraError::ServerRefused`] (no such code).
    pub async fn approve_device(&self, code: String) -> Result<DeviceEntry, TesseraError> {
        let online = self.online.clone();
        let presence = self.presence.clone();
        run(async move {
            let summary = format!("approve the device whose code is {code}");
            confirm(&presence, ActionKind::Approve, None, summary).await?;
            Ok(device_entry(&online.approve_device(&code).await?))
        })
        .await
    }

    /// Revokes device `device_id` (`force`: even the last device of a wallet's structure).
    ///
    /// # Errors
    /// [`TesseraError::ServerRefused`].
    pub async fn revoke_device(
        &self,
        device_id: String,
        force: bool,
    ) -> Result<DeviceEntry, TesseraError> {
        let online = self.online.clone();
        run(async move {
            Ok(device_entry(
                &online.revoke_device(&device_id, force).await?,
            ))
        })
        .await
    }

    /// What waits for this user's decision: other devices' signing requests and held actions.
    ///
    /// # Errors
    /// [`TesseraError::ServerRefused`], [`TesseraError::Network`].
    pub async fn approvals(&self) -> Result<Vec<PendingEntry>, TesseraError> {
        let online = self.online.clone();
        run(async move {
            let (requests, held) = online.approvals().await?;
            let requests = requests.into_iter().map(|r| PendingEntry {
                id: r.session_id.to_string(),
                summary: r.summary,
                kind: "request".into(),
            });
            let held = held.into_iter().map(|h| PendingEntry {
                id: h.id.to_string(),
                summary: h.summary,
                kind: "held".into(),
            });
            Ok(requests.chain(held).collect())
        })
        .await
    }

    /// Approves (after the user's confirmation) or refuses what waits under `id`; returns its
    /// state now.
    ///
    /// # Errors
    /// [`TesseraError::InvalidArgument`] (no such id), [`TesseraError::UserRefused`],
    /// [`TesseraError::ServerRefused`].
    pub async fn decide(&self, id: String, approve: bool) -> Result<String, TesseraError> {
        let online = self.online.clone();
        let presence = self.presence.clone();
        run(async move {
            let pending = online.pending(&id).await?;
            if approve {
                let summary = format!("approve: {}", pending.summary());
                let wallet = match &pending {
                    Pending::Held(_) => None,
                    Pending::Request(r) => Some(r.wallet_id.to_string()),
                };
                confirm(&presence, ActionKind::Approve, wallet.as_deref(), summary).await?;
            }
            Ok(match online.decide(&pending, approve).await? {
                Decided::Held(action) => action.status.to_string(),
                Decided::Request(status) => status.approval.to_string(),
            })
        })
        .await
    }

    /// The server's audit log, of `wallet` or of all this user's.
    ///
    /// # Errors
    /// [`TesseraError::WalletNotFound`], [`TesseraError::ServerRefused`].
    pub async fn audit(&self, wallet: Option<String>) -> Result<Vec<AuditEntry>, TesseraError> {
        let online = self.online.clone();
        run(async move {
            Ok(online
                .audit(wallet.as_deref())
                .await?
                .into_iter()
                .map(|r| AuditEntry {
                    seq: r.seq,
                    kind: r.kind,
                    detail: r.detail,
                })
                .collect())
        })
        .await
    }

    /// Has the server verify `backup` and record it in the audit log; returns the record's
    /// digest.
    ///
    /// # Errors
    /// [`TesseraError::ServerRefused`] (a backup that does not verify, of another wallet).
    pub async fn record_backup(&self, backup: Vec<u8>) -> Result<String, TesseraError> {
        let online = self.online.clone();
        run(async move { Ok(online.verify_backup(&backup).await?) }).await
    }
}

/// [`TesseraError::WalletNotFound`] unless this device holds a share of `wallet`.
fn require_wallet(online: &Online, wallet: &str) -> Result<(), TesseraError> {
    if online.device().has_wallet(wallet)? {
        Ok(())
    } else {
        Err(TesseraError::WalletNotFound {
            name: wallet.to_owned(),
        })
    }
}

fn device_entry(d: &api::Device) -> DeviceEntry {
    DeviceEntry {
        device_id: d.device_id.to_string(),
        name: d.name.clone(),
        status: d.status.to_string(),
    }
}
