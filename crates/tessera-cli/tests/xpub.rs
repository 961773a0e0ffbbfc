//! `tessera pubkey --path/--xpub/--btc` against a real server process and real `tessera`
//! processes, checked by independent implementations: the printed xpub and tpub parsed and
//! derived by Python's embit (BIP-32), the P2WPKH address computed by embit, the signature that
//! `sign --path` makes verified under the derived key by coincurve (libsecp256k1) and by k256,
//! and its signer recovered by eth-account.
//!
//! Needs `TESSERA_PYTHON`: a Python with embit, coincurve and eth-account.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::cli::{ok_json as json, python, python_json, tessera};

use k256::ecdsa::signature::hazmat::PrehashVerifier;
use k256::ecdsa::{Signature, VerifyingKey};
use serde_json::{Value, json};
use sha3::{Digest, Keccak256};

/// The independent side: given what `tessera` printed, embit parses the extended keys and
/// derives children and addresses, coincurve verifies the signature, eth-account recovers its
/// signer. Prints one JSON document.
const CHECK: &str = r#"
import json, sys
from coincurve import PublicKey
from embit import bip32, script
from embit.networks import NETWORKS
from eth_account import Account
from eth_account.messages import encode_defunct

a = json.loads(sys.stdin.read())
root = bip32.HDKey.from_string(a["xpub"])
tpub = bip32.HDKey.from_string(a["tpub"])
at_0 = bip32.HDKey.from_string(a["xpub_at_0"])
child = root.derive(a["sign_path"])
sig_der = bytes.fromhex(a["signature_der"])
digest = bytes.fromhex(a["digest"])
rsv = bytes.fromhex(a["signature_rsv"])
out = {
    "root": {
        "key": root.key.sec().hex(),
        "chain_code": root.chain_code.hex(),
        "depth": root.depth,
        "parent_fingerprint": root.fingerprint.hex(),
        "child_number": root.child_number,
        "fingerprint": root.my_fingerprint.hex(),
        "mainnet_version": root.version == NETWORKS["main"]["xpub"],
    },
    "tpub": {
        "key": tpub.key.sec().hex(),
        "chain_code": tpub.chain_code.hex(),
        "test_version": tpub.version == NETWORKS["test"]["xpub"],
    },
    "at_0": {
        "key": at_0.key.sec().hex(),
        "depth": at_0.depth,
        "parent_fingerprint": at_0.fingerprint.hex(),
        "child_number": at_0.child_number,
        "child_7": at_0.derive("m/7").key.sec().hex(),
    },
    "keys": {p: root.derive(p).key.sec().hex() for p in a["paths"]},
    "regtest_address": script.p2wpkh(child.key).address(NETWORKS["regtest"]),
    "mainnet_address": script.p2wpkh(child.key).address(NETWORKS["main"]),
    "coincurve_child": PublicKey(child.key.sec()).verify(sig_der, digest, hasher=None),
    "coincurve_root": PublicKey(root.key.sec()).verify(sig_der, digest, hasher=None),
    "eth_signer": Account.recover_message(
        encode_defunct(text=a["message"]), signature=rsv[:64] + bytes([rsv[64] + 27])
    ),
}
print(json.dumps(out))
"#;

/// The value of a `label   value` line of a command's text output.
fn field(text: &str, label: &str) -> String {
    text.lines()
        .find_map(|line| {
            line.strip_prefix(label)
                .filter(|rest| rest.starts_with(' '))
                .map(|rest| rest.trim().to_string())
        })
        .unwrap_or_else(|| panic!("no {label:?} line in:\n{text}"))
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or_else(|| panic!("{v} is not a string"))
}

fn k256_verifies(public_key: &str, digest: &[u8], der: &str) -> bool {
    let key = VerifyingKey::from_sec1_bytes(&hex::decode(public_key).unwrap()).unwrap();
    let signature = Signature::from_der(&hex::decode(der).unwrap()).unwrap();
    key.verify_prehash(digest, &signature).is_ok()
}

