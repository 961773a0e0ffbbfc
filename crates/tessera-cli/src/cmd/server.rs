//! `tessera server`: run the commitment server (the co-signing party).
//!
//! Its settings come in layers, each overriding the one before (docs/operations.md,
//! "Configuration"): the built-in defaults, a TOML file (`--config`), `TESSERA_<SETTING>`
//! environment variables, and flags. The flags' clap definitions ([`Settings`]) are the one place
//! for names, types, defaults and help texts: the file's keys and the variables' names are the
//! flags' ids, and the defaults are clap's (the values clap reports as defaulted form the bottom
//! layer, the ones it reports as given on the command line the top one). `figment` merges the
//! layers and remembers where each value came from, for errors and `--print-config`.

use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::{ArgMatches, Args, ValueEnum};
use figment::providers::{Env, Format, Serialized, Toml};
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider, Source};
use serde::{Deserialize, Serialize};

use crate::failure::{CliResult, Failure};

/// The server's settings: flags, keys of the `--config` file and `TESSERA_<SETTING>` variables.
#[derive(Args, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Settings {
    /// Where the database and keys live (created on first start).
    #[arg(long, default_value = "./tessera-data")]
    data_dir: PathBuf,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8443")]
    listen: std::net::SocketAddr,
    /// Use this PostgreSQL database (postgres://user:pass@host/db) instead of the SQLite file in
    /// the data directory, e.g. for several replicas. Keys stay in the data directory. Also
    /// TESSERA_DATABASE_URL (keep the password out of the command line).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    database_url: Option<String>,
    /// TLS certificate chain, PEM (with --tls-key).
    #[arg(long, requires = "tls_key", conflicts_with_all = ["dev_tls", "insecure_http"])]
    #[serde(skip_serializing_if = "Option::is_none")]
    tls_cert: Option<PathBuf>,
    /// TLS private key, PEM.
    #[arg(long, requires = "tls_cert")]
    #[serde(skip_serializing_if = "Option::is_none")]
    tls_key: Option<PathBuf>,
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
    /// directory, created on first start), `file:PATH`, or an AES key in an HSM named by an
    /// RFC 7512 URI, `pkcs11:token=LABEL;object=LABEL?module-path=PATH` (the PIN from
    /// TESSERA_PKCS11_PIN, or the URI's pin-source=file:PATH). Also TESSERA_KEK.
    #[arg(long, default_value = "file")]
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
    #[serde(skip_serializing_if = "Option::is_none")]
    metrics_listen: Option<std::net::SocketAddr>,
    /// POST every signing request's state change to this URL (https://, or http:// to a
    /// loopback address only), each body signed with the server's key (header
    /// Tessera-Signature; check with `tessera verify-webhook`). Failed deliveries are retried
    /// with backoff, across restarts.
    #[arg(long, value_name = "URL")]
    #[serde(skip_serializing_if = "Option::is_none")]
    webhook_url: Option<String>,
}

/// How the server writes its log.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum LogFormat {
    /// Lines for people.
    Text,
    /// One JSON object per line.
    Json,
}

/// What `tessera server` was given: the settings as clap parsed them, and which of them the
/// command line gave (the others hold clap's defaults).
pub(crate) struct ServerArgs {
    cli: ServerCli,
    from_flags: Vec<String>,
}

#[derive(Args)]
#[command(after_long_help = "\
Every setting is also read from the --config file (its key is the flag's name with underscores: \
ip_burst = 50) and from the environment variable TESSERA_<SETTING> (TESSERA_IP_BURST=50). \
Flags override the environment, the environment overrides the file, the file overrides the \
defaults. docs/operations.md, \"Configuration\", has an example file.")]
struct ServerCli {
    /// Read settings from this TOML file (any setting below, named as its flag with
    /// underscores, e.g. `listen = "0.0.0.0:8443"`).
    #[arg(long, env = "TESSERA_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Print the effective settings (defaults, the file, the environment and the flags merged)
    /// as TOML, each with where it came from and secrets redacted, and exit.
    #[arg(long)]
    print_config: bool,
    #[command(flatten)]
    settings: Settings,
}

impl clap::FromArgMatches for ServerArgs {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        let cli = ServerCli::from_arg_matches(matches)?;
        let from_flags = setting_names()
            .into_iter()
            .filter(|id| matches.value_source(id) == Some(ValueSource::CommandLine))
            .collect();
        Ok(ServerArgs { cli, from_flags })
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(matches)?;
        Ok(())
    }
}

