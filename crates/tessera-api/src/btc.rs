//! Bitcoin transactions as PSBTs (BIP-174), read and completed with the `bitcoin` crate.
//!
//! A device hands the server a PSBT; the server does not take the device's word for anything in
//! it. [`parse_psbt`] reads it (binary or base64, bounded); [`plan`] decides which inputs are this
//! wallet's, computes each one's signature hash itself — BIP-143 for P2WPKH, the legacy
//! algorithm for P2PKH, both by the crate's `SighashCache` — and describes the outputs, amounts
//! and fee for the policy and for people ([`BtcPlan::summary`]); after the threshold signing,
//! [`finalize`] checks every signature against the recomputed hash and builds the final
//! scriptSig or witness (the BIP-174 Finalizer) and, when every input is final, the transaction
//! (the Extractor).
//!
//! What is refused, and why:
//! - sighash types other than `SIGHASH_ALL`: the others let someone change the transaction after
//!   it was signed (add inputs, redirect outputs), so what the policy saw would not be what is
//!   spent;
//! - Taproot (BIP-341) inputs of the wallet: a key-path spend needs a BIP-340 Schnorr signature,
//!   and this wallet's threshold protocol (DKLs23) makes ECDSA signatures only;
//! - P2SH, P2WSH and every other script of the wallet but native P2WPKH and P2PKH;
//! - inputs without the output they spend (`witness_utxo` or `non_witness_utxo`): the fee cannot
//!   be known without every input's amount; a legacy (P2PKH) input of the wallet needs the whole
//!   previous transaction, since a legacy signature does not commit to the amount.
//!
//! An input is the wallet's when the output it spends pays (P2WPKH or P2PKH) to the wallet's key
//! at a non-hardened path: the path of the input's `bip32_derivation` entry that carries the
//! wallet's master fingerprint (the key derived there must be the entry's key), or else the
//! request's default path. Inputs of other wallets are left alone; a joint transaction is then
//! returned partly finalised for the others to complete.

use std::collections::BTreeSet;

use bitcoin::base64::Engine as _;
use bitcoin::base64::engine::general_purpose::STANDARD as BASE64;
use bitcoin::bip32::{ChainCode, ChildNumber, Fingerprint, KeySource, Xpub};
use bitcoin::consensus::encode::serialize_hex;
use bitcoin::psbt::Input;
/// A partially signed transaction (BIP-174), as [`parse_psbt`] reads it.
pub use bitcoin::psbt::Psbt;
use bitcoin::script::Builder;
use bitcoin::secp256k1::{self, Message, Secp256k1, VerifyOnly};
use bitcoin::sighash::{EcdsaSighashType, SighashCache};
use bitcoin::{
    Address, Amount, CompressedPublicKey, Denomination, NetworkKind, ScriptBuf, Transaction, TxOut,
    Txid, Witness, ecdsa,
};
use serde::{Deserialize, Serialize};
use tessera_core::DerivationPath;
use tessera_core::error::{Error, Result};

/// Largest PSBT accepted, in bytes (binary; base64 text may be 4/3 of it).
pub const MAX_PSBT_BYTES: usize = 1024 * 1024;
/// Most inputs, and most outputs, of one PSBT.
pub const MAX_PSBT_IO: usize = 256;
/// Deepest derivation path a PSBT may name for the wallet's key. Wallets use five levels; the
/// bound keeps a hostile PSBT from making the server derive keys for long.
pub const MAX_PSBT_PATH_DEPTH: usize = 32;
/// Longest base64 text accepted (`MAX_PSBT_BYTES` encoded, plus whitespace around it).
const MAX_PSBT_TEXT: usize = MAX_PSBT_BYTES / 3 * 4 + 4 + 1024;
const PSBT_MAGIC: &[u8] = b"psbt\xff";
/// An upper bound of a low-S DER signature with its sighash byte (BIP-66: 2 + 2 + 33 + 2 + 32,
/// plus one), used to estimate the size of the signed transaction.
const MAX_SIG_BYTES: usize = 72;

fn bad(why: impl Into<String>) -> Error {
    Error::InvalidParameters(why.into())
}

/// The network a PSBT's addresses are written for (and its extended keys' version bytes).
pub use crate::keys::Network as BtcNetwork;

/// The wallet's root public key: BIP-32's master key, public half (the private half never
/// exists). Its extended key is `Xpub { depth 0, parent fingerprint 0, child 0 }` and its master
/// fingerprint, which PSBTs cite, is the first four bytes of HASH160 of the compressed key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WalletKey {
    /// Compressed SEC1 public key.
    pub public_key: [u8; 33],
    /// BIP-32 chain code.
    pub chain_code: [u8; 32],
}

impl WalletKey {
    /// The root extended public key for `network`.
    ///
    /// # Errors
    /// [`Error::InvalidParameters`] when `public_key` is not a point of secp256k1.
    pub fn xpub(&self, network: BtcNetwork) -> Result<Xpub> {
        let public_key = secp256k1::PublicKey::from_slice(&self.public_key)
            .map_err(|_| bad("the wallet's public key is not a compressed secp256k1 point"))?;
        Ok(Xpub {
            network: NetworkKind::from(network.to_bitcoin()),
            depth: 0,
            parent_fingerprint: Fingerprint::default(),
            child_number: ChildNumber::Normal { index: 0 },
            public_key,
            chain_code: ChainCode::from(self.chain_code),
        })
    }

