//! The audit chain's appends, which insert after the head the process last knew without reading
//! it: a stale guess (a rolled-back append, another replica's appends) never forks, breaks or
//! loses a record, alone or under 60 concurrent appends from two servers on one database. The
//! same for a session's end with its record (`ws::record_end_batched`, on SQLite one batch of
//! statements): its row and its record are written together or not at all.
//! SQLite always; PostgreSQL when `TESSERA_TEST_DATABASE_URL` names a server (a fresh database
//! is created).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use serde_json::json;
use tessera_server::audit::{self, Subject};
use tessera_server::db::SessionStatus;
use tessera_server::{AppState, Config};

/// Two servers ("replicas") over one database: SQLite (one file) or a fresh PostgreSQL database.
async fn two_servers(dir: &tempfile::TempDir, postgres: bool) -> Option<(AppState, AppState)> {
    let mut config = Config::new(dir.path().join("data"));
    if postgres {
        config.database_url = Some(common::fresh_postgres_database("chain").await?);
    }
    let first = AppState::open(config.clone()).await.unwrap();
    let second = AppState::open(config).await.unwrap();
    Some((first, second))
}

async fn record_count(state: &AppState) -> i64 {
    let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM audit_log")
        .fetch_one(state.db())
        .await
        .unwrap();
    n
}

/// Whether the chain verifies; its number of records.
async fn verified(state: &AppState) -> u64 {
    let v = audit::verify(state.db()).await.unwrap();
    assert!(v.first_bad.is_none(), "chain broken: {:?}", v.first_bad);
    v.records
}

async fn in_transaction(state: &AppState, kind: &str, n: usize) {
    let mut tx = state.begin_write().await.unwrap();
    audit::append_in(&mut tx, kind, Subject::default(), json!({ "n": n }))
        .await
        .unwrap();
    tx.commit().await.unwrap();
}

/// Ends session `id` (a row made for it here, `created`) with its one record, `test.end` with
/// detail `{"n": n}`.
async fn end_session(state: &AppState, id: &str, n: usize) {
    tessera_server::ws::record_end_batched(
        state,
        id,
        (SessionStatus::Done, None),
        Subject::default(),
        &[("test.end".to_string(), json!({ "n": n }))],
    )
    .await
    .unwrap();
}

/// A session row of its own (with the user, device and wallet it names), created: what
/// `end_session` ends.
async fn new_session(state: &AppState, id: &str) {
    for sql in [
        "INSERT INTO users (id, name, created_at) VALUES ('chain-user', 'chain-user', 0) \
         ON CONFLICT DO NOTHING",
        "INSERT INTO devices (id, user_id, name, identity_key, status, registered_at) \
         VALUES ('chain-device', 'chain-user', 'd', $2, 'active', 0) ON CONFLICT DO NOTHING",
        "INSERT INTO wallets (id, user_id, name, threshold_t, threshold_n, public_key, epoch, \
         created_at) VALUES ($1, 'chain-user', $1, 2, 2, $2, 0, 0)",
        "INSERT INTO sessions (id, device_id, wallet_id, protocol, status, nonce, params, epoch, \
         created_at, last_message_at) VALUES ($1, 'chain-device', $1, 'sign', 'created', $2, \
         '{}', 0, 0, 0)",
    ] {
        sqlx::query(sql)
            .bind(id)
            .bind(vec![0u8; 32])
            .execute(state.db())
            .await
            .unwrap();
    }
}

/// Whether session `id` is done and its record `test.end` `{"n": n}` is in the log (once).
async fn ended_with_record(state: &AppState, id: &str, n: usize) -> bool {
    let (status,): (String,) = sqlx::query_as("SELECT status FROM sessions WHERE id = $1")
        .bind(id)
        .fetch_one(state.db())
        .await
        .unwrap();
    let (records,): (i64,) =
        sqlx::query_as("SELECT COUNT(*) FROM audit_log WHERE kind = 'test.end' AND detail = $1")
            .bind(json!({ "n": n }).to_string())
            .fetch_one(state.db())
            .await
            .unwrap();
    assert!(records <= 1, "record {n} written {records} times");
    status == "done" && records == 1
}

