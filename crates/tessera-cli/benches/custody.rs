//! Custody controls' cost and replicas: end-to-end sign latency with policies and the audit log
//! on vs off (two real server processes, signs interleaved so that machine noise hits both), and
//! throughput with one vs two replicas on one PostgreSQL (8 concurrent clients, 10 s each).
//!
//! `cargo bench -p tessera-cli --bench custody`. The PostgreSQL part needs
//! `TESSERA_BENCH_DATABASE_URL` (an admin URL, e.g. the throwaway cluster of `scripts/test`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tessera_api::intent::SignKind;
use tessera_client::ServerClient;
use tessera_core::{DerivationPath, KeyShare};

#[path = "../tests/common/mod.rs"]
mod common;
use common::Server;

/// A server whose rate limits and session caps are far above what the bench asks of it (it
/// measures the server's work, not its limits); policies and the audit log as `extra` says.
fn server(data: &Path, extra: &[&str]) -> Server {
    let mut args = common::UNLIMITED.to_vec();
    args.extend_from_slice(extra);
    Server::start(data, &args)
}

struct Client {
    client: ServerClient,
    share: KeyShare,
    _home: tempfile::TempDir,
}

async fn client(url: &str, user: &str) -> Client {
    let home = tempfile::tempdir().unwrap();
    let id = common::identity(home.path());
    let mut client = ServerClient::new(url).unwrap();
    let d = client.register(&id, user, "bench").await.unwrap();
    client.login(&id, &d.device_id).await.unwrap();
    let share = client.keygen("w", |_, _| {}).await.unwrap();
    Client {
        client,
        share,
        _home: home,
    }
}

impl Client {
    async fn sign(&self, n: u64) -> Duration {
        let kind = SignKind::EthMessage {
            message: format!("bench {n}"),
        };
        let started = Instant::now();
        self.client
            .sign_kind(
                &self.share,
                &kind,
                &DerivationPath::root(),
                |_, _| {},
                |_| {},
            )
            .await
            .unwrap();
        started.elapsed()
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn median_p99(mut v: Vec<Duration>) -> (f64, f64) {
    v.sort();
    (
        ms(v[v.len() / 2]),
        ms(v[(v.len() * 99 / 100).min(v.len() - 1)]),
    )
}

/// Signs back to back from `clients` for `secs`; signatures per second.
async fn throughput(clients: Vec<Arc<Client>>, secs: u64) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let started = Instant::now();
    let tasks: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(i, c)| {
            tokio::spawn(async move {
                let mut n = 0u64;
                while Instant::now() < deadline {
                    c.sign(1_000_000 * i as u64 + n).await;
                    n += 1;
                }
                n
            })
        })
        .collect();
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    total as f64 / started.elapsed().as_secs_f64()
}

fn fresh_database(admin: &str) -> String {
    let name = format!(
        "tessera_bench_{}",
        hex::encode(&tessera_core::protocols::fresh_nonce()[..6])
    );
    let out = Command::new("psql")
        .args([admin, "-q", "-c", &format!("CREATE DATABASE {name}")])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    format!("{}/{name}", admin.rsplit_once('/').unwrap().0)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // `cargo bench` passes --bench; without it (`cargo test --benches`) a smoke run checks that
    // every part still works.
    let full = std::env::args().any(|a| a == "--bench");
    let quick = std::env::args().any(|a| a == "--quick");
    let (warm, signs) = match (full, quick) {
        (false, _) => (2, 5),
        (true, true) => (20, 50),
        (true, false) => (20, 200),
    };
    let dir = tempfile::tempdir().unwrap();

    // 1. Controls on vs off, SQLite, one client each, interleaved.
    let on = server(&dir.path().join("on"), &[]);
    let off = server(&dir.path().join("off"), &["--benchmark-without-controls"]);
    let (c_on, c_off) = (client(&on.url, "on").await, client(&off.url, "off").await);
    for n in 0..warm {
        c_on.sign(n).await;
        c_off.sign(n).await;
    }
    let (mut with, mut without) = (Vec::new(), Vec::new());
    for n in 0..signs {
        with.push(c_on.sign(100 + n).await);
        without.push(c_off.sign(100 + n).await);
    }
    let (w_med, w_p99) = median_p99(with);
    let (o_med, o_p99) = median_p99(without);
    println!("sign end to end, one client, SQLite, {signs} signs each (interleaved):");
    println!("  policy + audit on   median {w_med:>7.2} ms   p99 {w_p99:>7.2} ms");
    println!("  policy + audit off  median {o_med:>7.2} ms   p99 {o_p99:>7.2} ms");
    println!("  ratio on / off (median) {:.3}", w_med / o_med);
    drop((on, off));

    // 2. One replica vs two on one PostgreSQL.
    let Ok(admin) = std::env::var("TESSERA_BENCH_DATABASE_URL") else {
        println!("(set TESSERA_BENCH_DATABASE_URL for the replica throughput)");
        return;
    };
    let secs = match (full, quick) {
        (false, _) => 1,
        (true, true) => 5,
        (true, false) => 10,
    };
    let database = fresh_database(&admin);
    let data = dir.path().join("replicas");
    let a = server(&data, &["--database-url", &database]);
    let b = server(&data, &["--database-url", &database]);
    // One replica: 8 clients all through A. Two replicas: 8 other clients, half through each.
    let mut through_a = Vec::new();
    let mut split = Vec::new();
    for i in 0..8 {
        through_a.push(Arc::new(client(&a.url, &format!("a{i}")).await));
        let url = if i % 2 == 0 { &a.url } else { &b.url };
        split.push(Arc::new(client(url, &format!("s{i}")).await));
    }
    let one = throughput(through_a, secs).await;
    let two = throughput(split, secs).await;
    println!("throughput on one PostgreSQL, 8 concurrent clients, {secs} s each:");
    println!("  one replica   {one:>7.1} sig/s");
    println!("  two replicas  {two:>7.1} sig/s   ratio {:.2}", two / one);
}
