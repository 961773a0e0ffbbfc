//! `tessera backup-key …` and `tessera backup …`: backup holders' keys, verifiable backups of a
//! wallet's shares, restoring them (the workflows are `tessera_client::device`'s).
//!
//! A holder's private key lives in a file of its own (a USB drive, a folder a cloud drive
//! syncs, or this keystore's `backup-keys/`), encrypted under its own passphrase
//! (`TESSERA_BACKUP_KEY_PASSPHRASE`, or a prompt). The public keys this device knows are kept in
//! `holders.json` in the keystore directory (public data).

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand, ValueEnum};
use tessera_backup::backup::Backup;
use tessera_backup::holder::{HolderPublicKey, HolderSecretKey};
use tessera_backup::structure::AccessStructure;
use tessera_client::device::backup::{
    RecoveryOutcome, backup_wallet_share, read_holder_key, restore_share, verify_backup,
};
use tessera_client::device::online::{BackupRecorded, ServerBackup};
use tessera_client::device::{Device, DeviceError, holders};
use tessera_core::KeyShare;
use tessera_store::Passphrase;

use crate::cmd::approvals::print_held;
use crate::failure::{CliResult, Failure};
use crate::unlock;

/// `tessera backup-key …`.
#[derive(Subcommand)]
pub(crate) enum BackupKeyCommand {
    /// Create a backup holder's key pair: writes the private key file (encrypted with its own
    /// passphrase) and prints the public key (text and QR code).
    New(NewKeyArgs),
    /// Add another holder's public key (as `tessera backup-key new` printed it elsewhere).
    Add {
        /// `tessera-holder-v1:<label>:<hex>`
        public_key: String,
        /// What kind of holder it is.
        #[arg(long, value_enum, default_value = "device")]
        kind: HolderKind,
    },
    /// The holders whose public keys this device knows.
    List,
}

#[derive(Args)]
pub(crate) struct NewKeyArgs {
    /// The holder's name in access structures (e.g. usb-1, cloud, laptop).
    #[arg(long)]
    label: String,
    /// Where to write the private key file (e.g. /media/usb/usb-1.key). Default: this keystore's
    /// backup-keys/<label>.key (a holder kept on this device).
    #[arg(long)]
    out: Option<PathBuf>,
    /// What kind of holder it is (shown by the planner and `backup-key list`).
    #[arg(long, value_enum, default_value = "usb")]
    kind: HolderKind,
}

/// Where a holder's key lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum HolderKind {
    /// A file on a USB drive.
    Usb,
    /// A folder a cloud drive syncs.
    Cloud,
    /// Another device's keystore.
    Device,
    /// A printed code kept offline.
    Paper,
}

/// `tessera backup …`.
#[derive(Subcommand)]
pub(crate) enum BackupCommand {
    /// Back up this device's share of a wallet (or, with --server-share, the server's) under an
    /// access structure of holders; the server verifies it and records it in its audit log.
    Create(CreateArgs),
    /// Verify a backup file with public data only: every holder's part decrypts to its share of
    /// exactly the share the backup states, under every authorised set of holders.
    Verify(VerifyArgs),
    /// Restore a share from a backup with the private keys of an authorised set of holders.
    Restore(RestoreArgs),
}

#[derive(Args)]
pub(crate) struct CreateArgs {
    /// The wallet (its name on this device).
    #[arg(long)]
    wallet: String,
    /// The access structure, e.g. 'threshold(2, usb-1, cloud, laptop)' or
    /// 'and(usb-1, or(cloud, usb-2))'.
    #[arg(long)]
    policy: String,
    /// Where to write the backup file (never overwritten).
    #[arg(long)]
    out: PathBuf,
    /// A holder's public key, if not in holders.json (repeatable).
    #[arg(long = "holder")]
    holders: Vec<String>,
    /// Back up the server's share of the wallet instead of this device's.
    #[arg(long)]
    server_share: bool,
    /// Do not show the backup to the server (device-to-device wallets, offline use).
    #[arg(long)]
    no_server: bool,
}

#[derive(Args)]
pub(crate) struct VerifyArgs {
    /// The backup file.
    file: PathBuf,
    /// The public share (x·G, hex) the backup must hold; by default the one the file states is
    /// reported and the file's consistency checked.
    #[arg(long)]
    public_share: Option<String>,
    /// Also have the server verify it against the wallet as it knows it (and audit it).
    #[arg(long)]
    server: bool,
    #[command(flatten)]
    format: crate::output::Format,
}

