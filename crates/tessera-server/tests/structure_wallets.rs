//! Structure wallets in the server's database (migration 0012, `db::wallet_parties`,
//! `wallet_parties`): the migration keeps a database of 2-of-2 wallets and sessions intact; a
//! structure's labels resolve to the server and devices, or to an error saying what is wrong;
//! a wallet and its parties are stored together or not at all; old share epochs go at a
//! switch; concurrent stores of one name leave one wallet; devices approved or revoked are
//! pending parties of a wallet until a resharing's switch. Each runs on SQLite, and on
//! PostgreSQL when `TESSERA_TEST_DATABASE_URL` names a server (a fresh database per test).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use sqlx::AnyPool;
use tessera_server::Config;
use tessera_server::db::{self, Backend, DeviceStatus, PartyKind, Protocol, WriteTx};
use tessera_server::error::ApiError;
use tessera_server::wallet_parties::{
    self as parties, Member, NewWallet, ResolveError, ResolvedStructure,
};

/// A database to test on, its migrations not applied yet.
async fn open(dir: &tempfile::TempDir, backend: Backend) -> Option<AnyPool> {
    let mut config = Config::new(dir.path());
    if backend == Backend::Postgres {
        config.database_url = Some(common::fresh_postgres_database("sw").await?);
    }
    let (pool, opened) = tessera_server::state::open_database(&config).await.unwrap();
    assert_eq!(opened, backend);
    Some(pool)
}

/// A migrated database, or none (PostgreSQL not configured: the test says so and passes).
async fn migrated(dir: &tempfile::TempDir, backend: Backend) -> Option<AnyPool> {
    let Some(pool) = open(dir, backend).await else {
        eprintln!("TESSERA_TEST_DATABASE_URL not set: PostgreSQL skipped");
        return None;
    };
    tessera_server::state::migrator(backend)
        .run(&pool)
        .await
        .unwrap();
    Some(pool)
}

async fn write(pool: &AnyPool, backend: Backend) -> WriteTx {
    WriteTx::begin(pool, backend, false, Arc::new(Default::default()))
        .await
        .unwrap()
}

async fn user(pool: &AnyPool, id: &str, name: &str) {
    db::devices::insert_user(pool, id, name, 1).await.unwrap();
}

async fn device(pool: &AnyPool, id: &str, user_id: &str, name: &str, status: DeviceStatus) {
    let key: Vec<u8> = id.bytes().cycle().take(32).collect();
    db::devices::insert(
        pool,
        &db::devices::NewDevice {
            id,
            user_id,
            name,
            identity_key: &key,
            status,
            at: 1,
        },
    )
    .await
    .unwrap();
}

async fn count(pool: &AnyPool, sql: &'static str) -> i64 {
    let (n,): (i64,) = sqlx::query_as(sql).fetch_one(pool).await.unwrap();
    n
}

// ---- The migration ----

type WalletRow = (String, String, String, i64, i64, Vec<u8>, i64, i64);
type ShareRow = (String, i64, String, Vec<u8>, i64, Option<String>);
type SessionRow = (
    String,
    String,
    String,
    String,
    String,
    Vec<u8>,
    String,
    i64,
    i64,
    i64,
    Option<String>,
    Option<String>,
);
type PolicyRow = (String, i64, String, String, String, i64);
type HolderRow = (String, String, String, String, i64);

async fn snapshot(
    pool: &AnyPool,
) -> (
    Vec<WalletRow>,
    Vec<ShareRow>,
    Vec<SessionRow>,
    Vec<PolicyRow>,
    Vec<HolderRow>,
) {
    (
        sqlx::query_as("SELECT id, user_id, name, threshold_t, threshold_n, public_key, epoch, created_at FROM wallets ORDER BY id")
            .fetch_all(pool).await.unwrap(),
        sqlx::query_as("SELECT wallet_id, epoch, state, sealed, created_at, session_id FROM server_shares ORDER BY wallet_id, epoch")
            .fetch_all(pool).await.unwrap(),
        sqlx::query_as("SELECT id, device_id, wallet_id, protocol, status, nonce, params, epoch, created_at, last_message_at, detail, owner FROM sessions ORDER BY id")
            .fetch_all(pool).await.unwrap(),
        sqlx::query_as("SELECT wallet_id, version, policy, set_by, signature, set_at FROM policies ORDER BY wallet_id, version")
            .fetch_all(pool).await.unwrap(),
        sqlx::query_as("SELECT wallet_id, structure, holders, set_by, set_at FROM server_backup_holders ORDER BY wallet_id")
            .fetch_all(pool).await.unwrap(),
    )
}

