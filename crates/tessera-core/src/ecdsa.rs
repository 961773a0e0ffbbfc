//! Public keys, signatures and verification for ECDSA on secp256k1.
//!
//! Everything here uses the RustCrypto `k256` crate, independently of the threshold engine: the
//! engine's output is re-checked by a second implementation before anybody sees it.

use std::fmt;

use k256::ecdsa::{
    RecoveryId, Signature as K256Signature, VerifyingKey, signature::hazmat::PrehashVerifier,
};
use k256::elliptic_curve::sec1::ToSec1Point;
use sha3::{Digest, Keccak256};

use crate::error::{Error, Result};

/// A secp256k1 public key (never the identity).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct PublicKey(k256::PublicKey);

impl PublicKey {
    /// Parses a SEC1 public key, compressed (33 bytes) or uncompressed (65 bytes).
    ///
    /// # Errors
    /// [`Error::InvalidPublicKey`] when the bytes are not a point on the curve.
    pub fn from_sec1_bytes(bytes: &[u8]) -> Result<Self> {
        if bytes.len() != 33 && bytes.len() != 65 {
            return Err(Error::InvalidPublicKey(format!(
                "expected 33 (compressed) or 65 (uncompressed) bytes, got {}",
                bytes.len()
            )));
        }
        k256::PublicKey::from_sec1_bytes(bytes)
            .map(PublicKey)
            .map_err(|_| Error::InvalidPublicKey("not a point on secp256k1".into()))
    }

    /// Parses hex of a SEC1 public key.
    ///
    /// # Errors
    /// [`Error::InvalidPublicKey`] for bad hex or a point not on the curve.
    pub fn from_hex(text: &str) -> Result<Self> {
        let text = text.trim();
        let text = text.strip_prefix("0x").unwrap_or(text);
        let bytes = hex::decode(text)
            .map_err(|_| Error::InvalidPublicKey("not valid hexadecimal".into()))?;
        Self::from_sec1_bytes(&bytes)
    }

    pub(crate) fn from_affine(point: k256::AffinePoint) -> Result<Self> {
        k256::PublicKey::from_affine(point)
            .map(PublicKey)
            .map_err(|_| Error::InvalidPublicKey("the identity point is not a public key".into()))
    }

    pub(crate) fn as_affine(&self) -> &k256::AffinePoint {
        self.0.as_affine()
    }

    /// 33-byte compressed SEC1 encoding.
    #[must_use]
    pub fn to_compressed(&self) -> [u8; 33] {
        let mut out = [0u8; 33];
        out.copy_from_slice(self.0.as_affine().to_sec1_point(true).as_bytes());
        out
    }

    /// 65-byte uncompressed SEC1 encoding (`04 || x || y`).
    #[must_use]
    pub fn to_uncompressed(&self) -> [u8; 65] {
        let mut out = [0u8; 65];
        out.copy_from_slice(self.0.as_affine().to_sec1_point(false).as_bytes());
        out
    }

    /// The Ethereum address of this key, with the EIP-55 mixed-case checksum.
    #[must_use]
    pub fn eth_address(&self) -> String {
        let hash = Keccak256::digest(&self.to_uncompressed()[1..]);
        let address = hex::encode(&hash[12..]);
        let checksum = Keccak256::digest(address.as_bytes());
        let mut out = String::with_capacity(42);
        out.push_str("0x");
        for (i, c) in address.chars().enumerate() {
            let nibble = (checksum[i / 2] >> (4 * (1 - i % 2))) & 0x0f;
            out.push(if c.is_ascii_alphabetic() && nibble >= 8 {
                c.to_ascii_uppercase()
            } else {
                c
            });
        }
        out
    }

    /// Verifies a signature over a 32-byte digest.
    ///
    /// # Errors
    /// [`Error::VerificationFailed`] when it does not verify.
    pub fn verify(&self, digest: &[u8; 32], signature: &Signature) -> Result<()> {
        VerifyingKey::from(&self.0)
            .verify_prehash(digest, &signature.inner)
            .map_err(|_| Error::VerificationFailed)
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.to_compressed()))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({self})")
    }
}

/// An ECDSA signature produced by Tessera: `s` is normalised to the low half of the order
/// (BIP-62/EIP-2), and the recovery id matches that form.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Signature {
    inner: K256Signature,
    recovery_id: RecoveryId,
}

impl Signature {
    /// Builds a signature from `r` and `s`, normalises `s` to low-S and finds the recovery id by
    /// recovering the key, which also proves the signature verifies under `public_key`.
    ///
    /// # Errors
    /// [`Error::InvalidSignature`] for out-of-range scalars, [`Error::VerificationFailed`] when the
    /// signature does not verify under `public_key` for `digest`.
    pub fn from_scalars(
        r: [u8; 32],
        s: [u8; 32],
        digest: &[u8; 32],
        public_key: &PublicKey,
    ) -> Result<Self> {
        Self::from_scalars_with_hint(r, s, digest, public_key, None)
    }

