//! The device SDK: every workflow of a device that shares wallets with a commitment server,
//! behind one handle, [`Device`], for any front end (the `tessera` CLI, an app, a service).
//!
//! A [`Device`] is a device home: its plain records ([`HomeStorage`]: which server it belongs
//! to, the backup holders it knows) and its keystore (the identity key and the wallet shares,
//! sealed under the user's passphrase). The SDK never prompts and never prints: the caller
//! passes the passphrase in and receives progress through callbacks, results as values and
//! failures as [`DeviceError`].
//!
//! ```no_run
//! # async fn example(passphrase: tessera_store::Passphrase) -> Result<(), tessera_client::device::DeviceError> {
//! use tessera_client::device::Device;
//!
//! let device = Device::open_dir(std::path::Path::new("/home/alice/.tessera"));
//! let online = device.connect(passphrase).await?;
//! let share = online.keygen("savings", |round, total| println!("round {round}/{total}")).await?;
//! println!("{}", share.public_key().eth_address());
//! # Ok(()) }
//! ```
//!
//! - [`config`]: `device.json`, the server and registration;
//! - [`holders`]: `holders.json`, the backup holders' public keys;
//! - [`known`]: `devices.json`, the identity keys pinned for the devices met in sessions;
//! - [`online`]: the workflows that need the server (keygen, sign, refresh, approvals, policy,
//!   devices, audit, the server's backup);
//! - [`backup`]: backups of this device's share, restoring them, and recovery by a restored share.

pub mod backup;
pub mod config;
pub mod holders;
pub mod known;
pub mod online;
pub mod peer;
pub mod proposals;
pub mod psbt;
mod record;
pub mod requests;
pub mod reshare;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tessera_api as api;
use tessera_store::keystore::EntryStorage;
use tessera_store::{DeviceIdentity, FileHome, HomeStorage, Keystore, KeystoreOptions, Passphrase};

use crate::{ClientError, ServerClient, WalletRecord};

pub use config::DeviceConfig;
pub use holders::{HolderKind, KnownHolder, KnownHolders};
pub use known::{KnownDevice, KnownDevices};
pub use online::Online;

