//! The device home in the app's own storage: [`AppStorage`], a foreign interface of named
//! blobs, behind both of the SDK's storage traits: the plain records
//! ([`tessera_store::HomeStorage`]: `device.json`, `holders.json`, `peers.json`…) and the
//! keystore's sealed entries ([`tessera_store::keystore::EntryStorage`]: `identity.key`,
//! `wallets/<name>.share`).
//!
//! The keystore seals every entry (Argon2id, XChaCha20-Poly1305) before it reaches the app:
//! the app stores ciphertext and public records only, and may wrap them again with a key of
//! its platform's secure storage (Keychain with Secure Enclave protection, Android Keystore).

use std::path::PathBuf;
use std::sync::Arc;

use tessera_store::keystore::{EntryStorage, KeystoreEntry};
use tessera_store::{HomeRecord, HomeStorage};

use crate::error::StorageError;

/// The app's storage of the device home: named blobs, each written atomically.
///
/// Names are `device.json`, `holders.json`, `peers.json`, `peer-wallets.json`,
/// `devices.json` (public records), `identity.key` and `wallets/<name>.share` (sealed
/// keystore entries).
#[uniffi::export(with_foreign)]
pub trait AppStorage: Send + Sync {
    /// The blob's bytes, `None` if there is none.
    ///
    /// # Errors
    /// The storage cannot be read.
    fn get(&self, name: String) -> Result<Option<Vec<u8>>, StorageError>;

    /// Replaces (or stores) the blob, atomically: a reader sees the old bytes or the new.
    ///
    /// # Errors
    /// The storage cannot be written; the old bytes are then unchanged.
    fn put(&self, name: String, data: Vec<u8>) -> Result<(), StorageError>;

    /// Stores a new blob; `false`, changing nothing, if one of this name exists (decided
    /// atomically).
    ///
    /// # Errors
    /// The storage cannot be written.
    fn create(&self, name: String, data: Vec<u8>) -> Result<bool, StorageError>;

    /// Removes the blob; `false` if there was none.
    ///
    /// # Errors
    /// The storage cannot be written.
    fn delete(&self, name: String) -> Result<bool, StorageError>;

    /// The names of the blobs that start with `prefix`.
    ///
    /// # Errors
    /// The storage cannot be read.
    fn list(&self, prefix: String) -> Result<Vec<String>, StorageError>;
}

/// Blobs larger than this are refused unread (a keystore entry is a few kilobytes; a record
/// of known devices or holders a few tens).
const MAX_BLOB: usize = 1 << 20;

const WALLETS_PREFIX: &str = "wallets/";
const WALLET_SUFFIX: &str = ".share";

/// [`AppStorage`] as the SDK's two storage traits.
#[derive(Clone)]
pub(crate) struct AppHome {
    app: Arc<dyn AppStorage>,
}

impl std::fmt::Debug for AppHome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AppHome")
    }
}

impl AppHome {
    pub(crate) fn new(app: Arc<dyn AppStorage>) -> Self {
        AppHome { app }
    }

    fn entry_name(entry: KeystoreEntry<'_>) -> String {
        match entry {
            KeystoreEntry::Identity => "identity.key".to_owned(),
            KeystoreEntry::Wallet(name) => format!("{WALLETS_PREFIX}{name}{WALLET_SUFFIX}"),
        }
    }

    fn failed(action: &'static str, name: &str, e: StorageError) -> tessera_store::Error {
        tessera_store::Error::Io {
            action,
            path: PathBuf::from(format!("{name} (app storage)")),
            source: std::io::Error::other(e.to_string()),
        }
    }

    fn get(&self, name: &str) -> tessera_store::Result<Option<Vec<u8>>> {
        let bytes = self
            .app
            .get(name.to_owned())
            .map_err(|e| Self::failed("read", name, e))?;
        match bytes {
            Some(b) if b.len() > MAX_BLOB => Err(tessera_store::Error::CorruptFile {
                path: PathBuf::from(format!("{name} (app storage)")),
                reason: format!("{} bytes, over the {MAX_BLOB}-byte limit", b.len()),
            }),
            other => Ok(other),
        }
    }
}

impl HomeStorage for AppHome {
    fn get(&self, record: HomeRecord) -> tessera_store::Result<Option<Vec<u8>>> {
        AppHome::get(self, record.file_name())
    }

    fn put(&self, record: HomeRecord, bytes: &[u8]) -> tessera_store::Result<()> {
        let name = record.file_name();
        self.app
            .put(name.to_owned(), bytes.to_vec())
            .map_err(|e| Self::failed("write", name, e))
    }

    fn delete(&self, record: HomeRecord) -> tessera_store::Result<()> {
        let name = record.file_name();
        self.app
            .delete(name.to_owned())
            .map(drop)
            .map_err(|e| Self::failed("delete", name, e))
    }

    fn location(&self, record: HomeRecord) -> String {
        format!("{} (app storage)", record.file_name())
    }
}

impl EntryStorage for AppHome {
    fn location(&self, entry: KeystoreEntry<'_>) -> PathBuf {
        PathBuf::from(format!("{} (app storage)", Self::entry_name(entry)))
    }

    fn read(&self, entry: KeystoreEntry<'_>) -> tessera_store::Result<Option<Vec<u8>>> {
        self.get(&Self::entry_name(entry))
    }

    fn exists(&self, entry: KeystoreEntry<'_>) -> tessera_store::Result<bool> {
        Ok(self.get(&Self::entry_name(entry))?.is_some())
    }

