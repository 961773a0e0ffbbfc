//! Two `tessera server` replicas sharing one PostgreSQL (and the data directory's key files):
//! keygen through one, sign, refresh and audit verify through the other; a replica that dies
//! mid-session has its sessions ended by the other.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use tessera_api::intent::SignKind;
use tessera_client::{ServerClient, WalletRecord};
use tessera_core::DerivationPath;

use common::{Server, fresh_postgres_database};

mod common;

#[tokio::test]
async fn two_replicas_share_one_postgresql() {
    let database = fresh_postgres_database();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut a = Server::start(&data, &["--database-url", &database]);
    let b = Server::start(&data, &["--database-url", &database]);
    assert_ne!(a.url, b.url);

    let home = tempfile::tempdir().unwrap();
    let id = common::identity(home.path());
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
    pk.verify(&tessera_api::intent::decode(&kind).unwrap().digest, &sig)
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
    let created: tessera_api::SessionCreated = http
        .post(format!("{}/refresh", a.url))
        .bearer_auth(via_a.token().unwrap())
        .json(&tessera_api::RefreshRequest {
            wallet_id: wallet.clone().into(),
            device_nonce: None,
        })
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let req = common::ws_request(&a.url, via_a.token().unwrap(), &created.session_id);
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
    pk.verify(&tessera_api::intent::decode(&kind).unwrap().digest, &sig)
        .unwrap();
}
