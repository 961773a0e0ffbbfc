//! `tessera listen`: the device agent. Stays connected to the server and takes part in the
//! sessions other devices start in which this device is a party: key generations of structure
//! wallets (after a confirmation, or `--yes`; another user's invitation into their wallet is
//! shown with that user's name, and accepted by joining, after a confirmation or with `--yes`
//! for the users `--accept-from` names) and signing sessions that name this
//! device as a signer (always after a confirmation, showing what is signed as this device
//! decodes it). With `--reshare-pending` it also carries out, by itself, the pending joins and
//! leaves of this device's wallets (devices approved or revoked since) once every device they
//! need is online: each is one resharing this device runs with the server, the other devices
//! joining it from their own `tessera listen`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use clap::Args;
use tessera_api as api;
use tessera_client::ClientError;
use tessera_client::device::DeviceError;
use tessera_client::device::online::{Joined, Online};
use tessera_client::reshare::ReshareStep;

use crate::cmd::peer::{ask, yes};
use crate::cmd::wallet::{print_reshared, print_signed};
use crate::failure::{CliResult, Failure};
use crate::output::{self, WalletOut};
use crate::unlock;

#[derive(Args)]
pub(crate) struct ListenArgs {
    /// Join key generations and resharings without asking (signing requests are always shown
    /// and asked).
    #[arg(long)]
    yes: bool,
    /// Stop after the first session answered (for scripts).
    #[arg(long)]
    once: bool,
    /// How often to ask the server again while only requests already answered are listed, in
    /// milliseconds (otherwise each request waits on the server for a new one).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(100..=60_000))]
    poll_ms: u64,
    /// Carry out the pending joins and leaves of this device's wallets (devices approved or
    /// revoked since) by itself, each with a resharing, once every device it needs is online
    /// (their agents join it; a wallet whose quorum is not online waits).
    #[arg(long)]
    reshare_pending: bool,
    /// With `--yes`, also accept without asking invitations into the wallets of these users
    /// (user names, comma-separated); any other user's invitation is always shown and asked.
    #[arg(long, value_delimiter = ',', value_name = "USER")]
    accept_from: Vec<String>,
    #[command(flatten)]
    format: output::Format,
}

/// What the person at the device is shown before joining: for a signing session, what is
/// signed as this device decodes it (never the server's summary).
fn describe(session: &api::JoinableSession) -> Result<String, Failure> {
    let parties = &session.parties;
    let label = |index: u8| {
        parties
            .parties
            .iter()
            .find(|p| p.party == index)
            .map_or("?", |p| p.label.as_str())
    };
    let me = label(parties.me);
    if let (Some(_), "reshare") = (&session.reshare, session.protocol.as_str()) {
        let stays = tessera_core::structure::WalletStructure::parse(&parties.structure)
            .is_ok_and(|s| s.party(me).is_some());
        return Ok(format!(
            "device {:?} asks to reshare wallet {:?} to structure {}; {}",
            session.requested_by,
            session.wallet_name,
            parties.structure,
            if stays {
                format!("this device is party {me:?}")
            } else {
                format!("this device ({me:?}) deals and then leaves the wallet")
            }
        ));
    }
    if let Some(invitation) = &session.invitation {
        return Ok(format!(
            "user {:?} (device {:?}) invites this device into their wallet {:?} with structure \
             {}, as party {:?}; joining accepts: this device then holds a share of their wallet \
             and co-signs with it",
            invitation.owner,
            session.requested_by,
            session.wallet_name,
            parties.structure,
            invitation.label
        ));
    }
    Ok(match &session.sign {
        None => format!(
            "device {:?} asks to create wallet {:?} with structure {}; this device is party {:?}",
            session.requested_by, session.wallet_name, parties.structure, me
        ),
        Some(sign) => {
            let decoded = tessera_api::intent::decode(&sign.kind).map_err(Failure::usage)?;
            let signers: Vec<&str> = parties.signers.iter().map(|&p| label(p)).collect();
            format!(
                "device {:?} asks to sign with wallet {:?} (path {}, signers {}): {}",
                session.requested_by,
                session.wallet_name,
                sign.path,
                signers.join(" + "),
                decoded.summary
            )
        }
    })
}

