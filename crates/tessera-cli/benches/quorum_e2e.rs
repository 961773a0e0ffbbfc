//! Structure wallets end to end (issue 15's figures): a real `tessera server` process and the
//! client SDK over loopback sockets, every figure of one run on one machine.
//!
//! `cargo bench -p tessera-cli --bench quorum_e2e` prints a markdown table to stdout (progress
//! to stderr). Measured, in this order, on one server:
//!
//! - sign end to end, sequentially, one request at a time: a 2-of-2 wallet; the wallet
//!   `and(server, or(phone, laptop, tablet))` signed by the phone and the server; the wallet
//!   `and(server, threshold(2, phone, laptop, tablet))` signed by the phone, the laptop and the
//!   server, the laptop finding the session among its joinable ones as `tessera listen` does
//!   (a request that waits on the server until one comes); with the server's CPU per
//!   signature for each;
//! - then, on a fresh server, resharing `and(server, or(phone, laptop, tablet))` to add a
//!   fourth device (the phone and the server deal; the laptop, the tablet and the new device
//!   receive), end to end with the two-phase finish, and the server's CPU per resharing;
//! - then, on a fresh server, resident memory with many idle three-party signing sessions: the
//!   phone and the laptop each have their socket open in each session, the server's party has
//!   built its signing state and sent its first messages, nobody answers.
//!
//! Clients and the server share the machine's cores. Run without `--bench` (as
//! `cargo test --benches` does) it makes a quick smoke run instead.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, dead_code)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tessera_api as api;
use tessera_api::intent::SignKind;
use tessera_client::{ClientError, ServerClient};
use tessera_core::{DerivationPath, KeyShare};
use tessera_store::{DeviceIdentity, Keystore, KeystoreOptions, Passphrase};
use tokio_tungstenite::tungstenite::Message;

use common::{Server, UNLIMITED};

struct Device {
    client: ServerClient,
    identity: DeviceIdentity,
    _home: tempfile::TempDir,
}

impl Device {
    /// Registers `name` for user `user`; approved by `approver` when it is pending.
    async fn new(server: &Server, user: &str, name: &str, approver: Option<&Device>) -> Self {
        let home = tempfile::tempdir().unwrap();
        let identity = Keystore::open_with(
            home.path(),
            KeystoreOptions::default().insecure_fast_kdf_for_tests(),
        )
        .unwrap()
        .create_identity(&Passphrase::new("bench".into()).unwrap())
        .unwrap();
        let mut client = ServerClient::new(&server.url).unwrap();
        let device = client.register(&identity, user, name).await.unwrap();
        if let Some(approver) = approver {
            let code = api::approval_code(&identity.public_key());
            approver
                .client
                .approve(&approver.identity, &code)
                .await
                .unwrap();
        }
        client.login(&identity, &device.device_id).await.unwrap();
        Device {
            client,
            identity,
            _home: home,
        }
    }
}

/// The registry's key for every device (the bench's devices meet for the first time).
fn registry(_: &api::SessionParty, key: [u8; 32]) -> Result<[u8; 32], ClientError> {
    Ok(key)
}

fn message(n: u64) -> SignKind {
    SignKind::EthMessage {
        message: format!("bench {n}"),
    }
}

/// The first joinable session of `device` whose protocol is `protocol`.
async fn joinable(device: &Device, protocol: &str) -> api::JoinableSession {
    loop {
        let sessions = device
            .client
            .joinable_wait(Duration::from_secs(20))
            .await
            .unwrap();
        if let Some(s) = sessions.into_iter().find(|s| s.protocol == protocol) {
            return s;
        }
    }
}

/// A structure wallet made by `asker` with `joiners` joining.
async fn keygen(asker: &Device, joiners: &[&Device], name: &str, structure: &str) -> Vec<KeyShare> {
    let asked =
        asker
            .client
            .keygen_structure(name, structure, &asker.identity, registry, |_, _| {});
    let joined = futures_util::future::join_all(joiners.iter().map(|d| async move {
        let session = joinable(d, "keygen").await;
        d.client
            .join_keygen(&session, &d.identity, registry, |_, _| {})
            .await
            .unwrap()
    }));
    let (share, mut shares) = tokio::join!(asked, joined);
    shares.insert(0, share.unwrap());
    shares
}

