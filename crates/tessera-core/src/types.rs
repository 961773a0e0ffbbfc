//! Tessera's own identifiers: parties, wallets, sessions, thresholds and protocols.
//!
//! Nothing here is engine specific; engines map these onto their own types.

use std::fmt;

use rand::TryRng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// Most parties a wallet may have.
pub const MAX_PARTIES: u8 = 16;

/// A party's index in a wallet: `0..n`. In the client + server topology the device is party 0 and
/// the server party 1.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PartyIndex(u8);

impl PartyIndex {
    /// A party index; any `u8` is representable, [`Threshold`] bounds it to `0..n`.
    #[must_use]
    pub const fn new(index: u8) -> Self {
        PartyIndex(index)
    }

    /// The index as a number.
    #[must_use]
    pub const fn get(self) -> u8 {
        self.0
    }
}

impl fmt::Display for PartyIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Debug for PartyIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "P{}", self.0)
    }
}

/// A `t`-of-`n` threshold: any `t` of the `n` parties can sign; fewer learn nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Threshold {
    /// Signers needed.
    pub t: u8,
    /// Share holders.
    pub n: u8,
}

impl Threshold {
    /// A validated threshold: `2 <= t <= n <= 16`.
    ///
    /// # Errors
    /// [`Error::InvalidParameters`] outside that range.
    pub fn new(t: u8, n: u8) -> Result<Self> {
        if t < 2 {
            return Err(Error::InvalidParameters(format!(
                "threshold t = {t}: at least 2 signers are needed (t = 1 would be a plain key)"
            )));
        }
        if t > n {
            return Err(Error::InvalidParameters(format!(
                "threshold t = {t} is larger than the number of parties n = {n}"
            )));
        }
        if n > MAX_PARTIES {
            return Err(Error::InvalidParameters(format!(
                "n = {n} parties: at most {MAX_PARTIES} are supported"
            )));
        }
        Ok(Threshold { t, n })
    }

    /// All party indices `0..n`.
    pub fn parties(self) -> impl Iterator<Item = PartyIndex> {
        (0..self.n).map(PartyIndex)
    }

    /// Whether `party` is one of `0..n`.
    #[must_use]
    pub fn contains(self, party: PartyIndex) -> bool {
        party.0 < self.n
    }
}

impl fmt::Display for Threshold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-of-{}", self.t, self.n)
    }
}

/// The protocol a session runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[repr(u8)]
pub enum Protocol {
    /// Distributed key generation.
    Keygen = 1,
    /// Threshold signing.
    Sign = 2,
    /// Share refresh: new shares, same public key, next epoch.
    Refresh = 3,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Keygen => "keygen",
            Protocol::Sign => "sign",
            Protocol::Refresh => "refresh",
        })
    }
}

macro_rules! byte_id {
    ($(#[$doc:meta])* $name:ident, $len:expr) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name([u8; $len]);

        impl $name {
            /// From raw bytes.
            #[must_use]
            pub const fn from_bytes(bytes: [u8; $len]) -> Self {
                $name(bytes)
            }

            /// The raw bytes.
            #[must_use]
            pub const fn as_bytes(&self) -> &[u8; $len] {
                &self.0
            }

            /// A fresh random value from the operating system's generator.
            #[must_use]
            pub fn random() -> Self {
                $name(random_bytes())
            }

            /// Parses lower- or upper-case hex.
            ///
            /// # Errors
            /// [`Error::InvalidParameters`] when not exactly the right number of hex digits.
            pub fn from_hex(text: &str) -> Result<Self> {
                let mut bytes = [0u8; $len];
                hex::decode_to_slice(text.trim(), &mut bytes).map_err(|_| {
                    Error::InvalidParameters(format!(
                        concat!(stringify!($name), " must be {} hex digits"),
                        2 * $len
                    ))
                })?;
                Ok($name(bytes))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&hex::encode(self.0))
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({})"), hex::encode(&self.0[..8]))
            }
        }
    };
}

byte_id!(
    /// Identifies a wallet (one shared key) across all its parties and epochs.
    WalletId,
    16
);

