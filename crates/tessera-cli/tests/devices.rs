//! Enrolling and removing devices against real `tessera server` processes: deceptive names,
//! pending devices and registrations from one address, approval codes, the last active device,
//! a revoked device set up again, and the device home's file modes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use common::{Backend, Server, identity, start};
use tessera_api as api;
use tessera_client::{ClientError, ServerClient};
use tessera_store::DeviceIdentity;

const PASSPHRASE: &str = "correct horse battery staple";

struct Output {
    code: Option<i32>,
    out: String,
    err: String,
}

fn tessera(home: &Path, args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(args)
        .env("TESSERA_HOME", home)
        .env("TESSERA_PASSPHRASE", PASSPHRASE)
        .env("TESSERA_BACKUP_KEY_PASSPHRASE", "holder key passphrase")
        .env_remove("TESSERA_DATABASE_URL")
        .output()
        .unwrap();
    Output {
        code: out.status.code(),
        out: String::from_utf8_lossy(&out.stdout).into_owned(),
        err: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn field(out: &str, name: &str) -> String {
    out.lines()
        .find_map(|l| l.strip_prefix(name))
        .map(|r| r.trim().to_string())
        .unwrap_or_else(|| panic!("no {name} in {out}"))
}

/// A device identity (fast KDF) registered as `user`/`name`; the registry's answer.
async fn register(
    server: &Server,
    user: &str,
    name: &str,
) -> (
    ServerClient,
    DeviceIdentity,
    Result<api::Device, ClientError>,
    tempfile::TempDir,
) {
    let home = tempfile::tempdir().unwrap();
    let id = identity(home.path());
    let client = ServerClient::new(&server.url).unwrap();
    let d = client.register(&id, user, name).await;
    (client, id, d, home)
}

fn status_of<T: std::fmt::Debug>(r: &Result<T, ClientError>) -> u16 {
    match r {
        Err(ClientError::Server { status, .. }) => *status,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

fn message_of<T: std::fmt::Debug>(r: &Result<T, ClientError>) -> String {
    match r {
        Err(ClientError::Server { message, .. }) => message.clone(),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn deceptive_device_names_are_refused_and_names_are_stored_in_nfc() {
    let server = start(Backend::Sqlite);
    let (mut alice, alice_id, laptop, _h) = register(&server, "alice", "laptop").await;
    let laptop = laptop.unwrap();
    alice.login(&alice_id, &laptop.device_id).await.unwrap();

    // An attacker, unauthenticated, registers look-alikes of "laptop" under alice.
    for (name, why) in [
        (
            "laptop\u{202E}\u{200B}",
            "invisible format character U+202E",
        ),
        ("lap\u{200B}top", "invisible format character U+200B"),
        ("\u{2067}laptop", "invisible format character U+2067"),
        ("lap\u{2060}top", "invisible format character U+2060"),
    ] {
        let (_, _, r, _h) = register(&server, "alice", name).await;
        assert_eq!(status_of(&r), 400, "{name:?}");
        assert!(message_of(&r).contains(why), "{name:?}: {}", message_of(&r));
    }
    // Cyrillic а and р in "lарtop", the same name, and one in capitals: confusable.
    for name in ["l\u{430}\u{440}top", "laptop", "LAPTOP"] {
        let (_, _, r, _h) = register(&server, "alice", name).await;
        assert_eq!(status_of(&r), 409, "{name:?}");
        assert!(
            message_of(&r).contains("another device of this user (\"laptop\")"),
            "{}",
            message_of(&r)
        );
    }
    // Not a look-alike, but named `laptop` in wallet structures as well: refused.
    for name in ["laptop!", "Laptop."] {
        let (_, _, r, _h) = register(&server, "alice", name).await;
        assert_eq!(status_of(&r), 409, "{name:?}");
        assert!(
            message_of(&r).contains("would be named \"laptop\" in wallet structures"),
            "{}",
            message_of(&r)
        );
    }
    // Nothing of that was stored: alice still has one device.
    assert_eq!(alice.devices().await.unwrap().len(), 1);
    // A user name with a bidi override is refused too.
    let (_, _, r, _h) = register(&server, "mallory\u{202E}", "phone").await;
    assert_eq!(status_of(&r), 400);

    // NFD "café" is stored as NFC; then NFC "café" looks like it and is refused.
    let (_, _, r, _h) = register(&server, "alice", "cafe\u{301}").await;
    let cafe = r.unwrap();
    assert_eq!(cafe.name, "caf\u{e9}");
    assert_eq!(cafe.status, api::DeviceStatus::Pending);
    let (_, _, r, _h) = register(&server, "alice", "caf\u{e9}").await;
    assert_eq!(status_of(&r), 409);
    // (Registration order is only to the second; same-second devices list by name.)
    let mut listed: Vec<String> = alice
        .devices()
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.name)
        .collect();
    listed.sort();
    assert_eq!(listed, ["caf\u{e9}", "laptop"]);
    // Another user may have a "laptop".
    let (_, _, r, _h) = register(&server, "bob", "laptop").await;
    r.unwrap();
    // A revoked device's name can be used again.
    let (_, _, phone, _h) = register(&server, "alice", "phone").await;
    let phone = phone.unwrap();
    alice.revoke(&phone.device_id).await.unwrap();
    let (_, _, r, _h) = register(&server, "alice", "phone").await;
    assert_eq!(r.unwrap().status, api::DeviceStatus::Pending);
}

#[tokio::test]
async fn pending_devices_per_user_are_capped_under_concurrency() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        pending_cap_on(backend).await;
    }
}

async fn pending_cap_on(backend: Backend) {
    let server = start(backend);
    let (mut alice, alice_id, laptop, _h) = register(&server, "alice", "laptop").await;
    let laptop = laptop.unwrap();
    alice.login(&alice_id, &laptop.device_id).await.unwrap();
    // 50 registrations at once under alice: exactly the cap is kept, the rest refused clearly.
    let attempts = (0..50).map(|i| {
        let server_url = server.url.clone();
        tokio::spawn(async move {
            let home = tempfile::tempdir().unwrap();
            let id = identity(home.path());
            let client = ServerClient::new(&server_url).unwrap();
            client.register(&id, "alice", &format!("device {i}")).await
        })
    });
    let results = futures_util::future::join_all(attempts).await;
    let mut created = 0;
    for r in &results {
        match r.as_ref().unwrap() {
            Ok(d) => {
                assert_eq!(d.status, api::DeviceStatus::Pending);
                created += 1;
            }
            Err(ClientError::Server {
                status: 409,
                message,
                ..
            }) => assert!(message.contains("waiting for approval"), "{message}"),
            Err(e) => panic!("{backend:?}: a registration failed otherwise: {e}"),
        }
    }
    assert_eq!(created, 16, "{backend:?}");
    let pending = alice
        .devices()
        .await
        .unwrap()
        .into_iter()
        .filter(|d| d.status == api::DeviceStatus::Pending)
        .count();
    assert_eq!(pending, 16, "{backend:?}");
    // Another user is not affected.
    let (_, _, r, _h) = register(&server, "bob", "laptop").await;
    r.unwrap();
    let (_, _, r, _h) = register(&server, "bob", "phone").await;
    assert_eq!(r.unwrap().status, api::DeviceStatus::Pending);
}

#[tokio::test]
async fn concurrent_first_registrations_of_a_new_user_make_one_active_device() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        first_registrations_on(backend).await;
    }
}

/// 50 devices register at once under a user nobody registered yet: one of them creates the user
/// and is active, the others are pending (up to the cap) or refused clearly; none fails with a
/// server error, and the user exists once.
async fn first_registrations_on(backend: Backend) {
    let server = start(backend);
    let attempts = (0..50).map(|i| {
        let server_url = server.url.clone();
        tokio::spawn(async move {
            let home = tempfile::tempdir().unwrap();
            let id = identity(home.path());
            let mut client = ServerClient::new(&server_url).unwrap();
            let r = client.register(&id, "carol", &format!("device {i}")).await;
            if let Ok(d) = &r
                && d.status == api::DeviceStatus::Active
            {
                client.login(&id, &d.device_id).await.unwrap();
                return (r, Some(client));
            }
            (r, None)
        })
    });
    let results = futures_util::future::join_all(attempts).await;
    let (mut active, mut pending) = (Vec::new(), 0);
    for r in results {
        match r.unwrap() {
            (Ok(d), Some(client)) => {
                assert_eq!(d.status, api::DeviceStatus::Active);
                active.push(client);
            }
            (Ok(d), None) => {
                assert_eq!(d.status, api::DeviceStatus::Pending, "{backend:?}");
                pending += 1;
            }
            (
                Err(ClientError::Server {
                    status: 409,
                    message,
                    ..
                }),
                _,
            ) => assert!(message.contains("waiting for approval"), "{message}"),
            (Err(e), _) => panic!("{backend:?}: a registration failed otherwise: {e}"),
        }
    }
    assert_eq!(active.len(), 1, "{backend:?}: one device creates the user");
    assert_eq!(pending, 16, "{backend:?}");
    let listed = active[0].devices().await.unwrap();
    assert_eq!(listed.len(), 17, "{backend:?}: one user with all of them");
}

/// `POST /devices` from a chosen loopback source address.
async fn register_from(server: &Server, source: &str, user: &str, name: &str) -> u16 {
    let home = tempfile::tempdir().unwrap();
    let id = identity(home.path());
    let key = id.public_key();
    let signature = id.sign(&api::register_message(user, name, &key));
    let client = reqwest::Client::builder()
        .local_address(source.parse::<std::net::IpAddr>().unwrap())
        .build()
        .unwrap();
    client
        .post(format!("{}/devices", server.url))
        .json(&api::RegisterDevice {
            user: user.into(),
            device_name: name.into(),
            identity_key: hex::encode(key),
            signature: hex::encode(signature),
        })
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn registrations_from_one_address_are_rate_limited() {
    // reqwest with rustls needs the process-wide provider (another test may not have set it).
    tessera_client::tls::install_crypto_provider();
    let server = start(Backend::Sqlite);
    // New users from one address: the burst passes, then 429; another address still registers.
    // The quota refills one registration every 6 s (10 a minute): on a loaded machine the 110
    // requests can take longer than that, so what is asserted is the burst and that nothing
    // beyond the refills of the time taken gets through.
    let started = std::time::Instant::now();
    let mut statuses = Vec::new();
    for i in 0..110 {
        statuses.push(register_from(&server, "127.0.0.1", &format!("user{i}"), "laptop").await);
    }
    let refills = started.elapsed().as_secs() / 6 + 1;
    assert!(statuses[..100].iter().all(|s| *s == 201), "{statuses:?}");
    let created = statuses.iter().filter(|s| **s == 201).count();
    assert!(
        created <= 100 + usize::try_from(refills).unwrap(),
        "{created} created in {:?}: {statuses:?}",
        started.elapsed()
    );
    assert!(
        statuses[100..].iter().all(|s| *s == 201 || *s == 429),
        "{statuses:?}"
    );
    assert!(statuses.contains(&429), "{statuses:?}");
    assert_eq!(
        register_from(&server, "127.0.0.2", "someone", "laptop").await,
        201
    );
}

#[tokio::test]
async fn approval_shows_the_key_and_needs_the_whole_code() {
    let server = start(Backend::Sqlite);
    let (laptop, phone) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let init = |home: &Path, name: &str| {
        tessera(
            home,
            &[
                "init",
                "--server",
                &server.url,
                "--user",
                "alice",
                "--name",
                name,
            ],
        )
    };
    assert_eq!(init(laptop.path(), "laptop").code, Some(0));
    let out = init(phone.path(), "phone");
    assert_eq!(out.code, Some(0), "{}", out.err);
    let key = field(&out.out, "identity key");
    let code = field(&out.out, "approval code")
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    // 80 bits, not 32.
    assert_eq!(code.replace('-', "").len(), 20, "{code}");
    // The 8-digit prefix (the old code length) approves nothing.
    let short = tessera(laptop.path(), &["device", "approve", &code[..9]]);
    assert_eq!(short.code, Some(1), "{}", short.out);
    assert!(
        short.err.contains("is not an approval code"),
        "{}",
        short.err
    );
    let ok = tessera(laptop.path(), &["device", "approve", &code.to_lowercase()]);
    assert_eq!(ok.code, Some(0), "{}", ok.err);
    assert_eq!(field(&ok.out, "identity key"), key);
}

#[tokio::test]
async fn the_last_active_device_is_not_revoked_without_force() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        last_device_on(backend).await;
    }
}