/// The server process's CPU time so far (user + system).
fn cpu(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat.rsplit_once(") ").unwrap().1.split(' ').collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // USER_HZ is 100 on Linux.
    Duration::from_millis(ticks * 10)
}

fn rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .unwrap()
        .parse()
        .unwrap()
}

struct Figure {
    what: &'static str,
    median: Duration,
    p90: Duration,
    server_cpu: Duration,
}

fn figure(what: &'static str, mut times: Vec<Duration>, server_cpu: Duration) -> Figure {
    times.sort();
    let n = times.len();
    Figure {
        what,
        median: times[n / 2],
        p90: times[(n * 9 / 10).min(n - 1)],
        server_cpu: server_cpu / n as u32,
    }
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

/// `signs` signatures, one at a time, by `sign(n)`; the server's CPU per signature.
async fn measure<F, Fut>(pid: u32, signs: u64, what: &'static str, mut sign: F) -> Figure
where
    F: FnMut(u64) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    for n in 0..3 {
        sign(u64::MAX - n).await;
    }
    let before = cpu(pid);
    let mut times = Vec::new();
    for n in 0..signs {
        let started = Instant::now();
        sign(n).await;
        times.push(started.elapsed());
    }
    figure(what, times, cpu(pid) - before)
}

async fn sign_figures(signs: u64) -> Vec<Figure> {
    let server = Server::start_fresh(&UNLIMITED);
    let pid = server.child.id();
    let phone = Device::new(&server, "alice", "phone", None).await;
    let laptop = Device::new(&server, "alice", "laptop", Some(&phone)).await;
    let tablet = Device::new(&server, "alice", "tablet", Some(&phone)).await;
    eprintln!("keygens...");
    let pair = phone.client.keygen("pair", |_, _| {}).await.unwrap();
    let any = keygen(
        &phone,
        &[&laptop, &tablet],
        "any",
        "and(server, or(phone, laptop, tablet))",
    )
    .await;
    let two = keygen(
        &phone,
        &[&laptop, &tablet],
        "two",
        "and(server, threshold(2, phone, laptop, tablet))",
    )
    .await;
    let root = DerivationPath::root();
    let mut figures = Vec::new();
    eprintln!("sign 2-of-2...");
    figures.push(
        measure(pid, signs, "2-of-2 wallet: device + server", |n| {
            let (phone, pair, root) = (&phone, &pair, &root);
            async move {
                phone
                    .client
                    .sign_kind(pair, &message(n), root, |_, _| {}, |_| {})
                    .await
                    .unwrap();
            }
        })
        .await,
    );
    eprintln!("sign and(server, or(phone, laptop, tablet))...");
    figures.push(
        measure(
            pid,
            signs,
            "and(server, or(phone, laptop, tablet)): phone + server",
            |n| {
                let (phone, share, root) = (&phone, &any[0], &root);
                async move {
                    phone
                        .client
                        .sign_structure(
                            share,
                            &message(n),
                            root,
                            &[],
                            &phone.identity,
                            registry,
                            |_, _| {},
                            |_| {},
                        )
                        .await
                        .unwrap();
                }
            },
        )
        .await,
    );
    eprintln!("sign and(server, threshold(2, phone, laptop, tablet))...");
    let with = vec!["laptop".to_string()];
    figures.push(
        measure(
            pid,
            signs,
            "and(server, threshold(2, phone, laptop, tablet)): phone + laptop + server",
            |n| {
                let (phone, laptop, two, root, with) = (&phone, &laptop, &two, &root, &with);
                async move {
                    let kind = message(n);
                    let asked = phone.client.sign_structure(
                        &two[0],
                        &kind,
                        root,
                        with,
                        &phone.identity,
                        registry,
                        |_, _| {},
                        |_| {},
                    );
                    let joined = async {
                        let session =
                            tokio::time::timeout(Duration::from_secs(30), joinable(laptop, "sign"))
                                .await
                                .expect("the laptop never found the signing session");
                        laptop
                            .client
                            .join_sign(&two[1], &session, &laptop.identity, registry, |_, _| {})
                            .await
                    };
                    let (a, b) = tokio::join!(asked, joined);
                    let a = a.map(|(signature, _)| signature);
                    let (a, b) = (a.map_err(|e| e.to_string()), b.map_err(|e| e.to_string()));
                    assert_eq!(a.as_ref().unwrap(), b.as_ref().unwrap(), "{a:?} {b:?}");
                }
            },
        )
        .await,
    );
    figures
}

/// On a fresh server, `rounds` resharings of `and(server, or(phone, laptop, tablet))`, one at a
/// time, alternately adding the desk (every device takes part: the phone and the server deal,
/// the laptop, the tablet and the desk receive) and removing it again (the desk takes no part);
/// the figure of those that add it.
async fn reshare_figure(rounds: usize) -> Figure {
    use tessera_client::reshare::{ReshareChange, Reshared};
    let server = Server::start_fresh(&UNLIMITED);
    let pid = server.child.id();
    let phone = Device::new(&server, "alice", "phone", None).await;
    let laptop = Device::new(&server, "alice", "laptop", Some(&phone)).await;
    let tablet = Device::new(&server, "alice", "tablet", Some(&phone)).await;
    let desk = Device::new(&server, "alice", "desk", Some(&phone)).await;
    let mut shares = keygen(
        &phone,
        &[&laptop, &tablet],
        "family",
        "and(server, or(phone, laptop, tablet))",
    )
    .await;
    let mut times = Vec::new();
    let mut server_cpu = Duration::ZERO;
    for round in 0..rounds {
        let adding = round % 2 == 0;
        let change = ReshareChange {
            add: if adding { vec!["desk".into()] } else { vec![] },
            remove: if adding { vec![] } else { vec!["desk".into()] },
            ..ReshareChange::default()
        };
        let joiners: Vec<(&Device, Option<&KeyShare>)> = if adding {
            vec![
                (&laptop, Some(&shares[1])),
                (&tablet, Some(&shares[2])),
                (&desk, None),
            ]
        } else {
            vec![(&laptop, Some(&shares[1])), (&tablet, Some(&shares[2]))]
        };
        let before = cpu(pid);
        let started = Instant::now();
        let asked = phone.client.reshare(
            &shares[0],
            &change,
            &phone.identity,
            registry,
            |_| {},
            |_| Ok(()),
        );
        let joined = futures_util::future::join_all(joiners.iter().map(|(d, share)| async move {
            let session = joinable(d, "reshare").await;
            d.client
                .join_reshare(&session, *share, &d.identity, registry, |_| {}, |_| Ok(()))
                .await
                .unwrap()
        }));
        let (mine, theirs) = tokio::join!(asked, joined);
        let elapsed = started.elapsed();
        let spent = cpu(pid) - before;
        if adding {
            times.push(elapsed);
            server_cpu += spent;
        }
        let new: Vec<KeyShare> = std::iter::once(mine.unwrap())
            .chain(theirs)
            .map(|r| match r {
                Reshared::Share(share) => *share,
                Reshared::Left => panic!("a device of the new structure left"),
            })
            .collect();
        shares = new;
    }
    let n = times.len() as u32;
    let mut figure = figure(
        "reshare `and(server, or(phone, laptop, tablet))` + desk: phone + server deal, 3 devices receive",
        times,
        Duration::ZERO,
    );
    figure.server_cpu = server_cpu / n;
    figure
}

/// On a fresh server, `n` three-party signing sessions of `and(server, phone, laptop)`, both
/// devices' sockets open in each and the server's first messages received on each; returns
/// the server's RSS (kB) before, with them, and after they closed.
async fn idle_three_party(n: usize) -> [u64; 3] {
    let server = Server::start_fresh(&UNLIMITED);
    let pid = server.child.id();
    let phone = Device::new(&server, "alice", "phone", None).await;
    let laptop = Device::new(&server, "alice", "laptop", Some(&phone)).await;
    let shares = keygen(&phone, &[&laptop], "idle", "and(server, phone, laptop)").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = rss_kb(pid);
    let http = reqwest::Client::new();
    let (url, phone, http) = (&server.url, &phone, &http);
    let wallet_id: api::WalletId = shares[0].wallet_id().into();
    let wallet_id = &wallet_id;
    let created: Vec<api::SessionCreated> = futures_util::stream::iter(0..n as u64)
        .map(|i| async move {
            let resp = http
                .post(format!("{url}/sign"))
                .bearer_auth(phone.client.token().unwrap())
                .json(&api::SignIntentRequest {
                    wallet_id: wallet_id.clone(),
                    path: "m".into(),
                    kind: message(i),
                    device_nonce: None,
                    with: vec!["laptop".into()],
                })
                .send()
                .await
                .unwrap();
            assert!(resp.status().is_success(), "POST /sign: {}", resp.status());
            resp.json().await.unwrap()
        })
        .buffer_unordered(16)
        .collect()
        .await;
    let laptop = &laptop;
    let sockets: Vec<_> = futures_util::stream::iter(created)
        .map(|c| async move {
            let mut pair = Vec::new();
            // The phone first: its socket starts the session.
            for device in [phone, laptop] {
                let request =
                    common::ws_request(url, device.client.token().unwrap(), &c.session_id);
                let (socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
                pair.push(socket);
            }
            for socket in &mut pair {
                let first = tokio::time::timeout(Duration::from_secs(120), socket.next())
                    .await
                    .expect("the server's first message")
                    .unwrap()
                    .unwrap();
                assert!(matches!(first, Message::Binary(_)), "{first:?}");
            }
            pair
        })
        .buffer_unordered(16)
        .collect()
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let with = rss_kb(pid);
    drop(sockets);
    tokio::time::sleep(Duration::from_secs(5)).await;
    [before, with, rss_kb(pid)]
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    if !full {
        eprintln!("quorum_e2e: no --bench argument, quick smoke run (use `cargo bench`)");
    }
    let (signs, idle) = if full { (100, 1000) } else { (2, 5) };
    tessera_client::tls::install_crypto_provider();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let figures = sign_figures(signs).await;
        eprintln!("resharings, fresh server...");
        let reshares = reshare_figure(if full { 10 } else { 1 }).await;
        eprintln!("{idle} idle three-party sessions, fresh server...");
        let [before, with, after] = idle_three_party(idle).await;
        println!("| sign end to end ({signs} each, one at a time) | median | p90 | server CPU per sign | vs 2-of-2 |");
        println!("|---|---|---|---|---|");
        let base = figures[0].median.as_secs_f64();
        for f in &figures {
            println!(
                "| {} | {} | {} | {} | {:.2} × |",
                f.what,
                ms(f.median),
                ms(f.p90),
                ms(f.server_cpu),
                f.median.as_secs_f64() / base
            );
        }
        println!();
        println!("| resharing end to end (one at a time) | median | p90 | server CPU per resharing |");
        println!("|---|---|---|---|");
        println!(
            "| {} | {} | {} | {} |",
            reshares.what,
            ms(reshares.median),
            ms(reshares.p90),
            ms(reshares.server_cpu)
        );
        println!();
        println!(
            "| server RSS, {idle} idle three-party signing sessions (2 device sockets each) | before | with | after closing |"
        );
        println!("|---|---|---|---|");
        println!(
            "| `and(server, phone, laptop)` | {:.1} MiB | {:.1} MiB | {:.1} MiB |",
            before as f64 / 1024.0,
            with as f64 / 1024.0,
            after as f64 / 1024.0
        );
    });
}
