//! `tessera peer …`: device-to-device mode (no server): discovery, pairing, keygen, signing.
//!
//! `peer listen` waits for other devices (advertised over mDNS unless `--no-mdns`); the device
//! that runs `peer pair|keygen|sign` leads, reaching the others by name (mDNS), by address
//! (`--connect HOST:PORT`) or through a commitment server's relay (`--relay URL`, which prints a
//! code for the other device's `peer listen --relay URL --code CODE`). A new peer is paired by
//! comparing the 6-digit code shown on both screens; a known one needs nothing; a known name
//! with another identity key is refused. Every request is shown on the receiving device and
//! needs its user's approval (or `--yes`).

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::{Args, Subcommand};
use tessera_client::WalletRecord;
use tessera_client::peer::channel::{Channel, Frames};
use tessera_client::peer::discovery::{self, Advertisement};
use tessera_client::peer::known::{self, KnownPeers, PeerWallet};
use tessera_client::peer::pairing::{self, AuthenticatedPeer, CodePrompt, LocalDevice};
use tessera_client::peer::session::{self, Joins, Link};
use tessera_client::peer::wire::{Message, Request};
use tessera_client::peer::{PeerError, relay};
use tessera_core::{DerivationPath, KeyShare};
use tessera_store::{Keystore, Passphrase};

use crate::Failure;
use crate::device::{passphrase, store_error};

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
    /// Approve every keygen and sign request without asking (pairing codes are still asked).
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

fn peer_error(e: PeerError) -> Failure {
    match e {
        PeerError::NotFound(_) => Failure::Usage(e.to_string()),
        other => Failure::Failed(other.to_string()),
    }
}

/// One question at a time on the terminal (or stdin), whatever asks.
static PROMPT: Mutex<()> = Mutex::new(());

fn ask(question: &str) -> Option<String> {
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

fn yes(answer: Option<String>) -> bool {
    answer.is_some_and(|a| matches!(a.to_ascii_lowercase().as_str(), "y" | "yes"))
}

/// Shows the code and reads the confirmation: a line on stdin, `yes` or the digits the other
/// device shows (a script that drives both devices passes each the code the other printed).
fn confirm_code(prompt: &CodePrompt) -> bool {
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

struct Unlocked {
    home: PathBuf,
    keystore: Keystore,
    passphrase: Passphrase,
    me: LocalDevice,
}

fn unlock(home: &Path, identity: &Identity) -> Result<Unlocked, Failure> {
    let keystore = Keystore::open(home).map_err(store_error)?;
    let passphrase = passphrase()?;
    let id = if keystore.has_identity().map_err(store_error)? {
        keystore.load_identity(&passphrase).map_err(store_error)?
    } else {
        keystore.create_identity(&passphrase).map_err(store_error)?
    };
    let name = match &identity.device_name {
        Some(n) => n.clone(),
        None => crate::device::load_config(home)
            .map(|c| c.device_name)
            .unwrap_or_else(|_| format!("tessera-{}", hex::encode(&id.public_key()[..4]))),
    };
    tessera_client::peer::wire::check_name(&name).map_err(|e| Failure::Usage(e.to_string()))?;
    Ok(Unlocked {
        home: home.to_path_buf(),
        keystore,
        passphrase,
        me: LocalDevice {
            name,
            identity: Arc::new(id),
        },
    })
}

fn round_printer(what: &'static str) -> impl FnMut(u8, u8) + Send {
    move |r, t| {
        eprintln!("  {what} round {r}/{t} done");
        pause_for_crash_test(what, r);
    }
}

/// Crash-test hook: `TESSERA_TEST_PAUSE_AT=keygen-round-N|sign-round-N` announces the point on
/// stderr and stops there, so a test can kill this process (or its peer) at an exact round.
fn pause_for_crash_test(what: &str, round: u8) {
    let at = format!("{what}-round-{round}");
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
            .map_err(peer_error)?;
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
            let known = KnownPeers::load(home).map_err(peer_error)?;
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
            let mut known = KnownPeers::load(home).map_err(peer_error)?;
            if known.remove(&name).map_err(peer_error)? {
                println!("forgot {name:?}");
                Ok(())
            } else {
                Err(Failure::Usage(format!("no paired device named {name:?}")))
            }
        }
        PeerCommand::Listen(args) => listen(home, args).await,
        PeerCommand::Pair(args) => {
            let u = unlock(home, &args.identity)?;
            let links = reach(&u, &args).await?;
            for mut link in links {
                pairing::send(&mut link.channel, &Message::Request(Request::Pair))
                    .await
                    .map_err(peer_error)?;
                link.channel.close().await;
                // A new pairing was announced as it happened (by `reach`).
                if !link.peer.newly_paired {
                    println!("{:?} is paired already", link.peer.name);
                }
            }
            Ok(())
        }
        PeerCommand::Keygen(args) => keygen(home, args).await,
        PeerCommand::Sign(args) => sign(home, args).await,
    }
}

