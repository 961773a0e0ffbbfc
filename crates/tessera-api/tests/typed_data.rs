//! EIP-712 typed data: digests against eth-account's (tests/data/eip712/vectors.json, made by
//! make_vectors.py beside it, which also signs each one and recovers the signer), the EIP's own
//! example, what is shown, permits recognised by their exact types, and malformed input.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use alloy_primitives::U256;
use serde_json::{Value, json};
use tessera_api::calls::{TokenAction, TokenOperation, TokenStandard};
use tessera_api::typed_data::{TypedDataDecoded, decode_typed_data};
use tessera_core::error::Error;

const COW: &str = "0xcd2a3d9f938e13cd947ec05abc7fe734df8dd826";
const USDC: &str = "0xa0b86991c6218b36c1d19d4a2e9eb0ce3606eb48";
const DAI: &str = "0x6b175474e89094c44da98b954eedeac495271d0f";
const WETH: &str = "0xc02aaa39b223fe8d0a0e5c4f27ead9083c756cc2";
const ROUTER: &str = "0x3fc91a3afd70395cd496c647d5a6cc9d4b2b7fad";
const SPENDER: &str = "0x1111111254eeb25477b68fb85ed929f73a960582";

fn vectors() -> Vec<Value> {
    let text = include_str!("data/eip712/vectors.json");
    let Value::Array(list) = serde_json::from_str(text).unwrap() else {
        panic!("vectors.json is not an array");
    };
    list
}

/// The typed data of the vector called `name`.
fn vector(name: &str) -> Value {
    vectors()
        .into_iter()
        .find(|v| v["name"] == name)
        .unwrap_or_else(|| panic!("no vector {name}"))["typed_data"]
        .clone()
}

