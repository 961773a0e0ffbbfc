//! Device-to-device mode with real `tessera` processes over real sockets: discovery over mDNS,
//! pairing codes, 2-of-2 and 2-of-3 keygen and signing, a man in the middle, peers killed
//! mid-protocol, bad frames, and the server relay (one server, and two replicas sharing one
//! PostgreSQL with each device on its own replica).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tessera_client::peer::channel::{Channel, Frames};
use tessera_client::peer::known::KnownPeers;
use tessera_client::peer::pairing::{self, CodePrompt, LocalDevice};
use tessera_client::peer::wire::Message;
use tessera_store::{Keystore, KeystoreOptions, Passphrase};

mod common;

const PASSPHRASE: &str = "peer-test-passphrase";
const WAIT: Duration = Duration::from_secs(90);

/// A running `tessera` process: its output lines arrive on a channel; rules answer prompts.
struct Proc {
    child: Child,
    lines: mpsc::Receiver<String>,
    stdin: Arc<Mutex<Option<ChildStdin>>>,
    seen: Vec<String>,
}

impl Proc {
    /// Starts `tessera args` with `home`; `rules` answer a line containing `.0` with `.1`.
    fn spawn(home: &Path, args: &[&str], env: &[(&str, &str)], rules: &[(&str, &str)]) -> Proc {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tessera"));
        cmd.args(args)
            .env("TESSERA_HOME", home)
            .env("TESSERA_PASSPHRASE", PASSPHRASE)
            .env_remove("TESSERA_TEST_PAUSE_AT")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let stdin = Arc::new(Mutex::new(child.stdin.take()));
        let (tx, lines) = mpsc::channel();
        let rules: Vec<(String, String)> = rules
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        let out: Box<dyn Read + Send> = Box::new(child.stdout.take().unwrap());
        let err: Box<dyn Read + Send> = Box::new(child.stderr.take().unwrap());
        for stream in [out, err] {
            let tx = tx.clone();
            let rules = rules.clone();
            let stdin = stdin.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    for (trigger, answer) in &rules {
                        if line.contains(trigger.as_str())
                            && let Some(s) = stdin.lock().unwrap().as_mut()
                        {
                            let _ = writeln!(s, "{answer}");
                        }
                    }
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        Proc {
            child,
            lines,
            stdin,
            seen: Vec::new(),
        }
    }

    /// Waits for a line containing `pattern`; returns it.
    fn wait_for(&mut self, pattern: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(l) = self.seen.iter().find(|l| l.contains(pattern)) {
                return l.clone();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.seen.push(line),
                Err(_) => panic!(
                    "no line with {pattern:?}; output so far:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    fn answer(&self, text: &str) {
        let mut stdin = self.stdin.lock().unwrap();
        writeln!(stdin.as_mut().unwrap(), "{text}").unwrap();
    }

    /// Waits for the exit; returns success and every line.
    fn finish(mut self) -> (bool, String) {
        let deadline = Instant::now() + WAIT;
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            assert!(
                Instant::now() < deadline,
                "the process did not end; output:\n{}",
                self.seen.join("\n")
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        // The reader threads end with the pipes.
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(2)) {
            self.seen.push(line);
        }
        (status.success(), self.seen.join("\n"))
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Drains what arrived so far.
    fn output(&mut self) -> String {
        while let Ok(line) = self.lines.try_recv() {
            self.seen.push(line);
        }
        self.seen.join("\n")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A device home.
fn home() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

/// Starts `tessera peer listen` as `name`; answers pairing codes and requests with yes.
fn listen(home: &Path, name: &str, extra: &[&str], env: &[(&str, &str)]) -> (Proc, String) {
    let mut args = vec!["peer", "listen", "--device-name", name];
    args.extend_from_slice(extra);
    let mut p = Proc::spawn(
        home,
        &args,
        env,
        &[("pairing code", "y"), ("request:", "y")],
    );
    let line = p.wait_for("listening on");
    let port = line
        .split_whitespace()
        .nth(2)
        .unwrap()
        .rsplit(':')
        .next()
        .unwrap()
        .to_string();
    (p, format!("127.0.0.1:{port}"))
}

/// Runs a leading command to its end, answering pairing codes with yes.
fn lead(home: &Path, args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    Proc::spawn(home, args, env, &[("pairing code", "y")]).finish()
}

fn field(output: &str, key: &str) -> String {
    output
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .unwrap_or_else(|| panic!("no {key:?} in:\n{output}"))
        .trim()
        .to_string()
}

fn codes(output: &str) -> Vec<String> {
    output
        .lines()
        .filter_map(|l| {
            l.split_once("pairing code ")
                .map(|(_, c)| c[..7].to_string())
        })
        .collect()
}

/// `tessera verify` of an EIP-191 signature.
fn verify(pubkey: &str, message: &str, rsv: &str) {
    let out = Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args([
            "verify",
            "--pubkey",
            pubkey,
            "--message",
            message,
            "--signature",
            rsv,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn has_wallet(home: &Path, name: &str) -> bool {
    Keystore::open(home).unwrap().has_wallet(name).unwrap()
}

#[test]
fn two_devices_discover_pair_keygen_and_sign_over_mdns() {
    let (a, b) = (home(), home());
    let (_alice, _) = listen(a.path(), "alice", &[], &[]);
    // bob sees alice on the network.
    let list = Proc::spawn(b.path(), &["peer", "list", "--timeout", "3"], &[], &[]).finish();
    assert!(list.0 && list.1.contains("alice"), "{}", list.1);
    assert!(list.1.contains("ready"), "{}", list.1);

    // Keygen by name: both screens show the same code.
    let mut alice = _alice;
    let (ok, out) = lead(
        b.path(),
        &[
            "peer",
            "keygen",
            "--name",
            "fam",
            "--device-name",
            "bob",
            "--with",
            "alice",
        ],
        &[],
    );
    assert!(ok, "{out}");
    let alice_out = {
        alice.wait_for("eth address");
        alice.output()
    };
    assert_eq!(codes(&out).len(), 1, "{out}");
    assert_eq!(codes(&out), codes(&alice_out), "the two screens differ");
    let pk = field(&out, "public key");
    assert_eq!(pk, field(&alice_out, "public key"));
    assert!(alice_out.contains("party 1") && out.contains("party 0"));

    // Signing: alice is shown the message and approves; the signature verifies.
    let (ok, out) = lead(
        b.path(),
        &[
            "peer",
            "sign",
            "--wallet",
            "fam",
            "--message",
            "pay 1 ETH to carol",
            "--device-name",
            "bob",
        ],
        &[],
    );
    assert!(ok, "{out}");
    assert!(
        !out.contains("pairing code"),
        "a paired device asked again: {out}"
    );
    let rsv = field(&out, "r||s||v");
    verify(&pk, "pay 1 ETH to carol", &rsv);
    alice.wait_for("signed \"pay 1 ETH to carol\"");
    assert!(
        alice
            .output()
            .contains("asks to sign with wallet \"fam\" the message \"pay 1 ETH to carol\"")
    );
}

#[test]
fn three_devices_make_a_2_of_3_wallet_and_any_two_sign() {
    let (a, b, c) = (home(), home(), home());
    // Found by name over mDNS (names unlike the other tests', which run at the same time).
    let (mut alice, alice_at) = listen(a.path(), "alice-of-three", &[], &[]);
    let (mut carol, carol_at) = listen(c.path(), "carol-of-three", &[], &[]);
    let (ok, out) = lead(
        b.path(),
        &[
            "peer",
            "keygen",
            "--name",
            "vault",
            "--device-name",
            "bob",
            "--threshold",
            "2",
            "--with",
            "alice-of-three,carol-of-three",
        ],
        &[],
    );
    assert!(ok, "{out}");
    assert!(out.contains("2-of-3"), "{out}");
    let pk = field(&out, "public key");
    alice.wait_for("eth address");
    carol.wait_for("eth address");
    // alice and carol paired with each other too (their own channel), with matching codes.
    let (ao, co) = (alice.output(), carol.output());
    assert_eq!(field(&ao, "public key"), pk);
    assert_eq!(field(&co, "public key"), pk);
    assert_eq!(codes(&ao).len(), 2, "{ao}");
    assert_eq!(codes(&co).len(), 2, "{co}");
    assert_eq!(
        codes(&ao)[1],
        codes(&co)[1],
        "alice and carol saw different codes"
    );

    // Any two sign: bob with alice, bob with carol, and carol (its own command) with alice.
    for (who, home, at) in [
        ("bob", b.path(), &alice_at),
        ("bob", b.path(), &carol_at),
        ("carol-of-three", c.path(), &alice_at),
    ] {
        let message = format!("{who} signs with {at}");
        let (ok, out) = lead(
            home,
            &[
                "peer",
                "sign",
                "--wallet",
                "vault",
                "--message",
                &message,
                "--device-name",
                who,
                "--connect",
                at,
            ],
            &[],
        );
        assert!(ok, "{out}");
        verify(&pk, &message, &field(&out, "r||s||v"));
    }
}

#[test]
fn a_changed_identity_is_refused_loudly() {
    let (a, b, impostor) = (home(), home(), home());
    let (_alice, alice_at) = listen(a.path(), "alice", &["--no-mdns"], &[]);
    let (ok, out) = lead(
        b.path(),
        &[
            "peer",
            "pair",
            "--device-name",
            "bob",
            "--connect",
            &alice_at,
        ],
        &[],
    );
    assert!(ok, "{out}");
    // Another device calling itself alice.
    let (_fake, fake_at) = listen(impostor.path(), "alice", &["--no-mdns"], &[]);
    let (ok, out) = lead(
        b.path(),
        &[
            "peer",
            "pair",
            "--device-name",
            "bob",
            "--connect",
            &fake_at,
        ],
        &[],
    );
    assert!(!ok);
    assert!(
        out.contains("IDENTITY KEY OF \"alice\" HAS CHANGED"),
        "{out}"
    );
    assert!(!out.contains("pairing code"), "{out}");
    // The pairing with the real alice is unchanged.
    let known = KnownPeers::load_dir(b.path()).unwrap();
    assert_eq!(known.all().len(), 1);
}

/// Reads one 2-byte-length frame.
fn read_frame(s: &mut std::net::TcpStream) -> Option<Vec<u8>> {
    let mut len = [0u8; 2];
    s.read_exact(&mut len).ok()?;
    let mut f = vec![0u8; usize::from(u16::from_be_bytes(len))];
    s.read_exact(&mut f).ok()?;
    Some(f)
}

fn write_frame(s: &mut std::net::TcpStream, f: &[u8]) {
    let _ = s.write_all(&(f.len() as u16).to_be_bytes());
    let _ = s.write_all(f);
}

#[test]
fn garbage_truncated_and_replayed_frames_are_refused_and_the_listener_keeps_serving() {
    let (a, b) = (home(), home());
    let (mut alice, alice_at) = listen(a.path(), "alice", &["--no-mdns", "--yes"], &[]);
    // Garbage as the first handshake message.
    let mut s = std::net::TcpStream::connect(&alice_at).unwrap();
    write_frame(&mut s, &[0x42; 77]);
    alice.wait_for("handshake message is invalid");
    drop(s);
    // A well-formed first message, then garbage where the encrypted third one belongs.
    let mut s = std::net::TcpStream::connect(&alice_at).unwrap();
    write_frame(&mut s, &[0x42; 32]);
    assert!(read_frame(&mut s).is_some());
    write_frame(&mut s, &[0x17; 64]);
    drop(s);
    let deadline = Instant::now() + WAIT;
    loop {
        let out = alice.output();
        if out.matches("handshake message is invalid").count() >= 2 {
            break;
        }
        assert!(Instant::now() < deadline, "{out}");
        std::thread::sleep(Duration::from_millis(50));
    }
    // A truncated frame.
    let mut s = std::net::TcpStream::connect(&alice_at).unwrap();
    s.write_all(&[0, 100, 1, 2, 3]).unwrap();
    drop(s);
    alice.wait_for("truncated 100-byte frame");

    // A replayed frame: a proxy forwards bob's frames to alice and sends one of them twice.
    let proxy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let proxy_at = proxy.local_addr().unwrap().to_string();
    let target = alice_at.clone();
    std::thread::spawn(move || {
        let (mut from_bob, _) = proxy.accept().unwrap();
        let mut to_alice = std::net::TcpStream::connect(target).unwrap();
        let (mut bob_w, mut alice_r) =
            (from_bob.try_clone().unwrap(), to_alice.try_clone().unwrap());
        std::thread::spawn(move || {
            while let Some(f) = read_frame(&mut alice_r) {
                write_frame(&mut bob_w, &f);
            }
            // alice hung up: so does the proxy.
            let _ = bob_w.shutdown(std::net::Shutdown::Both);
        });
        let mut n = 0;
        while let Some(f) = read_frame(&mut from_bob) {
            write_frame(&mut to_alice, &f);
            n += 1;
            // Frames 1 and 2 are bob's handshake messages; frame 3 is his hello.
            if n == 3 {
                write_frame(&mut to_alice, &f);
            }
        }
        let _ = to_alice.shutdown(std::net::Shutdown::Both);
    });
    let (ok, out) = lead(
        b.path(),
        &[
            "peer",
            "pair",
            "--device-name",
            "bob",
            "--connect",
            &proxy_at,
        ],
        &[],
    );
    assert!(!ok, "{out}");
    alice.wait_for("failed authentication");
    // Nothing was stored, and alice still serves.
    assert!(KnownPeers::load_dir(a.path()).unwrap().all().is_empty());
    let (ok, out) = lead(
        b.path(),
        &[
            "peer",
            "pair",
            "--device-name",
            "bob",
            "--connect",
            &alice_at,
        ],
        &[],
    );
    assert!(ok, "{out}");
}

fn test_device(name: &str) -> (tempfile::TempDir, LocalDevice) {
    let dir = home();
    let ks = Keystore::open_with(
        dir.path(),
        KeystoreOptions::default().insecure_fast_kdf_for_tests(),
    )
    .unwrap();
    let id = ks
        .create_identity(&Passphrase::new(PASSPHRASE.into()).unwrap())
        .unwrap();
    (
        dir,
        LocalDevice {
            name: name.into(),
            identity: Arc::new(id),
        },
    )
}

/// A man in the middle that runs its own handshake with each side, posing as the other.
#[test]
fn a_man_in_the_middle_makes_the_codes_differ_and_nothing_is_stored() {
    let (a, b) = (home(), home());
    let (mut alice, alice_at) = listen_manual(a.path(), "alice");
    let proxy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let proxy_at = proxy.local_addr().unwrap().to_string();
    proxy.set_nonblocking(true).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let target = alice_at.clone();
    let mitm = rt.spawn(async move {
        let proxy = tokio::net::TcpListener::from_std(proxy).unwrap();
        let (as_alice_dir, as_alice) = test_device("alice");
        let (as_bob_dir, as_bob) = test_device("bob");
        let (bob_side, _) = proxy.accept().await.unwrap();
        let alice_side = tokio::net::TcpStream::connect(target).await.unwrap();
        let mut known_a = KnownPeers::load_dir(as_alice_dir.path()).unwrap();
        let mut known_b = KnownPeers::load_dir(as_bob_dir.path()).unwrap();
        let codes = Arc::new(Mutex::new(Vec::new()));
        let (c1, c2) = (codes.clone(), codes.clone());
        let with_bob = async move {
            let mut ch = Channel::accept(Frames::tcp(bob_side)).await?;
            pairing::authenticate(&mut ch, &as_alice, &mut known_a, &mut |p: &CodePrompt| {
                c1.lock().unwrap().push(p.code.clone());
                true
            })
            .await
        };
        let with_alice = async move {
            let mut ch = Channel::initiate(Frames::tcp(alice_side)).await?;
            pairing::authenticate(&mut ch, &as_bob, &mut known_b, &mut |p: &CodePrompt| {
                c2.lock().unwrap().push(p.code.clone());
                true
            })
            .await
        };
        let _ = tokio::join!(with_bob, with_alice);
        codes.lock().unwrap().clone()
    });
    let mut bob = Proc::spawn(
        b.path(),
        &[
            "peer",
            "pair",
            "--device-name",
            "bob",
            "--connect",
            &proxy_at,
        ],
        &[],
        &[],
    );
    let bob_code = bob.wait_for("pairing code")["pairing code ".len()..][..7].to_string();
    let alice_code = alice.wait_for("pairing code")["pairing code ".len()..][..7].to_string();
    assert_ne!(
        bob_code, alice_code,
        "a man in the middle matched the codes"
    );
    // Each user sees a code that the other screen does not show, and refuses.
    bob.answer("n");
    alice.answer("n");
    let (ok, out) = bob.finish();
    assert!(!ok);
    assert!(out.contains("not confirmed"), "{out}");
    alice.wait_for("not confirmed");
    let mitm_codes = rt.block_on(mitm).unwrap();
    assert_eq!(mitm_codes.len(), 2);
    assert!(KnownPeers::load_dir(a.path()).unwrap().all().is_empty());
    assert!(KnownPeers::load_dir(b.path()).unwrap().all().is_empty());
}

/// A proxy that terminates the channel on both sides and forwards the hellos: each side sees a
/// hello signed for another handshake and refuses before any code is shown.
#[test]
fn a_relayed_hello_is_refused() {
    let (a, b) = (home(), home());
    let (mut alice, alice_at) = listen(a.path(), "alice", &["--no-mdns"], &[]);
    let proxy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let proxy_at = proxy.local_addr().unwrap().to_string();
    proxy.set_nonblocking(true).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.spawn(async move {
        let proxy = tokio::net::TcpListener::from_std(proxy).unwrap();
        let (bob_side, _) = proxy.accept().await.unwrap();
        let alice_side = tokio::net::TcpStream::connect(alice_at).await.unwrap();
        let mut to_bob = Channel::accept(Frames::tcp(bob_side)).await.unwrap();
        let mut to_alice = Channel::initiate(Frames::tcp(alice_side)).await.unwrap();
        let bob_hello = to_bob.recv().await.unwrap();
        to_alice.send(&bob_hello).await.unwrap();
        let alice_hello = to_alice.recv().await.unwrap();
        to_bob.send(&alice_hello).await.unwrap();
        let _ = Message::from_bytes(&alice_hello).unwrap();
        tokio::time::sleep(Duration::from_secs(5)).await;
    });
    let (ok, out) = lead(
        b.path(),
        &[
            "peer",
            "pair",
            "--device-name",
            "bob",
            "--connect",
            &proxy_at,
        ],
        &[],
    );
    assert!(!ok);
    assert!(out.contains("relayed or forged hello"), "{out}");
    alice.wait_for("relayed or forged hello");
    assert!(!out.contains("pairing code"));
}

/// A listener whose prompts the test answers itself.
fn listen_manual(home: &Path, name: &str) -> (Proc, String) {
    let mut p = Proc::spawn(
        home,
        &["peer", "listen", "--device-name", name, "--no-mdns"],
        &[],
        &[],
    );
    let line = p.wait_for("listening on");
    let port = line
        .split_whitespace()
        .nth(2)
        .unwrap()
        .rsplit(':')
        .next()
        .unwrap()
        .to_string();
    (p, format!("127.0.0.1:{port}"))
}

#[test]
fn a_peer_killed_mid_keygen_or_mid_sign_leaves_nothing_half_done_and_a_retry_works() {
    let (a, b) = (home(), home());
    // alice dies in the middle of the keygen.
    let (mut alice, alice_at) = listen(
        a.path(),
        "alice",
        &["--no-mdns", "--yes"],
        &[("TESSERA_TEST_PAUSE_AT", "keygen-round-2")],
    );
    let bob = Proc::spawn(
        b.path(),
        &[
            "peer",
            "keygen",
            "--name",
            "fam",
            "--device-name",
            "bob",
            "--connect",
            &alice_at,
        ],
        &[],
        &[("pairing code", "y")],
    );
    alice.wait_for("paused at keygen-round-2");
    alice.kill();
    let (ok, out) = bob.finish();
    assert!(!ok, "{out}");
    assert!(
        out.contains("alice (party 1)"),
        "the failure does not name alice: {out}"
    );
    assert!(!has_wallet(b.path(), "fam") && !has_wallet(a.path(), "fam"));

    // alice restarts; the retry completes without a new pairing code.
    let (mut alice, alice_at) = listen(a.path(), "alice", &["--no-mdns", "--yes"], &[]);
    let (ok, out) = lead(
        b.path(),
        &[
            "peer",
            "keygen",
            "--name",
            "fam",
            "--device-name",
            "bob",
            "--connect",
            &alice_at,
        ],
        &[],
    );
    assert!(ok, "{out}");
    assert!(!out.contains("pairing code"), "{out}");
    let pk = field(&out, "public key");
    alice.wait_for("eth address");

    // bob dies in the middle of a signature: alice reports it and keeps serving.
    let bob = Proc::spawn(
        b.path(),
        &[
            "peer",
            "sign",
            "--wallet",
            "fam",
            "--message",
            "m1",
            "--device-name",
            "bob",
            "--connect",
            &alice_at,
        ],
        &[("TESSERA_TEST_PAUSE_AT", "sign-round-1")],
        &[],
    );
    let mut bob = bob;
    bob.wait_for("paused at sign-round-1");
    bob.kill();
    alice.wait_for("failed: bob (party 0)");
    let (ok, out) = lead(
        b.path(),
        &[
            "peer",
            "sign",
            "--wallet",
            "fam",
            "--message",
            "m2",
            "--device-name",
            "bob",
            "--connect",
            &alice_at,
        ],
        &[],
    );
    assert!(ok, "{out}");
    verify(&pk, "m2", &field(&out, "r||s||v"));
}

#[test]
fn devices_apart_pair_and_sign_through_the_server_relay() {
    let data = home();
    let (_server, url) = relay_server(&data.path().join("srv"), &[]);
    let (a, b) = (home(), home());
    keygen_and_sign_over_the_relay(a.path(), b.path(), &url, &url, "over the relay");
    let pk = Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(["peer", "known"])
        .env("TESSERA_HOME", b.path())
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&pk.stdout).contains("alice"));
    let json = Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(["peer", "known", "--json"])
        .env("TESSERA_HOME", b.path())
        .output()
        .unwrap();
    let known: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    let alice_known = known
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "alice")
        .unwrap_or_else(|| panic!("{known}"));
    assert_eq!(
        alice_known["identity"].as_str().unwrap().len(),
        64,
        "{known}"
    );
    // A code nobody else uses is refused by the relay's own check of its form.
    let (ok, out) = lead(
        b.path(),
        &[
            "peer",
            "listen",
            "--device-name",
            "x",
            "--relay",
            &url,
            "--code",
            "not-a-code",
        ],
        &[],
    );
    assert!(!ok);
    assert!(out.contains("12 letters"), "{out}");
}

/// Device `b` ("bob", through `bob_url`) makes a peer wallet with device `a` ("alice", through
/// `alice_url`) over the relay, then signs `message` with it (no pairing the second time: the
/// devices know each other); both results are checked.
fn keygen_and_sign_over_the_relay(
    a: &Path,
    b: &Path,
    bob_url: &str,
    alice_url: &str,
    message: &str,
) {
    for (step, args) in [
        (
            "keygen",
            vec![
                "peer",
                "keygen",
                "--name",
                "far",
                "--device-name",
                "bob",
                "--relay",
                bob_url,
            ],
        ),
        (
            "sign",
            vec![
                "peer",
                "sign",
                "--wallet",
                "far",
                "--message",
                message,
                "--device-name",
                "bob",
                "--relay",
                bob_url,
            ],
        ),
    ] {
        let mut bob = Proc::spawn(b, &args, &[], &[("pairing code", "y")]);
        let code = bob.wait_for("relay code")["relay code ".len()..]
            .trim()
            .to_string();
        let alice = Proc::spawn(
            a,
            &[
                "peer",
                "listen",
                "--device-name",
                "alice",
                "--yes",
                "--relay",
                alice_url,
                "--code",
                &code,
            ],
            &[],
            &[("pairing code", "y")],
        );
        let (ok, out) = bob.finish();
        assert!(ok, "{step}: {out}");
        let (ok, aout) = alice.finish();
        assert!(ok, "{step}: {aout}");
        if step == "keygen" {
            assert_eq!(codes(&out), codes(&aout));
            assert_eq!(field(&out, "public key"), field(&aout, "public key"));
        } else {
            assert!(!out.contains("pairing code"), "{out}");
            verify(&field(&out, "public key"), message, &field(&out, "r||s||v"));
        }
    }
}

/// A `tessera server` on `data` (more arguments in `extra`); its URL.
fn relay_server(data: &Path, extra: &[&str]) -> (Proc, String) {
    let mut args = vec![
        "server",
        "--insecure-http",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        data.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let mut server = Proc::spawn(data.parent().unwrap(), &args, &[], &[]);
    let line = server.wait_for("listening on");
    let url = line.split_whitespace().nth(4).unwrap().to_string();
    (server, url)
}

#[test]
fn devices_on_two_replicas_pair_and_sign_through_the_relay() {
    // Two replicas of one PostgreSQL: each device reaches a different one.
    let database = common::fresh_postgres_database();
    let data = home();
    let srv = data.path().join("srv");
    let (_one, url_one) = relay_server(&srv, &["--database-url", &database]);
    let (_two, url_two) = relay_server(&srv, &["--database-url", &database]);
    assert_ne!(url_one, url_two);
    let (a, b) = (home(), home());
    keygen_and_sign_over_the_relay(a.path(), b.path(), &url_one, &url_two, "across replicas");
}

#[test]
fn an_idle_connection_is_closed() {
    let a = home();
    let (mut alice, alice_at) = listen(
        a.path(),
        "alice",
        &["--no-mdns", "--idle-timeout", "1"],
        &[],
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    let started = Instant::now();
    let result: Result<Vec<u8>, _> = rt.block_on(async {
        let stream = tokio::net::TcpStream::connect(&alice_at).await.unwrap();
        let mut channel = Channel::initiate(Frames::tcp(stream)).await.unwrap();
        // Say nothing: alice's hello arrives, then she gives up on us and closes.
        let _hello = channel.recv().await.unwrap();
        channel.recv().await
    });
    assert!(result.is_err());
    alice.wait_for("no message from the peer for 1s");
    assert!(started.elapsed() < Duration::from_secs(30));
}

/// `peer listen --no-mdns` as `name` with no automatic answers; its address.
fn listen_quiet(home: &Path, name: &str, rules: &[(&str, &str)]) -> (Proc, String) {
    let mut p = Proc::spawn(
        home,
        &["peer", "listen", "--device-name", name, "--no-mdns"],
        &[],
        rules,
    );
    let line = p.wait_for("listening on");
    let port = line
        .split_whitespace()
        .nth(2)
        .unwrap()
        .rsplit(':')
        .next()
        .unwrap()
        .to_string();
    (p, format!("127.0.0.1:{port}"))
}

fn file_mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn a_script_pairs_two_processes_by_giving_each_the_code_the_other_printed() {
    let (a, b) = (home(), home());
    let (mut alice, alice_at) = listen_quiet(a.path(), "alice", &[]);
    let mut bob = Proc::spawn(
        b.path(),
        &[
            "peer",
            "pair",
            "--device-name",
            "bob",
            "--connect",
            &alice_at,
        ],
        &[],
        &[],
    );
    // What a script does: read each side's `pairing code` line, and type it on the other.
    let code_of = |line: String| line["pairing code ".len()..][..7].to_string();
    let bob_code = code_of(bob.wait_for("pairing code"));
    let alice_code = code_of(alice.wait_for("pairing code"));
    bob.answer(&alice_code);
    alice.answer(&bob_code);
    let (ok, out) = bob.finish();
    assert!(ok, "{out}");
    assert_eq!(
        out.matches("paired with").count(),
        1,
        "announced more than once: {out}"
    );
    alice.wait_for("paired with \"bob\"");
    // Both remember the other; the paired-device files are private (12.11).
    for (h, other) in [(a.path(), "bob"), (b.path(), "alice")] {
        let known = KnownPeers::load_dir(h).unwrap();
        assert!(known.all().iter().any(|p| p.name == other));
        assert_eq!(file_mode(h), 0o700);
        assert_eq!(file_mode(&h.join("peers.json")), 0o600);
    }
    // Pairing again: nothing to compare, said once.
    let (ok, out) = lead(
        b.path(),
        &[
            "peer",
            "pair",
            "--device-name",
            "bob",
            "--connect",
            &alice_at,
        ],
        &[],
    );
    assert!(ok, "{out}");
    assert!(out.contains("\"alice\" is paired already"), "{out}");
    assert!(!out.contains("pairing code"), "{out}");

    // A script that types a code the other side did not print: refused, nothing stored.
    let c = home();
    let mut carol = Proc::spawn(
        c.path(),
        &[
            "peer",
            "pair",
            "--device-name",
            "carol",
            "--connect",
            &alice_at,
        ],
        &[],
        &[],
    );
    let carol_code = code_of(carol.wait_for("pairing code"));
    alice.seen.clear();
    let shown = code_of(alice.wait_for("pairing code"));
    let wrong = if shown == "000 000" {
        "111 111"
    } else {
        "000 000"
    };
    carol.answer(wrong);
    alice.answer(&carol_code);
    let (ok, out) = carol.finish();
    assert!(!ok, "{out}");
    assert!(KnownPeers::load_dir(c.path()).unwrap().all().is_empty());
    assert!(
        !KnownPeers::load_dir(a.path())
            .unwrap()
            .all()
            .iter()
            .any(|p| p.name == "carol")
    );

    // The flag that could never work says what to do instead.
    let (ok, out) = lead(
        c.path(),
        &[
            "peer",
            "pair",
            "--device-name",
            "carol",
            "--connect",
            &alice_at,
            "--expect-code",
            "123456",
        ],
        &[],
    );
    assert!(!ok);
    assert!(out.contains("--expect-code cannot work"), "{out}");
}

#[test]
fn after_failed_pairings_the_listener_pauses_new_pairings_and_says_so() {
    let (a, known_home) = (home(), home());
    let (mut alice, alice_at) = listen_quiet(a.path(), "alice", &[("pairing code", "y")]);
    let pair = |h: &Path, name: &str, answer: &str| {
        Proc::spawn(
            h,
            &[
                "peer",
                "pair",
                "--device-name",
                name,
                "--connect",
                &alice_at,
            ],
            &[],
            &[("pairing code", answer)],
        )
        .finish()
    };
    // A device paired before the trouble.
    let (ok, out) = pair(known_home.path(), "dave", "y");
    assert!(ok, "{out}");
    // Three failed attempts (someone whose code does not match, refused on their side).
    for i in 0..3 {
        let stranger = home();
        let (ok, out) = pair(stranger.path(), &format!("stranger-{i}"), "n");
        assert!(!ok, "{out}");
        assert!(out.contains("pairing code"), "{out}");
    }
    alice.wait_for("too many failed pairing attempts: new pairings are paused for 10 minutes");
    // A new device is refused before any code is shown, on both screens.
    let newcomer = home();
    let (ok, out) = pair(newcomer.path(), "erin", "y");
    assert!(!ok, "{out}");
    assert!(out.contains("accepts no new pairing"), "{out}");
    assert!(!out.contains("pairing code"), "{out}");
    alice.wait_for("refused to pair with \"erin\": too many pairing attempts failed lately");
    assert!(
        KnownPeers::load_dir(newcomer.path())
            .unwrap()
            .all()
            .is_empty()
    );
    // A paired device still works.
    let (ok, out) = pair(known_home.path(), "dave", "y");
    assert!(ok, "{out}");
    assert!(out.contains("is paired already"), "{out}");
}

#[test]
fn a_peer_wallet_that_could_never_sign_is_refused_at_keygen() {
    let (a, b, c) = (home(), home(), home());
    let (mut alice, alice_at) = listen(a.path(), "alice", &["--no-mdns", "--yes"], &[]);
    let (mut carol, carol_at) = listen(c.path(), "carol", &["--no-mdns", "--yes"], &[]);
    let proc = Proc::spawn(
        b.path(),
        &[
            "peer",
            "keygen",
            "--name",
            "three",
            "--device-name",
            "bob",
            "--threshold",
            "3",
            "--connect",
            &format!("{alice_at},{carol_at}"),
        ],
        &[],
        &[("pairing code", "y")],
    );
    let (ok, out) = proc.finish();
    assert!(!ok, "{out}");
    assert!(
        out.contains("could never sign") && out.contains("--threshold 2"),
        "{out}"
    );
    // Nobody was asked and no wallet exists anywhere.
    assert!(!alice.output().contains("request:"));
    assert!(!carol.output().contains("request:"));
    for h in [a.path(), b.path(), c.path()] {
        assert!(!has_wallet(h, "three"));
    }
}

/// A device that follows the signing protocol but sends a round-2 `gamma_u` off by the
/// generator: the leading `tessera peer sign` gets `PeerError::Blamed` naming it, stores the
/// ban with the wallet, and then refuses to sign with that wallet before reaching any device.
#[test]
fn a_peer_blamed_by_the_engine_is_banned_and_the_wallet_then_refuses_to_sign() {
    use sha2::{Digest, Sha256};
    use tessera_client::WalletRecord;
    use tessera_client::peer::session::invitation_hash;
    use tessera_client::peer::wire::Request;
    use tessera_core::ecdsa::eip191_digest;
    use tessera_core::{PartyIndex, Session, SignRequest, SignSession};

    let (a, b) = (home(), home());
    // A real 2-of-2 wallet: bob is party 0, alice party 1.
    let (mut alice, alice_at) = listen(a.path(), "alice", &["--no-mdns", "--yes"], &[]);
    let (ok, out) = lead(
        b.path(),
        &[
            "peer",
            "keygen",
            "--name",
            "fam",
            "--device-name",
            "bob",
            "--connect",
            &alice_at,
        ],
        &[],
    );
    assert!(ok, "{out}");
    alice.wait_for("eth address");
    alice.kill();

    // Alice's device, now driven by the test: her identity, paired devices and share.
    let pass = Passphrase::new(PASSPHRASE.into()).unwrap();
    let ks = Keystore::open(a.path()).unwrap();
    let identity = ks.load_identity(&pass).unwrap();
    let share = WalletRecord::from_bytes(&ks.load_wallet("fam", &pass).unwrap())
        .unwrap()
        .current;
    let mut known = KnownPeers::load_dir(a.path()).unwrap();
    let fake = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let fake_at = fake.local_addr().unwrap().to_string();
    fake.set_nonblocking(true).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let tampered = rt.spawn(async move {
        let fake = tokio::net::TcpListener::from_std(fake).unwrap();
        let (s, _) = fake.accept().await.unwrap();
        let mut ch = Channel::accept(Frames::tcp(s)).await.unwrap();
        let me = LocalDevice {
            name: "alice".into(),
            identity: Arc::new(identity),
        };
        pairing::authenticate(&mut ch, &me, &mut known, &mut |_: &CodePrompt| true)
            .await
            .unwrap();
        let Message::Request(request) = pairing::recv(&mut ch).await.unwrap() else {
            panic!("expected a request");
        };
        let Request::Sign {
            message,
            path,
            signers,
            ..
        } = &request
        else {
            panic!("expected a sign request");
        };
        pairing::send(&mut ch, &Message::Accept { nonce: [7; 32] })
            .await
            .unwrap();
        let Message::Start { nonces } = pairing::recv(&mut ch).await.unwrap() else {
            panic!("expected start");
        };
        // The session nonce as both honest devices derive it.
        let mut h = Sha256::new()
            .chain_update(b"tessera/peer-session/v1")
            .chain_update(invitation_hash(&request));
        for n in &nonces {
            h.update(n);
        }
        let mut signers: Vec<PartyIndex> = signers.iter().map(|&p| PartyIndex::new(p)).collect();
        signers.sort_unstable();
        let mut session = SignSession::new(
            &share,
            &SignRequest {
                nonce: h.finalize().into(),
                signers,
                digest: eip191_digest(message.as_bytes()),
                path: path.parse().unwrap(),
            },
        )
        .unwrap();
        let mut outgoing = session.start().unwrap();
        let mut lied = false;
        loop {
            for mut e in outgoing.drain(..) {
                if e.round == 2 {
                    let (mut m, rest): (
                        dkls23::protocols::signing::TransmitPhase2to3<k256::Secp256k1>,
                        _,
                    ) = postcard::take_from_bytes(&e.payload).unwrap();
                    assert!(rest.is_empty());
                    m.gamma_u = (k256::ProjectivePoint::from(m.gamma_u)
                        + k256::ProjectivePoint::GENERATOR)
                        .to_affine();
                    e.payload = postcard::to_allocvec(&m).unwrap();
                    lied = true;
                }
                if pairing::send(&mut ch, &Message::Envelope(e.to_bytes()))
                    .await
                    .is_err()
                {
                    return lied;
                }
            }
            match pairing::recv(&mut ch).await {
                Ok(Message::Envelope(bytes)) => {
                    match session.receive_bytes(PartyIndex::new(0), &bytes) {
                        Ok(next) => outgoing = next,
                        Err(_) => return lied,
                    }
                }
                _ => return lied,
            }
        }
    });

    // Bob leads a signature with the lying device: the engine blames it by name.
    let sign = |at: &str| {
        lead(
            b.path(),
            &[
                "peer",
                "sign",
                "--wallet",
                "fam",
                "--message",
                "pay 1 ETH to carol",
                "--device-name",
                "bob",
                "--connect",
                at,
            ],
            &[],
        )
    };
    let (ok, out) = sign(&fake_at);
    assert!(!ok, "{out}");
    assert!(rt.block_on(tampered).unwrap(), "the fake device never lied");
    assert!(
        out.contains("alice (party 1) misbehaved in round") && out.contains("gamma_u"),
        "{out}"
    );

    // The ban is stored with bob's record of the wallet.
    let bans = WalletRecord::from_bytes(
        &Keystore::open(b.path())
            .unwrap()
            .load_wallet("fam", &pass)
            .unwrap(),
    )
    .unwrap()
    .bans;
    assert_eq!(bans.len(), 1, "{bans:?}");
    assert_eq!(bans[0].party, 1);
    assert!(bans[0].reason.contains("gamma_u"), "{bans:?}");
    assert!(!bans[0].lift_approved);

    // The next signature with the wallet is refused, naming the ban, before any connection.
    let watch = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    watch.set_nonblocking(true).unwrap();
    let (ok, out) = sign(&watch.local_addr().unwrap().to_string());
    assert!(!ok, "{out}");
    assert!(
        out.contains("party 1 is banned from this wallet") && out.contains(&bans[0].session_id),
        "{out}"
    );
    assert!(
        watch.accept().is_err(),
        "the banned wallet still reached a device"
    );
}

/// A device's record of a wallet: (epoch in use, pending epoch, the share in use's bytes).
fn record(home: &Path, wallet: &str) -> (u64, Option<u64>, Vec<u8>) {
    let pass = Passphrase::new(PASSPHRASE.into()).unwrap();
    let bytes = Keystore::open(home)
        .unwrap()
        .load_wallet(wallet, &pass)
        .unwrap();
    let r = tessera_client::WalletRecord::from_bytes(&bytes).unwrap();
    (
        r.current.epoch(),
        r.pending.as_ref().map(tessera_core::KeyShare::epoch),
        r.current.to_bytes().to_vec(),
    )
}

/// bob makes the 2-of-2 wallet "fam" with alice (listening at `alice_at`); returns its key.
fn peer_wallet(b: &Path, alice: &mut Proc, alice_at: &str) -> String {
    let (ok, out) = lead(
        b,
        &[
            "peer",
            "keygen",
            "--name",
            "fam",
            "--device-name",
            "bob",
            "--connect",
            alice_at,
        ],
        &[],
    );
    assert!(ok, "{out}");
    alice.wait_for("eth address");
    field(&out, "public key")
}

/// bob leads a signature of `message` with alice; it must verify under `pk`.
fn sign_verifies(b: &Path, alice_at: &str, pk: &str, message: &str) {
    let (ok, out) = lead(
        b,
        &[
            "peer",
            "sign",
            "--wallet",
            "fam",
            "--message",
            message,
            "--device-name",
            "bob",
            "--connect",
            alice_at,
        ],
        &[],
    );
    assert!(ok, "{out}");
    assert_eq!(field(&out, "public key"), pk);
    verify(pk, message, &field(&out, "r||s||v"));
}

fn refresh_args(alice_at: &str) -> Vec<&str> {
    vec![
        "peer",
        "refresh",
        "--wallet",
        "fam",
        "--device-name",
        "bob",
        "--connect",
        alice_at,
    ]
}

#[test]
fn peer_refresh_changes_both_shares_keeps_the_key_and_the_wallet_signs() {
    let (a, b) = (home(), home());
    let (mut alice, alice_at) = listen(a.path(), "alice", &["--no-mdns", "--yes"], &[]);
    let pk = peer_wallet(b.path(), &mut alice, &alice_at);
    let (before_a, before_b) = (record(a.path(), "fam"), record(b.path(), "fam"));
    assert_eq!((before_a.0, before_b.0), (0, 0));

    let (ok, out) = lead(b.path(), &refresh_args(&alice_at), &[]);
    assert!(ok, "{out}");
    assert_eq!(field(&out, "public key"), pk);
    assert_eq!(field(&out, "epoch"), "1");
    alice.wait_for("refreshed \"fam\": its shares are now of epoch 1");
    assert!(
        alice
            .output()
            .contains("\"bob\" asks to refresh the shares of wallet \"fam\""),
        "alice was not asked"
    );
    let (after_a, after_b) = (record(a.path(), "fam"), record(b.path(), "fam"));
    assert_eq!((after_a.0, after_a.1), (1, None));
    assert_eq!((after_b.0, after_b.1), (1, None));
    assert_ne!(after_a.2, before_a.2, "alice's share did not change");
    assert_ne!(after_b.2, before_b.2, "bob's share did not change");

    // The refreshed shares sign together under the same key.
    sign_verifies(b.path(), &alice_at, &pk, "after refresh");
    alice.wait_for("signed \"after refresh\"");
}

/// Both devices hold one agreed epoch, nothing pending: returns it.
fn agreed_epoch(a: &Path, b: &Path) -> u64 {
    let (ra, rb) = (record(a, "fam"), record(b, "fam"));
    assert_eq!(ra.1, None, "alice still holds a pending share");
    assert_eq!(rb.1, None, "bob still holds a pending share");
    assert_eq!(ra.0, rb.0, "alice and bob use different epochs");
    ra.0
}

#[test]
fn a_device_killed_mid_refresh_leaves_one_usable_epoch_and_a_later_refresh_works() {
    let (a, b) = (home(), home());
    let (mut alice, alice_at) = listen(a.path(), "alice", &["--no-mdns", "--yes"], &[]);
    let pk = peer_wallet(b.path(), &mut alice, &alice_at);
    alice.kill();
    // (who pauses, where, the epoch both settle on afterwards)
    let cases = [
        // Nobody stored anything yet.
        ("alice", "refresh-round-2", 0),
        // bob (the leader) stored his new share as pending; alice never did.
        ("bob", "refresh-pending-stored", 0),
        // Both stored the new share as pending; alice died before committing.
        ("alice", "refresh-pending-stored", 1),
        // Both committed; bob died before switching.
        ("bob", "refresh-committed", 2),
        // alice committed; bob switched; alice died before hearing it.
        ("alice", "refresh-committed", 3),
    ];
    for (who, at, settled) in cases {
        let pause = [("TESSERA_TEST_PAUSE_AT", at)];
        let alice_env: &[(&str, &str)] = if who == "alice" { &pause } else { &[] };
        let bob_env: &[(&str, &str)] = if who == "bob" { &pause } else { &[] };
        let (mut alice, alice_at) = listen(a.path(), "alice", &["--no-mdns", "--yes"], alice_env);
        let mut bob = Proc::spawn(b.path(), &refresh_args(&alice_at), bob_env, &[]);
        if who == "alice" {
            alice.wait_for(&format!("paused at {at}"));
            alice.kill();
            let (ok, out) = bob.finish();
            // bob never hears alice's commit unless she committed before dying.
            if at == "refresh-committed" {
                assert!(ok, "{at}: {out}");
            } else {
                assert!(!ok, "{at}: {out}");
                assert!(out.contains("alice (party 1)"), "{at}: {out}");
            }
        } else {
            bob.wait_for(&format!("paused at {at}"));
            bob.kill();
            alice.wait_for("failed: bob (party 0)");
            alice.kill();
        }
        // Restarted, the two devices sign together (settling first) under the same key.
        let (mut alice, alice_at) = listen(a.path(), "alice", &["--no-mdns", "--yes"], &[]);
        let message = format!("after a crash at {at} of {who}");
        sign_verifies(b.path(), &alice_at, &pk, &message);
        alice.wait_for(&format!("signed {message:?}"));
        assert_eq!(agreed_epoch(a.path(), b.path()), settled, "{who} at {at}");
        alice.kill();
    }
    // A later refresh succeeds and the wallet signs with the new shares.
    let (mut alice, alice_at) = listen(a.path(), "alice", &["--no-mdns", "--yes"], &[]);
    let (ok, out) = lead(b.path(), &refresh_args(&alice_at), &[]);
    assert!(ok, "{out}");
    assert_eq!(field(&out, "epoch"), "4");
    alice.wait_for("refreshed \"fam\"");
    assert_eq!(agreed_epoch(a.path(), b.path()), 4);
    sign_verifies(b.path(), &alice_at, &pk, "after it all");
}

#[test]
fn a_refresh_of_an_unknown_wallet_or_with_other_devices_is_refused_clearly() {
    use tessera_client::peer::session;
    use tessera_client::peer::wire::{Participant, Request};

    let (a, b, c) = (home(), home(), home());
    let (mut alice, alice_at) = listen(a.path(), "alice", &["--no-mdns", "--yes"], &[]);
    let pk = peer_wallet(b.path(), &mut alice, &alice_at);
    let (_carol, carol_at) = listen(c.path(), "carol", &["--no-mdns", "--yes"], &[]);

    // On the leading device: a wallet it does not have (a usage error), a device that holds
    // no share of the wallet.
    let (ok, out) = lead(
        b.path(),
        &[
            "peer",
            "refresh",
            "--wallet",
            "nope",
            "--device-name",
            "bob",
            "--connect",
            &alice_at,
        ],
        &[],
    );
    assert!(
        !ok && out.contains("\"nope\" is not a device-to-device wallet"),
        "{out}"
    );
    let (ok, out) = lead(
        b.path(),
        &[
            "peer",
            "refresh",
            "--wallet",
            "fam",
            "--device-name",
            "bob",
            "--connect",
            &carol_at,
        ],
        &[],
    );
    assert!(
        !ok && out.contains("\"carol\" holds no share of wallet \"fam\""),
        "{out}"
    );

    // On the answering device: requests made by hand by a device of the test.
    let (_t, mallory) = test_device("mallory");
    let pass = Passphrase::new(PASSPHRASE.into()).unwrap();
    let alice_keystore = Keystore::open(a.path()).unwrap();
    let wallet_id = *tessera_client::WalletRecord::from_bytes(
        &alice_keystore.load_wallet("fam", &pass).unwrap(),
    )
    .unwrap()
    .current
    .wallet_id()
    .as_bytes();
    let me = Participant {
        name: "mallory".into(),
        identity: mallory.identity.public_key(),
        address: None,
    };
    let alice_party = Participant {
        name: "alice".into(),
        identity: alice_keystore.load_identity(&pass).unwrap().public_key(),
        address: None,
    };
    let requests = [
        // A device that holds no share claims to have switched: nothing is settled on its word.
        (
            Message::Held {
                wallet: "fam".into(),
                current: 1,
                pending: None,
            },
            "\"alice\" cannot settle \"fam\": \"mallory\" holds no share of wallet \"fam\"",
        ),
        (
            Message::Request(Request::Refresh {
                wallet: "nope".into(),
                wallet_id,
                epoch: 0,
                leader: 0,
                parties: vec![me.clone(), alice_party.clone()],
                nonce: [1; 32],
            }),
            "\"alice\" cannot refresh \"nope\": \"nope\" is not a device-to-device wallet",
        ),
        (
            Message::Request(Request::Refresh {
                wallet: "fam".into(),
                wallet_id,
                epoch: 0,
                leader: 0,
                parties: vec![me, alice_party],
                nonce: [1; 32],
            }),
            "\"alice\" cannot refresh \"fam\": protocol violation: the devices named differ",
        ),
    ];
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut known = KnownPeers::load_dir(_t.path()).unwrap();
    for (request, expected) in requests {
        let reason = rt.block_on(async {
            let mut link = session::connect(
                std::slice::from_ref(&alice_at),
                &mallory,
                &mut known,
                &mut |_: &CodePrompt| true,
            )
            .await
            .unwrap();
            pairing::send(&mut link.channel, &request).await.unwrap();
            match pairing::recv(&mut link.channel).await {
                Err(tessera_client::peer::PeerError::Refused(reason)) => reason,
                other => panic!("not refused: {other:?}"),
            }
        });
        assert!(reason.contains(expected), "{reason}");
    }
    // Nothing changed: the wallet still signs at epoch 0.
    assert_eq!(agreed_epoch(a.path(), b.path()), 0);
    sign_verifies(b.path(), &alice_at, &pk, "still fine");
}

#[test]
fn three_devices_refresh_a_2_of_3_wallet_led_by_a_device_other_than_party_0() {
    let (a, b, c) = (home(), home(), home());
    let (mut alice, alice_at) = listen(a.path(), "alice", &["--no-mdns", "--yes"], &[]);
    let (mut carol, carol_at) = listen(c.path(), "carol", &["--no-mdns", "--yes"], &[]);
    let (ok, out) = lead(
        b.path(),
        &[
            "peer",
            "keygen",
            "--name",
            "vault",
            "--device-name",
            "bob",
            "--connect",
            &format!("{alice_at},{carol_at}"),
        ],
        &[],
    );
    assert!(ok, "{out}");
    let pk = field(&out, "public key");
    alice.wait_for("eth address");
    carol.wait_for("eth address");
    let before: Vec<_> = [a.path(), b.path(), c.path()]
        .iter()
        .map(|h| record(h, "vault"))
        .collect();

    // carol (party 2) leads; bob (party 0) and alice answer, and connect to each other.
    let (mut bob, bob_at) = listen(b.path(), "bob", &["--no-mdns", "--yes"], &[]);
    let (ok, out) = lead(
        c.path(),
        &[
            "peer",
            "refresh",
            "--wallet",
            "vault",
            "--device-name",
            "carol",
            "--connect",
            &format!("{alice_at},{bob_at}"),
        ],
        &[],
    );
    assert!(ok, "{out}");
    assert_eq!(field(&out, "public key"), pk);
    alice.wait_for("refreshed \"vault\"");
    bob.wait_for("refreshed \"vault\"");
    for (h, old) in [a.path(), b.path(), c.path()].iter().zip(&before) {
        let now = record(h, "vault");
        assert_eq!((now.0, now.1), (1, None));
        assert_ne!(now.2, old.2, "a share did not change");
    }
    // A refresh needs every device: with one missing it is refused before anything runs.
    let (ok, out) = lead(
        c.path(),
        &[
            "peer",
            "refresh",
            "--wallet",
            "vault",
            "--device-name",
            "carol",
            "--connect",
            &alice_at,
        ],
        &[],
    );
    assert!(
        !ok && out.contains("a refresh takes every device of wallet"),
        "{out}"
    );
    // Two of the refreshed devices sign under the same key.
    let (ok, out) = lead(
        c.path(),
        &[
            "peer",
            "sign",
            "--wallet",
            "vault",
            "--message",
            "three refreshed",
            "--device-name",
            "carol",
            "--connect",
            &bob_at,
        ],
        &[],
    );
    assert!(ok, "{out}");
    verify(&pk, "three refreshed", &field(&out, "r||s||v"));
}
