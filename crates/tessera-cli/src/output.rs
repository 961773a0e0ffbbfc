//! `--json`: a command that prints data prints one JSON document on stdout instead of its text
//! (each command's shape is in docs/cli-json.md); progress, prompts and warnings stay on stderr.

use serde::Serialize;
use tessera_core::KeyShare;

use crate::{CliResult, Failure};

/// The `--json` flag of a command that prints data.
#[derive(clap::Args, Clone, Copy, Debug, Default)]
pub(crate) struct Format {
    /// Print one JSON document on stdout instead of text (shapes: docs/cli-json.md).
    #[arg(long)]
    pub(crate) json: bool,
}

/// Prints `value` as the command's one JSON document.
pub(crate) fn print_json(value: &impl Serialize) -> CliResult {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| Failure::Failed(format!("cannot encode the output as JSON: {e}")))?;
    println!("{text}");
    Ok(())
}

/// A wallet of this device (`keygen`, `pubkey`).
#[derive(Serialize)]
pub(crate) struct WalletOut {
    /// Its name on this device.
    pub(crate) wallet: String,
    /// Hex wallet id.
    pub(crate) wallet_id: String,
    /// The wallet key, SEC1 compressed hex.
    pub(crate) public_key: String,
    /// `0x…` checksummed Ethereum address.
    pub(crate) eth_address: String,
    /// The share's epoch.
    pub(crate) epoch: u64,
}

impl WalletOut {
    pub(crate) fn of(name: &str, share: &KeyShare) -> Self {
        WalletOut {
            wallet: name.to_string(),
            wallet_id: share.wallet_id().to_string(),
            public_key: share.public_key().to_string(),
            eth_address: share.public_key().eth_address(),
            epoch: share.epoch(),
        }
    }

    pub(crate) fn print(&self, format: Format) -> CliResult {
        if format.json {
            return print_json(self);
        }
        println!("wallet         {} ({})", self.wallet, self.wallet_id);
        println!("public key     {}", self.public_key);
        println!("eth address    {}", self.eth_address);
        println!("epoch          {}", self.epoch);
        Ok(())
    }
}
