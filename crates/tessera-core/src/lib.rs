//! Tessera core: threshold ECDSA (secp256k1) for key custody.
//!
//! A wallet key exists only as [`KeyShare`]s held by separate parties; any `t` of the `n` parties
//! (or, for a wallet under an access structure, any authorised quorum) jointly produce ordinary
//! ECDSA signatures without ever assembling the private key.
//!
//! - [`types`]: parties, wallets, sessions, thresholds.
//! - [`envelope`]: the message format every transport carries.
//! - [`session`] and [`protocols`]: sans-IO key generation, signing, refresh and resharing.
//! - [`runner`]: all parties in one process (tests, benches, the demo).
//! - [`ecdsa`]: public keys, signatures, verification, Ethereum addresses.
//! - [`derivation`]: BIP-32 non-hardened paths.
//! - [`structure`]: access structures (`and`, `or`, `threshold` over labels) for wallets and backups.
//!
//! The engine is DKLs23 through the `dkls23` crate; its types never appear in this API.
#![forbid(unsafe_code)]
#![deny(missing_docs, clippy::unwrap_used)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod derivation;
pub mod driver;
pub mod ecdsa;
mod engine;
pub mod envelope;
pub mod error;
pub mod protocols;
pub mod runner;
pub mod session;
pub mod share;
pub mod structure;
#[cfg(feature = "dangerous-test-utils")]
pub mod testing;
pub mod types;

pub use derivation::DerivationPath;
pub use ecdsa::{PublicKey, Signature};
pub use envelope::Envelope;
pub use error::{Error, Result};
pub use protocols::{
    KeygenSession, RefreshSession, ReshareRequest, ReshareSession, SignRequest, SignSession,
    StructureKeygenSession,
};
pub use session::Session;
pub use share::{KeyShare, WalletPublic};
pub use types::{PartyIndex, Protocol, SessionId, Threshold, WalletId};
