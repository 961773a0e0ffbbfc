//! Server state: the database, the token keys, the key-encryption key, configuration.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use sqlx::AnyPool;
use sqlx::any::AnyPoolOptions;
use tessera_store::kek::{FileKek, KeyEncryptionKey};

use crate::auth::JwtKeys;

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
}

impl Config {
    /// Defaults for `data_dir`: SQLite in it, 5-minute sessions.
    #[must_use]
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Config {
            data_dir: data_dir.into(),
            database_url: None,
            session_idle_timeout: Duration::from_secs(300),
        }
    }
}

struct Inner {
    db: AnyPool,
    jwt: JwtKeys,
    kek: Box<dyn KeyEncryptionKey>,
    config: Config,
    relay: crate::relay::Rooms,
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
        sqlx::any::install_default_drivers();
        let db = match &config.database_url {
            Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                let db = AnyPoolOptions::new()
                    .max_connections(16)
                    .connect(url)
                    .await
                    .map_err(|e| format!("cannot connect to PostgreSQL: {e}"))?;
                sqlx::migrate!("./migrations/postgres")
                    .run(&db)
                    .await
                    .map_err(|e| format!("database migration failed: {e}"))?;
                db
            }
            Some(other) => {
                return Err(format!(
                    "--database-url must be a postgres:// URL, not {:?}",
                    other.split(':').next().unwrap_or_default()
                ));
            }
            None => {
                let url = format!("sqlite://{}?mode=rwc", dir.join("tessera.db").display());
                let db = AnyPoolOptions::new()
                    .max_connections(8)
                    .after_connect(|conn, _| {
                        Box::pin(async move {
                            // WAL for concurrent readers, foreign keys on, wait rather than fail
                            // when another connection writes.
                            sqlx::raw_sql("PRAGMA journal_mode = WAL; PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 10000;")
                                .execute(conn)
                                .await?;
                            Ok(())
                        })
                    })
                    .connect(&url)
                    .await
                    .map_err(|e| format!("cannot open the database in {}: {e}", dir.display()))?;
                sqlx::migrate!("./migrations/sqlite")
                    .run(&db)
                    .await
                    .map_err(|e| format!("database migration failed: {e}"))?;
                db
            }
        };
        // A session is run by the process that opened its socket; after a restart none runs, so
        // its row must not stay live (a live refresh blocks the wallet's next one).
        // With several replicas on one database this needs per-replica ownership of sessions.
        sqlx::query(
            "UPDATE sessions SET status = 'failed', detail = 'the server restarted during the session' \
             WHERE status IN ('created', 'running')",
        )
        .execute(&db)
        .await
        .map_err(|e| format!("cannot end the sessions of the previous run: {e}"))?;
        let jwt = JwtKeys::open_or_create(&dir.join("token-signing.pk8"))?;
        let kek = FileKek::open_or_create(dir.join("kek.key")).map_err(|e| e.to_string())?;
        Ok(AppState(Arc::new(Inner {
            db,
            jwt,
            kek: Box::new(kek),
            config,
            relay: crate::relay::Rooms::default(),
        })))
    }

    /// The database.
    #[must_use]
    pub fn db(&self) -> &AnyPool {
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

    /// The device-to-device relay's waiting codes.
    #[must_use]
    pub fn relay_rooms(&self) -> &crate::relay::Rooms {
        &self.0.relay
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