/// Everything a device workflow can fail with. Messages name files and wallets and never carry
/// secret material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeviceError {
    /// The device has no configuration: it was never set up (`init`).
    #[error("this device is not set up ({location} missing)")]
    NotSetUp {
        /// Where the configuration was looked for.
        location: String,
    },
    /// A record of the device home does not parse.
    #[error("{location} is damaged: {reason}")]
    Damaged {
        /// Where the record lives.
        location: String,
        /// What is wrong.
        reason: String,
    },
    /// The keystore or the home's storage failed (or refused: a wrong passphrase, a bad name).
    #[error(transparent)]
    Store(#[from] tessera_store::Error),
    /// The server's URL or certificate pin is unusable.
    #[error(transparent)]
    ServerAddress(ClientError),
    /// Talking to the server failed, or it refused.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// A stored wallet record does not decode.
    #[error("wallet {name}: {source}")]
    WalletRecord {
        /// The wallet.
        name: String,
        /// Why.
        source: ClientError,
    },
    /// The server says this device was revoked: its identity key can never be used again.
    #[error(
        "this device ({name:?}, id {device_id}) was revoked on {server}{at}; its identity key can never be used again. \
         To use this machine again, set it up with a new identity (an empty TESSERA_HOME) and approve it from an active device",
        at = revoked_at.as_deref().map(|at| format!(" at {at}")).unwrap_or_default()
    )]
    Revoked {
        /// The device's name.
        name: String,
        /// Its id.
        device_id: String,
        /// The server's URL.
        server: String,
        /// When, RFC 3339.
        revoked_at: Option<String>,
    },
    /// A wallet of this name is on this device already.
    #[error("a wallet named {name:?} already exists on this device")]
    WalletExists {
        /// The name.
        name: String,
    },
    /// What a signature was asked for does not decode (a bad digest or transaction).
    #[error("{0}")]
    InvalidRequest(tessera_core::Error),
    /// A protocol output could not be used (a key derivation, a transaction encoding).
    #[error("{0}")]
    Protocol(tessera_core::Error),
    /// The name this device would show other devices is not one they accept.
    #[error("{0}")]
    InvalidPeerName(crate::peer::PeerError),
    /// No pending signing request nor held action has this id.
    #[error("no pending signing request or held action {id}")]
    NoSuchRequest {
        /// The id asked for.
        id: String,
    },
    /// The label names another holder key already.
    #[error("this device already knows another key for holder {label:?}; pick another label")]
    HolderKeyDiffers {
        /// The label.
        label: String,
    },
    /// A new holder key's label is taken.
    #[error("this device already knows a holder {label:?}; pick another label")]
    HolderKnown {
        /// The label.
        label: String,
    },
    /// A holder of the structure has no known public key.
    #[error(
        "no public key for holder {label:?}: create it with `tessera backup-key new --label {label} --out …`, add it with `tessera backup-key add`, or pass --holder"
    )]
    NoHolderKey {
        /// The holder's label.
        label: String,
    },
    /// A holder's public key (or label) is not valid.
    #[error("{0}")]
    InvalidHolderKey(tessera_backup::BackupError),
    /// A file that is never overwritten exists already.
    #[error("{} exists already; {what}", path.display())]
    FileExists {
        /// The file.
        path: PathBuf,
        /// Why it stays ("it is never overwritten", …).
        what: &'static str,
    },
    /// A backup cannot be made of this share under this structure.
    #[error("{0}")]
    InvalidBackupRequest(tessera_backup::BackupError),
    /// Making, checking or restoring a backup failed.
    #[error("{0}")]
    Backup(tessera_backup::BackupError),
    /// The server's backup of its share does not verify against this device's share.
    #[error("the server's backup does not verify: {0}")]
    ServerBackupInvalid(String),
    /// The server's backup is not even hex.
    #[error("{0}")]
    MalformedServerBackup(String),
    /// The server's backup is not what was asked for.
    #[error("the server's backup is not under the structure and holders asked for")]
    ServerBackupMismatch,
    /// A backup holds the server's share, which is never restored on a device.
    #[error(
        "this backup holds the server's share: restore it on the server (--server-data-dir, server stopped), never on a device that holds the other share"
    )]
    ServerShareOnDevice,
    /// A wallet to restore is on this device already.
    #[error("a wallet named {name:?} exists on this device; restore with --as OTHER_NAME")]
    RestoreExists {
        /// The name.
        name: String,
    },
    /// A directory of the device home could not be created.
    #[error("cannot create {}: {source}", path.display())]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// No holder key file by this path or label.
    #[error("no key file {given} (nor a key labelled {given:?} in this keystore)")]
    NoKeyFile {
        /// The path or label given.
        given: String,
    },
    /// A holder key was to be kept on a device that keeps no files ([`Device::in_storage`]).
    #[error("this device keeps no files: give the path of the holder's key file")]
    NoKeyDirectory,
    /// A record could not be encoded.
    #[error("cannot encode: {0}")]
    Encode(String),
}

impl DeviceError {
    pub(crate) fn encode(e: serde_json::Error) -> Self {
        DeviceError::Encode(e.to_string())
    }
}

/// A device home: the handle every workflow starts from.
#[derive(Clone)]
pub struct Device {
    home: Arc<dyn HomeStorage>,
    keystore_dir: PathBuf,
    options: KeystoreOptions,
    /// Where the keystore's sealed entries live, if not the directory's files.
    entries: Option<Arc<dyn EntryStorage>>,
}

impl std::fmt::Debug for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Device")
            .field("keystore_dir", &self.keystore_dir)
            .finish_non_exhaustive()
    }
}

/// What [`Device::init`] registered.
#[derive(Debug)]
pub struct Registration {
    /// The device as the server knows it (active, or pending another device's approval).
    pub device: api::Device,
    /// The code to type on an active device when this one is pending.
    pub approval_code: Option<String>,
}

