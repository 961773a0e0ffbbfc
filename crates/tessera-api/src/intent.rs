//! What a device asks the server to sign, and the digest the server computes from it itself, so
//! that a compromised device cannot obtain a signature on something other than what the policy
//! saw.
//!
//! - `eth-tx`: an Ethereum transaction of any current EIP-2718 type: legacy (signed with EIP-155
//!   replay protection only), EIP-2930 (access lists), EIP-1559 (the default) and EIP-7702 (set
//!   accounts' code by signed authorisations). The digest is its signing hash, computed with
//!   `alloy-consensus` (no hand-written RLP), and the signed transaction is encoded by it too.
//! - `eth-authorization`: one EIP-7702 authorisation of this wallet's account; the digest is
//!   `keccak256(0x05 || rlp([chain_id, address, nonce]))`, computed by alloy.
//! - `eth-message`: an EIP-191 personal message.
//! - `digest`: 32 raw bytes, allowed only where a wallet's policy says so.

use alloy_consensus::{
    SignableTransaction, Transaction, TxEip1559, TxEip2930, TxEip7702, TxLegacy, TypedTransaction,
};
use alloy_eips::eip2718::Encodable2718;
use alloy_eips::eip2930::{AccessList, AccessListItem};
use alloy_eips::eip7702::{Authorization, SignedAuthorization};
/// 256-bit unsigned integers (wei amounts).
pub use alloy_primitives::U256;
use alloy_primitives::{Address, B256, Bytes, TxKind};
use serde::{Deserialize, Serialize};
use tessera_core::ecdsa::{Signature, eip191_digest};
use tessera_core::error::{Error, Result};

use crate::states::RequestKind;

/// Longest personal message.
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024;
/// Longest transaction call data.
pub const MAX_TX_DATA_BYTES: usize = 32 * 1024;

/// Longest access list (EIP-2930 entries) of a transaction.
pub const MAX_ACCESS_LIST_ENTRIES: usize = 64;
/// Most storage keys of one access-list entry.
pub const MAX_STORAGE_KEYS_PER_ENTRY: usize = 64;
/// Most EIP-7702 authorisations in one transaction.
pub const MAX_AUTHORIZATIONS: usize = 16;

/// The EIP-2718 type of an [`EthTransaction`], as its JSON's `type` names it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum EthTxType {
    /// Type 0, signed with EIP-155 replay protection (so a non-zero chain id is required):
    /// `gas_price`.
    Legacy,
    /// Type 1 (EIP-2930): `gas_price` and an optional `access_list`.
    Eip2930,
    /// Type 2 (EIP-1559), the default: `max_fee_per_gas`, `max_priority_fee_per_gas` and an
    /// optional `access_list`.
    #[default]
    Eip1559,
    /// Type 4 (EIP-7702): as EIP-1559, with a recipient (no contract creation) and an
    /// `authorization_list` of signed authorisations that set accounts' code.
    Eip7702,
}

impl EthTxType {
    /// The name, as JSON writes it.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            EthTxType::Legacy => "legacy",
            EthTxType::Eip2930 => "eip2930",
            EthTxType::Eip1559 => "eip1559",
            EthTxType::Eip7702 => "eip7702",
        }
    }

    /// "a legacy transaction", "an eip1559 transaction", for error messages.
    fn a_transaction(self) -> String {
        let article = if self == EthTxType::Legacy { "a" } else { "an" };
        format!("{article} {} transaction", self.as_str())
    }

    /// Whether its fee is one `gas_price` (otherwise EIP-1559's two fields).
    fn takes_gas_price(self) -> bool {
        matches!(self, EthTxType::Legacy | EthTxType::Eip2930)
    }

    // EIP-1559 is left out of the JSON, so that requests written before `type` existed keep
    // their bytes.
    #[allow(clippy::trivially_copy_pass_by_ref)] // serde's `skip_serializing_if` passes a reference
    fn is_eip1559(&self) -> bool {
        *self == EthTxType::Eip1559
    }
}

/// An Ethereum transaction as JSON (`tessera sign --eth-tx tx.json`). Amounts are decimal strings
/// in wei (they exceed JSON's safe integers); `to` is absent for a contract creation. Which fee
/// and list fields it takes depends on `type` ([`EthTxType`]); one that does not belong to the
/// type is refused, naming it.
///
/// `Default` is only a base for struct literals (`..EthTransaction::default()`): it is not a
/// valid transaction (chain 0, no value).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct EthTransaction {
    /// The transaction type; `eip1559` when absent.
    #[serde(
        rename = "type",
        default,
        skip_serializing_if = "EthTxType::is_eip1559"
    )]
    pub tx_type: EthTxType,
    /// EIP-155 chain id (1 = Ethereum mainnet); never 0.
    pub chain_id: u64,
    /// The sender's nonce.
    pub nonce: u64,
    /// Gas price, wei (decimal): `legacy` and `eip2930` only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gas_price: Option<String>,
    /// Maximum total fee per gas, wei (decimal): `eip1559` and `eip7702` only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_fee_per_gas: Option<String>,
    /// Maximum priority fee per gas, wei (decimal): `eip1559` and `eip7702` only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_priority_fee_per_gas: Option<String>,
    /// Gas limit.
    pub gas_limit: u64,
    /// Recipient, 0x-prefixed hex; absent for a contract creation (not for `eip7702`).
    #[serde(default)]
    pub to: Option<String>,
    /// Value, wei (decimal).
    pub value: String,
    /// Call data, 0x-prefixed hex.
    #[serde(default)]
    pub data: String,
    /// EIP-2930 access list: every type but `legacy`; empty when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_list: Option<Vec<AccessListEntry>>,
    /// EIP-7702 signed authorisations (at least one): `eip7702` only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorization_list: Option<Vec<SignedEthAuthorization>>,
}

/// One entry of an EIP-2930 access list: an address and storage slots the transaction declares
/// it will touch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AccessListEntry {
    /// The account, 0x hex.
    pub address: String,
    /// Its storage keys, each 32 bytes of 0x hex.
    #[serde(default)]
    pub storage_keys: Vec<String>,
}

/// A signed EIP-7702 authorisation, as a 7702 transaction's `authorization_list` holds it and
/// [`EthAuthorization::signed`] makes it: the authority (the account that signed it) runs
/// `address`'s code from then on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SignedEthAuthorization {
    /// The chain id it is valid on; 0 for every chain.
    pub chain_id: u64,
    /// The delegate contract, 0x hex.
    pub address: String,
    /// The authority's nonce when it is used.
    pub nonce: u64,
    /// The signature's y parity, 0 or 1.
    pub y_parity: u8,
    /// The signature's `r`, a 0x-hex number of at most 32 bytes (leading zeros optional).
    pub r: String,
    /// The signature's `s` (low-S), a 0x-hex number of at most 32 bytes.
    pub s: String,
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
    /// An Ethereum transaction.
    EthTx {
        /// The transaction.
        tx: EthTransaction,
    },
    /// EIP-712 typed structured data, as `eth_signTypedData_v4` takes it (`types`,
    /// `primaryType`, `domain`, `message`).
    EthTypedData {
        /// The typed data.
        typed_data: serde_json::Value,
    },
    /// An EIP-7702 authorisation of this wallet's account.
    EthAuthorization {
        /// What is authorised.
        authorization: EthAuthorization,
    },
    /// One input of a Bitcoin PSBT (BIP-174) that the wallet owns: a request per input, each
    /// with the whole PSBT, so that the server sees every output and the fee each time.
    BtcPsbt {
        /// The PSBT, base64.
        psbt: String,
        /// The network its addresses are shown and checked for.
        network: crate::btc::BtcNetwork,
        /// The input to sign.
        input: u32,
    },
}

