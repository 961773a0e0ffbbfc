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
//!
//! It also follows the device's event stream (`GET /events`, issue 16) from the last cursor it
//! handled (kept in the device home): a durable request ready for this device to co-sign is
//! signed at once when its kind is one `--co-sign` names (the device's own local rule), asked
//! about on a terminal otherwise (its summary shown, its digest computed here), and without a
//! terminal printed with the command that signs it; a request waiting for this device's
//! approval is printed with the command that approves it (never approved here). On start it
//! catches up: the ready requests of its wallets that it may sign are signed (events may have
//! been missed while it was offline).

use std::collections::{BTreeMap, BTreeSet};
use std::io::IsTerminal;
use std::path::Path;
use std::time::{Duration, Instant};

use clap::Args;
use tessera_api as api;
use tessera_api::requests::{DeviceEvent, RequestInfo, RequestQuery};
use tessera_api::{EventKind, RequestKind, RequestState};
use tessera_client::device::DeviceError;
use tessera_client::device::online::{Joined, Online};
use tessera_client::device::requests::{
    EventStream, check_request, load_event_cursor, save_event_cursor,
};
use tessera_client::reshare::ReshareStep;
use tessera_client::{ClientError, WalletRecord};

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
    /// Co-sign, without asking, the ready requests of these kinds (comma-separated: digest,
    /// eth-tx, eth-message, eth-typed-data, eth-authorization, btc-psbt) for the wallets this
    /// device holds; other ready requests are asked about on a terminal, or printed with the
    /// command that signs them.
    #[arg(long, value_delimiter = ',', value_name = "KINDS")]
    co_sign: Vec<String>,
    /// Do not follow the event stream: join sessions only, as before durable requests.
    #[arg(long)]
    no_events: bool,
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

/// The `--co-sign` kinds.
fn co_sign_kinds(given: &[String]) -> Result<Vec<RequestKind>, Failure> {
    given
        .iter()
        .map(|k| {
            k.trim().parse::<RequestKind>().map_err(|_| {
                let kinds: Vec<&str> = RequestKind::ALL.iter().map(|k| k.as_str()).collect();
                Failure::Usage(format!(
                    "--co-sign {k:?}: not a request kind (one of {})",
                    kinds.join(", ")
                ))
            })
        })
        .collect()
}

/// What the agent keeps between two rounds of its loop.
struct Agent {
    /// The sessions already answered.
    answered: BTreeSet<api::ServerSessionId>,
    /// How long the next poll for joinable sessions waits.
    wait: Duration,
    next_check: Instant,
    retry_after: BTreeMap<String, Instant>,
    /// The request kinds co-signed without asking.
    co_sign: Vec<RequestKind>,
    /// The requests handled in this run: signed, shown with the command that signs them, not
    /// confirmed, or not decodable here.
    handled: BTreeSet<api::RequestId>,
    /// The wallet records unsealed for co-signing, by name: unsealed once (Argon2id) for
    /// many requests. Dropped after any session this agent joins (a resharing changes them)
    /// and after a failed signature.
    records: BTreeMap<String, WalletRecord>,
    /// The last event handled.
    cursor: u64,
    /// Whether the event stream is followed.
    events: bool,
}

/// Why [`serve`] returned.
enum Served {
    /// `--once` answered its one.
    Stop,
    /// The token expired: log in again and serve on.
    LoginAgain,
}

/// `tessera listen`.
pub(crate) async fn run(home: &Path, args: ListenArgs) -> CliResult {
    let co_sign = co_sign_kinds(&args.co_sign)?;
    let device = unlock::device(home);
    let cursor = if args.no_events {
        0
    } else {
        load_event_cursor(&device)?
    };
    let mut online = unlock::connect(home).await?;
    let mut agent = Agent {
        answered: BTreeSet::new(),
        wait: LONG_POLL,
        next_check: Instant::now(),
        retry_after: BTreeMap::new(),
        co_sign,
        handled: BTreeSet::new(),
        records: BTreeMap::new(),
        cursor,
        events: !args.no_events,
    };
    eprintln!("listening for sessions of this device's wallets (Ctrl-C to stop)");
    if !agent.co_sign.is_empty() {
        let kinds: Vec<&str> = agent.co_sign.iter().map(|k| k.as_str()).collect();
        eprintln!(
            "co-signing ready requests of kind {} without asking",
            kinds.join(", ")
        );
    }
    loop {
        let served = match catch_up(&online, &mut agent, &args).await? {
            Some(served) => served,
            None => serve(&online, &mut agent, &args).await?,
        };
        match served {
            Served::Stop => return Ok(()),
            Served::LoginAgain => online.login_again().await?,
        }
    }
}

