//! The user's passphrase.

use std::fmt;

use zeroize::Zeroizing;

use crate::error::{Error, Result};

/// The passphrase that encrypts keystore entries. Zeroized on drop; `Debug` prints `<redacted>`.
///
/// It is used exactly as given (no trimming or Unicode normalisation): the keystore is local to one
/// device, so the same keyboard produces the same bytes, and silently altering what the user typed
/// could make two different passphrases equal.
pub struct Passphrase(Zeroizing<String>);

impl Passphrase {
    /// Wraps a passphrase; the `String` is moved in, so its only copy is zeroized with this value.
    ///
    /// # Errors
    /// [`Error::EmptyPassphrase`] for an empty string.
    pub fn new(passphrase: String) -> Result<Self> {
        let passphrase = Zeroizing::new(passphrase);
        if passphrase.is_empty() {
            return Err(Error::EmptyPassphrase);
        }
        Ok(Passphrase(passphrase))
    }

    pub(crate) fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl fmt::Debug for Passphrase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Passphrase(<redacted>)")
    }
}
