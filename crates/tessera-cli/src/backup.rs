//! `tessera backup-key …` and `tessera backup …`: backup holders' keys, verifiable backups of a
//! wallet's shares, restoring them.
//!
//! A holder's private key lives in a file of its own (a USB drive, a folder a cloud drive
//! syncs, or this keystore's `backup-keys/`), encrypted under its own passphrase
//! (`TESSERA_BACKUP_KEY_PASSPHRASE`, or a prompt). The public keys this device knows are kept in
//! `holders.json` in the keystore directory (public data).

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand, ValueEnum};
use serde::{Deserialize, Serialize};
use tessera_api as api;
use tessera_backup::backup::Backup;
use tessera_backup::holder::{HolderPublicKey, HolderSecretKey};
use tessera_backup::structure::AccessStructure;
use tessera_client::WalletRecord;
use tessera_store::{Keystore, KeystoreOptions, Passphrase};

use crate::Failure;
use crate::device::{self, client_error, store_error};

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
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
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

#[derive(Default, Serialize, Deserialize)]
struct KnownHolders {
    holders: BTreeMap<String, KnownHolder>,
}

#[derive(Serialize, Deserialize)]
struct KnownHolder {
    public_key: String,
    kind: HolderKind,
}

fn holders_path(home: &Path) -> PathBuf {
    home.join("holders.json")
}

