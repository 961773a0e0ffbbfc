//! Unit tests of backups: creation, the file form, verification and restoration by every set
//! of holders.

use k256::{ProjectivePoint, Scalar};
use serde_bytes::{ByteArray, ByteBuf};
use sha2::{Digest, Sha256};

use super::format::Body;
use super::*;
use crate::holder::{HolderPublicKey, HolderSecretKey};

fn context_for(secret: &Scalar) -> BackupContext {
    BackupContext {
        wallet_id: "w-0123".into(),
        wallet_name: "Savings".into(),
        party: 1,
        threshold_t: 2,
        threshold_n: 3,
        epoch: 4,
        wallet_public_key: pve::encode_point(&(ProjectivePoint::GENERATOR * Scalar::from(77u64))),
        public_share: pve::encode_point(&(ProjectivePoint::GENERATOR * secret)),
        created_at: 1_700_000_000,
        share_state: Some([3u8; 32]),
    }
}

struct Fixture {
    secret: Scalar,
    keys: Vec<HolderSecretKey>,
    backup: Backup,
    aux: Vec<u8>,
}

fn fixture(structure: &str) -> Fixture {
    let structure = AccessStructure::parse(structure).unwrap();
    let secret = *pve::random_nonzero_scalar().unwrap();
    let keys: Vec<HolderSecretKey> = structure
        .holders()
        .iter()
        .map(|l| HolderSecretKey::generate(*l).unwrap())
        .collect();
    let publics: Vec<HolderPublicKey> = keys.iter().map(HolderSecretKey::public).collect();
    let aux: Vec<u8> = (0..300u32).map(|i| (i * 7) as u8).collect();
    let backup = Backup::create(&secret, context_for(&secret), &structure, &publics, &aux).unwrap();
    Fixture {
        secret,
        keys,
        backup,
        aux,
    }
}

fn keys_for(f: &Fixture, labels: &[&str]) -> Vec<HolderSecretKey> {
    labels
        .iter()
        .map(|l| {
            let k = f.keys.iter().find(|k| k.label() == *l).unwrap();
            HolderSecretKey::from_bytes(k.label(), *k.to_bytes()).unwrap()
        })
        .collect()
}

/// Every subset of the holders: authorised ones restore exactly, the others are refused
/// naming what is missing.
fn check_all_subsets(structure: &str) {
    let f = fixture(structure);
    f.backup.verify().unwrap();
    let labels: Vec<&str> = f.backup.structure().holders();
    let mut authorised = 0;
    for mask in 0u32..(1 << labels.len()) {
        let chosen: Vec<&str> = labels
            .iter()
            .enumerate()
            .filter(|(i, _)| mask & (1 << i) != 0)
            .map(|(_, l)| *l)
            .collect();
        let keys = keys_for(&f, &chosen);
        if f.backup.structure().is_authorised(&chosen) {
            authorised += 1;
            let restored = f.backup.restore(&keys).unwrap();
            assert_eq!(
                *restored.secret,
                *pve::scalar_bytes(&f.secret),
                "{chosen:?}"
            );
            assert_eq!(*restored.aux, f.aux, "{chosen:?}");
        } else {
            let err = f.backup.restore(&keys).unwrap_err();
            let BackupError::NotAuthorised { given, options } = &err else {
                panic!("{chosen:?}: {err}");
            };
            assert_eq!(
                given,
                &chosen.iter().map(|s| s.to_string()).collect::<Vec<_>>()
            );
            assert!(!options.is_empty());
            for option in options {
                let mut with: Vec<&str> = chosen.clone();
                with.extend(option.iter().map(String::as_str));
                assert!(f.backup.structure().is_authorised(&with), "{err}");
            }
        }
    }
    assert!(authorised > 0);
}

#[test]
fn every_authorised_set_restores_threshold_2_of_3() {
    check_all_subsets("threshold(2, a, b, c)");
}

#[test]
fn every_authorised_set_restores_and_or() {
    check_all_subsets("and(a, or(b, c))");
}

#[test]
fn every_authorised_set_restores_threshold_2_of_4() {
    check_all_subsets("threshold(2, a, b, c, d)");
}

