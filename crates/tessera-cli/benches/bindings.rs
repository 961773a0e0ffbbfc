//! The bindings' overhead: sign latency through the Python bindings (`crates/tessera-ffi`)
//! against the Rust SDK, in the same run against the same real `tessera server` process, and
//! the size of the library the bindings load.
//!
//! `cargo bench -p tessera-cli --bench bindings` with `TESSERA_PYTHON` naming a Python whose
//! environment has the `tessera` package built in release (`scripts/bindings --release`, then
//! `pip install ./bindings/python`). Both sides make the same call for each signature: the SDK's
//! `sign` of an EIP-191 message, keystore unseal (Argon2id, default parameters) included; the
//! Python one adds the user-presence callback and the crossing of the boundary.
//! Run without `--bench` (as `cargo test --benches` does) it makes a quick smoke run, of the
//! Python side too where `TESSERA_PYTHON` is set.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tessera_api::intent::SignKind;
use tessera_client::device::{Device, ServerAddress};
use tessera_core::DerivationPath;
use tessera_store::keystore::MemoryEntries;
use tessera_store::{MemoryHome, Passphrase};

#[path = "../tests/common/mod.rs"]
mod common;
use common::Server;

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Median, mean and 90th percentile, in ms.
fn summary(mut v: Vec<Duration>) -> (f64, f64, f64) {
    v.sort();
    let mean = v.iter().map(|d| ms(*d)).sum::<f64>() / v.len() as f64;
    (
        ms(v[v.len() / 2]),
        mean,
        ms(v[(v.len() * 9 / 10).min(v.len() - 1)]),
    )
}

/// `signs` signatures through the Rust SDK's device workflows, each timed.
async fn rust_signs(url: &str, signs: usize) -> Vec<Duration> {
    let device = Device::in_storage(
        Arc::new(MemoryHome::default()),
        Arc::new(MemoryEntries::new()),
    );
    let passphrase = || Passphrase::new("bench passphrase".into()).unwrap();
    let server = ServerAddress {
        url: url.to_owned(),
        fingerprint: None,
    };
    let client = server.client().unwrap();
    let user = format!("bench-rust-{}", std::process::id());
    device
        .init(&client, &passphrase(), &server, &user, "rust")
        .await
        .unwrap();
    let online = device.connect(passphrase()).await.unwrap();
    online.keygen("w", |_, _| {}).await.unwrap();
    let mut times = Vec::new();
    for n in 0..signs {
        let kind = SignKind::EthMessage {
            message: format!("bench {n}"),
        };
        let started = Instant::now();
        online
            .sign("w", &kind, &DerivationPath::root(), |_, _| {}, |_| {})
            .await
            .unwrap();
        times.push(started.elapsed());
    }
    times
}

/// The Python side's figures, and the size of the library its `tessera` package loads.
fn python_signs(python: &str, url: &str, signs: usize) -> (serde_json::Value, Option<u64>) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = Command::new(python)
        .arg(root.join("bindings/python/bench/sign_latency.py"))
        .env("TESSERA_SERVER_URL", url)
        .env("TESSERA_BENCH_SIGNS", signs.to_string())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the Python bench failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .last()
        .expect("no output from the Python bench");
    let figures: serde_json::Value = serde_json::from_str(line).unwrap();
    let library = Command::new(python)
        .args([
            "-c",
            "import os, tessera; print(os.path.join(os.path.dirname(tessera.__file__), 'libtessera_ffi.so'))",
        ])
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|p| std::fs::metadata(p.trim()).ok())
        .map(|m| m.len());
    (figures, library)
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let signs = if full { 40 } else { 2 };
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(data.path(), &common::UNLIMITED);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    eprintln!("rust SDK: {signs} signs");
    let (median, mean, p90) = summary(runtime.block_on(rust_signs(&server.url, signs)));
    println!("| caller | signs | median ms | mean ms | p90 ms |");
    println!("|---|---|---|---|---|");
    println!("| Rust SDK (`Online::sign`) | {signs} | {median:.1} | {mean:.1} | {p90:.1} |");
    match std::env::var("TESSERA_PYTHON") {
        Ok(python) => {
            eprintln!("python bindings: {signs} signs");
            let (py, library) = python_signs(&python, &server.url, signs);
            println!(
                "| Python bindings (`OnlineDevice.sign_message`) | {} | {:.1} | {:.1} | {:.1} |",
                py["signs"],
                py["median_ms"].as_f64().unwrap(),
                py["mean_ms"].as_f64().unwrap(),
                py["p90_ms"].as_f64().unwrap()
            );
            if let Some(bytes) = library {
                println!(
                    "\nlibtessera_ffi.so as the Python package loads it: {:.1} MB",
                    bytes as f64 / 1e6
                );
            }
        }
        Err(_) => eprintln!(
            "TESSERA_PYTHON is not set: the Python side was not measured (see this file's doc)"
        ),
    }
}
