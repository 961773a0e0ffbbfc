//! What binds a backup's parts together: the pre-digest over everything but the aux ciphertext,
//! the context digest every leaf proof is bound to, and the aux blob's cipher, keyed from the
//! share and the pre-digest.

use chacha20poly1305::ChaCha20Poly1305;
use chacha20poly1305::aead::KeyInit;
use hkdf::Hkdf;
use k256::Scalar;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::BackupContext;
use super::format::Body;
use crate::pve;

/// Domain tag of the pre-digest (everything but the aux ciphertext).
const PRE_DIGEST_TAG: &[u8] = b"tessera-backup-v1/pre-digest";
/// Domain tag of the context digest given to every leaf proof.
const CONTEXT_DIGEST_TAG: &[u8] = b"tessera-backup-v1/context";
/// HKDF `info` prefix of the aux key.
const AUX_INFO: &[u8] = b"tessera-backup-aux-v1";

impl BackupContext {
    /// Canonical encoding for the digest: fixed-width integers, length-prefixed strings.
    fn digest_into(&self, h: &mut Sha256) {
        field(h, self.wallet_id.as_bytes());
        field(h, self.wallet_name.as_bytes());
        h.update(self.party.to_be_bytes());
        h.update(self.threshold_t.to_be_bytes());
        h.update(self.threshold_n.to_be_bytes());
        h.update(self.epoch.to_be_bytes());
        h.update(self.wallet_public_key);
        h.update(self.public_share);
        h.update(self.created_at.to_be_bytes());
        // Absent in format 1, whose digest is unchanged; required in format 2 (the version is
        // hashed first, so the two layouts cannot collide).
        if let Some(state) = &self.share_state {
            h.update(state);
        }
    }
}

/// Hashes a length-prefixed (u32 BE) field.
fn field(h: &mut Sha256, bytes: &[u8]) {
    h.update(u32::try_from(bytes.len()).unwrap_or(u32::MAX).to_be_bytes());
    h.update(bytes);
}

/// The digest of everything but the aux ciphertext (which is encrypted under a key bound to it).
pub(super) fn pre_digest(version: u16, body: &Body) -> [u8; 32] {
    let mut h = Sha256::new();
    field(&mut h, PRE_DIGEST_TAG);
    h.update(version.to_be_bytes());
    body.context.digest_into(&mut h);
    field(&mut h, body.structure.as_bytes());
    h.update(
        u32::try_from(body.holders.len())
            .unwrap_or(u32::MAX)
            .to_be_bytes(),
    );
    for holder in &body.holders {
        field(&mut h, holder.label().as_bytes());
        h.update(holder.key_bytes());
    }
    h.update(
        u32::try_from(body.nodes.len())
            .unwrap_or(u32::MAX)
            .to_be_bytes(),
    );
    for node in &body.nodes {
        h.update(node.point.as_slice());
        h.update(
            u32::try_from(node.commitments.len())
                .unwrap_or(u32::MAX)
                .to_be_bytes(),
        );
        for c in &node.commitments {
            h.update(c.as_slice());
        }
    }
    h.update(body.aux_salt.as_slice());
    h.finalize().into()
}

/// The digest every leaf proof is bound to: the pre-digest and the aux ciphertext.
pub(super) fn context_digest(pre_digest: &[u8; 32], aux_ciphertext: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    field(&mut h, CONTEXT_DIGEST_TAG);
    h.update(pre_digest);
    field(&mut h, aux_ciphertext);
    h.finalize().into()
}

/// The aux blob's nonce. The key is fresh for every backup (HKDF over a fresh random 32-byte
/// salt), and each key encrypts exactly one message, so a fixed nonce never repeats under a key.
pub(super) const AUX_NONCE: [u8; 12] = [0u8; 12];

/// ChaCha20-Poly1305 keyed by `HKDF-SHA256(salt, x, "tessera-backup-aux-v1" ‖ pre-digest)`.
pub(super) fn aux_cipher(
    secret: &Scalar,
    salt: &[u8; 32],
    pre_digest: &[u8; 32],
) -> ChaCha20Poly1305 {
    let ikm = pve::scalar_bytes(secret);
    let hkdf = Hkdf::<Sha256>::new(Some(salt), ikm.as_ref());
    let mut info = Vec::with_capacity(AUX_INFO.len() + 32);
    info.extend_from_slice(AUX_INFO);
    info.extend_from_slice(pre_digest);
    let mut key = Zeroizing::new([0u8; 32]);
    // 32 bytes is far below HKDF-SHA256's limit of 255 · 32: expansion cannot fail.
    if hkdf.expand(&info, key.as_mut()).is_err() {
        key.fill(0);
    }
    ChaCha20Poly1305::new(&(*key).into())
}
