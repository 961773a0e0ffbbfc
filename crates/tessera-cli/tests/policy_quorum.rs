//! Policy changes by the policy's admin quorum (issue 16, item 5) against real `tessera server`
//! processes, on SQLite and PostgreSQL: one device alone cannot change (or weaken) a policy
//! whose admins are `and(laptop, phone)`; the proposal waits while the old version applies, to
//! signing too; the second admin's signature applies it; the audit log shows both signatures.
//! Bad input (a non-admin, a signature over other bytes, a stale version, an unknown admin, a
//! revoked admin) is refused with a clear error and changes nothing; 50 signatures and proposals
//! sent at once apply exactly one version.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::Arc;

use serde_json::{Value, json};
use sha2::Digest;
use tessera_api::proposals::{PolicyOutcome, ProposalInfo, ProposalState};
use tessera_api::{self as api, Policy, RequestKind};
use tessera_client::{ClientError, ServerClient};
use tessera_store::DeviceIdentity;

use common::cli::{tessera, write_json};
use common::{Backend, Server, identity, start};

mod common;

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn ok(home: &Path, args: &[&str]) -> String {
    let out = tessera(home, args);
    assert!(
        out.status.success(),
        "{args:?}: {}{}",
        stdout(&out),
        String::from_utf8_lossy(&out.stderr)
    );
    stdout(&out)
}

fn field(out: &str, name: &str) -> String {
    out.lines()
        .find_map(|l| l.strip_prefix(name))
        .map(|r| r.trim().to_string())
        .unwrap_or_else(|| panic!("no {name} in {out}"))
}

fn admins(laptop: &str, phone: &str) -> Value {
    json!({
        "structure": "and(laptop, phone)",
        "approvers": { "laptop": { "device": laptop }, "phone": { "device": phone } },
    })
}

#[test]
fn one_device_alone_cannot_weaken_a_policy_of_two_admins() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        two_admins_on(backend);
    }
}

