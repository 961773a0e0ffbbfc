//! One module per command group: each parses its arguments (clap), prompts, calls the SDK
//! (`tessera_client::device`) or the server crate, and prints.

pub(crate) mod approvals;
pub(crate) mod audit;
pub(crate) mod backup;
pub(crate) mod completions;
pub(crate) mod demo;
pub(crate) mod device;
pub(crate) mod kek;
pub(crate) mod listen;
pub(crate) mod peer;
pub(crate) mod plan;
pub(crate) mod policy;
pub(crate) mod pubkey;
pub(crate) mod requests;
pub(crate) mod server;
pub(crate) mod service;
pub(crate) mod verify;
pub(crate) mod wallet;
