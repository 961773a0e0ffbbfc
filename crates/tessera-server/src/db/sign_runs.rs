//! Migration 0015: `sign_runs`, the runs of one signing request of a structure wallet since one
//! failed naming nobody (`crate::isolation`).

use sqlx::any::AnyExecutor;

/// One run of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignRun {
    /// The signers' party indices.
    pub quorum: Vec<u8>,
    /// Whether it signed (else it failed naming nobody).
    pub signed: bool,
}

/// A request: the wallet, its epoch and the digest.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// The wallet.
    pub wallet_id: &'a str,
    /// Its epoch (party indices change with a resharing).
    pub epoch: i64,
    /// The digest signed, hex.
    pub digest: &'a str,
}

/// Records run `session_id` of `request`, ended at `at_ms` (Unix milliseconds).
///
/// # Errors
/// A database error.
pub async fn insert(
    db: impl AnyExecutor<'_>,
    session_id: &str,
    request: Request<'_>,
    run: &SignRun,
    at_ms: i64,
) -> Result<(), sqlx::Error> {
    let quorum: Vec<String> = run.quorum.iter().map(u8::to_string).collect();
    sqlx::query(
        "INSERT INTO sign_runs (session_id, wallet_id, epoch, digest, quorum, outcome, at_ms) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(session_id)
    .bind(request.wallet_id)
    .bind(request.epoch)
    .bind(request.digest)
    .bind(quorum.join(","))
    .bind(if run.signed { "signed" } else { "failed" })
    .bind(at_ms)
    .execute(db)
    .await?;
    Ok(())
}

/// The runs of `request` that ended since `since_ms` (Unix milliseconds), in the order they ran.
///
/// # Errors
/// A database error; a stored quorum that does not parse.
pub async fn of_request(
    db: impl AnyExecutor<'_>,
    request: Request<'_>,
    since_ms: i64,
) -> Result<Vec<SignRun>, sqlx::Error> {
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT quorum, outcome FROM sign_runs \
         WHERE wallet_id = $1 AND epoch = $2 AND digest = $3 AND at_ms >= $4 \
         ORDER BY at_ms, session_id",
    )
    .bind(request.wallet_id)
    .bind(request.epoch)
    .bind(request.digest)
    .bind(since_ms)
    .fetch_all(db)
    .await?;
    rows.into_iter()
        .map(|(quorum, outcome)| {
            let quorum = quorum
                .split(',')
                .map(str::parse)
                .collect::<Result<Vec<u8>, _>>()
                .map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
            Ok(SignRun {
                quorum,
                signed: outcome == "signed",
            })
        })
        .collect()
}

/// Forgets the runs of `request` (a party was banned from them).
///
/// # Errors
/// A database error.
pub async fn forget(db: impl AnyExecutor<'_>, request: Request<'_>) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM sign_runs WHERE wallet_id = $1 AND epoch = $2 AND digest = $3")
        .bind(request.wallet_id)
        .bind(request.epoch)
        .bind(request.digest)
        .execute(db)
        .await?;
    Ok(())
}
