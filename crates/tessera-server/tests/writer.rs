//! SQLite's write transactions run on one connection (`db::Writer`), one at a time: a
//! transaction dropped before its commit, or whose task is aborted in the middle of a
//! statement, is rolled back (SQLite's write lock given back at once) and the next one starts; 60 concurrent transactions, half of them
//! dropped, leave exactly the committed half.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use tessera_server::{AppState, Config};

async fn state(dir: &tempfile::TempDir) -> AppState {
    let state = AppState::open(Config::new(dir.path().join("data")))
        .await
        .unwrap();
    sqlx::query("CREATE TABLE marks (id TEXT PRIMARY KEY)")
        .execute(state.db())
        .await
        .unwrap();
    state
}

async fn marks(state: &AppState) -> Vec<String> {
    let rows: Vec<(String,)> = sqlx::query_as("SELECT id FROM marks ORDER BY id")
        .fetch_all(state.db())
        .await
        .unwrap();
    rows.into_iter().map(|(id,)| id).collect()
}

async fn mark(tx: &mut tessera_server::db::WriteTx, id: &str) {
    sqlx::query("INSERT INTO marks (id) VALUES ($1)")
        .bind(id)
        .execute(&mut **tx)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_and_aborted_transactions_roll_back_and_the_next_one_starts() {
    let dir = tempfile::tempdir().unwrap();
    let state = state(&dir).await;

    // Dropped without its commit.
    let mut tx = state.begin_write().await.unwrap();
    mark(&mut tx, "dropped").await;
    drop(tx);
    // Its rollback gives SQLite's write lock back: a write on another connection goes through
    // (an open transaction would hold it, and that write would wait for `busy_timeout`, 10 s).
    tokio::time::timeout(
        Duration::from_secs(5),
        sqlx::query("INSERT INTO marks (id) VALUES ('after-drop')").execute(state.db()),
    )
    .await
    .expect("the dropped transaction is rolled back")
    .unwrap();
    // Aborted in the middle of a long statement, after a write.
    let aborted = tokio::spawn({
        let state = state.clone();
        async move {
            let mut tx = state.begin_write().await.unwrap();
            mark(&mut tx, "aborted").await;
            sqlx::query(
                "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 20000000) \
                 SELECT COUNT(*) FROM n",
            )
            .execute(&mut *tx)
            .await
            .unwrap();
            tx.commit().await.unwrap();
        }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    aborted.abort();
    assert!(aborted.await.unwrap_err().is_cancelled());

    let mut tx = tokio::time::timeout(Duration::from_secs(20), state.begin_write())
        .await
        .expect("the writer is free again")
        .unwrap();
    mark(&mut tx, "committed").await;
    tx.commit().await.unwrap();
    assert_eq!(marks(&state).await, ["after-drop", "committed"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixty_concurrent_transactions_leave_exactly_the_committed_ones() {
    let dir = tempfile::tempdir().unwrap();
    let state = state(&dir).await;
    let tasks: Vec<_> = (0..60)
        .map(|i| {
            let state = state.clone();
            tokio::spawn(async move {
                let mut tx = state.begin_write().await.unwrap();
                mark(&mut tx, &format!("{i:02}")).await;
                tokio::task::yield_now().await;
                if i % 2 == 0 {
                    tx.commit().await.unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let expected: Vec<String> = (0..60).step_by(2).map(|i| format!("{i:02}")).collect();
    assert_eq!(marks(&state).await, expected);
}
