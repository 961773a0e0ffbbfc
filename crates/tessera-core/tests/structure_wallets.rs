//! Wallets under access structures, all parties in one process through the one driver: key
//! generation with verifiable dealings, signing by every minimal quorum (verified with k256 and
//! libsecp256k1), refusal of every maximal unauthorised set before any message, mandatory
//! parties enforced by the mathematics, a bad dealer named, share files of format 2.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;

use common::{p, run_tampered, verify_everywhere};
use k256::Scalar;
use tessera_core::structure::{QuorumError, WalletStructure};
use tessera_core::testing::{reconstruct, reconstruct_scalars, secret_scalar};
use tessera_core::{
    DerivationPath, Error, KeyShare, PartyIndex, SignRequest, SignSession, StructureKeygenSession,
    WalletId, runner,
};

fn keygen(text: &str) -> (WalletStructure, Vec<KeyShare>) {
    let structure = WalletStructure::parse(text).unwrap();
    let shares = runner::keygen_structure(&structure).unwrap();
    (structure, shares)
}

fn quorum_shares<'a>(shares: &'a [KeyShare], quorum: &[PartyIndex]) -> Vec<&'a KeyShare> {
    quorum
        .iter()
        .map(|q| &shares[usize::from(q.get())])
        .collect()
}

fn check_every_minimal_quorum_signs(text: &str) {
    let (structure, shares) = keygen(text);
    let pk = shares[0].public_key();
    for share in &shares {
        assert_eq!(share.public_key(), pk);
        assert_eq!(share.structure(), structure);
        assert!(share.is_structure_wallet());
        // Every party's verifying share is known to every party.
        for other in &shares {
            assert_eq!(
                share.public_share_of(other.party()).unwrap(),
                other.public_share()
            );
        }
    }
    for (i, quorum) in structure.minimal_quorums().into_iter().enumerate() {
        let members: Vec<PartyIndex> = quorum.into_iter().collect();
        let signers = quorum_shares(&shares, &members);
        let digest = [i as u8 + 1; 32];
        let (sig, _) = runner::sign(&signers, digest, &DerivationPath::root()).unwrap();
        verify_everywhere(&pk, &digest, &sig);
        // The test-only helper agrees: the quorum's shares give the wallet key.
        reconstruct(&signers).unwrap();
    }
    for set in structure.maximal_unauthorised_sets() {
        let members: Vec<PartyIndex> = set.into_iter().collect();
        assert_refused_before_any_message(&structure, &shares, &members);
    }
}

/// Every member of the unauthorised set `members` is refused when it creates its signing session
/// (so nothing is ever sent), with what the set lacks.
fn assert_refused_before_any_message(
    structure: &WalletStructure,
    shares: &[KeyShare],
    members: &[PartyIndex],
) {
    assert!(!structure.is_authorised(members));
    let missing = structure.missing(members);
    assert!(!missing.is_nothing());
    let request = SignRequest {
        nonce: [3; 32],
        signers: members.to_vec(),
        digest: [4; 32],
        path: DerivationPath::root(),
    };
    for &member in members {
        match SignSession::new(&shares[usize::from(member.get())], &request) {
            Err(Error::Quorum(QuorumError::NotAuthorised(m))) => {
                assert_eq!(
                    m.to_string(),
                    missing.to_string(),
                    "{structure}: {members:?}"
                );
            }
            other => panic!("{structure}: {members:?} was not refused: {other:?}"),
        }
    }
}

#[test]
fn every_minimal_quorum_of_server_plus_one_device_signs() {
    check_every_minimal_quorum_signs("and(server, or(phone, laptop, tablet))");
}

#[test]
fn every_minimal_quorum_of_server_plus_two_officers_signs() {
    check_every_minimal_quorum_signs("and(server, threshold(2, cfo, ceo, cto))");
}

#[test]
fn every_minimal_quorum_of_a_two_of_three_structure_signs() {
    check_every_minimal_quorum_signs("threshold(2, phone, server, vault)");
}

