//! Backup files written by earlier builds must keep loading, verifying and restoring.
//!
//! `fixtures/backup-v<N>.tsb` is a format-N backup of party 0's share of a 2-of-2 wallet under
//! `threshold(2, a, b, c)`; `fixtures/backup-v<N>-keys.json` holds its (test-only) holder keys.
//! Format 1 took the leaf encryptions' ephemeral keys from the `hpke` crate's key generation fed
//! with a seeded generator; format 2 derives them with RFC 9180 `DeriveKeyPair` and states the
//! wallet's share-state digest. Regenerate only when adding a format version (it writes the
//! current version's files, never an older one's), never to make this test pass:
//! `cargo test -p tessera-backup --test old_files -- --ignored write_fixtures`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::PathBuf;

use tessera_backup::backup::{Backup, ExpectedShare, FORMAT_VERSION};
use tessera_backup::holder::HolderSecretKey;
use tessera_backup::structure::AccessStructure;
use tessera_backup::wallet::share_state_digest;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn keys(version: u16) -> Vec<HolderSecretKey> {
    let text =
        std::fs::read_to_string(fixtures().join(format!("backup-v{version}-keys.json"))).unwrap();
    let keys: BTreeMap<String, String> = serde_json::from_str(&text).unwrap();
    keys.into_iter()
        .map(|(label, hex_key)| {
            let mut bytes = [0u8; 32];
            hex::decode_to_slice(hex_key, &mut bytes).unwrap();
            HolderSecretKey::from_bytes(label, bytes).unwrap()
        })
        .collect()
}

/// Loads, re-encodes, verifies and restores the fixture of `version`; returns the backup and the
/// restored share.
fn load_verify_restore(version: u16) -> (Backup, tessera_core::KeyShare) {
    let bytes = std::fs::read(fixtures().join(format!("backup-v{version}.tsb"))).unwrap();
    let backup = Backup::from_bytes(&bytes).unwrap();
    assert_eq!(backup.format_version(), version);
    assert_eq!(backup.to_bytes(), bytes, "re-encoding changed the file");
    backup.verify().unwrap();
    let context = backup.context();
    assert_eq!(
        (context.party, context.threshold_t, context.threshold_n),
        (0, 2, 2)
    );
    assert_eq!(backup.structure().to_string(), "threshold(2, a, b, c)");
    let keys = keys(version);
    let share = tessera_backup::wallet::restore_share(&backup, &keys[1..]).unwrap();
    assert_eq!(share.public_share().to_compressed(), context.public_share);
    assert_eq!(
        share.public_key().to_compressed(),
        context.wallet_public_key
    );
    // Any two of the three holders restore it.
    for pair in [[0, 1], [0, 2]] {
        let two: Vec<HolderSecretKey> = pair
            .iter()
            .map(|&i| HolderSecretKey::from_bytes(keys[i].label(), *keys[i].to_bytes()).unwrap())
            .collect();
        let again = tessera_backup::wallet::restore_share(&backup, &two).unwrap();
        assert_eq!(*again.to_bytes(), *share.to_bytes());
    }
    (backup, share)
}

#[test]
fn a_format_1_backup_loads_verifies_and_restores() {
    let (backup, share) = load_verify_restore(1);
    // Format 1 states no share-state digest: checked against a share of the wallet, only its
    // public share can be compared.
    assert_eq!(backup.context().share_state, None);
    backup
        .verify_for_share(&ExpectedShare {
            public_share: share.public_share().to_compressed(),
            share_state: share_state_digest(&share),
        })
        .unwrap();
}

#[test]
fn a_format_2_backup_loads_verifies_and_restores() {
    let (backup, share) = load_verify_restore(2);
    assert_eq!(
        backup.context().share_state,
        Some(share_state_digest(&share))
    );
    backup
        .verify_for_share(&ExpectedShare {
            public_share: share.public_share().to_compressed(),
            share_state: share_state_digest(&share),
        })
        .unwrap();
}

#[test]
fn a_format_1_file_relabelled_as_format_2_is_refused() {
    // Format 2 requires the share-state digest that format 1 lacks.
    let bytes = std::fs::read(fixtures().join("backup-v1.tsb")).unwrap();
    let mut relabelled = bytes.clone();
    relabelled[5] = 2;
    let err = Backup::from_bytes(&relabelled).unwrap_err().to_string();
    assert!(err.contains("must state the share-state digest"), "{err}");
}

#[test]
#[ignore = "writes the fixtures; run only when adding a format version"]
fn write_fixtures() {
    let shares = tessera_core::runner::keygen(tessera_core::Threshold::new(2, 2).unwrap()).unwrap();
    let labels = ["a", "b", "c"];
    let keys: Vec<HolderSecretKey> = labels
        .iter()
        .map(|l| HolderSecretKey::generate(*l).unwrap())
        .collect();
    let publics: Vec<_> = keys.iter().map(HolderSecretKey::public).collect();
    let structure = AccessStructure::parse("threshold(2, a, b, c)").unwrap();
    let backup =
        tessera_backup::wallet::backup_share(&shares[0], "fixture", &structure, &publics).unwrap();
    assert_eq!(backup.format_version(), FORMAT_VERSION);
    std::fs::write(
        fixtures().join(format!("backup-v{FORMAT_VERSION}.tsb")),
        backup.to_bytes(),
    )
    .unwrap();
    let json: BTreeMap<&str, String> = keys
        .iter()
        .map(|k| (k.label(), hex::encode(*k.to_bytes())))
        .collect();
    std::fs::write(
        fixtures().join(format!("backup-v{FORMAT_VERSION}-keys.json")),
        serde_json::to_string_pretty(&json).unwrap(),
    )
    .unwrap();
}
