//! `tessera sign --psbt` (issue 17) against a real server process and real `tessera` processes,
//! checked by an independent Bitcoin library: embit builds the PSBTs from the wallet's printed
//! tpub (P2WPKH and P2PKH inputs of the wallet, change back to it, another party's payee) and
//! verifies every signature of the finalised transaction. The policy's Bitcoin rules
//! (destinations, fee ceiling, amounts per transaction and per 24 hours, each transaction counted
//! once) refuse naming the rule; PSBTs that cannot be signed are refused with clear errors.
//!
//! Needs `TESSERA_PYTHON` (embit).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;

use common::cli::{init, ok_json, python, python_json, refused, set_policy, write_json};
use serde_json::{Value, json};

/// Builds a PSBT with embit from the wallet's tpub. Input (JSON): {"tpub", "case"}. Prints
/// {"psbt": base64, "prevouts": [{"script", "value"}], "payee": address}.
const BUILD: &str = r#"
import hashlib, json, sys
from embit import bip32, ec, script
from embit.networks import NETWORKS
from embit.psbt import PSBT, DerivationPath
from embit.transaction import Transaction, TransactionInput, TransactionOutput

a = json.loads(sys.stdin.read())
wallet = bip32.HDKey.from_string(a["tpub"])
fp = wallet.my_fingerprint
other = bip32.HDKey(ec.PrivateKey(hashlib.sha256(b"someone else").digest()), b"\x01" * 32)
payee = script.p2wpkh(other.derive("m/0/0").get_public_key())
net = NETWORKS["regtest"]

def key(path):
    return wallet.derive(path).key

def prev(seed, outputs):
    vin = [TransactionInput(hashlib.sha256(seed.encode()).digest(), 0)]
    return Transaction(version=2, vin=vin, vout=[TransactionOutput(v, s) for s, v in outputs])

case = a["case"]
k00, k01, k10 = key("m/0/0"), key("m/0/1"), key("m/1/0")
if case == "spend":
    ins = [(prev("a", [(script.p2wpkh(k00), 100_000)]), "wpkh", k00, [0, 0]),
           (prev("b", [(script.p2pkh(k01), 50_000)]), "pkh", k01, [0, 1])]
    outs = [(payee, 120_000, None), (script.p2wpkh(k10), 29_000, (k10, [1, 0]))]
elif case == "more":
    ins = [(prev("c", [(script.p2wpkh(k00), 95_000)]), "wpkh", k00, [0, 0])]
    outs = [(payee, 90_000, None), (script.p2wpkh(k10), 4_000, (k10, [1, 0]))]
elif case == "missing_utxo":
    ins = [(prev("d", [(script.p2wpkh(k00), 10_000)]), "none", k00, [0, 0])]
    outs = [(payee, 9_000, None)]
elif case == "others":
    o = other.derive("m/0/1").get_public_key()
    ins = [(prev("e", [(script.p2wpkh(o), 10_000)]), "wpkh", None, None)]
    outs = [(payee, 9_000, None)]
elif case == "taproot":
    ins = [(prev("f", [(script.p2tr(k00), 10_000)]), "wpkh", k00, [0, 0])]
    outs = [(payee, 9_000, None)]
vin = [TransactionInput(t.txid(), 0) for t, _, _, _ in ins]
vout = [TransactionOutput(v, s) for s, v, _ in outs]
psbt = PSBT(Transaction(version=2, vin=vin, vout=vout, locktime=0))
for inp, (t, kind, k, path) in zip(psbt.inputs, ins):
    if kind == "wpkh":
        inp.witness_utxo = t.vout[0]
    elif kind == "pkh":
        inp.non_witness_utxo = t
    if k is not None and case == "taproot":
        inp.taproot_bip32_derivations[k] = ([], DerivationPath(fp, path))
    elif k is not None:
        inp.bip32_derivations[k] = DerivationPath(fp, path)
for out, (_, _, der) in zip(psbt.outputs, outs):
    if der is not None:
        out.bip32_derivations[der[0]] = DerivationPath(fp, der[1])
print(json.dumps({
    "psbt": psbt.to_base64(),
    "prevouts": [{"script": t.vout[0].script_pubkey.data.hex(), "value": t.vout[0].value}
                 for t, _, _, _ in ins],
    "payee": payee.address(net),
}))
"#;

