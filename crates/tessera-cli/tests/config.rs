//! `tessera server --config`: settings from a TOML file, layered under `TESSERA_*` variables and
//! flags, checked against real server processes (where they listen, the rate limit they apply,
//! the shutdown grace they give, their log format) and against `--print-config`, which shows
//! each value's origin with the database password redacted. Errors name the setting and where
//! its value came from.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use tessera_client::ServerClient;

mod common;

use common::shutdown::{close_frame, stalled_signature};

/// `tessera server ARGS` with `env` set, and no TESSERA_* variable of ours leaking in.
fn command(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tessera"));
    cmd.arg("server").args(args);
    for (key, _) in std::env::vars() {
        if key.starts_with("TESSERA_") {
            cmd.env_remove(key);
        }
    }
    cmd.env_remove("RUST_LOG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    command(args, env).output().unwrap()
}

/// `--print-config` succeeded: its output.
fn printed(args: &[&str], env: &[(&str, &str)]) -> String {
    let mut all = vec!["--print-config"];
    all.extend_from_slice(args);
    let out = run(&all, env);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Refused with exit 2 and one line on stderr: that line.
fn refused(args: &[&str], env: &[(&str, &str)]) -> String {
    let out = run(args, env);
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    err
}

/// A free loopback port (bound, then released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A server process whose log (stderr) goes to a file.
struct Served {
    child: Child,
    url: String,
    log: PathBuf,
    rest: Option<std::thread::JoinHandle<String>>,
}

impl Served {
    fn start(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Served {
        tessera_client::tls::install_crypto_provider();
        let log = dir.join(format!("server-{}.log", free_port()));
        let mut child = command(args, env)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        // Its stdout is read to the end (a closed pipe would fail its last line).
        let mut reader = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        assert!(
            !line.is_empty(),
            "the server did not start: {}",
            std::fs::read_to_string(&log).unwrap()
        );
        let rest = std::thread::spawn(move || {
            let mut rest = String::new();
            let _ = std::io::Read::read_to_string(&mut reader, &mut rest);
            rest
        });
        let url = line
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .unwrap_or_else(|| panic!("no URL in {line:?}"))
            .to_string();
        Served {
            child,
            url,
            log,
            rest: Some(rest),
        }
    }

    async fn get(&self, path: &str) -> u16 {
        reqwest::get(format!("{}{path}", self.url))
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    /// After it exited: what it printed after its first line.
    fn last_lines(&mut self) -> String {
        self.rest.take().unwrap().join().unwrap()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap()
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `key = value  # origin` line of `--print-config` output.
fn line<'a>(printed: &'a str, key: &str) -> &'a str {
    printed
        .lines()
        .find(|l| l.starts_with(&format!("{key} = ")))
        .unwrap_or_else(|| panic!("no {key} in {printed}"))
}

/// The file sets the address, plain HTTP, the data directory, the limits and the log format;
/// TESSERA_ABORT_LIMIT adds a setting, --log-format overrides the file's. The server listens on
/// the file's address, refuses the requests after the file's burst of 3, and logs JSON.
#[tokio::test]
async fn a_config_file_sets_where_the_server_listens_and_its_limits() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let file = dir.path().join("server.toml");
    std::fs::write(
        &file,
        format!(
            "# A server for the test.\n\
             listen = \"127.0.0.1:{port}\"\n\
             insecure_http = true\n\
             data_dir = \"{}\"\n\
             ip_rate = 1\n\
             ip_burst = 3\n\
             device_burst = 9\n\
             log_format = \"text\"\n",
            dir.path().join("data").display()
        ),
    )
    .unwrap();
    let config = file.to_str().unwrap();
    let env = [("TESSERA_ABORT_LIMIT", "2")];
    let flags = ["--config", config, "--log-format", "json"];

    let shown = printed(&flags, &env);
    let from_file = format!("# from {config}");
    assert_eq!(
        line(&shown, "listen"),
        format!("listen = \"127.0.0.1:{port}\"  {from_file}")
    );
    assert_eq!(
        line(&shown, "insecure_http"),
        format!("insecure_http = true  {from_file}")
    );
    assert_eq!(
        line(&shown, "ip_burst"),
        format!("ip_burst = 3  {from_file}")
    );
    assert_eq!(
        line(&shown, "device_burst"),
        format!("device_burst = 9  {from_file}")
    );
    assert_eq!(
        line(&shown, "abort_limit"),
        "abort_limit = 2  # from TESSERA_ABORT_LIMIT"
    );
    assert_eq!(
        line(&shown, "log_format"),
        "log_format = \"json\"  # from --log-format"
    );
    assert_eq!(line(&shown, "device_rate"), "device_rate = 100  # default");
    assert!(shown.contains("# database_url is not set"), "{shown}");

    let server = Served::start(dir.path(), &flags, &env);
    assert_eq!(server.url, format!("http://127.0.0.1:{port}"));
    let mut statuses = Vec::new();
    for _ in 0..5 {
        statuses.push(server.get("/healthz").await);
    }
    assert_eq!(
        statuses,
        [200, 200, 200, 429, 429],
        "the file's ip_burst of 3"
    );
    // The flag's log format: every log line is a JSON object.
    let log = server.log();
    assert!(!log.trim().is_empty());
    for l in log.lines() {
        serde_json::from_str::<serde_json::Value>(l)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
    }
    assert!(dir.path().join("data").join("tessera.db").exists());
}

/// The file says a grace of 60 seconds, TESSERA_SHUTDOWN_GRACE says 2: on SIGTERM a stalled
/// signing session is closed after about 2 seconds.
#[tokio::test]
async fn the_environment_overrides_the_file_s_shutdown_grace() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("server.toml");
    std::fs::write(
        &file,
        format!(
            "listen = \"127.0.0.1:0\"\ninsecure_http = true\ndata_dir = \"{}\"\nshutdown_grace = 60\n",
            dir.path().join("data").display()
        ),
    )
    .unwrap();
    let config = file.to_str().unwrap();
    let env = [("TESSERA_SHUTDOWN_GRACE", "2")];
    let shown = printed(&["--config", config], &env);
    assert_eq!(
        line(&shown, "shutdown_grace"),
        "shutdown_grace = 2  # from TESSERA_SHUTDOWN_GRACE"
    );
    // A flag beats both.
    let shown = printed(&["--config", config, "--shutdown-grace", "5"], &env);
    assert_eq!(
        line(&shown, "shutdown_grace"),
        "shutdown_grace = 5  # from --shutdown-grace"
    );

    let mut server = Served::start(dir.path(), &["--config", config], &env);
    let home = tempfile::tempdir().unwrap();
    let id = common::identity(home.path());
    let mut client = ServerClient::new(&server.url).unwrap();
    let device = client.register(&id, "grace", "laptop").await.unwrap();
    client.login(&id, &device.device_id).await.unwrap();
    let share = client.keygen("w", |_, _| {}).await.unwrap();
    let (mut socket, _) = stalled_signature(&server.url, &client, &share).await;

    let signalled = Instant::now();
    common::shutdown::sigterm(&server.child);
    let (close, waited) = close_frame(&mut socket, Duration::from_secs(30), signalled).await;
    assert_eq!(u16::from(close.code), 1001, "{close:?}");
    assert!(
        waited >= Duration::from_millis(1900) && waited < Duration::from_secs(15),
        "closed after {waited:?}: not the environment's 2 s grace"
    );
    let status = server.child.wait().unwrap();
    assert!(status.success(), "{status:?}: {}", server.log());
    assert!(
        server.last_lines().contains(
            "1 protocol socket(s) or server run(s) at the signal, 1 closed at the end of the grace period"
        ),
        "{}",
        server.log()
    );
}

/// Unknown keys, values of the wrong type, an unreadable file, a bad variable and settings that
/// exclude each other across layers: exit 2 and one line naming the setting and its origin.
#[test]
fn bad_settings_are_refused_naming_the_setting_and_where_it_came_from() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("server.toml");
    let config = file.to_str().unwrap();
    let write = |text: &str| std::fs::write(&file, text).unwrap();

    write("listen = \"127.0.0.1:0\"\nlisen_addr = 1\nip_burts = 5\n");
    let e = refused(&["--config", config], &[]);
    assert!(e.contains("unknown setting \"ip_burts\""), "{e}");
    assert!(e.contains(config), "{e}");
    assert!(e.contains("did you mean \"ip_burst\""), "{e}");
    write("ip-burst = 5\n");
    let e = refused(&["--config", config, "--print-config"], &[]);
    assert!(e.contains("did you mean \"ip_burst\""), "{e}");
    write("[limits]\nip_burst = 5\n");
    let e = refused(&["--config", config], &[]);
    assert!(
        e.contains("unknown setting \"limits\"") && e.contains("not tables"),
        "{e}"
    );

    write("ip_burst = \"many\"\n");
    let e = refused(&["--config", config], &[]);
    assert!(
        e.contains(&format!("invalid setting ip_burst (from {config})")),
        "{e}"
    );
    assert!(e.contains("expected u32"), "{e}");
    write("listen = \"localhost-ish\"\n");
    let e = refused(&["--config", config, "--print-config"], &[]);
    assert!(
        e.contains(&format!("invalid setting listen (from {config})")),
        "{e}"
    );
    write("log_format = \"xml\"\n");
    let e = refused(&["--config", config], &[]);
    assert!(e.contains("invalid setting log_format"), "{e}");
    write("listen = \n");
    let e = refused(&["--config", config], &[]);
    assert!(
        e.contains("is not valid TOML") && e.contains("line 1"),
        "{e}"
    );

    let e = refused(&["--config", "/nonexistent/server.toml"], &[]);
    assert!(
        e.contains("cannot read the config file /nonexistent/server.toml"),
        "{e}"
    );
    let e = refused(&["--insecure-http"], &[("TESSERA_IP_BURST", "lots")]);
    assert!(
        e.contains("invalid setting ip_burst (from TESSERA_IP_BURST)"),
        "{e}"
    );

    // Checks across layers: plain HTTP off loopback, TLS modes that exclude each other.
    write("listen = \"0.0.0.0:8443\"\ninsecure_http = true\n");
    let e = refused(&["--config", config], &[]);
    assert!(
        e.contains("only allowed on a loopback address") && e.contains(config),
        "{e}"
    );
    write("dev_tls = true\n");
    let e = refused(&["--config", config, "--insecure-http"], &[]);
    assert!(
        e.contains(&format!(
            "dev_tls (from {config}) cannot be used with insecure_http (from --insecure-http)"
        )),
        "{e}"
    );
    write("tls_cert = \"/etc/tessera/tls/cert.pem\"\n");
    let e = refused(&["--config", config, "--insecure-http"], &[]);
    assert!(e.contains("tls_cert"), "{e}");
    let e = refused(&["--config", config], &[]);
    assert!(e.contains("needs tls_key too"), "{e}");
    write("benchmark_without_controls = true\n");
    let e = refused(&["--config", config], &[]);
    assert!(e.contains("needs --insecure-http"), "{e}");
    // Nothing chosen anywhere.
    let e = refused(&[], &[]);
    assert!(e.contains("choose TLS"), "{e}");
    // The device's variables are not server settings.
    let out = run(
        &["--print-config", "--insecure-http"],
        &[("TESSERA_HOME", "/x"), ("TESSERA_PASSPHRASE", "pw")],
    );
    assert!(out.status.success());
}

/// `--print-config` hides the database password (in the URL and as a query parameter) and a
/// PKCS#11 pin-value; its output, less those, is a config file that reads back to the same
/// settings.
#[test]
fn print_config_redacts_secrets_and_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("server.toml");
    std::fs::write(
        &file,
        "database_url = \"postgres://tessera:file-secret@127.0.0.1:5432/tessera\"\ninsecure_http = true\n",
    )
    .unwrap();
    let config = file.to_str().unwrap();
    let shown = printed(&["--config", config], &[]);
    assert!(!shown.contains("file-secret"), "{shown}");
    assert_eq!(
        line(&shown, "database_url"),
        format!(
            "database_url = \"postgres://tessera:<redacted>@127.0.0.1:5432/tessera\"  # from {config}"
        )
    );
    let shown = printed(
        &["--config", config],
        &[(
            "TESSERA_DATABASE_URL",
            "postgres://tessera@db/tessera?password=env-secret",
        )],
    );
    assert!(!shown.contains("env-secret"), "{shown}");
    assert_eq!(
        line(&shown, "database_url"),
        "database_url = \"postgres://tessera@db/tessera?password=<redacted>\"  # from TESSERA_DATABASE_URL"
    );
    let shown = printed(
        &[
            "--insecure-http",
            "--kek",
            "pkcs11:token=t;object=k?module-path=/m.so&pin-value=pin-secret",
        ],
        &[],
    );
    assert!(!shown.contains("pin-secret"), "{shown}");
    assert!(shown.contains("pin-value=<redacted>"), "{shown}");

    // Read back: every value now comes from the file, and is the same.
    let shown = printed(
        &[
            "--insecure-http",
            "--ip-burst",
            "7",
            "--metrics-listen",
            "127.0.0.1:9464",
            "--data-dir",
            "/var/lib/tessera",
        ],
        &[("TESSERA_TIME_LOCK", "60")],
    );
    let copy = dir.path().join("copy.toml");
    std::fs::write(&copy, &shown).unwrap();
    let again = printed(&["--config", copy.to_str().unwrap()], &[]);
    let values = |text: &str| -> Vec<String> {
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| l.split("  #").next().unwrap().to_string())
            .collect()
    };
    assert_eq!(values(&again), values(&shown));
    assert_eq!(
        line(&again, "time_lock"),
        format!("time_lock = 60  # from {}", copy.display())
    );
}

