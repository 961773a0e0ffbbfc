//! `tessera`: the Tessera command-line tool.
//!
//! Exit codes: 0 success (a signature verified), 1 the operation ran and failed (a signature does
//! not verify, a protocol aborted), 2 bad arguments or input. Errors are one line on stderr.
#![forbid(unsafe_code)]

mod backup;
mod demo_server;
mod device;
mod output;
mod peer;
mod plan;
mod progress;

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Instant;

use clap::{Args, Parser, Subcommand, ValueEnum};
use sha2::{Digest, Sha256};
use sha3::Keccak256;
use tessera_core::ecdsa::{SignatureEncoding, eip191_digest, verify_encoded};
use tessera_core::protocols::{
    KeygenSession, SignRequest, SignSession, fresh_nonce, validate_signers,
};
use tessera_core::runner::{self, Delivery};
use tessera_core::{DerivationPath, Error, KeyShare, PartyIndex, PublicKey, Threshold, WalletId};

use progress::Progress;

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
    Demo(DemoArgs),
    /// Verify an ECDSA secp256k1 signature (DER, 64-byte r||s or 65-byte r||s||v).
    Verify(VerifyArgs),
    /// Run the commitment server (the co-signing party).
    Server(ServerArgs),
    /// Manage the server's key-encryption key (HSM key creation, rotation).
    #[command(subcommand)]
    Kek(KekCommand),
    /// Set up this device: create its identity key and register it with a server.
    Init(InitArgs),
    /// Create a 2-of-2 wallet shared by this device and the server.
    Keygen(KeygenArgs),
    /// Sign with a wallet (this device and the server together).
    Sign(SignArgs),
    /// Refresh a wallet's shares (same public key, next epoch; old shares stop working).
    Refresh(RefreshArgs),
    /// List the wallets of this device's user.
    Wallets(output::Format),
    /// Show a wallet's public key and Ethereum address.
    Pubkey(PubkeyArgs),
    /// Manage the devices of this user.
    #[command(subcommand)]
    Device(DeviceCommand),
    /// Device-to-device mode, with no server: discover, pair, create wallets and sign.
    #[command(subcommand)]
    Peer(peer::PeerCommand),
    /// A wallet's signing policy on the server.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Approve or refuse another device's signing requests (when a policy requires it).
    #[command(subcommand)]
    Approvals(ApprovalsCommand),
    /// The server's audit log: list this user's records, verify the chain.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Backup holders' keys: create one, add another's public key, list them.
    #[command(subcommand, name = "backup-key")]
    BackupKey(backup::BackupKeyCommand),
    /// Verifiable backups of a wallet's shares: create, verify, restore.
    #[command(subcommand)]
    Backup(backup::BackupCommand),
    /// Recommend where shares and backups live, and show which losses a set-up survives.
    Plan(plan::PlanArgs),
}

