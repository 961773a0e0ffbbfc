//! Every Ethereum transaction type `tessera sign --eth-tx` takes — legacy (EIP-155), EIP-2930,
//! EIP-1559 and EIP-7702 — signed by real `tessera` processes against a real server process, and
//! each signed transaction checked independently with eth-account (Python): its sender recovers
//! to the wallet's address and its fields decode back to what was asked. EIP-7702: a delegation
//! is refused until the wallet's policy names the delegate; an authorisation of the wallet's own
//! account (`eth-authorization`) is signed and carried by a 7702 transaction. Bad transactions
//! (fields of another type, missing ones, unknown ones, chain ids that do not match) are refused
//! with errors naming the field, by the CLI and by the server, and nothing is signed.
//!
//! Python comes from `TESSERA_PYTHON` (an environment with eth-account; scripts/test sets it).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::{Command, Output};

use serde_json::{Value, json};
use tessera_api::intent::{EthAuthorization, SignKind};
use tessera_api::{Policy, RequestKind};
use tessera_client::{ClientError, ServerClient};
use tessera_core::DerivationPath;

use common::cli::{python, set_policy, tessera};
use common::{Server, identity};

/// The contract accounts delegate to.
const DELEGATE: &str = "0x5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a";
/// The private key (test only) of the account whose authorisation a 7702 transaction carries.
const AUTHORITY_KEY: &str = "0x0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b";
const RECIPIENT: &str = "0x3535353535353535353535353535353535353535";

/// eth-account's side: `authorize KEY CHAIN ADDRESS NONCE` signs an EIP-7702 authorisation;
/// `decode RAW` recovers a signed transaction's sender and decodes its fields into the JSON
/// shape `tessera sign --eth-tx` takes (with each authorisation's recovered `authority`);
/// `authority JSON` recovers a signed authorisation's account.
const PYTHON: &str = r#"
import json, sys
import rlp
from eth_account import Account
from eth_account.typed_transactions import TypedTransaction
from eth_keys import keys
from eth_utils import keccak
from hexbytes import HexBytes

def hx(b):
    return "0x" + bytes(b).hex()

def num(b):
    return int.from_bytes(b, "big")

def authority(chain_id, address, nonce, y_parity, r, s):
    # EIP-7702: keccak256(MAGIC || rlp([chain_id, address, nonce])), MAGIC = 0x05.
    digest = keccak(b"\x05" + rlp.encode([chain_id, bytes(address), nonce]))
    key = keys.Signature(vrs=(y_parity, r, s)).recover_public_key_from_msg_hash(digest)
    return key.to_checksum_address().lower()

mode = sys.argv[1]
if mode == "authorize":
    account = Account.from_key(sys.argv[2])
    a = account.sign_authorization(
        {"chainId": int(sys.argv[3]), "address": sys.argv[4], "nonce": int(sys.argv[5])})
    print(json.dumps({"authority": account.address.lower(), "authorization": {
        "chain_id": a.chain_id, "address": hx(a.address), "nonce": a.nonce,
        "y_parity": a.y_parity, "r": hex(a.r), "s": hex(a.s)}}))
elif mode == "authority":
    a = json.loads(sys.argv[2])
    print(json.dumps(authority(a["chain_id"], bytes.fromhex(a["address"][2:]), a["nonce"],
                               a["y_parity"], int(a["r"], 16), int(a["s"], 16))))
