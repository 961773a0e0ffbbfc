//! Concurrency against real `tessera server` processes, on SQLite and on PostgreSQL (one and two
//! replicas): no valid request fails because others run at the same time, no audit record is
//! lost, and no policy limit is exceeded by requests sent together (DESIGN.md invariant 7).
//!
//! Every test sends [`CONCURRENT`] requests at once over raw HTTP, each from its own tokio task,
//! and then counts what the server answered and what its database holds.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use tessera_api::intent::{EthTransaction, SignKind};
use tessera_api::{self as api, Policy};
use tessera_client::ServerClient;
use tessera_core::{DerivationPath, KeyShare};
use tessera_store::DeviceIdentity;

use common::{Server, fresh_postgres_database, identity};

mod common;

/// Requests sent at once.
const CONCURRENT: usize = 60;

/// A user with one device, logged in, and a wallet.
struct Owner {
    client: ServerClient,
    id: Arc<DeviceIdentity>,
    device_id: String,
    share: KeyShare,
    wallet: String,
    _home: tempfile::TempDir,
}

impl Owner {
    async fn new(server: &Server, user: &str) -> Owner {
        tessera_client::tls::install_crypto_provider();
        let home = tempfile::tempdir().unwrap();
        let id = identity(home.path());
        let mut client = ServerClient::new(&server.url).unwrap();
        let device = client.register(&id, user, "laptop").await.unwrap();
        client.login(&id, &device.device_id).await.unwrap();
        let share = client.keygen("w", |_, _| {}).await.unwrap();
        let wallet = share.wallet_id().to_string();
        Owner {
            client,
            id: Arc::new(id),
            device_id: device.device_id.into(),
            share,
            wallet,
            _home: home,
        }
    }

    fn token(&self) -> String {
        self.client.token().unwrap().to_string()
    }

    async fn policy(&self, policy: Policy) {
        self.client
            .set_policy(&self.id, &self.wallet, &policy)
            .await
            .unwrap();
    }
}

/// How the server answered one `POST /sign` (the fields are shown by failed assertions).
#[derive(Debug)]
#[allow(dead_code)]
enum Answer {
    Created(Box<api::SessionCreated>),
    Denied { rule: String },
    Other { status: u16, body: String },
}

/// Sends every request of `kinds` as `POST /sign` at once, each from its own task, spreading
/// them over `urls` (server replicas) in turn.
async fn sign_all(urls: &[&str], token: &str, wallet: &str, kinds: Vec<SignKind>) -> Vec<Answer> {
    let http = reqwest::Client::new();
    let tasks: Vec<_> = kinds
        .into_iter()
        .enumerate()
        .map(|(i, kind)| {
            let request = http
                .post(format!("{}/sign", urls[i % urls.len()]))
                .bearer_auth(token)
                .json(&api::SignIntentRequest {
                    wallet_id: wallet.into(),
                    path: "m".into(),
                    kind,
                    device_nonce: None,
                    with: vec![],
                });
            tokio::spawn(async move {
                let response = request.send().await.unwrap();
                let status = response.status().as_u16();
                let body = response.text().await.unwrap();
                match status {
                    200 => Answer::Created(serde_json::from_str(&body).unwrap()),
                    403 => match serde_json::from_str::<api::ApiError>(&body) {
                        Ok(api::ApiError {
                            rule: Some(rule), ..
                        }) => Answer::Denied { rule },
                        _ => Answer::Other { status, body },
                    },
                    _ => Answer::Other { status, body },
                }
            })
        })
        .collect();
    let mut answers = Vec::with_capacity(tasks.len());
    for task in tasks {
        answers.push(task.await.unwrap());
    }
    answers
}

fn message(i: usize) -> SignKind {
    SignKind::EthMessage {
        message: format!("concurrent request {i}"),
    }
}

/// A transfer of `value` wei that pays no fee (so that only the value counts).
fn transfer(nonce: u64, value: u64) -> SignKind {
    let tx: EthTransaction = serde_json::from_value(serde_json::json!({
        "chain_id": 1, "nonce": nonce, "max_fee_per_gas": "0", "max_priority_fee_per_gas": "0",
        "gas_limit": 21_000, "to": "0x1111111111111111111111111111111111111111",
        "value": value.to_string(), "data": "0x",
    }))
    .unwrap();
    SignKind::EthTx { tx }
}

async fn count(db: &sqlx::AnyPool, sql: &'static str) -> i64 {
    let (n,): (i64,) = sqlx::query_as(sql).fetch_one(db).await.unwrap();
    n
}