#[derive(Args)]
struct ServerArgs {
    /// Where the database and keys live (created on first start).
    #[arg(long, default_value = "./tessera-data")]
    data_dir: std::path::PathBuf,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8443")]
    listen: std::net::SocketAddr,
    /// Use this PostgreSQL database (postgres://user:pass@host/db) instead of the SQLite file in
    /// the data directory, e.g. for several replicas. Keys stay in the data directory.
    #[arg(long, env = "TESSERA_DATABASE_URL")]
    database_url: Option<String>,
    /// TLS certificate chain, PEM (with --tls-key).
    #[arg(long, requires = "tls_key", conflicts_with_all = ["dev_tls", "insecure_http"])]
    tls_cert: Option<std::path::PathBuf>,
    /// TLS private key, PEM.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<std::path::PathBuf>,
    /// Serve TLS with a self-signed development certificate kept in the data directory; its
    /// SHA-256 fingerprint is printed for clients to pin (`tessera init --server-fingerprint`).
    #[arg(long, conflicts_with = "insecure_http")]
    dev_tls: bool,
    /// Serve plain HTTP. Only allowed on a loopback address.
    #[arg(long)]
    insecure_http: bool,
    /// Seconds without a message after which a protocol session expires.
    #[arg(long, default_value_t = 300, hide = true)]
    session_idle_timeout: u64,
    /// The key-encryption key that seals the server's shares: `file` (kek.key in the data
    /// directory, created on first start), `file:PATH`, or `pkcs11:module=PATH,token=LABEL,key=LABEL`
    /// (an AES key in an HSM; the PIN from TESSERA_PKCS11_PIN).
    #[arg(long, env = "TESSERA_KEK", default_value = "file")]
    kek: String,
    /// Requests per second from one source address (and --ip-burst at once).
    #[arg(long, default_value_t = 1000)]
    ip_rate: u32,
    /// Requests at once from one source address.
    #[arg(long, default_value_t = 2000)]
    ip_burst: u32,
    /// Authenticated requests per second of one device (and --device-burst at once).
    #[arg(long, default_value_t = 100)]
    device_rate: u32,
    /// Authenticated requests at once of one device.
    #[arg(long, default_value_t = 200)]
    device_burst: u32,
    /// Authentication failures per minute from one source address (after --auth-failure-burst
    /// at once); beyond, the address waits (429, Retry-After).
    #[arg(long, default_value_t = 10)]
    auth_failures_per_minute: u32,
    /// Authentication failures allowed at once from one source address.
    #[arg(long, default_value_t = 20)]
    auth_failure_burst: u32,
    /// Sessions one device may hold at once, running or created and not yet expired (more:
    /// 409 until some end).
    #[arg(long, default_value_t = tessera_server::live_sessions::DEFAULT_MAX_PER_DEVICE)]
    max_sessions_per_device: u32,
    /// Sessions one wallet may hold at once, all devices together.
    #[arg(long, default_value_t = tessera_server::live_sessions::DEFAULT_MAX_PER_WALLET)]
    max_sessions_per_wallet: u32,
    /// Seconds that an action no other device can approve waits, visible and cancellable by
    /// the user's devices: exporting the server's share for a user with one active device,
    /// recovering a device while the user has active devices (default 24 hours).
    #[arg(long, default_value_t = 86_400)]
    time_lock: u64,
    /// Benchmarks only: no signing policies and no audit log (to measure what they cost).
    /// Refused except with --insecure-http on loopback.
    #[arg(long, hide = true, requires = "insecure_http")]
    benchmark_without_controls: bool,
    /// Signing or refresh runs of one wallet that may abort without the engine blaming anybody
    /// (a disconnect mid-protocol, a bad message) within --abort-window; one more locks the
    /// wallet until a refresh, because repeated aborts are how OT-based protocols leak (0: never).
    #[arg(long, default_value_t = 5)]
    abort_limit: u32,
    /// Seconds over which aborts are counted for --abort-limit.
    #[arg(long, default_value_t = 3600)]
    abort_window: u64,
}

#[derive(Subcommand)]
enum AuditCommand {
    /// List this user's audit records (or one wallet's).
    List {
        /// Only this wallet's records.
        #[arg(long)]
        wallet: Option<String>,
        #[command(flatten)]
        format: output::Format,
    },
    /// Verify the whole hash chain: through the server, or (with --data-dir or --database-url)
    /// directly in the server's database. Exit 1 and the first bad record when it is broken.
    Verify {
        /// Check the database in this server data directory (SQLite) instead of asking the server.
        #[arg(long)]
        data_dir: Option<std::path::PathBuf>,
        /// Check this PostgreSQL database instead of asking the server.
        #[arg(long)]
        database_url: Option<String>,
        #[command(flatten)]
        format: output::Format,
    },
}