async fn session(pool: &AnyPool, id: &str, wallet_id: &str, protocol: Protocol) -> bool {
    let mut conn = pool.acquire().await.unwrap();
    db::sessions::insert_within_caps(
        &mut conn,
        &db::sessions::NewSession {
            id,
            device_id: "d-phone",
            wallet_id,
            protocol,
            nonce: &[9u8; 32],
            params: "{\"name\":\"x\"}",
            epoch: 0,
            owner: None,
        },
        &db::sessions::Caps {
            at: 100,
            cutoff: 0,
            per_device: 100,
            per_wallet: 100,
        },
    )
    .await
    .unwrap()
}

async fn migration_keeps_two_party_wallets(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let Some(pool) = open(&dir, backend).await else {
        eprintln!("TESSERA_TEST_DATABASE_URL not set: PostgreSQL skipped");
        return;
    };
    let migrator = tessera_server::state::migrator(backend);
    assert!(migrator.iter().any(|m| m.version == 12));
    // The schema of the builds before 0012, filled through the same functions they used.
    migrator.run_to(11, &pool).await.unwrap();
    user(&pool, "u-alice", "alice").await;
    device(&pool, "d-phone", "u-alice", "phone", DeviceStatus::Active).await;
    for (id, key) in [("w1", [2u8; 33]), ("w2", [3u8; 33])] {
        db::wallets::insert(
            &pool,
            &db::wallets::NewWallet {
                id,
                user_id: "u-alice",
                name: id,
                threshold_t: 2,
                threshold_n: 2,
                public_key: &key,
                epoch: 0,
                created_at: 5,
            },
        )
        .await
        .unwrap();
        db::shares::insert_active(&pool, id, 0, vec![1, 2, 3], 6)
            .await
            .unwrap();
    }
    assert!(session(&pool, "s-keygen", "w1", Protocol::Keygen).await);
    assert!(session(&pool, "s-sign", "w1", Protocol::Sign).await);
    assert!(session(&pool, "s-refresh", "w1", Protocol::Refresh).await);
    db::sessions::record_end(&pool, "s-keygen", db::SessionStatus::Done, None, 7)
        .await
        .unwrap();
    assert!(
        db::shares::store_pending(&pool, "w1", 1, vec![4, 5], 8, "s-refresh")
            .await
            .unwrap()
    );
    db::policies::insert(
        &pool,
        &db::policies::NewPolicy {
            wallet_id: "w1",
            version: 1,
            policy: "{}",
            set_by: "d-phone",
            signature: "ab",
            at: 9,
        },
    )
    .await
    .unwrap();
    db::backup_holders::set(&pool, "w2", "and(a, b)", "[]", "d-phone", 10)
        .await
        .unwrap();
    let before = snapshot(&pool).await;

    migrator.run(&pool).await.unwrap();

    assert_eq!(
        snapshot(&pool).await,
        before,
        "rows changed by the migration"
    );
    assert_eq!(
        count(
            &pool,
            "SELECT COUNT(*) FROM wallets WHERE structure IS NULL"
        )
        .await,
        2
    );
    // Today's functions still read them.
    let w1 = db::wallets::owned(&pool, "u-alice", "w1").await.unwrap();
    assert_eq!((w1.name.as_str(), w1.epoch), ("w1", 0));
    assert_eq!(
        db::wallets::ids_of_user(&pool, "u-alice").await.unwrap(),
        ["w1", "w2"]
    );
    // The indexes of sessions: one live refresh or reshare per wallet, and the live ones.
    let indexes: Vec<(String,)> = match backend {
        Backend::Sqlite => sqlx::query_as(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'sessions' \
             AND name NOT LIKE 'sqlite_autoindex%' ORDER BY name",
        ),
        Backend::Postgres => sqlx::query_as(
            "SELECT CAST(indexname AS TEXT) FROM pg_indexes WHERE tablename = 'sessions' AND indexname <> 'sessions_pkey' ORDER BY indexname",
        ),
    }
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        indexes.into_iter().map(|(n,)| n).collect::<Vec<_>>(),
        [
            "sessions_live_by_device",
            "sessions_live_by_wallet",
            "sessions_one_live_switch"
        ]
    );
    let mut conn = pool.acquire().await.unwrap();
    let second = db::sessions::insert_within_caps(
        &mut conn,
        &db::sessions::NewSession {
            id: "s-reshare-w1",
            device_id: "d-phone",
            wallet_id: "w1",
            protocol: Protocol::Reshare,
            nonce: &[9u8; 32],
            params: "{}",
            epoch: 0,
            owner: None,
        },
        &db::sessions::Caps {
            at: 100,
            cutoff: 0,
            per_device: 100,
            per_wallet: 100,
        },
    )
    .await;
    drop(conn);
    assert!(
        matches!(&second, Err(sqlx::Error::Database(e)) if e.is_unique_violation()),
        "a reshare next to a live refresh: {second:?}"
    );
    assert!(session(&pool, "s-reshare-w2", "w2", Protocol::Reshare).await);
    let (protocol,): (Protocol,) =
        sqlx::query_as("SELECT protocol FROM sessions WHERE id = 's-reshare-w2'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(protocol, Protocol::Reshare);
    let bogus = sqlx::query(
        "INSERT INTO sessions (id, device_id, wallet_id, protocol, status, nonce, params, epoch, created_at, last_message_at) \
         VALUES ('s-bogus', 'd-phone', 'w2', 'bogus', 'done', $1, '{}', 0, 1, 1)",
    )
    .bind(vec![0u8])
    .execute(&pool)
    .await;
    assert!(bogus.is_err(), "the protocol's CHECK stands");
    // Foreign keys onto the rebuilt wallets table still hold.
    assert!(
        db::shares::insert_active(&pool, "no-such-wallet", 0, vec![1], 1)
            .await
            .is_err()
    );
    // A 2-of-2 wallet still needs its key; a structure wallet may wait for it.
    let keyless = sqlx::query(
        "INSERT INTO wallets (id, user_id, name, threshold_t, threshold_n, epoch, created_at) VALUES ('w3', 'u-alice', 'w3', 2, 2, 0, 1)",
    )
    .execute(&pool)
    .await;
    assert!(keyless.is_err());
    if backend == Backend::Sqlite {
        let problems: Vec<(String, i64, String, i64)> = sqlx::query_as("PRAGMA foreign_key_check")
            .fetch_all(&pool)
            .await
            .unwrap();
        assert!(problems.is_empty(), "{problems:?}");
        let (ok,): (String,) = sqlx::query_as("PRAGMA integrity_check")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(ok, "ok");
    }
}

