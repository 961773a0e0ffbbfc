//! The workflows of a device logged in to its server: key generation, signing, refresh, wallets,
//! approvals, policies, devices, the audit log and the server's backup of its share.

use tessera_api as api;
use tessera_api::intent::SignKind;
use tessera_backup::backup::Backup;
use tessera_backup::holder::HolderPublicKey;
use tessera_backup::structure::AccessStructure;
use tessera_core::{DerivationPath, KeyShare, PublicKey, Signature};
use tessera_store::{DeviceIdentity, Keystore, Passphrase};

use super::{Device, DeviceConfig, DeviceError, KnownDevices};
use crate::{ClientError, HookError, RefreshStep, ServerClient, WalletRecord};

/// A device logged in to its server, its identity key unsealed.
pub struct Online {
    pub(super) device: Device,
    pub(super) keystore: Keystore,
    pub(super) passphrase: Passphrase,
    pub(super) identity: DeviceIdentity,
    pub(super) config: DeviceConfig,
    pub(super) client: ServerClient,
}

impl std::fmt::Debug for Online {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The passphrase, identity key and token stay out.
        f.debug_struct("Online")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// A signature [`Online::sign`] made and verified under the wallet's key.
#[derive(Debug)]
pub struct Signed {
    /// The signature.
    pub signature: Signature,
    /// The key it verifies under (the wallet's key at the path).
    pub public_key: PublicKey,
    /// For a transaction: the signed transaction, ready to broadcast.
    pub raw_tx: Option<Vec<u8>>,
    /// Parties of a structure wallet the server banned on the way (each failed run it banned
    /// one in was asked again without it: robust signing).
    pub banned: Vec<api::Ban>,
}

/// A wallet of this user, and whether this device holds a share of it.
#[derive(Debug)]
pub struct WalletListing {
    /// The wallet as the server knows it.
    pub info: api::WalletInfo,
    /// Whether the keystore holds this device's share.
    pub share_on_this_device: bool,
}

/// What [`Online::join`] took part in.
#[derive(Debug)]
pub enum Joined {
    /// A key generation: this device's share, stored under the wallet's name.
    Wallet(KeyShare),
    /// A signing session: the signature, verified.
    Signed(Signed),
    /// A resharing: how it ended on this device.
    Reshared(super::reshare::ReshareOutcome),
}

/// A signature `signature` of what `kind` describes with `share` under `path`, with the raw
/// signed transaction of a transaction.
pub(super) fn signed(
    share: &KeyShare,
    kind: &SignKind,
    path: &DerivationPath,
    signature: Signature,
) -> Result<Signed, DeviceError> {
    let public_key = share.public_key_at(path).map_err(DeviceError::Protocol)?;
    let raw_tx = match kind {
        SignKind::EthTx { tx } => Some(tx.signed_raw(&signature).map_err(DeviceError::Protocol)?),
        _ => None,
    };
    Ok(Signed {
        signature,
        public_key,
        raw_tx,
        banned: Vec::new(),
    })
}

/// What waits for this user's decision, by id.
#[derive(Debug)]
pub enum Pending {
    /// An action held for another device's approval or a time lock.
    Held(api::HeldAction),
    /// Another device's signing request.
    Request(api::PendingApproval),
}

impl Pending {
    /// What it is, for the user to read before deciding.
    #[must_use]
    pub fn summary(&self) -> &str {
        match self {
            Pending::Held(a) => &a.summary,
            Pending::Request(r) => &r.summary,
        }
    }
}

/// The outcome of [`Online::decide`].
#[derive(Debug)]
pub enum Decided {
    /// The held action, as it is now.
    Held(api::HeldAction),
    /// The signing request's status, as it is now.
    Request(api::SignStatus),
}

/// The server's backup of its share of a wallet.
#[derive(Debug)]
pub enum ServerBackup {
    /// Made and checked against this device's share: the backup and its bytes.
    Ready(Box<Backup>, Vec<u8>),
    /// Held for another device's approval or a time lock; ask again after.
    Held(api::HeldAction),
}

/// Whether the server verified and recorded a backup.
#[derive(Debug)]
pub enum BackupRecorded {
    /// Verified and written to the audit log; the record's digest.
    Recorded(String),
    /// The server has no such wallet (a device-to-device wallet): verified locally only.
    NotAServerWallet,
}

impl Online {
    /// The configuration it logged in with.
    #[must_use]
    pub fn config(&self) -> &DeviceConfig {
        &self.config
    }