#[derive(Subcommand)]
enum KekCommand {
    /// Create the AES-256 key-encryption key in a PKCS#11 token (non-extractable; PIN from
    /// TESSERA_PKCS11_PIN).
    Generate {
        /// pkcs11:module=PATH,token=LABEL,key=LABEL
        #[arg(long)]
        kek: String,
    },
    /// Re-wrap every stored share's data key from one key-encryption key to another (the
    /// shares themselves are not decrypted). Stop the server first; start it with --kek TO.
    Rotate {
        /// The server's data directory.
        #[arg(long, default_value = "./tessera-data")]
        data_dir: std::path::PathBuf,
        /// The server's PostgreSQL database, if it uses one.
        #[arg(long, env = "TESSERA_DATABASE_URL")]
        database_url: Option<String>,
        /// The current key: file, file:PATH or pkcs11:…
        #[arg(long)]
        from: String,
        /// The new key: file, file:PATH or pkcs11:…
        #[arg(long)]
        to: String,
    },
}

#[derive(Args)]
struct InitArgs {
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

#[derive(Args)]
struct KeygenArgs {
    /// The new wallet's name (letters, digits, '.', '_', '-').
    #[arg(long)]
    name: String,
    #[command(flatten)]
    format: output::Format,
}

#[derive(Args)]
struct SignArgs {
    /// The wallet.
    #[arg(long)]
    wallet: String,
    #[command(flatten)]
    format: output::Format,
    /// The message (signed as an Ethereum personal_sign / EIP-191 message).
    #[arg(long, conflicts_with_all = ["digest", "eth_tx"], required_unless_present_any = ["digest", "eth_tx"])]
    message: Option<String>,
    /// A 32-byte digest, hex (only if the wallet's policy allows raw digests).
    #[arg(long, conflicts_with = "eth_tx")]
    digest: Option<String>,
    /// An EIP-1559 transaction as JSON (chain_id, nonce, max_fee_per_gas,
    /// max_priority_fee_per_gas, gas_limit, to, value, data); prints the raw signed transaction.
    #[arg(long)]
    eth_tx: Option<std::path::PathBuf>,
    /// Non-hardened BIP-32 path.
    #[arg(long, default_value = "m")]
    path: String,
}

#[derive(Subcommand)]
enum PolicyCommand {
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
        /// max_value_per_24h, max_fee_per_tx, max_signatures_per_hour, hours_utc,
        /// require_approval, approval_timeout_secs.
        #[arg(long)]
        file: std::path::PathBuf,
    },
}