#[tokio::test]
async fn sqlite_migration_keeps_two_party_wallets_and_sessions() {
    migration_keeps_two_party_wallets(Backend::Sqlite).await;
}

#[tokio::test]
async fn postgres_migration_keeps_two_party_wallets_and_sessions() {
    migration_keeps_two_party_wallets(Backend::Postgres).await;
}

// ---- Resolution ----

/// alice: phone, Alice's laptop (active), tablet (pending), old phone (revoked), desk (revoked)
/// and Desk (active), two active devices whose names give the label `watch`, one whose name
/// gives none, and one named `bob.phone`; bob: phone (active), tablet (pending); carol: one
/// phone; dave: only a pending device.
async fn people(pool: &AnyPool) {
    user(pool, "u-alice", "alice").await;
    user(pool, "u-bob", "bob").await;
    user(pool, "u-carol", "carol").await;
    user(pool, "u-dave", "dave").await;
    for (id, name, status) in [
        ("a-phone", "Phone", DeviceStatus::Active),
        ("a-laptop", "Alice's laptop", DeviceStatus::Active),
        ("a-tablet", "tablet", DeviceStatus::Pending),
        ("a-old", "old phone", DeviceStatus::Revoked),
        ("a-desk-old", "desk", DeviceStatus::Revoked),
        ("a-desk", "Desk", DeviceStatus::Active),
        ("a-watch1", "watch", DeviceStatus::Active),
        ("a-watch2", "Watch!", DeviceStatus::Active),
        (
            "a-cyr",
            "\u{442}\u{435}\u{43b}\u{435}\u{444}\u{43e}\u{43d}",
            DeviceStatus::Active,
        ),
        ("a-bobphone", "bob.phone", DeviceStatus::Active),
    ] {
        device(pool, id, "u-alice", name, status).await;
    }
    device(pool, "b-phone", "u-bob", "phone", DeviceStatus::Active).await;
    device(pool, "b-tablet", "u-bob", "tablet", DeviceStatus::Pending).await;
    device(
        pool,
        "c-phone",
        "u-carol",
        "Carol's phone",
        DeviceStatus::Active,
    )
    .await;
    device(pool, "d-phone", "u-dave", "phone", DeviceStatus::Pending).await;
}

async fn resolve(
    pool: &AnyPool,
    owner: &str,
    text: &str,
) -> Result<ResolvedStructure, ResolveError> {
    let mut conn = pool.acquire().await.unwrap();
    parties::resolve(&mut conn, owner, text, &[]).await
}

fn devices_of(resolved: &ResolvedStructure) -> Vec<(String, Option<(String, bool)>)> {
    resolved
        .parties()
        .iter()
        .map(|p| {
            let member = match &p.member {
                Member::Server => None,
                Member::Device {
                    device_id, invited, ..
                } => Some((device_id.clone(), *invited)),
            };
            (p.label.clone(), member)
        })
        .collect()
}

#[track_caller]
fn refused(result: Result<ResolvedStructure, ResolveError>, says: &[&str]) -> ResolveError {
    let e = result.expect_err("resolution must fail");
    let message = e.to_string();
    for part in says {
        assert!(message.contains(part), "{message:?} should say {part:?}");
    }
    let api: ApiError = ResolveError::Grammar(message).into();
    assert!(matches!(api, ApiError::BadRequest(_)));
    e
}

