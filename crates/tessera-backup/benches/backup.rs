//! Backup create / verify / restore of a real 2-of-2 device share (its signing state travels in
//! the file), under `threshold(2, device, usb, cloud)` and `threshold(2, a, b, c, d)`, at 128
//! cut-and-choose repetitions per holder (soundness 2^-128). Prints each backup's file size once.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use criterion::{Criterion, criterion_group, criterion_main};
use tessera_backup::holder::{HolderPublicKey, HolderSecretKey};
use tessera_backup::structure::AccessStructure;
use tessera_backup::wallet::{backup_share, restore_share};
use tessera_core::{KeyShare, Threshold, runner};

fn bench_structure(c: &mut Criterion, share: &KeyShare, text: &str, restore_with: &[&str]) {
    let structure = AccessStructure::parse(text).unwrap();
    let keys: Vec<HolderSecretKey> = structure
        .holders()
        .iter()
        .map(|l| HolderSecretKey::generate(*l).unwrap())
        .collect();
    let publics: Vec<HolderPublicKey> = keys.iter().map(HolderSecretKey::public).collect();
    let backup = backup_share(share, "bench", &structure, &publics).unwrap();
    eprintln!(
        "{text}: backup file {} bytes ({} holders, share state {} bytes)",
        backup.to_bytes().len(),
        publics.len(),
        share.to_bytes().len()
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
        b.iter(|| backup_share(share, "bench", &structure, &publics).unwrap())
    });
    group.bench_function("verify", |b| b.iter(|| backup.verify().unwrap()));
    group.bench_function("restore", |b| {
        b.iter(|| restore_share(&backup, &restore_keys).unwrap())
    });
    group.finish();
}

fn benches(c: &mut Criterion) {
    let shares = runner::keygen(Threshold::new(2, 2).unwrap()).unwrap();
    bench_structure(
        c,
        &shares[0],
        "threshold(2, device, usb, cloud)",
        &["usb", "cloud"],
    );
    bench_structure(c, &shares[0], "threshold(2, a, b, c, d)", &["b", "d"]);
}

criterion_group!(backup, benches);
criterion_main!(backup);