impl Args for ServerArgs {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        ServerCli::augment_args(cmd)
    }

    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        ServerCli::augment_args_for_update(cmd)
    }
}

/// The settings' names (the flags' ids), in the order of `--help`.
fn setting_names() -> Vec<String> {
    Settings::augment_args(clap::Command::new("server"))
        .get_arguments()
        .map(|a| a.get_id().to_string())
        .collect()
}

/// The layers' names, as their metadata carries them.
const DEFAULTS: &str = "default";
const ENVIRONMENT: &str = "environment variable";
const FLAGS: &str = "command line";

/// A provider under a name of ours (so that errors and `--print-config` say where a value came
/// from in the operator's terms: `--ip-burst`, `TESSERA_IP_BURST`).
struct Named<P> {
    inner: P,
    metadata: Metadata,
}

impl<P: Provider> Provider for Named<P> {
    fn metadata(&self) -> Metadata {
        self.metadata.clone()
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        self.inner.data()
    }
}

/// Where a setting's value came from.
enum Origin {
    Default,
    File(PathBuf),
    Named(String),
}

impl Origin {
    fn of(figment: &Figment, key: &str) -> Origin {
        match figment.find_metadata(key) {
            Some(md) => Self::from_metadata(md, key),
            None => Origin::Default,
        }
    }

    fn from_metadata(md: &Metadata, key: &str) -> Origin {
        match &md.source {
            Some(Source::File(path)) => Origin::File(path.clone()),
            _ if md.name == DEFAULTS => Origin::Default,
            _ => Origin::Named(md.interpolate(&Profile::Default, &[key])),
        }
    }
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::Default => write!(f, "the default"),
            Origin::File(path) => write!(f, "{}", path.display()),
            Origin::Named(name) => write!(f, "{name}"),
        }
    }
}

/// The merged settings and where each came from.
struct Resolved {
    settings: Settings,
    figment: Figment,
}

impl Resolved {
    fn origin(&self, key: &str) -> Origin {
        Origin::of(&self.figment, key)
    }

    /// `key (from ORIGIN)`, for messages about a setting.
    fn named(&self, key: &str) -> String {
        format!("{key} (from {})", self.origin(key))
    }
}

fn resolve(args: &ServerArgs) -> Result<Resolved, Failure> {
    let names = setting_names();
    let parsed = Value::serialize(&args.cli.settings)
        .ok()
        .and_then(|v| v.into_dict())
        .ok_or_else(|| Failure::Failed("cannot read the flags".into()))?;
    let (flags, defaults): (Dict, Dict) = parsed
        .into_iter()
        .partition(|(k, _)| args.from_flags.contains(k));
    let mut figment = Figment::new().merge(Named {
        inner: Serialized::defaults(defaults),
        metadata: Metadata::named(DEFAULTS),
    });
    if let Some(path) = &args.cli.config {
        figment = figment.merge(config_file(path, &names)?);
    }
    let only: Vec<&str> = names.iter().map(String::as_str).collect();
    figment = figment
        .merge(Named {
            inner: Env::prefixed("TESSERA_").only(&only),
            metadata: Metadata::named(ENVIRONMENT).interpolater(|_: &Profile, k: &[&str]| {
                format!("TESSERA_{}", k.join(".").to_ascii_uppercase())
            }),
        })
        .merge(Named {
            inner: Serialized::defaults(flags),
            metadata: Metadata::named(FLAGS).interpolater(|_: &Profile, k: &[&str]| {
                format!("--{}", k.join(".").replace('_', "-"))
            }),
        });
    let settings: Settings = figment.extract().map_err(invalid_setting)?;
    Ok(Resolved { settings, figment })
}

