//! Backup files written by earlier builds must keep loading, verifying and restoring.
//!
//! `fixtures/backup-v1.tsb` is a format-1 backup of party 0's share of a 2-of-2 wallet under
//! `threshold(2, a, b, c)`; `fixtures/backup-v1-keys.json` holds the (test-only) holder keys.
//! Regenerate only when adding a format version, never to make this test pass:
//! `cargo test -p tessera-backup --test old_files -- --ignored write_fixtures`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::PathBuf;

use tessera_backup::backup::Backup;
use tessera_backup::holder::HolderSecretKey;
use tessera_backup::structure::AccessStructure;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn keys() -> Vec<HolderSecretKey> {
    let text = std::fs::read_to_string(fixtures().join("backup-v1-keys.json")).unwrap();
    let keys: BTreeMap<String, String> = serde_json::from_str(&text).unwrap();
    keys.into_iter()
        .map(|(label, hex_key)| {
            let mut bytes = [0u8; 32];
            hex::decode_to_slice(hex_key, &mut bytes).unwrap();
            HolderSecretKey::from_bytes(label, bytes).unwrap()
        })
        .collect()
}

#[test]
fn a_format_1_backup_loads_verifies_and_restores() {
    let bytes = std::fs::read(fixtures().join("backup-v1.tsb")).unwrap();
    let backup = Backup::from_bytes(&bytes).unwrap();
    assert_eq!(backup.to_bytes(), bytes, "re-encoding changed the file");
    backup.verify().unwrap();
    let context = backup.context();
    assert_eq!(
        (context.party, context.threshold_t, context.threshold_n),
        (0, 2, 2)
    );
    assert_eq!(backup.structure().to_string(), "threshold(2, a, b, c)");
    let keys = keys();
    let share = tessera_backup::wallet::restore_share(&backup, &keys[1..]).unwrap();
    assert_eq!(share.public_share().to_compressed(), context.public_share);
    assert_eq!(
        share.public_key().to_compressed(),
        context.wallet_public_key
    );
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
    std::fs::write(fixtures().join("backup-v1.tsb"), backup.to_bytes()).unwrap();
    let json: BTreeMap<&str, String> = keys
        .iter()
        .map(|k| (k.label(), hex::encode(*k.to_bytes())))
        .collect();
    std::fs::write(
        fixtures().join("backup-v1-keys.json"),
        serde_json::to_string_pretty(&json).unwrap(),
    )
    .unwrap();
}
