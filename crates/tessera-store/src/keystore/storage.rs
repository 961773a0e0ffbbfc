//! Where a keystore's sealed entries live: files in the keystore directory
//! ([`FileEntries`], what `tessera` has always written) or memory ([`MemoryEntries`], for tests
//! and apps that hand the sealed bytes to platform secure storage).
//!
//! The storage only keeps opaque sealed bytes: the sealing (Argon2id, XChaCha20-Poly1305) and
//! every check of names and formats stay in [`super::Keystore`].

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use super::format::MAX_FILE_LEN;
use super::{IDENTITY_FILE, WALLET_EXTENSION, WALLETS_DIR};
use crate::error::{Error, Result};
use crate::fs::{Overwrite, Written, write_atomically};

/// A sealed entry of a keystore.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum KeystoreEntry<'a> {
    /// The device identity key.
    Identity,
    /// A wallet's share record, by its (checked) name.
    Wallet(&'a str),
}

/// Where a keystore's sealed entries live.
///
/// Writes are atomic: a reader sees the old bytes or the new ones, also after a crash.
pub trait EntryStorage: std::fmt::Debug + Send + Sync {
    /// Where the entry lives, for messages (a file's path).
    fn location(&self, entry: KeystoreEntry<'_>) -> PathBuf;

    /// The entry's sealed bytes, `None` if it does not exist. Entries over the format's size
    /// limit are refused without being loaded.
    ///
    /// # Errors
    /// [`Error::Io`], [`Error::CorruptFile`] (not a file, too large).
    fn read(&self, entry: KeystoreEntry<'_>) -> Result<Option<Vec<u8>>>;

    /// Whether the entry exists.
    ///
    /// # Errors
    /// [`Error::Io`].
    fn exists(&self, entry: KeystoreEntry<'_>) -> Result<bool>;

    /// Stores a new entry; `false`, changing nothing, if it exists (decided atomically).
    ///
    /// # Errors
    /// [`Error::Io`].
    fn create(&self, entry: KeystoreEntry<'_>, bytes: &[u8]) -> Result<bool>;

    /// Replaces (or stores) the entry.
    ///
    /// # Errors
    /// [`Error::Io`].
    fn replace(&self, entry: KeystoreEntry<'_>, bytes: &[u8]) -> Result<()>;

    /// Removes the entry; `false` if there was none.
    ///
    /// # Errors
    /// [`Error::Io`].
    fn remove(&self, entry: KeystoreEntry<'_>) -> Result<bool>;

    /// The names under which wallet entries are stored (unchecked, unsorted).
    ///
    /// # Errors
    /// [`Error::Io`].
    fn wallet_names(&self) -> Result<Vec<String>>;
}

/// Entries as files: `identity.key` and `wallets/<name>.share` in the keystore directory,
/// mode 0600, written through the one atomic writer.
#[derive(Clone, Debug)]
pub struct FileEntries {
    dir: PathBuf,
}

impl FileEntries {
    /// The entries of the keystore directory `dir` (created by [`super::Keystore::open`]).
    #[must_use]
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        FileEntries { dir: dir.into() }
    }
}

impl EntryStorage for FileEntries {
    fn location(&self, entry: KeystoreEntry<'_>) -> PathBuf {
        match entry {
            KeystoreEntry::Identity => self.dir.join(IDENTITY_FILE),
            KeystoreEntry::Wallet(name) => self
                .dir
                .join(WALLETS_DIR)
                .join(format!("{name}.{WALLET_EXTENSION}")),
        }
    }

    fn read(&self, entry: KeystoreEntry<'_>) -> Result<Option<Vec<u8>>> {
        read_entry_file(&self.location(entry))
    }

    fn exists(&self, entry: KeystoreEntry<'_>) -> Result<bool> {
        let path = self.location(entry);
        path.try_exists().map_err(|e| Error::io("inspect", path, e))
    }

    fn create(&self, entry: KeystoreEntry<'_>, bytes: &[u8]) -> Result<bool> {
        Ok(write_atomically(&self.location(entry), bytes, Overwrite::Never)? == Written::Done)
    }

    fn replace(&self, entry: KeystoreEntry<'_>, bytes: &[u8]) -> Result<()> {
        match write_atomically(&self.location(entry), bytes, Overwrite::Replace)? {
            Written::Done | Written::TargetExists => Ok(()),
        }
    }

    fn remove(&self, entry: KeystoreEntry<'_>) -> Result<bool> {
        let path = self.location(entry);
        match crate::fs::remove_durably(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(Error::io("remove", path, e)),
        }
    }

    fn wallet_names(&self) -> Result<Vec<String>> {
        let dir = self.dir.join(WALLETS_DIR);
        let entries = fs::read_dir(&dir).map_err(|e| Error::io("list", &dir, e))?;
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| Error::io("list", &dir, e))?;
            let file_name = entry.file_name();
            let Some(name) = file_name
                .to_str()
                .and_then(|f| f.strip_suffix(&format!(".{WALLET_EXTENSION}")))
            else {
                continue;
            };
            if entry.file_type().is_ok_and(|t| t.is_file()) {
                names.push(name.to_owned());
            }
        }
        Ok(names)
    }
}

/// Reads an entry file, `None` if it does not exist. The size is checked on the open file before
/// reading, so a huge file is refused without being loaded.
pub(super) fn read_entry_file(path: &Path) -> Result<Option<Vec<u8>>> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("open", path, e)),
    };
    let meta = file.metadata().map_err(|e| Error::io("inspect", path, e))?;
    if !meta.is_file() {
        return Err(Error::CorruptFile {
            path: path.to_path_buf(),
            reason: "not a regular file".into(),
        });
    }
    if meta.len() > MAX_FILE_LEN as u64 {
        return Err(Error::CorruptFile {
            path: path.to_path_buf(),
            reason: format!("{} bytes, over the {MAX_FILE_LEN}-byte limit", meta.len()),
        });
    }
    let mut bytes = Vec::new();
    // `take` guards against the file growing between the size check and the read.
    file.take(MAX_FILE_LEN as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io("read", path, e))?;
    Ok(Some(bytes))
}

