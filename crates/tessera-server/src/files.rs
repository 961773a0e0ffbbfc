//! Private files of the data directory (the token-signing key, the development TLS key).

use std::path::Path;

use crate::error::SetupError;

/// Creates `path` with mode 0600 and `bytes`, refusing to overwrite: through the store's one
/// atomic writer (temporary sibling, fsync, rename, directory fsync), so a crash never leaves
/// a half-written key behind.
///
/// # Errors
/// A message naming the file; [`SetupError::Io`] with `AlreadyExists` when it exists.
pub fn write_private_file(path: &Path, bytes: &[u8]) -> Result<(), SetupError> {
    match tessera_store::write_new_private_file(path, bytes) {
        Ok(true) => Ok(()),
        Ok(false) => Err(SetupError::io("create", path)(
            std::io::ErrorKind::AlreadyExists.into(),
        )),
        Err(e) => Err(SetupError::Failed(e.to_string())),
    }
}
