//! Durable signing requests end to end (issue 16's figures): a real `tessera server` process,
//! a real `tessera listen` process, and the device SDK over loopback sockets.
//!
//! `cargo bench -p tessera-cli --bench requests_e2e` prints a markdown table to stdout
//! (progress to stderr). Measured:
//!
//! - 100 requests (raw digests, a 2-of-2 wallet) created by a second device of the user while
//!   the wallet's device is offline; then that device's `tessera listen --co-sign digest` is
//!   started ("online"): the time from its start to the last signature stored, and requests
//!   per second over it (each signature runs the device's share unsealing, Argon2id, and one
//!   DKLs23 session with the server);
//! - on a fresh server, resident memory (`/proc/PID/status` VmRSS) before and after 10,000
//!   waiting requests are created, and the time to create them (16 at a time).
//!
//! Run without `--bench` (as `cargo test --bench '*'` does) it makes a quick smoke run.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, dead_code)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tessera_api::RequestState;
use tessera_api::intent::SignKind;
use tessera_api::requests::RequestQuery;
use tessera_client::device::{Device, Online};
use tessera_core::DerivationPath;
use tessera_store::Passphrase;

use common::cli::{PASSPHRASE, init_approved, tessera};
use common::{Server, UNLIMITED};

fn ok(home: &Path, args: &[&str]) -> String {
    let out = tessera(home, args);
    assert!(
        out.status.success(),
        "tessera {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Alice's phone (holding 2-of-2 wallet `w`, digests allowed) and laptop (approved, no share),
/// set up with the `tessera` CLI.
fn alice(server: &Server) -> (tempfile::TempDir, tempfile::TempDir) {
    let phone = tempfile::tempdir().unwrap();
    let laptop = tempfile::tempdir().unwrap();
    ok(
        phone.path(),
        &[
            "init",
            "--server",
            &server.url,
            "--user",
            "alice",
            "--name",
            "phone",
        ],
    );
    ok(phone.path(), &["keygen", "--name", "w"]);
    init_approved(phone.path(), laptop.path(), &server.url, "alice", "laptop");
    let policy = serde_json::to_string(&common::allow_digests()).unwrap();
    let file = phone.path().join("policy.json");
    std::fs::write(&file, policy).unwrap();
    ok(
        phone.path(),
        &[
            "policy",
            "set",
            "--wallet",
            "w",
            "--file",
            file.to_str().unwrap(),
        ],
    );
    (phone, laptop)
}

async fn online(home: &Path) -> Online {
    Device::open_dir(home)
        .connect(Passphrase::new(PASSPHRASE.into()).unwrap())
        .await
        .unwrap()
}

/// Creates `n` digest requests of wallet `w`, `parallel` at a time.
async fn create(online: &Online, n: usize, parallel: usize, salt: u8) -> Duration {
    let started = Instant::now();
    let path: DerivationPath = "m".parse().unwrap();
    let results: Vec<_> = futures_util::stream::iter(0..n)
        .map(|i| {
            let mut digest = [salt; 32];
            digest[..8].copy_from_slice(&(i as u64).to_be_bytes());
            let kind = SignKind::Digest {
                digest: hex::encode(digest),
            };
            let path = &path;
            async move { online.create_request("w", path, &kind, None).await }
        })
        .buffer_unordered(parallel)
        .collect()
        .await;
    for r in results {
        let info = r.unwrap();
        assert_eq!(info.state, RequestState::Ready);
    }
    started.elapsed()
}

async fn count(online: &Online, state: RequestState) -> usize {
    online
        .requests(&RequestQuery {
            wallet: None,
            state: Some(state),
        })
        .await
        .unwrap()
        .len()
}

fn rss_kb(pid: u32) -> u64 {
    common::process::status_kb(pid, "VmRSS:")
}

struct Listener(Child);

impl Drop for Listener {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Catchup {
    n: usize,
    created: Duration,
    first: Duration,
    last: Duration,
    /// The server's CPU time creating the requests, and co-signing them.
    cpu_created: Duration,
    cpu_signed: Duration,
}

/// `n` requests wait for the offline phone; its agent comes online and signs them all.
async fn catch_up(n: usize) -> Catchup {
    let server = Server::start_fresh(&UNLIMITED);
    let (phone, laptop) = alice(&server);
    let requester = online(laptop.path()).await;
    let pid = server.child.id();
    let cpu_start = common::process::cpu_time(pid);
    let created = create(&requester, n, 8, 0x11).await;
    let cpu_created = common::process::cpu_time(pid) - cpu_start;
    eprintln!("{n} requests wait; the phone's agent starts");
    let cpu_start = common::process::cpu_time(pid);
    let started = Instant::now();
    let _listener = Listener(
        Command::new(env!("CARGO_BIN_EXE_tessera"))
            .args(["listen", "--co-sign", "digest"])
            .env("TESSERA_HOME", phone.path())
            .env("TESSERA_PASSPHRASE", PASSPHRASE)
            .env_remove("TESSERA_DATABASE_URL")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut first = None;
    let deadline = Duration::from_secs(60 + 10 * n as u64);
    loop {
        let signed = count(&requester, RequestState::Signed).await;
        if signed > 0 && first.is_none() {
            first = Some(started.elapsed());
        }
        if signed == n {
            break;
        }
        assert!(
            started.elapsed() < deadline,
            "only {signed} of {n} signed after {deadline:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let last = started.elapsed();
    // Includes the requester's polling (GET /requests every 50 ms), a small share.
    let cpu_signed = common::process::cpu_time(pid) - cpu_start;
    Catchup {
        n,
        created,
        first: first.unwrap_or(last),
        last,
        cpu_created,
        cpu_signed,
    }
}

/// Server RSS before and after `n` waiting requests, its peak, the time to create them and
/// the server's CPU time doing it.
async fn waiting_rss(n: usize) -> (u64, u64, u64, Duration, Duration) {
    let server = Server::start_fresh(&UNLIMITED);
    let (_phone, laptop) = alice(&server);
    let requester = online(laptop.path()).await;
    let before = rss_kb(server.child.id());
    let cpu_start = common::process::cpu_time(server.child.id());
    // Each answer said `ready` (GET /requests lists at most 200).
    let took = create(&requester, n, 16, 0x22).await;
    let cpu = common::process::cpu_time(server.child.id()) - cpu_start;
    let with = rss_kb(server.child.id());
    let peak = common::process::status_kb(server.child.id(), "VmHWM:");
    (before, with, peak, took, cpu)
}

fn s(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    if !full {
        eprintln!("requests_e2e: no --bench argument, quick smoke run (use `cargo bench`)");
    }
    let (n, waiting) = if full { (100, 10_000) } else { (3, 20) };
    tessera_client::tls::install_crypto_provider();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let c = catch_up(n).await;
        eprintln!("{waiting} waiting requests, fresh server...");
        let (before, with, peak, took, cpu) = waiting_rss(waiting).await;
        println!(
            "| {} requests waiting for an offline device, then `tessera listen --co-sign digest` | created in | first signed | last signed (from the agent's start) | requests/s |",
            c.n
        );
        println!("|---|---|---|---|---|");
        println!(
            "| 2-of-2 wallet, raw digests | {} | {} | {} | {:.1} |",
            s(c.created),
            s(c.first),
            s(c.last),
            c.n as f64 / c.last.as_secs_f64()
        );
        println!();
        let per = |d: Duration| format!("{:.2} ms", d.as_secs_f64() * 1e3 / c.n as f64);
        println!("| server CPU per request (user + system) | creating (8 at a time) | co-signing (agent, one at a time) |");
        println!("|---|---|---|");
        println!("| 2-of-2 wallet, raw digests | {} | {} |", per(c.cpu_created), per(c.cpu_signed));
        println!();
        println!("| server RSS with {waiting} waiting requests | before | with | peak | per request | created in | server CPU per creation (16 at a time) |");
        println!("|---|---|---|---|---|---|---|");
        println!(
            "| ready, co-signer offline | {:.1} MiB | {:.1} MiB | {:.1} MiB | {:.2} KiB | {} | {:.2} ms |",
            before as f64 / 1024.0,
            with as f64 / 1024.0,
            peak as f64 / 1024.0,
            with.saturating_sub(before) as f64 / waiting as f64,
            s(took),
            cpu.as_secs_f64() * 1e3 / waiting as f64
        );
    });
}
