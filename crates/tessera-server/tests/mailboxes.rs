//! Mailboxes (`tessera_server::mailboxes`): frames of every size arrive intact and in order, a
//! frame for a mailbox nobody holds is dropped. SQLite (one process, in-process channels)
//! always; PostgreSQL (two replicas in this process, each with its own listener, sharing one
//! database) when `TESSERA_TEST_DATABASE_URL` names a server (a fresh database is created).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use tessera_server::mailboxes::{INLINE_MAX, MAX_FRAME, Route};
use tessera_server::{AppState, Config};

/// A frame of `len` bytes that differs from every other test frame.
fn frame(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// Sizes around the limits: inline, PostgreSQL's payload limit, the relay's largest frame.
const SIZES: [usize; 6] = [1, INLINE_MAX, INLINE_MAX + 1, 7_999, 8_001, 64 * 1024];

#[tokio::test]
async fn in_process_mailboxes_keep_order_and_drop_frames_nobody_holds() {
    let dir = tempfile::tempdir().unwrap();
    let state = AppState::open(Config::new(dir.path().join("data")))
        .await
        .unwrap();
    let boxes = state.mailboxes();

    let mut inbox = boxes.open("session/s1/party/0").await.unwrap();
    let to = boxes.route("session/s1/party/0").await.unwrap().unwrap();
    assert_eq!(to.holder(), state.instance());
    for (i, len) in SIZES.iter().enumerate() {
        assert!(boxes.send(&to, frame(*len, i as u8)).await.unwrap());
    }
    for (i, len) in SIZES.iter().enumerate() {
        assert_eq!(inbox.recv().await.unwrap(), frame(*len, i as u8));
    }

    // One holder per address.
    assert!(boxes.open("session/s1/party/0").await.is_err());
    // Bad addresses and oversized frames are refused.
    assert!(boxes.open("").await.is_err());
    assert!(boxes.open("has space").await.is_err());
    assert!(boxes.open(&"x".repeat(201)).await.is_err());
    assert!(boxes.send(&to, vec![0; MAX_FRAME + 1]).await.is_err());

    // Nobody holds it: dropped, and the sender is told.
    assert!(boxes.route("session/s1/party/1").await.unwrap().is_none());
    let nobody = Route::new("session/s1/party/1", state.instance());
    assert!(!boxes.send(&nobody, vec![1]).await.unwrap());
    drop(inbox);
    assert!(!boxes.send(&to, vec![2]).await.unwrap());
    assert!(boxes.route("session/s1/party/0").await.unwrap().is_none());
    assert_eq!(boxes.held(), 0);

    // A frame routed to another replica on SQLite (there is none) goes nowhere.
    let elsewhere = Route::new("session/s1/party/0", "another-instance");
    assert!(!boxes.send(&elsewhere, vec![3]).await.unwrap());
}

/// Two replicas of one fresh PostgreSQL database, or `None` without a server.
async fn two_replicas(dir: &tempfile::TempDir) -> Option<(AppState, AppState, sqlx::AnyPool)> {
    let url = common::fresh_postgres_database("mb").await?;
    let mut config = Config::new(dir.path().join("data"));
    config.database_url = Some(url.clone());
    let a = AppState::open(config.clone()).await.unwrap();
    let b = AppState::open(config).await.unwrap();
    let db = sqlx::AnyPool::connect(&url).await.unwrap();
    Some((a, b, db))
}

async fn count(db: &sqlx::AnyPool, sql: &'static str) -> i64 {
    let (n,): (i64,) = sqlx::query_as(sql).fetch_one(db).await.unwrap();
    n
}

#[tokio::test]
async fn replicas_route_frames_through_postgresql() {
    let dir = tempfile::tempdir().unwrap();
    let Some((a, b, db)) = two_replicas(&dir).await else {
        eprintln!("TESSERA_TEST_DATABASE_URL not set: PostgreSQL skipped");
        return;
    };
    assert_ne!(a.instance(), b.instance());

    // A holds the mailbox; B finds it and sends every size, inline and stored frames mixed,
    // twice over: all arrive in order, and nothing stays stored.
    let mut inbox = a.mailboxes().open("session/s1/party/0").await.unwrap();
    let to = b
        .mailboxes()
        .route("session/s1/party/0")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(to.holder(), a.instance());
    let mut sent = Vec::new();
    for round in 0..2u8 {
        for (i, len) in SIZES.iter().enumerate() {
            let f = frame(*len, round * 16 + i as u8);
            assert!(b.mailboxes().send(&to, f.clone()).await.unwrap());
            sent.push(f);
        }
    }
    for f in &sent {
        assert_eq!(&inbox.recv().await.unwrap(), f);
    }
    assert_eq!(count(&db, "SELECT COUNT(*) FROM mailbox_frames").await, 0);

    // The same address cannot be opened on the other replica while A holds it.
    assert!(b.mailboxes().open("session/s1/party/0").await.is_err());

    // A mailbox nobody holds: the frame is dropped at once, small or large, and no row is
    // left behind.
    let nobody = Route::new("session/s1/party/9", a.instance());
    assert!(!b.mailboxes().send(&nobody, vec![1]).await.unwrap());
    assert!(!b.mailboxes().send(&nobody, frame(8_001, 1)).await.unwrap());
    // Routed to the wrong replica: dropped too.
    let wrong = Route::new("session/s1/party/0", b.instance());
    assert!(!a.mailboxes().send(&wrong, frame(9_000, 2)).await.unwrap());
    // Closed: its row goes, later frames are dropped.
    drop(inbox);
    let deadline = Instant::now() + Duration::from_secs(30);
    while b
        .mailboxes()
        .route("session/s1/party/0")
        .await
        .unwrap()
        .is_some()
    {
        assert!(Instant::now() < deadline, "the closed mailbox's row stayed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!b.mailboxes().send(&to, frame(10_000, 3)).await.unwrap());
    assert_eq!(count(&db, "SELECT COUNT(*) FROM mailbox_frames").await, 0);

    // A stored frame nobody read (its receiver died before reading it) is deleted by the
    // cleanup once older than the bound, a fresh one is not.
    let now = tessera_server::state::now();
    for at in [now - 3600, now] {
        sqlx::query("INSERT INTO mailbox_frames (mailbox, frame, sent_at) VALUES ($1, $2, $3)")
            .bind("session/gone/party/0")
            .bind(vec![7u8; 10])
            .bind(at)
            .execute(&db)
            .await
            .unwrap();
    }
    assert_eq!(a.mailboxes().clean_up(now).await.unwrap(), 1);
    assert_eq!(count(&db, "SELECT COUNT(*) FROM mailbox_frames").await, 1);
    let later = now + tessera_server::mailboxes::FRAME_TTL.as_secs() as i64 + 1;
    assert_eq!(a.mailboxes().clean_up(later).await.unwrap(), 1);
    assert_eq!(count(&db, "SELECT COUNT(*) FROM mailbox_frames").await, 0);
}

#[tokio::test]
async fn a_dead_replicas_mailboxes_are_forgotten_and_its_watchers_closed() {
    let dir = tempfile::tempdir().unwrap();
    let Some((a, b, db)) = two_replicas(&dir).await else {
        eprintln!("TESSERA_TEST_DATABASE_URL not set: PostgreSQL skipped");
        return;
    };
    let b_instance = b.instance().to_string();
    // A party on A talks to one on B.
    let mut on_a = a.mailboxes().open("session/s2/party/0").await.unwrap();
    on_a.watch(&b_instance);
    let on_b = b.mailboxes().open("session/s2/party/1").await.unwrap();
    let to_b = a
        .mailboxes()
        .route("session/s2/party/1")
        .await
        .unwrap()
        .unwrap();
    // B stops (its liveness connection closes) while its mailbox row is still there, and a
    // frame waits stored for it that it will never read.
    std::mem::forget(on_b);
    drop(b);
    assert!(a.mailboxes().send(&to_b, vec![1]).await.unwrap());
    sqlx::query("INSERT INTO mailbox_frames (mailbox, frame, sent_at) VALUES ($1, $2, $3)")
        .bind("session/s2/party/1")
        .bind(frame(20_000, 9))
        .bind(tessera_server::state::now())
        .execute(&db)
        .await
        .unwrap();

    // A's housekeeping finds B dead (as soon as PostgreSQL has released B's lock): its rows go,
    // the frame with them, and A's inbox that watches B ends.
    let deadline = Instant::now() + Duration::from_secs(60);
    while a.forget_dead_replicas().await.unwrap() == 0 {
        assert!(Instant::now() < deadline, "B was never found dead");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(on_a.recv().await.is_none());
    assert_eq!(count(&db, "SELECT COUNT(*) FROM mailbox_frames").await, 0);
    assert!(
        a.mailboxes()
            .route("session/s2/party/1")
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn a_dropped_listener_connection_ends_its_inboxes_and_comes_back() {
    let dir = tempfile::tempdir().unwrap();
    let Some((a, b, db)) = two_replicas(&dir).await else {
        eprintln!("TESSERA_TEST_DATABASE_URL not set: PostgreSQL skipped");
        return;
    };
    let mut inbox = a.mailboxes().open("session/s3/party/0").await.unwrap();
    let to = b
        .mailboxes()
        .route("session/s3/party/0")
        .await
        .unwrap()
        .unwrap();
    assert!(b.mailboxes().send(&to, vec![1]).await.unwrap());
    assert_eq!(inbox.recv().await.unwrap(), vec![1]);

    // PostgreSQL drops A's listening connection (as a restart or a network cut would).
    let channel: String = a
        .instance()
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .collect();
    let (terminated,): (i64,) = sqlx::query_as(
        "SELECT COUNT(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = current_database() AND query LIKE '%LISTEN%' AND query LIKE $1) t",
    )
    .bind(format!("%{channel}%"))
    .fetch_one(&db)
    .await
    .unwrap();
    assert_eq!(terminated, 1);
    // Frames sent meanwhile may be lost: the inbox ends rather than go on with a gap.
    assert!(inbox.recv().await.is_none());
    drop(inbox);

    // The listener is back: a new mailbox gets frames again, stored and inline.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut inbox = loop {
        match a.mailboxes().open("session/s3/party/1").await {
            Ok(inbox) => break inbox,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("{e}"),
        }
    };
    let to = Route::new("session/s3/party/1", a.instance());
    for (i, len) in SIZES.iter().enumerate() {
        assert!(b.mailboxes().send(&to, frame(*len, i as u8)).await.unwrap());
    }
    for (i, len) in SIZES.iter().enumerate() {
        assert_eq!(inbox.recv().await.unwrap(), frame(*len, i as u8));
    }
}
