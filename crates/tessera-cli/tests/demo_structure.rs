//! `tessera demo --in-process --structure …`, run as a user would: keygen under the structure,
//! a verified signature by every minimal quorum, the refusal of every maximal unauthorised set
//! with what it lacks.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Output};

fn tessera(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(args)
        .output()
        .expect("tessera runs")
}

fn success(out: &Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn field<'a>(stdout: &'a str, name: &str) -> &'a str {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .map(|rest| rest.split_whitespace().next().unwrap())
        .unwrap_or_else(|| panic!("no {name} in:\n{stdout}"))
}

fn verifies(pubkey: &str, message: &str, rsv: &str) -> bool {
    let out = tessera(&[
        "verify",
        "--pubkey",
        pubkey,
        "--message",
        message,
        "--signature",
        rsv,
    ]);
    out.status.success() && String::from_utf8_lossy(&out.stdout).starts_with("valid")
}

#[test]
fn every_minimal_quorum_signs_and_every_maximal_unauthorised_set_is_refused() {
    let out = tessera(&[
        "demo",
        "--in-process",
        "--structure",
        "and(server, or(phone, laptop))",
        "--message",
        "quorum demo",
    ]);
    let stdout = success(&out);
    assert!(
        stdout.contains(
            "structure      and(server, or(phone, laptop)) (3 parties: server, phone, laptop)"
        ),
        "{stdout}"
    );
    let pubkey = field(&stdout, "public key");
    // One verified signature per minimal quorum, in the structure's order.
    let signed: Vec<(&str, &str)> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("signed by      "))
        .filter(|l| !l.contains("(new shares)"))
        .map(|l| {
            let (quorum, rest) = l.split_once(": r||s||v ").unwrap();
            let (rsv, tail) = rest.split_once(' ').unwrap();
            assert_eq!(tail, "verified");
            (quorum, rsv)
        })
        .collect();
    assert_eq!(
        signed.iter().map(|(q, _)| *q).collect::<Vec<_>>(),
        ["server + phone", "server + laptop"],
        "{stdout}"
    );
    for (quorum, rsv) in &signed {
        assert!(verifies(pubkey, "quorum demo", rsv), "{quorum}: {rsv}");
        // Another message does not verify: the check above can fail.
        assert!(!verifies(pubkey, "another message", rsv));
    }
    assert_ne!(signed[0].1, signed[1].1);
    // Every maximal unauthorised set, with the library's explanation.
    let refused: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("refused        "))
        .filter(|l| !l.starts_with("laptop's old share"))
        .collect();
    assert_eq!(
        refused,
        [
            "server: the signers are not authorised: needs one of `phone`, `laptop`",
            "phone + laptop: the signers are not authorised: needs `server`",
        ],
        "{stdout}"
    );
    // The reshare: same key, `server` + `tablet` sign with their new shares, `laptop`'s old
    // share is refused.
    assert!(
        stdout.contains(
            "reshare        server + phone to and(server, or(phone, tablet)): same public key"
        ),
        "{stdout}"
    );
    let resigned = stdout
        .lines()
        .find_map(|l| l.strip_prefix("signed by      server + tablet (new shares): r||s||v "))
        .unwrap_or_else(|| panic!("no signature by the new shares: {stdout}"));
    let (rsv, tail) = resigned.split_once(' ').unwrap();
    assert_eq!(tail, "verified");
    assert!(verifies(pubkey, "quorum demo", rsv), "{rsv}");
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("refused        laptop's old share: ")),
        "{stdout}"
    );
    assert!(stdout.contains("verified       yes"));
    let progress = String::from_utf8(out.stderr).unwrap();
    assert!(
        progress.contains("key generation, and(server, or(phone, laptop)): done")
            && progress.contains("signing by server + laptop: done"),
        "{progress}"
    );
}

#[test]
fn the_structure_demo_prints_one_json_document() {
    let out = tessera(&[
        "demo",
        "--in-process",
        "--structure",
        "and(server, threshold(2, cfo, ceo, cto))",
        "--path",
        "m/0/7",
        "--json",
    ]);
    let demo: serde_json::Value = serde_json::from_str(&success(&out)).unwrap();
    assert_eq!(
        demo["structure"],
        "and(server, threshold(2, cfo, ceo, cto))"
    );
    assert_eq!(
        demo["parties"],
        serde_json::json!(["server", "cfo", "ceo", "cto"])
    );
    assert_eq!(demo["path"], "m/0/7");
    assert_eq!(demo["minimal_quorums"], 3);
    let signatures = demo["signatures"].as_array().unwrap();
    let quorums: Vec<&serde_json::Value> = signatures.iter().map(|s| &s["signers"]).collect();
    assert_eq!(
        quorums,
        [
            &serde_json::json!(["server", "cfo", "ceo"]),
            &serde_json::json!(["server", "cfo", "cto"]),
            &serde_json::json!(["server", "ceo", "cto"]),
        ]
    );
    let pubkey = demo["public_key"].as_str().unwrap();
    assert_ne!(pubkey, demo["root_public_key"].as_str().unwrap());
    for s in signatures {
        assert!(verifies(
            pubkey,
            "Hello from Tessera",
            s["signature_rsv"].as_str().unwrap()
        ));
    }
    assert_eq!(
        demo["refused"],
        serde_json::json!([
            { "signers": ["server", "cfo"], "error": "the signers are not authorised: needs one of `ceo`, `cto`" },
            { "signers": ["server", "ceo"], "error": "the signers are not authorised: needs one of `cfo`, `cto`" },
            { "signers": ["server", "cto"], "error": "the signers are not authorised: needs one of `cfo`, `ceo`" },
            { "signers": ["cfo", "ceo", "cto"], "error": "the signers are not authorised: needs `server`" },
        ])
    );
    // No `server` + `phone` quorum to reshare from.
    assert_eq!(demo["reshare"]["status"], "skipped");
    assert_eq!(demo["verified"], true);
}

#[test]
fn bad_structures_and_mixed_options_are_usage_errors() {
    for (args, message) in [
        (
            &["demo", "--in-process", "--structure", "and(server, server)"][..],
            "appears twice",
        ),
        (
            &["demo", "--in-process", "--structure", "or(phone, laptop)"][..],
            "alone is authorised",
        ),
        (&["demo", "--structure", "and(a, b)"][..], "--in-process"),
        (
            &[
                "demo",
                "--in-process",
                "--structure",
                "and(a, b)",
                "-t",
                "2",
            ][..],
            "cannot be used with",
        ),
    ] {
        let out = tessera(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(message), "{args:?}: {err}");
    }
}
