//! Wallet structures: validation, quorums, what an unauthorised set lacks, and reconstruction
//! coefficients checked against an independent sharing of a secret down the tree.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};

use k256::Scalar;
use k256::elliptic_curve::Field;

fn random_scalar() -> Scalar {
    Scalar::try_random(&mut rand::rngs::SysRng).unwrap()
}
use common::structures::{label_leaves, shape};
use tessera_core::PartyIndex;
use tessera_core::structure::{
    AccessStructure, QuorumError, WalletStructure, WalletStructureError,
};

const STRUCTURES: [&str; 6] = [
    "and(server, or(phone, laptop, tablet))",
    "and(server, threshold(2, cfo, ceo, cto))",
    "threshold(2, phone, server, vault)",
    "or(and(a, b), threshold(3, c, d, e, f))",
    "threshold(2, and(a, b), or(c, d), threshold(2, e, f, g))",
    "and(a, b)",
];

fn w(text: &str) -> WalletStructure {
    WalletStructure::parse(text).unwrap()
}

fn err(text: &str) -> WalletStructureError {
    WalletStructure::parse(text).unwrap_err()
}

fn parties(structure: &WalletStructure, labels: &[&str]) -> Vec<PartyIndex> {
    labels.iter().map(|l| structure.party(l).unwrap()).collect()
}

/// An independent sharing of `secret` down the tree: `and` random summands, `or` copies,
/// `threshold(k)` a random degree-(k−1) polynomial evaluated at the child's 1-based position.
fn share_down(node: &AccessStructure, secret: Scalar, out: &mut BTreeMap<String, Scalar>) {
    match node {
        AccessStructure::Leaf(label) => {
            out.insert(label.clone(), secret);
        }
        AccessStructure::Or(children) => children.iter().for_each(|c| share_down(c, secret, out)),
        AccessStructure::And(children) => {
            let mut rest = secret;
            for c in &children[1..] {
                let r = random_scalar();
                rest -= r;
                share_down(c, r, out);
            }
            share_down(&children[0], rest, out);
        }
        AccessStructure::Threshold { k, of } => {
            let coefficients: Vec<Scalar> = (1..*k).map(|_| random_scalar()).collect();
            for (j, c) in of.iter().enumerate() {
                let x = Scalar::from(j as u64 + 1);
                let value = coefficients
                    .iter()
                    .rev()
                    .fold(Scalar::ZERO, |acc, a| (acc + a) * x)
                    + secret;
                share_down(c, value, out);
            }
        }
    }
}

#[test]
fn wallet_rules_are_enforced_with_clear_errors() {
    assert_eq!(
        err("and(server, phone, server)").to_string(),
        "party \"server\" appears twice; each party holds one share and appears once"
    );
    let seventeen: Vec<String> = (0..17).map(|i| format!("p{i}")).collect();
    assert_eq!(
        err(&format!("threshold(2, {})", seventeen.join(", "))).to_string(),
        "the structure has 17 parties; a wallet has at most 16"
    );
    assert!(
        WalletStructure::parse(&format!("threshold(2, {})", seventeen[..16].join(", "))).is_ok()
    );
    assert_eq!(
        err("or(server, and(phone, laptop))"),
        WalletStructureError::SingleParty("server".into())
    );
    assert_eq!(
        err("threshold(1, a, b, c)").to_string(),
        "party \"a\" alone is authorised to sign; a wallet must need at least two parties (use \
         and(...) or a threshold of at least 2)"
    );
    assert_eq!(
        err("solo"),
        WalletStructureError::SingleParty("solo".into())
    );
    assert!(WalletStructure::parse_allowing_single_party("or(a, and(b, c))").is_ok());
    assert_eq!(
        err("threshold(4, a, b, c)").to_string(),
        "threshold(4, a, b, c): k must be between 1 and 3"
    );
    assert_eq!(
        err("threshold(0, a, b, c)").to_string(),
        "threshold(0, a, b, c): k must be between 1 and 3"
    );
    assert!(matches!(
        err("and(Server, phone)"),
        WalletStructureError::InvalidPartyLabel { .. }
    ));
    assert!(matches!(err("and(a, b"), WalletStructureError::Grammar(_)));
    for text in STRUCTURES {
        let s = w(text);
        assert_eq!(s.to_string().parse::<WalletStructure>().unwrap(), s);
        // Every party is in some minimal quorum (reachable), none is alone.
        let reached: BTreeSet<PartyIndex> = s.minimal_quorums().into_iter().flatten().collect();
        assert_eq!(reached, s.parties().collect());
    }
}