#[derive(Subcommand)]
enum ApprovalsCommand {
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

#[derive(Args)]
struct PubkeyArgs {
    /// The wallet.
    #[arg(long)]
    wallet: String,
    #[command(flatten)]
    format: output::Format,
}

#[derive(Args)]
struct RefreshArgs {
    /// The wallet.
    #[arg(long)]
    wallet: String,
}

#[derive(Subcommand)]
enum DeviceCommand {
    /// List this user's devices.
    List(output::Format),
    /// Approve a pending device of this user by the code it shows.
    Approve {
        /// The code the new device printed, e.g. 1A2B-3C4D-5E6F-7A8B-9C0D.
        code: String,
    },
    /// Revoke a device: its tokens stop working at once.
    Revoke {
        /// The device id.
        id: String,
        /// Revoke even the last active device of this user, which locks the user out for good.
        #[arg(long)]
        force: bool,
    },
    /// On a pending device that restored a wallet's device share: prove it again to be approved,
    /// once the time lock of its held recovery has ended.
    Recover {
        /// The restored wallet.
        #[arg(long)]
        wallet: String,
    },
}

#[derive(Args)]
struct DemoArgs {
    /// Run all t-of-n parties in this process instead of the device + server topology.
    #[arg(long)]
    in_process: bool,
    /// Signers needed (t); with --in-process.
    #[arg(long, short = 't', default_value_t = 2, requires = "in_process")]
    threshold: u8,
    /// Share holders (n); with --in-process.
    #[arg(long, short = 'n', default_value_t = 2, requires = "in_process")]
    parties: u8,
    /// The message to sign (as an Ethereum personal_sign / EIP-191 message).
    #[arg(long, short = 'm', default_value = "Hello from Tessera")]
    message: String,
    /// The signing parties, comma separated (default: the first t); with --in-process.
    #[arg(long, value_delimiter = ',', requires = "in_process")]
    signers: Option<Vec<u8>>,
    /// Sign with the non-hardened BIP-32 child key at this path, e.g. m/0/7.
    #[arg(long, default_value = "m")]
    path: String,
    #[command(flatten)]
    format: output::Format,
}

#[derive(Args)]
struct VerifyArgs {
    /// The public key, SEC1 hex (33 or 65 bytes).
    #[arg(long)]
    pubkey: String,
    /// The 32-byte digest that was signed, hex.
    #[arg(long, conflicts_with = "message", required_unless_present = "message")]
    digest: Option<String>,
    /// The message that was signed; hashed with --hash.
    #[arg(long)]
    message: Option<String>,
    /// How --message is hashed.
    #[arg(long, value_enum, default_value_t = Hash::Eip191)]
    hash: Hash,
    /// The signature, hex: DER, r||s (64 bytes) or r||s||v (65 bytes).
    #[arg(long)]
    signature: String,
}

#[derive(Clone, Copy, ValueEnum)]
enum Hash {
    /// Ethereum personal_sign: keccak256("\x19Ethereum Signed Message:\n" || len || message).
    Eip191,
    /// SHA-256 of the message bytes.
    Sha256,
    /// Keccak-256 of the message bytes.
    Keccak256,
}

/// A failure with its exit code.
pub(crate) enum Failure {
    /// Bad arguments or input: exit 2.
    Usage(String),
    /// The operation failed: exit 1.
    Failed(String),
}

type CliResult = Result<(), Failure>;

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
    install_log_subscriber();
    let result = match cli.command {
        Command::Demo(args) if args.in_process => demo(&args),
        Command::Demo(args) => match args.path.parse::<DerivationPath>() {
            Ok(path) => runtime()
                .and_then(|rt| rt.block_on(demo_server::run(&args.message, &path, args.format))),
            Err(e) => Err(usage(e)),
        },
        Command::Verify(args) => verify(&args),
        Command::Plan(args) => plan::run(&args),
        Command::Server(args) => runtime().and_then(|rt| rt.block_on(server(args))),
        Command::Kek(command) => runtime().and_then(|rt| rt.block_on(kek(command))),
        other => runtime().and_then(|rt| rt.block_on(device_command(other))),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(m)) => {
            eprintln!("error: {m}");
            ExitCode::from(2)
        }
        Err(Failure::Failed(m)) => {
            eprintln!("error: {m}");
            ExitCode::from(1)
        }
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

/// Sends `tracing` events (the server's errors and warnings) to stderr; `RUST_LOG` overrides the
/// default filter. Without a subscriber every event would be dropped silently.
fn install_log_subscriber() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,sqlx=error"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init();
}

fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Runtime::new()
        .map_err(|e| Failure::Failed(format!("cannot start the async runtime: {e}")))
}

