//! `tessera`: the Tessera command-line tool. It parses arguments, prompts and prints; every
//! device workflow is `tessera_client::device`'s, every server one `tessera_server`'s.
//!
//! Exit codes: 0 success (a signature verified), 1 the operation ran and failed (a signature does
//! not verify, a protocol aborted), 2 bad arguments or input. Errors are one line on stderr; the
//! mapping from errors to codes is [`failure`]'s.
#![forbid(unsafe_code)]

mod cmd;
mod failure;
mod output;
mod progress;
mod unlock;

use std::process::ExitCode;

/// The allocator: mimalloc rather than the system's. A sign allocates and frees many short-lived
/// buffers (the engine's OT vectors, 40-80 KB messages, their encodings); docs/benchmarks.md has
/// what it saves in server CPU per sign.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::{Parser, Subcommand};

pub(crate) use failure::{CliResult, Failure};

#[derive(Parser)]
#[command(
    name = "tessera",
    version,
    about = "Threshold-ECDSA key custody: keys that exist only as shares"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Show the whole flow: an embedded server and this device run set-up, key generation,
    /// signing, a refresh and signing again (or, with --in-process, t-of-n in this process).
    Demo(cmd::demo::DemoArgs),
    /// Verify an ECDSA secp256k1 signature (DER, 64-byte r||s or 65-byte r||s||v).
    Verify(cmd::verify::VerifyArgs),
    /// Verify a webhook body's Tessera-Signature with the server's webhook key.
    VerifyWebhook(cmd::service::VerifyWebhookArgs),
    /// Run the commitment server (the co-signing party).
    Server(cmd::server::ServerArgs),
    /// Manage the server's key-encryption key (HSM key creation, rotation).
    #[command(subcommand)]
    Kek(cmd::kek::KekCommand),
    /// Set up this device: create its identity key and register it with a server.
    Init(cmd::device::InitArgs),
    /// Create a wallet: 2-of-2 with the server, or of a structure over the server and your
    /// devices (--structure).
    Keygen(cmd::wallet::KeygenArgs),
    /// Stay connected and take part in the sessions other devices start (joins after a
    /// confirmation, or --yes).
    Listen(cmd::listen::ListenArgs),
    /// Sign with a wallet (this device and the server together).
    Sign(cmd::wallet::SignArgs),
    /// Refresh a wallet's shares (same public key, next epoch; old shares stop working).
    Refresh(cmd::wallet::RefreshArgs),
    /// List the wallets of this device's user.
    Wallets(output::Format),
    /// One wallet: its structure and parties.
    #[command(subcommand)]
    Wallet(cmd::wallet::WalletCommand),
    /// Show a wallet's public key and Ethereum address; with --path, --xpub, --btc: the key at
    /// a BIP-32 path, its extended public key (xpub/tpub), its Bitcoin address.
    Pubkey(cmd::pubkey::PubkeyArgs),
    /// Manage the devices of this user.
    #[command(subcommand)]
    Device(cmd::device::DeviceCommand),
    /// Device-to-device mode, with no server: discover, pair, create wallets and sign.
    #[command(subcommand)]
    Peer(cmd::peer::PeerCommand),
    /// A wallet's signing policy on the server.
    #[command(subcommand)]
    Policy(cmd::policy::PolicyCommand),
    /// Approve or refuse another device's signing requests (when a policy requires it).
    #[command(subcommand)]
    Approvals(cmd::approvals::ApprovalsCommand),
    /// Durable signing requests: create one that waits for approvals and offline co-signers,
    /// list, show, approve, refuse, sign.
    #[command(subcommand)]
    Requests(cmd::requests::RequestsCommand),
    /// Service accounts: backends that create signing requests with their own key.
    #[command(subcommand)]
    Service(cmd::service::ServiceCommand),
    /// The server's audit log: list this user's records, verify the chain.
    #[command(subcommand)]
    Audit(cmd::audit::AuditCommand),
    /// Backup holders' keys: create one, add another's public key, list them.
    #[command(subcommand, name = "backup-key")]
    BackupKey(cmd::backup::BackupKeyCommand),
    /// Verifiable backups of a wallet's shares: create, verify, restore.
    #[command(subcommand)]
    Backup(cmd::backup::BackupCommand),
    /// Recommend where shares and backups live, and show which losses a set-up survives.
    Plan(cmd::plan::PlanArgs),
    /// Print the shell completion script for bash, zsh or fish.
    Completions(cmd::completions::CompletionsArgs),
    /// Print the manual page (roff), or write one page per command into a directory (--dir).
    Man(cmd::completions::ManArgs),
}