/// The `--config` file, refused when it cannot be read, is not TOML or has a key that is not a
/// setting.
fn config_file(path: &Path, names: &[String]) -> Result<figment::providers::Data<Toml>, Failure> {
    std::fs::metadata(path).map_err(|e| {
        Failure::Usage(format!(
            "cannot read the config file {}: {e}",
            path.display()
        ))
    })?;
    let file = Toml::file_exact(path);
    let data = file.data().map_err(|e| {
        Failure::Usage(format!(
            "the config file {} is not valid TOML: {}",
            path.display(),
            toml_error(&e.kind.to_string())
        ))
    })?;
    if let Some(dict) = data.get(&Profile::Default) {
        for (key, value) in dict {
            if !names.contains(key) {
                return Err(Failure::Usage(unknown_setting(key, value, path, names)));
            }
        }
    }
    Ok(file)
}

fn unknown_setting(key: &str, value: &Value, path: &Path, names: &[String]) -> String {
    let mut message = format!(
        "unknown setting {key:?} in the config file {}",
        path.display()
    );
    let underscored = key.replace('-', "_");
    let suggestion = if names.contains(&underscored) {
        Some(underscored.as_str())
    } else {
        names
            .iter()
            .map(|n| (strsim::jaro_winkler(key, n), n))
            .filter(|(score, _)| *score > 0.85)
            .max_by(|a, b| a.0.total_cmp(&b.0))
            .map(|(_, n)| n.as_str())
    };
    if let Some(name) = suggestion {
        message.push_str(&format!(" (did you mean {name:?}?)"));
    } else if value.as_dict().is_some() {
        message.push_str(": settings are top-level keys (ip_burst = 50), not tables");
    } else {
        message.push_str(": see `tessera server --help` for the settings");
    }
    message
}

/// A TOML parse error on one line: its position and what is wrong, without the source excerpt.
fn toml_error(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .filter(|l| {
            !l.is_empty()
                && !l.starts_with('|')
                && !l
                    .split_once(" |")
                    .is_some_and(|(n, _)| n.chars().all(|c| c.is_ascii_digit()))
        })
        .collect::<Vec<_>>()
        .join("; ")
}

fn invalid_setting(error: figment::Error) -> Failure {
    let messages: Vec<String> = error
        .into_iter()
        .map(|e| {
            let key = e.path.join(".");
            let origin = e
                .metadata
                .as_ref()
                .map(|md| Origin::from_metadata(md, &key));
            match (key.is_empty(), origin) {
                (false, Some(origin)) => {
                    format!("invalid setting {key} (from {origin}): {}", e.kind)
                }
                (false, None) => format!("invalid setting {key}: {}", e.kind),
                (true, _) => format!("invalid settings: {}", e.kind),
            }
        })
        .collect();
    Failure::Usage(messages.join("; "))
}

/// How the server serves: its TLS identity, or plain HTTP on loopback.
enum Transport {
    Files { cert: PathBuf, key: PathBuf },
    DevTls,
    InsecureHttp,
}

/// The checks of settings that depend on each other (clap checks the flags among themselves;
/// these hold whichever layer each value came from).
fn transport(r: &Resolved) -> Result<Transport, Failure> {
    let s = &r.settings;
    let conflict = |a: &str, b: &str| {
        Failure::Usage(format!("{} cannot be used with {}", r.named(a), r.named(b)))
    };
    if s.tls_cert.is_some() || s.tls_key.is_some() {
        if s.dev_tls {
            return Err(conflict(
                if s.tls_cert.is_some() {
                    "tls_cert"
                } else {
                    "tls_key"
                },
                "dev_tls",
            ));
        }
        if s.insecure_http {
            return Err(conflict(
                if s.tls_cert.is_some() {
                    "tls_cert"
                } else {
                    "tls_key"
                },
                "insecure_http",
            ));
        }
    }
    if s.dev_tls && s.insecure_http {
        return Err(conflict("dev_tls", "insecure_http"));
    }
    if s.benchmark_without_controls && !s.insecure_http {
        return Err(Failure::Usage(format!(
            "{} needs --insecure-http",
            r.named("benchmark_without_controls")
        )));
    }
    match (&s.tls_cert, &s.tls_key) {
        (Some(cert), Some(key)) => {
            return Ok(Transport::Files {
                cert: cert.clone(),
                key: key.clone(),
            });
        }
        (Some(_), None) => {
            return Err(Failure::Usage(format!(
                "{} needs tls_key too",
                r.named("tls_cert")
            )));
        }
        (None, Some(_)) => {
            return Err(Failure::Usage(format!(
                "{} needs tls_cert too",
                r.named("tls_key")
            )));
        }
        (None, None) => {}
    }
    if s.dev_tls {
        return Ok(Transport::DevTls);
    }
    if s.insecure_http {
        if !s.listen.ip().is_loopback() {
            return Err(Failure::Usage(format!(
                "--insecure-http is only allowed on a loopback address, not {} (listen from {})",
                s.listen.ip(),
                r.origin("listen")
            )));
        }
        return Ok(Transport::InsecureHttp);
    }
    Err(Failure::Usage(
        "choose TLS (--tls-cert and --tls-key, or --dev-tls) or, on loopback only, --insecure-http (or tls_cert and tls_key, dev_tls or insecure_http in the config file)".into(),
    ))
}