async fn resolution(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let Some(pool) = migrated(&dir, backend).await else {
        return;
    };
    people(&pool).await;

    // Labels: the server, devices by their party label, in written order.
    let ok = resolve(
        &pool,
        "u-alice",
        "and(server, or(phone, alices-laptop, desk))",
    )
    .await
    .unwrap();
    assert_eq!(
        devices_of(&ok),
        [
            ("server".to_string(), None),
            ("phone".to_string(), Some(("a-phone".to_string(), false))),
            (
                "alices-laptop".to_string(),
                Some(("a-laptop".to_string(), false))
            ),
            ("desk".to_string(), Some(("a-desk".to_string(), false))),
        ]
    );
    assert_eq!(ok.text(), "and(server, or(phone, alices-laptop, desk))");
    assert_eq!(ok.needs_acceptance().count(), 0);
    assert_eq!(ok.smallest_quorum(), 2);

    // Another user's device: `user:device`, stored as `user.device`, to be accepted.
    let invited = resolve(&pool, "u-alice", "AND(server, phone, bob:phone)")
        .await
        .unwrap();
    assert_eq!(invited.text(), "and(server, phone, bob.phone)");
    assert_eq!(
        devices_of(&invited)[2],
        ("bob.phone".to_string(), Some(("b-phone".to_string(), true)))
    );
    assert_eq!(
        invited
            .needs_acceptance()
            .map(|p| p.label.as_str())
            .collect::<Vec<_>>(),
        ["bob.phone"]
    );

    // Grammar errors as the parser words them, another user's device as written.
    refused(
        resolve(&pool, "u-alice", "and(server, or(phone))").await,
        &["or(phone): or needs at least 2 children, found 1"],
    );
    refused(
        resolve(&pool, "u-alice", "and(server phone)").await,
        &["at column 12"],
    );
    refused(
        resolve(&pool, "u-alice", "and(server, phone, bob:phone, bob:phone)").await,
        &["party \"bob:phone\" appears twice"],
    );
    refused(
        resolve(&pool, "u-alice", "and(server, phone, phone)").await,
        &["party \"phone\" appears twice"],
    );
    refused(
        resolve(&pool, "u-alice", "and(server, phone, Bob:phone)").await,
        &["invalid party label \"Bob:phone\"", "lowercase"],
    );
    refused(
        resolve(&pool, "u-alice", "or(server, phone)").await,
        &["alone is authorised"],
    );
    // The server is a party of every wallet it stores.
    assert!(matches!(
        refused(
            resolve(&pool, "u-alice", "and(phone, alices-laptop)").await,
            &["does not name \"server\""]
        ),
        ResolveError::NoServer
    ));
    // Unknown, pending, revoked, ambiguous devices of the user.
    assert!(matches!(
        refused(
            resolve(&pool, "u-alice", "and(server, tablet2)").await,
            &[
                "no device labelled \"tablet2\"",
                "\"phone\"",
                "\"alices-laptop\"",
                "cannot be named"
            ]
        ),
        ResolveError::UnknownDevice { .. }
    ));
    assert!(matches!(
        refused(
            resolve(&pool, "u-alice", "and(server, tablet)").await,
            &["\"tablet\"", "pending approval"]
        ),
        ResolveError::DeviceNotActive {
            status: DeviceStatus::Pending,
            ..
        }
    ));
    assert!(matches!(
        refused(
            resolve(&pool, "u-alice", "and(server, old-phone)").await,
            &["\"old phone\"", "is revoked"]
        ),
        ResolveError::DeviceNotActive {
            status: DeviceStatus::Revoked,
            ..
        }
    ));
    assert!(matches!(
        refused(
            resolve(&pool, "u-alice", "and(server, watch)").await,
            &["\"watch\" fits several of your devices", "\"Watch!\""]
        ),
        ResolveError::AmbiguousLabel { .. }
    ));
    // Other users' devices.
    refused(
        resolve(&pool, "u-alice", "and(server, phone, dave2:phone)").await,
        &["no user named \"dave2\""],
    );
    assert!(matches!(
        refused(
            resolve(&pool, "u-alice", "and(server, phone, bob:tablet)").await,
            &["user \"bob\" has no active device labelled \"tablet\""]
        ),
        ResolveError::UnknownUserDevice { .. }
    ));
    refused(
        resolve(&pool, "u-alice", "and(server, alice:phone)").await,
        &["names your own device; write it as \"phone\""],
    );
    for bad in ["bob:a:b", ":phone", "bob:"] {
        assert!(matches!(
            refused(
                resolve(&pool, "u-alice", &format!("and(server, phone, {bad})")).await,
                &[&format!("{bad:?} is not user:device")]
            ),
            ResolveError::BadInvite { .. }
        ));
    }
    refused(
        resolve(&pool, "u-alice", "and(server, bob.phone, bob:phone)").await,
        &["\"bob.phone\" and \"bob:phone\" would be the same party label"],
    );
    // The owner holds a share.
    assert!(matches!(
        refused(
            resolve(&pool, "u-alice", "and(server, bob:phone)").await,
            &["names none of your devices"]
        ),
        ResolveError::NoOwnDevice
    ));

    // Default structures: the requester and the active devices online, the other active ones
    // to join later, by label.
    let mut conn = pool.acquire().await.unwrap();
    let (carol, later) = parties::default_structure(&mut conn, "u-carol", "c-phone", 100)
        .await
        .unwrap();
    assert_eq!(carol.text(), "and(server, carols-phone)");
    assert!(later.is_empty());
    drop(conn);
    device(&pool, "c-laptop", "u-carol", "laptop", DeviceStatus::Active).await;
    device(&pool, "c-tab", "u-carol", "tab", DeviceStatus::Pending).await;
    device(&pool, "c-desk", "u-carol", "desk", DeviceStatus::Active).await;
    let mut conn = pool.acquire().await.unwrap();
    let (carol, later) = parties::default_structure(&mut conn, "u-carol", "c-phone", 100)
        .await
        .unwrap();
    assert_eq!(carol.text(), "and(server, carols-phone)");
    assert_eq!(
        later,
        [("c-desk", "desk"), ("c-laptop", "laptop")].map(|(i, l)| (i.to_owned(), l.to_owned()))
    );
    // The laptop's agent waits on the server until 130: online at 100, not at 131.
    db::wallet_changes::present_until(&mut *conn, "c-laptop", "r1", 130)
        .await
        .unwrap();
    let (carol, later) = parties::default_structure(&mut conn, "u-carol", "c-phone", 100)
        .await
        .unwrap();
    assert_eq!(carol.text(), "and(server, or(carols-phone, laptop))");
    assert_eq!(carol.smallest_quorum(), 2);
    assert_eq!(later, [("c-desk".to_owned(), "desk".to_owned())]);
    let (carol, _) = parties::default_structure(&mut conn, "u-carol", "c-laptop", 131)
        .await
        .unwrap();
    assert_eq!(carol.text(), "and(server, laptop)");
    assert!(matches!(
        parties::default_structure(&mut conn, "u-dave", "d-none", 100).await,
        Err(ResolveError::NoActiveDevice)
    ));
    let alice = parties::default_structure(&mut conn, "u-alice", "a-phone", 100)
        .await
        .unwrap_err();
    assert!(
        matches!(&alice, ResolveError::UnlabelledDevice { name } if name == "\u{442}\u{435}\u{43b}\u{435}\u{444}\u{43e}\u{43d}"),
        "{alice}"
    );
    assert!(alice.to_string().contains("gives no structure label"));
    assert!(
        db::devices::revoke(&mut *conn, "a-cyr", "u-alice", 2)
            .await
            .unwrap()
    );
    let alice = parties::default_structure(&mut conn, "u-alice", "a-phone", 100)
        .await
        .unwrap_err();
    assert!(
        alice
            .to_string()
            .contains("the label \"watch\" fits several of your devices (\"Watch!\", \"watch\")"),
        "{alice}"
    );
}

