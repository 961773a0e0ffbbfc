//! The server's key-encryption key in an HSM: SoftHSM2 (installed by `scripts/test`), a token
//! initialised per test, real `tessera` processes. Keys are named by RFC 7512 URIs; the older
//! `pkcs11:module=…,token=…,key=…` form still works, with a deprecation note.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use tessera_client::ServerClient;
use tessera_core::DerivationPath;

use common::Server;

mod common;

const PIN: &str = "4321";

fn module() -> PathBuf {
    [
        "/usr/lib/softhsm/libsofthsm2.so",
        "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
        "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
    .expect("SoftHSM2 is not installed: run ./scripts/test, which installs it (apt-get install softhsm2)")
}

/// A fresh SoftHSM2 token labelled `tessera`; its configuration file goes in `dir`.
fn token(dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir.join("tokens")).unwrap();
    let conf = dir.join("softhsm2.conf");
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
            dir.join("tokens").display()
        ),
    )
    .unwrap();
    let out = Command::new("softhsm2-util")
        .args([
            "--init-token",
            "--free",
            "--label",
            "tessera",
            "--pin",
            PIN,
            "--so-pin",
            "8765",
        ])
        .env("SOFTHSM2_CONF", &conf)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    conf
}

/// The RFC 7512 URI of the key labelled `key` on the token `tessera`.
fn spec(key: &str) -> String {
    format!(
        "pkcs11:token=tessera;object={key}?module-path={}",
        module().display()
    )
}

/// The same key in the older, deprecated form.
fn legacy_spec(key: &str) -> String {
    format!(
        "pkcs11:module={},token=tessera,key={key}",
        module().display()
    )
}

fn tessera(conf: &Path, pin: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(args)
        .env("SOFTHSM2_CONF", conf)
        .env("TESSERA_PKCS11_PIN", pin)
        .output()
        .unwrap()
}

/// Starts `tessera server --kek KEK`; Err(stderr) when it refuses to start.
fn server(conf: &Path, data: &Path, kek: &str, pin: &str) -> Result<Server, String> {
    Server::try_start(
        data,
        &["--kek", kek],
        &[
            ("SOFTHSM2_CONF", Some(conf.to_str().unwrap())),
            ("TESSERA_PKCS11_PIN", Some(pin)),
        ],
    )
}

