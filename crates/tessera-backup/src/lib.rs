//! Tessera backups: a party's key share encrypted, verifiably, to backup holders under an access
//! structure, and the planner that recommends where shares and backups live.
//!
//! - [`holder`]: backup holders' key pairs (HPKE, RFC 9180).
//! - [`structure`]: access structures (`and`, `or`, `threshold`, holders) as text and as trees.
//! - [`pve`]: publicly verifiable encryption of a discrete logarithm to one holder.
//! - [`backup`]: a share secret-shared down a structure, each leaf verifiably encrypted; the file.
//! - [`wallet`]: backups of Tessera key shares, and restoring them.
//! - [`planner`]: the set-up decision tree and loss-scenario enumeration.
#![forbid(unsafe_code)]
#![deny(missing_docs, clippy::unwrap_used)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod backup;
pub mod error;
pub mod holder;
mod hpke_seeded;
pub mod planner;
pub mod pve;
pub mod structure;
pub mod wallet;

pub use error::BackupError;
