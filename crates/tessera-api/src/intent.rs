//! What a device asks the server to sign, and the digest the server computes from it itself, so
//! that a compromised device cannot obtain a signature on something other than what the policy
//! saw.
//!
//! - `eth-tx`: an EIP-1559 transaction; the digest is its EIP-2718 signing hash, computed with
//!   `alloy-consensus` (no hand-written RLP), and the signed transaction is encoded by it too.
//! - `eth-message`: an EIP-191 personal message.
//! - `digest`: 32 raw bytes, allowed only where a wallet's policy says so.

use alloy_consensus::{SignableTransaction, TxEip1559, TxEnvelope};
use alloy_eips::eip2718::Encodable2718;
/// 256-bit unsigned integers (wei amounts).
pub use alloy_primitives::U256;
use alloy_primitives::{Address, Bytes, TxKind};
use serde::{Deserialize, Serialize};
use tessera_core::ecdsa::{Signature, eip191_digest};
use tessera_core::error::{Error, Result};

use crate::states::RequestKind;

/// Longest personal message.
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024;
/// Longest transaction call data.
pub const MAX_TX_DATA_BYTES: usize = 32 * 1024;

/// An EIP-1559 transaction as JSON (`tessera sign --eth-tx tx.json`). Amounts are decimal
/// strings in wei (they exceed JSON's safe integers); `to` is absent for a contract creation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct EthTransaction {
    /// EIP-155 chain id (1 = Ethereum mainnet).
    pub chain_id: u64,
    /// The sender's nonce.
    pub nonce: u64,
    /// Maximum total fee per gas, wei (decimal).
    pub max_fee_per_gas: String,
    /// Maximum priority fee per gas, wei (decimal).
    pub max_priority_fee_per_gas: String,
    /// Gas limit.
    pub gas_limit: u64,
    /// Recipient, 0x-prefixed hex; absent for a contract creation.
    #[serde(default)]
    pub to: Option<String>,
    /// Value, wei (decimal).
    pub value: String,
    /// Call data, 0x-prefixed hex.
    #[serde(default)]
    pub data: String,
}

/// What to sign.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum SignKind {
    /// A raw 32-byte digest (hex).
    Digest {
        /// 64 hex digits.
        digest: String,
    },
    /// An EIP-191 personal message.
    EthMessage {
        /// The text.
        message: String,
    },
    /// An EIP-1559 transaction.
    EthTx {
        /// The transaction.
        tx: EthTransaction,
    },
}

impl SignKind {
    /// The kind, as a policy's `allowed_kinds` names it.
    #[must_use]
    pub fn request_kind(&self) -> RequestKind {
        match self {
            SignKind::Digest { .. } => RequestKind::Digest,
            SignKind::EthMessage { .. } => RequestKind::EthMessage,
            SignKind::EthTx { .. } => RequestKind::EthTx,
        }
    }

    /// The policy name of the kind: `digest`, `eth-message`, `eth-tx`.
    #[must_use]
    pub fn name(&self) -> &'static str {
        self.request_kind().as_str()
    }
}

/// A decoded, validated request: the digest to sign and what a person or a policy needs to know.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decoded {
    /// The digest that will be signed.
    pub digest: [u8; 32],
    /// The chain, for a transaction.
    pub chain_id: Option<u64>,
    /// The recipient (lower-case 0x hex), for a transaction with one.
    pub to: Option<String>,
    /// The value in wei, for a transaction.
    pub value: Option<U256>,
    /// The most the transaction can pay in fees, wei (`gas_limit × max_fee_per_gas`), for a
    /// transaction.
    pub max_fee: Option<U256>,
    /// One line for people and the audit log.
    pub summary: String,
}

fn bad(why: impl Into<String>) -> Error {
    Error::InvalidParameters(why.into())
}

fn wei(field: &str, text: &str) -> Result<U256> {
    if text.is_empty() || text.len() > 78 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad(format!("{field} must be a decimal amount in wei")));
    }
    U256::from_str_radix(text, 10).map_err(|_| bad(format!("{field} is too large")))
}

fn fee(field: &str, text: &str) -> Result<u128> {
    u128::try_from(wei(field, text)?).map_err(|_| bad(format!("{field} is too large")))
}