/// The server's configuration from the settings (nothing opened yet).
fn server_config(s: &Settings) -> Result<tessera_server::Config, Failure> {
    let mut config = tessera_server::Config::new(&s.data_dir);
    config.database_url = s.database_url.clone();
    config.kek = Some(kek_source(&s.kek, &s.data_dir)?);
    config.controls = !s.benchmark_without_controls;
    config.time_lock = std::time::Duration::from_secs(s.time_lock);
    config.limits = tessera_server::limits::Limits {
        ip_per_second: s.ip_rate,
        ip_burst: s.ip_burst,
        device_per_second: s.device_rate,
        device_burst: s.device_burst,
        auth_failures_per_minute: s.auth_failures_per_minute,
        auth_failure_burst: s.auth_failure_burst,
    };
    config.session_idle_timeout = std::time::Duration::from_secs(s.session_idle_timeout.max(1));
    config.max_sessions_per_device = s.max_sessions_per_device.max(1);
    config.max_sessions_per_wallet = s.max_sessions_per_wallet.max(1);
    config.abort_limit = s.abort_limit;
    config.abort_window = std::time::Duration::from_secs(s.abort_window.max(1));
    config.shutdown_grace = std::time::Duration::from_secs(s.shutdown_grace);
    config.metrics_on_api = s.metrics_listen.is_none();
    if let Some(url) = &s.webhook_url {
        tessera_client::service::check_webhook_url(url)
            .map_err(|e| Failure::Usage(format!("--webhook-url: {e}")))?;
        let poster = tessera_client::service::WebhookPoster::new()
            .map_err(|e| Failure::Failed(format!("--webhook-url: {e}")))?;
        config.webhook_url = Some(url.clone());
        config.webhook_transport = Some(std::sync::Arc::new(SdkWebhooks(poster)));
    }
    Ok(config)
}