#[derive(Args)]
pub(crate) struct RestoreArgs {
    /// The backup file.
    file: PathBuf,
    /// A holder's private key file, or the label of one kept in this keystore (repeatable).
    #[arg(long = "key", required = true)]
    keys: Vec<String>,
    /// The wallet name to restore under on this device (default: the name in the backup).
    #[arg(long = "as")]
    name: Option<String>,
    /// Restore the server's share into this server data directory (operator, server stopped).
    #[arg(long)]
    server_data_dir: Option<PathBuf>,
    /// With --server-data-dir: the server's PostgreSQL database, if it uses one.
    #[arg(long, env = "TESSERA_DATABASE_URL")]
    database_url: Option<String>,
    /// With --server-data-dir: the server's key-encryption key (as `tessera server --kek`).
    #[arg(long, env = "TESSERA_KEK", default_value = "file")]
    kek: String,
}

impl From<HolderKind> for holders::HolderKind {
    fn from(kind: HolderKind) -> Self {
        match kind {
            HolderKind::Usb => holders::HolderKind::Usb,
            HolderKind::Cloud => holders::HolderKind::Cloud,
            HolderKind::Device => holders::HolderKind::Device,
            HolderKind::Paper => holders::HolderKind::Paper,
        }
    }
}

fn print_public_key(key: &HolderPublicKey) {
    println!("holder         {}", key.label());
    println!("public key     {}", key.to_text());
    println!("fingerprint    {}", key.fingerprint());
    if std::io::stdout().is_terminal()
        && let Ok(qr) = qrcode::QrCode::new(key.to_text())
    {
        println!(
            "{}",
            qr.render::<qrcode::render::unicode::Dense1x2>()
                .quiet_zone(true)
                .build()
        );
    }
}

/// `tessera backup-key …`.
pub(crate) fn backup_key(home: &Path, command: BackupKeyCommand) -> CliResult {
    let device = unlock::device(home);
    match command {
        BackupKeyCommand::New(args) => {
            let key = device.new_holder_key(&args.label, args.out)?;
            let out = key.path().to_path_buf();
            let passphrase = unlock::key_passphrase(&out.display().to_string(), true)?;
            let public = device.write_holder_key(key, args.kind.into(), &passphrase)?;
            let advice = match args.kind {
                HolderKind::Usb => "keep the drive apart from your devices",
                HolderKind::Cloud => "the folder your cloud drive syncs keeps it",
                HolderKind::Device => "this device keeps it; it is not synced",
                HolderKind::Paper => "print it, keep the print offline, delete the file",
            };
            println!("private key    {} ({advice})", out.display());
            print_public_key(&public);
            Ok(())
        }
        BackupKeyCommand::Add { public_key, kind } => {
            let key = HolderPublicKey::from_text(public_key.trim()).map_err(Failure::usage)?;
            device.remember_holder(&key, kind.into())?;
            print_public_key(&key);
            Ok(())
        }
        BackupKeyCommand::List => {
            let known = device.known_holders()?;
            if known.holders.is_empty() {
                println!(
                    "no holders yet: tessera backup-key new --label usb-1 --out /media/usb/usb-1.key"
                );
            }
            for (label, holder) in &known.holders {
                let fingerprint = HolderPublicKey::from_text(&holder.public_key)
                    .map(|k| k.fingerprint())
                    .unwrap_or_else(|_| "(damaged)".into());
                println!(
                    "{label:16} {:8} {fingerprint}",
                    format!("{:?}", holder.kind).to_lowercase()
                );
            }
            Ok(())
        }
    }
}

fn print_report(backup: &Backup, file: &Path, size: usize) {
    let context = backup.context();
    println!("backup         {}", file.display());
    println!(
        "wallet         {} ({})",
        context.wallet_name, context.wallet_id
    );
    println!(
        "share          party {} of {}-of-{}, epoch {}",
        context.party, context.threshold_t, context.threshold_n, context.epoch
    );
    println!("public share   {}", hex::encode(context.public_share));
    println!("structure      {}", backup.structure());
    for holder in backup.holders() {
        println!(
            "holder         {} ({})",
            holder.label(),
            holder.fingerprint()
        );
    }
    println!("size           {size} bytes");
}

