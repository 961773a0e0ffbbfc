//! Verifiable sharing of a secret down a wallet structure.
//!
//! The sharing is Benaloh and Leichter's for monotone formulas (J. Benaloh, J. Leichter,
//! "Generalized secret sharing and monotone functions", CRYPTO '88): the root holds the secret;
//! `and(…)` splits its value into random summands, one per child; `or(…)` gives every child a
//! copy; `threshold(k, …)` gives child `j` (1-based position) the value `f(j)` of a random
//! polynomial `f` of degree `k − 1` with `f(0)` the node's value (Shamir). A party's share is the
//! value at its leaf. The structure's reconstruction coefficients
//! ([`super::AccessStructure::reconstruction_coefficients`]) bring an authorised quorum's shares
//! back to the secret, as cb-mpc's `to_additive_share` does (`src/cbmpc/protocol/ec_dkg.cpp`).
//!
//! Every dealing is public in the exponent (Feldman, "A practical scheme for non-interactive
//! verifiable secret sharing", FOCS 1987): the point `v·G` of every node value `v`, and on every
//! threshold node the points `a_l·G` of its polynomial's coefficients `a_1 … a_(k−1)` (exactly
//! `k − 1` of them: the degree is part of the check). Anyone checks a dealing against the
//! structure ([`PublicDealing::verify`]): an `and` node's point is the sum of its children's, an
//! `or` node's children carry its point, a threshold child `j`'s point is `P + Σ_l j^l·C_l`, and
//! no point is the identity. A party checks its own sub-share `s` against its leaf's point
//! (`s·G`). Since every leaf point follows from the root point and the dealer knows every value
//! it sends, the dealer knows the discrete logarithm of its root point.

use std::collections::BTreeMap;

use k256::{AffinePoint, ProjectivePoint, Scalar};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::{AccessStructure, WalletStructure};
use crate::error::Result;
use crate::session::encode;
use crate::types::{PartyIndex, SessionId};

/// The structure's nodes in pre-order, each with its children's pre-order indices.
pub(crate) fn preorder(tree: &AccessStructure) -> Vec<(&AccessStructure, Vec<usize>)> {
    fn walk<'a>(
        node: &'a AccessStructure,
        out: &mut Vec<(&'a AccessStructure, Vec<usize>)>,
    ) -> usize {
        let index = out.len();
        out.push((node, Vec::new()));
        let children: Vec<usize> = node.children().iter().map(|c| walk(c, out)).collect();
        out[index].1 = children;
        index
    }
    let mut out = Vec::new();
    walk(tree, &mut out);
    out
}

/// The public part of one dealing: a point per node (pre-order) and the Feldman commitments of
/// every threshold node's polynomial (empty for the other nodes).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PublicDealing {
    pub(crate) node_points: Vec<AffinePoint>,
    pub(crate) commitments: Vec<Vec<AffinePoint>>,
}

/// A dealing: its public part and every party's sub-share (zeroized on drop).
pub(crate) struct Dealing {
    pub(crate) public: PublicDealing,
    /// Sub-share of party `i` at index `i`.
    pub(crate) sub_shares: Vec<Zeroizing<Scalar>>,
}

/// What is wrong with a dealing; the caller names the dealer.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum DealingFault {
    #[error("its dealing has {found} node points, the structure has {expected} nodes")]
    NodeCount { expected: usize, found: usize },
    #[error("its commitments for {node} have degree {found}, the node needs {expected}")]
    Degree {
        node: String,
        expected: usize,
        found: usize,
    },
    #[error("its dealing has the identity point at {0}")]
    Identity(String),
    #[error("its node points for {0} do not add up")]
    Inconsistent(String),
    #[error("the sub-share it sent does not match its commitments")]
    SubShare,
}

fn random_nonzero() -> Result<Zeroizing<Scalar>> {
    crate::types::random_nonzero_scalar().map(Zeroizing::new)
}

/// Shares `secret` down `structure` (see the [module documentation](self)). Every node value is
/// nonzero (a zero would show as the identity point; drawn again, probability 2⁻²⁵⁶).
pub(crate) fn deal(structure: &WalletStructure, secret: &Scalar) -> Result<Dealing> {
    let nodes = preorder(structure.tree());
    'again: loop {
        let mut values: Vec<Zeroizing<Scalar>> = vec![Zeroizing::new(Scalar::ZERO); nodes.len()];
        let mut commitments = vec![Vec::new(); nodes.len()];
        values[0] = Zeroizing::new(*secret);
        for (index, (node, children)) in nodes.iter().enumerate() {
            let value = values[index].clone();
            match node {
                AccessStructure::Leaf(_) => {}
                AccessStructure::Or(_) => {
                    for &c in children {
                        values[c] = value.clone();
                    }
                }
                AccessStructure::And(_) => {
                    let mut rest = value.clone();
                    for &c in &children[1..] {
                        let r = random_nonzero()?;
                        *rest -= &*r;
                        values[c] = r;
                    }
                    values[children[0]] = rest;
                }
                AccessStructure::Threshold { k, .. } => {
                    let coefficients: Vec<Zeroizing<Scalar>> =
                        (1..*k).map(|_| random_nonzero()).collect::<Result<_>>()?;
                    for (position, &c) in children.iter().enumerate() {
                        let x = Scalar::from(position as u64 + 1);
                        let mut acc = Zeroizing::new(Scalar::ZERO);
                        for a in coefficients.iter().rev() {
                            *acc = (*acc + **a) * x;
                        }
                        *acc += &*value;
                        values[c] = acc;
                    }
                    commitments[index] = coefficients
                        .iter()
                        .map(|a| ProjectivePoint::mul_by_generator(a).to_affine())
                        .collect();
                }
            }
        }
        if values.iter().any(|v| bool::from(v.is_zero())) {
            continue 'again;
        }
        let node_points = values
            .iter()
            .map(|v| ProjectivePoint::mul_by_generator(v).to_affine())
            .collect();
        let sub_shares = nodes
            .iter()
            .enumerate()
            .filter(|(_, (node, _))| matches!(node, AccessStructure::Leaf(_)))
            .map(|(i, _)| values[i].clone())
            .collect();
        return Ok(Dealing {
            public: PublicDealing {
                node_points,
                commitments,
            },
            sub_shares,
        });
    }
}

