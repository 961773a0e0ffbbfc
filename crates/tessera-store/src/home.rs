//! The device home's plain records behind a storage trait, so that an app can keep them in the
//! platform's own storage instead of files.
//!
//! A record is one named document of public data (which server this device belongs to, the
//! backup holders and peers it knows). Each has one owner module, which alone reads and writes
//! its bytes and knows their format:
//!
//! | record                          | file                | owner                                | format |
//! |---------------------------------|---------------------|--------------------------------------|--------|
//! | [`HomeRecord::DeviceConfig`]    | `device.json`       | `tessera_client::device::config`     | v1     |
//! | [`HomeRecord::KnownHolders`]    | `holders.json`      | `tessera_client::device::holders`    | v1     |
//! | [`HomeRecord::KnownPeers`]      | `peers.json`        | `tessera_client::peer::known`        | v1     |
//! | [`HomeRecord::PeerWallets`]     | `peer-wallets.json` | `tessera_client::peer::known`        | v1     |
//! | [`HomeRecord::KnownDevices`]    | `devices.json`      | `tessera_client::device::known`      | v1     |
//!
//! The keystore's entries (the identity key, `wallets/`) are sealed under the passphrase by
//! [`crate::Keystore`] and stored behind their own trait, [`crate::keystore::EntryStorage`]
//! (files, or memory); holder key files (`backup-keys/`) are files the user moves around.
//!
//! [`FileHome`] keeps records as files in the home directory (0700), each written through
//! [`crate::write_private_file`] (0600, atomic, flushed); [`MemoryHome`] keeps them in memory,
//! for tests.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use crate::error::{Error, Result};
use crate::fs::{create_private_dir, write_private_file};

/// A named record of the device home.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum HomeRecord {
    /// Which server and registration this device uses.
    DeviceConfig,
    /// The backup holders' public keys this device knows.
    KnownHolders,
    /// The devices this device has paired with.
    KnownPeers,
    /// The wallets this device shares with paired devices.
    PeerWallets,
    /// The identity keys this device pinned for the devices it met in sessions through its
    /// server.
    KnownDevices,
    /// The last position of the server's event stream that this device's agent handled.
    EventCursor,
}

impl HomeRecord {
    /// Every record, in a fixed order.
    pub const ALL: [HomeRecord; 6] = [
        HomeRecord::DeviceConfig,
        HomeRecord::KnownHolders,
        HomeRecord::KnownPeers,
        HomeRecord::PeerWallets,
        HomeRecord::KnownDevices,
        HomeRecord::EventCursor,
    ];

    /// The record's file name in a [`FileHome`] (and its name in any other storage).
    #[must_use]
    pub fn file_name(self) -> &'static str {
        match self {
            HomeRecord::DeviceConfig => "device.json",
            HomeRecord::KnownHolders => "holders.json",
            HomeRecord::KnownPeers => "peers.json",
            HomeRecord::PeerWallets => "peer-wallets.json",
            HomeRecord::KnownDevices => "devices.json",
            HomeRecord::EventCursor => "event-cursor.json",
        }
    }
}

/// Where the device home's records live.
///
/// Implementations write each record atomically: a reader sees the old bytes or the new ones,
/// never a mix, also after a crash.
pub trait HomeStorage: Send + Sync {
    /// The record's bytes, or `None` if it was never written (or was deleted).
    ///
    /// # Errors
    /// The storage cannot be read.
    fn get(&self, record: HomeRecord) -> Result<Option<Vec<u8>>>;

    /// Replaces the record's bytes.
    ///
    /// # Errors
    /// The storage cannot be written; the old bytes are then unchanged.
    fn put(&self, record: HomeRecord, bytes: &[u8]) -> Result<()>;

    /// Removes the record (nothing happens if there is none).
    ///
    /// # Errors
    /// The storage cannot be written.
    fn delete(&self, record: HomeRecord) -> Result<()>;

    /// Where the record lives, for messages (a file's path).
    fn location(&self, record: HomeRecord) -> String;
}

/// Records as files in a home directory (`TESSERA_HOME`): the formats and names `tessera` has
/// always used.
#[derive(Clone, Debug)]
pub struct FileHome {
    dir: PathBuf,
}