fn load_holders(home: &Path) -> Result<KnownHolders, Failure> {
    let path = holders_path(home);
    match std::fs::read_to_string(&path) {
        Ok(text) => serde_json::from_str(&text)
            .map_err(|e| Failure::Failed(format!("{} is damaged: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(KnownHolders::default()),
        Err(e) => Err(Failure::Failed(format!(
            "cannot read {}: {e}",
            path.display()
        ))),
    }
}

fn save_holders(home: &Path, holders: &KnownHolders) -> Result<(), Failure> {
    // Opening the keystore creates the home (0700) if this is the first file in it.
    tessera_store::Keystore::open(home).map_err(store_error)?;
    let path = holders_path(home);
    let text = serde_json::to_string_pretty(holders).map_err(|e| Failure::Failed(e.to_string()))?;
    tessera_store::write_private_file(&path, text.as_bytes()).map_err(store_error)
}

fn remember(home: &Path, key: &HolderPublicKey, kind: HolderKind) -> Result<(), Failure> {
    let mut known = load_holders(home)?;
    if let Some(old) = known.holders.get(key.label())
        && old.public_key != key.to_text()
    {
        return Err(Failure::Usage(format!(
            "this device already knows another key for holder {:?}; pick another label",
            key.label()
        )));
    }
    known.holders.insert(
        key.label().to_owned(),
        KnownHolder {
            public_key: key.to_text(),
            kind,
        },
    );
    save_holders(home, &known)
}

fn key_passphrase(what: &str, confirm: bool) -> Result<Passphrase, Failure> {
    let text = match std::env::var("TESSERA_BACKUP_KEY_PASSPHRASE") {
        Ok(p) => p,
        Err(_) if std::io::stdin().is_terminal() => {
            let mut prompt =
                dialoguer::Password::new().with_prompt(format!("Passphrase for {what}"));
            if confirm {
                prompt = prompt.with_confirmation("Repeat it", "the passphrases differ");
            }
            prompt
                .interact()
                .map_err(|e| Failure::Usage(format!("cannot read the passphrase: {e}")))?
        }
        Err(_) => {
            return Err(Failure::Usage(
                "no backup key passphrase: set TESSERA_BACKUP_KEY_PASSPHRASE or run in a terminal"
                    .into(),
            ));
        }
    };
    Passphrase::new(text).map_err(|e| Failure::Usage(e.to_string()))
}

fn key_file_options() -> KeystoreOptions {
    KeystoreOptions::default()
}

fn usage(e: impl std::fmt::Display) -> Failure {
    Failure::Usage(e.to_string())
}

fn failed(e: impl std::fmt::Display) -> Failure {
    Failure::Failed(e.to_string())
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

pub(crate) fn backup_key(home: &Path, command: BackupKeyCommand) -> Result<(), Failure> {
    match command {
        BackupKeyCommand::New(args) => {
            tessera_backup::holder::validate_label(&args.label).map_err(usage)?;
            let out = match args.out {
                Some(out) => out,
                None => {
                    // Private to this user, like the keystore itself.
                    let dir = home.join("backup-keys");
                    let mut builder = std::fs::DirBuilder::new();
                    builder.recursive(true);
                    #[cfg(unix)]
                    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
                    builder.create(&dir).map_err(|e| {
                        Failure::Failed(format!("cannot create {}: {e}", dir.display()))
                    })?;
                    dir.join(format!("{}.key", args.label))
                }
            };
            if out.exists() {
                return Err(Failure::Usage(format!(
                    "{} exists already; a backup key file is never overwritten",
                    out.display()
                )));
            }
            let secret = HolderSecretKey::generate(&args.label).map_err(failed)?;
            let public = secret.public();
            // Known before the file is written, so a label clash changes nothing.
            let known = load_holders(home)?;
            if known.holders.contains_key(public.label()) {
                return Err(Failure::Usage(format!(
                    "this device already knows a holder {:?}; pick another label",
                    public.label()
                )));
            }
            let passphrase = key_passphrase(&out.display().to_string(), true)?;
            tessera_store::keystore::write_backup_key_file(
                &out,
                public.label(),
                &secret.to_bytes(),
                &passphrase,
                &key_file_options(),
            )
            .map_err(store_error)?;
            remember(home, &public, args.kind)?;
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
            let key = HolderPublicKey::from_text(public_key.trim()).map_err(usage)?;
            remember(home, &key, kind)?;
            print_public_key(&key);
            Ok(())
        }
        BackupKeyCommand::List => {
            let known = load_holders(home)?;
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

/// The public keys of `structure`'s holders: from `--holder` arguments, else holders.json.
fn resolve_holders(
    home: &Path,
    structure: &AccessStructure,
    given: &[String],
) -> Result<Vec<HolderPublicKey>, Failure> {
    let mut by_label = BTreeMap::new();
    for (label, holder) in load_holders(home)?.holders {
        by_label.insert(label, holder.public_key);
    }
    for text in given {
        let key = HolderPublicKey::from_text(text.trim()).map_err(usage)?;
        by_label.insert(key.label().to_owned(), key.to_text());
    }
    structure
        .holders()
        .into_iter()
        .map(|label| {
            let text = by_label.get(label).ok_or_else(|| {
                Failure::Usage(format!(
                    "no public key for holder {label:?}: create it with `tessera backup-key new --label {label} --out …`, add it with `tessera backup-key add`, or pass --holder"
                ))
            })?;
            HolderPublicKey::from_text(text).map_err(usage)
        })
        .collect()
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

fn write_new_file(path: &Path, bytes: &[u8]) -> Result<(), Failure> {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                Failure::Usage(format!(
                    "{} exists already; it is never overwritten",
                    path.display()
                ))
            } else {
                Failure::Failed(format!("cannot create {}: {e}", path.display()))
            }
        })?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|e| Failure::Failed(format!("cannot write {}: {e}", path.display())))
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

pub(crate) async fn backup(home: &Path, command: BackupCommand) -> Result<(), Failure> {
    match command {
        BackupCommand::Create(args) => create(home, args).await,
        BackupCommand::Verify(args) => verify(home, args).await,
        BackupCommand::Restore(args) => restore(home, args).await,
    }
}

async fn create(home: &Path, args: CreateArgs) -> Result<(), Failure> {
    let structure = AccessStructure::parse(&args.policy).map_err(usage)?;
    let holders = resolve_holders(home, &structure, &args.holders)?;
    if args.out.exists() {
        return Err(Failure::Usage(format!(
            "{} exists already; it is never overwritten",
            args.out.display()
        )));
    }
    // `asked`: the keystore passphrase, when this command already read it.
    let (backup, bytes, asked) = if args.server_share {
        let s = device::connect(home).await?;
        let record = device::load_record(&s, &args.wallet)?;
        let texts: Vec<String> = holders.iter().map(HolderPublicKey::to_text).collect();
        let bar = spinner("the server backs up its share");
        let answer = s
            .client
            .backup_server_share(
                &s.identity,
                &record.current.wallet_id().to_string(),
                &structure.to_string(),
                texts,
            )
            .await
            .map_err(client_error)?;
        drop(bar);
        let answer = match answer {
            api::ServerBackupOutcome::Ready(answer) => answer,
            api::ServerBackupOutcome::Held(action) => {
                device::print_held(&action);
                println!(
                    "next           run this same command again once it is approved or its time lock has ended: the server then writes the backup ({} is not written yet)",
                    args.out.display()
                );
                return Ok(());
            }
        };
        let bytes = hex::decode(&answer.backup).map_err(failed)?;
        let backup = Backup::from_bytes(&bytes).map_err(failed)?;
        // Checked here too: the server's public share follows from this device's share.
        let expected =
            tessera_backup::wallet::expected_share(&record.current, 1).map_err(failed)?;
        backup
            .verify_for_share(&expected)
            .map_err(|e| Failure::Failed(format!("the server's backup does not verify: {e}")))?;
        let mut asked: Vec<String> = holders.iter().map(HolderPublicKey::to_text).collect();
        let mut got: Vec<String> = backup
            .holders()
            .iter()
            .map(HolderPublicKey::to_text)
            .collect();
        asked.sort();
        got.sort();
        if backup.structure() != &structure || asked != got {
            return Err(Failure::Failed(
                "the server's backup is not under the structure and holders asked for".into(),
            ));
        }
        (backup, bytes, None)
    } else {
        let keystore = Keystore::open(home).map_err(store_error)?;
        let passphrase = device::passphrase()?;
        let record = WalletRecord::from_bytes(
            &keystore
                .load_wallet(&args.wallet, &passphrase)
                .map_err(store_error)?,
        )
        .map_err(client_error)?;
        let bar = spinner("encrypting and proving (128 repetitions per holder)");
        let backup = tessera_backup::wallet::backup_share(
            &record.current,
            &args.wallet,
            &structure,
            &holders,
        )
        .map_err(usage)?;
        let party = u16::from(record.current.party().get());
        let expected =
            tessera_backup::wallet::expected_share(&record.current, party).map_err(failed)?;
        backup.verify_for_share(&expected).map_err(failed)?;
        drop(bar);
        let bytes = backup.to_bytes();
        (backup, bytes, Some(passphrase))
    };
    write_new_file(&args.out, &bytes)?;
    print_report(&backup, &args.out, bytes.len());
    println!("verified       yes (locally)");
    if !args.no_server && !args.server_share && home.join("device.json").exists() {
        let s = device::connect_with(home, asked).await?;
        match s.client.verify_backup(&bytes).await {
            Ok(report) => println!("server         verified and recorded ({})", report.digest),
            Err(tessera_client::ClientError::Server { status: 404, .. }) => {
                println!("server         not a wallet of the server: verified locally only");
            }
            Err(e) => return Err(client_error(e)),
        }
    }
    Ok(())
}

async fn verify(home: &Path, args: VerifyArgs) -> Result<(), Failure> {
    let bytes = std::fs::read(&args.file)
        .map_err(|e| Failure::Usage(format!("cannot read {}: {e}", args.file.display())))?;
    let backup = Backup::from_bytes(&bytes).map_err(|e| {
        Failure::Failed(format!("{}: not a valid backup: {e}", args.file.display()))
    })?;
    if !args.format.json {
        print_report(&backup, &args.file, bytes.len());
    }
    let checked = match &args.public_share {
        Some(text) => {
            let expected: [u8; 33] = hex::decode(text.trim())
                .ok()
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| Failure::Usage("--public-share must be 66 hex digits".into()))?;
            backup.verify_for(&expected)
        }
        None => backup.verify(),
    };
    checked.map_err(|e| Failure::Failed(format!("verification FAILED: {e}")))?;
    if !args.format.json {
        println!(
            "verified       yes: every authorised set of holders restores the share with public share {}",
            hex::encode(backup.context().public_share)
        );
    }
    let server = if args.server {
        let s = device::connect(home).await?;
        let report = s.client.verify_backup(&bytes).await.map_err(client_error)?;
        if !args.format.json {
            println!("server         verified and recorded ({})", report.digest);
        }
        Some(report.digest)
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

fn read_keys(home: &Path, keys: &[String]) -> Result<Vec<HolderSecretKey>, Failure> {
    let options = key_file_options();
    keys.iter()
        .map(|given| {
            let path = {
                let p = PathBuf::from(given);
                if p.exists() {
                    p
                } else {
                    home.join("backup-keys").join(format!("{given}.key"))
                }
            };
            if !path.exists() {
                return Err(Failure::Usage(format!(
                    "no key file {given} (nor a key labelled {given:?} in this keystore)"
                )));
            }
            let passphrase = key_passphrase(&path.display().to_string(), false)?;
            let (label, secret) =
                tessera_store::keystore::read_backup_key_file(&path, &passphrase, &options)
                    .map_err(store_error)?;
            HolderSecretKey::from_bytes(label, *secret).map_err(failed)
        })
        .collect()
}

async fn restore(home: &Path, args: RestoreArgs) -> Result<(), Failure> {
    let bytes = std::fs::read(&args.file)
        .map_err(|e| Failure::Usage(format!("cannot read {}: {e}", args.file.display())))?;
    let backup = Backup::from_bytes(&bytes).map_err(|e| {
        Failure::Failed(format!("{}: not a valid backup: {e}", args.file.display()))
    })?;
    let party = backup.context().party;
    if party == 1 && args.server_data_dir.is_none() {
        return Err(Failure::Usage(
            "this backup holds the server's share: restore it on the server (--server-data-dir, server stopped), never on a device that holds the other share".into(),
        ));
    }
    let keys = read_keys(home, &args.keys)?;
    let bar = spinner("verifying and decrypting");
    let share = tessera_backup::wallet::restore_share(&backup, &keys).map_err(failed)?;
    drop(bar);
    if let Some(data_dir) = &args.server_data_dir {
        let mut config = tessera_server::Config::new(data_dir);
        config.database_url = args.database_url.clone();
        config.kek = Some(crate::kek_source(&args.kek, data_dir)?);
        let state = tessera_server::AppState::open(config)
            .await
            .map_err(|e| Failure::Failed(e.to_string()))?;
        tessera_server::backups::restore_server_share(&state, &share)
            .await
            .map_err(|e| Failure::Failed(e.to_string()))?;
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
    let keystore = Keystore::open(home).map_err(store_error)?;
    if keystore.has_wallet(&name).map_err(store_error)? {
        return Err(Failure::Usage(format!(
            "a wallet named {name:?} exists on this device; restore with --as OTHER_NAME"
        )));
    }
    let passphrase = device::passphrase()?;
    let record = WalletRecord::new(share);
    keystore
        .save_wallet(&name, &record.to_bytes(), &passphrase)
        .map_err(store_error)?;
    let share = &record.current;
    println!("restored       wallet {name} ({})", share.wallet_id());
    println!("public key     {}", share.public_key());
    println!("eth address    {}", share.public_key().eth_address());
    println!("epoch          {}", share.epoch());
    if home.join("device.json").exists() && party == 0 {
        recover_registration(home, &keystore, &passphrase, share).await?;
        println!(
            "next           revoke the lost device (tessera device list / revoke), then `tessera refresh --wallet {name}`: the lost device's share and this backup stop working; then make a new backup"
        );
    }
    Ok(())
}

/// `tessera device recover --wallet NAME`: a pending device sends its proof of the restored
/// device share again, once the time lock of its held recovery has ended.
pub(crate) async fn recover(home: &Path, wallet: &str) -> Result<(), Failure> {
    let keystore = Keystore::open(home).map_err(store_error)?;
    let passphrase = device::passphrase()?;
    let record = WalletRecord::from_bytes(
        &keystore
            .load_wallet(wallet, &passphrase)
            .map_err(store_error)?,
    )
    .map_err(client_error)?;
    recover_registration(home, &keystore, &passphrase, &record.current).await
}

/// A device still pending approval proves it holds the restored device share, which approves
/// it (the path when the user's only device was lost), or, while the user has an active device,
/// holds the recovery under a time lock.
async fn recover_registration(
    home: &Path,
    keystore: &Keystore,
    passphrase: &Passphrase,
    share: &tessera_core::KeyShare,
) -> Result<(), Failure> {
    let config = device::load_config(home)?;
    let identity = keystore.load_identity(passphrase).map_err(store_error)?;
    let mut client = device::server_client(&config.server, config.server_fingerprint.as_deref())?;
    match client.login(&identity, &config.device_id).await {
        Ok(()) => {
            println!("device         active already");
            Ok(())
        }
        Err(tessera_client::ClientError::Server { status: 403, .. }) => {
            match client
                .recover_device(&identity, &config.device_id, share)
                .await
                .map_err(client_error)?
            {
                api::Recovery::Approved(device) => println!(
                    "device         approved by proof of the restored share ({:?})",
                    device.status
                ),
                api::Recovery::Held(action) => {
                    device::print_held(&action);
                    println!(
                        "next           your user still has an active device: this recovery waits for its time lock (or an approval on an active device: tessera approvals approve {}); then run `tessera device recover --wallet NAME` here",
                        action.id
                    );
                }
            }
            Ok(())
        }
        Err(e) => Err(client_error(e)),
    }
}