fn decode(name: &str) -> TypedDataDecoded {
    decode_typed_data(&vector(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn hex32(digest: [u8; 32]) -> String {
    format!("0x{}", hex::encode(digest))
}

/// The error message for `value`, which must be refused as invalid parameters.
fn refused(value: &Value) -> String {
    match decode_typed_data(value) {
        Err(Error::InvalidParameters(why)) => {
            assert!(why.starts_with("typed data: "), "{why}");
            why
        }
        Err(other) => panic!("wrong error kind: {other}"),
        Ok(d) => panic!("accepted: {}", d.summary),
    }
}

fn assert_refused(value: &Value, expected: &str) {
    let why = refused(value);
    assert!(why.contains(expected), "{why:?} does not say {expected:?}");
}

#[test]
fn every_vector_hashes_to_eth_accounts_digest() {
    let list = vectors();
    assert_eq!(list.len(), 15);
    for v in list {
        let name = v["name"].as_str().unwrap();
        let decoded = decode_typed_data(&v["typed_data"]).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            hex32(decoded.digest),
            v["digest"].as_str().unwrap(),
            "{name}"
        );
    }
}

#[test]
fn the_eips_own_example() {
    let d = decode("eip712_mail");
    // EIP-712's Example.js: the signing hash of its Mail, also in eth-sig-util's tests.
    assert_eq!(
        hex32(d.digest),
        "0xbe609aee343fb3c4b28e1df9e632fca64fcfaede20f02e86244efddf30957bd2"
    );
    assert_eq!(d.chain_id, 1);
    assert_eq!(
        d.verifying_contract.as_deref(),
        Some("0xcccccccccccccccccccccccccccccccccccccccc")
    );
    assert_eq!(d.domain_name.as_deref(), Some("Ether Mail"));
    assert_eq!(d.primary_type, "Mail");
    assert_eq!(
        d.fields,
        vec![
            (
                "from".to_string(),
                format!("{{name=\"Cow\", wallet={COW}}}")
            ),
            (
                "to".to_string(),
                "{name=\"Bob\", wallet=0xbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb}".to_string()
            ),
            ("contents".to_string(), "\"Hello, Bob!\"".to_string()),
        ]
    );
    assert!(d.tokens.is_empty());
    assert_eq!(
        d.summary,
        format!(
            "EIP-712 Mail from \"Ether Mail\" v1 on chain 1, contract \
             0xcccccccccccccccccccccccccccccccccccccccc: from={{name=\"Cow\", wallet={COW}}}, \
             to={{name=\"Bob\", wallet=0xbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb}}, \
             contents=\"Hello, Bob!\""
        )
    );
}

#[test]
fn typed_data_as_a_json_string_is_the_same() {
    let value = vector("eip712_mail");
    let as_text = Value::String(value.to_string());
    assert_eq!(decode_typed_data(&as_text).unwrap(), decode("eip712_mail"));
    assert_refused(&json!("{not json"), "not valid JSON");
}

#[test]
fn every_type_is_rendered_for_people() {
    let d = decode("everything");
    let field = |name: &str| {
        d.fields
            .iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("no field {name}"))
            .1
            .clone()
    };
    assert_eq!(
        field("owner"),
        format!("{{name=\"Cow\", wallets=[{COW}, 0xdd2a3d9f938e13cd947ec05abc7fe734df8dd826]}}")
    );
    assert_eq!(
        field("groups"),
        "[{name=\"team\", members=[{name=\"Bob\", \
         wallets=[0xbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb]}, {name=\"Alice\", wallets=[]}]}, \
         {name=\"empty\", members=[]}]"
    );
    assert_eq!(field("flags"), "[true, false, true]");
    assert_eq!(field("grid"), "[[1, 2], [65535, 0]]");
    assert_eq!(field("blob"), "0xdeadbeef00");
    assert_eq!(field("emptyBlob"), "0x");
    assert_eq!(field("tag"), "0x12345678");
    assert_eq!(field("hash"), format!("0x{}", "0f".repeat(32)));
    assert_eq!(field("small"), "-128");
    assert_eq!(
        field("big"),
        "-57896044618658097711785492504343953926634992332820282019728792003956564819968"
    );
    assert_eq!(field("ratio"), "340282366920938463463374607431768211455");
    assert_eq!(field("total"), "123456789012345678901234567890");
    assert_eq!(field("note"), "\"Grüße, 世界\"");
    assert_eq!(field("yes"), "true");
    assert_eq!(field("none"), "[]");
    assert_eq!(d.chain_id, 137);
    assert_eq!(d.verifying_contract, None);
    assert!(
        d.summary.starts_with(&format!(
            "EIP-712 Everything from \"Kitchen Sink\" on chain 137, salt 0x{}: owner=",
            "ab".repeat(32)
        )),
        "{}",
        d.summary
    );
    assert!(d.tokens.is_empty());
}

#[test]
fn bidi_and_zero_width_characters_are_escaped() {
    let d = decode("bidi_string");
    let text = &d.fields[0].1;
    assert_eq!(
        text,
        "\"pay \\u{202e}gnp.exe\\u{202c} to bob\\u{200b}\\u{200d}\\u{feff} \\\"quoted\\\" \\\\ back\""
    );
    for shown in [text, &d.summary] {
        assert!(
            !shown.chars().any(|c| matches!(
                c,
                '\u{202e}' | '\u{202c}' | '\u{200b}' | '\u{200d}' | '\u{feff}'
            )),
            "{shown}"
        );
    }
    assert!(d.summary.contains(&format!("text={text}, to={SPENDER}")));
}

#[test]
fn long_values_are_cut_for_people_but_hashed_whole() {
    let mut value = vector("eip712_mail");
    value["message"]["contents"] = json!("y".repeat(500));
    let d = decode_typed_data(&value).unwrap();
    assert_eq!(
        d.fields[2].1,
        format!("\"{}\"… (500 characters)", "y".repeat(80))
    );
    let mut other = value.clone();
    other["message"]["contents"] = json!(format!("{}z", "y".repeat(499)));
    let e = decode_typed_data(&other).unwrap();
    assert_eq!(e.fields, d.fields);
    assert_ne!(e.digest, d.digest);
}

fn erc20(
    token: &str,
    operation: TokenOperation,
    from: Option<&str>,
    to: &str,
    amount: U256,
    unlimited: bool,
) -> TokenAction {
    TokenAction {
        token: token.to_string(),
        standard: TokenStandard::Erc20,
        operation,
        from: from.map(str::to_string),
        to: to.to_string(),
        amount,
        token_id: None,
        unlimited,
    }
}

#[test]
fn eip2612_permits_are_approvals_of_the_verifying_contract() {
    use TokenOperation::{Approve, Revoke};
    assert_eq!(
        decode("permit_eip2612").tokens,
        vec![erc20(
            USDC,
            Approve,
            Some(COW),
            SPENDER,
            U256::from(1_000_000u64),
            false
        )]
    );
    assert_eq!(
        decode("permit_eip2612_unlimited").tokens,
        vec![erc20(USDC, Approve, Some(COW), SPENDER, U256::MAX, true)]
    );
    assert_eq!(
        decode("permit_eip2612_zero").tokens,
        vec![erc20(USDC, Revoke, Some(COW), SPENDER, U256::ZERO, false)]
    );
    // 2^255 exactly: no limit could bound it either.
    let mut value = vector("permit_eip2612");
    value["message"]["value"] = json!((U256::from(1u8) << 255usize).to_string());
    assert!(decode_typed_data(&value).unwrap().tokens[0].unlimited);
}

#[test]
fn dai_permits_allow_everything_or_revoke() {
    use TokenOperation::{Approve, Revoke};
    assert_eq!(
        decode("permit_dai").tokens,
        vec![erc20(DAI, Approve, Some(COW), SPENDER, U256::MAX, true)]
    );
    assert_eq!(
        decode("permit_dai_revoke").tokens,
        vec![erc20(DAI, Revoke, Some(COW), SPENDER, U256::ZERO, false)]
    );
}

#[test]
fn permit2_allowances_name_each_token() {
    use TokenOperation::Approve;
    let u160_max = (U256::from(1u8) << 160usize) - U256::from(1u8);
    assert_eq!(
        decode("permit2_single").tokens,
        vec![erc20(USDC, Approve, None, ROUTER, u160_max, true)]
    );
    assert_eq!(
        decode("permit2_batch").tokens,
        vec![
            erc20(USDC, Approve, None, ROUTER, U256::from(5_000_000u64), false),
            erc20(
                WETH,
                Approve,
                None,
                ROUTER,
                U256::from(2_000_000_000_000_000_000u128),
                false
            ),
        ]
    );
}

#[test]
fn permit2_signature_transfers_go_to_the_spender() {
    use TokenOperation::Transfer;
    assert_eq!(
        decode("permit2_transfer_from").tokens,
        vec![erc20(
            DAI,
            Transfer,
            None,
            SPENDER,
            U256::from(250_000_000_000_000_000_000u128),
            false
        )]
    );
    assert_eq!(
        decode("permit2_batch_transfer_from").tokens,
        vec![
            erc20(
                DAI,
                Transfer,
                None,
                SPENDER,
                U256::from(1_000_000_000_000_000_000u128),
                false
            ),
            erc20(USDC, Transfer, None, SPENDER, U256::from(7u8), false),
        ]
    );
    assert_eq!(
        decode("permit2_witness_transfer_from").tokens,
        vec![erc20(
            WETH,
            Transfer,
            None,
            ROUTER,
            U256::from(500_000_000_000_000_000u128),
            false
        )]
    );
}

#[test]
fn look_alike_permits_are_hashed_and_shown_but_are_not_permits() {
    for name in ["permit_renamed_field", "permit_extra_field"] {
        let d = decode(name);
        assert!(d.tokens.is_empty(), "{name}");
        assert_eq!(d.primary_type, "Permit");
        assert!(
            d.summary.contains(&format!("spender={SPENDER}")),
            "{}",
            d.summary
        );
    }
    // Permit2's PermitDetails with a uint256 amount instead of uint160: another struct.
    let mut value = vector("permit2_single");
    value["types"]["PermitDetails"][1]["type"] = json!("uint256");
    let d = decode_typed_data(&value).unwrap();
    assert!(d.tokens.is_empty());
    assert_ne!(d.digest, decode("permit2_single").digest);
    // EIP-2612's fields under another struct name.
    let mut value = vector("permit_eip2612");
    let fields = value["types"]["Permit"].take();
    value["types"].as_object_mut().unwrap().remove("Permit");
    value["types"]["Allowance"] = fields;
    value["primaryType"] = json!("Allowance");
    assert!(decode_typed_data(&value).unwrap().tokens.is_empty());
}

#[test]
fn permits_need_their_token() {
    for name in ["permit_eip2612", "permit_dai"] {
        let mut value = vector(name);
        value["domain"]
            .as_object_mut()
            .unwrap()
            .remove("verifyingContract");
        value["types"]["EIP712Domain"]
            .as_array_mut()
            .unwrap()
            .retain(|f| f["name"] != "verifyingContract");
        assert_refused(&value, "permit without the domain's `verifyingContract`");
    }
}

#[test]
fn malformed_typed_data_is_refused_with_the_reason() {
    let mail = vector("eip712_mail");
    let with = |edit: &dyn Fn(&mut Value)| {
        let mut v = mail.clone();
        edit(&mut v);
        v
    };
    let cases: Vec<(Value, &str)> = vec![
        (json!([1, 2]), "expected a JSON object"),
        (
            with(&|v| {
                v.as_object_mut().unwrap().remove("primaryType");
            }),
            "missing `primaryType`",
        ),
        (
            with(&|v| {
                v.as_object_mut().unwrap().remove("message");
            }),
            "missing `message`",
        ),
        (with(&|v| v["extra"] = json!(1)), "unknown key `extra`"),
        (
            with(&|v| v["primaryType"] = json!("Letter")),
            "`primaryType` \"Letter\" is not defined",
        ),
        (
            with(&|v| v["primaryType"] = json!("EIP712Domain")),
            "`primaryType` is EIP712Domain",
        ),
        (
            with(&|v| {
                v["message"].as_object_mut().unwrap().remove("contents");
            }),
            "Mail is missing field `contents` (at message.contents)",
        ),
        (
            with(&|v| {
                v["message"]["from"]
                    .as_object_mut()
                    .unwrap()
                    .remove("wallet");
            }),
            "Person is missing field `wallet` (at message.from.wallet)",
        ),
        (
            with(&|v| v["message"]["bcc"] = json!("eve")),
            "message has field \"bcc\", which Mail does not declare",
        ),
        (
            with(&|v| v["types"]["Mail"][0]["type"] = json!("Persn")),
            "type Mail references unknown type Persn",
        ),
        (
            with(&|v| v["types"]["Mail"][0]["type"] = json!("Person[")),
            "malformed type \"Person[\"",
        ),
        (
            with(&|v| v["types"]["Person"][1]["type"] = json!("uint")),
            "which EIP-712 does not allow (write uint256)",
        ),
        (
            with(&|v| v["types"]["Mail"][2]["name"] = json!("from")),
            "type Mail declares `from` twice",
        ),
        (
            with(&|v| v["types"]["Mail"][2]["extra"] = json!("x")),
            "field 2 of type Mail is not an object with just `name` and `type`",
        ),
        (
            with(&|v| v["types"]["Mail"][2]["name"] = json!("con tents")),
            "field name \"con tents\" of type Mail is not an identifier",
        ),
        (
            with(&|v| v["message"]["from"]["wallet"] = json!(123)),
            "field `wallet` of Person is not an address (at message.from.wallet)",
        ),
        (
            with(&|v| {
                v["message"]["from"]["wallet"] = json!("0xCD2a3d9F938E13CD947Ec05AbC7FE734Df8DD8")
            }),
            "field `wallet` of Person is not an address",
        ),
        (
            with(&|v| v["message"]["contents"] = json!(["Hello"])),
            "field `contents` of Mail is not a string",
        ),
        (
            with(&|v| v["message"]["to"] = json!("Bob")),
            "message.to is not an object (a Person)",
        ),
        (
            with(&|v| {
                v["domain"].as_object_mut().unwrap().remove("chainId");
                v["types"]["EIP712Domain"].as_array_mut().unwrap().remove(2);
            }),
            "the domain has no `chainId`: a signature without one is valid on every chain",
        ),
        (
            with(&|v| v["domain"]["chainId"] = json!(0)),
            "domain `chainId` is not a chain id",
        ),
        (
            with(&|v| v["domain"]["chainId"] = json!("18446744073709551616")),
            "domain `chainId` is not a chain id",
        ),
        (
            with(&|v| v["domain"]["verifyingContract"] = json!("0x1234")),
            "domain `verifyingContract` is not a 0x-hex address",
        ),
        (
            with(&|v| v["domain"]["chain"] = json!(1)),
            "domain has unknown field \"chain\"",
        ),
        (
            with(&|v| {
                v["types"]["EIP712Domain"]
                    .as_array_mut()
                    .unwrap()
                    .swap(0, 1)
            }),
            "types.EIP712Domain is (string version,string name,uint256 chainId,address \
             verifyingContract) but the domain's fields are (string name,string version,uint256 \
             chainId,address verifyingContract)",
        ),
        (
            with(&|v| v["types"]["EIP712Domain"][2]["type"] = json!("uint64")),
            "types.EIP712Domain is",
        ),
        (
            with(&|v| {
                v["types"]["EIP712Domain"].as_array_mut().unwrap().remove(1);
            }),
            "types.EIP712Domain is",
        ),
        (
            with(&|v| v["types"]["uint256"] = json!([])),
            "type name uint256 is an elementary type's name",
        ),
        (
            with(&|v| v["types"]["Mail\u{202e}"] = json!([])),
            "type name \"Mail\\u{202e}\" is not an identifier",
        ),
    ];
    for (value, expected) in &cases {
        assert_refused(value, expected);
    }
}

#[test]
fn values_of_the_wrong_form_are_refused() {
    let permit = vector("permit_eip2612");
    for (value, shown) in [
        (json!("abc"), "\"abc\""),
        (json!("1 ether"), "\"1 ether\""),
        (json!(1.5), "1.5"),
        (json!(-1), "-1"),
        (json!("+1"), "\"+1\""),
        (json!(true), "true"),
        (
            json!("115792089237316195423570985008687907853269984665640564039457584007913129639936"),
            "2^256",
        ),
    ] {
        let mut v = permit.clone();
        v["message"]["value"] = value;
        let why = refused(&v);
        assert!(
            why.contains("field `value` of Permit is not a uint256 (at message.value)"),
            "{shown}: {why}"
        );
    }
    let dai = vector("permit_dai");
    for value in [json!("true"), json!(1), json!(null)] {
        let mut v = dai.clone();
        v["message"]["allowed"] = value;
        assert_refused(&v, "field `allowed` of Permit is not a bool");
    }
    let everything = vector("everything");
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "blob",
            json!("deadbeef"),
            "field `blob` of Everything is not a bytes",
        ),
        (
            "blob",
            json!("0xabc"),
            "field `blob` of Everything is not a bytes",
        ),
        (
            "blob",
            json!([1, 2, 3]),
            "field `blob` of Everything is not a bytes",
        ),
        (
            "tag",
            json!("0x1234"),
            "field `tag` of Everything is not a bytes4",
        ),
        (
            "small",
            json!(128),
            "field `small` of Everything is not an int8",
        ),
        (
            "small",
            json!("-129"),
            "field `small` of Everything is not an int8",
        ),
        (
            "flags",
            json!([true, false]),
            "message.flags has 2 elements where field `flags` of Everything (bool[3]) needs 3",
        ),
        (
            "grid",
            json!([[1, 2], [3]]),
            "message.grid[1] has 1 elements where field `grid` of Everything (uint16[2][]) needs 2",
        ),
        (
            "grid",
            json!([[1, 2], [3, 65536]]),
            "field `grid` of Everything is not a uint16[2][] (at message.grid[1][1])",
        ),
        (
            "none",
            json!(vec![0; 257]),
            "message.none has 257 elements, over the limit of 256",
        ),
    ];
    for (field, value, expected) in cases {
        let mut v = everything.clone();
        v["message"][field] = value;
        assert_refused(&v, expected);
    }
    // The ends of each range are accepted (and alloy agrees).
    for (field, value) in [
        ("small", json!(127)),
        ("small", json!("-128")),
        (
            "big",
            json!("57896044618658097711785492504343953926634992332820282019728792003956564819967"),
        ),
        ("ratio", json!("340282366920938463463374607431768211455")),
        ("total", json!("0x0")),
    ] {
        let mut v = everything.clone();
        v["message"][field] = value;
        decode_typed_data(&v).unwrap_or_else(|e| panic!("{field}: {e}"));
    }
    let mut v = everything.clone();
    v["message"]["ratio"] = json!("340282366920938463463374607431768211456");
    assert_refused(&v, "field `ratio` of Everything is not a uint128");
    let mut v = everything.clone();
    v["message"]["groups"][0]["members"][1]["wallets"] = json!(["0x00"]);
    assert_refused(
        &v,
        "field `wallets` of Person is not an address[] (at message.groups[0].members[1].wallets[0])",
    );
}