/// An EIP-7702 authorisation as JSON: the account that signs it runs `address`'s code from then
/// on (until another authorisation replaces it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct EthAuthorization {
    /// EIP-155 chain id; 0 authorises on every chain.
    pub chain_id: u64,
    /// The delegate contract, 0x hex.
    pub address: String,
    /// The account's nonce when the authorisation is used.
    pub nonce: u64,
}

impl SignKind {
    /// The kind, as a policy's `allowed_kinds` names it.
    #[must_use]
    pub fn request_kind(&self) -> RequestKind {
        match self {
            SignKind::Digest { .. } => RequestKind::Digest,
            SignKind::EthMessage { .. } => RequestKind::EthMessage,
            SignKind::EthTx { .. } => RequestKind::EthTx,
            SignKind::EthTypedData { .. } => RequestKind::EthTypedData,
            SignKind::EthAuthorization { .. } => RequestKind::EthAuthorization,
            SignKind::BtcPsbt { .. } => RequestKind::BtcPsbt,
        }
    }

    /// The policy name of the kind: `digest`, `eth-message`, `eth-tx`, ….
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
    /// What the request does with tokens: a decoded ERC-20/721/1155 call, or signed permits
    /// (a Permit2 batch names several).
    pub tokens: Vec<crate::calls::TokenAction>,
    /// Call data to a contract that no decoder understood (a policy refuses it unless it allows
    /// arbitrary calls to that address).
    pub unknown_call: bool,
    /// The contracts an EIP-7702 transaction delegates accounts to (lower-case 0x hex).
    pub delegations: Vec<String>,
    /// A PSBT input's transaction as the wallet's key sees it (its change known): filled by the
    /// server with [`crate::btc::plan`], since [`decode`] has no wallet key.
    pub btc: Option<crate::btc::BtcSpend>,
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

fn address(field: &str, text: &str) -> Result<Address> {
    text.parse::<Address>()
        .map_err(|_| bad(format!("{field} must be a 20-byte 0x-hex address")))
}

fn storage_key(field: &str, text: &str) -> Result<B256> {
    let mut key = [0u8; 32];
    text.strip_prefix("0x")
        .and_then(|digits| hex::decode_to_slice(digits, &mut key).ok())
        .ok_or_else(|| bad(format!("{field} must be 32 bytes of 0x-hex")))?;
    Ok(B256::from(key))
}

/// A signature scalar (`r`, `s`): 0x-hex, at most 32 bytes.
fn scalar(field: &str, text: &str) -> Result<U256> {
    text.strip_prefix("0x")
        .filter(|d| !d.is_empty() && d.len() <= 64 && d.bytes().all(|b| b.is_ascii_hexdigit()))
        .and_then(|d| U256::from_str_radix(d, 16).ok())
        .ok_or_else(|| bad(format!("{field} must be 0x-hex of at most 32 bytes")))
}

fn required<'a>(tx_type: EthTxType, field: &str, value: &'a Option<String>) -> Result<&'a str> {
    value
        .as_deref()
        .ok_or_else(|| bad(format!("{} needs {field}", tx_type.a_transaction())))
}

/// EIP-7702: "verify the nonce is less than 2**64 - 1".
fn authorization_nonce(field: &str, nonce: u64) -> Result<u64> {
    if nonce == u64::MAX {
        return Err(bad(format!("{field} must be below 2^64 - 1 (EIP-7702)")));
    }
    Ok(nonce)
}

impl EthAuthorization {
    fn to_alloy(&self) -> Result<Authorization> {
        Ok(Authorization {
            chain_id: U256::from(self.chain_id),
            address: address("address", &self.address)?,
            nonce: authorization_nonce("nonce", self.nonce)?,
        })
    }

    /// This authorisation signed with `signature` (made over its digest, as [`decode`] computes
    /// it), as a 7702 transaction's `authorization_list` takes it.
    ///
    /// # Errors
    /// [`Error::InvalidParameters`] for an invalid authorisation, or a signature whose recovery
    /// id is not a y parity (0 or 1).
    pub fn signed(&self, signature: &Signature) -> Result<SignedEthAuthorization> {
        let authorization = self.to_alloy()?;
        let y_parity = signature.recovery_id();
        if y_parity > 1 {
            return Err(bad(
                "the signature's recovery id is not a y parity (0 or 1): EIP-7702 cannot carry it",
            ));
        }
        Ok(SignedEthAuthorization {
            chain_id: self.chain_id,
            address: format!("{:#x}", authorization.address),
            nonce: self.nonce,
            y_parity,
            // Quantities, as JSON-RPC and alloy write them (no leading zeros).
            r: format!("{:#x}", U256::from_be_bytes(signature.r())),
            s: format!("{:#x}", U256::from_be_bytes(signature.s())),
        })
    }
}

impl SignedEthAuthorization {
    /// Alloy's form; `at` names it in errors (`authorization_list[2]`). Its signature is checked
    /// by recovering the authority ([`decode`]).
    fn to_alloy(&self, at: &str) -> Result<SignedAuthorization> {
        if self.y_parity > 1 {
            return Err(bad(format!("{at}.y_parity must be 0 or 1")));
        }
        let inner = Authorization {
            chain_id: U256::from(self.chain_id),
            address: address(&format!("{at}.address"), &self.address)?,
            nonce: authorization_nonce(&format!("{at}.nonce"), self.nonce)?,
        };
        Ok(SignedAuthorization::new_unchecked(
            inner,
            self.y_parity,
            scalar(&format!("{at}.r"), &self.r)?,
            scalar(&format!("{at}.s"), &self.s)?,
        ))
    }
}