    /// The client, logged in, for calls this handle does not wrap.
    #[must_use]
    pub fn client(&self) -> &ServerClient {
        &self.client
    }

    /// The device this session belongs to.
    #[must_use]
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The passphrase it was unlocked with, to unlock the keystore again without asking.
    #[must_use]
    pub fn into_passphrase(self) -> Passphrase {
        self.passphrase
    }

    /// A wallet's record.
    ///
    /// # Errors
    /// [`DeviceError::Store`], [`DeviceError::WalletRecord`].
    pub fn wallet(&self, name: &str) -> Result<WalletRecord, DeviceError> {
        self.device.load_wallet(name, &self.passphrase)
    }

    fn wallet_id(&self, name: &str) -> Result<String, DeviceError> {
        Ok(self.wallet(name)?.current.wallet_id().to_string())
    }

    pub(super) fn store(&self, name: &str, record: &WalletRecord) -> Result<(), HookError> {
        Ok(self
            .keystore
            .replace_wallet(name, &record.to_bytes(), &self.passphrase)?)
    }

    /// Creates a 2-of-2 wallet `name` with the server and stores this device's share;
    /// `on_round(r, total)` reports progress.
    ///
    /// # Errors
    /// [`DeviceError::WalletExists`], [`DeviceError::Client`], [`DeviceError::Store`].
    pub async fn keygen(
        &self,
        name: &str,
        on_round: impl FnMut(u8, u8),
    ) -> Result<KeyShare, DeviceError> {
        if self.keystore.has_wallet(name)? {
            return Err(DeviceError::WalletExists { name: name.into() });
        }
        let share = self.client.keygen(name, on_round).await?;
        self.keep_new_share(name, share)
    }

    /// Creates wallet `name` under `structure` (`server` and the party labels of this user's
    /// active devices, e.g. `and(server, or(phone, laptop))`) and runs this device's party of
    /// its key generation, the other devices joining ([`Self::join`]); stores this device's
    /// share. Each other device's identity key is the one pinned for it ([`KnownDevices`]), or
    /// pinned now. `on_round(r, total)` reports progress.
    ///
    /// # Errors
    /// [`DeviceError::WalletExists`], [`DeviceError::Client`] (the server's refusal, a party
    /// that never came, a changed identity key), [`DeviceError::Store`].
    pub async fn keygen_structure(
        &self,
        name: &str,
        structure: &str,
        on_round: impl FnMut(u8, u8),
    ) -> Result<KeyShare, DeviceError> {
        if self.keystore.has_wallet(name)? {
            return Err(DeviceError::WalletExists { name: name.into() });
        }
        let share = self
            .pinning(async |known| {
                let trust = |party: &api::SessionParty, key| known.trust(party, key);
                let identity = &self.identity;
                (self.client)
                    .keygen_structure(name, structure, identity, trust, on_round)
                    .await
            })
            .await?;
        self.keep_new_share(name, share)
    }

    /// Creates wallet `name` with the user's default parties: with this device the user's only
    /// active one, a 2-of-2 wallet of this device and the server ([`Self::keygen`]); with
    /// several, the server and every active device, `and(server, or(…))`, each holding its own
    /// share ([`Self::keygen_structure`] with `default`): the devices online now (their
    /// `tessera listen` running) take part at once, the others join by resharing once they are
    /// (the wallet lists them as pending, [`Self::wallet_detail`]).
    ///
    /// # Errors
    /// As [`Self::keygen`] and [`Self::keygen_structure`].
    pub async fn keygen_default(
        &self,
        name: &str,
        on_round: impl FnMut(u8, u8),
    ) -> Result<KeyShare, DeviceError> {
        let active = self
            .devices()
            .await?
            .iter()
            .filter(|d| d.status == api::DeviceStatus::Active)
            .count();
        if active > 1 {
            self.keygen_structure(name, api::DEFAULT_STRUCTURE, on_round)
                .await
        } else {
            self.keygen(name, on_round).await
        }
    }

    /// Wallet `name` of this device as the server has it: its structure and parties.
    ///
    /// # Errors
    /// [`DeviceError::Client`], [`DeviceError::Store`] (no such wallet on this device).
    pub async fn wallet_detail(&self, name: &str) -> Result<api::WalletDetail, DeviceError> {
        let record = self.wallet(name)?;
        Ok(self
            .client
            .wallet_detail(&record.current.wallet_id().to_string())
            .await?)
    }

