//! The audit log against real server processes on SQLite and PostgreSQL: what is recorded, and
//! that editing, deleting or reordering rows directly in the database is detected.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

use common::{Backend, Server, start};
use tessera_client::{ServerClient, WalletRecord};
use tessera_core::DerivationPath;

mod common;

/// `tessera audit verify` straight on the database; (ok, output).
fn verify_offline(server: &Server) -> (bool, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tessera"));
    cmd.args(["audit", "verify"])
        .env_remove("TESSERA_DATABASE_URL");
    match &server.database_url {
        Some(u) => cmd.args(["--database-url", u]),
        None => cmd.arg("--data-dir").arg(&server.data),
    };
    let out = cmd.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// A user with a wallet that signed and refreshed.
async fn activity(server: &Server, home: &Path) -> (ServerClient, String) {
    let id = common::identity(home);
    let mut client = ServerClient::new(&server.url).unwrap();
    let device = client.register(&id, "auditee", "laptop").await.unwrap();
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
    let wallet_id = share.wallet_id().to_string();
    let sig = client
        .sign(&share, [7; 32], &DerivationPath::root(), |_, _| {})
        .await
        .unwrap();
    share.public_key().verify(&[7; 32], &sig).unwrap();
    let mut record = WalletRecord::new(share);
    client.refresh(&mut record, |_, _| Ok(())).await.unwrap();
    // Let the server write the records of the sessions' ends.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    (client, wallet_id)
}

async fn records_and_verification(backend: Backend) {
    let server = start(backend);
    let home = tempfile::tempdir().unwrap();
    let (client, wallet_id) = activity(&server, home.path()).await;
    let records = client.audit(None).await.unwrap();
    let kinds: Vec<&str> = records.iter().map(|r| r.kind.as_str()).collect();
    for expected in [
        "device.registered",
        "token.issued",
        "session.created",
        "keygen.done",
        "sign.requested",
        "sign.completed",
        "refresh.done",
    ] {
        assert!(
            kinds.contains(&expected),
            "{backend:?}: no {expected} in {kinds:?}"
        );
    }
    let completed = records.iter().find(|r| r.kind == "sign.completed").unwrap();
    assert!(
        completed.detail.contains(&hex::encode([7u8; 32])),
        "{}",
        completed.detail
    );
    assert!(
        completed.detail.contains("signature"),
        "{}",
        completed.detail
    );
    assert_eq!(completed.wallet_id.as_deref(), Some(wallet_id.as_str()));
    // Per wallet, and another user's wallet is not found.
    let of_wallet = client.audit(Some(&wallet_id)).await.unwrap();
    assert!(
        of_wallet
            .iter()
            .all(|r| r.wallet_id.as_deref() == Some(&wallet_id))
    );
    assert!(
        client
            .audit(Some("00112233445566778899aabbccddeeff"))
            .await
            .is_err()
    );
    // The chain verifies through the server and directly on the database.
    let v = client.audit_verify().await.unwrap();
    assert!(v.first_bad.is_none(), "{v:?}");
    assert!(v.records >= records.len() as u64);
    let (ok, out) = verify_offline(&server);
    assert!(ok, "{out}");
    assert!(out.contains("intact"), "{out}");
}

#[tokio::test]
async fn what_happens_is_recorded_and_the_chain_verifies() {
    records_and_verification(Backend::Sqlite).await;
    records_and_verification(Backend::Postgres).await;
}

/// One way of tampering, on a fresh server: the verification names the first bad record.
async fn tamper(backend: Backend, how: &str) {
    let server = start(backend);
    let home = tempfile::tempdir().unwrap();
    let (client, _) = activity(&server, home.path()).await;
    let pool = server.database().await;
    let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM audit_log")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(n >= 8, "{n}");
    let (expected_seq, expected_reason) = match how {
        "edit" => {
            // Hide which digest was signed.
            sqlx::query(
                "UPDATE audit_log SET detail = '{\"digest\":\"00\"}' WHERE kind = 'sign.requested'",
            )
            .execute(&pool)
            .await
            .unwrap();
            let (seq,): (i64,) =
                sqlx::query_as("SELECT seq FROM audit_log WHERE kind = 'sign.requested'")
                    .fetch_one(&pool)
                    .await
                    .unwrap();
            (seq, "was altered")
        }
        "delete" => {
            sqlx::query("DELETE FROM audit_log WHERE seq = 4")
                .execute(&pool)
                .await
                .unwrap();
            (5, "record 4 is missing")
        }
        "reorder" => {
            // Swap the contents of records 3 and 5, hashes included.
            let swap = |a: i64, b: i64| {
                let pool = pool.clone();
                async move {
                    sqlx::query("UPDATE audit_log SET seq = -1 WHERE seq = $1")
                        .bind(a)
                        .execute(&pool)
                        .await
                        .unwrap();
                    sqlx::query("UPDATE audit_log SET seq = $1 WHERE seq = $2")
                        .bind(a)
                        .bind(b)
                        .execute(&pool)
                        .await
                        .unwrap();
                    sqlx::query("UPDATE audit_log SET seq = $1 WHERE seq = -1")
                        .bind(b)
                        .execute(&pool)
                        .await
                        .unwrap();
                }
            };
            swap(3, 5).await;
            (3, "does not follow")
        }
        _ => unreachable!(),
    };
    let v = client.audit_verify().await.unwrap();
    let bad = v
        .first_bad
        .unwrap_or_else(|| panic!("{backend:?} {how}: not detected"));
    assert_eq!(bad.seq, expected_seq as u64, "{backend:?} {how}: {bad:?}");
    assert!(
        bad.reason.contains(expected_reason),
        "{backend:?} {how}: {bad:?}"
    );
    let (ok, out) = verify_offline(&server);
    assert!(!ok, "{out}");
    assert!(
        out.contains(&format!("BROKEN at record {expected_seq}")),
        "{out}"
    );
}

#[tokio::test]
async fn editing_deleting_or_reordering_rows_is_detected_on_sqlite() {
    for how in ["edit", "delete", "reorder"] {
        tamper(Backend::Sqlite, how).await;
    }
}

#[tokio::test]
async fn editing_deleting_or_reordering_rows_is_detected_on_postgres() {
    for how in ["edit", "delete", "reorder"] {
        tamper(Backend::Postgres, how).await;
    }
}
