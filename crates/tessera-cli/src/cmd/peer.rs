//! `tessera peer …`: device-to-device mode (no server): discovery, pairing, keygen, signing,
//! refresh. The workflows are the SDK's (`tessera_client::peer::{lead, responder}`); this
//! module parses the arguments, prompts (it is the workflows' [`PeerUser`]) and prints.
//!
//! `peer listen` waits for other devices (advertised over mDNS unless `--no-mdns`); the device
//! that runs `peer pair|keygen|sign` leads, reaching the others by name (mDNS), by address
//! (`--connect HOST:PORT`) or through a commitment server's relay (`--relay URL`, which prints a
//! code for the other device's `peer listen --relay URL --code CODE`). A new peer is paired by
//! comparing the 6-digit code shown on both screens; a known one needs nothing; a known name
//! with another identity key is refused. Every request is shown on the receiving device and
//! needs its user's approval (or `--yes`).

use std::io::{BufRead, IsTerminal, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::{Args, Subcommand};
use tessera_client::peer::device::{PeerDevice, WalletSummary};
use tessera_client::peer::discovery::{self, Advertisement};
use tessera_client::peer::known::KnownPeers;
use tessera_client::peer::lead::{self, OpenWallet, Reach};
use tessera_client::peer::pairing::CodePrompt;
use tessera_client::peer::relay;
use tessera_client::peer::responder::Responder;
use tessera_client::peer::user::{Approval, PeerEvent, PeerUser};
use tessera_core::DerivationPath;

use crate::Failure;
use crate::unlock::passphrase;

#[derive(Subcommand)]
pub enum PeerCommand {
    /// Wait for other devices: advertise this one on the local network and answer requests.
    Listen(ListenArgs),
    /// List the devices advertising themselves on the local network.
    List {
        /// Seconds to listen for answers.
        #[arg(long, default_value_t = 3)]
        timeout: u64,
    },
    /// Pair with a device (compare the 6-digit code on both screens).
    Pair(LeadArgs),
    /// Create a wallet shared with one or two other devices (2-of-2 or 2-of-3...).
    Keygen(PeerKeygenArgs),
    /// Sign a message with a wallet and one other device that holds a share of it.
    Sign(PeerSignArgs),
    /// Refresh a wallet's shares with every other device of it (same public key, new shares).
    Refresh(PeerRefreshArgs),
    /// List paired devices.
    Known(crate::output::Format),
    /// Forget a paired device (to pair again, e.g. after it was reinstalled).
    Forget {
        /// Its name.
        name: String,
    },
}

#[derive(Args)]
pub struct Identity {
    /// This device's name as other devices see it (default: its name from `tessera init`, or
    /// tessera-<key fingerprint>).
    #[arg(long)]
    device_name: Option<String>,
}

#[derive(Args)]
pub struct ListenArgs {
    #[command(flatten)]
    identity: Identity,
    /// Address to listen on (default: every IPv4 and IPv6 address, a free port).
    #[arg(long, default_value = "[::]:0")]
    listen: std::net::SocketAddr,
    /// Do not advertise over mDNS (peers then need --connect HOST:PORT).
    #[arg(long)]
    no_mdns: bool,
    /// Approve every keygen, sign and refresh request without asking (pairing codes are still asked).
    #[arg(long)]
    yes: bool,
    /// Instead of listening, join a leader through this commitment server's relay (with --code).
    #[arg(long, requires = "code")]
    relay: Option<String>,
    /// The relay code the leading device shows.
    #[arg(long)]
    code: Option<String>,
    /// Pin the relay server's certificate (SHA-256, hex).
    #[arg(long)]
    server_fingerprint: Option<String>,
    /// Seconds without a message after which a connection is closed.
    #[arg(long, default_value_t = 1800, hide = true)]
    idle_timeout: u64,
}

#[derive(Args)]
pub struct LeadArgs {
    #[command(flatten)]
    identity: Identity,
    /// The other devices by name, comma separated (found over mDNS).
    #[arg(long, value_delimiter = ',', conflicts_with_all = ["connect", "relay"])]
    with: Vec<String>,
    /// The other devices by address (HOST:PORT), comma separated.
    #[arg(long, value_delimiter = ',', conflicts_with = "relay")]
    connect: Vec<String>,
    /// Reach the other device through this commitment server's relay: a code is printed for it.
    #[arg(long)]
    relay: Option<String>,
    /// Pin the relay server's certificate (SHA-256, hex).
    #[arg(long)]
    server_fingerprint: Option<String>,
    /// No longer supported: the code depends on the connection, so nobody knows it before the
    /// command starts. Scripts read the `pairing code` line and answer on stdin.
    #[arg(long, hide = true)]
    expect_code: Option<String>,
    /// Seconds to look for devices by name.
    #[arg(long, default_value_t = 5)]
    discovery_timeout: u64,
}

#[derive(Args)]
pub struct PeerKeygenArgs {
    /// The new wallet's name (the same on every device).
    #[arg(long)]
    name: String,
    /// Signers needed.
    #[arg(long, default_value_t = 2)]
    threshold: u8,
    #[command(flatten)]
    lead: LeadArgs,
}

#[derive(Args)]
pub struct PeerSignArgs {
    /// The wallet.
    #[arg(long)]
    wallet: String,
    /// The message (signed as an Ethereum personal_sign / EIP-191 message).
    #[arg(long)]
    message: String,
    /// Non-hardened BIP-32 path.
    #[arg(long, default_value = "m")]
    path: String,
    #[command(flatten)]
    lead: LeadArgs,
}

#[derive(Args)]
pub struct PeerRefreshArgs {
    /// The wallet.
    #[arg(long)]
    wallet: String,
    #[command(flatten)]
    lead: LeadArgs,
}

/// One question at a time on the terminal (or stdin), whatever asks.
static PROMPT: Mutex<()> = Mutex::new(());

pub(crate) fn ask(question: &str) -> Option<String> {
    let _one = PROMPT
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    print!("{question} ");
    let _ = std::io::stdout().flush();
    let mut line = String::new();
    let read = tokio::task::block_in_place(|| std::io::stdin().lock().read_line(&mut line));
    if !std::io::stdin().is_terminal() {
        // Piped answers are not echoed: end the prompt's line.
        println!();
    }
    match read {
        Ok(0) | Err(_) => None,
        Ok(_) => Some(line.trim().to_string()),
    }
}

pub(crate) fn yes(answer: Option<String>) -> bool {
    answer.is_some_and(|a| matches!(a.to_ascii_lowercase().as_str(), "y" | "yes"))
}

/// The person at the terminal, as the SDK's workflows ask and tell them things.
struct Terminal {
    /// `--yes`: approve every request without asking (pairing codes are still asked).
    auto_approve: bool,
}

impl PeerUser for Terminal {
    /// Shows the code and reads the confirmation: a line on stdin, `yes` or the digits the
    /// other device shows (a script that drives both devices passes each the code the other
    /// printed).
    fn confirm_code(&self, prompt: &CodePrompt) -> bool {
        println!(
            "pairing code {}  (new device {:?}, key {})",
            prompt.display(),
            prompt.peer_name,
            prompt.peer_fingerprint
        );
        let _ = std::io::stdout().flush();
        let answer = ask(&format!(
            "Does {:?} show {}? Type yes or the code to confirm [y/N]:",
            prompt.peer_name,
            prompt.display()
        ));
        let digits = answer
            .as_deref()
            .map(|a| a.chars().filter(char::is_ascii_digit).collect::<String>());
        digits.as_deref() == Some(prompt.code.as_str()) || yes(answer)
    }

    fn approve(&self, request: &Approval<'_>) -> bool {
        println!("request: {request}");
        if self.auto_approve {
            println!("approved (--yes)");
            return true;
        }
        yes(ask("Approve? [y/N]:"))
    }

    fn notify(&self, event: PeerEvent<'_>) {
        match event {
            // The terminal says who asks what when it asks (`approve`).
            PeerEvent::Authenticated { .. } => {}
            PeerEvent::Paired { name } => println!("paired with {name:?}"),
            PeerEvent::RelayCode {
                url,
                code,
                fingerprint,
            } => show_relay_code(url, code, fingerprint),
            PeerEvent::PairingPaused { minutes } => {
                println!(
                    "too many failed pairing attempts: new pairings are paused for {minutes} \
                     minutes (paired devices still work)"
                );
            }
            PeerEvent::Round {
                protocol,
                round,
                total,
            } => {
                eprintln!("  {protocol} round {round}/{total} done");
                pause_for_crash_test(&format!("{protocol}-round-{round}"));
            }
            PeerEvent::Refresh(step) => {
                eprintln!("  refresh {}", step.name());
                pause_for_crash_test(&format!("refresh-{}", step.name()));
            }
            PeerEvent::Settled { wallet, epoch } => {
                eprintln!("settled wallet {wallet:?} on epoch {epoch} after an interrupted refresh")
            }
            PeerEvent::WalletCreated(summary) => print_wallet(summary),
            PeerEvent::Signed { message, signature } => println!(
                "signed {message:?}: r||s||v {}",
                hex::encode(signature.to_rsv())
            ),
            PeerEvent::Refreshed { wallet, epoch } => {
                println!("refreshed {wallet:?}: its shares are now of epoch {epoch}");
            }
            PeerEvent::BanNotStored {
                party,
                wallet,
                error,
            } => {
                eprintln!("could not store the ban of party {party} of wallet {wallet:?}: {error}")
            }
            PeerEvent::SessionFailed { from, error } => {
                eprintln!("error: session with {from} failed: {error}");
            }
        }
        let _ = std::io::stdout().flush();
    }
}

fn show_relay_code(url: &str, code: &str, fingerprint: Option<&str>) {
    println!("relay code {code}");
    println!(
        "on the other device: tessera peer listen --relay {url} --code {code}{}",
        fingerprint
            .map(|f| format!(" --server-fingerprint {f}"))
            .unwrap_or_default()
    );
    if std::io::stdout().is_terminal()
        && let Ok(qr) = qrcode::QrCode::new(format!("tessera-relay:{url}#{code}"))
    {
        println!(
            "{}",
            qr.render::<qrcode::render::unicode::Dense1x2>()
                .quiet_zone(true)
                .build()
        );
    }
}

fn print_wallet(w: &WalletSummary) {
    println!("wallet         {} ({})", w.name, w.wallet_id);
    println!(
        "threshold      {}-of-{} (this device is party {})",
        w.threshold.t, w.threshold.n, w.party
    );
    println!("devices        {}", w.devices.join(", "));
    println!("public key     {}", w.public_key);
    println!("eth address    {}", w.public_key.eth_address());
}

/// Unlocks this device's keystore (creating its identity on first use) and names it.
fn unlock(home: &Path, identity: &Identity) -> Result<PeerDevice, Failure> {
    Ok(crate::unlock::device(home).peer(passphrase()?, identity.device_name.clone())?)
}

/// Crash-test hook: `TESSERA_TEST_PAUSE_AT=keygen-round-N|sign-round-N|refresh-round-N|
/// refresh-pending-stored|refresh-committed|refresh-switched` announces the point on stderr and
/// stops there, so a test can kill this process (or its peer) at an exact step.
fn pause_for_crash_test(at: &str) {
    if std::env::var("TESSERA_TEST_PAUSE_AT").is_ok_and(|v| v == at) {
        eprintln!("paused at {at}");
        std::thread::sleep(Duration::from_secs(120));
    }
}

pub async fn run(home: &Path, command: PeerCommand) -> Result<(), Failure> {
    match command {
        PeerCommand::List { timeout } => {
            let found = tokio::task::spawn_blocking(move || {
                discovery::browse(Duration::from_secs(timeout))
            })
            .await
            .map_err(|e| Failure::Failed(e.to_string()))?
            .map_err(Failure::from)?;
            if found.is_empty() {
                println!("no devices found (is `tessera peer listen` running on this network?)");
            }
            for d in found {
                let addrs: Vec<String> = d.addresses.iter().map(ToString::to_string).collect();
                println!(
                    "{:<24} {:<5} key {}  {}",
                    d.name,
                    d.status,
                    d.fingerprint,
                    addrs.join(" ")
                );
            }
            Ok(())
        }
        PeerCommand::Known(format) => {
            let known = KnownPeers::load_dir(home).map_err(Failure::from)?;
            if format.json {
                return crate::output::print_json(&known.all());
            }
            if known.all().is_empty() {
                println!("no paired devices");
            }
            for p in known.all() {
                println!("{:<24} key {}", p.name, p.identity);
            }
            Ok(())
        }
        PeerCommand::Forget { name } => {
            let mut known = KnownPeers::load_dir(home).map_err(Failure::from)?;
            if known.remove(&name).map_err(Failure::from)? {
                println!("forgot {name:?}");
                Ok(())
            } else {
                Err(Failure::Usage(format!("no paired device named {name:?}")))
            }
        }
        PeerCommand::Listen(args) => listen(home, args).await,
        PeerCommand::Pair(args) => {
            let device = unlock(home, &args.identity)?;
            let links = reach(&device, &args, &terminal()).await?;
            for (name, newly_paired) in lead::pair(links).await.map_err(Failure::from)? {
                // A new pairing was announced as it happened (by `reach`).
                if !newly_paired {
                    println!("{name:?} is paired already");
                }
            }
            Ok(())
        }
        PeerCommand::Keygen(args) => keygen(home, args).await,
        PeerCommand::Sign(args) => sign(home, args).await,
        PeerCommand::Refresh(args) => refresh(home, args).await,
    }
}

fn terminal() -> Terminal {
    Terminal {
        auto_approve: false,
    }
}

/// Connects to the devices `args` names and authenticates them (pairing new ones).
async fn reach(
    device: &PeerDevice,
    args: &LeadArgs,
    user: &Terminal,
) -> Result<Vec<lead::Link>, Failure> {
    if args.expect_code.is_some() {
        return Err(Failure::Usage(
            "--expect-code cannot work and was removed: the pairing code depends on this \
             connection, so nobody knows it in advance. Compare the `pairing code` both devices \
             print and answer the prompt on stdin with yes or the other device's code"
                .into(),
        ));
    }
    let how = match &args.relay {
        Some(url) => Reach::Relay {
            url: url.clone(),
            fingerprint: args.server_fingerprint.clone(),
        },
        None => Reach::Direct {
            names: args.with.clone(),
            addresses: args.connect.clone(),
            discovery_timeout: Duration::from_secs(args.discovery_timeout),
        },
    };
    lead::reach(device, &how, user).await.map_err(Failure::from)
}

async fn keygen(home: &Path, args: PeerKeygenArgs) -> Result<(), Failure> {
    lead::refuse_unsignable_threshold(args.threshold).map_err(|e| Failure::Usage(e.to_string()))?;
    let device = unlock(home, &args.lead.identity)?;
    if device
        .keystore
        .has_wallet(&args.name)
        .map_err(Failure::from)?
    {
        return Err(Failure::Usage(format!(
            "a wallet named {:?} already exists on this device",
            args.name
        )));
    }
    let user = terminal();
    let links = reach(&device, &args.lead, &user).await?;
    let names: Vec<String> = links.iter().map(|l| l.peer.name.clone()).collect();
    eprintln!(
        "creating {}-of-{} wallet {:?} with {}; waiting for approval",
        args.threshold,
        links.len() + 1,
        args.name,
        names.join(", ")
    );
    let summary = lead::keygen(&device, links, &args.name, args.threshold, &user)
        .await
        .map_err(Failure::from)?;
    print_wallet(&summary);
    Ok(())
}

/// Without `--with`, `--connect` or `--relay`: the wallet's other devices by name.
fn default_devices(lead: &mut LeadArgs, wallet: &OpenWallet) {
    if lead.with.is_empty() && lead.connect.is_empty() && lead.relay.is_none() {
        lead.with = wallet
            .others()
            .into_iter()
            .map(|(_, name)| name.to_string())
            .collect();
    }
}

async fn sign(home: &Path, args: PeerSignArgs) -> Result<(), Failure> {
    let path: DerivationPath = args
        .path
        .parse()
        .map_err(|e: tessera_core::Error| Failure::Usage(e.to_string()))?;
    if args.message.len() > tessera_client::peer::wire::MAX_SIGN_MESSAGE {
        return Err(Failure::Usage("the message is too long".into()));
    }
    let mut lead = args.lead;
    let device = unlock(home, &lead.identity)?;
    let mut wallet = OpenWallet::to_sign(&device, &args.wallet).map_err(Failure::from)?;
    if lead.with.is_empty() && lead.connect.is_empty() && lead.relay.is_none() {
        // The only other device of a 2-of-2: by name.
        if wallet.others().len() != 1 {
            return Err(Failure::Usage(
                "name the co-signing device: --with NAME, --connect HOST:PORT or --relay URL"
                    .into(),
            ));
        }
        default_devices(&mut lead, &wallet);
    }
    if lead.with.len() + lead.connect.len() > 1 {
        return Err(Failure::Usage(
            "device-to-device signing takes one other device".into(),
        ));
    }
    let user = terminal();
    let mut links = reach(&device, &lead, &user).await?;
    let link = links
        .pop()
        .ok_or_else(|| Failure::Failed("no device".into()))?;
    wallet.party_of(&link).map_err(Failure::from)?;
    println!("signing        {:?} with {:?}", args.message, args.wallet);
    eprintln!("waiting for {:?} to approve", link.peer.name);
    let signature = lead::sign(&device, &mut wallet, link, &args.message, &path, &user)
        .await
        .map_err(Failure::from)?;
    let key = wallet
        .record
        .current
        .public_key_at(&path)
        .map_err(|e| Failure::Failed(e.to_string()))?;
    println!("public key     {key}");
    println!(
        "digest         {}",
        hex::encode(tessera_core::ecdsa::eip191_digest(args.message.as_bytes()))
    );
    println!("signature DER  {}", hex::encode(signature.to_der()));
    println!("r||s||v        {}", hex::encode(signature.to_rsv()));
    println!("verified       yes");
    Ok(())
}

async fn refresh(home: &Path, args: PeerRefreshArgs) -> Result<(), Failure> {
    let mut lead = args.lead;
    let device = unlock(home, &lead.identity)?;
    let mut wallet = OpenWallet::to_refresh(&device, &args.wallet).map_err(Failure::from)?;
    default_devices(&mut lead, &wallet);
    let user = terminal();
    let links = reach(&device, &lead, &user).await?;
    let names: Vec<String> = links.iter().map(|l| l.peer.name.clone()).collect();
    eprintln!(
        "refreshing wallet {:?} with {}; waiting for approval",
        args.wallet,
        names.join(", ")
    );
    let epoch = lead::refresh(&device, &mut wallet, links, &user)
        .await
        .map_err(Failure::from)?;
    println!("wallet         {}", args.wallet);
    println!("epoch          {epoch}");
    println!("public key     {}", wallet.record.current.public_key());
    Ok(())
}

async fn listen(home: &Path, args: ListenArgs) -> Result<(), Failure> {
    let device = unlock(home, &args.identity)?;
    let user = Arc::new(Terminal {
        auto_approve: args.yes,
    });
    let idle = Duration::from_secs(args.idle_timeout.max(1));
    if let Some(url) = &args.relay {
        let code = args.code.clone().unwrap_or_default();
        let frames = relay::open(url, args.server_fingerprint.as_deref(), &code)
            .await
            .map_err(Failure::from)?;
        println!(
            "joined relay {code} as {:?}; connecting to the other device",
            device.me.name
        );
        let responder = Responder::new(device, user, None, idle);
        return responder
            .serve(frames, true)
            .await
            .map_err(|e| Failure::Failed(e.to_string()));
    }
    let socket = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| Failure::Failed(format!("cannot listen on {}: {e}", args.listen)))?;
    let addr = socket
        .local_addr()
        .map_err(|e| Failure::Failed(e.to_string()))?;
    let advertisement = if args.no_mdns {
        None
    } else {
        match Advertisement::start(
            &device.me.name,
            &device.me.identity.public_key(),
            addr.port(),
        ) {
            Ok(a) => Some(a),
            Err(e) => {
                eprintln!(
                    "warning: not advertised ({e}); other devices can use --connect HOST:{}",
                    addr.port()
                );
                None
            }
        }
    };
    println!(
        "listening on {addr} as {:?} (key {}){}",
        device.me.name,
        hex::encode(&device.me.identity.public_key()[..8]),
        if advertisement.is_some() {
            ", advertised over mDNS"
        } else {
            ""
        }
    );
    let _ = std::io::stdout().flush();
    let responder = Responder::new(device, user, advertisement, idle);
    responder
        .listen(socket)
        .await
        .map_err(|e| Failure::Failed(format!("accept: {e}")))
}