    /// As [`Signature::from_scalars`], trying `hint` (the recovery id of the low-S form, as the
    /// engine computed it) first: one key recovery then proves both the id and the signature.
    pub(crate) fn from_scalars_with_hint(
        r: [u8; 32],
        s: [u8; 32],
        digest: &[u8; 32],
        public_key: &PublicKey,
        hint: Option<u8>,
    ) -> Result<Self> {
        let inner = K256Signature::from_scalars(r, s)
            .map_err(|_| {
                Error::InvalidSignature("r or s is zero or not below the curve order".into())
            })?
            .normalize_s();
        let key = VerifyingKey::from(&public_key.0);
        if let Some(id) = hint.and_then(RecoveryId::from_byte) {
            // Recovery succeeds for any well-formed (r, s); matching our key is what proves the
            // signature valid, as verification would.
            if VerifyingKey::recover_from_prehash(digest, &inner, id).is_ok_and(|k| k == key) {
                return Ok(Signature {
                    inner,
                    recovery_id: id,
                });
            }
        }
        let recovery_id = RecoveryId::trial_recovery_from_prehash(&key, digest, &inner)
            .map_err(|_| Error::VerificationFailed)?;
        Ok(Signature { inner, recovery_id })
    }

    /// `r`, 32 bytes big-endian.
    #[must_use]
    pub fn r(&self) -> [u8; 32] {
        self.inner.r().to_bytes().into()
    }

    /// `s` (low-S), 32 bytes big-endian.
    #[must_use]
    pub fn s(&self) -> [u8; 32] {
        self.inner.s().to_bytes().into()
    }

    /// The recovery id (0 or 1 for all practical purposes; 2 and 3 only when `R.x` overflowed).
    #[must_use]
    pub fn recovery_id(&self) -> u8 {
        self.recovery_id.to_byte()
    }

    /// DER encoding (as Bitcoin and X.509 use).
    #[must_use]
    pub fn to_der(&self) -> Vec<u8> {
        self.inner.to_der().as_bytes().to_vec()
    }

    /// `r || s`, 64 bytes.
    #[must_use]
    pub fn to_compact(&self) -> [u8; 64] {
        self.inner.to_bytes().into()
    }

    /// `r || s || v`, 65 bytes, with `v` the raw recovery id (0 or 1). Ethereum's legacy
    /// `v = 27 + id` or EIP-155 values are computed from it by the transaction layer.
    #[must_use]
    pub fn to_rsv(&self) -> [u8; 65] {
        let mut out = [0u8; 65];
        out[..64].copy_from_slice(&self.to_compact());
        out[64] = self.recovery_id();
        out
    }

    /// Recovers the public key that produced this signature over `digest`.
    ///
    /// # Errors
    /// [`Error::VerificationFailed`] when no key can be recovered.
    pub fn recover(&self, digest: &[u8; 32]) -> Result<PublicKey> {
        VerifyingKey::recover_from_prehash(digest, &self.inner, self.recovery_id)
            .map(|vk| PublicKey(vk.into()))
            .map_err(|_| Error::VerificationFailed)
    }
}

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature({})", hex::encode(self.to_rsv()))
    }
}

/// The encoding a signature was given in, as [`verify_encoded`] found it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SignatureEncoding {
    /// ASN.1 DER.
    Der,
    /// 64-byte `r || s`.
    Compact,
    /// 65-byte `r || s || v`; `v` was checked against the key (0/1 or 27/28).
    Rsv,
}

/// What [`verify_encoded`] found about a valid signature.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verified {
    /// The encoding it came in.
    pub encoding: SignatureEncoding,
    /// Whether `s` was in the high half (valid ECDSA, but non-canonical: Bitcoin and Ethereum
    /// reject it). Verification normalises it first.
    pub high_s: bool,
}

/// Verifies any ECDSA secp256k1 signature over a 32-byte digest: DER, 64-byte `r || s` or 65-byte
/// `r || s || v` (where `v` must then recover `public_key`).
///
/// # Errors
/// [`Error::InvalidSignature`] for an encoding that is none of these, [`Error::VerificationFailed`]
/// when it does not verify.
pub fn verify_encoded(public_key: &PublicKey, digest: &[u8; 32], bytes: &[u8]) -> Result<Verified> {
    let (encoding, sig, v) = match bytes.len() {
        64 => (
            SignatureEncoding::Compact,
            K256Signature::from_slice(bytes).map_err(|_| bad_scalars())?,
            None,
        ),
        65 => (
            SignatureEncoding::Rsv,
            K256Signature::from_slice(&bytes[..64]).map_err(|_| bad_scalars())?,
            Some(bytes[64]),
        ),
        _ => (
            SignatureEncoding::Der,
            K256Signature::from_der(bytes).map_err(|_| {
                Error::InvalidSignature(format!(
                    "{} bytes is neither DER, 64-byte r||s nor 65-byte r||s||v",
                    bytes.len()
                ))
            })?,
            None,
        ),
    };
    let normalised = sig.normalize_s();
    let high_s = normalised != sig;
    VerifyingKey::from(&public_key.0)
        .verify_prehash(digest, &normalised)
        .map_err(|_| Error::VerificationFailed)?;
    if let Some(v) = v {
        let id = match v {
            0..=3 => v,
            27..=30 => v - 27,
            _ => {
                return Err(Error::InvalidSignature(format!(
                    "recovery byte v = {v}: expected 0-3 or 27-30"
                )));
            }
        };
        // v describes the signature as given; flipping s to low-S flips the parity of R.y.
        let id = if high_s { id ^ 1 } else { id };
        let recovered = RecoveryId::from_byte(id)
            .and_then(|rid| VerifyingKey::recover_from_prehash(digest, &normalised, rid).ok());
        if recovered.map(k256::PublicKey::from) != Some(public_key.0) {
            return Err(Error::VerificationFailed);
        }
    }
    Ok(Verified { encoding, high_s })
}

