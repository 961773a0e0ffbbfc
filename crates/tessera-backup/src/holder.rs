//! Backup holders' key pairs.
//!
//! A backup holder (a USB stick, a cloud account, a relative, a safe-deposit box) is named by a
//! short label and owns an HPKE (RFC 9180) key pair of the suite DHKEM(X25519, HKDF-SHA256),
//! HKDF-SHA256, ChaCha20-Poly1305. The public key goes into backups; the secret key is needed only
//! to restore. HPKE operations are those of the `hpke` crate, except the deterministic sealing of
//! the format-2 leaf proofs (module `hpke_seeded`, RFC 9180's steps checked against the RFC's
//! known-answer test), for which that crate has no public interface.
//!
//! Text form of a public key: `tessera-holder-v1:<label>:<64 hex digits>`.
//!
//! A label is 1–32 characters of `a-z`, `0-9`, `.`, `_`, `-`, starting with a letter or a digit.

use std::fmt;

use hpke::{Deserializable, Kem as KemTrait, Serializable};
use rand::TryRng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::error::BackupError;

/// The HPKE KEM of every holder key.
pub(crate) type Kem = hpke::kem::X25519HkdfSha256;
/// The HPKE KDF of every holder key.
pub(crate) type Kdf = hpke::kdf::HkdfSha256;
/// The HPKE AEAD of every holder key.
pub(crate) type Aead = hpke::aead::ChaCha20Poly1305;

/// Prefix of the text form of a holder public key.
const TEXT_PREFIX: &str = "tessera-holder-v1";

/// Longest holder label, in characters.
pub const MAX_LABEL_LEN: usize = 32;

/// Checks a holder label: 1–32 characters of `[a-z0-9._-]`, starting with `[a-z0-9]`.
///
/// # Errors
/// [`BackupError::InvalidLabel`] saying which rule the label breaks.
pub fn validate_label(label: &str) -> Result<(), BackupError> {
    let invalid = |reason| {
        Err(BackupError::InvalidLabel {
            label: label.chars().take(64).collect(),
            reason,
        })
    };
    if label.is_empty() {
        return invalid("it is empty");
    }
    if label.len() > MAX_LABEL_LEN {
        return invalid("it is longer than 32 characters");
    }
    if !label
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-'))
    {
        return invalid("only lowercase letters, digits, '.', '_' and '-' are allowed");
    }
    if !label
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    {
        return invalid("it must start with a lowercase letter or a digit");
    }
    Ok(())
}

/// Whether `key` is the canonical encoding of an X25519 public key: a u-coordinate below
/// p = 2^255 − 19, little-endian, with the top bit clear. X25519 ignores the top bit and reduces
/// modulo p (RFC 7748 §5), so 2^255 − 19 and more, or any key with bit 255 set, name the same
/// point as a smaller encoding; but HPKE binds the key's *bytes* into every encryption (the KEM
/// context), and the holder's secret key always yields the canonical bytes. A backup to a
/// non-canonical encoding would verify and never decrypt: such keys are refused wherever a holder
/// key is read.
#[must_use]
pub fn is_canonical_x25519(key: &[u8; 32]) -> bool {
    if key[31] & 0x80 != 0 {
        return false;
    }
    // With the top bit clear, u ≥ p = 2^255 − 19 only for 0x7f ff … ff (ed..ff): the top byte
    // 0x7f, bytes 1 to 30 all 0xff, and byte 0 at least 0xed.
    let at_least_p = key[31] == 0x7f && key[1..31].iter().all(|&b| b == 0xff) && key[0] >= 0xed;
    !at_least_p
}

/// A backup holder's public key: its label and its X25519 HPKE public key.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "HolderPublicKeyWire", into = "HolderPublicKeyWire")]
pub struct HolderPublicKey {
    label: String,
    key: [u8; 32],
}

/// Serialized form of [`HolderPublicKey`]; deserialization re-validates through
/// [`HolderPublicKey::new`].
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct HolderPublicKeyWire {
    label: String,
    key: serde_bytes::ByteArray<32>,
}

impl TryFrom<HolderPublicKeyWire> for HolderPublicKey {
    type Error = BackupError;

    fn try_from(wire: HolderPublicKeyWire) -> Result<Self, BackupError> {
        HolderPublicKey::new(wire.label, wire.key.into_array())
    }
}

