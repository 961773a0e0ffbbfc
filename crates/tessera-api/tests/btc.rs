//! Bitcoin PSBTs (`tessera_api::btc`) against independent data:
//! - BIP-174's own test vectors (tests/data/btc/bip174_vectors.json, from the BIP's text);
//! - PSBTs built by embit, a Python library independent of the `bitcoin` crate, which also
//!   signed and finalised each one itself (tests/data/btc/make_psbt.py writes both): the
//!   transaction signed here must be embit's byte for byte, which checks every sighash, every
//!   DER encoding and every witness and scriptSig;
//! - with `TESSERA_PYTHON`, embit verifying the signatures of the transactions signed here
//!   (tests/data/btc/verify_tx.py).
//!
//! A plain secp256k1 key stands in for the threshold wallet (whose private key never exists):
//! the threshold signing itself is tested with the server.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::str::FromStr;

use bitcoin::bip32::{self, ChainCode, ChildNumber, Fingerprint, Xpriv, Xpub};
use bitcoin::consensus::encode::deserialize_hex;
use bitcoin::hashes::{Hash as _, sha256};
use bitcoin::psbt::Psbt;
use bitcoin::secp256k1::{Message, Secp256k1, SecretKey};
use bitcoin::sighash::EcdsaSighashType;
use bitcoin::{Amount, NetworkKind, Transaction, TxIn, TxOut};
use tessera_api::btc::{
    BtcNetwork, BtcPlan, BtcScriptType, InputSignature, MAX_PSBT_BYTES, MAX_PSBT_IO, WalletKey,
    finalize, parse_psbt, plan, psbt_to_base64, tx_to_hex,
};
use tessera_core::DerivationPath;

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/btc")
}

fn fixture(name: &str) -> String {
    std::fs::read_to_string(data_dir().join(name))
        .unwrap_or_else(|e| panic!("fixture {name}: {e}"))
        .trim()
        .to_string()
}

fn psbt(name: &str) -> Psbt {
    parse_psbt(fixture(&format!("{name}.psbt")).as_bytes()).unwrap()
}

fn hash(text: &str) -> [u8; 32] {
    sha256::Hash::hash(text.as_bytes()).to_byte_array()
}

/// The stand-in for the wallet: the root key make_psbt.py builds from the same strings.
fn wallet_xpriv() -> Xpriv {
    Xpriv {
        network: NetworkKind::Test,
        depth: 0,
        parent_fingerprint: Fingerprint::default(),
        child_number: ChildNumber::Normal { index: 0 },
        private_key: SecretKey::from_slice(&hash("tessera btc test wallet key")).unwrap(),
        chain_code: ChainCode::from(hash("tessera btc test wallet chain code")),
    }
}

fn wallet_of(xpriv: &Xpriv) -> WalletKey {
    let xpub = Xpub::from_priv(&Secp256k1::new(), xpriv);
    WalletKey {
        public_key: xpub.public_key.serialize(),
        chain_code: xpub.chain_code.to_bytes(),
    }
}

fn wallet() -> WalletKey {
    wallet_of(&wallet_xpriv())
}

fn path(text: &str) -> DerivationPath {
    text.parse().unwrap()
}

fn plan_of(psbt: &Psbt, default: &str) -> tessera_core::error::Result<BtcPlan> {
    plan(psbt, &wallet(), &path(default), BtcNetwork::Testnet)
}

/// What the threshold signing does, with one key: an ECDSA signature of each sighash by the key
/// at its path (nonces as RFC 6979 with a low R, as embit and Bitcoin Core make them).
fn sign(plan: &BtcPlan, root: &Xpriv) -> Vec<InputSignature> {
    let secp = Secp256k1::new();
    plan.to_sign
        .iter()
        .map(|input| {
            let children: Vec<ChildNumber> = input
                .path
                .indices()
                .iter()
                .map(|&i| ChildNumber::from_normal_idx(i).unwrap())
                .collect();
            let key = root.derive_priv(&secp, &children).unwrap();
            let public = key.private_key.public_key(&secp).serialize();
            assert_eq!(public, input.public_key, "input {}", input.index);
            let sig = secp.sign_ecdsa_low_r(&Message::from_digest(input.sighash), &key.private_key);
            InputSignature {
                index: input.index,
                signature: sig.serialize_compact(),
                public_key: public,
            }
        })
        .collect()
}

