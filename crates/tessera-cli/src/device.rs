//! Device-side commands: `init`, `keygen`, `sign`, `wallets`, `pubkey`, `device list|revoke`.
//!
//! The device keystore (`TESSERA_HOME`, default `~/.tessera`) holds the identity key and the
//! wallet shares, encrypted with the passphrase (`TESSERA_PASSPHRASE`, or a prompt). Which server
//! the device belongs to is kept in `device.json` beside them (not secret).

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tessera_client::{ClientError, RefreshStep, ServerClient, WalletRecord};
use tessera_core::DerivationPath;
use tessera_store::{DeviceIdentity, Keystore, Passphrase};

use crate::Failure;
use crate::output::{Format, WalletOut, print_json};

/// Which server and registration this device uses.
#[derive(Serialize, Deserialize)]
pub struct DeviceConfig {
    pub server: String,
    /// SHA-256 of the server certificate this device pins, hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_fingerprint: Option<String>,
    pub user: String,
    pub device_id: String,
    pub device_name: String,
}

pub fn home() -> Result<PathBuf, Failure> {
    Keystore::default_dir().map_err(store_error)
}

pub fn passphrase() -> Result<Passphrase, Failure> {
    let text = match std::env::var("TESSERA_PASSPHRASE") {
        Ok(p) => p,
        Err(_) if std::io::stdin().is_terminal() => dialoguer::Password::new()
            .with_prompt("Keystore passphrase")
            .interact()
            .map_err(|e| Failure::Usage(format!("cannot read the passphrase: {e}")))?,
        Err(_) => {
            return Err(Failure::Usage(
                "no passphrase: set TESSERA_PASSPHRASE or run in a terminal".into(),
            ));
        }
    };
    Passphrase::new(text).map_err(|e| Failure::Usage(e.to_string()))
}

pub fn client_error(e: ClientError) -> Failure {
    Failure::Failed(e.to_string())
}

pub fn store_error(e: tessera_store::Error) -> Failure {
    match e {
        tessera_store::Error::WrongPassphrase { .. }
        | tessera_store::Error::InvalidWalletName { .. } => Failure::Usage(e.to_string()),
        other => Failure::Failed(other.to_string()),
    }
}

pub fn load_config(home: &Path) -> Result<DeviceConfig, Failure> {
    let path = home.join("device.json");
    let text = std::fs::read_to_string(&path).map_err(|_| {
        Failure::Usage(format!(
            "this device is not set up ({} missing): run `tessera init --server URL --user USER --name NAME` first",
            path.display()
        ))
    })?;
    serde_json::from_str(&text)
        .map_err(|e| Failure::Failed(format!("{} is damaged: {e}", path.display())))
}

fn save_config(home: &Path, config: &DeviceConfig) -> Result<(), Failure> {
    let path = home.join("device.json");
    let text = serde_json::to_string_pretty(config).map_err(|e| Failure::Failed(e.to_string()))?;
    tessera_store::write_private_file(&path, text.as_bytes()).map_err(store_error)
}

/// An authenticated client and the unlocked identity.
pub struct Session {
    pub keystore: Keystore,
    pub passphrase: Passphrase,
    pub identity: DeviceIdentity,
    pub config: DeviceConfig,
    pub client: ServerClient,
}

pub async fn connect(home_dir: &Path) -> Result<Session, Failure> {
    connect_with(home_dir, None).await
}

/// [`connect`] with the passphrase the command already read, if it did (asked once only).
pub async fn connect_with(
    home_dir: &Path,
    passphrase: Option<Passphrase>,
) -> Result<Session, Failure> {
    let config = load_config(home_dir)?;
    let keystore = Keystore::open(home_dir).map_err(store_error)?;
    let passphrase = match passphrase {
        Some(p) => p,
        None => self::passphrase()?,
    };
    let identity = keystore.load_identity(&passphrase).map_err(store_error)?;
    let mut client = server_client(&config.server, config.server_fingerprint.as_deref())?;
    client
        .login(&identity, &config.device_id)
        .await
        .map_err(client_error)?;
    Ok(Session {
        keystore,
        passphrase,
        identity,
        config,
        client,
    })
}

