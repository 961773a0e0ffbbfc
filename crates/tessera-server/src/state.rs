//! Server state: the database, the token keys, the key-encryption key, configuration.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use sqlx::AnyPool;
use sqlx::any::AnyPoolOptions;
use tessera_store::kek::{FileKek, KeyEncryptionKey};
use tessera_store::pkcs11::Pkcs11Uri;
use tessera_store::{Pkcs11Kek, Pkcs11Spec};
use zeroize::Zeroizing;

pub use crate::clock::{now, rfc3339};
use crate::db::{self, Backend, WriteTx};
use crate::error::{ApiResult, SetupError};
use crate::tokens::JwtKeys;

/// How a server is set up.
#[derive(Clone, Debug)]
pub struct Config {
    /// Where the database (SQLite by default), the token key and the key-encryption key live
    /// (created 0700).
    pub data_dir: PathBuf,
    /// A PostgreSQL URL (`postgres://…`) to use instead of the embedded SQLite file, so that
    /// several server replicas can share one database.
    pub database_url: Option<String>,
    /// A session expires after this long without a message.
    pub session_idle_timeout: Duration,
    /// The key-encryption key that seals the server's shares (default: `kek.key` in the data
    /// directory).
    pub kek: Option<KekSource>,
    /// Rate limits.
    pub limits: crate::limits::Limits,
    /// Policies and the audit log. Only a benchmark turns them off, to measure their cost.
    pub controls: bool,
    /// Live sessions (running, or created and still openable) one device may hold.
    pub max_sessions_per_device: u32,
    /// Live sessions one wallet may hold, all devices together.
    pub max_sessions_per_wallet: u32,
    /// Sign and refresh runs of a wallet that may abort without blame within `abort_window`;
    /// one more locks the wallet until a refresh (0: never lock).
    pub abort_limit: u32,
    /// The window in which aborts are counted.
    pub abort_window: Duration,
    /// How long an action that one device may not take alone waits when no other active device
    /// can approve it (exporting the server's share for a user with one device, recovering a
    /// device while active devices exist): visible and cancellable meanwhile.
    pub time_lock: Duration,
    /// After SIGTERM or SIGINT, how long running protocol sessions may take to finish before
    /// they are closed ([`crate::shutdown`]).
    pub shutdown_grace: Duration,
    /// Whether `GET /metrics` is served with the API (off when metrics have a listen address
    /// of their own).
    pub metrics_on_api: bool,
    /// Where request state changes are POSTed, signed ([`crate::webhooks`]); none: no webhooks.
    pub webhook_url: Option<String>,
    /// What POSTs them (the server has no HTTP client of its own: the binary supplies one).
    /// Deliveries wait in the database while there is none.
    pub webhook_transport: Option<std::sync::Arc<dyn crate::webhooks::Transport>>,
}

/// Default cap on a device's live sessions.
pub const DEFAULT_MAX_SESSIONS_PER_DEVICE: u32 = 64;
/// Default cap on a wallet's live sessions (all devices of its user together).
pub const DEFAULT_MAX_SESSIONS_PER_WALLET: u32 = 128;

/// Where the key-encryption key is.
#[derive(Clone)]
pub enum KekSource {
    /// A key file (created 0600 on first use).
    File(PathBuf),
    /// An AES key in a PKCS#11 token, with the user PIN.
    Pkcs11 {
        /// Module, token and key.
        spec: Pkcs11Spec,
        /// The user PIN.
        pin: Zeroizing<String>,
    },
}

impl std::fmt::Debug for KekSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KekSource::File(p) => write!(f, "File({})", p.display()),
            KekSource::Pkcs11 { spec, .. } => write!(f, "Pkcs11({spec}, pin: <redacted>)"),
        }
    }
}

