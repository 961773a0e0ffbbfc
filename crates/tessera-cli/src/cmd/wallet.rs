//! `tessera keygen | sign | refresh | wallets`: the wallets this device shares with its
//! server.

use std::path::{Path, PathBuf};

use clap::Args;
use tessera_api::intent::SignKind;
use tessera_client::RefreshStep;
use tessera_client::device::reshare::ReshareOutcome;
use tessera_client::reshare::{ReshareChange, ReshareStep};
use tessera_core::DerivationPath;

use crate::failure::{CliResult, Failure};
use crate::output::{self, Format, WalletOut, print_json};
use crate::unlock;

#[derive(Args)]
pub(crate) struct KeygenArgs {
    /// The new wallet's name (letters, digits, '.', '_', '-').
    #[arg(long)]
    name: String,
    /// The wallet's structure over `server` and your devices' party labels, e.g.
    /// 'and(server, or(phone, laptop))' (another user's device as user:device, invited); each
    /// other device joins with `tessera listen`. Without it, the default: the server and every
    /// active device of yours, each holding its own share (those whose `tessera listen` runs
    /// join now, the others by resharing when they are online); with no other active device, a
    /// 2-of-2 wallet of this device and the server.
    #[arg(long)]
    structure: Option<String>,
    /// A 2-of-2 wallet of this device and the server only, even when you have other devices
    /// (they can approve its requests but hold no share of it).
    #[arg(long, conflicts_with = "structure")]
    two_of_two: bool,
    #[command(flatten)]
    format: output::Format,
}

#[derive(Args)]
#[command(group(clap::ArgGroup::new("what").required(true).multiple(false)))]
pub(crate) struct SignArgs {
    /// The wallet.
    #[arg(long)]
    pub(crate) wallet: String,
    #[command(flatten)]
    pub(crate) format: output::Format,
    /// The message (signed as an Ethereum personal_sign / EIP-191 message).
    #[arg(long, group = "what")]
    message: Option<String>,
    /// A 32-byte digest, hex (only if the wallet's policy allows raw digests).
    #[arg(long, group = "what")]
    digest: Option<String>,
    /// EIP-712 typed data as JSON (what `eth_signTypedData_v4` takes: types, primaryType,
    /// domain, message); the server hashes it and shows the primary type and fields.
    #[arg(long, group = "what")]
    typed_data: Option<PathBuf>,
    /// An EIP-7702 authorisation as JSON ({chain_id, address, nonce}): this wallet's account
    /// delegates to `address`'s code (the policy's allowed_delegates must name it); prints the
    /// signed authorisation for a type-4 transaction's authorization_list.
    #[arg(long, group = "what")]
    eth_authorization: Option<PathBuf>,
    /// An ERC-20 transfer TOKEN,TO,AMOUNT (AMOUNT in the token's smallest unit), sent as the
    /// transaction of --eth-tx, whose to and data must be absent and value 0 (its chain_id,
    /// nonce, gas and fees are used).
    #[arg(long, requires = "eth_tx")]
    erc20_transfer: Option<String>,
    /// A Bitcoin PSBT (BIP-174) file, base64 or binary: signs every input that is this wallet's
    /// (P2WPKH or P2PKH, at the path of its bip32_derivation entry with this wallet's
    /// fingerprint, or at --path), each with the server under the wallet's policy; prints the
    /// PSBT with those inputs finalised (base64) and, once every input is, the raw transaction
    /// (hex).
    #[arg(long, group = "what")]
    pub(crate) psbt: Option<PathBuf>,
    /// The network of --psbt's addresses: mainnet (the default), testnet, signet or regtest.
    #[arg(long, requires = "psbt")]
    pub(crate) network: Option<String>,
    /// An Ethereum transaction as JSON; prints the raw signed transaction. Every type takes
    /// chain_id, nonce, gas_limit, to (absent: contract creation), value (decimal wei) and data;
    /// "type" is "eip1559" (the default: max_fee_per_gas, max_priority_fee_per_gas,
    /// access_list), "eip2930" (gas_price, access_list), "legacy" (gas_price; EIP-155, chain_id
    /// not 0) or "eip7702" (as eip1559, plus authorization_list: signed authorisations
    /// {chain_id, address, nonce, y_parity, r, s}; a policy must allow each delegate).
    #[arg(long, group = "what")]
    eth_tx: Option<PathBuf>,
    /// Non-hardened BIP-32 path.
    #[arg(long, default_value = "m")]
    pub(crate) path: String,
    /// A structure wallet's other devices to sign with (party labels, comma-separated), when
    /// this device and the server are not a quorum alone; each joins with `tessera listen`.
    #[arg(long, value_delimiter = ',')]
    pub(crate) with: Vec<String>,
}

