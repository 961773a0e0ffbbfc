//! Random access structures for proptests.

use proptest::prelude::*;
use tessera_core::structure::{AccessStructure, WalletStructure};

/// A random tree shape of at most `depth` levels below the root, aiming at `size` leaves, with
/// 2 to `branch` children per node; leaves are unlabelled (see [`label_leaves`]).
pub fn shape(depth: u32, size: u32, branch: usize) -> impl Strategy<Value = AccessStructure> {
    let leaf = Just(AccessStructure::Leaf(String::new()));
    leaf.prop_recursive(depth, size, branch as u32, move |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 2..branch).prop_map(AccessStructure::And),
            proptest::collection::vec(inner.clone(), 2..branch).prop_map(AccessStructure::Or),
            (
                proptest::collection::vec(inner, 2..=branch),
                any::<proptest::sample::Index>()
            )
                .prop_map(|(of, k)| AccessStructure::Threshold {
                    k: k.index(of.len()) + 1,
                    of
                }),
        ]
    })
}

/// Labels the leaves `p0`, `p1`, … in written order.
pub fn label_leaves(node: &mut AccessStructure, next: &mut usize) {
    match node {
        AccessStructure::Leaf(label) => {
            *label = format!("p{next}");
            *next += 1;
        }
        AccessStructure::And(c) | AccessStructure::Or(c) => {
            c.iter_mut().for_each(|c| label_leaves(c, next))
        }
        AccessStructure::Threshold { of, .. } => of.iter_mut().for_each(|c| label_leaves(c, next)),
    }
}

/// Valid wallet structures (no party alone authorised) of 2 to `max_parties` parties.
pub fn wallet_structure(max_parties: usize) -> impl Strategy<Value = WalletStructure> {
    shape(2, max_parties as u32, 4).prop_filter_map("not a wallet structure", move |mut tree| {
        let mut count = 0;
        label_leaves(&mut tree, &mut count);
        if count > max_parties {
            return None;
        }
        WalletStructure::new(tree, false).ok()
    })
}
