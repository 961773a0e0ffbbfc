//! Backups of this device's share (verifiable encryption to backup holders), the holders' key
//! files, restoring a share, and a device's recovery by proof of a restored share.
//!
//! The server's backup of its own share, and recording a backup with the server, are
//! [`super::Online`] workflows.

use std::path::{Path, PathBuf};

use tessera_api as api;
use tessera_backup::backup::Backup;
use tessera_backup::holder::{HolderPublicKey, HolderSecretKey};
use tessera_backup::structure::AccessStructure;
use tessera_core::KeyShare;
use tessera_store::{KeystoreOptions, Passphrase};

use super::{Device, DeviceError, HolderKind, ServerAddress};
use crate::{ClientError, WalletRecord};

/// Where holder keys kept on this device live, in the keystore directory.
const BACKUP_KEYS_DIR: &str = "backup-keys";

/// A holder key pair made by [`Device::new_holder_key`], not written yet.
pub struct NewHolderKey {
    path: PathBuf,
    secret: HolderSecretKey,
}

impl std::fmt::Debug for NewHolderKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewHolderKey")
            .field("path", &self.path)
            .field("secret", &"<redacted>")
            .finish()
    }
}

impl NewHolderKey {
    /// Where its private key file will be written.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Its public key.
    #[must_use]
    pub fn public(&self) -> HolderPublicKey {
        self.secret.public()
    }
}

/// How a device still pending approval fared when it proved its restored share.
#[derive(Debug)]
pub enum RecoveryOutcome {
    /// The device could log in: nothing to recover.
    ActiveAlready,
    /// The proof approved the device.
    Approved(api::Device),
    /// The user has an active device: the recovery waits for a time lock or an approval.
    Held(api::HeldAction),
}

/// The options of holder key files (the keystore's defaults).
fn key_file_options() -> KeystoreOptions {
    KeystoreOptions::default()
}

/// Checks a backup file's bytes: it parses, and every authorised set of holders restores the
/// share it states (or, with `expected_public_share`, that very share).
///
/// # Errors
/// [`DeviceError::Backup`].
pub fn verify_backup(
    bytes: &[u8],
    expected_public_share: Option<&[u8; 33]>,
) -> Result<Backup, DeviceError> {
    let backup = Backup::from_bytes(bytes).map_err(DeviceError::Backup)?;
    match expected_public_share {
        Some(expected) => backup.verify_for(expected),
        None => backup.verify(),
    }
    .map_err(DeviceError::Backup)?;
    Ok(backup)
}

/// Decrypts a backup's share with the private keys of an authorised set of holders (the
/// backup is verified first).
///
/// # Errors
/// [`DeviceError::Backup`].
pub fn restore_share(backup: &Backup, keys: &[HolderSecretKey]) -> Result<KeyShare, DeviceError> {
    tessera_backup::wallet::restore_share(backup, keys).map_err(DeviceError::Backup)
}

/// Reads a holder's private key file, sealed under its own passphrase.
///
/// # Errors
/// [`DeviceError::Store`] (a wrong passphrase among them), [`DeviceError::Backup`].
pub fn read_holder_key(
    path: &Path,
    passphrase: &Passphrase,
) -> Result<HolderSecretKey, DeviceError> {
    let (label, secret) =
        tessera_store::keystore::read_backup_key_file(path, passphrase, &key_file_options())?;
    HolderSecretKey::from_bytes(label, *secret).map_err(DeviceError::Backup)
}

/// Backs up the current share of wallet record `record` (named `name`) under `structure` to
/// `holders`, and checks the backup (it restores exactly this share). Returns the backup and
/// its bytes.
///
/// # Errors
/// [`DeviceError::InvalidBackupRequest`], [`DeviceError::Backup`].
pub fn backup_wallet_share(
    record: &WalletRecord,
    name: &str,
    structure: &AccessStructure,
    holders: &[HolderPublicKey],
) -> Result<(Backup, Vec<u8>), DeviceError> {
    let backup = tessera_backup::wallet::backup_share(&record.current, name, structure, holders)
        .map_err(DeviceError::InvalidBackupRequest)?;
    let party = u16::from(record.current.party().get());
    let expected = tessera_backup::wallet::expected_share(&record.current, party)
        .map_err(DeviceError::Backup)?;
    backup
        .verify_for_share(&expected)
        .map_err(DeviceError::Backup)?;
    let bytes = backup.to_bytes();
    Ok((backup, bytes))
}

impl Device {
    /// Backs up this device's share of wallet `name` under `structure` to `holders`, and checks
    /// the backup (it restores exactly this share). Returns the backup and its bytes.
    ///
    /// # Errors
    /// [`DeviceError::Store`], [`DeviceError::WalletRecord`],
    /// [`DeviceError::InvalidBackupRequest`], [`DeviceError::Backup`].
    pub fn backup_device_share(
        &self,
        passphrase: &Passphrase,
        name: &str,
        structure: &AccessStructure,
        holders: &[HolderPublicKey],
    ) -> Result<(Backup, Vec<u8>), DeviceError> {
        let record = self.load_wallet(name, passphrase)?;
        backup_wallet_share(&record, name, structure, holders)
    }