#[derive(Args)]
pub(crate) struct RefreshArgs {
    /// The wallet.
    #[arg(long)]
    wallet: String,
}

/// `tessera keygen`.
pub(crate) async fn keygen(home: &Path, args: KeygenArgs) -> CliResult {
    // Checks the name (it becomes a file name) before asking for the passphrase.
    unlock::device(home).has_wallet(&args.name)?;
    let online = unlock::connect(home).await?;
    let progress = |r, t| eprintln!("  keygen round {r}/{t} done");
    let default = args.structure.is_none() && !args.two_of_two;
    let share = match &args.structure {
        Some(structure) => {
            eprintln!(
                "waiting for the other devices of {structure} to join (`tessera listen` on each)"
            );
            online
                .keygen_structure(&args.name, structure, progress)
                .await?
        }
        None if default => online.keygen_default(&args.name, progress).await?,
        None => online.keygen(&args.name, progress).await?,
    };
    // The default: say which structure it made, and which devices join later (the wallet is
    // made and stored already: a failure to read this is only said).
    if default {
        let detail = match online.wallet_detail(&args.name).await {
            Ok(detail) => detail,
            Err(e) => {
                eprintln!("(the wallet is made; its parties could not be read: {e})");
                return WalletOut::of(&args.name, &share).print(args.format);
            }
        };
        match &detail.structure {
            Some(structure) => {
                eprintln!("structure {structure} (each device holds its own share)");
            }
            None => eprintln!("2-of-2: this device and the server (your only active device)"),
        }
        for pending in detail.pending.iter().filter(|p| p.change == "add") {
            eprintln!(
                "device {:?} was not online: it joins at the next resharing, once it is \
                 (`tessera listen` on it, then `tessera wallet reshare --wallet {} --pending` \
                 here, or `tessera listen --reshare-pending` left running)",
                pending.device_name, args.name
            );
        }
    }
    WalletOut::of(&args.name, &share).print(args.format)
}

/// What `sign`'s flags ask to sign.
/// Reads a JSON file given to `flag`.
fn json_file<T: serde::de::DeserializeOwned>(
    flag: &str,
    file: &Path,
    what: &str,
) -> Result<T, Failure> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| Failure::Usage(format!("{flag}: cannot read {}: {e}", file.display())))?;
    serde_json::from_str(&text)
        .map_err(|e| Failure::Usage(format!("{flag}: {} is not {what}: {e}", file.display())))
}

pub(crate) fn sign_kind(args: &SignArgs) -> Result<SignKind, Failure> {
    if let Some(d) = &args.digest {
        let bytes = crate::cmd::verify::parse_hex("--digest", d)?;
        if bytes.len() != 32 {
            return Err(Failure::Usage(format!(
                "--digest must be 32 bytes, got {}",
                bytes.len()
            )));
        }
        return Ok(SignKind::Digest {
            digest: hex::encode(bytes),
        });
    }
    if let Some(m) = &args.message {
        return Ok(SignKind::EthMessage { message: m.clone() });
    }
    if let Some(file) = &args.typed_data {
        let typed_data = json_file("--typed-data", file, "JSON")?;
        return Ok(SignKind::EthTypedData { typed_data });
    }
    if let Some(file) = &args.eth_authorization {
        let authorization = json_file("--eth-authorization", file, "an authorisation")?;
        return Ok(SignKind::EthAuthorization { authorization });
    }
    let Some(file) = &args.eth_tx else {
        return Err(Failure::Usage(
            "give --message, --digest, --eth-tx, --typed-data, --eth-authorization or --psbt"
                .into(),
        ));
    };
    let mut tx: tessera_api::intent::EthTransaction = json_file("--eth-tx", file, "a transaction")?;
    if let Some(transfer) = &args.erc20_transfer {
        if tx.to.is_some() || !matches!(tx.data.as_str(), "" | "0x") || tx.value != "0" {
            return Err(Failure::Usage(format!(
                "--erc20-transfer: the transaction of {} must have no `to`, no `data` and value \"0\" (they are the transfer's)",
                file.display()
            )));
        }
        let (token, data) = erc20_transfer(transfer)?;
        tx.to = Some(token);
        tx.data = data;
    }
    Ok(SignKind::EthTx { tx })
}