    /// The master key fingerprint (BIP-32).
    ///
    /// # Errors
    /// [`Error::InvalidParameters`] when `public_key` is not a point of secp256k1.
    pub fn fingerprint(&self) -> Result<[u8; 4]> {
        Ok(self.xpub(BtcNetwork::Mainnet)?.fingerprint().to_bytes())
    }
}

/// The kinds of script this wallet signs for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "kebab-case")]
pub enum BtcScriptType {
    /// Native SegWit v0 pay-to-witness-public-key-hash (BIP-141), signed per BIP-143.
    P2wpkh,
    /// Legacy pay-to-public-key-hash.
    P2pkh,
}

impl BtcScriptType {
    fn name(self) -> &'static str {
        match self {
            BtcScriptType::P2wpkh => "P2WPKH",
            BtcScriptType::P2pkh => "P2PKH",
        }
    }
}

/// An input the wallet signs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InputToSign {
    /// The input's index in the transaction.
    pub index: usize,
    /// Where the signing key is, below the wallet's root key.
    pub path: DerivationPath,
    /// The signing key (compressed), the root key derived along `path`.
    pub public_key: [u8; 33],
    /// The digest to sign (BIP-143 for P2WPKH, legacy for P2PKH).
    pub sighash: [u8; 32],
    /// The kind of output spent.
    pub script_type: BtcScriptType,
    /// Always `SIGHASH_ALL` (others are refused).
    pub sighash_type: EcdsaSighashType,
    /// The amount spent, satoshis.
    pub amount_sat: u64,
}

/// An output, as a policy and a person see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedOutput {
    /// The output's index.
    pub index: usize,
    /// Its address on the plan's network; `None` for OP_RETURN and other non-standard scripts.
    pub address: Option<String>,
    /// Its script, hex.
    pub script_hex: String,
    /// The amount, satoshis.
    pub amount_sat: u64,
    /// It pays back to this wallet (a key at a path in the output's `bip32_derivation` with the
    /// wallet's fingerprint, verified by derivation, or at the request's default path).
    pub is_change: bool,
    /// It is an OP_RETURN (data carrier) output.
    pub is_op_return: bool,
}

/// What signing a PSBT would do: which inputs the wallet signs and the digest of each, where
/// the money goes and the fee.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BtcPlan {
    /// The network the addresses are written for.
    pub network: BtcNetwork,
    /// The transaction's id (it does not change when the inputs are signed).
    pub txid: Txid,
    /// How many inputs the transaction has.
    pub input_count: usize,
    /// The wallet's inputs, in order.
    pub to_sign: Vec<InputToSign>,
    /// The inputs that are not the wallet's (left for their owners to sign).
    pub other_inputs: Vec<usize>,
    /// The inputs already finalised (signed before, by anyone): left as they are.
    pub final_inputs: Vec<usize>,
    /// Every output.
    pub outputs: Vec<PlannedOutput>,
    /// The sum of every input's amount, satoshis.
    pub total_in_sat: u64,
    /// The sum of every output's amount, satoshis.
    pub total_out_sat: u64,
    /// The fee, satoshis (`total_in_sat − total_out_sat`).
    pub fee_sat: u64,
    /// The sum of the wallet's inputs, satoshis.
    pub wallet_in_sat: u64,
    /// The sum of the outputs back to the wallet, satoshis.
    pub change_sat: u64,
    /// An upper bound of the signed transaction's virtual size (BIP-141), when every input's
    /// script is known (P2WPKH, P2PKH, or already final); `None` otherwise.
    pub vsize_estimate: Option<u64>,
    /// One line for people and the audit log.
    pub summary: String,
}

impl BtcPlan {
    /// What leaves the wallet: its inputs less the outputs back to it (0 when it receives more
    /// than it spends, as in a joint transaction). This is what amount limits apply to.
    #[must_use]
    pub fn spent_from_wallet_sat(&self) -> u64 {
        self.wallet_in_sat.saturating_sub(self.change_sat)
    }

    /// The outputs that do not pay back to the wallet (destinations, for an allow-list).
    pub fn external_outputs(&self) -> impl Iterator<Item = &PlannedOutput> {
        self.outputs.iter().filter(|o| !o.is_change)
    }
}

/// Reads a PSBT: binary (starting with the magic `psbt\xff`) or base64 text, whitespace around
/// it ignored. At most [`MAX_PSBT_BYTES`], [`MAX_PSBT_IO`] inputs and as many outputs; nothing
/// may follow it.
///
/// # Errors
/// [`Error::InvalidParameters`] saying what is wrong.
pub fn parse_psbt(text_or_bytes: &[u8]) -> Result<Psbt> {
    let decoded;
    let bytes = if text_or_bytes.starts_with(PSBT_MAGIC) {
        text_or_bytes
    } else {
        if text_or_bytes.len() > MAX_PSBT_TEXT {
            return Err(bad(format!(
                "the PSBT is too large: {} bytes of text, at most {MAX_PSBT_BYTES} bytes of PSBT are accepted",
                text_or_bytes.len()
            )));
        }
        let text = text_or_bytes.trim_ascii();
        if text.is_empty() {
            return Err(bad("the PSBT is empty"));
        }
        if text.starts_with(b"70736274ff") {
            return Err(bad(
                "the PSBT is hex: give it in base64 (as Bitcoin Core's walletprocesspsbt prints it) or binary",
            ));
        }
        decoded = BASE64.decode(text).map_err(|e| {
            bad(format!(
                "the PSBT is neither binary (psbt\\xff…) nor valid base64: {e}"
            ))
        })?;
        if !decoded.starts_with(PSBT_MAGIC) {
            return Err(bad(
                "not a PSBT: the base64 text does not decode to the PSBT magic psbt\\xff (BIP-174)",
            ));
        }
        &decoded[..]
    };
    if bytes.len() > MAX_PSBT_BYTES {
        return Err(bad(format!(
            "the PSBT is too large: {} bytes, at most {MAX_PSBT_BYTES}",
            bytes.len()
        )));
    }
    let mut rest = bytes;
    let psbt = Psbt::deserialize_from_reader(&mut rest)
        .map_err(|e| bad(format!("not a valid PSBT (BIP-174): {e}")))?;
    if !rest.is_empty() {
        return Err(bad(format!(
            "{} bytes follow the PSBT's last output map",
            rest.len()
        )));
    }
    let (inputs, outputs) = (psbt.unsigned_tx.input.len(), psbt.unsigned_tx.output.len());
    if inputs > MAX_PSBT_IO || outputs > MAX_PSBT_IO {
        return Err(bad(format!(
            "the PSBT has {inputs} inputs and {outputs} outputs: at most {MAX_PSBT_IO} of each are accepted"
        )));
    }
    Ok(psbt)
}

