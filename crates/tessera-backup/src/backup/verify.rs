//! Verifying a backup with public data only: the node points against the structure (sums,
//! equalities, Feldman commitments), every leaf proof, and which share and wallet state the
//! backup is of.

use k256::{ProjectivePoint, Scalar};

use super::tree::flatten;
use super::{Backup, ExpectedShare};
use crate::error::BackupError;
use crate::pve;
use crate::structure::AccessStructure;

impl Backup {
    /// Checks everything that can be checked without a secret: the root point is the public
    /// share, every node's point is consistent with its parent's (sums, equalities, Feldman
    /// commitments), and every leaf's proof verifies. A backup that verifies can be restored by
    /// every authorised set of holders.
    ///
    /// # Errors
    /// [`BackupError::Node`] naming the inconsistent node, [`BackupError::Proof`] /
    /// [`BackupError::LeafProof`] naming the leaf (and repetition) whose proof fails.
    pub fn verify(&self) -> Result<(), BackupError> {
        let flat = flatten(&self.structure);
        let node_error = |index: usize, reason: String| BackupError::Node {
            node: flat[index].describe(),
            reason,
        };
        let public_share = self.context_public_share()?;
        if self.points[0] != public_share {
            return Err(node_error(
                0,
                "the root's point is not the backup's public share".into(),
            ));
        }
        for (index, node) in flat.iter().enumerate() {
            let point = self.points[index];
            match node.node {
                AccessStructure::Leaf(_) => {}
                AccessStructure::Or(_) => {
                    for (j, &c) in node.children.iter().enumerate() {
                        if self.points[c] != point {
                            return Err(node_error(
                                index,
                                format!("child {} does not carry the node's point", j + 1),
                            ));
                        }
                    }
                }
                AccessStructure::And(_) => {
                    let sum = node
                        .children
                        .iter()
                        .fold(ProjectivePoint::IDENTITY, |acc, &c| acc + self.points[c]);
                    if sum != point {
                        return Err(node_error(
                            index,
                            "the children's points do not add up to the node's point".into(),
                        ));
                    }
                }
                AccessStructure::Threshold { .. } => {
                    // Feldman: child j (1-based) has point V + Σ_l C_l·j^l.
                    for (j, &c) in node.children.iter().enumerate() {
                        let x = Scalar::from(j as u64 + 1);
                        let mut power = Scalar::ONE;
                        let mut expected = point;
                        for commitment in &self.commitments[index] {
                            power *= x;
                            expected += commitment * &power;
                        }
                        if self.points[c] != expected {
                            return Err(node_error(
                                index,
                                format!(
                                    "child {}'s point does not match the polynomial commitments",
                                    j + 1
                                ),
                            ));
                        }
                    }
                }
            }
        }
        // Cheap checks of every leaf first (openings against commitments), then the full proofs
        // (re-encryption and challenge): most damage is found before any encryption is redone.
        let leaves: Vec<(usize, &str)> = flat
            .iter()
            .enumerate()
            .filter_map(|(index, node)| node.label().map(|label| (index, label)))
            .collect();
        let ephemeral = self.ephemeral();
        for pass in [pve::precheck, pve::verify] {
            for &(index, label) in &leaves {
                let proof = self.body.nodes[index]
                    .proof
                    .as_ref()
                    .ok_or_else(|| BackupError::Format(format!("leaf {label:?} has no proof")))?;
                pass(
                    ephemeral,
                    self.holder(label)?,
                    &self.points[index],
                    &flat[index].leaf_id(label),
                    &self.context_digest,
                    proof,
                )?;
            }
        }
        Ok(())
    }

    /// [`Self::verify`], and checks that the backup is of the share whose public share is
    /// `expected_public_share` (compressed SEC1).
    ///
    /// # Errors
    /// As [`Self::verify`]; [`BackupError::WrongShare`] for a valid backup of another share.
    pub fn verify_for(&self, expected_public_share: &[u8; 33]) -> Result<(), BackupError> {
        self.verify()?;
        if self.body.context.public_share != *expected_public_share {
            return Err(BackupError::WrongShare {
                found: hex::encode(self.body.context.public_share),
                expected: hex::encode(expected_public_share),
            });
        }
        Ok(())
    }

    /// [`Self::verify_for`] the expected public share, and checks that the backup states the
    /// wallet's public state that `expected` (made from a share of the same wallet) has: a backup
    /// whose signing state was taken from another share (another chain code, threshold, party
    /// set, epoch or wallet key) is refused. Format-1 backups state none; for them only the
    /// public share is checked.
    ///
    /// # Errors
    /// As [`Self::verify_for`]; [`BackupError::WrongShareState`].
    pub fn verify_for_share(&self, expected: &ExpectedShare) -> Result<(), BackupError> {
        self.verify_for(&expected.public_share)?;
        match &self.body.context.share_state {
            Some(state) if *state != expected.share_state => Err(BackupError::WrongShareState {
                found: hex::encode(state),
                expected: hex::encode(expected.share_state),
            }),
            _ => Ok(()),
        }
    }
}
