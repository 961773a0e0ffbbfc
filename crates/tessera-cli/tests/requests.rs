//! Durable signing requests against real `tessera server` processes, on SQLite and on
//! PostgreSQL (issue 16): approval quorums (`and(cfo, threshold(2, ops-1, ops-2, ops-3))`, every
//! subset of approvals), bad approvals (non-approvers, revoked devices, replayed signatures,
//! other summaries, expired requests) that change nothing, expiry, the policy's limits under
//! concurrent creations and approvals, and the opening of a ready request's session.
//!
//! The endpoints are called over raw HTTP with the devices' bearer tokens and identity keys, so
//! that every status the server answers is seen.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use tessera_api::requests::{ApprovalRule, Approver, RequestInfo, request_decision_message};
use tessera_api::{DeviceId, Policy, RequestState};
use tessera_client::ServerClient;
use tessera_store::DeviceIdentity;

use common::{Backend, Server, identity};

mod common;

/// A user's devices: 0 made the wallet (and requests), the others approve.
struct Team {
    url: String,
    clients: Vec<ServerClient>,
    ids: Vec<DeviceIdentity>,
    devices: Vec<String>,
    wallet: String,
    http: reqwest::Client,
    _homes: Vec<tempfile::TempDir>,
}

impl Team {
    /// A user with `n` active devices (device 0 registered first and approving the others)
    /// and a 2-of-2 wallet of device 0.
    async fn new(server: &Server, user: &str, n: usize) -> Team {
        tessera_client::tls::install_crypto_provider();
        let mut homes = Vec::new();
        let mut ids = Vec::new();
        let mut clients = Vec::new();
        let mut devices = Vec::new();
        for i in 0..n {
            let home = tempfile::tempdir().unwrap();
            let id = identity(home.path());
            let mut client = ServerClient::new(&server.url).unwrap();
            let device = client
                .register(&id, user, &format!("device{i}"))
                .await
                .unwrap();
            if i > 0 {
                let first: &ServerClient = &clients[0];
                first
                    .approve(&ids[0], &tessera_api::approval_code(&id.public_key()))
                    .await
                    .unwrap();
            }
            client.login(&id, &device.device_id).await.unwrap();
            homes.push(home);
            ids.push(id);
            clients.push(client);
            devices.push(device.device_id.to_string());
        }
        let share = clients[0].keygen("w", |_, _| {}).await.unwrap();
        Team {
            url: server.url.clone(),
            clients,
            ids,
            devices,
            wallet: share.wallet_id().to_string(),
            http: reqwest::Client::new(),
            _homes: homes,
        }
    }

    fn token(&self, i: usize) -> String {
        self.clients[i].token().unwrap().to_string()
    }

    async fn policy(&self, policy: Policy) {
        self.clients[0]
            .set_policy(&self.ids[0], &self.wallet, &policy)
            .await
            .unwrap();
    }

    /// A rule whose labels name devices: `labels[k]` is device `k + 1`'s.
    fn rule(&self, structure: &str, labels: &[(&str, usize)]) -> ApprovalRule {
        ApprovalRule {
            structure: structure.into(),
            approvers: labels
                .iter()
                .map(|(l, d)| {
                    (
                        (*l).to_string(),
                        Approver::Device(DeviceId::new(self.devices[*d].clone())),
                    )
                })
                .collect::<BTreeMap<_, _>>(),
        }
    }

    /// `POST /requests` by device `by`: status and body.
    async fn create(&self, by: usize, message: &str, expires: Option<u64>) -> (u16, String) {
        let mut body = serde_json::json!({
            "wallet_id": self.wallet, "path": "m", "kind": "eth-message", "message": message,
        });
        if let Some(e) = expires {
            body["expires_in_secs"] = e.into();
        }
        self.post(by, "/requests", &body).await
    }

    async fn created(&self, message: &str) -> RequestInfo {
        let (status, body) = self.create(0, message, None).await;
        assert_eq!(status, 201, "{body}");
        serde_json::from_str(&body).unwrap()
    }