impl From<HolderPublicKey> for HolderPublicKeyWire {
    fn from(key: HolderPublicKey) -> Self {
        HolderPublicKeyWire {
            label: key.label,
            key: serde_bytes::ByteArray::new(key.key),
        }
    }
}

impl HolderPublicKey {
    /// A holder public key from its label and its 32-byte X25519 public key.
    ///
    /// # Errors
    /// [`BackupError::InvalidLabel`] for a label that breaks the rule;
    /// [`BackupError::InvalidHolderKey`] for a key that is not canonically encoded (see
    /// [`is_canonical_x25519`]) or that HPKE cannot encrypt to (a low-order point, for which every
    /// shared secret would be zero).
    pub fn new(label: impl Into<String>, key: [u8; 32]) -> Result<Self, BackupError> {
        let label = label.into();
        validate_label(&label)?;
        if !is_canonical_x25519(&key) {
            return Err(BackupError::InvalidHolderKey {
                label,
                reason: "not a canonically encoded X25519 public key (its top bit is set, or it \
                         is not below 2^255 - 19): a backup to it could never be decrypted by the \
                         holder, whose own key is encoded canonically",
            });
        }
        let parsed = <Kem as KemTrait>::PublicKey::from_bytes(&key).map_err(|_| {
            BackupError::InvalidHolderKey {
                label: label.clone(),
                reason: "not an X25519 public key",
            }
        })?;
        // X25519 accepts any 32 bytes; a low-order point gives an all-zero shared secret, which
        // HPKE's DHKEM rejects. One trial encryption (fixed randomness, empty message: nothing is
        // encrypted) finds such keys now rather than when a backup is made.
        let mut trial = <chacha20::ChaCha20Rng as rand::SeedableRng>::from_seed([7u8; 32]);
        if hpke::single_shot_seal_with_rng::<Aead, Kdf, Kem>(
            &hpke::OpModeS::Base,
            &parsed,
            b"tessera-holder-key-check",
            &[],
            &[],
            &mut trial,
        )
        .is_err()
        {
            return Err(BackupError::InvalidHolderKey {
                label,
                reason: "a low-order X25519 point, to which nothing can be encrypted",
            });
        }
        Ok(HolderPublicKey { label, key })
    }

    /// The holder's label.
    #[must_use]
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The 32-byte X25519 public key.
    #[must_use]
    pub fn key_bytes(&self) -> [u8; 32] {
        self.key
    }

    /// The key as HPKE's type (validated at construction).
    pub(crate) fn hpke_key(&self) -> Result<<Kem as KemTrait>::PublicKey, BackupError> {
        <Kem as KemTrait>::PublicKey::from_bytes(&self.key).map_err(|_| {
            BackupError::InvalidHolderKey {
                label: self.label.clone(),
                reason: "not an X25519 public key",
            }
        })
    }

    /// Text form: `tessera-holder-v1:<label>:<64 hex digits>`.
    #[must_use]
    pub fn to_text(&self) -> String {
        format!("{TEXT_PREFIX}:{}:{}", self.label, hex::encode(self.key))
    }

    /// Parses the text form written by [`Self::to_text`] (surrounding whitespace is ignored).
    ///
    /// # Errors
    /// [`BackupError::InvalidHolderText`] for a malformed text, and the errors of [`Self::new`].
    pub fn from_text(text: &str) -> Result<Self, BackupError> {
        let text = text.trim();
        let mut parts = text.split(':');
        let (Some(prefix), Some(label), Some(key), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(BackupError::InvalidHolderText(format!(
                "expected \"{TEXT_PREFIX}:<label>:<64 hex digits>\""
            )));
        };
        if prefix != TEXT_PREFIX {
            return Err(BackupError::InvalidHolderText(format!(
                "it does not start with \"{TEXT_PREFIX}:\""
            )));
        }
        if key.len() != 64 {
            return Err(BackupError::InvalidHolderText(format!(
                "the key of {label:?} must be 64 hex digits, got {} characters",
                key.chars().count()
            )));
        }
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(key, &mut bytes).map_err(|_| {
            BackupError::InvalidHolderText(format!("the key of {label:?} is not hexadecimal"))
        })?;
        Self::new(label, bytes)
    }

    /// A short fingerprint for people to compare: the first 8 bytes of SHA-256 of the key, in hex.
    #[must_use]
    pub fn fingerprint(&self) -> String {
        let digest = Sha256::digest(self.key);
        hex::encode(&digest[..8])
    }
}

