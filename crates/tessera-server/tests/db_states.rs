//! The states the `db` module stores are the same text on SQLite and PostgreSQL, read back as
//! the same enums, and a value the server does not know is an error, not a panic. PostgreSQL
//! runs when `TESSERA_TEST_DATABASE_URL` names a server (a fresh database is created).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use sqlx::AnyPool;
use tessera_server::Config;
use tessera_server::db::{
    self, Approval, DeviceStatus, HeldKind, HeldStatus, Protocol, SessionStatus,
};

async fn sqlite(dir: &tempfile::TempDir) -> AnyPool {
    tessera_server::state::connect_database(&Config::new(dir.path()))
        .await
        .unwrap()
}

async fn postgres(dir: &tempfile::TempDir) -> Option<AnyPool> {
    let mut config = Config::new(dir.path());
    config.database_url = Some(common::fresh_postgres_database("db").await?);
    Some(
        tessera_server::state::connect_database(&config)
            .await
            .unwrap(),
    )
}

async fn text(pool: &AnyPool, sql: &'static str, id: &str) -> String {
    let (t,): (String,) = sqlx::query_as(sql).bind(id).fetch_one(pool).await.unwrap();
    t
}

async fn states_round_trip(pool: &AnyPool) {
    // A device: stored as its text, read back as the enum.
    db::devices::insert_user(pool, "u1", "alice", 1)
        .await
        .unwrap();
    db::devices::insert(
        pool,
        &db::devices::NewDevice {
            id: "d1",
            user_id: "u1",
            name: "phone",
            identity_key: &[7u8; 32],
            status: DeviceStatus::Pending,
            at: 1,
        },
    )
    .await
    .unwrap();
    assert_eq!(
        text(pool, "SELECT status FROM devices WHERE id = $1", "d1").await,
        "pending"
    );
    assert_eq!(
        db::devices::status(pool, "d1").await.unwrap(),
        Some(DeviceStatus::Pending)
    );
    assert!(db::devices::activate_pending(pool, "d1").await.unwrap());
    assert_eq!(
        db::devices::standing(pool, "d1").await.unwrap(),
        Some((DeviceStatus::Active, "u1".to_string()))
    );

    // A session: created, claimed, ended.
    let mut conn = pool.acquire().await.unwrap();
    let new = db::sessions::NewSession {
        id: "s1",
        device_id: "d1",
        wallet_id: "w1",
        protocol: Protocol::Sign,
        nonce: &[1u8; 32],
        params: "{}",
        epoch: 0,
        owner: None,
    };
    let caps = db::sessions::Caps {
        at: 100,
        cutoff: 0,
        per_device: 4,
        per_wallet: 4,
    };
    assert!(
        db::sessions::insert_within_caps(&mut conn, &new, &caps)
            .await
            .unwrap()
    );
    // One inserted claimed (the signing socket's): running, owned, and no second claim.
    let claimed = db::sessions::NewSession {
        id: "s0",
        owner: Some("instance-a"),
        ..new
    };
    assert!(
        db::sessions::insert_within_caps(&mut conn, &claimed, &caps)
            .await
            .unwrap()
    );
    assert!(
        !db::sessions::claim(&mut *conn, "s0", "instance-b", 101)
            .await
            .unwrap()
    );
    drop(conn);
    assert_eq!(
        text(
            pool,
            "SELECT status || '/' || owner FROM sessions WHERE id = $1",
            "s0"
        )
        .await,
        "running/instance-a"
    );
    assert_eq!(
        text(
            pool,
            "SELECT protocol || '/' || status FROM sessions WHERE id = $1",
            "s1"
        )
        .await,
        "sign/created"
    );
    let mut conn = pool.acquire().await.unwrap();
    let open = db::sessions::open_context(&mut conn, "s1", "d1")
        .await
        .unwrap()
        .ok()
        .unwrap();
    assert_eq!(open.protocol, Protocol::Sign);
    assert_eq!(open.status, SessionStatus::Created);
    assert_eq!(open.approval, None);
    // The caller's standing comes with the session; an unknown session still reports it.
    assert_eq!(open.caller, Some((DeviceStatus::Active, "u1".to_string())));
    assert_eq!(
        db::sessions::open_context(&mut conn, "no-such-session", "d1")
            .await
            .unwrap()
            .err(),
        Some(Some((DeviceStatus::Active, "u1".to_string())))
    );
    let unknown_caller = db::sessions::open_context(&mut conn, "s1", "d9")
        .await
        .unwrap()
        .ok()
        .unwrap();
    assert_eq!(unknown_caller.caller, None);
    drop(conn);
    assert!(db::sessions::claim(pool, "s1", "me", 101).await.unwrap());
    assert!(!db::sessions::claim(pool, "s1", "me", 101).await.unwrap());
    // A claim given back leaves the session created as it was, and claimable again.
    db::sessions::unclaim(pool, "s1", "me", 100).await.unwrap();
    assert_eq!(
        text(
            pool,
            "SELECT status || '/' || CAST(last_message_at AS TEXT) FROM sessions WHERE id = $1",
            "s1"
        )
        .await,
        "created/100"
    );
    assert!(db::sessions::claim(pool, "s1", "me", 101).await.unwrap());
    db::sessions::record_end(pool, "s1", SessionStatus::Done, None, 102)
        .await
        .unwrap();
    assert_eq!(
        text(pool, "SELECT status FROM sessions WHERE id = $1", "s1").await,
        "done"
    );

    // A held action: its kind and status.
    db::held::insert(
        pool,
        &db::held::NewHeld {
            id: "h1",
            kind: HeldKind::ServerShareExport,
            user_id: "u1",
            wallet_id: None,
            requested_by: "d1",
            digest: "00",
            request: "{}",
            summary: "s",
            at: 1,
            unlock_at: None,
        },
    )
    .await
    .unwrap();
    assert_eq!(
        text(
            pool,
            "SELECT kind || '/' || status FROM held_actions WHERE id = $1",
            "h1"
        )
        .await,
        "server-share-export/pending"
    );
    assert!(
        db::held::decide(
            pool,
            "h1",
            HeldStatus::Pending,
            HeldStatus::Approved,
            "d2",
            2
        )
        .await
        .unwrap()
    );
    let row = db::held::of_user(pool, "h1", "u1").await.unwrap().unwrap();
    assert_eq!(
        (row.1, row.6),
        (HeldKind::ServerShareExport, HeldStatus::Approved)
    );
}