/// Whether `e` is the server saying the token expired.
fn expired(e: &DeviceError) -> bool {
    matches!(
        e,
        DeviceError::Client(ClientError::Server { status: 401, .. })
    )
}

/// Signs (or shows) the ready requests of this device's wallets, as listed now: the events of
/// the time this device was offline may be gone or missed. `Some` when the loop must stop or
/// log in again.
async fn catch_up(
    online: &Online,
    agent: &mut Agent,
    args: &ListenArgs,
) -> Result<Option<Served>, Failure> {
    if !agent.events {
        return Ok(None);
    }
    let query = RequestQuery {
        wallet: None,
        state: Some(RequestState::Ready),
    };
    // The server lists a bounded number at a time: read again until none is left unseen.
    let mut seen = BTreeSet::new();
    loop {
        let ready = match online.requests(&query).await {
            Ok(ready) => ready,
            Err(e) if expired(&e) => return Ok(Some(Served::LoginAgain)),
            Err(e) => {
                eprintln!("the ready requests could not be read ({e}); following events only");
                return Ok(None);
            }
        };
        let fresh: Vec<RequestInfo> = ready
            .into_iter()
            .filter(|r| !agent.handled.contains(&r.id) && !seen.contains(&r.id))
            .collect();
        if fresh.is_empty() {
            return Ok(None);
        }
        let held = match online.held_wallets().await {
            Ok(held) => held,
            Err(e) if expired(&e) => return Ok(Some(Served::LoginAgain)),
            Err(e) => return Err(e.into()),
        };
        let (mine, others): (Vec<RequestInfo>, Vec<RequestInfo>) = fresh
            .into_iter()
            .partition(|r| held.contains_key(&r.wallet_id));
        // Another device's wallets: nothing to do here.
        seen.extend(others.into_iter().map(|r| r.id));
        if mine.is_empty() {
            return Ok(None);
        }
        eprintln!("{} ready request(s) of this device's wallets", mine.len());
        for info in mine {
            if let Some(served) = on_ready(online, agent, args, &info, &held).await? {
                return Ok(Some(served));
            }
            // Not again in this catch-up, whatever happened to it (a failed signature is
            // tried again when the server says it is ready again).
            seen.insert(info.id);
        }
    }
}

/// The next event of `events`, or never when the stream is not followed.
async fn next_event(events: &mut Option<EventStream<'_>>) -> Result<DeviceEvent, DeviceError> {
    match events {
        Some(events) => events.next().await,
        None => std::future::pending().await,
    }
}

/// What one round of [`serve`] woke up for.
enum Woken {
    Sessions(Result<Vec<api::JoinableSession>, DeviceError>),
    Event(Result<DeviceEvent, DeviceError>),
}

