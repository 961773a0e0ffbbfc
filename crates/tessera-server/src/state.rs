//! Server state: the database, the token keys, the key-encryption key, configuration.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use sqlx::SqlitePool;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
use tessera_store::kek::{FileKek, KeyEncryptionKey};

use crate::auth::JwtKeys;

/// How a server is set up.
#[derive(Clone, Debug)]
pub struct Config {
    /// Where the database, the token key and the key-encryption key live (created 0700).
    pub data_dir: PathBuf,
    /// A session expires after this long without a message.
    pub session_idle_timeout: Duration,
}

impl Config {
    /// Defaults for `data_dir`: 5-minute sessions.
    #[must_use]
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Config {
            data_dir: data_dir.into(),
            session_idle_timeout: Duration::from_secs(300),
        }
    }
}

struct Inner {
    db: SqlitePool,
    jwt: JwtKeys,
    kek: Box<dyn KeyEncryptionKey>,
    config: Config,
}

/// Shared by every handler.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

impl AppState {
    /// Opens (creating on first start) the data directory, database and keys.
    ///
    /// # Errors
    /// A message naming what could not be opened.
    pub async fn open(config: Config) -> Result<Self, String> {
        let dir = &config.data_dir;
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| format!("cannot restrict {}: {e}", dir.display()))?;
        let options = SqliteConnectOptions::new()
            .filename(dir.join("tessera.db"))
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let db = SqlitePoolOptions::new()
            .max_connections(8)
            .connect_with(options)
            .await
            .map_err(|e| format!("cannot open the database in {}: {e}", dir.display()))?;
        sqlx::migrate!("./migrations/sqlite")
            .run(&db)
            .await
            .map_err(|e| format!("database migration failed: {e}"))?;
        let jwt = JwtKeys::open_or_create(&dir.join("token-signing.pk8"))?;
        let kek = FileKek::open_or_create(dir.join("kek.key")).map_err(|e| e.to_string())?;
        Ok(AppState(Arc::new(Inner {
            db,
            jwt,
            kek: Box::new(kek),
            config,
        })))
    }

    /// The database.
    #[must_use]
    pub fn db(&self) -> &SqlitePool {
        &self.0.db
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

    /// The configuration.
    #[must_use]
    pub fn config(&self) -> &Config {
        &self.0.config
    }
}

/// Unix seconds.
#[must_use]
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// RFC 3339 of Unix seconds.
#[must_use]
pub fn rfc3339(secs: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

/// Creates `path` with mode 0600 and `bytes`, refusing to overwrite.
///
/// # Errors
/// A message naming the file.
pub fn write_private_file(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}
