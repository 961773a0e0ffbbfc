//! The one message format every transport carries.
//!
//! An [`Envelope`] is encoded with `postcard` (compact); a reader accepts only the one encoding
//! [`Envelope::to_bytes`] writes of each envelope (postcard alone also reads over-long varints). Its header
//! (version, session id, protocol, round, sender, recipient) is checked by the receiving session
//! before the payload is parsed; see [`crate::session`].

use serde::{Deserialize, Serialize};
use zeroize::Zeroize;

use crate::error::{Error, Result};
use crate::types::{PartyIndex, Protocol, SessionId};

/// The envelope format this build writes and reads.
pub const ENVELOPE_VERSION: u8 = 1;

/// The largest encoded envelope a session accepts. The largest message Tessera sends is the
/// keygen/refresh round-3 message (the OT set-up for one counterparty), 147,867 bytes whatever
/// `t` and `n`; the limit leaves room for that while keeping a hostile sender from making us
/// buffer much.
pub const MAX_ENVELOPE_BYTES: usize = 256 * 1024;

/// One protocol message from one party to another.
///
/// Every message is point-to-point: a broadcast is sent as one copy to each party, and the
/// reliable-broadcast check compares what everybody received.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// Format version, [`ENVELOPE_VERSION`].
    pub version: u8,
    /// The run this message belongs to.
    pub session_id: SessionId,
    /// The protocol of the run.
    pub protocol: Protocol,
    /// The communication round, from 1.
    pub round: u8,
    /// The sender.
    pub from: PartyIndex,
    /// The recipient.
    pub to: PartyIndex,
    /// The round's message, parsed only after the header checks pass. Some rounds carry secret
    /// shares (keygen round 1), so the payload is zeroized when the envelope is dropped.
    #[serde(with = "serde_bytes")]
    pub payload: Vec<u8>,
}

impl Envelope {
    /// Encodes the envelope for a transport.
    #[must_use]
    pub fn to_bytes(&self) -> Vec<u8> {
        // Serializing plain data into a Vec cannot fail.
        postcard::to_allocvec(self).unwrap_or_default()
    }

    /// Decodes bytes received from `sender` (the party the transport authenticated), checking the
    /// size limit, the version and that nothing trails the envelope. It does not check the header
    /// against a session: [`crate::session::Session::receive`] does.
    ///
    /// # Errors
    /// [`Error::EnvelopeTooLarge`], [`Error::UnsupportedVersion`], [`Error::MalformedEnvelope`],
    /// each naming `sender`.
    pub fn from_bytes(sender: PartyIndex, bytes: &[u8]) -> Result<Self> {
        if bytes.len() > MAX_ENVELOPE_BYTES {
            return Err(Error::EnvelopeTooLarge {
                party: sender,
                size: bytes.len(),
                limit: MAX_ENVELOPE_BYTES,
            });
        }
        // The version is the first byte whatever the rest of the layout, so a newer peer gets a
        // clear answer rather than a parse error.
        match bytes.first() {
            None => {
                return Err(Error::MalformedEnvelope {
                    party: sender,
                    reason: "empty message".into(),
                });
            }
            Some(&v) if v != ENVELOPE_VERSION => {
                return Err(Error::UnsupportedVersion {
                    party: sender,
                    version: v,
                });
            }
            Some(_) => {}
        }
        let (envelope, rest) =
            postcard::take_from_bytes::<Envelope>(bytes).map_err(|e| Error::MalformedEnvelope {
                party: sender,
                reason: envelope_decode_reason(&e),
            })?;
        if !rest.is_empty() {
            return Err(Error::MalformedEnvelope {
                party: sender,
                reason: format!("{} unexpected bytes after the envelope", rest.len()),
            });
        }
        // postcard reads a varint with redundant continuation bytes (0x9e 0x00 for 30) as the
        // value: one envelope would have several encodings. Only the one `to_bytes` writes is
        // accepted (found by the `envelope` fuzz target).
        if envelope.to_bytes() != bytes {
            return Err(Error::MalformedEnvelope {
                party: sender,
                reason: "not in canonical form (an over-long integer)".into(),
            });
        }
        Ok(envelope)
    }
}

fn envelope_decode_reason(e: &postcard::Error) -> String {
    match e {
        postcard::Error::DeserializeUnexpectedEnd => "truncated".into(),
        other => format!("cannot decode ({other})"),
    }
}

impl Drop for Envelope {
    fn drop(&mut self) {
        self.payload.zeroize();
    }
}

impl std::fmt::Debug for Envelope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Envelope")
            .field("version", &self.version)
            .field("session_id", &self.session_id)
            .field("protocol", &self.protocol)
            .field("round", &self.round)
            .field("from", &self.from)
            .field("to", &self.to)
            .field("payload_len", &self.payload.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Envelope {
        Envelope {
            version: ENVELOPE_VERSION,
            session_id: SessionId::from_bytes([9; 32]),
            protocol: Protocol::Sign,
            round: 2,
            from: PartyIndex::new(1),
            to: PartyIndex::new(0),
            payload: vec![1, 2, 3, 4],
        }
    }

    #[test]
    fn round_trips() {
        let e = sample();
        let back = Envelope::from_bytes(PartyIndex::new(1), &e.to_bytes());
        assert_eq!(back, Ok(e));
    }

    #[test]
    fn wire_format_is_pinned() {
        // Changing this layout breaks every deployed peer: bump ENVELOPE_VERSION instead.
        assert_eq!(
            hex::encode(sample().to_bytes()),
            concat!(
                "01",
                "0909090909090909090909090909090909090909090909090909090909090909",
                "01", // Protocol::Sign, variant index 1
                "02",
                "01",
                "00",
                "04",
                "01020304"
            )
        );
    }

    #[test]
    fn truncated_trailing_oversize_and_versions_are_rejected() {
        let sender = PartyIndex::new(1);
        let bytes = sample().to_bytes();
        for cut in 0..bytes.len() {
            let err = Envelope::from_bytes(sender, &bytes[..cut]).unwrap_err();
            assert!(
                matches!(err, Error::MalformedEnvelope { party, .. } if party == sender),
                "cut at {cut}: {err:?}"
            );
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(matches!(
            Envelope::from_bytes(sender, &longer),
            Err(Error::MalformedEnvelope { party, ref reason }) if party == sender && reason.contains("unexpected bytes")
        ));
        let mut v2 = bytes.clone();
        v2[0] = 2;
        assert_eq!(
            Envelope::from_bytes(sender, &v2),
            Err(Error::UnsupportedVersion {
                party: sender,
                version: 2
            })
        );
        // Fuzzing found (fuzz target `envelope`): postcard reads an over-long varint, so the
        // same envelope had a second encoding. The payload length 4 as 0x84 0x00:
        let mut overlong = bytes[..37].to_vec();
        assert_eq!(bytes[37], 4, "the payload length's offset");
        overlong.extend_from_slice(&[0x84, 0x00]);
        overlong.extend_from_slice(&bytes[38..]);
        assert!(matches!(
            Envelope::from_bytes(sender, &overlong),
            Err(Error::MalformedEnvelope { party, ref reason }) if party == sender && reason.contains("canonical")
        ));
        let huge = vec![1u8; MAX_ENVELOPE_BYTES + 1];
        assert_eq!(
            Envelope::from_bytes(sender, &huge),
            Err(Error::EnvelopeTooLarge {
                party: sender,
                size: MAX_ENVELOPE_BYTES + 1,
                limit: MAX_ENVELOPE_BYTES
            })
        );
    }
}