const VERIFY: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tessera-api/tests/data/btc/verify_tx.py"
);

fn build(python: &str, tpub: &str, case: &str, dir: &Path) -> (String, Value) {
    let built = python_json(python, BUILD, true, &json!({ "tpub": tpub, "case": case }));
    let file = dir.join(format!("{case}.psbt"));
    std::fs::write(&file, built["psbt"].as_str().unwrap()).unwrap();
    (file.to_str().unwrap().to_string(), built)
}

fn sign(psbt: &str) -> Vec<&str> {
    vec![
        "sign",
        "--wallet",
        "main",
        "--psbt",
        psbt,
        "--network",
        "regtest",
        "--json",
    ]
}

#[test]
fn psbts_are_signed_input_by_input_under_the_bitcoin_rules() {
    let python = python();
    let server = common::Server::start_fresh(&[]);
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path();
    init(home, &server.url, "satoshi");
    ok_json(home, &["keygen", "--name", "main", "--json"]);
    let keys = ok_json(
        home,
        &[
            "pubkey",
            "--wallet",
            "main",
            "--xpub",
            "--network",
            "regtest",
            "--json",
        ],
    );
    let tpub = keys["xpub"].as_str().unwrap();
    assert!(tpub.starts_with("tpub"), "{keys}");
    let (spend, built) = build(&python, tpub, "spend", home);
    let payee = built["payee"].as_str().unwrap();

    // PSBTs are a kind the policy must allow.
    let err = refused(home, &sign(&spend));
    assert!(err.contains("allowed_kinds"), "{err}");
    let rules = |destinations: Vec<&str>, max_fee: u64| {
        json!({"allowed_kinds": ["btc-psbt"], "btc_destinations": destinations,
               "max_fee_sat": max_fee, "max_sat_per_tx": 125_000, "max_sat_per_24h": 200_000})
    };
    // The payee off the allow-list (the change needs no listing), then a fee ceiling under the
    // 1,000 sat fee.
    set_policy(
        home,
        "main",
        &rules(vec!["bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080"], 2_000),
    );
    let err = refused(home, &sign(&spend));
    assert!(
        err.contains("btc_destinations") && err.contains(payee),
        "{err}"
    );
    set_policy(home, "main", &rules(vec![payee], 999));
    let err = refused(home, &sign(&spend));
    assert!(err.contains("max_fee_sat"), "{err}");

    // Allowed: both inputs (P2WPKH at m/0/0, P2PKH at m/0/1) signed and finalised; embit
    // verifies each signature of the extracted transaction.
    set_policy(home, "main", &rules(vec![payee], 1_000));
    let signed = ok_json(home, &sign(&spend));
    assert_eq!(signed["signed_inputs"], json!([0, 1]), "{signed}");
    assert_eq!(signed["fee_sat"], 1_000);
    let summary = signed["summary"].as_str().unwrap();
    assert!(
        summary.contains(payee) && summary.contains("change"),
        "{summary}"
    );
    let raw = signed["raw_tx"].as_str().expect("a complete transaction");
    let verified = python_json(
        &python,
        VERIFY,
        false,
        &json!({ "tx": raw, "prevouts": built["prevouts"], "check": [0, 1] }),
    );
    assert_eq!(verified["verified"], json!([0, 1]));
    // The audit log names the transaction and its payee.
    let audit = ok_json(home, &["audit", "list", "--wallet", "main", "--json"]);
    assert!(
        audit.to_string().contains(&format!(
            "Bitcoin (regtest) transaction {}",
            signed["txid"].as_str().unwrap()
        )),
        "{audit}"
    );

    // The 24-hour budget: 121,000 sat spent (inputs less change); the same transaction signed
    // again counts once, another of 91,000 sat would make 212,000 > 200,000.
    ok_json(home, &sign(&spend));
    let (more, _) = build(&python, tpub, "more", home);
    let err = refused(home, &sign(&more));
    assert!(err.contains("max_sat_per_24h"), "{err}");

    // PSBTs that cannot be signed: clear errors before anything is asked of the server.
    for (case, why) in [
        ("missing_utxo", "missing"),
        ("others", "none of the 1 inputs"),
        ("taproot", "Schnorr"),
    ] {
        let (file, _) = build(&python, tpub, case, home);
        let err = refused(home, &sign(&file));
        assert!(err.contains(why), "{case}: {err}");
    }
    let garbage = write_json(home, "garbage.psbt", &json!("not a psbt"));
    let err = refused(home, &sign(&garbage));
    assert!(err.to_lowercase().contains("psbt"), "{err}");
}

