//! What users sign (issue 17), through real `tessera` processes and a real server: an ERC-20
//! transfer built by `sign --erc20-transfer` and checked by decoding the raw transaction with
//! alloy (recovered sender, call data); EIP-712 typed data whose digest is the EIP's own example
//! and whose permits count against the token limits; an EIP-7702 authorisation refused until
//! the policy allows its delegate, then signed and recovered to the wallet's address.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;

use common::cli::{init, ok_json, refused, set_policy, write_json};

use alloy_consensus::TxEnvelope;
use alloy_consensus::transaction::SignerRecoverable;
use alloy_eips::eip2718::Decodable2718;
use serde_json::{Value, json};

const USDC: &str = "0xa0b86991c6218b36c1d19d4a2e9eb0ce3606eb48";
const BOB: &str = "0x2222222222222222222222222222222222222222";

fn write(dir: &Path, name: &str, value: &Value) -> String {
    write_json(dir, name, value)
}

fn vector(name: &str) -> Value {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tessera-api/tests/data/eip712/vectors.json"
    ))
    .unwrap();
    let all: Vec<Value> = serde_json::from_str(&text).unwrap();
    all.into_iter().find(|v| v["name"] == name).unwrap()
}

/// The Ethereum address of a compressed public key (hex), recomputed with alloy.
fn eth_address(public_key: &str) -> alloy_primitives::Address {
    let key = k256::PublicKey::from_sec1_bytes(&hex::decode(public_key).unwrap()).unwrap();
    let point = k256::elliptic_curve::sec1::ToSec1Point::to_sec1_point(&key, false);
    alloy_primitives::Address::from_raw_public_key(&point.as_bytes()[1..])
}

