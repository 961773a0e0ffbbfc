//! Public shares and proofs of possession of a share (used by backups and recovery).

use tessera_core::runner;
use tessera_core::types::{PartyIndex, Threshold};

#[test]
fn the_other_public_share_of_a_two_party_wallet_is_derived_exactly() {
    let shares = runner::keygen(Threshold::new(2, 2).unwrap()).unwrap();
    let (a, b) = (&shares[0], &shares[1]);
    assert_eq!(a.public_share_of(b.party()).unwrap(), b.public_share());
    assert_eq!(b.public_share_of(a.party()).unwrap(), a.public_share());
    assert_eq!(a.public_share_of(a.party()).unwrap(), a.public_share());
    assert_ne!(a.public_share(), b.public_share());
    // The secret bytes are the discrete logarithm of the public share.
    assert_ne!(*a.secret_share_bytes(), *b.secret_share_bytes());

    // After a refresh the public shares change, the wallet key does not.
    let refreshed = runner::refresh(&shares).unwrap();
    assert_eq!(refreshed[0].public_key(), a.public_key());
    assert_ne!(refreshed[0].public_share(), a.public_share());
    assert_eq!(
        refreshed[0].public_share_of(b.party()).unwrap(),
        refreshed[1].public_share()
    );
}

#[test]
fn other_public_shares_are_refused_beyond_two_parties() {
    let shares = runner::keygen(Threshold::new(2, 3).unwrap()).unwrap();
    let err = shares[0].public_share_of(PartyIndex::new(1)).unwrap_err();
    assert!(err.to_string().contains("2-party wallet"), "{err}");
    assert!(shares[0].public_share_of(PartyIndex::new(7)).is_err());
}

#[test]
fn a_possession_proof_verifies_only_for_its_share_and_context() {
    let shares = runner::keygen(Threshold::new(2, 2).unwrap()).unwrap();
    let proof = shares[0].prove_possession(b"context-1").unwrap();
    let mine = shares[0].public_share();
    tessera_core::share::KeyShare::verify_possession(&mine, b"context-1", &proof).unwrap();
    // Another context, another share's public key, or a damaged proof: refused.
    assert!(tessera_core::share::KeyShare::verify_possession(&mine, b"context-2", &proof).is_err());
    let other = shares[1].public_share();
    assert!(
        tessera_core::share::KeyShare::verify_possession(&other, b"context-1", &proof).is_err()
    );
    for i in [0, proof.len() / 2, proof.len() - 1] {
        let mut bad = proof.clone();
        bad[i] ^= 1;
        assert!(
            tessera_core::share::KeyShare::verify_possession(&mine, b"context-1", &bad).is_err(),
            "byte {i}"
        );
    }
    assert!(tessera_core::share::KeyShare::verify_possession(&mine, b"context-1", &[]).is_err());
}
