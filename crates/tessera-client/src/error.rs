//! What the SDK's calls fail with.

use crate::WalletRecord;

/// Everything that can go wrong talking to the server.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with an error.
    #[error("server refused ({status}): {message}")]
    Server {
        /// HTTP status.
        status: u16,
        /// The server's error code.
        code: String,
        /// The server's message.
        message: String,
    },
    /// The server could not be reached or answered nonsense.
    #[error("cannot reach the server: {0}")]
    Network(String),
    /// The protocol failed on our side (a bad message from the server, an abort...).
    #[error("protocol failed: {0}")]
    Protocol(#[from] tessera_core::Error),
    /// The server closed the protocol socket before the end.
    #[error("the server closed the session (code {code}): {reason}")]
    Closed {
        /// WebSocket close code (4408: expired, 4400: invalid message...).
        code: u16,
        /// The server's reason.
        reason: String,
    },
    /// The device and the server hold different epochs of a wallet's shares and no repair
    /// applies.
    #[error(
        "this device holds epoch {device} (pending {pending:?}) of the wallet, the server {server}"
    )]
    EpochMismatch {
        /// Our current epoch.
        device: u64,
        /// Our pending epoch, if any.
        pending: Option<u64>,
        /// The server's active epoch.
        server: u64,
    },
    /// A refresh was stopped by the caller's step hook (a failed write, or a test's crash).
    #[error("refresh stopped: {0}")]
    Stopped(#[source] HookError),
    /// Not logged in.
    #[error("not logged in: call login first")]
    NotLoggedIn,
    /// Another device refused the request, or its approval lapsed.
    #[error("refused: {0}")]
    Refused(String),
    /// The engine proved that another party of the session misbehaved (a failed consistency
    /// check it attributes, DKLs23 `BanCounterparty`): the party must be banned from the wallet
    /// ([`WalletRecord::ban`]; [`crate::ServerClient::sign_wallet`] and
    /// [`crate::ServerClient::refresh`] do).
    #[error("party {party} misbehaved in round {round} of session {session_id}: {reason}")]
    PartyBlamed {
        /// The blamed party.
        party: u8,
        /// The session, hex.
        session_id: String,
        /// The round whose message failed the check.
        round: u8,
        /// The engine's description.
        reason: String,
    },
    /// A party of a session of several parties sent what it may not, or ended the session
    /// ([`tessera_api::session_frame::Fault::party`] names it, where there is one).
    #[error("session: {0}")]
    Session(#[from] tessera_api::session_frame::Fault),
    /// The end-to-end channel with another device of a session failed: a frame that did not
    /// decrypt (dropped, replayed, reordered or altered on the way, or not from that device), a
    /// bad handshake, a signature that does not verify with the identity key this device trusts
    /// for it, none in time. It does not say that device misbehaved: the server carries the
    /// frames.
    #[error("the end-to-end channel with party {party} failed: {reason}")]
    Channel {
        /// The other device's party index.
        party: u8,
        /// What failed.
        reason: String,
    },
    /// This device banned a party of the wallet; no session runs until the ban is lifted.
    #[error("refused: {0}")]
    Banned(String),
}

impl ClientError {
    /// Records the ban in `record` if this error is the engine's blame; returns whether it did.
    pub(crate) fn ban_into(&self, record: &mut WalletRecord) -> bool {
        match self {
            ClientError::PartyBlamed {
                party,
                session_id,
                round,
                reason,
            } => {
                record.ban(*party, session_id, *round, reason);
                true
            }
            _ => false,
        }
    }
}

/// Result of the client.
pub type Result<T> = std::result::Result<T, ClientError>;

/// What a caller's hook (storing a wallet record, a refresh step) fails with: its own error.
pub type HookError = Box<dyn std::error::Error + Send + Sync>;

pub(crate) fn net(e: impl std::fmt::Display) -> ClientError {
    ClientError::Network(e.to_string())
}
