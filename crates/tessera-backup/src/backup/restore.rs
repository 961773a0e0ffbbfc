//! Restoring a share from a backup with the secret keys of an authorised set of holders: the keys
//! are checked, the leaves needed decrypted, the values reconstructed up the tree (each checked
//! against its node's point), and the aux blob decrypted.

use std::collections::BTreeMap;

use chacha20poly1305::aead::{Aead as _, Payload};
use k256::{ProjectivePoint, Scalar};
use zeroize::Zeroizing;

use super::binding::{AUX_NONCE, aux_cipher};
use super::sharing::lagrange_at_zero;
use super::tree::{FlatNode, flatten};
use super::{Backup, Restored};
use crate::error::BackupError;
use crate::holder::HolderSecretKey;
use crate::pve;
use crate::structure::AccessStructure;

impl Backup {
    /// Restores the share with the holders' secret `keys`: verifies the backup, checks every key
    /// against its holder, checks that the keys are an authorised set, decrypts the leaves needed
    /// and reconstructs up the tree (sums, any child, Lagrange interpolation), checking every
    /// reconstructed value against its node's point; then decrypts the aux blob.
    ///
    /// # Errors
    /// The errors of [`Self::verify`]; [`BackupError::UnknownHolder`],
    /// [`BackupError::DuplicateKey`], [`BackupError::WrongKey`] naming the key at fault;
    /// [`BackupError::NotAuthorised`] naming the keys given and what to add;
    /// [`BackupError::Node`] if a reconstructed value does not match;
    /// [`BackupError::AuxDamaged`].
    pub fn restore(&self, keys: &[HolderSecretKey]) -> Result<Restored, BackupError> {
        self.verify()?;
        let mut by_label: BTreeMap<&str, &HolderSecretKey> = BTreeMap::new();
        for key in keys {
            let label = key.label();
            let Ok(holder) = self.holder(label) else {
                return Err(BackupError::UnknownHolder {
                    label: label.to_owned(),
                    holders: self.holder_labels().join(", "),
                });
            };
            if by_label.insert(label, key).is_some() {
                return Err(BackupError::DuplicateKey {
                    label: label.to_owned(),
                });
            }
            let public = key.public();
            if public != *holder {
                return Err(BackupError::WrongKey {
                    label: label.to_owned(),
                    given: public.fingerprint(),
                    expected: holder.fingerprint(),
                });
            }
        }
        let given: Vec<String> = by_label.keys().map(|l| (*l).to_owned()).collect();
        if !self.structure.is_authorised(&given) {
            // Listing the options is combinatorial for wide thresholds: only list when small.
            let options = if self.structure.minimal_authorised_set_count() <= 1000 {
                self.structure.missing(&given)
            } else {
                Vec::new()
            };
            return Err(BackupError::NotAuthorised { given, options });
        }

        let flat = flatten(&self.structure);
        let secret = self.reconstruct(&flat, 0, &by_label)?.ok_or_else(|| {
            // Unreachable after the authorisation check; kept as an error, not a panic.
            BackupError::NotAuthorised {
                given: Vec::new(),
                options: Vec::new(),
            }
        })?;
        if ProjectivePoint::mul_by_generator(&secret) != self.context_public_share()? {
            return Err(BackupError::Node {
                node: flat[0].describe(),
                reason: "the reconstructed share does not match the public share".into(),
            });
        }
        let cipher = aux_cipher(&secret, &self.body.aux_salt.into_array(), &self.pre_digest);
        let aux = Zeroizing::new(
            cipher
                .decrypt(
                    &AUX_NONCE.into(),
                    Payload {
                        msg: &self.body.aux_ciphertext,
                        aad: &self.pre_digest,
                    },
                )
                .map_err(|_| BackupError::AuxDamaged)?,
        );
        Ok(Restored {
            secret: pve::scalar_bytes(&secret),
            aux,
        })
    }

    /// The value of node `index` if the keys can open it (`None` if they cannot), checked against
    /// the node's point.
    fn reconstruct(
        &self,
        flat: &[FlatNode<'_>],
        index: usize,
        keys: &BTreeMap<&str, &HolderSecretKey>,
    ) -> Result<Option<Zeroizing<Scalar>>, BackupError> {
        let node = &flat[index];
        let value = match node.node {
            AccessStructure::Leaf(label) => {
                let Some(key) = keys.get(label.as_str()) else {
                    return Ok(None);
                };
                let proof = self.body.nodes[index]
                    .proof
                    .as_ref()
                    .ok_or_else(|| BackupError::Format(format!("leaf {label:?} has no proof")))?;
                pve::decrypt_verified(
                    self.ephemeral(),
                    key,
                    &self.points[index],
                    &node.leaf_id(label),
                    &self.context_digest,
                    proof,
                )?
            }
            AccessStructure::Or(_) => {
                let mut found = None;
                for &c in &node.children {
                    if let Some(v) = self.reconstruct(flat, c, keys)? {
                        found = Some(v);
                        break;
                    }
                }
                let Some(v) = found else { return Ok(None) };
                v
            }
            AccessStructure::And(_) => {
                let mut sum = Zeroizing::new(Scalar::ZERO);
                for &c in &node.children {
                    let Some(v) = self.reconstruct(flat, c, keys)? else {
                        return Ok(None);
                    };
                    *sum += &*v;
                }
                sum
            }
            AccessStructure::Threshold { k, .. } => {
                let mut xs = Vec::with_capacity(*k);
                let mut ys = Vec::with_capacity(*k);
                for (j, &c) in node.children.iter().enumerate() {
                    if xs.len() == *k {
                        break;
                    }
                    if let Some(v) = self.reconstruct(flat, c, keys)? {
                        xs.push(j as u64 + 1);
                        ys.push(v);
                    }
                }
                if xs.len() < *k {
                    return Ok(None);
                }
                let mut sum = Zeroizing::new(Scalar::ZERO);
                for (j, y) in ys.iter().enumerate() {
                    let lambda = lagrange_at_zero(&xs, j).ok_or_else(|| BackupError::Node {
                        node: node.describe(),
                        reason: "repeated interpolation points".into(),
                    })?;
                    *sum += &(**y * lambda);
                }
                sum
            }
        };
        if ProjectivePoint::mul_by_generator(&value) != self.points[index] {
            return Err(BackupError::Node {
                node: node.describe(),
                reason: "the reconstructed value does not match the node's point".into(),
            });
        }
        Ok(Some(value))
    }
}