fn bad_scalars() -> Error {
    Error::InvalidSignature("r or s is zero or not below the curve order".into())
}

/// Ethereum's EIP-191 `personal_sign` digest of a message: what `tessera demo` signs.
#[must_use]
pub fn eip191_digest(message: &[u8]) -> [u8; 32] {
    let mut h = Keccak256::new();
    h.update(format!("\x19Ethereum Signed Message:\n{}", message.len()).as_bytes());
    h.update(message);
    h.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k256::ecdsa::SigningKey;

    fn key_one() -> (SigningKey, PublicKey) {
        let mut one = [0u8; 32];
        one[31] = 1;
        let sk = SigningKey::from_slice(&one).unwrap();
        let pk = PublicKey(sk.verifying_key().into());
        (sk, pk)
    }

    #[test]
    fn eth_address_of_known_key() {
        // The address of private key 1, a well-known vector.
        assert_eq!(
            key_one().1.eth_address(),
            "0x7E5F4552091A69125d5DfCb7b8C2659029395Bdf"
        );
    }

    #[test]
    fn signatures_normalise_and_verify_in_every_encoding() {
        let (sk, pk) = key_one();
        let digest = eip191_digest(b"hello");
        let (sig, _) = sk.sign_prehash_recoverable(&digest);
        let (r, s) = sig.split_bytes();
        let ours = Signature::from_scalars(r.into(), s.into(), &digest, &pk).unwrap();
        assert_eq!(ours.inner.normalize_s(), ours.inner, "not low-S");
        pk.verify(&digest, &ours).unwrap();
        assert_eq!(ours.recover(&digest).unwrap(), pk);
        for bytes in [
            ours.to_der(),
            ours.to_compact().to_vec(),
            ours.to_rsv().to_vec(),
        ] {
            verify_encoded(&pk, &digest, &bytes).unwrap();
        }
        let mut eth = ours.to_rsv();
        eth[64] += 27;
        verify_encoded(&pk, &digest, &eth).unwrap();
        let mut wrong_v = ours.to_rsv();
        wrong_v[64] ^= 1;
        assert_eq!(
            verify_encoded(&pk, &digest, &wrong_v),
            Err(Error::VerificationFailed)
        );

        // The high-S twin verifies (reported as such) and normalises to the same signature.
        let high = K256Signature::from_scalars(ours.r(), (-*ours.inner.s()).to_bytes()).unwrap();
        let found = verify_encoded(&pk, &digest, &high.to_bytes()).unwrap();
        assert!(found.high_s);
        let renormalised =
            Signature::from_scalars(ours.r(), high.s().to_bytes().into(), &digest, &pk).unwrap();
        assert_eq!(renormalised, ours);

        // A wrong recovery-id hint falls back to trial recovery; a right one is taken.
        for hint in [
            Some(ours.recovery_id() ^ 1),
            Some(7),
            Some(ours.recovery_id()),
            None,
        ] {
            let again =
                Signature::from_scalars_with_hint(ours.r(), ours.s(), &digest, &pk, hint).unwrap();
            assert_eq!(again, ours);
        }
        let mut other = digest;
        other[0] ^= 1;
        assert_eq!(
            Signature::from_scalars_with_hint(
                ours.r(),
                ours.s(),
                &other,
                &pk,
                Some(ours.recovery_id())
            ),
            Err(Error::VerificationFailed)
        );
        assert_eq!(pk.verify(&other, &ours), Err(Error::VerificationFailed));
        assert!(matches!(
            verify_encoded(&pk, &digest, &[1, 2, 3]),
            Err(Error::InvalidSignature(_))
        ));
    }

    #[test]
    fn public_keys_parse_strictly() {
        let (_, pk) = key_one();
        assert_eq!(PublicKey::from_hex(&pk.to_string()).unwrap(), pk);
        assert_eq!(
            PublicKey::from_sec1_bytes(&pk.to_uncompressed()).unwrap(),
            pk
        );
        let mut off_curve = pk.to_compressed();
        off_curve[1..].fill(0xff);
        assert!(matches!(
            PublicKey::from_sec1_bytes(&off_curve),
            Err(Error::InvalidPublicKey(_))
        ));
        assert!(matches!(
            PublicKey::from_hex("zz"),
            Err(Error::InvalidPublicKey(_))
        ));
        assert!(matches!(
            PublicKey::from_sec1_bytes(&[0u8]),
            Err(Error::InvalidPublicKey(_))
        ));
    }
}