impl Device {
    /// The device home in `dir` (`TESSERA_HOME`): records as files beside the keystore. Nothing
    /// is created until a workflow writes.
    #[must_use]
    pub fn open_dir(dir: &Path) -> Self {
        Self::open(Arc::new(FileHome::new(dir)), dir)
    }

    /// A device whose plain records live in `home` and whose keystore is `keystore_dir`.
    #[must_use]
    pub fn open(home: Arc<dyn HomeStorage>, keystore_dir: &Path) -> Self {
        Device {
            home,
            keystore_dir: keystore_dir.to_path_buf(),
            options: KeystoreOptions::default(),
            entries: None,
        }
    }

    /// A device kept entirely in `home` and `entries` (e.g. [`tessera_store::MemoryHome`] and
    /// [`tessera_store::keystore::MemoryEntries`] in tests, or an app's platform secure storage):
    /// nothing is written to files, except holder key files at the paths a workflow is given.
    #[must_use]
    pub fn in_storage(home: Arc<dyn HomeStorage>, entries: Arc<dyn EntryStorage>) -> Self {
        Device {
            home,
            keystore_dir: PathBuf::new(),
            options: KeystoreOptions::default(),
            entries: Some(entries),
        }
    }

    /// The same device with other keystore options (tests use a fast KDF).
    #[must_use]
    pub fn with_keystore_options(mut self, options: KeystoreOptions) -> Self {
        self.options = options;
        self
    }

    /// The storage of the plain records.
    #[must_use]
    pub fn home(&self) -> &dyn HomeStorage {
        self.home.as_ref()
    }

    /// The keystore directory.
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.keystore_dir
    }

    /// Opens the keystore (creating its directory, 0700, on first use).
    ///
    /// # Errors
    /// [`DeviceError::Store`].
    pub fn keystore(&self) -> Result<Keystore, DeviceError> {
        Ok(match &self.entries {
            Some(entries) => {
                Keystore::with_entries(&self.keystore_dir, entries.clone(), self.options)?
            }
            None => Keystore::open_with(&self.keystore_dir, self.options)?,
        })
    }

    /// The configuration, which must exist (the device was set up).
    ///
    /// # Errors
    /// [`DeviceError::NotSetUp`], [`DeviceError::Damaged`], [`DeviceError::Store`].
    pub fn config(&self) -> Result<DeviceConfig, DeviceError> {
        DeviceConfig::require(self.home())
    }

    /// Whether the device was set up (has a configuration).
    ///
    /// # Errors
    /// [`DeviceError::Store`] when the storage cannot be read.
    pub fn is_set_up(&self) -> Result<bool, DeviceError> {
        Ok(self
            .home()
            .get(tessera_store::HomeRecord::DeviceConfig)?
            .is_some())
    }

    /// Whether a wallet of this name is stored here; checks the name first.
    ///
    /// # Errors
    /// [`DeviceError::Store`] (an invalid name among them).
    pub fn has_wallet(&self, name: &str) -> Result<bool, DeviceError> {
        Ok(self.keystore()?.has_wallet(name)?)
    }

    /// A wallet's record, unsealed with `passphrase`.
    ///
    /// # Errors
    /// [`DeviceError::Store`], [`DeviceError::WalletRecord`].
    pub fn load_wallet(
        &self,
        name: &str,
        passphrase: &Passphrase,
    ) -> Result<WalletRecord, DeviceError> {
        let bytes = self.keystore()?.load_wallet(name, passphrase)?;
        WalletRecord::from_bytes(&bytes).map_err(|source| DeviceError::WalletRecord {
            name: name.to_owned(),
            source,
        })
    }

    /// The backup holders this device knows.
    ///
    /// # Errors
    /// [`DeviceError::Store`], [`DeviceError::Damaged`].
    pub fn known_holders(&self) -> Result<KnownHolders, DeviceError> {
        KnownHolders::load(self.home())
    }

    /// Adds a holder's public key to the known holders.
    ///
    /// # Errors
    /// [`DeviceError::HolderKeyDiffers`] when its label holds another key; storage errors.
    pub fn remember_holder(
        &self,
        key: &tessera_backup::holder::HolderPublicKey,
        kind: HolderKind,
    ) -> Result<(), DeviceError> {
        let mut known = self.known_holders()?;
        known.add(key, kind)?;
        // The keystore's directory is the home: opening it makes the home private (0700).
        self.keystore()?;
        known.save(self.home())
    }

    /// Sets this device up with the server `client` talks to: creates the identity key on first
    /// use (or unseals the existing one), registers the device as `name` of `user`, and stores
    /// the configuration.
    ///
    /// # Errors
    /// [`DeviceError::Store`] (a wrong passphrase), [`DeviceError::Client`],
    /// [`DeviceError::Revoked`] when the server knows this identity as revoked (nothing is
    /// stored then).
    pub async fn init(
        &self,
        client: &ServerClient,
        passphrase: &Passphrase,
        server: &ServerAddress,
        user: &str,
        name: &str,
    ) -> Result<Registration, DeviceError> {
        let keystore = self.keystore()?;
        let identity: DeviceIdentity = if keystore.has_identity()? {
            keystore.load_identity(passphrase)?
        } else {
            keystore.create_identity(passphrase)?
        };
        let device = client.register(&identity, user, name).await?;
        if device.status == api::DeviceStatus::Revoked {
            return Err(DeviceError::Revoked {
                name: device.name,
                device_id: device.device_id.into(),
                server: server.url.clone(),
                revoked_at: device.revoked_at,
            });
        }
        DeviceConfig {
            server: server.url.clone(),
            server_fingerprint: server.fingerprint.clone(),
            user: user.into(),
            device_id: device.device_id.clone().into(),
            device_name: name.into(),
        }
        .save(self.home())?;
        let approval_code = (device.status == api::DeviceStatus::Pending)
            .then(|| api::approval_code(&identity.public_key()));
        Ok(Registration {
            device,
            approval_code,
        })
    }

    /// Unseals the identity key with `passphrase` and logs in to the device's server.
    ///
    /// # Errors
    /// [`DeviceError::NotSetUp`], [`DeviceError::Store`] (a wrong passphrase),
    /// [`DeviceError::ServerAddress`], [`DeviceError::Client`].
    pub async fn connect(&self, passphrase: Passphrase) -> Result<Online, DeviceError> {
        let config = self.config()?;
        let keystore = self.keystore()?;
        let identity = keystore.load_identity(&passphrase)?;
        let mut client = ServerAddress::of(&config).client()?;
        client.login(&identity, &config.device_id).await?;
        Ok(Online {
            device: self.clone(),
            keystore,
            passphrase,
            identity,
            config,
            client,
        })
    }
}

