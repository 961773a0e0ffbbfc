//! Key generation, signing by every t-subset, refresh and BIP-32 derivation, end to end, with
//! every signature checked by k256 and by libsecp256k1.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

mod common;

use common::{keygen, p, verify_everywhere};
use tessera_core::ecdsa::eip191_digest;
use tessera_core::runner;
use tessera_core::{DerivationPath, Error, KeyShare, PublicKey};

/// All `k`-element subsets of `items`.
fn subsets<T: Copy>(items: &[T], k: usize) -> Vec<Vec<T>> {
    if k == 0 {
        return vec![vec![]];
    }
    if items.len() < k {
        return vec![];
    }
    let mut with: Vec<Vec<T>> = subsets(&items[1..], k - 1)
        .into_iter()
        .map(|mut s| {
            s.insert(0, items[0]);
            s
        })
        .collect();
    with.extend(subsets(&items[1..], k));
    with
}

fn check_keygen(shares: &[KeyShare], t: u8, n: u8) -> PublicKey {
    assert_eq!(shares.len(), usize::from(n));
    let pk = shares[0].public_key();
    for (i, s) in shares.iter().enumerate() {
        assert_eq!(s.party(), p(i as u8));
        assert_eq!(s.public_key(), pk, "party {i} has another public key");
        assert_eq!(s.wallet_id(), shares[0].wallet_id());
        assert_eq!(s.chain_code(), shares[0].chain_code());
        assert_eq!((s.threshold().t, s.threshold().n), (t, n));
        assert_eq!(s.epoch(), 0);
    }
    pk
}

#[test]
fn every_threshold_signs_with_every_subset() {
    for (t, n) in [(2u8, 2u8), (2, 3), (2, 4), (3, 5)] {
        let shares = keygen(t, n);
        let pk = check_keygen(&shares, t, n);
        let all: Vec<&KeyShare> = shares.iter().collect();
        let sets = subsets(&all, usize::from(t));
        assert!(!sets.is_empty());
        for (k, set) in sets.iter().enumerate() {
            let digest = eip191_digest(format!("{t}-of-{n} subset {k}").as_bytes());
            let (sig, stats) = runner::sign(set, digest, &DerivationPath::root()).unwrap();
            verify_everywhere(&pk, &digest, &sig);
            assert_eq!(stats.bytes_sent.len(), usize::from(t));
        }
    }
}

#[test]
fn more_or_fewer_signers_than_t_are_refused() {
    let shares = keygen(2, 3);
    let digest = [1u8; 32];
    let err = runner::sign(&[&shares[0]], digest, &DerivationPath::root()).unwrap_err();
    assert_eq!(
        err,
        Error::InvalidParameters("a 2-of-3 wallet signs with exactly 2 parties, 1 given".into())
    );
    let all: Vec<_> = shares.iter().collect();
    assert!(matches!(
        runner::sign(&all, digest, &DerivationPath::root()),
        Err(Error::InvalidParameters(m)) if m.contains("exactly 2 parties, 3 given")
    ));
}

#[test]
fn refresh_keeps_the_key_and_old_shares_cannot_mix_with_new() {
    let shares = keygen(2, 3);
    let pk = shares[0].public_key();
    let fresh = runner::refresh(&shares).unwrap();
    for (old, new) in shares.iter().zip(&fresh) {
        assert_eq!(new.public_key(), pk);
        assert_eq!(new.epoch(), 1);
        assert_eq!(new.party(), old.party());
        assert_eq!(new.chain_code(), old.chain_code());
        assert_ne!(*new.to_bytes(), *old.to_bytes(), "the share did not change");
    }
    for set in [[0usize, 1], [1, 2], [0, 2]] {
        let digest = [set[0] as u8 + 10 * set[1] as u8; 32];
        let (sig, _) = runner::sign(
            &[&fresh[set[0]], &fresh[set[1]]],
            digest,
            &DerivationPath::root(),
        )
        .unwrap();
        verify_everywhere(&pk, &digest, &sig);
    }
    // The old shares still work among themselves (nothing was deleted behind the caller's back)...
    let (sig, _) =
        runner::sign(&[&shares[0], &shares[1]], [3; 32], &DerivationPath::root()).unwrap();
    verify_everywhere(&pk, &[3; 32], &sig);
    // ...but an old share and a new one are refused before any cryptography: a session's id binds
    // the share's epoch, so their messages belong to two different sessions.
    // (The runner delivers party 0's first message first, so party 1 is the one to notice.)
    let err = runner::sign(&[&shares[0], &fresh[1]], [4; 32], &DerivationPath::root()).unwrap_err();
    assert_eq!(err, Error::WrongSession { party: p(0) });
    let err = runner::sign(&[&fresh[0], &shares[1]], [4; 32], &DerivationPath::root()).unwrap_err();
    assert_eq!(err, Error::WrongSession { party: p(0) });
    // A second refresh moves on to epoch 2, and a refresh cannot mix epochs either.
    let again = runner::refresh(&fresh).unwrap();
    assert!(again.iter().all(|s| s.epoch() == 2 && s.public_key() == pk));
    let copy = |s: &KeyShare| KeyShare::from_bytes(&s.to_bytes()).unwrap();
    let mixed = [copy(&shares[0]), copy(&fresh[1]), copy(&fresh[2])];
    assert!(matches!(
        runner::refresh(&mixed),
        Err(Error::WrongSession { .. })
    ));
}

/// The reference: the `bip32` crate deriving from the root public key and chain code.
fn bip32_child(root: &PublicKey, chain_code: [u8; 32], path: &[u32]) -> [u8; 33] {
    use bip32::{ChildNumber, ExtendedKeyAttrs, PublicKey as _, XPub};
    let vk = bip32::secp256k1::ecdsa::VerifyingKey::from_sec1_bytes(&root.to_compressed()).unwrap();
    let attrs = ExtendedKeyAttrs {
        depth: 0,
        parent_fingerprint: [0; 4],
        child_number: ChildNumber(0),
        chain_code,
    };
    let mut xpub = XPub::new(vk, attrs);
    for &i in path {
        xpub = xpub
            .derive_child(ChildNumber::new(i, false).unwrap())
            .unwrap();
    }
    xpub.public_key().to_bytes()
}

#[test]
fn derived_keys_match_bip32_and_sign() {
    let shares = keygen(2, 3);
    let root = shares[0].public_key();
    for path in ["m/0/7", "m/44/60/0/0/1", "m/2147483647"] {
        let path: DerivationPath = path.parse().unwrap();
        let child = shares[1].public_key_at(&path).unwrap();
        assert_eq!(child, shares[2].public_key_at(&path).unwrap());
        assert_eq!(
            child.to_compressed(),
            bip32_child(&root, shares[0].chain_code(), path.indices()),
            "{path}"
        );
        assert_ne!(child, root);
        let digest = eip191_digest(path.to_string().as_bytes());
        let (sig, _) = runner::sign(&[&shares[2], &shares[0]], digest, &path).unwrap();
        verify_everywhere(&child, &digest, &sig);
        assert_eq!(root.verify(&digest, &sig), Err(Error::VerificationFailed));
    }
    let hardened = "m/0'/1".parse::<DerivationPath>().unwrap_err();
    assert!(
        hardened
            .to_string()
            .contains("hardened derivation is impossible"),
        "{hardened}"
    );
}
