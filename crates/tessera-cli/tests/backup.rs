//! Backup and recovery end to end: `tessera` processes (devices, the operator) against a real
//! server process over loopback; holder key files on disk; the server's SQLite database.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::Server;

const PASSPHRASE: &str = "correct horse battery staple";
const KEY_PASSPHRASE: &str = "holder key passphrase";

/// One device: a keystore directory of its own.
struct Device {
    home: tempfile::TempDir,
}

struct Output {
    code: Option<i32>,
    out: String,
    err: String,
}

impl Output {
    fn ok(self) -> Self {
        assert_eq!(
            self.code,
            Some(0),
            "stdout:\n{}\nstderr:\n{}",
            self.out,
            self.err
        );
        self
    }

    fn field(&self, name: &str) -> String {
        self.out
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|r| r.split_whitespace().next().unwrap().to_string())
            .unwrap_or_else(|| panic!("no {name} in {}", self.out))
    }
}

fn tessera(home: &Path, args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(args)
        .env("TESSERA_HOME", home)
        .env("TESSERA_PASSPHRASE", PASSPHRASE)
        .env("TESSERA_BACKUP_KEY_PASSPHRASE", KEY_PASSPHRASE)
        .env_remove("TESSERA_DATABASE_URL")
        .env_remove("TESSERA_KEK")
        .output()
        .unwrap();
    Output {
        code: out.status.code(),
        out: String::from_utf8_lossy(&out.stdout).into_owned(),
        err: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

impl Device {
    fn new() -> Device {
        Device {
            home: tempfile::tempdir().unwrap(),
        }
    }

    fn run(&self, args: &[&str]) -> Output {
        tessera(self.home.path(), args)
    }

    /// `tessera init`; the device id.
    fn init(&self, server: &Server, user: &str, name: &str) -> (String, Output) {
        let out = self
            .run(&[
                "init",
                "--server",
                &server.url,
                "--user",
                user,
                "--name",
                name,
            ])
            .ok();
        (out.field("device id"), out)
    }

    fn sign(&self, wallet: &str, message: &str) -> Output {
        self.run(&["sign", "--wallet", wallet, "--message", message])
    }

    fn wallet_file(&self, name: &str) -> PathBuf {
        self.home
            .path()
            .join("wallets")
            .join(format!("{name}.share"))
    }
}

/// Holder key files, each in a directory of its own (a USB drive, a cloud folder...), their
/// public keys known to `device`.
fn holders(device: &Device, dir: &Path, labels: &[&str]) -> Vec<PathBuf> {
    labels
        .iter()
        .map(|label| {
            let path = dir.join(label).join(format!("{label}.key"));
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            let out = device
                .run(&[
                    "backup-key",
                    "new",
                    "--label",
                    label,
                    "--out",
                    path.to_str().unwrap(),
                ])
                .ok();
            assert!(
                out.out.contains(&format!("tessera-holder-v1:{label}:")),
                "{}",
                out.out
            );
            path
        })
        .collect()
}

/// `backup restore FILE --key K … EXTRA…`.
fn restore_args(file: &Path, keys: &[&PathBuf], extra: &[&str]) -> Vec<String> {
    let mut args = vec![
        "backup".to_string(),
        "restore".into(),
        file.display().to_string(),
    ];
    for key in keys {
        args.extend(["--key".to_string(), key.display().to_string()]);
    }
    args.extend(extra.iter().map(|a| a.to_string()));
    args
}

fn strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

/// Asserts that the signature printed by `tessera sign` verifies under `pubkey` with the
/// independent `tessera verify` (k256 and libsecp256k1 are both checked there).
fn assert_signed(out: &Output, pubkey: &str, message: &str) {
    assert_eq!(out.field("public key"), pubkey);
    let der = out.field("signature DER");
    let check = Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args([
            "verify",
            "--pubkey",
            pubkey,
            "--message",
            message,
            "--hash",
            "eip191",
            "--signature",
            &der,
        ])
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
}

/// The id of the held action a command printed (`held           ID (kind)`).
fn held_id(out: &Output) -> String {
    out.field("held")
}

/// Ends the time lock of a held action as if it had passed, in the server's database.
async fn end_time_lock(server: &Server, id: &str) {
    let db = server.database().await;
    let done = sqlx::query(
        "UPDATE held_actions SET unlock_at = 0 WHERE id = $1 AND unlock_at IS NOT NULL",
    )
    .bind(id)
    .execute(&db)
    .await
    .unwrap();
    assert_eq!(done.rows_affected(), 1, "no time-locked action {id}");
    db.close().await;
}

/// `backup create --wallet main --server-share --policy POLICY --out FILE`.
fn export_server_share(device: &Device, policy: &str, out: &Path) -> Output {
    device.run(&[
        "backup",
        "create",
        "--wallet",
        "main",
        "--server-share",
        "--policy",
        policy,
        "--out",
        out.to_str().unwrap(),
    ])
}

async fn audit_kinds(server: &Server) -> Vec<String> {
    let db = server.database().await;
    let rows: Vec<(String,)> = sqlx::query_as("SELECT kind FROM audit_log ORDER BY seq")
        .fetch_all(&db)
        .await
        .unwrap();
    rows.into_iter().map(|(k,)| k).collect()
}

/// The user's only phone is lost: its share is restored from the backup on a new device, which
/// registers with a new identity and is approved by proving it holds the restored share; it
/// signs, revokes the lost phone and refreshes, after which the old backup and the share it
/// restored (like the lost phone's) no longer sign.
#[tokio::test]
async fn phone_lost_restore_on_a_new_device_sign_then_refresh() {
    let server = Server::start_fresh(&[]);
    let media = tempfile::tempdir().unwrap();
    let phone = Device::new();
    let (phone_id, _) = phone.init(&server, "alice", "phone");
    let keygen = phone.run(&["keygen", "--name", "main"]).ok();
    let pubkey = keygen.field("public key");
    let keys = holders(&phone, media.path(), &["usb-1", "cloud", "laptop"]);
    let backup_file = media.path().join("main.tsb");
    let created = phone
        .run(&[
            "backup",
            "create",
            "--wallet",
            "main",
            "--policy",
            "threshold(2, usb-1, cloud, laptop)",
            "--out",
            backup_file.to_str().unwrap(),
        ])
        .ok();
    assert!(
        created.out.contains("verified and recorded"),
        "{}",
        created.out
    );
    // Anyone verifies it with public data only (no keystore, no passphrase).
    let anyone = tempfile::tempdir().unwrap();
    let verified = Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(["backup", "verify", backup_file.to_str().unwrap()])
        .env("TESSERA_HOME", anyone.path())
        .env_remove("TESSERA_PASSPHRASE")
        .output()
        .unwrap();
    assert!(verified.status.success(), "{verified:?}");
    // `--json`: one document with what the text says.
    let json = Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(["backup", "verify", backup_file.to_str().unwrap(), "--json"])
        .env("TESSERA_HOME", anyone.path())
        .env_remove("TESSERA_PASSPHRASE")
        .output()
        .unwrap();
    assert!(json.status.success(), "{json:?}");
    let doc: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(doc["verified"], true, "{doc}");
    assert_eq!(doc["party"], 0, "{doc}");
    assert_eq!(
        doc["threshold"],
        serde_json::json!({"t": 2, "n": 2}),
        "{doc}"
    );
    assert_eq!(doc["public_share"].as_str().unwrap().len(), 66, "{doc}");
    assert!(
        doc["holders"].as_array().is_some_and(|h| !h.is_empty()),
        "{doc}"
    );
    assert_eq!(doc["server_digest"], serde_json::Value::Null, "{doc}");
    assert_eq!(
        doc["size"],
        std::fs::metadata(&backup_file).unwrap().len(),
        "{doc}"
    );
    // Against another public share (here the wallet key's point): refused, saying so.
    let other = phone.run(&[
        "backup",
        "verify",
        backup_file.to_str().unwrap(),
        "--public-share",
        &pubkey,
    ]);
    assert_eq!(other.code, Some(1), "{}", other.out);
    assert!(other.err.contains("another share"), "{}", other.err);
    // A damaged copy fails with a reason, locally and on the server.
    let mut damaged = std::fs::read(&backup_file).unwrap();
    let middle = damaged.len() / 2;
    damaged[middle] ^= 1;
    let damaged_file = media.path().join("damaged.tsb");
    std::fs::write(&damaged_file, &damaged).unwrap();
    let bad = phone.run(&["backup", "verify", damaged_file.to_str().unwrap()]);
    assert_eq!(bad.code, Some(1), "{}", bad.out);
    assert!(
        bad.err.contains("verification FAILED") || bad.err.contains("not a valid backup"),
        "{}",
        bad.err
    );
    // A backup file is never overwritten.
    let again = phone.run(&[
        "backup",
        "create",
        "--wallet",
        "main",
        "--policy",
        "or(usb-1, cloud)",
        "--out",
        backup_file.to_str().unwrap(),
    ]);
    assert_eq!(again.code, Some(2), "{}", again.err);
    assert!(again.err.contains("never overwritten"), "{}", again.err);

    // The phone is lost. (A thief's copy of its keystore is kept to try later.)
    let thief = tempfile::tempdir().unwrap();
    common::copy_dir(phone.home.path(), thief.path());
    drop(phone);

    // A new phone registers: pending, no active device left to approve it.
    let new_phone = Device::new();
    let (new_id, init) = new_phone.init(&server, "alice", "new phone");
    assert!(init.out.contains("Pending"), "{}", init.out);
    let refused = new_phone.sign("main", "too early");
    assert_ne!(refused.code, Some(0));
    assert!(refused.err.contains("pending approval"), "{}", refused.err);

    // One key of a threshold-2 structure cannot restore, and says what is missing.
    let one = new_phone.run(&strs(&restore_args(&backup_file, &[&keys[0]], &[])));
    assert_eq!(one.code, Some(1), "{}", one.err);
    assert!(
        one.err.contains("cloud") && one.err.contains("laptop"),
        "{}",
        one.err
    );
    assert!(!new_phone.wallet_file("main").exists());

    // Two keys restore; the device proves possession of the share. The lost phone is still
    // active in the registry, so the recovery waits for its time lock (the lost phone could
    // have cancelled it meanwhile), and the new phone cannot sign before.
    let restored = new_phone
        .run(&strs(&restore_args(
            &backup_file,
            &[&keys[0], &keys[2]],
            &[],
        )))
        .ok();
    assert_eq!(restored.field("public key"), pubkey);
    assert!(restored.out.contains("time lock"), "{}", restored.out);
    let recovery = held_id(&restored);
    let early = new_phone.sign("main", "before the time lock");
    assert_ne!(early.code, Some(0));
    assert!(early.err.contains("pending approval"), "{}", early.err);
    let still = new_phone
        .run(&["device", "recover", "--wallet", "main"])
        .ok();
    assert_eq!(held_id(&still), recovery, "{}", still.out);
    end_time_lock(&server, &recovery).await;
    let recovered = new_phone
        .run(&["device", "recover", "--wallet", "main"])
        .ok();
    assert!(
        recovered
            .out
            .contains("approved by proof of the restored share"),
        "{}",
        recovered.out
    );

    let signed = new_phone.sign("main", "restored").ok();
    assert_signed(&signed, &pubkey, "restored");
    new_phone.run(&["device", "revoke", &phone_id]).ok();

    // Kept to show that the restored-before-refresh share stops signing.
    let before_refresh = std::fs::read(new_phone.wallet_file("main")).unwrap();
    let refreshed = new_phone.run(&["refresh", "--wallet", "main"]).ok();
    assert!(refreshed.out.contains("make new ones"), "{}", refreshed.out);
    let signed = new_phone.sign("main", "after refresh").ok();
    assert_signed(&signed, &pubkey, "after refresh");

    let after_refresh = std::fs::read(new_phone.wallet_file("main")).unwrap();
    std::fs::write(new_phone.wallet_file("main"), &before_refresh).unwrap();
    let stale = new_phone.sign("main", "with the pre-refresh share");
    assert_ne!(
        stale.code,
        Some(0),
        "the restored-before-refresh share still signs"
    );
    assert!(stale.err.contains("holds epoch 0"), "{}", stale.err);
    std::fs::write(new_phone.wallet_file("main"), &after_refresh).unwrap();

    // The old backup still decrypts, but to a share that no longer signs; the server says why.
    new_phone
        .run(&strs(&restore_args(
            &backup_file,
            &[&keys[1], &keys[2]],
            &["--as", "old-backup"],
        )))
        .ok();
    let old = new_phone.sign("old-backup", "with the old backup");
    assert_ne!(
        old.code,
        Some(0),
        "a share restored from the old backup still signs"
    );
    assert!(old.err.contains("holds epoch 0"), "{}", old.err);
    let stale_verify = new_phone.run(&[
        "backup",
        "verify",
        backup_file.to_str().unwrap(),
        "--server",
    ]);
    assert_eq!(stale_verify.code, Some(1), "{}", stale_verify.out);
    assert!(stale_verify.err.contains("epoch"), "{}", stale_verify.err);

    // The thief's copy of the lost phone: its device is revoked and its share is stale.
    let thief_sign = tessera(
        thief.path(),
        &["sign", "--wallet", "main", "--message", "steal"],
    );
    assert_ne!(thief_sign.code, Some(0));
    assert!(thief_sign.err.contains("revoked"), "{}", thief_sign.err);

    new_phone.sign("main", "still fine").ok();
    let kinds = audit_kinds(&server).await;
    for kind in [
        "backup.verified",
        "device.recovery_requested",
        "device.recovered",
        "backup.rejected",
        "device.revoked",
    ] {
        assert!(kinds.iter().any(|k| k == kind), "no {kind} in {kinds:?}");
    }
    assert!(!new_id.is_empty());
}

/// The server's share is backed up to the owner's holders, lost, and restored by the operator
/// with an authorised set of their keys; signing works again. On SQLite and on PostgreSQL.
#[tokio::test]
async fn server_share_lost_and_restored_from_its_backup() {
    server_share_lost_and_restored_on(None).await;
    server_share_lost_and_restored_on(Some(common::fresh_postgres_database())).await;
}

async fn server_share_lost_and_restored_on(database_url: Option<String>) {
    let extra: Vec<&str> = match &database_url {
        Some(url) => vec!["--database-url", url],
        None => vec![],
    };
    let mut server = Server::start_fresh(&extra);
    let media = tempfile::tempdir().unwrap();
    let phone = Device::new();
    phone.init(&server, "bob", "phone");
    let pubkey = phone
        .run(&["keygen", "--name", "main"])
        .ok()
        .field("public key");
    let keys = holders(&phone, media.path(), &["usb-1", "cloud", "laptop"]);
    let server_backup = media.path().join("server.tsb");
    let policy = "threshold(2, usb-1, cloud, laptop)";
    // The phone is bob's only device: the export waits for its time lock (the test ends it).
    let held = export_server_share(&phone, policy, &server_backup).ok();
    assert!(!server_backup.exists());
    end_time_lock(&server, &held_id(&held)).await;
    let created = export_server_share(&phone, policy, &server_backup).ok();
    assert!(created.out.contains("party 1 of 2-of-2"), "{}", created.out);

    // A device must never hold both shares: restoring the server's share here is refused.
    let refused = phone.run(&strs(&restore_args(
        &server_backup,
        &[&keys[0], &keys[1]],
        &[],
    )));
    assert_eq!(refused.code, Some(2), "{}", refused.err);
    assert!(refused.err.contains("server's share"), "{}", refused.err);

    // The server's share is lost.
    server.kill();
    {
        let db = server.database().await;
        sqlx::query("DELETE FROM server_shares")
            .execute(&db)
            .await
            .unwrap();
        db.close().await;
    }
    // The killed server stays in scope (shadowed): its data directory lives on.
    let data = server.data.clone();
    let mut server = Server::start(&data, &extra);
    repoint(&phone, &server);
    let lost = phone.sign("main", "no server share");
    assert_ne!(lost.code, Some(0), "{}", lost.out);
    assert!(lost.err.contains("no server share"), "{}", lost.err);

    // The operator restores it (server stopped) with two of the owner's holder keys.
    server.kill();
    let operator = tempfile::tempdir().unwrap();
    let mut target = vec!["--server-data-dir", data.to_str().unwrap()];
    target.extend(&extra);
    let restored = tessera(
        operator.path(),
        &strs(&restore_args(
            &server_backup,
            &[&keys[1], &keys[2]],
            &target,
        )),
    )
    .ok();
    assert!(
        restored.out.contains("the server's share"),
        "{}",
        restored.out
    );
    let server = Server::start(&data, &extra);
    repoint(&phone, &server);
    let signed = phone.sign("main", "server restored").ok();
    assert_signed(&signed, &pubkey, "server restored");
    let kinds = audit_kinds(&server).await;
    for kind in [
        "backup.server_share_requested",
        "backup.server_share_released",
        "backup.server_share_restored",
    ] {
        assert!(kinds.iter().any(|k| k == kind), "no {kind} in {kinds:?}");
    }
}

/// A device share backed up under 2-of-3 (another device's keystore, a USB file, a cloud
/// folder) and 2-of-4 (institutional: two officers, a vault, an escrow): with any one (any two)
/// of the holders lost, the others restore the share on a new device, which then signs.
#[tokio::test]
async fn two_of_three_and_two_of_four_survive_their_losses() {
    let server = Server::start_fresh(&[]);
    let media = tempfile::tempdir().unwrap();
    let phone = Device::new();
    phone.init(&server, "carol", "phone");
    let pubkey = phone
        .run(&["keygen", "--name", "main"])
        .ok()
        .field("public key");
    for (policy, labels, lost) in [
        (
            "threshold(2, device, usb, cloud)",
            &["device", "usb", "cloud"][..],
            1usize,
        ),
        (
            "threshold(2, officer-1, officer-2, vault, escrow)",
            &["officer-1", "officer-2", "vault", "escrow"][..],
            2usize,
        ),
    ] {
        let keys = holders(&phone, media.path(), labels);
        let file = media.path().join(format!("{}.tsb", labels.len()));
        phone
            .run(&[
                "backup",
                "create",
                "--wallet",
                "main",
                "--policy",
                policy,
                "--out",
                file.to_str().unwrap(),
            ])
            .ok();
        // Every way of losing `lost` holders leaves a set that restores and signs.
        let n = labels.len();
        for mask in 0u32..(1 << n) {
            if mask.count_ones() as usize != n - lost {
                continue;
            }
            let kept: Vec<usize> = (0..n).filter(|i| mask & (1 << i) != 0).collect();
            let device = Device::new();
            // Names of one user's devices must not look alike: one per policy and mask.
            device.init(&server, "carol", &format!("restore-{n}-{mask}"));
            let kept: Vec<&PathBuf> = kept.iter().map(|&i| &keys[i]).collect();
            let out = device.run(&strs(&restore_args(&file, &kept, &[]))).ok();
            assert_eq!(out.field("public key"), pubkey);
            // The phone is active: the recovery is held until it approves it.
            phone.run(&["approvals", "approve", &held_id(&out)]).ok();
            let message = format!("{policy} without {lost}");
            let signed = device.sign("main", &message).ok();
            assert_signed(&signed, &pubkey, &message);
        }
        // One fewer holder is not enough, and the error names what is missing.
        let device = Device::new();
        device.init(&server, "carol", &format!("one-short-{n}"));
        let out = device.run(&strs(&restore_args(&file, &[&keys[0]], &[])));
        assert_eq!(out.code, Some(1), "{}", out.err);
        assert!(out.err.contains(labels[1]), "{}", out.err);
    }
}

/// The server restarted on another port: the device follows it.
fn repoint(device: &Device, server: &Server) {
    let path = device.home.path().join("device.json");
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    config["server"] = serde_json::Value::String(server.url.clone());
    std::fs::write(&path, config.to_string()).unwrap();
}

/// A pending device that does not hold the device share cannot get itself approved: a proof
/// made with another share, or a request signed by another identity, is refused (401), audited,
/// and the device stays pending.
#[tokio::test]
async fn recovery_without_the_share_is_refused() {
    use tessera_api as api;
    let server = Server::start_fresh(&[]);
    let phone = Device::new();
    phone.init(&server, "dave", "phone");
    let keygen = phone.run(&["keygen", "--name", "main"]).ok();
    let wallet_id = keygen
        .out
        .lines()
        .find_map(|l| l.strip_prefix("wallet"))
        .and_then(|r| r.split(['(', ')']).nth(1))
        .unwrap()
        .to_string();

    let dir = tempfile::tempdir().unwrap();
    let intruder = common::identity(dir.path());
    let client = tessera_client::ServerClient::new(&server.url).unwrap();
    let device = client
        .register(&intruder, "dave", "intruder")
        .await
        .unwrap();
    assert_eq!(device.status, api::DeviceStatus::Pending);

    let other = tessera_core::runner::keygen(tessera_core::Threshold::new(2, 2).unwrap()).unwrap();
    let message = api::recover_message(&device.device_id, &intruder.public_key(), &wallet_id, 0);
    let post = |body: api::RecoverDevice| {
        let url = format!("{}/devices/{}/recover", server.url, device.device_id);
        async move {
            reqwest::Client::new()
                .post(url)
                .json(&body)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    // A proof by another share (of another wallet) over the right context.
    let status = post(api::RecoverDevice {
        wallet_id: wallet_id.clone().into(),
        epoch: 0,
        proof: hex::encode(other[0].prove_possession(&message).unwrap()),
        signature: hex::encode(intruder.sign(&message)),
    })
    .await;
    assert_eq!(status, 401);
    // Garbage instead of a proof.
    let status = post(api::RecoverDevice {
        wallet_id: wallet_id.clone().into(),
        epoch: 0,
        proof: "00".repeat(64),
        signature: hex::encode(intruder.sign(&message)),
    })
    .await;
    assert_eq!(status, 401);
    // Signed by another identity than the pending device's.
    let stranger = common::identity(&dir.path().join("other"));
    let status = post(api::RecoverDevice {
        wallet_id: wallet_id.clone().into(),
        epoch: 0,
        proof: hex::encode(other[0].prove_possession(&message).unwrap()),
        signature: hex::encode(stranger.sign(&message)),
    })
    .await;
    assert_eq!(status, 401);

    let mut client = client;
    let login = client
        .login(&intruder, &device.device_id)
        .await
        .unwrap_err();
    assert!(login.to_string().contains("pending"), "{login}");
    let kinds = audit_kinds(&server).await;
    assert!(
        kinds.iter().any(|k| k == "device.recovery_refused"),
        "{kinds:?}"
    );
    assert!(!kinds.iter().any(|k| k == "device.recovered"), "{kinds:?}");
}

#[test]
fn a_holder_key_that_is_not_canonically_encoded_is_refused() {
    // X25519 ignores a public key's top bit, but HPKE binds its bytes: a backup to such a key
    // would verify and never decrypt. `backup-key add` and `--holder` refuse it, saying why.
    let device = Device::new();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("usb-1.key");
    let out = device
        .run(&[
            "backup-key",
            "new",
            "--label",
            "usb-1",
            "--out",
            path.to_str().unwrap(),
        ])
        .ok();
    let text = out
        .out
        .split_whitespace()
        .find(|w| w.starts_with("tessera-holder-v1:usb-1:"))
        .unwrap()
        .to_string();
    let (_, key) = text.rsplit_once(':').unwrap();
    let mut bytes = hex::decode(key).unwrap();
    bytes[31] |= 0x80;
    let bad = format!("tessera-holder-v1:cloud:{}", hex::encode(&bytes));
    let out = device.run(&["backup-key", "add", &bad]);
    assert_eq!(out.code, Some(2), "{}", out.err);
    assert!(out.err.contains("canonically encoded"), "{}", out.err);
    let out = device.run(&["backup-key", "list"]).ok();
    assert!(!out.out.contains("cloud"), "{}", out.out);
    let out = device.run(&[
        "backup",
        "create",
        "--wallet",
        "main",
        "--policy",
        "or(usb-1, cloud)",
        "--holder",
        &bad,
        "--out",
        dir.path().join("main.tsb").to_str().unwrap(),
    ]);
    assert_eq!(out.code, Some(2), "{}", out.err);
    assert!(out.err.contains("canonically encoded"), "{}", out.err);
}

/// A user's only device asks for the server's share: the export is held for the time lock,
/// listed, not approvable by the device itself, cancellable; once the lock ends it is released
/// and its holders become the wallet's fixed ones: a new export to them goes through at once,
/// one to other holders is held again. On SQLite and on PostgreSQL.
#[tokio::test]
async fn a_lone_device_waits_for_the_time_lock_to_export_the_server_share() {
    lone_device_export_on(None).await;
    lone_device_export_on(Some(common::fresh_postgres_database())).await;
}

async fn lone_device_export_on(database_url: Option<String>) {
    let extra: Vec<&str> = match &database_url {
        Some(url) => vec!["--database-url", url],
        None => vec![],
    };
    let server = Server::start_fresh(&extra);
    let media = tempfile::tempdir().unwrap();
    let phone = Device::new();
    phone.init(&server, "erin", "phone");
    phone.run(&["keygen", "--name", "main"]).ok();
    let keys = holders(&phone, media.path(), &["usb-1", "usb-2", "cloud"]);
    let policy = "threshold(2, usb-1, usb-2, cloud)";
    let file = media.path().join("server.tsb");

    let held = export_server_share(&phone, policy, &file).ok();
    let id = held_id(&held);
    assert!(held.out.contains("(server-share-export)"), "{}", held.out);
    assert!(held.out.contains("time lock"), "{}", held.out);
    assert!(
        held.out.contains("run this same command again"),
        "{}",
        held.out
    );
    assert!(
        !file.exists(),
        "the server's share left before the time lock"
    );
    // Asking again finds the same held export, and still gives nothing.
    let again = export_server_share(&phone, policy, &file).ok();
    assert_eq!(held_id(&again), id);
    assert!(!file.exists());
    let listed = phone.run(&["approvals", "list"]).ok();
    assert!(
        listed.out.contains(&id) && listed.out.contains("time lock until"),
        "{}",
        listed.out
    );
    // A device cannot approve its own export.
    let own = phone.run(&["approvals", "approve", &id]);
    assert_ne!(own.code, Some(0), "{}", own.out);
    assert!(own.err.contains("cannot approve its own"), "{}", own.err);

    // Cancelled, it never releases, even after its time lock.
    phone.run(&["approvals", "cancel", &id]).ok();
    {
        let db = server.database().await;
        sqlx::query("UPDATE held_actions SET unlock_at = 0 WHERE id = $1")
            .bind(&id)
            .execute(&db)
            .await
            .unwrap();
        db.close().await;
    }
    let after_cancel = export_server_share(&phone, policy, &file).ok();
    let second = held_id(&after_cancel);
    assert_ne!(second, id);
    assert!(!file.exists());

    // The time lock over: released, verified, and restorable only on a server.
    end_time_lock(&server, &second).await;
    let created = export_server_share(&phone, policy, &file).ok();
    assert!(created.out.contains("party 1 of 2-of-2"), "{}", created.out);
    assert!(file.exists());

    // The holders are now fixed: a new backup to them goes through at once (after a refresh,
    // say); one to other holders is held again.
    let again = media.path().join("server-2.tsb");
    export_server_share(&phone, policy, &again).ok();
    assert!(again.exists());
    holders(&phone, media.path(), &["usb-3"]);
    let other = media.path().join("server-3.tsb");
    let moved = export_server_share(&phone, "threshold(2, usb-1, usb-3, cloud)", &other).ok();
    held_id(&moved);
    assert!(!other.exists());

    let kinds = audit_kinds(&server).await;
    for kind in [
        "backup.server_share_requested",
        "backup.server_share_cancelled",
        "backup.server_share_released",
    ] {
        assert!(kinds.iter().any(|k| k == kind), "no {kind} in {kinds:?}");
    }
    assert!(!keys.is_empty());
}

/// A device of a two-device user asks for the server's share: no time lock, the other device
/// must approve. Refused, it is never released; approved, it is; changing the holders needs
/// the other device again.
#[tokio::test]
async fn a_second_device_must_approve_exporting_the_server_share() {
    let server = Server::start_fresh(&[]);
    let media = tempfile::tempdir().unwrap();
    let phone = Device::new();
    phone.init(&server, "frank", "phone");
    let laptop = Device::new();
    let (_, init) = laptop.init(&server, "frank", "laptop");
    phone
        .run(&["device", "approve", &init.field("approval code")])
        .ok();
    // A 2-of-2 wallet of the phone and the server: the laptop approves, holds no share.
    phone
        .run(&["keygen", "--name", "main", "--two-of-two"])
        .ok();
    holders(&phone, media.path(), &["usb-1", "usb-2", "cloud"]);
    let policy = "threshold(2, usb-1, usb-2, cloud)";
    let file = media.path().join("server.tsb");

    let held = export_server_share(&phone, policy, &file).ok();
    let id = held_id(&held);
    assert!(
        held.out.contains("for another active device"),
        "{}",
        held.out
    );
    // No time lock: moving time on changes nothing.
    {
        let db = server.database().await;
        let (lock,): (Option<i64>,) =
            sqlx::query_as("SELECT unlock_at FROM held_actions WHERE id = $1")
                .bind(&id)
                .fetch_one(&db)
                .await
                .unwrap();
        assert_eq!(lock, None);
        db.close().await;
    }
    // The laptop sees it and refuses it.
    let listed = laptop.run(&["approvals", "list"]).ok();
    assert!(listed.out.contains(&id), "{}", listed.out);
    assert!(
        listed.out.contains("export the server's share"),
        "{}",
        listed.out
    );
    let refused = laptop.run(&["approvals", "refuse", &id]).ok();
    assert!(refused.out.contains("cancelled"), "{}", refused.out);
    let after = export_server_share(&phone, policy, &file).ok();
    let second = held_id(&after);
    assert_ne!(second, id);
    assert!(!file.exists());
    // Approved by the laptop: the phone collects the backup.
    let approved = laptop.run(&["approvals", "approve", &second]).ok();
    assert!(approved.out.contains("approved"), "{}", approved.out);
    export_server_share(&phone, policy, &file).ok();
    assert!(file.exists());
    // Other holders: the laptop must approve again.
    let other = media.path().join("other.tsb");
    let moved = export_server_share(&phone, "and(usb-1, usb-2)", &other).ok();
    let third = held_id(&moved);
    assert!(!other.exists());
    laptop.run(&["approvals", "approve", &third]).ok();
    export_server_share(&phone, "and(usb-1, usb-2)", &other).ok();
    assert!(other.exists());
    let kinds = audit_kinds(&server).await;
    for kind in [
        "backup.server_share_requested",
        "backup.server_share_cancelled",
        "backup.server_share_approved",
        "backup.server_share_released",
    ] {
        assert!(kinds.iter().any(|k| k == kind), "no {kind} in {kinds:?}");
    }
}

/// Someone with an authorised set of the device backup's holders restores the device share on
/// a new device while the owner's phone is active: the recovery is held (the new device can
/// neither log in nor sign), the phone sees it and cancels it, which revokes the new device.
/// Another recovery the phone approves makes its device active at once.
#[tokio::test]
async fn a_recovery_while_a_device_is_active_is_held_and_cancellable() {
    let server = Server::start_fresh(&[]);
    let media = tempfile::tempdir().unwrap();
    let phone = Device::new();
    phone.init(&server, "gina", "phone");
    let pubkey = phone
        .run(&["keygen", "--name", "main"])
        .ok()
        .field("public key");
    // A structure wallet too: a recovered device, once active, is to join it.
    phone
        .run(&[
            "keygen",
            "--name",
            "family",
            "--structure",
            "and(server, phone)",
        ])
        .ok();
    let keys = holders(&phone, media.path(), &["usb-1", "cloud", "laptop"]);
    let backup_file = media.path().join("main.tsb");
    phone
        .run(&[
            "backup",
            "create",
            "--wallet",
            "main",
            "--policy",
            "threshold(2, usb-1, cloud, laptop)",
            "--out",
            backup_file.to_str().unwrap(),
        ])
        .ok();

    let intruder = Device::new();
    intruder.init(&server, "gina", "intruder");
    let restored = intruder
        .run(&strs(&restore_args(
            &backup_file,
            &[&keys[0], &keys[1]],
            &[],
        )))
        .ok();
    let id = held_id(&restored);
    assert!(
        restored.out.contains("(device-recovery)"),
        "{}",
        restored.out
    );
    let refused = intruder.sign("main", "steal");
    assert_ne!(refused.code, Some(0));
    assert!(refused.err.contains("pending approval"), "{}", refused.err);
    let listed = phone.run(&["approvals", "list"]).ok();
    assert!(
        listed.out.contains(&id) && listed.out.contains("device-recovery"),
        "{}",
        listed.out
    );
    phone.run(&["approvals", "cancel", &id]).ok();
    // Cancelled: the device is revoked, and even after the time lock it gets nowhere.
    let again = intruder.run(&["device", "recover", "--wallet", "main"]);
    assert_ne!(again.code, Some(0), "{}", again.out);
    let refused = intruder.sign("main", "steal");
    assert_ne!(refused.code, Some(0));
    assert!(refused.err.contains("revoked"), "{}", refused.err);

    // The owner's own new laptop recovers and the phone approves it: active at once.
    let laptop = Device::new();
    laptop.init(&server, "gina", "laptop");
    let restored = laptop
        .run(&strs(&restore_args(
            &backup_file,
            &[&keys[1], &keys[2]],
            &[],
        )))
        .ok();
    let id = held_id(&restored);
    phone.run(&["approvals", "approve", &id]).ok();
    let signed = laptop.sign("main", "recovered").ok();
    assert_signed(&signed, &pubkey, "recovered");
    // As an approved device would, the recovered laptop (and not the cancelled intruder) is to
    // join the structure wallet at its next resharing.
    let shown = phone
        .run(&["wallet", "show", "--wallet", "family", "--json"])
        .ok();
    let detail: serde_json::Value = serde_json::from_str(&shown.out).unwrap();
    let pending = detail["pending"].as_array().unwrap();
    assert_eq!(pending.len(), 1, "{detail}");
    assert_eq!(pending[0]["change"], "add", "{detail}");
    assert_eq!(pending[0]["label"], "laptop", "{detail}");
    let kinds = audit_kinds(&server).await;
    for kind in [
        "device.recovery_requested",
        "device.recovery_cancelled",
        "device.recovery_approved",
        "device.recovered",
    ] {
        assert!(kinds.iter().any(|k| k == kind), "no {kind} in {kinds:?}");
    }
}
