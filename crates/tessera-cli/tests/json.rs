//! `--json`: every command that prints data prints one JSON document on stdout, in the shape
//! docs/cli-json.md gives, against a real server process; and clap's whole message, on one line,
//! for a command line it cannot parse.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::cli::{ok_json as json, tessera};

use serde_json::Value;

fn hex_of_len(v: &Value, len: usize) -> bool {
    v.as_str()
        .is_some_and(|s| s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The signature a document reports verifies with `tessera verify`.
fn verifies(public_key: &Value, digest: &Value, signature: &Value) -> bool {
    let home = tempfile::tempdir().unwrap();
    tessera(
        home.path(),
        &[
            "verify",
            "--pubkey",
            public_key.as_str().unwrap(),
            "--digest",
            digest.as_str().unwrap(),
            "--signature",
            signature.as_str().unwrap(),
        ],
    )
    .status
    .success()
}

#[test]
fn device_commands_print_one_json_document() {
    let server = common::Server::start_fresh(&[]);
    let home = tempfile::tempdir().unwrap();
    let home = home.path();
    let init = tessera(
        home,
        &[
            "init",
            "--server",
            &server.url,
            "--user",
            "jo",
            "--name",
            "laptop",
        ],
    );
    assert!(init.status.success(), "{init:?}");

    let created = json(home, &["keygen", "--name", "main", "--json"]);
    assert_eq!(created["wallet"], "main", "{created}");
    assert_eq!(created["epoch"], 0, "{created}");
    assert!(hex_of_len(&created["public_key"], 66), "{created}");
    assert!(hex_of_len(&created["wallet_id"], 32), "{created}");
    assert!(
        created["eth_address"]
            .as_str()
            .is_some_and(|a| a.starts_with("0x") && a.len() == 42),
        "{created}"
    );
    // `pubkey` prints the same document.
    assert_eq!(
        json(home, &["pubkey", "--wallet", "main", "--json"]),
        created
    );

    let signed = json(
        home,
        &["sign", "--wallet", "main", "--message", "hello", "--json"],
    );
    assert_eq!(signed["verified"], true, "{signed}");
    assert_eq!(signed["raw_tx"], Value::Null, "{signed}");
    assert!(hex_of_len(&signed["signature_rsv"], 130), "{signed}");
    assert_eq!(signed["public_key"], created["public_key"], "{signed}");
    assert!(verifies(
        &signed["public_key"],
        &signed["digest"],
        &signed["signature_rsv"]
    ));
    assert!(verifies(
        &signed["public_key"],
        &signed["digest"],
        &signed["signature_der"]
    ));

    let wallets = json(home, &["wallets", "--json"]);
    let listed = wallets.as_array().unwrap();
    assert_eq!(listed.len(), 1, "{wallets}");
    assert_eq!(listed[0]["name"], "main", "{wallets}");
    assert_eq!(listed[0]["wallet_id"], created["wallet_id"], "{wallets}");
    assert_eq!(listed[0]["share_on_this_device"], true, "{wallets}");

    let devices = json(home, &["device", "list", "--json"]);
    let devices = devices.as_array().unwrap();
    assert_eq!(devices.len(), 1, "{devices:?}");
    assert_eq!(devices[0]["name"], "laptop", "{devices:?}");
    assert_eq!(devices[0]["this_device"], true, "{devices:?}");

    let approvals = json(home, &["approvals", "list", "--json"]);
    assert_eq!(
        approvals,
        serde_json::json!({ "signing_requests": [], "held_actions": [] })
    );

    let records = json(home, &["audit", "list", "--wallet", "main", "--json"]);
    let kinds: Vec<&str> = records
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["kind"].as_str().unwrap())
        .collect();
    assert!(kinds.contains(&"sign.completed"), "{kinds:?}");

    let chain = json(home, &["audit", "verify", "--json"]);
    assert_eq!(chain["intact"], true, "{chain}");
    assert_eq!(chain["first_bad"], Value::Null, "{chain}");
    assert!(
        chain["records"].as_u64().unwrap() >= kinds.len() as u64,
        "{chain}"
    );
    // Straight on the database (the server may keep running: this only reads).
    let offline = json(
        home,
        &[
            "audit",
            "verify",
            "--data-dir",
            server.data.to_str().unwrap(),
            "--json",
        ],
    );
    assert_eq!(offline["intact"], true, "{offline}");
}

#[test]
fn demo_in_process_prints_one_json_document_whose_signature_verifies() {
    let home = tempfile::tempdir().unwrap();
    let demo = json(
        home.path(),
        &[
            "demo",
            "--in-process",
            "--threshold",
            "2",
            "--parties",
            "3",
            "--signers",
            "0,2",
            "--json",
        ],
    );
    assert_eq!(demo["threshold"], serde_json::json!({ "t": 2, "n": 3 }));
    assert_eq!(demo["signers"], serde_json::json!([0, 2]));
    assert_eq!(demo["verified"], true);
    assert!(verifies(
        &demo["public_key"],
        &demo["digest"],
        &demo["signature_rsv"]
    ));
}

#[test]
fn demo_with_the_embedded_server_prints_one_json_document() {
    let home = tempfile::tempdir().unwrap();
    let demo = json(home.path(), &["demo", "--json"]);
    assert_eq!(demo["epoch_after_refresh"], 1, "{demo}");
    let signatures = demo["signatures"].as_array().unwrap();
    assert_eq!(signatures.len(), 2, "{demo}");
    for s in signatures {
        assert!(verifies(&demo["public_key"], &demo["digest"], &s["rsv"]));
    }
}

#[test]
fn a_command_line_clap_cannot_parse_gets_its_whole_message() {
    let home = tempfile::tempdir().unwrap();
    let out = tessera(home.path(), &["demo", "--threshold", "2"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.trim_end().lines().count(), 1, "not one line: {err}");
    // clap's first line alone does not say which arguments are missing; the line does, and
    // the usage it expected.
    assert!(
        err.starts_with("error: the following required arguments were not provided: --in-process"),
        "{err}"
    );
    assert!(
        err.contains("usage: tessera demo --in-process --threshold <THRESHOLD>"),
        "{err}"
    );
}