/// Connects to the devices `args` names and authenticates them (pairing new ones).
async fn reach(u: &Unlocked, args: &LeadArgs) -> Result<Vec<Link>, Failure> {
    if args.expect_code.is_some() {
        return Err(Failure::Usage(
            "--expect-code cannot work and was removed: the pairing code depends on this \
             connection, so nobody knows it in advance. Compare the `pairing code` both devices \
             print and answer the prompt on stdin with yes or the other device's code"
                .into(),
        ));
    }
    let mut known = KnownPeers::load(&u.home).map_err(peer_error)?;
    let mut confirm = |p: &CodePrompt| confirm_code(p);
    if let Some(url) = &args.relay {
        let code = relay::new_code();
        println!("relay code {code}");
        println!(
            "on the other device: tessera peer listen --relay {url} --code {code}{}",
            args.server_fingerprint
                .as_ref()
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
        let _ = std::io::stdout().flush();
        let frames = relay::open(url, args.server_fingerprint.as_deref(), &code)
            .await
            .map_err(peer_error)?;
        // The joining device starts the handshake; we answer it.
        let mut channel = Channel::accept(frames).await.map_err(peer_error)?;
        let peer = pairing::authenticate(&mut channel, &u.me, &mut known, &mut confirm)
            .await
            .map_err(peer_error)?;
        if peer.newly_paired {
            println!("paired with {:?}", peer.name);
        }
        return Ok(vec![Link {
            peer,
            channel,
            address: None,
        }]);
    }
    let mut addresses: Vec<(Option<String>, Vec<String>)> = args
        .connect
        .iter()
        .map(|a| (None, vec![a.clone()]))
        .collect();
    for name in &args.with {
        let timeout = Duration::from_secs(args.discovery_timeout);
        let wanted = name.clone();
        let found = tokio::task::spawn_blocking(move || discovery::find(&wanted, timeout))
            .await
            .map_err(|e| Failure::Failed(e.to_string()))?
            .map_err(peer_error)?;
        if found.addresses.is_empty() {
            return Err(Failure::Failed(format!("{name:?} advertised no address")));
        }
        let all = found.addresses.iter().map(ToString::to_string).collect();
        addresses.push((Some(name.clone()), all));
    }
    if addresses.is_empty() {
        return Err(Failure::Usage(
            "name the other device: --with NAME, --connect HOST:PORT or --relay URL".into(),
        ));
    }
    let mut links = Vec::new();
    for (name, address) in addresses {
        let link = session::connect(&address, &u.me, &mut known, &mut confirm)
            .await
            .map_err(peer_error)?;
        if let Some(name) = name
            && link.peer.name != name
        {
            return Err(Failure::Failed(format!(
                "the device at {} says it is {:?}, not {name:?}",
                link.address.as_deref().unwrap_or_default(),
                link.peer.name
            )));
        }
        if link.peer.newly_paired {
            println!("paired with {:?}", link.peer.name);
        }
        links.push(link);
    }
    Ok(links)
}

/// Device-to-device signing takes exactly two devices (`peer sign` and one other): a wallet
/// that needs more signers could never sign, so it is refused before anyone is contacted.
const PEER_SIGNERS: u8 = 2;

/// A device-to-device wallet of `t` signers that `peer sign` could never sign with.
#[derive(Debug, thiserror::Error)]
#[error(
    "a device-to-device wallet needs exactly {PEER_SIGNERS} signers (`tessera peer sign` signs \
     with this device and one other), so a --threshold {0} wallet could never sign: use \
     --threshold {PEER_SIGNERS} (any two of its devices sign)"
)]
struct UnsignableThreshold(u8);