impl KekSource {
    /// Parses `file` (the data directory's key file), `file:PATH` or a PKCS#11 key: an RFC 7512
    /// URI `pkcs11:token=…;object=…?module-path=…` (or the deprecated
    /// `pkcs11:module=…,token=…,key=…`, see [`KekSource::deprecation`]). The PIN is the URI's
    /// `pin-value` or `pin-source` if it has one, `pin` otherwise.
    ///
    /// # Errors
    /// A message naming what is wrong, e.g. a PKCS#11 key without a PIN, a URI attribute.
    pub fn parse(text: &str, data_dir: &Path, pin: Option<&str>) -> Result<Self, SetupError> {
        if text == "file" {
            return Ok(KekSource::File(data_dir.join("kek.key")));
        }
        if let Some(path) = text.strip_prefix("file:") {
            return Ok(KekSource::File(PathBuf::from(path)));
        }
        if text
            .get(..7)
            .is_some_and(|scheme| scheme.eq_ignore_ascii_case("pkcs11:"))
        {
            let uri = Pkcs11Uri::parse(text).map_err(|e| SetupError::Invalid(e.to_string()))?;
            let pin = match (&uri.pin, pin) {
                (Some(source), _) => source
                    .read()
                    .map_err(|e| SetupError::Invalid(e.to_string()))?,
                (None, Some(pin)) => Zeroizing::new(pin.to_string()),
                (None, None) => {
                    return Err(SetupError::Invalid(format!(
                        "the PIN of token {:?} is missing: set TESSERA_PKCS11_PIN (or add pin-source=file:PATH to the URI)",
                        uri.spec.token
                    )));
                }
            };
            return Ok(KekSource::Pkcs11 {
                spec: uri.spec,
                pin,
            });
        }
        // The text is not quoted: it may be a URI with a PIN in it, mistyped.
        Err(SetupError::Invalid(
            "unknown key-encryption key: use file, file:PATH or pkcs11:token=…;object=…?module-path=… (RFC 7512)".into(),
        ))
    }

    /// For a key named in a deprecated form: a note saying so and naming the form to use
    /// instead (for the operator; the key still works). `None` for every other name, valid or
    /// not ([`KekSource::parse`] reports what is wrong).
    #[must_use]
    pub fn deprecation(text: &str) -> Option<String> {
        let uri = Pkcs11Uri::parse(text).ok()?;
        uri.legacy.then(|| {
            format!(
                "the key-encryption key form pkcs11:module=…,token=…,key=… is deprecated and will be removed: use the RFC 7512 URI {}",
                uri.spec
            )
        })
    }

    /// Opens the key (creating a key file on first use; a PKCS#11 key must exist).
    ///
    /// # Errors
    /// A message naming the file or the token and what failed (wrong PIN, missing key...).
    pub fn open(&self) -> Result<Box<dyn KeyEncryptionKey>, SetupError> {
        match self {
            KekSource::File(path) => FileKek::open_or_create(path)
                .map(|k| Box::new(k) as Box<dyn KeyEncryptionKey>)
                .map_err(SetupError::Kek),
            KekSource::Pkcs11 { spec, pin } => Pkcs11Kek::open(spec, pin)
                .map(|k| Box::new(k) as Box<dyn KeyEncryptionKey>)
                .map_err(SetupError::Kek),
        }
    }
}

impl Config {
    /// Defaults for `data_dir`: SQLite in it, 5-minute sessions.
    #[must_use]
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Config {
            data_dir: data_dir.into(),
            database_url: None,
            session_idle_timeout: Duration::from_secs(300),
            kek: None,
            limits: crate::limits::Limits::default(),
            controls: true,
            max_sessions_per_device: DEFAULT_MAX_SESSIONS_PER_DEVICE,
            max_sessions_per_wallet: DEFAULT_MAX_SESSIONS_PER_WALLET,
            abort_limit: 5,
            abort_window: Duration::from_secs(3600),
            time_lock: Duration::from_secs(24 * 3600),
            shutdown_grace: crate::shutdown::DEFAULT_GRACE,
            metrics_on_api: true,
            webhook_url: None,
            webhook_transport: None,
        }
    }
}

