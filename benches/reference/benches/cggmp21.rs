//! Reference benchmark: the audited `cggmp21` crate (=0.6.3, secp256k1), all parties in one
//! process and one thread, no network. See `../README.md`.
//!
//! Every timing is the *total* over all parties (their work runs one after another in this
//! thread); per-party = total / parties.
//!
//! Three parts, in this order:
//! 1. Plain timing loop (not criterion): Paillier safe-prime generation and the aux-info
//!    protocol. These take tens of seconds per run, too slow for criterion's minimum of ten
//!    samples within the ten-minute budget. The keys this produces are reused below.
//! 2. criterion: keygen without aux info, presigning, the online phase from a presignature,
//!    and interactive (one-shot) signing.
//! 3. Traffic of one signing run, and a markdown summary of everything on stdout.

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use criterion::{BatchSize, Criterion, SamplingMode};
use tessera_reference_bench::{
    assert_valid, aux_info_gen, complete, data_to_sign, generate_primes, keygen_non_threshold,
    keygen_threshold, presign, presign_traffic, sign_interactive, sign_traffic,
    sign_with_presignatures, traffic, KeyShare, E,
};

/// Key shares plus everything measured while making them, for one `t`-of-`n` configuration.
struct Setup {
    t: u16,
    n: u16,
    shares: Vec<KeyShare<E>>,
    /// Safe-prime generation, one sample per party (each = two 1536-bit safe primes).
    prime_samples: Vec<Duration>,
    /// The aux-info protocol for all `n` parties, primes given; one sample per run.
    aux_samples: Vec<Duration>,
    /// One observed end-to-end "keygen with aux set-up": keygen + every party's primes +
    /// aux-info protocol + `KeyShare::from_parts`.
    end_to_end: Duration,
}

impl Setup {
    fn label(&self) -> String {
        format!("{}-of-{}", self.t, self.n)
    }
    /// Keygen indices of the signers: the first `t` parties.
    fn signers(&self) -> Vec<u16> {
        (0..self.t).collect()
    }
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn setup(t: u16, n: u16, aux_runs: usize) -> Setup {
    eprintln!("[set-up {t}-of-{n}] generating Paillier primes for {n} parties (slow) ...");
    let start = Instant::now();
    let incomplete = keygen_threshold(t, n);
    let mut primes = Vec::new();
    let mut prime_samples = Vec::new();
    for i in 0..n {
        let s = Instant::now();
        primes.push(generate_primes());
        prime_samples.push(s.elapsed());
        eprintln!(
            "  party {i}: primes in {:.1?}",
            prime_samples[prime_samples.len() - 1]
        );
    }
    let mut aux_samples = Vec::new();
    let s = Instant::now();
    let aux = aux_info_gen(primes.clone());
    aux_samples.push(s.elapsed());
    let shares = complete(incomplete, aux);
    let end_to_end = start.elapsed();
    eprintln!("  aux-info protocol run 1: {:.1?}", aux_samples[0]);
    for run in 1..aux_runs {
        // Reuses the same primes: only the protocol is timed here.
        let s = Instant::now();
        let _ = aux_info_gen(primes.clone());
        aux_samples.push(s.elapsed());
        eprintln!(
            "  aux-info protocol run {}: {:.1?}",
            run + 1,
            aux_samples[run]
        );
    }
    // The set-up must produce working keys.
    let data = data_to_sign();
    let signers: Vec<u16> = (0..t).collect();
    let sig = sign_interactive(&shares, &signers, data);
    assert_valid(&shares, &sig, &data);
    Setup {
        t,
        n,
        shares,
        prime_samples,
        aux_samples,
        end_to_end,
    }
}

fn bench_keygen(c: &mut Criterion) {
    let mut g = c.benchmark_group("keygen");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    g.bench_function("2-of-2", |b| b.iter(|| keygen_threshold(2, 2)));
    g.bench_function("2-of-2-non-threshold", |b| {
        b.iter(|| keygen_non_threshold(2))
    });
    g.bench_function("2-of-3", |b| b.iter(|| keygen_threshold(2, 3)));
    g.finish();
}

fn bench_signing(c: &mut Criterion, setups: &[Setup]) {
    let data = data_to_sign();

    let mut g = c.benchmark_group("presign");
    // ~1.5 s per run: flat sampling, one run per sample, ten samples.
    g.sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(15));
    for s in setups {
        let signers = s.signers();
        g.bench_function(s.label(), |b| b.iter(|| presign(&s.shares, &signers)));
    }
    g.finish();