#[test]
fn t_of_n_is_exactly_a_threshold_structure() {
    let s = WalletStructure::threshold(2, &["p0", "p1", "p2"]).unwrap();
    assert_eq!(s, w("threshold(2, p0, p1, p2)"));
    assert_eq!(s.party("p1"), Some(PartyIndex::new(1)));
    assert_eq!(s.label(PartyIndex::new(2)), Some("p2"));
    assert_eq!(s.label(PartyIndex::new(3)), None);
    assert_eq!(s.minimal_quorums().len(), 3);
    assert!(matches!(
        WalletStructure::threshold(1, &["p0", "p1"]),
        Err(WalletStructureError::SingleParty(_))
    ));
    assert!(WalletStructure::threshold(3, &["p0", "p1"]).is_err());
}

#[test]
fn missing_says_what_an_unauthorised_set_lacks() {
    let s = w("and(server, or(phone, laptop, tablet))");
    let missing = |labels: &[&str]| s.missing(&parties(&s, labels)).to_string();
    assert_eq!(
        missing(&[]),
        "needs `server` and one of `phone`, `laptop`, `tablet`"
    );
    assert_eq!(missing(&["phone", "laptop"]), "needs `server`");
    assert_eq!(
        missing(&["server"]),
        "needs one of `phone`, `laptop`, `tablet`"
    );
    assert!(s.missing(&parties(&s, &["server", "tablet"])).is_nothing());

    let c = w("and(server, threshold(2, cfo, ceo, cto))");
    let missing = |labels: &[&str]| c.missing(&parties(&c, labels)).to_string();
    assert_eq!(missing(&[]), "needs `server` and 2 of `cfo`, `ceo`, `cto`");
    assert_eq!(missing(&["server", "ceo"]), "needs one of `cfo`, `cto`");
    assert_eq!(missing(&["cfo", "ceo", "cto"]), "needs `server`");

    let n = w("threshold(2, and(a, b), or(c, d), threshold(2, e, f, g))");
    let missing = |labels: &[&str]| n.missing(&parties(&n, labels)).to_string();
    assert_eq!(
        missing(&["a", "e"]),
        "needs 2 of `b`, (one of `c`, `d`), (one of `f`, `g`)"
    );
    assert_eq!(
        missing(&["c"]),
        "needs one of (`a` and `b`), (2 of `e`, `f`, `g`)"
    );

    let err = c.check_quorum(&parties(&c, &["cfo", "cto"])).unwrap_err();
    assert_eq!(
        err.to_string(),
        "the signers are not authorised: needs `server`"
    );
}

#[test]
fn quorums_are_checked_and_unneeded_signers_named() {
    let s = w("and(server, or(phone, laptop, tablet))");
    let q = s.check_quorum(&parties(&s, &["server", "laptop"])).unwrap();
    assert_eq!(
        q.members().collect::<Vec<_>>(),
        parties(&s, &["server", "laptop"])
    );
    assert_eq!(
        s.check_quorum(&parties(&s, &["server", "laptop", "phone"]))
            .unwrap_err(),
        QuorumError::NotNeeded(vec!["laptop".into()]),
        "or takes its first satisfied child, phone; laptop is not needed"
    );
    assert_eq!(
        s.check_quorum(&[PartyIndex::new(0), PartyIndex::new(9)])
            .unwrap_err(),
        QuorumError::UnknownParty(PartyIndex::new(9))
    );
    assert_eq!(
        s.check_quorum(&[PartyIndex::new(0), PartyIndex::new(0)])
            .unwrap_err(),
        QuorumError::DuplicateSigner(PartyIndex::new(0))
    );
    let maximal: Vec<Vec<&str>> = s
        .maximal_unauthorised_sets()
        .iter()
        .map(|set| set.iter().map(|&p| s.label(p).unwrap()).collect())
        .collect();
    assert_eq!(
        maximal,
        vec![vec!["server"], vec!["phone", "laptop", "tablet"]]
    );
}

