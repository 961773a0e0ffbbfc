//! The device keystore: a directory holding the device identity and the wallet shares, each
//! encrypted under the user's passphrase.
//!
//! ```text
//! $TESSERA_HOME/              (default ~/.tessera, mode 0700)
//!   identity.key              the device identity (Ed25519), mode 0600
//!   wallets/                  mode 0700
//!     <name>.share            one wallet's share, mode 0600
//!   backup-keys/              mode 0700 (backup holders' keys kept here)
//!   device.json, …            the device's other files, mode 0600
//! ```
//!
//! Opening a keystore makes a directory created beforehand private too (0700), and takes
//! group and other permissions away from the files in it.
//!
//! Every file is one encrypted entry ([`format`](mod@format) describes the layout). Files are replaced only
//! atomically, so a crash leaves the old or the new version; nothing is overwritten unless the
//! caller says so ([`Keystore::replace_wallet`]), and a failed read never changes a file.
//!
//! A `Keystore` holds no secret and no lock: each call derives the key from the passphrase it is
//! given and touches the files it names.
//!
//! Where the sealed entries live is a [`storage::EntryStorage`]: the files above
//! ([`FileEntries`], what [`Keystore::open`] uses), or memory ([`MemoryEntries`]) or an app's
//! platform secure storage through [`Keystore::with_entries`]; sealing is the same for all.

pub mod format;
mod identity;
mod passphrase;
pub mod storage;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use zeroize::Zeroizing;

use format::EntryKind;
pub use format::KdfParams;
pub use identity::{DeviceIdentity, verify_identity_signature};
pub use passphrase::Passphrase;
use storage::read_entry_file;
pub use storage::{EntryStorage, FileEntries, KeystoreEntry, MemoryEntries};

use crate::error::{Error, Result};
use crate::fs::{
    Overwrite, Written, create_private_dir, make_private, remove_stale_temp_files, write_atomically,
};

/// Environment variable naming the keystore directory.
pub const TESSERA_HOME: &str = "TESSERA_HOME";
const DEFAULT_DIR_NAME: &str = ".tessera";
const IDENTITY_FILE: &str = "identity.key";
const WALLETS_DIR: &str = "wallets";
/// Backup holders' key files kept on this device (written by the CLI).
const BACKUP_KEYS_DIR: &str = "backup-keys";
const WALLET_EXTENSION: &str = "share";
/// Longest wallet name, in characters (all ASCII).
pub const MAX_WALLET_NAME_LEN: usize = 64;

/// How a keystore encrypts new entries and which entries it accepts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KeystoreOptions {
    kdf: KdfParams,
    insecure_fast_kdf_for_tests: bool,
}

impl KeystoreOptions {
    /// The Argon2 parameters for entries written from now on (entries already stored keep theirs).
    #[must_use]
    pub fn with_kdf_params(mut self, kdf: KdfParams) -> Self {
        self.kdf = kdf;
        self
    }

    /// TESTS ONLY: writes entries with [`KdfParams::INSECURE_FAST_FOR_TESTS`] and accepts entries
    /// whose parameters are below the security floor. A passphrase protected this way can be
    /// brute-forced cheaply; never use it for real keys.
    #[must_use]
    pub fn insecure_fast_kdf_for_tests(mut self) -> Self {
        self.kdf = KdfParams::INSECURE_FAST_FOR_TESTS;
        self.insecure_fast_kdf_for_tests = true;
        self
    }

    /// The Argon2 parameters new entries get.
    #[must_use]
    pub fn kdf_params(&self) -> KdfParams {
        self.kdf
    }
}

/// The device keystore directory. See the [module documentation](self).
#[derive(Debug, Clone)]
pub struct Keystore {
    dir: PathBuf,
    options: KeystoreOptions,
    entries: Arc<dyn EntryStorage>,
}

impl Keystore {
    /// The keystore directory: `$TESSERA_HOME` if set and not empty, else `~/.tessera`.
    ///
    /// # Errors
    /// [`Error::NoKeystoreDirectory`] if neither is known.
    pub fn default_dir() -> Result<PathBuf> {
        default_dir_from(std::env::var_os(TESSERA_HOME), std::env::home_dir())
    }