elif mode == "decode":
    raw = bytes.fromhex(sys.argv[2].removeprefix("0x"))
    out = {"sender": Account.recover_transaction(raw).lower()}
    if raw[0] >= 0xc0:
        nonce, gas_price, gas, to, value, data, v, r, s = rlp.decode(raw)
        v = num(v)
        out.update(type="legacy", v=v, chain_id=(v - 35) // 2, nonce=num(nonce),
                   gas_price=str(num(gas_price)), gas_limit=num(gas),
                   to=hx(to) if to else None, value=str(num(value)), data=hx(data))
    else:
        d = TypedTransaction.from_bytes(HexBytes(raw)).as_dict()
        out.update(type={1: "eip2930", 2: "eip1559", 4: "eip7702"}[d["type"]],
                   chain_id=d["chainId"], nonce=d["nonce"], gas_limit=d["gas"],
                   to=hx(d["to"]) if d.get("to") else None, value=str(d["value"]),
                   data=hx(d["data"]))
        for theirs, ours in [("gasPrice", "gas_price"), ("maxFeePerGas", "max_fee_per_gas"),
                             ("maxPriorityFeePerGas", "max_priority_fee_per_gas")]:
            if theirs in d:
                out[ours] = str(d[theirs])
        out["access_list"] = [
            {"address": hx(e["address"]), "storage_keys": ["0x%064x" % k for k in e["storageKeys"]]}
            for e in d["accessList"]]
        if "authorizationList" in d:
            out["authorization_list"] = [
                {"chain_id": a["chainId"], "address": hx(a["address"]), "nonce": a["nonce"],
                 "y_parity": a["yParity"], "r": hex(a["r"]), "s": hex(a["s"]),
                 "authority": authority(a["chainId"], a["address"], a["nonce"], a["yParity"],
                                        a["r"], a["s"])}
                for a in d["authorizationList"]]
    print(json.dumps(out))
"#;

