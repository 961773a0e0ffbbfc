//! `tessera pubkey`: a wallet's public key and Ethereum address; with `--path`, the key at a
//! non-hardened BIP-32 path (the key `sign --path` signs with); with `--xpub`, its BIP-32
//! extended public key (xpub, or tpub for a test network) for a watch-only wallet elsewhere;
//! with `--btc`, its Bitcoin P2WPKH address (BIP-141/BIP-173). The derivation and encodings are
//! `tessera_api::keys`'s.

use std::path::Path;

use clap::Args;
use serde::Serialize;
use tessera_api::keys::{ExtendedPublicKey, Network};
use tessera_core::DerivationPath;

use crate::failure::{CliResult, Failure};
use crate::output::{self, WalletOut, print_json};
use crate::unlock;

#[derive(Args)]
pub(crate) struct PubkeyArgs {
    /// The wallet.
    #[arg(long)]
    wallet: String,
    /// A non-hardened BIP-32 path below the wallet's key, e.g. m/0/7: also print the key there
    /// (the key `tessera sign --path` signs with) and its Ethereum address.
    #[arg(long)]
    path: Option<String>,
    /// Also print the BIP-32 extended public key of the key at --path (the wallet's root key
    /// by default): xpub on mainnet, tpub on a test --network. A watch-only wallet given it
    /// derives the same keys and addresses below it.
    #[arg(long)]
    xpub: bool,
    /// Also print the Bitcoin P2WPKH (native SegWit) address of the key at --path.
    #[arg(long)]
    btc: bool,
    /// The Bitcoin network of --xpub and --btc: mainnet (or bitcoin), testnet, testnet4, signet
    /// or regtest [default: mainnet].
    #[arg(long)]
    network: Option<String>,
    #[command(flatten)]
    format: output::Format,
}

/// `pubkey`'s document: the wallet as `keygen` prints it, then what the flags asked for.
#[derive(Serialize)]
struct PubkeyOut {
    #[serde(flatten)]
    wallet: WalletOut,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    at_path: Option<AtPath>,
}

/// The key at a path, with `--path`, `--xpub` or `--btc`.
#[derive(Serialize)]
struct AtPath {
    /// The path (`m` for the root).
    path: String,
    /// The key there, SEC1 compressed hex.
    path_public_key: String,
    /// Its `0x…` checksummed Ethereum address.
    path_eth_address: String,
    /// The network of `xpub` and `btc_address`, when one of them is printed.
    #[serde(skip_serializing_if = "Option::is_none")]
    network: Option<Network>,
    /// The extended public key at the path (`xpub…` or `tpub…`), with `--xpub`.
    #[serde(skip_serializing_if = "Option::is_none")]
    xpub: Option<String>,
    /// The root's fingerprint (hex), with `--xpub`: a descriptor's `[fingerprint/path]xpub`.
    #[serde(skip_serializing_if = "Option::is_none")]
    master_fingerprint: Option<String>,
    /// The P2WPKH address of the key at the path, with `--btc`.
    #[serde(skip_serializing_if = "Option::is_none")]
    btc_address: Option<String>,
}

/// `tessera pubkey`.
pub(crate) async fn pubkey(home: &Path, args: PubkeyArgs) -> CliResult {
    // Flags first: bad input is refused before the passphrase is asked for.
    let path: DerivationPath = args
        .path
        .as_deref()
        .unwrap_or("m")
        .parse()
        .map_err(|e| Failure::Usage(format!("--path: {e}")))?;
    let network: Network = args
        .network
        .as_deref()
        .unwrap_or("mainnet")
        .parse()
        .map_err(|e| Failure::Usage(format!("--network: {e}")))?;
    if args.network.is_some() && !args.xpub && !args.btc {
        return Err(Failure::usage(
            "--network applies to --xpub and --btc: give one of them",
        ));
    }
    let online = unlock::connect(home).await?;
    let share = online.wallet(&args.wallet)?.current;
    let wallet = WalletOut::of(&args.wallet, &share);
    let at_path = if args.path.is_some() || args.xpub || args.btc {
        let root = ExtendedPublicKey::root(&share.public_key(), share.chain_code())
            .map_err(Failure::failed)?;
        let key = root.derive(&path).map_err(Failure::usage)?;
        // What is printed must be what signs: the engine's own derivation agrees (a difference
        // would be a bug in one of them, and an address nobody could spend from).
        let engine = share.public_key_at(&path).map_err(Failure::failed)?;
        if engine != key.public_key() {
            return Err(Failure::Failed(format!(
                "internal error: the BIP-32 key at {path} ({}) differs from the signing engine's ({engine})",
                key.public_key()
            )));
        }
        let public_key = key.public_key();
        Some(AtPath {
            path: path.to_string(),
            path_public_key: public_key.to_string(),
            path_eth_address: public_key.eth_address(),
            network: (args.xpub || args.btc).then_some(network),
            xpub: args.xpub.then(|| key.encode(network)),
            master_fingerprint: args.xpub.then(|| hex::encode(root.fingerprint())),
            btc_address: args.btc.then(|| key.p2wpkh_address(network)),
        })
    } else {
        None
    };
    let out = PubkeyOut { wallet, at_path };
    if args.format.json {
        return print_json(&out);
    }
    out.wallet.print(args.format)?;
    if let Some(at) = &out.at_path {
        println!("path           {}", at.path);
        println!("path key       {}", at.path_public_key);
        println!("path eth addr  {}", at.path_eth_address);
        if let Some(network) = at.network {
            println!("network        {network}");
        }
        if let Some(xpub) = &at.xpub {
            println!("{:<14} {xpub}", network.xpub_prefix());
        }
        if let Some(fingerprint) = &at.master_fingerprint {
            println!("fingerprint    {fingerprint}");
        }
        if let Some(address) = &at.btc_address {
            println!("btc address    {address}");
        }
    }
    Ok(())
}