impl FileHome {
    /// The home at `dir`. Nothing is created until the first record is written.
    #[must_use]
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        FileHome { dir: dir.into() }
    }

    /// The home directory.
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The path of `record`'s file.
    #[must_use]
    pub fn path(&self, record: HomeRecord) -> PathBuf {
        self.dir.join(record.file_name())
    }
}

impl HomeStorage for FileHome {
    fn get(&self, record: HomeRecord) -> Result<Option<Vec<u8>>> {
        let path = self.path(record);
        match std::fs::read(&path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io("read", path, e)),
        }
    }

    fn put(&self, record: HomeRecord, bytes: &[u8]) -> Result<()> {
        // The first record written may be the first file of the home: it is created 0700.
        create_private_dir(&self.dir)?;
        write_private_file(&self.path(record), bytes)
    }

    fn delete(&self, record: HomeRecord) -> Result<()> {
        let path = self.path(record);
        match crate::fs::remove_durably(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io("delete", path, e)),
        }
    }

    fn location(&self, record: HomeRecord) -> String {
        self.path(record).display().to_string()
    }
}

/// Records in memory: for tests, and for a front end that keeps nothing on disk.
#[derive(Debug, Default)]
pub struct MemoryHome {
    records: Mutex<BTreeMap<HomeRecord, Vec<u8>>>,
}

impl MemoryHome {
    /// An empty home.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    fn records(&self) -> std::sync::MutexGuard<'_, BTreeMap<HomeRecord, Vec<u8>>> {
        // A panic elsewhere cannot leave a half-written record: every change is one insert.
        self.records.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl HomeStorage for MemoryHome {
    fn get(&self, record: HomeRecord) -> Result<Option<Vec<u8>>> {
        Ok(self.records().get(&record).cloned())
    }

    fn put(&self, record: HomeRecord, bytes: &[u8]) -> Result<()> {
        self.records().insert(record, bytes.to_vec());
        Ok(())
    }

    fn delete(&self, record: HomeRecord) -> Result<()> {
        self.records().remove(&record);
        Ok(())
    }

    fn location(&self, record: HomeRecord) -> String {
        format!("{} (in memory)", record.file_name())
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn round_trip(home: &dyn HomeStorage) {
        for record in HomeRecord::ALL {
            assert_eq!(home.get(record).unwrap(), None);
        }
        home.put(HomeRecord::KnownHolders, b"{\"holders\":{}}")
            .unwrap();
        home.put(HomeRecord::KnownHolders, b"second").unwrap();
        assert_eq!(
            home.get(HomeRecord::KnownHolders).unwrap().as_deref(),
            Some(&b"second"[..])
        );
        assert_eq!(home.get(HomeRecord::DeviceConfig).unwrap(), None);
        home.delete(HomeRecord::KnownHolders).unwrap();
        home.delete(HomeRecord::KnownHolders).unwrap();
        assert_eq!(home.get(HomeRecord::KnownHolders).unwrap(), None);
    }

    #[test]
    fn memory_home_round_trips_records() {
        round_trip(&MemoryHome::new());
    }

    #[test]
    fn file_home_round_trips_records_as_private_files() {
        let dir = tempfile::tempdir().unwrap();
        let home = FileHome::new(dir.path().join("home"));
        round_trip(&home);
        home.put(HomeRecord::DeviceConfig, b"{}").unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(home.dir()), 0o700);
        assert_eq!(mode(&home.dir().join("device.json")), 0o600);
        assert_eq!(
            std::fs::read(home.dir().join("device.json")).unwrap(),
            b"{}"
        );
    }

    #[test]
    fn file_home_reads_files_written_by_others_and_reports_unreadable_ones() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("peers.json"), b"old bytes").unwrap();
        let home = FileHome::new(dir.path());
        assert_eq!(
            home.get(HomeRecord::KnownPeers).unwrap().as_deref(),
            Some(&b"old bytes"[..])
        );
        // A directory where the file should be: an error naming it, not "absent".
        std::fs::create_dir(dir.path().join("holders.json")).unwrap();
        let err = home.get(HomeRecord::KnownHolders).unwrap_err();
        assert!(err.to_string().contains("holders.json"), "{err}");
    }
}
