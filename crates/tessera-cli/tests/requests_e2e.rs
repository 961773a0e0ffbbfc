//! Durable signing requests (issue 16) end to end, with real `tessera server` and `tessera`
//! processes on SQLite and on PostgreSQL (`TESSERA_TEST_DATABASE_URL`):
//! - a request created by a second device of the user while the wallet's only co-signing
//!   device is offline waits, survives a server restart, and is signed once that device's
//!   `tessera listen --co-sign digest` comes online; the requester fetches a signature that
//!   coincurve (libsecp256k1) verifies under the wallet's key;
//! - an approval given after more than the protocol sessions' idle timeout still leads to a
//!   signature (`tessera requests sign`): waiting requests are not sessions;
//! - bad input through the CLI: signing a refused or an expired request, a request that still
//!   waits for approval, malformed ids, expiries and intents: clear errors, exit ≠ 0.
//!
//! Needs `TESSERA_PYTHON` (coincurve) and, for the PostgreSQL cases, `TESSERA_TEST_DATABASE_URL`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::cli::{PASSPHRASE, init_approved, ok_json, python, python_json, set_policy, tessera};
use common::{Backend, Server, fresh_postgres_database};
use serde_json::{Value, json};

/// Checks r ‖ s ‖ v over a digest with libsecp256k1 (coincurve): the key recovered from the
/// signature must be the wallet's, and the DER form must verify under it.
const VERIFY: &str = r#"
import json, sys
from coincurve import PublicKey
from coincurve.ecdsa import cdata_to_der, deserialize_compact
a = json.loads(sys.stdin.read())
rsv = bytes.fromhex(a["signature_rsv"])
digest = bytes.fromhex(a["digest"])
key = PublicKey(bytes.fromhex(a["public_key"]))
recovered = PublicKey.from_signature_and_message(rsv[:64] + bytes([rsv[64] % 27]), digest, hasher=None)
der = cdata_to_der(deserialize_compact(rsv[:64]))
print(json.dumps({
    "recovered": recovered.format().hex(),
    "verifies": key.verify(der, digest, hasher=None),
}))
"#;

/// `signature_rsv` over `digest` verifies under `public_key` with coincurve.
fn verify_independently(signature_rsv: &str, digest: &str, public_key: &str) {
    let out = python_json(
        &python(),
        VERIFY,
        true,
        &json!({ "signature_rsv": signature_rsv, "digest": digest, "public_key": public_key }),
    );
    assert_eq!(out["verifies"], true, "{out}");
    assert_eq!(out["recovered"].as_str(), Some(public_key), "{out}");
}

fn server(backend: Backend, extra: &[&str]) -> Server {
    match backend {
        Backend::Sqlite => Server::start_fresh(extra),
        Backend::Postgres => {
            let url = fresh_postgres_database();
            let args = [&["--database-url", url.as_str()][..], extra].concat();
            Server::start_fresh(&args)
        }
    }
}

