//! Altering any byte of a backup file makes it fail to load or to verify.
//!
//! The default test flips (XOR 0x01) at least 2000 byte offsets of a serialized
//! `threshold(2, a, b, c)` backup (every byte outside the leaf proofs, the rest spread evenly over
//! the proofs), so that every section of the file is hit, and prints how many
//! offsets fell in each section. The `#[ignore]`d test flips every single byte (run it with
//! `cargo test --release -p tessera-backup --test tamper -- --ignored`).
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::Instant;

use k256::elliptic_curve::Field;
use k256::{ProjectivePoint, Scalar};
use tessera_backup::backup::{Backup, BackupContext};
use tessera_backup::holder::{HolderPublicKey, HolderSecretKey};
use tessera_backup::structure::AccessStructure;

fn compressed(point: &ProjectivePoint) -> [u8; 33] {
    use k256::elliptic_curve::group::GroupEncoding;
    let mut out = [0u8; 33];
    out.copy_from_slice(point.to_bytes().as_slice());
    out
}

fn backup_bytes() -> (Vec<u8>, Vec<HolderSecretKey>) {
    let structure = AccessStructure::parse("threshold(2, a, b, c)").unwrap();
    let secret = Scalar::random(&mut rand::rng());
    let keys: Vec<HolderSecretKey> = ["a", "b", "c"]
        .iter()
        .map(|l| HolderSecretKey::generate(*l).unwrap())
        .collect();
    let publics: Vec<HolderPublicKey> = keys.iter().map(HolderSecretKey::public).collect();
    let context = BackupContext {
        wallet_id: "wallet-1".into(),
        wallet_name: "Tamper test".into(),
        party: 0,
        threshold_t: 2,
        threshold_n: 2,
        epoch: 1,
        wallet_public_key: compressed(&(ProjectivePoint::GENERATOR * Scalar::from(99u64))),
        public_share: compressed(&(ProjectivePoint::GENERATOR * secret)),
        created_at: 1_700_000_000,
        share_state: Some([0x5e; 32]),
    };
    let aux = b"engine share state".repeat(8);
    let backup = Backup::create(&secret, context, &structure, &publics, &aux).unwrap();
    backup.verify().unwrap();
    (backup.to_bytes(), keys)
}

/// The CBOR map keys of the file, so that each offset can be named by the field it falls in.
const KEYS: [&str; 26] = [
    "context",
    "wallet_id",
    "wallet_name",
    "party",
    "threshold_t",
    "threshold_n",
    "epoch",
    "wallet_public_key",
    "public_share",
    "created_at",
    "share_state",
    "structure",
    "holders",
    "label",
    "key",
    "nodes",
    "point",
    "commitments",
    "proof",
    "challenge",
    "opened_halves",
    "opened_seeds",
    "unopened_encs",
    "unopened_cts",
    "aux_salt",
    "aux_ciphertext",
];

/// For each offset, the name of the section it falls in: "header" for magic and version, else
/// the last map key before it (with "nodes[i]" and "proof" qualifiers).
fn sections(bytes: &[u8]) -> Vec<String> {
    // Positions of each key encoded as a CBOR text string (major type 3, short length).
    let mut marks: Vec<(usize, &str)> = Vec::new();
    for key in KEYS {
        let mut needle = vec![0x60 + u8::try_from(key.len()).unwrap()];
        needle.extend_from_slice(key.as_bytes());
        let mut from = 6;
        while let Some(at) = bytes[from..]
            .windows(needle.len())
            .position(|w| w == needle.as_slice())
        {
            marks.push((from + at, key));
            from += at + needle.len();
        }
    }
    marks.sort();
    let mut out = Vec::with_capacity(bytes.len());
    let mut node = None::<usize>;
    let mut in_proof = false;
    let mut current = "header".to_string();
    let mut next = 0;
    for offset in 0..bytes.len() {
        while next < marks.len() && marks[next].0 == offset {
            let key = marks[next].1;
            match key {
                "point" => {
                    node = Some(node.map_or(0, |n| n + 1));
                    in_proof = false;
                }
                "proof" => in_proof = true,
                "aux_salt" | "aux_ciphertext" => node = None,
                _ => {}
            }
            current = match (node, in_proof, key) {
                (Some(n), true, k) if k != "proof" => format!("nodes[{n}].proof.{k}"),
                (Some(n), _, k) => format!("nodes[{n}].{k}"),
                (None, _, k) => k.to_string(),
            };
            next += 1;
        }
        out.push(current.clone());
    }
    out
}