async fn unknown_states_are_errors(pool: &AnyPool) {
    let read = sqlx::query_as::<_, (SessionStatus,)>("SELECT 'paused'")
        .fetch_one(pool)
        .await;
    let e = read.expect_err("an unknown state must not decode");
    assert!(
        e.to_string().contains("unknown session status \"paused\""),
        "{e}"
    );
    assert!(
        sqlx::query_as::<_, (Approval,)>("SELECT 'Approved'")
            .fetch_one(pool)
            .await
            .is_err()
    );
    let (ok,): (Approval,) = sqlx::query_as("SELECT 'refused'")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(ok, Approval::Refused);
}

#[tokio::test]
async fn sqlite_stores_the_states_as_their_text() {
    let dir = tempfile::tempdir().unwrap();
    let pool = sqlite(&dir).await;
    states_round_trip(&pool).await;
    unknown_states_are_errors(&pool).await;
}

#[tokio::test]
async fn postgres_stores_the_states_as_their_text() {
    let dir = tempfile::tempdir().unwrap();
    let Some(pool) = postgres(&dir).await else {
        eprintln!("TESSERA_TEST_DATABASE_URL not set: PostgreSQL skipped");
        return;
    };
    states_round_trip(&pool).await;
    unknown_states_are_errors(&pool).await;
}
