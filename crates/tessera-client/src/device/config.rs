//! `device.json`: which server and registration this device uses (public data). The one owner of
//! that record.
//!
//! Format v1: a JSON object with `"version": 1` and the fields of [`DeviceConfig`]; files
//! written before the version field existed have none and are read as v1.

use serde::{Deserialize, Serialize};
use tessera_store::{HomeRecord, HomeStorage};

use super::DeviceError;

/// The format version this module writes.
pub const DEVICE_CONFIG_VERSION: u16 = 1;

/// Which server and registration this device uses.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceConfig {
    /// The server's URL.
    pub server: String,
    /// SHA-256 of the server certificate this device pins, hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_fingerprint: Option<String>,
    /// The user this device belongs to.
    pub user: String,
    /// The id the server gave this device.
    pub device_id: String,
    /// This device's name.
    pub device_name: String,
}

impl DeviceConfig {
    /// Reads the record; `None` if this device was never set up.
    ///
    /// # Errors
    /// [`DeviceError::Store`] when the storage cannot be read, [`DeviceError::Damaged`] when
    /// the record is not a device configuration.
    pub fn load(home: &dyn HomeStorage) -> Result<Option<Self>, DeviceError> {
        let Some(bytes) = home.get(HomeRecord::DeviceConfig)? else {
            return Ok(None);
        };
        super::record::decode(
            &bytes,
            home,
            HomeRecord::DeviceConfig,
            DEVICE_CONFIG_VERSION,
        )
        .map(Some)
    }

    /// Reads the record, which must exist.
    ///
    /// # Errors
    /// As [`Self::load`], and [`DeviceError::NotSetUp`] when there is none.
    pub fn require(home: &dyn HomeStorage) -> Result<Self, DeviceError> {
        Self::load(home)?.ok_or_else(|| DeviceError::NotSetUp {
            location: home.location(HomeRecord::DeviceConfig),
        })
    }

    /// Writes the record (pretty JSON, its version first).
    ///
    /// # Errors
    /// [`DeviceError::Store`] when the storage cannot be written.
    pub fn save(&self, home: &dyn HomeStorage) -> Result<(), DeviceError> {
        let text = super::record::encode(self, DEVICE_CONFIG_VERSION)?;
        Ok(home.put(HomeRecord::DeviceConfig, text.as_bytes())?)
    }
}