/// The PSBT as base64 text (BIP-174's usual text form).
#[must_use]
pub fn psbt_to_base64(psbt: &Psbt) -> String {
    BASE64.encode(psbt.serialize())
}

/// The transaction in network serialisation, hex (what `sendrawtransaction` takes).
#[must_use]
pub fn tx_to_hex(tx: &Transaction) -> String {
    serialize_hex(tx)
}

/// The wallet's keys: the root extended key, its fingerprint, and derivation.
struct WalletKeys {
    secp: Secp256k1<VerifyOnly>,
    root: Xpub,
    fingerprint: Fingerprint,
}

impl WalletKeys {
    fn new(wallet: &WalletKey, network: BtcNetwork) -> Result<Self> {
        let root = wallet.xpub(network)?;
        Ok(WalletKeys {
            secp: Secp256k1::verification_only(),
            fingerprint: root.fingerprint(),
            root,
        })
    }

    fn derive(&self, path: &DerivationPath) -> Result<CompressedPublicKey> {
        let children = path
            .indices()
            .iter()
            .map(|&index| ChildNumber::from_normal_idx(index))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| bad(format!("derivation path {path}: {e}")))?;
        let child = self
            .root
            .derive_pub(&self.secp, &children)
            .map_err(|e| bad(format!("derivation path {path}: {e}")))?;
        Ok(CompressedPublicKey(child.public_key))
    }

    /// `origin`'s path when it is this wallet's (its fingerprint), checked: non-hardened, not too
    /// deep. `None` for another wallet's key.
    fn own_path(&self, origin: &KeySource, what: &str) -> Result<Option<DerivationPath>> {
        let (fingerprint, path) = origin;
        if *fingerprint != self.fingerprint {
            return Ok(None);
        }
        if path.len() > MAX_PSBT_PATH_DEPTH {
            return Err(bad(format!(
                "{what}: its bip32_derivation path for this wallet has {} levels, at most {MAX_PSBT_PATH_DEPTH} are accepted",
                path.len()
            )));
        }
        let mut indices = Vec::with_capacity(path.len());
        for child in path {
            match child {
                ChildNumber::Normal { index } => indices.push(*index),
                ChildNumber::Hardened { .. } => {
                    return Err(bad(format!(
                        "{what}: its bip32_derivation path m/{path} for this wallet is hardened; \
                         a threshold wallet derives only non-hardened paths (such as m/0/7)"
                    )));
                }
            }
        }
        DerivationPath::from_indices(indices)
            .map(Some)
            .map_err(|e| bad(format!("{what}: {e}")))
    }

    /// The key at the path `origin` names, which must be `claimed`.
    fn verified_path(
        &self,
        claimed: &secp256k1::PublicKey,
        origin: &KeySource,
        what: &str,
    ) -> Result<Option<(DerivationPath, CompressedPublicKey)>> {
        let Some(path) = self.own_path(origin, what)? else {
            return Ok(None);
        };
        let derived = self.derive(&path)?;
        if derived.0 != *claimed {
            return Err(bad(format!(
                "{what}: its bip32_derivation says key {claimed} is this wallet's key at {path}, \
                 but the wallet's key there is {derived}"
            )));
        }
        Ok(Some((path, derived)))
    }
}

fn script_for(script_type: BtcScriptType, key: &CompressedPublicKey) -> ScriptBuf {
    match script_type {
        BtcScriptType::P2wpkh => ScriptBuf::new_p2wpkh(&key.wpubkey_hash()),
        BtcScriptType::P2pkh => ScriptBuf::new_p2pkh(&key.pubkey_hash()),
    }
}

fn single_key_type(script: &bitcoin::Script) -> Option<BtcScriptType> {
    if script.is_p2wpkh() {
        Some(BtcScriptType::P2wpkh)
    } else if script.is_p2pkh() {
        Some(BtcScriptType::P2pkh)
    } else {
        None
    }
}

/// What kind of script, for an error message.
fn describe_script(script: &bitcoin::Script) -> String {
    if script.is_p2sh() {
        "a P2SH output (P2SH-wrapped SegWit or a script)".into()
    } else if script.is_p2wsh() {
        "a P2WSH output (a witness script)".into()
    } else if let Some(version) = script.witness_version() {
        format!("a SegWit version {} output", version.to_num())
    } else {
        format!(
            "an output with the non-standard script {}",
            script.to_hex_string()
        )
    }
}