async fn last_device_on(backend: Backend) {
    let server = start(backend);
    let (mut first, first_id, d, h) = register(&server, "alice", "device 0").await;
    let d = d.unwrap();
    first.login(&first_id, &d.device_id).await.unwrap();
    let mut devices = vec![(first_id, d, h)];
    let mut clients = vec![];
    for i in 1..50 {
        let (mut c, id, d, h) = register(&server, "alice", &format!("device {i}")).await;
        let d = d.unwrap();
        first
            .approve(&devices[0].0, &api::approval_code(&id.public_key()))
            .await
            .unwrap();
        c.login(&id, &d.device_id).await.unwrap();
        clients.push(c);
        devices.push((id, d, h));
    }
    clients.insert(0, first);
    // Every device revokes itself at once: all but one succeed, and one active device stays.
    let revokes = clients
        .iter()
        .zip(&devices)
        .map(|(c, (_, d, _))| c.revoke(&d.device_id));
    let results = futures_util::future::join_all(revokes).await;
    let refused: Vec<&ClientError> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert_eq!(refused.len(), 1, "{backend:?}: {refused:?}");
    assert!(
        refused[0].to_string().contains("last active device")
            && refused[0].to_string().contains("--force"),
        "{}",
        refused[0]
    );
    let last = results.iter().position(Result::is_err).unwrap();
    let listed = clients[last].devices().await.unwrap();
    let active: Vec<_> = listed
        .iter()
        .filter(|d| d.status == api::DeviceStatus::Active)
        .collect();
    assert_eq!(active.len(), 1, "{backend:?}");
    assert_eq!(active[0].device_id, devices[last].1.device_id);
    // Forced, it goes, and the user is locked out.
    let forced = clients[last]
        .revoke_with(
            &devices[last].1.device_id,
            &api::RevokeDevice { force: true },
        )
        .await
        .unwrap();
    assert_eq!(forced.status, api::DeviceStatus::Revoked);
    assert_eq!(status_of(&clients[last].devices().await), 401);
}

