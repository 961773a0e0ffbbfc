//! Replica liveness (PostgreSQL): each replica holds a session-level advisory lock named after
//! its instance id for as long as it lives; a replica whose lock is free has died.

use sqlx::AnyConnection;

/// Advisory-lock namespace of replica liveness locks (PostgreSQL).
const LIVENESS_LOCK_SPACE: i32 = 0x7e55;

/// Takes `instance`'s liveness lock on `conn` (held until the connection closes).
///
/// # Errors
/// A database error.
pub async fn hold_liveness(conn: &mut AnyConnection, instance: &str) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_advisory_lock($1, hashtext($2))")
        .bind(LIVENESS_LOCK_SPACE)
        .bind(instance)
        .execute(conn)
        .await?;
    Ok(())
}

/// Whether `owner`'s liveness lock is free (its replica died); the lock is released again at
/// once.
///
/// # Errors
/// A database error.
pub async fn is_dead(conn: &mut AnyConnection, owner: &str) -> Result<bool, sqlx::Error> {
    let (free,): (bool,) = sqlx::query_as("SELECT pg_try_advisory_lock($1, hashtext($2))")
        .bind(LIVENESS_LOCK_SPACE)
        .bind(owner)
        .fetch_one(&mut *conn)
        .await?;
    if free {
        sqlx::query("SELECT pg_advisory_unlock($1, hashtext($2))")
            .bind(LIVENESS_LOCK_SPACE)
            .bind(owner)
            .execute(&mut *conn)
            .await?;
    }
    Ok(free)
}

/// Whether `owner`'s liveness lock is free, checked inside the caller's transaction (the lock,
/// if taken, is released when it ends).
///
/// # Errors
/// A database error.
pub async fn is_dead_in(conn: &mut AnyConnection, owner: &str) -> Result<bool, sqlx::Error> {
    let (free,): (bool,) = sqlx::query_as("SELECT pg_try_advisory_xact_lock($1, hashtext($2))")
        .bind(LIVENESS_LOCK_SPACE)
        .bind(owner)
        .fetch_one(conn)
        .await?;
    Ok(free)
}
