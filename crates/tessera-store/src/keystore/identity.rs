//! The device identity: an Ed25519 key that proves to the server and to paired devices which
//! device is speaking. It is created once per keystore, never exported and never synced.

use std::fmt;

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use zeroize::Zeroizing;

use crate::error::{Error, Result};

/// The device's Ed25519 identity key.
///
/// No method returns the private key: it leaves the keystore only encrypted. It is zeroized on drop
/// and `Debug` prints only the public key. It is deliberately not `Clone`, so that the secret
/// exists once in memory.
pub struct DeviceIdentity {
    signing_key: SigningKey,
}

impl DeviceIdentity {
    pub(crate) fn generate() -> Self {
        Self::from_seed(&crate::random_bytes::<32>())
    }

    pub(crate) fn from_seed(seed: &[u8; 32]) -> Self {
        DeviceIdentity {
            signing_key: SigningKey::from_bytes(seed),
        }
    }

    /// The seed, for encryption into the keystore only.
    pub(crate) fn seed(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.signing_key.to_bytes())
    }

    /// The Ed25519 public key (32 bytes, RFC 8032 encoding).
    #[must_use]
    pub fn public_key(&self) -> [u8; 32] {
        self.signing_key.verifying_key().to_bytes()
    }

    /// Signs `message` (Ed25519, RFC 8032). Callers domain-separate what they sign (e.g. the
    /// server's challenge format), since this key signs for more than one purpose.
    #[must_use]
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.signing_key.sign(message).to_bytes()
    }
}

impl fmt::Debug for DeviceIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeviceIdentity")
            .field("public_key", &hex::encode(self.public_key()))
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// Verifies a device identity signature.
///
/// Uses strict verification: it rejects non-canonical encodings and small-order keys, so a
/// signature cannot be mauled into a second valid one, nor a weak key accept many messages.
///
/// # Errors
/// [`Error::InvalidPublicKey`] if `public_key` is not a valid Ed25519 point,
/// [`Error::SignatureInvalid`] if the signature does not verify.
pub fn verify_identity_signature(
    public_key: &[u8; 32],
    message: &[u8],
    signature: &[u8; 64],
) -> Result<()> {
    let key = VerifyingKey::from_bytes(public_key).map_err(|_| Error::InvalidPublicKey)?;
    key.verify_strict(message, &Signature::from_bytes(signature))
        .map_err(|_| Error::SignatureInvalid)
}
