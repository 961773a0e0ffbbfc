//! Crash-safe file writes: the one helper every file of the device home, the keystore and the
//! key-file provider is written through.
//!
//! A file is written to a temporary sibling (mode 0600), flushed to disk, then moved into place
//! with one atomic directory operation, and the directory is flushed too. A crash at any moment
//! leaves either the old file or the new one, never a mix; at worst a stray temporary file, which
//! readers never look at (its name starts with a dot) and [`remove_stale_temp_files`] deletes.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::time::{Duration, SystemTime};

use crate::error::{Error, Result};

/// Prefix of temporary files. It starts with a dot, which no wallet name can, so a temporary file
/// is never mistaken for an entry.
pub(crate) const TEMP_PREFIX: &str = ".tessera-tmp-";

/// A temporary file younger than this may belong to a write in progress in another process;
/// removing it would make that write fail, so only older ones are cleaned up.
const STALE_TEMP_AGE: Duration = Duration::from_secs(10 * 60);

/// How [`write_atomically`] treats an existing target.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Overwrite {
    /// Fail if the target exists, atomically (no window in which two writers both succeed).
    Never,
    /// Replace the target.
    Replace,
}

/// Whether [`write_atomically`] wrote the file.
#[must_use]
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Written {
    /// The target now holds the new bytes.
    Done,
    /// [`Overwrite::Never`] and the target already existed; nothing changed.
    TargetExists,
}

/// Creates `dir` (and missing parents) with mode 0700 if it does not exist.
pub(crate) fn create_private_dir(dir: &Path) -> Result<()> {
    match DirBuilder::new().recursive(true).mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) => return Err(Error::io("create directory", dir, e)),
    }
    let meta = fs::metadata(dir).map_err(|e| Error::io("inspect", dir, e))?;
    if !meta.is_dir() {
        return Err(Error::io(
            "use as a directory",
            dir,
            io::Error::new(io::ErrorKind::NotADirectory, "not a directory"),
        ));
    }
    Ok(())
}

/// Makes `dir` (an existing directory, e.g. a `TESSERA_HOME` created beforehand with mode 0755)
/// private: mode 0700, and each file directly in it, or in one of `subdirs`, readable and
/// writable by its owner only (0600; subdirectories 0700). Only what the keystore and the
/// device's own files are: a home pointed at a directory with other content is not combed
/// through.
pub(crate) fn make_private(dir: &Path, subdirs: &[&str]) -> Result<()> {
    restrict(dir, 0o700)?;
    for sub in subdirs {
        let sub = dir.join(sub);
        if sub.is_dir() {
            restrict(&sub, 0o700)?;
            restrict_files_in(&sub)?;
        }
    }
    restrict_files_in(dir)
}

fn restrict_files_in(dir: &Path) -> Result<()> {
    let entries = fs::read_dir(dir).map_err(|e| Error::io("list", dir, e))?;
    for entry in entries.flatten() {
        // Not following symbolic links: the link's target is not ours to change.
        if entry.file_type().is_ok_and(|t| t.is_file()) {
            restrict(&entry.path(), 0o600)?;
        }
    }
    Ok(())
}

/// Takes every permission `mode` does not grant away from `path` (never adds any).
fn restrict(path: &Path, mode: u32) -> Result<()> {
    let meta = fs::symlink_metadata(path).map_err(|e| Error::io("inspect", path, e))?;
    let current = meta.permissions().mode() & 0o7777;
    if current & !mode != 0 {
        fs::set_permissions(path, fs::Permissions::from_mode(current & mode))
            .map_err(|e| Error::io("make private (chmod)", path, e))?;
    }
    Ok(())
}

/// Writes `bytes` to `path` atomically, readable and writable by its owner only (0600),
/// replacing what was there: a temporary sibling is created with mode 0600, written and flushed
/// (fsync), renamed onto `path`, and the directory is flushed. A failure at any step leaves the
/// old content of `path` as it was. For the device's own files beside the keystore
/// (`device.json`, `holders.json`, `peers.json`, …).
///
/// # Errors
/// [`Error::Io`] naming the file.
pub fn write_private_file(path: &Path, bytes: &[u8]) -> Result<()> {
    match write_atomically(path, bytes, Overwrite::Replace)? {
        Written::Done | Written::TargetExists => Ok(()),
    }
}

/// [`write_private_file`] for a file that must not exist yet (a backup file, a key file): the
/// file appears complete or not at all, and an existing file is never replaced, atomically.
/// Returns `false`, changing nothing, when `path` exists already.
///
/// # Errors
/// [`Error::Io`] naming the file.
pub fn write_new_private_file(path: &Path, bytes: &[u8]) -> Result<bool> {
    match write_atomically(path, bytes, Overwrite::Never)? {
        Written::Done => Ok(true),
        Written::TargetExists => Ok(false),
    }
}