pub fn server_client(url: &str, fingerprint: Option<&str>) -> Result<ServerClient, Failure> {
    match fingerprint {
        Some(f) => ServerClient::with_pinned_certificate(url, f),
        None => ServerClient::new(url),
    }
    .map_err(|e| Failure::Usage(e.to_string()))
}

pub async fn init(
    home_dir: &Path,
    server: &str,
    fingerprint: Option<&str>,
    user: &str,
    name: &str,
) -> Result<(), Failure> {
    // Check the URL and pin before anything is created.
    let client = server_client(server, fingerprint)?;
    let keystore = Keystore::open(home_dir).map_err(store_error)?;
    let passphrase = passphrase()?;
    let identity: DeviceIdentity = if keystore.has_identity().map_err(store_error)? {
        keystore.load_identity(&passphrase).map_err(store_error)?
    } else {
        keystore.create_identity(&passphrase).map_err(store_error)?
    };
    let device = client
        .register(&identity, user, name)
        .await
        .map_err(client_error)?;
    refuse_revoked(&device, server)?;
    save_config(
        home_dir,
        &DeviceConfig {
            server: server.into(),
            server_fingerprint: fingerprint.map(str::to_string),
            user: user.into(),
            device_id: device.device_id.clone().into(),
            device_name: name.into(),
        },
    )?;
    println!("device id      {}", device.device_id);
    println!("identity key   {}", device.identity_key);
    println!("status         {:?}", device.status);
    if device.status == tessera_api::DeviceStatus::Pending {
        println!(
            "approval code  {}  (on an active device of {user}: tessera device approve {})",
            tessera_api::approval_code(&identity.public_key()),
            tessera_api::approval_code(&identity.public_key())
        );
    }
    Ok(())
}

/// A revoked device's identity key can never log in again: `init` must not look like it worked.
fn refuse_revoked(device: &tessera_api::Device, server: &str) -> Result<(), Failure> {
    if device.status != tessera_api::DeviceStatus::Revoked {
        return Ok(());
    }
    Err(Failure::Failed(format!(
        "this device ({:?}, id {}) was revoked on {server}{}; its identity key can never be used again. \
         To use this machine again, set it up with a new identity (an empty TESSERA_HOME) and approve it from an active device",
        device.name,
        device.device_id,
        device
            .revoked_at
            .as_deref()
            .map(|at| format!(" at {at}"))
            .unwrap_or_default()
    )))
}

pub async fn keygen(home_dir: &Path, name: &str, format: Format) -> Result<(), Failure> {
    // Checks the name (it becomes a file name) before asking for the passphrase.
    let exists = Keystore::open(home_dir)
        .map_err(store_error)?
        .has_wallet(name)
        .map_err(store_error)?;
    let s = connect(home_dir).await?;
    if exists {
        return Err(Failure::Usage(format!(
            "a wallet named {name:?} already exists on this device"
        )));
    }
    let share = s
        .client
        .keygen(name, |r, t| eprintln!("  keygen round {r}/{t} done"))
        .await
        .map_err(client_error)?;
    s.keystore
        .save_wallet(name, &WalletRecord::new(share).to_bytes(), &s.passphrase)
        .map_err(store_error)?;
    let share = load_record(&s, name)?.current;
    WalletOut::of(name, &share).print(format)
}

pub fn load_record(s: &Session, name: &str) -> Result<WalletRecord, Failure> {
    let bytes = s
        .keystore
        .load_wallet(name, &s.passphrase)
        .map_err(store_error)?;
    WalletRecord::from_bytes(&bytes).map_err(|e| Failure::Failed(format!("wallet {name}: {e}")))
}

fn store_record(
    s: &Session,
    name: &str,
    record: &WalletRecord,
) -> Result<(), tessera_client::HookError> {
    Ok(s.keystore
        .replace_wallet(name, &record.to_bytes(), &s.passphrase)?)
}