impl fmt::Debug for HolderPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HolderPublicKey")
            .field("label", &self.label)
            .field("fingerprint", &self.fingerprint())
            .finish()
    }
}

impl fmt::Display for HolderPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_text())
    }
}

/// A backup holder's secret key: its label and the 32 bytes of its X25519 HPKE secret key.
///
/// Zeroized on drop; `Debug` prints `<redacted>` for the secret. Storing it (encrypted under a
/// passphrase) is the keystore's business: this type only hands out the 32 bytes.
pub struct HolderSecretKey {
    label: String,
    secret: Zeroizing<[u8; 32]>,
    /// The matching public key, computed once at construction.
    public: HolderPublicKey,
}

impl HolderSecretKey {
    /// A fresh key pair from the operating system's random number generator.
    ///
    /// # Errors
    /// [`BackupError::InvalidLabel`] for a bad label; [`BackupError::Randomness`] if the OS
    /// generator fails.
    pub fn generate(label: impl Into<String>) -> Result<Self, BackupError> {
        let label = label.into();
        validate_label(&label)?;
        let mut secret = Zeroizing::new([0u8; 32]);
        rand::rngs::SysRng
            .try_fill_bytes(secret.as_mut())
            .map_err(|_| BackupError::Randomness)?;
        Self::from_bytes(label, *secret)
    }

    /// A secret key from its 32 bytes (as stored by the keystore).
    ///
    /// # Errors
    /// [`BackupError::InvalidLabel`] for a bad label; [`BackupError::InvalidHolderKey`] if the
    /// bytes do not give a usable key pair.
    pub fn from_bytes(label: impl Into<String>, bytes: [u8; 32]) -> Result<Self, BackupError> {
        let label = label.into();
        let secret = Zeroizing::new(bytes);
        validate_label(&label)?;
        // HPKE clamps X25519 secret keys, so any 32 bytes are a key.
        let sk = <Kem as KemTrait>::PrivateKey::from_bytes(secret.as_ref()).map_err(|_| {
            BackupError::InvalidHolderKey {
                label: label.clone(),
                reason: "not an X25519 secret key",
            }
        })?;
        let mut public = [0u8; 32];
        public.copy_from_slice(&<Kem as KemTrait>::sk_to_pk(&sk).to_bytes());
        let public = HolderPublicKey::new(label.clone(), public)?;
        Ok(HolderSecretKey {
            label,
            secret,
            public,
        })
    }

    /// The 32 secret bytes, for the keystore to encrypt.
    #[must_use]
    pub fn to_bytes(&self) -> Zeroizing<[u8; 32]> {
        self.secret.clone()
    }

    /// The holder's label.
    #[must_use]
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The matching public key.
    #[must_use]
    pub fn public(&self) -> HolderPublicKey {
        self.public.clone()
    }

    /// The key as HPKE's type (zeroized on drop by `hpke`).
    pub(crate) fn hpke_key(&self) -> Result<<Kem as KemTrait>::PrivateKey, BackupError> {
        <Kem as KemTrait>::PrivateKey::from_bytes(self.secret.as_ref()).map_err(|_| {
            BackupError::InvalidHolderKey {
                label: self.label.clone(),
                reason: "not an X25519 secret key",
            }
        })
    }
}