/// Entries in memory (sealed bytes only: nothing here is plaintext).
#[derive(Debug, Default)]
pub struct MemoryEntries {
    entries: Mutex<BTreeMap<String, Vec<u8>>>,
}

impl MemoryEntries {
    /// No entries.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    fn key(entry: KeystoreEntry<'_>) -> String {
        match entry {
            KeystoreEntry::Identity => IDENTITY_FILE.to_owned(),
            KeystoreEntry::Wallet(name) => format!("{WALLETS_DIR}/{name}.{WALLET_EXTENSION}"),
        }
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Vec<u8>>> {
        // Every change is one insert or remove: a panic elsewhere leaves no half-written entry.
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl EntryStorage for MemoryEntries {
    fn location(&self, entry: KeystoreEntry<'_>) -> PathBuf {
        PathBuf::from(format!("{} (in memory)", Self::key(entry)))
    }

    fn read(&self, entry: KeystoreEntry<'_>) -> Result<Option<Vec<u8>>> {
        Ok(self.entries().get(&Self::key(entry)).cloned())
    }

    fn exists(&self, entry: KeystoreEntry<'_>) -> Result<bool> {
        Ok(self.entries().contains_key(&Self::key(entry)))
    }

    fn create(&self, entry: KeystoreEntry<'_>, bytes: &[u8]) -> Result<bool> {
        let mut entries = self.entries();
        let key = Self::key(entry);
        if entries.contains_key(&key) {
            return Ok(false);
        }
        entries.insert(key, bytes.to_vec());
        Ok(true)
    }

    fn replace(&self, entry: KeystoreEntry<'_>, bytes: &[u8]) -> Result<()> {
        self.entries().insert(Self::key(entry), bytes.to_vec());
        Ok(())
    }

    fn remove(&self, entry: KeystoreEntry<'_>) -> Result<bool> {
        Ok(self.entries().remove(&Self::key(entry)).is_some())
    }

    fn wallet_names(&self) -> Result<Vec<String>> {
        let prefix = format!("{WALLETS_DIR}/");
        let suffix = format!(".{WALLET_EXTENSION}");
        Ok(self
            .entries()
            .keys()
            .filter_map(|k| k.strip_prefix(&prefix)?.strip_suffix(&suffix))
            .map(str::to_owned)
            .collect())
    }
}