pub async fn sign(
    home_dir: &Path,
    wallet: &str,
    kind: &tessera_api::intent::SignKind,
    path: &DerivationPath,
    format: Format,
) -> Result<(), Failure> {
    let decoded = tessera_api::intent::decode(kind).map_err(|e| Failure::Usage(e.to_string()))?;
    let s = connect(home_dir).await?;
    let mut record = load_record(&s, wallet)?;
    if !format.json {
        println!("signing        {}", decoded.summary);
    }
    let signature = s
        .client
        .sign_wallet(
            &mut record,
            |r| store_record(&s, wallet, r),
            kind,
            path,
            |r, t| eprintln!("  sign round {r}/{t} done"),
            |session| {
                eprintln!(
                    "  waiting for another device of this user to approve (tessera approvals approve {session})"
                )
            },
        )
        .await
        .map_err(client_error)?;
    let key = record
        .current
        .public_key_at(path)
        .map_err(|e| Failure::Failed(e.to_string()))?;
    let raw_tx = match kind {
        tessera_api::intent::SignKind::EthTx { tx } => Some(format!(
            "0x{}",
            hex::encode(
                tx.signed_raw(&signature)
                    .map_err(|e| Failure::Failed(e.to_string()))?
            )
        )),
        _ => None,
    };
    if format.json {
        // `sign_wallet` returns only a signature it verified under the wallet's key.
        return print_json(&serde_json::json!({
            "wallet": wallet,
            "summary": decoded.summary,
            "public_key": key.to_string(),
            "digest": hex::encode(decoded.digest),
            "signature_der": hex::encode(signature.to_der()),
            "signature_rsv": hex::encode(signature.to_rsv()),
            "raw_tx": raw_tx,
            "verified": true,
        }));
    }
    println!("public key     {key}");
    println!("digest         {}", hex::encode(decoded.digest));
    println!("signature DER  {}", hex::encode(signature.to_der()));
    println!("r||s||v        {}", hex::encode(signature.to_rsv()));
    if let Some(raw) = raw_tx {
        println!("raw tx         {raw}");
    }
    println!("verified       yes");
    Ok(())
}

pub async fn policy_show(home_dir: &Path, wallet: &str) -> Result<(), Failure> {
    let s = connect(home_dir).await?;
    let id = load_record(&s, wallet)?.current.wallet_id().to_string();
    let info = s.client.policy(&id).await.map_err(client_error)?;
    println!(
        "policy of {wallet}: version {}{}",
        info.version,
        info.set_by
            .map(|d| format!(", set by device {d} at {}", info.set_at.unwrap_or_default()))
            .unwrap_or_else(|| " (the default of a new wallet)".into())
    );
    println!(
        "{}",
        serde_json::to_string_pretty(&info.policy).map_err(|e| Failure::Failed(e.to_string()))?
    );
    Ok(())
}

pub async fn policy_set(home_dir: &Path, wallet: &str, file: &Path) -> Result<(), Failure> {
    let text = if file == Path::new("-") {
        let mut t = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut t)
            .map_err(|e| Failure::Usage(format!("cannot read the policy: {e}")))?;
        t
    } else {
        std::fs::read_to_string(file)
            .map_err(|e| Failure::Usage(format!("cannot read {}: {e}", file.display())))?
    };
    let policy: tessera_api::Policy = serde_json::from_str(&text)
        .map_err(|e| Failure::Usage(format!("the policy is not valid: {e}")))?;
    let s = connect(home_dir).await?;
    let identity = &s.identity;
    let id = load_record(&s, wallet)?.current.wallet_id().to_string();
    match s
        .client
        .propose_policy(identity, &id, &policy)
        .await
        .map_err(client_error)?
    {
        tessera_api::PolicyChange::Applied(info) => {
            println!("policy of {wallet} is now version {}", info.version);
        }
        tessera_api::PolicyChange::Held(action) => {
            print_held(&action);
            println!(
                "next           the current policy requires approval and this change weakens it: once another active device approves it (tessera approvals approve {}), it applies; after a time lock, run this same command again",
                action.id
            );
        }
    }
    Ok(())
}

