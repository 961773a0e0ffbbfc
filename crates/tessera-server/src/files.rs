//! Private files of the data directory (the token-signing key, the development TLS key).

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use crate::error::SetupError;

/// Creates `path` with mode 0600 and `bytes`, refusing to overwrite.
///
/// # Errors
/// A message naming the file.
pub fn write_private_file(path: &Path, bytes: &[u8]) -> Result<(), SetupError> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(SetupError::io("create", path))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(SetupError::io("write", path))
}
