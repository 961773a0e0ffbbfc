//! Key share persistence: round trips, strict validation, redaction, and old files that must
//! keep loading.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

mod common;

use common::{keygen, verify_everywhere};
use tessera_core::{DerivationPath, Error, KeyShare, runner};

#[test]
fn shares_round_trip_and_still_sign() {
    let shares = keygen(2, 3);
    let copies: Vec<KeyShare> = shares
        .iter()
        .map(|s| KeyShare::from_bytes(&s.to_bytes()).unwrap())
        .collect();
    for (a, b) in shares.iter().zip(&copies) {
        assert_eq!(*a.to_bytes(), *b.to_bytes());
        assert_eq!(format!("{a:?}"), format!("{b:?}"));
    }
    let (sig, _) =
        runner::sign(&[&copies[2], &shares[0]], [1; 32], &DerivationPath::root()).unwrap();
    verify_everywhere(&shares[0].public_key(), &[1; 32], &sig);
    // serde goes through the same format.
    let json = serde_json::to_string(&copies[1]).unwrap();
    let back: KeyShare = serde_json::from_str(&json).unwrap();
    assert_eq!(*back.to_bytes(), *copies[1].to_bytes());
}

#[test]
fn debug_output_has_no_secret() {
    let shares = keygen(2, 2);
    let text = format!("{:?}", shares[0]);
    assert!(text.contains("<redacted>"), "{text}");
    assert!(text.contains(&shares[0].public_key().to_string()));
    // No 8-byte run of the share file appears in the Debug output, except inside the public
    // fields it prints on purpose (public key, wallet id).
    let public = format!("{} {}", shares[0].public_key(), shares[0].wallet_id());
    let bytes = shares[0].to_bytes();
    for window in bytes.windows(8) {
        let h = hex::encode(window);
        assert!(!text.contains(&h) || public.contains(&h), "{h} leaked");
    }
    assert!(
        text.len() < 400,
        "Debug output is suspiciously long: {} chars",
        text.len()
    );
}

#[test]
fn corrupted_or_foreign_files_are_refused_with_a_reason() {
    let shares = keygen(2, 2);
    let good = shares[0].to_bytes().to_vec();
    let reason = |bytes: &[u8]| match KeyShare::from_bytes(bytes) {
        Err(Error::InvalidKeyShare(r)) => r,
        other => panic!("accepted or wrong error: {:?}", other.map(|_| ())),
    };
    assert!(reason(b"").contains("bad magic"));
    assert!(reason(b"PNG\x89xxxxxxxx").contains("bad magic"));
    let mut v9 = good.clone();
    v9[5] = 9;
    assert!(reason(&v9).contains("version 9 is not supported"));
    assert!(reason(&good[..good.len() - 1]).contains("does not decode"));
    let mut longer = good.clone();
    longer.push(0);
    assert!(reason(&longer).contains("unexpected bytes"));
    // Body layout after the 6-byte header: engine id, wallet id (16), party, t, n, epoch...
    let mut engine = good.clone();
    engine[6] = 7;
    assert!(reason(&engine).contains("unknown engine"));
    let mut party = good.clone();
    party[6 + 1 + 16] = 1;
    assert!(
        reason(&party).contains("another party index"),
        "{}",
        reason(&party)
    );
    let mut threshold = good.clone();
    threshold[6 + 1 + 16 + 1] = 1;
    assert!(
        reason(&threshold).contains("at least 2 signers"),
        "{}",
        reason(&threshold)
    );
    // The other party's public key in the header: cross-checked against the engine state.
    let other = keygen(2, 2);
    let mut swapped = good.clone();
    let pk = shares[0].public_key().to_compressed();
    let at = swapped.windows(33).position(|w| w == pk).unwrap();
    swapped[at..at + 33].copy_from_slice(&other[0].public_key().to_compressed());
    assert!(
        reason(&swapped).contains("another public key"),
        "{}",
        reason(&swapped)
    );
    // Every single-byte flip in the header is refused or leaves the share identical in meaning.
    for i in 0..40 {
        let mut flipped = good.clone();
        flipped[i] ^= 0x01;
        if let Ok(s) = KeyShare::from_bytes(&flipped) {
            // The only header fields that can change unnoticed are the wallet id and the epoch,
            // which the protocols then bind into every session.
            assert!(
                s.wallet_id() != shares[0].wallet_id() || s.epoch() != 0,
                "byte {i}"
            );
        }
    }
}

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");