/// The output input `index` spends, from its UTXO fields, checked against each other and against
/// the outpoint.
fn spent_output(psbt: &Psbt, index: usize) -> Result<TxOut> {
    let input = &psbt.inputs[index];
    let outpoint = psbt.unsigned_tx.input[index].previous_output;
    match (&input.non_witness_utxo, &input.witness_utxo) {
        (Some(previous), witness_utxo) => {
            let txid = previous.compute_txid();
            if txid != outpoint.txid {
                return Err(bad(format!(
                    "input {index}: its non_witness_utxo is transaction {txid}, but the input \
                     spends an output of {}",
                    outpoint.txid
                )));
            }
            let out = usize::try_from(outpoint.vout)
                .ok()
                .and_then(|vout| previous.output.get(vout))
                .ok_or_else(|| {
                    bad(format!(
                        "input {index}: it spends output {} of its non_witness_utxo, which has {} outputs",
                        outpoint.vout,
                        previous.output.len()
                    ))
                })?;
            if let Some(w) = witness_utxo
                && w != out
            {
                return Err(bad(format!(
                    "input {index}: its witness_utxo ({} sat to {}) disagrees with the output of \
                     its non_witness_utxo it spends ({} sat to {})",
                    w.value.to_sat(),
                    w.script_pubkey.to_hex_string(),
                    out.value.to_sat(),
                    out.script_pubkey.to_hex_string()
                )));
            }
            Ok(out.clone())
        }
        (None, Some(out)) => Ok(out.clone()),
        (None, None) => Err(bad(format!(
            "input {index}: the output it spends is missing (neither witness_utxo nor \
             non_witness_utxo): its amount, and so the fee, cannot be known"
        ))),
    }
}

fn is_final(input: &Input) -> bool {
    input.final_script_sig.is_some() || input.final_script_witness.is_some()
}

/// The sighash type of an input the wallet signs, which must be `SIGHASH_ALL` (or absent).
fn sighash_all(input: &Input, index: usize) -> Result<EcdsaSighashType> {
    let Some(requested) = input.sighash_type else {
        return Ok(EcdsaSighashType::All);
    };
    match requested.ecdsa_hash_ty() {
        Ok(EcdsaSighashType::All) => Ok(EcdsaSighashType::All),
        Ok(other) => Err(bad(format!(
            "input {index}: sighash type {other} is refused: only SIGHASH_ALL is signed, since \
             the others let the transaction be changed after signing"
        ))),
        Err(_) => Err(bad(format!(
            "input {index}: sighash type {requested} is not a standard ECDSA sighash type; only \
             SIGHASH_ALL is signed"
        ))),
    }
}

fn sighash(
    cache: &mut SighashCache<&Transaction>,
    index: usize,
    script_type: BtcScriptType,
    spent: &TxOut,
) -> Result<[u8; 32]> {
    use bitcoin::hashes::Hash as _;
    match script_type {
        BtcScriptType::P2wpkh => cache
            .p2wpkh_signature_hash(
                index,
                &spent.script_pubkey,
                spent.value,
                EcdsaSighashType::All,
            )
            .map(|h| h.to_byte_array())
            .map_err(|e| bad(format!("input {index}: BIP-143 sighash: {e}"))),
        BtcScriptType::P2pkh => cache
            .legacy_signature_hash(index, &spent.script_pubkey, EcdsaSighashType::All.to_u32())
            .map(|h| h.to_byte_array())
            .map_err(|e| bad(format!("input {index}: legacy sighash: {e}"))),
    }
}

/// Whose an input is.
enum Owner {
    Wallet(DerivationPath, CompressedPublicKey, BtcScriptType),
    Other,
}

fn input_owner(
    psbt: &Psbt,
    index: usize,
    spent: &TxOut,
    keys: &WalletKeys,
    default_key: &CompressedPublicKey,
    default_path: &DerivationPath,
) -> Result<Owner> {
    let input = &psbt.inputs[index];
    let what = format!("input {index}");
    let script = &spent.script_pubkey;
    let claims: Vec<&KeySource> = input
        .bip32_derivation
        .values()
        .chain(input.tap_key_origins.values().map(|(_, origin)| origin))
        .filter(|(fingerprint, _)| *fingerprint == keys.fingerprint)
        .collect();

    if script.is_p2tr() {
        let secp = &keys.secp;
        let default_p2tr = ScriptBuf::new_p2tr(secp, default_key.0.x_only_public_key().0, None);
        if !claims.is_empty() || *script == default_p2tr {
            return Err(bad(format!(
                "{what} spends this wallet's Taproot (P2TR) output: Taproot key-path spending \
                 needs Schnorr signatures (BIP-340), which this wallet (threshold ECDSA) cannot make"
            )));
        }
        return Ok(Owner::Other);
    }
    let Some(script_type) = single_key_type(script) else {
        if claims.is_empty() {
            return Ok(Owner::Other);
        }
        return Err(bad(format!(
            "{what} spends {} of this wallet's key: this wallet signs only P2WPKH and P2PKH inputs",
            describe_script(script)
        )));
    };
    // The entry for the key the script pays to, when it names this wallet.
    for (key, origin) in &input.bip32_derivation {
        let compressed = CompressedPublicKey(*key);
        if script_for(script_type, &compressed) == *script
            && let Some((path, derived)) = keys.verified_path(key, origin, &what)?
        {
            return Ok(Owner::Wallet(path, derived, script_type));
        }
    }
    if script_for(script_type, default_key) == *script {
        return Ok(Owner::Wallet(
            default_path.clone(),
            *default_key,
            script_type,
        ));
    }
    if let Some((_, path)) = claims.first() {
        return Err(bad(format!(
            "{what}: its bip32_derivation names this wallet's key at m/{path}, but the output it \
             spends ({}) does not pay to it",
            script_type.name()
        )));
    }
    Ok(Owner::Other)
}

