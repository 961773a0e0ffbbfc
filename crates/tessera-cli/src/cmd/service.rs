//! `tessera service add | list | revoke`, and `tessera verify-webhook`. Being written.

use std::path::Path;

use clap::Subcommand;

use crate::failure::CliResult;

#[derive(Subcommand)]
pub(crate) enum ServiceCommand {
    /// List your service accounts.
    List,
}

/// `tessera service …`.
pub(crate) async fn run(_home: &Path, command: ServiceCommand) -> CliResult {
    match command {
        ServiceCommand::List => Ok(()),
    }
}
