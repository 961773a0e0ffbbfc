//! `tessera kek`: the server's key-encryption key (HSM key creation, rotation).

use clap::Subcommand;

use crate::failure::{CliResult, Failure};

#[derive(Subcommand)]
pub(crate) enum KekCommand {
    /// Create the AES-256 key-encryption key in a PKCS#11 token (non-extractable; PIN from
    /// TESSERA_PKCS11_PIN).
    Generate {
        /// The key to create, an RFC 7512 URI: pkcs11:token=LABEL;object=LABEL?module-path=PATH
        #[arg(long)]
        kek: String,
    },
    /// Re-wrap every stored share's data key from one key-encryption key to another (the
    /// shares themselves are not decrypted). Stop the server first; start it with --kek TO.
    Rotate {
        /// The server's data directory.
        #[arg(long, default_value = "./tessera-data")]
        data_dir: std::path::PathBuf,
        /// The server's PostgreSQL database, if it uses one.
        #[arg(long, env = "TESSERA_DATABASE_URL")]
        database_url: Option<String>,
        /// The current key: file, file:PATH or pkcs11:token=…;object=…?module-path=…
        #[arg(long)]
        from: String,
        /// The new key: file, file:PATH or pkcs11:token=…;object=…?module-path=…
        #[arg(long)]
        to: String,
    },
}

pub(crate) async fn run(command: KekCommand) -> CliResult {
    match command {
        KekCommand::Generate { kek } => {
            let uri = tessera_store::pkcs11::Pkcs11Uri::parse(&kek)
                .map_err(|e| Failure::Usage(e.to_string()))?;
            if let Some(note) = tessera_server::state::KekSource::deprecation(&kek) {
                tracing::warn!("{note}");
            }
            let pin =
                match &uri.pin {
                    Some(source) => source.read().map_err(|e| Failure::Usage(e.to_string()))?,
                    None => zeroize::Zeroizing::new(std::env::var("TESSERA_PKCS11_PIN").map_err(
                        |_| Failure::Usage("set TESSERA_PKCS11_PIN to the token's user PIN".into()),
                    )?),
                };
            let spec = uri.spec;
            let key = tessera_store::Pkcs11Kek::generate(&spec, &pin)
                .map_err(|e| Failure::Failed(e.to_string()))?;
            use tessera_store::KeyEncryptionKey;
            println!(
                "created AES-256 key-encryption key {} (non-extractable); start the server with --kek {spec}",
                key.id()
            );
            Ok(())
        }
        KekCommand::Rotate {
            data_dir,
            database_url,
            from,
            to,
        } => {
            let old = crate::cmd::server::kek_source(&from, &data_dir)?
                .open()
                .map_err(|e| Failure::Failed(e.to_string()))?;
            let new = crate::cmd::server::kek_source(&to, &data_dir)?
                .open()
                .map_err(|e| Failure::Failed(e.to_string()))?;
            let mut config = tessera_server::Config::new(&data_dir);
            config.database_url = database_url;
            let db = tessera_server::state::connect_database(&config)
                .await
                .map_err(|e| Failure::Failed(e.to_string()))?;
            let (moved, already) =
                tessera_server::vault::rewrap_all(&db, old.as_ref(), new.as_ref())
                    .await
                    .map_err(|e| Failure::Failed(e.to_string()))?;
            println!(
                "re-wrapped {moved} share data keys from {} to {} ({already} were already under it); start the server with --kek {to}",
                old.id(),
                new.id()
            );
            Ok(())
        }
    }
}
