//! Shared by the integration tests: `tessera server` processes on free loopback ports, fresh
//! PostgreSQL databases, device identities.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod cli;
pub mod process;
pub mod proxy;
pub mod relay;
pub mod shutdown;

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use tessera_store::{DeviceIdentity, Keystore, KeystoreOptions, Passphrase};

/// Server flags that lift the rate limits and session caps, for benches that measure the
/// server's work, not its limits.
pub const UNLIMITED: [&str; 12] = [
    "--ip-rate",
    "1000000",
    "--ip-burst",
    "1000000",
    "--device-rate",
    "1000000",
    "--device-burst",
    "1000000",
    "--max-sessions-per-device",
    "1000000",
    "--max-sessions-per-wallet",
    "1000000",
];

/// Copies the directory `from` (a device's home, say) into `to`, recursively.
pub fn copy_dir(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            std::fs::create_dir_all(&target).unwrap();
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// A `tessera server --insecure-http` process, killed on drop.
pub struct Server {
    pub child: Child,
    pub url: String,
    pub data: PathBuf,
    pub database_url: Option<String>,
    extra: Vec<String>,
    _dir: Option<tempfile::TempDir>,
}

impl Server {
    /// Starts a server on `data` with `extra` arguments; `env` sets (`Some`) or removes (`None`)
    /// variables. `Err` holds its stderr when it refuses to start.
    pub fn try_start(
        data: &Path,
        extra: &[&str],
        env: &[(&str, Option<&str>)],
    ) -> Result<Server, String> {
        Self::spawn("127.0.0.1:0", data, extra, env)
    }

    /// After [`Server::kill`]: the server again, on the same address, data and arguments (as
    /// an operator restarts it after a crash).
    pub fn restart(&mut self) {
        let listen = self.url.trim_start_matches("http://").to_string();
        let extra: Vec<&str> = self.extra.iter().map(String::as_str).collect();
        let again = Self::spawn(&listen, &self.data, &extra, &[])
            .unwrap_or_else(|e| panic!("the server did not start again: {e}"));
        let mut old = std::mem::replace(self, again);
        self._dir = old._dir.take();
    }

    fn spawn(
        listen: &str,
        data: &Path,
        extra: &[&str],
        env: &[(&str, Option<&str>)],
    ) -> Result<Server, String> {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tessera"));
        cmd.args([
            "server",
            "--insecure-http",
            "--listen",
            listen,
            "--data-dir",
        ])
        .arg(data)
        .args(extra)
        .env_remove("TESSERA_DATABASE_URL")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        for (k, v) in env {
            match v {
                Some(v) => cmd.env(k, v),
                None => cmd.env_remove(k),
            };
        }
        let mut child = cmd.spawn().unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        if line.is_empty() {
            let mut err = String::new();
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .unwrap();
            let _ = child.wait();
            return Err(err);
        }
        // Keep its stderr flowing to ours (a full pipe would stall it).
        let mut stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut stderr, &mut std::io::stderr());
        });
        let url = line
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .unwrap_or_else(|| panic!("no URL in {line:?}"))
            .to_string();
        let database_url = extra
            .iter()
            .position(|a| *a == "--database-url")
            .map(|i| extra[i + 1].to_string());
        Ok(Server {
            child,
            url,
            data: data.to_path_buf(),
            database_url,
            extra: extra.iter().map(|a| a.to_string()).collect(),
            _dir: None,
        })
    }

    /// Starts a server on `data`.
    pub fn start(data: &Path, extra: &[&str]) -> Server {
        Self::try_start(data, extra, &[])
            .unwrap_or_else(|e| panic!("the server did not start: {e}"))
    }

    /// Starts a server on a data directory of its own (removed with it).
    pub fn start_fresh(extra: &[&str]) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let mut server = Self::start(&dir.path().join("data"), extra);
        server._dir = Some(dir);
        server
    }

    /// Its database, opened directly as its operator (or an attacker with access to it) would.
    pub async fn database(&self) -> sqlx::AnyPool {
        sqlx::any::install_default_drivers();
        let url = match &self.database_url {
            Some(u) => u.clone(),
            None => format!("sqlite://{}", self.data.join("tessera.db").display()),
        };
        sqlx::any::AnyPoolOptions::new()
            .max_connections(1)
            .connect(&url)
            .await
            .unwrap()
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A fresh database on the PostgreSQL server the test command started.
pub fn fresh_postgres_database() -> String {
    let admin = std::env::var("TESSERA_TEST_DATABASE_URL").expect(
        "the PostgreSQL tests need TESSERA_TEST_DATABASE_URL: run ./scripts/test, which starts a throwaway PostgreSQL",
    );
    let name = format!(
        "tessera_{}",
        hex::encode(&tessera_core::protocols::fresh_nonce()[..8])
    );
    let out = Command::new("psql")
        .args([
            admin.as_str(),
            "-q",
            "-c",
            &format!("CREATE DATABASE {name}"),
        ])
        .output()
        .expect("psql runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (base, _) = admin.rsplit_once('/').unwrap();
    format!("{base}/{name}")
}

/// A device identity in a keystore at `dir` (fast test KDF).
pub fn identity(dir: &Path) -> DeviceIdentity {
    Keystore::open_with(
        dir,
        KeystoreOptions::default().insecure_fast_kdf_for_tests(),
    )
    .unwrap()
    .create_identity(&Passphrase::new("pw".into()).unwrap())
    .unwrap()
}

/// A policy that also allows raw digests (new wallets allow only eth-tx and eth-message).
pub fn allow_digests() -> tessera_api::Policy {
    tessera_api::Policy {
        allowed_kinds: vec![
            tessera_api::RequestKind::EthTx,
            tessera_api::RequestKind::EthMessage,
            tessera_api::RequestKind::Digest,
        ],
        ..tessera_api::Policy::default()
    }
}

/// The WebSocket request that opens `session_id` on the server at `url` (http or https) with the
/// bearer `token`.
pub fn ws_request(
    url: &str,
    token: &str,
    session_id: &str,
) -> tokio_tungstenite::tungstenite::handshake::client::Request {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = format!(
        "{}/ws?session_id={session_id}",
        url.replacen("http", "ws", 1)
    )
    .into_client_request()
    .unwrap();
    req.headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    req
}

/// Which database a test's server uses.
#[derive(Clone, Copy, Debug)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A server on SQLite, or on a fresh PostgreSQL database.
pub fn start(backend: Backend) -> Server {
    match backend {
        Backend::Sqlite => Server::start_fresh(&[]),
        Backend::Postgres => Server::start_fresh(&["--database-url", &fresh_postgres_database()]),
    }
}
