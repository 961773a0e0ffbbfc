//! Real `tessera` processes on a device home, and the Python that checks their output with
//! independent libraries (`TESSERA_PYTHON`: embit, coincurve, eth-account; scripts/test sets it
//! up).

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

/// The passphrase of every test home.
pub const PASSPHRASE: &str = "correct horse battery staple";

const SET_UP: &str = "set TESSERA_PYTHON to a Python with embit, coincurve and eth-account \
                      (scripts/test makes target/bindings-venv; or python -m venv v && v/bin/pip \
                      install embit==0.8.0 coincurve==21.0.0 eth-account==0.14.0)";

/// Runs `tessera args…` on `home`.
pub fn tessera(home: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(args)
        .env("TESSERA_HOME", home)
        .env("TESSERA_PASSPHRASE", PASSPHRASE)
        .env_remove("TESSERA_DATABASE_URL")
        .env_remove("TESSERA_KEK")
        .output()
        .unwrap()
}

/// Runs a command that must succeed and parses its stdout as one JSON document.
pub fn ok_json(home: &Path, args: &[&str]) -> Value {
    let out = tessera(home, args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{args:?}: not one JSON document ({e}):\n{}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// Runs a command that must fail without printing a signature; its stderr.
pub fn refused(home: &Path, args: &[&str]) -> String {
    let out = tessera(home, args);
    assert!(!out.status.success(), "{args:?} succeeded");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        !stdout.contains("signature") && !stdout.contains("raw tx"),
        "{args:?} printed a signature:\n{stdout}"
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `tessera init` of a new user `user` on `home` against the server at `url`.
pub fn init(home: &Path, url: &str, user: &str) {
    let out = tessera(
        home,
        &["init", "--server", url, "--user", user, "--name", "laptop"],
    );
    assert!(out.status.success(), "{out:?}");
}

/// `tessera init` of a device named `name` of the existing user `user` on `home`, approved by
/// the user's active device on `approver` with the approval code `init` printed.
pub fn init_approved(approver: &Path, home: &Path, url: &str, user: &str, name: &str) {
    let out = tessera(
        home,
        &["init", "--server", url, "--user", user, "--name", name],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    let code = stdout
        .lines()
        .find_map(|l| l.strip_prefix("approval code"))
        .and_then(|c| c.split_whitespace().next())
        .unwrap_or_else(|| panic!("no approval code in {stdout}"));
    let approved = tessera(approver, &["device", "approve", code]);
    assert!(approved.status.success(), "{approved:?}");
}

/// `tessera policy set` of `policy` on wallet `wallet`, which must succeed.
pub fn set_policy(home: &Path, wallet: &str, policy: &Value) {
    let file = write_json(home, "policy.json", policy);
    let out = tessera(
        home,
        &["policy", "set", "--wallet", wallet, "--file", &file],
    );
    assert!(
        out.status.success(),
        "policy set {policy}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Writes `value` as JSON to `dir/name`; its path.
pub fn write_json(dir: &Path, name: &str, value: &Value) -> String {
    let path = dir.join(name);
    std::fs::write(&path, value.to_string()).unwrap();
    path.to_str().unwrap().to_string()
}

/// The Python to check with, from `TESSERA_PYTHON`; fails clearly when it is unset or lacks
/// the packages.
pub fn python() -> String {
    let python = std::env::var("TESSERA_PYTHON")
        .unwrap_or_else(|_| panic!("TESSERA_PYTHON is not set: {SET_UP}"));
    let check = Command::new(&python)
        .args(["-c", "import embit, coincurve, eth_account"])
        .current_dir(std::env::temp_dir())
        .output()
        .unwrap_or_else(|e| panic!("TESSERA_PYTHON ({python}) does not run ({e}): {SET_UP}"));
    assert!(
        check.status.success(),
        "TESSERA_PYTHON ({python}) lacks a package:\n{}\n{SET_UP}",
        String::from_utf8_lossy(&check.stderr)
    );
    python
}

/// Runs the Python program `script` (a file, or `-c` code when `code` is true) with `input` as
/// JSON on stdin; what it prints, as JSON. Fails with its stderr when it exits non-zero.
pub fn python_json(python: &str, script: &str, code: bool, input: &Value) -> Value {
    let args: Vec<&str> = if code {
        vec!["-c", script]
    } else {
        vec![script]
    };
    let mut child = Command::new(python)
        .args(args)
        .current_dir(std::env::temp_dir())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the Python check failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}