async fn server(args: ServerArgs) -> CliResult {
    let tls = if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        Some(
            tessera_server::tls::from_files(cert, key)
                .map_err(|e| Failure::Usage(e.to_string()))?,
        )
    } else if args.dev_tls {
        Some(
            tessera_server::tls::dev_identity(&args.data_dir)
                .map_err(|e| Failure::Failed(e.to_string()))?,
        )
    } else if args.insecure_http {
        if !args.listen.ip().is_loopback() {
            return Err(Failure::Usage(format!(
                "--insecure-http is only allowed on a loopback address, not {}",
                args.listen.ip()
            )));
        }
        None
    } else {
        return Err(Failure::Usage(
            "choose TLS (--tls-cert and --tls-key, or --dev-tls) or, on loopback only, --insecure-http".into(),
        ));
    };
    let mut config = tessera_server::Config::new(&args.data_dir);
    config.database_url = args.database_url.clone();
    config.kek = Some(kek_source(&args.kek, &args.data_dir)?);
    config.controls = !args.benchmark_without_controls;
    config.time_lock = std::time::Duration::from_secs(args.time_lock);
    config.limits = tessera_server::limits::Limits {
        ip_per_second: args.ip_rate,
        ip_burst: args.ip_burst,
        device_per_second: args.device_rate,
        device_burst: args.device_burst,
        auth_failures_per_minute: args.auth_failures_per_minute,
        auth_failure_burst: args.auth_failure_burst,
    };
    config.session_idle_timeout = std::time::Duration::from_secs(args.session_idle_timeout.max(1));
    config.max_sessions_per_device = args.max_sessions_per_device.max(1);
    config.max_sessions_per_wallet = args.max_sessions_per_wallet.max(1);
    config.abort_limit = args.abort_limit;
    config.abort_window = std::time::Duration::from_secs(args.abort_window.max(1));
    let state = tessera_server::AppState::open(config)
        .await
        .map_err(|e| Failure::Failed(e.to_string()))?;
    let listener = std::net::TcpListener::bind(args.listen)
        .map_err(|e| Failure::Failed(format!("cannot listen on {}: {e}", args.listen)))?;
    let addr = listener
        .local_addr()
        .map_err(|e| Failure::Failed(e.to_string()))?;
    use std::io::Write;
    match tls {
        Some(identity) => {
            println!(
                "tessera server listening on https://{addr} (data in {}; certificate SHA-256 {} — clients pin it with --server-fingerprint)",
                args.data_dir.display(),
                identity.fingerprint
            );
            let _ = std::io::stdout().flush();
            tessera_server::tls::serve_tls(listener, state, identity)
                .await
                .map_err(|e| Failure::Failed(e.to_string()))
        }
        None => {
            println!(
                "tessera server listening on http://{addr} (data in {}; plain HTTP, loopback only)",
                args.data_dir.display()
            );
            let _ = std::io::stdout().flush();
            listener
                .set_nonblocking(true)
                .map_err(|e| Failure::Failed(e.to_string()))?;
            let listener = tokio::net::TcpListener::from_std(listener)
                .map_err(|e| Failure::Failed(e.to_string()))?;
            tessera_server::serve(listener, state)
                .await
                .map_err(|e| Failure::Failed(format!("server stopped: {e}")))
        }
    }
}

pub(crate) fn kek_source(
    text: &str,
    data_dir: &std::path::Path,
) -> Result<tessera_server::state::KekSource, Failure> {
    let pin = std::env::var("TESSERA_PKCS11_PIN").ok();
    tessera_server::state::KekSource::parse(text, data_dir, pin.as_deref())
        .map_err(|e| Failure::Usage(e.to_string()))
}

async fn kek(command: KekCommand) -> CliResult {
    match command {
        KekCommand::Generate { kek } => {
            let spec: tessera_store::Pkcs11Spec = kek
                .parse()
                .map_err(|e: tessera_store::Error| Failure::Usage(e.to_string()))?;
            let pin = std::env::var("TESSERA_PKCS11_PIN").map_err(|_| {
                Failure::Usage("set TESSERA_PKCS11_PIN to the token's user PIN".into())
            })?;
            let key = tessera_store::Pkcs11Kek::generate(&spec, &pin)
                .map_err(|e| Failure::Failed(e.to_string()))?;
            use tessera_store::KeyEncryptionKey;
            println!(
                "created AES-256 key-encryption key {} (non-extractable); start the server with --kek {spec}",
                key.id()
            );
            Ok(())
        }
        KekCommand::Rotate {
            data_dir,
            database_url,
            from,
            to,
        } => {
            let old = kek_source(&from, &data_dir)?
                .open()
                .map_err(|e| Failure::Failed(e.to_string()))?;
            let new = kek_source(&to, &data_dir)?
                .open()
                .map_err(|e| Failure::Failed(e.to_string()))?;
            let mut config = tessera_server::Config::new(&data_dir);
            config.database_url = database_url;
            let db = tessera_server::state::connect_database(&config)
                .await
                .map_err(|e| Failure::Failed(e.to_string()))?;
            let (moved, already) =
                tessera_server::vault::rewrap_all(&db, old.as_ref(), new.as_ref())
                    .await
                    .map_err(|e| Failure::Failed(e.to_string()))?;
            println!(
                "re-wrapped {moved} share data keys from {} to {} ({already} were already under it); start the server with --kek {to}",
                old.id(),
                new.id()
            );
            Ok(())
        }
    }
}