struct Inner {
    db: AnyPool,
    jwt: JwtKeys,
    kek: Box<dyn KeyEncryptionKey>,
    config: Config,
    relay: crate::relay::Rooms,
    mailboxes: crate::mailboxes::Mailboxes,
    limits: Arc<crate::limits::RateLimits>,
    registrations: Arc<crate::enrolment::RegistrationLimiter>,
    instance: String,
    liveness: Option<tokio::sync::Mutex<sqlx::AnyConnection>>,
    audit_head: Arc<db::audit::HeadCache>,
    /// Woken when a session of a structure wallet becomes joinable on this replica.
    joinable: tokio::sync::Notify,
    shutdown: crate::shutdown::Shutdown,
    /// The shares unsealed for recent signatures ([`crate::vault::UnsealedShares`]).
    unsealed: crate::vault::UnsealedShares,
    /// The readiness probe's last check of the key-encryption key: when, and its result.
    kek_checked: std::sync::Mutex<Option<(std::time::Instant, Result<(), String>)>>,
}

/// Shared by every handler.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

impl AppState {
    /// Opens (creating on first start) the data directory, database and keys.
    ///
    /// # Errors
    /// A message naming what could not be opened.
    pub async fn open(config: Config) -> Result<Self, SetupError> {
        let dir = &config.data_dir;
        std::fs::create_dir_all(dir).map_err(SetupError::io("create", dir))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(SetupError::io("restrict", dir))?;
        let db = connect_database(&config).await?;
        let instance = uuid::Uuid::new_v4().to_string();
        let liveness = if config.database_url.is_some() {
            // Replicas may share this database: hold a lock named after this instance for as
            // long as the process lives, and end only the sessions of replicas that died.
            let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(
                config.database_url.as_deref().unwrap_or_default(),
            )
            .await
            .map_err(SetupError::db("cannot connect to PostgreSQL"))?;
            crate::db::replicas::hold_liveness(&mut conn, &instance)
                .await
                .map_err(SetupError::db("cannot take this replica's liveness lock"))?;
            Some(tokio::sync::Mutex::new(conn))
        } else {
            // One server per SQLite file: after a restart no session runs any more, and its row
            // must not stay live (a live refresh blocks the wallet's next one).
            crate::db::sessions::fail_all_live(&db)
                .await
                .map_err(SetupError::db(
                    "cannot end the sessions of the previous run",
                ))?;
            None
        };
        let jwt = JwtKeys::open_or_create(&dir.join("token-signing.pk8"))?;
        let kek = config
            .kek
            .clone()
            .unwrap_or_else(|| KekSource::File(dir.join("kek.key")))
            .open()?;
        crate::db::shares::check_kek(&db, kek.as_ref()).await?;
        let mailboxes = match &config.database_url {
            Some(url) => crate::mailboxes::Mailboxes::on_postgres(db.clone(), url, &instance)
                .await
                .map_err(SetupError::db(
                    "cannot listen for frames from other replicas",
                ))?,
            None => crate::mailboxes::Mailboxes::in_process(&instance),
        };
        let state = AppState(Arc::new(Inner {
            db,
            jwt,
            kek,
            relay: crate::relay::Rooms::default(),
            mailboxes,
            limits: Arc::new(crate::limits::RateLimits::new(config.limits)),
            registrations: Arc::new(crate::enrolment::RegistrationLimiter::default()),
            config,
            instance,
            liveness,
            audit_head: Arc::default(),
            joinable: tokio::sync::Notify::new(),
            shutdown: crate::shutdown::Shutdown::default(),
            unsealed: crate::vault::UnsealedShares::default(),
            kek_checked: std::sync::Mutex::new(None),
        }));
        state.end_sessions_of_dead_replicas().await?;
        state.forget_dead_replicas().await?;
        Ok(state)
    }

