//! schemathesis (from PyPI) against a real `tessera server` process: it generates requests
//! (valid and invalid) for every operation of the server's own OpenAPI document, with an
//! authenticated device's token, and checks that no answer is a 5xx and that every answer's
//! status, content type and body conform to the document. The test command installs
//! schemathesis (scripts/test); `TESSERA_SCHEMATHESIS` names its executable, otherwise it is
//! looked up on PATH. The number of requests it made is printed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

use tessera_client::ServerClient;

use common::{Server, UNLIMITED, identity};

mod common;

/// Test cases per operation: enough to reach every documented status of most operations; the
/// run takes about a minute on two cores.
const EXAMPLES: &str = "25";

#[tokio::test]
async fn schemathesis_finds_no_server_error_and_no_answer_off_the_schema() {
    let schemathesis =
        std::env::var("TESSERA_SCHEMATHESIS").unwrap_or_else(|_| "schemathesis".into());
    let found = Command::new(&schemathesis).arg("--version").output();
    let version = match found {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).trim().to_string(),
        _ => panic!(
            "schemathesis is not installed ({schemathesis}): run the tests with scripts/test, \
             which installs it, or `pip install schemathesis` and set TESSERA_SCHEMATHESIS"
        ),
    };
    // No rate limit, and no back-off after failed logins: most generated requests are refused
    // (401, 400, 404...), and a backed-off address would see only 429s.
    let server = Server::start_fresh(
        &[
            &UNLIMITED[..],
            &[
                "--auth-failures-per-minute",
                "1000000",
                "--auth-failure-burst",
                "1000000",
            ],
        ]
        .concat(),
    );
    tessera_client::tls::install_crypto_provider();
    // A user with a wallet, so that the operations that take one find something.
    let home = tempfile::tempdir().unwrap();
    let id = identity(home.path());
    let mut client = ServerClient::new(&server.url).unwrap();
    let device = client.register(&id, "fuzzed", "laptop").await.unwrap();
    client.login(&id, &device.device_id).await.unwrap();
    client.keygen("w", |_, _| {}).await.unwrap();
    let token = client.token().unwrap().to_string();

    let reports = tempfile::tempdir().unwrap();
    let run = |name: &str, extra: &[&str]| {
        let out = Command::new(&schemathesis)
            .current_dir(reports.path())
            .arg("run")
            .arg(format!("{}/openapi.json", server.url))
            .args(["--header", &format!("Authorization: Bearer {token}")])
            .args([
                "--checks",
                "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
            ])
            .args(["--seed", "20261205", "--workers", "2", "--generation-database", "none"])
            .args(["--request-timeout", "40", "--no-color", "--output-truncate", "false"])
            .args(extra)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "schemathesis ({version}, {name}) found failures:\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    };
    // Every operation but two, each run apart below: revoking the test's own device would leave
    // every later request a 401, and the long poll of joinable sessions answers after up to 25 s.
    let stdout = run(
        "every operation",
        &[
            "--max-examples",
            EXAMPLES,
            "--exclude-path",
            "/devices/{id}/revoke",
            "--exclude-path",
            "/sessions/joinable",
        ],
    );
    // The long poll, with a few cases: most of them wait their full `wait`.
    let long_poll = run(
        "the long poll",
        &[
            "--max-examples",
            "3",
            "--include-path",
            "/sessions/joinable",
        ],
    );
    // Last, revocation: once it revokes the test's device, the rest of this run sees 401s.
    let revoke = run(
        "revocation",
        &[
            "--max-examples",
            "10",
            "--include-path",
            "/devices/{id}/revoke",
        ],
    );
    let stdout = format!("{stdout}\n{long_poll}\n{revoke}");
    // The run's size, for the record (and so that a run that tested nothing fails): the
    // "N generated, N passed" line of each run.
    let cases: Vec<u64> = stdout
        .lines()
        .filter(|l| l.contains(" generated"))
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect();
    let total: u64 = cases.iter().sum();
    println!("schemathesis {version}: {total} test cases ({cases:?}), no failure");
    assert_eq!(cases.len(), 3, "{stdout}");
    assert!(total > 500, "only {total} test cases:\n{stdout}");
}