async fn audit_verify(
    home: &std::path::Path,
    data_dir: Option<std::path::PathBuf>,
    database_url: Option<String>,
    format: output::Format,
) -> CliResult {
    let report = if data_dir.is_some() || database_url.is_some() {
        let mut config =
            tessera_server::Config::new(data_dir.unwrap_or_else(|| "./tessera-data".into()));
        config.database_url = database_url;
        let db = tessera_server::state::connect_database(&config)
            .await
            .map_err(|e| Failure::Failed(e.to_string()))?;
        tessera_server::audit::verify(&db)
            .await
            .map_err(|e| Failure::Failed(format!("database: {e}")))?
    } else {
        let s = device::connect(home).await?;
        s.client
            .audit_verify()
            .await
            .map_err(device::client_error)?
    };
    if format.json {
        // The report, broken or not; a broken chain still exits 1.
        output::print_json(&serde_json::json!({
            "intact": report.first_bad.is_none(),
            "records": report.records,
            "head": report.head,
            "first_bad": report.first_bad,
        }))?;
    }
    match report.first_bad {
        None if format.json => Ok(()),
        None => {
            println!(
                "audit chain intact: {} records, head {}",
                report.records, report.head
            );
            Ok(())
        }
        Some(bad) => Err(Failure::Failed(format!(
            "audit chain BROKEN at record {}: {} ({} records verified before it)",
            bad.seq, bad.reason, report.records
        ))),
    }
}

async fn device_command(command: Command) -> CliResult {
    let home = device::home()?;
    match command {
        Command::Init(a) => {
            device::init(
                &home,
                &a.server,
                a.server_fingerprint.as_deref(),
                &a.user,
                &a.name,
            )
            .await
        }
        Command::Keygen(a) => device::keygen(&home, &a.name, a.format).await,
        Command::Sign(a) => {
            let path: DerivationPath = a.path.parse().map_err(usage)?;
            let kind = match (&a.digest, &a.message, &a.eth_tx) {
                (Some(d), _, _) => {
                    let bytes = parse_hex("--digest", d)?;
                    if bytes.len() != 32 {
                        return Err(Failure::Usage(format!(
                            "--digest must be 32 bytes, got {}",
                            bytes.len()
                        )));
                    }
                    tessera_api::intent::SignKind::Digest {
                        digest: hex::encode(bytes),
                    }
                }
                (None, Some(m), _) => {
                    tessera_api::intent::SignKind::EthMessage { message: m.clone() }
                }
                (None, None, Some(file)) => {
                    let text = std::fs::read_to_string(file).map_err(|e| {
                        Failure::Usage(format!("cannot read {}: {e}", file.display()))
                    })?;
                    let tx = serde_json::from_str(&text).map_err(|e| {
                        Failure::Usage(format!("{} is not a transaction: {e}", file.display()))
                    })?;
                    tessera_api::intent::SignKind::EthTx { tx }
                }
                (None, None, None) => {
                    return Err(Failure::Usage(
                        "give --message, --digest or --eth-tx".into(),
                    ));
                }
            };
            device::sign(&home, &a.wallet, &kind, &path, a.format).await
        }
        Command::Policy(PolicyCommand::Show { wallet }) => {
            device::policy_show(&home, &wallet).await
        }
        Command::Policy(PolicyCommand::Set { wallet, file }) => {
            device::policy_set(&home, &wallet, &file).await
        }
        Command::Approvals(ApprovalsCommand::List(format)) => {
            device::approvals_list(&home, format).await
        }
        Command::Approvals(ApprovalsCommand::Approve { session }) => {
            device::approvals_decide(&home, &session, true).await
        }
        Command::Approvals(ApprovalsCommand::Cancel { id }) => {
            device::approvals_decide(&home, &id, false).await
        }
        Command::Device(DeviceCommand::Recover { wallet }) => backup::recover(&home, &wallet).await,
        Command::Approvals(ApprovalsCommand::Refuse { session }) => {
            device::approvals_decide(&home, &session, false).await
        }
        Command::Wallets(format) => device::wallets(&home, format).await,
        Command::Refresh(a) => device::refresh(&home, &a.wallet).await,
        Command::Pubkey(a) => device::pubkey(&home, &a.wallet, a.format).await,
        Command::Device(DeviceCommand::List(format)) => device::device_list(&home, format).await,
        Command::Device(DeviceCommand::Revoke { id, force }) => {
            device::device_revoke(&home, &id, force).await
        }
        Command::Device(DeviceCommand::Approve { code }) => {
            device::device_approve(&home, &code).await
        }
        Command::Peer(p) => peer::run(&home, p).await,
        Command::BackupKey(c) => backup::backup_key(&home, c),
        Command::Backup(c) => backup::backup(&home, c).await,
        Command::Audit(AuditCommand::List { wallet, format }) => {
            device::audit_list(&home, wallet.as_deref(), format).await
        }
        Command::Audit(AuditCommand::Verify {
            data_dir,
            database_url,
            format,
        }) => audit_verify(&home, data_dir, database_url, format).await,
        Command::Demo(_)
        | Command::Verify(_)
        | Command::Server(_)
        | Command::Kek(_)
        | Command::Plan(_) => Ok(()),
    }
}

