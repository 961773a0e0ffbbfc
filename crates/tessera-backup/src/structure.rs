//! Access structures: which sets of backup holders can, together, open a backup.
//!
//! The grammar and the tree are shared with wallets and live in
//! [`tessera_core::structure`]; this module re-exports them so backups and wallets use one
//! parser and one type (the backup file stores the structure's canonical text, unchanged).

pub use tessera_core::structure::*;