/// A device that bypasses its SDK's plan and asks the server itself: the server reads the PSBT
/// with the wallet's key (its share's chain code) and refuses an input that is not the wallet's,
/// an input of the wallet at another path than the request's, and an input that does not exist;
/// the one it signs verifies under the key at the input's path.
#[tokio::test]
async fn the_server_signs_only_the_wallets_inputs_at_their_paths() {
    use tessera_api::btc::BtcNetwork;
    use tessera_api::intent::SignKind;
    use tessera_client::{ClientError, ServerClient};
    use tessera_core::DerivationPath;

    let python = python();
    let server = common::Server::start_fresh(&[]);
    let dir = tempfile::tempdir().unwrap();
    let identity = common::identity(dir.path());
    let mut device = ServerClient::new(&server.url).unwrap();
    let registered = device.register(&identity, "raw", "laptop").await.unwrap();
    device
        .login(&identity, &registered.device_id)
        .await
        .unwrap();
    let share = device.keygen("w", |_, _| {}).await.unwrap();
    let wallet = share.wallet_id().to_string();
    device
        .set_policy(
            &identity,
            &wallet,
            &serde_json::from_value(json!({"allowed_kinds": ["btc-psbt"]})).unwrap(),
        )
        .await
        .unwrap();
    let tpub = tessera_api::keys::ExtendedPublicKey::root(&share.public_key(), share.chain_code())
        .unwrap()
        .encode(BtcNetwork::Regtest);
    let (_, spend) = build(&python, &tpub, "spend", dir.path());
    let (_, others) = build(&python, &tpub, "others", dir.path());
    let request = |built: &Value, input: u32| SignKind::BtcPsbt {
        psbt: built["psbt"].as_str().unwrap().to_string(),
        network: BtcNetwork::Regtest,
        input,
    };
    let sign = |kind: SignKind, path: &'static str| {
        let device = &device;
        let share = &share;
        async move {
            device
                .sign_kind(share, &kind, &path.parse().unwrap(), |_, _| {}, |_| {})
                .await
        }
    };
    let refused = |result: Result<tessera_core::Signature, ClientError>, why: &str| match result {
        Err(ClientError::Server {
            status: 400,
            message,
            ..
        }) => assert!(message.contains(why), "{message}"),
        other => panic!("not refused ({why}): {other:?}"),
    };
    refused(
        sign(request(&others, 0), "m/0/0").await,
        "none of the 1 inputs is this wallet's",
    );
    refused(
        sign(request(&spend, 0), "m/0/1").await,
        "pays to the wallet's key at m/0/0",
    );
    // An input that does not exist: the SDK's own decode (the server's too) refuses it.
    match sign(request(&spend, 2), "m/0/0").await {
        Err(e) => assert!(
            e.to_string().contains("the transaction has 2 inputs"),
            "{e}"
        ),
        Ok(_) => panic!("input 2 of 2 signed"),
    }
    // Both refusals are audited with their reasons (the third never reached the server).
    let records = device.audit(Some(&wallet)).await.unwrap();
    let invalid: Vec<&str> = records
        .iter()
        .filter(|r| r.kind == "sign.invalid")
        .map(|r| r.detail.as_str())
        .collect();
    assert_eq!(invalid.len(), 2, "{records:?}");
    assert!(invalid[1].contains("m/0/0"), "{}", invalid[1]);
    // Input 1 (P2PKH at m/0/1), signed alone: `sign_kind` verified it under the key at m/0/1.
    let signature = sign(request(&spend, 1), "m/0/1").await.unwrap();
    let key: DerivationPath = "m/0/1".parse().unwrap();
    assert!(share.public_key_at(&key).is_ok());
    assert_eq!(signature.to_compact().len(), 64);
}