impl EthTransaction {
    /// Refuses the fields that do not belong to the type, naming them, then asks for the ones it
    /// needs.
    fn check_fields(&self) -> Result<()> {
        let t = self.tx_type;
        let price = t.takes_gas_price();
        let fee_hint = if t == EthTxType::Eip1559 {
            "legacy and eip2930 take gas_price, eip1559 and eip7702 take max_fee_per_gas and \
             max_priority_fee_per_gas; `type` is eip1559 when absent"
        } else {
            "legacy and eip2930 take gas_price, eip1559 and eip7702 take max_fee_per_gas and \
             max_priority_fee_per_gas"
        };
        let is_7702 = t == EthTxType::Eip7702;
        // (field, present, belongs to the type, required by it, what to do instead)
        let fields = [
            (
                "gas_price",
                self.gas_price.is_some(),
                price,
                price,
                fee_hint,
            ),
            (
                "max_fee_per_gas",
                self.max_fee_per_gas.is_some(),
                !price,
                !price,
                fee_hint,
            ),
            (
                "max_priority_fee_per_gas",
                self.max_priority_fee_per_gas.is_some(),
                !price,
                !price,
                fee_hint,
            ),
            (
                "access_list",
                self.access_list.is_some(),
                t != EthTxType::Legacy,
                false,
                "access lists need type eip2930, eip1559 or eip7702",
            ),
            (
                "authorization_list",
                self.authorization_list.is_some(),
                is_7702,
                is_7702,
                "authorisations need type eip7702",
            ),
        ];
        let foreign: Vec<_> = fields.iter().filter(|f| f.1 && !f.2).collect();
        if !foreign.is_empty() {
            let names: Vec<&str> = foreign.iter().map(|f| f.0).collect();
            let mut hints: Vec<&str> = foreign.iter().map(|f| f.4).collect();
            hints.dedup();
            return Err(bad(format!(
                "{} {} not belong to {} ({})",
                names.join(", "),
                if names.len() == 1 { "does" } else { "do" },
                t.a_transaction(),
                hints.join("; ")
            )));
        }
        let missing: Vec<&str> = fields.iter().filter(|f| f.3 && !f.1).map(|f| f.0).collect();
        if !missing.is_empty() {
            return Err(bad(format!(
                "{} needs {}",
                t.a_transaction(),
                missing.join(" and ")
            )));
        }
        Ok(())
    }

    /// EIP-1559 fees: the maximum and the priority fee per gas.
    fn fees(&self) -> Result<(u128, u128)> {
        let t = self.tx_type;
        let max_fee = fee(
            "max_fee_per_gas",
            required(t, "max_fee_per_gas", &self.max_fee_per_gas)?,
        )?;
        let priority = fee(
            "max_priority_fee_per_gas",
            required(
                t,
                "max_priority_fee_per_gas",
                &self.max_priority_fee_per_gas,
            )?,
        )?;
        if priority > max_fee {
            return Err(bad("max_priority_fee_per_gas exceeds max_fee_per_gas"));
        }
        Ok((max_fee, priority))
    }

    fn gas_price(&self) -> Result<u128> {
        fee(
            "gas_price",
            required(self.tx_type, "gas_price", &self.gas_price)?,
        )
    }

    fn alloy_access_list(&self) -> Result<AccessList> {
        let entries = self.access_list.as_deref().unwrap_or_default();
        if entries.len() > MAX_ACCESS_LIST_ENTRIES {
            return Err(bad(format!(
                "access_list has {} entries; at most {MAX_ACCESS_LIST_ENTRIES} are allowed",
                entries.len()
            )));
        }
        let items = entries
            .iter()
            .enumerate()
            .map(|(i, entry)| {
                if entry.storage_keys.len() > MAX_STORAGE_KEYS_PER_ENTRY {
                    return Err(bad(format!(
                        "access_list[{i}].storage_keys has {} keys; at most \
                         {MAX_STORAGE_KEYS_PER_ENTRY} are allowed",
                        entry.storage_keys.len()
                    )));
                }
                Ok(AccessListItem {
                    address: address(&format!("access_list[{i}].address"), &entry.address)?,
                    storage_keys: entry
                        .storage_keys
                        .iter()
                        .enumerate()
                        .map(|(j, key)| {
                            storage_key(&format!("access_list[{i}].storage_keys[{j}]"), key)
                        })
                        .collect::<Result<_>>()?,
                })
            })
            .collect::<Result<_>>()?;
        Ok(AccessList(items))
    }

    fn alloy_authorizations(&self) -> Result<Vec<SignedAuthorization>> {
        let list = self.authorization_list.as_deref().unwrap_or_default();
        if list.is_empty() {
            return Err(bad(
                "authorization_list must hold at least one authorisation (EIP-7702)",
            ));
        }
        if list.len() > MAX_AUTHORIZATIONS {
            return Err(bad(format!(
                "authorization_list has {} authorisations; at most {MAX_AUTHORIZATIONS} are allowed",
                list.len()
            )));
        }
        list.iter()
            .enumerate()
            .map(|(i, auth)| {
                let at = format!("authorization_list[{i}]");
                // A node skips an authorisation for another chain: signing it into this
                // transaction can only be a mistake (or a trick).
                if auth.chain_id != 0 && auth.chain_id != self.chain_id {
                    return Err(bad(format!(
                        "{at}.chain_id is {}, but the transaction is for chain {}: an \
                         authorisation must name the transaction's chain, or 0 for every chain",
                        auth.chain_id, self.chain_id
                    )));
                }
                auth.to_alloy(&at)
            })
            .collect()
    }

    /// The transaction as alloy's, every field checked.
    fn to_alloy(&self) -> Result<TypedTransaction> {
        self.check_fields()?;
        if self.chain_id == 0 {
            return Err(bad(if self.tx_type == EthTxType::Legacy {
                "chain_id must not be 0 (a legacy transaction is signed only with EIP-155 \
                 replay protection, which needs the chain)"
            } else {
                "chain_id must not be 0"
            }));
        }
        let to = match &self.to {
            None => TxKind::Create,
            Some(a) => TxKind::Call(address("`to`", a)?),
        };
        let data = self.data.strip_prefix("0x").unwrap_or(&self.data);
        if data.len() > 2 * MAX_TX_DATA_BYTES {
            return Err(bad("transaction data is too long"));
        }
        let input = Bytes::from(hex::decode(data).map_err(|_| bad("`data` must be 0x-hex"))?);
        let value = wei("value", &self.value)?;
        let (chain_id, nonce, gas_limit) = (self.chain_id, self.nonce, self.gas_limit);
        Ok(match self.tx_type {
            EthTxType::Legacy => TxLegacy {
                chain_id: Some(chain_id),
                nonce,
                gas_price: self.gas_price()?,
                gas_limit,
                to,
                value,
                input,
            }
            .into(),
            EthTxType::Eip2930 => TxEip2930 {
                chain_id,
                nonce,
                gas_price: self.gas_price()?,
                gas_limit,
                to,
                value,
                access_list: self.alloy_access_list()?,
                input,
            }
            .into(),
            EthTxType::Eip1559 => {
                let (max_fee_per_gas, max_priority_fee_per_gas) = self.fees()?;
                TxEip1559 {
                    chain_id,
                    nonce,
                    gas_limit,
                    max_fee_per_gas,
                    max_priority_fee_per_gas,
                    to,
                    value,
                    access_list: self.alloy_access_list()?,
                    input,
                }
                .into()
            }
            EthTxType::Eip7702 => {
                let TxKind::Call(to) = to else {
                    return Err(bad(
                        "an eip7702 transaction needs `to`: EIP-7702 does not allow contract creation",
                    ));
                };
                let (max_fee_per_gas, max_priority_fee_per_gas) = self.fees()?;
                TxEip7702 {
                    chain_id,
                    nonce,
                    gas_limit,
                    max_fee_per_gas,
                    max_priority_fee_per_gas,
                    to,
                    value,
                    access_list: self.alloy_access_list()?,
                    authorization_list: self.alloy_authorizations()?,
                    input,
                }
                .into()
            }
        })
    }