    /// Logs in again (a long-running agent whose token expired).
    ///
    /// # Errors
    /// [`DeviceError::Client`].
    pub async fn login_again(&mut self) -> Result<(), DeviceError> {
        Ok(self
            .client
            .login(&self.identity, &self.config.device_id)
            .await?)
    }

    /// The sessions of structure wallets other devices started in which this device is a
    /// party, waiting for it to join.
    ///
    /// # Errors
    /// [`DeviceError::Client`].
    pub async fn joinable(&self) -> Result<Vec<api::JoinableSession>, DeviceError> {
        Ok(self.client.joinable().await?)
    }

    /// [`Self::joinable`], waiting up to `wait` (at most 25 s) for one when there is none.
    ///
    /// # Errors
    /// [`DeviceError::Client`].
    pub async fn joinable_wait(
        &self,
        wait: std::time::Duration,
    ) -> Result<Vec<api::JoinableSession>, DeviceError> {
        Ok(self.client.joinable_wait(wait).await?)
    }

    /// Joins `session`, a key generation: runs this device's party and stores its share under
    /// the wallet's name.
    async fn join_keygen(
        &self,
        session: &api::JoinableSession,
        on_round: impl FnMut(u8, u8),
    ) -> Result<KeyShare, DeviceError> {
        let name = &session.wallet_name;
        if self.keystore.has_wallet(name)? {
            return Err(DeviceError::WalletExists { name: name.clone() });
        }
        // Another user's wallet: this device accepts its party first (the caller asked).
        self.client
            .accept_invitation(session, &self.identity)
            .await?;
        let share = self
            .pinning(async |known| {
                let trust = |party: &api::SessionParty, key| known.trust(party, key);
                (self.client)
                    .join_keygen(session, &self.identity, trust, on_round)
                    .await
            })
            .await?;
        self.keep_new_share(name, share)
    }

    /// Accepts this device's party in another user's wallet, the invitation `session` carries
    /// (from [`Self::joinable`]), without joining yet ([`Self::join`] accepts and joins).
    ///
    /// # Errors
    /// [`DeviceError::Client`].
    pub async fn accept_invitation(
        &self,
        session: &api::JoinableSession,
    ) -> Result<(), DeviceError> {
        Ok(self
            .client
            .accept_invitation(session, &self.identity)
            .await?)
    }

    /// Declines `session` (from [`Self::joinable`]): its other parties are told at once.
    ///
    /// # Errors
    /// [`DeviceError::Client`].
    pub async fn decline(&self, session: &api::JoinableSession) -> Result<(), DeviceError> {
        Ok(self.client.decline(session).await?)
    }

    /// Runs `run` with the identity keys this device pinned for other devices
    /// ([`KnownDevices::trust`]), then saves what it pinned, whatever the run's outcome (a key
    /// first seen stays pinned).
    ///
    /// # Errors
    /// The run's ([`DeviceError::Client`]); [`DeviceError::Store`], [`DeviceError::Damaged`]
    /// for the record.
    pub(super) async fn pinning<T>(
        &self,
        run: impl AsyncFnOnce(&mut KnownDevices) -> Result<T, ClientError>,
    ) -> Result<T, DeviceError> {
        let mut known = KnownDevices::load(self.device.home())?;
        let outcome = run(&mut known).await;
        known.save(self.device.home())?;
        Ok(outcome?)
    }

    /// Stores a new wallet's share under `name`; returns it as stored.
    fn keep_new_share(&self, name: &str, share: KeyShare) -> Result<KeyShare, DeviceError> {
        self.keystore
            .save_wallet(name, &WalletRecord::new(share).to_bytes(), &self.passphrase)?;
        Ok(self.wallet(name)?.current)
    }

    /// Signs what `kind` describes with wallet `name` under `path`, first repairing the record
    /// after an interrupted refresh; `on_wait(session)` is told when another device must approve.
    ///
    /// # Errors
    /// [`DeviceError::InvalidRequest`], [`DeviceError::Client`] (a policy denial, a refusal),
    /// [`DeviceError::Store`].
    pub async fn sign(
        &self,
        name: &str,
        kind: &SignKind,
        path: &DerivationPath,
        on_round: impl FnMut(u8, u8),
        on_wait: impl FnOnce(&str),
    ) -> Result<Signed, DeviceError> {
        tessera_api::intent::decode(kind).map_err(DeviceError::InvalidRequest)?;
        let mut record = self.wallet(name)?;
        self.sign_wallet(name, &mut record, kind, path, on_round, on_wait)
            .await
    }

