//! Operating a real `tessera server` process: the load balancer's probes (`/healthz`,
//! `/readyz` and each of its checks failing), Prometheus metrics (on the API's address and on
//! one of their own), the access log and protocol events in JSON lines with no secret in them
//! at trace level, and graceful shutdown on SIGTERM in the middle of signing and of refresh.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tessera_api::intent::SignKind;
use tessera_api::{Policy, RequestKind};
use tessera_client::ServerClient;
use tessera_core::{DerivationPath, KeyShare};
use tessera_store::DeviceIdentity;

use common::proxy::{Direction, Tamper, TamperProxy};
use common::shutdown::{close_frame, stalled_signature};
use common::{fresh_postgres_database, identity};

mod common;

/// A `tessera server --insecure-http` process whose stdout lines are kept (the start and stop
/// lines) and whose stderr (its log) goes to a file.
struct Served {
    child: Child,
    url: String,
    data: PathBuf,
    listen: String,
    extra: Vec<String>,
    env: Vec<(String, String)>,
    stdout: Arc<Mutex<Vec<String>>>,
    log: PathBuf,
    _dir: Arc<tempfile::TempDir>,
}

impl Served {
    fn start(extra: &[&str], env: &[(&str, &str)]) -> Served {
        // reqwest is built without a TLS provider of its own.
        tessera_client::tls::install_crypto_provider();
        let dir = Arc::new(tempfile::tempdir().unwrap());
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Self::spawn(dir, "127.0.0.1:0", extra, env, 0)
    }

    fn spawn(
        dir: Arc<tempfile::TempDir>,
        listen: &str,
        extra: Vec<String>,
        env: Vec<(String, String)>,
        generation: u32,
    ) -> Served {
        let data = dir.path().join("data");
        let log = dir.path().join(format!("server-{generation}.log"));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tessera"));
        cmd.args([
            "server",
            "--insecure-http",
            "--listen",
            listen,
            "--data-dir",
        ])
        .arg(&data)
        .args(&extra)
        .env_remove("TESSERA_DATABASE_URL")
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap());
        for (k, v) in &env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let (first, got_first) = std::sync::mpsc::channel();
        let lines = stdout.clone();
        let mut reader = BufReader::new(child.stdout.take().unwrap());
        std::thread::spawn(move || {
            let mut line = String::new();
            while reader.read_line(&mut line).unwrap_or(0) > 0 {
                let _ = first.send(line.clone());
                lines.lock().unwrap().push(line.trim_end().to_string());
                line.clear();
            }
        });
        let line = got_first
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| {
                panic!(
                    "the server did not start: {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                )
            });
        let url = line
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .unwrap_or_else(|| panic!("no URL in {line:?}"))
            .to_string();
        Served {
            child,
            listen: url.trim_start_matches("http://").to_string(),
            url,
            data,
            extra,
            env,
            stdout,
            log,
            _dir: dir,
        }
    }

    /// After it stopped: the same server again, on the same address and data.
    fn restart(&mut self) -> Served {
        let generation = u32::try_from(self.stdout.lock().unwrap().len()).unwrap() + 1;
        Self::spawn(
            self._dir.clone(),
            &self.listen,
            self.extra.clone(),
            self.env.clone(),
            generation,
        )
    }

    fn sigterm(&self) {
        common::shutdown::sigterm(&self.child);
    }

    /// Waits up to `within` for the process to exit; its exit status.
    async fn exited(&mut self, within: Duration) -> std::process::ExitStatus {
        let until = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                // Let the reader thread take the last lines.
                tokio::time::sleep(Duration::from_millis(100)).await;
                return status;
            }
            assert!(
                Instant::now() < until,
                "the server still runs {within:?} after SIGTERM"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn stdout(&self) -> Vec<String> {
        self.stdout.lock().unwrap().clone()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap()
    }

    async fn get(&self, path: &str) -> (u16, String) {
        let response = reqwest::get(format!("{}{path}", self.url)).await.unwrap();
        (
            response.status().as_u16(),
            response.text().await.unwrap_or_default(),
        )
    }

    async fn database(&self) -> sqlx::AnyPool {
        sqlx::any::install_default_drivers();
        let url = match self.extra.iter().position(|a| a == "--database-url") {
            Some(i) => self.extra[i + 1].clone(),
            None => format!("sqlite://{}", self.data.join("tessera.db").display()),
        };
        sqlx::any::AnyPoolOptions::new()
            .max_connections(1)
            .connect(&url)
            .await
            .unwrap()
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A registered, logged-in device of a new user.
async fn device(url: &str, user: &str) -> (ServerClient, DeviceIdentity, tempfile::TempDir) {
    tessera_client::tls::install_crypto_provider();
    let home = tempfile::tempdir().unwrap();
    let id = identity(home.path());
    let mut client = ServerClient::new(url).unwrap();
    let d = client.register(&id, user, "laptop").await.unwrap();
    client.login(&id, &d.device_id).await.unwrap();
    (client, id, home)
}

async fn sign(
    client: &ServerClient,
    share: &KeyShare,
    message: &str,
) -> tessera_client::Result<()> {
    let kind = SignKind::EthMessage {
        message: message.into(),
    };
    let root = DerivationPath::root();
    let signature = client
        .sign_kind(share, &kind, &root, |_, _| {}, |_| {})
        .await?;
    let digest = tessera_api::intent::decode(&kind).unwrap().digest;
    share
        .public_key_at(&root)
        .unwrap()
        .verify(&digest, &signature)
        .unwrap();
    Ok(())
}

/// The value of the Prometheus sample `name{labels}` (labels as rendered, in order), if any.
fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|line| {
        line.strip_prefix(series)
            .and_then(|rest| rest.strip_prefix(' '))
            .map(|v| v.trim().parse().unwrap())
    })
}