async fn stale_heads_never_break_the_chain(postgres: bool) {
    let dir = tempfile::tempdir().unwrap();
    let Some((a, b)) = two_servers(&dir, postgres).await else {
        eprintln!("TESSERA_TEST_DATABASE_URL not set: PostgreSQL skipped");
        return;
    };
    let start = record_count(&a).await;

    // An append rolled back: `a` remembers a head that was never written.
    audit::append(&a, "test.first", Subject::default(), json!({}))
        .await
        .unwrap();
    let mut tx = a.begin_write().await.unwrap();
    audit::append_in(&mut tx, "test.rolled_back", Subject::default(), json!({}))
        .await
        .unwrap();
    drop(tx);
    // Both kinds of append after it, on the server with the phantom head.
    audit::append(&a, "test.after_rollback", Subject::default(), json!({}))
        .await
        .unwrap();
    in_transaction(&a, "test.after_rollback_in_tx", 0).await;
    // A session's end on a phantom head: the batch refuses it, the transaction writes it.
    let mut tx = a.begin_write().await.unwrap();
    audit::append_in(&mut tx, "test.rolled_back", Subject::default(), json!({}))
        .await
        .unwrap();
    drop(tx);
    new_session(&a, "s-phantom").await;
    end_session(&a, "s-phantom", 0).await;
    assert!(ended_with_record(&a, "s-phantom", 0).await);

    // The other server appends: `a`'s head is stale, `b` has none yet, then `b`'s goes stale.
    for i in 0..3 {
        audit::append(&b, "test.b", Subject::default(), json!({ "i": i }))
            .await
            .unwrap();
        audit::append(&a, "test.a", Subject::default(), json!({ "i": i }))
            .await
            .unwrap();
        in_transaction(&b, "test.b_in_tx", i).await;
        in_transaction(&a, "test.a_in_tx", i).await;
        // Ends of sessions, each after the other server appended.
        let (sa, sb) = (format!("s-a-{i}"), format!("s-b-{i}"));
        new_session(&a, &sa).await;
        new_session(&a, &sb).await;
        end_session(&a, &sa, 10 + i).await;
        audit::append(&b, "test.b", Subject::default(), json!({ "i": 10 + i }))
            .await
            .unwrap();
        end_session(&b, &sb, 20 + i).await;
        audit::append(&a, "test.a", Subject::default(), json!({ "i": 10 + i }))
            .await
            .unwrap();
        assert!(ended_with_record(&a, &sa, 10 + i).await);
        assert!(ended_with_record(&a, &sb, 20 + i).await);
    }
    assert_eq!(record_count(&a).await, start + 4 + 12 + 12);
    let (rolled_back,): (i64,) =
        sqlx::query_as("SELECT COUNT(*) FROM audit_log WHERE kind = 'test.rolled_back'")
            .fetch_one(a.db())
            .await
            .unwrap();
    assert_eq!(rolled_back, 0);
    assert_eq!(verified(&a).await as i64, start + 28);
}

#[tokio::test]
async fn stale_heads_never_break_the_chain_on_sqlite() {
    stale_heads_never_break_the_chain(false).await;
}

#[tokio::test]
async fn stale_heads_never_break_the_chain_on_postgres() {
    stale_heads_never_break_the_chain(true).await;
}

