//! `tessera requests create | list | show | approve | refuse | sign`: durable signing requests
//! (issue 16). A request waits on the server for its approvals and for its co-signers to be
//! online (up to its expiry, 7 days at most); the devices learn of it through their event
//! stream (`tessera listen`), and anyone of the user's devices fetches its signature later.
//!
//! What is shown before an approval or a signature is the server's summary, and the device
//! checks that the request's intent, decoded here, gives the server's digest: a device never
//! approves or signs a digest it did not compute.

use std::io::IsTerminal;
use std::path::Path;
use std::time::Duration;

use clap::{Args, Subcommand};
use serde::Serialize;
use tessera_api::RequestState;
use tessera_api::requests::RequestInfo;
use tessera_client::device::Online;
use tessera_client::device::requests::check_request;

use crate::cmd::peer::{ask, yes};
use crate::cmd::wallet::{SignArgs, print_signed, sign_kind};
use crate::failure::{CliResult, Failure};
use crate::output::{self, Format, print_json};
use crate::unlock;

#[derive(Subcommand)]
pub(crate) enum RequestsCommand {
    /// Create a signing request that waits for its approvals and for its co-signers (devices
    /// that are offline sign it once their `tessera listen` runs): the same flags as `tessera
    /// sign`, for a wallet of yours that this device need not hold a share of.
    Create(Box<CreateArgs>),
    /// List the requests of your wallets.
    List(ListArgs),
    /// One request: its state, what it signs, its digest, approval rule, decisions and
    /// signature (verified).
    Show(IdArgs),
    /// Approve a request waiting for approval (signed by this device over the summary shown).
    Approve(DecideArgs),
    /// Refuse a request waiting for approval (signed by this device).
    Refuse(DecideArgs),
    /// Co-sign a ready request with this device's share; prints the signature, verified.
    Sign(SignRequestArgs),
}

#[derive(Args)]
pub(crate) struct CreateArgs {
    #[command(flatten)]
    sign: SignArgs,
    /// With --psbt: the input to sign (one request per input).
    #[arg(long, requires = "psbt")]
    input: Option<u32>,
    /// How long the request may wait, e.g. 90s, 30m, 2h, 7d (at most 7 days; default: the
    /// wallet policy's).
    #[arg(long, value_name = "DURATION")]
    expires: Option<String>,
    /// Wait until the request ends; print its signature, verified.
    #[arg(long)]
    wait: bool,
}

#[derive(Args)]
pub(crate) struct ListArgs {
    /// Only this wallet's (by name).
    #[arg(long)]
    wallet: Option<String>,
    /// Only requests in this state: awaiting_approval, ready, signing, signed, refused,
    /// expired, failed.
    #[arg(long)]
    state: Option<String>,
    #[command(flatten)]
    format: output::Format,
}

#[derive(Args)]
pub(crate) struct IdArgs {
    /// The request's id.
    id: String,
    #[command(flatten)]
    format: output::Format,
}

#[derive(Args)]
pub(crate) struct DecideArgs {
    /// The request's id.
    id: String,
    /// Do not ask for a confirmation on a terminal.
    #[arg(long)]
    yes: bool,
    #[command(flatten)]
    format: output::Format,
}

#[derive(Args)]
pub(crate) struct SignRequestArgs {
    /// The request's id.
    id: String,
    /// Do not ask for a confirmation on a terminal.
    #[arg(long)]
    yes: bool,
    /// A structure wallet's other devices to sign with (party labels, comma-separated); each
    /// joins with `tessera listen`. Without it, the server picks them among those online.
    #[arg(long, value_delimiter = ',')]
    with: Vec<String>,
    #[command(flatten)]
    format: output::Format,
}

/// `tessera requests …`.
pub(crate) async fn run(home: &Path, command: RequestsCommand) -> CliResult {
    match command {
        RequestsCommand::Create(args) => create(home, *args).await,
        RequestsCommand::List(args) => list(home, args).await,
        RequestsCommand::Show(args) => show(home, &args.id, args.format).await,
        RequestsCommand::Approve(args) => decide(home, args, true).await,
        RequestsCommand::Refuse(args) => decide(home, args, false).await,
        RequestsCommand::Sign(args) => sign(home, args).await,
    }
}