/// A server's URL and, optionally, the SHA-256 fingerprint of the certificate to pin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerAddress {
    /// `https://…`, or `http://…` on loopback.
    pub url: String,
    /// 64 hex digits, as `tessera server --dev-tls` prints.
    pub fingerprint: Option<String>,
}

impl ServerAddress {
    /// The server a configuration names.
    #[must_use]
    pub fn of(config: &DeviceConfig) -> Self {
        ServerAddress {
            url: config.server.clone(),
            fingerprint: config.server_fingerprint.clone(),
        }
    }

    /// A client for this server (nothing is sent yet).
    ///
    /// # Errors
    /// [`DeviceError::ServerAddress`] for an unusable URL or fingerprint.
    pub fn client(&self) -> Result<ServerClient, DeviceError> {
        match &self.fingerprint {
            Some(f) => ServerClient::with_pinned_certificate(&self.url, f),
            None => ServerClient::new(&self.url),
        }
        .map_err(DeviceError::ServerAddress)
    }
}

#[cfg(test)]
mod tests {
    use tessera_backup::holder::HolderSecretKey;
    use tessera_backup::structure::AccessStructure;
    use tessera_store::{HomeRecord, MemoryHome};

    use super::*;

    fn memory_device() -> (Device, Arc<MemoryHome>) {
        let home = Arc::new(MemoryHome::new());
        let device = Device::open(
            home.clone(),
            Path::new("/nonexistent/tessera-test-keystore"),
        );
        (device, home)
    }

