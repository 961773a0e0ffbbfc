//! Tessera's sessions against the same operations called directly on the `dkls23` crate.
//!
//! `cargo bench -p tessera-core --bench protocols`. All parties run in one thread, so a
//! measurement is the sum of every party's work; divide by the number of parties for one party.
//! The raw runs pass the engine's structs in memory; Tessera's encode every message to bytes,
//! check envelopes, validate payloads and re-verify the signature with k256, as in production.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use dkls23::DkgSession;
use dkls23::protocols::dkg::{BroadcastDerivationPhase2to4, BroadcastDerivationPhase3to4};
use dkls23::protocols::signing::SignData;
use dkls23::protocols::{Parameters, Party, PartyIndex};
use tessera_core::structure::WalletStructure;
use tessera_core::{DerivationPath, KeyShare, Threshold, runner};

type C = k256::Secp256k1;

fn idx(i: u8) -> PartyIndex {
    PartyIndex::new(i).unwrap()
}

/// Raw DKG: the four phases, messages routed as structs.
fn raw_keygen(t: u8, n: u8) -> Vec<Party<C>> {
    let parameters = Parameters::new(t, n).unwrap();
    let sid = vec![7u8; 32];
    let mut sessions: Vec<DkgSession<C>> = (1..=n)
        .map(|i| DkgSession::new(parameters.clone(), idx(i), sid.clone()))
        .collect();
    let rows: Vec<Vec<k256::Scalar>> = sessions.iter().map(DkgSession::phase1).collect();
    let fragments: Vec<Vec<k256::Scalar>> = (0..n as usize)
        .map(|j| rows.iter().map(|r| r[j]).collect())
        .collect();
    let mut proofs = Vec::new();
    let mut zero2 = Vec::new();
    let mut bip2: BTreeMap<PartyIndex, BroadcastDerivationPhase2to4> = BTreeMap::new();
    for (i, s) in sessions.iter_mut().enumerate() {
        let (pc, z, b) = s.phase2(&fragments[i]).unwrap();
        proofs.push(pc);
        zero2.extend(z);
        bip2.insert(idx(i as u8 + 1), b);
    }
    let mut zero3 = Vec::new();
    let mut mul3 = Vec::new();
    let mut bip3: BTreeMap<PartyIndex, BroadcastDerivationPhase3to4> = BTreeMap::new();
    for (i, s) in sessions.iter_mut().enumerate() {
        let (z, m, b) = s.phase3().unwrap();
        zero3.extend(z);
        mul3.extend(m);
        bip3.insert(idx(i as u8 + 1), b);
    }
    sessions
        .into_iter()
        .enumerate()
        .map(|(i, s)| {
            let me = idx(i as u8 + 1);
            let z2: Vec<_> = zero2
                .iter()
                .filter(|m| m.parties.receiver == me)
                .cloned()
                .collect();
            let z3: Vec<_> = zero3
                .iter()
                .filter(|m| m.parties.receiver == me)
                .cloned()
                .collect();
            let m3: Vec<_> = mul3
                .iter()
                .filter(|m| m.parties.receiver == me)
                .cloned()
                .collect();
            s.phase4(&proofs, &z2, &z3, &m3, &bip2, &bip3, |_| String::new())
                .unwrap()
                .0
        })
        .collect()
}

/// A message as the recipient sees it after the wire: postcard out and back in.
fn wire<T: serde::Serialize + serde::de::DeserializeOwned>(m: T, on_wire: bool) -> T {
    if !on_wire {
        return m;
    }
    let bytes = postcard::to_allocvec(&m).unwrap();
    postcard::take_from_bytes(&bytes).unwrap().0
}

