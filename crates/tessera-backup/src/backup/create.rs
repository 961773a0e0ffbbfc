//! Making a backup: the share is secret-shared down the structure, the aux blob encrypted, and
//! every leaf verifiably encrypted to its holder with a proof bound to the context digest.

use std::collections::BTreeMap;

use chacha20poly1305::aead::{Aead as _, Payload};
use k256::{ProjectivePoint, Scalar};
use serde_bytes::{ByteArray, ByteBuf};

use super::binding::{AUX_NONCE, aux_cipher, context_digest, pre_digest};
use super::format::{Body, NodeRecord};
use super::sharing::share_down;
use super::tree::flatten;
use super::{Backup, BackupContext, FORMAT_VERSION, MAX_AUX_BYTES, MAX_FILE_BYTES, MAX_HOLDERS};
use crate::error::BackupError;
use crate::holder::HolderPublicKey;
use crate::pve;
use crate::structure::AccessStructure;

impl Backup {
    /// Backs up `secret` (whose public point must be `context.public_share`) under `structure`,
    /// each leaf verifiably encrypted to the holder of its label, with `aux` (the engine's share
    /// state) encrypted alongside.
    ///
    /// # Errors
    /// [`BackupError::InvalidSecret`] (zero, or not matching the public share),
    /// [`BackupError::InvalidContext`], [`BackupError::InvalidStructure`],
    /// [`BackupError::HolderMismatch`] (a holder key missing, extra or given twice),
    /// [`BackupError::Randomness`], [`BackupError::Encryption`], [`BackupError::Format`] for an
    /// aux blob too large.
    pub fn create(
        secret: &Scalar,
        context: BackupContext,
        structure: &AccessStructure,
        holders: &[HolderPublicKey],
        aux: &[u8],
    ) -> Result<Backup, BackupError> {
        let public_share = context.validate()?;
        if context.share_state.is_none() {
            return Err(BackupError::InvalidContext(
                "the share-state digest is missing (format 2 requires it)".into(),
            ));
        }
        if bool::from(secret.is_zero()) {
            return Err(BackupError::InvalidSecret("the share is zero"));
        }
        if ProjectivePoint::mul_by_generator(secret) != public_share {
            return Err(BackupError::InvalidSecret(
                "the share does not match the context's public share",
            ));
        }
        structure
            .validate()
            .map_err(|e| BackupError::InvalidStructure(e.to_string()))?;
        let holders = match_holders(structure, holders)?;
        if aux.len() > MAX_AUX_BYTES {
            return Err(BackupError::Format(format!(
                "the aux blob is {} bytes, more than the {MAX_AUX_BYTES} allowed",
                aux.len()
            )));
        }

        let flat = flatten(structure);
        let sharing = share_down(&flat, secret)?;
        let points: Vec<ProjectivePoint> = sharing
            .values
            .iter()
            .map(|v| ProjectivePoint::mul_by_generator(v))
            .collect();
        let mut body = Body {
            context,
            structure: structure.to_string(),
            holders,
            nodes: points
                .iter()
                .zip(&sharing.commitments)
                .map(|(p, cs)| NodeRecord {
                    point: ByteArray::new(pve::encode_point(p)),
                    commitments: cs
                        .iter()
                        .map(|c| ByteArray::new(pve::encode_point(c)))
                        .collect(),
                    proof: None,
                })
                .collect(),
            aux_salt: ByteArray::new(*pve::random_bytes()?),
            aux_ciphertext: ByteBuf::new(),
        };

        let pre_digest = pre_digest(FORMAT_VERSION, &body);
        let cipher = aux_cipher(secret, &body.aux_salt.into_array(), &pre_digest);
        body.aux_ciphertext = ByteBuf::from(
            cipher
                .encrypt(
                    &AUX_NONCE.into(),
                    Payload {
                        msg: aux,
                        aad: &pre_digest,
                    },
                )
                .map_err(|_| BackupError::Encryption {
                    label: "aux".into(),
                    reason: "ChaCha20-Poly1305 encryption of the aux blob failed",
                })?,
        );
        let context_digest = context_digest(&pre_digest, &body.aux_ciphertext);

        let keys: BTreeMap<&str, &HolderPublicKey> =
            body.holders.iter().map(|h| (h.label(), h)).collect();
        let mut proofs = Vec::new();
        for (index, node) in flat.iter().enumerate() {
            if let Some(label) = node.label() {
                let pk = keys.get(label).ok_or_else(|| {
                    BackupError::HolderMismatch(format!("no key for holder {label:?}"))
                })?;
                let proof = pve::encrypt(
                    pk,
                    &sharing.values[index],
                    &node.leaf_id(label),
                    &context_digest,
                )?;
                proofs.push((index, proof));
            }
        }
        for (index, proof) in proofs {
            body.nodes[index].proof = Some(proof);
        }
        drop(sharing);

        let backup = Backup {
            version: FORMAT_VERSION,
            body,
            structure: structure.clone(),
            points,
            commitments: Vec::new(),
            context_digest,
            pre_digest,
        };
        // Round-trip through the file form: the backup returned is exactly what a reader gets.
        let bytes = backup.to_bytes();
        if bytes.len() > MAX_FILE_BYTES {
            return Err(BackupError::Format(format!(
                "the backup would be {} bytes, more than the {MAX_FILE_BYTES} allowed",
                bytes.len()
            )));
        }
        Backup::from_bytes(&bytes)
    }
}

/// Pairs each structure label with exactly one holder key; sorted by label.
fn match_holders(
    structure: &AccessStructure,
    holders: &[HolderPublicKey],
) -> Result<Vec<HolderPublicKey>, BackupError> {
    if holders.len() > MAX_HOLDERS {
        return Err(BackupError::HolderMismatch(format!(
            "{} holder keys, more than the {MAX_HOLDERS} allowed",
            holders.len()
        )));
    }
    let mut by_label: BTreeMap<&str, &HolderPublicKey> = BTreeMap::new();
    for h in holders {
        if by_label.insert(h.label(), h).is_some() {
            return Err(BackupError::HolderMismatch(format!(
                "two keys for holder {:?}",
                h.label()
            )));
        }
    }
    let labels = structure.holders();
    for label in &labels {
        if !by_label.contains_key(label) {
            return Err(BackupError::HolderMismatch(format!(
                "no key for holder {label:?}"
            )));
        }
    }
    for label in by_label.keys() {
        if !labels.contains(label) {
            return Err(BackupError::HolderMismatch(format!(
                "a key was given for {label:?}, which is not in the structure {structure}"
            )));
        }
    }
    Ok(by_label.into_values().cloned().collect())
}