#[test]
fn recursive_types_are_refused() {
    let mut v = vector("eip712_mail");
    v["types"]["Person"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "friends", "type": "Person[]"}));
    assert_refused(&v, "type Person contains itself (Person → Person)");

    let mut v = vector("eip712_mail");
    v["types"]["Person"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "letter", "type": "Mail"}));
    let why = refused(&v);
    assert!(
        why.contains("Mail → Person → Mail") || why.contains("Person → Mail → Person"),
        "{why}"
    );
    assert!(why.contains("recursive types are refused"), "{why}");
}

/// Typed data with a chain of `levels` structs, `L1 { L2 next }`, …, `Ln { uint8 x }`.
fn nested(levels: usize) -> Value {
    let mut types = serde_json::Map::new();
    types.insert(
        "EIP712Domain".into(),
        json!([{"name": "chainId", "type": "uint256"}]),
    );
    for i in 1..levels {
        types.insert(
            format!("L{i}"),
            json!([{"name": "next", "type": format!("L{}", i + 1)}]),
        );
    }
    types.insert(
        format!("L{levels}"),
        json!([{"name": "x", "type": "uint8"}]),
    );
    let mut message = json!({"x": 7});
    for _ in 1..levels {
        message = json!({ "next": message });
    }
    json!({"types": types, "primaryType": "L1", "domain": {"chainId": 1}, "message": message})
}