/// Runs `tessera args` in `home`, which must succeed; its stdout.
fn ok(home: &Path, args: &[&str]) -> String {
    let out = tessera(home, args);
    assert!(
        out.status.success(),
        "tessera {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs `tessera args` in `home`, which must fail with `code`; its stderr.
fn fails(home: &Path, args: &[&str], code: i32) -> String {
    let out = tessera(home, args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(code),
        "tessera {args:?}: {}{stderr}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("r||s||v"),
        "{args:?} printed a signature"
    );
    stderr
}

/// Alice's phone (holding 2-of-2 wallet `w`, whose policy allows raw digests plus `policy`'s
/// fields) and her laptop (approved by the phone, no share).
fn alice(server: &Server, policy: Value) -> (tempfile::TempDir, tempfile::TempDir, String) {
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
    let wallet = ok_json(phone.path(), &["keygen", "--name", "w", "--json"]);
    let public_key = wallet["public_key"].as_str().unwrap().to_string();
    init_approved(phone.path(), laptop.path(), &server.url, "alice", "laptop");
    let mut full = serde_json::to_value(common::allow_digests()).unwrap();
    for (k, v) in policy.as_object().unwrap() {
        full[k] = v.clone();
    }
    set_policy(phone.path(), "w", &full);
    (phone, laptop, public_key)
}

/// A `tessera listen` process, killed on drop; its output goes to files read on failure.
struct Listener {
    child: Child,
    out: tempfile::NamedTempFile,
    err: tempfile::NamedTempFile,
}

impl Listener {
    fn start(home: &Path, args: &[&str]) -> Listener {
        let out = tempfile::NamedTempFile::new().unwrap();
        let err = tempfile::NamedTempFile::new().unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_tessera"))
            .arg("listen")
            .args(args)
            .env("TESSERA_HOME", home)
            .env("TESSERA_PASSPHRASE", PASSPHRASE)
            .env_remove("TESSERA_DATABASE_URL")
            .stdin(Stdio::null())
            .stdout(out.reopen().unwrap())
            .stderr(err.reopen().unwrap())
            .spawn()
            .unwrap();
        Listener { child, out, err }
    }

    fn output(&self) -> String {
        format!(
            "{}{}",
            std::fs::read_to_string(self.out.path()).unwrap_or_default(),
            std::fs::read_to_string(self.err.path()).unwrap_or_default()
        )
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `requests show ID --json` on `home` until its state is final (or `deadline` passes).
fn until_final(home: &Path, id: &str, deadline: Duration, listener: Option<&Listener>) -> Value {
    let until = Instant::now() + deadline;
    loop {
        let shown = ok_json(home, &["requests", "show", id, "--json"]);
        let state = shown["state"].as_str().unwrap().to_string();
        if ["signed", "refused", "expired", "failed"].contains(&state.as_str()) {
            return shown;
        }
        assert!(
            Instant::now() < until,
            "request {id} still {state} after {deadline:?}; listener: {}",
            listener.map(Listener::output).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// Waits until `listener` printed `text` (60 s at most).
fn wait_for_output(listener: &Listener, text: &str) {
    let until = Instant::now() + Duration::from_secs(60);
    while !listener.output().contains(text) {
        assert!(
            Instant::now() < until,
            "the listener never printed {text:?}: {}",
            listener.output()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn digest(byte: u8) -> String {
    hex::encode([byte; 32])
}

/// The issue's first test: the co-signing device is offline, the request waits through a
/// server restart, the device's agent comes online and signs it, the requester fetches it.
fn offline_device_signs_after_a_restart(backend: Backend) {
    let mut server = server(backend, &[]);
    let (phone, laptop, public_key) = alice(&server, json!({}));
    let d = digest(0x5a);

    // The phone, the wallet's only device party, is offline: no process runs on it.
    let created = ok_json(
        laptop.path(),
        &[
            "requests", "create", "--wallet", "w", "--digest", &d, "--json",
        ],
    );
    let id = created["id"].as_str().unwrap().to_string();
    assert_eq!(created["state"], "ready", "{created}");
    assert_eq!(created["digest"].as_str(), Some(d.as_str()));
    assert_eq!(created["kind"], "digest");
    assert!(created.get("signature").is_none(), "{created}");

    // It waits, through a crash of the server.
    std::thread::sleep(Duration::from_millis(500));
    server.kill();
    server.restart();
    let shown = ok_json(laptop.path(), &["requests", "show", &id, "--json"]);
    assert_eq!(shown["state"], "ready", "{shown}");
    let listed = ok_json(
        laptop.path(),
        &["requests", "list", "--state", "ready", "--json"],
    );
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["id"].as_str() == Some(&id)),
        "{listed}"
    );

    // The laptop holds no share: it cannot co-sign, and says so.
    let e = fails(laptop.path(), &["requests", "sign", &id, "--yes"], 1);
    assert!(e.contains("holds no share"), "{e}");

    // The phone comes online without a rule for digests and without a terminal: it shows the
    // request and how to sign it, and signs nothing.
    let shy = Listener::start(phone.path(), &["--co-sign", "eth-tx"]);
    wait_for_output(&shy, &format!("tessera requests sign {id}"));
    let shown = ok_json(laptop.path(), &["requests", "show", &id, "--json"]);
    assert_eq!(shown["state"], "ready", "{shown}");
    drop(shy);

    // Its agent again, whose local rule co-signs digests.
    let listener = Listener::start(phone.path(), &["--co-sign", "digest"]);
    let done = until_final(
        laptop.path(),
        &id,
        Duration::from_secs(120),
        Some(&listener),
    );
    assert_eq!(done["state"], "signed", "{done}");
    assert_eq!(done["verified"], true, "{done}");
    assert_eq!(done["public_key"].as_str(), Some(public_key.as_str()));
    verify_independently(done["signature"].as_str().unwrap(), &d, &public_key);
    // With the agent online, `create --wait` returns the signature, verified.
    let d2 = digest(0x5b);
    let waited = ok_json(
        laptop.path(),
        &[
            "requests", "create", "--wallet", "w", "--digest", &d2, "--wait", "--json",
        ],
    );
    assert_eq!(waited["state"], "signed", "{waited}");
    assert_eq!(waited["verified"], true, "{waited}");
    verify_independently(waited["signature"].as_str().unwrap(), &d2, &public_key);
    // The agent kept its cursor in the device home.
    let cursor = std::fs::read_to_string(phone.path().join("event-cursor.json"));
    drop(listener);
    assert!(
        cursor.is_ok_and(|c| c.contains("\"cursor\"")),
        "no event cursor kept"
    );
}

#[test]
fn offline_device_signs_after_a_restart_sqlite() {
    offline_device_signs_after_a_restart(Backend::Sqlite);
}

#[test]
fn offline_device_signs_after_a_restart_postgres() {
    offline_device_signs_after_a_restart(Backend::Postgres);
}

/// Points a device home at another server URL, as a load balancer or a DNS name would send the
/// device to another replica.
fn move_to(home: &Path, url: &str) {
    let path = home.join("device.json");
    let mut config: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    config["server"] = url.into();
    std::fs::write(&path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
}

/// Two replicas on one PostgreSQL: a request that needs the laptop's approval is made through
/// replica A, which then dies; the devices reach replica B, where the request still waits, is
/// approved and co-signed, and its signature verifies.
#[test]
fn a_request_outlives_the_replica_it_was_made_on() {
    let database = fresh_postgres_database();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut a = Server::start(&data, &["--database-url", &database]);
    let b = Server::start(&data, &["--database-url", &database]);
    let (phone, laptop, public_key) = alice(&a, json!({ "require_approval": true }));
    let d = digest(0x6b);
    let created = ok_json(
        phone.path(),
        &[
            "requests", "create", "--wallet", "w", "--digest", &d, "--json",
        ],
    );
    let id = created["id"].as_str().unwrap().to_string();
    assert_eq!(created["state"], "awaiting_approval", "{created}");

    a.kill();
    move_to(phone.path(), &b.url);
    move_to(laptop.path(), &b.url);
    let shown = ok_json(laptop.path(), &["requests", "show", &id, "--json"]);
    assert_eq!(shown["state"], "awaiting_approval", "{shown}");
    let approved = ok_json(
        laptop.path(),
        &["requests", "approve", &id, "--yes", "--json"],
    );
    assert_eq!(approved["state"], "ready", "{approved}");
    let signed = ok_json(phone.path(), &["requests", "sign", &id, "--yes", "--json"]);
    let done = until_final(laptop.path(), &id, Duration::from_secs(60), None);
    assert_eq!(done["state"], "signed", "{done}");
    assert_eq!(done["verified"], true, "{done}");
    assert_eq!(
        done["signature"], signed["signature_rsv"],
        "{done} {signed}"
    );
    verify_independently(done["signature"].as_str().unwrap(), &d, &public_key);
}

/// An approval given after more than the sessions' idle timeout: the request is not a
/// session, so it is signed once approved.
fn late_approval_still_signs(backend: Backend) {
    let server = server(backend, &["--session-idle-timeout", "2"]);
    let (phone, laptop, public_key) = alice(&server, json!({ "require_approval": true }));
    let d = digest(0x77);
    let created = ok_json(
        phone.path(),
        &[
            "requests",
            "create",
            "--wallet",
            "w",
            "--digest",
            &d,
            "--expires",
            "1h",
            "--json",
        ],
    );
    let id = created["id"].as_str().unwrap().to_string();
    assert_eq!(created["state"], "awaiting_approval", "{created}");
    // The approver's agent tells it, with the command; it never approves by itself.
    let agent = Listener::start(laptop.path(), &["--co-sign", "digest"]);
    wait_for_output(&agent, &format!("tessera requests approve {id}"));
    drop(agent);
    // Not ready: signing it now is refused clearly.
    let e = fails(phone.path(), &["requests", "sign", &id], 1);
    assert!(e.contains("waits for its approvals"), "{e}");

    // More than twice the idle timeout passes.
    std::thread::sleep(Duration::from_secs(5));
    let approved = ok_json(
        laptop.path(),
        &["requests", "approve", &id, "--yes", "--json"],
    );
    assert_eq!(approved["state"], "ready", "{approved}");
    assert!(
        approved["decisions"]
            .as_array()
            .is_some_and(|d| d.iter().any(|d| d["approve"] == true)),
        "{approved}"
    );

    let signed = ok_json(phone.path(), &["requests", "sign", &id, "--json"]);
    assert_eq!(signed["verified"], true, "{signed}");
    assert_eq!(signed["wallet"], "w", "{signed}");
    assert_eq!(signed["digest"].as_str(), Some(d.as_str()));
    assert_eq!(signed["public_key"].as_str(), Some(public_key.as_str()));
    verify_independently(signed["signature_rsv"].as_str().unwrap(), &d, &public_key);

    let shown = ok_json(laptop.path(), &["requests", "show", &id, "--json"]);
    assert_eq!(shown["state"], "signed", "{shown}");
    assert_eq!(shown["verified"], true, "{shown}");
    assert_eq!(shown["signature"], signed["signature_rsv"], "{shown}");
    // Signed: signing it again is refused.
    let e = fails(phone.path(), &["requests", "sign", &id], 1);
    assert!(e.contains("signed"), "{e}");
}

#[test]
fn late_approval_still_signs_sqlite() {
    late_approval_still_signs(Backend::Sqlite);
}

#[test]
fn late_approval_still_signs_postgres() {
    late_approval_still_signs(Backend::Postgres);
}

/// Requests that cannot be signed, and bad input, through the CLI.
fn bad_input_is_refused(backend: Backend) {
    let server = server(backend, &[]);
    let (phone, laptop, _) = alice(&server, json!({ "require_approval": true }));

    // Refused by the approver: signing it is refused, naming the state.
    let refused = ok_json(
        phone.path(),
        &[
            "requests",
            "create",
            "--wallet",
            "w",
            "--digest",
            &digest(1),
            "--json",
        ],
    );
    let refused_id = refused["id"].as_str().unwrap();
    let after = ok_json(
        laptop.path(),
        &["requests", "refuse", refused_id, "--yes", "--json"],
    );
    assert_eq!(after["state"], "refused", "{after}");
    let e = fails(phone.path(), &["requests", "sign", refused_id], 1);
    assert!(
        e.contains("refused") && e.contains("can no longer be signed"),
        "{e}"
    );
    // Deciding again is refused too.
    let e = fails(
        laptop.path(),
        &["requests", "approve", refused_id, "--yes"],
        1,
    );
    assert!(e.contains("refused"), "{e}");

    // Expired while waiting.
    let expiring = ok_json(
        phone.path(),
        &[
            "requests",
            "create",
            "--wallet",
            "w",
            "--digest",
            &digest(2),
            "--expires",
            "1s",
            "--json",
        ],
    );
    let expiring_id = expiring["id"].as_str().unwrap();
    std::thread::sleep(Duration::from_millis(2500));
    let shown = ok_json(phone.path(), &["requests", "show", expiring_id, "--json"]);
    assert_eq!(shown["state"], "expired", "{shown}");
    let e = fails(phone.path(), &["requests", "sign", expiring_id], 1);
    assert!(e.contains("expired"), "{e}");

    // Bad input, refused before anything is sent (exit 2).
    for (args, says) in [
        (vec!["requests", "show", "../admin"], "request id"),
        (
            vec!["requests", "create", "--wallet", "w", "--digest", "zz"],
            "--digest",
        ),
        (
            vec![
                "requests",
                "create",
                "--wallet",
                "w",
                "--message",
                "hi",
                "--expires",
                "8d",
            ],
            "7 days",
        ),
        (
            vec![
                "requests",
                "create",
                "--wallet",
                "w",
                "--message",
                "hi",
                "--expires",
                "2 weeks",
            ],
            "--expires",
        ),
        (vec!["requests", "list", "--state", "done"], "--state"),
        (
            vec!["requests", "create", "--wallet", "w", "--psbt", "tx.psbt"],
            "--input",
        ),
        (vec!["listen", "--co-sign", "everything"], "--co-sign"),
    ] {
        let e = fails(laptop.path(), &args, 2);
        assert!(e.contains(says), "{args:?}: {e}");
    }
    // A wallet the user does not have.
    let e = fails(
        laptop.path(),
        &[
            "requests",
            "create",
            "--wallet",
            "nope",
            "--digest",
            &digest(3),
        ],
        1,
    );
    assert!(e.contains("no wallet named"), "{e}");
    // A request of no one's.
    let e = fails(
        laptop.path(),
        &["requests", "show", "0123456789abcdef0123456789abcdef"],
        1,
    );
    assert!(e.contains("404") || e.contains("no such"), "{e}");
}

#[test]
fn bad_input_is_refused_sqlite() {
    bad_input_is_refused(Backend::Sqlite);
}

#[test]
fn bad_input_is_refused_postgres() {
    bad_input_is_refused(Backend::Postgres);
}

/// A structure wallet, `and(server, or(phone, laptop))`: a request made on the phone is
/// co-signed by the laptop's agent, which opens the request's session as one of the
/// wallet's device parties (end-to-end channels, the parties checked as when joining).
#[test]
fn a_structure_wallet_request_is_cosigned_by_the_agent() {
    let server = server(Backend::Sqlite, &[]);
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
    init_approved(phone.path(), laptop.path(), &server.url, "alice", "laptop");
    let joining = Listener::start(laptop.path(), &["--yes", "--once", "--no-events"]);
    let made = ok_json(
        phone.path(),
        &[
            "keygen",
            "--name",
            "fam",
            "--structure",
            "and(server, or(phone, laptop))",
            "--json",
        ],
    );
    let public_key = made["public_key"].as_str().unwrap().to_string();
    wait_for_output(&joining, &public_key);
    drop(joining);
    set_policy(
        phone.path(),
        "fam",
        &serde_json::to_value(common::allow_digests()).unwrap(),
    );

    let d = digest(0x3c);
    let created = ok_json(
        phone.path(),
        &[
            "requests", "create", "--wallet", "fam", "--digest", &d, "--json",
        ],
    );
    let id = created["id"].as_str().unwrap().to_string();
    assert_eq!(created["state"], "ready", "{created}");
    let agent = Listener::start(laptop.path(), &["--co-sign", "digest"]);
    let done = until_final(phone.path(), &id, Duration::from_secs(120), Some(&agent));
    assert_eq!(done["state"], "signed", "{done}\n{}", agent.output());
    assert_eq!(done["verified"], true, "{done}");
    assert_eq!(done["public_key"].as_str(), Some(public_key.as_str()));
    verify_independently(done["signature"].as_str().unwrap(), &d, &public_key);
    assert!(agent.output().contains(&format!("co-signing request {id}")));
}
