//! The states kept in the database, as Rust enums: the ones of the API
//! ([`tessera_api::states`]), one definition each. Each is stored as the same TEXT the server
//! always wrote and sent; a value the enum does not know is a decode error ([`UnknownState`]),
//! never a panic.

pub use tessera_api::states::{
    Approval, DeviceStatus, HeldKind, HeldStatus, PartyKind, Protocol, RequestKind, SessionStatus,
    UnknownState,
};