fn err(result: tessera_core::error::Result<impl std::fmt::Debug>) -> String {
    match result {
        Ok(v) => panic!("accepted: {v:?}"),
        Err(e) => {
            assert!(
                matches!(e, tessera_core::error::Error::InvalidParameters(_)),
                "{e:?}"
            );
            e.to_string()
        }
    }
}

fn assert_err(result: tessera_core::error::Result<impl std::fmt::Debug>, needles: &[&str]) {
    let message = err(result);
    for needle in needles {
        assert!(message.contains(needle), "{needle:?} not in: {message}");
    }
}

// --- BIP-174's test vectors ---------------------------------------------------------------

fn vectors() -> serde_json::Value {
    serde_json::from_str(&fixture("bip174_vectors.json")).unwrap()
}

fn cases(section: &str) -> Vec<(String, String)> {
    let all = vectors();
    let list = all[section].as_array().unwrap();
    assert!(!list.is_empty(), "{section}");
    list.iter()
        .map(|c| {
            (
                c["case"].as_str().unwrap().to_string(),
                c["base64"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn every_invalid_bip174_vector_is_refused_as_base64_and_as_binary() {
    use bitcoin::base64::Engine as _;
    let invalid = cases("invalid");
    assert_eq!(invalid.len(), 20, "the BIP lists 20 invalid PSBTs");
    for (case, text) in invalid {
        let base64 = err(parse_psbt(text.as_bytes()));
        let binary = bitcoin::base64::engine::general_purpose::STANDARD
            .decode(&text)
            .unwrap();
        err(parse_psbt(&binary));
        assert!(
            base64.contains("PSBT"),
            "{case}: the error does not say what was wrong: {base64}"
        );
    }
}

#[test]
fn every_valid_bip174_vector_parses_and_round_trips() {
    let mut all = cases("valid");
    all.extend(cases("fails_signer_checks"));
    assert_eq!(all.len(), 14);
    for (case, text) in all {
        let psbt = parse_psbt(text.as_bytes()).unwrap_or_else(|e| panic!("{case}: {e}"));
        // Whitespace around the text, as a file or a terminal gives it, is ignored.
        let padded = format!("\n  {text}\r\n");
        assert_eq!(parse_psbt(padded.as_bytes()).unwrap(), psbt, "{case}");
        let again = parse_psbt(psbt_to_base64(&psbt).as_bytes()).unwrap();
        assert_eq!(again, psbt, "{case}");
        assert_eq!(parse_psbt(&psbt.serialize()).unwrap(), psbt, "{case}");
    }
}

#[test]
fn the_bip174_finalised_psbt_extracts_the_bip_s_transaction() {
    let all = vectors();
    let finalised = parse_psbt(all["finalizer_output"]["psbt"].as_str().unwrap().as_bytes());
    let tx = finalised.unwrap().extract_tx_unchecked_fee_rate();
    assert_eq!(
        tx_to_hex(&tx),
        all["finalizer_output"]["extracted_tx_hex"]
            .as_str()
            .unwrap()
    );
}

#[test]
fn the_bip174_signer_check_failures_are_not_signed() {
    // The BIP's own master key, whose fingerprint its vectors cite: the first vector's inputs are
    // no key of it this wallet can derive (they sit at hardened paths), the others spend P2SH
    // outputs of it — nothing is signed.
    let root = Xpriv::from_str(
        "tprv8ZgxMBicQKsPd9TeAdPADNnSyH9SSUUbTVeFszDE23Ki6TBB5nCefAdHkK8Fm3qMQR6sHwA56zqRmKmxnHk37JkiFzvncDqoKmPWubu7hDF",
    )
    .unwrap();
    for (case, text) in cases("fails_signer_checks") {
        let psbt = parse_psbt(text.as_bytes()).unwrap();
        let message = err(plan(
            &psbt,
            &wallet_of(&root),
            &DerivationPath::root(),
            BtcNetwork::Testnet,
        ));
        assert!(message.contains("input"), "{case}: {message}");
    }
}

// --- PSBTs built and signed by embit ------------------------------------------------------

#[test]
fn p2wpkh_inputs_with_derivations_are_planned_signed_and_match_embit() {
    let psbt = psbt("wallet_p2wpkh");
    let plan = plan_of(&psbt, "m/0/99").unwrap();
    assert_eq!(plan.txid, psbt.unsigned_tx.compute_txid());
    assert_eq!(plan.input_count, 2);
    let signed: Vec<_> = plan
        .to_sign
        .iter()
        .map(|i| (i.index, i.path.to_string(), i.script_type, i.amount_sat))
        .collect();
    assert_eq!(
        signed,
        [
            (0, "m/0/0".to_string(), BtcScriptType::P2wpkh, 150_000),
            (1, "m/0/1".to_string(), BtcScriptType::P2wpkh, 250_000),
        ]
    );
    assert!(
        plan.to_sign
            .iter()
            .all(|i| i.sighash_type == EcdsaSighashType::All)
    );
    assert!(plan.other_inputs.is_empty());
    assert_eq!(
        (plan.total_in_sat, plan.total_out_sat, plan.fee_sat),
        (400_000, 395_000, 5_000)
    );
    assert_eq!((plan.wallet_in_sat, plan.change_sat), (400_000, 95_000));
    assert_eq!(plan.spent_from_wallet_sat(), 305_000);

    let [payee, change, op_return] = &plan.outputs[..] else {
        panic!("{:?}", plan.outputs)
    };
    assert!(payee.address.as_deref().unwrap().starts_with("tb1q"));
    assert!(!payee.is_change && !payee.is_op_return);
    assert_eq!(payee.amount_sat, 300_000);
    assert!(change.is_change && change.address.as_deref().unwrap().starts_with("tb1q"));
    assert!(op_return.is_op_return && op_return.address.is_none());
    assert_eq!(op_return.script_hex, "6a0774657373657261");
    let destinations: Vec<_> = plan.external_outputs().map(|o| o.index).collect();
    assert_eq!(destinations, [0, 2]);

    let payee_address = payee.address.clone().unwrap();
    let change_address = change.address.clone().unwrap();
    assert!(
        plan.summary.starts_with(&format!(
            "send 0.003 BTC (300000 sat) to {payee_address}, 0 BTC (0 sat) to an OP_RETURN \
             (9 bytes of script); change 0.00095 BTC (95000 sat) to {change_address}; fee 5000 sat (at least "
        )),
        "{}",
        plan.summary
    );
    assert!(
        plan.summary.ends_with("signs inputs 0, 1 of 2"),
        "{}",
        plan.summary
    );

    let done = finalize(psbt, &sign(&plan, &wallet_xpriv())).unwrap();
    assert!(done.unfinalised_inputs.is_empty());
    let tx = done.tx.unwrap();
    assert_eq!(tx_to_hex(&tx), fixture("wallet_p2wpkh.embit.hex"));
    // The finalised PSBT extracts the same transaction, and BIP-174's Finalizer cleared the
    // signing data.
    assert_eq!(done.psbt.clone().extract_tx_unchecked_fee_rate(), tx);
    for input in &done.psbt.inputs {
        assert!(input.final_script_witness.is_some());
        assert!(input.bip32_derivation.is_empty() && input.partial_sigs.is_empty());
        assert!(input.witness_utxo.is_some());
    }
    assert_eq!(tx.compute_txid(), plan.txid);
    // The estimate bounds the real size from above, by at most a byte per signature.
    let estimate = plan.vsize_estimate.unwrap();
    let actual = tx.vsize() as u64;
    assert!(
        estimate >= actual && estimate <= actual + 2,
        "{estimate} vs {actual}"
    );
}

#[test]
fn inputs_at_the_default_path_legacy_and_segwit_match_embit() {
    let psbt = psbt("wallet_p2pkh_default_path");
    let plan = plan_of(&psbt, "m/0/7").unwrap();
    let signed: Vec<_> = plan
        .to_sign
        .iter()
        .map(|i| (i.index, i.path.to_string(), i.script_type))
        .collect();
    assert_eq!(
        signed,
        [
            (0, "m/0/7".to_string(), BtcScriptType::P2pkh),
            (1, "m/0/7".to_string(), BtcScriptType::P2wpkh),
        ]
    );
    assert_eq!(plan.fee_sat, 10_000);
    assert!(plan.outputs.iter().all(|o| !o.is_change));
    let legacy = plan.outputs[0].address.as_deref().unwrap();
    assert!(
        legacy.starts_with('m') || legacy.starts_with('n'),
        "{legacy}"
    );

    let done = finalize(psbt.clone(), &sign(&plan, &wallet_xpriv())).unwrap();
    let tx = done.tx.unwrap();
    assert_eq!(
        tx_to_hex(&tx),
        fixture("wallet_p2pkh_default_path.embit.hex")
    );
    assert!(done.psbt.inputs[0].final_script_sig.is_some());
    assert!(done.psbt.inputs[1].final_script_witness.is_some());
    let estimate = plan.vsize_estimate.unwrap();
    let actual = tx.vsize() as u64;
    assert!(
        estimate >= actual && estimate <= actual + 2,
        "{estimate} vs {actual}"
    );

    // At another default path, no input is the wallet's.
    assert_err(plan_of(&psbt, "m/0/8"), &["none of the 2 inputs", "m/0/8"]);
}

#[test]
fn addresses_are_written_for_the_plan_s_network() {
    let psbt = psbt("wallet_p2wpkh");
    for (network, prefix) in [
        (BtcNetwork::Mainnet, "bc1q"),
        (BtcNetwork::Testnet, "tb1q"),
        (BtcNetwork::Signet, "tb1q"),
        (BtcNetwork::Regtest, "bcrt1q"),
    ] {
        let plan = plan(&psbt, &wallet(), &path("m/0/99"), network).unwrap();
        assert_eq!(plan.network, network);
        let address = plan.outputs[0].address.as_deref().unwrap();
        assert!(address.starts_with(prefix), "{network}: {address}");
        assert!(plan.summary.contains(address));
    }
}

#[test]
fn another_wallet_s_input_is_left_for_it_and_the_psbt_returned_partly_final() {
    let psbt = psbt("mixed_other_wallet");
    let plan = plan_of(&psbt, "m/0/99").unwrap();
    let signed: Vec<_> = plan
        .to_sign
        .iter()
        .map(|i| (i.index, i.path.to_string(), i.script_type))
        .collect();
    assert_eq!(
        signed,
        [
            (0, "m/0/2".to_string(), BtcScriptType::P2wpkh),
            (2, "m/0/3".to_string(), BtcScriptType::P2pkh),
        ]
    );
    assert_eq!(plan.other_inputs, [1]);
    assert_eq!(plan.wallet_in_sat, 150_000);
    assert_eq!(plan.fee_sat, 230_000 - 227_000);
    assert!(
        plan.summary
            .ends_with("signs inputs 0, 2 of 3 (input 1 for others to sign)"),
        "{}",
        plan.summary
    );

    let done = finalize(psbt, &sign(&plan, &wallet_xpriv())).unwrap();
    assert!(done.tx.is_none());
    assert_eq!(done.unfinalised_inputs, [1]);
    // The other wallet's input is untouched; ours are what embit made.
    assert!(done.psbt.inputs[1].final_script_witness.is_none());
    assert!(!done.psbt.inputs[1].bip32_derivation.is_empty());
    let embit: Transaction = deserialize_hex(&fixture("mixed_other_wallet.embit.hex")).unwrap();
    let ours = done.psbt.clone().extract_tx_unchecked_fee_rate();
    for i in [0, 2] {
        assert_eq!(ours.input[i].witness, embit.input[i].witness, "input {i}");
        assert_eq!(
            ours.input[i].script_sig, embit.input[i].script_sig,
            "input {i}"
        );
    }
    // Round trip through base64, as the device gets it.
    assert_eq!(
        parse_psbt(psbt_to_base64(&done.psbt).as_bytes()).unwrap(),
        done.psbt
    );
}

#[test]
fn a_psbt_of_another_wallet_only_is_refused() {
    let psbt = psbt("mixed_other_wallet");
    let stranger = Xpriv::new_master(NetworkKind::Test, b"a stranger's seed, 16+ bytes").unwrap();
    assert_err(
        plan(
            &psbt,
            &wallet_of(&stranger),
            &path("m/0/2"),
            BtcNetwork::Testnet,
        ),
        &["none of the 3 inputs is this wallet's"],
    );
}

#[test]
fn taproot_p2wsh_and_p2sh_inputs_of_the_wallet_are_refused_clearly() {
    assert_err(
        plan_of(&psbt("taproot"), "m/0/99"),
        &["input 0", "Taproot", "Schnorr", "threshold ECDSA"],
    );
    // Recognised by the output key too, without any derivation entry.
    let mut bare = psbt("taproot");
    bare.inputs[0].tap_key_origins.clear();
    bare.inputs[0].tap_internal_key = None;
    assert_err(plan_of(&bare, "m/0/4"), &["input 0", "Schnorr"]);
    // Someone else's Taproot input alone: nothing is the wallet's, and the error says why.
    assert_err(
        plan_of(&bare, "m/0/99"),
        &["none of the 1 inputs", "Taproot"],
    );

    assert_err(
        plan_of(&psbt("p2wsh"), "m/0/99"),
        &["input 0", "P2WSH", "only P2WPKH and P2PKH"],
    );
    assert_err(
        plan_of(&psbt("p2sh_p2wpkh"), "m/0/99"),
        &["input 0", "P2SH", "only P2WPKH and P2PKH"],
    );
}

// --- Bad PSBTs: clear errors, nothing signed -----------------------------------------------

#[test]
fn missing_or_inconsistent_utxo_data_is_refused_naming_the_input() {
    let good = psbt("wallet_p2wpkh");

    let mut missing = good.clone();
    missing.inputs[0].witness_utxo = None;
    assert_err(
        plan_of(&missing, "m/0/99"),
        &["input 0", "witness_utxo", "fee"],
    );

    let mut wrong_tx = good.clone();
    let other_previous = psbt("wallet_p2pkh_default_path").inputs[0]
        .non_witness_utxo
        .clone()
        .unwrap();
    wrong_tx.inputs[1].non_witness_utxo = Some(other_previous);
    assert_err(
        plan_of(&wrong_tx, "m/0/99"),
        &["input 1", "non_witness_utxo is transaction"],
    );

    let mut disagreeing = good.clone();
    disagreeing.inputs[1].witness_utxo.as_mut().unwrap().value = Amount::from_sat(1);
    assert_err(plan_of(&disagreeing, "m/0/99"), &["input 1", "disagrees"]);

    // A legacy input of the wallet needs the whole previous transaction.
    let mut legacy = psbt("wallet_p2pkh_default_path");
    let previous = legacy.inputs[0].non_witness_utxo.take().unwrap();
    legacy.inputs[0].witness_utxo = Some(previous.output[0].clone());
    assert_err(
        plan_of(&legacy, "m/0/7"),
        &["input 0", "P2PKH", "non_witness_utxo"],
    );

    // Another wallet's input without its UTXO still makes the fee unknown.
    let mut mixed = psbt("mixed_other_wallet");
    mixed.inputs[1].witness_utxo = None;
    assert_err(plan_of(&mixed, "m/0/99"), &["input 1", "fee"]);
}

#[test]
fn only_sighash_all_is_signed() {
    let good = psbt("wallet_p2wpkh");
    for refused in [
        EcdsaSighashType::None,
        EcdsaSighashType::Single,
        EcdsaSighashType::AllPlusAnyoneCanPay,
        EcdsaSighashType::NonePlusAnyoneCanPay,
    ] {
        let mut psbt = good.clone();
        psbt.inputs[1].sighash_type = Some(refused.into());
        assert_err(
            plan_of(&psbt, "m/0/99"),
            &["input 1", &refused.to_string(), "only SIGHASH_ALL"],
        );
        // finalize refuses it too, whatever signature it is given.
        let plan = plan_of(&good, "m/0/99").unwrap();
        assert_err(
            finalize(psbt, &sign(&plan, &wallet_xpriv())),
            &["input 1", "only SIGHASH_ALL"],
        );
    }
    let mut explicit = good.clone();
    explicit.inputs[0].sighash_type = Some(EcdsaSighashType::All.into());
    assert_eq!(
        plan_of(&explicit, "m/0/99").unwrap().to_sign,
        plan_of(&good, "m/0/99").unwrap().to_sign
    );
    let mut odd = good;
    odd.inputs[0].sighash_type = Some(bitcoin::psbt::PsbtSighashType::from_u32(0x55));
    assert_err(plan_of(&odd, "m/0/99"), &["input 0", "not a standard"]);
}

#[test]
fn outputs_worth_more_than_the_inputs_are_refused() {
    let mut psbt = psbt("wallet_p2wpkh");
    psbt.unsigned_tx.output[0].value = Amount::from_sat(310_000);
    assert_err(
        plan_of(&psbt, "m/0/99"),
        &["405000 sat", "400000 sat", "negative"],
    );
    psbt.unsigned_tx.output[0].value = Amount::MAX_MONEY;
    assert_err(plan_of(&psbt, "m/0/99"), &["21 million"]);
}

#[test]
fn derivation_entries_naming_the_wallet_are_checked() {
    let good = psbt("wallet_p2wpkh");
    let (key, (fingerprint, _)) = good.inputs[0]
        .bip32_derivation
        .iter()
        .next()
        .map(|(k, v)| (*k, v.clone()))
        .unwrap();
    let with_path = |p: &str| {
        let mut psbt = good.clone();
        psbt.inputs[0].bip32_derivation.insert(
            key,
            (fingerprint, bip32::DerivationPath::from_str(p).unwrap()),
        );
        psbt
    };
    assert_err(
        plan_of(&with_path("m/0/9"), "m/0/99"),
        &["input 0", "m/0/9", "the wallet's key there is"],
    );
    assert_err(
        plan_of(&with_path("m/84'/0'/0'/0/0"), "m/0/99"),
        &["input 0", "hardened"],
    );
    let deep = format!("m{}", "/1".repeat(33));
    assert_err(
        plan_of(&with_path(&deep), "m/0/99"),
        &["input 0", "33 levels"],
    );

    // An entry naming the wallet's key for an input that pays to another key.
    let mut elsewhere = good.clone();
    let entry = good.inputs[1]
        .bip32_derivation
        .iter()
        .next()
        .map(|(k, v)| (*k, v.clone()))
        .unwrap();
    elsewhere.inputs[0].bip32_derivation = [entry].into_iter().collect();
    assert_err(
        plan_of(&elsewhere, "m/0/99"),
        &["input 0", "m/0/1", "does not pay to it"],
    );

    // A change output whose entry lies is refused too.
    let mut lying_change = good.clone();
    let (change_key, (fp, _)) = lying_change.outputs[1]
        .bip32_derivation
        .iter()
        .next()
        .map(|(k, v)| (*k, v.clone()))
        .unwrap();
    lying_change.outputs[1].bip32_derivation.insert(
        change_key,
        (fp, bip32::DerivationPath::from_str("m/1/1").unwrap()),
    );
    assert_err(plan_of(&lying_change, "m/0/99"), &["output 1", "m/1/1"]);

    // Without its entry, change is not recognised (it is just another destination), unless it
    // pays to the default path.
    let mut unlabelled = good.clone();
    unlabelled.outputs[1].bip32_derivation.clear();
    let plan = plan_of(&unlabelled, "m/0/99").unwrap();
    assert!(!plan.outputs[1].is_change);
    assert_eq!(plan.spent_from_wallet_sat(), 400_000);
    assert!(plan_of(&unlabelled, "m/1/0").unwrap().outputs[1].is_change);
}

#[test]
fn garbage_truncated_and_oversized_psbts_are_refused() {
    let text = fixture("wallet_p2wpkh.psbt");
    let binary = parse_psbt(text.as_bytes()).unwrap().serialize();

    assert_err(parse_psbt(b"hello, world"), &["base64"]);
    assert_err(parse_psbt(&text.as_bytes()[..text.len() - 8]), &["PSBT"]);
    assert_err(
        parse_psbt(&binary[..binary.len() - 1]),
        &["not a valid PSBT"],
    );
    let mut trailing = binary.clone();
    trailing.extend_from_slice(b"\x00\x01");
    assert_err(parse_psbt(&trailing), &["2 bytes follow"]);
    // A raw transaction is not a PSBT.
    let tx_hex = fixture("wallet_p2wpkh.embit.hex");
    let tx_bytes = hex::decode(&tx_hex).unwrap();
    assert_err(parse_psbt(&tx_bytes), &["PSBT"]);

    let mut huge = binary.clone();
    huge.resize(MAX_PSBT_BYTES + 1, 0);
    assert_err(parse_psbt(&huge), &["too large"]);
    let huge_text = "A".repeat(MAX_PSBT_BYTES * 2);
    assert_err(parse_psbt(huge_text.as_bytes()), &["too large"]);

    let input = TxIn::default();
    let tx = Transaction {
        version: bitcoin::transaction::Version::TWO,
        lock_time: bitcoin::absolute::LockTime::ZERO,
        input: vec![input; MAX_PSBT_IO + 1],
        output: vec![TxOut::NULL],
    };
    let many = Psbt::from_unsigned_tx(tx).unwrap();
    assert_err(
        parse_psbt(psbt_to_base64(&many).as_bytes()),
        &["257 inputs", "at most 256"],
    );
}

#[test]
fn finalize_checks_every_signature_before_using_any() {
    let psbt = psbt("wallet_p2wpkh");
    let plan = plan_of(&psbt, "m/0/99").unwrap();
    let good = sign(&plan, &wallet_xpriv());

    // A signature over something else.
    let mut forged = good.clone();
    let secp = Secp256k1::new();
    let key = wallet_xpriv()
        .derive_priv(&secp, &[ChildNumber::from(0), ChildNumber::from(1)])
        .unwrap();
    forged[1].signature = secp
        .sign_ecdsa(&Message::from_digest([7u8; 32]), &key.private_key)
        .serialize_compact();
    assert_err(
        finalize(psbt.clone(), &forged),
        &["input 1", "does not verify"],
    );

    // The right signature with another input's key.
    let mut swapped = good.clone();
    swapped[1].public_key = good[0].public_key;
    assert_err(
        finalize(psbt.clone(), &swapped),
        &["input 1", "is not the one"],
    );

    let mut out_of_range = good.clone();
    out_of_range[1].index = 5;
    assert_err(
        finalize(psbt.clone(), &out_of_range),
        &["input 5", "2 inputs"],
    );
    let twice = [good[0], good[0]];
    assert_err(
        finalize(psbt.clone(), &twice),
        &["input 0", "two signatures"],
    );
    let mut not_a_key = good.clone();
    not_a_key[0].public_key = [5u8; 33];
    assert_err(
        finalize(psbt.clone(), &not_a_key),
        &["input 0", "not a compressed"],
    );
    assert_err(finalize(psbt.clone(), &[]), &["no signatures"]);

    // A high-S signature is the same signature: it is accepted and written low-S.
    let mut high_s = good.clone();
    let sig = bitcoin::secp256k1::ecdsa::Signature::from_compact(&good[0].signature).unwrap();
    // n − s, by the library's scalar negation.
    let negated = SecretKey::from_slice(&good[0].signature[32..])
        .unwrap()
        .negate()
        .secret_bytes();
    high_s[0].signature[32..].copy_from_slice(&negated);
    assert_ne!(high_s[0].signature, sig.serialize_compact());
    let from_high = finalize(psbt.clone(), &high_s).unwrap().tx.unwrap();
    let from_low = finalize(psbt.clone(), &good).unwrap().tx.unwrap();
    assert_eq!(from_high, from_low);

    // One signature: a partial PSBT, then the other finishes it; signing twice is refused.
    let first = finalize(psbt.clone(), &good[..1]).unwrap();
    assert_eq!(first.unfinalised_inputs, [1]);
    assert!(first.tx.is_none());
    assert_err(
        finalize(first.psbt.clone(), &good[..1]),
        &["input 0", "already finalised"],
    );
    // Planned again, the final input is left as it is and the other one is still signed.
    let again = plan_of(&first.psbt, "m/0/99").unwrap();
    assert_eq!(again.final_inputs, [0]);
    assert!(again.other_inputs.is_empty());
    assert_eq!(again.to_sign, plan.to_sign[1..]);
    assert!(
        again
            .summary
            .ends_with("signs input 1 of 2 (input 0 already final)"),
        "{}",
        again.summary
    );
    let second = finalize(first.psbt, &good[1..]).unwrap();
    assert_eq!(second.tx.unwrap(), from_low);
    assert_err(
        plan_of(&second.psbt, "m/0/99"),
        &["all 2 inputs are already finalised"],
    );
}

// --- embit verifies what was signed here (needs TESSERA_PYTHON) ----------------------------

const SET_UP: &str = "set TESSERA_PYTHON to a python with embit 0.8.0 (python3 -m venv v && \
    v/bin/pip install embit==0.8.0; scripts/test sets it up for CI)";

fn python() -> String {
    let python = std::env::var("TESSERA_PYTHON")
        .unwrap_or_else(|_| panic!("TESSERA_PYTHON is not set: {SET_UP}"));
    let check = Command::new(&python)
        .args(["-c", "import embit; print(embit.__file__)"])
        .current_dir(std::env::temp_dir())
        .output()
        .unwrap_or_else(|e| panic!("TESSERA_PYTHON ({python}) does not run ({e}): {SET_UP}"));
    assert!(
        check.status.success(),
        "TESSERA_PYTHON ({python}) lacks embit:\n{}\n{SET_UP}",
        String::from_utf8_lossy(&check.stderr)
    );
    python
}

/// Asks embit to verify inputs `check` of `tx` (verify_tx.py); returns what it printed or its
/// error.
fn embit_verify(
    python: &str,
    tx: &Transaction,
    prevouts: &[TxOut],
    check: &[usize],
) -> Result<Vec<usize>, String> {
    use std::io::Write as _;
    let request = serde_json::json!({
        "tx": tx_to_hex(tx),
        "prevouts": prevouts
            .iter()
            .map(|o| serde_json::json!({
                "script": o.script_pubkey.to_hex_string(),
                "value": o.value.to_sat(),
            }))
            .collect::<Vec<_>>(),
        "check": check,
    });
    let mut child = Command::new(python)
        .arg(data_dir().join("verify_tx.py"))
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(request.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    if !out.status.success() {
        return Err(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    Ok(answer["verified"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as usize)
        .collect())
}

fn prevouts(psbt: &Psbt) -> Vec<TxOut> {
    psbt.inputs
        .iter()
        .zip(&psbt.unsigned_tx.input)
        .map(|(input, txin)| match &input.non_witness_utxo {
            Some(tx) => tx.output[txin.previous_output.vout as usize].clone(),
            None => input.witness_utxo.clone().unwrap(),
        })
        .collect()
}

#[test]
fn embit_verifies_every_signature_made_here() {
    let python = python();
    for (name, default) in [
        ("wallet_p2wpkh", "m/0/99"),
        ("wallet_p2pkh_default_path", "m/0/7"),
        ("mixed_other_wallet", "m/0/99"),
    ] {
        let psbt = psbt(name);
        let plan = plan_of(&psbt, default).unwrap();
        let indices: Vec<usize> = plan.to_sign.iter().map(|i| i.index).collect();
        let done = finalize(psbt.clone(), &sign(&plan, &wallet_xpriv())).unwrap();
        let tx = done.psbt.clone().extract_tx_unchecked_fee_rate();
        let verified = embit_verify(&python, &tx, &prevouts(&psbt), &indices)
            .unwrap_or_else(|e| panic!("{name}: embit refused: {e}"));
        assert_eq!(verified, indices, "{name}");

        // The check can fail: a signature moved to another transaction does not verify.
        let mut altered = tx.clone();
        altered.output[0].value = Amount::from_sat(altered.output[0].value.to_sat() - 1);
        let refused = embit_verify(&python, &altered, &prevouts(&psbt), &indices).unwrap_err();
        assert!(refused.contains("does not verify"), "{name}: {refused}");
    }
}
