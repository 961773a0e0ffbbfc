//! `tessera demo`: the whole flow in one command, with an embedded server ([`embedded`]) or all
//! parties in this process: t-of-n, or a wallet under an access structure ([`structure`]).

mod embedded;
mod structure;

use std::io::IsTerminal;
use std::time::Instant;

use clap::Args;
use tessera_core::ecdsa::eip191_digest;
use tessera_core::protocols::{
    KeygenSession, SignRequest, SignSession, fresh_nonce, validate_signers,
};
use tessera_core::runner::{self, Delivery};
use tessera_core::{DerivationPath, KeyShare, PartyIndex, Threshold, WalletId};

use crate::failure::{CliResult, Failure};
use crate::output;
use crate::progress::Progress;

#[derive(Args)]
pub(crate) struct DemoArgs {
    /// Run all t-of-n parties in this process instead of the device + server topology.
    #[arg(long)]
    pub(crate) in_process: bool,
    /// Signers needed (t); with --in-process.
    #[arg(long, short = 't', default_value_t = 2, requires = "in_process")]
    threshold: u8,
    /// Share holders (n); with --in-process.
    #[arg(long, short = 'n', default_value_t = 2, requires = "in_process")]
    parties: u8,
    /// The message to sign (as an Ethereum personal_sign / EIP-191 message).
    #[arg(long, short = 'm', default_value = "Hello from Tessera")]
    pub(crate) message: String,
    /// The signing parties, comma separated (default: the first t); with --in-process.
    #[arg(long, value_delimiter = ',', requires = "in_process")]
    signers: Option<Vec<u8>>,
    /// A wallet under this access structure instead of t-of-n, e.g.
    /// 'and(server, or(phone, laptop))': every minimal quorum signs, every maximal unauthorised
    /// set is refused; with --in-process.
    #[arg(
        long,
        requires = "in_process",
        conflicts_with_all = ["threshold", "parties", "signers"]
    )]
    structure: Option<String>,
    /// Sign with the non-hardened BIP-32 child key at this path, e.g. m/0/7.
    #[arg(long, default_value = "m")]
    pub(crate) path: String,
    #[command(flatten)]
    pub(crate) format: output::Format,
}

/// `tessera demo`: with --in-process, all parties here (t-of-n, or under --structure); else an
/// embedded server and this device.
pub(crate) fn run(args: DemoArgs) -> CliResult {
    if let Some(text) = &args.structure {
        return structure::run(text, &args.message, &args.path, args.format);
    }
    if args.in_process {
        return in_process(&args);
    }
    let path: DerivationPath = args.path.parse().map_err(Failure::usage)?;
    crate::runtime()?.block_on(embedded::run(&args.message, &path, args.format))
}

fn in_process(args: &DemoArgs) -> CliResult {
    let threshold = Threshold::new(args.threshold, args.parties).map_err(Failure::usage)?;
    let path: DerivationPath = args.path.parse().map_err(Failure::usage)?;
    let signers: Vec<PartyIndex> = match &args.signers {
        Some(list) => list.iter().map(|&i| PartyIndex::new(i)).collect(),
        None => (0..threshold.t).map(PartyIndex::new).collect(),
    };
    // Check the signer set before the (slow) key generation, with the rules signing applies.
    validate_signers(threshold, &signers).map_err(Failure::usage)?;
    let mut progress = Progress::new(std::io::stderr().is_terminal());

    // 1. Distributed key generation, all parties in this process.
    let wallet = WalletId::random();
    let nonce = fresh_nonce();
    let sessions = threshold
        .parties()
        .map(|p| KeygenSession::new(wallet, threshold, p, &nonce))
        .collect::<Result<Vec<_>, _>>()
        .map_err(Failure::usage)?;
    let step = progress.step(&format!("key generation, {threshold}"), 4);
    let started = Instant::now();
    let (mut shares, keygen_stats) = runner::run_with(
        sessions,
        |_| Delivery::Deliver,
        |round, total| step.round(round, total),
    )
    .map_err(Failure::failed)?;
    step.finish(started.elapsed());
    shares.sort_by_key(KeyShare::party);
    let root = shares[0].public_key();
    let key = shares[0].public_key_at(&path).map_err(Failure::failed)?;

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
        signing.push(SignSession::new(share, &request).map_err(Failure::usage)?);
    }
    let names: Vec<String> = signers.iter().map(ToString::to_string).collect();
    let step = progress.step(&format!("signing by parties {}", names.join(", ")), 3);
    let started = Instant::now();
    let (signatures, sign_stats) = runner::run_with(
        signing,
        |_| Delivery::Deliver,
        |round, total| step.round(round, total),
    )
    .map_err(Failure::failed)?;
    step.finish(started.elapsed());
    let signature = signatures[0];

    // 3. Independent verification.
    let step = progress.step("verification", 1);
    let verified = key.verify(&digest, &signature);
    step.finish(std::time::Duration::ZERO);

    if args.format.json {
        verified.map_err(Failure::failed)?;
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
        Err(e) => Err(Failure::failed(e)),
    }
}