    /// [`Self::sign`] with the record of wallet `name` the caller loaded already
    /// ([`Self::wallet`]); a changed record (a repair, a ban) is stored and left in `record`.
    ///
    /// # Errors
    /// As [`Self::sign`].
    pub async fn sign_wallet(
        &self,
        name: &str,
        record: &mut WalletRecord,
        kind: &SignKind,
        path: &DerivationPath,
        on_round: impl FnMut(u8, u8),
        on_wait: impl FnOnce(&str),
    ) -> Result<Signed, DeviceError> {
        self.sign_with(name, record, kind, path, &[], on_round, on_wait)
            .await
    }

    /// [`Self::sign_wallet`], for a structure wallet together with the server and the device
    /// parties labelled `with` (each joins from its `tessera listen`: [`Self::join`]); for a
    /// 2-of-2 wallet `with` must be empty.
    ///
    /// # Errors
    /// As [`Self::sign`]; [`ClientError::Refused`] for `with` on a 2-of-2 wallet.
    #[allow(clippy::too_many_arguments)] // a signing request's parts and its two hooks
    pub async fn sign_with(
        &self,
        name: &str,
        record: &mut WalletRecord,
        kind: &SignKind,
        path: &DerivationPath,
        with: &[String],
        on_round: impl FnMut(u8, u8),
        on_wait: impl FnOnce(&str),
    ) -> Result<Signed, DeviceError> {
        let (signature, banned) = if record.current.is_structure_wallet() {
            self.settle_with_server(name, record).await?;
            let share = &record.current;
            self.pinning(async |known| {
                let trust = |party: &api::SessionParty, key| known.trust(party, key);
                (self.client)
                    .sign_structure(
                        share,
                        kind,
                        path,
                        with,
                        &self.identity,
                        trust,
                        on_round,
                        on_wait,
                    )
                    .await
            })
            .await?
        } else if !with.is_empty() {
            return Err(DeviceError::Client(ClientError::Refused(format!(
                "wallet {name} is a 2-of-2 wallet: it signs with the server alone"
            ))));
        } else {
            self.client
                .sign_wallet(
                    record,
                    |r| self.store(name, r),
                    kind,
                    path,
                    on_round,
                    on_wait,
                )
                .await
                .map(|signature| (signature, Vec::new()))?
        };
        let mut signed = signed(&record.current, kind, path, signature)?;
        signed.banned = banned;
        Ok(signed)
    }

    /// Joins `session` (from [`Self::joinable`]): a key generation (this device's share
    /// stored under the wallet's name) or a signing session of a wallet this device holds a
    /// share of under the wallet's name (show [`tessera_api::intent::decode`]'s summary of
    /// `session.sign` first). Identity keys as [`Self::keygen_structure`]. A key generation of
    /// another user's wallet (`session.invitation`; show who invites, and ask) accepts this
    /// device's party first ([`crate::ServerClient::accept_invitation`]): joining is
    /// accepting.
    ///
    /// # Errors
    /// [`DeviceError::WalletExists`] for a key generation of a wallet whose name this device
    /// has; [`DeviceError::Client`] (a wallet this device holds no share of...),
    /// [`DeviceError::Store`].
    pub async fn join(
        &self,
        session: &api::JoinableSession,
        on_round: impl FnMut(u8, u8),
    ) -> Result<Joined, DeviceError> {
        let name = &session.wallet_name;
        if session.invitation.is_some() && session.protocol != "keygen" {
            return Err(DeviceError::Client(ClientError::Refused(format!(
                "an invitation comes with a key generation, not a {}",
                session.protocol
            ))));
        }
        if session.protocol == "reshare" {
            return Ok(Joined::Reshared(
                self.join_reshare(session, on_round).await?,
            ));
        }
        let Some(sign) = &session.sign else {
            return Ok(Joined::Wallet(self.join_keygen(session, on_round).await?));
        };
        let mut record = self.wallet(name)?;
        self.settle_with_server(name, &mut record).await?;
        let signature = self
            .pinning(async |known| {
                let trust = |party: &api::SessionParty, key| known.trust(party, key);
                (self.client)
                    .join_sign(&record.current, session, &self.identity, trust, on_round)
                    .await
            })
            .await;
        let path: DerivationPath = sign
            .path
            .parse()
            .map_err(|e| DeviceError::Client(ClientError::Protocol(e)))?;
        Ok(Joined::Signed(signed(
            &record.current,
            &sign.kind,
            &path,
            signature?,
        )?))
    }