#[test]
fn nested_structure_restores() {
    check_all_subsets("or(threshold(3, a, b, c, d), and(e, f))");
}

#[test]
fn single_holder_and_threshold_1() {
    check_all_subsets("solo");
    check_all_subsets("threshold(1, a, b)");
}

#[test]
fn unauthorised_sets_name_the_missing_holders() {
    let f = fixture("threshold(2, a, b, c)");
    let err = f.backup.restore(&keys_for(&f, &["b"])).unwrap_err();
    assert_eq!(
        err.to_string(),
        "not authorised: keys given for b; add one of: a, c"
    );
    let f = fixture("and(a, or(b, c))");
    let err = f.backup.restore(&keys_for(&f, &["b"])).unwrap_err();
    assert_eq!(
        err.to_string(),
        "not authorised: keys given for b; add one of: a"
    );
    let err = f.backup.restore(&[]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "not authorised: no keys given; add one of: (a and b), (a and c)"
    );
}

#[test]
fn wrong_unknown_and_duplicate_keys_are_named() {
    let f = fixture("and(a, or(b, c))");
    let impostor = HolderSecretKey::generate("b").unwrap();
    let mut keys = keys_for(&f, &["a"]);
    keys.push(impostor);
    let err = f.backup.restore(&keys).unwrap_err();
    assert!(
        matches!(&err, BackupError::WrongKey { label, .. } if label == "b"),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("the key given for \"b\" is not the backup's key")
    );

    let mut keys = keys_for(&f, &["a", "b"]);
    keys.push(HolderSecretKey::generate("zed").unwrap());
    let err = f.backup.restore(&keys).unwrap_err();
    assert!(
        err.to_string().contains("\"zed\", which is not a holder"),
        "{err}"
    );

    let keys = keys_for(&f, &["a", "b", "a"]);
    let err = f.backup.restore(&keys).unwrap_err();
    assert!(
        matches!(&err, BackupError::DuplicateKey { label } if label == "a"),
        "{err}"
    );
}

#[test]
fn backup_of_another_share_is_recognised() {
    let f = fixture("threshold(2, a, b, c)");
    let ours = f.backup.context().public_share;
    f.backup.verify_for(&ours).unwrap();
    let other = pve::encode_point(&(ProjectivePoint::GENERATOR * Scalar::from(5u64)));
    let err = f.backup.verify_for(&other).unwrap_err();
    let text = err.to_string();
    assert!(
        text.starts_with("this backup is of another share (public share "),
        "{text}"
    );
    assert!(text.contains(&hex::encode(ours)) && text.contains(&hex::encode(other)));
}

#[test]
fn file_round_trip_and_digest() {
    let f = fixture("threshold(2, a, b, c)");
    let bytes = f.backup.to_bytes();
    assert_eq!(&bytes[..6], b"TSBK\x00\x02");
    assert_eq!(f.backup.format_version(), 2);
    let back = Backup::from_bytes(&bytes).unwrap();
    assert_eq!(back, f.backup);
    assert_eq!(back.to_bytes(), bytes);
    assert_eq!(back.digest(), <[u8; 32]>::from(Sha256::digest(&bytes)));
    back.verify().unwrap();
    assert_eq!(back.holders().len(), 3);
    assert_eq!(back.structure().to_string(), "threshold(2, a, b, c)");
}