fn usage(e: Error) -> Failure {
    Failure::Usage(e.to_string())
}

fn failed(e: Error) -> Failure {
    Failure::Failed(e.to_string())
}

fn demo(args: &DemoArgs) -> CliResult {
    let threshold = Threshold::new(args.threshold, args.parties).map_err(usage)?;
    let path: DerivationPath = args.path.parse().map_err(usage)?;
    let signers: Vec<PartyIndex> = match &args.signers {
        Some(list) => list.iter().map(|&i| PartyIndex::new(i)).collect(),
        None => (0..threshold.t).map(PartyIndex::new).collect(),
    };
    // Check the signer set before the (slow) key generation, with the rules signing applies.
    validate_signers(threshold, &signers).map_err(usage)?;
    let mut progress = Progress::new(std::io::stderr().is_terminal());

    // 1. Distributed key generation, all parties in this process.
    let wallet = WalletId::random();
    let nonce = fresh_nonce();
    let sessions = threshold
        .parties()
        .map(|p| KeygenSession::new(wallet, threshold, p, &nonce))
        .collect::<Result<Vec<_>, _>>()
        .map_err(usage)?;
    let step = progress.step(&format!("key generation, {threshold}"), 4);
    let started = Instant::now();
    let (mut shares, keygen_stats) = runner::run_with(
        sessions,
        |_| Delivery::Deliver,
        |round, total| step.round(round, total),
    )
    .map_err(failed)?;
    step.finish(started.elapsed());
    shares.sort_by_key(KeyShare::party);
    let root = shares[0].public_key();
    let key = shares[0].public_key_at(&path).map_err(failed)?;

    // 2. Threshold signing by the chosen parties.
    let digest = eip191_digest(args.message.as_bytes());
    let request = SignRequest {
        nonce: fresh_nonce(),
        signers: signers.clone(),
        digest,
        path: path.clone(),
    };
    let mut signing = Vec::new();
    for p in &signers {
        let share = shares.iter().find(|s| s.party() == *p).ok_or_else(|| {
            Failure::Usage(format!(
                "signer {p} is not one of the {} parties",
                threshold.n
            ))
        })?;
        signing.push(SignSession::new(share, &request).map_err(usage)?);
    }
    let names: Vec<String> = signers.iter().map(ToString::to_string).collect();
    let step = progress.step(&format!("signing by parties {}", names.join(", ")), 3);
    let started = Instant::now();
    let (signatures, sign_stats) = runner::run_with(
        signing,
        |_| Delivery::Deliver,
        |round, total| step.round(round, total),
    )
    .map_err(failed)?;
    step.finish(started.elapsed());
    let signature = signatures[0];

    // 3. Independent verification.
    let step = progress.step("verification", 1);
    let verified = key.verify(&digest, &signature);
    step.finish(std::time::Duration::ZERO);

    if args.format.json {
        verified.map_err(failed)?;
        return output::print_json(&serde_json::json!({
            "wallet_id": wallet.to_string(),
            "threshold": { "t": threshold.t, "n": threshold.n },
            "signers": signers.iter().map(|p| p.get()).collect::<Vec<_>>(),
            "root_public_key": root.to_string(),
            "path": path.to_string(),
            "public_key": key.to_string(),
            "public_key_uncompressed": hex::encode(key.to_uncompressed()),
            "eth_address": key.eth_address(),
            "message": args.message,
            "digest": hex::encode(digest),
            "signature_der": hex::encode(signature.to_der()),
            "signature_rsv": hex::encode(signature.to_rsv()),
            "recovery_id": signature.recovery_id(),
            "traffic_bytes_per_party": {
                "keygen": keygen_stats.max_bytes_per_party(),
                "sign": sign_stats.max_bytes_per_party(),
            },
            "verified": true,
        }));
    }
    println!("wallet         {wallet}");
    println!(
        "threshold      {threshold} (any {} of {} shares sign; no share alone can)",
        threshold.t, threshold.n
    );
    if !path.is_root() {
        println!("root key       {root}");
    }
    println!("path           {path}");
    println!("public key     {key}");
    println!("  uncompressed {}", hex::encode(key.to_uncompressed()));
    println!("eth address    {}", key.eth_address());
    println!("message        {:?}", args.message);
    println!(
        "digest         {} (EIP-191 personal_sign)",
        hex::encode(digest)
    );
    println!("signature DER  {}", hex::encode(signature.to_der()));
    println!(
        "r||s||v        {} (v = recovery id {}; Ethereum personal_sign uses v + 27)",
        hex::encode(signature.to_rsv()),
        signature.recovery_id()
    );
    println!(
        "traffic        keygen {} KB, signing {} KB per party",
        keygen_stats.max_bytes_per_party() / 1000,
        sign_stats.max_bytes_per_party() / 1000
    );
    match verified {
        Ok(()) => {
            println!("verified       yes (k256, under the public key above)");
            Ok(())
        }
        Err(e) => Err(failed(e)),
    }
}

