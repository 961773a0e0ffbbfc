//! This device as a party of device-to-device wallets: its identity and name, its unlocked
//! keystore (where each wallet's record holds the share in use and, during a refresh, the
//! next one), and the list of devices each wallet is shared with (`peer-wallets.json`).

use std::sync::Arc;

use tessera_core::{KeyShare, PublicKey, Threshold, WalletId};
use tessera_store::{HomeStorage, Keystore, Passphrase};

use super::PeerError;
use super::known::{self, PeerWallet};
use super::pairing::LocalDevice;
use crate::WalletRecord;

/// This device, unlocked for device-to-device work.
pub struct PeerDevice {
    /// The device home's records (`TESSERA_HOME`'s files, or an app's storage).
    pub home: Arc<dyn HomeStorage>,
    /// Its keystore.
    pub keystore: Keystore,
    /// The passphrase that unlocks the keystore's entries.
    pub passphrase: Passphrase,
    /// Its name and identity key as other devices see them.
    pub me: LocalDevice,
}

/// What a device shows about a wallet it just stored (no secrets).
#[derive(Clone, Debug)]
pub struct WalletSummary {
    /// The wallet's name.
    pub name: String,
    /// Its id.
    pub wallet_id: WalletId,
    /// t-of-n.
    pub threshold: Threshold,
    /// This device's party index.
    pub party: u8,
    /// The devices' names in party order.
    pub devices: Vec<String>,
    /// The wallet's public key.
    pub public_key: PublicKey,
    /// The epoch of this device's share.
    pub epoch: u64,
}

impl PeerDevice {
    /// The record of wallet `name` (current share, pending share, bans).
    ///
    /// # Errors
    /// [`PeerError::Keystore`] (absent, wrong passphrase...), [`PeerError::Wallet`] (damaged).
    pub fn record(&self, name: &str) -> Result<WalletRecord, PeerError> {
        let bytes = self.keystore.load_wallet(name, &self.passphrase)?;
        WalletRecord::from_bytes(&bytes).map_err(|e| PeerError::wallet(name, e))
    }

    /// Stores the record of an existing wallet `name` (atomically, replacing the old one).
    ///
    /// # Errors
    /// [`PeerError::Keystore`].
    pub fn save_record(&self, name: &str, record: &WalletRecord) -> Result<(), PeerError> {
        self.keystore
            .replace_wallet(name, &record.to_bytes(), &self.passphrase)?;
        Ok(())
    }

    /// The share of a wallet, refused while this device bans a party of it.
    ///
    /// # Errors
    /// As [`PeerDevice::record`]; [`PeerError::Wallet`] naming a ban in force.
    pub fn load_share(&self, name: &str) -> Result<KeyShare, PeerError> {
        let record = self.record(name)?;
        record
            .refuse_if_banned()
            .map_err(|e| PeerError::wallet(name, e))?;
        Ok(record.current)
    }

    /// The devices wallet `name` is shared with.
    ///
    /// # Errors
    /// [`PeerError::NotFound`] when it is not a device-to-device wallet of this device.
    pub fn peer_wallet(&self, name: &str) -> Result<PeerWallet, PeerError> {
        known::load_peer_wallet(&*self.home, name)?.ok_or_else(|| {
            PeerError::NotFound(format!(
                "{name:?} is not a device-to-device wallet of this device"
            ))
        })
    }

    /// Stores a new wallet (its devices, then its share) and describes it.
    ///
    /// # Errors
    /// [`PeerError::Store`], [`PeerError::Keystore`].
    pub fn store_wallet(
        &self,
        name: &str,
        share: KeyShare,
        wallet: &PeerWallet,
    ) -> Result<WalletSummary, PeerError> {
        known::save_peer_wallet(&*self.home, name, wallet)?;
        self.keystore
            .save_wallet(name, &WalletRecord::new(share).to_bytes(), &self.passphrase)?;
        let share = self.load_share(name)?;
        Ok(summary(name, &share, wallet))
    }

    /// When the engine blamed a peer, bans it from the wallet in this device's record.
    ///
    /// # Errors
    /// The ban could not be stored.
    pub fn ban_on_blame(&self, name: &str, e: &PeerError) -> Result<(), PeerError> {
        let PeerError::Blamed {
            party,
            session_id,
            round,
            reason,
            ..
        } = e
        else {
            return Ok(());
        };
        let mut record = self.record(name)?;
        record.ban(*party, session_id, *round, reason);
        self.save_record(name, &record)
    }
}

/// The summary of wallet `name` as `share` and `wallet` describe it.
#[must_use]
pub fn summary(name: &str, share: &KeyShare, wallet: &PeerWallet) -> WalletSummary {
    WalletSummary {
        name: name.to_string(),
        wallet_id: share.wallet_id(),
        threshold: share.threshold(),
        party: share.party().get(),
        devices: wallet.parties.iter().map(|p| p.name.clone()).collect(),
        public_key: share.public_key(),
        epoch: share.epoch(),
    }
}