#[test]
fn a_quorum_signs_under_a_derived_key() {
    let (_, shares) = keygen("and(server, or(phone, laptop))");
    let path: DerivationPath = "m/0/7".parse().unwrap();
    let child = shares[0].public_key_at(&path).unwrap();
    let (sig, _) = runner::sign(&[&shares[0], &shares[2]], [9; 32], &path).unwrap();
    verify_everywhere(&child, &[9; 32], &sig);
}

#[test]
fn every_maximal_unauthorised_set_is_refused_before_any_message() {
    let (structure, shares) = keygen("and(server, or(phone, laptop, tablet))");
    let expected = [
        (vec!["server"], "needs one of `phone`, `laptop`, `tablet`"),
        (vec!["phone", "laptop", "tablet"], "needs `server`"),
    ];
    let maximal = structure.maximal_unauthorised_sets();
    assert_eq!(maximal.len(), expected.len());
    for (set, (labels, missing)) in maximal.iter().zip(expected) {
        let members: Vec<PartyIndex> = set.iter().copied().collect();
        let names: Vec<&str> = members
            .iter()
            .map(|&m| structure.label(m).unwrap())
            .collect();
        assert_eq!(names, labels);
        let request = SignRequest {
            nonce: [3; 32],
            signers: members.clone(),
            digest: [4; 32],
            path: DerivationPath::root(),
        };
        for &member in &members {
            // The session cannot even be created: nothing is ever sent.
            let err = SignSession::new(&shares[usize::from(member.get())], &request)
                .err()
                .unwrap();
            assert!(matches!(err, Error::Quorum(QuorumError::NotAuthorised(_))));
            assert_eq!(
                err.to_string(),
                format!("the signers are not authorised: {missing}")
            );
        }
    }
    // An authorised set with a party it does not need is refused too, naming that party.
    let err = runner::sign(
        &[&shares[0], &shares[1], &shares[2]],
        [5; 32],
        &DerivationPath::root(),
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "the signers include `laptop` that the structure does not need; sign with a minimal quorum"
    );
}

#[test]
fn a_mandatory_partys_share_is_needed_the_others_fit_every_candidate_key() {
    let (structure, shares) = keygen("and(server, or(phone, laptop))");
    let server = structure.party("server").unwrap();
    let others: BTreeMap<PartyIndex, Scalar> = shares
        .iter()
        .filter(|s| s.party() != server)
        .map(|s| (s.party(), *secret_scalar(s)))
        .collect();
    // Without the server the parties are not authorised at all.
    assert!(reconstruct_scalars(&structure, &others).is_none());
    let real_key = reconstruct(&[&shares[0], &shares[1]]).unwrap();
    // For any candidate key there is a server share with which every share held by the other
    // parties is consistent: their shares say nothing about the key.
    for candidate in [
        Scalar::ONE,
        Scalar::from(7u64),
        *real_key + Scalar::ONE,
        *real_key,
    ] {
        let coefficients = structure
            .tree()
            .reconstruction_coefficients(&["server", "phone"])
            .unwrap();
        let phone = structure.party("phone").unwrap();
        let server_share = (candidate - coefficients["phone"] * others[&phone])
            * coefficients["server"].invert().unwrap();
        let mut completed = others.clone();
        completed.insert(server, server_share);
        for quorum in structure.minimal_quorums() {
            let subset: BTreeMap<PartyIndex, Scalar> =
                quorum.iter().map(|q| (*q, completed[q])).collect();
            assert_eq!(
                *reconstruct_scalars(&structure, &subset).unwrap(),
                candidate
            );
        }
    }
}

#[test]
fn a_dealer_sending_a_wrong_sub_share_is_named() {
    let structure = WalletStructure::parse("and(server, or(phone, laptop))").unwrap();
    let wallet = WalletId::random();
    let nonce = [8; 32];
    let sessions: Vec<StructureKeygenSession> = structure
        .parties()
        .map(|me| StructureKeygenSession::new(wallet, &structure, me, &nonce).unwrap())
        .collect();
    // Party 1's round-1 message to party 2 ends with the sub-share's last byte.
    let err = run_tampered(sessions, 1, 2, 1, |envelope| {
        let last = envelope.payload.len() - 1;
        envelope.payload[last] ^= 1;
    });
    assert!(
        matches!(err, Error::PartyMisbehaved { party, ref reason } if party == p(1)
            && reason == "the sub-share it sent does not match its commitments"),
        "{err}"
    );
}

