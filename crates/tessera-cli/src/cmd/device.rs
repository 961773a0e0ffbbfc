//! `tessera init` and `tessera device list | approve | revoke | recover`: this device's set-up
//! and the user's devices.

use std::path::Path;

use clap::{Args, Subcommand};
use tessera_client::device::ServerAddress;
use tessera_client::device::online::Online;
use tessera_client::device::reshare::ReshareOutcome;
use tessera_client::reshare::ReshareStep;

use crate::failure::{CliResult, Failure};
use crate::output::{self, Format, print_json};
use crate::unlock;

#[derive(Args)]
pub(crate) struct InitArgs {
    /// The commitment server's URL.
    #[arg(long)]
    server: String,
    /// Your user name on the server (the first device creates it).
    #[arg(long)]
    user: String,
    /// This device's name, e.g. "Alice's laptop".
    #[arg(long)]
    name: String,
    /// Pin the server's certificate by its SHA-256 fingerprint (as `tessera server --dev-tls`
    /// prints); otherwise https servers are checked against the web PKI.
    #[arg(long)]
    server_fingerprint: Option<String>,
}

#[derive(Subcommand)]
pub(crate) enum DeviceCommand {
    /// List this user's devices.
    List(output::Format),
    /// Approve a pending device of this user by the code it shows.
    Approve {
        /// The code the new device printed, e.g. 1A2B-3C4D-5E6F-7A8B-9C0D.
        code: String,
        /// Then reshare each wallet of this device the new device is to join (it and the
        /// wallet's other devices take part from `tessera listen`).
        #[arg(long)]
        reshare: bool,
    },
    /// Revoke a device: its tokens stop working at once.
    Revoke {
        /// The device id.
        id: String,
        /// Revoke even the last active device of this user, which locks the user out for good.
        #[arg(long)]
        force: bool,
        /// Then reshare each wallet of this device without it, after which its share is useless
        /// (the wallet's other devices take part from `tessera listen`).
        #[arg(long)]
        reshare: bool,
    },
    /// On a pending device that restored a wallet's device share: prove it again to be approved,
    /// once the time lock of its held recovery has ended.
    Recover {
        /// The restored wallet.
        #[arg(long)]
        wallet: String,
    },
}

/// `tessera init`.
pub(crate) async fn init(home: &Path, args: InitArgs) -> CliResult {
    let server = ServerAddress {
        url: args.server,
        fingerprint: args.server_fingerprint,
    };
    // Check the URL and pin before anything is created.
    let client = server.client()?;
    let device = unlock::device(home);
    device.keystore()?;
    let passphrase = unlock::passphrase()?;
    let registered = device
        .init(&client, &passphrase, &server, &args.user, &args.name)
        .await?;
    let d = &registered.device;
    println!("device id      {}", d.device_id);
    println!("identity key   {}", d.identity_key);
    println!("status         {:?}", d.status);
    if let Some(code) = &registered.approval_code {
        println!(
            "approval code  {code}  (on an active device of {}: tessera device approve {code})",
            args.user
        );
    }
    Ok(())
}

/// `tessera device …`.
pub(crate) async fn run(home: &Path, command: DeviceCommand) -> CliResult {
    match command {
        DeviceCommand::List(format) => list(home, format).await,
        DeviceCommand::Approve { code, reshare } => approve(home, &code, reshare).await,
        DeviceCommand::Revoke { id, force, reshare } => revoke(home, &id, force, reshare).await,
        DeviceCommand::Recover { wallet } => crate::cmd::backup::recover(home, &wallet).await,
    }
}

async fn list(home: &Path, format: Format) -> CliResult {
    let online = unlock::connect(home).await?;
    let devices = online.devices().await?;
    let this_device = &online.config().device_id;
    if format.json {
        let listed = devices
            .iter()
            .map(|d| {
                let mut v = serde_json::to_value(d)?;
                v["this_device"] = (&d.device_id == this_device).into();
                Ok(v)
            })
            .collect::<serde_json::Result<Vec<_>>>()
            .map_err(|e| Failure::Failed(format!("cannot encode the output as JSON: {e}")))?;
        return print_json(&listed);
    }
    for d in devices {
        let me = if &d.device_id == this_device {
            " (this device)"
        } else {
            ""
        };
        println!(
            "{} {:<9} {}{me}",
            d.device_id,
            format!("{:?}", d.status).to_lowercase(),
            d.name
        );
    }
    Ok(())
}

async fn approve(home: &Path, code: &str, reshare: bool) -> CliResult {
    let online = unlock::connect(home).await?;
    let d = online.approve_device(code).await?;
    println!("approved {} ({})", d.device_id, d.name);
    // The key the new device printed at `tessera init`: the user compares the two.
    println!("identity key   {}", d.identity_key);
    pending_resharings(&online, reshare).await
}

/// The wallets of this device whose parties are to change after an approval or a revocation;
/// with `reshare`, each is reshared in turn (a failure leaves it pending, and is reported).
async fn pending_resharings(online: &Online, reshare: bool) -> CliResult {
    let pending = online.pending_changes().await?;
    let mut failed = Vec::new();
    for (name, detail) in pending {
        let changes: Vec<String> = detail
            .pending
            .iter()
            .map(|c| {
                let verb = if c.change == "add" { "joins" } else { "leaves" };
                format!("{:?} ({}) {verb}", c.device_name, c.label)
            })
            .collect();
        println!("wallet {name}: {} when it is reshared", changes.join(", "));
        if !reshare {
            println!(
                "  run `tessera wallet reshare --wallet {name} --pending` with its devices running `tessera listen`"
            );
            continue;
        }
        eprintln!("  resharing {name}: waiting for its devices (`tessera listen` on each)");
        match online
            .reshare_pending(&name, |step| {
                if let ReshareStep::Round(r, t) = step {
                    eprintln!("  reshare round {r}/{t} done");
                }
            })
            .await
        {
            Ok(Some(ReshareOutcome::Switched { epoch, .. })) => {
                println!("  reshared: epoch {epoch}");
            }
            Ok(Some(ReshareOutcome::Left)) => println!("  reshared without this device"),
            Ok(None) => println!("  nothing pending any more"),
            Err(e) => {
                println!("  not reshared, still pending: {e}");
                failed.push(name);
            }
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(Failure::Failed(format!(
            "wallets still to reshare: {}",
            failed.join(", ")
        )))
    }
}

async fn revoke(home: &Path, id: &str, force: bool, reshare: bool) -> CliResult {
    let online = unlock::connect(home).await?;
    if force {
        eprintln!(
            "warning: --force revokes the device even if it is the last active device of {:?}; \
             then no device of this user can log in, approve new devices or sign with its \
             wallets again",
            online.config().user
        );
    }
    let d = online.revoke_device(id, force).await?;
    println!("revoked {} ({})", d.device_id, d.name);
    pending_resharings(&online, reshare).await
}