/// `TOKEN,TO,AMOUNT` as the token contract and the call data of its `transfer(TO, AMOUNT)`,
/// encoded by alloy's ABI encoder.
fn erc20_transfer(text: &str) -> Result<(String, String), Failure> {
    use tessera_api::calls::{Erc20, SolCall};
    let usage = |why: &str| {
        Failure::Usage(format!(
            "--erc20-transfer {text:?}: {why} (TOKEN,TO,AMOUNT: two 0x addresses and a decimal amount in the token's smallest unit)"
        ))
    };
    let parts: Vec<&str> = text.split(',').map(str::trim).collect();
    let [token, to, amount] = parts[..] else {
        return Err(usage("three comma-separated values"));
    };
    let token =
        tessera_api::intent::parse_address(token).map_err(|_| usage("TOKEN is not an address"))?;
    let to: tessera_api::calls::Address = to.parse().map_err(|_| usage("TO is not an address"))?;
    if amount.is_empty() || !amount.bytes().all(|b| b.is_ascii_digit()) {
        return Err(usage("AMOUNT is not a whole number"));
    }
    let amount = tessera_api::intent::U256::from_str_radix(amount, 10)
        .map_err(|_| usage("AMOUNT is too large"))?;
    let data = Erc20::transferCall { to, amount }.abi_encode();
    Ok((token, format!("0x{}", hex::encode(data))))
}

/// `tessera sign`.
pub(crate) async fn sign(home: &Path, args: SignArgs) -> CliResult {
    let path: DerivationPath = args.path.parse().map_err(Failure::usage)?;
    if let Some(file) = &args.psbt {
        return sign_psbt(home, &args, file, &path).await;
    }
    let kind = sign_kind(&args)?;
    let decoded = tessera_api::intent::decode(&kind).map_err(Failure::usage)?;
    let online = unlock::connect(home).await?;
    let mut record = online.wallet(&args.wallet)?;
    if !args.format.json {
        println!("signing        {}", decoded.summary);
    }
    if !args.with.is_empty() {
        eprintln!(
            "waiting for {} to join (`tessera listen` on each)",
            args.with.join(", ")
        );
    }
    let signed = online
        .sign_with(
            &args.wallet,
            &mut record,
            &kind,
            &path,
            &args.with,
            |r, t| eprintln!("  sign round {r}/{t} done"),
            |session| {
                eprintln!(
                    "  waiting for another device of this user to approve (tessera approvals approve {session})"
                )
            },
        )
        .await?;
    // An EIP-7702 authorisation is used signed, inside a type-4 transaction.
    let authorization = match &kind {
        SignKind::EthAuthorization { authorization } => Some(
            authorization
                .signed(&signed.signature)
                .map_err(|e| Failure::Failed(e.to_string()))?,
        ),
        _ => None,
    };
    let authorization = authorization
        .map(|a| serde_json::to_value(&a))
        .transpose()
        .map_err(|e| Failure::Failed(format!("cannot encode the authorisation: {e}")))?;
    print_signed(&args.wallet, &decoded, &signed, authorization, args.format)
}