impl PublicDealing {
    /// The hash commitment to this dealing by `dealer` in run `session_id`, under the
    /// protocol's `domain` (a dealing is committed to before it is opened).
    pub(crate) fn commitment(
        &self,
        domain: &[u8],
        session_id: &SessionId,
        dealer: PartyIndex,
    ) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(domain);
        h.update(session_id.as_bytes());
        h.update([dealer.get()]);
        h.update(encode(self));
        h.finalize().into()
    }

    /// The echo of every dealing of run `session_id` as one party received them, under the
    /// protocol's `domain`: the parties compare echoes to hold one view of every dealing.
    pub(crate) fn echo(
        domain: &[u8],
        session_id: &SessionId,
        dealings: &BTreeMap<PartyIndex, PublicDealing>,
    ) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(domain);
        h.update(session_id.as_bytes());
        for (party, dealing) in dealings {
            let bytes = encode(dealing);
            h.update([party.get()]);
            h.update((bytes.len() as u64).to_be_bytes());
            h.update(bytes);
        }
        h.finalize().into()
    }

    /// Checks the dealing's shape and consistency against `structure` (see the
    /// [module documentation](self)).
    pub(crate) fn verify(&self, structure: &WalletStructure) -> Result<(), DealingFault> {
        let nodes = preorder(structure.tree());
        if self.node_points.len() != nodes.len() || self.commitments.len() != nodes.len() {
            return Err(DealingFault::NodeCount {
                expected: nodes.len(),
                found: self.node_points.len().min(self.commitments.len()),
            });
        }
        let is_identity = |p: &AffinePoint| bool::from(ProjectivePoint::from(*p).is_identity());
        use k256::elliptic_curve::Group;
        for (index, (node, children)) in nodes.iter().enumerate() {
            let expected_degree = match node {
                AccessStructure::Threshold { k, .. } => k - 1,
                _ => 0,
            };
            let commitments = &self.commitments[index];
            if commitments.len() != expected_degree {
                return Err(DealingFault::Degree {
                    node: node.to_string(),
                    expected: expected_degree,
                    found: commitments.len(),
                });
            }
            if is_identity(&self.node_points[index]) || commitments.iter().any(is_identity) {
                return Err(DealingFault::Identity(node.to_string()));
            }
            let point = ProjectivePoint::from(self.node_points[index]);
            let child = |c: usize| ProjectivePoint::from(self.node_points[c]);
            let consistent = match node {
                AccessStructure::Leaf(_) => true,
                AccessStructure::Or(_) => children.iter().all(|&c| child(c) == point),
                AccessStructure::And(_) => {
                    children
                        .iter()
                        .fold(ProjectivePoint::IDENTITY, |acc, &c| acc + child(c))
                        == point
                }
                AccessStructure::Threshold { .. } => {
                    children.iter().enumerate().all(|(position, &c)| {
                        let x = Scalar::from(position as u64 + 1);
                        let mut acc = ProjectivePoint::IDENTITY;
                        for a in commitments.iter().rev() {
                            acc = (acc + ProjectivePoint::from(*a)) * x;
                        }
                        acc + point == child(c)
                    })
                }
            };
            if !consistent {
                return Err(DealingFault::Inconsistent(node.to_string()));
            }
        }
        Ok(())
    }

    /// The dealt secret's point.
    pub(crate) fn root(&self) -> Option<&AffinePoint> {
        self.node_points.first()
    }

    /// The point of `party`'s sub-share.
    pub(crate) fn leaf_point(
        &self,
        structure: &WalletStructure,
        party: PartyIndex,
    ) -> Option<AffinePoint> {
        let label = structure.label(party)?;
        let index = preorder(structure.tree())
            .iter()
            .position(|(node, _)| matches!(node, AccessStructure::Leaf(l) if l == label))?;
        self.node_points.get(index).copied()
    }

    /// Checks `sub_share` (sent to `party`) against the dealing.
    pub(crate) fn check_sub_share(
        &self,
        structure: &WalletStructure,
        party: PartyIndex,
        sub_share: &Scalar,
    ) -> Result<(), DealingFault> {
        match self.leaf_point(structure, party) {
            Some(p) if ProjectivePoint::mul_by_generator(sub_share).to_affine() == p => Ok(()),
            _ => Err(DealingFault::SubShare),
        }
    }
}
