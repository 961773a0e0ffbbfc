//! `holders.json`: the backup holders' public keys this device knows (public data). The one
//! owner of that record.
//!
//! Format v1: `{"version": 1, "holders": {LABEL: {"public_key": "tessera-holder-v1:…", "kind":
//! "usb"}}}`, labels sorted; files written before the version field existed have none and are
//! read as v1.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use tessera_backup::holder::HolderPublicKey;
use tessera_backup::structure::AccessStructure;
use tessera_store::{HomeRecord, HomeStorage};

use super::DeviceError;

/// The format version this module writes.
pub const KNOWN_HOLDERS_VERSION: u16 = 1;

/// Where a holder's key lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HolderKind {
    /// A file on a USB drive.
    Usb,
    /// A folder a cloud drive syncs.
    Cloud,
    /// Another device's keystore.
    Device,
    /// A printed code kept offline.
    Paper,
}

/// A holder this device knows.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KnownHolder {
    /// Its public key as text (`tessera-holder-v1:<label>:<hex>`).
    pub public_key: String,
    /// Where its private key lives.
    pub kind: HolderKind,
}

/// The holders this device knows, by label.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KnownHolders {
    /// By label.
    pub holders: BTreeMap<String, KnownHolder>,
}

impl KnownHolders {
    /// Reads the record (none yet: empty).
    ///
    /// # Errors
    /// [`DeviceError::Store`] when the storage cannot be read, [`DeviceError::Damaged`] when
    /// the record is not a list of holders.
    pub fn load(home: &dyn HomeStorage) -> Result<Self, DeviceError> {
        match home.get(HomeRecord::KnownHolders)? {
            None => Ok(Self::default()),
            Some(bytes) => super::record::decode(
                &bytes,
                home,
                HomeRecord::KnownHolders,
                KNOWN_HOLDERS_VERSION,
            ),
        }
    }

    /// Writes the record (pretty JSON, its version first).
    ///
    /// # Errors
    /// [`DeviceError::Store`] when the storage cannot be written.
    pub fn save(&self, home: &dyn HomeStorage) -> Result<(), DeviceError> {
        let text = super::record::encode(self, KNOWN_HOLDERS_VERSION)?;
        Ok(home.put(HomeRecord::KnownHolders, text.as_bytes())?)
    }

    /// Adds `key` (its label must be new, or already hold this very key).
    ///
    /// # Errors
    /// [`DeviceError::HolderKeyDiffers`] when the label holds another key.
    pub fn add(&mut self, key: &HolderPublicKey, kind: HolderKind) -> Result<(), DeviceError> {
        if let Some(old) = self.holders.get(key.label())
            && old.public_key != key.to_text()
        {
            return Err(DeviceError::HolderKeyDiffers {
                label: key.label().to_owned(),
            });
        }
        self.holders.insert(
            key.label().to_owned(),
            KnownHolder {
                public_key: key.to_text(),
                kind,
            },
        );
        Ok(())
    }

    /// The public keys of `structure`'s holders, in its order: from `given` (which win), else
    /// from this list.
    ///
    /// # Errors
    /// [`DeviceError::InvalidHolderKey`] for a key that does not parse,
    /// [`DeviceError::NoHolderKey`] for a holder with no key.
    pub fn resolve(
        &self,
        structure: &AccessStructure,
        given: &[HolderPublicKey],
    ) -> Result<Vec<HolderPublicKey>, DeviceError> {
        let mut by_label: BTreeMap<&str, String> = self
            .holders
            .iter()
            .map(|(label, holder)| (label.as_str(), holder.public_key.clone()))
            .collect();
        for key in given {
            by_label.insert(key.label(), key.to_text());
        }
        structure
            .holders()
            .into_iter()
            .map(|label| {
                let text = by_label
                    .get(label)
                    .ok_or_else(|| DeviceError::NoHolderKey {
                        label: label.to_owned(),
                    })?;
                HolderPublicKey::from_text(text).map_err(DeviceError::InvalidHolderKey)
            })
            .collect()
    }
}
