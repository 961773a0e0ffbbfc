//! The secret-sharing arithmetic of a backup: sharing a value down the tree (additive shares,
//! copies, Shamir polynomials with Feldman commitments) and the Lagrange coefficients that bring
//! a threshold node's value back up.

use k256::{ProjectivePoint, Scalar};
use zeroize::Zeroizing;

use super::tree::FlatNode;
use crate::error::BackupError;
use crate::pve;
use crate::structure::AccessStructure;

/// The node values of a sharing, in pre-order, zeroized on drop.
pub(super) struct Sharing {
    pub(super) values: Vec<Zeroizing<Scalar>>,
    pub(super) commitments: Vec<Vec<ProjectivePoint>>,
}

/// Shares `value` down the tree (see the [module documentation](super)).
pub(super) fn share_down(flat: &[FlatNode<'_>], value: &Scalar) -> Result<Sharing, BackupError> {
    let mut values: Vec<Zeroizing<Scalar>> = vec![Zeroizing::new(Scalar::ZERO); flat.len()];
    let mut commitments = vec![Vec::new(); flat.len()];
    values[0] = Zeroizing::new(*value);
    // Pre-order: a parent's value is set before its children are visited.
    for (index, node) in flat.iter().enumerate() {
        let s = values[index].clone();
        let children = &node.children;
        match node.node {
            AccessStructure::Leaf(_) => {}
            AccessStructure::Or(_) => {
                for &c in children {
                    values[c] = s.clone();
                }
            }
            AccessStructure::And(_) => {
                // s_1 … s_{m−1} random, s_m = s − Σ; every share nonzero so every point is a
                // real point (a zero last share has probability 2⁻²⁵⁶: draw again).
                let shares = loop {
                    let mut shares = Vec::with_capacity(children.len());
                    let mut sum = Zeroizing::new(Scalar::ZERO);
                    for _ in 1..children.len() {
                        let r = pve::random_nonzero_scalar()?;
                        *sum += &*r;
                        shares.push(r);
                    }
                    let last = Zeroizing::new(*s - *sum);
                    if !bool::from(last.is_zero()) {
                        shares.push(last);
                        break shares;
                    }
                };
                for (&c, share) in children.iter().zip(shares) {
                    values[c] = share;
                }
            }
            AccessStructure::Threshold { k, .. } => {
                // f(z) = s + f_1 z + … + f_{k−1} z^{k−1}; child j (1-based) gets f(j).
                let (coefficients, shares) = loop {
                    let coefficients = (1..*k)
                        .map(|_| pve::random_nonzero_scalar())
                        .collect::<Result<Vec<_>, _>>()?;
                    let shares: Vec<Zeroizing<Scalar>> = (1..=children.len())
                        .map(|j| evaluate(&s, &coefficients, j))
                        .collect();
                    if shares.iter().all(|v| !bool::from(v.is_zero())) {
                        break (coefficients, shares);
                    }
                };
                commitments[index] = coefficients
                    .iter()
                    .map(|c| ProjectivePoint::mul_by_generator(c))
                    .collect();
                for (&c, share) in children.iter().zip(shares) {
                    values[c] = share;
                }
            }
        }
    }
    Ok(Sharing {
        values,
        commitments,
    })
}

/// `f(x) = constant + Σ_l coefficients[l−1]·x^l`, by Horner's rule.
fn evaluate(constant: &Scalar, coefficients: &[Zeroizing<Scalar>], x: usize) -> Zeroizing<Scalar> {
    let x = Scalar::from(x as u64);
    let mut acc = Zeroizing::new(Scalar::ZERO);
    for c in coefficients.iter().rev() {
        *acc = (*acc + **c) * x;
    }
    *acc += constant;
    acc
}

/// The Lagrange coefficient at 0 of `x_j` over the set `xs` (distinct, nonzero).
pub(super) fn lagrange_at_zero(xs: &[u64], j: usize) -> Option<Scalar> {
    let xj = Scalar::from(xs[j]);
    let mut numerator = Scalar::ONE;
    let mut denominator = Scalar::ONE;
    for (m, &x) in xs.iter().enumerate() {
        if m != j {
            let xm = Scalar::from(x);
            numerator *= xm;
            denominator *= xm - xj;
        }
    }
    Option::<Scalar>::from(denominator.invert()).map(|inv| numerator * inv)
}