#[tokio::test]
async fn the_cli_warns_before_revoking_the_last_device_and_a_revoked_device_cannot_init() {
    let server = start(Backend::Sqlite);
    let home = tempfile::tempdir().unwrap();
    let init = || {
        tessera(
            home.path(),
            &[
                "init",
                "--server",
                &server.url,
                "--user",
                "gina",
                "--name",
                "laptop",
            ],
        )
    };
    let out = init();
    assert_eq!(out.code, Some(0), "{}", out.err);
    let id = field(&out.out, "device id");
    let refused = tessera(home.path(), &["device", "revoke", &id]);
    assert_eq!(refused.code, Some(1), "{}", refused.out);
    assert!(
        refused.err.contains("last active device of this user"),
        "{}",
        refused.err
    );
    // Still usable.
    assert_eq!(tessera(home.path(), &["device", "list"]).code, Some(0));
    let forced = tessera(home.path(), &["device", "revoke", &id, "--force"]);
    assert_eq!(forced.code, Some(0), "{}", forced.err);
    assert!(forced.err.contains("warning: --force"), "{}", forced.err);
    assert!(forced.out.contains("revoked"), "{}", forced.out);

    // `init` again on the revoked device: a clear failure, not "status Revoked" and exit 0.
    let again = init();
    assert_eq!(again.code, Some(1), "{}\n{}", again.out, again.err);
    assert!(
        again.err.contains("was revoked") && again.err.contains("new identity"),
        "{}",
        again.err
    );
    assert!(!again.out.contains("Revoked"), "{}", again.out);
}

