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
    /// Refresh a wallet's shares (every device of the wallet takes part; same public key, next
    /// epoch). Added after the variants above, so their encoding is unchanged.
    Refresh {
        /// The wallet's name.
        wallet: String,
        /// Its id.
        wallet_id: [u8; 16],
        /// The epoch being refreshed (every device's current one).
        epoch: u64,
        /// The sender's party index.
        leader: u8,
        /// Every device of the wallet, in party order, with the address the sender reached it
        /// at (for the invited devices to connect to each other).
        parties: Vec<Participant>,
        /// The sender's contribution to the session nonce.
        nonce: [u8; 32],
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
    // The variants below came with device-to-device refresh; appended, so that the encoding of
    // every variant above is unchanged.
    /// Two-phase finish: the leader stored the new share (`epoch`) as pending.
    RefreshPending {
        /// The new epoch.
        epoch: u64,
    },
    /// Two-phase finish: this participant stored the new share (`epoch`) as pending too.
    RefreshCommit {
        /// The new epoch.
        epoch: u64,
    },
    /// Two-phase finish: the leader switched to the new share; participants switch.
    RefreshSwitched,
    /// The epochs of a wallet's shares this device holds: exchanged before a session when
    /// either side holds a pending share (a refresh was interrupted), so that both settle on
    /// one epoch.
    Held {
        /// The wallet's name.
        wallet: String,
        /// The epoch of the share in use.
        current: u64,
        /// The epoch of a pending share, if any.
        pending: Option<u64>,
    },
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
        // postcard reads an integer with redundant continuation bytes (0x91 0x00 for 17) as the
        // value: only the one encoding `to_bytes` writes is a message (found by the
        // `peer_channel` fuzz target).
        if message.to_bytes() != bytes {
            return Err(PeerError::Protocol(
                "a message not in canonical form (an over-long integer)".into(),
            ));
        }
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
                Request::Refresh {
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
                Request::Pair | Request::Join { .. } => {}
            },
            Message::Held { wallet, .. } => check_name(wallet)?,
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// One message of every kind that existed before refresh, with its encoding as it was
    /// then: new kinds are appended, so these bytes never change.
    fn old_kinds() -> Vec<(Message, &'static str)> {
        let party = Participant {
            name: "a".into(),
            identity: [1; 32],
            address: Some("h:1".into()),
        };
        vec![
            (
                Message::Hello {
                    name: "a".into(),
                    identity: [2; 32],
                    signature: vec![3; 64],
                },
                "0001610202020202020202020202020202020202020202020202020202020202020202400303\
                 0303030303030303030303030303030303030303030303030303030303030303030303030303\
                 030303030303030303030303030303030303030303030303",
            ),
            (Message::Trust { needs_code: true }, "0101"),
            (
                Message::Commit([4; 32]),
                "020404040404040404040404040404040404040404040404040404040404040404",
            ),
            (
                Message::Nonce([5; 32]),
                "030505050505050505050505050505050505050505050505050505050505050505",
            ),
            (
                Message::Reveal([6; 32]),
                "040606060606060606060606060606060606060606060606060606060606060606",
            ),
            (Message::Confirm { accepted: false }, "0500"),
            (Message::Request(Request::Pair), "0600"),
            (
                Message::Request(Request::Keygen {
                    wallet: "w".into(),
                    wallet_id: [7; 16],
                    threshold: 2,
                    parties: vec![party],
                    nonce: [8; 32],
                }),
                "0601017707070707070707070707070707070707020101610101010101010101010101010101\
                 0101010101010101010101010101010101010103683a31080808080808080808080808080808\
                 0808080808080808080808080808080808",
            ),
            (
                Message::Request(Request::Sign {
                    wallet: "w".into(),
                    wallet_id: [7; 16],
                    message: "m".into(),
                    path: "m".into(),
                    signers: vec![0, 1],
                    nonce: [9; 32],
                }),
                "0602017707070707070707070707070707070707016d016d0200010909090909090909090909\
                 090909090909090909090909090909090909090909",
            ),
            (
                Message::Request(Request::Join {
                    session: [10; 32],
                    from: 2,
                }),
                "06030a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a02",
            ),
            (
                Message::Accept { nonce: [11; 32] },
                "070b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b",
            ),
            (
                Message::Start {
                    nonces: vec![[12; 32]],
                },
                "08010c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c",
            ),
            (
                Message::Refuse {
                    reason: "no".into(),
                },
                "09026e6f",
            ),
            (Message::Envelope(vec![1, 2, 3]), "0a03010203"),
            (Message::Done, "0b"),
        ]
    }

    #[test]
    fn the_encoding_of_every_old_message_kind_is_unchanged() {
        for (message, hex) in old_kinds() {
            let expected = hex::decode(hex).unwrap();
            assert_eq!(message.to_bytes(), expected, "{message:?}");
            assert_eq!(
                Message::from_bytes(&expected).unwrap().to_bytes(),
                expected,
                "{message:?}"
            );
        }
    }

    #[test]
    fn a_message_with_an_over_long_integer_is_refused() {
        // Found by fuzzing (`peer_channel`): RefreshCommit { epoch: 17 } is 0d 11; postcard
        // also read 0d 91 00 as the same message.
        assert_eq!(
            Message::RefreshCommit { epoch: 17 }.to_bytes(),
            [0x0d, 0x11]
        );
        assert!(matches!(
            Message::from_bytes(&[0x0d, 0x91, 0x00]),
            Err(PeerError::Protocol(m)) if m.contains("canonical")
        ));
        assert!(Message::from_bytes(&[0x0d, 0x11]).is_ok());
    }

    #[test]
    fn the_refresh_kinds_come_after_them_and_round_trip() {
        let new = [
            (Message::RefreshPending { epoch: 3 }, "0c03"),
            (Message::RefreshCommit { epoch: 3 }, "0d03"),
            (Message::RefreshSwitched, "0e"),
            (
                Message::Held {
                    wallet: "w".into(),
                    current: 1,
                    pending: Some(2),
                },
                "0f0177010102",
            ),
        ];
        for (message, hex) in new {
            assert_eq!(hex::encode(message.to_bytes()), hex, "{message:?}");
            assert!(Message::from_bytes(&message.to_bytes()).is_ok());
        }
        let refresh = Message::Request(Request::Refresh {
            wallet: "w".into(),
            wallet_id: [7; 16],
            epoch: 0,
            leader: 0,
            parties: vec![],
            nonce: [0; 32],
        });
        assert_eq!(refresh.to_bytes()[..2], [6, 4]);
        assert!(Message::from_bytes(&refresh.to_bytes()).is_ok());
        // Bad input: a control name that is not a name, a refresh of too many parties.
        let held = Message::Held {
            wallet: String::new(),
            current: 0,
            pending: None,
        };
        assert!(Message::from_bytes(&held.to_bytes()).is_err());
        let crowded = Message::Request(Request::Refresh {
            wallet: "w".into(),
            wallet_id: [7; 16],
            epoch: 0,
            leader: 0,
            parties: vec![
                Participant {
                    name: "p".into(),
                    identity: [0; 32],
                    address: None,
                };
                MAX_PARTIES + 1
            ],
            nonce: [0; 32],
        });
        assert!(Message::from_bytes(&crowded.to_bytes()).is_err());
    }
}