/// Share files of format version 1, written by the first release. They must keep loading and
/// signing in every later version.
#[test]
fn version_1_fixtures_still_load_and_sign() {
    let expected: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(format!("{FIXTURES}/keyshare-v1.json")).unwrap(),
    )
    .unwrap();
    let load = |i: u8| {
        KeyShare::from_bytes(&std::fs::read(format!("{FIXTURES}/keyshare-v1-p{i}.bin")).unwrap())
            .unwrap()
    };
    let (a, b) = (load(0), load(1));
    for s in [&a, &b] {
        assert_eq!(
            s.public_key().to_string(),
            expected["public_key"].as_str().unwrap()
        );
        assert_eq!(
            s.wallet_id().to_string(),
            expected["wallet_id"].as_str().unwrap()
        );
        assert_eq!(
            s.public_key().eth_address(),
            expected["eth_address"].as_str().unwrap()
        );
        assert_eq!(s.epoch(), 0);
    }
    let (sig, _) = runner::sign(&[&a, &b], [42; 32], &DerivationPath::root()).unwrap();
    verify_everywhere(&a.public_key(), &[42; 32], &sig);
}

/// Writes the fixtures; run by hand only when a new format version is introduced (never
/// overwrite an old version's files): `cargo test -p tessera-core --test share_format -- --ignored`.
#[test]
#[ignore = "writes fixture files"]
fn write_version_1_fixtures() {
    let shares = keygen(2, 2);
    for s in &shares {
        std::fs::write(
            format!("{FIXTURES}/keyshare-v1-p{}.bin", s.party()),
            &*s.to_bytes(),
        )
        .unwrap();
    }
    let meta = serde_json::json!({
        "format_version": 1,
        "threshold": "2-of-2",
        "wallet_id": shares[0].wallet_id().to_string(),
        "public_key": shares[0].public_key().to_string(),
        "eth_address": shares[0].public_key().eth_address(),
        "note": "test-only key; these shares protect nothing",
    });
    std::fs::write(
        format!("{FIXTURES}/keyshare-v1.json"),
        serde_json::to_string_pretty(&meta).unwrap(),
    )
    .unwrap();
}

/// Share files of format version 2 (a wallet under an access structure, `and(server, phone)`).
/// They must keep loading and signing in every later version.
#[test]
fn version_2_fixtures_still_load_and_sign() {
    let expected: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(format!("{FIXTURES}/keyshare-v2.json")).unwrap(),
    )
    .unwrap();
    let load = |i: u8| {
        KeyShare::from_bytes(&std::fs::read(format!("{FIXTURES}/keyshare-v2-p{i}.bin")).unwrap())
            .unwrap()
    };
    let (server, phone) = (load(0), load(1));
    for s in [&server, &phone] {
        assert_eq!(
            s.public_key().to_string(),
            expected["public_key"].as_str().unwrap()
        );
        assert_eq!(
            s.structure().to_string(),
            expected["structure"].as_str().unwrap()
        );
        assert!(s.is_structure_wallet());
        assert_eq!(s.epoch(), 0);
    }
    let (sig, _) = runner::sign(&[&server, &phone], [42; 32], &DerivationPath::root()).unwrap();
    verify_everywhere(&server.public_key(), &[42; 32], &sig);
}

/// Writes the version-2 fixtures; as [`write_version_1_fixtures`], by hand only, never over an
/// existing version's files.
#[test]
#[ignore = "writes fixture files"]
fn write_version_2_fixtures() {
    let structure = tessera_core::structure::WalletStructure::parse("and(server, phone)").unwrap();
    let shares = runner::keygen_structure(&structure).unwrap();
    for s in &shares {
        std::fs::write(
            format!("{FIXTURES}/keyshare-v2-p{}.bin", s.party()),
            &*s.to_bytes(),
        )
        .unwrap();
    }
    let meta = serde_json::json!({
        "format_version": 2,
        "structure": structure.to_string(),
        "wallet_id": shares[0].wallet_id().to_string(),
        "public_key": shares[0].public_key().to_string(),
        "note": "test-only key; these shares protect nothing",
    });
    std::fs::write(
        format!("{FIXTURES}/keyshare-v2.json"),
        serde_json::to_string_pretty(&meta).unwrap(),
    )
    .unwrap();
}
