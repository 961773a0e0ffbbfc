//! Opening the device home for a command: where it is (`TESSERA_HOME`, default `~/.tessera`),
//! the passphrases (from the environment, or a prompt on a terminal), and logging in.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use tessera_client::device::{Device, Online};
use tessera_store::{Keystore, Passphrase};

use crate::failure::Failure;

/// The device home's directory.
pub(crate) fn home() -> Result<PathBuf, Failure> {
    Ok(Keystore::default_dir()?)
}

/// The device in `home`.
pub(crate) fn device(home: &Path) -> Device {
    Device::open_dir(home)
}

/// The keystore passphrase: `TESSERA_PASSPHRASE`, or a prompt.
pub(crate) fn passphrase() -> Result<Passphrase, Failure> {
    let text = match std::env::var("TESSERA_PASSPHRASE") {
        Ok(p) => p,
        Err(_) if std::io::stdin().is_terminal() => dialoguer::Password::new()
            .with_prompt("Keystore passphrase")
            .interact()
            .map_err(|e| Failure::Usage(format!("cannot read the passphrase: {e}")))?,
        Err(_) => {
            return Err(Failure::Usage(
                "no passphrase: set TESSERA_PASSPHRASE or run in a terminal".into(),
            ));
        }
    };
    Passphrase::new(text).map_err(Failure::usage)
}

/// A backup holder key file's passphrase: `TESSERA_BACKUP_KEY_PASSPHRASE`, or a prompt (typed
/// twice with `confirm`).
pub(crate) fn key_passphrase(what: &str, confirm: bool) -> Result<Passphrase, Failure> {
    let text = match std::env::var("TESSERA_BACKUP_KEY_PASSPHRASE") {
        Ok(p) => p,
        Err(_) if std::io::stdin().is_terminal() => {
            let mut prompt =
                dialoguer::Password::new().with_prompt(format!("Passphrase for {what}"));
            if confirm {
                prompt = prompt.with_confirmation("Repeat it", "the passphrases differ");
            }
            prompt
                .interact()
                .map_err(|e| Failure::Usage(format!("cannot read the passphrase: {e}")))?
        }
        Err(_) => {
            return Err(Failure::Usage(
                "no backup key passphrase: set TESSERA_BACKUP_KEY_PASSPHRASE or run in a terminal"
                    .into(),
            ));
        }
    };
    Passphrase::new(text).map_err(Failure::usage)
}

/// The device in `home`, logged in to its server (the passphrase asked for).
pub(crate) async fn connect(home: &Path) -> Result<Online, Failure> {
    connect_with(&device(home), None).await
}

/// [`connect`] with the passphrase the command already read, if it did (asked once only).
pub(crate) async fn connect_with(
    device: &Device,
    passphrase: Option<Passphrase>,
) -> Result<Online, Failure> {
    // What can fail without the passphrase fails before it is asked for.
    device.config()?;
    device.keystore()?;
    let passphrase = match passphrase {
        Some(p) => p,
        None => self::passphrase()?,
    };
    Ok(device.connect(passphrase).await?)
}