/// Serves until `--once` is satisfied or the token expired: the joinable sessions (long
/// polls), the event stream, and `--reshare-pending`'s changes.
async fn serve(online: &Online, agent: &mut Agent, args: &ListenArgs) -> Result<Served, Failure> {
    let device = online.device().clone();
    let mut events = agent.events.then(|| online.events(agent.cursor));
    loop {
        if args.reshare_pending && Instant::now() >= agent.next_check {
            agent.next_check = Instant::now() + PENDING_CHECK;
            let ran = match carry_out(online, &mut agent.retry_after, args.format).await {
                Err(e) if expired(&e) => return Ok(Served::LoginAgain),
                Err(e) => {
                    eprintln!("error: could not read the pending changes: {e}");
                    false
                }
                Ok(ran) => ran,
            };
            if ran && args.once {
                return Ok(Served::Stop);
            }
        }
        if args.reshare_pending {
            agent.wait = agent.wait.min(PENDING_CHECK);
        }
        // Waits on the server for a request when there is none; once only requests already
        // answered are left (they stay listed until they end), asks again every poll period.
        // Meanwhile, the event stream.
        let woken = tokio::select! {
            sessions = online.joinable_wait(agent.wait) => Woken::Sessions(sessions),
            event = next_event(&mut events) => Woken::Event(event),
        };
        let sessions = match woken {
            Woken::Event(Ok(event)) => {
                agent.cursor = event.cursor;
                let served = on_event(online, agent, args, &event).await?;
                // Kept once handled: a restart resumes after it.
                if let Err(e) = save_event_cursor(&device, agent.cursor) {
                    eprintln!("error: the event cursor could not be kept: {e}");
                }
                match served {
                    Some(served) => return Ok(served),
                    None => continue,
                }
            }
            Woken::Event(Err(e)) if expired(&e) => return Ok(Served::LoginAgain),
            Woken::Event(Err(e)) => {
                eprintln!("the event stream is unavailable ({e}); joining sessions only");
                agent.events = false;
                events = None;
                continue;
            }
            Woken::Sessions(Err(e)) if expired(&e) => return Ok(Served::LoginAgain),
            Woken::Sessions(Err(e)) => return Err(e.into()),
            Woken::Sessions(Ok(sessions)) => sessions,
        };
        let fresh = sessions
            .iter()
            .any(|s| !agent.answered.contains(&s.session_id));
        agent.wait = if sessions.is_empty() {
            LONG_POLL
        } else {
            Duration::ZERO
        };
        if !sessions.is_empty() && !fresh {
            tokio::time::sleep(Duration::from_millis(args.poll_ms)).await;
            continue;
        }
        for session in sessions {
            if !agent.answered.insert(session.session_id.clone()) {
                continue;
            }
            agent.records.clear();
            if answer(online, session, args).await? && args.once {
                return Ok(Served::Stop);
            }
        }
    }
}