#[test]
fn malformed_files_are_rejected_with_reasons() {
    let f = fixture("or(a, b)");
    let bytes = f.backup.to_bytes();
    let reason = |b: &[u8]| Backup::from_bytes(b).unwrap_err().to_string();
    assert!(reason(&bytes[..3]).contains("too short"));
    let mut wrong_magic = bytes.clone();
    wrong_magic[0] = b'X';
    assert!(reason(&wrong_magic).contains("wrong magic"));
    let mut v3 = bytes.clone();
    v3[5] = 3;
    assert!(reason(&v3).contains("format version 3 is not supported"));
    let mut v0 = bytes.clone();
    v0[5] = 0;
    assert!(reason(&v0).contains("format version 0 is not supported"));
    // The version and the share-state digest go together.
    let mut v1 = bytes.clone();
    v1[5] = 1;
    assert!(reason(&v1).contains("a format-1 backup cannot state a share-state digest"));
    let mut body = f.backup.body.clone();
    body.context.share_state = None;
    assert!(reason(&file_of(&body)).contains("must state the share-state digest"));
    let mut trailing = bytes.clone();
    trailing.push(0);
    assert!(reason(&trailing).contains("1 unexpected bytes after the body"));
    let big = vec![0u8; MAX_FILE_BYTES + 1];
    assert!(reason(&big).contains("more than the"));
    assert!(reason(&bytes[..bytes.len() - 1]).contains("does not decode"));

    // A body re-encoded with a structure text that is not canonical.
    let mut body = f.backup.body.clone();
    body.structure = "OR(a,b)".into();
    assert!(reason(&file_of(&body)).contains("not in canonical form"));
    let mut body = f.backup.body.clone();
    body.structure = "or(a, b, c)".into();
    assert!(reason(&file_of(&body)).contains("are not the structure's"));
    let mut body = f.backup.body.clone();
    body.structure = "or(a,".into();
    assert!(reason(&file_of(&body)).contains("invalid access structure"));
    let mut body = f.backup.body.clone();
    body.holders.reverse();
    assert!(reason(&file_of(&body)).contains("not sorted"));
    let mut body = f.backup.body.clone();
    body.nodes[1].point = ByteArray::new([5u8; 33]);
    let text = reason(&file_of(&body));
    assert!(
        text.contains("node a at root/1: its point is not a valid curve point"),
        "{text}"
    );
    let mut body = f.backup.body.clone();
    body.nodes[0].proof = body.nodes[1].proof.clone();
    assert!(reason(&file_of(&body)).contains("an inner node with an encrypted share"));
    let mut body = f.backup.body.clone();
    body.nodes.pop();
    assert!(reason(&file_of(&body)).contains("2 nodes recorded, the structure has 3"));
    let mut body = f.backup.body.clone();
    body.context.party = 3;
    assert!(reason(&file_of(&body)).contains("party 3 is not one of"));
    let mut body = f.backup.body.clone();
    let extra = HolderSecretKey::generate("zz").unwrap().public();
    body.holders = vec![extra; MAX_HOLDERS + 1];
    assert!(reason(&file_of(&body)).contains("holders, more than the 32 allowed"));

    // A non-canonical encoding of the same value: epoch 4 as a two-byte integer.
    let mut body_bytes = Vec::new();
    ciborium::into_writer(&f.backup.body, &mut body_bytes).unwrap();
    let needle = b"epoch\x04";
    let at = body_bytes
        .windows(needle.len())
        .position(|w| w == needle)
        .unwrap();
    let mut long = body_bytes[..at + 5].to_vec();
    long.extend_from_slice(&[0x18, 0x04]);
    long.extend_from_slice(&body_bytes[at + 6..]);
    let mut file = b"TSBK\x00\x02".to_vec();
    file.extend_from_slice(&long);
    assert!(reason(&file).contains("not canonically encoded"));
}

fn file_of(body: &Body) -> Vec<u8> {
    let mut out = b"TSBK\x00\x02".to_vec();
    ciborium::into_writer(body, &mut out).unwrap();
    out
}

#[test]
fn inconsistent_points_are_caught_by_verify() {
    // Re-signing nothing: swap in a well-formed but wrong node point; verify names the node.
    let f = fixture("and(a, or(b, c))");
    let mut body = f.backup.body.clone();
    body.nodes[3].point = ByteArray::new(pve::encode_point(&ProjectivePoint::GENERATOR));
    let backup = Backup::from_bytes(&file_of(&body)).unwrap();
    let err = backup.verify().unwrap_err().to_string();
    assert_eq!(
        err,
        "node or(b, c) at root/2: child 1 does not carry the node's point",
    );
    let mut body = f.backup.body.clone();
    body.context.public_share = pve::encode_point(&ProjectivePoint::GENERATOR);
    let backup = Backup::from_bytes(&file_of(&body)).unwrap();
    let err = backup.verify().unwrap_err().to_string();
    assert!(
        err.contains("the root's point is not the backup's public share"),
        "{err}"
    );
}