    #[test]
    fn a_device_never_set_up_says_so_and_a_config_round_trips() {
        let (device, home) = memory_device();
        assert!(!device.is_set_up().unwrap());
        let err = device.config().unwrap_err();
        assert!(matches!(err, DeviceError::NotSetUp { .. }), "{err}");
        let config = DeviceConfig {
            server: "https://tessera.example".into(),
            server_fingerprint: Some("ab".repeat(32)),
            user: "alice".into(),
            device_id: "d-1".into(),
            device_name: "laptop".into(),
        };
        config.save(device.home()).unwrap();
        assert!(device.is_set_up().unwrap());
        assert_eq!(device.config().unwrap(), config);
        // Damaged bytes are reported as such, naming the record.
        home.put(HomeRecord::DeviceConfig, b"{not json").unwrap();
        let err = device.config().unwrap_err();
        assert!(err.to_string().contains("device.json"), "{err}");
        assert!(matches!(err, DeviceError::Damaged { .. }));
    }

    #[test]
    fn a_device_config_without_a_version_loads_as_v1_and_is_written_with_its_version() {
        // As `tessera init` wrote it before records carried their version (no fingerprint: the
        // field is absent).
        let v1 = "{\n  \"server\": \"http://127.0.0.1:8443\",\n  \"user\": \"alice\",\n  \"device_id\": \"0f5c\",\n  \"device_name\": \"laptop\"\n}";
        let home = MemoryHome::new();
        home.put(HomeRecord::DeviceConfig, v1.as_bytes()).unwrap();
        let config = DeviceConfig::require(&home).unwrap();
        assert_eq!(config.server_fingerprint, None);
        config.save(&home).unwrap();
        let written =
            String::from_utf8(home.get(HomeRecord::DeviceConfig).unwrap().unwrap()).unwrap();
        assert_eq!(
            written,
            v1.replacen("{\n", "{\n  \"version\": 1,\n", 1),
            "the version first, then the fields as before"
        );
        assert_eq!(DeviceConfig::require(&home).unwrap(), config);
        // A version from a newer build is refused, naming the record, not misread.
        home.put(
            HomeRecord::DeviceConfig,
            written
                .replace("\"version\": 1", "\"version\": 2")
                .as_bytes(),
        )
        .unwrap();
        let err = DeviceConfig::require(&home).unwrap_err();
        assert!(
            matches!(&err, DeviceError::Damaged { reason, .. } if reason.contains("format version 2")),
            "{err}"
        );
    }

    #[test]
    fn known_holders_are_added_resolved_and_a_changed_key_is_refused() {
        let (device, _home) = memory_device();
        let usb = HolderSecretKey::generate("usb-1").unwrap().public();
        let cloud = HolderSecretKey::generate("cloud").unwrap().public();
        let mut known = device.known_holders().unwrap();
        assert!(known.holders.is_empty());
        known.add(&usb, HolderKind::Usb).unwrap();
        // The same key again is fine; another key under the label is not.
        known.add(&usb, HolderKind::Usb).unwrap();
        let other_usb = HolderSecretKey::generate("usb-1").unwrap().public();
        let err = known.add(&other_usb, HolderKind::Usb).unwrap_err();
        assert!(matches!(err, DeviceError::HolderKeyDiffers { ref label } if label == "usb-1"));
        known.save(device.home()).unwrap();

        let known = device.known_holders().unwrap();
        assert_eq!(known.holders["usb-1"].kind, HolderKind::Usb);
        let structure = AccessStructure::parse("or(usb-1, cloud)").unwrap();
        let err = known.resolve(&structure, &[]).unwrap_err();
        assert!(matches!(err, DeviceError::NoHolderKey { ref label } if label == "cloud"));
        let keys = known
            .resolve(&structure, std::slice::from_ref(&cloud))
            .unwrap();
        let labels: Vec<&str> = keys.iter().map(|k| k.label()).collect();
        assert_eq!(labels, structure.holders());
        assert!(keys.contains(&usb) && keys.contains(&cloud));
    }

