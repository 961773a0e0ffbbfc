//! `devices.json`: the identity keys this device pinned for the other devices it met in
//! sessions through its server (public data). The one owner of that record.
//!
//! The end-to-end channel between two devices of a session
//! ([`crate::session_socket::SocketLink::seal`]) is only as good as the identity key each
//! trusts for the other. The server's registry lists them, but trusting the registry at every
//! session would let whoever controls the server swap a key and stand in the middle. So a
//! device trusts the registry's key for another device the first time it meets it (trust on
//! first use), pins it here, and from then on refuses a session in which the server gives that
//! device another key. A device that was set up again has a new key: its entry must be removed
//! by hand (the error says so) before the two meet again.
//!
//! Format v1: `{"version": 1, "devices": {DEVICE_ID: {"name": …, "identity_key": HEX}}}`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use tessera_api as api;
use tessera_store::{HomeRecord, HomeStorage};

use super::DeviceError;
use crate::ClientError;

/// The format version this module writes.
pub const KNOWN_DEVICES_VERSION: u16 = 1;

/// A device this device pinned.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KnownDevice {
    /// Its name when it was pinned.
    pub name: String,
    /// Its Ed25519 identity key, hex.
    pub identity_key: String,
}

/// The devices this device pinned, by device id.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KnownDevices {
    /// By device id.
    pub devices: BTreeMap<String, KnownDevice>,
}

impl KnownDevices {
    /// Reads the record (none yet: empty).
    ///
    /// # Errors
    /// [`DeviceError::Store`] when the storage cannot be read, [`DeviceError::Damaged`] when
    /// the record is not a list of devices.
    pub fn load(home: &dyn HomeStorage) -> Result<Self, DeviceError> {
        match home.get(HomeRecord::KnownDevices)? {
            None => Ok(Self::default()),
            Some(bytes) => super::record::decode(
                &bytes,
                home,
                HomeRecord::KnownDevices,
                KNOWN_DEVICES_VERSION,
            ),
        }
    }

    /// Writes the record (pretty JSON, its version first).
    ///
    /// # Errors
    /// [`DeviceError::Store`] when the storage cannot be written.
    pub fn save(&self, home: &dyn HomeStorage) -> Result<(), DeviceError> {
        let text = super::record::encode(self, KNOWN_DEVICES_VERSION)?;
        Ok(home.put(HomeRecord::KnownDevices, text.as_bytes())?)
    }

    /// The identity key to trust for `party`, for which the server gives `registry_key`: the
    /// pinned key when it is the same, `registry_key` pinned now for a device met for the
    /// first time.
    ///
    /// # Errors
    /// [`ClientError::Channel`] when the server gives another key than the pinned one, or
    /// names no device.
    pub fn trust(
        &mut self,
        party: &api::SessionParty,
        registry_key: [u8; 32],
    ) -> Result<[u8; 32], ClientError> {
        let refuse = |reason: String| ClientError::Channel {
            party: party.party,
            reason,
        };
        let device_id = party
            .device_id
            .as_ref()
            .ok_or_else(|| refuse("the server names no device for this party".into()))?;
        let name = party.device_name.clone().unwrap_or_default();
        let key = hex::encode(registry_key);
        match self.devices.get(device_id.as_str()) {
            Some(pinned) if pinned.identity_key == key => Ok(registry_key),
            Some(pinned) => Err(refuse(format!(
                "the server gives device {:?} ({device_id}) another identity key than the one \
                 this device pinned when it first met it ({}…): refused, someone may stand \
                 between the two. If that device was set up again, remove its entry from \
                 devices.json in this device's home, then try again",
                pinned.name,
                &pinned.identity_key[..16.min(pinned.identity_key.len())]
            ))),
            None => {
                self.devices.insert(
                    device_id.to_string(),
                    KnownDevice {
                        name,
                        identity_key: key,
                    },
                );
                Ok(registry_key)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn party(id: &str) -> api::SessionParty {
        api::SessionParty {
            party: 2,
            label: "laptop".into(),
            device_id: Some(id.into()),
            device_name: Some("Laptop".into()),
            identity_key: None,
        }
    }

    #[test]
    fn pins_the_first_key_and_refuses_another_one_later() {
        let home = tessera_store::MemoryHome::default();
        let mut known = KnownDevices::load(&home).unwrap();
        assert_eq!(known.trust(&party("d1"), [1; 32]).unwrap(), [1; 32]);
        known.save(&home).unwrap();
        let mut known = KnownDevices::load(&home).unwrap();
        assert_eq!(known.trust(&party("d1"), [1; 32]).unwrap(), [1; 32]);
        let refused = known.trust(&party("d1"), [2; 32]).unwrap_err();
        assert!(
            matches!(&refused, ClientError::Channel { party: 2, reason } if reason.contains("another identity key")),
            "{refused}"
        );
        // Another device is met for the first time.
        assert_eq!(known.trust(&party("d2"), [2; 32]).unwrap(), [2; 32]);
        let mut nameless = party("d3");
        nameless.device_id = None;
        assert!(known.trust(&nameless, [3; 32]).is_err());
    }
}