    /// The raw signed transaction, ready to broadcast: EIP-2718 `type || rlp(...)` for the typed
    /// ones, the RLP list with EIP-155's `v` for a legacy one.
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
        Ok(tx.into_envelope(sig).encoded_2718())
    }
}

/// Validates a transaction and computes its signing hash; names every account an EIP-7702
/// authorisation in it hands to a delegate.
fn decode_tx(tx: &EthTransaction) -> Result<Decoded> {
    let alloy = tx.to_alloy()?;
    let to = alloy.to().map(|a| format!("{a:#x}"));
    let mut details = Vec::new();
    match tx.tx_type {
        EthTxType::Eip1559 => {}
        EthTxType::Legacy => details.push("legacy".to_string()),
        EthTxType::Eip2930 => details.push("EIP-2930".to_string()),
        EthTxType::Eip7702 => details.push("EIP-7702".to_string()),
    }
    details.push(format!("nonce {}", alloy.nonce()));
    details.push(format!("gas {}", alloy.gas_limit()));
    details.push(format!("{} bytes of data", alloy.input().len()));
    if let Some(list) = alloy.access_list().filter(|l| !l.is_empty()) {
        let keys: usize = list.iter().map(|item| item.storage_keys.len()).sum();
        details.push(format!(
            "access list of {} addresses and {keys} storage keys",
            list.len()
        ));
    }
    let mut summary = format!(
        "chain {}: send {} wei to {} ({})",
        tx.chain_id,
        alloy.value(),
        to.as_deref().unwrap_or("a new contract"),
        details.join(", ")
    );
    let mut delegations: Vec<String> = Vec::new();
    let mut changes = Vec::new();
    for (i, auth) in alloy
        .authorization_list()
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        let authority = auth.recover_authority().map_err(|e| {
            bad(format!(
                "authorization_list[{i}] does not recover to an account ({e}): its signature \
                 does not match its chain_id, address and nonce"
            ))
        })?;
        let everywhere = if auth.chain_id.is_zero() {
            " on every chain"
        } else {
            ""
        };
        // The zero address clears an account's delegation (EIP-7702): it hands the account to
        // no code, so it is no delegation a policy must allow.
        if auth.address == Address::ZERO {
            changes.push(format!(
                "clears the delegation of account {authority:#x}{everywhere}"
            ));
        } else {
            let delegate = format!("{:#x}", auth.address);
            changes.push(format!(
                "delegates account {authority:#x} to {delegate}{everywhere}"
            ));
            if !delegations.contains(&delegate) {
                delegations.push(delegate);
            }
        }
    }
    if !changes.is_empty() {
        summary.push_str(&format!(" and {} (EIP-7702)", changes.join(" and ")));
    }
    // What the call does (issue 17): token transfers and approvals decoded with alloy's ABI
    // decoder, anything else to a contract marked unknown for the policy.
    let (tokens, unknown_call) = match &to {
        None => (Vec::new(), false),
        Some(contract) => match crate::calls::decode_call(contract, alloy.input()) {
            crate::calls::CallEffect::None => (Vec::new(), false),
            crate::calls::CallEffect::Unknown => (Vec::new(), true),
            crate::calls::CallEffect::Token(actions) => (actions, false),
        },
    };
    for action in &tokens {
        summary.push_str(&format!("; {}", action.describe(None, None)));
    }
    if unknown_call {
        summary.push_str("; call data that is not a token transfer or approval");
    }
    Ok(Decoded {
        digest: alloy.signature_hash().0,
        chain_id: Some(tx.chain_id),
        to,
        value: Some(alloy.value()),
        // `max_fee_per_gas` is the gas price of a legacy or EIP-2930 transaction.
        max_fee: Some(
            U256::from(alloy.gas_limit()).saturating_mul(U256::from(alloy.max_fee_per_gas())),
        ),
        summary,
        tokens,
        unknown_call,
        delegations,
        btc: None,
    })
}