pub(crate) async fn run(args: ServerArgs) -> CliResult {
    let resolved = resolve(&args)?;
    if args.cli.print_config {
        print!("{}", effective_settings(&resolved));
        // Then the checks the server would make before opening anything.
        transport(&resolved)?;
        kek_source(&resolved.settings.kek, &resolved.settings.data_dir)?;
        return Ok(());
    }
    let s = &resolved.settings;
    crate::install_log_subscriber("info,sqlx=warn", s.log_format == LogFormat::Json);
    let tls = match transport(&resolved)? {
        Transport::Files { cert, key } => Some(
            tessera_server::tls::from_files(&cert, &key)
                .map_err(|e| Failure::Usage(e.to_string()))?,
        ),
        Transport::DevTls => Some(
            tessera_server::tls::dev_identity(&s.data_dir)
                .map_err(|e| Failure::Failed(e.to_string()))?,
        ),
        Transport::InsecureHttp => None,
    };
    let config = server_config(s)?;
    let state = tessera_server::AppState::open(config)
        .await
        .map_err(|e| Failure::Failed(e.to_string()))?;
    let listener = std::net::TcpListener::bind(s.listen)
        .map_err(|e| Failure::Failed(format!("cannot listen on {}: {e}", s.listen)))?;
    let addr = listener
        .local_addr()
        .map_err(|e| Failure::Failed(e.to_string()))?;
    let metrics = match s.metrics_listen {
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
        s.data_dir.display(),
    );
    if let Some(metrics) = &metrics
        && let Ok(at) = metrics.local_addr()
    {
        println!("metrics on http://{at}/metrics");
    }
    if s.webhook_url.is_some() {
        // Not `println!`: whoever started the server may have stopped reading after the first
        // line, and a failed write must not end it.
        let _ = writeln!(
            std::io::stdout(),
            "webhook bodies are signed with Ed25519 key {} (GET /webhooks/key; tessera verify-webhook)",
            hex::encode(state.jwt().public_key())
        );
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
    // Not `println!`: a supervisor may have closed stdout by now, and that would panic.
    let _ = writeln!(
        std::io::stdout(),
        "tessera server stopped: {} protocol socket(s) or server run(s) at the signal, {} closed at the end of the grace period",
        drained.running,
        drained.closed
    );
    Ok(())
}

/// The SDK's HTTP client posting the server's webhooks (the server has no HTTP client).
#[derive(Debug)]
struct SdkWebhooks(tessera_client::service::WebhookPoster);

impl tessera_server::webhooks::Transport for SdkWebhooks {
    fn post<'a>(
        &'a self,
        url: &'a str,
        body: &'a [u8],
        headers: &'a [(&'static str, String)],
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<u16, String>> + Send + 'a>> {
        Box::pin(self.0.post(url, body, headers))
    }
}

/// `--print-config`: every setting as TOML (a file `--config` reads back, but for the
/// redactions), each with where its value came from.
fn effective_settings(r: &Resolved) -> String {
    let mut out = String::from(
        "# tessera server: effective settings (defaults < --config file < TESSERA_* environment < flags)\n",
    );
    if let Some(path) = r.figment.metadata().find_map(|md| match &md.source {
        Some(Source::File(p)) => Some(p.clone()),
        _ => None,
    }) {
        out.push_str(&format!("# config file: {}\n", path.display()));
    }
    let values = Value::serialize(&r.settings)
        .ok()
        .and_then(|v| v.into_dict())
        .unwrap_or_default();
    for key in setting_names() {
        let Some(value) = values.get(&key) else {
            out.push_str(&format!("# {key} is not set\n"));
            continue;
        };
        let mut rendered = toml_value(value);
        if let Value::String(_, text) = value {
            match key.as_str() {
                "database_url" => rendered = toml_string(&redact_database_url(text)),
                "kek" => rendered = toml_string(&redact_pin_value(text)),
                _ => {}
            }
        }
        let origin = match r.origin(&key) {
            Origin::Default => "default".to_string(),
            other => format!("from {other}"),
        };
        out.push_str(&format!("{key} = {rendered}  # {origin}\n"));
        if key == "kek" {
            out.push_str(&kek_notes(&r.settings.kek));
        }
    }
    out
}

/// Comment lines under `kek`: where a PKCS#11 PIN comes from, and a deprecated form.
fn kek_notes(kek: &str) -> String {
    let mut notes = String::new();
    if let Some(note) = tessera_server::state::KekSource::deprecation(kek) {
        notes.push_str(&format!("# note: {note}\n"));
    }
    if let Ok(uri) = tessera_store::pkcs11::Pkcs11Uri::parse(kek) {
        let pin = match uri.pin {
            Some(tessera_store::pkcs11::PinSource::Value(_)) => {
                "the URI's pin-value (redacted)".to_string()
            }
            Some(tessera_store::pkcs11::PinSource::File(path)) => {
                format!("the file {}", path.display())
            }
            None if std::env::var_os("TESSERA_PKCS11_PIN").is_some() => {
                "TESSERA_PKCS11_PIN".to_string()
            }
            None => "missing: set TESSERA_PKCS11_PIN".to_string(),
        };
        notes.push_str(&format!("# PKCS#11 PIN: {pin}\n"));
    }
    notes
}