    /// Completes when a session of a structure wallet next becomes joinable on this replica
    /// (enable it before reading the joinable sessions).
    pub(crate) fn joinable_changed(&self) -> tokio::sync::futures::Notified<'_> {
        self.0.joinable.notified()
    }

    /// Wakes the devices waiting for joinable sessions on this replica.
    pub(crate) fn announce_joinable(&self) {
        self.0.joinable.notify_waiters();
    }

    /// Where the server is in its life: serving, draining or closing ([`crate::shutdown`]).
    #[must_use]
    pub fn shutdown(&self) -> &crate::shutdown::Shutdown {
        &self.0.shutdown
    }

    /// The readiness probe's last check of the key-encryption key, if it is younger than `max_age`.
    pub(crate) fn kek_checked(&self, max_age: Duration) -> Option<Result<(), String>> {
        let last = self.0.kek_checked.lock().ok()?;
        last.as_ref()
            .filter(|(at, _)| at.elapsed() < max_age)
            .map(|(_, result)| result.clone())
    }

    /// Records a check of the key-encryption key (see [`AppState::kek_checked`]).
    pub(crate) fn record_kek_check(&self, result: Result<(), String>) {
        if let Ok(mut last) = self.0.kek_checked.lock() {
            *last = Some((std::time::Instant::now(), result));
        }
    }

    /// The shares unsealed for recent signatures.
    #[must_use]
    pub fn unsealed(&self) -> &crate::vault::UnsealedShares {
        &self.0.unsealed
    }

    /// This process's instance id (the owner of the sessions it runs).
    #[must_use]
    pub fn instance(&self) -> &str {
        &self.0.instance
    }

    /// Ends the running sessions whose replica died (its liveness lock is free). Called at start
    /// and then periodically; nothing to do on SQLite.
    ///
    /// # Errors
    /// A database error.
    pub async fn end_sessions_of_dead_replicas(&self) -> Result<usize, SetupError> {
        let Some(liveness) = &self.0.liveness else {
            return Ok(0);
        };
        let err = SetupError::db("database");
        let owners = db::sessions::running_owners_besides(self.db(), &self.0.instance)
            .await
            .map_err(&err)?;
        let mut ended = 0;
        let mut conn = liveness.lock().await;
        for owner in owners {
            let dead = match &owner {
                // Claimed before sessions had owners.
                None => true,
                Some(o) => db::replicas::is_dead(&mut conn, o).await.map_err(&err)?,
            };
            if dead {
                ended += db::sessions::fail_running_of(self.db(), owner.as_deref())
                    .await
                    .map_err(&err)? as usize;
            }
        }
        Ok(ended)
    }

    /// Forgets the mailboxes and relay codes of replicas that died (their liveness lock is
    /// free), closes this process's inboxes that watch them, and deletes stored frames nobody
    /// read within [`crate::mailboxes::FRAME_TTL`]. Called at start and then periodically;
    /// returns how many replicas were found dead. Nothing to do on SQLite.
    ///
    /// # Errors
    /// A database error.
    pub async fn forget_dead_replicas(&self) -> Result<usize, SetupError> {
        let Some(liveness) = &self.0.liveness else {
            return Ok(0);
        };
        let err = SetupError::db("database");
        let mut candidates: std::collections::BTreeSet<String> =
            db::mailboxes::other_holders(self.db(), &self.0.instance)
                .await
                .map_err(&err)?
                .into_iter()
                .collect();
        candidates.extend(self.0.mailboxes.watched());
        let mut dead = 0;
        for instance in candidates {
            let is_dead = {
                let mut conn = liveness.lock().await;
                db::replicas::is_dead(&mut conn, &instance)
                    .await
                    .map_err(&err)?
            };
            if is_dead {
                db::mailboxes::forget_replica(self.db(), &instance)
                    .await
                    .map_err(&err)?;
                self.0.mailboxes.lose_replica(&instance);
                dead += 1;
            }
        }
        self.0
            .mailboxes
            .clean_up(now())
            .await
            .map_err(|e| SetupError::Invalid(e.to_string()))?;
        Ok(dead)
    }

    /// The mailboxes of this process (frames between replicas).
    #[must_use]
    pub fn mailboxes(&self) -> &crate::mailboxes::Mailboxes {
        &self.0.mailboxes
    }

    /// The database.
    #[must_use]
    pub fn db(&self) -> &AnyPool {
        &self.0.db
    }

    /// The database this server runs on.
    #[must_use]
    pub fn backend(&self) -> Backend {
        if self.config().database_url.is_some() {
            Backend::Postgres
        } else {
            Backend::Sqlite
        }
    }

    /// Starts a write transaction ([`WriteTx`]).
    ///
    /// # Errors
    /// A database error (on SQLite, after waiting for the write lock repeatedly).
    pub async fn begin_write(&self) -> ApiResult<WriteTx> {
        WriteTx::begin(
            self.db(),
            self.backend(),
            self.config().controls,
            Arc::clone(&self.0.audit_head),
        )
        .await
    }

    /// The process's guess of the audit chain's head (see [`db::audit::HeadCache`]).
    #[must_use]
    pub(crate) fn audit_head(&self) -> &db::audit::HeadCache {
        &self.0.audit_head
    }

    /// The token keys.
    #[must_use]
    pub fn jwt(&self) -> &JwtKeys {
        &self.0.jwt
    }

    /// The key-encryption key that wraps every server share's data key.
    #[must_use]
    pub fn kek(&self) -> &dyn KeyEncryptionKey {
        self.0.kek.as_ref()
    }

    /// The device-to-device relay's waiting codes.
    #[must_use]
    pub fn relay_rooms(&self) -> &crate::relay::Rooms {
        &self.0.relay
    }

    /// The rate limiters.
    #[must_use]
    pub fn limits(&self) -> &crate::limits::RateLimits {
        &self.0.limits
    }

    /// The per-address limit on registering devices.
    #[must_use]
    pub fn registrations(&self) -> &crate::enrolment::RegistrationLimiter {
        &self.0.registrations
    }

    /// The configuration.
    #[must_use]
    pub fn config(&self) -> &Config {
        &self.0.config
    }
}