    /// Refreshes wallet `name` (same key, next epoch), storing the record at every step that
    /// needs it; `on_step` is called after each step is done and stored (progress, and the
    /// point where a crash test stops the process). Returns the new epoch.
    ///
    /// # Errors
    /// [`DeviceError::Client`] ([`ClientError::Stopped`] when storing failed).
    pub async fn refresh(
        &self,
        name: &str,
        mut on_step: impl FnMut(RefreshStep),
    ) -> Result<u64, DeviceError> {
        let mut record = self.wallet(name)?;
        let epoch = self
            .client
            .refresh(&mut record, |step, r| {
                let done = match step {
                    RefreshStep::Round { .. } | RefreshStep::CommitSent => Ok(()),
                    RefreshStep::Settled
                    | RefreshStep::PendingStored
                    | RefreshStep::Switched
                    | RefreshStep::Banned => self.store(name, r),
                };
                on_step(step);
                done
            })
            .await?;
        Ok(epoch)
    }

    /// This user's wallets, and which of them this device holds a share of.
    ///
    /// # Errors
    /// [`DeviceError::Client`], [`DeviceError::Store`].
    pub async fn wallets(&self) -> Result<Vec<WalletListing>, DeviceError> {
        let remote = self.client.wallets().await?;
        let local = self.keystore.list_wallets()?;
        Ok(remote
            .into_iter()
            .map(|info| WalletListing {
                share_on_this_device: local.contains(&info.name),
                info,
            })
            .collect())
    }

    /// A wallet's policy on the server.
    ///
    /// # Errors
    /// [`DeviceError::Client`], [`DeviceError::Store`].
    pub async fn policy(&self, name: &str) -> Result<api::PolicyInfo, DeviceError> {
        let id = self.wallet_id(name)?;
        Ok(self.client.policy(&id).await?)
    }

    /// Proposes a wallet's next policy, signed by this device: applied, held, or proposed to
    /// the policy's admin quorum (the same as [`Online::propose_policy`]).
    ///
    /// # Errors
    /// [`DeviceError::Client`], [`DeviceError::Store`].
    pub async fn set_policy(
        &self,
        name: &str,
        policy: &api::Policy,
    ) -> Result<api::proposals::PolicyOutcome, DeviceError> {
        self.propose_policy(name, policy).await
    }

    /// Signing requests of other devices and held actions waiting for a decision.
    ///
    /// # Errors
    /// [`DeviceError::Client`].
    pub async fn approvals(
        &self,
    ) -> Result<(Vec<api::PendingApproval>, Vec<api::HeldAction>), DeviceError> {
        let pending = self.client.approvals().await?;
        let held = self.client.held_actions().await?;
        Ok((pending, held))
    }

    /// The held action or signing request with this id (a held action's id wins).
    ///
    /// # Errors
    /// [`DeviceError::NoSuchRequest`], [`DeviceError::Client`].
    pub async fn pending(&self, id: &str) -> Result<Pending, DeviceError> {
        let held = self.client.held_actions().await?;
        if let Some(action) = held.into_iter().find(|a| a.id == id) {
            return Ok(Pending::Held(action));
        }
        self.client
            .approvals()
            .await?
            .into_iter()
            .find(|p| p.session_id == id)
            .map(Pending::Request)
            .ok_or_else(|| DeviceError::NoSuchRequest { id: id.into() })
    }

    /// Approves or refuses (cancels) what waits, signed by this device.
    ///
    /// # Errors
    /// [`DeviceError::Client`].
    pub async fn decide(&self, pending: &Pending, approve: bool) -> Result<Decided, DeviceError> {
        Ok(match pending {
            Pending::Held(action) => Decided::Held(
                self.client
                    .decide_held(&self.identity, action, approve)
                    .await?,
            ),
            Pending::Request(request) => {
                Decided::Request(self.client.decide(&self.identity, request, approve).await?)
            }
        })
    }

    /// This user's devices.
    ///
    /// # Errors
    /// [`DeviceError::Client`].
    pub async fn devices(&self) -> Result<Vec<api::Device>, DeviceError> {
        Ok(self.client.devices().await?)
    }

