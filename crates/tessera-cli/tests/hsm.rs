//! The server's key-encryption key in an HSM: SoftHSM2 (installed by `scripts/test`), a token
//! initialised per test, real `tessera` processes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

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

fn spec(key: &str) -> String {
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
    let home = tempfile::tempdir().unwrap();
    let id = common::identity(home.path());
    let srv = server(&conf, &data, &spec("kek-1"), PIN).unwrap();
    let mut client = ServerClient::new(&srv.url).unwrap();
    let device = client.register(&id, "hsm-user", "laptop").await.unwrap();
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
        .sign(&share, [1; 32], &root, |_, _| {})
        .await
        .unwrap();
    share.public_key().verify(&[1; 32], &sig).unwrap();
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