    async fn post(&self, by: usize, path: &str, body: &serde_json::Value) -> (u16, String) {
        let response = self
            .http
            .post(format!("{}{path}", self.url))
            .bearer_auth(self.token(by))
            .json(body)
            .send()
            .await
            .unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    }

    async fn get(&self, by: usize, id: &str) -> RequestInfo {
        let response = self
            .http
            .get(format!("{}/requests/{id}", self.url))
            .bearer_auth(self.token(by))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 200);
        response.json().await.unwrap()
    }

    /// Device `by`'s decision on `r`, signed by `signer`'s identity over what `signed` says
    /// (normally `r` itself), showing `summary`.
    async fn decide_as(
        &self,
        by: usize,
        r: &RequestInfo,
        approve: bool,
        summary: &str,
        signature: String,
    ) -> (u16, String) {
        let verb = if approve { "approve" } else { "refuse" };
        self.post(
            by,
            &format!("/requests/{}/{verb}", r.id),
            &serde_json::json!({ "summary": summary, "signature": signature }),
        )
        .await
    }

    fn signature(&self, by: usize, r: &RequestInfo, approve: bool) -> String {
        hex::encode(self.ids[by].sign(&request_decision_message(
            &r.id, &r.digest, &r.summary, approve,
        )))
    }

    async fn decide(&self, by: usize, r: &RequestInfo, approve: bool) -> (u16, String) {
        let signature = self.signature(by, r, approve);
        self.decide_as(by, r, approve, &r.summary, signature).await
    }
}

/// `and(cfo, threshold(2, ops-1, ops-2, ops-3))` over devices 1 (cfo) and 2, 3, 4 (ops).
fn quorum(team: &Team) -> ApprovalRule {
    team.rule(
        "and(cfo, threshold(2, ops-1, ops-2, ops-3))",
        &[("cfo", 1), ("ops-1", 2), ("ops-2", 3), ("ops-3", 4)],
    )
}

async fn quorum_decides(backend: Backend) {
    let server = common::start(backend);
    let team = Team::new(&server, "quorum", 5).await;
    team.policy(Policy {
        approvals: Some(quorum(&team)),
        ..Policy::default()
    })
    .await;
    // POST /sign is refused: the quorum applies to requests only.
    let (status, body) = team
        .post(
            0,
            "/sign",
            &serde_json::json!({"wallet_id": team.wallet, "path": "m", "kind": "eth-message", "message": "direct"}),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("approval quorum"), "{body}");

    for cfo in [true, false] {
        for mask in 0u32..8 {
            let r = team.created(&format!("cfo {cfo} ops {mask}")).await;
            assert_eq!(r.state, RequestState::AwaitingApproval);
            let mut decided = 0;
            let mut ops = 0;
            let steps: Vec<usize> = cfo
                .then_some(1)
                .into_iter()
                .chain((0..3).filter(|i| mask & (1 << i) != 0).map(|i| i + 2))
                .collect();
            for device in steps {
                let before = team.get(0, &r.id).await;
                let (status, body) = team.decide(device, &r, true).await;
                if before.state == RequestState::Ready {
                    // Once ready, a late approval finds it no longer waiting.
                    assert_eq!(status, 409, "{body}");
                    assert!(body.contains("ready"), "{body}");
                    continue;
                }
                assert_eq!(status, 200, "{body}");
                decided += 1;
                if device >= 2 {
                    ops += 1;
                }
                let now: RequestInfo = serde_json::from_str(&body).unwrap();
                let expected = if cfo && ops >= 2 {
                    RequestState::Ready
                } else {
                    RequestState::AwaitingApproval
                };
                assert_eq!(
                    now.state, expected,
                    "cfo {cfo}, ops mask {mask}, after {decided}"
                );
                assert_eq!(now.decisions.len(), decided);
            }
            let end = team.get(0, &r.id).await;
            let authorised = cfo && mask.count_ones() >= 2;
            assert_eq!(
                end.state == RequestState::Ready,
                authorised,
                "cfo {cfo}, ops mask {mask}: {end:?}"
            );
        }
    }

    // The cfo's refusal refuses, whatever the ops approved.
    let r = team.created("refused by cfo").await;
    for ops in [2, 3] {
        assert_eq!(team.decide(ops, &r, true).await.0, 200);
    }
    let (status, body) = team.decide(1, &r, false).await;
    assert_eq!(status, 200, "{body}");
    let refused: RequestInfo = serde_json::from_str(&body).unwrap();
    assert_eq!(refused.state, RequestState::Refused);
    assert!(refused.detail.unwrap().contains("cfo"));
    // Two ops refusing leave no authorised set either.
    let r = team.created("refused by two ops").await;
    assert_eq!(team.decide(1, &r, true).await.0, 200);
    assert_eq!(team.decide(2, &r, false).await.0, 200);
    assert_eq!(
        team.get(0, &r.id).await.state,
        RequestState::AwaitingApproval
    );
    assert_eq!(team.decide(3, &r, false).await.0, 200);
    assert_eq!(team.get(0, &r.id).await.state, RequestState::Refused);

    let verification = team.clients[0].audit_verify().await.unwrap();
    assert!(verification.first_bad.is_none(), "{verification:?}");
}