/// Connects to the configured database (SQLite in the data directory by default, or
/// PostgreSQL) and applies the migrations.
///
/// # Errors
/// A message naming what could not be opened.
pub async fn connect_database(config: &Config) -> Result<AnyPool, SetupError> {
    let (db, backend) = open_database(config).await?;
    migrator(backend).run(&db).await?;
    Ok(db)
}

/// The schema's migrations for `backend` (tests of a migration apply them up to a version).
#[must_use]
pub fn migrator(backend: Backend) -> sqlx::migrate::Migrator {
    match backend {
        Backend::Postgres => sqlx::migrate!("./migrations/postgres"),
        Backend::Sqlite => sqlx::migrate!("./migrations/sqlite"),
    }
}

/// Connects to the configured database as [`connect_database`] does, without applying the
/// migrations, and says which database it is.
///
/// # Errors
/// A message naming what could not be opened.
pub async fn open_database(config: &Config) -> Result<(AnyPool, Backend), SetupError> {
    let dir = &config.data_dir;
    sqlx::any::install_default_drivers();
    let db = match &config.database_url {
        Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
            let db = AnyPoolOptions::new()
                .max_connections(16)
                .connect(url)
                .await
                .map_err(SetupError::db("cannot connect to PostgreSQL"))?;
            (db, Backend::Postgres)
        }
        Some(other) => {
            return Err(SetupError::Invalid(format!(
                "--database-url must be a postgres:// URL, not {:?}",
                other.split(':').next().unwrap_or_default()
            )));
        }
        None => {
            let url = format!("sqlite://{}?mode=rwc", dir.join("tessera.db").display());
            // One connection: SQLite runs one writer at a time anyway, and each statement is a
            // hand-off to its connection's thread. With eight, consecutive statements went to
            // connections whose threads had slept longest and whose page caches other writers had
            // invalidated: server_e2e measured ~1 ms more server CPU per sign (7.1 against 6.1 ms
            // over its four phases). With one, its page cache is never invalidated by another
            // connection's commit (the 52 KB share a signature reads stays in it) and writers
            // wait in the pool's queue, not in SQLite's busy handler. With the unsealed-share
            // cache, server CPU per sign was lower than with two connections and no cache in
            // four of five back-to-back server_e2e pairs (docs/benchmarks.md). So no handler may
            // hold a connection (a `WriteTx`, an acquired one) while it takes another from the
            // pool: it would wait for itself until the pool's acquire timeout (`db` says so).
            // No ping before each acquire: the connection is an in-process handle, and the ping
            // is one more hand-off to its thread and back (sqlx still pings each connection
            // when it returns to the pool, which catches one left in a broken state).
            let db = AnyPoolOptions::new()
                .max_connections(1)
                .test_before_acquire(false)
                .after_connect(|conn, _| {
                    Box::pin(async move {
                        // WAL for concurrent readers, foreign keys on, wait rather than fail
                        // when another connection writes (write transactions start with
                        // `BEGIN IMMEDIATE`, see `db`), every commit durable; deleted rows (an
                        // old share epoch) are overwritten with zeros, not left in free pages.
                        sqlx::raw_sql("PRAGMA journal_mode = WAL; PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 10000; PRAGMA synchronous = FULL; PRAGMA secure_delete = ON;")
                            .execute(conn)
                            .await?;
                        Ok(())
                    })
                })
                .connect(&url)
                .await
                .map_err(SetupError::db(format!(
                    "cannot open the database in {}",
                    dir.display()
                )))?;
            (db, Backend::Sqlite)
        }
    };
    Ok(db)
}