/// The example file in deploy/ and the one in docs/operations.md ("Configuration") name every
/// setting of `--help`, read without error, and are what they say: the defaults but for
/// `listen`.
#[test]
fn the_example_files_name_every_setting_and_read_back() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let deploy = std::fs::read_to_string(root.join("deploy/tessera.toml.example")).unwrap();
    let docs = std::fs::read_to_string(root.join("docs/operations.md")).unwrap();
    let section = docs
        .split("## Configuration")
        .nth(1)
        .expect("docs/operations.md has no Configuration section");
    let docs_example = section
        .split("```toml\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("no toml block in Configuration");
    let help = String::from_utf8(run(&["--help"], &[]).stdout).unwrap();
    // The option lines of --help: `      --ip-burst <IP_BURST>`.
    let flags: Vec<String> = help
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("--"))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|f| !["help", "config", "print-config"].contains(f))
        .map(|f| f.replace('-', "_"))
        .collect();
    assert!(flags.len() > 20, "{flags:?}");
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in [("deploy", deploy.as_str()), ("docs", docs_example)] {
        for flag in &flags {
            assert!(
                text.lines()
                    .any(|l| l.trim_start_matches('#').starts_with(&format!("{flag} = "))),
                "the {name} example lacks {flag}"
            );
        }
        let file = dir.path().join(format!("{name}.toml"));
        std::fs::write(&file, text).unwrap();
        let shown = printed(
            &[
                "--config",
                file.to_str().unwrap(),
                "--tls-cert",
                "/c.pem",
                "--tls-key",
                "/k.pem",
            ],
            &[],
        );
        let defaults = printed(&["--tls-cert", "/c.pem", "--tls-key", "/k.pem"], &[]);
        for l in shown.lines().filter(|l| !l.starts_with('#')) {
            let (value, origin) = l.split_once("  # ").unwrap();
            let key = value.split(" = ").next().unwrap();
            match key {
                "listen" => assert_eq!(value, "listen = \"0.0.0.0:8443\"", "{name}"),
                "tls_cert" | "tls_key" => {
                    assert_eq!(origin, format!("from --{}", key.replace('_', "-")))
                }
                "session_idle_timeout" | "benchmark_without_controls" => {
                    assert_eq!(origin, "default", "{name}: {l}")
                }
                _ => {
                    assert_eq!(origin, format!("from {}", file.display()), "{name}: {l}");
                    assert!(
                        defaults.contains(&format!("{value}  # default")),
                        "{name}: {l} is not the default"
                    );
                }
            }
        }
    }
}