fn toml_value(value: &Value) -> String {
    match value {
        Value::String(_, s) => toml_string(s),
        Value::Bool(_, b) => b.to_string(),
        Value::Num(_, n) => n
            .to_u128()
            .map(|v| v.to_string())
            .or_else(|| n.to_i128().map(|v| v.to_string()))
            .or_else(|| n.to_f64().map(|v| v.to_string()))
            .unwrap_or_default(),
        Value::Char(_, c) => toml_string(&c.to_string()),
        other => toml_string(&format!("{other:?}")),
    }
}

/// A TOML basic string.
fn toml_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

const REDACTED: &str = "<redacted>";

/// `postgres://user:secret@host/db?password=secret` with both passwords replaced.
fn redact_database_url(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (Some(scheme), rest),
        None => (None, url),
    };
    // The user information ends at the *last* `@` before the path: a password may hold `/`,
    // `?`, `#` or `@` unencoded, and anything before that `@` is redacted but the user name.
    let path_start = rest.rfind('@').map_or(0, |at| at + 1);
    let authority_end = rest[path_start..]
        .find(['/', '?', '#'])
        .map_or(rest.len(), |i| path_start + i);
    let (authority, tail) = rest.split_at(authority_end);
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{user}:{REDACTED}@{host}"),
            None => format!("{userinfo}@{host}"),
        },
        None => authority.to_string(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let query: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    // As sqlx reads the key: percent-decoded (`pass%77ord` is `password`).
                    Some((k, _)) if percent_decoded(k).eq_ignore_ascii_case("password") => {
                        format!("{k}={REDACTED}")
                    }
                    _ => pair.to_string(),
                })
                .collect();
            format!("{path}?{}", query.join("&"))
        }
        None => tail.to_string(),
    };
    match scheme {
        Some(scheme) => format!("{scheme}://{authority}{tail}"),
        None => format!("{authority}{tail}"),
    }
}