/// Every entry under `dir`: directories 0700, files 0600.
fn assert_private(dir: &Path) {
    let mode = std::fs::metadata(dir).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "{} is {mode:o}", dir.display());
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let path = entry.path();
        if entry.file_type().unwrap().is_dir() {
            assert_private(&path);
        } else {
            let mode = entry.metadata().unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{} is {mode:o}", path.display());
        }
    }
}

#[tokio::test]
async fn the_device_home_and_every_file_in_it_are_private() {
    let server = start(Backend::Sqlite);
    let parent = tempfile::tempdir().unwrap();
    let home = parent.path().join("tessera");
    // Created beforehand with the usual umask.
    std::fs::create_dir(&home).unwrap();
    std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = tessera(
        &home,
        &[
            "init",
            "--server",
            &server.url,
            "--user",
            "hal",
            "--name",
            "laptop",
        ],
    );
    assert_eq!(out.code, Some(0), "{}", out.err);
    assert!(home.join("device.json").exists());
    assert_private(&home);

    let new = tessera(&home, &["backup-key", "new", "--label", "usb-1"]);
    assert_eq!(new.code, Some(0), "{}", new.err);
    let other = tempfile::tempdir().unwrap();
    let elsewhere = tessera(other.path(), &["backup-key", "new", "--label", "cloud"]);
    assert_eq!(elsewhere.code, Some(0), "{}", elsewhere.err);
    let public = elsewhere
        .out
        .split_whitespace()
        .find(|w| w.starts_with("tessera-holder-v1:"))
        .unwrap()
        .to_string();
    let add = tessera(&home, &["backup-key", "add", &public, "--kind", "cloud"]);
    assert_eq!(add.code, Some(0), "{}", add.err);
    assert!(home.join("holders.json").exists());
    assert!(home.join("backup-keys").join("usb-1.key").exists());
    assert_private(&home);

    // Files an older version left readable by others are made private when the home is opened.
    std::fs::set_permissions(
        home.join("device.json"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    std::fs::set_permissions(
        home.join("holders.json"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o755)).unwrap();
    assert_eq!(tessera(&home, &["device", "list"]).code, Some(0));
    assert_private(&home);
}