/// `90s`, `30m`, `2h`, `7d` (or plain seconds).
pub(crate) fn parse_duration(flag: &str, text: &str) -> Result<Duration, Failure> {
    let usage = || {
        Failure::Usage(format!(
            "{flag} {text:?}: expected a whole number with s, m, h or d, e.g. 2h"
        ))
    };
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => text.split_at(i),
        None => (text, "s"),
    };
    let n: u64 = number.parse().map_err(|_| usage())?;
    let scale = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(usage()),
    };
    let secs = n.checked_mul(scale).ok_or_else(usage)?;
    if secs == 0 {
        return Err(Failure::Usage(format!(
            "{flag} must be at least one second"
        )));
    }
    Ok(Duration::from_secs(secs))
}

/// A request as `--json` prints it: the server's [`RequestInfo`], with the signature's check
/// once it is signed.
#[derive(Serialize)]
struct RequestOut<'a> {
    #[serde(flatten)]
    request: &'a RequestInfo,
    /// Signed: whether the signature verified here under the wallet's key.
    #[serde(skip_serializing_if = "Option::is_none")]
    verified: Option<bool>,
    /// The key it verified under (the wallet's key at the request's path).
    #[serde(skip_serializing_if = "Option::is_none")]
    public_key: Option<String>,
    /// The signature, DER.
    #[serde(skip_serializing_if = "Option::is_none")]
    signature_der: Option<String>,
    /// Why it did not verify.
    #[serde(skip_serializing_if = "Option::is_none")]
    verify_error: Option<String>,
}

/// Prints `info` (text or JSON) with its signature checked; fails (exit 1) when it is signed
/// with a signature that does not verify.
async fn print_request(online: &Online, info: &RequestInfo, format: Format) -> CliResult {
    let mut out = RequestOut {
        request: info,
        verified: None,
        public_key: None,
        signature_der: None,
        verify_error: None,
    };
    if info.signature.is_some() {
        match online.request_signature(info).await {
            Ok(Some(checked)) => {
                out.verified = Some(true);
                out.public_key = Some(checked.public_key.to_string());
                out.signature_der = Some(hex::encode(checked.signature.to_der()));
            }
            Ok(None) => {}
            Err(e) => {
                out.verified = Some(false);
                out.verify_error = Some(e.to_string());
            }
        }
    }
    if format.json {
        print_json(&out)?;
    } else {
        println!("request        {}", info.id);
        println!("state          {}", info.state);
        println!("wallet         {}", info.wallet_id);
        println!("kind           {}  (path {})", info.kind, info.path);
        println!("summary        {}", info.summary);
        println!("digest         {}", info.digest);
        println!("created        {}", info.created_at);
        println!("expires        {}", info.expires_at);
        if let Some(rule) = &info.approval_rule {
            println!("approval rule  {rule}");
        }
        for d in &info.decisions {
            println!(
                "decision       {} by device {} ({}) at {}",
                if d.approve { "approved" } else { "refused" },
                d.device_id,
                d.labels.join(", "),
                d.at
            );
        }
        if let Some(detail) = &info.detail {
            println!("detail         {detail}");
        }
        if let Some(signature) = &info.signature {
            println!("r||s||v        {signature}");
        }
        if let Some(der) = &out.signature_der {
            println!("signature DER  {der}");
        }
        if let Some(key) = &out.public_key {
            println!("public key     {key}");
            println!("verified       yes");
        }
        next_step(info);
    }
    match out.verify_error {
        Some(e) => Err(Failure::Failed(format!(
            "request {}: its signature does not verify: {e}",
            info.id
        ))),
        None => Ok(()),
    }
}

/// What can be done with the request now (text output only).
fn next_step(info: &RequestInfo) {
    match info.state {
        RequestState::AwaitingApproval => eprintln!(
            "waits for approval: tessera requests approve {} (or refuse) on an approver's device",
            info.id
        ),
        RequestState::Ready => eprintln!(
            "ready: a device holding the wallet signs it with `tessera listen --co-sign {}` or \
             `tessera requests sign {}`",
            info.kind, info.id
        ),
        _ => {}
    }
}