    /// Opens the keystore in `dir` with the default options, creating the directory (mode 0700)
    /// if it does not exist.
    ///
    /// # Errors
    /// [`Error::Io`] if the directory cannot be created or is not a directory.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self> {
        Self::open_with(dir, KeystoreOptions::default())
    }

    /// Opens the keystore in `dir` with `options`; see [`Keystore::open`].
    ///
    /// # Errors
    /// [`Error::WeakKdfParams`] if the options' KDF parameters are below the floor and
    /// `insecure_fast_kdf_for_tests` was not chosen; [`Error::Io`] as for [`Keystore::open`].
    pub fn open_with(dir: impl Into<PathBuf>, options: KeystoreOptions) -> Result<Self> {
        if let (Some(reason), false) = (
            options.kdf.below_floor(),
            options.insecure_fast_kdf_for_tests,
        ) {
            return Err(Error::WeakKdfParams { path: None, reason });
        }
        let dir = dir.into();
        create_private_dir(&dir)?;
        create_private_dir(&dir.join(WALLETS_DIR))?;
        // A home created beforehand (e.g. 0755), or files written by older versions (0644).
        make_private(&dir, &[WALLETS_DIR, BACKUP_KEYS_DIR])?;
        // Leftovers of writes that crashed; never read, so cleaning them is only housekeeping.
        remove_stale_temp_files(&dir);
        remove_stale_temp_files(&dir.join(WALLETS_DIR));
        let entries = Arc::new(FileEntries::new(&dir));
        Ok(Keystore {
            dir,
            options,
            entries,
        })
    }

    /// A keystore whose sealed entries live in `entries` (e.g. [`MemoryEntries`], or an app's
    /// platform secure storage) instead of the directory's files; `dir` is still where the
    /// device's other files go (held backup keys) and is not created. Entries are sealed
    /// exactly as in files.
    ///
    /// # Errors
    /// [`Error::WeakKdfParams`] as for [`Keystore::open_with`].
    pub fn with_entries(
        dir: impl Into<PathBuf>,
        entries: Arc<dyn EntryStorage>,
        options: KeystoreOptions,
    ) -> Result<Self> {
        if let (Some(reason), false) = (
            options.kdf.below_floor(),
            options.insecure_fast_kdf_for_tests,
        ) {
            return Err(Error::WeakKdfParams { path: None, reason });
        }
        Ok(Keystore {
            dir: dir.into(),
            options,
            entries,
        })
    }

    /// The keystore directory.
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The options this keystore was opened with.
    #[must_use]
    pub fn options(&self) -> KeystoreOptions {
        self.options
    }

    fn identity_path(&self) -> PathBuf {
        self.entries.location(KeystoreEntry::Identity)
    }

    fn wallet_path(&self, name: &WalletName<'_>) -> PathBuf {
        self.entries.location(KeystoreEntry::Wallet(name.0))
    }

    // --- device identity ---

    /// Whether the device identity exists.
    ///
    /// # Errors
    /// [`Error::Io`] if that cannot be determined (e.g. no permission).
    pub fn has_identity(&self) -> Result<bool> {
        self.entries.exists(KeystoreEntry::Identity)
    }

    /// Creates the device identity and stores it encrypted under `passphrase`.
    ///
    /// # Errors
    /// [`Error::IdentityExists`] if there is one already (it is never replaced: the server and
    /// paired devices know this device by it); [`Error::Io`] if it cannot be written.
    pub fn create_identity(&self, passphrase: &Passphrase) -> Result<DeviceIdentity> {
        let path = self.identity_path();
        // Checked first only to spare an Argon2 run; the no-clobber write below is what enforces it.
        if self.has_identity()? {
            return Err(Error::IdentityExists { path });
        }
        let identity = DeviceIdentity::generate();
        let file = format::seal_entry(
            EntryKind::Identity,
            &self.options.kdf,
            passphrase,
            identity.seed().as_ref(),
        )?;
        if self.entries.create(KeystoreEntry::Identity, &file)? {
            Ok(identity)
        } else {
            Err(Error::IdentityExists { path })
        }
    }

    /// Decrypts the device identity.
    ///
    /// # Errors
    /// [`Error::IdentityNotFound`], [`Error::WrongPassphrase`], or an error naming the file if it
    /// is damaged ([`Error::CorruptFile`], [`Error::UnsupportedVersion`], ...).
    pub fn load_identity(&self, passphrase: &Passphrase) -> Result<DeviceIdentity> {
        let path = self.identity_path();
        let Some(bytes) = self.entries.read(KeystoreEntry::Identity)? else {
            return Err(Error::IdentityNotFound { path });
        };
        let seed = self.decrypt_entry(&path, &bytes, EntryKind::Identity, passphrase)?;
        let seed: &[u8; 32] = seed.as_slice().try_into().map_err(|_| Error::CorruptFile {
            path: path.clone(),
            reason: "the identity entry does not hold a 32-byte key".into(),
        })?;
        Ok(DeviceIdentity::from_seed(seed))
    }

    // --- wallets ---

    /// Stores a new wallet entry (e.g. `KeyShare::to_bytes`) encrypted under `passphrase`.
    ///
    /// # Errors
    /// [`Error::InvalidWalletName`]; [`Error::WalletExists`] if the name is taken (use
    /// [`Keystore::replace_wallet`]); [`Error::EntryTooLarge`]; [`Error::Io`].
    pub fn save_wallet(&self, name: &str, plaintext: &[u8], passphrase: &Passphrase) -> Result<()> {
        let name = WalletName::parse(name)?;
        let file = format::seal_entry(EntryKind::Wallet, &self.options.kdf, passphrase, plaintext)?;
        if self.entries.create(KeystoreEntry::Wallet(name.0), &file)? {
            Ok(())
        } else {
            Err(Error::WalletExists {
                name: name.0.to_owned(),
            })
        }
    }

    /// Atomically replaces an existing wallet entry: after a crash it holds the old or the new
    /// plaintext. The new entry is encrypted under `passphrase`, which need not be the old one.
    ///
    /// # Errors
    /// [`Error::InvalidWalletName`]; [`Error::WalletNotFound`] if there is nothing to replace
    /// (use [`Keystore::save_wallet`]); [`Error::EntryTooLarge`]; [`Error::Io`].
    pub fn replace_wallet(
        &self,
        name: &str,
        plaintext: &[u8],
        passphrase: &Passphrase,
    ) -> Result<()> {
        let name = WalletName::parse(name)?;
        if !self.entries.exists(KeystoreEntry::Wallet(name.0))? {
            return Err(Error::WalletNotFound {
                name: name.0.to_owned(),
            });
        }
        let file = format::seal_entry(EntryKind::Wallet, &self.options.kdf, passphrase, plaintext)?;
        self.entries.replace(KeystoreEntry::Wallet(name.0), &file)
    }

    /// Decrypts a wallet entry.
    ///
    /// # Errors
    /// [`Error::InvalidWalletName`], [`Error::WalletNotFound`], [`Error::WrongPassphrase`], or an
    /// error naming the file if it is damaged ([`Error::CorruptFile`], ...).
    pub fn load_wallet(&self, name: &str, passphrase: &Passphrase) -> Result<Zeroizing<Vec<u8>>> {
        let name = WalletName::parse(name)?;
        let path = self.wallet_path(&name);
        let Some(bytes) = self.entries.read(KeystoreEntry::Wallet(name.0))? else {
            return Err(Error::WalletNotFound {
                name: name.0.to_owned(),
            });
        };
        self.decrypt_entry(&path, &bytes, EntryKind::Wallet, passphrase)
    }

    /// Whether a wallet of this name is stored.
    ///
    /// # Errors
    /// [`Error::InvalidWalletName`], [`Error::Io`].
    pub fn has_wallet(&self, name: &str) -> Result<bool> {
        let name = WalletName::parse(name)?;
        self.entries.exists(KeystoreEntry::Wallet(name.0))
    }

    /// The names of the stored wallets, sorted. Needs no passphrase: names are not secret.
    /// Files that are not `<valid name>.share` (temporary files, strays) are not listed.
    ///
    /// # Errors
    /// [`Error::Io`] if the wallets directory cannot be read.
    pub fn list_wallets(&self) -> Result<Vec<String>> {
        let mut names: Vec<String> = self
            .entries
            .wallet_names()?
            .into_iter()
            .filter(|name| WalletName::parse(name).is_ok())
            .collect();
        names.sort();
        Ok(names)
    }

    /// Deletes a wallet entry. This destroys that share for good: callers should confirm with the
    /// user and make sure the wallet is still recoverable (other shares, a backup).
    ///
    /// # Errors
    /// [`Error::InvalidWalletName`], [`Error::WalletNotFound`], [`Error::Io`].
    pub fn remove_wallet(&self, name: &str) -> Result<()> {
        let name = WalletName::parse(name)?;
        if self.entries.remove(KeystoreEntry::Wallet(name.0))? {
            Ok(())
        } else {
            Err(Error::WalletNotFound {
                name: name.0.to_owned(),
            })
        }
    }

    fn decrypt_entry(
        &self,
        path: &Path,
        bytes: &[u8],
        kind: EntryKind,
        passphrase: &Passphrase,
    ) -> Result<Zeroizing<Vec<u8>>> {
        format::open_entry(
            path,
            bytes,
            kind,
            passphrase,
            self.options.insecure_fast_kdf_for_tests,
        )
    }
}