#[tokio::test]
async fn a_quorum_decides_on_sqlite() {
    quorum_decides(Backend::Sqlite).await;
}

#[tokio::test]
async fn a_quorum_decides_on_postgres() {
    quorum_decides(Backend::Postgres).await;
}

async fn bad_decisions_change_nothing(backend: Backend) {
    let server = common::start(backend);
    // 0 requests, 1 cfo, 2-4 ops, 5 an outsider.
    let team = Team::new(&server, "bad", 6).await;
    team.policy(Policy {
        approvals: Some(quorum(&team)),
        ..Policy::default()
    })
    .await;
    let r = team.created("a request").await;
    let other = team.created("another request").await;
    assert_eq!(team.decide(2, &r, true).await.0, 200);
    let before = team.get(0, &r.id).await;
    let unchanged = |label: &str, after: &RequestInfo| {
        assert_eq!(after.state, before.state, "{label}");
        assert_eq!(after.decisions, before.decisions, "{label}");
    };

    // Not an approver.
    let (status, body) = team.decide(5, &r, true).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("not an approver"), "{body}");
    unchanged("outsider", &team.get(0, &r.id).await);
    // The requester itself.
    let (status, body) = team.decide(0, &r, true).await;
    assert_eq!(status, 403, "{body}");
    unchanged("requester", &team.get(0, &r.id).await);
    // The same approver twice.
    let (status, body) = team.decide(2, &r, true).await;
    assert_eq!(status, 409, "{body}");
    unchanged("twice", &team.get(0, &r.id).await);
    // Another summary than the request's.
    let forged = format!("{} (to a friend)", r.summary);
    let signature =
        hex::encode(team.ids[3].sign(&request_decision_message(&r.id, &r.digest, &forged, true)));
    let (status, body) = team.decide_as(3, &r, true, &forged, signature).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("summary"), "{body}");
    unchanged("summary", &team.get(0, &r.id).await);
    // A signature of another request, replayed.
    let replayed = team.signature(3, &other, true);
    let (status, body) = team.decide_as(3, &r, true, &r.summary, replayed).await;
    assert!(
        (400..500).contains(&status) && status != 404,
        "{status} {body}"
    );
    unchanged("replayed", &team.get(0, &r.id).await);
    // A refusal's signature does not approve.
    let refusal = team.signature(3, &r, false);
    let (status, body) = team.decide_as(3, &r, true, &r.summary, refusal).await;
    assert!((400..500).contains(&status), "{status} {body}");
    unchanged("refusal as approval", &team.get(0, &r.id).await);
    // Malformed ids are unknown.
    let (status, _) = team
        .post(
            1,
            "/requests/not-an-id/approve",
            &serde_json::json!({"summary": "", "signature": ""}),
        )
        .await;
    assert_eq!(status, 404);
    // A revoked device.
    team.clients[0].revoke(&team.devices[4]).await.unwrap();
    let (status, body) = team.decide(4, &r, true).await;
    assert_eq!(status, 401, "{body}");
    unchanged("revoked", &team.get(0, &r.id).await);
    // An outsider of another user sees nothing.
    let stranger = Team::new(&server, "stranger", 1).await;
    let response = stranger
        .http
        .get(format!("{}/requests/{}", stranger.url, r.id))
        .bearer_auth(stranger.token(0))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 404);

    // Bad creations.
    let (status, body) = team.create(0, "forever", Some(0)).await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = team.create(0, "forever", Some(7 * 86_400 + 1)).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("expires_in_secs"), "{body}");
    let (status, body) = team
        .post(0, "/requests", &serde_json::json!({"wallet_id": "00".repeat(16), "path": "m", "kind": "eth-message", "message": "x"}))
        .await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = team
        .post(0, "/requests", &serde_json::json!({"wallet_id": team.wallet, "path": "m/0'", "kind": "eth-message", "message": "x"}))
        .await;
    assert_eq!(status, 400, "{body}");

    // Expiry: read as expired, then refused with 410, and recorded.
    let (status, body) = team.create(0, "short-lived", Some(2)).await;
    assert_eq!(status, 201, "{body}");
    let short: RequestInfo = serde_json::from_str(&body).unwrap();
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    assert_eq!(team.get(1, &short.id).await.state, RequestState::Expired);
    let (status, body) = team.decide(1, &short, true).await;
    assert_eq!(status, 410, "{body}");
    let after = team.get(0, &short.id).await;
    assert_eq!(after.state, RequestState::Expired);
    assert!(after.decisions.is_empty());

    // The list: newest first, filtered by state.
    let response = team
        .http
        .get(format!("{}/requests?state=expired", team.url))
        .bearer_auth(team.token(1))
        .send()
        .await
        .unwrap();
    let expired: Vec<RequestInfo> = response.json().await.unwrap();
    assert_eq!(
        expired.iter().map(|r| r.id.to_string()).collect::<Vec<_>>(),
        [short.id.to_string()]
    );
    let response = team
        .http
        .get(format!("{}/requests?state=awaiting_approval", team.url))
        .bearer_auth(team.token(2))
        .send()
        .await
        .unwrap();
    let waiting: Vec<RequestInfo> = response.json().await.unwrap();
    // Both made in the same second, maybe: newest first is to the second.
    let mut ids: Vec<String> = waiting.iter().map(|r| r.id.to_string()).collect();
    ids.sort();
    let mut expected = vec![other.id.to_string(), r.id.to_string()];
    expected.sort();
    assert_eq!(ids, expected);

    let verification = team.clients[0].audit_verify().await.unwrap();
    assert!(verification.first_bad.is_none(), "{verification:?}");
}