/// 60 concurrent appends, half alone and half in transactions, spread over two servers: every
/// record is written once and the chain verifies.
async fn concurrent_appends_all_land(postgres: bool) {
    let dir = tempfile::tempdir().unwrap();
    let Some((a, b)) = two_servers(&dir, postgres).await else {
        eprintln!("TESSERA_TEST_DATABASE_URL not set: PostgreSQL skipped");
        return;
    };
    let start = record_count(&a).await;
    let mut tasks = Vec::new();
    for i in 0..60usize {
        new_session(&a, &format!("s-{i}")).await;
    }
    for i in 0..60usize {
        let state = if i % 3 == 0 { b.clone() } else { a.clone() };
        tasks.push(tokio::spawn(async move {
            if i % 5 == 0 || i % 5 == 3 {
                end_session(&state, &format!("s-{i}"), i).await;
            } else if i % 2 == 0 {
                audit::append(
                    &state,
                    "test.concurrent",
                    Subject::default(),
                    json!({ "i": i }),
                )
                .await
                .unwrap();
            } else {
                in_transaction(&state, "test.concurrent", i).await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let (distinct,): (i64,) = sqlx::query_as(
        "SELECT COUNT(DISTINCT detail) FROM audit_log WHERE kind IN ('test.concurrent', 'test.end')",
    )
    .fetch_one(a.db())
    .await
    .unwrap();
    assert_eq!(distinct, 60);
    for i in (0..60usize).filter(|i| i % 5 == 0 || i % 5 == 3) {
        assert!(ended_with_record(&a, &format!("s-{i}"), i).await, "{i}");
    }
    assert_eq!(record_count(&a).await, start + 60);
    assert_eq!(verified(&b).await as i64, start + 60);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appends_all_land_on_sqlite() {
    concurrent_appends_all_land(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appends_all_land_on_postgres() {
    concurrent_appends_all_land(true).await;
}

/// A signing request, `sign.requested` record and all, written as `POST /sign` writes it on
/// SQLite (`db::sessions::insert_sign_request`, one batch) in `tx`, after the head `head` names;
/// `per_device`: the device's cap of live sessions. Whether the batch was written.
async fn request_in_one_batch(
    tx: &mut tessera_server::db::WriteTx,
    id: &str,
    head: &tessera_server::db::audit::HeadCache,
    per_device: i64,
) -> bool {
    use tessera_server::db::{Approval, Protocol, RequestKind, approvals, sessions};
    let session = sessions::NewSession {
        id,
        device_id: "chain-device",
        wallet_id: "w-batch",
        protocol: Protocol::Sign,
        nonce: &[7u8; 32],
        params: "{}",
        epoch: 0,
        owner: None,
    };
    let caps = sessions::Caps {
        at: 1_000,
        // `w-batch`'s own session (created at 0) is not live.
        cutoff: 1,
        per_device,
        per_wallet: 100,
    };
    let request = approvals::NewSignRequest {
        session_id: id,
        wallet_id: "w-batch",
        device_id: "chain-device",
        kind: RequestKind::Digest,
        value_wei: None,
        max_fee_wei: None,
        token_amounts: None,
        btc_spend: None,
        digest: "00",
        summary: "a digest",
        requested_at: 1_000,
        approval: Approval::None,
        expires_at: 1_000,
    };
    let detail = json!({ "session_id": id }).to_string();
    let record =
        audit::after_known_head(head, 1_000, "sign.requested", Subject::default(), &detail)
            .unwrap();
    sessions::insert_sign_request(tx, (&session, &caps), &request, &record)
        .await
        .unwrap()
}

/// How many rows of session `id` there are: its session, its request, its record.
async fn written_of(state: &AppState, id: &str) -> (i64, i64, i64) {
    let mut counts = [0i64; 3];
    for (n, sql) in [
        "SELECT COUNT(*) FROM sessions WHERE id = $1",
        "SELECT COUNT(*) FROM sign_requests WHERE session_id = $1",
        "SELECT COUNT(*) FROM audit_log WHERE kind = 'sign.requested' AND detail LIKE '%' || $1 || '%'",
    ]
    .into_iter()
    .enumerate()
    {
        (counts[n],) = sqlx::query_as(sql)
            .bind(id)
            .fetch_one(state.db())
            .await
            .unwrap();
    }
    (counts[0], counts[1], counts[2])
}

/// SQLite: a signing request's session, its request row and its record, written in one batch
/// of statements, are written together or not at all. A head another server appended after, a
/// head never written and a device at its cap of live sessions each write none of the three
/// and leave the transaction to go on; a current head writes all three and the chain verifies.
#[tokio::test]
async fn a_signing_request_in_one_batch_is_written_whole_or_not_at_all() {
    use tessera_server::db::audit::HeadCache;
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = two_servers(&dir, false).await.unwrap();
    new_session(&a, "w-batch").await;
    audit::append(&a, "test.first", Subject::default(), json!({}))
        .await
        .unwrap();
    let head = |seq: i64, hash: Vec<u8>| {
        let cache = HeadCache::default();
        cache.advance(seq, hash.try_into().unwrap());
        cache
    };
    let (seq, hash): (i64, Vec<u8>) =
        sqlx::query_as("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")
            .fetch_one(a.db())
            .await
            .unwrap();
    let passed = head(seq, hash.clone());
    // The other server appends: `passed` is no longer the head.
    audit::append(&b, "test.b", Subject::default(), json!({}))
        .await
        .unwrap();
    let (seq, hash): (i64, Vec<u8>) =
        sqlx::query_as("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")
            .fetch_one(a.db())
            .await
            .unwrap();
    let current = head(seq, hash);
    let phantom = head(seq + 1, vec![9u8; 32]);
    let start = record_count(&a).await;

    let mut tx = a.begin_write().await.unwrap();
    assert!(!request_in_one_batch(&mut tx, "r-passed", &passed, 10).await);
    assert!(!request_in_one_batch(&mut tx, "r-phantom", &phantom, 10).await);
    // The device already holds one live session (`r-at-cap` would be its second).
    assert!(request_in_one_batch(&mut tx, "r-live", &current, 10).await);
    let (seq, hash): (i64, Vec<u8>) =
        sqlx::query_as("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")
            .fetch_one(&mut *tx)
            .await
            .unwrap();
    let current = head(seq, hash);
    assert!(!request_in_one_batch(&mut tx, "r-at-cap", &current, 1).await);
    assert!(request_in_one_batch(&mut tx, "r-within-cap", &current, 2).await);
    tx.commit().await.unwrap();

    for id in ["r-passed", "r-phantom", "r-at-cap"] {
        assert_eq!(written_of(&a, id).await, (0, 0, 0), "{id}");
    }
    for id in ["r-live", "r-within-cap"] {
        assert_eq!(written_of(&a, id).await, (1, 1, 1), "{id}");
    }
    assert_eq!(record_count(&a).await, start + 2);
    assert_eq!(verified(&a).await as i64, start + 2);
}