/// Writes a backup holder's private key file (`label` and the 32-byte key) encrypted under its
/// own `passphrase`, with the key-derivation cost of `options`. The file is never overwritten.
///
/// # Errors
/// [`Error::InvalidLabel`] for a label longer than 255 bytes, [`Error::FileExists`] when
/// `path` exists, [`Error::Io`].
pub fn write_backup_key_file(
    path: &Path,
    label: &str,
    secret: &[u8; 32],
    passphrase: &Passphrase,
    options: &KeystoreOptions,
) -> Result<()> {
    let label_len =
        u8::try_from(label.len()).map_err(|_| Error::InvalidLabel("at most 255 bytes".into()))?;
    let mut plaintext = Zeroizing::new(Vec::with_capacity(1 + label.len() + 32));
    plaintext.push(label_len);
    plaintext.extend_from_slice(label.as_bytes());
    plaintext.extend_from_slice(secret);
    let file = format::seal_entry(EntryKind::BackupKey, &options.kdf, passphrase, &plaintext)?;
    match write_atomically(path, &file, Overwrite::Never)? {
        Written::Done => Ok(()),
        Written::TargetExists => Err(Error::FileExists {
            path: path.to_path_buf(),
        }),
    }
}

/// Reads a file written by [`write_backup_key_file`]: its label and 32-byte key.
///
/// # Errors
/// [`Error::FileNotFound`], [`Error::WrongPassphrase`], [`Error::CorruptFile`] (including a
/// device identity or wallet file given in its place), [`Error::UnsupportedVersion`].
pub fn read_backup_key_file(
    path: &Path,
    passphrase: &Passphrase,
    options: &KeystoreOptions,
) -> Result<(String, Zeroizing<[u8; 32]>)> {
    let Some(bytes) = read_entry_file(path)? else {
        return Err(Error::FileNotFound {
            path: path.to_path_buf(),
        });
    };
    let plaintext = format::open_entry(
        path,
        &bytes,
        EntryKind::BackupKey,
        passphrase,
        options.insecure_fast_kdf_for_tests,
    )?;
    let corrupt = |reason: &str| Error::CorruptFile {
        path: path.to_path_buf(),
        reason: reason.into(),
    };
    let (&label_len, rest) = plaintext
        .split_first()
        .ok_or_else(|| corrupt("the backup key entry is empty"))?;
    let label_len = usize::from(label_len);
    if rest.len() != label_len + 32 {
        return Err(corrupt("the backup key entry has a wrong length"));
    }
    let label = std::str::from_utf8(&rest[..label_len])
        .map_err(|_| corrupt("the backup key label is not UTF-8"))?
        .to_owned();
    let mut secret = Zeroizing::new([0u8; 32]);
    secret.copy_from_slice(&rest[label_len..]);
    Ok((label, secret))
}