/// Prints a held action: what it is, and how it completes or is cancelled.
pub fn print_held(action: &tessera_api::HeldAction) {
    println!("held           {} ({})", action.id, action.kind);
    println!("               {}", action.summary);
    match &action.unlock_at {
        Some(at) => println!(
            "waits          until {at} (time lock), or another active device approves it: tessera approvals approve {}",
            action.id
        ),
        None => println!(
            "waits          for another active device of yours to approve it: tessera approvals approve {}",
            action.id
        ),
    }
    println!(
        "cancel         on any of your devices: tessera approvals cancel {}",
        action.id
    );
}

pub async fn approvals_list(home_dir: &Path, format: Format) -> Result<(), Failure> {
    let s = connect(home_dir).await?;
    let pending = s.client.approvals().await.map_err(client_error)?;
    let held = s.client.held_actions().await.map_err(client_error)?;
    if format.json {
        return print_json(&serde_json::json!({
            "signing_requests": pending,
            "held_actions": held,
        }));
    }
    if pending.is_empty() && held.is_empty() {
        println!("nothing waits for approval");
    }
    for p in pending {
        println!(
            "{}  wallet {}  from device {}  until {}\n    {}\n    digest {}",
            p.session_id, p.wallet_id, p.device_id, p.expires_at, p.summary, p.digest
        );
    }
    for a in held {
        let until = match &a.unlock_at {
            Some(at) => format!("time lock until {at}"),
            None => "needs another device's approval".to_string(),
        };
        println!(
            "{}  {}  {}  from device {}  {until}\n    {}\n    digest {}",
            a.id, a.kind, a.status, a.requested_by, a.summary, a.digest
        );
    }
    Ok(())
}

/// `approvals approve|refuse|cancel ID`: a signing request (by session id) or a held action.
pub async fn approvals_decide(home_dir: &Path, id: &str, approve: bool) -> Result<(), Failure> {
    let s = connect(home_dir).await?;
    let identity = &s.identity;
    let held = s.client.held_actions().await.map_err(client_error)?;
    if let Some(action) = held.iter().find(|a| a.id == id) {
        println!("{}", action.summary);
        let action = s
            .client
            .decide_held(identity, action, approve)
            .await
            .map_err(client_error)?;
        println!("action {id}: {}", action.status);
        return Ok(());
    }
    let pending = s.client.approvals().await.map_err(client_error)?;
    let request = pending
        .iter()
        .find(|p| p.session_id == id)
        .ok_or_else(|| Failure::Usage(format!("no pending signing request or held action {id}")))?;
    println!("{}", request.summary);
    let status = s
        .client
        .decide(identity, request, approve)
        .await
        .map_err(client_error)?;
    println!("request {id}: {}", status.approval);
    Ok(())
}

pub async fn wallets(home_dir: &Path, format: Format) -> Result<(), Failure> {
    let s = connect(home_dir).await?;
    let remote = s.client.wallets().await.map_err(client_error)?;
    let local = s.keystore.list_wallets().map_err(store_error)?;
    if format.json {
        let listed = remote
            .iter()
            .map(|w| {
                let mut v = serde_json::to_value(w)?;
                v["share_on_this_device"] = local.contains(&w.name).into();
                Ok(v)
            })
            .collect::<serde_json::Result<Vec<_>>>()
            .map_err(|e| Failure::Failed(format!("cannot encode the output as JSON: {e}")))?;
        return print_json(&listed);
    }
    for w in remote {
        let here = if local.contains(&w.name) {
            ""
        } else {
            "  (no share on this device)"
        };
        println!(
            "{:<20} {} {} epoch {}{here}",
            w.name, w.eth_address, w.public_key, w.epoch
        );
    }
    Ok(())
}

pub async fn pubkey(home_dir: &Path, wallet: &str, format: Format) -> Result<(), Failure> {
    let s = connect(home_dir).await?;
    let record = load_record(&s, wallet)?;
    WalletOut::of(wallet, &record.current).print(format)
}