/// `tessera sign --psbt`: the plan shown, every input of the wallet signed, the PSBT finalised.
async fn sign_psbt(home: &Path, args: &SignArgs, file: &Path, path: &DerivationPath) -> CliResult {
    let network: tessera_api::btc::BtcNetwork = args
        .network
        .as_deref()
        .unwrap_or("mainnet")
        .parse()
        .map_err(|e| Failure::Usage(format!("--network: {e}")))?;
    let bytes = std::fs::read(file)
        .map_err(|e| Failure::Usage(format!("--psbt: cannot read {}: {e}", file.display())))?;
    let online = unlock::connect(home).await?;
    let plan = online.plan_psbt(&args.wallet, &bytes, path, network)?;
    if !args.format.json {
        println!(
            "signing        Bitcoin ({network}) transaction {}",
            plan.txid
        );
        println!("               {}", plan.summary);
    }
    let signed = online
        .sign_psbt(
            &args.wallet,
            &bytes,
            path,
            network,
            &args.with,
            |index, position, count| eprintln!("  input {index} ({position}/{count})"),
            |r, t| eprintln!("    sign round {r}/{t} done"),
            |session| {
                eprintln!(
                    "  waiting for another device of this user to approve (tessera approvals approve {session})"
                )
            },
        )
        .await?;
    for ban in &signed.banned {
        eprintln!(
            "party {} (device {}) was banned from wallet {} for misbehaving ({}); signed without it",
            ban.party,
            ban.device_id.as_ref().map_or("?", |d| d.as_str()),
            args.wallet,
            ban.reason
        );
    }
    let psbt = tessera_api::btc::psbt_to_base64(&signed.finalized.psbt);
    let raw_tx = signed
        .finalized
        .tx
        .as_ref()
        .map(tessera_api::btc::tx_to_hex);
    let inputs: Vec<usize> = signed.plan.to_sign.iter().map(|i| i.index).collect();
    if args.format.json {
        return print_json(&serde_json::json!({
            "wallet": args.wallet,
            "network": network.to_string(),
            "txid": signed.plan.txid.to_string(),
            "summary": signed.plan.summary,
            "signed_inputs": inputs,
            "unfinalised_inputs": signed.finalized.unfinalised_inputs,
            "fee_sat": signed.plan.fee_sat,
            "psbt": psbt,
            "raw_tx": raw_tx,
        }));
    }
    println!("signed inputs  {inputs:?}");
    println!("psbt           {psbt}");
    match raw_tx {
        Some(raw) => println!("raw tx         {raw}"),
        None => println!(
            "raw tx         (inputs {:?} are others' to sign)",
            signed.finalized.unfinalised_inputs
        ),
    }
    Ok(())
}

/// Prints a signature `sign` (or `listen`) made and verified.
pub(crate) fn print_signed(
    wallet: &str,
    decoded: &tessera_api::intent::Decoded,
    signed: &tessera_client::device::online::Signed,
    signed_authorization: Option<serde_json::Value>,
    format: Format,
) -> CliResult {
    let raw_tx = signed
        .raw_tx
        .as_ref()
        .map(|raw| format!("0x{}", hex::encode(raw)));
    let signature = signed.signature;
    // Robust signing: the parties banned on the way, each run without them asked again.
    for ban in &signed.banned {
        eprintln!(
            "party {} (device {}) was banned from wallet {wallet} for misbehaving ({}); signed without it",
            ban.party,
            ban.device_id.as_ref().map_or("?", |d| d.as_str()),
            ban.reason
        );
    }
    if format.json {
        // `sign` returns only a signature it verified under the wallet's key.
        let mut out = serde_json::json!({
            "wallet": wallet,
            "summary": decoded.summary,
            "public_key": signed.public_key.to_string(),
            "digest": hex::encode(decoded.digest),
            "signature_der": hex::encode(signature.to_der()),
            "signature_rsv": hex::encode(signature.to_rsv()),
            "raw_tx": raw_tx,
            "verified": true,
        });
        if let Some(authorization) = &signed_authorization {
            out["signed_authorization"] = authorization.clone();
        }
        if !signed.banned.is_empty() {
            out["banned"] = serde_json::to_value(&signed.banned)
                .map_err(|e| Failure::Failed(format!("cannot encode the output as JSON: {e}")))?;
        }
        return print_json(&out);
    }
    println!("public key     {}", signed.public_key);
    println!("digest         {}", hex::encode(decoded.digest));
    println!("signature DER  {}", hex::encode(signature.to_der()));
    println!("r||s||v        {}", hex::encode(signature.to_rsv()));
    if let Some(raw) = raw_tx {
        println!("raw tx         {raw}");
    }
    if let Some(authorization) = signed_authorization {
        println!("authorization  {authorization}");
    }
    println!("verified       yes");
    Ok(())
}

/// Crash-test hook: `TESSERA_TEST_PAUSE_AT=<step>` makes `tessera refresh` (and `tessera wallet
/// reshare`) announce the step on
/// stderr and stop there (after doing what the step does), so a test can SIGKILL the process at
/// an exact point. Steps: `round-2`, `pending-stored`, `commit-sent`.
fn pause_for_crash_test(step: RefreshStep) {
    pause_at(match step {
        RefreshStep::Round { round: 2, .. } => "round-2",
        RefreshStep::PendingStored => "pending-stored",
        RefreshStep::CommitSent => "commit-sent",
        _ => return,
    });
}

