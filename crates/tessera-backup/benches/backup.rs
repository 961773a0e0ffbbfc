//! Backup create / verify / restore, for `threshold(2, device, usb, cloud)` and
//! `threshold(2, a, b, c, d)`, with a 20 KB aux blob (about the size of an engine share state).
//! Prints each backup's file size once.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use criterion::{Criterion, criterion_group, criterion_main};
use k256::elliptic_curve::Field;
use k256::elliptic_curve::group::GroupEncoding;
use k256::{ProjectivePoint, Scalar};
use tessera_backup::backup::{Backup, BackupContext};
use tessera_backup::holder::{HolderPublicKey, HolderSecretKey};
use tessera_backup::structure::AccessStructure;

const AUX_BYTES: usize = 20 * 1024;

fn compressed(point: &ProjectivePoint) -> [u8; 33] {
    let mut out = [0u8; 33];
    out.copy_from_slice(point.to_bytes().as_slice());
    out
}

fn bench_structure(c: &mut Criterion, text: &str, restore_with: &[&str]) {
    let structure = AccessStructure::parse(text).unwrap();
    let secret = Scalar::random(&mut rand::rng());
    let keys: Vec<HolderSecretKey> = structure
        .holders()
        .iter()
        .map(|l| HolderSecretKey::generate(*l).unwrap())
        .collect();
    let publics: Vec<HolderPublicKey> = keys.iter().map(HolderSecretKey::public).collect();
    let context = BackupContext {
        wallet_id: "bench-wallet".into(),
        wallet_name: "Bench".into(),
        party: 0,
        threshold_t: 2,
        threshold_n: 3,
        epoch: 1,
        wallet_public_key: compressed(&(ProjectivePoint::GENERATOR * Scalar::from(7u64))),
        public_share: compressed(&(ProjectivePoint::GENERATOR * secret)),
        created_at: 1_700_000_000,
    };
    let aux: Vec<u8> = (0..AUX_BYTES).map(|i| (i % 251) as u8).collect();
    let backup = Backup::create(&secret, context.clone(), &structure, &publics, &aux).unwrap();
    eprintln!(
        "{text}: backup file {} bytes ({} holders, aux {} bytes)",
        backup.to_bytes().len(),
        publics.len(),
        aux.len()
    );
    let restore_keys: Vec<HolderSecretKey> = restore_with
        .iter()
        .map(|l| {
            let k = keys.iter().find(|k| k.label() == *l).unwrap();
            HolderSecretKey::from_bytes(*l, *k.to_bytes()).unwrap()
        })
        .collect();

    let mut group = c.benchmark_group(text);
    group.sample_size(10);
    group.bench_function("create", |b| {
        b.iter(|| Backup::create(&secret, context.clone(), &structure, &publics, &aux).unwrap())
    });
    group.bench_function("verify", |b| b.iter(|| backup.verify().unwrap()));
    group.bench_function("restore", |b| {
        b.iter(|| backup.restore(&restore_keys).unwrap())
    });
    group.finish();
}

fn benches(c: &mut Criterion) {
    bench_structure(c, "threshold(2, device, usb, cloud)", &["usb", "cloud"]);
    bench_structure(c, "threshold(2, a, b, c, d)", &["b", "d"]);
}

criterion_group!(backup, benches);
criterion_main!(backup);
