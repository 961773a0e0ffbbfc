//! Device-to-device mode: two or three devices create and use a shared key with no server.
//!
//! - [`discovery`]: mDNS / DNS-SD advertisement and browsing (`_tessera._tcp`).
//! - [`channel`]: the Noise XX encrypted channel over TCP or the server's relay.
//! - [`pairing`]: identity keys bound to the channel; the 6-digit commit-then-reveal code.
//! - [`known`]: paired devices and the wallets shared with them.
//! - [`session`]: keygen and signing over channels (invitation, approval, protocol run).
//! - [`refresh`]: refreshing a wallet's shares with the two-phase finish, and settling the
//!   records after an interrupted refresh.
//! - [`device`]: this device unlocked for device-to-device work (its wallets' records).
//! - [`user`]: what the workflows ask and tell the person at the device ([`user::PeerUser`]).
//! - [`lead`]: the workflows of the device that starts (pair, keygen, sign, refresh).
//! - [`responder`]: the listener that answers other devices' requests.
//! - [`relay`]: reaching a device that is not on this network through the commitment server,
//!   which forwards opaque frames only.

pub mod channel;
pub mod device;
pub mod discovery;
pub mod known;
pub mod lead;
mod mesh;
pub mod pairing;
pub mod refresh;
pub mod relay;
pub mod responder;
pub mod session;
pub mod user;
pub mod wire;

use std::time::Duration;

/// Everything that can go wrong between devices. Messages name the peer where one is known and
/// never carry secrets.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// The connection failed.
    #[error("connection error: {0}")]
    Io(String),
    /// The peer closed the connection.
    #[error("the peer closed the connection")]
    Closed,
    /// Nothing arrived in time.
    #[error("no message from the peer for {}s", .0.as_secs())]
    Timeout(Duration),
    /// The Noise handshake failed.
    #[error("the secure channel could not be set up: {0}")]
    Handshake(String),
    /// A frame on the channel is invalid (fails authentication, bad length...).
    #[error("the channel is broken: {0}")]
    Channel(String),
    /// A message that does not fit the protocol at this point.
    #[error("protocol violation: {0}")]
    Protocol(String),
    /// The peer (or our user) refused.
    #[error("refused: {0}")]
    Refused(String),
    /// A device of a paired name presents another identity key.
    #[error(
        "IDENTITY KEY OF {name:?} HAS CHANGED: paired with {paired}, now presents {presented}. \
         This may be an impersonation; nothing was done. If the device was really reinstalled, \
         run `tessera peer forget {name:?}` and pair again."
    )]
    IdentityChanged {
        /// The peer's name.
        name: String,
        /// The key it was paired with, hex.
        paired: String,
        /// The key it presents now, hex.
        presented: String,
    },
    /// A named peer failed during a protocol run.
    #[error("{name} (party {party}): {reason}")]
    Party {
        /// Its party index.
        party: u8,
        /// Its name.
        name: String,
        /// What happened.
        reason: String,
    },
    /// The engine proved that a peer misbehaved (DKLs23 `BanCounterparty`): ban it from the
    /// wallet (`WalletRecord::ban`).
    #[error("{name} (party {party}) misbehaved in round {round} of session {session_id}: {reason}")]
    Blamed {
        /// Its party index.
        party: u8,
        /// Its name.
        name: String,
        /// The session, hex.
        session_id: String,
        /// The round whose message failed the check.
        round: u8,
        /// The engine's description.
        reason: String,
    },
    /// The protocol itself failed (names the party where it can).
    #[error("protocol failed: {0}")]
    Core(#[from] tessera_core::Error),
    /// Discovery failed.
    #[error("discovery failed: {0}")]
    Discovery(String),
    /// Too many pairings failed lately: new peers are refused for a while.
    #[error(
        "refused to pair with {peer:?}: too many pairing attempts failed lately, so new \
         pairings are paused for {seconds} s (paired devices still work)"
    )]
    PairingPaused {
        /// The peer that asked.
        peer: String,
        /// Seconds until pairing resumes.
        seconds: u64,
    },
    /// A device or wallet was not found.
    #[error("{0}")]
    NotFound(String),
    /// Local files (paired devices, wallets).
    #[error("{0}")]
    Store(String),
    /// The keystore (a wrong passphrase, a wallet that is not there, a failed write...).
    #[error(transparent)]
    Keystore(#[from] tessera_store::Error),
    /// A wallet's record cannot be used (damaged, a ban in force...).
    #[error("wallet {name}: {source}")]
    Wallet {
        /// The wallet's name.
        name: String,
        /// Why.
        #[source]
        source: Box<crate::ClientError>,
    },
    /// A device reached for a wallet holds no share of it.
    #[error("{device:?} holds no share of wallet {wallet:?}")]
    NotASigner {
        /// The device's name.
        device: String,
        /// The wallet's name.
        wallet: String,
    },
    /// The device at an address is not the one named.
    #[error("the device at {address} says it is {presented:?}, not {expected:?}")]
    WrongDevice {
        /// Where it was reached.
        address: String,
        /// The name it presents.
        presented: String,
        /// The name asked for.
        expected: String,
    },
    /// A device found by name advertised no address.
    #[error("{0:?} advertised no address")]
    NoAddress(String),
    /// Another device uses an epoch of the wallet's shares that this device does not hold.
    #[error(
        "this device holds epoch {current} (pending {pending:?}) of the wallet, another device \
         epoch {other}"
    )]
    EpochMismatch {
        /// Our current epoch.
        current: u64,
        /// Our pending epoch, if any.
        pending: Option<u64>,
        /// The other device's epoch.
        other: u64,
    },
}

impl PeerError {
    /// A wallet record's error, naming the wallet.
    pub(crate) fn wallet(name: &str, e: crate::ClientError) -> Self {
        PeerError::Wallet {
            name: name.to_string(),
            source: Box::new(e),
        }
    }
}
