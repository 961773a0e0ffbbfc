//! Messages between devices inside the encrypted channel (postcard), each checked on decoding.

use serde::{Deserialize, Serialize};

use super::PeerError;

/// Longest device or wallet name.
pub const MAX_NAME: usize = 64;
/// Longest message to sign.
pub const MAX_SIGN_MESSAGE: usize = 16 * 1024;
/// Most devices in one wallet.
pub const MAX_PARTIES: usize = 16;

/// A device as the others know it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Participant {
    /// Its name.
    pub name: String,
    /// Its Ed25519 identity key.
    pub identity: [u8; 32],
    /// Where it listens (`host:port`), for the others to connect to it.
    pub address: Option<String>,
}

/// What the connecting device asks.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Request {
    /// Only pair (remember each other).
    Pair,
    /// Create a wallet: `parties[i]` becomes party `i`; the sender is party 0.
    Keygen {
        /// The wallet's name on every device.
        wallet: String,
        /// Its id.
        wallet_id: [u8; 16],
        /// Signers needed.
        threshold: u8,
        /// Every device, in party order.
        parties: Vec<Participant>,
        /// The sender's contribution to the session nonce.
        nonce: [u8; 32],
    },
    /// Sign `message` (EIP-191) with a wallet; `signers` are party indices, the sender's first.
    Sign {
        /// The wallet's name.
        wallet: String,
        /// Its id.
        wallet_id: [u8; 16],
        /// The text to sign, shown to the user of every signing device.
        message: String,
        /// Non-hardened BIP-32 path.
        path: String,
        /// Party indices of the signers.
        signers: Vec<u8>,
        /// The sender's contribution to the session nonce.
        nonce: [u8; 32],
    },
    /// Join a running session as party `from` (the connection between two invited devices).
    Join {
        /// The session's invitation hash.
        session: [u8; 32],
        /// The joining party.
        from: u8,
    },
}

/// One message on the channel.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Message {
    /// Who I am: my name, my identity key, its signature over the handshake hash.
    Hello {
        /// Device name.
        name: String,
        /// Ed25519 identity key.
        identity: [u8; 32],
        /// Ed25519 signature (64 bytes) of [`super::pairing`]'s hello transcript.
        #[serde(with = "serde_bytes")]
        signature: Vec<u8>,
    },
    /// Whether this side needs the pairing code (it does not know the peer yet).
    Trust {
        /// True when the peer is new to this side.
        needs_code: bool,
    },
    /// The initiator's commitment to its code nonce.
    Commit([u8; 32]),
    /// The responder's code nonce.
    Nonce([u8; 32]),
    /// The initiator's opened code nonce.
    Reveal([u8; 32]),
    /// Whether the user confirmed the code.
    Confirm {
        /// Confirmed.
        accepted: bool,
    },
    /// A request (after authentication).
    Request(Request),
    /// The request is accepted; here is my nonce contribution.
    Accept {
        /// Contribution to the session nonce.
        nonce: [u8; 32],
    },
    /// Everyone accepted: the nonce contributions of all parties, in party order.
    Start {
        /// One per party.
        nonces: Vec<[u8; 32]>,
    },
    /// Refused or aborted, with the reason.
    Refuse {
        /// Why.
        reason: String,
    },
    /// A protocol envelope.
    Envelope(#[serde(with = "serde_bytes")] Vec<u8>),
    /// The protocol ended here and the result is stored.
    Done,
}

impl Message {
    /// Encodes.
    #[must_use]
    pub fn to_bytes(&self) -> Vec<u8> {
        postcard::to_allocvec(self).unwrap_or_default()
    }

    /// Decodes and validates lengths; trailing bytes are an error.
    ///
    /// # Errors
    /// [`PeerError::Protocol`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, PeerError> {
        let message = match postcard::take_from_bytes::<Message>(bytes) {
            Ok((m, [])) => m,
            Ok(_) => return Err(PeerError::Protocol("a message with trailing bytes".into())),
            Err(e) => return Err(PeerError::Protocol(format!("an undecodable message: {e}"))),
        };
        message.validate()?;
        Ok(message)
    }

    fn validate(&self) -> Result<(), PeerError> {
        let bad = |why: &str| Err(PeerError::Protocol(why.into()));
        match self {
            Message::Hello {
                name, signature, ..
            } => {
                check_name(name)?;
                if signature.len() != 64 {
                    return bad("a hello signature that is not 64 bytes");
                }
            }
            Message::Refuse { reason } if reason.len() > 1024 => return bad("a reason too long"),
            Message::Start { nonces } if nonces.len() > MAX_PARTIES => {
                return bad("too many nonces");
            }
            Message::Request(r) => match r {
                Request::Keygen {
                    wallet, parties, ..
                } => {
                    check_name(wallet)?;
                    if parties.len() > MAX_PARTIES {
                        return bad("too many parties");
                    }
                    for p in parties {
                        check_name(&p.name)?;
                        if p.address.as_ref().is_some_and(|a| a.len() > 256) {
                            return bad("an address too long");
                        }
                    }
                }
                Request::Sign {
                    wallet,
                    message,
                    path,
                    signers,
                    ..
                } => {
                    check_name(wallet)?;
                    if message.len() > MAX_SIGN_MESSAGE || path.len() > 256 {
                        return bad("a sign request too long");
                    }
                    if signers.len() > MAX_PARTIES {
                        return bad("too many signers");
                    }
                }
                Request::Pair | Request::Join { .. } => {}
            },
            _ => {}
        }
        Ok(())
    }
}

/// A device or wallet name: 1 to 64 printable characters.
///
/// # Errors
/// [`PeerError::Protocol`].
pub fn check_name(name: &str) -> Result<(), PeerError> {
    if name.is_empty() || name.chars().count() > MAX_NAME || name.chars().any(char::is_control) {
        return Err(PeerError::Protocol(format!(
            "a name must be 1 to {MAX_NAME} printable characters"
        )));
    }
    Ok(())
}