#[test]
fn structure_shares_use_format_2_and_round_trip() {
    let (structure, shares) = keygen("and(server, or(phone, laptop))");
    for share in &shares {
        let bytes = share.to_bytes();
        assert_eq!(&bytes[..6], b"TSKS\x00\x02");
        let back = KeyShare::from_bytes(&bytes).unwrap();
        assert_eq!(*back.to_bytes(), *bytes);
        assert_eq!(back.structure(), structure);
        let debug = format!("{back:?}");
        assert!(debug.contains("and(server, or(phone, laptop))") && debug.contains("<redacted>"));
    }
    let loaded: Vec<KeyShare> = shares
        .iter()
        .map(|s| KeyShare::from_bytes(&s.to_bytes()).unwrap())
        .collect();
    let (sig, _) =
        runner::sign(&[&loaded[0], &loaded[1]], [6; 32], &DerivationPath::root()).unwrap();
    verify_everywhere(&shares[0].public_key(), &[6; 32], &sig);

    // A tampered structure text or verifying share is refused.
    let bytes = shares[0].to_bytes();
    let text = b"and(server, or(phone, laptop))";
    let at = bytes.windows(text.len()).position(|w| w == text).unwrap();
    let mut other = bytes.to_vec();
    other[at + 12] = b'x'; // "or(phone" -> "or(phxne"
    assert!(matches!(
        KeyShare::from_bytes(&other),
        Err(Error::InvalidKeyShare(_))
    ));
    let mut swapped = bytes.to_vec();
    let last = swapped.len() - 1;
    swapped[last] ^= 1;
    assert!(matches!(
        KeyShare::from_bytes(&swapped),
        Err(Error::InvalidKeyShare(_))
    ));
}

#[test]
fn t_of_n_wallets_are_exactly_threshold_structures() {
    let shares = common::keygen(2, 3);
    let structure = shares[0].structure();
    assert_eq!(
        structure,
        WalletStructure::parse("threshold(2, p0, p1, p2)").unwrap()
    );
    assert!(!shares[0].is_structure_wallet());
    // Their files stay format 1, and the helper reads them as that structure.
    assert_eq!(&shares[0].to_bytes()[..6], b"TSKS\x00\x01");
    reconstruct(&[&shares[0], &shares[2]]).unwrap();
}

proptest::proptest! {
    // Each case runs a keygen (the slow part): few cases, each a new structure.
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(8))]

    /// Random structures of up to five parties: keygen once, a random minimal authorised quorum
    /// signs a random digest (verified with k256 and libsecp256k1), and a random unauthorised
    /// set (a random part of a maximal unauthorised set) is refused before any message.
    #[test]
    fn random_structures_sign_with_random_quorums_and_refuse_unauthorised_sets(
        structure in common::structures::wallet_structure(5),
        quorum_pick in proptest::prelude::any::<proptest::sample::Index>(),
        set_pick in proptest::prelude::any::<proptest::sample::Index>(),
        mask in proptest::prelude::any::<u16>(),
        digest in proptest::prelude::any::<[u8; 32]>(),
    ) {
        let shares = runner::keygen_structure(&structure).unwrap();
        let pk = shares[0].public_key();
        let quorums = structure.minimal_quorums();
        let quorum: Vec<PartyIndex> = quorum_pick.get(&quorums).iter().copied().collect();
        let signers = quorum_shares(&shares, &quorum);
        let (sig, _) = runner::sign(&signers, digest, &DerivationPath::root()).unwrap();
        verify_everywhere(&pk, &digest, &sig);

        let maximal = structure.maximal_unauthorised_sets();
        let set: Vec<PartyIndex> = set_pick.get(&maximal).iter().copied().collect();
        let part: Vec<PartyIndex> = set
            .iter()
            .copied()
            .filter(|p| mask & (1 << p.get()) != 0)
            .collect();
        let unauthorised = if part.is_empty() { set } else { part };
        assert_refused_before_any_message(&structure, &shares, &unauthorised);
    }
}