#[tokio::test]
async fn server_shares_wrapped_by_an_hsm_key_and_the_key_rotated() {
    let dir = tempfile::tempdir().unwrap();
    let conf = token(dir.path());
    let data = dir.path().join("data");

    // The key is created in the token, once.
    let out = tessera(&conf, PIN, &["kek", "generate", "--kek", &spec("kek-1")]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("non-extractable"));
    let out = tessera(&conf, PIN, &["kek", "generate", "--kek", &spec("kek-1")]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("already exists"));

    // Clear start-up errors: wrong PIN, missing key, missing PIN, unknown token.
    let e = server(&conf, &data, &spec("kek-1"), "0000").err().unwrap();
    assert!(e.contains("wrong PIN"), "{e}");
    let e = server(&conf, &data, &spec("no-such-key"), PIN)
        .err()
        .unwrap();
    assert!(e.contains("no AES key labelled \"no-such-key\""), "{e}");
    let e = server(
        &conf,
        &data,
        &spec("kek-1").replace("token=tessera", "token=other"),
        PIN,
    )
    .err()
    .unwrap();
    assert!(e.contains("no token labelled \"other\""), "{e}");
    let e = Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args([
            "server",
            "--insecure-http",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(&data)
        .args(["--kek", &spec("kek-1")])
        .env("SOFTHSM2_CONF", &conf)
        .env_remove("TESSERA_PKCS11_PIN")
        .output()
        .unwrap();
    assert_eq!(e.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&e.stderr).contains("TESSERA_PKCS11_PIN"));

    // A wallet whose server share is sealed under the HSM key.
    let srv = server(&conf, &data, &spec("kek-1"), PIN).unwrap();
    let Signer {
        id,
        device,
        share,
        _home,
    } = wallet_signs(&srv.url, "hsm-user").await;
    let root = DerivationPath::root();
    drop(srv);

    // The file key cannot open them: the server says so at start-up.
    let e = server(&conf, &data, "file", PIN).err().unwrap();
    assert!(
        e.contains("sealed under key-encryption key pkcs11:tessera/kek-1/"),
        "{e}"
    );

    // Rotation to a second HSM key re-wraps every data key; the shares sign as before.
    assert!(
        tessera(&conf, PIN, &["kek", "generate", "--kek", &spec("kek-2")])
            .status
            .success()
    );
    let out = tessera(
        &conf,
        PIN,
        &[
            "kek",
            "rotate",
            "--data-dir",
            data.to_str().unwrap(),
            "--from",
            &spec("kek-1"),
            "--to",
            &spec("kek-2"),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("re-wrapped 1 share data keys"));
    let e = server(&conf, &data, &spec("kek-1"), PIN).err().unwrap();
    assert!(e.contains("kek-2"), "{e}");
    let srv = server(&conf, &data, &spec("kek-2"), PIN).unwrap();
    let mut client = ServerClient::new(&srv.url).unwrap();
    client.login(&id, &device.device_id).await.unwrap();
    let sig = client
        .sign(&share, [2; 32], &root, |_, _| {})
        .await
        .unwrap();
    share.public_key().verify(&[2; 32], &sig).unwrap();
    drop(srv);

    // And back to a key file, the same way.
    let out = tessera(
        &conf,
        PIN,
        &[
            "kek",
            "rotate",
            "--data-dir",
            data.to_str().unwrap(),
            "--from",
            &spec("kek-2"),
            "--to",
            "file",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let srv = server(&conf, &data, "file", PIN).unwrap();
    let mut client = ServerClient::new(&srv.url).unwrap();
    client.login(&id, &device.device_id).await.unwrap();
    let sig = client
        .sign(&share, [3; 32], &root, |_, _| {})
        .await
        .unwrap();
    share.public_key().verify(&[3; 32], &sig).unwrap();
}

/// A device of [`wallet_signs`]: its identity, registration, share and home.
struct Signer {
    id: tessera_store::DeviceIdentity,
    device: tessera_api::Device,
    share: tessera_core::KeyShare,
    _home: tempfile::TempDir,
}

/// A registered device with a wallet whose server share is sealed under the server's KEK; it
/// signs a digest, checked.
async fn wallet_signs(url: &str, user: &str) -> Signer {
    let home = tempfile::tempdir().unwrap();
    let id = common::identity(home.path());
    let mut client = ServerClient::new(url).unwrap();
    let device = client.register(&id, user, "laptop").await.unwrap();
    client.login(&id, &device.device_id).await.unwrap();
    let share = client.keygen("w", |_, _| {}).await.unwrap();
    client
        .set_policy(
            &id,
            &share.wallet_id().to_string(),
            &common::allow_digests(),
        )
        .await
        .unwrap();
    let root = DerivationPath::root();
    let sig = client
        .sign(&share, [7; 32], &root, |_, _| {})
        .await
        .unwrap();
    share.public_key().verify(&[7; 32], &sig).unwrap();
    Signer {
        id,
        device,
        share,
        _home: home,
    }
}

/// `tessera server --kek KEK` whose stderr goes to a file: the process, its URL and that file.
fn server_logging(
    conf: &Path,
    dir: &Path,
    kek: &str,
    env: &[(&str, &str)],
) -> (std::process::Child, String, PathBuf) {
    let log = dir.join("server.log");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tessera"));
    cmd.args(["server", "--insecure-http", "--listen", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(dir.join("data"))
        .args(["--kek", kek])
        .env("SOFTHSM2_CONF", conf)
        .env_remove("TESSERA_DATABASE_URL")
        .env_remove("TESSERA_KEK")
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(
        !line.is_empty(),
        "the server did not start: {}",
        std::fs::read_to_string(&log).unwrap()
    );
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap()
        .to_string();
    (child, url, log)
}

/// The key named by its RFC 7512 URI (the PIN from a file the URI names, or from the
/// environment), and by the older form, which still works but says it is deprecated and which
/// URI to use instead.
#[tokio::test]
async fn hsm_keys_named_by_rfc_7512_uris_and_by_the_older_form() {
    tessera_client::tls::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let conf = token(dir.path());

    // Created through its URI, with the PIN from a file the URI names.
    let pin_file = dir.path().join("pin");
    std::fs::write(&pin_file, format!("{PIN}\n")).unwrap();
    let with_pin_file = format!("{}&pin-source=file:{}", spec("kek-1"), pin_file.display());
    let out = Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(["kek", "generate", "--kek", &with_pin_file])
        .env("SOFTHSM2_CONF", &conf)
        .env_remove("TESSERA_PKCS11_PIN")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // It names the URI to start the server with (without the PIN).
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!("--kek {}", spec("kek-1"))),
        "{stdout}"
    );

    // The server on the URI with the PIN file, and no PIN in the environment: it signs.
    let srv = Server::try_start(
        &dir.path().join("data"),
        &["--kek", &with_pin_file],
        &[
            ("SOFTHSM2_CONF", Some(conf.to_str().unwrap())),
            ("TESSERA_PKCS11_PIN", None),
        ],
    )
    .unwrap();
    let _ = wallet_signs(&srv.url, "uri-user").await;
    drop(srv);
    // A wrong PIN in the file is the token's refusal, named.
    std::fs::write(&pin_file, "0000").unwrap();
    let e = server(&conf, &dir.path().join("data"), &with_pin_file, PIN)
        .err()
        .unwrap();
    assert!(e.contains("wrong PIN"), "{e}");
    // A bad URI: the attribute is named.
    let e = server(
        &conf,
        &dir.path().join("data"),
        &spec("kek-1").replace("object=", "objet="),
        PIN,
    )
    .err()
    .unwrap();
    assert!(e.contains("unknown path attribute objet"), "{e}");

    // The older form: the same key, still working, with a note naming the URI.
    let (mut child, url, log) = server_logging(
        &conf,
        dir.path(),
        &legacy_spec("kek-1"),
        &[("TESSERA_PKCS11_PIN", PIN)],
    );
    let _ = wallet_signs(&url, "legacy-user").await;
    let _ = child.kill();
    let _ = child.wait();
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(
        log.contains("deprecated")
            && log.contains(&format!("use the RFC 7512 URI {}", spec("kek-1"))),
        "{log}"
    );
    // --print-config says so too.
    let out = tessera(
        &conf,
        PIN,
        &[
            "server",
            "--print-config",
            "--insecure-http",
            "--kek",
            &legacy_spec("kek-1"),
        ],
    );
    assert!(out.status.success());
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        printed.contains(&format!("# note: the key-encryption key form pkcs11:module=…,token=…,key=… is deprecated and will be removed: use the RFC 7512 URI {}", spec("kek-1"))),
        "{printed}"
    );
    assert!(
        printed.contains("# PKCS#11 PIN: TESSERA_PKCS11_PIN"),
        "{printed}"
    );
}

/// With the server running on an HSM key, the token goes away: `/readyz` answers 503 naming
/// the key-encryption key (its check wraps and unwraps a fresh data key through the HSM), while
/// `/healthz` still answers 200.
#[tokio::test]
async fn readiness_fails_when_the_hsm_key_goes_away() {
    tessera_client::tls::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let conf = token(dir.path());
    assert!(
        tessera(&conf, PIN, &["kek", "generate", "--kek", &spec("kek-1")])
            .status
            .success()
    );
    let srv = server(&conf, &dir.path().join("data"), &spec("kek-1"), PIN).unwrap();
    let get = |path: &str| {
        let url = format!("{}{path}", srv.url);
        async move {
            let response = reqwest::get(url).await.unwrap();
            (
                response.status().as_u16(),
                response.text().await.unwrap_or_default(),
            )
        }
    };
    let (status, body) = get("/readyz").await;
    assert_eq!(status, 200, "{body}");

    // SoftHSM2 notices that its token directory is gone on the next call: the key's handle
    // is no longer valid.
    let out = Command::new("softhsm2-util")
        .args(["--delete-token", "--token", "tessera"])
        .env("SOFTHSM2_CONF", &conf)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The probe reuses its last check of the key for up to 5 s (an HSM call per probe is what
    // a load balancer's polling would otherwise cost).
    let until = std::time::Instant::now() + std::time::Duration::from_secs(15);
    let (status, body) = loop {
        let (status, body) = get("/readyz").await;
        if status != 200 || std::time::Instant::now() > until {
            break (status, body);
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    };
    assert_eq!(status, 503, "{body}");
    let ready: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(ready["kek"]["ok"], false, "{body}");
    let error = ready["kek"]["error"].as_str().unwrap();
    // It says which check failed, not the HSM's own error (that is in the server's log).
    assert_eq!(
        error, "the key-encryption key cannot wrap and unwrap a key",
        "{body}"
    );
    assert_eq!(ready["database"]["ok"], true, "{body}");
    assert_eq!(get("/healthz").await.0, 200);
}