fn refuse_unsignable_threshold(t: u8) -> Result<(), UnsignableThreshold> {
    if t == PEER_SIGNERS {
        return Ok(());
    }
    Err(UnsignableThreshold(t))
}

async fn keygen(home: &Path, args: PeerKeygenArgs) -> Result<(), Failure> {
    refuse_unsignable_threshold(args.threshold).map_err(|e| Failure::Usage(e.to_string()))?;
    let u = unlock(home, &args.lead.identity)?;
    if u.keystore.has_wallet(&args.name).map_err(store_error)? {
        return Err(Failure::Usage(format!(
            "a wallet named {:?} already exists on this device",
            args.name
        )));
    }
    let links = reach(&u, &args.lead).await?;
    let names: Vec<String> = links.iter().map(|l| l.peer.name.clone()).collect();
    eprintln!(
        "creating {}-of-{} wallet {:?} with {}; waiting for approval",
        args.threshold,
        links.len() + 1,
        args.name,
        names.join(", ")
    );
    let (share, wallet) = session::lead_keygen(
        &u.me,
        links,
        &args.name,
        args.threshold,
        &mut round_printer("keygen"),
    )
    .await
    .map_err(peer_error)?;
    store_wallet(&u, &args.name, share, &wallet)
}

fn store_wallet(
    u: &Unlocked,
    name: &str,
    share: KeyShare,
    wallet: &PeerWallet,
) -> Result<(), Failure> {
    known::save_peer_wallet(&u.home, name, wallet).map_err(peer_error)?;
    u.keystore
        .save_wallet(name, &WalletRecord::new(share).to_bytes(), &u.passphrase)
        .map_err(store_error)?;
    let share = load_share(u, name)?;
    println!("wallet         {name} ({})", share.wallet_id());
    println!(
        "threshold      {}-of-{} (this device is party {})",
        share.threshold().t,
        share.threshold().n,
        share.party().get()
    );
    let names: Vec<&str> = wallet.parties.iter().map(|p| p.name.as_str()).collect();
    println!("devices        {}", names.join(", "));
    println!("public key     {}", share.public_key());
    println!("eth address    {}", share.public_key().eth_address());
    Ok(())
}

/// The share of a wallet, refused while this device bans a party of it.
fn load_share(u: &Unlocked, name: &str) -> Result<KeyShare, Failure> {
    let bytes = u
        .keystore
        .load_wallet(name, &u.passphrase)
        .map_err(store_error)?;
    let record = WalletRecord::from_bytes(&bytes)
        .map_err(|e| Failure::Failed(format!("wallet {name}: {e}")))?;
    record
        .refuse_if_banned()
        .map_err(|e| Failure::Failed(format!("wallet {name}: {e}")))?;
    Ok(record.current)
}