    /// Stores a restored share as a new wallet `name`.
    ///
    /// # Errors
    /// [`DeviceError::Store`] (a wallet of that name exists).
    pub fn save_restored_wallet(
        &self,
        passphrase: &Passphrase,
        name: &str,
        share: KeyShare,
    ) -> Result<WalletRecord, DeviceError> {
        let record = WalletRecord::new(share);
        self.keystore()?
            .save_wallet(name, &record.to_bytes(), passphrase)?;
        Ok(record)
    }

    /// A device still pending approval proves it holds the restored device `share`, which
    /// approves it (the path when the user's only device was lost), or, while the user has an
    /// active device, holds the recovery under a time lock.
    ///
    /// # Errors
    /// [`DeviceError::NotSetUp`], [`DeviceError::Store`], [`DeviceError::Client`].
    pub async fn recover_registration(
        &self,
        passphrase: &Passphrase,
        share: &KeyShare,
    ) -> Result<RecoveryOutcome, DeviceError> {
        let config = self.config()?;
        let identity = self.keystore()?.load_identity(passphrase)?;
        let mut client = ServerAddress::of(&config).client()?;
        match client.login(&identity, &config.device_id).await {
            Ok(()) => Ok(RecoveryOutcome::ActiveAlready),
            Err(ClientError::Server { status: 403, .. }) => {
                match client
                    .recover_device(&identity, &config.device_id, share)
                    .await?
                {
                    api::Recovery::Approved(device) => Ok(RecoveryOutcome::Approved(device)),
                    api::Recovery::Held(action) => Ok(RecoveryOutcome::Held(action)),
                }
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Makes a holder key pair `label` whose private key file goes to `out` (default: this
    /// keystore's `backup-keys/LABEL.key`); nothing is written yet ([`Self::write_holder_key`]).
    ///
    /// # Errors
    /// [`DeviceError::InvalidHolderKey`] for a bad label, [`DeviceError::FileExists`],
    /// [`DeviceError::HolderKnown`], [`DeviceError::Store`].
    pub fn new_holder_key(
        &self,
        label: &str,
        out: Option<PathBuf>,
    ) -> Result<NewHolderKey, DeviceError> {
        tessera_backup::holder::validate_label(label).map_err(DeviceError::InvalidHolderKey)?;
        let path = match out {
            Some(out) => out,
            None if self.dir().as_os_str().is_empty() => return Err(DeviceError::NoKeyDirectory),
            None => {
                // Private to this user, like the keystore itself.
                let dir = self.dir().join(BACKUP_KEYS_DIR);
                let mut builder = std::fs::DirBuilder::new();
                builder.recursive(true);
                std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
                builder
                    .create(&dir)
                    .map_err(|source| DeviceError::CreateDir {
                        path: dir.clone(),
                        source,
                    })?;
                dir.join(format!("{label}.key"))
            }
        };
        if path.exists() {
            return Err(DeviceError::FileExists {
                path,
                what: "a backup key file is never overwritten",
            });
        }
        let secret = HolderSecretKey::generate(label).map_err(DeviceError::Backup)?;
        // Known before the file is written, so a label clash changes nothing.
        if self.known_holders()?.holders.contains_key(label) {
            return Err(DeviceError::HolderKnown {
                label: label.to_owned(),
            });
        }
        Ok(NewHolderKey { path, secret })
    }

    /// Writes the private key file of `key`, sealed under `passphrase`, and adds its public key
    /// to the known holders.
    ///
    /// # Errors
    /// [`DeviceError::Store`], [`DeviceError::HolderKeyDiffers`].
    pub fn write_holder_key(
        &self,
        key: NewHolderKey,
        kind: HolderKind,
        passphrase: &Passphrase,
    ) -> Result<HolderPublicKey, DeviceError> {
        let public = key.secret.public();
        tessera_store::keystore::write_backup_key_file(
            &key.path,
            public.label(),
            &key.secret.to_bytes(),
            passphrase,
            &key_file_options(),
        )?;
        self.remember_holder(&public, kind)?;
        Ok(public)
    }

    /// The private key file `given` names: a path, else the label of a key kept in this
    /// keystore.
    ///
    /// # Errors
    /// [`DeviceError::NoKeyFile`].
    pub fn holder_key_file(&self, given: &str) -> Result<PathBuf, DeviceError> {
        let path = PathBuf::from(given);
        let path = if path.exists() {
            path
        } else {
            self.dir()
                .join(BACKUP_KEYS_DIR)
                .join(format!("{given}.key"))
        };
        if path.exists() {
            Ok(path)
        } else {
            Err(DeviceError::NoKeyFile {
                given: given.to_owned(),
            })
        }
    }
}