fn two_admins_on(backend: Backend) {
    let server = start(backend);
    let (laptop, phone) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (laptop, phone) = (laptop.path(), phone.path());
    let init = |home: &Path, name: &str| {
        ok(
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
    let laptop_id = field(&init(laptop, "laptop"), "device id");
    let out = init(phone, "phone");
    let phone_id = field(&out, "device id");
    let code = field(&out, "approval code")
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    ok(laptop, &["device", "approve", &code]);
    ok(laptop, &["keygen", "--name", "main"]);

    // A new wallet's policy names no admin quorum: one device alone changes it, and it says so.
    let shown = ok(laptop, &["policy", "show", "--wallet", "main"]);
    assert!(shown.contains("warning        one device alone"), "{shown}");

    // Version 1 (applied at once: version 0 has no admins): no personal messages; laptop and
    // phone together administer it.
    let strict = json!({ "allowed_kinds": ["eth-tx"], "admins": admins(&laptop_id, &phone_id) });
    let file = write_json(laptop, "strict.json", &strict);
    let out = ok(
        laptop,
        &["policy", "set", "--wallet", "main", "--file", &file],
    );
    assert!(out.contains("is now version 1"), "{out}");
    let shown = ok(laptop, &["policy", "show", "--wallet", "main"]);
    assert!(
        shown.contains("admins         and(laptop, phone)"),
        "{shown}"
    );
    assert!(!shown.contains("warning"), "{shown}");
    let refused = tessera(laptop, &["sign", "--wallet", "main", "--message", "hi"]);
    assert!(!refused.status.success());

    // The laptop alone weakens it: proposed, not applied.
    let loose = json!({
        "allowed_kinds": ["eth-tx", "eth-message"], "admins": admins(&laptop_id, &phone_id),
    });
    let file = write_json(laptop, "loose.json", &loose);
    let out = ok(
        laptop,
        &["policy", "set", "--wallet", "main", "--file", &file],
    );
    assert!(out.contains("waits for: and(laptop, phone)"), "{out}");
    assert!(out.contains("weakens        allowed_kinds"), "{out}");
    let proposal = field(&out, "proposal");
    // The old version still applies: to the policy shown and to signing.
    let shown = ok(laptop, &["policy", "show", "--wallet", "main"]);
    assert!(shown.contains("version 1"), "{shown}");
    let refused = tessera(laptop, &["sign", "--wallet", "main", "--message", "hi"]);
    assert!(
        !refused.status.success(),
        "signed under a proposed policy: {}",
        stdout(&refused)
    );
    // Proposing it again from the laptop adds nothing: still one signature.
    let again = ok(
        laptop,
        &["policy", "set", "--wallet", "main", "--file", &file],
    );
    assert_eq!(field(&again, "proposal"), proposal, "{again}");

    // The phone (no share of the wallet) sees it waiting for it, and signs it without a
    // terminal only with --yes.
    let listed: Value =
        serde_json::from_str(&ok(phone, &["policy", "proposals", "--json"])).unwrap();
    let listed = listed.as_array().unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["id"], proposal.as_str());
    assert_eq!(listed[0]["state"], "pending");
    assert_eq!(listed[0]["signers"].as_array().unwrap().len(), 1);
    let no_tty = tessera(phone, &["policy", "sign", &proposal]);
    assert_eq!(no_tty.status.code(), Some(2), "{}", stdout(&no_tty));
    let signed = ok(phone, &["policy", "sign", &proposal, "--yes"]);
    assert!(
        signed.contains("allowed_kinds"),
        "the change is shown: {signed}"
    );
    assert!(signed.contains("applies now"), "{signed}");

    let shown = ok(laptop, &["policy", "show", "--wallet", "main"]);
    assert!(shown.contains("version 2"), "{shown}");
    ok(laptop, &["sign", "--wallet", "main", "--message", "hi"]);

    // The audit log shows both signatures, and what applied names both signers.
    let audit: Value = serde_json::from_str(&ok(
        laptop,
        &["audit", "list", "--wallet", "main", "--json"],
    ))
    .unwrap();
    let records = audit.as_array().unwrap();
    let detail =
        |r: &Value| -> Value { serde_json::from_str(r["detail"].as_str().unwrap()).unwrap() };
    let signed_by: Vec<String> = records
        .iter()
        .filter(|r| r["kind"] == "policy.proposal_signed")
        .map(|r| detail(r)["device"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        signed_by,
        [laptop_id.clone(), phone_id.clone()],
        "{records:?}"
    );
    let applied: Vec<Value> = records
        .iter()
        .filter(|r| r["kind"] == "policy.applied")
        .map(detail)
        .collect();
    assert_eq!(applied.len(), 1, "{records:?}");
    let signers: Vec<&str> = applied[0]["signers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["device"].as_str().unwrap())
        .collect();
    assert_eq!(signers.len(), 2);
    assert!(signers.contains(&laptop_id.as_str()) && signers.contains(&phone_id.as_str()));
    assert_eq!(applied[0]["version"], 2);
    ok(laptop, &["audit", "verify"]);

    // Revoking the phone would leave `and(laptop, phone)` unmeetable, so that nobody could change
    // the policy again: refused, saying why, unless forced.
    let refused = tessera(laptop, &["device", "revoke", &phone_id]);
    assert!(!refused.status.success());
    let why = String::from_utf8_lossy(&refused.stderr);
    assert!(
        why.contains("admins quorum") && why.contains("--force"),
        "{why}"
    );
    let devices = ok(laptop, &["device", "list"]);
    assert!(!devices.contains("revoked"), "{devices}");
    ok(laptop, &["device", "revoke", &phone_id, "--force"]);
}

/// A user's devices logged in through the SDK, and a wallet of the first.
struct Devices {
    clients: Vec<ServerClient>,
    ids: Vec<Arc<DeviceIdentity>>,
    device_ids: Vec<String>,
    wallet: String,
    _homes: Vec<tempfile::TempDir>,
}

async fn devices(server: &Server, user: &str, n: usize) -> Devices {
    tessera_client::tls::install_crypto_provider();
    let mut d = Devices {
        clients: Vec::new(),
        ids: Vec::new(),
        device_ids: Vec::new(),
        wallet: String::new(),
        _homes: Vec::new(),
    };
    for i in 0..n {
        let home = tempfile::tempdir().unwrap();
        let id = identity(home.path());
        let mut client = ServerClient::new(&server.url).unwrap();
        let device = client
            .register(&id, user, &format!("device {i}"))
            .await
            .unwrap();
        if i > 0 {
            d.clients[0]
                .approve(&d.ids[0], &api::approval_code(&id.public_key()))
                .await
                .unwrap();
        }
        client.login(&id, &device.device_id).await.unwrap();
        d.clients.push(client);
        d.ids.push(Arc::new(id));
        d.device_ids.push(device.device_id.into());
        d._homes.push(home);
    }
    let share = d.clients[0].keygen("w", |_, _| {}).await.unwrap();
    d.wallet = share.wallet_id().to_string();
    d
}

fn admin_rule(a: &str, b: &str) -> api::requests::ApprovalRule {
    serde_json::from_value(admins(a, b)).unwrap()
}

fn with_admins(rule: api::requests::ApprovalRule, kinds: Vec<RequestKind>) -> Policy {
    Policy {
        allowed_kinds: kinds,
        admins: Some(rule),
        ..Policy::default()
    }
}

impl Devices {
    async fn submit(&self, i: usize, policy: &Policy) -> Result<PolicyOutcome, ClientError> {
        self.clients[i]
            .submit_policy(&self.ids[i], &self.wallet, policy)
            .await
    }

    async fn sign(&self, i: usize, p: &ProposalInfo) -> Result<ProposalInfo, ClientError> {
        self.clients[i].sign_policy_proposal(&self.ids[i], p).await
    }

    /// `PUT /policy` of `version` exactly, signed by device `i`: the answer's status.
    async fn put(&self, url: &str, i: usize, version: u64, policy: &Policy) -> u16 {
        let text = serde_json::to_string(policy).unwrap();
        let body = api::SetPolicy {
            wallet_id: self.wallet.clone().into(),
            version,
            policy: policy.clone(),
            signature: hex::encode(self.ids[i].sign(&api::policy_message(
                &self.wallet,
                version,
                &text,
            ))),
        };
        reqwest::Client::new()
            .put(format!("{url}/policy"))
            .bearer_auth(self.clients[i].token().unwrap())
            .json(&body)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    async fn version(&self) -> u64 {
        self.clients[0]
            .policy_view(&self.wallet)
            .await
            .unwrap()
            .info
            .version
    }
}

fn status(r: Result<impl std::fmt::Debug, ClientError>) -> (u16, String) {
    match r {
        Err(ClientError::Server {
            status, message, ..
        }) => (status, message),
        other => panic!("not refused: {other:?}"),
    }
}

fn proposed(o: PolicyOutcome) -> ProposalInfo {
    match o {
        PolicyOutcome::Proposed(p) => *p,
        other => panic!("not proposed: {other:?}"),
    }
}

/// A copy of `p` whose policy is `policy`, with its hash, so that the SDK signs those bytes.
fn other_bytes(p: &ProposalInfo, policy: Policy) -> ProposalInfo {
    let text = serde_json::to_string(&policy).unwrap();
    ProposalInfo {
        policy,
        policy_sha256: hex::encode(sha2::Sha256::digest(text.as_bytes())),
        ..p.clone()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_is_refused_and_changes_nothing() {
    let server = start(Backend::Sqlite);
    // laptop, phone and tablet of alice; bob elsewhere.
    let d = devices(&server, "alice", 3).await;
    let bob = devices(&server, "bob", 1).await;
    let (laptop, phone) = (&d.device_ids[0], &d.device_ids[1]);
    let rule = admin_rule(laptop, phone);

    // An admins rule naming an unknown device, or a malformed one: 400 naming the label.
    let unknown = admin_rule(laptop, "00000000-0000-0000-0000-000000000000");
    let (code, message) = status(
        d.submit(0, &with_admins(unknown, vec![RequestKind::EthTx]))
            .await,
    );
    assert_eq!(code, 400, "{message}");
    assert!(
        message.contains("admins") && message.contains("\"phone\""),
        "{message}"
    );
    let mut missing = rule.clone();
    missing.approvers.remove("phone");
    let (code, message) = status(
        d.submit(0, &with_admins(missing, vec![RequestKind::EthTx]))
            .await,
    );
    assert_eq!(code, 400, "{message}");
    assert_eq!(d.version().await, 0);

    // Version 1 names laptop and phone.
    let v1 = with_admins(rule.clone(), vec![RequestKind::EthTx]);
    assert!(matches!(
        d.submit(0, &v1).await.unwrap(),
        PolicyOutcome::Applied(_)
    ));
    let v2 = with_admins(
        rule.clone(),
        vec![RequestKind::EthTx, RequestKind::EthMessage],
    );

    // The tablet is alice's but no admin: 403, for proposing and for signing.
    let (code, message) = status(d.submit(2, &v2).await);
    assert_eq!(code, 403, "{message}");
    assert!(message.contains("and(laptop, phone)"), "{message}");
    let p = proposed(d.submit(0, &v2).await.unwrap());
    assert_eq!(p.version, 2);
    assert_eq!(p.waiting_for, "and(laptop, phone)");
    assert_eq!(p.weakens, ["allowed_kinds"]);
    assert_eq!(p.signers.len(), 1);
    assert_eq!(p.signers[0].labels, ["laptop"]);
    let (code, _) = status(d.sign(2, &p).await);
    assert_eq!(code, 403);
    // The phone, the other admin, is told; the tablet and the proposer are not.
    let db = server.database().await;
    for (device, expected) in [(phone, 1), (&d.device_ids[2], 0), (laptop, 0)] {
        let (n,): (i64,) = sqlx::query_as(
            "SELECT COUNT(*) FROM device_events WHERE device_id = $1 AND kind = 'policy-proposal' AND wallet_id = $2",
        )
        .bind(device)
        .bind(&d.wallet)
        .fetch_one(&db)
        .await
        .unwrap();
        assert_eq!(n, expected, "events of {device}");
    }
    // Bob sees no such proposal.
    let (code, _) = status(bob.clients[0].policy_proposal(p.id.as_str()).await);
    assert_eq!(code, 404);
    let (code, _) = status(bob.sign(0, &p).await);
    assert_eq!(code, 404);
    assert!(
        bob.clients[0]
            .policy_proposals(None, None)
            .await
            .unwrap()
            .is_empty()
    );

    // The phone signs other bytes: another version, another policy: 400.
    let other_version = ProposalInfo {
        version: 3,
        ..p.clone()
    };
    let (code, message) = status(d.sign(1, &other_version).await);
    assert_eq!(code, 400, "{message}");
    assert!(message.starts_with("signature"), "{message}");
    let (code, message) = status(d.sign(1, &other_bytes(&p, v1.clone())).await);
    assert_eq!(code, 400, "{message}");
    // Nothing changed: one signature, version 1.
    let now = d.clients[0].policy_proposal(p.id.as_str()).await.unwrap();
    assert_eq!(now.signers.len(), 1);
    assert_eq!(now.state, ProposalState::Pending);
    assert_eq!(d.version().await, 1);

    // A stale version: PUT for version 3, or 1 again, while 1 is in force.
    assert_eq!(d.put(&server.url, 0, 3, &v2).await, 409);
    assert_eq!(d.put(&server.url, 1, 1, &v2).await, 409);

    // Two proposals for version 2; the phone's other one applies first: the first is
    // superseded, and signing it is 409.
    let v2b = with_admins(rule.clone(), vec![RequestKind::EthTx, RequestKind::Digest]);
    let q = proposed(d.submit(1, &v2b).await.unwrap());
    assert_ne!(q.id, p.id);
    let applied = d.sign(0, &q).await.unwrap();
    assert_eq!(applied.state, ProposalState::Applied);
    assert_eq!(d.version().await, 2);
    let (code, message) = status(d.sign(1, &p).await);
    assert_eq!(code, 409, "{message}");
    let superseded = d.clients[0]
        .policy_proposals(Some(&d.wallet), Some(ProposalState::Superseded))
        .await
        .unwrap();
    assert_eq!(superseded.len(), 1);
    assert_eq!(superseded[0].id, p.id);
    let view = d.clients[0].policy_view(&d.wallet).await.unwrap();
    assert_eq!(view.info.policy, v2b);
    assert_eq!(view.warning, None);

    // A revoked admin device: 401; and the signature it gave before no longer counts.
    let v3 = with_admins(rule.clone(), vec![RequestKind::EthTx]);
    let r = proposed(d.submit(1, &v3).await.unwrap());
    // (Forced: without the phone, the admin quorum can no longer be met.)
    let (code, message) = status(d.clients[0].revoke(phone).await);
    assert_eq!(code, 409, "{message}");
    d.clients[0]
        .revoke_with(phone, &api::RevokeDevice { force: true })
        .await
        .unwrap();
    let (code, _) = status(d.sign(1, &r).await);
    assert_eq!(code, 401);
    let (code, _) = status(d.submit(1, &v3).await);
    assert_eq!(code, 401);
    let after = d.sign(0, &r).await.unwrap();
    assert_eq!(after.state, ProposalState::Pending, "{after:?}");
    assert_eq!(after.signers.len(), 2);
    assert_eq!(d.version().await, 2);
}

#[test]
fn fifty_signatures_at_once_apply_one_version() {
    on_each_backend(concurrent_on);
}

/// `run` on SQLite, then on PostgreSQL, each in a runtime of its own.
fn on_each_backend<F: std::future::Future<Output = ()>>(run: impl Fn(Backend) -> F) {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(run(backend));
    }
}

async fn concurrent_on(backend: Backend) {
    const HALF: usize = 25;
    let server = start(backend);
    let d = Arc::new(devices(&server, "carol", 2).await);
    let rule = admin_rule(&d.device_ids[0], &d.device_ids[1]);
    let v1 = with_admins(rule.clone(), vec![RequestKind::EthTx]);
    assert!(matches!(
        d.submit(0, &v1).await.unwrap(),
        PolicyOutcome::Applied(_)
    ));
    let candidate = |i: usize| Policy {
        max_signatures_per_hour: Some(i as u32 + 1),
        ..v1.clone()
    };

    // The laptop proposes 25 versions at once: each waits for the phone.
    let mut tasks = Vec::new();
    for i in 0..HALF {
        let d = Arc::clone(&d);
        let policy = candidate(i);
        tasks.push(tokio::spawn(async move { d.submit(0, &policy).await }));
    }
    let mut proposals = Vec::new();
    for t in tasks {
        proposals.push(proposed(t.await.unwrap().unwrap()));
    }

    // The phone signs each of them, and proposes the same bytes again, all at once.
    let mut tasks = Vec::new();
    for (i, p) in proposals.iter().enumerate() {
        let (d1, d2, p) = (Arc::clone(&d), Arc::clone(&d), p.clone());
        let policy = candidate(i);
        let url = server.url.clone();
        tasks.push(tokio::spawn(async move {
            match d1.sign(1, &p).await {
                Ok(info) if info.state == ProposalState::Applied => 200,
                Ok(info) => panic!("the second signature left {info:?}"),
                Err(ClientError::Server { status, .. }) => status,
                Err(e) => panic!("{e:?}"),
            }
        }));
        tasks.push(tokio::spawn(
            async move { d2.put(&url, 1, 2, &policy).await },
        ));
    }
    let (mut applied, mut conflicts) = (0, 0);
    for t in tasks {
        match t.await.unwrap() {
            200 => applied += 1,
            409 => conflicts += 1,
            other => panic!("answered {other}"),
        }
    }
    assert_eq!((applied, conflicts), (1, 2 * HALF - 1));
    assert_eq!(d.version().await, 2);
    let db = server.database().await;
    let (versions,): (i64,) =
        sqlx::query_as("SELECT COUNT(*) FROM policies WHERE wallet_id = $1 AND version = 2")
            .bind(&d.wallet)
            .fetch_one(&db)
            .await
            .unwrap();
    assert_eq!(versions, 1);
    let states: Vec<(String, i64)> = sqlx::query_as(
        "SELECT state, COUNT(*) FROM policy_proposals WHERE wallet_id = $1 GROUP BY state ORDER BY state",
    )
    .bind(&d.wallet)
    .fetch_all(&db)
    .await
    .unwrap();
    assert_eq!(
        states,
        [
            ("applied".to_string(), 1),
            ("superseded".to_string(), HALF as i64 - 1)
        ]
    );
    let chain = d.clients[0].audit_verify().await.unwrap();
    assert!(chain.records > 0);
}

/// A policy naming a device in its approval quorum and that device's revocation, sent at once
/// (check-then-act on both sides: the revocation reads the policies in force, the policy checks
/// that its approvers exist): never both succeed, whichever comes first; on SQLite and
/// PostgreSQL. 25 rounds, each with a fresh device, the revocation sent 0 to 4 ms after the
/// policy so that it lands at every step of the policy's handling.
#[test]
fn a_quorum_and_a_revocation_at_once_never_both_succeed() {
    on_each_backend(quorum_and_revocation_on);
}

async fn quorum_and_revocation_on(backend: Backend) {
    const ROUNDS: usize = 25;
    let server = start(backend);
    let d = Arc::new(devices(&server, "dave", 1).await);
    let (mut policies, mut revocations) = (0, 0);
    for round in 0..ROUNDS {
        let home = tempfile::tempdir().unwrap();
        let id = identity(home.path());
        let client = ServerClient::new(&server.url).unwrap();
        let device = client
            .register(&id, "dave", &format!("tablet {round}"))
            .await
            .unwrap();
        d.clients[0]
            .approve(&d.ids[0], &api::approval_code(&id.public_key()))
            .await
            .unwrap();
        let tablet = device.device_id.to_string();
        let rule: api::requests::ApprovalRule =
            serde_json::from_value(admins(&d.device_ids[0], &tablet)).unwrap();
        let policy = Policy {
            approvals: Some(rule),
            ..Policy::default()
        };
        let version = d.version().await + 1;
        let put = {
            let (d, url, policy) = (Arc::clone(&d), server.url.clone(), policy.clone());
            tokio::spawn(async move { d.put(&url, 0, version, &policy).await })
        };
        let revoke = {
            let (d, tablet) = (Arc::clone(&d), tablet.clone());
            tokio::spawn(async move {
                tokio::time::sleep(std::time::Duration::from_millis(round as u64 % 5)).await;
                match d.clients[0].revoke(&tablet).await {
                    Ok(_) => 200,
                    Err(ClientError::Server { status, .. }) => status,
                    Err(e) => panic!("{e:?}"),
                }
            })
        };
        let (put, revoke) = (put.await.unwrap(), revoke.await.unwrap());
        match (put, revoke) {
            // The policy first: the revocation would strand its quorum.
            (200, 409) => policies += 1,
            // The revocation first: the policy names a revoked device.
            (400, 200) => revocations += 1,
            other => panic!("round {round}: policy and revocation answered {other:?}"),
        }
        // What is in force agrees: a policy naming the tablet only while it is active.
        let view = d.clients[0].policy_view(&d.wallet).await.unwrap();
        let named = view.info.policy.approvals.as_ref().is_some_and(|r| {
            r.approvers
                .values()
                .any(|a| matches!(a, api::requests::Approver::Device(x) if x.as_str() == tablet))
        });
        assert_eq!(named, put == 200, "round {round}");
    }
    assert_eq!(policies + revocations, ROUNDS);
    d.clients[0].audit_verify().await.unwrap();
}