impl fmt::Debug for HolderSecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HolderSecretKey")
            .field("label", &self.label)
            .field("secret", &"<redacted>")
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        for good in ["a", "cloud", "usb-1", "0", "a.b_c-d", &"x".repeat(32)] {
            validate_label(good).unwrap();
        }
        for bad in [
            "",
            "Cloud",
            "-a",
            ".a",
            "_a",
            "a b",
            "a:b",
            "é",
            &"x".repeat(33),
        ] {
            assert!(
                matches!(validate_label(bad), Err(BackupError::InvalidLabel { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn key_pair_and_text_round_trip() {
        let sk = HolderSecretKey::generate("usb-1").unwrap();
        let pk = sk.public();
        assert_eq!(pk.label(), "usb-1");
        let text = pk.to_text();
        assert!(text.starts_with("tessera-holder-v1:usb-1:"));
        assert_eq!(text.len(), "tessera-holder-v1:usb-1:".len() + 64);
        assert_eq!(
            HolderPublicKey::from_text(&format!(" {text}\n")).unwrap(),
            pk
        );
        assert_eq!(pk.fingerprint().len(), 16);

        let again = HolderSecretKey::from_bytes("usb-1", *sk.to_bytes()).unwrap();
        assert_eq!(again.public(), pk);
        let other = HolderSecretKey::generate("usb-1").unwrap();
        assert_ne!(other.public(), pk);
    }

    #[test]
    fn serde_revalidates() {
        let pk = HolderSecretKey::generate("cloud").unwrap().public();
        let json = serde_json::to_string(&pk).unwrap();
        let back: HolderPublicKey = serde_json::from_str(&json).unwrap();
        assert_eq!(back, pk);
        let bad = json.replace("cloud", "Cloud");
        assert!(serde_json::from_str::<HolderPublicKey>(&bad).is_err());
    }

    #[test]
    fn bad_text_is_rejected_with_a_reason() {
        let pk = HolderSecretKey::generate("cloud").unwrap().public();
        let hex = hex::encode(pk.key_bytes());
        let cases = [
            (format!("tessera-holder-v2:cloud:{hex}"), "does not start"),
            (
                format!("tessera-holder-v1:cloud:{}", &hex[..62]),
                "64 hex digits",
            ),
            (
                format!("tessera-holder-v1:cloud:{}zz", &hex[..62]),
                "not hexadecimal",
            ),
            (
                format!("tessera-holder-v1:Cloud:{hex}"),
                "invalid holder label",
            ),
            (format!("tessera-holder-v1:cloud:{hex}:x"), "expected"),
            ("tessera-holder-v1".to_string(), "expected"),
        ];
        for (text, want) in cases {
            let err = HolderPublicKey::from_text(&text).unwrap_err().to_string();
            assert!(err.contains(want), "{text}: {err}");
        }
    }

    #[test]
    fn low_order_keys_are_rejected() {
        // The all-zero point and the point of order 1 (u = 1) have every shared secret zero.
        let mut one = [0u8; 32];
        one[0] = 1;
        for key in [[0u8; 32], one] {
            let err = HolderPublicKey::new("a", key).unwrap_err();
            assert!(matches!(err, BackupError::InvalidHolderKey { .. }), "{err}");
        }
    }

    /// `key` with its top bit set: a non-canonical encoding of the same X25519 point.
    fn with_top_bit_set(key: [u8; 32]) -> [u8; 32] {
        let mut high = key;
        high[31] |= 0x80;
        high
    }

    #[test]
    fn non_canonical_keys_are_refused_everywhere() {
        let sk = HolderSecretKey::generate("usb-1").unwrap();
        let good = sk.public().key_bytes();
        assert!(is_canonical_x25519(&good));
        let high = with_top_bit_set(good);
        // p itself and p + 1 (encodings of 0 and 1) and the largest 255-bit value.
        let mut p = [0xffu8; 32];
        p[0] = 0xed;
        p[31] = 0x7f;
        let mut p_plus_1 = p;
        p_plus_1[0] = 0xee;
        let mut max = [0xffu8; 32];
        max[31] = 0x7f;
        let mut below_p = p;
        below_p[0] = 0xec;
        assert!(is_canonical_x25519(&below_p));
        for bad in [high, p, p_plus_1, max] {
            assert!(!is_canonical_x25519(&bad), "{}", hex::encode(bad));
            // Constructor.
            let err = HolderPublicKey::new("usb-1", bad).unwrap_err();
            assert!(
                matches!(err, BackupError::InvalidHolderKey { .. })
                    && err.to_string().contains("canonically encoded"),
                "{err}"
            );
            // Text form.
            let text = format!("tessera-holder-v1:usb-1:{}", hex::encode(bad));
            let err = HolderPublicKey::from_text(&text).unwrap_err().to_string();
            assert!(err.contains("canonically encoded"), "{err}");
            // Serialized form (JSON here; backup files use the same serde path).
            let wire = HolderPublicKeyWire {
                label: "usb-1".into(),
                key: serde_bytes::ByteArray::new(bad),
            };
            let json = serde_json::to_string(&wire).unwrap();
            let err = serde_json::from_str::<HolderPublicKey>(&json)
                .unwrap_err()
                .to_string();
            assert!(err.contains("canonically encoded"), "{err}");
        }
    }

    #[test]
    fn secret_is_redacted() {
        let sk = HolderSecretKey::from_bytes("a", [0x42; 32]).unwrap();
        let debug = format!("{sk:?}");
        assert!(debug.contains("<redacted>"));
        assert!(!debug.contains("42"), "{debug}");
        assert!(!debug.contains("66"), "{debug}");
    }
}