// The parts a middleware or handler needs alone, so that their modules need not know the whole
// state.
impl axum::extract::FromRef<AppState> for Arc<crate::limits::RateLimits> {
    fn from_ref(state: &AppState) -> Self {
        state.0.limits.clone()
    }
}

impl axum::extract::FromRef<AppState> for Arc<crate::enrolment::RegistrationLimiter> {
    fn from_ref(state: &AppState) -> Self {
        state.0.registrations.clone()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const URI: &str =
        "pkcs11:token=tessera;object=kek-1?module-path=/usr/lib/softhsm/libsofthsm2.so";

    fn pin_of(source: &KekSource) -> String {
        match source {
            KekSource::Pkcs11 { pin, .. } => pin.to_string(),
            KekSource::File(p) => panic!("a file: {}", p.display()),
        }
    }

    #[test]
    fn the_pin_comes_from_the_uri_before_the_environment() {
        let dir = Path::new("/data");
        assert_eq!(
            pin_of(&KekSource::parse(URI, dir, Some("1111")).unwrap()),
            "1111"
        );
        let with_value = format!("{URI}&pin-value=2222");
        assert_eq!(
            pin_of(&KekSource::parse(&with_value, dir, Some("1111")).unwrap()),
            "2222"
        );
        let files = tempfile::tempdir().unwrap();
        let file = files.path().join("pin");
        std::fs::write(&file, "3333\n").unwrap();
        let with_file = format!("{URI}&pin-source=file:{}", file.display());
        assert_eq!(
            pin_of(&KekSource::parse(&with_file, dir, None).unwrap()),
            "3333"
        );
        let e = KekSource::parse(URI, dir, None).unwrap_err().to_string();
        assert!(e.contains("TESSERA_PKCS11_PIN"), "{e}");
        let e = KekSource::parse("pkcs11:token=tessera", dir, Some("1"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("no object"), "{e}");
        // Never the PIN in a Debug.
        let debug = format!("{:?}", KekSource::parse(&with_value, dir, None).unwrap());
        assert!(!debug.contains("2222"), "{debug}");
    }

    #[test]
    fn the_older_form_works_with_a_note_naming_the_uri() {
        let dir = Path::new("/data");
        let old = "pkcs11:module=/usr/lib/softhsm/libsofthsm2.so,token=tessera,key=kek-1";
        let source = KekSource::parse(old, dir, Some("1111")).unwrap();
        let KekSource::Pkcs11 { spec, .. } = &source else {
            panic!("{source:?}")
        };
        assert_eq!(spec.to_string(), URI);
        let note = KekSource::deprecation(old).unwrap();
        assert!(note.contains("deprecated") && note.ends_with(URI), "{note}");
        assert_eq!(KekSource::deprecation(URI), None);
        assert_eq!(KekSource::deprecation("file"), None);
        assert_eq!(KekSource::deprecation("pkcs11:nonsense"), None);
    }
}