/// Answers one joinable session (asked, or `--yes`); whether it was answered (`--once`).
async fn answer(
    online: &Online,
    session: api::JoinableSession,
    args: &ListenArgs,
) -> Result<bool, Failure> {
    let described = match describe(&session) {
        Ok(described) => described,
        Err(e) => {
            eprintln!("error: a session this device cannot show: {}", e.message());
            return Ok(false);
        }
    };
    println!("request: {described}");
    // A key generation of a wallet whose name this device holds already cannot be stored
    // here (`Online::join` refuses it before anything runs): the others are told at once
    // instead of waiting for this device.
    if session.protocol == "keygen" && online.device().has_wallet(&session.wallet_name)? {
        println!(
            "this device has a wallet named {:?} already and cannot hold a share of another \
             one under that name: declining",
            session.wallet_name
        );
        decline(online, &session).await;
        return Ok(true);
    }
    // `--yes` covers key generations and resharings of this user's wallets, and invitations
    // of the users `--accept-from` names; a signature is always asked.
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
    if !join {
        decline(online, &session).await;
        return Ok(true);
    }
    let protocol = session.protocol.clone();
    let joined = online
        .join(&session, |r, t| {
            eprintln!("  {protocol} round {r}/{t} done")
        })
        .await;
    let shown = match joined {
        Ok(Joined::Wallet(share)) => WalletOut::of(&session.wallet_name, &share).print(args.format),
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
                Some(decoded) => {
                    print_signed(&session.wallet_name, &decoded, &signed, None, args.format)
                }
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
    Ok(true)
}

/// Handles one event of the stream. `Some` when the loop must stop or log in again.
async fn on_event(
    online: &Online,
    agent: &mut Agent,
    args: &ListenArgs,
    event: &DeviceEvent,
) -> Result<Option<Served>, Failure> {
    let Some(id) = &event.request_id else {
        // Devices to approve, resharings to run, policy proposals: each summary names the
        // command that answers it.
        println!("event: {}", event.summary);
        return Ok(None);
    };
    match event.kind {
        // Handled already (signed, shown): no need to read it again.
        EventKind::ReadyToSign if agent.handled.contains(id) => return Ok(None),
        EventKind::ReadyToSign | EventKind::ApprovalNeeded => {}
        EventKind::RequestEnded => {
            println!("request {id} ended: {}", event.summary);
            return Ok(None);
        }
        _ => {
            println!("event: {} (request {id})", event.summary);
            return Ok(None);
        }
    }
    let info = match online.request(id).await {
        Ok(info) => info,
        Err(e) if expired(&e) => return Ok(Some(Served::LoginAgain)),
        Err(e) => {
            eprintln!("error: request {id} could not be read: {e}");
            return Ok(None);
        }
    };
    if event.kind == EventKind::ApprovalNeeded {
        // Only while it still waits (a stream replayed from an old cursor tells old ones).
        if info.state == RequestState::AwaitingApproval {
            println!(
                "approval needed: request {id}: {}\n  to approve it: tessera requests approve {id}  (or refuse)",
                info.summary
            );
        }
        return Ok(None);
    }
    let held = match online.held_wallets().await {
        Ok(held) => held,
        Err(e) if expired(&e) => return Ok(Some(Served::LoginAgain)),
        Err(e) => {
            eprintln!("error: this device's wallets could not be read: {e}");
            return Ok(None);
        }
    };
    on_ready(online, agent, args, &info, &held).await
}

/// A ready request of one of this device's wallets (`held`): co-signed under the local rule
/// (`--co-sign`), asked about on a terminal, or shown with the command that signs it. Each
/// request is handled once per run.
async fn on_ready(
    online: &Online,
    agent: &mut Agent,
    args: &ListenArgs,
    info: &RequestInfo,
    held: &BTreeMap<api::WalletId, String>,
) -> Result<Option<Served>, Failure> {
    let Some(wallet) = held.get(&info.wallet_id) else {
        return Ok(None);
    };
    if info.state != RequestState::Ready || agent.handled.contains(&info.id) {
        return Ok(None);
    }
    let id = info.id.clone();
    // The device decodes the intent itself; a request whose digest it does not compute is
    // never signed (nor asked about).
    let decoded = match check_request(info) {
        Ok((decoded, _)) => decoded,
        Err(e) => {
            agent.handled.insert(id.clone());
            eprintln!("error: request {id} is not signed: {e}");
            return Ok(None);
        }
    };
    let kind = info.intent.request_kind();
    let sign = if agent.co_sign.contains(&kind) {
        println!(
            "co-signing request {id} (wallet {wallet}, --co-sign {kind}): {}",
            info.summary
        );
        true
    } else if std::io::stdin().is_terminal() {
        println!(
            "request {id} (wallet {wallet}, path {}) is ready for this device to co-sign: {}\n  digest {} (computed here)",
            info.path,
            info.summary,
            hex::encode(decoded.digest)
        );
        let sign = yes(ask("Co-sign? [y/N]:"));
        if !sign {
            println!("not signed; `tessera requests sign {id}` signs it later");
        }
        sign
    } else {
        println!(
            "request {id} (wallet {wallet}) is ready for this device to co-sign: {}\n  to sign it: tessera requests sign {id}  (or run tessera listen --co-sign {kind})",
            info.summary
        );
        false
    };
    agent.handled.insert(id.clone());
    if !sign {
        return Ok(None);
    }
    let mut record = match agent.records.remove(wallet) {
        Some(record) => record,
        None => match online.wallet(wallet) {
            Ok(record) => record,
            Err(e) => {
                agent.handled.remove(&id);
                eprintln!("error: request {id} was not signed: {e}");
                return Ok(None);
            }
        },
    };
    let signed = online
        .sign_fetched_wallet(info, wallet, &mut record, &[], |r, t| {
            eprintln!("  sign round {r}/{t} done")
        })
        .await;
    match signed {
        Ok(signed) => {
            agent.records.insert(wallet.clone(), record);
            if let Err(e) = print_signed(wallet, &decoded, &signed, None, args.format) {
                eprintln!("error: {}", e.message());
            }
            if args.once {
                return Ok(Some(Served::Stop));
            }
        }
        Err(e) if expired(&e) => {
            // Signed after logging in again.
            agent.handled.remove(&id);
            return Ok(Some(Served::LoginAgain));
        }
        Err(e) => {
            // Tried again when the server says it is ready again (it counts the attempts).
            agent.handled.remove(&id);
            eprintln!("error: request {id} was not signed: {e}");
        }
    }
    Ok(None)
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