    fn create(&self, entry: KeystoreEntry<'_>, bytes: &[u8]) -> tessera_store::Result<bool> {
        let name = Self::entry_name(entry);
        self.app
            .create(name.clone(), bytes.to_vec())
            .map_err(|e| Self::failed("create", &name, e))
    }

    fn replace(&self, entry: KeystoreEntry<'_>, bytes: &[u8]) -> tessera_store::Result<()> {
        let name = Self::entry_name(entry);
        self.app
            .put(name.clone(), bytes.to_vec())
            .map_err(|e| Self::failed("write", &name, e))
    }

    fn remove(&self, entry: KeystoreEntry<'_>) -> tessera_store::Result<bool> {
        let name = Self::entry_name(entry);
        self.app
            .delete(name.clone())
            .map_err(|e| Self::failed("delete", &name, e))
    }

    fn wallet_names(&self) -> tessera_store::Result<Vec<String>> {
        let names = self
            .app
            .list(WALLETS_PREFIX.to_owned())
            .map_err(|e| Self::failed("list", WALLETS_PREFIX, e))?;
        Ok(names
            .iter()
            .filter_map(|n| n.strip_prefix(WALLETS_PREFIX)?.strip_suffix(WALLET_SUFFIX))
            .map(str::to_owned)
            .collect())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::collections::BTreeMap;
    use std::sync::Mutex;

    use std::path::Path;

    use tessera_store::{Keystore, KeystoreOptions, Passphrase};

    use super::*;

    /// An app's storage, in Rust: a map, and a switch that makes every call fail.
    #[derive(Default)]
    struct Map {
        blobs: Mutex<BTreeMap<String, Vec<u8>>>,
        broken: std::sync::atomic::AtomicBool,
    }

    impl Map {
        fn check(&self) -> Result<(), StorageError> {
            if self.broken.load(std::sync::atomic::Ordering::SeqCst) {
                return Err(StorageError::Failed {
                    reason: "the disk is gone".into(),
                });
            }
            Ok(())
        }
    }

    impl AppStorage for Map {
        fn get(&self, name: String) -> Result<Option<Vec<u8>>, StorageError> {
            self.check()?;
            Ok(self.blobs.lock().unwrap().get(&name).cloned())
        }
        fn put(&self, name: String, data: Vec<u8>) -> Result<(), StorageError> {
            self.check()?;
            self.blobs.lock().unwrap().insert(name, data);
            Ok(())
        }
        fn create(&self, name: String, data: Vec<u8>) -> Result<bool, StorageError> {
            self.check()?;
            let mut blobs = self.blobs.lock().unwrap();
            if blobs.contains_key(&name) {
                return Ok(false);
            }
            blobs.insert(name, data);
            Ok(true)
        }
        fn delete(&self, name: String) -> Result<bool, StorageError> {
            self.check()?;
            Ok(self.blobs.lock().unwrap().remove(&name).is_some())
        }
        fn list(&self, prefix: String) -> Result<Vec<String>, StorageError> {
            self.check()?;
            Ok(self
                .blobs
                .lock()
                .unwrap()
                .keys()
                .filter(|k| k.starts_with(&prefix))
                .cloned()
                .collect())
        }
    }

    #[test]
    fn a_keystore_in_the_apps_storage_keeps_sealed_entries_under_their_names() {
        let map = Arc::new(Map::default());
        let home = Arc::new(AppHome::new(map.clone()));
        let options = KeystoreOptions::default().insecure_fast_kdf_for_tests();
        let keystore = Keystore::with_entries(Path::new(""), home.clone(), options).unwrap();
        let pass = Passphrase::new("correct horse battery".into()).unwrap();
        let identity = keystore.create_identity(&pass).unwrap();
        keystore
            .save_wallet("savings", b"share bytes", &pass)
            .unwrap();
        // A second identity is refused by the app's atomic create, not overwritten.
        assert!(keystore.create_identity(&pass).is_err());
        let names: Vec<String> = map.blobs.lock().unwrap().keys().cloned().collect();
        assert_eq!(names, ["identity.key", "wallets/savings.share"]);
        assert_eq!(keystore.list_wallets().unwrap(), ["savings"]);
        // Sealed: neither the share's bytes nor the identity's public key are in the clear.
        let blobs = map.blobs.lock().unwrap().clone();
        for bytes in blobs.values() {
            assert!(!bytes.windows(11).any(|w| w == b"share bytes"));
            assert!(!bytes.windows(32).any(|w| w == identity.public_key()));
        }
        assert_eq!(
            &**keystore.load_wallet("savings", &pass).unwrap(),
            b"share bytes"
        );
        // A failing storage is an error naming the entry, not a panic.
        map.broken.store(true, std::sync::atomic::Ordering::SeqCst);
        let e = keystore.load_wallet("savings", &pass).unwrap_err();
        assert!(e.to_string().contains("wallets/savings.share"), "{e}");
        assert!(e.to_string().contains("the disk is gone"), "{e}");
    }

    #[test]
    fn records_and_blobs_over_the_limit_are_refused_unread() {
        let map = Arc::new(Map::default());
        let home = AppHome::new(map.clone());
        HomeStorage::put(&home, HomeRecord::DeviceConfig, b"{}").unwrap();
        assert_eq!(
            map.blobs.lock().unwrap().keys().next().unwrap(),
            "device.json"
        );
        map.blobs
            .lock()
            .unwrap()
            .insert("identity.key".into(), vec![0; MAX_BLOB + 1]);
        assert!(home.read(KeystoreEntry::Identity).is_err());
    }
}