fn spinner(message: &str) -> Option<indicatif::ProgressBar> {
    if !std::io::stderr().is_terminal() {
        eprintln!("{message} ...");
        return None;
    }
    let bar = indicatif::ProgressBar::new_spinner();
    bar.set_message(message.to_owned());
    bar.enable_steady_tick(std::time::Duration::from_millis(100));
    Some(bar)
}

/// `tessera backup …`.
pub(crate) async fn backup(home: &Path, command: BackupCommand) -> CliResult {
    match command {
        BackupCommand::Create(args) => create(home, args).await,
        BackupCommand::Verify(args) => verify(home, args).await,
        BackupCommand::Restore(args) => restore(home, args).await,
    }
}

fn never_overwritten(path: &Path) -> Failure {
    DeviceError::FileExists {
        path: path.to_path_buf(),
        what: "it is never overwritten",
    }
    .into()
}

async fn create(home: &Path, args: CreateArgs) -> CliResult {
    let device = unlock::device(home);
    let structure = AccessStructure::parse(&args.policy).map_err(Failure::usage)?;
    let known = device.known_holders()?;
    let given = args
        .holders
        .iter()
        .map(|text| HolderPublicKey::from_text(text.trim()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(Failure::usage)?;
    let holders = known.resolve(&structure, &given)?;
    if args.out.exists() {
        return Err(never_overwritten(&args.out));
    }
    // `asked`: the keystore passphrase, when this command already read it.
    let (backup, bytes, asked) = if args.server_share {
        let online = unlock::connect(home).await?;
        let bar = spinner("the server backs up its share");
        let made = online
            .backup_server_share(&args.wallet, &structure, &holders)
            .await;
        drop(bar);
        match made? {
            ServerBackup::Ready(backup, bytes) => (*backup, bytes, None),
            ServerBackup::Held(action) => {
                print_held(&action);
                println!(
                    "next           run this same command again once it is approved or its time lock has ended: the server then writes the backup ({} is not written yet)",
                    args.out.display()
                );
                return Ok(());
            }
        }
    } else {
        device.keystore()?;
        let passphrase = unlock::passphrase()?;
        let record = device.load_wallet(&args.wallet, &passphrase)?;
        let bar = spinner("encrypting and proving (128 repetitions per holder)");
        let made = backup_wallet_share(&record, &args.wallet, &structure, &holders);
        drop(bar);
        let (backup, bytes) = made?;
        (backup, bytes, Some(passphrase))
    };
    if !tessera_store::write_new_private_file(&args.out, &bytes)? {
        return Err(never_overwritten(&args.out));
    }
    print_report(&backup, &args.out, bytes.len());
    println!("verified       yes (locally)");
    if !args.no_server && !args.server_share && device.is_set_up()? {
        let online = unlock::connect_with(&device, asked).await?;
        match online.record_backup(&bytes).await? {
            BackupRecorded::Recorded(digest) => {
                println!("server         verified and recorded ({digest})");
            }
            BackupRecorded::NotAServerWallet => {
                println!("server         not a wallet of the server: verified locally only");
            }
        }
    }
    Ok(())
}

async fn verify(home: &Path, args: VerifyArgs) -> CliResult {
    let bytes = std::fs::read(&args.file)
        .map_err(|e| Failure::Usage(format!("cannot read {}: {e}", args.file.display())))?;
    let backup = Backup::from_bytes(&bytes).map_err(|e| {
        Failure::Failed(format!("{}: not a valid backup: {e}", args.file.display()))
    })?;
    if !args.format.json {
        print_report(&backup, &args.file, bytes.len());
    }
    let expected: Option<[u8; 33]> = match &args.public_share {
        Some(text) => Some(
            hex::decode(text.trim())
                .ok()
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| Failure::Usage("--public-share must be 66 hex digits".into()))?,
        ),
        None => None,
    };
    verify_backup(&bytes, expected.as_ref())
        .map_err(|e| Failure::Failed(format!("verification FAILED: {e}")))?;
    if !args.format.json {
        println!(
            "verified       yes: every authorised set of holders restores the share with public share {}",
            hex::encode(backup.context().public_share)
        );
    }
    let server = if args.server {
        let digest = unlock::connect(home).await?.verify_backup(&bytes).await?;
        if !args.format.json {
            println!("server         verified and recorded ({digest})");
        }
        Some(digest)
    } else {
        None
    };
    if args.format.json {
        let context = backup.context();
        return crate::output::print_json(&serde_json::json!({
            "file": args.file.display().to_string(),
            "wallet": context.wallet_name,
            "wallet_id": context.wallet_id.to_string(),
            "party": context.party,
            "threshold": { "t": context.threshold_t, "n": context.threshold_n },
            "epoch": context.epoch,
            "public_share": hex::encode(context.public_share),
            "structure": backup.structure().to_string(),
            "holders": backup.holders().iter().map(|h| serde_json::json!({
                "label": h.label(),
                "fingerprint": h.fingerprint().to_string(),
            })).collect::<Vec<_>>(),
            "size": bytes.len(),
            "verified": true,
            "server_digest": server,
        }));
    }
    Ok(())
}

fn read_keys(device: &Device, keys: &[String]) -> Result<Vec<HolderSecretKey>, Failure> {
    keys.iter()
        .map(|given| {
            let path = device.holder_key_file(given)?;
            let passphrase = unlock::key_passphrase(&path.display().to_string(), false)?;
            Ok(read_holder_key(&path, &passphrase)?)
        })
        .collect()
}

async fn restore(home: &Path, args: RestoreArgs) -> CliResult {
    let device = unlock::device(home);
    let bytes = std::fs::read(&args.file)
        .map_err(|e| Failure::Usage(format!("cannot read {}: {e}", args.file.display())))?;
    let backup = Backup::from_bytes(&bytes).map_err(|e| {
        Failure::Failed(format!("{}: not a valid backup: {e}", args.file.display()))
    })?;
    let party = backup.context().party;
    if party == 1 && args.server_data_dir.is_none() {
        return Err(DeviceError::ServerShareOnDevice.into());
    }
    let keys = read_keys(&device, &args.keys)?;
    let bar = spinner("verifying and decrypting");
    let share = restore_share(&backup, &keys);
    drop(bar);
    let share = share?;
    if let Some(data_dir) = &args.server_data_dir {
        let mut config = tessera_server::Config::new(data_dir);
        config.database_url = args.database_url.clone();
        config.kek = Some(crate::cmd::server::kek_source(&args.kek, data_dir)?);
        let state = tessera_server::AppState::open(config)
            .await
            .map_err(Failure::failed)?;
        tessera_server::backups::restore_server_share(&state, &share)
            .await
            .map_err(Failure::failed)?;
        println!(
            "restored       the server's share of wallet {} (epoch {}) into {}",
            share.wallet_id(),
            share.epoch(),
            data_dir.display()
        );
        return Ok(());
    }
    let name = args
        .name
        .clone()
        .unwrap_or_else(|| backup.context().wallet_name.clone());
    if device.has_wallet(&name)? {
        return Err(DeviceError::RestoreExists { name }.into());
    }
    let passphrase = unlock::passphrase()?;
    let record = device.save_restored_wallet(&passphrase, &name, share)?;
    let share = &record.current;
    println!("restored       wallet {name} ({})", share.wallet_id());
    println!("public key     {}", share.public_key());
    println!("eth address    {}", share.public_key().eth_address());
    println!("epoch          {}", share.epoch());
    if device.is_set_up()? && party == 0 {
        recover_registration(&device, &passphrase, share).await?;
        println!(
            "next           revoke the lost device (tessera device list / revoke), then `tessera refresh --wallet {name}`: the lost device's share and this backup stop working; then make a new backup"
        );
    }
    Ok(())
}

/// `tessera device recover --wallet NAME`: a pending device sends its proof of the restored
/// device share again, once the time lock of its held recovery has ended.
pub(crate) async fn recover(home: &Path, wallet: &str) -> CliResult {
    let device = unlock::device(home);
    device.keystore()?;
    let passphrase = unlock::passphrase()?;
    let record = device.load_wallet(wallet, &passphrase)?;
    recover_registration(&device, &passphrase, &record.current).await
}

/// Proves the restored device share to the server, and says what came of it.
async fn recover_registration(
    device: &Device,
    passphrase: &Passphrase,
    share: &KeyShare,
) -> CliResult {
    match device.recover_registration(passphrase, share).await? {
        RecoveryOutcome::ActiveAlready => println!("device         active already"),
        RecoveryOutcome::Approved(d) => println!(
            "device         approved by proof of the restored share ({:?})",
            d.status
        ),
        RecoveryOutcome::Held(action) => {
            print_held(&action);
            println!(
                "next           your user still has an active device: this recovery waits for its time lock (or an approval on an active device: tessera approvals approve {}); then run `tessera device recover --wallet NAME` here",
                action.id
            );
        }
    }
    Ok(())
}
