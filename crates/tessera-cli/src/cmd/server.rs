//! `tessera server`: run the commitment server (the co-signing party).

use clap::{Args, ValueEnum};

use crate::failure::{CliResult, Failure};

#[derive(Args)]
pub(crate) struct ServerArgs {
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
    /// Log lines on stderr: `text` (for people; coloured on a terminal) or `json` (one object
    /// per line, for a log collector). RUST_LOG sets the filter (default `info,sqlx=warn`).
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// On SIGTERM or SIGINT: seconds that running protocol sessions may take to finish before
    /// they are closed (WebSocket close code 1001). New connections are refused at once.
    #[arg(long, default_value_t = 30)]
    shutdown_grace: u64,
    /// Serve GET /metrics (Prometheus) on this address instead of the API's, e.g. an address
    /// only the monitoring network reaches. Plain HTTP.
    #[arg(long)]
    metrics_listen: Option<std::net::SocketAddr>,
}

/// How the server writes its log.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum LogFormat {
    /// Lines for people.
    Text,
    /// One JSON object per line.
    Json,
}

pub(crate) async fn run(args: ServerArgs) -> CliResult {
    crate::install_log_subscriber("info,sqlx=warn", args.log_format == LogFormat::Json);
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
    config.shutdown_grace = std::time::Duration::from_secs(args.shutdown_grace);
    config.metrics_on_api = args.metrics_listen.is_none();
    let state = tessera_server::AppState::open(config)
        .await
        .map_err(|e| Failure::Failed(e.to_string()))?;
    let listener = std::net::TcpListener::bind(args.listen)
        .map_err(|e| Failure::Failed(format!("cannot listen on {}: {e}", args.listen)))?;
    let addr = listener
        .local_addr()
        .map_err(|e| Failure::Failed(e.to_string()))?;
    let metrics = match args.metrics_listen {
        Some(at) => Some(
            tokio::net::TcpListener::bind(at)
                .await
                .map_err(|e| Failure::Failed(format!("cannot listen on {at} for metrics: {e}")))?,
        ),
        None => None,
    };
    let stop = tessera_server::shutdown::signals()
        .map_err(|e| Failure::Failed(format!("cannot handle SIGTERM and SIGINT: {e}")))?;
    use std::io::Write;
    let scheme = if tls.is_some() { "https" } else { "http" };
    let pinned = match &tls {
        Some(identity) => format!(
            "certificate SHA-256 {} — clients pin it with --server-fingerprint",
            identity.fingerprint
        ),
        None => "plain HTTP, loopback only".to_string(),
    };
    println!(
        "tessera server listening on {scheme}://{addr} (data in {}; {pinned})",
        args.data_dir.display(),
    );
    if let Some(metrics) = &metrics
        && let Ok(at) = metrics.local_addr()
    {
        println!("metrics on http://{at}/metrics");
    }
    let _ = std::io::stdout().flush();
    if let Some(metrics) = metrics {
        tokio::spawn(async move {
            if let Err(e) = tessera_server::observe::serve_metrics(metrics).await {
                eprintln!("the metrics listener stopped: {e}");
            }
        });
    }
    let drained = match tls {
        Some(identity) => tessera_server::tls::serve_tls(listener, state, identity, stop)
            .await
            .map_err(|e| Failure::Failed(e.to_string()))?,
        None => {
            listener
                .set_nonblocking(true)
                .map_err(|e| Failure::Failed(e.to_string()))?;
            let listener = tokio::net::TcpListener::from_std(listener)
                .map_err(|e| Failure::Failed(e.to_string()))?;
            tessera_server::serve_until(listener, state, stop)
                .await
                .map_err(|e| Failure::Failed(format!("server stopped: {e}")))?
        }
    };
    println!(
        "tessera server stopped: {} running session(s) at the signal, {} closed at the end of the grace period",
        drained.running, drained.closed
    );
    Ok(())
}

pub(crate) fn kek_source(
    text: &str,
    data_dir: &std::path::Path,
) -> Result<tessera_server::state::KekSource, Failure> {
    let pin = std::env::var("TESSERA_PKCS11_PIN").ok();
    tessera_server::state::KekSource::parse(text, data_dir, pin.as_deref())
        .map_err(|e| Failure::Usage(e.to_string()))
}