    let mut g = c.benchmark_group("sign_online");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2));
    for s in setups {
        let presigs = presign(&s.shares, &s.signers());
        let sig = sign_with_presignatures(presigs.clone(), data);
        assert_valid(&s.shares, &sig, &data);
        // Benchmark only: a presignature must never sign twice in production (it leaks the
        // key for two different messages). Here the message is fixed and nothing is kept.
        g.bench_function(s.label(), |b| {
            b.iter_batched(
                || presigs.clone(),
                |p| sign_with_presignatures(p, data),
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();

    let mut g = c.benchmark_group("sign_interactive");
    g.sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(15));
    for s in setups {
        let signers = s.signers();
        g.bench_function(s.label(), |b| {
            b.iter(|| sign_interactive(&s.shares, &signers, data))
        });
    }
    g.finish();
}

/// Median (ns) that criterion recorded for `group/id` in this run, if it ran.
fn criterion_median(group: &str, id: &str) -> Option<f64> {
    let home = std::env::var_os("CRITERION_HOME")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("CARGO_TARGET_DIR").map(|d| PathBuf::from(d).join("criterion"))
        })
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/criterion"));
    let path = home.join(group).join(id).join("new/estimates.json");
    let text = std::fs::read_to_string(path).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v["median"]["point_estimate"].as_f64()
}

fn median(samples: &[Duration]) -> Duration {
    let mut v = samples.to_vec();
    v.sort();
    let m = v.len() / 2;
    if v.len().is_multiple_of(2) {
        (v[m - 1] + v[m]) / 2
    } else {
        v[m]
    }
}

fn mean(samples: &[Duration]) -> Duration {
    samples.iter().sum::<Duration>() / u32::try_from(samples.len()).unwrap_or(u32::MAX)
}

fn fmt(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s >= 1.0 {
        format!("{s:.2} s")
    } else if s >= 1e-3 {
        format!("{:.2} ms", s * 1e3)
    } else {
        format!("{:.1} µs", s * 1e6)
    }
}

fn fmt_ns(ns: Option<f64>) -> Option<Duration> {
    ns.map(|ns| Duration::from_secs_f64(ns / 1e9))
}

struct Row {
    op: String,
    total: Option<Duration>,
    parties: u16,
    bytes: String,
    how: &'static str,
}

fn print_row(r: &Row) {
    let (total, per) = match r.total {
        Some(t) => (fmt(t), fmt(t / u32::from(r.parties))),
        None => ("n/a (not run)".into(), "n/a".into()),
    };
    println!(
        "| {} | {} | {} | {} | {} | {} |",
        r.op, total, r.parties, per, r.bytes, r.how
    );
}

fn kib(b: usize) -> String {
    format!("{b} B ({:.1} KiB)", b as f64 / 1024.0)
}