fn output_is_change(
    psbt: &Psbt,
    index: usize,
    keys: &WalletKeys,
    default_key: &CompressedPublicKey,
) -> Result<bool> {
    let script = &psbt.unsigned_tx.output[index].script_pubkey;
    let Some(script_type) = single_key_type(script) else {
        return Ok(false);
    };
    if script_for(script_type, default_key) == *script {
        return Ok(true);
    }
    let what = format!("output {index}");
    for (key, origin) in &psbt.outputs[index].bip32_derivation {
        if script_for(script_type, &CompressedPublicKey(*key)) == *script
            && keys.verified_path(key, origin, &what)?.is_some()
        {
            return Ok(true);
        }
    }
    Ok(false)
}

fn sum(mut amounts: impl Iterator<Item = Amount>, what: &str) -> Result<Amount> {
    amounts
        .try_fold(Amount::ZERO, |acc, a| acc.checked_add(a))
        .filter(|total| *total <= Amount::MAX_MONEY)
        .ok_or_else(|| bad(format!("the {what} add up to more than 21 million BTC")))
}

/// An upper bound of the signed transaction's virtual size: the unsigned transaction with a
/// longest-possible signature and a compressed key in place of each missing scriptSig or witness;
/// `None` when an input spends a script whose unlocking data cannot be guessed.
fn vsize_estimate(psbt: &Psbt, spent: &[TxOut]) -> Option<u64> {
    let mut tx = psbt.unsigned_tx.clone();
    let sig = [0u8; MAX_SIG_BYTES];
    let key = [2u8; 33];
    for ((txin, input), out) in tx.input.iter_mut().zip(&psbt.inputs).zip(spent) {
        if is_final(input) {
            txin.script_sig = input.final_script_sig.clone().unwrap_or_default();
            txin.witness = input.final_script_witness.clone().unwrap_or_default();
            continue;
        }
        match single_key_type(&out.script_pubkey)? {
            BtcScriptType::P2wpkh => txin.witness = Witness::from_slice(&[&sig[..], &key[..]]),
            BtcScriptType::P2pkh => {
                txin.script_sig = Builder::new().push_slice(sig).push_slice(key).into_script();
            }
        }
    }
    u64::try_from(tx.vsize()).ok()
}

fn btc(amount: u64) -> String {
    format!(
        "{} BTC ({amount} sat)",
        Amount::from_sat(amount).to_string_in(Denomination::Bitcoin)
    )
}