#[test]
fn erc20_transfers_typed_data_and_authorisations_are_signed_as_asked() {
    let server = common::Server::start_fresh(&[]);
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path();
    init(home, &server.url, "jo");
    let wallet = ok_json(home, &["keygen", "--name", "main", "--json"]);
    let address = eth_address(wallet["public_key"].as_str().unwrap());

    // An ERC-20 transfer, the transaction's chain, nonce and fees from a template.
    let template = write(
        home,
        "base.json",
        &json!({"chain_id": 1, "nonce": 3, "max_fee_per_gas": "30000000000",
                "max_priority_fee_per_gas": "1000000000", "gas_limit": 60000, "value": "0"}),
    );
    set_policy(
        home,
        "main",
        &json!({"tokens": [{"address": USDC, "symbol": "USDC", "decimals": 6,
                           "max_amount_per_tx": "5000000"}]}),
    );
    let transfer = format!("{USDC},{BOB},2500000");
    let signed = ok_json(
        home,
        &[
            "sign",
            "--wallet",
            "main",
            "--eth-tx",
            &template,
            "--erc20-transfer",
            &transfer,
            "--json",
        ],
    );
    let raw = hex::decode(signed["raw_tx"].as_str().unwrap().trim_start_matches("0x")).unwrap();
    let envelope = TxEnvelope::decode_2718(&mut raw.as_slice()).unwrap();
    assert_eq!(envelope.recover_signer().unwrap(), address);
    let TxEnvelope::Eip1559(tx) = &envelope else {
        panic!("not an EIP-1559 transaction: {envelope:?}")
    };
    let expected_data = {
        use tessera_api::calls::{Erc20, SolCall};
        Erc20::transferCall {
            to: BOB.parse().unwrap(),
            amount: tessera_api::intent::U256::from(2_500_000u64),
        }
        .abi_encode()
    };
    assert_eq!(tx.tx().input.as_ref(), expected_data.as_slice());
    assert_eq!(format!("{:#x}", tx.tx().to.to().unwrap()), USDC);
    assert_eq!(tx.tx().nonce, 3);
    let summary = signed["summary"].as_str().unwrap();
    assert!(
        summary.contains(&format!("transfer 2500000 units of token {USDC} to {BOB}")),
        "{summary}"
    );
    // Over the token's limit: refused, naming the rule; bad flags: clear usage errors.
    let over = format!("{USDC},{BOB},5000001");
    let err = refused(
        home,
        &[
            "sign",
            "--wallet",
            "main",
            "--eth-tx",
            &template,
            "--erc20-transfer",
            &over,
        ],
    );
    assert!(err.contains("tokens.max_amount_per_tx"), "{err}");
    let err = refused(
        home,
        &[
            "sign",
            "--wallet",
            "main",
            "--eth-tx",
            &template,
            "--erc20-transfer",
            "0x12,0x34",
        ],
    );
    assert!(err.contains("TOKEN,TO,AMOUNT"), "{err}");
    let with_to = write(
        home,
        "with_to.json",
        &json!({"chain_id": 1, "nonce": 3, "max_fee_per_gas": "1", "max_priority_fee_per_gas": "1",
                "gas_limit": 60000, "value": "0", "to": BOB}),
    );
    let err = refused(
        home,
        &[
            "sign",
            "--wallet",
            "main",
            "--eth-tx",
            &with_to,
            "--erc20-transfer",
            &transfer,
        ],
    );
    assert!(err.contains("must have no `to`"), "{err}");

    // EIP-712: the EIP's own example. The typed-data kind must be allowed first.
    let mail = vector("eip712_mail");
    let mail_file = write(home, "mail.json", &mail["typed_data"]);
    let err = refused(
        home,
        &["sign", "--wallet", "main", "--typed-data", &mail_file],
    );
    assert!(err.contains("allowed_kinds"), "{err}");
    set_policy(
        home,
        "main",
        &json!({"allowed_kinds": ["eth-tx", "eth-message", "eth-typed-data", "eth-authorization"],
               "tokens": [{"address": USDC, "symbol": "USDC", "decimals": 6,
                           "max_amount_per_tx": "500000"}],
               "allow_unlimited_approvals": false}),
    );
    let signed = ok_json(
        home,
        &[
            "sign",
            "--wallet",
            "main",
            "--typed-data",
            &mail_file,
            "--json",
        ],
    );
    assert_eq!(
        format!("0x{}", signed["digest"].as_str().unwrap()),
        mail["digest"].as_str().unwrap()
    );
    let rsv = hex::decode(signed["signature_rsv"].as_str().unwrap()).unwrap();
    let sig = alloy_primitives::Signature::from_raw(&rsv).unwrap();
    let digest: [u8; 32] = hex::decode(signed["digest"].as_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap();
    assert_eq!(
        sig.recover_address_from_prehash(&digest.into()).unwrap(),
        address
    );
    assert!(signed["summary"].as_str().unwrap().contains("Mail"));
    // The domain's chain against the policy's chains.
    set_policy(
        home,
        "main",
        &json!({"allowed_kinds": ["eth-typed-data"], "chain_ids": [5]}),
    );
    let err = refused(
        home,
        &["sign", "--wallet", "main", "--typed-data", &mail_file],
    );
    assert!(
        err.contains("chain_ids") && err.contains("chain 1"),
        "{err}"
    );
    set_policy(
        home,
        "main",
        &json!({"allowed_kinds": ["eth-tx", "eth-message", "eth-typed-data", "eth-authorization"],
               "tokens": [{"address": USDC, "symbol": "USDC", "decimals": 6,
                           "max_amount_per_tx": "500000"}],
               "allow_unlimited_approvals": false}),
    );
    // An EIP-2612 permit of 1 USDC counts against the token's limit (0.5 USDC per request).
    let permit = vector("permit_eip2612");
    let permit_file = write(home, "permit.json", &permit["typed_data"]);
    let err = refused(
        home,
        &["sign", "--wallet", "main", "--typed-data", &permit_file],
    );
    assert!(err.contains("tokens.max_amount_per_tx"), "{err}");
    let unlimited = vector("permit_eip2612_unlimited");
    let unlimited_file = write(home, "unlimited.json", &unlimited["typed_data"]);
    let err = refused(
        home,
        &["sign", "--wallet", "main", "--typed-data", &unlimited_file],
    );
    assert!(err.contains("allow_unlimited_approvals"), "{err}");
    // Malformed typed data: a clear error before anything is asked of the server.
    let mut broken = mail["typed_data"].clone();
    broken["types"]["Mail"][0]["type"] = json!("Persn");
    let broken_file = write(home, "broken.json", &broken);
    let err = refused(
        home,
        &["sign", "--wallet", "main", "--typed-data", &broken_file],
    );
    assert!(err.contains("Persn"), "{err}");

    // EIP-7702: refused until the policy names the delegate; then the signed authorisation
    // recovers to the wallet's address.
    let delegate = "0x7777777777777777777777777777777777777777";
    let auth_file = write(
        home,
        "auth.json",
        &json!({"chain_id": 1, "address": delegate, "nonce": 4}),
    );
    let err = refused(
        home,
        &[
            "sign",
            "--wallet",
            "main",
            "--eth-authorization",
            &auth_file,
        ],
    );
    assert!(err.contains("allowed_delegates"), "{err}");
    set_policy(
        home,
        "main",
        &json!({"allowed_kinds": ["eth-tx", "eth-message", "eth-typed-data", "eth-authorization"],
               "allowed_delegates": [delegate]}),
    );
    let signed = ok_json(
        home,
        &[
            "sign",
            "--wallet",
            "main",
            "--eth-authorization",
            &auth_file,
            "--json",
        ],
    );
    let printed: tessera_api::intent::SignedEthAuthorization =
        serde_json::from_value(signed["signed_authorization"].clone())
            .unwrap_or_else(|e| panic!("{e}: {}", signed));
    let scalar = |hex_text: &str| {
        alloy_primitives::U256::from_str_radix(hex_text.trim_start_matches("0x"), 16).unwrap()
    };
    let auth = alloy_eips::eip7702::SignedAuthorization::new_unchecked(
        alloy_eips::eip7702::Authorization {
            chain_id: alloy_primitives::U256::from(printed.chain_id),
            address: printed.address.parse().unwrap(),
            nonce: printed.nonce,
        },
        printed.y_parity,
        scalar(&printed.r),
        scalar(&printed.s),
    );
    assert_eq!(auth.recover_authority().unwrap(), address);
    assert_eq!(format!("{:#x}", auth.address), delegate);
    // It goes into a type-4 transaction as it was printed; the server reads its authority.
    let tx4 = write(
        home,
        "tx4.json",
        &json!({"type": "eip7702", "chain_id": 1, "nonce": 5, "max_fee_per_gas": "1",
                "max_priority_fee_per_gas": "1", "gas_limit": 100000, "to": BOB, "value": "0",
                "authorization_list": [signed["signed_authorization"]]}),
    );
    let signed = ok_json(
        home,
        &["sign", "--wallet", "main", "--eth-tx", &tx4, "--json"],
    );
    let summary = signed["summary"].as_str().unwrap();
    assert!(
        summary.contains(&format!("delegates account {address:#x} to {delegate}")),
        "{summary}"
    );
}