/// Raw signing by the first `t` parties: the crate's `SignSession`, messages as structs, or
/// (`on_wire`) each message serialized and deserialized with postcard as any transport must.
fn raw_sign(parties: &[Party<C>], digest: [u8; 32], on_wire: bool) -> [u8; 32] {
    let signers: Vec<&Party<C>> = parties
        .iter()
        .take(parties[0].parameters.threshold as usize)
        .collect();
    let ids: Vec<PartyIndex> = signers.iter().map(|p| p.party_index).collect();
    let mut sessions = Vec::new();
    let mut t1 = Vec::new();
    for p in &signers {
        let data = SignData {
            sign_id: vec![9u8; 32],
            counterparties: ids
                .iter()
                .copied()
                .filter(|&i| i != p.party_index)
                .collect(),
            message_hash: digest,
        };
        let (s, out) = dkls23::SignSession::new(p, data).unwrap();
        sessions.push(s);
        t1.extend(out.into_iter().map(|m| wire(m, on_wire)));
    }
    let mut t2 = Vec::new();
    for (s, me) in sessions.iter_mut().zip(&ids) {
        let inbox: Vec<_> = t1
            .iter()
            .filter(|m| m.parties.receiver == *me)
            .cloned()
            .collect();
        t2.extend(
            s.phase2(&inbox)
                .unwrap()
                .into_iter()
                .map(|m| wire(m, on_wire)),
        );
    }
    let mut t3 = Vec::new();
    for (s, me) in sessions.iter_mut().zip(&ids) {
        let inbox: Vec<_> = t2
            .iter()
            .filter(|m| m.parties.receiver == *me)
            .cloned()
            .collect();
        t3.push(wire(s.phase3(&inbox).unwrap(), on_wire));
    }
    let mut r = [0u8; 32];
    for s in sessions {
        r = s.phase4(&t3, true).unwrap().r;
    }
    r
}

/// Raw complete refresh of all parties.
fn raw_refresh(parties: &[Party<C>]) -> Vec<Party<C>> {
    let sid = vec![5u8; 32];
    let n = parties.len();
    let rows: Vec<Vec<k256::Scalar>> = parties.iter().map(Party::refresh_complete_phase1).collect();
    let fragments: Vec<Vec<k256::Scalar>> = (0..n)
        .map(|j| rows.iter().map(|r| r[j]).collect())
        .collect();
    let mut kept2 = Vec::new();
    let mut proofs = Vec::new();
    let mut zero2 = Vec::new();
    let mut corrections = Vec::new();
    for (p, f) in parties.iter().zip(&fragments) {
        let (c, pc, k, z) = p.refresh_complete_phase2(&sid, f);
        corrections.push(c);
        proofs.push(pc);
        kept2.push(k);
        zero2.extend(z);
    }
    let mut kept3 = Vec::new();
    let mut zero3 = Vec::new();
    let mut mul3 = Vec::new();
    for (p, k) in parties.iter().zip(&kept2) {
        let (zk, z, mk, m) = p.refresh_complete_phase3(&sid, k);
        kept3.push((zk, mk));
        zero3.extend(z);
        mul3.extend(m);
    }
    parties
        .iter()
        .zip(&kept3)
        .zip(&corrections)
        .map(|((p, (zk, mk)), c)| {
            let me = p.party_index;
            let z2: Vec<_> = zero2
                .iter()
                .filter(|m| m.parties.receiver == me)
                .cloned()
                .collect();
            let z3: Vec<_> = zero3
                .iter()
                .filter(|m| m.parties.receiver == me)
                .cloned()
                .collect();
            let m3: Vec<_> = mul3
                .iter()
                .filter(|m| m.parties.receiver == me)
                .cloned()
                .collect();
            p.refresh_complete_phase4(&sid, c, &proofs, zk, &z2, &z3, mk, &m3)
                .unwrap()
        })
        .collect()
}

fn signers(shares: &[KeyShare]) -> Vec<&KeyShare> {
    shares
        .iter()
        .take(usize::from(shares[0].threshold().t))
        .collect()
}

/// Structures of issue #14's figures.
const STRUCTURES: [&str; 2] = [
    "and(server, or(phone, laptop, tablet))",
    "threshold(2, a, b, c)",
];

