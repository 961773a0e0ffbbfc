//! Tessera's wire types, shared by the commitment server and the device SDK, which never depend
//! on each other.
//!
//! - The crate root: requests and answers of the server's REST API and the text frames of its
//!   protocol socket (JSON; binary fields are lower-case hex), the domain-separated messages a
//!   device's identity key signs, and the one error body (`ApiError`).
//! - [`ids`]: the ids of wallets, devices, users, server sessions, held actions and bans, one
//!   type each, written as the plain strings they were.
//! - [`states`]: the states of sessions, signing approvals, devices and held actions, and the
//!   kinds of signing request, one enum each, written as the strings they were.
//! - [`session_frame`]: the frames of a protocol session between its parties, through the
//!   server's mailboxes and a device's socket, and the sans-IO state a party keeps of them.
//! - [`intent`]: what a device asks the server to sign (an Ethereum transaction, a personal
//!   message, a raw digest) and the digest the server computes from it itself.
//!
//! The protocol's own types (envelopes, sessions, shares) stay in `tessera-core`.
#![forbid(unsafe_code)]
#![deny(missing_docs, clippy::unwrap_used)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod ids;
pub mod intent;
mod rest;
pub mod session_frame;
pub mod states;

pub use ids::{ActionId, BanId, DeviceId, ServerSessionId, UserId, WalletId};
pub use rest::*;
pub use states::{
    Approval, DeviceStatus, HeldKind, HeldStatus, PartyKind, Protocol, RequestKind, SessionStatus,
    UnknownState,
};
