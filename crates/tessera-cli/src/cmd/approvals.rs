//! `tessera approvals list | approve | refuse | cancel`: other devices' signing requests and
//! held actions.

use std::path::Path;

use clap::Subcommand;
use tessera_api as api;
use tessera_client::device::online::Decided;

use crate::failure::CliResult;
use crate::output::{self, Format, print_json};
use crate::unlock;

#[derive(Subcommand)]
pub(crate) enum ApprovalsCommand {
    /// Signing requests and held actions (server-share exports, policy changes that weaken a
    /// policy requiring approval, device recoveries) waiting for another device's approval or a
    /// time lock.
    List(output::Format),
    /// Approve a signing request or another device's held action (signed by this device).
    Approve {
        /// The request's session id, or the held action's id.
        session: String,
    },
    /// Refuse a signing request, or cancel a held action (signed by this device).
    Refuse {
        /// The request's session id, or the held action's id.
        session: String,
    },
    /// Cancel a held action (any of your devices; signed by this device).
    Cancel {
        /// The held action's id.
        id: String,
    },
}

/// `tessera approvals …`.
pub(crate) async fn run(home: &Path, command: ApprovalsCommand) -> CliResult {
    match command {
        ApprovalsCommand::List(format) => list(home, format).await,
        ApprovalsCommand::Approve { session } => decide(home, &session, true).await,
        ApprovalsCommand::Refuse { session } => decide(home, &session, false).await,
        ApprovalsCommand::Cancel { id } => decide(home, &id, false).await,
    }
}

/// Prints a held action: what it is, and how it completes or is cancelled.
pub(crate) fn print_held(action: &api::HeldAction) {
    println!("held           {} ({})", action.id, action.kind);
    println!("               {}", action.summary);
    match &action.unlock_at {
        Some(at) => println!(
            "waits          until {at} (time lock), or another active device approves it: tessera approvals approve {}",
            action.id
        ),
        None => println!(
            "waits          for another active device of yours to approve it: tessera approvals approve {}",
            action.id
        ),
    }
    println!(
        "cancel         on any of your devices: tessera approvals cancel {}",
        action.id
    );
}

async fn list(home: &Path, format: Format) -> CliResult {
    let online = unlock::connect(home).await?;
    let (pending, held) = online.approvals().await?;
    if format.json {
        return print_json(&serde_json::json!({
            "signing_requests": pending,
            "held_actions": held,
        }));
    }
    if pending.is_empty() && held.is_empty() {
        println!("nothing waits for approval");
    }
    for p in pending {
        println!(
            "{}  wallet {}  from device {}  until {}\n    {}\n    digest {}",
            p.session_id, p.wallet_id, p.device_id, p.expires_at, p.summary, p.digest
        );
    }
    for a in held {
        let until = match &a.unlock_at {
            Some(at) => format!("time lock until {at}"),
            None => "needs another device's approval".to_string(),
        };
        println!(
            "{}  {}  {}  from device {}  {until}\n    {}\n    digest {}",
            a.id, a.kind, a.status, a.requested_by, a.summary, a.digest
        );
    }
    Ok(())
}

/// `approvals approve|refuse|cancel ID`: a signing request (by session id) or a held action.
async fn decide(home: &Path, id: &str, approve: bool) -> CliResult {
    let online = unlock::connect(home).await?;
    let pending = online.pending(id).await?;
    println!("{}", pending.summary());
    match online.decide(&pending, approve).await? {
        Decided::Held(action) => println!("action {id}: {}", action.status),
        Decided::Request(status) => println!("request {id}: {}", status.approval),
    }
    Ok(())
}
