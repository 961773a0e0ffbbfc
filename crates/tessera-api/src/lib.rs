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
//! - [`intent`]: what a device asks the server to sign (an Ethereum transaction of any type, a
//!   personal message, EIP-712 typed data, an EIP-7702 authorisation, a raw digest) and the
//!   digest the server computes from it itself.
//! - [`calls`]: what a transaction's call data does with tokens (ERC-20/721/1155), decoded with
//!   alloy's ABI support, for the policy's token rules and what people approve.
//! - [`typed_data`]: EIP-712 typed data, hashed by the server, with permits (EIP-2612, DAI,
//!   Permit2) as token actions.
//! - [`btc`]: Bitcoin PSBTs (BIP-174): the inputs a wallet owns, their sighashes, finalising.
//! - [`keys`]: a wallet's key as other tools show it: BIP-32 extended public keys, addresses.
//!
//! The protocol's own types (envelopes, sessions, shares) stay in `tessera-core`.
#![forbid(unsafe_code)]
#![deny(missing_docs, clippy::unwrap_used)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod btc;
pub mod calls;
pub mod ids;
pub mod intent;
pub mod keys;
pub mod proposals;
pub mod requests;
mod rest;
pub mod service;
pub mod session_frame;
pub mod states;
pub mod typed_data;

pub use ids::{
    ActionId, BanId, DeviceId, ProposalId, RequestId, ServerSessionId, ServiceAccountId, UserId,
    WalletId,
};
pub use rest::*;
pub use states::{
    Approval, DeviceStatus, EventKind, HeldKind, HeldStatus, PartyKind, Protocol, RequestKind,
    RequestState, SessionStatus, UnknownState,
};
