//! `tessera service keygen | add | list | revoke | request`, and `tessera verify-webhook`.
//!
//! `add`, `list` and `revoke` run on a device (its identity key signs each change); `keygen` and
//! `request` are the backend's side and need no device home: a key file and the account's id.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Subcommand};
use tessera_api::requests::CreateRequest;
use tessera_api::service::ServiceAccount;
use tessera_api::{RequestKind, intent::SignKind};
use tessera_client::device::ServerAddress;
use tessera_client::service::{ServiceAdmin, ServiceClient, ServiceKey};

use crate::failure::{CliResult, Failure};
use crate::output::{Format, print_json};
use crate::unlock;

#[derive(Subcommand)]
pub(crate) enum ServiceCommand {
    /// Create a service account key (Ed25519) in a new file, readable by you only, and print
    /// its public key (for `tessera service add --public-key`).
    Keygen {
        /// The key file to create (never replaced).
        #[arg(long)]
        out: PathBuf,
    },
    /// Register a service account of your user, scoped to wallets and request kinds (signed by
    /// this device).
    Add {
        /// A name shown to people.
        name: String,
        /// The account's public key, 64 hex digits (`tessera service keygen` prints it).
        #[arg(long)]
        public_key: String,
        /// A wallet it may create requests for (name or id; repeat for more).
        #[arg(long = "wallet", required = true)]
        wallets: Vec<String>,
        /// The kinds of request it may create, comma-separated: eth-tx, eth-message, digest,
        /// eth-typed-data, eth-authorization, btc-psbt.
        #[arg(long, value_delimiter = ',', required = true)]
        kinds: Vec<String>,
        #[command(flatten)]
        format: Format,
    },
    /// List your service accounts (revoked ones too).
    List(Format),
    /// Revoke a service account: its tokens stop working at once.
    Revoke {
        /// The service account's id.
        id: String,
        #[command(flatten)]
        format: Format,
    },
    /// Create a signing request as a service account (the backend's side, for scripts).
    Request(RequestArgs),
}

/// `tessera service request`.
#[derive(Args)]
pub(crate) struct RequestArgs {
    /// The service account's key file.
    #[arg(long)]
    key_file: PathBuf,
    /// The service account's id.
    #[arg(long)]
    id: String,
    /// The server: https://…, or http://… on loopback.
    #[arg(long)]
    server: String,
    /// Accept only the server certificate with this SHA-256 fingerprint (64 hex digits).
    #[arg(long)]
    server_fingerprint: Option<String>,
    /// The wallet's id.
    #[arg(long)]
    wallet: String,
    /// A raw 32-byte digest to sign, hex.
    #[arg(long, conflicts_with = "message", required_unless_present = "message")]
    digest: Option<String>,
    /// An EIP-191 personal message to sign.
    #[arg(long)]
    message: Option<String>,
    /// Non-hardened BIP-32 path.
    #[arg(long, default_value = "m")]
    path: String,
    /// Wait until the request is signed, refused, expired or failed (exit 1 unless signed).
    #[arg(long)]
    wait: bool,
    /// With --wait: give up after this many seconds.
    #[arg(long, default_value_t = 3600)]
    timeout: u64,
    #[command(flatten)]
    format: Format,
}

/// `tessera verify-webhook`: checks a webhook body's `Tessera-Signature`.
#[derive(Args)]
pub(crate) struct VerifyWebhookArgs {
    /// The server's webhook key, 64 hex digits (`GET /webhooks/key`; printed at server start).
    #[arg(long)]
    key: String,
    /// The `Tessera-Signature` header, 128 hex digits.
    #[arg(long)]
    signature: String,
    /// The body, exactly as received (default: standard input).
    #[arg(long)]
    body: Option<PathBuf>,
}

/// `tessera service …`.
pub(crate) async fn run(home: &Path, command: ServiceCommand) -> CliResult {
    match command {
        ServiceCommand::Keygen { out } => keygen(&out),
        ServiceCommand::Add {
            name,
            public_key,
            wallets,
            kinds,
            format,
        } => add(home, &name, &public_key, &wallets, &kinds, format).await,
        ServiceCommand::List(format) => list(home, format).await,
        ServiceCommand::Revoke { id, format } => revoke(home, &id, format).await,
        ServiceCommand::Request(args) => request(args).await,
    }
}

fn keygen(out: &Path) -> CliResult {
    let key = ServiceKey::generate();
    key.save(out).map_err(|e| Failure::Usage(e.to_string()))?;
    println!("{}", key.public_key_hex());
    Ok(())
}

async fn admin(home: &Path) -> Result<ServiceAdmin, Failure> {
    let device = unlock::device(home);
    device.config()?;
    let passphrase = unlock::passphrase()?;
    Ok(ServiceAdmin::connect(&device, &passphrase).await?)
}