#[tokio::test]
async fn bad_decisions_change_nothing_on_sqlite() {
    bad_decisions_change_nothing(Backend::Sqlite).await;
}

#[tokio::test]
async fn bad_decisions_change_nothing_on_postgres() {
    bad_decisions_change_nothing(Backend::Postgres).await;
}

/// A request counts toward the limits from its creation; refused, it no longer does.
#[tokio::test]
async fn requests_count_toward_the_limits_until_refused() {
    let server = Server::start_fresh(&[]);
    let team = Team::new(&server, "limits", 2).await;
    team.policy(Policy {
        approvals: Some(team.rule("cfo", &[("cfo", 1)])),
        max_signatures_per_hour: Some(1),
        ..Policy::default()
    })
    .await;
    let first = team.created("first").await;
    let (status, body) = team.create(0, "second", None).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("max_signatures_per_hour"), "{body}");
    assert_eq!(team.decide(1, &first, false).await.0, 200);
    assert_eq!(team.get(0, &first.id).await.state, RequestState::Refused);
    team.created("second").await;
}

/// A ready request's session is opened by a device able to sign it, once at a time.
#[tokio::test]
async fn a_ready_request_opens_a_session() {
    let server = Server::start_fresh(&[]);
    let team = Team::new(&server, "session", 2).await;
    // `require_approval`: one of the owner's other devices approves.
    team.policy(Policy {
        require_approval: true,
        ..Policy::default()
    })
    .await;
    let r = team.created("rent").await;
    assert_eq!(r.state, RequestState::AwaitingApproval);
    assert_eq!(r.approval_rule.as_deref(), Some("device-1"));
    let (status, body) = team
        .post(
            0,
            &format!("/requests/{}/session", r.id),
            &serde_json::json!({}),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("awaiting_approval"), "{body}");
    assert_eq!(team.decide(1, &r, true).await.0, 200);
    let (status, body) = team
        .post(
            0,
            &format!("/requests/{}/session", r.id),
            &serde_json::json!({"device_nonce": "00".repeat(31)}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = team
        .post(
            0,
            &format!("/requests/{}/session", r.id),
            &serde_json::json!({}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let created: tessera_api::SessionCreated = serde_json::from_str(&body).unwrap();
    let now = team.get(0, &r.id).await;
    assert_eq!(now.state, RequestState::Signing);
    assert_eq!(now.session_id.as_deref(), Some(created.session_id.as_str()));
    // One session at a time.
    let (status, body) = team
        .post(
            0,
            &format!("/requests/{}/session", r.id),
            &serde_json::json!({}),
        )
        .await;
    assert_eq!(status, 409, "{body}");
}

/// Concurrent creations and approvals against one wallet with a per-hour limit: no 500, the
/// limit holds, every state change audited.
async fn concurrent(backend: Backend) {
    const LIMIT: usize = 20;
    let server = common::start(backend);
    let team = std::sync::Arc::new(Team::new(&server, "busy", 4).await);
    team.policy(Policy {
        approvals: Some(team.rule("threshold(2, a, b, c)", &[("a", 1), ("b", 2), ("c", 3)])),
        max_signatures_per_hour: Some(LIMIT as u32),
        ..Policy::default()
    })
    .await;
    let mut first = Vec::new();
    for i in 0..5 {
        first.push(team.created(&format!("first {i}")).await);
    }
    let mut tasks = Vec::new();
    for i in 0..35 {
        let team = team.clone();
        tasks.push(tokio::spawn(async move {
            (
                "create",
                team.create(0, &format!("concurrent {i}"), None).await,
            )
        }));
    }
    for r in &first {
        for approver in 1..=3 {
            let (team, r) = (team.clone(), r.clone());
            tasks.push(tokio::spawn(async move {
                ("approve", team.decide(approver, &r, true).await)
            }));
        }
    }
    let (mut created, mut approved) = (0, 0);
    for task in tasks {
        let (what, (status, body)) = task.await.unwrap();
        match (what, status) {
            ("create", 201) => created += 1,
            ("create", 403) => assert!(body.contains("max_signatures_per_hour"), "{body}"),
            ("approve", 200) => approved += 1,
            ("approve", 409) => assert!(body.contains("ready"), "{body}"),
            _ => panic!("{what}: {status} {body}"),
        }
    }
    assert_eq!(created + first.len(), LIMIT, "the limit holds exactly");
    // Each request took two approvals to be ready, the third found it ready (or came second).
    for r in &first {
        let now = team.get(0, &r.id).await;
        assert_eq!(now.state, RequestState::Ready);
        assert!((2..=3).contains(&now.decisions.len()));
    }
    let verification = team.clients[0].audit_verify().await.unwrap();
    assert!(verification.first_bad.is_none(), "{verification:?}");
    let db = server.database().await;
    let count = |kind: &'static str| {
        let db = db.clone();
        async move {
            let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM audit_log WHERE kind = $1")
                .bind(kind)
                .fetch_one(&db)
                .await
                .unwrap();
            n as usize
        }
    };
    assert_eq!(count("request.created").await, LIMIT);
    assert_eq!(count("request.approved").await, approved);
    assert_eq!(count("request.ready").await, first.len());
    let (rows,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM requests")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(rows as usize, LIMIT);
}

#[tokio::test]
async fn concurrent_creations_and_approvals_on_sqlite() {
    concurrent(Backend::Sqlite).await;
}

#[tokio::test]
async fn concurrent_creations_and_approvals_on_postgres() {
    concurrent(Backend::Postgres).await;
}

mod end_to_end {
    use std::path::Path;
    use std::time::Duration;

    use futures_util::StreamExt;
    use tessera_api::intent::SignKind;
    use tessera_api::{EventKind, Policy, RequestState};
    use tessera_client::device::{Device, Online, ServerAddress};
    use tessera_store::{KeystoreOptions, Passphrase};

    use super::common::Server;

    fn passphrase() -> Passphrase {
        Passphrase::new("device pw".into()).unwrap()
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
        let device = Device::open_dir(dir)
            .with_keystore_options(KeystoreOptions::default().insecure_fast_kdf_for_tests());
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

    async fn next_event(
        events: &mut tessera_client::device::requests::EventStream<'_>,
    ) -> tessera_api::requests::DeviceEvent {
        tokio::time::timeout(Duration::from_secs(10), events.next())
            .await
            .expect("an event within 10 s")
            .unwrap()
    }

    /// A device registered as pending is told on the event streams of the user's active
    /// devices, with the code that approves it; another user's device is told nothing.
    #[tokio::test]
    async fn a_pending_device_is_told_to_the_users_devices() {
        tessera_client::tls::install_crypto_provider();
        let server = Server::start_fresh(&[]);
        let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
        let laptop = online(&server, dirs[0].path(), "told", "laptop", None).await;
        let stranger = online(&server, dirs[1].path(), "other", "laptop", None).await;
        let mut laptop_events = laptop.events(0);
        let mut stranger_events = stranger.events(0);
        let address = ServerAddress {
            url: server.url.clone(),
            fingerprint: None,
        };
        let phone = Device::open_dir(dirs[2].path())
            .with_keystore_options(KeystoreOptions::default().insecure_fast_kdf_for_tests());
        let registered = phone
            .init(
                &address.client().unwrap(),
                &passphrase(),
                &address,
                "told",
                "phone",
            )
            .await
            .unwrap();
        let code = registered.approval_code.expect("a pending device");
        let told = next_event(&mut laptop_events).await;
        assert_eq!(told.kind, EventKind::DevicePending);
        assert!(told.summary.contains(&code), "{}", told.summary);
        assert!(told.summary.contains("phone"), "{}", told.summary);
        assert!(told.device_id.is_some());
        let nothing =
            tokio::time::timeout(Duration::from_millis(1500), stranger_events.next()).await;
        assert!(
            nothing.is_err(),
            "another user's device was told: {nothing:?}"
        );
    }

    /// A request waits for the phone's approval (told on the phone's event stream), is then
    /// ready (told to the laptop), is signed through its session, and its signature verifies;
    /// a revoked device's stream is closed.
    #[tokio::test]
    async fn a_request_is_approved_signed_and_told() {
        tessera_client::tls::install_crypto_provider();
        let server = Server::start_fresh(&[]);
        let (h1, h2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let laptop = online(&server, h1.path(), "e2e", "laptop", None).await;
        let phone = online(&server, h2.path(), "e2e", "phone", Some(&laptop)).await;
        laptop.keygen("w", |_, _| {}).await.unwrap();
        laptop
            .set_policy(
                "w",
                &Policy {
                    require_approval: true,
                    ..Policy::default()
                },
            )
            .await
            .unwrap();
        let mut phone_events = phone.events(0);
        let mut laptop_events = laptop.events(0);
        let kind = SignKind::EthMessage {
            message: "pay the rent".into(),
        };
        let info = laptop
            .create_request("w", &"m".parse().unwrap(), &kind, None)
            .await
            .unwrap();
        assert_eq!(info.state, RequestState::AwaitingApproval);
        let told = next_event(&mut phone_events).await;
        assert_eq!(told.kind, EventKind::ApprovalNeeded);
        assert_eq!(told.request_id.as_deref(), Some(info.id.as_str()));
        let approved = phone.decide_request(&info.id, true).await.unwrap();
        assert_eq!(approved.state, RequestState::Ready);
        let ready = loop {
            let e = next_event(&mut laptop_events).await;
            if e.kind == EventKind::ReadyToSign {
                break e;
            }
        };
        assert_eq!(ready.request_id.as_deref(), Some(info.id.as_str()));

        let signed = laptop.sign_request(&info.id, &[], |_, _| {}).await.unwrap();
        let done = laptop.request(&info.id).await.unwrap();
        assert_eq!(done.state, RequestState::Signed, "{done:?}");
        assert!(done.session_id.is_some());
        let checked = laptop.request_signature(&done).await.unwrap().unwrap();
        assert_eq!(checked.signature, signed.signature);
        let ended = loop {
            let e = next_event(&mut laptop_events).await;
            if e.kind == EventKind::RequestEnded {
                break e;
            }
        };
        assert_eq!(ended.request_id.as_deref(), Some(info.id.as_str()));
        // Signed, it cannot be signed again.
        assert!(laptop.sign_request(&info.id, &[], |_, _| {}).await.is_err());
        let verification = laptop.audit_verify().await.unwrap();
        assert!(verification.first_bad.is_none());
        let records = laptop.audit(None).await.unwrap();
        for kind in [
            "request.created",
            "request.approved",
            "request.ready",
            "request.signing",
            "request.signed",
        ] {
            assert_eq!(
                records.iter().filter(|r| r.kind == kind).count(),
                1,
                "{kind}"
            );
        }

        // The phone's stream, opened raw, is closed once the phone is revoked.
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let mut req = format!("{}/events?after=0", server.url.replacen("http", "ws", 1))
            .into_client_request()
            .unwrap();
        req.headers_mut().insert(
            "authorization",
            format!("Bearer {}", phone.client().token().unwrap())
                .parse()
                .unwrap(),
        );
        let (mut socket, _) = tokio_tungstenite::connect_async(req).await.unwrap();
        drop(phone_events);
        let phone_id = laptop
            .devices()
            .await
            .unwrap()
            .into_iter()
            .find(|d| d.name == "phone")
            .unwrap()
            .device_id;
        laptop.revoke_device(&phone_id, false).await.unwrap();
        let close = tokio::time::timeout(Duration::from_secs(5), async {
            while let Some(frame) = socket.next().await {
                if let Ok(tokio_tungstenite::tungstenite::Message::Close(Some(frame))) = frame {
                    return frame;
                }
            }
            panic!("the stream ended without a close frame");
        })
        .await
        .expect("closed within 5 s");
        assert_eq!(u16::from(close.code), 4401);
    }

    /// A structure wallet's request is told ready to its device parties; a party opens its
    /// session (the server picking the co-signers as for `POST /sign`) and it is signed.
    #[tokio::test]
    async fn a_structure_wallets_request_is_signed_by_a_party() {
        tessera_client::tls::install_crypto_provider();
        let server = Server::start_fresh(&[]);
        let (h1, h2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let phone = online(&server, h1.path(), "s", "phone", None).await;
        let laptop = online(&server, h2.path(), "s", "laptop", Some(&phone)).await;
        let (made, joined) = tokio::join!(
            phone.keygen_structure("vault", "and(server, or(phone, laptop))", |_, _| {}),
            async {
                for _ in 0..20 {
                    let sessions = laptop.joinable_wait(Duration::from_secs(5)).await.unwrap();
                    if let Some(session) = sessions.into_iter().next() {
                        return laptop.join(&session, |_, _| {}).await;
                    }
                }
                panic!("no key generation to join");
            }
        );
        made.unwrap();
        joined.unwrap();
        let mut laptop_events = laptop.events(0);
        let info = phone
            .create_request(
                "vault",
                &"m".parse().unwrap(),
                &SignKind::EthMessage {
                    message: "from the vault".into(),
                },
                None,
            )
            .await
            .unwrap();
        assert_eq!(info.state, RequestState::Ready);
        let told = next_event(&mut laptop_events).await;
        assert_eq!(told.kind, EventKind::ReadyToSign);
        assert_eq!(told.request_id.as_deref(), Some(info.id.as_str()));
        let signed = laptop.sign_request(&info.id, &[], |_, _| {}).await.unwrap();
        let done = phone.request(&info.id).await.unwrap();
        assert_eq!(done.state, RequestState::Signed, "{done:?}");
        let checked = phone.request_signature(&done).await.unwrap().unwrap();
        assert_eq!(checked.signature, signed.signature);

        // A third device approved now joins the wallet by a resharing: the user's active
        // devices are told, with the wallet.
        let mut phone_events = phone.events(0);
        let h3 = tempfile::tempdir().unwrap();
        let _tablet = online(&server, h3.path(), "s", "tablet", Some(&phone)).await;
        let join = loop {
            let e = next_event(&mut phone_events).await;
            if e.kind == EventKind::ReshareJoin {
                break e;
            }
        };
        assert_eq!(join.wallet_id.as_deref(), Some(info.wallet_id.as_str()));
        assert!(join.summary.contains("tablet"), "{}", join.summary);
        let told = loop {
            let e = next_event(&mut laptop_events).await;
            if e.kind == EventKind::ReshareJoin {
                break e;
            }
        };
        assert_eq!(told.device_id, join.device_id);
    }
}

/// A session created for a request but never opened: once the idle timeout passed, another is
/// opened for it, up to three; then the request fails.
#[tokio::test]
async fn a_request_whose_sessions_lapse_fails_after_three() {
    let server = Server::start_fresh(&["--session-idle-timeout", "1"]);
    let team = Team::new(&server, "lapse", 1).await;
    let r = team.created("lapsing").await;
    assert_eq!(r.state, RequestState::Ready);
    let path = format!("/requests/{}/session", r.id);
    let empty = serde_json::json!({});
    let mut sessions = Vec::new();
    for attempt in 1..=3 {
        let (status, body) = team.post(0, &path, &empty).await;
        assert_eq!(status, 200, "attempt {attempt}: {body}");
        let created: tessera_api::SessionCreated = serde_json::from_str(&body).unwrap();
        sessions.push(created.session_id.to_string());
        // While it may still be opened, no other.
        let (status, body) = team.post(0, &path, &empty).await;
        assert_eq!(status, 409, "{body}");
        tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    }
    sessions.dedup();
    assert_eq!(sessions.len(), 3);
    let (status, body) = team.post(0, &path, &empty).await;
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("failed"), "{body}");
    let end = team.get(0, &r.id).await;
    assert_eq!(end.state, RequestState::Failed);
    let (status, _) = team.post(0, &path, &empty).await;
    assert_eq!(status, 409);
}

/// The housekeeping sweep writes expired requests (audited, told to their creator), and they no
/// longer count toward the limits.
#[tokio::test]
async fn the_sweep_expires_waiting_requests() {
    let server = Server::start_fresh(&[]);
    let team = Team::new(&server, "sweep", 2).await;
    team.policy(Policy {
        approvals: Some(team.rule("cfo", &[("cfo", 1)])),
        max_signatures_per_hour: Some(2),
        ..Policy::default()
    })
    .await;
    for i in 0..2 {
        let (status, body) = team.create(0, &format!("brief {i}"), Some(1)).await;
        assert_eq!(status, 201, "{body}");
    }
    let (status, body) = team.create(0, "over the limit", None).await;
    assert_eq!(status, 403, "{body}");
    let db = server.database().await;
    let mut expired = 0;
    // The sweep runs every 10 s.
    for _ in 0..30 {
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM requests WHERE state = 'expired'")
            .fetch_one(&db)
            .await
            .unwrap();
        expired = n;
        if n == 2 {
            break;
        }
    }
    assert_eq!(expired, 2, "the sweep wrote both expired");
    let (records,): (i64,) =
        sqlx::query_as("SELECT COUNT(*) FROM audit_log WHERE kind = 'request.expired'")
            .fetch_one(&db)
            .await
            .unwrap();
    assert_eq!(records, 2);
    let (told,): (i64,) = sqlx::query_as(
        "SELECT COUNT(*) FROM device_events WHERE device_id = $1 AND kind = 'request-ended'",
    )
    .bind(&team.devices[0])
    .fetch_one(&db)
    .await
    .unwrap();
    assert_eq!(told, 2);
    // Expired, they no longer count.
    team.created("within the limit again").await;
}