/// The first sample of metric `name` whose labels include every one of `labels` (`k="v"`).
fn sample_with(metrics: &str, name: &str, labels: &[&str]) -> Option<f64> {
    metrics.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?.strip_prefix('{')?;
        let (set, value) = rest.split_once("} ")?;
        let set: Vec<&str> = set.split(',').collect();
        labels
            .iter()
            .all(|l| set.contains(l))
            .then(|| value.trim().parse().unwrap())
    })
}

#[tokio::test]
async fn probes_metrics_and_request_ids_on_a_real_server() {
    let server = Served::start(&[], &[]);

    let (status, body) = server.get("/healthz").await;
    assert_eq!((status, body.as_str()), (200, r#"{"status":"ok"}"#));
    let (status, body) = server.get("/readyz").await;
    assert_eq!(status, 200, "{body}");
    let ready: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(ready["status"], "ready");
    for check in ["database", "migrations", "kek", "serving"] {
        assert_eq!(ready[check]["ok"], true, "{check}: {body}");
    }

    // A request id given by the client comes back; one that is not a plain token is replaced.
    let http = reqwest::Client::new();
    let echoed = http
        .get(format!("{}/healthz", server.url))
        .header("x-request-id", "lb-7f3a.1_x")
        .send()
        .await
        .unwrap();
    assert_eq!(echoed.headers()["x-request-id"], "lb-7f3a.1_x");
    let replaced = http
        .get(format!("{}/healthz", server.url))
        .header("x-request-id", "two words; {\"json\": 1}")
        .send()
        .await
        .unwrap();
    let id = replaced.headers()["x-request-id"].to_str().unwrap();
    assert_eq!(id.len(), 36, "{id}");

    // Work to count: a key generation, a signature, a policy denial, a bad token.
    let (client, id, _home) = device(&server.url, "ops").await;
    let share = client.keygen("w", |_, _| {}).await.unwrap();
    sign(&client, &share, "counted").await.unwrap();
    client
        .set_policy(
            &id,
            &share.wallet_id().to_string(),
            &Policy {
                allowed_kinds: vec![RequestKind::Digest],
                ..Policy::default()
            },
        )
        .await
        .unwrap();
    let denied = sign(&client, &share, "not allowed").await.unwrap_err();
    assert!(denied.to_string().contains("allowed"), "{denied}");
    // The log (text, the default `info`) has the protocol events and the denial with its rule.
    let log = server.log();
    let line = |needle: &str| {
        log.lines()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no {needle:?} in the log:\n{log}"))
            .to_string()
    };
    let denial = line("policy denied a signing request");
    assert!(denial.contains(r#"rule="allowed_kinds""#), "{denial}");
    let ended = line("session ended");
    assert!(
        ended.contains(r#"kind="keygen""#) && ended.contains(r#"outcome="done""#),
        "{ended}"
    );
    // The SDK signs on the signing socket: its access line is the upgrade's.
    let access = line(r#"route=/sign/ws"#);
    assert!(
        access.contains("status=101") && access.contains("device_id="),
        "{access}"
    );
    let unauthorized = http
        .get(format!("{}/wallets", server.url))
        .bearer_auth("not-a-token")
        .send()
        .await
        .unwrap();
    assert_eq!(unauthorized.status().as_u16(), 401);

    let (status, metrics) = server.get("/metrics").await;
    assert_eq!(status, 200);
    let session = |kind: &str| {
        sample(
            &metrics,
            &format!("tessera_sessions_total{{kind=\"{kind}\",outcome=\"done\"}}"),
        )
    };
    assert_eq!(session("keygen"), Some(1.0), "{metrics}");
    assert_eq!(session("sign"), Some(1.0), "{metrics}");
    assert_eq!(
        sample_with(
            &metrics,
            "tessera_policy_denials_total",
            &[r#"rule="allowed_kinds""#]
        ),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        sample_with(
            &metrics,
            "tessera_auth_failures_total",
            &[r#"route="/wallets""#]
        ),
        Some(1.0),
        "{metrics}"
    );
    // Both signing requests (the signature and the denial) came on the signing socket: two
    // upgrades; the denial is counted above, by its rule.
    assert_eq!(
        sample_with(
            &metrics,
            "tessera_http_requests_total",
            &[r#"route="/sign/ws""#, r#"status="101""#]
        ),
        Some(2.0),
        "{metrics}"
    );
    assert!(
        sample_with(
            &metrics,
            "tessera_session_duration_seconds_count",
            &[r#"kind="sign""#]
        )
        .is_some_and(|n| n >= 1.0),
        "{metrics}"
    );
    assert!(
        sample_with(
            &metrics,
            "tessera_database_seconds_count",
            &[r#"op="commit""#]
        )
        .is_some_and(|n| n > 0.0),
        "{metrics}"
    );
    // Both sockets ended: nothing stays open.
    assert_eq!(
        sample_with(&metrics, "tessera_open_websockets", &[r#"kind="session""#]),
        Some(0.0),
        "{metrics}"
    );

    // A schema that a newer server migrated: not ready, saying so; ready again without it.
    let db = server.database().await;
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (99999999, 'from a newer server', TRUE, X'00', 0)",
    )
    .execute(&db)
    .await
    .unwrap();
    let (status, body) = server.get("/readyz").await;
    assert_eq!(status, 503, "{body}");
    let ready: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(ready["status"], "not_ready");
    assert_eq!(ready["migrations"]["ok"], false);
    assert!(
        ready["migrations"]["error"]
            .as_str()
            .unwrap()
            .contains("newer than this server knows"),
        "{body}"
    );
    assert_eq!(ready["database"]["ok"], true);
    sqlx::query("DELETE FROM _sqlx_migrations WHERE version = 99999999")
        .execute(&db)
        .await
        .unwrap();
    assert_eq!(server.get("/readyz").await.0, 200);
}

/// A PostgreSQL database that goes away: `/readyz` answers 503 naming the database, while
/// `/healthz` (the process) still answers 200.
#[tokio::test]
async fn readiness_fails_when_the_database_goes_away() {
    let url = fresh_postgres_database();
    let server = Served::start(&["--database-url", &url], &[]);
    assert_eq!(server.get("/readyz").await.0, 200);
    let (base, name) = url.rsplit_once('/').unwrap();
    sqlx::any::install_default_drivers();
    let admin = sqlx::any::AnyPoolOptions::new()
        .max_connections(1)
        .connect(&format!("{base}/postgres"))
        .await
        .unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE \"{name}\" WITH (FORCE)"
    )))
    .execute(&admin)
    .await
    .unwrap();
    let (status, body) = server.get("/readyz").await;
    assert_eq!(status, 503, "{body}");
    let ready: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(ready["database"]["ok"], false, "{body}");
    // Which check failed, not the database's own error (its name, its host: in the log only).
    let error = ready["database"]["error"].as_str().unwrap();
    assert!(
        error.starts_with("the database did") || error == "the database does not answer",
        "{body}"
    );
    assert!(!body.contains(name), "{body}");
    assert_eq!(server.get("/healthz").await.0, 200);
}

/// `--metrics-listen`: metrics on an address of their own (not on the API's), and rate-limit
/// refusals counted there while the API's address is refusing.
#[tokio::test]
async fn metrics_on_their_own_address_count_rate_limits() {
    let server = Served::start(
        &[
            "--metrics-listen",
            "127.0.0.1:0",
            "--ip-rate",
            "1",
            "--ip-burst",
            "3",
        ],
        &[],
    );
    let metrics_url = {
        let until = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(line) = server
                .stdout()
                .iter()
                .find(|l| l.starts_with("metrics on "))
            {
                break line.trim_start_matches("metrics on ").to_string();
            }
            assert!(Instant::now() < until, "{:?}", server.stdout());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let mut refused = 0;
    for _ in 0..10 {
        if server.get("/healthz").await.0 == 429 {
            refused += 1;
        }
    }
    assert!(refused >= 5, "{refused} of 10 refused");
    let metrics = reqwest::get(&metrics_url)
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        sample_with(
            &metrics,
            "tessera_rate_limited_total",
            &[r#"scope="address""#]
        ),
        Some(f64::from(refused)),
        "{metrics}"
    );
    // Not on the API's address (once the limit lets a request through again).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(server.get("/metrics").await.0, 404);
}

/// Every secret of a full run (the passphrases, the device's share at both epochs, the
/// server's key-encryption key and token key, every token), in the forms a log line could carry
/// it, searched for in the server's JSON log and the device's log at trace level. The log is
/// checked to hold what it should: an access line per request with its route, status, request
/// id and device, and the protocol events.
#[tokio::test]
async fn no_secret_reaches_the_logs_at_trace_level() {
    const PASSPHRASE: &str = "correct horse battery staple 42";
    const KEY_PASSPHRASE: &str = "holder key passphrase 42";
    let server = Served::start(&["--log-format", "json"], &[("RUST_LOG", "trace")]);
    let home = tempfile::tempdir().unwrap();
    let media = tempfile::tempdir().unwrap();
    let device_log = home.path().join("device.log");
    let tessera = |args: &[&str]| {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&device_log)
            .unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_tessera"))
            .args(args)
            .env("TESSERA_HOME", home.path().join("device"))
            .env("TESSERA_PASSPHRASE", PASSPHRASE)
            .env("TESSERA_BACKUP_KEY_PASSPHRASE", KEY_PASSPHRASE)
            .env("RUST_LOG", "trace")
            .stderr(log)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "{args:?}: {stdout}");
        stdout
    };
    tessera(&[
        "init",
        "--server",
        &server.url,
        "--user",
        "scan",
        "--name",
        "phone",
    ]);
    tessera(&["keygen", "--name", "w"]);
    let share_at = || {
        let pass = tessera_store::Passphrase::new(PASSPHRASE.into()).unwrap();
        let ks = tessera_store::Keystore::open(home.path().join("device")).unwrap();
        let record =
            tessera_client::WalletRecord::from_bytes(&ks.load_wallet("w", &pass).unwrap()).unwrap();
        record.current.secret_share_bytes().to_vec()
    };
    let first_share = share_at();
    tessera(&["sign", "--wallet", "w", "--message", "scanned"]);
    tessera(&["refresh", "--wallet", "w"]);
    let second_share = share_at();
    assert_ne!(first_share, second_share);
    tessera(&["sign", "--wallet", "w", "--message", "scanned again"]);
    let keys: Vec<PathBuf> = ["usb-1", "cloud"]
        .iter()
        .map(|label| {
            let path = media.path().join(format!("{label}.key"));
            tessera(&[
                "backup-key",
                "new",
                "--label",
                label,
                "--out",
                path.to_str().unwrap(),
            ]);
            path
        })
        .collect();
    let backup = media.path().join("w.tsb");
    tessera(&[
        "backup",
        "create",
        "--wallet",
        "w",
        "--policy",
        "threshold(2, usb-1, cloud)",
        "--out",
        backup.to_str().unwrap(),
    ]);
    tessera(&["backup", "verify", backup.to_str().unwrap()]);
    // An SDK device of the same server, whose token the test knows.
    let (client, _, _sdk_home) = device(&server.url, "scan-sdk").await;
    let token = client.token().unwrap().to_string();
    client.wallets().await.unwrap();

    let mut secrets: Vec<(String, Vec<u8>)> = vec![
        ("the passphrase".into(), PASSPHRASE.as_bytes().to_vec()),
        (
            "the holder key passphrase".into(),
            KEY_PASSPHRASE.as_bytes().to_vec(),
        ),
        ("the share at epoch 0".into(), first_share),
        ("the share at epoch 1".into(), second_share),
        ("the SDK device's token".into(), token.as_bytes().to_vec()),
    ];
    for file in ["kek.key", "token-signing.pk8"] {
        secrets.push((file.into(), std::fs::read(server.data.join(file)).unwrap()));
    }
    for key in &keys {
        secrets.push((key.display().to_string(), std::fs::read(key).unwrap()));
    }
    let server_log = server.log();
    let device_log = std::fs::read_to_string(&device_log).unwrap();
    assert!(
        server_log.lines().count() > 200,
        "a trace-level log is long: {} lines",
        server_log.lines().count()
    );
    for (log_name, log) in [("server", &server_log), ("device", &device_log)] {
        let lower = log.to_lowercase();
        for (name, secret) in &secrets {
            for form in forms(secret) {
                assert!(
                    !lower.contains(&form.to_lowercase()),
                    "{name} is in the {log_name} log (as {form:?})"
                );
            }
        }
        // Any JWT at all (`{"` encodes as `eyJ`).
        assert!(!log.contains("eyJ"), "a token is in the {log_name} log");
    }

    // What the log must hold: JSON lines; an access line per request; protocol events.
    let lines: Vec<serde_json::Value> = server_log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let access: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|l| l["message"] == "request" && l["span"]["name"] == "request")
        .collect();
    // The SDK signs on the signing socket: its access line is the upgrade's.
    let signed = access
        .iter()
        .find(|l| l["span"]["route"] == "/sign/ws" && l["status"] == 101)
        .unwrap_or_else(|| panic!("no access line of GET /sign/ws"));
    assert_eq!(signed["span"]["method"], "GET");
    assert!(signed["latency_ms"].as_f64().is_some(), "{signed}");
    assert_eq!(signed["span"]["request_id"].as_str().unwrap().len(), 36);
    assert!(
        signed["span"]["device_id"]
            .as_str()
            .is_some_and(|d| !d.is_empty()),
        "{signed}"
    );
    for kind in ["keygen", "sign", "refresh"] {
        assert!(
            lines.iter().any(|l| l["message"] == "session ended"
                && l["kind"] == kind
                && l["outcome"] == "done"),
            "no end of a {kind} session in the log"
        );
    }
}

/// How a secret could be written into a log line: raw text, hex, base64 (with and without
/// padding, URL-safe), a Rust byte-array `Debug` of its first bytes.
fn forms(secret: &[u8]) -> Vec<String> {
    use base64::Engine;
    let mut forms = vec![
        hex::encode(secret),
        base64::engine::general_purpose::STANDARD.encode(secret),
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(secret),
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret),
        format!("{:?}", &secret[..secret.len().min(12)])
            .trim_end_matches(']')
            .to_string(),
    ];
    if let Ok(text) = std::str::from_utf8(secret) {
        forms.push(text.trim().to_string());
    }
    forms
}

/// A sign session whose device stalls: SIGTERM lets it run for the grace period, then closes it
/// with 1001; the server exits cleanly saying so, the run is recorded as failed without counting
/// an abort against the wallet, and after a restart the wallet signs.
#[tokio::test]
async fn sigterm_closes_a_stalled_signing_session_after_the_grace_period() {
    let mut server = Served::start(&["--shutdown-grace", "2"], &[]);
    let (client, _, _home) = device(&server.url, "stall").await;
    let share = client.keygen("w", |_, _| {}).await.unwrap();
    let (mut socket, session_id) = stalled_signature(&server.url, &client, &share).await;

    let signalled = Instant::now();
    server.sigterm();
    let (close, waited) = close_frame(&mut socket, Duration::from_secs(20), signalled).await;
    assert_eq!(u16::from(close.code), 1001, "{close:?}");
    assert!(close.reason.contains("shutting down"), "{close:?}");
    assert!(
        waited >= Duration::from_millis(1900),
        "closed after {waited:?}: before the 2 s grace period"
    );
    drop(socket);
    let status = server.exited(Duration::from_secs(20)).await;
    assert!(status.success(), "{status:?}");
    assert!(
        server.stdout().iter().any(|l| l
            == "tessera server stopped: 1 protocol socket(s) or server run(s) at the signal, 1 closed at the end of the grace period"),
        "{:?}",
        server.stdout()
    );
    let db = server.database().await;
    let (row_status, detail): (String, Option<String>) =
        sqlx::query_as("SELECT status, detail FROM sessions WHERE id = $1")
            .bind(&session_id)
            .fetch_one(&db)
            .await
            .unwrap();
    assert_eq!(row_status, "failed");
    assert_eq!(detail.as_deref(), Some("the server shut down"));
    let (aborts,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM wallet_aborts")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(aborts, 0, "a shutdown counted as the device's abort");
    db.close().await;

    let _again = server.restart();
    sign(&client, &share, "after the restart").await.unwrap();
}

/// A signature whose messages are slowed by a proxy is running when SIGTERM comes: it finishes
/// within the grace period, the device gets its signature, and then the server exits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_a_running_signature_finish_within_the_grace_period() {
    let mut server = Served::start(&["--shutdown-grace", "30"], &[]);
    let proxy = TamperProxy::start(&server.url).await;
    let (client, _, _home) = device(&proxy.url, "slow").await;
    let share = client.keygen("w", |_, _| {}).await.unwrap();
    // The device's second frame of the signing session waits 1.5 s in the proxy.
    let before = proxy.websockets();
    proxy.on(
        Direction::ToServer,
        1,
        Tamper::Delay(Duration::from_millis(1500)),
    );
    let signing = tokio::spawn(async move {
        let signed = sign(&client, &share, "finished in the grace period").await;
        (client, share, signed)
    });
    let until = Instant::now() + Duration::from_secs(30);
    while proxy.fired().is_empty() {
        assert!(Instant::now() < until, "the delayed frame never came");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(proxy.websockets(), before + 1);
    server.sigterm();
    let (_, _, signed) = signing.await.unwrap();
    signed.expect("a signature running at SIGTERM finishes within the grace period");
    let status = server.exited(Duration::from_secs(30)).await;
    assert!(status.success(), "{status:?}");
    assert!(
        server.stdout().iter().any(|l| l
            == "tessera server stopped: 1 protocol socket(s) or server run(s) at the signal, 0 closed at the end of the grace period"),
        "{:?}",
        server.stdout()
    );
}

/// `tessera refresh` paused (as the crash tests pause it) after round 2 and after storing its
/// pending share, while the server gets SIGTERM with a 1 s grace period: the device learns that
/// the server shut down (1001), and after a restart device and server agree on the old epoch,
/// sign, and refresh.
#[tokio::test]
async fn sigterm_during_a_refresh_keeps_every_share() {
    for pause_at in ["round-2", "pending-stored"] {
        let mut server = Served::start(&["--shutdown-grace", "1"], &[]);
        let home = tempfile::tempdir().unwrap();
        let resume = home.path().join("resume");
        let tessera = |args: &[&str]| {
            let mut c = Command::new(env!("CARGO_BIN_EXE_tessera"));
            c.args(args)
                .env("TESSERA_HOME", home.path().join("device"))
                .env("TESSERA_PASSPHRASE", "pw for the shutdown test");
            c
        };
        let ok = |mut c: Command| {
            let out = c.output().unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
            assert!(
                out.status.success(),
                "{stdout}{}",
                String::from_utf8_lossy(&out.stderr)
            );
            stdout
        };
        ok(tessera(&[
            "init",
            "--server",
            &server.url,
            "--user",
            "kim",
            "--name",
            "pc",
        ]));
        ok(tessera(&["keygen", "--name", "w"]));
        let mut refresh = tessera(&["refresh", "--wallet", "w"])
            .env("TESSERA_TEST_PAUSE_AT", pause_at)
            .env("TESSERA_TEST_RESUME_FILE", &resume)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stderr = BufReader::new(refresh.stderr.take().unwrap());
        let mut line = String::new();
        while line.trim_end() != format!("paused at {pause_at}") {
            line.clear();
            assert!(
                stderr.read_line(&mut line).unwrap() > 0,
                "refresh ended before the pause"
            );
        }
        server.sigterm();
        let status = server.exited(Duration::from_secs(20)).await;
        assert!(status.success(), "{pause_at}: {status:?}");
        assert!(
            server
                .stdout()
                .iter()
                .any(|l| l.ends_with("1 closed at the end of the grace period")),
            "{pause_at}: {:?}",
            server.stdout()
        );
        std::fs::write(&resume, b"").unwrap();
        let mut rest = String::new();
        std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
        let refreshed = refresh.wait().unwrap();
        assert!(!refreshed.success(), "{pause_at}: {rest}");
        assert!(
            rest.contains("1001") && rest.contains("shutting down"),
            "{pause_at}: {rest}"
        );

        let _again = server.restart();
        let signed = ok(tessera(&["sign", "--wallet", "w", "--message", "after"]));
        assert!(
            signed.contains("verified       yes"),
            "{pause_at}: {signed}"
        );
        let wallets = ok(tessera(&["wallets"]));
        assert!(wallets.contains("epoch 0"), "{pause_at}: {wallets}");
        let refreshed = ok(tessera(&["refresh", "--wallet", "w"]));
        assert!(refreshed.contains("now epoch 1"), "{pause_at}: {refreshed}");
    }
}