#[tokio::test]
async fn sqlite_structures_resolve_or_say_why_not() {
    resolution(Backend::Sqlite).await;
}

#[tokio::test]
async fn postgres_structures_resolve_or_say_why_not() {
    resolution(Backend::Postgres).await;
}

// ---- Storage ----

async fn storage(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let Some(pool) = migrated(&dir, backend).await else {
        return;
    };
    people(&pool).await;

    let resolved = resolve(
        &pool,
        "u-alice",
        "and(server, or(phone, alices-laptop), bob:phone)",
    )
    .await
    .unwrap();
    let mut tx = write(&pool, backend).await;
    parties::store(
        &mut tx,
        &NewWallet {
            id: "sw1",
            owner_id: "u-alice",
            name: "treasury",
            public_key: None,
            epoch: 0,
            at: 50,
        },
        &resolved,
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();

    let stored = db::wallet_parties::wallet(&pool, "sw1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        stored.structure.as_deref(),
        Some("and(server, or(phone, alices-laptop), bob.phone)")
    );
    assert_eq!((stored.public_key, stored.epoch), (None, 0));
    let (t, n): (i64, i64) =
        sqlx::query_as("SELECT threshold_t, threshold_n FROM wallets WHERE id = 'sw1'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!((t, n), (3, 4));
    let stored = db::wallet_parties::of_wallet(&pool, "sw1").await.unwrap();
    let summary: Vec<_> = stored
        .iter()
        .map(|p| {
            (
                p.party,
                p.label.as_str(),
                p.kind,
                p.device_id.as_deref(),
                p.user_id.as_deref(),
                p.accepted.clone(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (0, "server", PartyKind::Server, None, None, None),
            (
                1,
                "phone",
                PartyKind::Device,
                Some("a-phone"),
                Some("u-alice"),
                None
            ),
            (
                2,
                "alices-laptop",
                PartyKind::Device,
                Some("a-laptop"),
                Some("u-alice"),
                None
            ),
            (
                3,
                "bob.phone",
                PartyKind::Device,
                Some("b-phone"),
                Some("u-bob"),
                None
            ),
        ]
    );
    // Without a key, today's wallet functions do not see it; bob's `wallets` does.
    assert!(matches!(
        db::wallets::owned(&pool, "u-alice", "sw1").await,
        Err(ApiError::NotFound(_))
    ));
    assert!(
        db::wallets::ids_of_user(&pool, "u-alice")
            .await
            .unwrap()
            .is_empty()
    );
    let bobs = db::wallet_parties::of_user_devices(&pool, "u-bob")
        .await
        .unwrap();
    assert_eq!(bobs.len(), 1);
    assert_eq!(
        (
            bobs[0].wallet_id.as_str(),
            bobs[0].wallet_name.as_str(),
            bobs[0].owner_name.as_str(),
            bobs[0].party,
            bobs[0].label.as_str(),
            bobs[0].device_id.as_str(),
            bobs[0].accepted_at
        ),
        ("sw1", "treasury", "alice", 3, "bob.phone", "b-phone", None)
    );
    assert_eq!(
        db::wallet_parties::of_user_devices(&pool, "u-alice")
            .await
            .unwrap()
            .len(),
        2
    );
    assert!(
        db::wallet_parties::of_user_devices(&pool, "u-carol")
            .await
            .unwrap()
            .is_empty()
    );
    // Acceptance: recorded once, the first stays.
    assert!(
        db::wallet_parties::record_acceptance(&pool, "sw1", "b-phone", "aa11", 60)
            .await
            .unwrap()
    );
    assert!(
        !db::wallet_parties::record_acceptance(&pool, "sw1", "b-phone", "bb22", 61)
            .await
            .unwrap()
    );
    assert!(
        !db::wallet_parties::record_acceptance(&pool, "sw1", "c-phone", "cc33", 61)
            .await
            .unwrap()
    );
    let stored = db::wallet_parties::of_wallet(&pool, "sw1").await.unwrap();
    assert_eq!(stored[3].accepted, Some(("aa11".to_string(), 60)));
    assert_eq!(
        db::wallet_parties::of_user_devices(&pool, "u-bob")
            .await
            .unwrap()[0]
            .accepted_at,
        Some(60)
    );
    // The keygen's end sets the key once; today's functions see the wallet then.
    let key = [2u8; 33];
    assert!(
        db::wallet_parties::set_public_key(&pool, "sw1", &key)
            .await
            .unwrap()
    );
    assert!(
        !db::wallet_parties::set_public_key(&pool, "sw1", &[3u8; 33])
            .await
            .unwrap()
    );
    assert_eq!(
        db::wallet_parties::wallet(&pool, "sw1")
            .await
            .unwrap()
            .unwrap()
            .public_key
            .as_deref(),
        Some(key.as_slice())
    );
    assert_eq!(
        db::wallets::ids_of_user(&pool, "u-alice").await.unwrap(),
        ["sw1"]
    );

    // A failed store leaves nothing: the name taken...
    let mut tx = write(&pool, backend).await;
    let taken = parties::store(
        &mut tx,
        &NewWallet {
            id: "sw2",
            owner_id: "u-alice",
            name: "treasury",
            public_key: None,
            epoch: 0,
            at: 70,
        },
        &resolved,
    )
    .await;
    assert!(
        matches!(&taken, Err(ApiError::Conflict(m)) if m == "a wallet named \"treasury\" exists"),
        "{:?}",
        taken.err()
    );
    drop(tx);
    // ...or a party the schema refuses after the wallet row was written.
    let mut tx = write(&pool, backend).await;
    let bad = db::wallet_parties::insert(
        &mut tx,
        &db::wallet_parties::NewStructureWallet {
            id: "sw3",
            user_id: "u-alice",
            name: "other",
            structure: "and(server, phone)",
            smallest_quorum: 2,
            public_key: None,
            epoch: 0,
            created_at: 70,
        },
        &[
            db::wallet_parties::NewParty {
                party: 0,
                label: "server",
                kind: PartyKind::Server,
                device: None,
            },
            db::wallet_parties::NewParty {
                party: 1,
                label: "phone",
                kind: PartyKind::Device,
                device: Some(("a-phone", "u-alice")),
            },
            db::wallet_parties::NewParty {
                party: 2,
                label: "laptop",
                kind: PartyKind::Device,
                device: Some(("a-phone", "u-alice")),
            },
        ],
    )
    .await;
    assert!(
        matches!(&bad, Err(ApiError::BadRequest(m)) if m.contains("party 2 (\"laptop\")")),
        "{:?}",
        bad.err()
    );
    drop(tx);
    assert_eq!(
        count(
            &pool,
            "SELECT COUNT(*) FROM wallets WHERE id IN ('sw2', 'sw3')"
        )
        .await,
        0
    );
    assert_eq!(
        count(
            &pool,
            "SELECT COUNT(*) FROM wallet_parties WHERE wallet_id <> 'sw1'"
        )
        .await,
        0
    );
    assert_eq!(count(&pool, "SELECT COUNT(*) FROM wallet_parties").await, 4);
}

#[tokio::test]
async fn sqlite_structure_wallets_are_stored_with_their_parties_or_not_at_all() {
    storage(Backend::Sqlite).await;
}

#[tokio::test]
async fn postgres_structure_wallets_are_stored_with_their_parties_or_not_at_all() {
    storage(Backend::Postgres).await;
}

// ---- Old epochs ----

async fn old_epochs(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let Some(pool) = migrated(&dir, backend).await else {
        return;
    };
    user(&pool, "u-alice", "alice").await;
    for id in ["w1", "w2"] {
        db::wallets::insert(
            &pool,
            &db::wallets::NewWallet {
                id,
                user_id: "u-alice",
                name: id,
                threshold_t: 2,
                threshold_n: 2,
                public_key: &[2u8; 33],
                epoch: 0,
                created_at: 1,
            },
        )
        .await
        .unwrap();
    }
    // Epochs 0 to 2 of w1 (a crash left the older ones), a pending 3; w2 untouched.
    for epoch in 0..3 {
        db::shares::insert_active(&pool, "w1", epoch, vec![epoch as u8], 1)
            .await
            .unwrap();
    }
    assert!(
        db::shares::store_pending(&pool, "w1", 3, vec![3], 2, "s")
            .await
            .unwrap()
    );
    db::shares::insert_active(&pool, "w2", 0, vec![9], 1)
        .await
        .unwrap();
    let mut tx = write(&pool, backend).await;
    assert_eq!(
        db::shares::delete_old_epochs(&mut *tx, "w1", 2)
            .await
            .unwrap(),
        2
    );
    tx.commit().await.unwrap();
    let left: Vec<(String, i64, String)> = sqlx::query_as(
        "SELECT wallet_id, epoch, state FROM server_shares ORDER BY wallet_id, epoch",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        left,
        [
            ("w1".to_string(), 2, "active".to_string()),
            ("w1".to_string(), 3, "pending".to_string()),
            ("w2".to_string(), 0, "active".to_string()),
        ]
    );
    assert_eq!(
        db::shares::delete_old_epochs(&pool, "w1", 2).await.unwrap(),
        0
    );
}

#[tokio::test]
async fn sqlite_a_switch_leaves_only_the_current_and_pending_epochs() {
    old_epochs(Backend::Sqlite).await;
}

#[tokio::test]
async fn postgres_a_switch_leaves_only_the_current_and_pending_epochs() {
    old_epochs(Backend::Postgres).await;
}

// ---- Concurrent stores ----

async fn concurrent_stores(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let Some(pool) = migrated(&dir, backend).await else {
        return;
    };
    people(&pool).await;
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let pool = pool.clone();
            tokio::spawn(async move {
                let mut tx = write(&pool, backend).await;
                let resolved =
                    parties::resolve(&mut tx, "u-alice", "and(server, phone, bob:phone)", &[])
                        .await
                        .unwrap();
                parties::store(
                    &mut tx,
                    &NewWallet {
                        id: &format!("race{i}"),
                        owner_id: "u-alice",
                        name: "vault",
                        public_key: None,
                        epoch: 0,
                        at: 1,
                    },
                    &resolved,
                )
                .await?;
                tx.commit().await
            })
        })
        .collect();
    let mut stored = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(()) => stored += 1,
            Err(ApiError::Conflict(m)) => assert_eq!(m, "a wallet named \"vault\" exists"),
            Err(other) => panic!("not a conflict: {other:?}"),
        }
    }
    assert_eq!(stored, 1);
    assert_eq!(
        count(&pool, "SELECT COUNT(*) FROM wallets WHERE name = 'vault'").await,
        1
    );
    assert_eq!(count(&pool, "SELECT COUNT(*) FROM wallet_parties").await, 3);
    assert_eq!(
        count(
            &pool,
            "SELECT COUNT(*) FROM wallet_parties p WHERE NOT EXISTS \
             (SELECT 1 FROM wallets w WHERE w.id = p.wallet_id AND w.name = 'vault')"
        )
        .await,
        0
    );
}

