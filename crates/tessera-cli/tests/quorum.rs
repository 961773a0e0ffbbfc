//! Quorum wallets through the server (issue 15) with real `tessera server` and `tessera`
//! processes: a structure wallet's key generation asked for with `tessera keygen --structure`
//! and joined by the other devices' `tessera listen`, on SQLite and on PostgreSQL; what the
//! server stores; signatures by one device, by two (the second asked by its `tessera listen`)
//! and across two replicas, each checked with k256 and libsecp256k1; a structure it refuses; a
//! device whose pinned identity key for another is not the registry's refuses to join; through
//! the SDK, who may open or join a session. Resharing (`tessera wallet reshare`): a device added
//! and one revoked and removed, a refresh, and the requester, the server or one of two replicas
//! SIGKILLed at each step, after which every party agrees on one epoch.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};

use common::{Backend, Server, start};

const PASSPHRASE: &str = "correct horse battery staple";

fn tessera_cmd(home: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tessera"));
    cmd.args(args)
        .env("TESSERA_HOME", home)
        .env("TESSERA_PASSPHRASE", PASSPHRASE)
        .env_remove("TESSERA_DATABASE_URL");
    cmd
}

/// Runs `tessera args` in `home`; fails the test unless it exits 0.
fn ok(home: &Path, args: &[&str]) -> String {
    let out = tessera_cmd(home, args).output().unwrap();
    assert!(
        out.status.success(),
        "tessera {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// How long a test waits for a `tessera listen --once` to end.
const LISTENER_DEADLINE: std::time::Duration = std::time::Duration::from_secs(180);

/// A `tessera listen` process, killed on drop.
struct Listener(Option<Child>);

impl Listener {
    fn start(home: &Path, args: &[&str]) -> Listener {
        Self::answering(home, args, "")
    }

    /// A listener whose stdin holds `answers` (one line per question).
    fn answering(home: &Path, args: &[&str], answers: &str) -> Listener {
        let mut child = tessera_cmd(home, &[&["listen"], args].concat())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(answers.as_bytes()).unwrap();
        Listener(Some(child))
    }

    /// Its output once it ended; panics (killing it) when it has not ended within
    /// [`LISTENER_DEADLINE`], so that a listener waiting for what never comes fails its test
    /// instead of hanging it. (Its output is small: it never fills the pipes meanwhile.)
    fn wait(mut self) -> Output {
        let mut child = self.0.take().unwrap();
        let deadline = std::time::Instant::now() + LISTENER_DEADLINE;
        while child.try_wait().unwrap().is_none() {
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                let out = child.wait_with_output().unwrap();
                panic!(
                    "tessera listen did not end within {LISTENER_DEADLINE:?}: {}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        child.wait_with_output().unwrap()
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Alice's phone, laptop and tablet, set up with `server`, the phone approving the others.
fn alices_devices(server: &Server) -> [tempfile::TempDir; 3] {
    alices_devices_at([&server.url, &server.url, &server.url])
}

/// Alice's phone, laptop and tablet, set up with the servers at `urls` (replicas of one
/// server), the phone approving the others.
fn alices_devices_at(urls: [&str; 3]) -> [tempfile::TempDir; 3] {
    let homes = [(); 3].map(|()| tempfile::tempdir().unwrap());
    for ((home, name), url) in homes.iter().zip(["phone", "laptop", "tablet"]).zip(urls) {
        let out = ok(
            home.path(),
            &["init", "--server", url, "--user", "alice", "--name", name],
        );
        if name != "phone" {
            let code = out
                .lines()
                .find_map(|l| l.strip_prefix("approval code"))
                .and_then(|c| c.split_whitespace().next())
                .unwrap_or_else(|| panic!("no approval code in {out}"))
                .to_string();
            ok(homes[0].path(), &["device", "approve", &code]);
        }
    }
    homes
}

/// `tessera init` on `home` as device `name` of `user` (a user's first device is active).
fn init_as(home: &Path, server: &Server, user: &str, name: &str) -> String {
    ok(
        home,
        &[
            "init",
            "--server",
            &server.url,
            "--user",
            user,
            "--name",
            name,
        ],
    )
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// The last JSON document `tessera listen --json` printed.
fn joined(out: &Output) -> serde_json::Value {
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "listen: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let start = text
        .find('{')
        .unwrap_or_else(|| panic!("no JSON in {text}"));
    json(&text[start..])
}

/// Checks a signature `tessera sign --json` (or `listen --json`) printed, with k256 and with
/// libsecp256k1, against the wallet key `public_key` (hex).
fn verify(signed: &serde_json::Value, public_key: &str) {
    use k256::ecdsa::signature::hazmat::PrehashVerifier;
    assert_eq!(signed["verified"], true, "{signed}");
    assert_eq!(signed["public_key"].as_str(), Some(public_key));
    let digest = hex::decode(signed["digest"].as_str().unwrap()).unwrap();
    let rsv = hex::decode(signed["signature_rsv"].as_str().unwrap()).unwrap();
    let key = hex::decode(public_key).unwrap();
    let vk = k256::ecdsa::VerifyingKey::from_sec1_bytes(&key).unwrap();
    let sig = k256::ecdsa::Signature::from_slice(&rsv[..64]).unwrap();
    vk.verify_prehash(&digest, &sig).expect("k256 rejects it");
    let pk = secp256k1::PublicKey::from_slice(&key).unwrap();
    let mut sig = secp256k1::ecdsa::Signature::from_compact(&rsv[..64]).unwrap();
    sig.normalize_s();
    let msg = secp256k1::Message::from_digest(digest.try_into().unwrap());
    secp256k1::SECP256K1
        .verify_ecdsa(msg, &sig, &pk)
        .expect("libsecp256k1 rejects it");
}

/// `tessera sign` in `home` with wallet `wallet` of `message` (and `extra` flags), as JSON.
fn sign(home: &Path, wallet: &str, message: &str, extra: &[&str]) -> serde_json::Value {
    let args = [
        &["sign", "--wallet", wallet, "--message", message, "--json"][..],
        extra,
    ]
    .concat();
    json(&ok(home, &args))
}

/// `sql` (a count, no parameter) on `server`'s database.
async fn count_all(server: &Server, sql: &'static str) -> i64 {
    let db = server.database().await;
    let n: i64 = sqlx::query_scalar(sql).fetch_one(&db).await.unwrap();
    db.close().await;
    n
}

async fn count(server: &Server, sql: &'static str, bind: &str) -> i64 {
    let db = server.database().await;
    let n: i64 = sqlx::query_scalar(sql)
        .bind(bind)
        .fetch_one(&db)
        .await
        .unwrap();
    db.close().await;
    n
}

async fn structure_keygen_on(backend: Backend) {
    let server = start(backend);
    let [phone, laptop, tablet] = alices_devices(&server);
    let listeners =
        [&laptop, &tablet].map(|h| Listener::start(h.path(), &["--yes", "--once", "--json"]));
    // On SQLite the default (no --structure) with every device online: the same wallet, its
    // devices by label.
    let (structure, stored): (&[&str], _) = match backend {
        Backend::Sqlite => (&[], "and(server, or(laptop, phone, tablet))"),
        Backend::Postgres => (
            &["--structure", "and(server, or(phone, laptop, tablet))"],
            "and(server, or(phone, laptop, tablet))",
        ),
    };
    for home in [&laptop, &tablet] {
        wait_presence(&server, &device_id(home.path()), true).await;
    }
    let made = ok(
        phone.path(),
        &[&["keygen", "--name", "family", "--json"][..], structure].concat(),
    );
    let made = json(&made);
    let outs: Vec<Output> = listeners.into_iter().map(Listener::wait).collect();
    let public_key = made["public_key"].as_str().unwrap().to_string();
    let wallet_id = made["wallet_id"].as_str().unwrap().to_string();
    for out in &outs {
        let joined = joined(out);
        assert_eq!(joined["public_key"], made["public_key"]);
        assert_eq!(joined["wallet_id"], made["wallet_id"]);
        assert_eq!(joined["wallet"], "family");
        let said = String::from_utf8_lossy(&out.stdout);
        assert!(
            said.contains(r#"device "phone" asks to create wallet "family""#),
            "{said}"
        );
    }
    // Every device holds its own share, and the server lists the wallet with that key.
    for home in [&phone, &laptop, &tablet] {
        let listed = json(&ok(home.path(), &["wallets", "--json"]));
        let family = listed
            .as_array()
            .unwrap()
            .iter()
            .find(|w| w["name"] == "family")
            .unwrap_or_else(|| panic!("{listed}"));
        assert_eq!(family["public_key"].as_str(), Some(public_key.as_str()));
        assert_eq!(family["share_on_this_device"], true);
    }
    // Each device pinned the others' identity keys.
    let pinned = json(&std::fs::read_to_string(laptop.path().join("devices.json")).unwrap());
    assert_eq!(pinned["devices"].as_object().unwrap().len(), 2, "{pinned}");
    // The server stored its one active share, and the record of the key generation.
    let shares = count(
        &server,
        "SELECT COUNT(*) FROM server_shares WHERE wallet_id = $1 AND state = 'active'",
        &wallet_id,
    )
    .await;
    assert_eq!(shares, 1);
    let done = count(
        &server,
        "SELECT COUNT(*) FROM audit_log WHERE kind = 'keygen.done' AND wallet_id = $1",
        &wallet_id,
    )
    .await;
    assert_eq!(done, 1);
    // Each device signs with the server, alone.
    for (home, who) in [(&phone, "phone"), (&laptop, "laptop"), (&tablet, "tablet")] {
        let signed = sign(home.path(), "family", &format!("from the {who}"), &[]);
        verify(&signed, &public_key);
    }
    let completed = count(
        &server,
        "SELECT COUNT(*) FROM audit_log WHERE kind = 'sign.completed' AND wallet_id = $1",
        &wallet_id,
    )
    .await;
    assert_eq!(completed, 3);
    // `wallet show`: the structure and which device each party is.
    let shown = ok(laptop.path(), &["wallet", "show", "--wallet", "family"]);
    assert!(
        shown.contains(&format!("structure      {stored}"))
            && shown.contains("the server")
            && shown.contains(r#"device "tablet""#)
            && shown
                .lines()
                .any(|l| l.contains(r#"device "laptop""#) && l.ends_with("(this device)")),
        "{shown}"
    );
    let detail = json(&ok(
        phone.path(),
        &["wallet", "show", "--wallet", "family", "--json"],
    ));
    assert_eq!(detail["public_key"].as_str(), Some(public_key.as_str()));
    assert_eq!(detail["structure"], stored);
    assert_eq!(detail["parties"].as_array().unwrap().len(), 4, "{detail}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_devices_and_the_server_make_a_structure_wallet_on_sqlite() {
    structure_keygen_on(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_devices_and_the_server_make_a_structure_wallet_on_postgres() {
    structure_keygen_on(Backend::Postgres).await;
}

/// `tessera keygen` without a structure, the user having several devices: the server and
/// every active device, each with its own share. The devices online now (the laptop's agent)
/// take part at once; the tablet, offline, is a pending party that joins by resharing once it
/// is online, then signs with the server alone. `--two-of-two` keeps the old wallet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_wallet_takes_every_device_the_offline_ones_by_resharing() {
    let server = start(Backend::Sqlite);
    let [phone, laptop, tablet] = alices_devices(&server);
    wait_presence(&server, &device_id(tablet.path()), false).await;
    let listening = Listener::start(laptop.path(), &["--yes", "--once", "--json"]);
    wait_presence(&server, &device_id(laptop.path()), true).await;
    let out = tessera_cmd(phone.path(), &["keygen", "--name", "family", "--json"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("structure and(server, or(laptop, phone))")
            && err.contains(r#"device "tablet" was not online: it joins at the next resharing"#),
        "{err}"
    );
    let made = json(&String::from_utf8_lossy(&out.stdout));
    let public_key = made["public_key"].as_str().unwrap().to_string();
    assert_eq!(joined(&listening.wait())["public_key"], made["public_key"]);
    let detail = json(&ok(
        phone.path(),
        &["wallet", "show", "--wallet", "family", "--json"],
    ));
    assert_eq!(detail["structure"], "and(server, or(laptop, phone))");
    assert_eq!(detail["pending"][0]["label"], "tablet", "{detail}");
    assert_eq!(detail["pending"][0]["change"], "add", "{detail}");
    // Once the tablet is online, the phone's agent reshares it in; it signs alone.
    let others =
        [&laptop, &tablet].map(|h| Listener::start(h.path(), &["--yes", "--once", "--json"]));
    let agent = Listener::start(
        phone.path(),
        &["--yes", "--once", "--json", "--reshare-pending"],
    );
    for out in [agent.wait()].into_iter().chain(others.map(Listener::wait)) {
        let outcome = joined(&out);
        assert_eq!(outcome["outcome"], "switched", "{outcome}");
        assert_eq!(outcome["public_key"].as_str(), Some(public_key.as_str()));
    }
    let signed = sign(tablet.path(), "family", "from the tablet", &[]);
    verify(&signed, &public_key);
    let detail = json(&ok(
        tablet.path(),
        &["wallet", "show", "--wallet", "family", "--json"],
    ));
    assert_eq!(
        detail["structure"],
        "and(server, or(laptop, phone, tablet))"
    );
    // The old 2-of-2 on request: the other devices hold no share of it.
    let two = ok(phone.path(), &["keygen", "--name", "pair", "--two-of-two"]);
    assert!(two.contains("pair"), "{two}");
    let detail = json(&ok(
        phone.path(),
        &["wallet", "show", "--wallet", "pair", "--json"],
    ));
    assert!(
        detail.get("structure").is_none_or(|s| s.is_null()),
        "{detail}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_structure_the_server_cannot_run_is_refused_and_nothing_is_stored() {
    let server = start(Backend::Sqlite);
    let [phone, ..] = alices_devices(&server);
    for (structure, why) in [
        ("and(server, or(phone, desktop))", "desktop"),
        ("or(phone, laptop)", "server"),
        ("and(server, or(phone, laptop", "expected"),
    ] {
        let out = tessera_cmd(
            phone.path(),
            &["keygen", "--name", "w", "--structure", structure],
        )
        .output()
        .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{structure}: {err}");
        assert!(err.contains(why), "{structure}: {err}");
    }
    let wallets = count(&server, "SELECT COUNT(*) FROM wallets WHERE name = $1", "w").await;
    assert_eq!(wallets, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_refuses_another_whose_key_is_not_the_one_it_pinned() {
    // The phone's run ends when the laptop does not come within the idle timeout.
    let server = Server::start_fresh(&["--session-idle-timeout", "3"]);
    let [phone, laptop, _tablet] = alices_devices(&server);
    // The laptop pinned another key for the phone (as if the server swapped the phone's key).
    let config = json(&std::fs::read_to_string(phone.path().join("device.json")).unwrap());
    let phone_id = config["device_id"].as_str().unwrap();
    std::fs::write(
        laptop.path().join("devices.json"),
        format!(
            r#"{{"version": 1, "devices": {{"{phone_id}": {{"name": "phone", "identity_key": "{}"}}}}}}"#,
            "ab".repeat(32)
        ),
    )
    .unwrap();
    let listener = Listener::start(laptop.path(), &["--yes", "--once"]);
    let keygen = tessera_cmd(
        phone.path(),
        &[
            "keygen",
            "--name",
            "family",
            "--structure",
            "and(server, or(phone, laptop))",
        ],
    )
    .output()
    .unwrap();
    let out = listener.wait();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("another identity key"), "{err}");
    // The phone's run fails too (its party never gets the laptop's channel), and no device
    // holds a share of the wallet.
    assert!(!keygen.status.success());
    assert!(!laptop.path().join("wallets").join("family").exists());
    let keyed = count(
        &server,
        "SELECT COUNT(*) FROM wallets WHERE name = $1 AND public_key IS NOT NULL",
        "family",
    )
    .await;
    assert_eq!(keyed, 0);
}

/// `and(server, threshold(2, phone, laptop, tablet))`: two devices sign with the server, the
/// second joining from `tessera listen` after it was asked; one device alone cannot sign.
async fn two_of_three_devices_on(backend: Backend) {
    let server = start(backend);
    let [phone, laptop, tablet] = alices_devices(&server);
    let listeners = [&laptop, &tablet].map(|h| Listener::start(h.path(), &["--yes", "--once"]));
    let made = json(&ok(
        phone.path(),
        &[
            "keygen",
            "--name",
            "vault",
            "--structure",
            "and(server, threshold(2, phone, laptop, tablet))",
            "--json",
        ],
    ));
    for listener in listeners {
        assert!(listener.wait().status.success());
    }
    let public_key = made["public_key"].as_str().unwrap();
    // One device and the server are not a quorum, and no other device is online.
    let err = alone_cannot_sign(&server, phone.path(), &[laptop.path(), tablet.path()]).await;
    assert!(err.contains("online"), "{err}");
    // The tablet asks, the laptop is asked and says yes.
    let laptop_listens = Listener::answering(laptop.path(), &["--once", "--json"], "y\n");
    let signed = sign(
        tablet.path(),
        "vault",
        "pay the rent",
        &["--with", "laptop"],
    );
    verify(&signed, public_key);
    let out = laptop_listens.wait();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains(r#"device "tablet" asks to sign with wallet "vault""#)
            && said.contains("pay the rent")
            && said.contains("server + laptop + tablet"),
        "{said}"
    );
    let theirs = joined(&out);
    assert_eq!(theirs["signature_rsv"], signed["signature_rsv"]);
    // Nobody named: the server picks the co-signer among the devices online, the laptop, whose
    // agent waits for sessions.
    let laptop_id = device_id(laptop.path());
    let laptop_listens = Listener::answering(laptop.path(), &["--once", "--json"], "y\n");
    wait_online(&server, &laptop_id).await;
    let signed = sign(tablet.path(), "vault", "picked by the server", &[]);
    verify(&signed, public_key);
    let out = laptop_listens.wait();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("server + laptop + tablet"), "{said}");
    // The laptop's person says no: the tablet's request fails, naming the laptop's party.
    let laptop_refuses = Listener::answering(laptop.path(), &["--once"], "n\n");
    let refused = tessera_cmd(
        tablet.path(),
        &[
            "sign",
            "--wallet",
            "vault",
            "--message",
            "no",
            "--with",
            "laptop",
        ],
    )
    .output()
    .unwrap();
    assert!(laptop_refuses.wait().status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{err}");
    assert!(err.contains("party 2") && err.contains("declined"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_of_three_devices_sign_with_the_server_on_sqlite() {
    two_of_three_devices_on(Backend::Sqlite).await;
}

/// An institution: alice's `cfo` device, bob's and carol's phones (other users, invited by
/// user name) and the server, `and(server, threshold(2, cfo, bob:phone, carol:phone))`. Each
/// invited phone's agent shows who invites it and accepts by joining: bob's with `--yes
/// --accept-from alice`, carol's after a question that `--yes` alone does not skip. Any two
/// officers sign with the server (libsecp256k1 verifies); one alone cannot; the wallet is in
/// the invited users' `tessera wallets`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn officers_of_three_users_sign_any_two_with_the_server_on_sqlite() {
    let server = start(Backend::Sqlite);
    let homes = [(); 3].map(|()| tempfile::tempdir().unwrap());
    let [cfo, bob, carol] = &homes;
    for (home, user, name) in [
        (cfo, "alice", "cfo"),
        (bob, "bob", "phone"),
        (carol, "carol", "phone"),
    ] {
        init_as(home.path(), &server, user, name);
    }
    let bob_listens = Listener::start(
        bob.path(),
        &["--yes", "--accept-from", "alice", "--once", "--json"],
    );
    let carol_listens = Listener::answering(carol.path(), &["--yes", "--once", "--json"], "y\n");
    let made = json(&ok(
        cfo.path(),
        &[
            "keygen",
            "--name",
            "vault",
            "--structure",
            "and(server, threshold(2, cfo, bob:phone, carol:phone))",
            "--json",
        ],
    ));
    let public_key = made["public_key"].as_str().unwrap().to_string();
    for (out, label, asked) in [
        (bob_listens.wait(), "bob.phone", false),
        (carol_listens.wait(), "carol.phone", true),
    ] {
        let said = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            said.contains(
                r#"user "alice" (device "cfo") invites this device into their wallet "vault""#
            ) && said.contains(&format!("as party {label:?}")),
            "{said}"
        );
        assert_eq!(said.contains("Accept and join? [y/N]:"), asked, "{said}");
        assert_eq!(
            joined(&out)["public_key"].as_str(),
            Some(public_key.as_str())
        );
    }
    for home in [bob, carol] {
        let listed = json(&ok(home.path(), &["wallets", "--json"]));
        assert!(listed.to_string().contains(&public_key), "{listed}");
    }

    // Two officers: alice's cfo with bob's phone, then carol's phone with alice's cfo.
    let bob_listens = Listener::answering(bob.path(), &["--once", "--json"], "y\n");
    let signed = sign(cfo.path(), "vault", "wire 1", &["--with", "bob.phone"]);
    verify(&signed, &public_key);
    assert_eq!(
        joined(&bob_listens.wait())["signature_rsv"],
        signed["signature_rsv"]
    );
    let cfo_listens = Listener::answering(cfo.path(), &["--once", "--json"], "y\n");
    let signed = sign(carol.path(), "vault", "wire 2", &["--with", "cfo"]);
    verify(&signed, &public_key);
    let out = cfo_listens.wait();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains(r#"device "phone" asks to sign with wallet "vault""#),
        "{said}"
    );
    // One officer alone, nobody else online: no quorum.
    alone_cannot_sign(&server, carol.path(), &[cfo.path(), bob.path()]).await;
}

/// Bob's phone holds a wallet "vault" of its own, and alice invites it into her "vault": its
/// `tessera listen` says why it cannot join and declines, so alice's key generation fails at
/// once naming its party (not after the session's idle timeout), and bob's wallet is untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invitation_under_a_wallet_name_the_device_holds_is_declined_on_sqlite() {
    let server = start(Backend::Sqlite);
    let homes = [(); 2].map(|()| tempfile::tempdir().unwrap());
    let [cfo, bob] = &homes;
    for (home, user, name) in [(cfo, "alice", "cfo"), (bob, "bob", "phone")] {
        init_as(home.path(), &server, user, name);
    }
    let own = json(&ok(bob.path(), &["keygen", "--name", "vault", "--json"]));
    let bob_listens = Listener::start(
        bob.path(),
        &["--yes", "--accept-from", "alice", "--once", "--json"],
    );
    let started = std::time::Instant::now();
    let invited = tessera_cmd(
        cfo.path(),
        &[
            "keygen",
            "--name",
            "vault",
            "--structure",
            "and(server, cfo, bob:phone)",
        ],
    )
    .output()
    .unwrap();
    let err = String::from_utf8_lossy(&invited.stderr);
    assert_eq!(invited.status.code(), Some(1), "{err}");
    assert!(err.contains("declined the invitation"), "{err}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(60),
        "{err}"
    );
    let said = String::from_utf8_lossy(&bob_listens.wait().stdout).to_string();
    assert!(
        said.contains(r#"this device has a wallet named "vault" already"#)
            && said.contains("declined; the other parties were told"),
        "{said}"
    );
    let kept = json(&ok(bob.path(), &["pubkey", "--wallet", "vault", "--json"]));
    assert_eq!(kept["public_key"], own["public_key"]);
    assert_eq!(kept["wallet_id"], own["wallet_id"]);
}

/// `tessera sign` of wallet `vault` on `home` once the devices of `others` are offline: it
/// fails, saying that it and the server cannot sign together. Its error output.
async fn alone_cannot_sign(server: &Server, home: &Path, others: &[&Path]) -> String {
    for other in others {
        wait_presence(server, &device_id(other), false).await;
    }
    let alone = tessera_cmd(home, &["sign", "--wallet", "vault", "--message", "alone"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&alone.stderr).into_owned();
    assert_eq!(alone.status.code(), Some(1), "{err}");
    assert!(err.contains("cannot sign together"), "{err}");
    err
}

/// Wallet `name` under `structure`, asked for by the phone, the other devices joining from
/// `tessera listen --yes --once`: its public key and id.
fn made_by_phone(
    phone: &Path,
    joiners: [&Path; 2],
    name: &str,
    structure: &str,
) -> (String, String) {
    let listeners = joiners.map(|h| Listener::start(h, &["--yes", "--once"]));
    let made = json(&ok(
        phone,
        &["keygen", "--name", name, "--structure", structure, "--json"],
    ));
    for listener in listeners {
        assert!(listener.wait().status.success());
    }
    (
        made["public_key"].as_str().unwrap().to_string(),
        made["wallet_id"].as_str().unwrap().to_string(),
    )
}

/// A device registered and approved by the phone: its home.
fn another_device(server_url: &str, approver: &Path, name: &str) -> tempfile::TempDir {
    let home = tempfile::tempdir().unwrap();
    let out = ok(
        home.path(),
        &[
            "init", "--server", server_url, "--user", "alice", "--name", name,
        ],
    );
    let code = out
        .lines()
        .find_map(|l| l.strip_prefix("approval code"))
        .and_then(|c| c.split_whitespace().next())
        .unwrap_or_else(|| panic!("no approval code in {out}"))
        .to_string();
    ok(approver, &["device", "approve", &code]);
    home
}

/// Waits until the server counts device `device_id` as online (its `tessera listen` waits on
/// `GET /sessions/joinable`), or with `online` false, as offline.
async fn wait_online(server: &Server, device_id: &str) {
    wait_presence(server, device_id, true).await;
}

async fn wait_presence(server: &Server, device_id: &str, online: bool) {
    let db = server.database().await;
    for _ in 0..200 {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        // Online: in a long poll (more than the grace ahead); offline: not even in the grace.
        let sql = if online {
            "SELECT COUNT(DISTINCT device_id) FROM device_presence WHERE device_id = $1 AND until >= $2 + 5"
        } else {
            "SELECT COUNT(*) FROM devices WHERE id = $1 AND NOT EXISTS \
             (SELECT 1 FROM device_presence WHERE device_id = $1 AND until >= $2)"
        };
        let found: i64 = sqlx::query_scalar(sql)
            .bind(device_id)
            .bind(now)
            .fetch_one(&db)
            .await
            .unwrap();
        if found == 1 {
            db.close().await;
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT request_id, until FROM device_presence WHERE device_id = $1 ORDER BY until",
    )
    .bind(device_id)
    .fetch_all(&db)
    .await
    .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    panic!(
        "device {device_id} never came online (or offline: {}); at {now} its presence rows \
         (request, until) are {rows:?}",
        !online
    );
}

/// `tessera wallet reshare` in `home` with `args`, the devices `listening` joining with
/// `tessera listen --yes --once --json`; every one's outcome, as JSON (the requester's first).
fn reshare(home: &Path, args: &[&str], listening: &[&Path]) -> Vec<serde_json::Value> {
    let listeners: Vec<Listener> = listening
        .iter()
        .map(|h| Listener::start(h, &["--yes", "--once", "--json"]))
        .collect();
    let mine = json(&ok(
        home,
        &[&["wallet", "reshare", "--json"][..], args].concat(),
    ));
    let mut all = vec![mine];
    all.extend(listeners.into_iter().map(|l| joined(&l.wait())));
    all
}

fn device_id(home: &Path) -> String {
    let listed = json(&ok(home, &["device", "list", "--json"]));
    listed
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["this_device"] == true)
        .and_then(|d| d["device_id"].as_str())
        .unwrap()
        .to_string()
}

/// A fourth device, once approved, is a pending party of the wallet and joins it by the
/// resharing a device agent carries out once every device is online (`listen
/// --reshare-pending`), signs, and the key stays; a device revoked with `--reshare` is
/// reshared out at once; old epochs are gone from the database after each switch; requests that
/// cannot be run are refused with nothing stored. (On SQLite; on PostgreSQL the resharings of
/// `a_replica_killed_during_a_resharing_leaves_one_epoch_on_postgres` run the same switch.)
async fn devices_join_and_leave_by_resharing_on(backend: Backend) {
    let server = start(backend);
    let [phone, laptop, tablet] = alices_devices(&server);
    let (public_key, wallet_id) = made_by_phone(
        phone.path(),
        [laptop.path(), tablet.path()],
        "family",
        "and(server, or(phone, laptop, tablet))",
    );
    let desk = another_device(&server.url, phone.path(), "desk");

    // Bad requests: nothing is created.
    for (args, says) in [
        (&["--add", "attic"][..], "attic"),
        (
            &["--remove", "server"][..],
            "server is a party of every wallet",
        ),
        (&["--add", "laptop"][..], "a party of this wallet already"),
        (&[][..], "say what changes"),
        (
            &["--add", "desk", "--with", "laptop"][..],
            "must be a minimal quorum",
        ),
    ] {
        let out = tessera_cmd(
            phone.path(),
            &[&["wallet", "reshare", "--wallet", "family"][..], args].concat(),
        )
        .output()
        .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
    }
    let sessions = count(
        &server,
        "SELECT COUNT(*) FROM sessions WHERE wallet_id = $1 AND protocol = 'reshare'",
        &wallet_id,
    )
    .await;
    assert_eq!(sessions, 0);

    // Approving the desk made it a pending party of the wallet.
    let detail = json(&ok(
        phone.path(),
        &["wallet", "show", "--wallet", "family", "--json"],
    ));
    assert_eq!(detail["pending"][0]["change"], "add", "{detail}");
    assert_eq!(detail["pending"][0]["label"], "desk", "{detail}");
    let shown = ok(phone.path(), &["wallet", "show", "--wallet", "family"]);
    assert!(
        shown.contains(r#"device "desk" (desk) joins at the next resharing"#),
        "{shown}"
    );
    // The desk joins as soon as every device is online: the phone's agent carries the change
    // out by itself (`listen --reshare-pending`), the other agents join; every device ends at
    // epoch 1 with the same key.
    let others = [&laptop, &tablet, &desk]
        .map(|h| Listener::start(h.path(), &["--yes", "--once", "--json"]));
    let agent = Listener::start(
        phone.path(),
        &["--yes", "--once", "--json", "--reshare-pending"],
    );
    let mut outcomes = vec![joined(&agent.wait())];
    outcomes.extend(others.into_iter().map(|l| joined(&l.wait())));
    for outcome in &outcomes {
        assert_eq!(outcome["outcome"], "switched", "{outcome}");
        assert_eq!(outcome["epoch"], 1, "{outcome}");
        assert_eq!(outcome["public_key"].as_str(), Some(public_key.as_str()));
    }
    let signed = sign(desk.path(), "family", "from the desk", &[]);
    verify(&signed, &public_key);
    let signed = sign(laptop.path(), "family", "from the laptop", &[]);
    verify(&signed, &public_key);
    let detail = json(&ok(
        desk.path(),
        &["wallet", "show", "--wallet", "family", "--json"],
    ));
    assert_eq!(
        detail["structure"],
        "and(server, or(phone, laptop, tablet, desk))"
    );
    assert_eq!(detail["epoch"], 1);
    assert!(detail.get("pending").is_none(), "{detail}");
    // Only the current epoch's share is left on the server.
    let shares = count(
        &server,
        "SELECT COUNT(*) FROM server_shares WHERE wallet_id = $1",
        &wallet_id,
    )
    .await;
    assert_eq!(shares, 1);

    // The laptop is revoked (a copy of its keystore is kept), then reshared out.
    let laptop_copy = tempfile::tempdir().unwrap();
    common::copy_dir(laptop.path(), laptop_copy.path());
    let laptop_id = device_id(laptop.path());
    let listeners =
        [&tablet, &desk].map(|h| Listener::start(h.path(), &["--yes", "--once", "--json"]));
    let revoked = ok(phone.path(), &["device", "revoke", &laptop_id, "--reshare"]);
    assert!(
        revoked.contains(r#"wallet family: "laptop" (laptop) leaves when it is reshared"#)
            && revoked.contains("reshared: epoch 2"),
        "{revoked}"
    );
    for listener in listeners {
        let outcome = joined(&listener.wait());
        assert_eq!(outcome["outcome"], "switched", "{outcome}");
        assert_eq!(outcome["epoch"], 2, "{outcome}");
    }
    // Nothing is pending any more.
    let out = tessera_cmd(
        tablet.path(),
        &["wallet", "reshare", "--wallet", "family", "--pending"],
    )
    .output()
    .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("no pending change"), "{err}");
    let detail = json(&ok(
        phone.path(),
        &["wallet", "show", "--wallet", "family", "--json"],
    ));
    assert_eq!(detail["structure"], "and(server, or(phone, tablet, desk))");
    let parties = count(
        &server,
        "SELECT COUNT(*) FROM wallet_parties WHERE wallet_id = $1",
        &wallet_id,
    )
    .await;
    assert_eq!(parties, 4);
    verify(&sign(phone.path(), "family", "after", &[]), &public_key);
    // The laptop's old share: its device is refused, and its epoch is gone.
    let out = tessera_cmd(
        laptop_copy.path(),
        &["sign", "--wallet", "family", "--message", "still here?"],
    )
    .output()
    .unwrap();
    assert_ne!(out.status.code(), Some(0));
    let shares = count(
        &server,
        "SELECT COUNT(*) FROM server_shares WHERE wallet_id = $1 AND epoch < 2",
        &wallet_id,
    )
    .await;
    assert_eq!(shares, 0);
    let done = count(
        &server,
        "SELECT COUNT(*) FROM audit_log WHERE kind = 'reshare.done' AND wallet_id = $1",
        &wallet_id,
    )
    .await;
    assert_eq!(done, 2);

    // A refresh of the structure wallet: same structure, next epoch, the desk dealing.
    let outcomes = reshare(
        desk.path(),
        &["--wallet", "family", "--refresh"],
        &[phone.path(), tablet.path()],
    );
    assert!(outcomes.iter().all(|o| o["epoch"] == 3), "{outcomes:?}");
    verify(
        &sign(tablet.path(), "family", "refreshed", &[]),
        &public_key,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_join_and_leave_by_resharing_on_sqlite() {
    devices_join_and_leave_by_resharing_on(Backend::Sqlite).await;
}

/// What a test of [`crashes_during_resharing_on`] SIGKILLs.
#[derive(Clone, Copy)]
enum Crash {
    /// The requesting device.
    Device(Backend),
    /// The server, restarted at once.
    Server(Backend),
    /// The replica the requester uses, of two on one PostgreSQL database (the other devices use
    /// the other replica, which serves them while the first is down); restarted afterwards.
    Replica,
}

/// The requesting device's `tessera wallet reshare`, the server (then restarted) or one of two
/// replicas ([`Crash`]) SIGKILLed at each step of the two-phase finish of a resharing (a
/// refresh of the wallet: same structure, next epoch): afterwards the server and
/// every device agree on one epoch (the old one unless the crash came after the requester's
/// commit): the requester signs at it, the server holds one active share, and the next
/// resharing, which needs every device's share of that epoch, runs; the last one completes,
/// leaving no older or pending share behind.
async fn crashes_during_resharing_on(crash: Crash) {
    use std::io::BufRead;
    let data = tempfile::tempdir().unwrap();
    let (mut server, other, [phone, laptop, tablet]) = match crash {
        Crash::Device(backend) | Crash::Server(backend) => {
            let server = start(backend);
            let homes = alices_devices(&server);
            (server, None, homes)
        }
        Crash::Replica => {
            let database = common::fresh_postgres_database();
            let args = ["--database-url", database.as_str()];
            let a = Server::start(&data.path().join("data"), &args);
            let b = Server::start(&data.path().join("data"), &args);
            let homes = alices_devices_at([&a.url, &b.url, &b.url]);
            (a, Some(b), homes)
        }
    };
    let kill_server = !matches!(crash, Crash::Device(_));
    let (public_key, wallet_id) = made_by_phone(
        phone.path(),
        [laptop.path(), tablet.path()],
        "family",
        "and(server, or(phone, laptop, tablet))",
    );
    let resume_dir = tempfile::tempdir().unwrap();
    let mut epoch = 0;
    // (A crash before the new shares exist stores nothing, as in the failed runs of the other
    // sessions' tests; the cases here are those of the two-phase finish.)
    // The replica case runs the later step only (after the commit, where the replica left must
    // end a session whose new shares exist); the single-server cases cover both.
    let steps: &[&str] = match crash {
        Crash::Replica => &["commit-sent"],
        Crash::Device(_) | Crash::Server(_) => &["pending-stored", "commit-sent"],
    };
    for &pause_at in steps {
        let case = format!("server killed {kill_server}, at {pause_at}");
        let mut listeners =
            Some([&laptop, &tablet].map(|h| Listener::start(h.path(), &["--yes", "--once"])));
        let resume = resume_dir.path().join(case.replace([' ', ','], "-"));
        let mut child = tessera_cmd(
            phone.path(),
            &["wallet", "reshare", "--wallet", "family", "--refresh"],
        )
        .env("TESSERA_TEST_PAUSE_AT", pause_at)
        .env("TESSERA_TEST_RESUME_FILE", &resume)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
        let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
        loop {
            let line = lines
                .next()
                .unwrap_or_else(|| panic!("{case}: the resharing ended before the pause"))
                .unwrap();
            if line == format!("paused at {pause_at}") {
                break;
            }
        }
        if pause_at == "commit-sent" {
            // Let the commit reach the server before the crash.
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        }
        if kill_server {
            server.kill();
            if other.is_some() {
                // The replica left ends the session (its runner's replica died), and serves
                // the devices on it: the laptop signs at the epoch it settles on.
                for listener in listeners.take().into_iter().flatten() {
                    listener.wait();
                }
                let signed = sign(
                    laptop.path(),
                    "family",
                    &format!("{case}, one replica"),
                    &[],
                );
                verify(&signed, &public_key);
            }
            server.restart();
            std::fs::write(&resume, b"").unwrap();
            let status = child.wait().unwrap();
            assert!(!status.success(), "{case}: the requester did not notice");
        } else {
            child.kill().unwrap();
            child.wait().unwrap();
        }
        for listener in listeners.into_iter().flatten() {
            listener.wait();
        }
        let now = json(&ok(
            phone.path(),
            &["wallet", "show", "--wallet", "family", "--json"],
        ))["epoch"]
            .as_u64()
            .unwrap();
        if pause_at == "commit-sent" {
            assert!(now == epoch || now == epoch + 1, "{case}: epoch {now}");
        } else {
            assert_eq!(now, epoch, "{case}");
        }
        epoch = now;
        // The phone, which crashed or saw the server crash, signs at that epoch.
        verify(&sign(phone.path(), "family", &case, &[]), &public_key);
        let shares = count(
            &server,
            "SELECT COUNT(*) FROM server_shares WHERE wallet_id = $1 AND state = 'active'",
            &wallet_id,
        )
        .await;
        assert_eq!(shares, 1, "{case}");
        // The next case's resharing needs every device's share of this epoch.
    }
    let outcomes = reshare(
        phone.path(),
        &["--wallet", "family", "--refresh"],
        &[laptop.path(), tablet.path()],
    );
    assert!(
        outcomes.iter().all(|o| o["epoch"] == epoch + 1),
        "{outcomes:?}"
    );
    let shares = count(
        &server,
        "SELECT COUNT(*) FROM server_shares WHERE wallet_id = $1",
        &wallet_id,
    )
    .await;
    assert_eq!(shares, 1, "older or pending shares are left");
    // Each resharing needed every device at the epoch the crash before it left: they got there.
    for (home, who) in [(&phone, "phone"), (&laptop, "laptop"), (&tablet, "tablet")] {
        let signed = sign(home.path(), "family", &format!("at the end: {who}"), &[]);
        verify(&signed, &public_key);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_killed_during_a_resharing_leaves_one_epoch_on_sqlite() {
    crashes_during_resharing_on(Crash::Device(Backend::Sqlite)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_killed_during_a_resharing_leaves_one_epoch_on_sqlite() {
    crashes_during_resharing_on(Crash::Server(Backend::Sqlite)).await;
}

/// The replica running the server's party killed after the requester's commit, the other
/// devices on the other replica: it ends the session, they sign through it, and after the restart
/// every party agrees on one epoch (on PostgreSQL, which replicas need).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_during_a_resharing_leaves_one_epoch_on_postgres() {
    crashes_during_resharing_on(Crash::Replica).await;
}

/// The devices of one wallet connected to two replicas of one server (one PostgreSQL
/// database): the key generation and signatures whose signers are on different replicas.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_on_two_replicas_make_and_sign_a_structure_wallet() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let database = common::fresh_postgres_database();
    let a = Server::start(&data, &["--database-url", &database]);
    let b = Server::start(&data, &["--database-url", &database]);
    let [phone, laptop, tablet] = alices_devices_at([&a.url, &b.url, &a.url]);
    let listeners = [&laptop, &tablet].map(|h| Listener::start(h.path(), &["--yes", "--once"]));
    let made = json(&ok(
        phone.path(),
        &[
            "keygen",
            "--name",
            "vault",
            "--structure",
            "and(server, threshold(2, phone, laptop, tablet))",
            "--json",
        ],
    ));
    for listener in listeners {
        let out = listener.wait();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let public_key = made["public_key"].as_str().unwrap();
    // The tablet (replica a) with the laptop (replica b), then the laptop with the phone (a).
    for (asker, asked, label) in [(&tablet, &laptop, "laptop"), (&laptop, &phone, "phone")] {
        let listener = Listener::answering(asked.path(), &["--once", "--json"], "y\n");
        let signed = sign(asker.path(), "vault", "across replicas", &["--with", label]);
        verify(&signed, public_key);
        assert_eq!(
            joined(&listener.wait())["signature_rsv"],
            signed["signature_rsv"]
        );
    }
}

mod through_the_sdk {
    //! The same flows through the device SDK, attacked at the routes: who may open or join a
    //! structure wallet's session, a party's second socket, requests the server must refuse.

    use std::path::Path;
    use std::time::Duration;

    use futures_util::StreamExt;
    use tessera_api as api;
    use tessera_api::intent::SignKind;
    use tessera_client::ClientError;
    use tessera_client::device::online::{Joined, Online};
    use tessera_client::device::{Device, DeviceError, ServerAddress};
    use tessera_core::DerivationPath;
    use tessera_store::{KeystoreOptions, Passphrase};

    use super::common::{Backend, Server, start, ws_request};

    fn passphrase() -> Passphrase {
        Passphrase::new("device pw".into()).unwrap()
    }

    fn device(dir: &Path) -> Device {
        Device::open_dir(dir)
            .with_keystore_options(KeystoreOptions::default().insecure_fast_kdf_for_tests())
    }

    /// A device of `user` named `name`, set up and logged in; approved by `approver` if pending.
    async fn online(
        server: &Server,
        dir: &Path,
        user: &str,
        name: &str,
        approver: Option<&Online>,
    ) -> Online {
        let address = ServerAddress {
            url: server.url.clone(),
            fingerprint: None,
        };
        let device = device(dir);
        let registered = device
            .init(
                &address.client().unwrap(),
                &passphrase(),
                &address,
                user,
                name,
            )
            .await
            .unwrap();
        if let Some(code) = registered.approval_code {
            approver.unwrap().approve_device(&code).await.unwrap();
        }
        device.connect(passphrase()).await.unwrap()
    }

    /// Waits for a joinable session of `online`'s that `pick` accepts.
    async fn joinable(
        online: &Online,
        pick: impl Fn(&api::JoinableSession) -> bool,
    ) -> api::JoinableSession {
        // Each request waits on the server until a session comes (or 5 s pass).
        for _ in 0..10 {
            let sessions = online.joinable_wait(Duration::from_secs(5)).await.unwrap();
            if let Some(session) = sessions.into_iter().find(&pick) {
                return session;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("no joinable session came");
    }

    /// Opens `session` with `online`'s token: the HTTP status of a refusal, or the socket.
    async fn open(
        server: &Server,
        online: &Online,
        session: &str,
    ) -> Result<
        tokio_tungstenite::WebSocketStream<
            tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
        >,
        u16,
    > {
        let request = ws_request(&server.url, online.client().token().unwrap(), session);
        match tokio_tungstenite::connect_async(request).await {
            Ok((socket, _)) => Ok(socket),
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => Err(resp.status().as_u16()),
            Err(e) => panic!("{e}"),
        }
    }

    /// Checks that the devices that joined a key generation hold shares of `made`'s wallet.
    fn same_wallet(made: &tessera_core::KeyShare, joined: [Result<Joined, DeviceError>; 2]) {
        for joined in joined {
            let Joined::Wallet(share) = joined.unwrap() else {
                panic!("not a wallet")
            };
            assert_eq!(share.public_key(), made.public_key());
        }
    }

    fn message(text: &str) -> SignKind {
        SignKind::EthMessage {
            message: text.into(),
        }
    }

    fn refused(e: &DeviceError) -> (u16, String) {
        match e {
            DeviceError::Client(ClientError::Server {
                status, message, ..
            }) => (*status, message.clone()),
            other => panic!("not a refusal by the server: {other}"),
        }
    }

    async fn admitted_parties_on(backend: Backend) {
        tessera_client::tls::install_crypto_provider();
        let server = start(backend);
        let dirs: Vec<_> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
        let phone = online(&server, dirs[0].path(), "alice", "phone", None).await;
        let laptop = online(&server, dirs[1].path(), "alice", "laptop", Some(&phone)).await;
        let tablet = online(&server, dirs[2].path(), "alice", "tablet", Some(&phone)).await;
        let bob = online(&server, dirs[3].path(), "bob", "phone", None).await;

        // The key generation: the requester and other users see nothing to join; a device of
        // another user cannot open it.
        let (made, (laptop_joined, tablet_joined)) =
            tokio::join!(phone.keygen_structure("vault", VAULT, |_, _| {}), async {
                let session = joinable(&laptop, |_| true).await;
                assert_eq!(session.protocol, "keygen");
                assert_eq!(session.requested_by, "phone");
                assert_eq!(session.parties.structure, VAULT);
                assert!(phone.joinable().await.unwrap().is_empty());
                // Waiting on the server ends empty after the wait.
                assert!(
                    bob.joinable_wait(Duration::from_secs(1))
                        .await
                        .unwrap()
                        .is_empty()
                );
                assert_eq!(
                    open(&server, &bob, session.session_id.as_str()).await.err(),
                    Some(403)
                );
                let tablet_session = joinable(&tablet, |_| true).await;
                tokio::join!(
                    laptop.join(&session, |_, _| {}),
                    tablet.join(&tablet_session, |_, _| {})
                )
            });
        let made = made.unwrap();
        same_wallet(&made, [laptop_joined, tablet_joined]);

        // Requests the server refuses, and nothing is created for them (no other device is
        // online to complete a quorum).
        for device in [&laptop, &tablet] {
            super::wait_presence(&server, &device.config().device_id, false).await;
        }
        let with = |labels: &[&str]| labels.iter().map(|l| l.to_string()).collect::<Vec<_>>();
        let mut record = phone.wallet("vault").unwrap();
        for (labels, why) in [
            (with(&["server"]), "not a device party"),
            (with(&["desktop"]), "not a device party"),
            (with(&[]), "cannot sign together"),
        ] {
            let e = phone
                .sign_with(
                    "vault",
                    &mut record,
                    &message("x"),
                    &DerivationPath::root(),
                    &labels,
                    |_, _| {},
                    |_| {},
                )
                .await
                .unwrap_err();
            let (status, text) = refused(&e);
            assert_eq!(status, 400, "{text}");
            assert!(text.contains(why), "{labels:?}: {text}");
        }
        let e = phone.refresh("vault", |_| {}).await.unwrap_err();
        assert!(
            refused(&e)
                .1
                .contains("wallet reshare --wallet NAME --refresh"),
            "{e}"
        );

        // A signing session: the tablet asks with the laptop. The phone, not a signer, neither
        // sees it nor opens it; the laptop's second socket is refused; when the socket that
        // holds the laptop's place drops, the tablet is told the laptop's party left.
        let (pay, root, laptop_only) = (message("pay"), DerivationPath::root(), with(&["laptop"]));
        let mut tablet_record = tablet.wallet("vault").unwrap();
        let (signed, ()) = tokio::join!(
            tablet.sign_with(
                "vault",
                &mut tablet_record,
                &pay,
                &root,
                &laptop_only,
                |_, _| {},
                |_| {}
            ),
            async {
                let session = joinable(&laptop, |s| s.protocol == "sign").await;
                assert_eq!(session.parties.signers, vec![0, 2, 3]);
                assert!(phone.joinable().await.unwrap().is_empty());
                assert_eq!(
                    open(&server, &phone, session.session_id.as_str())
                        .await
                        .err(),
                    Some(403)
                );
                let mut holder = open(&server, &laptop, session.session_id.as_str())
                    .await
                    .unwrap();
                let second = laptop.join(&session, |_, _| {}).await.unwrap_err();
                assert!(
                    matches!(
                        &second,
                        DeviceError::Client(ClientError::Closed { code: 4409, .. })
                    ),
                    "{second}"
                );
                // The holder reads what the others sent it, then drops.
                let _ = tokio::time::timeout(Duration::from_millis(300), holder.next()).await;
                drop(holder);
            }
        );
        let e = signed.unwrap_err();
        assert!(e.to_string().contains("party 2"), "{e}");

        // The same request, joined properly, signs.
        let mut tablet_record = tablet.wallet("vault").unwrap();
        let (signed, joined) = tokio::join!(
            tablet.sign_with(
                "vault",
                &mut tablet_record,
                &pay,
                &root,
                &laptop_only,
                |_, _| {},
                |_| {}
            ),
            async {
                let session = joinable(&laptop, |s| s.protocol == "sign").await;
                laptop.join(&session, |_, _| {}).await
            }
        );
        let Joined::Signed(theirs) = joined.unwrap() else {
            panic!("not a signature")
        };
        assert_eq!(signed.unwrap().signature, theirs.signature);
        // The server recorded the end before it told the signers: the laptop, which saw the
        // server finish, no longer finds the session (joining it would wait for parties that
        // are gone).
        assert!(laptop.joinable().await.unwrap().is_empty());

        // 50 requests at once: one key generation per wallet name (the others 409), and
        // signing requests that all get their session; never a server error.
        let http = reqwest::Client::new();
        let token = phone.client().token().unwrap().to_string();
        let post = |path: &'static str, body: serde_json::Value| {
            let (http, token, url) = (&http, &token, &server.url);
            async move {
                http.post(format!("{url}{path}"))
                    .bearer_auth(token)
                    .json(&body)
                    .send()
                    .await
                    .unwrap()
                    .status()
                    .as_u16()
            }
        };
        let nonce = "11".repeat(32);
        let keygens = futures_util::future::join_all((0..50).map(|_| {
            post(
                "/keygen",
                serde_json::json!({"name": "race", "structure": VAULT, "device_nonce": nonce}),
            )
        }))
        .await;
        assert_eq!(
            keygens.iter().filter(|&&s| s == 200).count(),
            1,
            "{keygens:?}"
        );
        assert!(keygens.iter().all(|&s| s == 200 || s == 409), "{keygens:?}");
        let wallet_id = made.wallet_id().to_string();
        let signs = futures_util::future::join_all((0..50).map(|i| {
            post(
                "/sign",
                serde_json::json!({
                    "wallet_id": wallet_id, "path": "m", "kind": "eth-message",
                    "message": format!("race {i}"), "with": ["laptop"],
                }),
            )
        }))
        .await;
        assert!(signs.iter().all(|&s| s == 200), "{signs:?}");
    }

    /// The laptop's side of a signing session, run by hand so that it misbehaves: its channels
    /// with the other devices set up as an honest device's, then every round-2 message it sends
    /// the server cut in half. Returns how its run ended.
    /// How [`misbehave`] corrupts the laptop's messages.
    #[derive(Clone, Copy)]
    enum Corruption {
        /// Cuts in half its round-2 message to the server: the server's checks name it.
        Named,
        /// Adds one to its round-3 share of the signature `u`, re-encoded through the engine's
        /// own wire struct (to every party): the signature does not verify, nobody is named.
        Unnamed,
    }

    /// Runs `laptop`'s party of signing `session` with its messages corrupted `how`: how its
    /// own run ended.
    async fn misbehave(
        server: &Server,
        laptop: &Online,
        dir: &Path,
        session: &api::JoinableSession,
        how: Corruption,
    ) -> String {
        use std::collections::BTreeMap;
        use tessera_client::session_socket::SocketLink;
        use tessera_core::{PartyIndex, Session, SignRequest, SignSession, driver};

        let identity = device(dir)
            .keystore()
            .unwrap()
            .load_identity(&passphrase())
            .unwrap();
        let share = laptop.wallet("vault").unwrap().current;
        let sign = session.sign.as_ref().unwrap();
        let mut nonce = [0u8; 32];
        hex::decode_to_slice(&session.nonce, &mut nonce).unwrap();
        let signers: Vec<PartyIndex> = session
            .parties
            .signers
            .iter()
            .map(|&p| PartyIndex::new(p))
            .collect();
        let request = SignRequest {
            nonce,
            signers: signers.clone(),
            digest: tessera_api::intent::decode(&sign.kind).unwrap().digest,
            path: sign.path.parse().unwrap(),
        };
        let mut run = SignSession::new(&share, &request).unwrap();
        let socket = open(server, laptop, session.session_id.as_str())
            .await
            .unwrap();
        let mut link = SocketLink::new(socket, run.party(), &run.peers()).unwrap();
        let mut trusted = BTreeMap::new();
        let mut server_party = None;
        for p in &session.parties.parties {
            let index = PartyIndex::new(p.party);
            match &p.identity_key {
                None => server_party = Some(index),
                Some(key) if p.party != session.parties.me && signers.contains(&index) => {
                    let mut bytes = [0u8; 32];
                    hex::decode_to_slice(key, &mut bytes).unwrap();
                    trusted.insert(index, bytes);
                }
                Some(_) => {}
            }
        }
        link.seal(
            &identity,
            session.session_id.as_str().as_bytes(),
            &trusted,
            Duration::from_secs(30),
        )
        .await
        .unwrap();
        let mut evil = Corrupting {
            inner: link,
            server: server_party.unwrap(),
            how,
        };
        match driver::drive(
            &mut run,
            &mut evil,
            Some(Duration::from_secs(30)),
            |_, _| Ok(()),
        )
        .await
        {
            Ok(_) => "its own run signed".to_owned(),
            Err(e) => e.to_string(),
        }
    }

    /// A link that corrupts messages as [`Corruption`] says.
    struct Corrupting<L> {
        inner: L,
        server: tessera_core::PartyIndex,
        how: Corruption,
    }

    impl<L: tessera_core::driver::Link> tessera_core::driver::Link for Corrupting<L> {
        type Error = L::Error;

        async fn send(&mut self, envelope: &tessera_core::Envelope) -> Result<(), L::Error> {
            match self.how {
                Corruption::Named if envelope.round == 2 && envelope.to == self.server => {
                    let mut cut = envelope.clone();
                    cut.payload.truncate(cut.payload.len() / 2);
                    self.inner.send(&cut).await
                }
                Corruption::Unnamed if envelope.round == 3 => {
                    use dkls23::protocols::signing::Broadcast3to4;
                    let mut bad = envelope.clone();
                    let (mut share, rest): (Broadcast3to4<k256::Secp256k1>, _) =
                        postcard::take_from_bytes(&bad.payload).unwrap();
                    assert!(rest.is_empty());
                    share.u += k256::Scalar::ONE;
                    bad.payload = postcard::to_allocvec(&share).unwrap();
                    self.inner.send(&bad).await
                }
                _ => self.inner.send(envelope).await,
            }
        }

        async fn recv(
            &mut self,
            idle: Option<Duration>,
        ) -> Result<Option<(tessera_core::PartyIndex, Vec<u8>)>, L::Error> {
            self.inner.recv(idle).await
        }

        async fn send_control(
            &mut self,
            control: tessera_core::driver::Control,
        ) -> Result<(), L::Error> {
            self.inner.send_control(control).await
        }

        async fn recv_control(
            &mut self,
            from: tessera_core::PartyIndex,
            idle: Option<Duration>,
        ) -> Result<Option<tessera_core::driver::Control>, L::Error> {
            self.inner.recv_control(from, idle).await
        }
    }

    /// The structure of [`vault_of_three`]'s wallet.
    const VAULT: &str = "and(server, threshold(2, phone, laptop, tablet))";

    /// Alice's phone, laptop and tablet, set up on `server` in `dirs`, and the wallet `vault`
    /// under [`VAULT`] the phone made with the others.
    async fn vault_of_three(
        server: &Server,
        dirs: &[tempfile::TempDir],
    ) -> ([Online; 3], tessera_core::KeyShare) {
        tessera_client::tls::install_crypto_provider();
        let phone = online(server, dirs[0].path(), "alice", "phone", None).await;
        let laptop = online(server, dirs[1].path(), "alice", "laptop", Some(&phone)).await;
        let tablet = online(server, dirs[2].path(), "alice", "tablet", Some(&phone)).await;
        let (made, (laptop_joined, tablet_joined)) =
            tokio::join!(phone.keygen_structure("vault", VAULT, |_, _| {}), async {
                let session = joinable(&laptop, |_| true).await;
                let tablet_session = joinable(&tablet, |_| true).await;
                tokio::join!(
                    laptop.join(&session, |_, _| {}),
                    tablet.join(&tablet_session, |_, _| {})
                )
            });
        laptop_joined.unwrap();
        tablet_joined.unwrap();
        ([phone, laptop, tablet], made.unwrap())
    }

    /// The tablet signs `kind` with `vault` asking for the laptop, whose party runs corrupted
    /// `how` ([`misbehave`]); the phone's agent, online, joins the signature it is picked for.
    /// Checks that the phone signed the tablet's signature and that the tablet was told of one
    /// ban, of the laptop's party (2) and device: the tablet's outcome, and that ban.
    async fn with_a_corrupt_laptop(
        server: &Server,
        [phone, laptop, tablet]: [&Online; 3],
        dirs: &[tempfile::TempDir],
        kind: &SignKind,
        how: Corruption,
    ) -> (tessera_client::device::online::Signed, api::Ban) {
        let root = DerivationPath::root();
        let mut record = tablet.wallet("vault").unwrap();
        let with = vec!["laptop".to_string()];
        let (signed, laptop_ended, phone_joined) = tokio::join!(
            tablet.sign_with("vault", &mut record, kind, &root, &with, |_, _| {}, |_| {}),
            async {
                let session = joinable(laptop, |s| s.sign.is_some()).await;
                misbehave(server, laptop, dirs[1].path(), &session, how).await
            },
            async {
                let session = joinable(phone, |s| s.sign.is_some()).await;
                phone.join(&session, |_, _| {}).await
            }
        );
        let signed = signed.unwrap();
        assert!(!laptop_ended.is_empty());
        let Joined::Signed(theirs) = phone_joined.unwrap() else {
            panic!("the phone did not sign")
        };
        assert_eq!(theirs.signature, signed.signature);
        assert_eq!(signed.banned.len(), 1, "{:?}", signed.banned);
        let ban = signed.banned[0].clone();
        assert_eq!(ban.party, 2);
        assert_eq!(
            ban.device_id.as_ref().map(|d| d.as_str()),
            Some(laptop.config().device_id.as_str())
        );
        (signed, ban)
    }

    /// Robust signing: the tablet asks to sign with the laptop, whose messages to the server
    /// fail the checks mid-sign. The server bans the laptop's party and records it; the
    /// tablet's request is asked again without it, the server picking the phone, whose agent is
    /// online; the signature verifies and the tablet is told the ban. The banned laptop is then
    /// refused as a co-signer, and a resharing that keeps it is refused; one without it ends its
    /// ban, even though its party index now belongs to the tablet.
    async fn a_misbehaving_cosigner_is_banned_and_the_request_still_signed_on(backend: Backend) {
        let server = start(backend);
        let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
        let ([phone, laptop, tablet], made) = vault_of_three(&server, &dirs).await;
        let (public_key, made_id) = (made.public_key(), made.wallet_id().to_string());

        let kind = message("robust");
        let root = DerivationPath::root();
        let mut record = tablet.wallet("vault").unwrap();
        let with = vec!["laptop".to_string()];
        let (signed, ban) = with_a_corrupt_laptop(
            &server,
            [&phone, &laptop, &tablet],
            &dirs,
            &kind,
            Corruption::Named,
        )
        .await;
        let digest = tessera_api::intent::decode(&kind).unwrap().digest;
        public_key.verify(&digest, &signed.signature).unwrap();
        // The tablet was told: the laptop's party (2) was banned, naming its device.
        assert!(!ban.reason.contains("isolated"), "{}", ban.reason);
        // The audit log names the banned party and its device.
        let records = tablet.audit(Some("vault")).await.unwrap();
        let banned = records
            .iter()
            .find(|r| r.kind == "party.banned")
            .expect("no party.banned record");
        let detail: serde_json::Value = serde_json::from_str(&banned.detail).unwrap();
        assert_eq!(detail["party"], 2, "{detail}");
        assert_eq!(
            detail["device_id"].as_str(),
            Some(laptop.config().device_id.as_str())
        );
        // The laptop is refused as a co-signer from now on, naming the ban.
        let e = tablet
            .sign_with("vault", &mut record, &kind, &root, &with, |_, _| {}, |_| {})
            .await
            .unwrap_err();
        let (status, text) = refused(&e);
        assert_eq!(status, 403, "{text}");
        assert!(
            text.contains("party 2") && text.contains("banned"),
            "{text}"
        );

        // A resharing that keeps the banned laptop is refused (nobody approved lifting it)...
        use tessera_client::device::reshare::ReshareOutcome;
        use tessera_client::reshare::ReshareChange;
        let refresh = ReshareChange {
            structure: Some(VAULT.into()),
            with: vec!["phone".into()],
            ..ReshareChange::default()
        };
        let e = tablet.reshare("vault", &refresh, |_| {}).await.unwrap_err();
        let (status, text) = refused(&e);
        assert_eq!(status, 403, "{text}");
        assert!(
            text.contains("banned") && text.contains("without it"),
            "{text}"
        );
        // ... one without it runs: `and(server, phone, tablet)`, where the tablet is party 2,
        // the index the laptop's ban had. The ban ends with the laptop's place, and the tablet
        // signs.
        // The tablet names no co-dealer: the server completes the quorum with the phone, whose
        // agent is online (the banned laptop is left out).
        let without = ReshareChange {
            remove: vec!["laptop".into()],
            ..ReshareChange::default()
        };
        let (mine, theirs) = tokio::join!(
            async {
                super::wait_online(&server, &phone.config().device_id).await;
                tablet.reshare("vault", &without, |_| {}).await
            },
            async {
                let session = joinable(&phone, |s| s.protocol == "reshare").await;
                phone.join(&session, |_, _| {}).await
            }
        );
        assert!(
            matches!(mine.unwrap(), ReshareOutcome::Switched { epoch: 1, .. }),
            "the tablet's resharing"
        );
        assert!(matches!(
            theirs.unwrap(),
            Joined::Reshared(ReshareOutcome::Switched { epoch: 1, .. })
        ));
        let bans = tablet.client().bans(&made_id).await.unwrap();
        assert!(bans.iter().all(|b| b.lifted_at.is_some()), "{bans:?}");
        let mut record = tablet.wallet("vault").unwrap();
        assert_eq!(record.current.party().get(), 2);
        let with_phone = vec!["phone".to_string()];
        let (signed, phone_joined) = tokio::join!(
            tablet.sign_with(
                "vault",
                &mut record,
                &kind,
                &root,
                &with_phone,
                |_, _| {},
                |_| {}
            ),
            async {
                let session = joinable(&phone, |s| s.sign.is_some()).await;
                phone.join(&session, |_, _| {}).await
            }
        );
        public_key
            .verify(&digest, &signed.unwrap().signature)
            .unwrap();
        phone_joined.unwrap();
    }

    /// Robust signing when the engine names nobody (`tessera_server::isolation`): the tablet
    /// asks to sign with the laptop, which corrupts its share of the signature, so that the
    /// signature of server + laptop + tablet does not verify and no party can say whose share
    /// was bad. The failed run names nobody (its record names no party, and nobody is banned
    /// for it); the tablet asks again and the server runs the quorum that splits the suspects,
    /// server + phone + tablet, which signs; the laptop, the one suspect left, is banned with
    /// the quorums as evidence, and the tablet is told.
    async fn an_unnamed_culprit_is_isolated_and_banned_on(backend: Backend) {
        let server = start(backend);
        let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
        let ([phone, laptop, tablet], made) = vault_of_three(&server, &dirs).await;
        let (public_key, wallet_id) = (made.public_key(), made.wallet_id().to_string());

        let kind = message("isolated");
        let root = DerivationPath::root();
        let mut record = tablet.wallet("vault").unwrap();
        let with = vec!["laptop".to_string()];
        let (signed, ban) = with_a_corrupt_laptop(
            &server,
            [&phone, &laptop, &tablet],
            &dirs,
            &kind,
            Corruption::Unnamed,
        )
        .await;
        let digest = tessera_api::intent::decode(&kind).unwrap().digest;
        public_key.verify(&digest, &signed.signature).unwrap();
        // The laptop (party 2) was banned, isolated, and the tablet was told.
        assert!(
            ban.reason.contains("isolated")
                && ban.reason.contains("laptop + tablet")
                && ban.reason.contains("phone + tablet"),
            "{}",
            ban.reason
        );
        let bans = tablet.client().bans(&wallet_id).await.unwrap();
        assert_eq!(bans.len(), 1, "{bans:?}");
        // The failed run's record (`sign.unconfirmed`: the server's last messages had left)
        // names no party: nobody's message was proven bad.
        let records = tablet.audit(Some("vault")).await.unwrap();
        let failed: Vec<serde_json::Value> = records
            .iter()
            .filter(|r| r.kind == "sign.unconfirmed" || r.kind == "sign.failed")
            .map(|r| serde_json::from_str(&r.detail).unwrap())
            .collect();
        assert_eq!(failed.len(), 1, "{failed:?}");
        assert!(failed[0]["party"].is_null(), "{failed:?}");
        assert_eq!(failed[0]["signers"], serde_json::json!([0, 2, 3]));
        let banned = records
            .iter()
            .find(|r| r.kind == "party.banned")
            .expect("no party.banned record");
        let detail: serde_json::Value = serde_json::from_str(&banned.detail).unwrap();
        assert_eq!(detail["party"], 2, "{detail}");
        // The runs are forgotten with the ban; the laptop is refused as a co-signer.
        let runs = super::count(
            &server,
            "SELECT COUNT(*) FROM sign_runs WHERE wallet_id = $1",
            &wallet_id,
        )
        .await;
        assert_eq!(runs, 0);
        let e = tablet
            .sign_with("vault", &mut record, &kind, &root, &with, |_, _| {}, |_| {})
            .await
            .unwrap_err();
        let (status, text) = refused(&e);
        assert_eq!(status, 403, "{text}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_unnamed_culprit_is_isolated_and_banned_on_sqlite() {
        an_unnamed_culprit_is_isolated_and_banned_on(Backend::Sqlite).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_unnamed_culprit_is_isolated_and_banned_on_postgres() {
        an_unnamed_culprit_is_isolated_and_banned_on(Backend::Postgres).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_misbehaving_cosigner_is_banned_and_the_request_still_signed_on_sqlite() {
        a_misbehaving_cosigner_is_banned_and_the_request_still_signed_on(Backend::Sqlite).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_misbehaving_cosigner_is_banned_and_the_request_still_signed_on_postgres() {
        a_misbehaving_cosigner_is_banned_and_the_request_still_signed_on(Backend::Postgres).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn only_a_sessions_parties_open_it_and_each_once_on_sqlite() {
        admitted_parties_on(Backend::Sqlite).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn only_a_sessions_parties_open_it_and_each_once_on_postgres() {
        admitted_parties_on(Backend::Postgres).await;
    }

    /// An institution's wallet: alice's `cfo` device and two other users' phones, any two of
    /// them with the server.
    const OFFICERS: &str = "and(server, threshold(2, cfo, bob:phone, carol:phone))";

    /// A signature of `wallet` asked for by `requester` with the device party `with`, which
    /// joins it: both sides' signatures, which must be the same.
    async fn sign_together(
        requester: &Online,
        with: (&str, &Online),
        text: &str,
    ) -> Result<tessera_core::Signature, DeviceError> {
        let mut record = requester.wallet("vault").unwrap();
        let (kind, root, labels) = (message(text), DerivationPath::root(), [with.0.to_string()]);
        let (signed, joined) = tokio::join!(
            requester.sign_with(
                "vault",
                &mut record,
                &kind,
                &root,
                &labels,
                |_, _| {},
                |_| {}
            ),
            async {
                let session = joinable(with.1, |s| s.sign.is_some()).await;
                assert!(session.invitation.is_none());
                with.1.join(&session, |_, _| {}).await
            }
        );
        let signed = signed?;
        let Joined::Signed(theirs) = joined.unwrap() else {
            panic!("not a signature")
        };
        assert_eq!(signed.signature, theirs.signature);
        Ok(signed.signature)
    }

    async fn other_users_devices_accept_then_take_part_on(backend: Backend) {
        use tessera_client::device::reshare::ReshareOutcome;
        use tessera_client::reshare::ReshareChange;
        tessera_client::tls::install_crypto_provider();
        let server = start(backend);
        let dirs: Vec<_> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
        let cfo = online(&server, dirs[0].path(), "alice", "cfo", None).await;
        let bob = online(&server, dirs[1].path(), "bob", "phone", None).await;
        let carol = online(&server, dirs[2].path(), "carol", "phone", None).await;
        let dave = online(&server, dirs[3].path(), "dave", "phone", None).await;
        let stored = "and(server, threshold(2, cfo, bob.phone, carol.phone))";

        // Bob declines a first invitation: the key generation fails at once, naming his party
        // (he may not open the session to say so: the server tells the others in his name).
        let (declined, ()) = tokio::join!(
            cfo.keygen_structure("declined", OFFICERS, |_, _| {}),
            async {
                let session = joinable(&bob, |s| s.wallet_name == "declined").await;
                bob.decline(&session).await.unwrap();
            }
        );
        let e = declined.unwrap_err().to_string();
        assert!(
            e.contains("party 2") && e.contains("declined the invitation"),
            "{e}"
        );
        let declines = "SELECT COUNT(*) FROM audit_log WHERE kind = 'wallet.declined'";
        assert_eq!(super::count_all(&server, declines).await, 1);

        // The key generation invites bob's and carol's phones: each is told who invites it and
        // takes part only once it accepted, with its own identity key, this very party.
        let vault = |s: &api::JoinableSession| s.wallet_name == "vault";
        let (made, (bob_joined, carol_joined)) =
            tokio::join!(cfo.keygen_structure("vault", OFFICERS, |_, _| {}), async {
                let session = joinable(&bob, vault).await;
                assert_eq!(
                    session.invitation,
                    Some(api::Invitation {
                        owner: "alice".into(),
                        label: "bob.phone".into()
                    })
                );
                assert_eq!(session.requested_by, "cfo");
                assert_eq!(session.parties.structure, stored);
                assert_eq!(
                    open(&server, &bob, session.session_id.as_str()).await.err(),
                    Some(403),
                    "a device that has not accepted opens the session"
                );
                // Carol's key over bob's invitation, and bob's key over an invitation from
                // another owner than the wallet's, do not accept anything.
                let e = carol.accept_invitation(&session).await.unwrap_err();
                assert_eq!(refused(&e).0, 401, "{e}");
                let mut forged = session.clone();
                forged.invitation.as_mut().unwrap().owner = "mallory".into();
                let e = bob.accept_invitation(&forged).await.unwrap_err();
                assert_eq!(refused(&e).0, 401, "{e}");
                // Nor does an acceptance of the wallet under another name than its owner gave.
                let mut renamed = session.clone();
                renamed.wallet_name = "petty-cash".into();
                let e = bob.accept_invitation(&renamed).await.unwrap_err();
                assert_eq!(refused(&e).0, 401, "{e}");
                // Dave, not invited, sees nothing and is told nothing about the wallet.
                assert!(
                    dave.joinable_wait(Duration::from_secs(1))
                        .await
                        .unwrap()
                        .is_empty()
                );
                let e = dave.accept_invitation(&session).await.unwrap_err();
                assert_eq!(refused(&e).0, 404, "{e}");
                let carol_session = joinable(&carol, vault).await;
                tokio::join!(
                    bob.join(&session, |_, _| {}),
                    carol.join(&carol_session, |_, _| {})
                )
            });
        let made = made.unwrap();
        same_wallet(&made, [bob_joined, carol_joined]);
        let wallet_id = made.wallet_id().to_string();
        let accepted =
            "SELECT COUNT(*) FROM audit_log WHERE kind = 'wallet.accepted' AND wallet_id = $1";
        assert_eq!(super::count(&server, accepted, &wallet_id).await, 2);
        // The wallet is in bob's and carol's lists, not in dave's (nor can he read it).
        for (who, sees) in [(&bob, true), (&carol, true), (&dave, false)] {
            let listed = who.wallets().await.unwrap();
            assert_eq!(listed.iter().any(|w| w.info.name == "vault"), sees);
        }
        let e = dave.client().pubkey(&wallet_id).await.unwrap_err();
        assert!(matches!(e, ClientError::Server { status: 404, .. }), "{e}");

        // Any two officers sign with the server; one alone cannot.
        for device in [&bob, &carol] {
            super::wait_presence(&server, &device.config().device_id, false).await;
        }
        let mut record = carol.wallet("vault").unwrap();
        let e = carol
            .sign_with(
                "vault",
                &mut record,
                &message("alone"),
                &DerivationPath::root(),
                &[],
                |_, _| {},
                |_| {},
            )
            .await
            .unwrap_err();
        let (status, text) = refused(&e);
        assert_eq!(status, 400, "{text}");
        assert!(text.contains("cannot sign together"), "{text}");
        sign_together(&cfo, ("bob.phone", &bob), "cfo and bob")
            .await
            .unwrap();
        sign_together(&bob, ("carol.phone", &carol), "bob and carol")
            .await
            .unwrap();

        // Resharing stays the owner's; the owner's refresh of the structure keeps the other
        // users' phones (and their acceptances), and they sign at the new epoch.
        let refresh = ReshareChange {
            structure: Some(stored.into()),
            with: vec!["bob.phone".into()],
            ..ReshareChange::default()
        };
        let e = bob.reshare("vault", &refresh, |_| {}).await.unwrap_err();
        assert_eq!(refused(&e).0, 404, "{e}");
        let invite = ReshareChange {
            structure: Some(
                "and(server, threshold(2, cfo, bob.phone, carol.phone, dave:phone))".into(),
            ),
            with: vec!["bob.phone".into()],
            ..ReshareChange::default()
        };
        let e = cfo.reshare("vault", &invite, |_| {}).await.unwrap_err();
        let (status, text) = refused(&e);
        assert_eq!(status, 400, "{text}");
        assert!(
            text.contains("\"dave.phone\"") && text.contains("does not invite"),
            "{text}"
        );
        let (mine, bobs, carols) = tokio::join!(
            cfo.reshare("vault", &refresh, |_| {}),
            async {
                let session = joinable(&bob, |s| s.protocol == "reshare").await;
                bob.join(&session, |_, _| {}).await
            },
            async {
                let session = joinable(&carol, |s| s.protocol == "reshare").await;
                carol.join(&session, |_, _| {}).await
            }
        );
        assert!(
            matches!(mine.unwrap(), ReshareOutcome::Switched { epoch: 1, .. }),
            "the owner's resharing"
        );
        for theirs in [bobs.unwrap(), carols.unwrap()] {
            assert!(matches!(
                theirs,
                Joined::Reshared(ReshareOutcome::Switched { epoch: 1, .. })
            ));
        }
        let kept =
            "SELECT COUNT(*) FROM wallet_parties WHERE wallet_id = $1 AND acceptance IS NOT NULL";
        assert_eq!(super::count(&server, kept, &wallet_id).await, 2);
        sign_together(&carol, ("cfo", &cfo), "after the resharing")
            .await
            .unwrap();

        // The policy is the owner's: once alice requires approvals, carol's request waits for
        // one by a device of alice's (the owner's), not by bob's, a co-signer of another user,
        // and carol does not see it among her own approvals either.
        let strict = api::Policy {
            require_approval: true,
            ..api::Policy::default()
        };
        cfo.set_policy("vault", &strict).await.unwrap();
        let mut record = carol.wallet("vault").unwrap();
        let (kind, root, labels) = (message("approved"), DerivationPath::root(), ["cfo".into()]);
        let (signed, joined) = tokio::join!(
            carol.sign_with(
                "vault",
                &mut record,
                &kind,
                &root,
                &labels,
                |_, _| {},
                |_| {}
            ),
            async {
                let request = loop {
                    let (pending, _) = cfo.approvals().await.unwrap();
                    if let Some(request) = pending.into_iter().next() {
                        break request;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                };
                assert_eq!(request.device_id.as_str(), carol.config().device_id);
                for other in [&bob, &carol] {
                    assert!(other.approvals().await.unwrap().0.is_empty());
                }
                let pending = tessera_client::device::online::Pending::Request(request);
                let e = bob.decide(&pending, true).await.unwrap_err();
                assert_eq!(refused(&e).0, 404, "{e}");
                cfo.decide(&pending, true).await.unwrap();
                let session = joinable(&cfo, |s| s.sign.is_some()).await;
                cfo.join(&session, |_, _| {}).await
            }
        );
        let Joined::Signed(theirs) = joined.unwrap() else {
            panic!("not a signature")
        };
        assert_eq!(signed.unwrap().signature, theirs.signature);
        let approved =
            "SELECT COUNT(*) FROM audit_log WHERE kind = 'sign.approved' AND wallet_id = $1";
        assert_eq!(super::count(&server, approved, &wallet_id).await, 1);

        // Bob revokes his phone (his only device): a resharing that keeps it is refused, and
        // says that it is another user's device gone, not one of the owner's.
        let bob_id = bob.config().device_id.clone();
        bob.revoke_device(&bob_id, true).await.unwrap();
        let keep_bob = ReshareChange {
            structure: Some(stored.into()),
            ..ReshareChange::default()
        };
        let e = cfo.reshare("vault", &keep_bob, |_| {}).await.unwrap_err();
        let (status, text) = refused(&e);
        assert_eq!(status, 400, "{text}");
        assert!(
            text.contains("\"bob.phone\" is another user's device that is no longer active"),
            "{text}"
        );
    }

    /// An invited device that declines before the requester opened its socket: the decline
    /// ends the session in the database (not only in the mailboxes open at that moment), so
    /// the requester's socket is refused at once, with the reason, instead of waiting for the
    /// device until the session's idle timeout; and the wallet that was never made gives its
    /// name back.
    async fn a_decline_before_the_requester_came_ends_the_session_on(backend: Backend) {
        tessera_client::tls::install_crypto_provider();
        let server = start(backend);
        let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
        let cfo = online(&server, dirs[0].path(), "alice", "cfo", None).await;
        let bob = online(&server, dirs[1].path(), "bob", "phone", None).await;
        // The requester's session is made, its socket not opened (as when its app is slow).
        let structure = "and(server, or(cfo, bob:phone))";
        let post_keygen = || {
            reqwest::Client::new()
                .post(format!("{}/keygen", server.url))
                .bearer_auth(cfo.client().token().unwrap())
                .json(&api::KeygenRequest {
                    name: "late".into(),
                    structure: Some(structure.into()),
                    device_nonce: Some(hex::encode([7u8; 32])),
                })
                .send()
        };
        let created: api::SessionCreated = post_keygen()
            .await
            .unwrap()
            .error_for_status()
            .unwrap()
            .json()
            .await
            .unwrap();
        let sid = created.session_id.as_str().to_owned();
        // While its key generation is live, the name is taken.
        assert_eq!(post_keygen().await.unwrap().status().as_u16(), 409);
        let session = joinable(&bob, |s| s.wallet_name == "late").await;
        bob.decline(&session).await.unwrap();
        // (Recorded by the decline, or by the server's run that heard it: both name it.)
        let detail = "SELECT COUNT(*) FROM sessions WHERE id = $1 AND status = 'failed' \
                      AND detail LIKE 'party _ %declined the invitation%'";
        assert_eq!(super::count(&server, detail, &sid).await, 1);
        let request = ws_request(&server.url, cfo.client().token().unwrap(), &sid);
        match tokio_tungstenite::connect_async(request).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
                assert_eq!(resp.status().as_u16(), 410);
                let body = String::from_utf8_lossy(resp.body().as_deref().unwrap_or_default())
                    .into_owned();
                assert!(body.contains("declined the invitation"), "{body}");
            }
            Ok(_) => panic!("the requester's socket opened in a declined session"),
            Err(e) => panic!("{e}"),
        }
        // Declining twice says the session is not one to decline any more.
        let e = bob.decline(&session).await.unwrap_err();
        assert_eq!(refused(&e).0, 404, "{e}");
        // The wallet that was never made gives its name back, once: of 50 key generations of
        // the name at once, one discards it and takes the name, the others are refused.
        let discarded = "SELECT COUNT(*) FROM audit_log WHERE kind = 'wallet.discarded' \
                         AND wallet_id = $1";
        let burst = futures_util::future::join_all((0..50).map(|_| post_keygen())).await;
        let statuses: Vec<u16> = burst
            .into_iter()
            .map(|r| r.unwrap().status().as_u16())
            .collect();
        assert_eq!(
            statuses.iter().filter(|&&s| s == 200).count(),
            1,
            "{statuses:?}"
        );
        assert_eq!(
            statuses.iter().filter(|&&s| s == 409).count(),
            49,
            "{statuses:?}"
        );
        assert_eq!(
            super::count(&server, discarded, created.wallet_id.as_ref()).await,
            1
        );
        // Bob declines that one too, 50 times at once: one decline ends it, with one record.
        let again = joinable(&bob, |s| s.wallet_name == "late").await;
        let declines = futures_util::future::join_all((0..50).map(|_| bob.decline(&again))).await;
        assert_eq!(declines.iter().filter(|d| d.is_ok()).count(), 1);
        for e in declines.iter().filter_map(|d| d.as_ref().err()) {
            assert_eq!(refused(e).0, 404, "{e}");
        }
        let declined = "SELECT COUNT(*) FROM audit_log WHERE kind = 'wallet.declined'";
        assert_eq!(super::count_all(&server, declined).await, 2);
        // Then the name is made with bob accepting.
        let (made, joined) =
            tokio::join!(cfo.keygen_structure("late", structure, |_, _| {}), async {
                let session = joinable(&bob, |s| s.wallet_name == "late").await;
                bob.join(&session, |_, _| {}).await
            });
        let Joined::Wallet(share) = joined.unwrap() else {
            panic!("not a wallet")
        };
        assert_eq!(share.public_key(), made.unwrap().public_key());
        let all = "SELECT COUNT(*) FROM audit_log WHERE kind = 'wallet.discarded'";
        assert_eq!(super::count_all(&server, all).await, 2);
        let named = "SELECT COUNT(*) FROM wallets WHERE name = $1";
        assert_eq!(super::count(&server, named, "late").await, 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_decline_before_the_requester_came_ends_the_session_on_sqlite() {
        a_decline_before_the_requester_came_ends_the_session_on(Backend::Sqlite).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_decline_before_the_requester_came_ends_the_session_on_postgres() {
        a_decline_before_the_requester_came_ends_the_session_on(Backend::Postgres).await;
    }

    /// On PostgreSQL (the same queries run on SQLite in
    /// `officers_of_three_users_sign_any_two_with_the_server_on_sqlite`, through real processes).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn other_users_devices_accept_then_take_part_on_postgres() {
        other_users_devices_accept_then_take_part_on(Backend::Postgres).await;
    }

    /// Requests sent at once by the concurrency test below.
    const CONCURRENT: usize = 50;

    /// A server without rate limits (the test below sends [`CONCURRENT`] requests at once).
    fn unlimited(backend: Backend) -> Server {
        let unlimited = &super::common::UNLIMITED[..];
        match backend {
            Backend::Sqlite => Server::start_fresh(unlimited),
            Backend::Postgres => {
                let database = super::common::fresh_postgres_database();
                Server::start_fresh(
                    &[&["--database-url", database.as_str()][..], unlimited].concat(),
                )
            }
        }
    }

    /// Check-then-act under concurrency (DESIGN.md invariant 7): [`CONCURRENT`] resharings of
    /// one wallet asked for at once create one session, the others are refused with 409 and
    /// leave nothing; a device stays online while one of its `GET /sessions/joinable` waits,
    /// whatever [`CONCURRENT`] shorter requests of it do meanwhile, and goes offline when the
    /// last one ends, or at once when its waits are given up (however early).
    async fn concurrent_resharings_and_presence_on(backend: Backend) {
        tessera_client::tls::install_crypto_provider();
        let server = unlimited(backend);
        let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
        let phone = online(&server, dirs[0].path(), "alice", "phone", None).await;
        let laptop = online(&server, dirs[1].path(), "alice", "laptop", Some(&phone)).await;
        let structure = "and(server, or(phone, laptop))";
        let (made, joined) = tokio::join!(
            phone.keygen_structure("family", structure, |_, _| {}),
            async {
                let session = joinable(&laptop, |_| true).await;
                laptop.join(&session, |_, _| {}).await
            }
        );
        made.unwrap();
        joined.unwrap();
        let wallet_id = phone
            .wallet("family")
            .unwrap()
            .current
            .wallet_id()
            .to_string();
        // Presence (while nothing is joinable, so that a wait waits): one long wait of the
        // laptop, and many short requests of it around it.
        let http = reqwest::Client::new();
        let laptop_id = laptop.config().device_id.clone();
        let waiting = laptop.client().token().unwrap().to_string();
        let long = tokio::spawn({
            let (http, url) = (http.clone(), server.url.clone());
            async move {
                http.get(format!("{url}/sessions/joinable?wait=30"))
                    .bearer_auth(waiting)
                    .send()
                    .await
            }
        });
        super::wait_online(&server, &laptop_id).await;
        let short = futures_util::future::join_all((0..CONCURRENT).map(|_| {
            http.get(format!("{}/sessions/joinable", server.url))
                .bearer_auth(laptop.client().token().unwrap())
                .send()
        }))
        .await;
        for answer in short {
            assert_eq!(answer.unwrap().status().as_u16(), 200);
        }
        // Past the grace the short requests gave (3 s), the long one still holds the presence.
        tokio::time::sleep(Duration::from_secs(5)).await;
        super::wait_online(&server, &laptop_id).await;
        // The long request dropped midway (its agent went away): offline at once.
        long.abort();
        super::wait_presence(&server, &laptop_id, false).await;
        // Waits given up as soon as they were sent, as an agent does when its event stream
        // wakes it, while the server is still writing that the device waits (the whole wait
        // ahead): none of them keeps the device online (that write landing last once kept it
        // online for the whole wait, more than `wait_presence`'s 10 s).
        let given_up: Vec<_> = (0..CONCURRENT)
            .map(|i| {
                let sent = http
                    .get(format!("{}/sessions/joinable?wait=25", server.url))
                    .bearer_auth(laptop.client().token().unwrap())
                    .send();
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(Duration::from_millis(i as u64 % 12), sent).await;
                })
            })
            .collect();
        for task in given_up {
            task.await.unwrap();
        }
        super::wait_presence(&server, &laptop_id, false).await;

        // Resharings asked for at once.
        let created_before = super::count(
            &server,
            "SELECT COUNT(*) FROM audit_log WHERE kind = 'session.created' AND wallet_id = $1",
            &wallet_id,
        )
        .await;

        let token = phone.client().token().unwrap().to_string();
        let answers = futures_util::future::join_all((0..CONCURRENT).map(|_| {
            let request = api::ReshareRequest {
                wallet_id: wallet_id.clone().into(),
                add: vec![],
                remove: vec![],
                structure: Some(structure.into()),
                with: vec![],
                device_nonce: hex::encode(tessera_core::protocols::fresh_nonce()),
            };
            let sent = http
                .post(format!("{}/reshare", server.url))
                .bearer_auth(&token)
                .json(&request)
                .send();
            async move {
                let answer = sent.await.unwrap();
                (answer.status().as_u16(), answer.text().await.unwrap())
            }
        }))
        .await;
        let created = answers.iter().filter(|(status, _)| *status == 200).count();
        let refused = answers
            .iter()
            .filter(|(status, body)| *status == 409 && body.contains("already in progress"))
            .count();
        assert_eq!((created, refused), (1, CONCURRENT - 1), "{answers:?}");
        let sessions = super::count(
            &server,
            "SELECT COUNT(*) FROM sessions WHERE protocol = 'reshare' AND wallet_id = $1",
            &wallet_id,
        )
        .await;
        assert_eq!(sessions, 1);
        let created_after = super::count(
            &server,
            "SELECT COUNT(*) FROM audit_log WHERE kind = 'session.created' AND wallet_id = $1",
            &wallet_id,
        )
        .await;
        assert_eq!(created_after, created_before + 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_resharings_and_presence_hold_on_sqlite() {
        concurrent_resharings_and_presence_on(Backend::Sqlite).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_resharings_and_presence_hold_on_postgres() {
        concurrent_resharings_and_presence_on(Backend::Postgres).await;
    }
}

/// A signature of a structure wallet is waiting for the laptop (its agent shows the request
/// and waits for its person) when the server gets SIGTERM with a 1 s grace period: the tablet
/// learns that the server shut down (1001), the run is recorded as failed naming no party (the
/// tablet's socket never speaks for the tablet at shutdown), the server exits cleanly, and
/// after a restart the wallet signs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_structure_signature_names_nobody_on_sqlite() {
    let mut server = Server::start_fresh(&["--shutdown-grace", "1"]);
    let [phone, laptop, tablet] = alices_devices(&server);
    let (public_key, _) = made_by_phone(
        phone.path(),
        [laptop.path(), tablet.path()],
        "vault",
        "and(server, threshold(2, phone, laptop, tablet))",
    );
    // The laptop's agent, whose person never answers (its stdin stays open).
    let mut laptop_waits = tessera_cmd(laptop.path(), &["listen", "--once"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_online(&server, &device_id(laptop.path())).await;
    let asking = tessera_cmd(
        tablet.path(),
        &[
            "sign",
            "--wallet",
            "vault",
            "--message",
            "cut short",
            "--with",
            "laptop",
        ],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let until = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while count_all(
        &server,
        "SELECT COUNT(*) FROM sessions WHERE protocol = 'sign'",
    )
    .await
        == 0
    {
        assert!(std::time::Instant::now() < until, "no signing session");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // The tablet opens its socket and waits for the laptop.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    common::shutdown::sigterm(&server.child);
    let out = asking.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("1001") && err.contains("shutting down"),
        "{err}"
    );
    let until = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let status = loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            break status;
        }
        assert!(std::time::Instant::now() < until, "the server still runs");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert!(status.success(), "{status:?}");
    let db = server.database().await;
    let (row_status, detail): (String, Option<String>) =
        sqlx::query_as("SELECT status, detail FROM sessions WHERE protocol = 'sign'")
            .fetch_one(&db)
            .await
            .unwrap();
    assert_eq!(
        (row_status.as_str(), detail.as_deref()),
        ("failed", Some("the server shut down"))
    );
    let (record,): (String,) =
        sqlx::query_as("SELECT detail FROM audit_log WHERE kind = 'sign.failed'")
            .fetch_one(&db)
            .await
            .unwrap();
    let record = json(&record);
    assert_eq!(record["party"], serde_json::Value::Null, "{record}");
    db.close().await;
    let _ = laptop_waits.kill();
    let _ = laptop_waits.wait();

    server.restart();
    let laptop_listens = Listener::answering(laptop.path(), &["--once"], "y\n");
    wait_online(&server, &device_id(laptop.path())).await;
    let signed = sign(
        tablet.path(),
        "vault",
        "after the restart",
        &["--with", "laptop"],
    );
    verify(&signed, &public_key);
    assert!(laptop_listens.wait().status.success());
}