/// `requests create`.
async fn create(home: &Path, args: CreateArgs) -> CliResult {
    let sign = &args.sign;
    let path = sign.path.parse().map_err(Failure::usage)?;
    if !sign.with.is_empty() {
        return Err(Failure::Usage(
            "--with is given when the request is signed: tessera requests sign ID --with …".into(),
        ));
    }
    let expires = args
        .expires
        .as_deref()
        .map(|e| parse_duration("--expires", e))
        .transpose()?;
    if let Some(e) = expires
        && e.as_secs() > tessera_api::requests::MAX_REQUEST_EXPIRY_SECS
    {
        return Err(Failure::Usage(format!(
            "--expires {}: a request waits at most 7 days",
            args.expires.as_deref().unwrap_or_default()
        )));
    }
    let kind = match &sign.psbt {
        Some(file) => psbt_input(file, sign.network.as_deref(), args.input)?,
        None => sign_kind(sign)?,
    };
    // Bad input is said before the passphrase is asked for.
    tessera_api::intent::decode(&kind).map_err(Failure::usage)?;
    let online = unlock::connect(home).await?;
    let info = online
        .create_request(&sign.wallet, &path, &kind, expires)
        .await?;
    if !args.wait {
        return print_request(&online, &info, sign.format).await;
    }
    if !sign.format.json {
        println!("request        {}", info.id);
        println!("summary        {}", info.summary);
    }
    let done = wait_until_final(&online, info).await?;
    print_request(&online, &done, sign.format).await?;
    match done.state {
        RequestState::Signed => Ok(()),
        state => Err(Failure::Failed(format!(
            "request {} ended {state}{}",
            done.id,
            done.detail
                .as_deref()
                .map(|d| format!(": {d}"))
                .unwrap_or_default()
        ))),
    }
}

/// `--psbt F --input N`: a request for one input of the PSBT (base64 or binary).
fn psbt_input(
    file: &Path,
    network: Option<&str>,
    input: Option<u32>,
) -> Result<tessera_api::intent::SignKind, Failure> {
    let network: tessera_api::btc::BtcNetwork = network
        .unwrap_or("mainnet")
        .parse()
        .map_err(|e| Failure::Usage(format!("--network: {e}")))?;
    let input = input.ok_or_else(|| {
        Failure::Usage(
            "--psbt: give the input to sign with --input N (one request per input)".into(),
        )
    })?;
    let bytes = std::fs::read(file)
        .map_err(|e| Failure::Usage(format!("--psbt: cannot read {}: {e}", file.display())))?;
    let parsed = tessera_api::btc::parse_psbt(&bytes)
        .map_err(|e| Failure::Usage(format!("--psbt {}: {e}", file.display())))?;
    Ok(tessera_api::intent::SignKind::BtcPsbt {
        psbt: tessera_api::btc::psbt_to_base64(&parsed),
        network,
        input,
    })
}

/// How often a waiting command reads the request again when no event came.
const POLL: Duration = Duration::from_secs(2);

/// Waits for `info` to reach a final state: woken by this device's events about it, reading it
/// again every [`POLL`] anyway (a server without events, a missed one). States are told on
/// stderr as they change.
async fn wait_until_final(online: &Online, mut info: RequestInfo) -> Result<RequestInfo, Failure> {
    let mut events = online.events(0);
    let mut events_on = true;
    let mut last = info.state;
    eprintln!("waiting: {}", info.state);
    while !info.state.is_final() {
        if events_on {
            tokio::select! {
                event = events.next() => match event {
                    Ok(e) if e.request_id.as_ref() != Some(&info.id) => continue,
                    Ok(_) => {}
                    // No stream (an older server, an expired token): polling only.
                    Err(_) => events_on = false,
                },
                () = tokio::time::sleep(POLL) => {}
            }
        } else {
            tokio::time::sleep(POLL).await;
        }
        info = online.request(&info.id).await?;
        if info.state != last {
            eprintln!("now: {}", info.state);
            last = info.state;
        }
    }
    Ok(info)
}