fn list(items: &[usize]) -> String {
    items
        .iter()
        .map(usize::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

fn summary(plan: &BtcPlan) -> String {
    let mut parts = Vec::new();
    let describe = |o: &PlannedOutput| match &o.address {
        Some(address) => format!("{} to {address}", btc(o.amount_sat)),
        None if o.is_op_return => format!(
            "{} to an OP_RETURN ({} bytes of script)",
            btc(o.amount_sat),
            o.script_hex.len() / 2
        ),
        None => format!("{} to the script {}", btc(o.amount_sat), o.script_hex),
    };
    let sends: Vec<String> = plan.external_outputs().map(describe).collect();
    if sends.is_empty() {
        parts.push("send nothing out of the wallet".to_string());
    } else {
        parts.push(format!("send {}", sends.join(", ")));
    }
    let change: Vec<String> = plan
        .outputs
        .iter()
        .filter(|o| o.is_change)
        .map(describe)
        .collect();
    if !change.is_empty() {
        parts.push(format!("change {}", change.join(", ")));
    }
    parts.push(match plan.vsize_estimate {
        Some(vsize) if vsize > 0 => format!(
            "fee {} sat (at least {:.1} sat/vB, at most {vsize} vB)",
            plan.fee_sat,
            plan.fee_sat as f64 / vsize as f64
        ),
        _ => format!("fee {} sat", plan.fee_sat),
    });
    let signed: Vec<usize> = plan.to_sign.iter().map(|i| i.index).collect();
    let mut signs = format!(
        "signs input{} {} of {}",
        if signed.len() == 1 { "" } else { "s" },
        list(&signed),
        plan.input_count
    );
    let mut left = Vec::new();
    if !plan.other_inputs.is_empty() {
        left.push(format!(
            "input{} {} for others to sign",
            if plan.other_inputs.len() == 1 {
                ""
            } else {
                "s"
            },
            list(&plan.other_inputs)
        ));
    }
    if !plan.final_inputs.is_empty() {
        left.push(format!(
            "input{} {} already final",
            if plan.final_inputs.len() == 1 {
                ""
            } else {
                "s"
            },
            list(&plan.final_inputs)
        ));
    }
    if !left.is_empty() {
        signs.push_str(&format!(" ({})", left.join("; ")));
    }
    parts.push(signs);
    parts.join("; ")
}

/// The digest that signing input `index` of `psbt` needs (`SIGHASH_ALL`; BIP-143 for a P2WPKH
/// output, the legacy algorithm for P2PKH), read from the output the input spends. It needs no
/// wallet key, so that the device and the server compute the same digest from a request alone;
/// the server then checks with the wallet's key ([`plan`]) that the input is the wallet's.
///
/// # Errors
/// [`Error::InvalidParameters`]: no such input, the input is final already, the output it spends
/// is missing or not P2WPKH/P2PKH (Taproot: refused, this wallet makes no Schnorr signatures),
/// a P2PKH input without its previous transaction, another sighash type.
pub fn input_digest(psbt: &Psbt, index: usize) -> Result<[u8; 32]> {
    let count = psbt.unsigned_tx.input.len();
    if index >= count {
        return Err(bad(format!(
            "input {index}: the transaction has {count} input{}",
            if count == 1 { "" } else { "s" }
        )));
    }
    let input = &psbt.inputs[index];
    if is_final(input) {
        return Err(bad(format!(
            "input {index} is final already: nothing to sign"
        )));
    }
    let spent = spent_output(psbt, index)?;
    let script = &spent.script_pubkey;
    let Some(script_type) = single_key_type(script) else {
        if script.is_p2tr() {
            return Err(bad(format!(
                "input {index} spends a Taproot (P2TR) output: Taproot key-path spending needs \
                 Schnorr signatures (BIP-340), which this wallet (threshold ECDSA) cannot make"
            )));
        }
        return Err(bad(format!(
            "input {index} spends {}: this wallet signs only P2WPKH and P2PKH inputs",
            describe_script(script)
        )));
    };
    if script_type == BtcScriptType::P2pkh && input.non_witness_utxo.is_none() {
        return Err(bad(format!(
            "input {index} spends a P2PKH output: its previous transaction (non_witness_utxo) is \
             needed"
        )));
    }
    sighash_all(input, index)?;
    let mut cache = SighashCache::new(&psbt.unsigned_tx);
    sighash(&mut cache, index, script_type, &spent)
}

/// A Bitcoin address in its canonical form (bech32 in lower case), on any network; `None` when
/// `text` is not an address.
#[must_use]
pub fn canonical_address(text: &str) -> Option<String> {
    text.parse::<bitcoin::Address<bitcoin::address::NetworkUnchecked>>()
        .ok()
        .map(|a| a.assume_checked().to_string())
}

/// What a signed PSBT input costs the wallet, for policies: the whole transaction's facts, as
/// [`plan`] found them with the wallet's key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BtcSpend {
    /// The transaction's id (the same for each of its inputs).
    pub txid: String,
    /// What leaves the wallet: its inputs less its change, satoshis.
    pub spent_sat: u64,
    /// The fee, satoshis.
    pub fee_sat: u64,
    /// Each output that does not pay back to the wallet: its address (`None` for an OP_RETURN
    /// or another script without one) and amount in satoshis.
    pub destinations: Vec<(Option<String>, u64)>,
    /// The whole transaction, for people.
    pub summary: String,
}

impl BtcPlan {
    /// The policy's view of the plan ([`BtcSpend`]).
    #[must_use]
    pub fn spend(&self) -> BtcSpend {
        BtcSpend {
            txid: self.txid.to_string(),
            spent_sat: self.spent_from_wallet_sat(),
            fee_sat: self.fee_sat,
            destinations: self
                .external_outputs()
                .map(|o| (o.address.clone(), o.amount_sat))
                .collect(),
            summary: self.summary.clone(),
        }
    }
}

/// Decides what signing `psbt` with `wallet` does: the wallet's inputs and the digest each one
/// needs, the outputs (which are change), the amounts and the fee.
///
/// `default_path` is where the wallet's key is for inputs and change outputs that carry no
/// `bip32_derivation` entry of the wallet.
///
/// # Errors
/// [`Error::InvalidParameters`] naming the input or output, for: an input without the output it
/// spends; a `non_witness_utxo` that is not the transaction spent from, or disagrees with the
/// `witness_utxo`; a wallet input that asks for a sighash type other than `SIGHASH_ALL`, spends
/// a Taproot, P2SH, P2WSH or other script, or (P2PKH) lacks the previous
/// transaction; a `bip32_derivation` entry of the wallet whose path is hardened, too deep, or does
/// not lead to the entry's key; amounts above 21 million BTC; outputs worth more than the inputs;
/// and a PSBT with no input of the wallet left to sign. Inputs already finalised are left as
/// they are ([`BtcPlan::final_inputs`]).
pub fn plan(
    psbt: &Psbt,
    wallet: &WalletKey,
    default_path: &DerivationPath,
    network: BtcNetwork,
) -> Result<BtcPlan> {
    let keys = WalletKeys::new(wallet, network)?;
    let default_key = keys.derive(default_path)?;
    let tx = &psbt.unsigned_tx;
    let input_count = tx.input.len();

    let spent: Vec<TxOut> = (0..input_count)
        .map(|i| spent_output(psbt, i))
        .collect::<Result<_>>()?;

    let mut cache = SighashCache::new(tx);
    let mut to_sign = Vec::new();
    let mut other_inputs = Vec::new();
    let mut final_inputs = Vec::new();
    for (index, out) in spent.iter().enumerate() {
        let input = &psbt.inputs[index];
        if is_final(input) {
            final_inputs.push(index);
            continue;
        }
        match input_owner(psbt, index, out, &keys, &default_key, default_path)? {
            Owner::Other => other_inputs.push(index),
            Owner::Wallet(path, key, script_type) => {
                let sighash_type = sighash_all(input, index)?;
                if script_type == BtcScriptType::P2pkh && input.non_witness_utxo.is_none() {
                    return Err(bad(format!(
                        "input {index} spends a P2PKH output but lacks non_witness_utxo: a legacy \
                         signature does not commit to the amount, so the whole previous \
                         transaction is needed to prove it"
                    )));
                }
                to_sign.push(InputToSign {
                    index,
                    sighash: sighash(&mut cache, index, script_type, out)?,
                    path,
                    public_key: key.to_bytes(),
                    script_type,
                    sighash_type,
                    amount_sat: out.value.to_sat(),
                });
            }
        }
    }
    if to_sign.is_empty() {
        if final_inputs.len() == input_count {
            return Err(bad(format!(
                "all {input_count} inputs are already finalised: there is nothing to sign"
            )));
        }
        let taproot = other_inputs
            .iter()
            .any(|&i| spent[i].script_pubkey.is_p2tr());
        return Err(bad(format!(
            "none of the {input_count} inputs is this wallet's (no P2WPKH or P2PKH output of its \
             key at a path of its bip32_derivation entries or at {default_path}){}{}",
            if final_inputs.is_empty() {
                String::new()
            } else {
                format!("; input(s) {} already finalised", list(&final_inputs))
            },
            if taproot {
                "; Taproot inputs cannot be signed by this wallet in any case"
            } else {
                ""
            }
        )));
    }

    let mut outputs = Vec::with_capacity(tx.output.len());
    for (index, out) in tx.output.iter().enumerate() {
        outputs.push(PlannedOutput {
            index,
            address: Address::from_script(&out.script_pubkey, network.to_bitcoin())
                .ok()
                .map(|a| a.to_string()),
            script_hex: out.script_pubkey.to_hex_string(),
            amount_sat: out.value.to_sat(),
            is_change: output_is_change(psbt, index, &keys, &default_key)?,
            is_op_return: out.script_pubkey.is_op_return(),
        });
    }

    let total_in = sum(spent.iter().map(|o| o.value), "input amounts")?;
    let total_out = sum(tx.output.iter().map(|o| o.value), "output amounts")?;
    let fee = total_in.checked_sub(total_out).ok_or_else(|| {
        bad(format!(
            "the outputs ({} sat) are worth more than the inputs ({} sat): the fee would be negative",
            total_out.to_sat(),
            total_in.to_sat()
        ))
    })?;
    let wallet_in = to_sign.iter().map(|i| i.amount_sat).sum();
    let change = outputs
        .iter()
        .filter(|o| o.is_change)
        .map(|o| o.amount_sat)
        .sum();

    let mut plan = BtcPlan {
        network,
        txid: tx.compute_txid(),
        input_count,
        to_sign,
        other_inputs,
        final_inputs,
        outputs,
        total_in_sat: total_in.to_sat(),
        total_out_sat: total_out.to_sat(),
        fee_sat: fee.to_sat(),
        wallet_in_sat: wallet_in,
        change_sat: change,
        vsize_estimate: vsize_estimate(psbt, &spent),
        summary: String::new(),
    };
    plan.summary = summary(&plan);
    Ok(plan)
}

/// A signature of one input: ECDSA over the input's sighash, by the key the input's script pays
/// to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InputSignature {
    /// The input's index.
    pub index: usize,
    /// `r ‖ s`, 32 bytes each (a high `s` is normalised to low-S, BIP-62/BIP-146).
    pub signature: [u8; 64],
    /// The signing key, compressed.
    pub public_key: [u8; 33],
}