fn main() {
    // `cargo bench` passes `--bench`; without it (cargo test --benches) criterion runs each
    // benchmark once, and the plain loop does one aux-info run per configuration.
    let bench_mode = std::env::args().any(|a| a == "--bench");
    let aux_runs = env_usize("REF_BENCH_AUX_RUNS", if bench_mode { 3 } else { 1 }).max(1);

    // Part 1: primes + aux info (plain timing), producing the keys used below.
    let setups = [setup(2, 2, aux_runs), setup(2, 3, aux_runs)];

    // Part 2: criterion.
    let mut c = Criterion::default().configure_from_args();
    bench_keygen(&mut c);
    bench_signing(&mut c, &setups);
    c.final_summary();

    // Part 3: traffic and the summary.
    let data = data_to_sign();
    let mut traffic_rows = Vec::new();
    for s in &setups {
        let signers = s.signers();
        let pre = presign_traffic(&s.shares, &signers);
        let partial_size = {
            let presigs: Vec<_> = pre.iter().map(|(p, _)| p.clone()).collect();
            let partial = presigs[0].clone().issue_partial_signature(data);
            let sig = sign_with_presignatures(presigs, data);
            assert_valid(&s.shares, &sig, &data);
            traffic::sizes(&partial)
        };
        let (sig, full) = sign_traffic(&s.shares, &signers, data);
        assert_valid(&s.shares, &sig, &data);
        let pre_max = pre
            .iter()
            .map(|(_, t)| *t)
            .max_by_key(|t| t.postcard_delivered);
        let full_max = full.iter().copied().max_by_key(|t| t.postcard_delivered);
        traffic_rows.push((s.label(), pre_max, partial_size, full_max, s.t));
    }

    let mut rows = Vec::new();
    for (id, label) in [
        ("2-of-2", "keygen 2-of-2 (threshold t=2), no aux"),
        (
            "2-of-2-non-threshold",
            "keygen 2-of-2 (non-threshold, original CGGMP21), no aux",
        ),
        ("2-of-3", "keygen 2-of-3 (threshold), no aux"),
    ] {
        let n = if id == "2-of-3" { 3 } else { 2 };
        rows.push(Row {
            op: label.into(),
            total: fmt_ns(criterion_median("keygen", id)),
            parties: n,
            bytes: "–".into(),
            how: "criterion median, 10 samples",
        });
    }
    let mut prime_all = Vec::new();
    for s in &setups {
        prime_all.extend_from_slice(&s.prime_samples);
    }
    let prime_mean = mean(&prime_all);
    rows.push(Row {
        op: format!(
            "Paillier primes, one party (`PregeneratedPrimes::generate`; mean of {} parties, median {}, min {}, max {})",
            prime_all.len(),
            fmt(median(&prime_all)),
            fmt(*prime_all.iter().min().unwrap_or(&Duration::ZERO)),
            fmt(*prime_all.iter().max().unwrap_or(&Duration::ZERO)),
        ),
        total: Some(prime_mean),
        parties: 1,
        bytes: "–".into(),
        how: "plain loop, mean",
    });
    for s in &setups {
        let aux = median(&s.aux_samples);
        rows.push(Row {
            op: format!("aux-info protocol n={}, primes given", s.n),
            total: Some(aux),
            parties: s.n,
            bytes: "–".into(),
            how: "plain loop, median",
        });
        let keygen = fmt_ns(criterion_median("keygen", &s.label())).unwrap_or(Duration::ZERO);
        rows.push(Row {
            op: format!(
                "keygen with aux set-up {} (keygen + n × mean primes + aux protocol)",
                s.label()
            ),
            total: Some(keygen + prime_mean * u32::from(s.n) + aux),
            parties: s.n,
            bytes: "–".into(),
            how: "sum of the rows above",
        });
        rows.push(Row {
            op: format!(
                "keygen with aux set-up {}, one observed end-to-end run (primes: {})",
                s.label(),
                s.prime_samples
                    .iter()
                    .map(|d| fmt(*d))
                    .collect::<Vec<_>>()
                    .join(" + ")
            ),
            total: Some(s.end_to_end),
            parties: s.n,
            bytes: "–".into(),
            how: "plain, one run",
        });
    }
    for (label, pre, partial, full, t) in &traffic_rows {
        let copies = usize::from(*t) - 1;
        let pre_b = pre.map(|p| p.postcard_delivered).unwrap_or(0);
        let presign_t = fmt_ns(criterion_median("presign", label));
        let online_t = fmt_ns(criterion_median("sign_online", label));
        rows.push(Row {
            op: format!("presign {label} (t={t} signers)"),
            total: presign_t,
            parties: *t,
            bytes: kib(pre_b),
            how: "criterion median, 10 samples",
        });
        rows.push(Row {
            op: format!("online sign from presignatures {label} (issue partials + combine)"),
            total: online_t,
            parties: *t,
            bytes: kib(partial.0 * copies),
            how: "criterion median, 10 samples",
        });
        rows.push(Row {
            op: format!("presign + sign {label}"),
            total: presign_t.zip(online_t).map(|(a, b)| a + b),
            parties: *t,
            bytes: kib(pre_b + partial.0 * copies),
            how: "sum of the two rows above",
        });
        rows.push(Row {
            op: format!("sign without presign (interactive) {label}"),
            total: fmt_ns(criterion_median("sign_interactive", label)),
            parties: *t,
            bytes: kib(full.map(|f| f.postcard_delivered).unwrap_or(0)),
            how: "criterion median, 10 samples",
        });
    }

    println!();
    println!("## cggmp21 0.6.3 reference results (all parties in one thread)");
    println!();
    println!(
        "| operation | total, all parties | parties | per party | bytes sent per party (postcard) | how |"
    );
    println!("| --- | --- | --- | --- | --- | --- |");
    for r in &rows {
        print_row(r);
    }
    println!();
    println!("Traffic detail (one run, heaviest sender; emitted = broadcast counted once, delivered = once per recipient):");
    println!();
    println!("| protocol | broadcasts | p2p | postcard emitted | postcard delivered | serde_json emitted | serde_json delivered |");
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    for (label, pre, partial, full, _) in &traffic_rows {
        for (name, t) in [("presign", pre), ("interactive sign", full)] {
            if let Some(t) = t {
                println!(
                    "| {name} {label} | {} | {} | {} | {} | {} | {} |",
                    t.broadcasts,
                    t.p2p,
                    t.postcard_emitted,
                    t.postcard_delivered,
                    t.json_emitted,
                    t.json_delivered
                );
            }
        }
        println!(
            "| partial signature {label} | – | 1 per other signer | {} | {} | {} | {} |",
            partial.0, partial.0, partial.1, partial.1
        );
    }
}