#[tokio::test]
async fn sqlite_fifty_concurrent_stores_of_one_name_leave_one_wallet() {
    concurrent_stores(Backend::Sqlite).await;
}

#[tokio::test]
async fn postgres_fifty_concurrent_stores_of_one_name_leave_one_wallet() {
    concurrent_stores(Backend::Postgres).await;
}

// ---- Party changes waiting for a resharing ----

/// An approved device is to join the user's structure wallets with a key that it can be added
/// to; a revoked one is to leave those it is a party of (and no longer joins any); a switch
/// settles the changes it makes true, and only those.
async fn pending_changes(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let Some(pool) = migrated(&dir, backend).await else {
        return;
    };
    people(&pool).await;
    // `and(server, or(phone, alices-laptop))` with a key; the same without one (its keygen has
    // not ended); and a shape a device cannot simply be added to.
    for (id, text, key) in [
        ("sw1", "and(server, or(phone, alices-laptop))", true),
        ("sw2", "and(server, or(phone, alices-laptop))", false),
        ("sw3", "and(server, phone, alices-laptop)", true),
    ] {
        let resolved = resolve(&pool, "u-alice", text).await.unwrap();
        let mut tx = write(&pool, backend).await;
        parties::store(
            &mut tx,
            &NewWallet {
                id,
                owner_id: "u-alice",
                name: id,
                public_key: key.then_some(&[2u8; 33][..]),
                epoch: 0,
                at: 50,
            },
            &resolved,
        )
        .await
        .unwrap();
        tx.commit().await.unwrap();
    }
    let mut tx = write(&pool, backend).await;
    let joins = tessera_server::reshare::record_joins(&mut tx, "u-alice", "a-desk", "Desk")
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(joins, ["sw1"]);
    let mut tx = write(&pool, backend).await;
    let leaves = db::wallet_changes::on_revocation(&mut tx, "a-laptop", 60)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(leaves, ["sw1", "sw2", "sw3"]);
    let summary = |changes: Vec<db::wallet_changes::PendingChange>| {
        let mut listed: Vec<_> = changes
            .into_iter()
            .map(|c| (c.device_id, c.label, c.change))
            .collect();
        listed.sort();
        listed
    };
    assert_eq!(
        summary(db::wallet_changes::of_wallet(&pool, "sw1").await.unwrap()),
        [
            ("a-desk".to_string(), None, "add".to_string()),
            (
                "a-laptop".to_string(),
                Some("alices-laptop".to_string()),
                "remove".to_string()
            ),
        ]
    );
    // The switch to `and(server, or(phone, desk))` settles both; sw2's change stays.
    let mut tx = write(&pool, backend).await;
    let new_parties = [
        db::wallet_parties::NewParty {
            party: 0,
            label: "server",
            kind: PartyKind::Server,
            device: None,
        },
        db::wallet_parties::NewParty {
            party: 1,
            label: "phone",
            kind: PartyKind::Device,
            device: Some(("a-phone", "u-alice")),
        },
        db::wallet_parties::NewParty {
            party: 2,
            label: "desk",
            kind: PartyKind::Device,
            device: Some(("a-desk", "u-alice")),
        },
    ];
    assert!(
        db::wallet_parties::switch_structure(
            &mut tx,
            "sw1",
            "and(server, or(phone, desk))",
            2,
            1,
            &new_parties
        )
        .await
        .unwrap()
    );
    db::wallet_changes::settle(&mut tx, "sw1").await.unwrap();
    tx.commit().await.unwrap();
    assert!(
        db::wallet_changes::of_wallet(&pool, "sw1")
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        db::wallet_changes::of_wallet(&pool, "sw2")
            .await
            .unwrap()
            .len(),
        1
    );
    // A switch from an epoch the wallet is not at changes nothing.
    let mut tx = write(&pool, backend).await;
    assert!(
        !db::wallet_parties::switch_structure(&mut tx, "sw1", "and(server, phone)", 2, 1, &[])
            .await
            .unwrap()
    );
    // Revoking a device that was to join: it no longer is.
    tx.commit().await.unwrap();
    let mut tx = write(&pool, backend).await;
    let joins = tessera_server::reshare::record_joins(&mut tx, "u-alice", "a-watch1", "watch")
        .await
        .unwrap();
    assert_eq!(joins, ["sw1"]);
    db::wallet_changes::on_revocation(&mut tx, "a-watch1", 70)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert!(
        db::wallet_changes::of_wallet(&pool, "sw1")
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn sqlite_approved_devices_join_and_revoked_ones_leave_at_the_next_switch() {
    pending_changes(Backend::Sqlite).await;
}

#[tokio::test]
async fn postgres_approved_devices_join_and_revoked_ones_leave_at_the_next_switch() {
    pending_changes(Backend::Postgres).await;
}
