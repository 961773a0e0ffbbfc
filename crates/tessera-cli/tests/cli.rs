//! The `tessera` binary, run as a user would.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Output};

fn tessera(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(args)
        .output()
        .expect("tessera runs")
}

fn field<'a>(stdout: &'a str, name: &str) -> &'a str {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .map(|rest| rest.split_whitespace().next().unwrap())
        .unwrap_or_else(|| panic!("no {name} in:\n{stdout}"))
}

fn stderr_one_line(out: &Output) -> String {
    let err = String::from_utf8(out.stderr.clone()).unwrap();
    assert_eq!(err.trim_end().lines().count(), 1, "not one line: {err}");
    assert!(err.starts_with("error: "), "{err}");
    assert!(
        !err.contains("panicked") && !err.contains("RUST_BACKTRACE"),
        "{err}"
    );
    err
}

#[test]
fn demo_output_verifies_with_tessera_verify() {
    let out = tessera(&[
        "demo",
        "--in-process",
        "--threshold",
        "2",
        "--parties",
        "3",
        "--signers",
        "2,0",
        "--message",
        "pay 1 ETH",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let pubkey = field(&stdout, "public key");
    let der = field(&stdout, "signature DER");
    let rsv = field(&stdout, "r||s||v");
    let address = field(&stdout, "eth address");
    assert!(address.starts_with("0x") && address.len() == 42);
    assert!(stdout.contains("verified       yes"));
    // Plain progress lines when stderr is not a terminal.
    let progress = String::from_utf8(out.stderr).unwrap();
    assert!(
        progress.contains("round 4/4 done") && progress.contains("signing by parties 2, 0: done"),
        "{progress}"
    );

    for sig in [der, rsv, &rsv[..128]] {
        let ok = tessera(&[
            "verify",
            "--pubkey",
            pubkey,
            "--message",
            "pay 1 ETH",
            "--signature",
            sig,
        ]);
        assert!(
            ok.status.success(),
            "{}",
            String::from_utf8_lossy(&ok.stderr)
        );
        assert!(String::from_utf8_lossy(&ok.stdout).starts_with("valid"));
    }
    let digest = field(&stdout, "digest");
    let ok = tessera(&[
        "verify",
        "--pubkey",
        pubkey,
        "--digest",
        digest,
        "--signature",
        der,
    ]);
    assert!(ok.status.success());

    // Another message, or a flipped signature bit: exit 1 and says INVALID.
    let bad = tessera(&[
        "verify",
        "--pubkey",
        pubkey,
        "--message",
        "pay 2 ETH",
        "--signature",
        der,
    ]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stdout).contains("INVALID"));
    let mut flipped = rsv.to_string();
    flipped.replace_range(10..11, if &rsv[10..11] == "0" { "1" } else { "0" });
    let bad = tessera(&[
        "verify",
        "--pubkey",
        pubkey,
        "--message",
        "pay 1 ETH",
        "--signature",
        &flipped,
    ]);
    assert_eq!(bad.status.code(), Some(1));
}

#[test]
fn demo_with_a_derived_key() {
    let out = tessera(&[
        "demo",
        "--in-process",
        "-t",
        "2",
        "-n",
        "2",
        "--path",
        "m/0/7",
        "-m",
        "child",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let root = field(&stdout, "root key");
    let child = field(&stdout, "public key");
    assert_ne!(root, child);
    let sig = field(&stdout, "signature DER");
    assert!(
        tessera(&[
            "verify",
            "--pubkey",
            child,
            "--message",
            "child",
            "--signature",
            sig
        ])
        .status
        .success()
    );
    assert_eq!(
        tessera(&[
            "verify",
            "--pubkey",
            root,
            "--message",
            "child",
            "--signature",
            sig
        ])
        .status
        .code(),
        Some(1)
    );
}

#[test]
fn default_demo_runs_the_server_topology() {
    let out = tessera(&["demo", "--message", "server demo", "--path", "m/0/1"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        stdout.contains("2-of-2: this device + the server"),
        "{stdout}"
    );
    assert!(
        stdout.contains("epoch          1 after the refresh"),
        "{stdout}"
    );
    let pubkey = field(&stdout, "public key");
    for sig in [
        field(&stdout, "signature 1 DER"),
        field(&stdout, "signature 2 DER"),
    ] {
        let ok = tessera(&[
            "verify",
            "--pubkey",
            pubkey,
            "--message",
            "server demo",
            "--signature",
            sig,
        ]);
        assert!(
            ok.status.success(),
            "{}",
            String::from_utf8_lossy(&ok.stderr)
        );
    }
    let progress = String::from_utf8(out.stderr).unwrap();
    for step in [
        "key generation, 2-of-2 with the server: done",
        "refresh",
        "signing again",
    ] {
        assert!(progress.contains(step), "{progress}");
    }
    // t-of-n options belong to --in-process.
    let out = tessera(&["demo", "--threshold", "3"]);
    assert_eq!(out.status.code(), Some(2));
    stderr_one_line(&out);
}

#[test]
fn bad_arguments_exit_2_with_one_line() {
    let g = "0279be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798";
    let cases: &[&[&str]] = &[
        &["demo", "--in-process", "--threshold", "3", "--parties", "2"],
        &["demo", "--in-process", "--threshold", "1"],
        &[
            "demo",
            "--in-process",
            "--parties",
            "17",
            "--threshold",
            "2",
        ],
        &["demo", "--in-process", "--parties", "300"],
        &["demo", "--in-process", "--signers", "0,0"],
        &["demo", "--in-process", "--signers", "0,5"],
        &["demo", "--path", "m/44'/60'"],
        &["demo", "--path", "x/1"],
        &["demo", "--frobnicate"],
        &[
            "verify",
            "--pubkey",
            "zz",
            "--digest",
            "00",
            "--signature",
            "00",
        ],
        &[
            "verify",
            "--pubkey",
            "02ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
            "--message",
            "m",
            "--signature",
            "00",
        ],
        &[
            "verify",
            "--pubkey",
            g,
            "--digest",
            "abcd",
            "--signature",
            "00",
        ],
        &[
            "verify",
            "--pubkey",
            g,
            "--message",
            "m",
            "--signature",
            "not-hex",
        ],
        &[
            "verify",
            "--pubkey",
            g,
            "--message",
            "m",
            "--signature",
            "0102",
        ],
        &["verify", "--pubkey", g, "--signature", "00"],
        &[
            "verify",
            "--pubkey",
            g,
            "--message",
            "m",
            "--digest",
            "00",
            "--signature",
            "00",
        ],
        &["nonsense"],
    ];
    for args in cases {
        let out = tessera(args);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        stderr_one_line(&out);
    }
    let err = stderr_one_line(&tessera(&["demo", "--path", "m/44'/60'"]));
    assert!(err.contains("hardened"), "{err}");
    assert!(tessera(&["--help"]).status.success());
}
