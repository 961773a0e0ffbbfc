//! `tessera verify`: check an ECDSA secp256k1 signature (DER, r||s or r||s||v).

use clap::{Args, ValueEnum};
use sha2::{Digest, Sha256};
use sha3::Keccak256;
use tessera_core::ecdsa::{SignatureEncoding, eip191_digest, verify_encoded};
use tessera_core::{Error, PublicKey};

use crate::failure::{CliResult, Failure};

#[derive(Args)]
pub(crate) struct VerifyArgs {
    /// The public key, SEC1 hex (33 or 65 bytes).
    #[arg(long)]
    pubkey: String,
    /// The 32-byte digest that was signed, hex.
    #[arg(long, conflicts_with = "message", required_unless_present = "message")]
    digest: Option<String>,
    /// The message that was signed; hashed with --hash.
    #[arg(long)]
    message: Option<String>,
    /// How --message is hashed.
    #[arg(long, value_enum, default_value_t = Hash::Eip191)]
    hash: Hash,
    /// The signature, hex: DER, r||s (64 bytes) or r||s||v (65 bytes).
    #[arg(long)]
    signature: String,
}

#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum Hash {
    /// Ethereum personal_sign: keccak256("\x19Ethereum Signed Message:\n" || len || message).
    Eip191,
    /// SHA-256 of the message bytes.
    Sha256,
    /// Keccak-256 of the message bytes.
    Keccak256,
}

/// `text` (with or without `0x`) as bytes; `what` names the flag in the message.
pub(crate) fn parse_hex(what: &str, text: &str) -> Result<Vec<u8>, Failure> {
    let text = text.trim();
    let text = text.strip_prefix("0x").unwrap_or(text);
    hex::decode(text).map_err(|_| Failure::Usage(format!("{what} is not valid hexadecimal")))
}

/// `tessera verify`.
pub(crate) fn run(args: &VerifyArgs) -> CliResult {
    let public_key = PublicKey::from_hex(&args.pubkey).map_err(Failure::usage)?;
    let digest: [u8; 32] = match (&args.digest, &args.message) {
        (Some(d), _) => parse_hex("--digest", d)?.try_into().map_err(|v: Vec<u8>| {
            Failure::Usage(format!("--digest must be 32 bytes, got {}", v.len()))
        })?,
        (None, Some(m)) => match args.hash {
            Hash::Eip191 => eip191_digest(m.as_bytes()),
            Hash::Sha256 => Sha256::digest(m.as_bytes()).into(),
            Hash::Keccak256 => Keccak256::digest(m.as_bytes()).into(),
        },
        (None, None) => return Err(Failure::Usage("give --digest or --message".into())),
    };
    let signature = parse_hex("--signature", &args.signature)?;
    match verify_encoded(&public_key, &digest, &signature) {
        Ok(found) => {
            let encoding = match found.encoding {
                SignatureEncoding::Der => "DER",
                SignatureEncoding::Compact => "r||s",
                SignatureEncoding::Rsv => "r||s||v",
            };
            let note = if found.high_s {
                ", high-S: valid ECDSA but rejected by Bitcoin and Ethereum"
            } else {
                ""
            };
            println!("valid ({encoding}{note})");
            Ok(())
        }
        Err(Error::VerificationFailed) => {
            println!("INVALID: the signature does not verify under this public key and digest");
            Err(Failure::Failed("signature verification failed".into()))
        }
        Err(e) => Err(Failure::usage(e)),
    }
}