fn parse_hex(what: &str, text: &str) -> Result<Vec<u8>, Failure> {
    let text = text.trim();
    let text = text.strip_prefix("0x").unwrap_or(text);
    hex::decode(text).map_err(|_| Failure::Usage(format!("{what} is not valid hexadecimal")))
}

fn verify(args: &VerifyArgs) -> CliResult {
    let public_key = PublicKey::from_hex(&args.pubkey).map_err(usage)?;
    let digest: [u8; 32] = match (&args.digest, &args.message) {
        (Some(d), _) => parse_hex("--digest", d)?.try_into().map_err(|v: Vec<u8>| {
            Failure::Usage(format!("--digest must be 32 bytes, got {}", v.len()))
        })?,
        (None, Some(m)) => match args.hash {
            Hash::Eip191 => eip191_digest(m.as_bytes()),
            Hash::Sha256 => Sha256::digest(m.as_bytes()).into(),
            Hash::Keccak256 => Keccak256::digest(m.as_bytes()).into(),
        },
        (None, None) => return Err(Failure::Usage("give --digest or --message".into())),
    };
    let signature = parse_hex("--signature", &args.signature)?;
    match verify_encoded(&public_key, &digest, &signature) {
        Ok(found) => {
            let encoding = match found.encoding {
                SignatureEncoding::Der => "DER",
                SignatureEncoding::Compact => "r||s",
                SignatureEncoding::Rsv => "r||s||v",
            };
            let note = if found.high_s {
                ", high-S: valid ECDSA but rejected by Bitcoin and Ethereum"
            } else {
                ""
            };
            println!("valid ({encoding}{note})");
            Ok(())
        }
        Err(Error::VerificationFailed) => {
            println!("INVALID: the signature does not verify under this public key and digest");
            Err(Failure::Failed("signature verification failed".into()))
        }
        Err(e) => Err(usage(e)),
    }
}
