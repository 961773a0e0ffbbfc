//! `tessera audit list | verify`: the server's audit log.

use std::path::Path;

use clap::Subcommand;

use crate::failure::{CliResult, Failure};
use crate::output::{self, Format, print_json};
use crate::unlock;

#[derive(Subcommand)]
pub(crate) enum AuditCommand {
    /// List this user's audit records (or one wallet's).
    List {
        /// Only this wallet's records.
        #[arg(long)]
        wallet: Option<String>,
        #[command(flatten)]
        format: output::Format,
    },
    /// Verify the whole hash chain: through the server, or (with --data-dir or --database-url)
    /// directly in the server's database. Exit 1 and the first bad record when it is broken.
    Verify {
        /// Check the database in this server data directory (SQLite) instead of asking the server.
        #[arg(long)]
        data_dir: Option<std::path::PathBuf>,
        /// Check this PostgreSQL database instead of asking the server.
        #[arg(long)]
        database_url: Option<String>,
        #[command(flatten)]
        format: output::Format,
    },
}

/// `tessera audit …`.
pub(crate) async fn run(home: &Path, command: AuditCommand) -> CliResult {
    match command {
        AuditCommand::List { wallet, format } => list(home, wallet.as_deref(), format).await,
        AuditCommand::Verify {
            data_dir,
            database_url,
            format,
        } => verify(home, data_dir, database_url, format).await,
    }
}

async fn list(home: &Path, wallet: Option<&str>, format: Format) -> CliResult {
    let online = unlock::connect(home).await?;
    let records = online.audit(wallet).await?;
    if format.json {
        return print_json(&records);
    }
    for r in records {
        println!("{:>6}  {}  {:<20} {}", r.seq, r.at, r.kind, r.detail);
    }
    Ok(())
}

async fn verify(
    home: &std::path::Path,
    data_dir: Option<std::path::PathBuf>,
    database_url: Option<String>,
    format: output::Format,
) -> CliResult {
    let report = if data_dir.is_some() || database_url.is_some() {
        let mut config =
            tessera_server::Config::new(data_dir.unwrap_or_else(|| "./tessera-data".into()));
        config.database_url = database_url;
        let db = tessera_server::state::connect_database(&config)
            .await
            .map_err(|e| Failure::Failed(e.to_string()))?;
        tessera_server::audit::verify(&db)
            .await
            .map_err(|e| Failure::Failed(format!("database: {e}")))?
    } else {
        unlock::connect(home).await?.audit_verify().await?
    };
    if format.json {
        // The report, broken or not; a broken chain still exits 1.
        output::print_json(&serde_json::json!({
            "intact": report.first_bad.is_none(),
            "records": report.records,
            "head": report.head,
            "first_bad": report.first_bad,
        }))?;
    }
    match report.first_bad {
        None if format.json => Ok(()),
        None => {
            println!(
                "audit chain intact: {} records, head {}",
                report.records, report.head
            );
            Ok(())
        }
        Some(bad) => Err(Failure::Failed(format!(
            "audit chain BROKEN at record {}: {} ({} records verified before it)",
            bad.seq, bad.reason, report.records
        ))),
    }
}
