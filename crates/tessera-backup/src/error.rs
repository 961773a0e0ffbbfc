//! (being written)

/// Why a backup operation failed.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {}
