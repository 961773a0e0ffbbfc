//! Text and JSON the server and the CLI accept. The first byte picks the reader:
//! 0 an access structure (`AccessStructure::parse`), 1 a wallet structure
//! (`WalletStructure::parse`), 2 a `PUT /policy` body (`SetPolicy` JSON, then the server's
//! `policy::check`), 3 a signing intent (`SignKind` JSON, then `intent::decode`, which computes
//! the digest the server signs), 4 a device name (the server's `names::normalise`, `skeleton`,
//! `party_label`), 5 a derivation path; and two binary readers: 6 a PSBT (`btc::parse_psbt`,
//! then `btc::plan` with the fixtures' wallet key and `btc::input_digest` of every input), 7 a
//! transaction's call data (`calls::decode_call`).
//!
//! Invariants: a structure or path that parses prints as text that parses to the same value;
//! a policy or intent re-serialises to JSON that reads back the same; a normalised name is a
//! fixed point of normalisation, and its party label (when it has one) is a valid label; a PSBT
//! reads back the same from its base64, and each input the plan signs has the digest that the
//! key-less `input_digest` computes (what the server checks between the device's request and
//! its own plan); a token call followed by one more byte is no longer read as one.
#![no_main]

use std::str::FromStr;

use libfuzzer_sys::fuzz_target;
use tessera_api::SetPolicy;
use tessera_api::btc::{self, BtcNetwork, WalletKey};
use tessera_api::calls::{self, CallEffect};
use tessera_api::intent::{self, SignKind};
use tessera_core::DerivationPath;
use tessera_core::structure::{AccessStructure, WalletStructure, check_label};
use tessera_server::{names, policy};

fuzz_target!(|data: &[u8]| {
    let Some((&selector, bytes)) = data.split_first() else {
        return;
    };
    match selector % 8 {
        6 => return psbt(bytes),
        7 => return call_data(bytes),
        _ => {}
    }
    // Every other reader takes text (JSON is UTF-8 too).
    let Ok(text) = std::str::from_utf8(bytes) else {
        return;
    };
    match selector % 8 {
        0 => {
            if let Ok(s) = AccessStructure::parse(text) {
                let printed = s.to_string();
                assert_eq!(
                    AccessStructure::parse(&printed).as_ref(),
                    Ok(&s),
                    "{printed}"
                );
            }
        }
        1 => {
            if let Ok(s) = WalletStructure::parse(text) {
                let printed = s.to_string();
                assert_eq!(
                    WalletStructure::parse(&printed).as_ref(),
                    Ok(&s),
                    "{printed}"
                );
            }
        }
        2 => {
            if let Ok(body) = serde_json::from_str::<SetPolicy>(text) {
                let _ = policy::check(&body.policy);
                let again: SetPolicy =
                    serde_json::from_slice(&serde_json::to_vec(&body).unwrap()).unwrap();
                assert_eq!(again.policy, body.policy);
            }
        }
        3 => {
            if let Ok(kind) = serde_json::from_str::<SignKind>(text) {
                let decoded = intent::decode(&kind);
                let again: SignKind =
                    serde_json::from_slice(&serde_json::to_vec(&kind).unwrap()).unwrap();
                assert_eq!(again, kind);
                if let Ok(decoded) = decoded {
                    let twice = intent::decode(&again).expect("decodes twice");
                    assert_eq!(twice.digest, decoded.digest, "one intent, two digests");
                }
            }
        }
        4 => {
            if let Ok(name) = names::normalise("device name", text) {
                assert_eq!(
                    names::normalise("device name", &name).ok().as_ref(),
                    Some(&name)
                );
                let _ = names::skeleton(&name);
                if let Some(label) = names::party_label(&name) {
                    assert!(
                        check_label(&label, None).is_ok(),
                        "label {label:?} of {name:?}"
                    );
                }
            }
        }
        _ => {
            if let Ok(path) = DerivationPath::from_str(text) {
                let printed = path.to_string();
                assert_eq!(
                    DerivationPath::from_str(&printed).ok(),
                    Some(path),
                    "{printed}"
                );
            }
        }
    }
});

/// The wallet key of the PSBT fixtures (crates/tessera-api/tests/data/btc/make_psbt.py): the
/// public key of SHA-256("tessera btc test wallet key") and the chain code
/// SHA-256("tessera btc test wallet chain code"), so that the seeds' inputs are the wallet's.
fn fixture_wallet() -> WalletKey {
    let mut public_key = [0u8; 33];
    let mut chain_code = [0u8; 32];
    hex_into(
        "0243065f6322f3870189479d845a65c9515709558d8486dad1ce069e5c371a5a3a",
        &mut public_key,
    );
    hex_into(
        "0da282a70a6e6bec1d440ddcc1bbc8b40132bf22d5ddde1ac0d5f634ca6b5db1",
        &mut chain_code,
    );
    WalletKey {
        public_key,
        chain_code,
    }
}

fn hex_into(text: &str, out: &mut [u8]) {
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).unwrap();
    }
}

fn psbt(bytes: &[u8]) {
    let Ok(psbt) = btc::parse_psbt(bytes) else {
        return;
    };
    let text = btc::psbt_to_base64(&psbt);
    let again = btc::parse_psbt(text.as_bytes()).expect("a PSBT's own base64 reads back");
    assert_eq!(again, psbt, "a PSBT and its base64");
    for (i, _) in psbt.inputs.iter().enumerate() {
        let _ = btc::input_digest(&psbt, i);
    }
    let path = DerivationPath::from_str("m/0/7").unwrap();
    if let Ok(plan) = btc::plan(&psbt, &fixture_wallet(), &path, BtcNetwork::Regtest) {
        for input in &plan.to_sign {
            assert_eq!(
                btc::input_digest(&psbt, input.index).ok(),
                Some(input.sighash),
                "input {}: the plan's digest and the key-less one differ",
                input.index
            );
        }
        assert!(plan.total_in_sat >= plan.total_out_sat);
        let _ = plan.spend();
    }
}

fn call_data(bytes: &[u8]) {
    let contract = "0x00000000000000000000000000000000000000aa";
    let effect = calls::decode_call(contract, bytes);
    assert_eq!(
        calls::decode_call(contract, bytes),
        effect,
        "one call, two readings"
    );
    if let CallEffect::Token(actions) = &effect {
        for action in actions {
            let _ = action.describe(Some("TKN"), Some(18));
            let _ = action.clone().as_standard(calls::TokenStandard::Erc721);
        }
        let mut longer = bytes.to_vec();
        longer.push(0);
        assert_eq!(
            calls::decode_call(contract, &longer),
            CallEffect::Unknown,
            "a call with a trailing byte was read as a token call"
        );
    }
}
