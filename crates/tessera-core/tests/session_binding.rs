//! What a run's session id binds beyond the party set: the share's epoch, the wallet's public key
//! and every party's nonce contribution. Parties that disagree on any of them refuse each other's
//! first message as one of another session, before any payload is parsed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{keygen, p};
use tessera_core::protocols::{fresh_nonce, joint_nonce};
use tessera_core::runner;
use tessera_core::{
    DerivationPath, Envelope, Error, KeyShare, KeygenSession, RefreshSession, Session, SignRequest,
    SignSession, Threshold, WalletId,
};

/// A copy of `share` (shares are not `Clone`).
fn copy(share: &KeyShare) -> KeyShare {
    KeyShare::from_bytes(&share.to_bytes()).unwrap()
}

/// Party 0's first envelope to party 1, fed to party 1.
fn deliver_first<S: Session>(mut from: S, mut to: S) -> tessera_core::Result<Vec<Envelope>> {
    to.start().unwrap();
    let first = from
        .start()
        .unwrap()
        .into_iter()
        .find(|e| e.to == p(1))
        .unwrap();
    to.receive(p(0), first)
}

fn sign_session(share: &KeyShare, nonce: [u8; 32]) -> SignSession {
    let request = SignRequest {
        nonce,
        signers: vec![p(0), p(1)],
        digest: [0x42; 32],
        path: DerivationPath::root(),
    };
    SignSession::new(share, &request).unwrap()
}

fn assert_other_session(result: tessera_core::Result<Vec<Envelope>>, what: &str) {
    match result {
        Err(Error::WrongSession { party }) => assert_eq!(party, p(0), "{what}"),
        other => panic!("{what}: expected a wrong-session refusal, got {other:?}"),
    }
}

/// Both parties of a new 2-of-2 wallet with the given id, by an in-process key generation.
fn keygen_with_id(wallet: WalletId) -> Vec<KeyShare> {
    let threshold = Threshold::new(2, 2).unwrap();
    let nonce = fresh_nonce();
    let sessions = [p(0), p(1)]
        .map(|me| KeygenSession::new(wallet, threshold, me, &nonce).unwrap())
        .into_iter()
        .collect();
    let (mut shares, _) = runner::run(sessions).unwrap();
    shares.sort_by_key(KeyShare::party);
    shares
}

#[test]
fn parties_that_agree_accept_each_others_messages() {
    let shares = keygen(2, 2);
    let nonce = fresh_nonce();
    assert!(
        deliver_first(
            sign_session(&shares[0], nonce),
            sign_session(&shares[1], nonce)
        )
        .is_ok()
    );
    assert!(
        deliver_first(
            RefreshSession::new(&shares[0], &nonce).unwrap(),
            RefreshSession::new(&shares[1], &nonce).unwrap(),
        )
        .is_ok()
    );
}

#[test]
fn shares_of_different_epochs_do_not_accept_each_others_messages() {
    let shares = keygen(2, 2);
    let refreshed = runner::refresh(&[copy(&shares[0]), copy(&shares[1])]).unwrap();
    assert_eq!((shares[0].epoch(), refreshed[1].epoch()), (0, 1));
    let nonce = fresh_nonce();
    // Party 0 still at epoch 0 (a device that missed the switch), party 1 at epoch 1.
    assert_other_session(
        deliver_first(
            sign_session(&shares[0], nonce),
            sign_session(&refreshed[1], nonce),
        ),
        "signing across epochs",
    );
    assert_other_session(
        deliver_first(
            RefreshSession::new(&shares[0], &nonce).unwrap(),
            RefreshSession::new(&refreshed[1], &nonce).unwrap(),
        ),
        "refreshing across epochs",
    );
}

#[test]
fn shares_of_different_wallet_keys_do_not_accept_each_others_messages() {
    // Two wallets under one id (a replayed or confused key generation): same id, same epoch,
    // same party set, different public keys.
    let wallet = WalletId::random();
    let first = keygen_with_id(wallet);
    let second = keygen_with_id(wallet);
    assert_eq!(first[0].wallet_id(), second[1].wallet_id());
    assert_eq!(first[0].epoch(), second[1].epoch());
    assert_ne!(first[0].public_key(), second[1].public_key());
    let nonce = fresh_nonce();
    assert_other_session(
        deliver_first(
            sign_session(&first[0], nonce),
            sign_session(&second[1], nonce),
        ),
        "signing across wallet keys",
    );
    assert_other_session(
        deliver_first(
            RefreshSession::new(&first[0], &nonce).unwrap(),
            RefreshSession::new(&second[1], &nonce).unwrap(),
        ),
        "refreshing across wallet keys",
    );
}

#[test]
fn a_run_whose_device_nonce_differs_is_another_session() {
    // The server joins the device's contribution with its own; a device whose contribution was
    // dropped or replaced (a replayed answer, a confused server) is in another session.
    let shares = keygen(2, 2);
    let server_nonce = fresh_nonce();
    let (device_nonce, other_device_nonce) = (fresh_nonce(), fresh_nonce());
    let ours = joint_nonce(&[device_nonce, server_nonce]);
    for theirs in [
        joint_nonce(&[other_device_nonce, server_nonce]),
        server_nonce,
        joint_nonce(&[server_nonce, device_nonce]),
        joint_nonce(&[device_nonce]),
    ] {
        assert_ne!(ours, theirs);
        assert_other_session(
            deliver_first(
                sign_session(&shares[0], ours),
                sign_session(&shares[1], theirs),
            ),
            "signing with another device nonce",
        );
        assert_other_session(
            deliver_first(
                RefreshSession::new(&shares[0], &ours).unwrap(),
                RefreshSession::new(&shares[1], &theirs).unwrap(),
            ),
            "refreshing with another device nonce",
        );
        let wallet = WalletId::random();
        let threshold = Threshold::new(2, 2).unwrap();
        assert_other_session(
            deliver_first(
                KeygenSession::new(wallet, threshold, p(0), &ours).unwrap(),
                KeygenSession::new(wallet, threshold, p(1), &theirs).unwrap(),
            ),
            "key generation with another device nonce",
        );
    }
    // The joint nonce is a function of its inputs only: both sides compute the same.
    assert_eq!(ours, joint_nonce(&[device_nonce, server_nonce]));
}

#[test]
fn runs_on_agreeing_shares_still_sign_and_refresh() {
    let shares = keygen(2, 2);
    let digest = [7u8; 32];
    let (signature, _) =
        runner::sign(&[&shares[0], &shares[1]], digest, &DerivationPath::root()).unwrap();
    common::verify_everywhere(&shares[0].public_key(), &digest, &signature);
    let refreshed = runner::refresh(&[copy(&shares[0]), copy(&shares[1])]).unwrap();
    let (signature, _) = runner::sign(
        &[&refreshed[0], &refreshed[1]],
        digest,
        &DerivationPath::root(),
    )
    .unwrap();
    common::verify_everywhere(&shares[0].public_key(), &digest, &signature);
}
