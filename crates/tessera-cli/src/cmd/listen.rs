//! `tessera listen`: the device agent. Stays connected to the server and takes part in the
//! sessions other devices of the user start in which this device is a party (today: key
//! generations of structure wallets), each after a local confirmation (or `--yes`).

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use clap::Args;
use tessera_api as api;
use tessera_client::ClientError;
use tessera_client::device::DeviceError;

use crate::cmd::peer::{ask, yes};
use crate::failure::CliResult;
use crate::output::{self, WalletOut};
use crate::unlock;

#[derive(Args)]
pub(crate) struct ListenArgs {
    /// Join key generations without asking (signing requests are never answered blindly).
    #[arg(long)]
    yes: bool,
    /// Stop after the first session answered (for scripts).
    #[arg(long)]
    once: bool,
    /// How often to ask the server for new sessions, in milliseconds.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(100..=60_000))]
    poll_ms: u64,
    #[command(flatten)]
    format: output::Format,
}

/// What the person at the device is shown before joining.
fn describe(session: &api::JoinableSession) -> String {
    let parties = &session.parties;
    let me = parties
        .parties
        .iter()
        .find(|p| p.party == parties.me)
        .map_or("?", |p| p.label.as_str());
    format!(
        "device {:?} asks to create wallet {:?} with structure {}; this device is party {:?}",
        session.requested_by, session.wallet_name, parties.structure, me
    )
}

/// `tessera listen`.
pub(crate) async fn run(home: &Path, args: ListenArgs) -> CliResult {
    let mut online = unlock::connect(home).await?;
    let mut answered = BTreeSet::new();
    eprintln!("listening for sessions of this device's wallets (Ctrl-C to stop)");
    loop {
        let sessions = match online.joinable().await {
            Ok(sessions) => sessions,
            Err(DeviceError::Client(ClientError::Server { status: 401, .. })) => {
                online.login_again().await?;
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        for session in sessions {
            if !answered.insert(session.session_id.clone()) {
                continue;
            }
            println!("request: {}", describe(&session));
            let join = if args.yes {
                println!("joined (--yes)");
                true
            } else {
                yes(ask("Join? [y/N]:"))
            };
            if join {
                let share = online
                    .join(&session, |r, t| eprintln!("  keygen round {r}/{t} done"))
                    .await;
                match share {
                    Ok(share) => WalletOut::of(&session.wallet_name, &share).print(args.format)?,
                    Err(e) if args.once => return Err(e.into()),
                    Err(e) => eprintln!("error: {e}"),
                }
            } else {
                println!("declined; the session ends when its parties stop waiting");
            }
            if args.once {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(args.poll_ms)).await;
    }
}