/// When the engine blamed a peer, bans it from the wallet in this device's record.
fn ban_on_blame(u: &Unlocked, name: &str, e: &PeerError) {
    let PeerError::Blamed {
        party,
        session_id,
        round,
        reason,
        ..
    } = e
    else {
        return;
    };
    let banned = u
        .keystore
        .load_wallet(name, &u.passphrase)
        .map_err(|e| e.to_string())
        .and_then(|bytes| WalletRecord::from_bytes(&bytes).map_err(|e| e.to_string()))
        .and_then(|mut record| {
            record.ban(*party, session_id, *round, reason);
            u.keystore
                .replace_wallet(name, &record.to_bytes(), &u.passphrase)
                .map_err(|e| e.to_string())
        });
    if let Err(why) = banned {
        eprintln!("could not store the ban of party {party} of wallet {name:?}: {why}");
    }
}

fn peer_wallet(u: &Unlocked, name: &str) -> Result<PeerWallet, Failure> {
    known::load_peer_wallet(&u.home, name)
        .map_err(peer_error)?
        .ok_or_else(|| {
            Failure::Usage(format!(
                "{name:?} is not a device-to-device wallet of this device"
            ))
        })
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
    let u = unlock(home, &lead.identity)?;
    let wallet = peer_wallet(&u, &args.wallet)?;
    let share = load_share(&u, &args.wallet)?;
    let others: Vec<_> = wallet
        .parties
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != usize::from(wallet.me))
        .collect();
    if lead.with.is_empty() && lead.connect.is_empty() && lead.relay.is_none() {
        // The only other device of a 2-of-2: by name.
        match others.as_slice() {
            [(_, p)] => lead.with.push(p.name.clone()),
            _ => {
                return Err(Failure::Usage(
                    "name the co-signing device: --with NAME, --connect HOST:PORT or --relay URL"
                        .into(),
                ));
            }
        }
    }
    if lead.with.len() + lead.connect.len() > 1 {
        return Err(Failure::Usage(
            "device-to-device signing takes one other device".into(),
        ));
    }
    let mut links = reach(&u, &lead).await?;
    let link = links
        .pop()
        .ok_or_else(|| Failure::Failed("no device".into()))?;
    let Some((party, _)) = others
        .iter()
        .find(|(_, p)| p.identity == link.peer.identity)
    else {
        return Err(Failure::Failed(format!(
            "{:?} holds no share of wallet {:?}",
            link.peer.name, args.wallet
        )));
    };
    println!("signing        {:?} with {:?}", args.message, args.wallet);
    eprintln!("waiting for {:?} to approve", link.peer.name);
    let party = u8::try_from(*party).unwrap_or(u8::MAX);
    let signature = session::lead_sign(
        &share,
        &args.wallet,
        link,
        party,
        &args.message,
        &path,
        &mut round_printer("sign"),
    )
    .await
    .map_err(|e| {
        ban_on_blame(&u, &args.wallet, &e);
        peer_error(e)
    })?;
    let key = share
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

struct Listener {
    u: Unlocked,
    joins: Joins,
    auto_approve: bool,
    advertisement: Mutex<Option<Advertisement>>,
    busy: Mutex<usize>,
    idle: Duration,
    pairing_limit: pairing::PairingLimit,
}

impl Listener {
    fn set_busy(&self, delta: isize) {
        let mut busy = self
            .busy
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *busy = busy.saturating_add_signed(delta);
        let status = if *busy > 0 { "busy" } else { "ready" };
        if let Ok(mut ad) = self.advertisement.lock()
            && let Some(ad) = ad.as_mut()
        {
            let _ = ad.set_status(status);
        }
    }

    fn approve(&self, what: &str) -> bool {
        println!("request: {what}");
        if self.auto_approve {
            println!("approved (--yes)");
            return true;
        }
        yes(ask("Approve? [y/N]:"))
    }
}

