//! This device in device-to-device mode: the same home and keystore as its server workflows,
//! unlocked as a party of peer wallets ([`PeerDevice`], whose workflows are
//! [`crate::peer::lead`] and [`crate::peer::responder`]).

use std::sync::Arc;

use tessera_store::Passphrase;

use super::{Device, DeviceError};
use crate::peer::device::PeerDevice;
use crate::peer::pairing::LocalDevice;

impl Device {
    /// Unlocks this device for device-to-device mode with `passphrase`, creating its identity
    /// key on first use (a device that never met a server has none yet). Other devices see it
    /// as `name`, or else as the name it was set up with (`init`), or else as `tessera-` and the
    /// start of its identity key.
    ///
    /// # Errors
    /// The keystore's errors (a wrong passphrase included); [`DeviceError::InvalidPeerName`]
    /// for a name other devices would refuse.
    pub fn peer(
        &self,
        passphrase: Passphrase,
        name: Option<String>,
    ) -> Result<PeerDevice, DeviceError> {
        let keystore = self.keystore()?;
        let identity = if keystore.has_identity()? {
            keystore.load_identity(&passphrase)?
        } else {
            keystore.create_identity(&passphrase)?
        };
        let name = match name {
            Some(n) => n,
            None => self.config().map(|c| c.device_name).unwrap_or_else(|_| {
                format!("tessera-{}", hex::encode(&identity.public_key()[..4]))
            }),
        };
        crate::peer::wire::check_name(&name).map_err(DeviceError::InvalidPeerName)?;
        Ok(PeerDevice {
            home: self.home.clone(),
            keystore,
            passphrase,
            me: LocalDevice {
                name,
                identity: Arc::new(identity),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::device::Device;

    fn device(dir: &std::path::Path) -> Device {
        Device::open_dir(dir).with_keystore_options(
            tessera_store::KeystoreOptions::default().insecure_fast_kdf_for_tests(),
        )
    }

    #[test]
    fn a_device_unlocks_for_peer_mode_with_one_identity_and_refuses_a_bad_name() {
        let dir = tempfile::tempdir().unwrap();
        let pass = || Passphrase::new("correct horse battery".into()).unwrap();
        let first = device(dir.path())
            .peer(pass(), Some("laptop".into()))
            .unwrap();
        assert_eq!(first.me.name, "laptop");
        // The identity created on first use is the one loaded next time; the default name
        // comes from the identity key when the device was never set up with a server.
        let again = device(dir.path()).peer(pass(), None).unwrap();
        assert_eq!(
            again.me.identity.public_key(),
            first.me.identity.public_key()
        );
        assert_eq!(
            again.me.name,
            format!(
                "tessera-{}",
                hex::encode(&first.me.identity.public_key()[..4])
            )
        );
        // A wrong passphrase opens nothing.
        assert!(matches!(
            device(dir.path()).peer(Passphrase::new("wrong passphrase!!".into()).unwrap(), None),
            Err(DeviceError::Store(_))
        ));
        // A name with a control character is refused before anything is shown to anyone.
        assert!(matches!(
            device(dir.path()).peer(pass(), Some("lap\u{7}top".into())),
            Err(DeviceError::InvalidPeerName(_))
        ));
    }
}