byte_id!(
    /// Identifies one protocol run. It is a hash of a fresh random nonce together with everything
    /// the parties must agree on (wallet, protocol, threshold, party set, and for signing the digest,
    /// derivation path and epoch), so a party with another view of the run rejects its messages as
    /// [`Error::WrongSession`] before parsing them.
    SessionId,
    32
);

/// 32 bytes from the operating system's generator.
pub(crate) fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    // The OS generator failing is unrecoverable for a key-custody process: there is no safe
    // fallback, so we stop rather than continue with predictable values.
    #[allow(clippy::expect_used)]
    rand::rngs::SysRng
        .try_fill_bytes(&mut bytes)
        .expect("the operating system's random number generator failed");
    bytes
}

/// A uniformly random nonzero scalar from the operating system's generator (drawn again on
/// zero, probability 2⁻²⁵⁶).
pub(crate) fn random_nonzero_scalar() -> Result<k256::Scalar> {
    use k256::elliptic_curve::Field;
    loop {
        let s = k256::Scalar::try_random(&mut rand::rngs::SysRng)
            .map_err(|_| Error::Aborted("the operating system's random generator failed".into()))?;
        if !bool::from(s.is_zero()) {
            return Ok(s);
        }
    }
}

/// Everything a session id binds. Built by the session constructors; all parties build the same
/// context from their own view and so derive the same id only if they agree.
pub(crate) struct SessionContext<'a> {
    pub nonce: &'a [u8; 32],
    pub wallet: &'a WalletId,
    pub protocol: Protocol,
    pub threshold: Threshold,
    pub parties: &'a [PartyIndex],
    /// Protocol-specific fields, already length-prefixed by the caller through [`Self::field`].
    pub extra: Vec<u8>,
}

impl SessionContext<'_> {
    /// Appends a length-prefixed field to `extra`.
    pub fn field(mut self, bytes: &[u8]) -> Self {
        self.extra
            .extend_from_slice(&(bytes.len() as u64).to_be_bytes());
        self.extra.extend_from_slice(bytes);
        self
    }

    pub fn session_id(&self) -> SessionId {
        let mut h = Sha256::new();
        h.update(b"tessera/session-id/v1");
        h.update(self.nonce);
        h.update(self.wallet.as_bytes());
        h.update([self.protocol as u8, self.threshold.t, self.threshold.n]);
        h.update([self.parties.len() as u8]);
        for p in self.parties {
            h.update([p.get()]);
        }
        h.update(&self.extra);
        SessionId(h.finalize().into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_are_bounded() {
        assert!(Threshold::new(2, 2).is_ok());
        assert!(Threshold::new(16, 16).is_ok());
        for (t, n) in [(1, 2), (0, 0), (3, 2), (2, 17), (17, 17)] {
            assert!(
                matches!(Threshold::new(t, n), Err(Error::InvalidParameters(_))),
                "{t}-of-{n} accepted"
            );
        }
    }

    #[test]
    fn session_id_binds_every_field() {
        let nonce = [7u8; 32];
        let wallet = WalletId::from_bytes([1; 16]);
        let parties = [PartyIndex(0), PartyIndex(1)];
        let base = |extra: &[u8]| {
            SessionContext {
                nonce: &nonce,
                wallet: &wallet,
                protocol: Protocol::Sign,
                threshold: Threshold { t: 2, n: 3 },
                parties: &parties,
                extra: Vec::new(),
            }
            .field(extra)
            .session_id()
        };
        let id = base(b"digest");
        assert_eq!(id, base(b"digest"));
        assert_ne!(id, base(b"other"));
        let other_parties = [PartyIndex(0), PartyIndex(2)];
        let changed = SessionContext {
            nonce: &nonce,
            wallet: &wallet,
            protocol: Protocol::Sign,
            threshold: Threshold { t: 2, n: 3 },
            parties: &other_parties,
            extra: Vec::new(),
        }
        .field(b"digest")
        .session_id();
        assert_ne!(id, changed);
    }
}
