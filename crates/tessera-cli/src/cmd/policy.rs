//! `tessera policy show | set`: a wallet's signing policy on the server.

use std::path::{Path, PathBuf};

use clap::Subcommand;
use tessera_api as api;

use crate::cmd::approvals::print_held;
use crate::failure::{CliResult, Failure};
use crate::unlock;

#[derive(Subcommand)]
pub(crate) enum PolicyCommand {
    /// Show a wallet's policy and its version.
    Show {
        /// The wallet.
        #[arg(long)]
        wallet: String,
    },
    /// Set a wallet's policy from a JSON file (`-` for stdin), signed by this device.
    Set {
        /// The wallet.
        #[arg(long)]
        wallet: String,
        /// The policy, JSON: allowed_kinds, chain_ids, destinations, max_value_per_tx,
        /// max_value_per_24h, max_fee_per_tx, tokens (address, standard, symbol, decimals,
        /// max_amount_per_tx, max_amount_per_24h, allowed_spenders), allow_unlimited_approvals,
        /// arbitrary_calls, verifying_contracts, btc_destinations, max_sat_per_tx,
        /// max_sat_per_24h, max_fee_sat, allowed_delegates, max_signatures_per_hour, hours_utc,
        /// require_approval, approval_timeout_secs.
        #[arg(long)]
        file: PathBuf,
    },
}

/// `tessera policy …`.
pub(crate) async fn run(home: &Path, command: PolicyCommand) -> CliResult {
    match command {
        PolicyCommand::Show { wallet } => show(home, &wallet).await,
        PolicyCommand::Set { wallet, file } => set(home, &wallet, &file).await,
    }
}

async fn show(home: &Path, wallet: &str) -> CliResult {
    let online = unlock::connect(home).await?;
    let info = online.policy(wallet).await?;
    println!(
        "policy of {wallet}: version {}{}",
        info.version,
        info.set_by
            .map(|d| format!(", set by device {d} at {}", info.set_at.unwrap_or_default()))
            .unwrap_or_else(|| " (the default of a new wallet)".into())
    );
    println!(
        "{}",
        serde_json::to_string_pretty(&info.policy).map_err(Failure::failed)?
    );
    Ok(())
}

async fn set(home: &Path, wallet: &str, file: &Path) -> CliResult {
    let text = if file == Path::new("-") {
        let mut t = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut t)
            .map_err(|e| Failure::Usage(format!("cannot read the policy: {e}")))?;
        t
    } else {
        std::fs::read_to_string(file)
            .map_err(|e| Failure::Usage(format!("cannot read {}: {e}", file.display())))?
    };
    let policy: api::Policy = serde_json::from_str(&text)
        .map_err(|e| Failure::Usage(format!("the policy is not valid: {e}")))?;
    let online = unlock::connect(home).await?;
    match online.set_policy(wallet, &policy).await? {
        api::PolicyChange::Applied(info) => {
            println!("policy of {wallet} is now version {}", info.version);
        }
        api::PolicyChange::Held(action) => {
            print_held(&action);
            println!(
                "next           the current policy requires approval and this change weakens it: once another active device approves it (tessera approvals approve {}), it applies; after a time lock, run this same command again",
                action.id
            );
        }
    }
    Ok(())
}