async fn listen(home: &Path, args: ListenArgs) -> Result<(), Failure> {
    let u = unlock(home, &args.identity)?;
    if let Some(url) = &args.relay {
        let code = args.code.clone().unwrap_or_default();
        let frames = relay::open(url, args.server_fingerprint.as_deref(), &code)
            .await
            .map_err(peer_error)?;
        println!(
            "joined relay {code} as {:?}; connecting to the other device",
            u.me.name
        );
        let listener = Arc::new(Listener {
            u,
            joins: Joins::default(),
            auto_approve: args.yes,
            advertisement: Mutex::new(None),
            busy: Mutex::new(0),
            idle: Duration::from_secs(args.idle_timeout.max(1)),
            pairing_limit: pairing::PairingLimit::default(),
        });
        return serve(&listener, frames, true)
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
        match Advertisement::start(&u.me.name, &u.me.identity.public_key(), addr.port()) {
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
        u.me.name,
        hex::encode(&u.me.identity.public_key()[..8]),
        if advertisement.is_some() {
            ", advertised over mDNS"
        } else {
            ""
        }
    );
    let _ = std::io::stdout().flush();
    let listener = Arc::new(Listener {
        u,
        joins: Joins::default(),
        auto_approve: args.yes,
        advertisement: Mutex::new(advertisement),
        busy: Mutex::new(0),
        idle: Duration::from_secs(args.idle_timeout.max(1)),
        pairing_limit: pairing::PairingLimit::default(),
    });
    loop {
        let (stream, from) = socket
            .accept()
            .await
            .map_err(|e| Failure::Failed(format!("accept: {e}")))?;
        let listener = listener.clone();
        tokio::spawn(async move {
            if let Err(e) = serve(&listener, Frames::tcp(stream), false).await {
                eprintln!("error: session with {from} failed: {e}");
            }
        });
    }
}

/// Serves one connection: authenticate, then answer its request.
async fn serve(
    listener: &Arc<Listener>,
    frames: Frames,
    we_connect: bool,
) -> Result<(), PeerError> {
    let mut channel = if we_connect {
        Channel::initiate(frames).await?
    } else {
        Channel::accept(frames).await?
    };
    channel.set_idle_timeout(listener.idle);
    let mut known = KnownPeers::load(&listener.u.home)?;
    let mut confirm = |p: &CodePrompt| confirm_code(p);
    let limit = &listener.pairing_limit;
    let authenticated = pairing::authenticate_limited(
        &mut channel,
        &listener.u.me,
        &mut known,
        &mut confirm,
        Some(limit),
    )
    .await;
    let peer = match authenticated {
        Ok(peer) => peer,
        Err(e) => {
            if !matches!(e, PeerError::PairingPaused { .. })
                && let Err(wait) = limit.check()
            {
                println!(
                    "too many failed pairing attempts: new pairings are paused for {} minutes \
                     (paired devices still work)",
                    wait.as_secs().div_ceil(60)
                );
                let _ = std::io::stdout().flush();
            }
            return Err(e);
        }
    };
    if peer.newly_paired {
        println!("paired with {:?}", peer.name);
    }
    let request = match pairing::recv(&mut channel).await {
        Ok(Message::Request(r)) => r,
        Ok(_) => return Err(PeerError::Protocol("expected a request".into())),
        Err(PeerError::Closed) => return Ok(()),
        Err(e) => return Err(e),
    };
    match request {
        Request::Pair => Ok(()),
        Request::Join { session, from } => {
            listener.joins.deliver(session, from, peer, channel).await
        }
        Request::Keygen { .. } => {
            listener.set_busy(1);
            let result = answer_keygen(listener, &request, peer, channel, &mut known).await;
            listener.set_busy(-1);
            result
        }
        Request::Sign { .. } => {
            listener.set_busy(1);
            let result = answer_sign(listener, &request, peer, channel).await;
            listener.set_busy(-1);
            result
        }
    }
}

async fn answer_keygen(
    listener: &Arc<Listener>,
    request: &Request,
    peer: AuthenticatedPeer,
    mut channel: Channel,
    known: &mut KnownPeers,
) -> Result<(), PeerError> {
    let u = &listener.u;
    let invitation = match session::check_keygen(request, &peer, &u.me) {
        Ok(i) => i,
        Err(e) => {
            session::refuse(&mut channel, &e.to_string()).await;
            return Err(e);
        }
    };
    if let Err(unsignable) = refuse_unsignable_threshold(invitation.threshold.t) {
        let reason = unsignable.to_string();
        session::refuse(&mut channel, &reason).await;
        return Err(PeerError::Refused(reason));
    }
    if u.keystore.has_wallet(&invitation.wallet).unwrap_or(true) {
        let reason = format!(
            "{:?} already has a wallet named {:?}",
            u.me.name, invitation.wallet
        );
        session::refuse(&mut channel, &reason).await;
        return Err(PeerError::Refused(reason));
    }
    let names: Vec<String> = invitation
        .parties
        .iter()
        .map(|p| format!("{} (key {})", p.name, hex::encode(&p.identity[..8])))
        .collect();
    let what = format!(
        "{:?} asks to create the {}-of-{} wallet {:?} with {}",
        peer.name,
        invitation.threshold.t,
        invitation.threshold.n,
        invitation.wallet,
        names.join(", ")
    );
    if !listener.approve(&what) {
        session::refuse(&mut channel, "the user refused the keygen").await;
        return Err(PeerError::Refused("keygen refused here".into()));
    }
    let leader = Link {
        peer,
        channel,
        address: None,
    };
    let mut confirm = |p: &CodePrompt| confirm_code(p);
    let (share, wallet) = session::join_keygen(
        &invitation,
        leader,
        &u.me,
        known,
        &mut confirm,
        &listener.joins,
        &mut round_printer("keygen"),
    )
    .await?;
    store_wallet(u, &invitation.wallet, share, &wallet)
        .map_err(|e| PeerError::Store(failure_text(e)))
}

async fn answer_sign(
    listener: &Arc<Listener>,
    request: &Request,
    peer: AuthenticatedPeer,
    mut channel: Channel,
) -> Result<(), PeerError> {
    let u = &listener.u;
    let Request::Sign { wallet: name, .. } = request else {
        return Err(PeerError::Protocol("not a sign request".into()));
    };
    let local = match peer_wallet(u, name).and_then(|w| Ok((load_share(u, name)?, w))) {
        Ok(found) => found,
        Err(e) => {
            let reason = format!(
                "{:?} cannot sign with {name:?}: {}",
                u.me.name,
                failure_text(e)
            );
            session::refuse(&mut channel, &reason).await;
            return Err(PeerError::Refused(reason));
        }
    };
    let (share, wallet) = local;
    let invitation = match session::check_sign(request, &peer, &share, &wallet) {
        Ok(i) => i,
        Err(e) => {
            session::refuse(&mut channel, &e.to_string()).await;
            return Err(e);
        }
    };
    let what = format!(
        "{:?} asks to sign with wallet {:?} the message {:?} (EIP-191 digest {}, path {})",
        peer.name,
        invitation.wallet,
        invitation.message,
        hex::encode(invitation.digest),
        invitation.path
    );
    if !listener.approve(&what) {
        session::refuse(&mut channel, "the user refused to sign").await;
        return Err(PeerError::Refused("signature refused here".into()));
    }
    let leader = Link {
        peer,
        channel,
        address: None,
    };
    let signature = session::join_sign(&invitation, leader, &share, &mut round_printer("sign"))
        .await
        .inspect_err(|e| ban_on_blame(u, name, e))?;
    println!(
        "signed {:?}: r||s||v {}",
        invitation.message,
        hex::encode(signature.to_rsv())
    );
    let _ = std::io::stdout().flush();
    Ok(())
}

fn failure_text(f: Failure) -> String {
    match f {
        Failure::Usage(m) | Failure::Failed(m) => m,
    }
}
