//! Backups of real key shares (all parties in this process): restore gives back exactly the
//! share, which signs with the other party; a refresh makes an older backup useless.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use k256::elliptic_curve::PrimeField;
use tessera_backup::BackupError;
use tessera_backup::backup::Backup;
use tessera_backup::holder::HolderSecretKey;
use tessera_backup::structure::AccessStructure;
use tessera_backup::wallet::{
    backup_share, context_of, expected_public_share, expected_share, restore_share,
};
use tessera_core::{DerivationPath, KeyShare, Threshold, runner};

fn keys(labels: &[&str]) -> Vec<HolderSecretKey> {
    labels
        .iter()
        .map(|l| HolderSecretKey::generate(*l).unwrap())
        .collect()
}

fn copy(key: &HolderSecretKey) -> HolderSecretKey {
    HolderSecretKey::from_bytes(key.label(), *key.to_bytes()).unwrap()
}

#[test]
fn a_restored_device_share_is_the_share_and_signs_until_the_next_refresh() {
    let shares = runner::keygen(Threshold::new(2, 2).unwrap()).unwrap();
    let (device, server) = (&shares[0], &shares[1]);
    let holders = keys(&["usb-1", "cloud", "laptop"]);
    let publics: Vec<_> = holders.iter().map(HolderSecretKey::public).collect();
    let structure = AccessStructure::parse("threshold(2, usb-1, cloud, laptop)").unwrap();
    let backup = backup_share(device, "main", &structure, &publics).unwrap();

    // The server checks it against the public share it derives from its own share.
    let expected = expected_public_share(server, 0).unwrap();
    assert_eq!(expected, device.public_share().to_compressed());
    backup.verify_for(&expected).unwrap();
    // Checked against the server's own public share instead: another share.
    let err = backup
        .verify_for(&expected_public_share(server, 1).unwrap())
        .unwrap_err();
    assert!(err.to_string().contains("another share"), "{err}");

    let restored = restore_share(&backup, &holders[1..]).unwrap();
    assert_eq!(*restored.to_bytes(), *device.to_bytes());
    let digest = tessera_core::ecdsa::eip191_digest(b"restored");
    let (signature, _) =
        runner::sign(&[&restored, server], digest, &DerivationPath::root()).unwrap();
    device.public_key().verify(&digest, &signature).unwrap();

    // After a refresh the device's public share is another: the old backup no longer matches
    // the wallet (its share combined with the new server share is not the key).
    let refreshed = runner::refresh(
        &[&restored, server].map(|s| tessera_core::KeyShare::from_bytes(&s.to_bytes()).unwrap()),
    )
    .unwrap();
    let now_expected = expected_public_share(&refreshed[1], 0).unwrap();
    assert_ne!(now_expected, backup.context().public_share);
    let err = backup.verify_for(&now_expected).unwrap_err();
    assert!(err.to_string().contains("another share"), "{err}");
}

#[test]
fn a_share_of_a_two_of_three_wallet_round_trips_under_and_or() {
    let shares = runner::keygen(Threshold::new(2, 3).unwrap()).unwrap();
    let holders = keys(&["a", "b", "c"]);
    let publics: Vec<_> = holders.iter().map(HolderSecretKey::public).collect();
    let structure = AccessStructure::parse("and(a, or(b, c))").unwrap();
    let backup = backup_share(&shares[2], "family", &structure, &publics).unwrap();
    backup
        .verify_for(&expected_public_share(&shares[2], 2).unwrap())
        .unwrap();
    // Another party of a 3-party wallet cannot derive that public share: said, not guessed.
    assert!(expected_public_share(&shares[0], 2).is_err());
    let restored = restore_share(&backup, &[copy(&holders[0]), copy(&holders[2])]);
    let restored = restored.unwrap();
    assert_eq!(*restored.to_bytes(), *shares[2].to_bytes());
    let err = restore_share(&backup, &holders[1..]).unwrap_err();
    assert!(err.to_string().contains("add one of: a"), "{err}");
}

/// `share` with its BIP-32 chain code replaced (in the share file and in the engine state inside
/// it): the same secret, party, threshold, epoch and wallet key, but another wallet's public state
/// (its derived child keys are another wallet's).
fn with_another_chain_code(share: &KeyShare) -> KeyShare {
    let old = share.chain_code();
    let new = [0x5a; 32];
    let mut bytes = share.to_bytes().to_vec();
    let mut replaced = 0;
    let mut at = 0;
    while at + 32 <= bytes.len() {
        if bytes[at..at + 32] == old {
            bytes[at..at + 32].copy_from_slice(&new);
            replaced += 1;
            at += 32;
        } else {
            at += 1;
        }
    }
    assert!(replaced >= 2, "the chain code was found {replaced} times");
    let other = KeyShare::from_bytes(&bytes).unwrap();
    assert_eq!(other.chain_code(), new);
    assert_eq!(other.public_share(), share.public_share());
    assert_eq!(*other.secret_share_bytes(), *share.secret_share_bytes());
    other
}

#[test]
fn a_backup_whose_signing_state_is_another_shares_is_refused() {
    let shares = runner::keygen(Threshold::new(2, 2).unwrap()).unwrap();
    let (device, server) = (&shares[0], &shares[1]);
    let impostor = with_another_chain_code(device);
    let holders = keys(&["usb-1", "cloud", "laptop"]);
    let publics: Vec<_> = holders.iter().map(HolderSecretKey::public).collect();
    let structure = AccessStructure::parse("threshold(2, usb-1, cloud, laptop)").unwrap();

    // A backup of the impostor share: its public share is the device's, so checking that alone
    // accepts it; the server, checking the wallet's public state it knows, refuses it.
    let backup = backup_share(&impostor, "main", &structure, &publics).unwrap();
    backup
        .verify_for(&expected_public_share(server, 0).unwrap())
        .unwrap();
    let err = backup
        .verify_for_share(&expected_share(server, 0).unwrap())
        .unwrap_err();
    assert!(
        matches!(err, BackupError::WrongShareState { .. })
            && err.to_string().contains("chain code"),
        "{err}"
    );
    // The device's own backup passes the same check.
    backup_share(device, "main", &structure, &publics)
        .unwrap()
        .verify_for_share(&expected_share(server, 0).unwrap())
        .unwrap();

    // A backup that states the wallet's real public state but carries the impostor's signing
    // state (whoever knows the share's secret can make one): public verification cannot see
    // inside, and the restore refuses the share it decrypts.
    let secret = Option::<k256::Scalar>::from(k256::Scalar::from_repr(
        (*device.secret_share_bytes()).into(),
    ))
    .unwrap();
    let swapped = Backup::create(
        &secret,
        context_of(device, "main"),
        &structure,
        &publics,
        &impostor.to_bytes(),
    )
    .unwrap();
    swapped
        .verify_for_share(&expected_share(server, 0).unwrap())
        .unwrap();
    let err = restore_share(&swapped, &holders[1..]).unwrap_err();
    assert!(
        matches!(err, BackupError::RestoredShareMismatch(_))
            && err.to_string().contains("another public state"),
        "{err}"
    );
    // With the device's own state the same construction restores.
    let honest = Backup::create(
        &secret,
        context_of(device, "main"),
        &structure,
        &publics,
        &device.to_bytes(),
    )
    .unwrap();
    let restored = restore_share(&honest, &holders[..2]).unwrap();
    assert_eq!(*restored.to_bytes(), *device.to_bytes());
}