/// Crash-test hook: `TESSERA_TEST_PAUSE_AT=<step>` makes `tessera refresh` announce the step on
/// stderr and stop there (after doing what the step does), so a test can SIGKILL the process at
/// an exact point. Steps: `round-2`, `pending-stored`, `commit-sent`.
fn pause_for_crash_test(step: RefreshStep) {
    let name = match step {
        RefreshStep::Round(2) => "round-2",
        RefreshStep::PendingStored => "pending-stored",
        RefreshStep::CommitSent => "commit-sent",
        _ => return,
    };
    if std::env::var("TESSERA_TEST_PAUSE_AT").is_ok_and(|v| v == name) {
        eprintln!("paused at {name}");
        std::thread::sleep(std::time::Duration::from_secs(120));
    }
}

pub async fn refresh(home_dir: &Path, wallet: &str) -> Result<(), Failure> {
    let s = connect(home_dir).await?;
    let mut record = load_record(&s, wallet)?;
    let epoch = s
        .client
        .refresh(&mut record, |step, r| {
            let done = match step {
                RefreshStep::Round(n) => {
                    eprintln!("  refresh round {n}/4 done");
                    Ok(())
                }
                RefreshStep::Settled
                | RefreshStep::PendingStored
                | RefreshStep::Switched
                | RefreshStep::Banned => store_record(&s, wallet, r),
                RefreshStep::CommitSent => Ok(()),
            };
            pause_for_crash_test(step);
            done
        })
        .await
        .map_err(client_error)?;
    println!("refreshed      {wallet}: now epoch {epoch}; the previous shares no longer sign");
    println!(
        "backups        backups made before this refresh restore shares that no longer sign: make new ones (tessera backup create --wallet {wallet} …, and --server-share)"
    );
    Ok(())
}

pub async fn device_list(home_dir: &Path, format: Format) -> Result<(), Failure> {
    let s = connect(home_dir).await?;
    let devices = s.client.devices().await.map_err(client_error)?;
    if format.json {
        let listed = devices
            .iter()
            .map(|d| {
                let mut v = serde_json::to_value(d)?;
                v["this_device"] = (d.device_id == s.config.device_id).into();
                Ok(v)
            })
            .collect::<serde_json::Result<Vec<_>>>()
            .map_err(|e| Failure::Failed(format!("cannot encode the output as JSON: {e}")))?;
        return print_json(&listed);
    }
    for d in devices {
        let me = if d.device_id == s.config.device_id {
            " (this device)"
        } else {
            ""
        };
        println!(
            "{} {:<9} {}{me}",
            d.device_id,
            format!("{:?}", d.status).to_lowercase(),
            d.name
        );
    }
    Ok(())
}

pub async fn device_approve(home_dir: &Path, code: &str) -> Result<(), Failure> {
    let s = connect(home_dir).await?;
    let identity = &s.identity;
    let d = s
        .client
        .approve(identity, code)
        .await
        .map_err(client_error)?;
    println!("approved {} ({})", d.device_id, d.name);
    // The key the new device printed at `tessera init`: the user compares the two.
    println!("identity key   {}", d.identity_key);
    Ok(())
}

pub async fn device_revoke(home_dir: &Path, id: &str, force: bool) -> Result<(), Failure> {
    let s = connect(home_dir).await?;
    if force {
        eprintln!(
            "warning: --force revokes the device even if it is the last active device of {:?}; \
             then no device of this user can log in, approve new devices or sign with its \
             wallets again",
            s.config.user
        );
    }
    let d = s
        .client
        .revoke_with(id, &tessera_api::RevokeDevice { force })
        .await
        .map_err(client_error)?;
    println!("revoked {} ({})", d.device_id, d.name);
    Ok(())
}

pub async fn audit_list(
    home_dir: &Path,
    wallet: Option<&str>,
    format: Format,
) -> Result<(), Failure> {
    let s = connect(home_dir).await?;
    let wallet_id = match wallet {
        Some(name) => Some(load_record(&s, name)?.current.wallet_id().to_string()),
        None => None,
    };
    let records = s
        .client
        .audit(wallet_id.as_deref())
        .await
        .map_err(client_error)?;
    if format.json {
        return print_json(&records);
    }
    for r in records {
        println!("{:>6}  {}  {:<20} {}", r.seq, r.at, r.kind, r.detail);
    }
    Ok(())
}