/// Flips each offset in `offsets` (on all cores) and returns the offsets that still load and
/// verify, with the number of offsets tried per section.
fn flip_all(bytes: &[u8], offsets: &[usize]) -> (Vec<usize>, BTreeMap<String, usize>) {
    let names = sections(bytes);
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    let chunk = offsets.len().div_ceil(threads).max(1);
    let survivors: Vec<usize> = std::thread::scope(|scope| {
        let handles: Vec<_> = offsets
            .chunks(chunk)
            .map(|part| {
                scope.spawn(move || {
                    let mut survived = Vec::new();
                    let mut copy = bytes.to_vec();
                    for &offset in part {
                        copy[offset] ^= 0x01;
                        if let Ok(backup) = Backup::from_bytes(&copy)
                            && backup.verify().is_ok()
                        {
                            survived.push(offset);
                        }
                        copy[offset] ^= 0x01;
                    }
                    survived
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    let mut per_section = BTreeMap::new();
    for &offset in offsets {
        *per_section.entry(names[offset].clone()).or_insert(0) += 1;
    }
    (survivors, per_section)
}

#[test]
fn flipping_sampled_bytes_spread_over_every_section_is_detected() {
    let (bytes, _keys) = backup_bytes();
    // Every offset outside the leaf proofs (header, context, structure, holders, node points and
    // commitments, aux: small, and where a missed binding would hide), and offsets evenly spread
    // over the leaf proofs, 2000 in all.
    let names = sections(&bytes);
    let (proof, other): (Vec<usize>, Vec<usize>) =
        (0..bytes.len()).partition(|&offset| names[offset].contains(".proof."));
    let wanted = 2000usize.saturating_sub(other.len()).max(1);
    let step = (proof.len() / wanted).max(1);
    let mut offsets: Vec<usize> = other;
    offsets.extend(proof.iter().step_by(step));
    offsets.sort_unstable();
    assert!(offsets.len() >= 2000, "{} offsets", offsets.len());

    let started = Instant::now();
    let (survivors, per_section) = flip_all(&bytes, &offsets);
    eprintln!(
        "file {} bytes; flipped {} offsets in {:.1?}; per section:",
        bytes.len(),
        offsets.len(),
        started.elapsed()
    );
    for (name, count) in &per_section {
        eprintln!("  {name:32} {count}");
    }
    // Every section of the file was hit.
    for must in [
        "header",
        "context",
        "wallet_id",
        "public_share",
        "created_at",
        "share_state",
        "structure",
        "holders",
        "label",
        "key",
        "nodes[0].point",
        "nodes[0].commitments",
        "nodes[1].proof.challenge",
        "nodes[1].proof.commitments",
        "nodes[2].proof.opened_halves",
        "nodes[2].proof.opened_seeds",
        "nodes[3].proof.unopened_encs",
        "nodes[3].proof.unopened_cts",
        "aux_salt",
        "aux_ciphertext",
    ] {
        assert!(per_section.contains_key(must), "section {must} not covered");
    }
    assert!(
        survivors.is_empty(),
        "flips at offsets {survivors:?} went unnoticed"
    );
}

#[test]
#[ignore = "flips every byte: run in release"]
fn flipping_every_byte_is_detected() {
    let (bytes, _keys) = backup_bytes();
    let offsets: Vec<usize> = (0..bytes.len()).collect();
    let started = Instant::now();
    let (survivors, per_section) = flip_all(&bytes, &offsets);
    eprintln!(
        "file {} bytes; flipped every byte in {:.1?}; {} sections",
        bytes.len(),
        started.elapsed(),
        per_section.len()
    );
    assert!(
        survivors.is_empty(),
        "flips at offsets {survivors:?} went unnoticed"
    );
}

#[test]
fn a_holder_key_with_its_top_bit_set_is_refused_in_a_file() {
    // X25519 ignores bit 255, so such a key names the holder's point; but HPKE binds the key's
    // bytes, so a backup to it could never be decrypted. Reading the file refuses it by name.
    let (bytes, keys) = backup_bytes();
    for key in &keys {
        let public = key.public().key_bytes();
        let at = bytes
            .windows(32)
            .position(|w| w == public.as_slice())
            .unwrap();
        let mut altered = bytes.clone();
        altered[at + 31] |= 0x80;
        let err = Backup::from_bytes(&altered).unwrap_err().to_string();
        assert!(
            err.contains("invalid public key for holder") && err.contains("canonically encoded"),
            "{err}"
        );
    }
}