fn main() -> ExitCode {
    // A bug must still end in one line, not a backtrace.
    std::panic::set_hook(Box::new(|info| {
        eprintln!("error: internal error: {info}");
    }));
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                let _ = e.print();
                return ExitCode::SUCCESS;
            }
            eprintln!("error: {}", one_line(&e.render().to_string()));
            return ExitCode::from(2);
        }
    };
    // The server installs its own (its level and format are its flags).
    if !matches!(cli.command, Command::Server(_)) {
        install_log_subscriber("warn,sqlx=error", false);
    }
    let result = match cli.command {
        Command::Demo(args) => cmd::demo::run(args),
        Command::Verify(args) => cmd::verify::run(&args),
        Command::VerifyWebhook(args) => cmd::service::verify_webhook(&args),
        Command::Plan(args) => cmd::plan::run(&args),
        Command::Completions(args) => cmd::completions::completions(&args),
        Command::Man(args) => cmd::completions::man(&args),
        Command::Server(args) => runtime().and_then(|rt| rt.block_on(cmd::server::run(args))),
        Command::Kek(command) => runtime().and_then(|rt| rt.block_on(cmd::kek::run(command))),
        other => runtime().and_then(|rt| rt.block_on(device_command(other))),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("error: {}", failure.message());
            ExitCode::from(failure.code())
        }
    }
}

/// The commands that work on the device home (`TESSERA_HOME`).
async fn device_command(command: Command) -> CliResult {
    let home = unlock::home()?;
    match command {
        Command::Init(a) => cmd::device::init(&home, a).await,
        Command::Keygen(a) => cmd::wallet::keygen(&home, a).await,
        Command::Listen(a) => cmd::listen::run(&home, a).await,
        Command::Sign(a) => cmd::wallet::sign(&home, a).await,
        Command::Refresh(a) => cmd::wallet::refresh(&home, a).await,
        Command::Wallets(format) => cmd::wallet::wallets(&home, format).await,
        Command::Wallet(c) => cmd::wallet::wallet_command(&home, c).await,
        Command::Pubkey(a) => cmd::pubkey::pubkey(&home, a).await,
        Command::Policy(c) => cmd::policy::run(&home, c).await,
        Command::Approvals(c) => cmd::approvals::run(&home, c).await,
        Command::Requests(c) => cmd::requests::run(&home, c).await,
        Command::Service(c) => cmd::service::run(&home, c).await,
        Command::Device(c) => cmd::device::run(&home, c).await,
        Command::Peer(p) => cmd::peer::run(&home, p).await,
        Command::BackupKey(c) => cmd::backup::backup_key(&home, c),
        Command::Backup(c) => cmd::backup::backup(&home, c).await,
        Command::Audit(c) => cmd::audit::run(&home, c).await,
        Command::Demo(_)
        | Command::Verify(_)
        | Command::VerifyWebhook(_)
        | Command::Server(_)
        | Command::Kek(_)
        | Command::Plan(_)
        | Command::Completions(_)
        | Command::Man(_) => Ok(()),
    }
}

/// clap's whole message on one line, as every error here is: its first line alone may not say
/// what is wrong ("the following required arguments were not provided:" names them on the
/// next lines), then the usage it expected.
fn one_line(rendered: &str) -> String {
    let mut message = Vec::new();
    let mut usage = None;
    for line in rendered.lines().map(str::trim) {
        if let Some(u) = line.strip_prefix("Usage:") {
            usage = Some(u.trim());
        } else if !line.is_empty() && !line.starts_with("For more information") {
            message.push(line.strip_prefix("error: ").unwrap_or(line));
        }
    }
    let message = message.join(" ");
    match usage {
        Some(usage) => format!("{message}; usage: {usage}"),
        None => format!("{message} (see `tessera --help`)"),
    }
}

/// Sends `tracing` events to stderr, filtered by `RUST_LOG` or else by `default` (an
/// `EnvFilter` directive such as `warn,sqlx=error`): human-readable lines (coloured on a
/// terminal), or one JSON object per line with `json`. Without a subscriber every event would
/// be dropped silently.
pub(crate) fn install_log_subscriber(default: &str, json: bool) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if json {
        builder.json().flatten_event(true).try_init()
    } else {
        builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init()
    };
}

pub(crate) fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Runtime::new()
        .map_err(|e| Failure::Failed(format!("cannot start the async runtime: {e}")))
}