/// `requests list`.
async fn list(home: &Path, args: ListArgs) -> CliResult {
    let state = args
        .state
        .as_deref()
        .map(|s| {
            s.parse::<RequestState>().map_err(|_| {
                Failure::Usage(format!(
                    "--state {s:?}: one of awaiting_approval, ready, signing, signed, refused, \
                     expired, failed"
                ))
            })
        })
        .transpose()?;
    let online = unlock::connect(home).await?;
    let listed = online.requests_of(args.wallet.as_deref(), state).await?;
    if args.format.json {
        return print_json(&listed);
    }
    if listed.is_empty() {
        println!("no requests");
    }
    for r in listed {
        println!(
            "{}  {:<17} {:<16} wallet {}  expires {}\n    {}",
            r.id, r.state, r.kind, r.wallet_id, r.expires_at, r.summary
        );
    }
    Ok(())
}

/// `requests show`.
async fn show(home: &Path, id: &str, format: Format) -> CliResult {
    let online = unlock::connect(home).await?;
    let info = online.request(id).await?;
    print_request(&online, &info, format).await
}

/// Asks `question` on a terminal unless `yes`; without a terminal, goes ahead (the command
/// named the request).
fn confirmed(question: &str, yes_flag: bool) -> bool {
    if yes_flag || !std::io::stdin().is_terminal() {
        return true;
    }
    yes(ask(question))
}

/// Shows what a request signs (the server's summary, the digest this device computed): on
/// stdout, or on stderr when stdout carries the command's JSON.
fn describe(info: &RequestInfo, format: Format) -> Result<(), Failure> {
    let (decoded, path) = check_request(info)?;
    let mut lines = vec![
        format!("request        {} ({})", info.id, info.state),
        format!("wallet         {}  (path {path})", info.wallet_id),
        format!("signs          {}", info.summary),
    ];
    if decoded.summary != info.summary {
        lines.push(format!("decoded here   {}", decoded.summary));
    }
    lines.push(format!(
        "digest         {}  (computed here)",
        hex::encode(decoded.digest)
    ));
    for line in lines {
        if format.json {
            eprintln!("{line}");
        } else {
            println!("{line}");
        }
    }
    Ok(())
}

/// `requests approve|refuse`.
async fn decide(home: &Path, args: DecideArgs, approve: bool) -> CliResult {
    let online = unlock::connect(home).await?;
    let info = online.request(&args.id).await?;
    if info.state != RequestState::AwaitingApproval {
        return Err(Failure::Failed(format!(
            "request {} is {}: only a request awaiting approval is approved or refused",
            info.id, info.state
        )));
    }
    describe(&info, args.format)?;
    let verb = if approve { "Approve" } else { "Refuse" };
    if !confirmed(&format!("{verb}? [y/N]:"), args.yes) {
        return Err(Failure::Failed("not confirmed: nothing was sent".into()));
    }
    let after = online.decide_fetched(&info, approve).await?;
    if args.format.json {
        return print_json(&after);
    }
    println!(
        "request {}: {} by this device; now {}",
        after.id,
        if approve { "approved" } else { "refused" },
        after.state
    );
    next_step(&after);
    Ok(())
}

/// `requests sign`.
async fn sign(home: &Path, args: SignRequestArgs) -> CliResult {
    let online = unlock::connect(home).await?;
    let info = online.request(&args.id).await?;
    if info.state == RequestState::Ready {
        describe(&info, args.format)?;
        if !confirmed("Co-sign? [y/N]:", args.yes) {
            return Err(Failure::Failed("not confirmed: nothing was signed".into()));
        }
    }
    let signed = online
        .sign_fetched(&info, &args.with, |r, t| {
            eprintln!("  sign round {r}/{t} done");
        })
        .await?;
    let (decoded, _) = check_request(&info)?;
    // The wallet by its name on this device (it holds a share of it: it signed).
    let wallet = online
        .held_wallets()
        .await
        .ok()
        .and_then(|held| held.get(&info.wallet_id).cloned())
        .unwrap_or_else(|| info.wallet_id.to_string());
    print_signed(&wallet, &decoded, &signed, None, args.format)
}