/// `tessera listen`.
pub(crate) async fn run(home: &Path, args: ListenArgs) -> CliResult {
    let mut online = unlock::connect(home).await?;
    let mut answered = BTreeSet::new();
    eprintln!("listening for sessions of this device's wallets (Ctrl-C to stop)");
    let mut wait = LONG_POLL;
    let (mut next_check, mut retry_after) = (Instant::now(), BTreeMap::new());
    loop {
        if args.reshare_pending && Instant::now() >= next_check {
            next_check = Instant::now() + PENDING_CHECK;
            let ran = match carry_out(&online, &mut retry_after, args.format).await {
                Err(DeviceError::Client(ClientError::Server { status: 401, .. })) => {
                    online.login_again().await?;
                    false
                }
                Err(e) => {
                    eprintln!("error: could not read the pending changes: {e}");
                    false
                }
                Ok(ran) => ran,
            };
            if ran && args.once {
                return Ok(());
            }
        }
        if args.reshare_pending {
            wait = wait.min(PENDING_CHECK);
        }
        // Waits on the server for a request when there is none; once only requests already
        // answered are left (they stay listed until they end), asks again every poll period.
        let sessions = match online.joinable_wait(wait).await {
            Ok(sessions) => sessions,
            Err(DeviceError::Client(ClientError::Server { status: 401, .. })) => {
                online.login_again().await?;
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let fresh = sessions.iter().any(|s| !answered.contains(&s.session_id));
        wait = if sessions.is_empty() {
            LONG_POLL
        } else {
            Duration::ZERO
        };
        if !sessions.is_empty() && !fresh {
            tokio::time::sleep(Duration::from_millis(args.poll_ms)).await;
            continue;
        }
        for session in sessions {
            if !answered.insert(session.session_id.clone()) {
                continue;
            }
            let described = match describe(&session) {
                Ok(described) => described,
                Err(e) => {
                    eprintln!("error: a session this device cannot show: {}", e.message());
                    continue;
                }
            };
            println!("request: {described}");
            // A key generation of a wallet whose name this device holds already cannot be
            // stored here (`Online::join` refuses it before anything runs): the others are told
            // at once instead of waiting for this device.
            if session.protocol == "keygen" && online.device().has_wallet(&session.wallet_name)? {
                println!(
                    "this device has a wallet named {:?} already and cannot hold a share of \
                     another one under that name: declining",
                    session.wallet_name
                );
                decline(&online, &session).await;
                if args.once {
                    return Ok(());
                }
                continue;
            }
            // `--yes` covers key generations and resharings of this user's wallets, and
            // invitations of the users `--accept-from` names; a signature is always asked.
            let covered = session
                .invitation
                .as_ref()
                .is_none_or(|i| args.accept_from.contains(&i.owner));
            let join = if args.yes && session.sign.is_none() && covered {
                println!("joined (--yes)");
                true
            } else {
                yes(ask(if session.sign.is_some() {
                    "Sign? [y/N]:"
                } else if session.invitation.is_some() {
                    "Accept and join? [y/N]:"
                } else {
                    "Join? [y/N]:"
                }))
            };
            if join {
                let protocol = session.protocol.clone();
                let joined = online
                    .join(&session, |r, t| {
                        eprintln!("  {protocol} round {r}/{t} done")
                    })
                    .await;
                let shown = match joined {
                    Ok(Joined::Wallet(share)) => {
                        WalletOut::of(&session.wallet_name, &share).print(args.format)
                    }
                    Ok(Joined::Reshared(outcome)) => {
                        print_reshared(&session.wallet_name, &outcome, args.format)
                    }
                    Ok(Joined::Signed(signed)) => {
                        let kind = session.sign.as_ref().map(|s| &s.kind);
                        let decoded = kind
                            .map(tessera_api::intent::decode)
                            .transpose()
                            .map_err(Failure::usage)?;
                        match decoded {
                            Some(decoded) => print_signed(
                                &session.wallet_name,
                                &decoded,
                                &signed,
                                None,
                                args.format,
                            ),
                            None => Ok(()),
                        }
                    }
                    Err(e) => Err(e.into()),
                };
                match shown {
                    Ok(()) => {}
                    Err(e) if args.once => return Err(e),
                    Err(e) => eprintln!("error: {}", e.message()),
                }
            } else {
                decline(&online, &session).await;
            }
            if args.once {
                return Ok(());
            }
        }
    }
}

/// Declines `session`, saying whether the other parties were told.
async fn decline(online: &Online, session: &api::JoinableSession) {
    match online.decline(session).await {
        Ok(()) => println!("declined; the other parties were told"),
        Err(e) => eprintln!("declined, but the others could not be told: {e}"),
    }
}

/// How long one request for joinable sessions waits on the server when there is none.
const LONG_POLL: Duration = Duration::from_secs(20);

/// How often `--reshare-pending` looks at the pending changes.
const PENDING_CHECK: Duration = Duration::from_secs(3);

/// How long `--reshare-pending` leaves a wallet alone after its resharing failed.
const PENDING_RETRY: Duration = Duration::from_secs(60);

/// Carries out the pending party changes of each of this device's wallets whose devices are
/// all online ([`ready`]), one resharing each; whether one ran. A wallet whose resharing failed
/// is left alone for [`PENDING_RETRY`]; one another agent started (409) is joined from the next
/// poll.
async fn carry_out(
    online: &Online,
    retry_after: &mut BTreeMap<String, Instant>,
    format: output::Format,
) -> Result<bool, DeviceError> {
    let me = online.config().device_id.clone();
    let mut ran = false;
    for (name, detail) in online.pending_changes().await? {
        if retry_after.get(&name).is_some_and(|t| Instant::now() < *t) || !ready(&detail, &me) {
            continue;
        }
        let changes: Vec<String> = detail
            .pending
            .iter()
            .map(|c| {
                format!(
                    "{} {}",
                    c.label,
                    if c.change == "add" { "joins" } else { "leaves" }
                )
            })
            .collect();
        eprintln!(
            "carrying out the pending changes of wallet {name}: {}",
            changes.join(", ")
        );
        let progress = |step: ReshareStep| {
            if let ReshareStep::Round(r, t) = step {
                eprintln!("  reshare round {r}/{t} done");
            }
        };
        match online.reshare_pending(&name, progress).await {
            Ok(Some(outcome)) => {
                ran = true;
                if let Err(e) = print_reshared(&name, &outcome, format) {
                    eprintln!("error: {}", e.message());
                }
            }
            Ok(None) => {}
            Err(DeviceError::Client(ClientError::Server { status: 409, .. })) => {
                eprintln!("  another device started it; joining it");
            }
            Err(e) => {
                eprintln!("error: the resharing of wallet {name} failed: {e}; trying again later");
                retry_after.insert(name, Instant::now() + PENDING_RETRY);
            }
        }
    }
    Ok(ran)
}

/// Whether the resharing of `detail`'s pending changes can run now: every device that joins,
/// and every device party that stays other than this one (`me`), is online.
fn ready(detail: &api::WalletDetail, me: &str) -> bool {
    let leaving: BTreeSet<&str> = detail
        .pending
        .iter()
        .filter(|c| c.change == "remove")
        .map(|c| c.device_id.as_str())
        .collect();
    let staying = detail.parties.iter().filter_map(|p| {
        let device = p.device_id.as_ref()?.as_str();
        (device != me && !leaving.contains(device)).then_some(p.party)
    });
    let joining = detail.pending.iter().filter(|c| c.change == "add");
    staying.clone().all(|p| detail.online.contains(&p)) && joining.clone().all(|c| c.online)
}