/// Parses a 20-byte 0x-hex Ethereum address (any case); returns it in lower case.
///
/// # Errors
/// [`Error::InvalidParameters`].
pub fn parse_address(text: &str) -> Result<String> {
    text.parse::<Address>()
        .map(|a| format!("{a:#x}"))
        .map_err(|_| bad("an address must be 20 bytes of 0x-hex"))
}

impl EthTransaction {
    fn to_alloy(&self) -> Result<TxEip1559> {
        let to = match &self.to {
            None => TxKind::Create,
            Some(a) => TxKind::Call(
                a.parse::<Address>()
                    .map_err(|_| bad("`to` must be a 20-byte 0x-hex address"))?,
            ),
        };
        let data = self.data.strip_prefix("0x").unwrap_or(&self.data);
        if data.len() > 2 * MAX_TX_DATA_BYTES {
            return Err(bad("transaction data is too long"));
        }
        let input = hex::decode(data).map_err(|_| bad("`data` must be 0x-hex"))?;
        let max_fee = fee("max_fee_per_gas", &self.max_fee_per_gas)?;
        let priority = fee("max_priority_fee_per_gas", &self.max_priority_fee_per_gas)?;
        if priority > max_fee {
            return Err(bad("max_priority_fee_per_gas exceeds max_fee_per_gas"));
        }
        if self.chain_id == 0 {
            return Err(bad("chain_id must not be 0"));
        }
        Ok(TxEip1559 {
            chain_id: self.chain_id,
            nonce: self.nonce,
            gas_limit: self.gas_limit,
            max_fee_per_gas: max_fee,
            max_priority_fee_per_gas: priority,
            to,
            value: wei("value", &self.value)?,
            access_list: Default::default(),
            input: Bytes::from(input),
        })
    }

    /// The raw signed transaction (EIP-2718 type 2), ready to broadcast.
    ///
    /// # Errors
    /// [`Error::InvalidParameters`] for an invalid transaction.
    pub fn signed_raw(&self, signature: &Signature) -> Result<Vec<u8>> {
        let tx = self.to_alloy()?;
        let sig = alloy_primitives::Signature::new(
            U256::from_be_bytes(signature.r()),
            U256::from_be_bytes(signature.s()),
            signature.recovery_id() & 1 == 1,
        );
        let envelope: TxEnvelope = tx.into_signed(sig).into();
        Ok(envelope.encoded_2718())
    }
}

/// Validates `kind` and computes its digest.
///
/// # Errors
/// [`Error::InvalidParameters`] naming the field that is wrong.
pub fn decode(kind: &SignKind) -> Result<Decoded> {
    match kind {
        SignKind::Digest { digest } => {
            let mut d = [0u8; 32];
            hex::decode_to_slice(digest, &mut d)
                .map_err(|_| bad("digest must be 64 hex digits"))?;
            Ok(Decoded {
                digest: d,
                chain_id: None,
                to: None,
                value: None,
                max_fee: None,
                summary: format!("raw digest {digest}"),
            })
        }
        SignKind::EthMessage { message } => {
            if message.len() > MAX_MESSAGE_BYTES {
                return Err(bad("the message is too long"));
            }
            let shown: String = message.chars().take(80).collect();
            Ok(Decoded {
                digest: eip191_digest(message.as_bytes()),
                chain_id: None,
                to: None,
                value: None,
                max_fee: None,
                summary: format!("personal message {shown:?}"),
            })
        }
        SignKind::EthTx { tx } => {
            let alloy = tx.to_alloy()?;
            let to = match alloy.to {
                TxKind::Call(a) => Some(format!("{a:#x}")),
                TxKind::Create => None,
            };
            let summary = format!(
                "chain {}: send {} wei to {} (nonce {}, gas {}, {} bytes of data)",
                alloy.chain_id,
                alloy.value,
                to.as_deref().unwrap_or("a new contract"),
                alloy.nonce,
                alloy.gas_limit,
                alloy.input.len()
            );
            Ok(Decoded {
                digest: alloy.signature_hash().0,
                chain_id: Some(alloy.chain_id),
                to,
                value: Some(alloy.value),
                max_fee: Some(
                    U256::from(alloy.gas_limit).saturating_mul(U256::from(alloy.max_fee_per_gas)),
                ),
                summary,
            })
        }
    }
}