/// Validates an EIP-7702 authorisation of this wallet's account and computes its digest.
fn decode_authorization(authorization: &EthAuthorization) -> Result<Decoded> {
    let auth = authorization.to_alloy()?;
    let chain = match authorization.chain_id {
        0 => "on every chain (chain id 0)".to_string(),
        n => format!("on chain {n}"),
    };
    let nonce = authorization.nonce;
    let (summary, delegations) = if auth.address == Address::ZERO {
        (
            format!(
                "authorise clearing this account's delegation {chain} (EIP-7702), nonce {nonce}"
            ),
            Vec::new(),
        )
    } else {
        let delegate = format!("{:#x}", auth.address);
        (
            format!(
                "authorise delegating this account to {delegate} {chain} (EIP-7702), nonce {nonce}"
            ),
            vec![delegate],
        )
    };
    Ok(Decoded {
        digest: auth.signature_hash().0,
        chain_id: Some(authorization.chain_id),
        to: None,
        value: None,
        max_fee: None,
        summary,
        tokens: Vec::new(),
        unknown_call: false,
        delegations,
        btc: None,
    })
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
                tokens: Vec::new(),
                unknown_call: false,
                delegations: Vec::new(),
                btc: None,
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
                tokens: Vec::new(),
                unknown_call: false,
                delegations: Vec::new(),
                btc: None,
                summary: format!("personal message {shown:?}"),
            })
        }
        SignKind::EthTx { tx } => decode_tx(tx),
        SignKind::EthTypedData { typed_data } => {
            let mut d = crate::typed_data::decode_typed_data(typed_data)?;
            // A permit says what it lets happen, as a call does ("approve … UNLIMITED …").
            for action in &d.tokens {
                d.summary
                    .push_str(&format!("; {}", action.describe(None, None)));
            }
            Ok(Decoded {
                digest: d.digest,
                chain_id: Some(d.chain_id),
                // The contract the signature is for: what the policy's verifying_contracts
                // names.
                to: d.verifying_contract,
                value: None,
                max_fee: None,
                summary: d.summary,
                tokens: d.tokens,
                unknown_call: false,
                delegations: Vec::new(),
                btc: None,
            })
        }
        SignKind::EthAuthorization { authorization } => decode_authorization(authorization),
        SignKind::BtcPsbt {
            psbt,
            network,
            input,
        } => {
            let parsed = crate::btc::parse_psbt(psbt.as_bytes())?;
            let index = *input as usize;
            let digest = crate::btc::input_digest(&parsed, index)?;
            let tx = &parsed.unsigned_tx;
            let outputs: Vec<String> = tx
                .output
                .iter()
                .map(|o| {
                    let to = bitcoin::Address::from_script(&o.script_pubkey, network.to_bitcoin())
                        .map_or_else(
                            |_| format!("script {}", o.script_pubkey.to_hex_string()),
                            |a| a.to_string(),
                        );
                    format!("{} sat to {to}", o.value.to_sat())
                })
                .collect();
            Ok(Decoded {
                digest,
                chain_id: None,
                to: None,
                value: None,
                max_fee: None,
                summary: format!(
                    "Bitcoin ({network}) transaction {}: input {index} of {}; outputs: {}",
                    tx.compute_txid(),
                    tx.input.len(),
                    outputs.join(", ")
                ),
                tokens: Vec::new(),
                unknown_call: false,
                delegations: Vec::new(),
                btc: None,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    //! Vectors computed independently with eth-account 0.14 (Python), keys `0x46…46` (the
    //! EIP-155 example's sender) and `0x01…01` (the authority of the authorisations); the
    //! legacy one is EIP-155's own example.

    use super::*;
    use tessera_core::ecdsa::PublicKey;

    /// The public key of `0x46…46`, the sender of every transaction here.
    const SENDER: &str = "024bc2a31265153f07e70e0bab08724e6b85e217f8cd628ceb62974247bb493382";
    /// The public key of `0x01…01` and its address, the authority of the authorisations.
    const AUTHORITY: &str = "031b84c5567b126440995d3ed5aaba0565d71e1834604819ff9c17f5e9d5dd078f";
    const AUTHORITY_ADDRESS: &str = "0x1a642f0e3c3af545e7acbd38b07251b3990914f1";
    const DELEGATE: &str = "0x7777777777777777777777777777777777777777";

    fn tx(json: serde_json::Value) -> EthTransaction {
        serde_json::from_value(json).unwrap()
    }

    fn decode_tx_json(json: serde_json::Value) -> Result<Decoded> {
        decode(&SignKind::EthTx { tx: tx(json) })
    }

    fn error(json: serde_json::Value) -> String {
        match decode_tx_json(json) {
            Err(Error::InvalidParameters(why)) => why,
            other => panic!("not refused: {other:?}"),
        }
    }

    fn signature(key: &str, digest: &[u8; 32], r: &str, s: &str) -> Signature {
        let mut rb = [0u8; 32];
        let mut sb = [0u8; 32];
        hex::decode_to_slice(r, &mut rb).unwrap();
        hex::decode_to_slice(s, &mut sb).unwrap();
        Signature::from_scalars(rb, sb, digest, &PublicKey::from_hex(key).unwrap()).unwrap()
    }

    /// Decodes `json`, checks its digest, signs it with eth-account's `(r, s)` and checks the
    /// raw transaction.
    fn vector(json: serde_json::Value, digest: &str, r: &str, s: &str, raw: &str) -> Decoded {
        let decoded = decode_tx_json(json.clone()).unwrap();
        assert_eq!(hex::encode(decoded.digest), digest);
        let sig = signature(SENDER, &decoded.digest, r, s);
        assert_eq!(hex::encode(tx(json).signed_raw(&sig).unwrap()), raw);
        decoded
    }

    fn authorization_json(
        chain_id: u64,
        nonce: u64,
        y_parity: u8,
        r: &str,
        s: &str,
    ) -> serde_json::Value {
        serde_json::json!({
            "chain_id": chain_id, "address": DELEGATE, "nonce": nonce,
            "y_parity": y_parity, "r": format!("0x{r}"), "s": format!("0x{s}"),
        })
    }

    const AUTH_R: &str = "8ad53ef3ee46072b0e5d524035a4801e9b202bebc579e68438a08825fa50978d";
    const AUTH_S: &str = "3458d683ed24d53bdce40f4a9003d5afccc5d702d4c01f776dd9dbf2a6559995";
    const AUTH0_R: &str = "43726b26361c118a2660c59fb8cb22e15fa0752f273d10ba1a71b7da69d5e959";
    const AUTH0_S: &str = "574b9f753b76c44ed50af8e5c3acdccc9cf6874596835438b0c657b228e4c584";

    /// EIP-7702 on chain 1: the authority's chain-1 authorisation (nonce 4) and its every-chain
    /// one (nonce 5), both to [`DELEGATE`].
    fn tx_7702() -> serde_json::Value {
        serde_json::json!({
            "type": "eip7702", "chain_id": 1, "nonce": 2,
            "max_fee_per_gas": "20000000000", "max_priority_fee_per_gas": "2000000000",
            "gas_limit": 100000, "to": "0x9999999999999999999999999999999999999999",
            "value": "7", "data": "0x",
            "authorization_list": [
                authorization_json(1, 4, 1, AUTH_R, AUTH_S),
                authorization_json(0, 5, 1, AUTH0_R, AUTH0_S),
            ],
        })
    }

    fn access_list() -> serde_json::Value {
        serde_json::json!([
            {"address": "0xdededededededededededededededededededede",
             "storage_keys": [format!("0x{}01", "00".repeat(31)), format!("0x{}", "ab".repeat(32))]},
            {"address": "0x0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b", "storage_keys": []},
        ])
    }

    #[test]
    fn legacy_is_eip155_signed() {
        let decoded = vector(
            serde_json::json!({
                "type": "legacy", "chain_id": 1, "nonce": 9, "gas_price": "20000000000",
                "gas_limit": 21000, "to": "0x3535353535353535353535353535353535353535",
                "value": "1000000000000000000", "data": "",
            }),
            "daf5a779ae972f972197303d7b574746c7ef83eadac0f2791ad23db92e4c8e53",
            "28ef61340bd939bc2195fe537567866003e1a15d3c71ff63e1590620aa636276",
            "67cbe9d8997f761aecb703304b3800ccf555c9f3dc64214b297fb1966a3b6d83",
            "f86c098504a817c800825208943535353535353535353535353535353535353535880de0b6b3a76400008025a028ef61340bd939bc2195fe537567866003e1a15d3c71ff63e1590620aa636276a067cbe9d8997f761aecb703304b3800ccf555c9f3dc64214b297fb1966a3b6d83",
        );
        assert_eq!(decoded.chain_id, Some(1));
        assert_eq!(
            decoded.max_fee,
            Some(U256::from(21_000u64 * 20_000_000_000))
        );
        assert_eq!(
            decoded.value,
            Some(U256::from(10u64).pow(U256::from(18u64)))
        );
        assert!(
            decoded.summary.contains("(legacy, nonce 9"),
            "{}",
            decoded.summary
        );
        assert!(decoded.delegations.is_empty());
    }

    #[test]
    fn eip2930_with_an_access_list() {
        let decoded = vector(
            serde_json::json!({
                "type": "eip2930", "chain_id": 1, "nonce": 3, "gas_price": "30000000000",
                "gas_limit": 60000, "to": "0x3535353535353535353535353535353535353535",
                "value": "12345", "data": "0xa9059cbb", "access_list": access_list(),
            }),
            "f53072be95e6e225fe4973e0c11c3deba9855cc069db480a5b5ed884831120c4",
            "1a6c74755143fc98ad6942b1965204ad0c744ed3de856f95f7bc639a9edd87dd",
            "01301f3e9236e3089947e419982a22438dbbe984ee8a57d56ba25bc9e2211fe5",
            "01f8df01038506fc23ac0082ea6094353535353535353535353535353535353535353582303984a9059cbbf872f85994dedededededededededededededededededededef842a00000000000000000000000000000000000000000000000000000000000000001a0ababababababababababababababababababababababababababababababababd6940b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0bc001a01a6c74755143fc98ad6942b1965204ad0c744ed3de856f95f7bc639a9edd87dda001301f3e9236e3089947e419982a22438dbbe984ee8a57d56ba25bc9e2211fe5",
        );
        assert_eq!(
            decoded.max_fee,
            Some(U256::from(60_000u64 * 30_000_000_000))
        );
        assert!(
            decoded.summary.contains("EIP-2930")
                && decoded
                    .summary
                    .contains("access list of 2 addresses and 2 storage keys"),
            "{}",
            decoded.summary
        );
    }

    #[test]
    fn eip1559_contract_creation_with_an_access_list() {
        let mut list = access_list();
        list.as_array_mut().unwrap().truncate(1);
        let decoded = vector(
            serde_json::json!({
                "type": "eip1559", "chain_id": 10, "nonce": 0,
                "max_fee_per_gas": "30000000000", "max_priority_fee_per_gas": "1000000000",
                "gas_limit": 50000, "value": "0", "data": "0x6080", "access_list": list,
            }),
            "e3a79f52cfbe1890bed5662970b54084ab46daae6ce2607b3b88642e697c60c4",
            "7e95704ed27d46e48d9e7a00cb12e33e8e3c00561eaf18afb16f2b04bf8af65e",
            "2c76b65919b06fb78c9f61ffae5b761aeb4c3b1ccf16d3d4ab1aaff51666a5fc",
            "02f8b50a80843b9aca008506fc23ac0082c3508080826080f85bf85994dedededededededededededededededededededef842a00000000000000000000000000000000000000000000000000000000000000001a0abababababababababababababababababababababababababababababababab01a07e95704ed27d46e48d9e7a00cb12e33e8e3c00561eaf18afb16f2b04bf8af65ea02c76b65919b06fb78c9f61ffae5b761aeb4c3b1ccf16d3d4ab1aaff51666a5fc",
        );
        assert_eq!(decoded.to, None);
        assert_eq!(
            decoded.max_fee,
            Some(U256::from(50_000u64 * 30_000_000_000))
        );
        assert!(
            decoded.summary.contains("to a new contract"),
            "{}",
            decoded.summary
        );
    }

    #[test]
    fn eip7702_names_every_delegation() {
        let decoded = vector(
            tx_7702(),
            "6bb97589389101f838123e271b1924f022a3352223ce9927d2e99376c4895f3c",
            "8fecd5d27aaa38fd7aefb4941d58ca6e69bb0739cb0730c03334420cf77e6f16",
            "5c99814a3ee69c7ad2eee198e8613fdc71f59206b964d1250c5e98f137e8c856",
            "04f90126010284773594008504a817c800830186a09499999999999999999999999999999999999999990780c0f8b8f85a019477777777777777777777777777777777777777770401a08ad53ef3ee46072b0e5d524035a4801e9b202bebc579e68438a08825fa50978da03458d683ed24d53bdce40f4a9003d5afccc5d702d4c01f776dd9dbf2a6559995f85a809477777777777777777777777777777777777777770501a043726b26361c118a2660c59fb8cb22e15fa0752f273d10ba1a71b7da69d5e959a0574b9f753b76c44ed50af8e5c3acdccc9cf6874596835438b0c657b228e4c58401a08fecd5d27aaa38fd7aefb4941d58ca6e69bb0739cb0730c03334420cf77e6f16a05c99814a3ee69c7ad2eee198e8613fdc71f59206b964d1250c5e98f137e8c856",
        );
        // Both authorisations name the same delegate: the policy sees it once.
        assert_eq!(decoded.delegations, vec![DELEGATE.to_string()]);
        assert_eq!(
            decoded.to.as_deref(),
            Some("0x9999999999999999999999999999999999999999")
        );
        assert_eq!(
            decoded.max_fee,
            Some(U256::from(100_000u64 * 20_000_000_000))
        );
        assert!(
            decoded.summary.ends_with(&format!(
                "and delegates account {AUTHORITY_ADDRESS} to {DELEGATE} and delegates account \
                 {AUTHORITY_ADDRESS} to {DELEGATE} on every chain (EIP-7702)"
            )),
            "{}",
            decoded.summary
        );
    }

    #[test]
    fn an_authorisation_to_the_zero_address_clears_a_delegation() {
        // Signed with eth-account by the authority: chain 1, address 0, nonce 6.
        let zero = format!("0x{}", "00".repeat(20));
        let mut json = tx_7702();
        json["authorization_list"] = serde_json::json!([{
            "chain_id": 1, "address": zero, "nonce": 6, "y_parity": 0,
            "r": "0x43b2d84b35d30d88ecedf170ea86f79cea825a50861efccadacd3e5dbc5ff8ae",
            "s": "0x4d432367dc0b1e0093bd5137eaa0f83f7e57d6451e55259aa0ab930ba9ecbfc2",
        }]);
        let decoded = decode_tx_json(json).unwrap();
        assert!(decoded.delegations.is_empty());
        assert!(
            decoded.summary.ends_with(&format!(
                "and clears the delegation of account {AUTHORITY_ADDRESS} (EIP-7702)"
            )),
            "{}",
            decoded.summary
        );
    }

    #[test]
    fn type_is_eip1559_when_absent_and_old_requests_keep_their_bytes() {
        let old = r#"{"chain_id":1,"nonce":7,"max_fee_per_gas":"30000000000","max_priority_fee_per_gas":"1000000000","gas_limit":21000,"to":"0x00000000000000000000000000000000000000aa","value":"1000000000000000000","data":"0x"}"#;
        let parsed: EthTransaction = serde_json::from_str(old).unwrap();
        assert_eq!(parsed.tx_type, EthTxType::Eip1559);
        assert_eq!(serde_json::to_string(&parsed).unwrap(), old);
        let explicit: EthTransaction =
            serde_json::from_str(&old.replacen('{', r#"{"type":"eip1559","#, 1)).unwrap();
        assert_eq!(explicit, parsed);
        let legacy = tx(serde_json::json!({
            "type": "legacy", "chain_id": 1, "nonce": 0, "gas_price": "1", "gas_limit": 21000,
            "value": "0",
        }));
        let text = serde_json::to_string(&legacy).unwrap();
        assert!(text.starts_with(r#"{"type":"legacy","#), "{text}");
        assert_eq!(
            serde_json::from_str::<EthTransaction>(&text).unwrap(),
            legacy
        );
        assert_eq!(
            serde_json::to_string(&tx(tx_7702()))
                .and_then(|t| serde_json::from_str(&t))
                .ok(),
            Some(tx(tx_7702()))
        );
    }

    fn legacy() -> serde_json::Value {
        serde_json::json!({
            "type": "legacy", "chain_id": 1, "nonce": 0, "gas_price": "1000", "gas_limit": 21000,
            "to": "0x3535353535353535353535353535353535353535", "value": "1",
        })
    }

    fn eip1559() -> serde_json::Value {
        serde_json::json!({
            "chain_id": 1, "nonce": 0, "max_fee_per_gas": "1000",
            "max_priority_fee_per_gas": "1", "gas_limit": 21000,
            "to": "0x3535353535353535353535353535353535353535", "value": "1",
        })
    }

    fn with(
        mut json: serde_json::Value,
        field: &str,
        value: serde_json::Value,
    ) -> serde_json::Value {
        json[field] = value;
        json
    }

    fn without(mut json: serde_json::Value, field: &str) -> serde_json::Value {
        json.as_object_mut().unwrap().remove(field);
        json
    }

    #[test]
    fn fields_of_another_type_are_refused_by_name() {
        let e = error(with(eip1559(), "gas_price", "1".into()));
        assert!(
            e.starts_with("gas_price does not belong to an eip1559 transaction")
                && e.contains("`type` is eip1559 when absent"),
            "{e}"
        );
        let e = error(with(
            with(legacy(), "max_fee_per_gas", "1".into()),
            "max_priority_fee_per_gas",
            "1".into(),
        ));
        assert!(
            e.starts_with(
                "max_fee_per_gas, max_priority_fee_per_gas do not belong to a legacy transaction"
            ),
            "{e}"
        );
        let e = error(with(legacy(), "access_list", serde_json::json!([])));
        assert!(
            e.starts_with("access_list does not belong to a legacy transaction (access lists"),
            "{e}"
        );
        let e = error(with(eip1559(), "authorization_list", serde_json::json!([])));
        assert!(
            e.starts_with("authorization_list does not belong to an eip1559 transaction"),
            "{e}"
        );
        let e = error(with(tx_7702(), "gas_price", "1".into()));
        assert!(
            e.starts_with("gas_price does not belong to an eip7702 transaction"),
            "{e}"
        );
        let e = error(with(
            with(eip1559(), "type", "eip2930".into()),
            "access_list",
            access_list(),
        ));
        assert!(
            e.starts_with("max_fee_per_gas, max_priority_fee_per_gas do not belong to an eip2930"),
            "{e}"
        );
    }

    #[test]
    fn fields_the_type_needs_are_asked_for() {
        assert_eq!(
            error(without(legacy(), "gas_price")),
            "a legacy transaction needs gas_price"
        );
        assert_eq!(
            error(without(
                with(legacy(), "type", "eip2930".into()),
                "gas_price"
            )),
            "an eip2930 transaction needs gas_price"
        );
        assert_eq!(
            error(without(
                without(tx_7702(), "max_fee_per_gas"),
                "max_priority_fee_per_gas"
            )),
            "an eip7702 transaction needs max_fee_per_gas and max_priority_fee_per_gas"
        );
        assert_eq!(
            error(without(tx_7702(), "authorization_list")),
            "an eip7702 transaction needs authorization_list"
        );
        assert!(
            error(with(tx_7702(), "authorization_list", serde_json::json!([])))
                .contains("at least one authorisation"),
        );
        assert!(
            error(without(tx_7702(), "to")).contains("EIP-7702 does not allow contract creation")
        );
        assert!(error(with(legacy(), "chain_id", 0.into())).contains("EIP-155"));
        assert_eq!(
            error(with(tx_7702(), "chain_id", 0.into())),
            "chain_id must not be 0"
        );
        assert_eq!(
            error(with(
                tx_7702(),
                "max_priority_fee_per_gas",
                "20000000001".into()
            )),
            "max_priority_fee_per_gas exceeds max_fee_per_gas"
        );
        assert_eq!(
            error(with(legacy(), "gas_price", "0x10".into())),
            "gas_price must be a decimal amount in wei"
        );
    }

    #[test]
    fn unknown_fields_and_types_do_not_parse() {
        for (json, expected) in [
            (
                with(eip1559(), "gasPrice", "1".into()),
                "unknown field `gasPrice`",
            ),
            (
                with(eip1559(), "type", "eip4844".into()),
                "unknown variant `eip4844`",
            ),
            (with(eip1559(), "type", 2.into()), "expected"),
            (
                with(
                    eip1559(),
                    "access_list",
                    serde_json::json!([{"address": DELEGATE, "keys": []}]),
                ),
                "unknown field `keys`",
            ),
            (
                with(
                    tx_7702(),
                    "authorization_list",
                    serde_json::json!([{"chain_id": 1, "address": DELEGATE, "nonce": 0, "v": 27, "r": "0x1", "s": "0x1"}]),
                ),
                "unknown field `v`",
            ),
        ] {
            let e = serde_json::from_value::<EthTransaction>(json)
                .unwrap_err()
                .to_string();
            assert!(e.contains(expected), "{e}");
        }
    }

    #[test]
    fn access_lists_are_checked_and_limited() {
        let entry = |keys: usize| serde_json::json!({"address": DELEGATE, "storage_keys": vec![format!("0x{}", "11".repeat(32)); keys]});
        let list =
            |entries: usize, keys: usize| serde_json::Value::Array(vec![entry(keys); entries]);
        let tx = |l| with(eip1559(), "access_list", l);
        decode_tx_json(tx(list(
            MAX_ACCESS_LIST_ENTRIES,
            MAX_STORAGE_KEYS_PER_ENTRY,
        )))
        .unwrap();
        assert!(
            error(tx(list(MAX_ACCESS_LIST_ENTRIES + 1, 0)))
                .contains("access_list has 65 entries; at most 64")
        );
        assert!(
            error(tx(list(1, MAX_STORAGE_KEYS_PER_ENTRY + 1)))
                .contains("access_list[0].storage_keys has 65 keys")
        );
        let bad_key =
            serde_json::json!([entry(0), {"address": DELEGATE, "storage_keys": ["0x01"]}]);
        assert_eq!(
            error(tx(bad_key)),
            "access_list[1].storage_keys[0] must be 32 bytes of 0x-hex"
        );
        let unprefixed =
            serde_json::json!([{"address": DELEGATE, "storage_keys": ["11".repeat(32)]}]);
        assert!(error(tx(unprefixed)).contains("storage_keys[0] must be 32 bytes"));
        let bad_address = serde_json::json!([{"address": "0x1234", "storage_keys": []}]);
        assert_eq!(
            error(tx(bad_address)),
            "access_list[0].address must be a 20-byte 0x-hex address"
        );
    }

    #[test]
    fn authorisation_lists_are_checked_and_limited() {
        let list =
            |auths: Vec<serde_json::Value>| with(tx_7702(), "authorization_list", auths.into());
        let good = authorization_json(1, 4, 1, AUTH_R, AUTH_S);
        decode_tx_json(list(vec![good.clone(); MAX_AUTHORIZATIONS])).unwrap();
        assert!(
            error(list(vec![good.clone(); MAX_AUTHORIZATIONS + 1]))
                .contains("authorization_list has 17 authorisations; at most 16")
        );
        // Another chain's authorisation (its signature is valid for chain 5: not the point).
        let e = error(list(vec![
            good.clone(),
            with(good.clone(), "chain_id", 5.into()),
        ]));
        assert!(
            e.starts_with(
                "authorization_list[1].chain_id is 5, but the transaction is for chain 1"
            ),
            "{e}"
        );
        for (field, value, expected) in [
            (
                "y_parity",
                serde_json::json!(2),
                "authorization_list[0].y_parity must be 0 or 1",
            ),
            (
                "r",
                serde_json::json!(AUTH_R),
                "authorization_list[0].r must be 0x-hex of at most 32 bytes",
            ),
            (
                "s",
                serde_json::json!(format!("0x00{AUTH_S}")),
                "authorization_list[0].s must be 0x-hex of at most 32 bytes",
            ),
            (
                "s",
                serde_json::json!("0xzz"),
                "authorization_list[0].s must be 0x-hex",
            ),
            (
                "address",
                serde_json::json!("0x77"),
                "authorization_list[0].address must be a 20-byte",
            ),
            (
                "nonce",
                serde_json::json!(u64::MAX),
                "authorization_list[0].nonce must be below 2^64 - 1",
            ),
        ] {
            let e = error(list(vec![with(good.clone(), field, value)]));
            assert!(e.starts_with(expected), "{field}: {e}");
        }
        // Well-formed but signed over other fields: ECDSA recovers another account, which the
        // summary names (the authority is who the signature says, not who was meant).
        let other = decode_tx_json(list(vec![with(good.clone(), "nonce", 5.into())])).unwrap();
        assert!(
            !other.summary.contains(AUTHORITY_ADDRESS),
            "{}",
            other.summary
        );
        assert_eq!(other.delegations, vec![DELEGATE.to_string()]);
        // A zero r, and a high s (EIP-2): no authority recovers.
        for (field, value) in [
            ("r", serde_json::json!("0x0")),
            (
                "s",
                serde_json::json!(
                    "0xfffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364140"
                ),
            ),
        ] {
            let e = error(list(vec![with(good.clone(), field, value)]));
            assert!(
                e.starts_with("authorization_list[0] does not recover to an account"),
                "{field}: {e}"
            );
        }
        // The parity is part of the signature: flipped, another account (or none) recovers.
        let flipped = decode_tx_json(list(vec![with(good, "y_parity", 0.into())]));
        assert!(flipped.is_err() || !flipped.unwrap().summary.contains(AUTHORITY_ADDRESS));
    }

    #[test]
    fn an_authorisation_of_this_account() {
        let authorization = EthAuthorization {
            chain_id: 1,
            address: DELEGATE.to_uppercase().replacen("0X", "0x", 1),
            nonce: 4,
        };
        let decoded = decode(&SignKind::EthAuthorization {
            authorization: authorization.clone(),
        })
        .unwrap();
        assert_eq!(
            hex::encode(decoded.digest),
            "4853d9e0141ccfd6cdaa04c76c06868c1d1f89d47a3862f8f6d5028303edabdb"
        );
        assert_eq!(decoded.delegations, vec![DELEGATE.to_string()]);
        assert_eq!(decoded.chain_id, Some(1));
        assert_eq!(
            (decoded.to, decoded.value, decoded.max_fee),
            (None, None, None)
        );
        assert_eq!(
            decoded.summary,
            format!(
                "authorise delegating this account to {DELEGATE} on chain 1 (EIP-7702), nonce 4"
            )
        );
        // Signed, it is the authorisation eth-account made, and goes into a 7702 transaction.
        let sig = signature(AUTHORITY, &decoded.digest, AUTH_R, AUTH_S);
        let signed = authorization.signed(&sig).unwrap();
        assert_eq!(
            serde_json::to_value(&signed).unwrap(),
            authorization_json(1, 4, 1, AUTH_R, AUTH_S)
        );
        let in_tx = with(tx_7702(), "authorization_list", serde_json::json!([signed]));
        assert!(
            decode_tx_json(in_tx)
                .unwrap()
                .summary
                .contains(AUTHORITY_ADDRESS)
        );
        // `r` and `s` are written as quantities, without leading zeros (as eth-account and
        // alloy write them): the EIP-2930 vector's `s` starts with a zero digit.
        let digest: [u8; 32] =
            hex::decode("f53072be95e6e225fe4973e0c11c3deba9855cc069db480a5b5ed884831120c4")
                .unwrap()
                .try_into()
                .unwrap();
        let zero_led = signature(
            SENDER,
            &digest,
            "1a6c74755143fc98ad6942b1965204ad0c744ed3de856f95f7bc639a9edd87dd",
            "01301f3e9236e3089947e419982a22438dbbe984ee8a57d56ba25bc9e2211fe5",
        );
        assert_eq!(
            authorization.signed(&zero_led).unwrap().s,
            "0x1301f3e9236e3089947e419982a22438dbbe984ee8a57d56ba25bc9e2211fe5"
        );

        let everywhere = decode(&SignKind::EthAuthorization {
            authorization: EthAuthorization {
                chain_id: 0,
                address: DELEGATE.into(),
                nonce: 5,
            },
        })
        .unwrap();
        assert_eq!(
            hex::encode(everywhere.digest),
            "7df4b159275bb8f794439b9a0cd11e77606d04fc246f8e1ff3ae5f6c9735400f"
        );
        assert_eq!(everywhere.chain_id, Some(0));
        assert!(
            everywhere.summary.contains("on every chain (chain id 0)"),
            "{}",
            everywhere.summary
        );

        let clear = decode(&SignKind::EthAuthorization {
            authorization: EthAuthorization {
                chain_id: 1,
                address: format!("0x{}", "00".repeat(20)),
                nonce: 1,
            },
        })
        .unwrap();
        assert!(clear.delegations.is_empty());
        assert!(
            clear
                .summary
                .starts_with("authorise clearing this account's delegation on chain 1")
        );

        for (authorization, expected) in [
            (
                EthAuthorization {
                    chain_id: 1,
                    address: "0x77".into(),
                    nonce: 0,
                },
                "address must be a 20-byte 0x-hex address",
            ),
            (
                EthAuthorization {
                    chain_id: 1,
                    address: DELEGATE.into(),
                    nonce: u64::MAX,
                },
                "nonce must be below 2^64 - 1 (EIP-7702)",
            ),
        ] {
            let e = decode(&SignKind::EthAuthorization { authorization }).unwrap_err();
            assert!(
                matches!(&e, Error::InvalidParameters(m) if m == expected),
                "{e:?}"
            );
        }
        let json = r#"{"chain_id":1,"address":"0x7777777777777777777777777777777777777777","nonce":4,"y_parity":1}"#;
        let e = serde_json::from_str::<EthAuthorization>(json)
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field `y_parity`"), "{e}");
    }
}