#[test]
fn limits_are_enforced_before_hashing() {
    let deepest = decode_typed_data(&nested(8)).unwrap();
    assert_eq!(
        deepest.summary,
        "EIP-712 L1 on chain 1: next={next={next={next={next={next={next={x=7}}}}}}}"
    );
    assert_refused(&nested(9), "L1 is nested 9 deep, over the limit of 8");

    // Array dimensions count too: L7 { uint8[] x } is 8 deep, uint8[][] 9.
    let mut v = nested(7);
    v["types"]["L7"][0]["type"] = json!("uint8[]");
    v["message"]["next"]["next"]["next"]["next"]["next"]["next"]["x"] = json!([1, 2]);
    decode_typed_data(&v).unwrap();
    v["types"]["L7"][0]["type"] = json!("uint8[][]");
    v["message"]["next"]["next"]["next"]["next"]["next"]["next"]["x"] = json!([[1, 2]]);
    assert_refused(&v, "nested 9 deep");

    let mut v = vector("eip712_mail");
    v["message"]["contents"] = json!("x".repeat(70_000));
    assert_refused(&v, "over the limit of 65536");
    assert_refused(&Value::String(v.to_string()), "over the limit of 65536");

    let mut v = vector("eip712_mail");
    for i in 0..62 {
        v["types"][format!("Extra{i}")] = json!([]);
    }
    assert_eq!(v["types"].as_object().unwrap().len(), 65);
    assert_refused(&v, "65 types, over the limit of 64");

    let mut v = vector("eip712_mail");
    v["types"]["Mail"][2]["type"] = json!("string[300]");
    assert_refused(&v, "is an array of 300, over the limit of 256");
}

#[test]
fn unreferenced_types_do_not_change_the_digest() {
    let mut v = vector("eip712_mail");
    v["types"]["Unused"] = json!([{"name": "x", "type": "uint8"}]);
    assert_eq!(
        decode_typed_data(&v).unwrap().digest,
        decode("eip712_mail").digest
    );
}

#[test]
fn a_missing_eip712domain_declaration_is_inferred_from_the_domain() {
    for name in ["eip712_mail", "everything", "permit2_single"] {
        let mut v = vector(name);
        v["types"].as_object_mut().unwrap().remove("EIP712Domain");
        assert_eq!(decode_typed_data(&v).unwrap(), decode(name), "{name}");
    }
}
