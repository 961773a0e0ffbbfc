//! `tessera requests create | list | show | approve | refuse | sign`: durable signing requests.
//! Being written.

use std::path::Path;

use clap::Subcommand;

use crate::failure::CliResult;

#[derive(Subcommand)]
pub(crate) enum RequestsCommand {
    /// List the requests of your wallets.
    List,
}

/// `tessera requests …`.
pub(crate) async fn run(_home: &Path, command: RequestsCommand) -> CliResult {
    match command {
        RequestsCommand::List => Ok(()),
    }
}