fn parse_kinds(kinds: &[String]) -> Result<Vec<RequestKind>, Failure> {
    kinds
        .iter()
        .map(|k| {
            k.trim().parse::<RequestKind>().map_err(|_| {
                let known: Vec<&str> = RequestKind::ALL.iter().map(|k| k.as_str()).collect();
                Failure::Usage(format!(
                    "--kinds: unknown request kind {k:?} (known: {})",
                    known.join(", ")
                ))
            })
        })
        .collect()
}

fn print_account(a: &ServiceAccount) {
    let kinds: Vec<&str> = a.kinds.iter().map(|k| k.as_str()).collect();
    let wallets: Vec<&str> = a.wallets.iter().map(|w| w.as_str()).collect();
    let state = match &a.revoked_at {
        Some(at) => format!("revoked {at}"),
        None => "active".into(),
    };
    println!(
        "{}  {:<24} {}  wallets {}  kinds {}  key {}",
        a.service_id,
        a.name,
        state,
        wallets.join(","),
        kinds.join(","),
        a.public_key
    );
}

async fn add(
    home: &Path,
    name: &str,
    public_key: &str,
    wallets: &[String],
    kinds: &[String],
    format: Format,
) -> CliResult {
    let kinds = parse_kinds(kinds)?;
    let mut key = [0u8; 32];
    hex::decode_to_slice(public_key.trim(), &mut key)
        .map_err(|_| Failure::Usage("--public-key must be 64 hex digits".into()))?;
    let admin = admin(home).await?;
    let wallets = admin.wallet_ids(wallets).await?;
    let account = admin.add(name, &key, &wallets, &kinds).await?;
    if format.json {
        return print_json(&account);
    }
    println!("service account {} registered", account.service_id);
    print_account(&account);
    Ok(())
}

async fn list(home: &Path, format: Format) -> CliResult {
    let accounts = admin(home).await?.list().await?;
    if format.json {
        return print_json(&accounts);
    }
    for a in &accounts {
        print_account(a);
    }
    Ok(())
}

async fn revoke(home: &Path, id: &str, format: Format) -> CliResult {
    let account = admin(home).await?.revoke(id).await?;
    if format.json {
        return print_json(&account);
    }
    println!("service account {} revoked", account.service_id);
    Ok(())
}

async fn request(args: RequestArgs) -> CliResult {
    let key = ServiceKey::load(&args.key_file).map_err(|e| Failure::Usage(e.to_string()))?;
    let kind = match (args.digest, args.message) {
        (Some(digest), None) => SignKind::Digest { digest },
        (None, Some(message)) => SignKind::EthMessage { message },
        _ => return Err(Failure::Usage("give --digest or --message".into())),
    };
    let server = ServerAddress {
        url: args.server,
        fingerprint: args.server_fingerprint,
    };
    let mut client = ServiceClient::connect(&server, key, &args.id).await?;
    let created = client
        .create_request(&CreateRequest {
            wallet_id: args.wallet.into(),
            path: args.path,
            kind,
            expires_in_secs: None,
        })
        .await?;
    let info = if args.wait {
        client
            .wait(created.id.as_str(), Duration::from_secs(args.timeout))
            .await?
    } else {
        created
    };
    if args.format.json {
        print_json(&info)?;
    } else {
        println!("request {}  {}  {}", info.id, info.state, info.summary);
        if let Some(sig) = &info.signature {
            println!("signature {sig}");
        }
    }
    if args.wait && info.state != tessera_api::RequestState::Signed {
        return Err(Failure::Failed(format!(
            "request {} ended {}{}",
            info.id,
            info.state,
            info.detail.map(|d| format!(": {d}")).unwrap_or_default()
        )));
    }
    Ok(())
}

/// `tessera verify-webhook`: exit 0 and "valid" when the signature is the server key's over the
/// exact body bytes, exit 1 and "invalid signature" otherwise (exit 2 for malformed input).
pub(crate) fn verify_webhook(args: &VerifyWebhookArgs) -> CliResult {
    let mut key = [0u8; 32];
    hex::decode_to_slice(args.key.trim(), &mut key)
        .map_err(|_| Failure::Usage("--key must be 64 hex digits".into()))?;
    let mut signature = [0u8; 64];
    hex::decode_to_slice(args.signature.trim(), &mut signature)
        .map_err(|_| Failure::Usage("--signature must be 128 hex digits".into()))?;
    let body = match &args.body {
        Some(path) => std::fs::read(path)
            .map_err(|e| Failure::Usage(format!("cannot read {}: {e}", path.display())))?,
        None => {
            let mut bytes = Vec::new();
            std::io::stdin()
                .read_to_end(&mut bytes)
                .map_err(|e| Failure::Usage(format!("cannot read standard input: {e}")))?;
            bytes
        }
    };
    // RFC 8032 verification, strict (no small-order keys, no malleable signatures).
    match tessera_store::keystore::verify_identity_signature(&key, &body, &signature) {
        Ok(()) => {
            println!("valid");
            Ok(())
        }
        Err(tessera_store::Error::InvalidPublicKey) => {
            Err(Failure::Usage("--key is not an Ed25519 public key".into()))
        }
        Err(_) => Err(Failure::Failed("invalid signature".into())),
    }
}