/// A PSBT after [`finalize`].
#[derive(Clone, Debug, PartialEq)]
pub struct Finalized {
    /// The PSBT with the signed inputs finalised (BIP-174 Finalizer: final scriptSig or witness,
    /// the signing data cleared).
    pub psbt: Psbt,
    /// The transaction, when every input is final (BIP-174 Transaction Extractor).
    pub tx: Option<Transaction>,
    /// The inputs still to be finalised by their owners (empty when `tx` is present).
    pub unfinalised_inputs: Vec<usize>,
}

/// Puts `signatures` into `psbt` and finalises their inputs: P2WPKH gets the witness
/// `[signature, key]`, P2PKH the scriptSig `<signature> <key>`, each signature DER-encoded with
/// the `SIGHASH_ALL` byte. Each signature is checked first: the key must be the one the spent
/// output pays to, and the signature must verify over the sighash recomputed here. When every
/// input is then final, the transaction is extracted (no fee-rate check: that is policy's, on the
/// plan).
///
/// # Errors
/// [`Error::InvalidParameters`] naming the input, for a signature that does not verify, a key
/// that does not match the input's script, an input given twice, out of range, already final,
/// not P2WPKH or P2PKH, or asking for another sighash type than `SIGHASH_ALL`; nothing is
/// finalised then.
pub fn finalize(mut psbt: Psbt, signatures: &[InputSignature]) -> Result<Finalized> {
    if signatures.is_empty() {
        return Err(bad("no signatures to finalise the PSBT with"));
    }
    let secp = Secp256k1::verification_only();
    let mut seen = BTreeSet::new();
    let mut finals = Vec::with_capacity(signatures.len());
    {
        let mut cache = SighashCache::new(&psbt.unsigned_tx);
        for s in signatures {
            let index = s.index;
            if index >= psbt.inputs.len() {
                return Err(bad(format!(
                    "a signature is for input {index}, but the transaction has {} inputs",
                    psbt.inputs.len()
                )));
            }
            if !seen.insert(index) {
                return Err(bad(format!("input {index} is given two signatures")));
            }
            let input = &psbt.inputs[index];
            if is_final(input) {
                return Err(bad(format!("input {index} is already finalised")));
            }
            sighash_all(input, index)?;
            let out = spent_output(&psbt, index)?;
            let Some(script_type) = single_key_type(&out.script_pubkey) else {
                return Err(bad(format!(
                    "input {index} spends {}: only P2WPKH and P2PKH inputs are finalised here",
                    describe_script(&out.script_pubkey)
                )));
            };
            let key = CompressedPublicKey::from_slice(&s.public_key).map_err(|_| {
                bad(format!(
                    "input {index}: the signature's key is not a compressed secp256k1 point"
                ))
            })?;
            if script_for(script_type, &key) != out.script_pubkey {
                return Err(bad(format!(
                    "input {index}: key {key} is not the one the spent {} output pays to",
                    script_type.name()
                )));
            }
            let digest = sighash(&mut cache, index, script_type, &out)?;
            let mut signature = secp256k1::ecdsa::Signature::from_compact(&s.signature)
                .map_err(|_| bad(format!("input {index}: the signature is not valid r‖s")))?;
            signature.normalize_s();
            secp.verify_ecdsa(&Message::from_digest(digest), &signature, &key.0)
                .map_err(|_| {
                    bad(format!(
                        "input {index}: the signature does not verify over the input's sighash \
                         with key {key}"
                    ))
                })?;
            let signature = ecdsa::Signature {
                signature,
                sighash_type: EcdsaSighashType::All,
            };
            finals.push((index, script_type, signature, key));
        }
    }

    for (index, script_type, signature, key) in finals {
        let input = &mut psbt.inputs[index];
        // BIP-174 Finalizer: only the UTXO, the final fields and unknown data remain.
        let mut done = Input {
            non_witness_utxo: input.non_witness_utxo.take(),
            witness_utxo: input.witness_utxo.take(),
            unknown: std::mem::take(&mut input.unknown),
            proprietary: std::mem::take(&mut input.proprietary),
            ..Input::default()
        };
        match script_type {
            BtcScriptType::P2wpkh => {
                done.final_script_witness = Some(Witness::p2wpkh(&signature, &key.0));
            }
            BtcScriptType::P2pkh => {
                done.final_script_sig = Some(
                    Builder::new()
                        .push_slice(signature.serialize())
                        .push_key(&bitcoin::PublicKey::from(key))
                        .into_script(),
                );
            }
        }
        *input = done;
    }

    let unfinalised_inputs: Vec<usize> = psbt
        .inputs
        .iter()
        .enumerate()
        .filter(|(_, input)| !is_final(input))
        .map(|(i, _)| i)
        .collect();
    let tx = unfinalised_inputs
        .is_empty()
        .then(|| psbt.clone().extract_tx_unchecked_fee_rate());
    Ok(Finalized {
        psbt,
        tx,
        unfinalised_inputs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_parse_print_and_serialise() {
        for (text, network) in [
            ("mainnet", BtcNetwork::Mainnet),
            ("bitcoin", BtcNetwork::Mainnet),
            ("testnet", BtcNetwork::Testnet),
            ("signet", BtcNetwork::Signet),
            ("regtest", BtcNetwork::Regtest),
        ] {
            assert_eq!(text.parse::<BtcNetwork>().unwrap(), network);
        }
        assert_eq!(BtcNetwork::Mainnet.to_string(), "mainnet");
        assert_eq!(
            serde_json::to_string(&BtcNetwork::Regtest).unwrap(),
            "\"regtest\""
        );
        assert_eq!(
            serde_json::from_str::<BtcNetwork>("\"signet\"").unwrap(),
            BtcNetwork::Signet
        );
        assert_eq!(
            serde_json::from_str::<BtcNetwork>("\"bitcoin\"").unwrap(),
            BtcNetwork::Mainnet
        );
        let err = "litecoin".parse::<BtcNetwork>().unwrap_err().to_string();
        assert!(err.contains("litecoin") && err.contains("mainnet"), "{err}");
    }

    #[test]
    fn wallet_key_fingerprint_is_hash160_of_the_root_key() {
        use bitcoin::hashes::{Hash as _, hash160};
        let secp = Secp256k1::new();
        let secret = secp256k1::SecretKey::from_slice(&[7u8; 32]).unwrap();
        let public_key = secp256k1::PublicKey::from_secret_key(&secp, &secret).serialize();
        let wallet = WalletKey {
            public_key,
            chain_code: [1u8; 32],
        };
        let expected = hash160::Hash::hash(&public_key).to_byte_array();
        assert_eq!(wallet.fingerprint().unwrap(), expected[..4]);
        let xpub = wallet.xpub(BtcNetwork::Testnet).unwrap();
        assert_eq!(xpub.depth, 0);
        assert!(xpub.to_string().starts_with("tpub"));
        let bad_key = WalletKey {
            public_key: [9u8; 33],
            chain_code: [0u8; 32],
        };
        assert!(bad_key.fingerprint().is_err());
    }

    #[test]
    fn summaries_show_btc_and_sat() {
        assert_eq!(btc(100_000), "0.001 BTC (100000 sat)");
        assert_eq!(btc(0), "0 BTC (0 sat)");
        assert_eq!(list(&[0, 2]), "0, 2");
    }

    #[test]
    fn parse_refuses_garbage_hex_and_empty() {
        for (input, needle) in [
            (&b""[..], "empty"),
            (&b"   \n"[..], "empty"),
            (&b"not base64 at all!"[..], "base64"),
            (&b"70736274ff0100"[..], "hex"),
            (&b"AAAA"[..], "magic"),
            (&b"psbt\xff"[..], "not a valid PSBT"),
        ] {
            let err = parse_psbt(input).unwrap_err().to_string();
            assert!(err.contains(needle), "{input:?}: {err}");
        }
    }
}