async fn count_records(db: &sqlx::AnyPool, kind: &str) -> i64 {
    let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM audit_log WHERE kind = $1")
        .bind(kind)
        .fetch_one(db)
        .await
        .unwrap();
    n
}

/// The whole chain verifies, as the server's own verifier reads it.
async fn chain_verifies(db: &sqlx::AnyPool) -> u64 {
    let v = tessera_server::audit::verify(db).await.unwrap();
    assert!(v.first_bad.is_none(), "{v:?}");
    v.records
}

/// The per-device rate limit and the caps on live sessions are raised: the tests send more than
/// their defaults from one device (each test's 60 requests leave 60 unopened sessions, then open
/// 60 more), and measure the database, not the limiter.
const BURST: [&str; 6] = [
    "--device-burst",
    "1000",
    "--max-sessions-per-device",
    "1000",
    "--max-sessions-per-wallet",
    "1000",
];

fn sqlite() -> Server {
    Server::start_fresh(&BURST)
}

fn postgres() -> Server {
    let database = fresh_postgres_database();
    Server::start_fresh(&[&["--database-url", database.as_str()][..], &BURST[..]].concat())
}

// --- Findings 12.1 and 12.2: no 500s, no lost records ---------------------------------------

/// Concurrent valid signing requests on a wallet without limits all succeed; each leaves exactly
/// one session, one request row and one `sign.requested` record (no orphaned session); and then
/// as many complete signatures at once all verify and are all recorded.
async fn concurrent_signing_requests_all_succeed(server: Server) {
    let o = Owner::new(&server, "signer").await;
    let kinds = (0..CONCURRENT).map(message).collect();
    let answers = sign_all(&[&server.url], &o.token(), &o.wallet, kinds).await;
    let failed: Vec<_> = answers
        .iter()
        .filter(|a| !matches!(a, Answer::Created(_)))
        .collect();
    assert!(failed.is_empty(), "{failed:?}");

    let db = server.database().await;
    let n = CONCURRENT as i64;
    assert_eq!(
        count(&db, "SELECT COUNT(*) FROM sessions WHERE protocol = 'sign'").await,
        n
    );
    assert_eq!(count(&db, "SELECT COUNT(*) FROM sign_requests").await, n);
    assert_eq!(count_records(&db, "sign.requested").await, n);
    assert_eq!(
        count(
            &db,
            "SELECT COUNT(*) FROM sessions s WHERE s.protocol = 'sign' AND NOT EXISTS \
             (SELECT 1 FROM sign_requests r WHERE r.session_id = s.id)"
        )
        .await,
        0,
        "orphaned signing sessions"
    );
    chain_verifies(&db).await;

    // Whole signatures at once: every one verifies and has its `sign.completed` record.
    let client = Arc::new(o.client);
    let share = Arc::new(o.share);
    let tasks: Vec<_> = (0..CONCURRENT)
        .map(|i| {
            let (client, share) = (client.clone(), share.clone());
            tokio::spawn(async move {
                let kind = message(1000 + i);
                let sig = client
                    .sign_kind(&share, &kind, &DerivationPath::root(), |_, _| {}, |_| {})
                    .await
                    .unwrap_or_else(|e| panic!("signature {i}: {e}"));
                let digest = tessera_api::intent::decode(&kind).unwrap().digest;
                share.public_key().verify(&digest, &sig).unwrap();
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(count_records(&db, "sign.completed").await, n);
    assert_eq!(
        count(
            &db,
            "SELECT COUNT(*) FROM sessions WHERE protocol = 'sign' AND status = 'done'"
        )
        .await,
        n
    );
    chain_verifies(&db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_signing_requests_all_succeed_on_sqlite() {
    concurrent_signing_requests_all_succeed(sqlite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_signing_requests_all_succeed_on_postgres() {
    concurrent_signing_requests_all_succeed(postgres()).await;
}

/// Logs in `CONCURRENT` times at once, spread over `urls`; every login succeeds.
async fn login_all(urls: &[&str], id: &Arc<DeviceIdentity>, device_id: &str) {
    let tasks: Vec<_> = (0..CONCURRENT)
        .map(|i| {
            let url = urls[i % urls.len()].to_string();
            let (id, device_id) = (id.clone(), device_id.to_string());
            tokio::spawn(async move {
                let mut client = ServerClient::new(&url).unwrap();
                client
                    .login(&id, &device_id)
                    .await
                    .unwrap_or_else(|e| panic!("login {i}: {e}"));
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
}

/// Concurrent logins: each one's token is issued with its `token.issued` record, none lost.
async fn concurrent_logins_are_all_audited(server: Server) {
    tessera_client::tls::install_crypto_provider();
    let home = tempfile::tempdir().unwrap();
    let id = Arc::new(identity(home.path()));
    let device = ServerClient::new(&server.url)
        .unwrap()
        .register(&id, "busy", "laptop")
        .await
        .unwrap();
    login_all(&[&server.url], &id, &device.device_id).await;
    let db = server.database().await;
    assert_eq!(count_records(&db, "token.issued").await, CONCURRENT as i64);
    // The registration and the logins.
    assert_eq!(chain_verifies(&db).await, CONCURRENT as u64 + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_logins_are_all_audited_on_sqlite() {
    concurrent_logins_are_all_audited(sqlite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_logins_are_all_audited_on_postgres() {
    concurrent_logins_are_all_audited(postgres()).await;
}

// --- Finding 11.4: limits hold under concurrency ---------------------------------------------

/// Sends `kinds` at once against `policy`: exactly one is accepted, every other one is denied by
/// `rule`, and each denial is audited.
async fn exactly_one_accepted(
    servers: &[&Server],
    o: &Owner,
    policy: Policy,
    kinds: Vec<SignKind>,
    rule: &str,
) {
    o.policy(policy).await;
    let urls: Vec<&str> = servers.iter().map(|s| s.url.as_str()).collect();
    let sent = kinds.len();
    let answers = sign_all(&urls, &o.token(), &o.wallet, kinds).await;
    let accepted = answers
        .iter()
        .filter(|a| matches!(a, Answer::Created(_)))
        .count();
    let denied = answers
        .iter()
        .filter(|a| matches!(a, Answer::Denied { rule: r } if r == rule))
        .count();
    assert_eq!(accepted, 1, "{answers:?}");
    assert_eq!(denied, sent - 1, "{answers:?}");

    let db = servers[0].database().await;
    assert_eq!(count(&db, "SELECT COUNT(*) FROM sign_requests").await, 1);
    assert_eq!(count_records(&db, "sign.requested").await, 1);
    let denials: Vec<(String,)> =
        sqlx::query_as("SELECT detail FROM audit_log WHERE kind = 'sign.denied'")
            .fetch_all(&db)
            .await
            .unwrap();
    assert_eq!(denials.len(), sent - 1);
    for (detail,) in &denials {
        assert!(detail.contains(&format!("\"rule\":\"{rule}\"")), "{detail}");
    }
    chain_verifies(&db).await;
}

async fn one_signature_per_hour_holds(server: Server) {
    let o = Owner::new(&server, "hourly").await;
    let policy = Policy {
        max_signatures_per_hour: Some(1),
        ..Policy::default()
    };
    let kinds = (0..CONCURRENT).map(message).collect();
    exactly_one_accepted(&[&server], &o, policy, kinds, "max_signatures_per_hour").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_signature_per_hour_holds_under_concurrency_on_sqlite() {
    one_signature_per_hour_holds(sqlite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_signature_per_hour_holds_under_concurrency_on_postgres() {
    one_signature_per_hour_holds(postgres()).await;
}

async fn daily_value_holds(server: Server) {
    let o = Owner::new(&server, "daily").await;
    let policy = Policy {
        max_value_per_24h: Some("1000".into()),
        ..Policy::default()
    };
    let kinds = (0..CONCURRENT as u64).map(|n| transfer(n, 1000)).collect();
    exactly_one_accepted(&[&server], &o, policy, kinds, "max_value_per_24h").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn daily_value_limit_holds_under_concurrency_on_sqlite() {
    daily_value_holds(sqlite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn daily_value_limit_holds_under_concurrency_on_postgres() {
    daily_value_holds(postgres()).await;
}

// --- Two replicas on one PostgreSQL ----------------------------------------------------------

/// Two replicas append to one audit chain at the same time (logins through both) and enforce
/// one limit together (signing requests through both).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_keep_one_chain_and_one_limit() {
    let database = fresh_postgres_database();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let args = [&["--database-url", database.as_str()][..], &BURST[..]].concat();
    let a = Server::start(&data, &args);
    let b = Server::start(&data, &args);

    let o = Owner::new(&a, "replicated").await;
    let db = a.database().await;
    let before = count_records(&db, "token.issued").await;
    login_all(&[&a.url, &b.url], &o.id, &o.device_id).await;
    assert_eq!(
        count_records(&db, "token.issued").await,
        before + CONCURRENT as i64
    );
    chain_verifies(&db).await;

    let policy = Policy {
        max_signatures_per_hour: Some(1),
        ..Policy::default()
    };
    let kinds = (0..CONCURRENT).map(message).collect();
    exactly_one_accepted(&[&a, &b], &o, policy, kinds, "max_signatures_per_hour").await;
}