/// Runs [`PYTHON`] with `args`; its one JSON line.
fn eth_account(args: &[&str]) -> Value {
    let out = Command::new(python())
        .arg("-c")
        .arg(PYTHON)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "eth-account {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// An EIP-7702 authorisation signed by [`AUTHORITY_KEY`] with eth-account: (authority address,
/// the authorisation as `authorization_list` takes it).
fn authorize(chain_id: u64, address: &str, nonce: u64) -> (String, Value) {
    let out = eth_account(&[
        "authorize",
        AUTHORITY_KEY,
        &chain_id.to_string(),
        address,
        &nonce.to_string(),
    ]);
    (
        out["authority"].as_str().unwrap().to_string(),
        out["authorization"].clone(),
    )
}

/// A CLI device of its own user on `server`, with a wallet `main`; its Ethereum address.
fn cli_wallet(server: &Server, home: &Path, user: &str) -> String {
    common::cli::init(home, &server.url, user);
    let keygen = tessera(home, &["keygen", "--name", "main", "--json"]);
    assert!(keygen.status.success(), "{keygen:?}");
    let created: Value = serde_json::from_slice(&keygen.stdout).unwrap();
    created["eth_address"].as_str().unwrap().to_lowercase()
}

/// `tessera sign --eth-tx` of `tx` (written to a file) with `--json`.
fn sign(home: &Path, tx: &Value) -> Output {
    let file = home.join("tx.json");
    std::fs::write(&file, tx.to_string()).unwrap();
    tessera(
        home,
        &[
            "sign",
            "--wallet",
            "main",
            "--eth-tx",
            file.to_str().unwrap(),
            "--json",
        ],
    )
}

/// Signs `tx`, which must succeed; decodes the raw transaction with eth-account and checks that
/// its sender is `address` and that every field `tx` gives came back. The decoded transaction
/// and the CLI's output.
fn sign_and_check(home: &Path, address: &str, tx: &Value) -> (Value, Value) {
    let out = sign(home, tx);
    assert!(
        out.status.success(),
        "{tx}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let signed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(signed["verified"], true, "{signed}");
    let raw = signed["raw_tx"].as_str().unwrap();
    let decoded = eth_account(&["decode", raw]);
    assert_eq!(decoded["sender"], address, "{decoded}");
    let expected_type = tx.get("type").cloned().unwrap_or(json!("eip1559"));
    assert_eq!(decoded["type"], expected_type, "{decoded}");
    for (field, value) in tx.as_object().unwrap() {
        if field == "type" {
            continue;
        }
        let mut got = decoded[field.as_str()].clone();
        if field == "authorization_list" {
            for auth in got.as_array_mut().unwrap() {
                auth.as_object_mut().unwrap().remove("authority");
            }
        }
        assert_eq!(&got, value, "{field}: {decoded}");
    }
    (decoded, signed)
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn access_list() -> Value {
    json!([
        {"address": "0xdededededededededededededededededededede",
         "storage_keys": [format!("0x{}01", "00".repeat(31)), format!("0x{}", "ab".repeat(32))]},
        {"address": "0x0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b", "storage_keys": []},
    ])
}

fn tx_7702(authorization_list: Value) -> Value {
    json!({
        "type": "eip7702", "chain_id": 1, "nonce": 3,
        "max_fee_per_gas": "20000000000", "max_priority_fee_per_gas": "1000000000",
        "gas_limit": 100000, "to": RECIPIENT, "value": "0", "data": "0x",
        "access_list": [], "authorization_list": authorization_list,
    })
}

#[test]
fn every_type_is_signed_and_checked_with_eth_account() {
    let server = Server::start_fresh(&[]);
    let home = tempfile::tempdir().unwrap();
    let home = home.path();
    let address = cli_wallet(&server, home, "types");
    // The EIP-2930 transaction below calls RECIPIENT with data no decoder reads.
    set_policy(home, "main", &json!({"arbitrary_calls": [RECIPIENT]}));

    // Legacy: EIP-155's v (chain 1: 37 or 38), the RLP list with no type byte.
    let legacy = json!({
        "type": "legacy", "chain_id": 1, "nonce": 9, "gas_price": "20000000000",
        "gas_limit": 21000, "to": RECIPIENT, "value": "1000000000000000000", "data": "0x",
    });
    let (decoded, signed) = sign_and_check(home, &address, &legacy);
    assert!(decoded["v"] == 37 || decoded["v"] == 38, "{decoded}");
    assert!(
        signed["raw_tx"].as_str().unwrap().starts_with("0xf8"),
        "{signed}"
    );
    assert!(
        signed["summary"]
            .as_str()
            .unwrap()
            .contains("send 1000000000000000000 wei to 0x3535"),
        "{signed}"
    );

    // EIP-2930 with an access list, calling a contract with data, on another chain.
    let eip2930 = json!({
        "type": "eip2930", "chain_id": 10, "nonce": 0, "gas_price": "30000000000",
        "gas_limit": 60000, "to": RECIPIENT, "value": "12345", "data": "0xa9059cbb",
        "access_list": access_list(),
    });
    let (_, signed) = sign_and_check(home, &address, &eip2930);
    assert!(
        signed["raw_tx"].as_str().unwrap().starts_with("0x01"),
        "{signed}"
    );

    // EIP-1559 without `type` (the default) and with an access list; a contract creation.
    let eip1559 = json!({
        "chain_id": 1, "nonce": 1, "max_fee_per_gas": "30000000000",
        "max_priority_fee_per_gas": "1000000000", "gas_limit": 50000, "to": null,
        "value": "0", "data": "0x6080", "access_list": access_list(),
    });
    let (_, signed) = sign_and_check(home, &address, &eip1559);
    assert!(
        signed["raw_tx"].as_str().unwrap().starts_with("0x02"),
        "{signed}"
    );

    // EIP-7702: an account (another key, signed with eth-account) delegates to DELEGATE. A new
    // wallet's policy names no delegate: refused by the server (naming the rule), nothing
    // printed; then allowed by a policy that names it.
    let (authority, authorization) = authorize(1, DELEGATE, 0);
    let (_, every_chain) = authorize(0, DELEGATE, 1);
    let tx = tx_7702(json!([authorization, every_chain]));
    let denied = sign(home, &tx);
    assert_eq!(denied.status.code(), Some(1), "{denied:?}");
    assert!(
        stderr(&denied).contains("allowed_delegates") && stderr(&denied).contains(DELEGATE),
        "{}",
        stderr(&denied)
    );
    assert!(denied.stdout.is_empty(), "{denied:?}");
    // A policy naming another delegate is not enough.
    let other = "0x6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b";
    set_policy(
        home,
        "main",
        &json!({"arbitrary_calls": [RECIPIENT], "allowed_delegates": [other]}),
    );
    let denied = sign(home, &tx);
    assert_eq!(denied.status.code(), Some(1), "{denied:?}");
    assert!(
        stderr(&denied).contains("allowed_delegates"),
        "{}",
        stderr(&denied)
    );
    set_policy(
        home,
        "main",
        &json!({
            "arbitrary_calls": [RECIPIENT],
            "allowed_delegates": [other, DELEGATE.to_uppercase().replacen("0X", "0x", 1)],
        }),
    );
    let (decoded, signed) = sign_and_check(home, &address, &tx);
    assert!(
        signed["raw_tx"].as_str().unwrap().starts_with("0x04"),
        "{signed}"
    );
    for auth in decoded["authorization_list"].as_array().unwrap() {
        assert_eq!(auth["authority"], authority.as_str(), "{decoded}");
    }
    let summary = signed["summary"].as_str().unwrap();
    assert!(
        summary.contains(&format!(
            "delegates account {authority} to {DELEGATE} and delegates account {authority} to \
             {DELEGATE} on every chain (EIP-7702)"
        )),
        "{summary}"
    );

    // The audit log has both denials and what was signed.
    let audit = tessera(home, &["audit", "list", "--wallet", "main", "--json"]);
    assert!(audit.status.success(), "{}", stderr(&audit));
    let records: Vec<Value> = serde_json::from_slice(&audit.stdout).unwrap();
    let count = |kind: &str| records.iter().filter(|r| r["kind"] == kind).count();
    assert_eq!(count("sign.denied"), 2, "{records:?}");
    assert_eq!(count("sign.requested"), 4, "{records:?}");
}

#[tokio::test]
async fn bad_transactions_are_refused_with_clear_errors_and_nothing_is_signed() {
    let server = Server::start_fresh(&[]);
    let home = tempfile::tempdir().unwrap();
    let home = home.path();
    cli_wallet(&server, home, "bad");
    let legacy = json!({
        "type": "legacy", "chain_id": 1, "nonce": 0, "gas_price": "1000000000",
        "gas_limit": 21000, "to": RECIPIENT, "value": "1", "data": "0x",
    });
    let with = |mut tx: Value, field: &str, value: Value| {
        tx[field] = value;
        tx
    };
    let without = |mut tx: Value, field: &str| {
        tx.as_object_mut().unwrap().remove(field);
        tx
    };
    let (_, authorization) = authorize(1, DELEGATE, 0);
    let (_, on_chain_5) = authorize(5, DELEGATE, 0);
    let eip1559 = without(
        with(
            with(
                with(legacy.clone(), "type", "eip1559".into()),
                "max_fee_per_gas",
                "2".into(),
            ),
            "max_priority_fee_per_gas",
            "1".into(),
        ),
        "gas_price",
    );
    let cases = [
        (
            with(legacy.clone(), "chain_id", 0.into()),
            "chain_id must not be 0 (a legacy transaction is signed only with EIP-155",
        ),
        (
            with(legacy.clone(), "max_fee_per_gas", "1".into()),
            "max_fee_per_gas does not belong to a legacy transaction",
        ),
        (
            with(legacy.clone(), "access_list", json!([])),
            "access_list does not belong to a legacy transaction",
        ),
        (
            without(legacy.clone(), "gas_price"),
            "a legacy transaction needs gas_price",
        ),
        (
            with(eip1559.clone(), "gas_price", "1".into()),
            "gas_price does not belong to an eip1559 transaction",
        ),
        (
            // A legacy transaction without `type` is read as EIP-1559, and says so.
            without(legacy.clone(), "type"),
            "`type` is eip1559 when absent",
        ),
        (
            with(
                eip1559.clone(),
                "authorization_list",
                json!([authorization]),
            ),
            "authorization_list does not belong to an eip1559 transaction",
        ),
        (
            with(eip1559.clone(), "gasPrice", "1".into()),
            "unknown field `gasPrice`",
        ),
        (
            with(legacy.clone(), "type", "eip4844".into()),
            "unknown variant `eip4844`",
        ),
        (
            tx_7702(json!([authorization, on_chain_5])),
            "authorization_list[1].chain_id is 5, but the transaction is for chain 1",
        ),
        (
            tx_7702(json!([])),
            "authorization_list must hold at least one authorisation",
        ),
        (
            without(tx_7702(json!([authorization])), "to"),
            "EIP-7702 does not allow contract creation",
        ),
        (
            tx_7702(json!([with(
                authorization.clone(),
                "s",
                format!("0x{}", "ff".repeat(32)).into()
            )])),
            "authorization_list[0] does not recover to an account",
        ),
    ];
    // The CLI: usage error (exit 2) naming the field, no signature printed.
    for (tx, expected) in &cases {
        let out = sign(home, tx);
        assert_eq!(out.status.code(), Some(2), "{tx}: {out:?}");
        assert!(stderr(&out).contains(expected), "{tx}: {}", stderr(&out));
        assert!(out.stdout.is_empty(), "{tx}: {out:?}");
    }
    // Nothing reached the server.
    let audit = tessera(home, &["audit", "list", "--wallet", "main", "--json"]);
    let records: Vec<Value> = serde_json::from_slice(&audit.stdout).unwrap();
    assert!(
        records
            .iter()
            .all(|r| !r["kind"].as_str().unwrap().starts_with("sign.")),
        "{records:?}"
    );

    // The server decodes for itself: a device that skips the local checks (as a compromised
    // one would) gets 400 naming the field (422 for a body that does not parse), and nothing is
    // requested or signed.
    let (client, wallet_id) = sdk_wallet(&server, "bad-sdk").await;
    let token = client.token().unwrap().to_string();
    tessera_client::tls::install_crypto_provider();
    let http = reqwest::Client::new();
    let post = |tx: Value| {
        let request = http
            .post(format!("{}/sign", server.url))
            .bearer_auth(&token)
            .json(&json!({"wallet_id": wallet_id, "path": "m", "kind": "eth-tx", "tx": tx}));
        async move {
            let resp = request.send().await.unwrap();
            let status = resp.status().as_u16();
            (status, resp.text().await.unwrap())
        }
    };
    for (tx, expected) in &cases {
        let (status, body) = post(tx.clone()).await;
        let parses =
            serde_json::from_value::<tessera_api::intent::EthTransaction>(tx.clone()).is_ok();
        assert_eq!(status, if parses { 400 } else { 422 }, "{tx}: {body}");
        if parses {
            assert!(body.contains(expected), "{tx}: {body}");
        }
    }
    // Each request that parsed is audited as invalid, with the reason; none was requested.
    let records = client.audit(Some(&wallet_id)).await.unwrap();
    let parsed = cases
        .iter()
        .filter(|(tx, _)| {
            serde_json::from_value::<tessera_api::intent::EthTransaction>(tx.clone()).is_ok()
        })
        .count();
    let invalid: Vec<_> = records
        .iter()
        .filter(|r| r.kind == "sign.invalid")
        .collect();
    assert_eq!(invalid.len(), parsed, "{records:?}");
    for ((_, expected), record) in cases
        .iter()
        .filter(|(tx, _)| {
            serde_json::from_value::<tessera_api::intent::EthTransaction>(tx.clone()).is_ok()
        })
        .zip(&invalid)
    {
        assert!(record.detail.contains(expected), "{}", record.detail);
    }
    assert!(
        records
            .iter()
            .all(|r| r.kind == "sign.invalid" || !r.kind.starts_with("sign.")),
        "{records:?}"
    );
    // The same endpoint takes the valid one (so the refusals were for the fields).
    let (status, body) = post(legacy).await;
    assert_eq!(status, 200, "{body}");
}

/// A device of its own user made with the SDK, and its wallet's id.
async fn sdk_wallet(server: &Server, user: &str) -> (ServerClient, String) {
    let dir = tempfile::tempdir().unwrap();
    let id = identity(dir.path());
    let mut client = ServerClient::new(&server.url).unwrap();
    let device = client.register(&id, user, "phone").await.unwrap();
    client.login(&id, &device.device_id).await.unwrap();
    let share = client.keygen("w", |_, _| {}).await.unwrap();
    (client, share.wallet_id().to_string())
}

#[tokio::test]
async fn a_wallet_authorises_a_delegation_that_another_wallets_7702_transaction_carries() {
    let server = Server::start_fresh(&[]);
    // The account that delegates: a wallet of an SDK device.
    let dir = tempfile::tempdir().unwrap();
    let id = identity(dir.path());
    let mut client = ServerClient::new(&server.url).unwrap();
    let device = client.register(&id, "delegator", "phone").await.unwrap();
    client.login(&id, &device.device_id).await.unwrap();
    let share = client.keygen("w", |_, _| {}).await.unwrap();
    let wallet_id = share.wallet_id().to_string();
    let account = share.public_key().eth_address().to_lowercase();

    let authorization = EthAuthorization {
        chain_id: 1,
        address: DELEGATE.into(),
        nonce: 0,
    };
    let kind = SignKind::EthAuthorization {
        authorization: authorization.clone(),
    };
    let root = DerivationPath::root();
    let sign = || client.sign_kind(&share, &kind, &root, |_, _| {}, |_| {});
    let denied = |result: Result<_, ClientError>, rule: &str| match result {
        Err(ClientError::Server {
            status: 403,
            code,
            message,
        }) => {
            assert_eq!(code, "policy_denied");
            assert!(message.contains(rule), "{message}");
            message
        }
        other => panic!("not denied by {rule}: {other:?}"),
    };
    // A new wallet's policy allows no authorisations; allowing the kind is not enough either.
    denied(sign().await, "allowed_kinds");
    client
        .set_policy(
            &id,
            &wallet_id,
            &Policy {
                allowed_kinds: vec![RequestKind::EthAuthorization],
                ..Policy::default()
            },
        )
        .await
        .unwrap();
    let message = denied(sign().await, "allowed_delegates");
    assert!(message.contains(DELEGATE), "{message}");
    let records = client.audit(Some(&wallet_id)).await.unwrap();
    assert!(
        records
            .iter()
            .any(|r| r.kind == "sign.denied" && r.detail.contains("allowed_delegates")),
        "{records:?}"
    );
    // Chain ids: the policy's chain_ids bound authorisations too.
    client
        .set_policy(
            &id,
            &wallet_id,
            &Policy {
                allowed_kinds: vec![RequestKind::EthAuthorization],
                allowed_delegates: Some(vec![DELEGATE.into()]),
                chain_ids: Some(vec![1]),
                ..Policy::default()
            },
        )
        .await
        .unwrap();
    let every_chain = SignKind::EthAuthorization {
        authorization: EthAuthorization {
            chain_id: 0,
            ..authorization.clone()
        },
    };
    denied(
        client
            .sign_kind(
                &share,
                &every_chain,
                &DerivationPath::root(),
                |_, _| {},
                |_| {},
            )
            .await,
        "chain_ids",
    );
    let signature = sign().await.unwrap();
    let signed = authorization.signed(&signature).unwrap();
    let signed_json = serde_json::to_value(&signed).unwrap();
    // eth-account recovers the wallet's account from it.
    assert_eq!(
        eth_account(&["authority", &signed_json.to_string()]),
        json!(account)
    );

    // A CLI wallet (the sponsor) sends the 7702 transaction that carries it.
    let home = tempfile::tempdir().unwrap();
    let home = home.path();
    let sponsor = cli_wallet(&server, home, "sponsor");
    set_policy(home, "main", &json!({"allowed_delegates": [DELEGATE]}));
    let (decoded, signed) = sign_and_check(home, &sponsor, &tx_7702(json!([signed_json])));
    assert_eq!(
        decoded["authorization_list"][0]["authority"],
        account.as_str(),
        "{decoded}"
    );
    assert!(
        signed["summary"]
            .as_str()
            .unwrap()
            .contains(&format!("delegates account {account} to {DELEGATE}")),
        "{signed}"
    );
}