#[test]
fn every_minimal_quorum_reconstructs_the_secret_and_no_unauthorised_set_has_coefficients() {
    for text in STRUCTURES {
        let s = w(text);
        let secret = random_scalar();
        let mut shares = BTreeMap::new();
        share_down(s.tree(), secret, &mut shares);
        for quorum in s.minimal_quorums() {
            let members: Vec<PartyIndex> = quorum.iter().copied().collect();
            let q = s.check_quorum(&members).unwrap();
            assert_eq!(q.members().collect::<BTreeSet<_>>(), quorum, "{text}");
            let sum = q.coefficients().iter().fold(Scalar::ZERO, |acc, (p, c)| {
                acc + *c * shares[s.label(*p).unwrap()]
            });
            assert_eq!(sum, secret, "{text}: quorum {quorum:?}");
            for c in q.coefficients().values() {
                assert_ne!(*c, Scalar::ZERO);
            }
        }
        for set in s.maximal_unauthorised_sets() {
            let labels: Vec<&str> = set.iter().map(|&p| s.label(p).unwrap()).collect();
            assert_eq!(
                s.tree().reconstruction_coefficients(&labels),
                None,
                "{text}"
            );
            assert!(matches!(
                s.check_quorum(&set.iter().copied().collect::<Vec<_>>()),
                Err(QuorumError::NotAuthorised(_))
            ));
        }
        // An authorised superset reconstructs through the minimal subset it selects.
        let all: Vec<&str> = s.labels().iter().map(String::as_str).collect();
        let c = s.tree().reconstruction_coefficients(&all).unwrap();
        let sum = c
            .iter()
            .fold(Scalar::ZERO, |acc, (l, c)| acc + *c * shares[l.as_str()]);
        assert_eq!(sum, secret, "{text}: all parties");
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

    /// For random structures and random sets of parties: a set is accepted as a quorum exactly
    /// when it is a minimal authorised set, its coefficients reconstruct a secret shared down the
    /// tree, and an unauthorised set has a non-empty explanation of what it lacks.
    #[test]
    fn random_structures_reconstruct_for_exactly_their_quorums(
        mut tree in shape(3, 10, 4),
        mask in proptest::prelude::any::<u16>(),
    ) {
        let mut count = 0;
        label_leaves(&mut tree, &mut count);
        let Ok(s) = WalletStructure::new(tree, true) else {
            return Ok(());
        };
        let secret = random_scalar();
        let mut shares = BTreeMap::new();
        share_down(s.tree(), secret, &mut shares);
        let set: Vec<PartyIndex> = s
            .parties()
            .filter(|p| mask & (1 << p.get()) != 0)
            .collect();
        let minimal = s.minimal_quorums().contains(&set.iter().copied().collect());
        match s.check_quorum(&set) {
            Ok(q) => {
                proptest::prop_assert!(minimal);
                let sum = q.coefficients().iter().fold(Scalar::ZERO, |acc, (p, c)| {
                    acc + *c * shares[s.label(*p).unwrap()]
                });
                proptest::prop_assert_eq!(sum, secret);
            }
            Err(QuorumError::NotAuthorised(missing)) => {
                proptest::prop_assert!(!s.is_authorised(&set));
                proptest::prop_assert!(!missing.is_nothing());
            }
            Err(QuorumError::NotNeeded(_)) => {
                proptest::prop_assert!(s.is_authorised(&set) && !minimal);
            }
            Err(other) => proptest::prop_assert!(false, "{other}"),
        }
        proptest::prop_assert_eq!(s.missing(&set).is_nothing(), s.is_authorised(&set));
    }
}
