//! The person at this device: what the device-to-device workflows ask them (a pairing code, a
//! request from another device) and tell them (progress, outcomes). A front end implements
//! [`PeerUser`]: the CLI prompts on the terminal; an app would show dialogs.

use std::fmt;

use tessera_core::Signature;

use super::PeerError;
use super::device::WalletSummary;
use super::pairing::CodePrompt;
use super::refresh::RefreshInvitation;
use super::session::{KeygenInvitation, SignInvitation};

/// What a workflow asks and tells the user. Called from the workflow's task: an answer may
/// block (a terminal prompt) but should not take long once the user answered.
pub trait PeerUser: Send + Sync {
    /// Whether the user confirms the pairing code (the same on the other device's screen).
    fn confirm_code(&self, prompt: &CodePrompt) -> bool;
    /// Whether the user approves a request of another device.
    fn approve(&self, request: &Approval<'_>) -> bool;
    /// Progress and outcomes.
    fn notify(&self, event: PeerEvent<'_>);
}

/// A request of another device that needs this device's user's approval. Its `Display` is the
/// sentence to show.
pub enum Approval<'a> {
    /// Create a wallet.
    Keygen {
        /// The requesting device's name.
        from: &'a str,
        /// The checked invitation.
        invitation: &'a KeygenInvitation,
    },
    /// Sign a message.
    Sign {
        /// The requesting device's name.
        from: &'a str,
        /// The checked invitation.
        invitation: &'a SignInvitation,
    },
    /// Refresh a wallet's shares.
    Refresh {
        /// The requesting device's name.
        from: &'a str,
        /// The checked invitation.
        invitation: &'a RefreshInvitation,
    },
}

impl fmt::Display for Approval<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Approval::Keygen { from, invitation } => {
                let names: Vec<String> = invitation
                    .parties
                    .iter()
                    .map(|p| format!("{} (key {})", p.name, hex::encode(&p.identity[..8])))
                    .collect();
                write!(
                    f,
                    "{from:?} asks to create the {}-of-{} wallet {:?} with {}",
                    invitation.threshold.t,
                    invitation.threshold.n,
                    invitation.wallet,
                    names.join(", ")
                )
            }
            Approval::Sign { from, invitation } => write!(
                f,
                "{from:?} asks to sign with wallet {:?} the message {:?} (EIP-191 digest {}, path {})",
                invitation.wallet,
                invitation.message,
                hex::encode(invitation.digest),
                invitation.path
            ),
            Approval::Refresh { from, invitation } => write!(
                f,
                "{from:?} asks to refresh the shares of wallet {:?} (epoch {} to {}; the public \
                 key stays the same)",
                invitation.wallet,
                invitation.epoch,
                invitation.epoch + 1
            ),
        }
    }
}

/// A step of a device-to-device refresh on this device (crash tests stop at these).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefreshStep {
    /// The new share is stored as pending (the old one is still in use).
    PendingStored,
    /// This participant committed the pending share (the leader may switch now).
    Committed,
    /// This device switched to the new share and deleted the old one.
    Switched,
}

impl RefreshStep {
    /// A short name (`pending-stored`, `committed`, `switched`).
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            RefreshStep::PendingStored => "pending-stored",
            RefreshStep::Committed => "committed",
            RefreshStep::Switched => "switched",
        }
    }
}

/// Progress and outcomes, for the user.
pub enum PeerEvent<'a> {
    /// A device that connected proved its identity (paired before, or now): from here on, a
    /// broken channel or a bad message is that device's link.
    Authenticated {
        /// Its name.
        name: &'a str,
    },
    /// A new device was paired (its code confirmed on both sides).
    Paired {
        /// Its name.
        name: &'a str,
    },
    /// The leader waits on a relay: the other device joins with this code.
    RelayCode {
        /// The relay server.
        url: &'a str,
        /// The code.
        code: &'a str,
        /// The server certificate's pin, if given.
        fingerprint: Option<&'a str>,
    },
    /// Too many pairings failed: new ones are paused (paired devices still work).
    PairingPaused {
        /// Minutes until pairing resumes.
        minutes: u64,
    },
    /// A protocol round completed (`protocol`: keygen, sign, refresh).
    Round {
        /// The protocol.
        protocol: &'static str,
        /// The round completed.
        round: u8,
        /// Rounds in all.
        total: u8,
    },
    /// A refresh reached a step on this device.
    Refresh(RefreshStep),
    /// A stored wallet's record was brought in line with the other devices' after an
    /// interrupted refresh.
    Settled {
        /// The wallet.
        wallet: &'a str,
        /// The epoch it uses now.
        epoch: u64,
    },
    /// This device answered a keygen and stored the new wallet.
    WalletCreated(&'a WalletSummary),
    /// This device answered a signature.
    Signed {
        /// The message signed.
        message: &'a str,
        /// The signature (verified).
        signature: &'a Signature,
    },
    /// This device answered a refresh: its share of the wallet is now of `epoch`.
    Refreshed {
        /// The wallet.
        wallet: &'a str,
        /// The new epoch.
        epoch: u64,
    },
    /// The engine blamed a party but its ban could not be stored.
    BanNotStored {
        /// The party.
        party: u8,
        /// The wallet.
        wallet: &'a str,
        /// Why.
        error: &'a PeerError,
    },
    /// A connection the listener served failed.
    SessionFailed {
        /// Where it came from.
        from: std::net::SocketAddr,
        /// What failed.
        error: &'a PeerError,
    },
}