#[test]
fn xpub_derives_the_keys_that_sign_and_the_btc_address() {
    let python = python();
    let server = common::Server::start_fresh(&[]);
    let home = tempfile::tempdir().unwrap();
    let home = home.path();
    common::cli::init(home, &server.url, "jo");
    let created = json(home, &["keygen", "--name", "main", "--json"]);

    // Without the new flags, `pubkey` prints what `keygen` printed, as before.
    assert_eq!(
        json(home, &["pubkey", "--wallet", "main", "--json"]),
        created
    );

    let root = json(home, &["pubkey", "--wallet", "main", "--xpub", "--json"]);
    assert_eq!(root["public_key"], created["public_key"], "{root}");
    assert_eq!(root["path"], "m", "{root}");
    assert_eq!(root["path_public_key"], created["public_key"], "{root}");
    assert_eq!(root["network"], "mainnet", "{root}");
    let xpub = s(&root["xpub"]).to_string();
    assert!(xpub.starts_with("xpub"), "{root}");
    let tpub_doc = json(
        home,
        &[
            "pubkey",
            "--wallet",
            "main",
            "--xpub",
            "--network",
            "testnet",
            "--json",
        ],
    );
    let tpub = s(&tpub_doc["xpub"]).to_string();
    assert!(tpub.starts_with("tpub"), "{tpub_doc}");
    assert_eq!(tpub_doc["network"], "testnet");
    let at_0 = json(
        home,
        &[
            "pubkey", "--wallet", "main", "--path", "m/0", "--xpub", "--json",
        ],
    );

    // The keys at two paths, as `pubkey --path` prints them (JSON and text).
    let paths = ["m/0/7", "m/1/2"];
    let mut printed = serde_json::Map::new();
    for path in paths {
        let doc = json(
            home,
            &["pubkey", "--wallet", "main", "--path", path, "--json"],
        );
        assert_eq!(doc["path"], path, "{doc}");
        assert_eq!(doc["public_key"], created["public_key"], "the root stays");
        assert_ne!(doc["path_public_key"], created["public_key"], "{doc}");
        assert!(
            doc.get("xpub").is_none() && doc.get("btc_address").is_none(),
            "{doc}"
        );
        let text = tessera(home, &["pubkey", "--wallet", "main", "--path", path]);
        assert!(text.status.success());
        let text = String::from_utf8(text.stdout).unwrap();
        assert_eq!(field(&text, "public key"), s(&created["public_key"]));
        assert_eq!(field(&text, "path key"), s(&doc["path_public_key"]));
        assert_eq!(field(&text, "path eth addr"), s(&doc["path_eth_address"]));
        printed.insert(path.to_string(), doc["path_public_key"].clone());
    }

    // `sign --path` signs with the key at that path.
    let message = "hello";
    let signed = json(
        home,
        &[
            "sign",
            "--wallet",
            "main",
            "--path",
            "m/0/7",
            "--message",
            message,
            "--json",
        ],
    );
    assert_eq!(signed["public_key"], printed["m/0/7"], "{signed}");
    let digest = hex::decode(s(&signed["digest"])).unwrap();
    let mut eip191 = Keccak256::new();
    eip191.update(format!(
        "\x19Ethereum Signed Message:\n{}{message}",
        message.len()
    ));
    assert_eq!(digest, eip191.finalize().to_vec(), "the EIP-191 digest");

    let regtest = json(
        home,
        &[
            "pubkey",
            "--wallet",
            "main",
            "--path",
            "m/0/7",
            "--btc",
            "--network",
            "regtest",
            "--json",
        ],
    );
    assert_eq!(regtest["path_public_key"], printed["m/0/7"]);
    assert_eq!(regtest["network"], "regtest");
    assert!(regtest.get("xpub").is_none(), "{regtest}");
    let mainnet = json(
        home,
        &[
            "pubkey", "--wallet", "main", "--path", "m/0/7", "--btc", "--json",
        ],
    );

    // The independent checks.
    let checked = python_json(
        &python,
        CHECK,
        true,
        &json!({
            "xpub": xpub,
            "tpub": tpub,
            "xpub_at_0": at_0["xpub"],
            "paths": paths,
            "sign_path": "m/0/7",
            "message": message,
            "digest": signed["digest"],
            "signature_der": signed["signature_der"],
            "signature_rsv": signed["signature_rsv"],
        }),
    );
    let r = &checked["root"];
    assert_eq!(r["key"], created["public_key"], "{checked}");
    assert_eq!(
        (&r["depth"], &r["parent_fingerprint"], &r["child_number"]),
        (&json!(0), &json!("00000000"), &json!(0)),
        "{checked}"
    );
    assert_eq!(r["mainnet_version"], true);
    assert_eq!(r["fingerprint"], root["master_fingerprint"], "{checked}");
    assert_eq!(checked["tpub"]["key"], r["key"]);
    assert_eq!(checked["tpub"]["chain_code"], r["chain_code"]);
    assert_eq!(checked["tpub"]["test_version"], true);
    // The xpub at m/0 sits at depth 1 below the root and derives m/0/7 by itself.
    let a0 = &checked["at_0"];
    assert_eq!(a0["key"], at_0["path_public_key"], "{checked}");
    assert_eq!(
        (&a0["depth"], &a0["parent_fingerprint"], &a0["child_number"]),
        (&json!(1), &r["fingerprint"], &json!(0)),
        "{checked}"
    );
    assert_eq!(a0["child_7"], printed["m/0/7"], "{checked}");
    for path in paths {
        assert_eq!(checked["keys"][path], printed[path], "{path}: {checked}");
    }
    assert_eq!(
        checked["regtest_address"], regtest["btc_address"],
        "{checked}"
    );
    assert!(s(&regtest["btc_address"]).starts_with("bcrt1q"));
    assert_eq!(
        checked["mainnet_address"], mainnet["btc_address"],
        "{checked}"
    );
    assert!(s(&mainnet["btc_address"]).starts_with("bc1q"));
    assert_eq!(checked["coincurve_child"], true, "{checked}");
    assert_eq!(checked["coincurve_root"], false, "{checked}");
    assert_eq!(
        checked["eth_signer"], regtest["path_eth_address"],
        "{checked}"
    );
    assert!(k256_verifies(
        s(&printed["m/0/7"]),
        &digest,
        s(&signed["signature_der"])
    ));
    assert!(!k256_verifies(
        s(&created["public_key"]),
        &digest,
        s(&signed["signature_der"])
    ));
    assert!(!k256_verifies(
        s(&printed["m/1/2"]),
        &digest,
        s(&signed["signature_der"])
    ));

    // Text output: the same values on labelled lines.
    let text = tessera(
        home,
        &[
            "pubkey",
            "--wallet",
            "main",
            "--path",
            "m/0/7",
            "--xpub",
            "--btc",
            "--network",
            "regtest",
        ],
    );
    assert!(text.status.success());
    let text = String::from_utf8(text.stdout).unwrap();
    assert_eq!(field(&text, "path"), "m/0/7");
    assert_eq!(field(&text, "network"), "regtest");
    assert_eq!(field(&text, "btc address"), s(&regtest["btc_address"]));
    assert!(field(&text, "tpub").starts_with("tpub"), "{text}");

    // Bad input: one line, exit 2, nothing printed on stdout.
    for (args, says) in [
        (&["--path", "m/0'/7"][..], "hardened"),
        (&["--path", "m/44h"], "hardened"),
        (&["--path", "m/2147483648"], "hardened"),
        (&["--path", "0/7"], "--path"),
        (&["--path", "m/x"], "--path"),
        (&["--xpub", "--network", "litecoin"], "unknown network"),
        (&["--btc", "--network", ""], "--network"),
        (
            &["--network", "regtest"],
            "--network applies to --xpub and --btc",
        ),
    ] {
        let mut all = vec!["pubkey", "--wallet", "main"];
        all.extend_from_slice(args);
        let out = tessera(home, &all);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{all:?}: {err}");
        assert!(out.stdout.is_empty(), "{all:?}");
        assert!(err.contains(says), "{all:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{all:?}: {err}");
    }
    let out = tessera(home, &["pubkey", "--wallet", "nope", "--xpub"]);
    assert!(!out.status.success() && out.stdout.is_empty(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no wallet named \"nope\""),
        "{out:?}"
    );
    // A signature at a hardened path is refused the same way.
    let out = tessera(
        home,
        &[
            "sign",
            "--wallet",
            "main",
            "--path",
            "m/0'/7",
            "--message",
            "x",
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("hardened"));
}