/// The crash-test pause at step `name` (see [`pause_for_crash_test`]). With
/// `TESSERA_TEST_RESUME_FILE` set, the process goes on once that file exists (a test that kills
/// the server meanwhile); otherwise it sleeps for two minutes.
fn pause_at(name: &str) {
    if std::env::var("TESSERA_TEST_PAUSE_AT").is_ok_and(|v| v == name) {
        eprintln!("paused at {name}");
        let resume = std::env::var_os("TESSERA_TEST_RESUME_FILE").map(PathBuf::from);
        let until = std::time::Instant::now() + std::time::Duration::from_secs(120);
        while std::time::Instant::now() < until && !resume.as_ref().is_some_and(|f| f.exists()) {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
}

/// `tessera refresh`.
pub(crate) async fn refresh(home: &Path, args: RefreshArgs) -> CliResult {
    let wallet = &args.wallet;
    let online = unlock::connect(home).await?;
    let epoch = online
        .refresh(wallet, |step| {
            if let RefreshStep::Round { round, total } = step {
                eprintln!("  refresh round {round}/{total} done");
            }
            pause_for_crash_test(step);
        })
        .await?;
    println!("refreshed      {wallet}: now epoch {epoch}; the previous shares no longer sign");
    println!(
        "backups        backups made before this refresh restore shares that no longer sign: make new ones (tessera backup create --wallet {wallet} …, and --server-share)"
    );
    Ok(())
}

/// `tessera wallets`.
pub(crate) async fn wallets(home: &Path, format: Format) -> CliResult {
    let online = unlock::connect(home).await?;
    let listed = online.wallets().await?;
    if format.json {
        let listed = listed
            .iter()
            .map(|w| {
                let mut v = serde_json::to_value(&w.info)?;
                v["share_on_this_device"] = w.share_on_this_device.into();
                Ok(v)
            })
            .collect::<serde_json::Result<Vec<_>>>()
            .map_err(|e| Failure::Failed(format!("cannot encode the output as JSON: {e}")))?;
        return print_json(&listed);
    }
    for w in listed {
        let here = if w.share_on_this_device {
            ""
        } else {
            "  (no share on this device)"
        };
        let w = w.info;
        println!(
            "{:<20} {} {} epoch {}{here}",
            w.name, w.eth_address, w.public_key, w.epoch
        );
    }
    Ok(())
}

#[derive(clap::Subcommand)]
pub(crate) enum WalletCommand {
    /// A wallet's structure and parties (which device each is), epoch and key.
    Show(ShowArgs),
    /// Moves a structure wallet's key to other parties (same key, next epoch): a device added
    /// or removed, or a new structure. Every device of the new structure takes part (each other
    /// one with `tessera listen`).
    Reshare(ReshareArgs),
}

#[derive(Args)]
pub(crate) struct ReshareArgs {
    /// The wallet.
    #[arg(long)]
    wallet: String,
    /// Devices to add beside the wallet's devices (party labels, comma-separated).
    #[arg(long, value_delimiter = ',', conflicts_with_all = ["structure", "refresh"])]
    add: Vec<String>,
    /// Devices to remove (party labels, comma-separated): their shares no longer sign.
    #[arg(long, value_delimiter = ',', conflicts_with_all = ["structure", "refresh"])]
    remove: Vec<String>,
    /// The whole new structure, as for `keygen --structure`.
    #[arg(long, conflicts_with = "refresh")]
    structure: Option<String>,
    /// New shares for the same structure (a refresh of a structure wallet).
    #[arg(long)]
    refresh: bool,
    /// Carry out the wallet's pending changes: devices approved since join, devices revoked
    /// since leave (`tessera wallet show` lists them).
    #[arg(long, conflicts_with_all = ["add", "remove", "structure", "refresh"])]
    pending: bool,
    /// Other devices that deal with this one and the server, when these two are not a quorum
    /// alone (party labels, comma-separated); without it, the server completes the quorum with
    /// devices whose `tessera listen` is running.
    #[arg(long, value_delimiter = ',')]
    with: Vec<String>,
    #[command(flatten)]
    format: output::Format,
}

/// How a resharing ended on this device (`wallet reshare`, `listen`).
#[derive(serde::Serialize)]
struct ReshareOut<'a> {
    wallet: &'a str,
    /// `switched` (this device holds its new share) or `left`.
    outcome: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    epoch: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    public_key: Option<&'a str>,
}

/// Prints how a resharing of `wallet` ended on this device.
pub(crate) fn print_reshared(wallet: &str, outcome: &ReshareOutcome, format: Format) -> CliResult {
    let out = match outcome {
        ReshareOutcome::Switched { epoch, public_key } => ReshareOut {
            wallet,
            outcome: "switched",
            epoch: Some(*epoch),
            public_key: Some(public_key),
        },
        ReshareOutcome::Left => ReshareOut {
            wallet,
            outcome: "left",
            epoch: None,
            public_key: None,
        },
    };
    if format.json {
        return print_json(&out);
    }
    match outcome {
        ReshareOutcome::Switched { epoch, public_key } => println!(
            "wallet {wallet} reshared: this device holds its share of epoch {epoch}; public key {public_key} (unchanged)"
        ),
        ReshareOutcome::Left => println!(
            "wallet {wallet} reshared without this device: its share was removed from this device"
        ),
    }
    Ok(())
}

async fn reshare(home: &Path, args: ReshareArgs) -> CliResult {
    let online = unlock::connect(home).await?;
    let progress = |step| match step {
        ReshareStep::Round(r, t) => {
            eprintln!("  reshare round {r}/{t} done");
            if r == 2 {
                pause_at("round-2");
            }
        }
        ReshareStep::PendingStored => pause_at("pending-stored"),
        ReshareStep::CommitSent => pause_at("commit-sent"),
    };
    if args.pending {
        eprintln!("waiting for the other parties to join (`tessera listen` on each)");
        let outcome = online
            .reshare_pending(&args.wallet, progress)
            .await?
            .ok_or_else(|| {
                Failure::usage(format!(
                    "wallet {} has no pending change: no device joins or leaves it",
                    args.wallet
                ))
            })?;
        return print_reshared(&args.wallet, &outcome, args.format);
    }
    let structure = match (args.refresh, args.structure) {
        (true, _) => Some(
            online
                .wallet_detail(&args.wallet)
                .await?
                .structure
                .ok_or_else(|| {
                    Failure::usage("a 2-of-2 wallet is refreshed with `tessera refresh`")
                })?,
        ),
        (false, structure) => structure,
    };
    let change = ReshareChange {
        add: args.add,
        remove: args.remove,
        structure,
        with: args.with,
    };
    eprintln!("waiting for the other parties to join (`tessera listen` on each)");
    let outcome = online.reshare(&args.wallet, &change, progress).await?;
    print_reshared(&args.wallet, &outcome, args.format)
}

#[derive(Args)]
pub(crate) struct ShowArgs {
    /// The wallet.
    #[arg(long)]
    wallet: String,
    #[command(flatten)]
    format: output::Format,
}

/// `tessera wallet …`.
pub(crate) async fn wallet_command(home: &Path, command: WalletCommand) -> CliResult {
    match command {
        WalletCommand::Show(args) => show(home, args).await,
        WalletCommand::Reshare(args) => reshare(home, args).await,
    }
}

async fn show(home: &Path, args: ShowArgs) -> CliResult {
    let online = unlock::connect(home).await?;
    let detail = online.wallet_detail(&args.wallet).await?;
    let record = online.wallet(&args.wallet)?;
    if args.format.json {
        return print_json(&detail);
    }
    let info = &detail.info;
    println!("wallet         {} ({})", args.wallet, info.wallet_id);
    println!("public key     {}", info.public_key);
    println!("eth address    {}", info.eth_address);
    println!("epoch          {}", info.epoch);
    match &detail.structure {
        None => println!("structure      2-of-2: this device and the server"),
        Some(structure) => {
            println!("structure      {structure}");
            let mine = record.current.party().get();
            for party in &detail.parties {
                let who = match (&party.device_name, &party.device_id) {
                    (Some(name), Some(id)) => format!("device {name:?} ({id})"),
                    _ => "the server".to_string(),
                };
                let here = if party.device_id.is_some() && party.party == mine {
                    "  (this device)"
                } else {
                    ""
                };
                println!("party {:<8} {:<16} {who}{here}", party.party, party.label);
            }
            for change in &detail.pending {
                let verb = if change.change == "add" {
                    "joins"
                } else {
                    "leaves"
                };
                println!(
                    "pending        device {:?} ({}) {verb} at the next resharing (tessera wallet reshare --wallet {} --pending)",
                    change.device_name, change.label, args.wallet
                );
            }
        }
    }
    Ok(())
}