    #[test]
    fn a_device_in_memory_backs_up_and_restores_a_wallet_without_files() {
        use tessera_core::protocols::{KeygenSession, fresh_nonce};
        use tessera_core::runner::{self, Delivery};
        use tessera_core::{Threshold, WalletId};
        use tessera_store::keystore::MemoryEntries;

        let device =
            Device::in_storage(Arc::new(MemoryHome::new()), Arc::new(MemoryEntries::new()))
                .with_keystore_options(KeystoreOptions::default().insecure_fast_kdf_for_tests());
        let pw = Passphrase::new("pw".into()).unwrap();
        let (wallet, nonce) = (WalletId::random(), fresh_nonce());
        let threshold = Threshold::new(2, 2).unwrap();
        let sessions = threshold
            .parties()
            .map(|p| KeygenSession::new(wallet, threshold, p, &nonce).unwrap())
            .collect();
        let (mut shares, _) = runner::run_with(sessions, |_| Delivery::Deliver, |_, _| {}).unwrap();
        shares.sort_by_key(tessera_core::KeyShare::party);
        let public_key = shares[0].public_key();
        let other = shares.pop().unwrap();
        device
            .save_restored_wallet(&pw, "w", shares.pop().unwrap())
            .unwrap();
        assert!(device.has_wallet("w").unwrap());
        let err = device.save_restored_wallet(&pw, "w", other).unwrap_err();
        assert!(matches!(err, DeviceError::Store(_)), "{err}");

        let usb = HolderSecretKey::generate("usb-1").unwrap();
        device
            .remember_holder(&usb.public(), HolderKind::Usb)
            .unwrap();
        let structure = AccessStructure::parse("usb-1").unwrap();
        let holders = device
            .known_holders()
            .unwrap()
            .resolve(&structure, &[])
            .unwrap();
        let (backup, bytes) = device
            .backup_device_share(&pw, "w", &structure, &holders)
            .unwrap();
        backup::verify_backup(&bytes, None).unwrap();
        let restored = backup::restore_share(&backup, std::slice::from_ref(&usb)).unwrap();
        assert_eq!(restored.public_key(), public_key);
        assert_eq!(restored.party(), tessera_core::PartyIndex::new(0));
        // A device without files keeps no holder key files of its own.
        let err = device.new_holder_key("usb-2", None).unwrap_err();
        assert!(matches!(err, DeviceError::NoKeyDirectory), "{err}");
        // A structure naming a holder with no key is refused before anything is made.
        let two = AccessStructure::parse("and(usb-1, cloud)").unwrap();
        let err = device
            .known_holders()
            .unwrap()
            .resolve(&two, &[])
            .unwrap_err();
        assert!(matches!(err, DeviceError::NoHolderKey { .. }), "{err}");
    }

    #[test]
    fn a_holders_file_without_a_version_loads_as_v1_and_a_newer_version_is_refused() {
        let home = MemoryHome::new();
        let usb = HolderSecretKey::generate("usb-1").unwrap().public();
        let v1 = format!(
            "{{\n  \"holders\": {{\n    \"usb-1\": {{\n      \"public_key\": \"{}\",\n      \"kind\": \"usb\"\n    }}\n  }}\n}}",
            usb.to_text()
        );
        home.put(HomeRecord::KnownHolders, v1.as_bytes()).unwrap();
        let known = KnownHolders::load(&home).unwrap();
        assert_eq!(known.holders["usb-1"].public_key, usb.to_text());
        known.save(&home).unwrap();
        let written =
            String::from_utf8(home.get(HomeRecord::KnownHolders).unwrap().unwrap()).unwrap();
        assert_eq!(written, v1.replacen("{\n", "{\n  \"version\": 1,\n", 1));
        assert_eq!(
            KnownHolders::load(&home).unwrap().holders["usb-1"].public_key,
            usb.to_text()
        );
        home.put(
            HomeRecord::KnownHolders,
            written
                .replace("\"version\": 1", "\"version\": 9")
                .as_bytes(),
        )
        .unwrap();
        assert!(matches!(
            KnownHolders::load(&home),
            Err(DeviceError::Damaged { reason, .. }) if reason.contains("format version 9")
        ));
    }
}