#[test]
fn create_rejects_bad_inputs() {
    let structure = AccessStructure::parse("threshold(2, a, b, c)").unwrap();
    let secret = *pve::random_nonzero_scalar().unwrap();
    let keys: Vec<HolderPublicKey> = ["a", "b", "c"]
        .iter()
        .map(|l| HolderSecretKey::generate(*l).unwrap().public())
        .collect();
    let ctx = context_for(&secret);
    let err = |r: Result<Backup, BackupError>| r.unwrap_err().to_string();

    let other = Scalar::from(3u64);
    assert!(
        err(Backup::create(&other, ctx.clone(), &structure, &keys, b"")).contains("does not match")
    );
    assert!(
        err(Backup::create(
            &Scalar::ZERO,
            ctx.clone(),
            &structure,
            &keys,
            b""
        ))
        .contains("zero")
    );
    assert!(
        err(Backup::create(
            &secret,
            ctx.clone(),
            &structure,
            &keys[..2],
            b""
        ))
        .contains("no key for holder \"c\"")
    );
    let mut dup = keys.clone();
    dup.push(keys[0].clone());
    assert!(
        err(Backup::create(&secret, ctx.clone(), &structure, &dup, b""))
            .contains("two keys for holder \"a\"")
    );
    let mut extra = keys.clone();
    extra.push(HolderSecretKey::generate("d").unwrap().public());
    assert!(
        err(Backup::create(
            &secret,
            ctx.clone(),
            &structure,
            &extra,
            b""
        ))
        .contains("\"d\", which is not in the structure")
    );
    let mut bad_ctx = ctx.clone();
    bad_ctx.threshold_t = 4;
    assert!(
        err(Backup::create(&secret, bad_ctx, &structure, &keys, b"")).contains("threshold 4-of-3")
    );
    let mut bad_ctx = ctx.clone();
    bad_ctx.wallet_id = String::new();
    assert!(
        err(Backup::create(&secret, bad_ctx, &structure, &keys, b""))
            .contains("wallet id is empty")
    );
    let mut bad_ctx = ctx.clone();
    bad_ctx.share_state = None;
    assert!(
        err(Backup::create(&secret, bad_ctx, &structure, &keys, b""))
            .contains("share-state digest is missing")
    );
    let invalid = AccessStructure::And(vec![AccessStructure::Leaf("a".into())]);
    assert!(
        err(Backup::create(&secret, ctx, &invalid, &keys[..1], b""))
            .contains("invalid access structure")
    );
}

#[test]
fn damaged_aux_is_reported_at_restore() {
    let f = fixture("or(a, b)");
    // An aux ciphertext from another backup, with the digests recomputed as an attacker
    // would have to (the proofs then no longer match: verify catches it first).
    let mut body = f.backup.body.clone();
    let mut ct = body.aux_ciphertext.to_vec();
    ct[0] ^= 1;
    body.aux_ciphertext = ByteBuf::from(ct);
    let backup = Backup::from_bytes(&file_of(&body)).unwrap();
    assert!(
        backup
            .verify()
            .unwrap_err()
            .to_string()
            .contains("challenge does not match")
    );

    // Past verification (as if the proofs had been made over the damaged ciphertext): the
    // aux does not authenticate.
    let mut backup = backup;
    backup.context_digest = f.backup.context_digest;
    let err = backup.restore(&keys_for(&f, &["a"])).unwrap_err();
    assert!(matches!(err, BackupError::AuxDamaged), "{err}");
}

#[test]
fn restored_debug_is_redacted() {
    let f = fixture("or(a, b)");
    let restored = f.backup.restore(&keys_for(&f, &["b"])).unwrap();
    let debug = format!("{restored:?}");
    assert_eq!(
        debug,
        "Restored { secret: \"<redacted>\", aux: \"<redacted>\" }"
    );
}