/// `text` with its `%XX` escapes decoded (invalid escapes kept as they are).
fn percent_decoded(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `kek` with the value of every `pin-value` attribute redacted, wherever it stands (the
/// query, or misplaced in the path), up to the next `;`, `&` or `?`.
fn redact_pin_value(kek: &str) -> String {
    let mut out = String::with_capacity(kek.len());
    let mut rest = kek;
    while let Some(at) = rest.to_ascii_lowercase().find("pin-value") {
        let value_start = at + "pin-value".len();
        out.push_str(&rest[..value_start]);
        rest = &rest[value_start..];
        let end = rest.find([';', '&', '?']).unwrap_or(rest.len());
        if rest[..end].is_empty() {
            continue;
        }
        // Keep the separator the attribute was written with (`=`, or a mistyped `:`).
        let separator = rest.chars().next().filter(|c| matches!(c, '=' | ':'));
        if let Some(c) = separator {
            out.push(c);
        }
        out.push_str(REDACTED);
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// The key-encryption key named by `text` (`--kek` of the server, `kek rotate`, `backup
/// restore`), with the PIN from TESSERA_PKCS11_PIN unless the URI gives one. A deprecated form
/// is logged as a warning naming the URI to use instead.
pub(crate) fn kek_source(
    text: &str,
    data_dir: &std::path::Path,
) -> Result<tessera_server::state::KekSource, Failure> {
    let pin = std::env::var("TESSERA_PKCS11_PIN").ok();
    let source = tessera_server::state::KekSource::parse(text, data_dir, pin.as_deref())
        .map_err(|e| Failure::Usage(e.to_string()))?;
    if let Some(note) = tessera_server::state::KekSource::deprecation(text) {
        tracing::warn!("{note}");
    }
    Ok(source)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn clap_defaults_form_the_bottom_layer() {
        // The defaults layer is clap's: every setting without a default is an Option, and a
        // serialized parse of no flags holds exactly the settings that have one.
        let cmd = ServerCli::augment_args(clap::Command::new("server"));
        let matches = cmd.try_get_matches_from(["server"]).unwrap();
        let args = <ServerArgs as clap::FromArgMatches>::from_arg_matches(&matches).unwrap();
        assert!(args.from_flags.is_empty());
        let dict = Value::serialize(&args.cli.settings)
            .unwrap()
            .into_dict()
            .unwrap();
        for name in setting_names() {
            let optional = [
                "database_url",
                "tls_cert",
                "tls_key",
                "metrics_listen",
                "webhook_url",
            ]
            .contains(&name.as_str());
            assert_eq!(dict.contains_key(&name), !optional, "{name}");
        }
        assert_eq!(dict.len(), setting_names().len() - 5);
    }

    #[test]
    fn flags_given_are_told_apart_from_defaults() {
        let cmd = ServerCli::augment_args(clap::Command::new("server"));
        let matches = cmd
            .try_get_matches_from(["server", "--ip-burst", "2000", "--insecure-http"])
            .unwrap();
        let args = <ServerArgs as clap::FromArgMatches>::from_arg_matches(&matches).unwrap();
        // 2000 is also the default: given on the command line all the same.
        assert_eq!(args.from_flags, vec!["insecure_http", "ip_burst"]);
    }

    #[test]
    fn database_passwords_are_redacted() {
        for (url, shown) in [
            (
                "postgres://tessera:s3cret@db.example:5432/tessera",
                "postgres://tessera:<redacted>@db.example:5432/tessera",
            ),
            (
                "postgres://tessera:p@ss:w@rd@127.0.0.1/db?sslmode=disable",
                "postgres://tessera:<redacted>@127.0.0.1/db?sslmode=disable",
            ),
            (
                "postgres://tessera@127.0.0.1/db?password=s3cret&application_name=x",
                "postgres://tessera@127.0.0.1/db?password=<redacted>&application_name=x",
            ),
            ("postgres://127.0.0.1/db", "postgres://127.0.0.1/db"),
            // Unencoded `/`, `?` and `#` in the password: nothing of it is shown.
            (
                "postgres://tessera:pa/ss?w#rd@db.example/tessera",
                "postgres://tessera:<redacted>@db.example/tessera",
            ),
            // A percent-encoded key, as sqlx decodes it.
            (
                "postgres://tessera@h/db?pass%77ord=s3cret",
                "postgres://tessera@h/db?pass%77ord=<redacted>",
            ),
        ] {
            assert_eq!(redact_database_url(url), shown);
        }
    }

    #[test]
    fn pin_values_are_redacted() {
        assert_eq!(
            redact_pin_value("pkcs11:token=t;object=k?module-path=/m.so&pin-value=1234"),
            "pkcs11:token=t;object=k?module-path=/m.so&pin-value=<redacted>"
        );
        assert_eq!(redact_pin_value("file"), "file");
        // Misplaced in the path, mistyped, or upper-case: still redacted.
        assert_eq!(
            redact_pin_value("pkcs11:token=t;object=k;pin-value=1234"),
            "pkcs11:token=t;object=k;pin-value=<redacted>"
        );
        assert_eq!(
            redact_pin_value("PKCS11:token=t;object=k?PIN-VALUE:1234&module-path=/m.so"),
            "PKCS11:token=t;object=k?PIN-VALUE:<redacted>&module-path=/m.so"
        );
    }

    #[test]
    fn unknown_keys_get_a_suggestion() {
        let names = setting_names();
        let path = Path::new("/etc/tessera/server.toml");
        let plain = Value::from(1u32);
        let m = unknown_setting("ip-burst", &plain, path, &names);
        assert!(m.contains("did you mean \"ip_burst\""), "{m}");
        let m = unknown_setting("lisen", &plain, path, &names);
        assert!(m.contains("did you mean \"listen\""), "{m}");
        let m = unknown_setting("limits", &Value::from(Dict::new()), path, &names);
        assert!(m.contains("not tables"), "{m}");
        assert!(m.contains("/etc/tessera/server.toml"), "{m}");
    }

    #[test]
    fn toml_errors_fit_on_one_line() {
        let text = "TOML parse error at line 1, column 10\n  |\n1 | listen = \n  |          ^\nstring values must be quoted\n";
        assert_eq!(
            toml_error(text),
            "TOML parse error at line 1, column 10; string values must be quoted"
        );
    }

    #[test]
    fn toml_strings_are_escaped() {
        assert_eq!(toml_string("a\"b\\c\n"), "\"a\\\"b\\\\c\\n\"");
    }
}