fn benches(c: &mut Criterion) {
    let root = DerivationPath::root();
    let digest = [0x42u8; 32];

    let mut keygen = c.benchmark_group("keygen");
    keygen
        .sample_size(10)
        .measurement_time(Duration::from_secs(20));
    for (t, n) in [(2u8, 2u8), (2, 3)] {
        let threshold = Threshold::new(t, n).unwrap();
        keygen.bench_function(format!("tessera {t}-of-{n}"), |b| {
            b.iter(|| black_box(runner::keygen(threshold).unwrap()))
        });
        keygen.bench_function(format!("dkls23 {t}-of-{n}"), |b| {
            b.iter(|| black_box(raw_keygen(t, n)))
        });
    }
    // Structure wallets against the plain t-of-n wallet of the same size (issue #14's figures).
    for text in STRUCTURES {
        let structure = WalletStructure::parse(text).unwrap();
        keygen.bench_function(format!("tessera {text}"), |b| {
            b.iter(|| black_box(runner::keygen_structure(&structure).unwrap()))
        });
    }
    keygen.bench_function("tessera 2-of-4", |b| {
        b.iter(|| black_box(runner::keygen(Threshold::new(2, 4).unwrap()).unwrap()))
    });
    keygen.finish();

    let mut sign = c.benchmark_group("sign");
    sign.sample_size(100)
        .measurement_time(Duration::from_secs(10));
    for (t, n) in [(2u8, 2u8), (2, 3)] {
        let shares = runner::keygen(Threshold::new(t, n).unwrap()).unwrap();
        let set = signers(&shares);
        let (_, stats) = runner::sign(&set, digest, &root).unwrap();
        println!(
            "bytes: tessera sign {t}-of-{n}: {} bytes sent per party ({} messages in all), share file {} bytes",
            stats.max_bytes_per_party(),
            stats.messages,
            shares[0].to_bytes().len()
        );
        sign.bench_function(format!("tessera {t}-of-{n}"), |b| {
            b.iter(|| black_box(runner::sign(&set, digest, &root).unwrap()))
        });
        let raw = raw_keygen(t, n);
        sign.bench_function(format!("dkls23 {t}-of-{n}"), |b| {
            b.iter(|| black_box(raw_sign(&raw, digest, false)))
        });
        sign.bench_function(format!("dkls23+postcard {t}-of-{n}"), |b| {
            b.iter(|| black_box(raw_sign(&raw, digest, true)))
        });
    }
    // Two signers each: a minimal quorum of each structure, and 2-of-n with the same n.
    for text in STRUCTURES {
        let structure = WalletStructure::parse(text).unwrap();
        let shares = runner::keygen_structure(&structure).unwrap();
        let quorum: Vec<&KeyShare> = structure.minimal_quorums()[0]
            .iter()
            .map(|p| &shares[usize::from(p.get())])
            .collect();
        let (_, stats) = runner::sign(&quorum, digest, &root).unwrap();
        println!(
            "bytes: tessera sign {text}: {} bytes sent per party, share file {} bytes",
            stats.max_bytes_per_party(),
            shares[0].to_bytes().len()
        );
        sign.bench_function(format!("tessera {text}"), |b| {
            b.iter(|| black_box(runner::sign(&quorum, digest, &root).unwrap()))
        });
        let n = u8::try_from(structure.party_count()).unwrap();
        let plain = runner::keygen(Threshold::new(2, n).unwrap()).unwrap();
        sign.bench_function(format!("tessera 2-of-{n} (as {text})"), |b| {
            b.iter(|| black_box(runner::sign(&[&plain[0], &plain[1]], digest, &root).unwrap()))
        });
    }
    sign.finish();

    let mut refresh = c.benchmark_group("refresh");
    refresh
        .sample_size(10)
        .measurement_time(Duration::from_secs(20));
    let shares = runner::keygen(Threshold::new(2, 2).unwrap()).unwrap();
    refresh.bench_function("tessera 2-of-2", |b| {
        b.iter(|| black_box(runner::refresh(&shares).unwrap()))
    });
    let raw = raw_keygen(2, 2);
    refresh.bench_function("dkls23 2-of-2", |b| b.iter(|| black_box(raw_refresh(&raw))));
    refresh.finish();

    // Resharing from a minimal quorum to the same structure (issue #14's figures): the engine's
    // key generation among the new parties plus the verifiable dealings.
    let mut reshare = c.benchmark_group("reshare");
    reshare
        .sample_size(10)
        .measurement_time(Duration::from_secs(20));
    for text in STRUCTURES {
        let structure = WalletStructure::parse(text).unwrap();
        let shares = runner::keygen_structure(&structure).unwrap();
        let quorum: Vec<&KeyShare> = structure.minimal_quorums()[0]
            .iter()
            .map(|p| &shares[usize::from(p.get())])
            .collect();
        let sessions = runner::reshare_sessions(&quorum, &structure, &[9; 32]).unwrap();
        let (_, stats) = runner::run(sessions).unwrap();
        println!(
            "bytes: tessera reshare {text}: {} bytes sent per party at most ({} messages in all)",
            stats.max_bytes_per_party(),
            stats.messages
        );
        reshare.bench_function(format!("tessera {text}"), |b| {
            b.iter(|| black_box(runner::reshare(&quorum, &structure).unwrap()))
        });
    }
    reshare.finish();
}

criterion_group!(protocols, benches);
criterion_main!(protocols);