/// Writes `bytes` to `target` so that a crash leaves either the old content or the new one.
pub(crate) fn write_atomically(
    target: &Path,
    bytes: &[u8],
    overwrite: Overwrite,
) -> Result<Written> {
    let dir = parent_dir(target);
    let temp = dir.join(format!(
        "{TEMP_PREFIX}{}",
        hex::encode(*crate::random_bytes::<8>())
    ));

    let result = write_temp_then_move(&temp, target, bytes, overwrite);
    // On success the temp name is gone already (renamed) or only a second link (removed below);
    // on failure it must not linger with possibly secret-adjacent content.
    if result.is_err() || overwrite == Overwrite::Never {
        let _ = fs::remove_file(&temp);
    }
    let written = result?;
    if written == Written::Done {
        sync_dir(dir)?;
    }
    Ok(written)
}

fn write_temp_then_move(
    temp: &Path,
    target: &Path,
    bytes: &[u8],
    overwrite: Overwrite,
) -> Result<Written> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(temp)
        .map_err(|e| Error::io("create a temporary file to write", target, e))?;
    file.write_all(bytes)
        .map_err(|e| Error::io("write", temp, e))?;
    file.sync_all().map_err(|e| Error::io("flush", temp, e))?;
    drop(file);

    match overwrite {
        Overwrite::Replace => {
            fs::rename(temp, target).map_err(|e| Error::io("move into place", target, e))?;
        }
        // A hard link never replaces an existing name: that makes "create only if absent"
        // atomic, where checking first and renaming after would race with another writer.
        Overwrite::Never => match fs::hard_link(temp, target) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(Written::TargetExists),
            Err(e) => return Err(Error::io("move into place", target, e)),
        },
    }
    Ok(Written::Done)
}

/// Removes `path` and flushes its directory so the removal survives a crash.
pub(crate) fn remove_durably(path: &Path) -> io::Result<()> {
    fs::remove_file(path)?;
    File::open(parent_dir(path))?.sync_all()
}

/// Flushes a directory's entries (a rename is durable only once its directory is).
fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io("flush directory", dir, e))
}

fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Deletes temporary files left in `dir` by writes that crashed long enough ago.
///
/// Best effort: a leftover temporary file is never read, so failing to delete one only wastes
/// space, and is not worth failing the caller's operation for.
pub(crate) fn remove_stale_temp_files(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let now = SystemTime::now();
    for entry in entries.flatten() {
        let is_temp = entry
            .file_name()
            .to_str()
            .is_some_and(|n| n.starts_with(TEMP_PREFIX));
        if !is_temp {
            continue;
        }
        let stale = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|modified| now.duration_since(modified).ok())
            .is_some_and(|age| age >= STALE_TEMP_AGE);
        if stale {
            let _ = fs::remove_file(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    fn temp_files(dir: &Path) -> Vec<String> {
        fs::read_dir(dir)
            .unwrap()
            .filter_map(|e| e.unwrap().file_name().into_string().ok())
            .filter(|n| n.starts_with(TEMP_PREFIX))
            .collect()
    }

    #[test]
    fn private_file_is_0600_and_replaces_the_old_content() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("device.json");
        fs::write(&path, b"old").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        write_private_file(&path, b"new").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"new");
        assert_eq!(mode(&path), 0o600);
        assert!(temp_files(dir.path()).is_empty());
    }

    #[test]
    fn private_dir_is_0700() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("a/home");
        create_private_dir(&home).unwrap();
        assert_eq!(mode(&home), 0o700);
        // An existing home made with a looser mode is tightened, its files too.
        let loose = dir.path().join("loose");
        fs::create_dir(&loose).unwrap();
        fs::set_permissions(&loose, fs::Permissions::from_mode(0o755)).unwrap();
        fs::write(loose.join("holders.json"), b"{}").unwrap();
        fs::set_permissions(
            loose.join("holders.json"),
            fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        make_private(&loose, &[]).unwrap();
        assert_eq!(mode(&loose), 0o700);
        assert_eq!(mode(&loose.join("holders.json")), 0o600);
    }

    #[test]
    fn a_write_that_fails_at_the_rename_leaves_the_old_content_and_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        // The target is a directory holding the old content: the temporary file is created,
        // written and flushed, then the rename onto the target fails.
        let target = dir.path().join("peers.json");
        fs::create_dir(&target).unwrap();
        fs::write(target.join("old"), b"old content").unwrap();
        let err = write_private_file(&target, b"new content").unwrap_err();
        assert!(err.to_string().contains("move into place"), "{err}");
        assert_eq!(fs::read(target.join("old")).unwrap(), b"old content");
        assert!(temp_files(dir.path()).is_empty());
    }

    #[test]
    fn a_write_into_a_missing_directory_fails_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing/device.json");
        let err = write_private_file(&path, b"x").unwrap_err();
        assert!(err.to_string().contains("device.json"), "{err}");
        assert!(!path.exists());
    }

    #[test]
    fn a_new_private_file_never_replaces_an_existing_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wallet.backup");
        assert!(write_new_private_file(&path, b"first").unwrap());
        assert_eq!(mode(&path), 0o600);
        assert!(!write_new_private_file(&path, b"second").unwrap());
        assert_eq!(fs::read(&path).unwrap(), b"first");
        assert!(temp_files(dir.path()).is_empty());
    }
}