fn default_dir_from(tessera_home: Option<OsString>, home: Option<PathBuf>) -> Result<PathBuf> {
    match (tessera_home, home) {
        (Some(dir), _) if !dir.is_empty() => Ok(PathBuf::from(dir)),
        (_, Some(home)) if !home.as_os_str().is_empty() => Ok(home.join(DEFAULT_DIR_NAME)),
        _ => Err(Error::NoKeystoreDirectory),
    }
}

/// A wallet name checked to be safe as a file name: 1-64 characters of `[A-Za-z0-9_.-]`, not
/// starting with a dot (no hidden files, no `.` or `..`, no clash with temporary files). With no
/// `/` allowed, a name can never leave the wallets directory.
struct WalletName<'a>(&'a str);

impl<'a> WalletName<'a> {
    fn parse(name: &'a str) -> Result<Self> {
        let invalid = |reason| Error::InvalidWalletName {
            // Echo at most a screenful of a hostile name; the {:?} in the message escapes it.
            name: name.chars().take(80).collect(),
            reason,
        };
        if name.is_empty() {
            return Err(invalid("it is empty"));
        }
        if name.len() > MAX_WALLET_NAME_LEN {
            return Err(invalid("it is longer than 64 characters"));
        }
        if name.starts_with('.') {
            return Err(invalid("it starts with '.'"));
        }
        if !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
        {
            return Err(invalid(
                "only letters A-Z a-z, digits, '_', '.' and '-' are allowed",
            ));
        }
        Ok(WalletName(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_dir_prefers_tessera_home() {
        let dir = default_dir_from(Some("/x/ts".into()), Some("/home/u".into())).unwrap();
        assert_eq!(dir, PathBuf::from("/x/ts"));
    }

    #[test]
    fn default_dir_falls_back_to_home() {
        let home = Some(PathBuf::from("/home/u"));
        assert_eq!(
            default_dir_from(None, home.clone()).unwrap(),
            PathBuf::from("/home/u/.tessera")
        );
        // An empty TESSERA_HOME is "unset", not "the current directory".
        assert_eq!(
            default_dir_from(Some(OsString::new()), home).unwrap(),
            PathBuf::from("/home/u/.tessera")
        );
    }

    fn fast() -> KeystoreOptions {
        KeystoreOptions::default().insecure_fast_kdf_for_tests()
    }

    #[test]
    fn a_keystore_in_memory_seals_and_refuses_as_files_do() {
        let entries = Arc::new(MemoryEntries::new());
        let store =
            Keystore::with_entries("/nonexistent/tessera-home", entries.clone(), fast()).unwrap();
        let pw = Passphrase::new("pw".into()).unwrap();
        assert!(!store.has_identity().unwrap());
        let identity = store.create_identity(&pw).unwrap();
        assert!(matches!(
            store.create_identity(&pw),
            Err(Error::IdentityExists { .. })
        ));
        assert_eq!(
            store.load_identity(&pw).unwrap().public_key(),
            identity.public_key()
        );
        let wrong = Passphrase::new("not it".into()).unwrap();
        assert!(matches!(
            store.load_identity(&wrong),
            Err(Error::WrongPassphrase { .. })
        ));

        store.save_wallet("b", b"share b", &pw).unwrap();
        store.save_wallet("a", b"share a", &pw).unwrap();
        assert!(matches!(
            store.save_wallet("a", b"again", &pw),
            Err(Error::WalletExists { .. })
        ));
        assert!(matches!(
            store.replace_wallet("c", b"x", &pw),
            Err(Error::WalletNotFound { .. })
        ));
        store.replace_wallet("a", b"share a2", &pw).unwrap();
        assert_eq!(store.load_wallet("a", &pw).unwrap().as_slice(), b"share a2");
        assert_eq!(store.list_wallets().unwrap(), ["a", "b"]);
        // Only sealed bytes are kept: no plaintext in storage.
        let sealed = entries.read(KeystoreEntry::Wallet("a")).unwrap().unwrap();
        assert!(!sealed.windows(8).any(|w| w == b"share a2"));
        store.remove_wallet("b").unwrap();
        assert!(matches!(
            store.remove_wallet("b"),
            Err(Error::WalletNotFound { .. })
        ));
        assert_eq!(store.list_wallets().unwrap(), ["a"]);
        assert!(!Path::new("/nonexistent/tessera-home").exists());
    }

    #[test]
    fn default_dir_needs_some_directory() {
        assert!(matches!(
            default_dir_from(None, None),
            Err(Error::NoKeystoreDirectory)
        ));
    }
}
