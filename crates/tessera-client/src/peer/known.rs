//! Devices this device has paired with ([`HomeRecord::KnownPeers`], `peers.json` in a file
//! home), and the wallets it shares with them ([`HomeRecord::PeerWallets`],
//! `peer-wallets.json`). Public data only, kept in the device home's storage (files written
//! atomically, 0600, or an app's own storage).

use std::collections::BTreeMap;
use std::sync::Arc;

use tessera_store::{HomeRecord, HomeStorage};

use serde::{Deserialize, Serialize};

use super::PeerError;
use super::wire::Participant;

/// A paired device.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KnownPeer {
    /// Its name when paired.
    pub name: String,
    /// Its Ed25519 identity key, hex.
    pub identity: String,
    /// Unix seconds.
    pub paired_at: u64,
}

/// What this device knows of a peer presenting `identity` under `name`.
#[derive(Debug, PartialEq, Eq)]
pub enum Trust {
    /// Paired before with this identity key.
    Known,
    /// Never seen: the pairing code must be compared.
    Unknown,
    /// A device of that name was paired with another identity key: refused.
    Changed {
        /// The key we paired with, hex.
        paired: String,
    },
}

#[derive(Default, Serialize, Deserialize)]
struct PeersFile {
    version: u16,
    peers: Vec<KnownPeer>,
}

/// The paired devices.
pub struct KnownPeers {
    home: Arc<dyn HomeStorage>,
    peers: Vec<KnownPeer>,
}

impl KnownPeers {
    /// Loads the paired devices from `home` (none yet: empty).
    ///
    /// # Errors
    /// [`PeerError::Store`] when the record is unreadable or damaged.
    pub fn load(home: Arc<dyn HomeStorage>) -> Result<Self, PeerError> {
        let file: PeersFile = read_json(&*home, HomeRecord::KnownPeers)?.unwrap_or_default();
        Ok(KnownPeers {
            home,
            peers: file.peers,
        })
    }

    /// [`Self::load`] from the file home at `dir` (`TESSERA_HOME`).
    ///
    /// # Errors
    /// As [`Self::load`].
    pub fn load_dir(dir: &std::path::Path) -> Result<Self, PeerError> {
        Self::load(Arc::new(tessera_store::FileHome::new(dir)))
    }

    /// The paired devices.
    #[must_use]
    pub fn all(&self) -> &[KnownPeer] {
        &self.peers
    }

    /// How far `identity` presenting itself as `name` is trusted.
    #[must_use]
    pub fn trust(&self, name: &str, identity: &[u8; 32]) -> Trust {
        let key = hex::encode(identity);
        if self.peers.iter().any(|p| p.identity == key) {
            return Trust::Known;
        }
        match self.peers.iter().find(|p| p.name == name) {
            Some(p) => Trust::Changed {
                paired: p.identity.clone(),
            },
            None => Trust::Unknown,
        }
    }

    /// The paired device named `name`.
    #[must_use]
    pub fn by_name(&self, name: &str) -> Option<&KnownPeer> {
        self.peers.iter().find(|p| p.name == name)
    }

    /// Records a newly paired device and saves.
    ///
    /// # Errors
    /// [`PeerError::Store`] when the file cannot be written.
    pub fn add(&mut self, name: &str, identity: &[u8; 32]) -> Result<(), PeerError> {
        let key = hex::encode(identity);
        self.peers.retain(|p| p.identity != key);
        self.peers.push(KnownPeer {
            name: name.to_string(),
            identity: key,
            paired_at: now(),
        });
        write_json(
            &*self.home,
            HomeRecord::KnownPeers,
            &PeersFile {
                version: 1,
                peers: self.peers.clone(),
            },
        )
    }

    /// Forgets the device named `name`; whether there was one.
    ///
    /// # Errors
    /// [`PeerError::Store`] when the file cannot be written.
    pub fn remove(&mut self, name: &str) -> Result<bool, PeerError> {
        let before = self.peers.len();
        self.peers.retain(|p| p.name != name);
        if self.peers.len() == before {
            return Ok(false);
        }
        write_json(
            &*self.home,
            HomeRecord::KnownPeers,
            &PeersFile {
                version: 1,
                peers: self.peers.clone(),
            },
        )?;
        Ok(true)
    }
}

/// A wallet shared with other devices: who holds which party index.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerWallet {
    /// Hex wallet id.
    pub wallet_id: String,
    /// Our party index.
    pub me: u8,
    /// Every device in party order (addresses as last seen).
    pub parties: Vec<Participant>,
}

#[derive(Default, Serialize, Deserialize)]
struct WalletsFile {
    version: u16,
    wallets: BTreeMap<String, PeerWallet>,
}

/// Loads the device-to-device wallet record of `name`.
///
/// # Errors
/// [`PeerError::Store`].
pub fn load_peer_wallet(
    home: &dyn HomeStorage,
    name: &str,
) -> Result<Option<PeerWallet>, PeerError> {
    let file: WalletsFile = read_json(home, HomeRecord::PeerWallets)?.unwrap_or_default();
    Ok(file.wallets.get(name).cloned())
}

/// Saves the device-to-device wallet record of `name`.
///
/// # Errors
/// [`PeerError::Store`].
pub fn save_peer_wallet(
    home: &dyn HomeStorage,
    name: &str,
    wallet: &PeerWallet,
) -> Result<(), PeerError> {
    let mut file: WalletsFile = read_json(home, HomeRecord::PeerWallets)?.unwrap_or_default();
    file.version = 1;
    file.wallets.insert(name.to_string(), wallet.clone());
    write_json(home, HomeRecord::PeerWallets, &file)
}

fn read_json<T: serde::de::DeserializeOwned>(
    home: &dyn HomeStorage,
    record: HomeRecord,
) -> Result<Option<T>, PeerError> {
    match home.get(record).map_err(PeerError::Keystore)? {
        Some(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| PeerError::Store(format!("{} is damaged: {e}", home.location(record)))),
        None => Ok(None),
    }
}

fn write_json<T: Serialize>(
    home: &dyn HomeStorage,
    record: HomeRecord,
    value: &T,
) -> Result<(), PeerError> {
    let text = serde_json::to_vec_pretty(value).map_err(|e| PeerError::Store(e.to_string()))?;
    home.put(record, &text).map_err(PeerError::Keystore)
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
