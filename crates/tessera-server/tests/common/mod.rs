//! Shared by the server's integration tests.
#![allow(dead_code, clippy::unwrap_used)]

use std::sync::atomic::{AtomicU64, Ordering};

/// The URL of a fresh, empty database (`tessera_{prefix}_…`) on the PostgreSQL server that
/// `TESSERA_TEST_DATABASE_URL` names, or `None` when it names none (the PostgreSQL half of a
/// test is then skipped).
pub async fn fresh_postgres_database(prefix: &str) -> Option<String> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let admin = std::env::var("TESSERA_TEST_DATABASE_URL").ok()?;
    sqlx::any::install_default_drivers();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let name = format!(
        "tessera_{prefix}_{nanos:x}{:x}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let pool = sqlx::AnyPool::connect(&admin).await.unwrap();
    // The name is ours (a prefix of the tests' and hex digits), not input.
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    let (base, _) = admin.rsplit_once('/').unwrap();
    Some(format!("{base}/{name}"))
}
