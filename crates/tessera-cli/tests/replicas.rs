//! Two `tessera server` replicas sharing one PostgreSQL (and the data directory's key files):
//! keygen through one, sign, refresh and audit verify through the other; a replica that dies
//! mid-session has its sessions ended by the other.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tessera_client::{ServerClient, WalletRecord};
use tessera_core::DerivationPath;
use tessera_core::intent::SignKind;
use tessera_store::{Keystore, KeystoreOptions, Passphrase};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

fn fresh_postgres_database() -> String {
    let admin = std::env::var("TESSERA_TEST_DATABASE_URL").expect(
        "the replica tests need TESSERA_TEST_DATABASE_URL: run ./scripts/test, which starts a throwaway PostgreSQL",
    );
    let name = format!(
        "tessera_replicas_{}",
        hex::encode(&tessera_core::protocols::fresh_nonce()[..8])
    );
    let out = Command::new("psql")
        .args([
            admin.as_str(),
            "-q",
            "-c",
            &format!("CREATE DATABASE {name}"),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (base, _) = admin.rsplit_once('/').unwrap();
    format!("{base}/{name}")
}

struct Replica {
    child: Child,
    url: String,
}

impl Replica {
    fn start(data: &Path, database_url: &str) -> Replica {
        let mut child = Command::new(env!("CARGO_BIN_EXE_tessera"))
            .args([
                "server",
                "--insecure-http",
                "--listen",
                "127.0.0.1:0",
                "--data-dir",
            ])
            .arg(data)
            .args(["--database-url", database_url])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let url = line
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .unwrap_or_else(|| panic!("no URL in {line:?}"))
            .to_string();
        Replica { child, url }
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.kill();
    }
}

#[tokio::test]
async fn two_replicas_share_one_postgresql() {
    let database = fresh_postgres_database();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut a = Replica::start(&data, &database);
    let b = Replica::start(&data, &database);
    assert_ne!(a.url, b.url);

    let home = tempfile::tempdir().unwrap();
    let id = Keystore::open_with(
        home.path(),
        KeystoreOptions::default().insecure_fast_kdf_for_tests(),
    )
    .unwrap()
    .create_identity(&Passphrase::new("pw".into()).unwrap())
    .unwrap();
    // Registered and keygen through A.
    let mut via_a = ServerClient::new(&a.url).unwrap();
    let device = via_a.register(&id, "replicated", "laptop").await.unwrap();
    via_a.login(&id, &device.device_id).await.unwrap();
    let share = via_a.keygen("w", |_, _| {}).await.unwrap();
    let wallet = share.wallet_id().to_string();
    let pk = share.public_key();

    // Sign, refresh and sign again through B; a token from A works on B too.
    let mut via_b = ServerClient::new(&b.url).unwrap();
    via_b.login(&id, &device.device_id).await.unwrap();
    let kind = SignKind::EthMessage {
        message: "through the other replica".into(),
    };
    let root = DerivationPath::root();
    via_b
        .sign_kind(&share, &kind, &root, |_, _| {}, |_| {})
        .await
        .unwrap();
    let mut record = WalletRecord::new(share);
    assert_eq!(via_b.refresh(&mut record, |_, _| Ok(())).await.unwrap(), 1);
    let sig = via_b
        .sign_kind(&record.current, &kind, &root, |_, _| {}, |_| {})
        .await
        .unwrap();
    pk.verify(&tessera_core::intent::decode(&kind).unwrap().digest, &sig)
        .unwrap();
    assert_eq!(via_a.pubkey(&wallet).await.unwrap().epoch, 1);

    // One audit chain, written by both, intact.
    let v = via_b.audit_verify().await.unwrap();
    assert!(v.first_bad.is_none(), "{v:?}");
    let kinds: Vec<String> = via_a
        .audit(Some(&wallet))
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.kind)
        .collect();
    for k in ["keygen.done", "sign.completed", "refresh.done"] {
        assert!(kinds.iter().any(|x| x == k), "{k} missing: {kinds:?}");
    }

    // A dies while running a refresh session: B ends that session (A's liveness lock is gone)
    // and the wallet can be refreshed again through B.
    let http = reqwest::Client::new();
    let created: tessera_core::api::SessionCreated = http
        .post(format!("{}/refresh", a.url))
        .bearer_auth(via_a.token().unwrap())
        .json(&tessera_core::api::RefreshRequest {
            wallet_id: wallet.clone(),
        })
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut req = format!(
        "{}/ws?session_id={}",
        a.url.replacen("http", "ws", 1),
        created.session_id
    )
    .into_client_request()
    .unwrap();
    req.headers_mut().insert(
        "authorization",
        format!("Bearer {}", via_a.token().unwrap())
            .parse()
            .unwrap(),
    );
    let (socket, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    a.kill();
    drop(socket);
    let started = Instant::now();
    loop {
        match via_b.refresh(&mut record, |_, _| Ok(())).await {
            Ok(epoch) => {
                assert_eq!(epoch, 2);
                break;
            }
            Err(tessera_client::ClientError::Server { status: 409, .. })
                if started.elapsed() < Duration::from_secs(30) =>
            {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => panic!("the dead replica's session was not ended: {e}"),
        }
    }
    let sig = via_b
        .sign_kind(&record.current, &kind, &root, |_, _| {}, |_| {})
        .await
        .unwrap();
    pk.verify(&tessera_core::intent::decode(&kind).unwrap().digest, &sig)
        .unwrap();
}