    /// Approves a pending device by the code it shows, signed by this device.
    ///
    /// # Errors
    /// [`DeviceError::Client`].
    pub async fn approve_device(&self, code: &str) -> Result<api::Device, DeviceError> {
        Ok(self.client.approve(&self.identity, code).await?)
    }

    /// Revokes a device (`force`: even the last active one).
    ///
    /// # Errors
    /// [`DeviceError::Client`].
    pub async fn revoke_device(&self, id: &str, force: bool) -> Result<api::Device, DeviceError> {
        Ok(self
            .client
            .revoke_with(id, &api::RevokeDevice { force })
            .await?)
    }

    /// This user's audit records, or one wallet's.
    ///
    /// # Errors
    /// [`DeviceError::Client`], [`DeviceError::Store`].
    pub async fn audit(&self, wallet: Option<&str>) -> Result<Vec<api::AuditRecord>, DeviceError> {
        let wallet_id = wallet.map(|name| self.wallet_id(name)).transpose()?;
        Ok(self.client.audit(wallet_id.as_deref()).await?)
    }

    /// The server's check of its whole audit chain.
    ///
    /// # Errors
    /// [`DeviceError::Client`].
    pub async fn audit_verify(&self) -> Result<api::AuditVerification, DeviceError> {
        Ok(self.client.audit_verify().await?)
    }

    /// Has the server back up its share of wallet `name` under `structure` to `holders`, and
    /// checks the backup against this device's share: the server's public share follows from
    /// it, and the structure and holders are the ones asked for.
    ///
    /// # Errors
    /// [`DeviceError::ServerBackupInvalid`], [`DeviceError::ServerBackupMismatch`],
    /// [`DeviceError::Client`], [`DeviceError::Store`].
    pub async fn backup_server_share(
        &self,
        name: &str,
        structure: &AccessStructure,
        holders: &[HolderPublicKey],
    ) -> Result<ServerBackup, DeviceError> {
        let record = self.wallet(name)?;
        let texts: Vec<String> = holders.iter().map(HolderPublicKey::to_text).collect();
        let answer = match self
            .client
            .backup_server_share(
                &self.identity,
                &record.current.wallet_id().to_string(),
                &structure.to_string(),
                texts.clone(),
            )
            .await?
        {
            api::ServerBackupOutcome::Ready(answer) => answer,
            api::ServerBackupOutcome::Held(action) => return Ok(ServerBackup::Held(action)),
        };
        let bytes = hex::decode(&answer.backup)
            .map_err(|e| DeviceError::MalformedServerBackup(e.to_string()))?;
        let backup = Backup::from_bytes(&bytes).map_err(DeviceError::Backup)?;
        let expected = tessera_backup::wallet::expected_share(&record.current, 1)
            .map_err(DeviceError::Backup)?;
        backup
            .verify_for_share(&expected)
            .map_err(|e| DeviceError::ServerBackupInvalid(e.to_string()))?;
        let mut asked = texts;
        let mut got: Vec<String> = backup
            .holders()
            .iter()
            .map(HolderPublicKey::to_text)
            .collect();
        asked.sort();
        got.sort();
        if backup.structure() != structure || asked != got {
            return Err(DeviceError::ServerBackupMismatch);
        }
        Ok(ServerBackup::Ready(Box::new(backup), bytes))
    }

    /// Shows a backup file to the server, which verifies it against the wallet as it knows it
    /// and records it in its audit log.
    ///
    /// # Errors
    /// [`DeviceError::Client`].
    pub async fn record_backup(&self, bytes: &[u8]) -> Result<BackupRecorded, DeviceError> {
        match self.client.verify_backup(bytes).await {
            Ok(report) => Ok(BackupRecorded::Recorded(report.digest)),
            Err(ClientError::Server { status: 404, .. }) => Ok(BackupRecorded::NotAServerWallet),
            Err(e) => Err(e.into()),
        }
    }

    /// Has the server verify a backup file against the wallet as it knows it (and audit it);
    /// the audit record's digest.
    ///
    /// # Errors
    /// [`DeviceError::Client`] (404 for a wallet the server does not hold).
    pub async fn verify_backup(&self, bytes: &[u8]) -> Result<String, DeviceError> {
        Ok(self.client.verify_backup(bytes).await?.digest)
    }
}
